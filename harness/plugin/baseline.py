"""Baselines: the fingerprints of accepted findings, so a gate can start from today's state.

A fingerprint is rule + artefact identity + logical location (see Finding.fingerprint): moving
lines around does not invalidate a baseline; renaming an endpoint or a file does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from harness.engine.finding import Finding

FORMAT = "vmrole-harness/baseline"
MAX_BASELINE_FILE = 64 << 20


class BaselineError(Exception):
    """The baseline file cannot be used; the message names the file and the problem."""


def load_baseline(path: Path) -> set[str]:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BaselineError(f"baseline file {path}: cannot read it ({exc.strerror or exc})") from None
    if size > MAX_BASELINE_FILE:
        raise BaselineError(f"baseline file {path}: {size} bytes, over the limit")
    try:
        data = json.loads(path.read_bytes()[:MAX_BASELINE_FILE])
    except (ValueError, UnicodeDecodeError):
        raise BaselineError(f"baseline file {path}: not valid JSON") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("findings"), list):
        raise BaselineError(f"baseline file {path}: not a vmrole-harness baseline (format {FORMAT!r})")
    prints = set()
    for entry in data["findings"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("fingerprint"), str):
            raise BaselineError(f"baseline file {path}: every finding needs a 'fingerprint' string")
        prints.add(entry["fingerprint"])
    return prints


def write_baseline(path: Path, findings: Iterable[Finding]) -> int:
    """Write the baseline; entries are sorted and de-duplicated so the file diffs cleanly."""
    entries = {
        f.fingerprint: {
            "fingerprint": f.fingerprint,
            "rule": f.rule_id,
            "artefact": f.artefact,
            "location": f.location,
        }
        for f in findings
    }
    ordered = [entries[k] for k in sorted(entries, key=lambda k: (entries[k]["rule"], entries[k]["artefact"], k))]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "version": 1, "findings": ordered}, indent=2) + "\n", "utf-8")
    tmp.replace(path)
    return len(ordered)
