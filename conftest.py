"""Repository-wide pytest configuration for the project's own tests.

The vmrole plugin itself is loaded through its ``pytest11`` entry point, never from here, so users get
exactly what the tests exercise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent
SHARED_SAMPLES = REPO.parent / "shared" / "samples"


@pytest.fixture(scope="session")
def shared_samples() -> Path:
    """The shared real-world samples (../shared/samples); skips when they are not laid out here."""
    if not SHARED_SAMPLES.is_dir():
        pytest.skip(f"shared samples not present at {SHARED_SAMPLES} (they live beside the repository)")
    return SHARED_SAMPLES
