"""A corpus of real service-model files described by a ``manifest.tsv`` (tab-separated, one row per file with the
columns ``local_file``, ``repo``, ``kind``, ``commit``, ``pairing``, ``notable_features``, ``role_kinds``).

Files are laid flat per repository (``repo/dir__dir__ServiceConfiguration.Cloud.cscfg``) and come from
different commits; only files from the same commit may be cross-checked. :func:`pairings` pairs each
.cscfg with the .csdef of the same commit and the same flattened directory, or with nothing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from harness.subjects import sibling_definition


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    repo: str
    kind: str  # "csdef" | "cscfg"
    commit: str
    pairing: str  # "anchor" | "paired@<commit prefix>" | "unpaired/historical"
    features: frozenset[str]
    role_kinds: str


def load_manifest(folder: Path) -> list[CorpusFile]:
    files = []
    with (folder / "manifest.tsv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            files.append(
                CorpusFile(
                    path=folder / row["local_file"],
                    repo=row["repo"],
                    kind=row["kind"],
                    commit=row["commit"],
                    pairing=row["pairing"],
                    features=frozenset(f.split("=", 1)[0] for f in row["notable_features"].split(",") if f),
                    role_kinds=row["role_kinds"],
                )
            )
    return files


def pairings(files: list[CorpusFile]) -> dict[Path, Path | None]:
    """cscfg path → the csdef it may be checked against (same commit, same directory), or None."""
    by_path = {f.path: f for f in files}
    result: dict[Path, Path | None] = {}
    for f in files:
        if f.kind != "cscfg":
            continue
        partner = None
        if f.pairing.startswith("paired@"):
            sibling = sibling_definition(f.path)
            other = by_path.get(sibling) if sibling is not None else None
            if other is not None and other.commit.startswith(f.pairing.removeprefix("paired@")):
                partner = sibling
        result[f.path] = partner
    return result
