"""What an image read takes besides the image, in a module of its own: the process that starts the readers names it
without importing the readers (harness.extraction.readahead forks before they are imported)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExtractOptions:
    """Inputs besides the image: user signature files and allowlists (paths), read in the worker."""

    signature_files: tuple[str, ...] = ()
    machine_key_allowlists: tuple[str, ...] = ()
    #: Directories a differencing image's parent may be opened from, besides the child's own (--vmr-image-parent-dir).
    parent_dirs: tuple[str, ...] = ()
