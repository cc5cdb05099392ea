"""Running one rule on one subject, outside or inside pytest (the plugin and the benchmarks share it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.engine.finding import Finding
from harness.engine.rule import NotApplicable, Rule


@dataclass(frozen=True)
class Evaluation:
    findings: tuple[Finding, ...] = ()
    #: Set when the rule did not run: a missing related artefact, or the rule said NotApplicable.
    skip_reason: str | None = None


def evaluate(rule: type[Rule], subject: Any, notes: Mapping[str, str] | None = None) -> Evaluation:
    for attr in rule.requires:
        if getattr(subject, attr, None) is None:
            reason = (notes or {}).get(attr) or f"{rule.id} needs a {attr}, and none was found"
            return Evaluation(skip_reason=reason)
    try:
        return Evaluation(findings=tuple(rule().check(subject)))
    except NotApplicable as exc:
        return Evaluation(skip_reason=f"not applicable: {exc}")
