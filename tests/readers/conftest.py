"""Shared fixtures for the reader tests: artefacts, the shared real-sample folders, disk snapshots."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.engine.artefact import CSCFG, CSDEF, CSPKG, Artefact

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT / ".." / "shared" / "samples"


def samples_dir(sub: str) -> Path:
    """A shared real-sample folder, or skip the test when this checkout has none."""
    path = (SAMPLES / sub).resolve()
    if not path.is_dir():
        pytest.skip(f"shared samples not present at {path}")
    return path


@pytest.fixture
def artefact(tmp_path: Path) -> Callable[..., Artefact]:
    """``artefact("x.csdef")`` → an Artefact for a (possibly not yet written) file under tmp_path."""

    def make(name: str, kind: str | None = None) -> Artefact:
        path = tmp_path / name
        suffix_kind = {".csdef": CSDEF, ".cscfg": CSCFG, ".cspkg": CSPKG}.get(path.suffix, CSDEF)
        return Artefact.from_path(path, kind or suffix_kind, tmp_path)

    return make


def snapshot(*dirs: Path) -> set[tuple[str, int]]:
    """Every file (path, size) under the given folders, to show a reader wrote nothing to disk."""
    found: set[tuple[str, int]] = set()
    for base in dirs:
        for dirpath, _dirnames, filenames in os.walk(base):
            for name in filenames:
                full = os.path.join(dirpath, name)
                try:
                    found.add((full, os.path.getsize(full)))
                except OSError:
                    continue
    return found
