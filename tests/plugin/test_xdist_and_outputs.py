"""pytest-xdist gives identical results; aggregates are written once; secrets reach no output."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.plugin.conftest import SECRET_KEY

SQL_PASSWORD = "Zq8!vR2#mK9pL4xW"


@pytest.fixture
def busy_model(pytester, model):
    """Several artefacts with findings of several severities (and secrets)."""
    model(count=1, greeting=f"DefaultEndpointsProtocol=https;AccountName=shopdata;AccountKey={SECRET_KEY}")
    for n in range(3):
        sub = pytester.mkdir(f"svc{n}")
        (sub / "ServiceDefinition.csdef").write_text((pytester.path / "ServiceDefinition.csdef").read_text())
        (sub / "ServiceConfiguration.Cloud.cscfg").write_text(
            (pytester.path / "ServiceConfiguration.Cloud.cscfg")
            .read_text()
            .replace(SECRET_KEY, "x")
            .replace("hello", f"Server=tcp:db{n}.example.net;Database=shop;User ID=app;Password={SQL_PASSWORD};")
            .replace('count="1"', f'count="{n + 1}"')
        )
    return pytester


def _summary(out: Path) -> tuple[list, list]:
    data = json.loads((out / "vmrole.json").read_text())
    findings = sorted(
        (f["rule_id"], f["artefact"], f["location"], f["disposition"], f["fingerprint"]) for f in data["findings"]
    )
    items = sorted((i["nodeid"], i["outcome"]) for i in data["items"])
    return findings, items


def test_xdist_gives_identical_results(busy_model):
    serial = busy_model.runpytest_subprocess(".", "--vmr-discover", "--vmr-report-dir", "serial", "-p", "no:xdist")
    parallel = busy_model.runpytest_subprocess(
        ".", "--vmr-discover", "--vmr-report-dir", "parallel", "-n", "2", "--dist", "loadfile"
    )
    assert serial.ret == parallel.ret == pytest.ExitCode.TESTS_FAILED
    s_findings, s_items = _summary(busy_model.path / "serial")
    p_findings, p_items = _summary(busy_model.path / "parallel")
    assert s_findings and s_findings == p_findings
    assert s_items == p_items
    assert len(s_items) == len({i[0] for i in s_items})  # each item reported exactly once
    parallel.stdout.fnmatch_lines(["*vmrole-harness*", "*critical*"])


def test_junit_properties_carry_rule_and_severity(busy_model):
    busy_model.runpytest(".", "--vmr-discover", "--junitxml", "junit.xml")
    root = ET.parse(busy_model.path / "junit.xml").getroot()
    props = {
        (p.get("name"), p.get("value"))
        for case in root.iter("testcase")
        for p in case.iter("property")
        if p.get("name", "").startswith("vmr_")
    }
    assert ("vmr_rule", "VMR301") in props
    assert ("vmr_severity", "critical") in props


def test_secrets_reach_no_output(busy_model):
    result = busy_model.runpytest_subprocess(
        ".",
        "--vmr-discover",
        "-v",
        "-rA",
        "--vmr-report-dir",
        "out",
        "--junitxml",
        "out/junit.xml",
        "--alluredir",
        "out/allure",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    texts = [result.stdout.str(), result.stderr.str()]
    written = [p for p in (busy_model.path / "out").rglob("*") if p.is_file()]
    assert len(written) >= 4
    texts += [p.read_text("utf-8", errors="replace") for p in written]
    for secret in (SECRET_KEY, SECRET_KEY[:20], SQL_PASSWORD):
        assert not any(secret in t for t in texts), f"secret fragment {secret[:4]}… leaked"
    # ...while the findings themselves are there
    assert any("VMR301" in t for t in texts) and any("VMR302" in t for t in texts)


def test_every_report_links_each_rule_where_sarif_does(busy_model):
    """The plugin's rules carry SARIF's helpUri into the JSON report, the HTML report's documentation link
    and Allure's link (help URIs came out null everywhere but SARIF before)."""
    result = busy_model.runpytest_subprocess(
        ".", "--vmr-discover", "--vmr-report-dir", "out", "--alluredir", "out/allure", "-p", "no:xdist"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = busy_model.path / "out"
    (sarif_run,) = json.loads((out / "vmrole.sarif").read_text("utf-8"))["runs"]
    sarif_uris = {d["id"]: d.get("helpUri") for d in sarif_run["tool"]["driver"]["rules"]}
    json_rules = json.loads((out / "vmrole.json").read_text("utf-8"))["rules"]
    assert json_rules and all(r["help_uri"] for r in json_rules)  # every catalogue rule links somewhere
    assert {r["id"]: r["help_uri"] for r in json_rules} == {r["id"]: sarif_uris[r["id"]] for r in json_rules}
    html = (out / "vmrole.html").read_text("utf-8")
    for rule in json_rules:
        body = html.split(f'<details class="rule" id="rule-{rule["id"]}">', 1)[1].split("</details>", 1)[0]
        assert f'<a href="{rule["help_uri"]}" rel="noreferrer noopener">documentation</a>' in body
    allure_links = {}
    for path in (out / "allure").glob("*-result.json"):
        data = json.loads(path.read_text("utf-8"))
        labels = dict((label["name"], label["value"]) for label in data["labels"] if label["name"] == "rule_id")
        if "rule_id" in labels:
            allure_links[labels["rule_id"]] = [link["url"] for link in data.get("links", [])]
    assert allure_links
    assert all(links == [sarif_uris[rule_id]] for rule_id, links in allure_links.items()), allure_links
