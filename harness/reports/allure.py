"""Allure enrichment: labels, a docs link and the findings attached to each (rule, artefact) item.

``apply_allure`` runs inside a test item (on whichever process runs it, xdist workers included) and is a
cheap no-op unless allure-pytest is recording (``--alluredir``). ``write_environment_properties`` is for
the controller process only: allure-pytest never writes ``environment.properties`` itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.reports.common import TOOL_NAME, area_of, rule_help_uri, suppression_justification
from harness.reports.model import FindingResult, RuleInfo

#: Our severities on Allure's scale.
ALLURE_SEVERITY = {
    "critical": "blocker",
    "high": "critical",
    "medium": "normal",
    "low": "minor",
    "info": "trivial",
}
ENVIRONMENT_FILE = "environment.properties"


def allure_active() -> bool:
    """True when an allure listener is registered (allure-pytest runs with ``--alluredir``)."""
    try:
        from allure_commons import plugin_manager
    except ImportError:
        return False
    return bool(plugin_manager.hook.add_label.get_hookimpls())


def apply_allure(rule: RuleInfo, artefact: str, findings: list[FindingResult]) -> bool:
    """Label the current test for Allure and attach its findings; returns whether allure was active."""
    if not allure_active():
        return False
    import allure
    from allure_commons.types import LabelType

    allure.dynamic.epic(TOOL_NAME)
    allure.dynamic.feature(area_of(rule.id))
    allure.dynamic.story(rule.name)
    if rule.tags:
        allure.dynamic.tag(*rule.tags)
    allure.dynamic.label("rule_id", rule.id)
    allure.dynamic.label("artefact", artefact)
    allure.dynamic.label(LabelType.SEVERITY, ALLURE_SEVERITY[rule.severity.label])
    uri = rule_help_uri(rule)
    if uri:
        allure.dynamic.link(uri, name=f"{rule.id} {rule.name}")
    if rule.summary:
        allure.dynamic.description(f"**{rule.id} {rule.name}**: {rule.summary}")
    if findings:
        payload = [
            {
                **fr.finding.to_dict(),
                "disposition": fr.disposition,
                "justification": suppression_justification(fr),
                "waiver_expires": fr.waiver_expires,
            }
            for fr in findings
        ]
        allure.attach(
            json.dumps(payload, indent=2, ensure_ascii=False),
            name=f"{rule.id} findings ({len(findings)})",
            attachment_type=allure.attachment_type.JSON,
        )
    return True


def write_environment_properties(alluredir: str | Path, result_meta: Mapping[str, Any]) -> Path:
    """Write ``environment.properties`` (Allure's "Environment" widget) into ``alluredir``.

    Keys are sorted; values are stringified (None becomes empty) and escaped as Java properties, with
    anything outside printable ASCII as ``\\uXXXX``, so any Allure version reads them back unchanged.
    """
    directory = Path(alluredir)
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{_escape(str(key), is_key=True)}={_escape('' if value is None else str(value))}"
        for key, value in sorted(result_meta.items(), key=lambda kv: str(kv[0]))
    ]
    path = directory / ENVIRONMENT_FILE
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="ascii")
    return path


def _escape(text: str, *, is_key: bool = False) -> str:
    out = []
    for index, char in enumerate(text):
        if char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif char in "=:#!" and (is_key or index == 0):
            out.append("\\" + char)
        elif char == " " and (is_key or index == 0):
            out.append("\\ ")
        elif ord(char) > 0x7E:
            out.extend(f"\\u{unit:04x}" for unit in _utf16_units(char))
        else:
            out.append(char)
    return "".join(out)


def _utf16_units(char: str) -> list[int]:
    data = char.encode("utf-16-be")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
