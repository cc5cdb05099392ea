"""The rule engine: typed facts in, findings out. Nothing here touches raw bytes."""

from harness.engine.artefact import Artefact
from harness.engine.finding import Finding
from harness.engine.rule import NotApplicable, Rule
from harness.engine.severity import Severity

__all__ = ["Artefact", "Finding", "NotApplicable", "Rule", "Severity"]
