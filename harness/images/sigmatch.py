"""Integration-component / agent signatures (harness.facts.image_signatures) matched against an image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.facts.image_signatures import load_signatures, match_signatures
from harness.readers.image.ntfs import Inventory

#: Most paths listed below one glob prefix (a prefix like "" on a 200,000-file volume is bounded).
MAX_LISTED = 200_000


def _subtree(inventory: Inventory, prefix: str) -> list[str]:
    """Volume-relative paths of everything below ``prefix`` (depth-first, bounded)."""
    start = inventory.lookup(prefix) if prefix else inventory.lookup("")
    if start is None or not start.is_dir:
        return []
    out: list[str] = []
    stack: list[tuple[str, Any]] = [(prefix.strip("\\"), start)]
    seen: set[int] = set()
    while stack and len(out) < MAX_LISTED:
        path, entry = stack.pop()
        if entry.record in seen:
            continue
        seen.add(entry.record)
        for child in inventory.children(entry):
            child_path = f"{path}\\{child.name}" if path else child.name
            out.append(child_path)
            if child.is_dir:
                stack.append((child_path, child))
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
