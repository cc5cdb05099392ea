"""Plain tests (your own test files) in the project's reports: JSON (valid against the schema), HTML, SARIF
notifications and the terminal summary; a failed test fails the verdict even without a finding."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import jsonschema

from harness.engine.severity import Severity
from harness.reports import html, jsonreport, sarif
from harness.reports.common import FAIL, PASS, verdict
from harness.reports.model import ItemResult, RunResult
from harness.reports.summary import terminal_summary_lines

SMOKE = "suites/smoke/test_smoke.py"


def run(*items: ItemResult) -> RunResult:
    return RunResult(
        tool_version="0.1.0",
        started=datetime(2031, 5, 4, 10, 0, 0, tzinfo=UTC),
        finished=datetime(2031, 5, 4, 10, 0, 3, tzinfo=UTC),
        fail_on=Severity.HIGH,
        root="/repo",
        rules=[],
        artefacts=[],
        findings=[],
        items=list(items),
        exit_status=1,
    )


PASSED = ItemResult(f"{SMOKE}::test_port[WebVM_IN_0]", "", "local-fabric", "passed", 0.4, kind="test")
FAILED = ItemResult(
    f"{SMOKE}::test_port[WebVM_IN_1]", "", "local-fabric", "failed", 0.5, kind="test",
    message="AssertionError: assert 'Stopped' == 'Running'",
)  # fmt: skip
ERRORED = ItemResult(
    f"{SMOKE}::test_vip", "", "local-fabric", "error", 0.1, kind="test", message="Failed: the VIP is down"
)
SKIPPED = ItemResult(
    f"{SMOKE}::test_x[no-target]", "", "", "skipped", 0.0, skip_reason="no deployment target", kind="test"
)
RULE = ItemResult("t.vmrtarget.yml::VMR601[local-fabric]", "VMR601", "local-fabric", "passed", 0.1)


def test_json_lists_tests_with_kind_and_message_and_validates():
    document = jsonreport.build_json(run(RULE, PASSED, FAILED, ERRORED, SKIPPED))
    schema = jsonreport.schema()
    jsonschema.Draft202012Validator(schema).validate(document)
    items = {i["nodeid"]: i for i in document["items"]}
    assert "kind" not in items[RULE.nodeid]  # rule items keep their shape
    assert items[FAILED.nodeid] == {
        "nodeid": FAILED.nodeid, "rule_id": "", "artefact": "local-fabric", "outcome": "failed", "duration": 0.5,
        "skip_reason": None, "kind": "test", "message": "AssertionError: assert 'Stopped' == 'Running'",
    }  # fmt: skip
    assert items[SKIPPED.nodeid]["skip_reason"] == "no deployment target"
    assert document["summary"]["items"] == {"passed": 2, "failed": 1, "skipped": 1, "error": 1}


def test_a_failed_test_fails_the_verdict_without_any_finding():
    assert verdict(run(RULE, PASSED)) == PASS
    assert verdict(run(RULE, PASSED, FAILED)) == FAIL
    assert verdict(run(RULE, dataclasses.replace(FAILED, kind="rule", rule_id="VMR601"))) == PASS  # findings decide
    assert "1 test failed" in terminal_summary_lines(run(PASSED, FAILED))[0]


def test_html_has_a_tests_section_with_the_failure_text(tmp_path):
    page = html.write_html(run(RULE, PASSED, FAILED, SKIPPED), tmp_path / "vmrole.html").read_text()
    assert 'id="tests"' in page
    assert "test_port[WebVM_IN_1]" in page and "assert &#39;Stopped&#39; == &#39;Running&#39;" in page
    assert "<b>1</b> of your own tests failed" in page
    assert "Items that did not run to a verdict" not in page  # that table is for rule items
    assert 'id="tests"' not in html.write_html(run(RULE), tmp_path / "rules-only.html").read_text()


def test_sarif_notification_for_an_errored_test_names_it_and_its_message():
    log = sarif.build_sarif(run(RULE, ERRORED))
    texts = [n["message"]["text"] for n in log["runs"][0]["invocations"][0]["toolExecutionNotifications"]]
    assert f"{ERRORED.nodeid} errored: Failed: the VIP is down" in texts
