"""What every report writer derives the same way: verdict, ordering, areas, timestamps, counts."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from harness.docs_sources import help_uri
from harness.engine.severity import Severity
from harness.reports.model import BASELINED, DISPOSITIONS, FAILED, WAIVED, FindingResult, RuleInfo, RunResult

TOOL_NAME = "vmrole-harness"

PASS = "pass"
FAIL = "fail"
ERROR = "error"  # a rule crashed or an item errored: the run proves nothing either way

#: Rule areas by the hundreds digit of the id (see CONVENTIONS.md, "Rule catalogue").
AREAS = {
    "1": "Agent and integration components",
    "2": "Sysprep",
    "3": "Keys and secrets",
    "4": "Firewall vs endpoints",
    "5": "Service model",
    "6": "Endpoints (live)",
    "7": "Reimage",
    "8": "Load balancer",
    "9": "User rules",
}

_RULE_ID = re.compile(r"^VMR(\d)\d\d$")


def area_of(rule_id: str) -> str:
    match = _RULE_ID.match(rule_id)
    return AREAS.get(match.group(1), "Other") if match else "Other"


def rule_help_uri(rule: RuleInfo) -> str | None:
    """The one URL every report links a rule's documentation with (SARIF ``helpUri``, the JSON report's
    ``help_uri``, the HTML report's documentation link, Allure's link): the rule's own ``help_uri`` when the
    run set one, else :func:`harness.docs_sources.help_uri` of its id and references."""
    return rule.help_uri or help_uri(rule.id, rule.references)


def verdict(result: RunResult) -> str:
    """``fail`` when a finding is at or above the threshold, ``error`` when an item errored, else ``pass``."""
    if any(fr.disposition == FAILED for fr in result.findings):
        return FAIL
    if any(item.kind == "test" and item.outcome == "failed" for item in result.items):
        return FAIL  # a plain test (your own test file) failed
    if any(item.outcome == "error" for item in result.items):
        return ERROR
    return PASS


def sort_key(fr: FindingResult) -> tuple:
    """Stable report order: rule, artefact, logical location, line, message."""
    f = fr.finding
    return (
        f.rule_id,
        f.artefact,
        f.location,
        f.line if f.line is not None else -1,
        f.message,
        fr.disposition,
    )


def sorted_findings(findings: Iterable[FindingResult]) -> list[FindingResult]:
    return sorted(findings, key=sort_key)


def severities_desc() -> list[Severity]:
    return sorted(Severity, reverse=True)


def counts_by_disposition(result: RunResult) -> dict[str, int]:
    counts = dict.fromkeys(DISPOSITIONS, 0)
    for fr in result.findings:
        counts[fr.disposition] = counts.get(fr.disposition, 0) + 1
    return counts


def counts_matrix(result: RunResult) -> dict[str, dict[str, int]]:
    """severity label -> disposition -> count, every cell present (severities highest first)."""
    matrix = {s.label: dict.fromkeys(DISPOSITIONS, 0) for s in severities_desc()}
    for fr in result.findings:
        matrix[fr.finding.severity.label][fr.disposition] += 1
    return matrix


def counts_by_outcome(result: RunResult) -> dict[str, int]:
    counts = dict.fromkeys(("passed", "failed", "skipped", "error"), 0)
    for item in result.items:
        counts[item.outcome] = counts.get(item.outcome, 0) + 1
    return counts


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` (naive datetimes are taken as local time, as datetime does)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def baseline_justification(fr: FindingResult) -> str:
    """``baselined in FILE`` from whatever the plugin recorded (a file name, or a phrase)."""
    text = (fr.justification or "").strip()
    if not text:
        return "baselined"
    if text.startswith("baselined"):
        return text
    if text.startswith("in baseline "):
        return "baselined in " + text.removeprefix("in baseline ").strip()
    if "baseline" in text:  # e.g. "added to baseline FILE" when the run creates the baseline
        return f"baselined ({text})"
    return "baselined in " + text


def suppression_justification(fr: FindingResult) -> str | None:
    """The text shown for a suppressed finding; None for failed/reported ones."""
    if fr.disposition == WAIVED:
        # Waivers require a justification; say so rather than print an empty one.
        return (fr.justification or "").strip() or "waived (no justification recorded)"
    if fr.disposition == BASELINED:
        return baseline_justification(fr)
    return None
