"""Terminal summary block, write_reports, and the small shared helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.engine.severity import Severity
from harness.reports import FILE_NAMES, write_reports
from harness.reports.common import area_of, baseline_justification, iso_utc
from harness.reports.markdown import to_html
from harness.reports.model import BASELINED, FindingResult, ItemResult, RunResult
from harness.reports.summary import terminal_summary_lines
from tests.reports.conftest import CSDEF, finding


def test_summary_block(run: RunResult) -> None:
    lines = terminal_summary_lines(run, {"sarif": Path("out/vmrole.sarif"), "html": Path("out/vmrole.html")})
    assert lines[0] == "vmrole-harness: FAIL (2 findings at or above high; fail-on high)"
    assert lines[1].split() == ["severity", "failed", "reported", "waived", "baselined"]
    assert lines[2].split() == ["*", "critical", "1", "0", "0", "0"]
    assert lines[3].split() == ["*", "high", "1", "0", "1", "0"]
    assert any(line.split() == ["total", "2", "3", "1", "1"] for line in lines)
    assert "(* at or above the fail-on threshold high)" in lines[-3]
    assert lines[-2:] == ["  html report: out/vmrole.html", "  sarif report: out/vmrole.sarif"]
    assert not any("\x1b" in line for line in lines)


def test_summary_hides_empty_severities_and_reports_pass(run: RunResult) -> None:
    run.findings = [fr for fr in run.findings if fr.finding.severity is Severity.MEDIUM]
    lines = terminal_summary_lines(run)
    assert lines[0] == "vmrole-harness: PASS (nothing at or above high; fail-on high)"
    assert [line.split()[0] for line in lines[2:-2]] == ["medium"]


def test_summary_error_verdict(run: RunResult) -> None:
    run.findings = []
    run.items.append(ItemResult("a::VMR501[a]", "VMR501", "a", "error"))
    assert terminal_summary_lines(run)[0] == "vmrole-harness: ERROR (1 item errored; fail-on high)"


def test_write_reports_writes_fixed_names(run: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "nested"
    written = write_reports(run, out, {"sarif", "json", "html"})
    assert written == {fmt: out / name for fmt, name in FILE_NAMES.items()}
    assert [p.name for p in sorted(out.iterdir())] == ["vmrole.html", "vmrole.json", "vmrole.sarif"]
    assert json.loads((out / "vmrole.sarif").read_text(encoding="utf-8"))["version"] == "2.1.0"


def test_write_reports_subset_and_unknown(run: RunResult, tmp_path: Path) -> None:
    assert list(write_reports(run, tmp_path, {"json"})) == ["json"]
    with pytest.raises(ValueError, match=r"unknown report format.*junit"):
        write_reports(run, tmp_path / "none", {"json", "junit"})
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("recorded", "shown"),
    [
        (None, "baselined"),
        ("in baseline .vmrole-baseline.json", "baselined in .vmrole-baseline.json"),
        ("baselined in b.json", "baselined in b.json"),
        ("b.json", "baselined in b.json"),
        ("added to baseline b.json", "baselined (added to baseline b.json)"),
    ],
)
def test_baseline_justification(recorded: str | None, shown: str) -> None:
    fr = FindingResult(finding("VMR502", CSDEF, "/x", "m"), BASELINED, recorded)
    assert baseline_justification(fr) == shown


def test_area_of() -> None:
    assert area_of("VMR501") == "Service model"
    assert area_of("VMR301") == "Keys and secrets"
    assert area_of("XYZ") == "Other"


def test_iso_utc_converts_aware_times() -> None:
    from datetime import datetime, timedelta, timezone

    moment = datetime(2031, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert iso_utc(moment) == "2031-01-01T10:00:00.000Z"


def test_markdown_escapes_and_links_only_http() -> None:
    html = str(to_html("# T <b>\n\n- [ok](https://a.test/x(y)) `<i>`\n- [bad](javascript:alert(1))\n\n```\n<x>\n```"))
    assert "<h4>T &lt;b&gt;</h4>" in html
    assert '<a href="https://a.test/x(y)" rel="noreferrer noopener">ok</a>' in html
    assert "<code>&lt;i&gt;</code>" in html
    assert "javascript:" not in html.split("[bad]")[0] and 'href="javascript' not in html
    assert "<pre><code>&lt;x&gt;</code></pre>" in html
