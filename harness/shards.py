"""CI shards: ``--vmr-shard I/N`` splits the artefacts of a run into N disjoint parts, the same on every runner.

An artefact's shard is ``sha256(key) mod N`` (not Python's salted ``hash()``), where the key is the POSIX path,
relative to the run's root, of the *set* the artefact belongs to, so that a set is never split:

* an image is its own set (its paired csdef is only read, never linted, by the image's items);
* with ``--vmr-csdef`` or a single ``--vmr-package`` every .cscfg is paired with that file: the named csdef,
  the packages, and every .cscfg form one set (keyed by the named csdef, else the package);
* otherwise a .cscfg is keyed by the sibling csdef it pairs with (:func:`harness.subjects.sibling_definition`,
  the rule the subjects use), so ``X__ServiceConfiguration.Cloud.cscfg`` lands with
  ``X__ServiceDefinition.csdef``; a .cspkg whose stem is that name prefix (``X.cspkg``) lands there too.

Nothing depends on collection order, the machine or the absolute location of the tree: an artefact outside
the root is keyed relative to the named path (argument) that holds it, else by its name.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.ascii import parse_ascii_int
from harness.engine.artefact import CSCFG, CSDEF, CSPKG, kind_of
from harness.subjects import Pairing, definitions_beside, name_prefix, one_definition, sibling_definition


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    total: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``I/N`` with 1 <= I <= N; raises ValueError with the reason."""
        index_s, sep, total_s = text.strip().partition("/")
        index, total = parse_ascii_int(index_s, max_digits=9), parse_ascii_int(total_s, max_digits=9)
        if index is None or total is None:
            raise ValueError(f"expected I/N (e.g. 1/3), got {text!r}")
        if not sep or total < 1 or not 1 <= index <= total:
            raise ValueError(f"expected I/N with 1 <= I <= N, got {text!r}")
        return cls(index, total)

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"

    def holds(self, key: str) -> bool:
        return shard_of(key, self.total) == self.index


def shard_of(key: str, total: int) -> int:
    """The 1-based shard of a set key: a stable hash, the same in every process and on every machine."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % total + 1


def _relative(path: Path, root: Path, anchors: Iterable[Path]) -> str:
    path = Path(os.path.abspath(path))
    for base in (Path(os.path.abspath(root)), *sorted(Path(os.path.abspath(a)) for a in anchors)):
        if path == base:
            return path.name
        if path.is_relative_to(base):
            return path.relative_to(base).as_posix()
    return path.name


def set_of(path: Path, pairing: Pairing) -> Path:
    """The file that names the set ``path`` belongs to (``path`` itself for an image or an unpaired file)."""
    path = Path(os.path.abspath(path))
    kind = kind_of(path)
    anchor = pairing.csdef or (pairing.packages[0] if len(pairing.packages) == 1 else None)
    if anchor is not None and kind in (CSCFG, CSPKG, CSDEF):
        if kind == CSCFG or path == pairing.csdef or path in pairing.packages:
            return Path(os.path.abspath(anchor))
        return path  # a csdef found beside the named one: linted on its own
    if kind == CSCFG and pairing.siblings:
        sibling = sibling_definition(path)
        return sibling if sibling is not None else path
    if kind == CSPKG:
        stem = path.name[: -len(path.suffix)]
        prefixes = (stem, stem + "__", stem + ".")
        siblings = definitions_beside(path)
        match = one_definition([p for p in siblings if name_prefix(p.name, "servicedefinition") in prefixes])
        return match if match is not None else path
    return path


def set_key(path: Path, pairing: Pairing, root: Path, anchors: Iterable[Path] = ()) -> str:
    """The shard key of ``path``: its set's path relative to the root (or to the named path holding it)."""
    anchors = [Path(a) for a in anchors if Path(a).is_dir()]
    return _relative(set_of(path, pairing), root, anchors)
