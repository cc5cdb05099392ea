"""The JSON report: everything in a RunResult, in a documented, versioned shape.

The shape is ``harness/data/report.schema.json`` (JSON Schema draft 2020-12), identified in every report
by ``"schema": "vmrole-harness/report"`` and ``"schema_version"``. Adding an optional field keeps the
version; renaming, removing or retyping one bumps it. Unlike SARIF, nothing is capped.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from harness.reports.common import (
    TOOL_NAME,
    area_of,
    counts_by_disposition,
    counts_by_outcome,
    counts_matrix,
    iso_utc,
    rule_help_uri,
    sorted_findings,
    verdict,
)
from harness.reports.model import FAILED, REPORTED, RunResult

SCHEMA_ID = "vmrole-harness/report"
SCHEMA_VERSION = 1


def schema() -> dict[str, Any]:
    """The JSON Schema of this report (shipped as harness/data/report.schema.json)."""
    text = resources.files("harness").joinpath("data/report.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def build_json(result: RunResult) -> dict[str, Any]:
    matrix = counts_matrix(result)
    return {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": TOOL_NAME, "version": result.tool_version},
        "started": iso_utc(result.started),
        "finished": iso_utc(result.finished),
        "duration_seconds": round((result.finished - result.started).total_seconds(), 3),
        "root": result.root,
        "fail_on": result.fail_on.label,
        "verdict": verdict(result),
        "exit_status": result.exit_status,
        "summary": {
            "findings": len(result.findings),
            "by_severity": result.counts_by_severity((FAILED, REPORTED)),
            "by_disposition": counts_by_disposition(result),
            "by_severity_and_disposition": matrix,
            "items": counts_by_outcome(result),
        },
        "rules": [
            {
                "id": rule.id,
                "name": rule.name,
                "area": area_of(rule.id),
                "severity": rule.severity.label,
                "summary": rule.summary,
                "help_markdown": rule.help_markdown,
                "help_uri": rule_help_uri(rule),
                "applies_to": list(rule.applies_to),
                "tags": list(rule.tags),
                "references": list(rule.references),
            }
            for rule in sorted(result.rules, key=lambda r: r.id)
        ],
        "artefacts": [
            {"identity": a.identity, "kind": a.kind, "path": a.path, **({"read": a.read} if a.read else {})}
            for a in sorted(result.artefacts, key=lambda a: a.identity)
        ],
        "findings": [
            {
                **fr.finding.to_dict(),
                "disposition": fr.disposition,
                "justification": fr.justification,
                "waiver_expires": fr.waiver_expires,
            }
            for fr in sorted_findings(result.findings)
        ],
        "items": [
            {
                "nodeid": item.nodeid,
                "rule_id": item.rule_id,
                "artefact": item.artefact,
                "outcome": item.outcome,
                "duration": round(item.duration, 3),
                "skip_reason": item.skip_reason,
                **({"kind": item.kind, "message": item.message} if item.kind != "rule" else {}),
            }
            for item in sorted(result.items, key=lambda i: i.nodeid)
        ],
        "charts": [
            {"key": c["key"], "artefact": c["artefact"], "data": c["data"]}
            for c in sorted(result.charts, key=lambda c: (c["key"], c["artefact"]))
        ],
    }


def write_json(result: RunResult, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_json(result), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
