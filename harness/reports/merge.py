"""``vmrole report merge``: one set of reports from the JSON reports (vmrole.json) of several CI shards.

Each file is validated against the report schema (harness/data/report.schema.json) and must come from the same
tool version and fail-on threshold, with the same definition (severity, text, help) of every rule two shards
share; an item (pytest node id) may appear in one report only. Anything else is a :class:`MergeError` naming
the file, raised before anything is written.

The merged run holds every shard's rules, artefacts, findings, items and charts; dispositions are kept (the
shards judged waivers and baselines), except that failed/reported is re-judged against the common fail-on.
The verdict and the exit code are recomputed from the merged findings and items, as ``vmrole lint`` would
give for one unsharded run: 0 pass, 1 a finding at or above fail-on or a failed or errored item.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from harness.engine.finding import Finding
from harness.engine.severity import Severity
from harness.reports import FILE_NAMES, write_reports
from harness.reports.common import PASS, verdict
from harness.reports.jsonreport import schema
from harness.reports.model import (
    FAILED,
    REPORTED,
    ArtefactInfo,
    FindingResult,
    ItemResult,
    RuleInfo,
    RunResult,
)

JUNIT_NAME = "junit.xml"


class MergeError(Exception):
    """A report that cannot be merged (malformed, or from a run that does not match the others)."""


# ---- validation --------------------------------------------------------------------------------------------
def validation_errors(document: Any) -> list[str]:
    """Where ``document`` breaks the report schema (empty: it conforms)."""
    import jsonschema

    report_schema = schema()
    validator = jsonschema.validators.validator_for(report_schema)(report_schema)
    return sorted(f"/{'/'.join(map(str, e.absolute_path))}: {e.message:.200}" for e in validator.iter_errors(document))


def load_report(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise MergeError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MergeError(f"{path}: not a JSON report: {exc}") from None
    errors = validation_errors(document)
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise MergeError(f"{path}: not a valid vmrole JSON report: {'; '.join(errors[:3])}{more}")
    return document


# ---- merging -----------------------------------------------------------------------------------------------
def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _rule_info(data: dict[str, Any]) -> RuleInfo:
    return RuleInfo(
        id=data["id"],
        name=data["name"],
        severity=Severity.parse(data["severity"]),
        summary=data["summary"],
        help_markdown=data["help_markdown"],
        applies_to=tuple(data["applies_to"]),
        tags=tuple(data.get("tags", ())),
        references=tuple(data.get("references", ())),
        help_uri=data.get("help_uri"),
    )


_FINDING_KEYS = ("rule_id", "rule_name", "severity", "artefact", "location", "message", "evidence", "line")


def merge_documents(named: Sequence[tuple[Path, dict[str, Any]]]) -> RunResult:
    """One run from several validated reports; raises MergeError naming the file that does not match."""
    if not named:
        raise MergeError("name at least one JSON report")
    first_path, first = named[0]
    rules: dict[str, tuple[Path, dict[str, Any]]] = {}
    artefacts: dict[str, ArtefactInfo] = {}
    items: dict[str, tuple[Path, ItemResult]] = {}
    findings: list[FindingResult] = []
    charts: list[dict[str, Any]] = []
    fail_on = Severity.parse(first["fail_on"])
    for path, doc in named:
        for field, label in (("tool", "tool version"), ("fail_on", "fail-on threshold")):
            if doc[field] != first[field]:
                raise MergeError(
                    f"{path}: its {label} ({json.dumps(doc[field])}) differs from {first_path}'s "
                    f"({json.dumps(first[field])}): shards of one run share it"
                )
        for rule in doc["rules"]:
            seen = rules.get(rule["id"])
            if seen is not None and seen[1] != rule:
                changed = sorted(k for k in {*rule, *seen[1]} if rule.get(k) != seen[1].get(k))
                raise MergeError(
                    f"{path}: rule {rule['id']} differs from its definition in {seen[0]} ({', '.join(changed)}): "
                    "the shards ran different rule catalogues or severity overrides"
                )
            rules.setdefault(rule["id"], (path, rule))
        for art in doc["artefacts"]:
            artefacts.setdefault(
                art["identity"], ArtefactInfo(art["identity"], art["kind"], art["path"], art.get("read"))
            )
        for entry in doc["items"]:
            if entry["nodeid"] in items:
                raise MergeError(
                    f"{path}: item {entry['nodeid']} is also in {items[entry['nodeid']][0]} "
                    "(a shard given twice, or shards of different splits?)"
                )
            items[entry["nodeid"]] = (
                path,
                ItemResult(
                    nodeid=entry["nodeid"],
                    rule_id=entry["rule_id"],
                    artefact=entry["artefact"],
                    outcome=entry["outcome"],
                    duration=entry["duration"],
                    skip_reason=entry.get("skip_reason"),
                    kind=entry.get("kind", "rule"),
                    message=entry.get("message"),
                ),
            )
        for entry in doc["findings"]:
            finding = Finding.from_dict({k: entry.get(k) for k in _FINDING_KEYS})
            disposition = entry["disposition"]
            if disposition in (FAILED, REPORTED):  # re-judged against the common threshold
                disposition = FAILED if finding.severity >= fail_on else REPORTED
            findings.append(
                FindingResult(finding, disposition, entry.get("justification"), entry.get("waiver_expires"))
            )
        for chart in doc.get("charts", []):
            if not any(c["key"] == chart["key"] and c["artefact"] == chart["artefact"] for c in charts):
                charts.append(chart)
    result = RunResult(
        tool_version=first["tool"]["version"],
        started=min(_time(doc["started"]) for _, doc in named),
        finished=max(_time(doc["finished"]) for _, doc in named),
        fail_on=fail_on,
        root=first["root"],
        rules=[_rule_info(data) for _, data in sorted(rules.values(), key=lambda r: r[1]["id"])],
        artefacts=sorted(artefacts.values(), key=lambda a: a.identity),
        findings=findings,
        items=sorted((item for _, item in items.values()), key=lambda i: i.nodeid),
        charts=charts,
    )
    result.exit_status = exit_code(result)
    return result


def exit_code(result: RunResult) -> int:
    """``vmrole lint``'s exit code for this run: 1 when a finding is at or above fail-on or an item failed or
    errored, else 0."""
    if verdict(result) != PASS or any(item.outcome in ("failed", "error") for item in result.items):
        return 1
    return 0


# ---- JUnit XML ---------------------------------------------------------------------------------------------
def _junit_names(nodeid: str) -> tuple[str, str]:
    """(classname, name) as pytest's junitxml derives them from a node id."""
    names = nodeid.split("::")
    names[0] = names[0].replace("/", ".")
    names[0] = re.sub(r"\.py$", "", names[0])
    return ".".join(names[:-1]) or names[0], names[-1]


def write_junit(result: RunResult, path: Path) -> Path:
    """A JUnit XML (xunit2) of the merged items: one testcase per item, a failed rule's findings as its text."""
    failed: dict[tuple[str, str], list[Finding]] = {}
    for fr in result.findings:
        if fr.disposition == FAILED:
            failed.setdefault((fr.finding.rule_id, fr.finding.artefact), []).append(fr.finding)
    counts = {"failed": 0, "error": 0, "skipped": 0}
    suite = ET.Element("testsuite", name="vmrole")
    for item in result.items:
        classname, name = _junit_names(item.nodeid)
        case = ET.SubElement(suite, "testcase", classname=classname, name=name, time=f"{item.duration:.3f}")
        if item.outcome in counts:
            counts[item.outcome] += 1
        if item.outcome == "failed":
            lines = [
                f"[{f.severity.label}] {f.rule_id} {f.rule_name} at {f.location}: {f.message}"
                for f in failed.get((item.rule_id, item.artefact), [])
            ]
            message = item.message or (f"{len(lines)} finding(s) at or above {result.fail_on.label}")
            ET.SubElement(case, "failure", message=message[:500]).text = "\n".join(lines) or message
        elif item.outcome == "error":
            ET.SubElement(case, "error", message=item.message or "error").text = item.message or ""
        elif item.outcome == "skipped":
            ET.SubElement(case, "skipped", type="pytest.skip", message=item.skip_reason or "").text = (
                item.skip_reason or ""
            )
    suite.set("errors", str(counts["error"]))
    suite.set("failures", str(counts["failed"]))
    suite.set("skipped", str(counts["skipped"]))
    suite.set("tests", str(len(result.items)))
    suite.set("time", f"{(result.finished - result.started).total_seconds():.3f}")
    suite.set("timestamp", result.started.isoformat())
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")
    return path


def merge_reports(paths: Sequence[Path], out_dir: Path) -> tuple[dict[str, Path], int, str]:
    """Validate and merge ``paths``, write SARIF, HTML, JSON and JUnit XML into ``out_dir``.

    Returns (format -> path written, exit code, a one-line summary). Raises MergeError before writing anything.
    """
    named = [(Path(p), load_report(Path(p))) for p in paths]
    result = merge_documents(named)
    out_dir = Path(out_dir)
    inputs = {Path(p).resolve() for p in paths}
    clobbered = [out_dir / n for n in (*FILE_NAMES.values(), JUNIT_NAME) if (out_dir / n).resolve() in inputs]
    if clobbered:
        raise MergeError(f"{clobbered[0]}: is an input report; write the merged reports to another --report-dir")
    written = write_reports(result, out_dir, FILE_NAMES)
    written["junit"] = write_junit(result, out_dir / JUNIT_NAME)
    failed = sum(1 for fr in result.findings if fr.disposition == FAILED)
    summary = (
        f"{len(named)} report(s), {len(result.artefacts)} artefact(s), {len(result.items)} item(s), "
        f"{len(result.findings)} finding(s), {failed} at or above {result.fail_on.label}: {verdict(result)}"
    )
    return written, result.exit_status, summary
