"""Folders the fabric puts secrets or its admin socket in must be its own (issue 9, same kind as finding 5):
the HAProxy runtime-API socket folder may be a predictable name under the shared /tmp."""

from __future__ import annotations

import os
import stat

import pytest

from harness.fabric.layout import ensure_private_dir


def test_a_new_folder_is_made_private(tmp_path):
    old = os.umask(0)
    try:
        path = ensure_private_dir(tmp_path / "a" / "b")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_an_existing_folder_others_can_enter_is_refused(tmp_path):
    path = tmp_path / "shared"
    path.mkdir()
    os.chmod(path, 0o777)  # e.g. made by another local user ahead of the fabric
    with pytest.raises(RuntimeError, match="not a private folder"):
        ensure_private_dir(path)


def test_a_symlink_is_refused(tmp_path):
    (tmp_path / "real").mkdir(mode=0o700)
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(RuntimeError, match="not a private folder"):
        ensure_private_dir(tmp_path / "link")


def test_an_existing_private_folder_is_fine(tmp_path):
    (tmp_path / "mine").mkdir(mode=0o700)
    assert ensure_private_dir(tmp_path / "mine") == tmp_path / "mine"
