"""Repository-wide pytest configuration for the project's own tests.

The vmrole plugin itself is loaded through its ``pytest11`` entry point, never from here, so users get
exactly what the tests exercise.
"""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def image_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder :func:`harness.testing.images.build_image` caches into for this test session.

    ``$VMR_IMAGE_CACHE`` when set (keeps images between runs). Otherwise a folder under pytest's base temp
    directory; under pytest-xdist it sits beside the workers' own folders, so every worker shares it (the
    factory's per-image lock makes concurrent builds of one image safe).
    """
    env = os.environ.get("VMR_IMAGE_CACHE")
    if env:
        path = Path(env)
    else:
        base = tmp_path_factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            base = base.parent
        path = base / "vmr-image-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path
