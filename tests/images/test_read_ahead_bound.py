"""Read-ahead of named images is bounded: ``vmrole lint --image ×50`` must not fork 50 readers at once (each
holds a big volume's inventory, and each read's time limit counts from its reader's start)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.extraction import worker
from harness.extraction.extract import ExtractOptions
from harness.readers.errors import Unreadable


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    out = []
    for i in range(5):  # not disks: each read ends at once with "unreadable", which is all this test needs
        path = tmp_path / f"img{i}.vhd"
        path.write_bytes(bytes([i]) * 4096)
        out.append(path)
    return out


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VMROLE_IMAGE_READERS", "2")
    yield
    worker._stop_pending()


def test_at_most_the_bound_is_read_ahead_and_the_rest_follow_in_order(images: list[Path]) -> None:
    options = ExtractOptions()
    for path in images:
        worker.prefetch(path, options)
    assert [Path(k[0]).name for k in worker._PENDING] == ["img0.vhd", "img1.vhd"]
    assert [Path(k[0]).name for k in worker._QUEUED] == ["img2.vhd", "img3.vhd", "img4.vhd"]

    with pytest.raises(Unreadable):
        worker.read_image_isolated(images[0], options, timeout=30)
    # img0 collected: img2 started, never more than two readers waiting
    assert [Path(k[0]).name for k in worker._PENDING] == ["img1.vhd", "img2.vhd"]
    assert [Path(k[0]).name for k in worker._QUEUED] == ["img3.vhd", "img4.vhd"]

    with pytest.raises(Unreadable):  # wanted before its turn: read now, taken out of the queue
        worker.read_image_isolated(images[4], options, timeout=30)
    assert "img4.vhd" not in [Path(k[0]).name for k in (*worker._PENDING, *worker._QUEUED)]
    assert len(worker._PENDING) <= 2

    for path in images[1:4]:
        with pytest.raises(Unreadable):
            worker.read_image_isolated(path, options, timeout=30)
    assert not worker._PENDING and not worker._QUEUED


def test_the_bound_defaults_to_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VMROLE_IMAGE_READERS")
    assert worker._max_ahead() == max(1, os.cpu_count() or 1)
    for bad in ("0", "-1", "two", "٣"):
        monkeypatch.setenv("VMROLE_IMAGE_READERS", bad)
        assert worker._max_ahead() == max(1, os.cpu_count() or 1)
