"""JSON report: golden file and validation against the shipped schema (harness/data/report.schema.json).

Regenerate the golden file after an intended change of output::

    VMR_UPDATE_GOLDEN=1 .venv/bin/pytest tests/reports -q

Paths under the temporary directory and all timestamps are replaced by placeholders before comparing.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from harness.reports import jsonreport, sarif
from harness.reports.model import ItemResult, RunResult
from tests.reports.test_sarif_report import check_golden


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = jsonreport.schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_json_matches_golden(run: RunResult, tmp_path: Path) -> None:
    check_golden("vmrole.json", jsonreport.build_json(run), tmp_path)


def test_json_validates_against_its_schema(run: RunResult, validator) -> None:
    errors = [e.message for e in validator.iter_errors(jsonreport.build_json(run))]
    assert errors == []


def test_schema_file_is_the_packaged_one() -> None:
    shipped = Path(jsonreport.__file__).parents[1] / "data" / "report.schema.json"
    assert json.loads(shipped.read_text(encoding="utf-8")) == jsonreport.schema()


def test_schema_rejects_what_it_should(run: RunResult, validator) -> None:
    report = jsonreport.build_json(run)
    report["findings"][0]["disposition"] = "ignored"
    report["schema_version"] = 2
    waived = next(f for f in report["findings"] if f["disposition"] == "waived")
    waived["justification"] = None
    paths = {"/".join(map(str, e.absolute_path)) for e in validator.iter_errors(report)}
    assert {"findings/0/disposition", "schema_version"} <= paths
    assert any(p.endswith("/justification") for p in paths)


def test_header_and_summary(run: RunResult) -> None:
    report = jsonreport.build_json(run)
    assert (report["schema"], report["schema_version"]) == ("vmrole-harness/report", 1)
    assert report["tool"] == {"name": "vmrole-harness", "version": "0.1.0"}
    assert (report["started"], report["finished"], report["duration_seconds"]) == (
        "2031-05-04T10:00:00.000Z",
        "2031-05-04T10:00:03.250Z",
        3.25,
    )
    assert (report["fail_on"], report["verdict"], report["exit_status"]) == ("high", "fail", 1)
    summary = report["summary"]
    assert summary["findings"] == 7
    assert summary["by_severity"] == {"critical": 1, "high": 1, "medium": 2, "low": 0, "info": 1}
    assert summary["by_disposition"] == {"failed": 2, "reported": 3, "waived": 1, "baselined": 1}
    assert summary["by_severity_and_disposition"]["high"] == {"failed": 1, "reported": 0, "waived": 1, "baselined": 0}
    assert summary["items"] == {"passed": 3, "failed": 2, "skipped": 1, "error": 0}


def test_findings_carry_the_finding_dict_plus_disposition(run: RunResult) -> None:
    report = jsonreport.build_json(run)
    by_fp = {fr.finding.fingerprint: fr for fr in run.findings}
    for entry in report["findings"]:
        fr = by_fp[entry["fingerprint"]]
        assert {k: entry[k] for k in fr.finding.to_dict()} == fr.finding.to_dict()
        assert entry["disposition"] == fr.disposition
        assert entry["justification"] == fr.justification
    keys = [(f["rule_id"], f["artefact"], f["location"]) for f in report["findings"]]
    assert keys == sorted(keys)


def test_verdicts(run: RunResult) -> None:
    run.findings = [fr for fr in run.findings if fr.disposition != "failed"]
    assert jsonreport.build_json(run)["verdict"] == "pass"
    run.items.append(ItemResult("x::VMR504[x]", "VMR504", "x", "error"))
    assert jsonreport.build_json(run)["verdict"] == "error"


def test_write_json(run: RunResult, tmp_path: Path) -> None:
    path = jsonreport.write_json(run, tmp_path / "deep" / "r.json")
    assert json.loads(path.read_text(encoding="utf-8")) == jsonreport.build_json(run)


def test_every_rule_carries_the_help_uri_sarif_links(run: RunResult) -> None:
    """The JSON report links each rule where SARIF's helpUri does: a help_uri the run set, else the rule's
    page or first public reference (harness.docs_sources.help_uri); null only where SARIF has none."""
    report = jsonreport.build_json(run)
    (sarif_run,) = sarif.build_sarif(run)["runs"]
    sarif_uris = {d["id"]: d.get("helpUri") for d in sarif_run["tool"]["driver"]["rules"]}
    json_uris = {r["id"]: r["help_uri"] for r in report["rules"]}
    assert json_uris == {rule_id: sarif_uris[rule_id] for rule_id in json_uris}
    assert json_uris["VMR301"] == "https://docs.example.test/vmrole/rules/VMR301"  # set by the run
    by_id = {r.id: r for r in run.rules}
    assert by_id["VMR504"].help_uri is None
    assert json_uris["VMR504"] == by_id["VMR504"].references[0]  # from its reference, as SARIF
    assert json_uris["VMR402"] is None  # no URL set, no page URL known, no reference: none, as SARIF
