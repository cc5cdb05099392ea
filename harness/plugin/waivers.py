"""Waivers: a YAML file of accepted findings, each with a justification and an expiry date.

Example::

    waivers:
      - rule: VMR512                      # id, id prefix or rule name
        target: "deploy/*.cscfg"          # glob over the artefact identity (path relative to the root)
        location: "*InputEndpoint*"       # optional glob over the logical location
        justification: "Ticket OPS-123: single instance until the Q3 migration"
        expires: 2027-03-31

Fail closed: a malformed file or entry is a usage error before collection; an expired entry
suppresses nothing (its finding stays active and the terminal says which waiver expired).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.engine.finding import Finding

MAX_WAIVER_FILE = 1 << 20
ALLOWED_KEYS = {"rule", "target", "location", "justification", "expires", "owner"}


class WaiverError(Exception):
    """The waivers file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Waiver:
    rule: str
    target: str
    justification: str
    expires: dt.date
    location: str | None = None
    owner: str | None = None
    index: int = 0  # 1-based position in the file, for messages

    def expired(self, today: dt.date) -> bool:
        return today > self.expires

    def covers(self, finding: Finding) -> bool:
        from harness.engine.catalogue import rule_by_id

        try:
            rule = rule_by_id(finding.rule_id)
            rule_matches = rule.matches(self.rule)
        except KeyError:
            rule_matches = finding.rule_id.startswith(self.rule.upper())
        if not rule_matches:
            return False
        if not _glob(finding.artefact, self.target):
            return False
        return self.location is None or fnmatch.fnmatchcase(finding.location, self.location)


def _glob(identity: str, pattern: str) -> bool:
    """fnmatch where ``**/`` may also match nothing, so ``**/x.cscfg`` matches ``x.cscfg``."""
    if fnmatch.fnmatchcase(identity, pattern):
        return True
    return pattern.startswith("**/") and fnmatch.fnmatchcase(identity, pattern[3:])


def _text(entry: dict, key: str, where: str, *, required: bool) -> str | None:
    value = entry.get(key)
    if value is None:
        if required:
            raise WaiverError(f"{where}: '{key}' is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise WaiverError(f"{where}: '{key}' must be a non-empty string")
    return value.strip()


def load_waivers(path: Path) -> list[Waiver]:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise WaiverError(f"waivers file {path}: cannot read it ({exc.strerror or exc})") from None
    if size > MAX_WAIVER_FILE:
        raise WaiverError(f"waivers file {path}: {size} bytes, over the {MAX_WAIVER_FILE} byte limit")
    try:
        with path.open("rb") as fh:
            data = yaml.safe_load(fh.read(MAX_WAIVER_FILE))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise WaiverError(f"waivers file {path}: not valid YAML{at}") from None
    if isinstance(data, dict):
        unknown = set(data) - {"waivers", "version"}
        if unknown:
            raise WaiverError(f"waivers file {path}: unknown top-level keys {sorted(unknown)}")
        data = data.get("waivers")
    if data is None:
        return []
    if not isinstance(data, list):
        raise WaiverError(f"waivers file {path}: expected a list of waivers under 'waivers:'")
    waivers = []
    for index, entry in enumerate(data, start=1):
        where = f"waivers file {path}, entry {index}"
        if not isinstance(entry, dict):
            raise WaiverError(f"{where}: expected a mapping with rule, target, justification, expires")
        unknown = set(entry) - ALLOWED_KEYS
        if unknown:
            raise WaiverError(f"{where}: unknown keys {sorted(unknown)}")
        rule = _text(entry, "rule", where, required=True)
        target = _text(entry, "target", where, required=True)
        justification = _text(entry, "justification", where, required=True)
        expires_raw = entry.get("expires")
        if expires_raw is None:
            raise WaiverError(f"{where}: 'expires' is required (YYYY-MM-DD)")
        if isinstance(expires_raw, dt.datetime):
            expires = expires_raw.date()
        elif isinstance(expires_raw, dt.date):
            expires = expires_raw
        else:
            try:
                expires = dt.date.fromisoformat(str(expires_raw).strip())
            except ValueError:
                raise WaiverError(f"{where}: 'expires' must be a date YYYY-MM-DD, got {expires_raw!r}") from None
        assert rule is not None and target is not None and justification is not None
        waivers.append(
            Waiver(
                rule=rule,
                target=target,
                justification=justification,
                expires=expires,
                location=_text(entry, "location", where, required=False),
                owner=_text(entry, "owner", where, required=False),
                index=index,
            )
        )
    return waivers
