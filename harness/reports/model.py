"""What report writers consume: one run's findings, their dispositions, and the rules involved.

The pytest plugin builds a RunResult on the controller process (never on an xdist worker) from the
findings each item attached to its report, then hands it to the writers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from harness.engine.finding import Finding
from harness.engine.severity import Severity

# What happened to a finding in this run.
FAILED = "failed"  # at or above the fail-on threshold: makes the item (and the run) fail
REPORTED = "reported"  # below the threshold: reported, does not fail the run
WAIVED = "waived"  # suppressed by a waiver (justification + expiry)
BASELINED = "baselined"  # suppressed because its fingerprint is in the baseline
DISPOSITIONS = (FAILED, REPORTED, WAIVED, BASELINED)


@dataclass(frozen=True)
class FindingResult:
    finding: Finding
    disposition: str
    #: For WAIVED/BASELINED: the waiver's justification (or "in baseline FILE").
    justification: str | None = None
    waiver_expires: str | None = None  # ISO date for WAIVED


@dataclass(frozen=True)
class ItemResult:
    """One pytest item: a (rule, artefact) pair, or a plain test (``kind`` ``test``: a user's own test file run
    with the plugin, e.g. ``suites/smoke``; ``rule_id`` is empty, ``message`` its failure text, masked)."""

    nodeid: str
    rule_id: str
    artefact: str  # artefact identity (a plain test: the deployment target's name, or "")
    outcome: str  # "passed" | "failed" | "skipped" | "error"
    duration: float = 0.0
    skip_reason: str | None = None
    kind: str = "rule"  # "rule" | "test"
    message: str | None = None


@dataclass(frozen=True)
class RuleInfo:
    id: str
    name: str
    severity: Severity  # effective default severity in this run (after overrides)
    summary: str
    help_markdown: str
    applies_to: tuple[str, ...]
    tags: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    help_uri: str | None = None


@dataclass(frozen=True)
class ArtefactInfo:
    identity: str
    kind: str
    path: str  # absolute path, for SARIF artifactLocation resolution
    #: What reading it cost, for an image read from blob storage: bytes_read (by the readers), bytes_fetched and
    #: requests (on the network), seconds. None for everything else.
    read: dict[str, float] | None = None


@dataclass
class RunResult:
    tool_version: str
    started: datetime
    finished: datetime
    fail_on: Severity
    root: str  # run root directory (absolute), base for artefact identities
    rules: list[RuleInfo] = field(default_factory=list)
    artefacts: list[ArtefactInfo] = field(default_factory=list)
    findings: list[FindingResult] = field(default_factory=list)
    items: list[ItemResult] = field(default_factory=list)
    exit_status: int = 0
    #: Pictures from live probes: {"key": "lb-spread" | "reimage-timeline", "artefact": id, "data": {...}}
    charts: list[dict] = field(default_factory=list)

    def counts_by_severity(self, dispositions: tuple[str, ...] = (FAILED, REPORTED)) -> dict[str, int]:
        counts = {s.label: 0 for s in sorted(Severity, reverse=True)}
        for fr in self.findings:
            if fr.disposition in dispositions:
                counts[fr.finding.severity.label] += 1
        return counts
