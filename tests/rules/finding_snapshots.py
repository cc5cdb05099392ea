"""Reviewed JSON snapshots of a rule test's findings (see SNAPSHOTS.md).

A rule test hands the findings a rule produced to the ``snapshot`` fixture::

    def test_vmr501_role_missing(sm, snapshot):
        snapshot.assert_match(sm.run(UnmatchedRole, subject))

The fixture writes nothing in a normal run: it serialises every field of every
:class:`~harness.engine.finding.Finding` (plus the fingerprint the reports and baselines use), in a
stable order, with machine-specific paths replaced by placeholders, and compares the text with
``tests/rules/snapshots/<test module>/<test name>[<param id>].json``. A missing or different file
fails the test with a unified diff. ``--snapshot-update`` (or ``VMR_SNAPSHOT_UPDATE=1``) writes the
files instead; review them with ``git diff tests/rules/snapshots`` before committing.

One test, one file: a test that checks several inputs passes a mapping ``{label: findings}``.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from harness.engine.finding import Finding

SNAPSHOT_DIR = Path(__file__).resolve().parent / "snapshots"
UPDATE_ENV = "VMR_SNAPSHOT_UPDATE"
UPDATE_COMMAND = ".venv/bin/python -m pytest tests/rules -p no:xdist --snapshot-update"

#: Characters kept as they are in a snapshot file name; anything else becomes "_" (plus a hash suffix).
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.,=+@\[\]-]")
_MAX_NAME = 120


def file_name(test_name: str) -> str:
    """A portable file name for a test's node name (``test_x[param]``), unique per node name.

    Characters other than letters, digits and ``_.,=+@[]-`` become ``_``; when anything was replaced or
    the name had to be shortened, an 8-digit hash of the original name keeps it unique.
    """
    safe = _SAFE_NAME.sub("_", test_name)
    if safe == test_name and len(safe) <= _MAX_NAME:
        return safe + ".json"
    digest = hashlib.sha256(test_name.encode("utf-8")).hexdigest()[:8]
    return f"{safe[:_MAX_NAME]}~{digest}.json"


# ---- serialisation ----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON-ready copy: enums by label/name, mappings with sorted keys, sequences as lists."""
    if isinstance(value, enum.Enum):
        return getattr(value, "label", value.name)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"a finding holds a {type(value).__name__} ({value!r}); snapshots hold JSON values only")


def finding_record(finding: Finding) -> dict[str, Any]:
    """Every dataclass field of the finding, in declaration order, then its fingerprint."""
    if not isinstance(finding, Finding):
        raise TypeError(f"snapshot.assert_match takes Finding objects, not {type(finding).__name__}")
    record = {f.name: _plain(getattr(finding, f.name)) for f in dataclasses.fields(finding)}
    record["fingerprint"] = finding.fingerprint
    return record


def _sort_key(record: Mapping[str, Any]) -> tuple[str, ...]:
    # stable whatever order the rule yields in (sets, dicts): the whole record decides ties
    return (
        str(record.get("rule_id")),
        str(record.get("artefact")),
        str(record.get("location")),
        json.dumps(record, sort_keys=True, ensure_ascii=True),
    )


def records(findings: Iterable[Finding]) -> list[dict[str, Any]]:
    return sorted((finding_record(f) for f in findings), key=_sort_key)


def _neutral(value: Any, replacements: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        for real, placeholder in replacements:
            value = value.replace(real, placeholder)
        return value
    if isinstance(value, dict):
        return {k: _neutral(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [_neutral(v, replacements) for v in value]
    return value


def neutral_finding(finding: Finding, replacements: list[tuple[str, str]]) -> Finding:
    """The finding with every machine-specific text in its string fields and evidence replaced."""
    if not isinstance(finding, Finding):
        raise TypeError(f"snapshot.assert_match takes Finding objects, not {type(finding).__name__}")
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(finding):
        value = getattr(finding, f.name)
        if isinstance(value, str):
            changes[f.name] = _neutral(value, replacements)
        elif isinstance(value, Mapping):
            changes[f.name] = _neutral(dict(value), replacements)
    return dataclasses.replace(finding, **changes)


def _escape_invisible(text: str) -> str:
    """JSON-escape characters a reviewer cannot see (format, control, odd spaces) in dumped JSON."""

    def visible(ch: str) -> str:
        if ch.isascii():
            return ch
        category = unicodedata.category(ch)
        if category[0] in "CZ":  # Cc Cf Co Cn Cs, Zs Zl Zp (only ASCII space is allowed raw)
            return "".join(f"\\u{unit:04x}" for unit in _utf16_units(ch))
        return ch

    return "".join(visible(ch) for ch in text)


def _utf16_units(ch: str) -> list[int]:
    data = ch.encode("utf-16-be")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def render(data: Any) -> str:
    return _escape_invisible(json.dumps(data, indent=2, ensure_ascii=False)) + "\n"


# ---- the fixture's object ----------------------------------------------------------------------------


class SnapshotError(AssertionError):
    pass


class Snapshot:
    """What the ``snapshot`` fixture gives a test: :meth:`assert_match` (once per test)."""

    def __init__(
        self,
        path: Path,
        nodeid: str,
        *,
        update: bool,
        replacements: Iterable[tuple[Path | str, str]] = (),
        machine_dirs: Iterable[Path | str] = (),
        recorder: Any = None,
    ) -> None:
        self.path = path
        self.nodeid = nodeid
        self.update = update
        self._replacements = _replacement_list(replacements)
        self._machine_dirs = [str(d) for d in machine_dirs if str(d) not in ("", "/", ".")]
        self._recorder = recorder
        self.used = False

    def serialise(
        self,
        findings: Iterable[Finding] | Mapping[str, Iterable[Finding]],
        *,
        paths: Mapping[str, Path | str] | None = None,
        secrets: Iterable[str] = (),
    ) -> str:
        """The snapshot text for ``findings`` (a list, or ``{label: findings}`` for several inputs)."""
        replacements = _replacement_list((p, f"<{name}>") for name, p in (paths or {}).items()) + self._replacements

        def neutral(group: Iterable[Finding]) -> list[dict[str, Any]]:
            # placeholders go in before the record is made, so the fingerprint is the one of the neutral
            # artefact identity (an absolute image path would make it differ on every machine and run)
            return records(neutral_finding(f, replacements) for f in group)

        if isinstance(findings, Mapping):
            data: Any = {str(label): neutral(group) for label, group in findings.items()}
        else:
            data = neutral(findings)
        text = render(data)
        self._check_machine_independent(text)
        self._check_no_secret(text, secrets)
        return text

    def assert_match(
        self,
        findings: Iterable[Finding] | Mapping[str, Iterable[Finding]],
        *,
        paths: Mapping[str, Path | str] | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        """Compare ``findings`` with the stored snapshot (or write it with ``--snapshot-update``).

        ``paths`` names further machine- or build-specific paths or texts (``{"work": tmp_path / "w"}``
        writes ``<work>``); ``secrets`` are values that must not appear in the findings at all (nor their first
        or last 6 characters): the snapshot is refused before anything is written.
        """
        if self.used:
            raise SnapshotError(
                f"{self.nodeid}: assert_match called twice; one snapshot per test: pass {{label: findings}}"
            )
        self.used = True
        text = self.serialise(findings, paths=paths, secrets=secrets)
        stored = self.path.read_text(encoding="utf-8") if self.path.is_file() else None
        if self._recorder is not None:
            self._recorder.used(self.path)
        if stored == text:
            return
        if self.update:
            _write_atomic(self.path, text)
            if self._recorder is not None:
                self._recorder.written(self.path, created=stored is None)
            return
        rel = _display(self.path)
        command = f".venv/bin/python -m pytest '{self.nodeid}' -p no:xdist --snapshot-update"
        if stored is None:
            raise SnapshotError(
                f"no snapshot {rel} for these findings:\n{text}\n"
                f"write it with: {command}\n(or every missing one: {UPDATE_COMMAND}), then review and add it"
            )
        diff = "".join(
            difflib.unified_diff(
                stored.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=f"{rel} (stored)",
                tofile=f"{rel} (this run)",
            )
        )
        raise SnapshotError(
            f"findings differ from the reviewed snapshot {rel}:\n{diff}\n"
            f"if the change is intended: {command}\nthen review it: git diff {rel}"
        )

    # ---- guards ---------------------------------------------------------------------------------
    def _check_machine_independent(self, text: str) -> None:
        raw = json.loads(text)  # the strings as the findings carry them, escapes undone
        blob = json.dumps(raw, ensure_ascii=False)
        for directory in self._machine_dirs:
            for form in {directory, directory.replace("/", "\\\\"), directory.replace("\\", "/")}:
                if form in blob:
                    raise SnapshotError(
                        f"{self.nodeid}: a finding holds a machine-specific path under {directory!r}; "
                        "pass it to assert_match(paths={name: path}) so the snapshot says <name> instead"
                    )

    def _check_no_secret(self, text: str, secrets: Iterable[str]) -> None:
        blob = json.dumps(json.loads(text), ensure_ascii=False)
        for secret in secrets:
            pieces = {secret, secret[:6], secret[-6:]} if len(secret) > 6 else {secret}
            for piece in pieces:
                if piece and piece in blob:
                    raise SnapshotError(
                        f"{self.nodeid}: a secret given to assert_match (or its first/last 6 characters "
                        f"{piece[:2]}…) is in the findings; it must never reach a report, nor a snapshot"
                    )


def _replacement_list(pairs: Iterable[tuple[Path | str, str]]) -> list[tuple[str, str]]:
    """(real text, placeholder) pairs, longest real text first, each path in its usual spellings."""
    out: dict[str, str] = {}
    for real, placeholder in pairs:
        text = str(real)
        if not text or text in ("/", "."):
            continue
        forms = {text, text.replace("\\", "/")}
        if isinstance(real, Path):
            forms |= {real.as_posix(), os.path.realpath(real), Path(os.path.realpath(real)).as_posix()}
        for form in forms:
            out.setdefault(form, placeholder)
    return sorted(out.items(), key=lambda kv: len(kv[0]), reverse=True)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a reader, or another xdist worker, never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: workers never share one
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:  # the umask's mode, as git expects
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _display(path: Path) -> str:
    try:
        return path.relative_to(SNAPSHOT_DIR.parents[2]).as_posix()
    except ValueError:
        return str(path)


def stored_findings(folder: Path = SNAPSHOT_DIR) -> list[dict[str, Any]]:
    """Every finding record in the snapshot files under ``folder`` (labelled groups flattened)."""
    found: list[dict[str, Any]] = []
    for path in sorted(folder.rglob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for group in data.values() if isinstance(data, dict) else [data]:
            found.extend(dict(record, snapshot=path.relative_to(SNAPSHOT_DIR).as_posix()) for record in group)
    return found


class Recorder:
    """Which snapshot files a run used and wrote (merged from xdist workers for the summary)."""

    def __init__(self) -> None:
        self.used_paths: set[str] = set()
        self.created: set[str] = set()
        self.changed: set[str] = set()

    def used(self, path: Path) -> None:
        self.used_paths.add(path.as_posix())

    def written(self, path: Path, *, created: bool) -> None:
        (self.created if created else self.changed).add(path.as_posix())

    def to_json(self) -> dict[str, list[str]]:
        return {"used": sorted(self.used_paths), "created": sorted(self.created), "changed": sorted(self.changed)}

    def merge(self, data: Mapping[str, Iterable[str]]) -> None:
        self.used_paths.update(data.get("used", ()))
        self.created.update(data.get("created", ()))
        self.changed.update(data.get("changed", ()))
