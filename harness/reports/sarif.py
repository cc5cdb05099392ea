"""SARIF 2.1.0 for GitHub code scanning and any SARIF viewer.

One run; rules limited to those of the run (id order); results in a stable order (rule, artefact,
logical location), each with ``partialFingerprints["vmrHash/v1"]`` = the finding's fingerprint (rule +
artefact + logical location, never the line) so alerts survive edits. Waived and baselined findings
stay in the log as *suppressed* results (``kind: external``) with their justification, as checkov does.

GitHub specifics: ``properties["security-severity"]`` only counts for rules tagged ``security``, so every
rule carries that tag (all catalogue rules are security or hardening checks); code scanning accepts at most
25,000 results a run, so extra results are dropped (suppressed and low severities first) and the run says
so in a tool execution notification.

Rule help: ``help.markdown`` is the rule's documentation with its references as Markdown links,
``help.text`` the same as plain text. ``helpUri`` is the rule's page (``docs/rules/VMR123.md``) when the
pages' public URL is known: a ``Rules`` URL in the distribution's ``[project.urls]``, or a GitHub
``Repository``/``Source``/``Homepage`` URL (pages under ``blob/main/docs/rules``); otherwise the rule's first
public reference, so that every catalogue rule links somewhere a reader can follow. A rule with neither
(a finding whose rule is not in the run) has no ``helpUri``. See ``harness.docs_sources.help_uri``; every
report links the same URL (``harness.reports.common.rule_help_uri``).
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from harness.docs_sources import linked_references
from harness.reports.common import (
    TOOL_NAME,
    area_of,
    iso_utc,
    rule_help_uri,
    sort_key,
    sorted_findings,
    suppression_justification,
)
from harness.reports.model import (
    BASELINED,
    FAILED,
    REPORTED,
    WAIVED,
    FindingResult,
    RuleInfo,
    RunResult,
)

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
SRCROOT = "%SRCROOT%"
FINGERPRINT_KEY = "vmrHash/v1"
#: GitHub code scanning rejects runs with more results than this.
MAX_RESULTS = 25_000

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
_DISPOSITION_PRIORITY = {FAILED: 0, REPORTED: 1, WAIVED: 2, BASELINED: 3}


def _project_url() -> str | None:
    """The project's home page from its installed metadata (``[project.urls]``), if it declares one."""
    try:
        urls = metadata.metadata("vmrole-harness").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    by_label = {}
    for entry in urls:
        label, _, url = entry.partition(",")
        by_label[label.strip().lower()] = url.strip()
    for label in ("homepage", "documentation", "repository", "source"):
        if by_label.get(label):
            return by_label[label]
    return None


#: ``tool.driver.informationUri``; omitted while the distribution declares no project URL.
INFORMATION_URI: str | None = _project_url()


def build_sarif(result: RunResult) -> dict[str, Any]:
    rules = _rules_of_run(result)
    rule_index = {rule.id: i for i, rule in enumerate(rules)}
    kept, dropped = _cap(result.findings)

    notifications = []
    if dropped:
        notifications.append(
            {
                "level": "warning",
                "message": {
                    "text": f"{dropped} of {len(result.findings)} results were left out: GitHub code scanning "
                    f"accepts at most {MAX_RESULTS} results a run (suppressed and lower-severity results "
                    "were dropped first). The JSON report has them all."
                },
            }
        )
    for item in sorted(result.items, key=lambda i: i.nodeid):
        if item.outcome == "error":
            notifications.append(
                {
                    "level": "error",
                    "message": {
                        "text": f"{item.nodeid} errored: rule {item.rule_id} did not judge {item.artefact}."
                        if item.kind == "rule"
                        else f"{item.nodeid} errored: {item.message or 'the test could not run'}"
                    },
                }
            )

    driver: dict[str, Any] = {"name": TOOL_NAME, "version": result.tool_version}
    if re.match(r"^\d+\.\d+\.\d+", result.tool_version):
        driver["semanticVersion"] = result.tool_version
    if INFORMATION_URI:
        driver["informationUri"] = INFORMATION_URI
    driver["rules"] = [_rule_descriptor(rule) for rule in rules]

    invocation: dict[str, Any] = {
        "executionSuccessful": result.exit_status in (0, 1) and not any(i.outcome == "error" for i in result.items),
        "exitCode": result.exit_status,
        "startTimeUtc": iso_utc(result.started),
        "endTimeUtc": iso_utc(result.finished),
    }
    if notifications:
        invocation["toolExecutionNotifications"] = notifications

    run: dict[str, Any] = {
        "tool": {"driver": driver},
        "invocations": [invocation],
        "originalUriBaseIds": {SRCROOT: {"uri": _directory_uri(result.root)}},
        "results": [_result(fr, rule_index) for fr in kept],
        "columnKind": "unicodeCodePoints",
        "properties": {"failOn": result.fail_on.label},
    }
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}


def write_sarif(result: RunResult, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(build_sarif(result), indent=2, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


# ---- rules -----------------------------------------------------------------------------------


def _rules_of_run(result: RunResult) -> list[RuleInfo]:
    """The run's rules in id order, plus a minimal descriptor for a finding whose rule is missing."""
    rules = {rule.id: rule for rule in result.rules}
    for fr in result.findings:
        f = fr.finding
        if f.rule_id not in rules:
            rules[f.rule_id] = RuleInfo(
                id=f.rule_id,
                name=f.rule_name,
                severity=f.severity,
                summary=f.rule_name,
                help_markdown="",
                applies_to=(),
            )
    return [rules[rule_id] for rule_id in sorted(rules)]


def _rule_descriptor(rule: RuleInfo) -> dict[str, Any]:
    doc = rule.help_markdown.strip() or rule.summary
    descriptor: dict[str, Any] = {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.summary or rule.name},
        "fullDescription": {"text": _what_it_does(rule) or rule.summary or rule.name},
        "help": {"text": _plain_text(doc), "markdown": linked_references(doc)},
    }
    uri = rule_help_uri(rule)
    if uri:
        descriptor["helpUri"] = uri
    descriptor["defaultConfiguration"] = {"level": rule.severity.sarif_level}
    tags = list(dict.fromkeys((*rule.tags, "security")))
    descriptor["properties"] = {
        "tags": tags,
        "security-severity": rule.severity.security_severity,
        "severity": rule.severity.label,
        "area": area_of(rule.id),
        "appliesTo": list(rule.applies_to),
    }
    return descriptor


def _what_it_does(rule: RuleInfo) -> str:
    """The body of the docstring's "What it does" section, as one paragraph."""
    match = re.search(r"^#+ What it does\s*$(.*?)(?=^#+ |\Z)", rule.help_markdown, re.M | re.S)
    return " ".join(match.group(1).split()) if match else ""


def _plain_text(markdown: str) -> str:
    return re.sub(r"^#+ ", "", markdown, flags=re.M)


# ---- results ---------------------------------------------------------------------------------


def _cap(findings: list[FindingResult]) -> tuple[list[FindingResult], int]:
    """At most MAX_RESULTS findings, the ones that matter most, in report order; and how many were dropped."""
    if len(findings) <= MAX_RESULTS:
        return sorted_findings(findings), 0
    by_importance = sorted(
        findings,
        key=lambda fr: (_DISPOSITION_PRIORITY.get(fr.disposition, 9), -int(fr.finding.severity), sort_key(fr)),
    )
    return sorted_findings(by_importance[:MAX_RESULTS]), len(findings) - MAX_RESULTS


def _result(fr: FindingResult, rule_index: dict[str, int]) -> dict[str, Any]:
    f = fr.finding
    physical: dict[str, Any] = {"artifactLocation": _artifact_location(f.artefact)}
    if f.line is not None and f.line >= 1:
        physical["region"] = {"startLine": f.line}
    location: dict[str, Any] = {"physicalLocation": physical}
    if f.location:
        location["logicalLocations"] = [{"fullyQualifiedName": f.location, "kind": "element"}]

    out: dict[str, Any] = {
        "ruleId": f.rule_id,
        "ruleIndex": rule_index[f.rule_id],
        "level": f.severity.sarif_level,
        "message": {"text": f.message},
        "locations": [location],
        "partialFingerprints": {FINGERPRINT_KEY: f.fingerprint},
    }
    justification = suppression_justification(fr)
    if justification is not None:
        suppression: dict[str, Any] = {"kind": "external", "status": "accepted", "justification": justification}
        if fr.disposition == WAIVED and fr.waiver_expires:
            suppression["properties"] = {"expires": fr.waiver_expires}
        out["suppressions"] = [suppression]
    properties: dict[str, Any] = {"severity": f.severity.label, "disposition": fr.disposition}
    if f.evidence:
        properties["evidence"] = dict(sorted(f.evidence.items()))
    out["properties"] = properties
    return out


def _artifact_location(identity: str) -> dict[str, Any]:
    """Relative identities resolve against %SRCROOT% (the run root); others become absolute URIs."""
    path = Path(identity)
    if path.is_absolute():
        return {"uri": path.as_uri()}
    if _SCHEME.match(identity):  # already a URI (e.g. a deployment)
        return {"uri": identity}
    return {"uri": quote(PurePosixPath(identity).as_posix()), "uriBaseId": SRCROOT}


def _directory_uri(root: str) -> str:
    uri = Path(root).absolute().as_uri()
    return uri if uri.endswith("/") else uri + "/"
