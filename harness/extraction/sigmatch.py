"""Integration-component / agent signatures (harness.facts.image_signatures) matched against an image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.facts.image_signatures import load_signatures, match_signatures
from harness.readers.image.ntfs import Inventory

#: Most paths listed below one glob prefix (a prefix like "" on a 200,000-file volume is bounded).
MAX_LISTED = 200_000


def _subtree(inventory: Inventory, prefix: str) -> list[str]:
    """Volume-relative paths of everything below ``prefix`` (bounded)."""
    out: list[str] = []
    for path, _entry in inventory.walk_under(prefix or "\\"):
        out.append(path.lstrip("\\"))
        if len(out) >= MAX_LISTED:
            break
    return out


def match_image_signatures(
    inventory: Inventory,
    *,
    services: Sequence[Any],
    products: Sequence[Any],
    signature_files: Sequence[str] = (),
) -> tuple[Any, ...]:
    signatures = load_signatures(tuple(signature_files))
    return tuple(
        match_signatures(
            signatures,
            services,
            products,
            path_exists=lambda p: inventory.lookup(p) is not None,
            list_glob=lambda prefix: _subtree(inventory, prefix.replace("/", "\\")),
        )
    )
