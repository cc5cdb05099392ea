"""An artefact is one thing a rule can be pointed at: a file on disk, or a deployment."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

# Artefact kinds. Rules declare which kinds they apply to.
CSDEF = "csdef"
CSCFG = "cscfg"
CSPKG = "cspkg"
DEPLOYMENT = "deployment"  # a live deployment, described by a target file (*.vmrtarget.yml)
IMAGE = "image"  # a disk image: VHD (fixed, dynamic, differencing), VHDX or raw
KINDS = (CSDEF, CSCFG, CSPKG, DEPLOYMENT, IMAGE)
IMAGE_SUFFIXES = (".vhd", ".vhdx", ".avhd", ".avhdx", ".img", ".raw")
TARGET_SUFFIXES = (".vmrtarget.yml", ".vmrtarget.yaml")


def kind_of(path: Path) -> str | None:
    """The artefact kind for a file name, or None when the harness does not lint it."""
    if path.name.lower().endswith(TARGET_SUFFIXES):
        return DEPLOYMENT
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return IMAGE
    return {".csdef": CSDEF, ".cscfg": CSCFG, ".cspkg": CSPKG}.get(suffix)


@dataclass(frozen=True, order=True)
class Artefact:
    """A linted artefact.

    ``identity`` is stable across machines and checkouts (a POSIX path relative to the run's root
    directory when the file lies under it, otherwise the absolute path): fingerprints, baselines and
    waiver globs use it. ``display`` is the short name used in test ids.
    """

    kind: str
    identity: str
    path: Path
    display: str

    @classmethod
    def from_path(cls, path: Path, kind: str, root: Path | None = None) -> Artefact:
        path = Path(os.path.abspath(path))
        identity = path.as_posix()
        if root is not None:
            with contextlib.suppress(ValueError):
                identity = path.relative_to(Path(os.path.abspath(root))).as_posix()
        return cls(kind=kind, identity=identity, path=path, display=path.name)
