"""One self-contained HTML page per run: verdict, counts, findings by artefact and rule, rule help.

Everything is inline (CSS and SVG; no script, font or image is fetched), so the file can be mailed,
archived as a CI artefact and opened offline. The template is ``harness/reports/templates/report.html.j2``
(package data of ``harness.reports``); autoescaping is on, and rule docs go through
``harness.reports.markdown``, which escapes before it marks up.

Each rule links its documentation at the URL every report uses (``harness.reports.common.rule_help_uri``,
SARIF's ``helpUri``), and its references are links: the docstring's ``- Title: URL`` lines become Markdown
links (as in SARIF's ``help.markdown``), and a reference the docstring does not cite is listed under its
title from ``harness.docs_sources``. Only http(s) URLs become links; the template escapes them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from harness.docs_sources import linked_references, title_of
from harness.reports import markdown
from harness.reports.common import (
    TOOL_NAME,
    area_of,
    counts_by_disposition,
    counts_by_outcome,
    counts_matrix,
    rule_help_uri,
    severities_desc,
    sorted_findings,
    suppression_justification,
    verdict,
)
from harness.reports.live_charts import live_charts
from harness.reports.model import BASELINED, FAILED, REPORTED, WAIVED, FindingResult, RuleInfo, RunResult

TEMPLATE = "report.html.j2"
_SAFE_URL = re.compile(r"^https?://", re.I)


@dataclass
class RuleGroup:
    rule: RuleInfo
    findings: list[FindingResult] = field(default_factory=list)


@dataclass
class ArtefactGroup:
    identity: str
    kind: str
    rules: list[RuleGroup] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("harness.reports", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "j2"), default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["markdown"] = markdown.to_html
    env.filters["safe_url"] = _safe_url
    env.filters["linked_references"] = linked_references
    env.filters["help_uri"] = rule_help_uri
    env.filters["uncited_references"] = _uncited_references
    return env


def _safe_url(url: str | None) -> str | None:
    return url if url and _SAFE_URL.match(url) else None


def _uncited_references(rule: RuleInfo) -> list[tuple[str, str]]:
    """(title, URL) of the rule's http(s) references that its documentation text does not already cite."""
    return [(title_of(url), url) for url in rule.references if _safe_url(url) and url not in rule.help_markdown]


def render_html(result: RunResult) -> str:
    return _environment().get_template(TEMPLATE).render(**_context(result))


def write_html(result: RunResult, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result), encoding="utf-8")
    return path


# ---- view model ------------------------------------------------------------------------------


def _context(result: RunResult) -> dict[str, Any]:
    rules = {rule.id: rule for rule in result.rules}
    for fr in result.findings:  # a finding whose rule the run did not list still gets a heading
        f = fr.finding
        rules.setdefault(
            f.rule_id,
            RuleInfo(f.rule_id, f.rule_name, f.severity, f.rule_name, "", applies_to=()),
        )
    kinds = {a.identity: a.kind for a in result.artefacts}
    by_disposition = counts_by_disposition(result)
    return {
        "tool_name": TOOL_NAME,
        "result": result,
        "verdict": verdict(result),
        "fail_on": result.fail_on.label,
        "at_or_above": [s.label for s in severities_desc() if s >= result.fail_on],
        "started": _human_time(result.started),
        "finished": _human_time(result.finished),
        "duration": _duration(result),
        "by_disposition": by_disposition,
        "counting": by_disposition[FAILED] + by_disposition[REPORTED],
        "suppressed": by_disposition[WAIVED] + by_disposition[BASELINED],
        "outcomes": counts_by_outcome(result),
        "chart": _chart(result),
        "live_charts": live_charts(result.charts),
        "groups": _groups(result, rules, kinds),
        "rules": [rules[rule_id] for rule_id in sorted(rules)],
        "areas": {rule_id: area_of(rule_id) for rule_id in rules},
        "justification": suppression_justification,
        "tests": sorted((i for i in result.items if i.kind == "test"), key=lambda i: i.nodeid),
        "problem_items": sorted(
            (i for i in result.items if i.kind == "rule" and i.outcome in ("error", "skipped")),
            key=lambda i: (i.outcome != "error", i.nodeid),
        ),
    }


def _human_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(result: RunResult) -> str:
    seconds = max(0.0, (result.finished - result.started).total_seconds())
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{seconds:.1f} s"


def _groups(result: RunResult, rules: dict[str, RuleInfo], kinds: dict[str, str]) -> list[ArtefactGroup]:
    tree: dict[str, dict[str, list[FindingResult]]] = defaultdict(lambda: defaultdict(list))
    for fr in sorted_findings(result.findings):
        tree[fr.finding.artefact][fr.finding.rule_id].append(fr)
    groups = []
    for identity, by_rule in tree.items():
        group = ArtefactGroup(identity=identity, kind=kinds.get(identity, ""))
        group.rules = [RuleGroup(rules[rule_id], by_rule[rule_id]) for rule_id in sorted(by_rule)]
        counts = dict.fromkeys((FAILED, REPORTED, WAIVED, BASELINED), 0)
        for findings in by_rule.values():
            for fr in findings:
                counts[fr.disposition] = counts.get(fr.disposition, 0) + 1
        group.counts = counts
        groups.append(group)
    # Worst first: the highest failed severity, then how many fail, then what is reported, then name.
    groups.sort(key=lambda g: (*_badness(g), g.identity))
    return groups


def _badness(group: ArtefactGroup) -> tuple[int, int, int, int]:
    def worst(disposition: str) -> int:
        return max(
            (int(fr.finding.severity) for rg in group.rules for fr in rg.findings if fr.disposition == disposition),
            default=-1,
        )

    return (-worst(FAILED), -group.counts[FAILED], -worst(REPORTED), -group.counts[REPORTED])


def _chart(result: RunResult) -> dict[str, Any]:
    """Geometry of the severity bar chart: one row per severity, failed | reported | suppressed."""
    matrix = counts_matrix(result)
    rows = []
    peak = max((sum(cells.values()) for cells in matrix.values()), default=0) or 1
    label_w, bar_w, row_h, gap = 84, 420, 22, 10
    for index, severity in enumerate(severities_desc()):
        cells = matrix[severity.label]
        segments = []
        x = float(label_w)
        for kind, count in (
            ("failed", cells[FAILED]),
            ("reported", cells[REPORTED]),
            ("suppressed", cells[WAIVED] + cells[BASELINED]),
        ):
            width = bar_w * count / peak
            if count:
                segments.append({"kind": kind, "x": round(x, 1), "w": round(max(width, 2.0), 1), "count": count})
            x += width
        rows.append(
            {
                "label": severity.label,
                "y": index * (row_h + gap),
                "segments": segments,
                "total": sum(cells.values()),
                "end": round(x, 1),
                "gates": severity >= result.fail_on,
            }
        )
    return {
        "rows": rows,
        "row_h": row_h,
        "label_w": label_w,
        "width": label_w + bar_w + 56,
        "height": len(rows) * (row_h + gap) - gap,
    }
