"""Findings: what a rule reports. Safe to print, serialisable across xdist workers."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.engine.severity import Severity


@dataclass(frozen=True)
class Finding:
    """One problem found by one rule in one artefact.

    ``location`` is a logical location (an element path such as
    ``/ServiceDefinition/WebRole[@name='Web']/Endpoints/InputEndpoint[@name='HttpIn']``, or a part
    name inside a package such as ``SDPackage_….csdx!ServiceDefinition.build.csdef``). ``evidence``
    holds short strings that are safe to print: names, fingerprints, sizes, never secret values.
    ``line`` is for humans and SARIF regions only; it never enters the fingerprint.
    """

    rule_id: str
    rule_name: str
    severity: Severity
    artefact: str
    location: str
    message: str
    evidence: Mapping[str, str] = field(default_factory=dict)
    line: int | None = None

    @property
    def fingerprint(self) -> str:
        """rule + artefact identity + logical location: stable across edits that move lines."""
        key = "\x1f".join((self.rule_id, self.artefact, self.location))
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "rule_name": self.rule_name,
            "severity": self.severity.label,
            "artefact": self.artefact,
            "location": self.location,
            "message": self.message,
            "evidence": dict(self.evidence),
            "line": self.line,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(
            rule_id=data["rule_id"],
            rule_name=data["rule_name"],
            severity=Severity.parse(data["severity"]),
            artefact=data["artefact"],
            location=data["location"],
            message=data["message"],
            evidence=dict(data.get("evidence") or {}),
            line=data.get("line"),
        )
