"""Allure enrichment, checked end to end: a pytester run with --alluredir, then its result JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.reports.allure import ALLURE_SEVERITY, allure_active, apply_allure, write_environment_properties

pytest_plugins = ["pytester"]

# allure-pytest loads through its entry point; the vmrole plugin is kept out to test only this module.
INNER_TEST = """
import os

from harness.engine.finding import Finding
from harness.engine.severity import Severity
from harness.reports.allure import apply_allure
from harness.reports.model import FindingResult, RuleInfo, WAIVED, FAILED

RULE = RuleInfo(
    id="VMR501",
    name="http-input-endpoint",
    severity=Severity.HIGH,
    summary="An input endpoint serves plain HTTP.",
    help_markdown="An input endpoint serves plain HTTP.",
    applies_to=("csdef",),
    tags=("service-model", "tls"),
    help_uri="https://docs.example.test/vmrole/rules/VMR501",
)


def finding(location):
    return Finding("VMR501", RULE.name, Severity.HIGH, "svc/a.csdef", location, "Serve it over https.", line=3)


def test_rule_item():
    findings = [
        FindingResult(finding("/E[@name='A']"), FAILED),
        FindingResult(finding("/E[@name='B']"), WAIVED, "OPS-1: going away", "2031-01-01"),
    ]
    active = apply_allure(RULE, "svc/a.csdef", findings)
    assert active is (os.environ["EXPECT_ALLURE"] == "1")
"""


def _results(alluredir: Path) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(alluredir.glob("*-result.json"))]


def test_apply_allure_labels_links_and_attaches(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPECT_ALLURE", "1")
    pytester.makepyfile(test_inner=INNER_TEST)
    alluredir = pytester.path / "allure-results"
    outcome = pytester.runpytest_subprocess("-p", "no:vmrole", "--alluredir", str(alluredir))
    outcome.assert_outcomes(passed=1)

    (result,) = _results(alluredir)
    labels = {(label["name"], label["value"]) for label in result["labels"]}
    assert {
        ("epic", "vmrole-harness"),
        ("feature", "Service model"),
        ("story", "http-input-endpoint"),
        ("tag", "service-model"),
        ("tag", "tls"),
        ("rule_id", "VMR501"),
        ("artefact", "svc/a.csdef"),
        ("severity", "critical"),  # our high is Allure's critical
    } <= labels
    assert [link["url"] for link in result["links"]] == ["https://docs.example.test/vmrole/rules/VMR501"]

    (attachment,) = result["attachments"]
    assert attachment["type"] == "application/json"
    payload = json.loads((alluredir / attachment["source"]).read_text(encoding="utf-8"))
    assert [(f["location"], f["disposition"], f["justification"]) for f in payload] == [
        ("/E[@name='A']", "failed", None),
        ("/E[@name='B']", "waived", "OPS-1: going away"),
    ]


def test_apply_allure_is_a_no_op_without_alluredir(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPECT_ALLURE", "0")
    pytester.makepyfile(test_inner=INNER_TEST)
    pytester.runpytest_subprocess("-p", "no:vmrole").assert_outcomes(passed=1)


def test_inactive_in_this_process_unless_recording(request: pytest.FixtureRequest) -> None:
    recording = bool(request.config.getoption("allure_report_dir", default=None))
    assert allure_active() is recording


def test_severity_mapping_covers_every_severity() -> None:
    from harness.engine.severity import Severity

    assert ALLURE_SEVERITY == {
        "critical": "blocker",
        "high": "critical",
        "medium": "normal",
        "low": "minor",
        "info": "trivial",
    }
    assert set(ALLURE_SEVERITY) == {s.label for s in Severity}


def test_environment_properties(tmp_path: Path) -> None:
    path = write_environment_properties(
        tmp_path / "allure-results",
        {"vmrole-harness": "0.1.0", "fail-on": "high", "root": "C:\\work\\repo", "note": "a=b: ü ✓\nnext", "x": None},
    )
    assert path.name == "environment.properties"
    assert path.read_text(encoding="ascii").splitlines() == [
        "fail-on=high",
        "note=a=b: \\u00fc \\u2713\\nnext",
        "root=C:\\\\work\\\\repo",
        "vmrole-harness=0.1.0",
        "x=",
    ]


def test_environment_property_keys_are_escaped(tmp_path: Path) -> None:
    path = write_environment_properties(tmp_path, {"a key=1": "v"})
    assert path.read_text(encoding="ascii") == "a\\ key\\=1=v\n"


def test_apply_allure_returns_false_when_inactive() -> None:
    from harness.engine.severity import Severity
    from harness.reports.model import RuleInfo

    if allure_active():
        pytest.skip("this run records allure results")
    rule = RuleInfo("VMR501", "x", Severity.LOW, "s", "", ("csdef",))
    assert apply_allure(rule, "a", []) is False
