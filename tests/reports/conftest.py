"""A hand-made run for the report writers: every severity and disposition, lines and no lines,
a part inside a package, an artefact outside the run root, a message that tries to inject HTML."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness.docs_sources import refs
from harness.engine.finding import Finding
from harness.engine.severity import Severity
from harness.reports.model import (
    BASELINED,
    FAILED,
    REPORTED,
    WAIVED,
    ArtefactInfo,
    FindingResult,
    ItemResult,
    RuleInfo,
    RunResult,
)

CSDEF = "svc/ServiceDefinition.csdef"
CSCFG = "svc/ServiceConfiguration.Cloud.cscfg"
CSPKG = "pkg/Shop.cspkg"
HELP_BASE = "https://docs.example.test/vmrole/rules/"
SCRIPT_MESSAGE = 'Endpoint name <script>alert("pwned")</script> is not a valid identifier; rename it.'


def _doc(summary: str, what: str) -> str:
    return (
        f"{summary}\n\n### What it does\n{what}\n\n### Why is this bad?\nIt breaks deployments.\n\n"
        '### Example\n```xml\n<InputEndpoint name="HttpIn" protocol="http" port="80" />\n```\n\n'
        "### Use instead\nUse `https` with a `certificate`.\n\n"
        "### References\n- [Cloud service definition schema](https://learn.microsoft.com/en-us/previous-versions/azure/reference/ee758711(v=azure.100))\n"
    )


RULES = [
    RuleInfo(
        id="VMR301",
        name="package-contains-private-key",
        severity=Severity.CRITICAL,
        summary="A service package carries a private key.",
        help_markdown=_doc("A service package carries a private key.", "Looks for PFX and PEM keys in package parts."),
        applies_to=("cspkg",),
        tags=("secrets",),
        help_uri=HELP_BASE + "VMR301",
    ),
    RuleInfo(
        id="VMR402",
        name="endpoint-port-blocked-by-firewall",
        severity=Severity.HIGH,
        summary="An input endpoint's port is not opened by the role's firewall rules.",
        help_markdown=_doc("An input endpoint's port is not opened.", "Compares endpoints with firewall rules."),
        applies_to=("csdef",),
        tags=("firewall", "endpoints"),
    ),
    RuleInfo(
        id="VMR501",
        name="http-input-endpoint",
        severity=Severity.MEDIUM,
        summary="An input endpoint serves plain HTTP.",
        help_markdown=_doc("An input endpoint serves plain HTTP.", "Flags `http` input endpoints."),
        applies_to=("csdef",),
        tags=("service-model", "tls"),
        help_uri=HELP_BASE + "VMR501",
    ),
    RuleInfo(
        id="VMR502",
        name="single-instance-role",
        severity=Severity.LOW,
        summary="A role runs a single instance and has no SLA.",
        help_markdown=_doc("A role runs a single instance.", "Reads Instances/@count."),
        applies_to=("cscfg",),
        tags=("service-model",),
    ),
    RuleInfo(
        id="VMR503",
        name="default-diagnostics-connection",
        severity=Severity.INFO,
        summary="Diagnostics use the development storage connection string.",
        help_markdown=_doc("Diagnostics use development storage.", "Reads the diagnostics setting."),
        applies_to=("cscfg",),
    ),
    RuleInfo(  # ran, found nothing: still listed as a rule of the run
        id="VMR504",
        name="os-family-retired",
        severity=Severity.HIGH,
        summary="The configuration pins a retired guest OS family.",
        help_markdown=_doc("The configuration pins a retired guest OS family.", "Reads @osFamily."),
        applies_to=("cscfg",),
        # no help_uri: every report links its first reference, which its doc text does not cite
        references=refs("netsh-advfirewall"),
    ),
]
_BY_ID = {r.id: r for r in RULES}


def finding(rule_id: str, artefact: str, location: str, message: str, **kw: Any) -> Finding:
    rule = _BY_ID[rule_id]
    return Finding(rule_id, rule.name, kw.pop("severity", rule.severity), artefact, location, message, **kw)


def make_run(root: Path, outside: Path) -> RunResult:
    web = "/ServiceDefinition/WebRole[@name='Web']"
    findings = [
        FindingResult(
            finding(
                "VMR301",
                CSPKG,
                "SDPackage_8f2a.csdx!Web/approot/certs/web.pfx",
                "The package holds a PFX with a private key; deploy certificates through the portal instead.",
                evidence={"part": "Web/approot/certs/web.pfx", "sha256": "9b1c0e7d", "size": "2405"},
            ),
            FAILED,
        ),
        FindingResult(
            finding(
                "VMR402",
                CSDEF,
                f"{web}/Endpoints/InputEndpoint[@name='Admin']",
                "Port 8443 of input endpoint Admin is not opened by any firewall rule; add one.",
                evidence={"port": "8443"},
                line=14,
            ),
            FAILED,
        ),
        FindingResult(
            finding(
                "VMR402", CSDEF, f"{web}/Endpoints/InputEndpoint[@name='Legacy']", "Port 8080 is blocked.", line=17
            ),
            WAIVED,
            justification="OPS-123: legacy endpoint removed in the Q3 migration",
            waiver_expires="2031-09-30",
        ),
        FindingResult(
            finding(
                "VMR501", CSDEF, f"{web}/Endpoints/InputEndpoint[@name='HttpIn']", "Serve HttpIn over https.", line=12
            ),
            REPORTED,
        ),
        FindingResult(
            finding("VMR501", CSDEF, f"{web}/Endpoints/InputEndpoint[@name='bad']", SCRIPT_MESSAGE), REPORTED
        ),
        FindingResult(
            finding("VMR502", CSCFG, "/ServiceConfiguration/Role[@name='Web']/Instances", "Run at least 2 instances."),
            BASELINED,
            justification="in baseline .vmrole-baseline.json",
        ),
        FindingResult(
            finding(
                "VMR503",
                outside.as_posix(),
                "/ServiceConfiguration/Role[@name='Worker']/ConfigurationSettings/Setting[@name='Diag']",
                "Point diagnostics at a real storage account.",
                evidence={"setting": "Diag"},
            ),
            REPORTED,
        ),
    ]
    artefacts = [
        ArtefactInfo(CSDEF, "csdef", (root / CSDEF).as_posix()),
        ArtefactInfo(CSCFG, "cscfg", (root / CSCFG).as_posix()),
        ArtefactInfo(CSPKG, "cspkg", (root / CSPKG).as_posix()),
        ArtefactInfo(outside.as_posix(), "cscfg", outside.as_posix()),
    ]
    items = [
        ItemResult(f"{CSPKG}::VMR301[Shop.cspkg]", "VMR301", CSPKG, "failed", 0.12),
        ItemResult(f"{CSDEF}::VMR402[ServiceDefinition.csdef]", "VMR402", CSDEF, "failed", 0.01),
        ItemResult(f"{CSDEF}::VMR501[ServiceDefinition.csdef]", "VMR501", CSDEF, "passed", 0.01),
        ItemResult(f"{CSCFG}::VMR502[ServiceConfiguration.Cloud.cscfg]", "VMR502", CSCFG, "passed", 0.0),
        ItemResult(
            f"{CSCFG}::VMR504[ServiceConfiguration.Cloud.cscfg]",
            "VMR504",
            CSCFG,
            "skipped",
            0.0,
            skip_reason="no osFamily attribute",
        ),
        ItemResult("Other.cscfg::VMR503[Other.cscfg]", "VMR503", outside.as_posix(), "passed", 0.0),
    ]
    # Shuffled on purpose: the writers must sort.
    return RunResult(
        tool_version="0.1.0",
        started=datetime(2031, 5, 4, 10, 0, 0, tzinfo=UTC),
        finished=datetime(2031, 5, 4, 10, 0, 3, 250000, tzinfo=UTC),
        fail_on=Severity.HIGH,
        root=root.as_posix(),
        rules=list(reversed(RULES)),
        artefacts=list(reversed(artefacts)),
        findings=findings[3:] + findings[:3],
        items=list(reversed(items)),
        exit_status=1,
    )


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "repo"
    # Fixed (never read): an absolute identity enters the fingerprint, so it must not vary per run.
    outside = Path("/srv/elsewhere/Other.cscfg")
    return root, outside


@pytest.fixture
def run(paths: tuple[Path, Path]) -> RunResult:
    return make_run(*paths)


def normalise(text: str, tmp: Path) -> str:
    """Machine-independent text: the temporary directory and timestamps replaced by placeholders."""
    text = text.replace(tmp.as_uri(), "file:///TMP").replace(tmp.as_posix(), "/TMP")
    return re.sub(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", "<TIMESTAMP>", text)
