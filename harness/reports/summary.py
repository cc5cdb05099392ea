"""The block the plugin prints in pytest's terminal summary (plain text: the caller adds colour)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from harness.engine.severity import Severity
from harness.reports.common import FAIL, PASS, TOOL_NAME, counts_by_disposition, counts_matrix, verdict
from harness.reports.model import BASELINED, FAILED, REPORTED, WAIVED, RunResult

_COLUMNS = (FAILED, REPORTED, WAIVED, BASELINED)


def terminal_summary_lines(result: RunResult, reports: Mapping[str, Path] | None = None) -> list[str]:
    """Verdict, a severity x disposition table, and the reports written (``{"sarif": path, ...}``)."""
    totals = counts_by_disposition(result)
    outcome = verdict(result)
    failed_tests = sum(1 for item in result.items if item.kind == "test" and item.outcome == "failed")
    if outcome == FAIL:
        why = f"{totals[FAILED]} finding{'s' if totals[FAILED] != 1 else ''} at or above {result.fail_on.label}"
        if failed_tests:
            why += f", {failed_tests} test{'s' if failed_tests != 1 else ''} failed"
    elif outcome == PASS:
        why = f"nothing at or above {result.fail_on.label}"
    else:
        errored = sum(1 for item in result.items if item.outcome == "error")
        why = f"{errored} item{'s' if errored != 1 else ''} errored"
    lines = [f"{TOOL_NAME}: {outcome.upper()} ({why}; fail-on {result.fail_on.label})"]

    matrix = counts_matrix(result)
    width = max(len(label) for label in matrix)
    header = "  " + "severity".ljust(width + 2) + "".join(c.rjust(11) for c in _COLUMNS)
    lines.append(header)
    for label, cells in matrix.items():
        if not any(cells.values()):
            continue
        mark = "*" if label in _gating(result) else " "
        lines.append(f"{mark} {label.ljust(width + 2)}" + "".join(str(cells[c]).rjust(11) for c in _COLUMNS))
    lines.append("  " + "total".ljust(width + 2) + "".join(str(totals[c]).rjust(11) for c in _COLUMNS))
    lines.append(f"  (* at or above the fail-on threshold {result.fail_on.label})")
    for name, path in sorted((reports or {}).items()):
        lines.append(f"  {name} report: {path}")
    return lines


def _gating(result: RunResult) -> set[str]:
    return {s.label for s in Severity if s >= result.fail_on}
