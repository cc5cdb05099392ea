"""The VMR5xx rules against real csdef/cscfg files from public repositories (../shared/samples).

Robustness (no rule crashes on files nobody on the project wrote) plus a few known true positives.
"""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path, PurePosixPath

import pytest

from harness.engine.artefact import Artefact
from harness.engine.catalogue import all_rules
from harness.engine.rule import NotApplicable
from harness.facts.servicemodel import ServiceModelSubject
from harness.readers.errors import Unreadable
from harness.readers.servicemodel import parse_configuration, parse_definition

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples" / "service-models"
MY_RULES = [r for r in all_rules() if r.__module__.rsplit(".", 1)[-1] in ("consistency", "endpoints", "roles")]

pytestmark = pytest.mark.skipif(not (SAMPLES / "manifest.tsv").is_file(), reason=f"no samples at {SAMPLES}")


def _subjects() -> list[ServiceModelSubject]:
    rows = list(csv.DictReader((SAMPLES / "manifest.tsv").open(encoding="utf-8"), delimiter="\t"))
    definitions = {}
    configurations = []
    for row in rows:
        path = SAMPLES / row["local_file"]
        artefact = Artefact(kind=row["kind"], identity=row["local_file"], path=path, display=path.name)
        # Only files of one commit and folder belong together (manifest "pairing").
        key = (row["repo"], row["commit"], str(PurePosixPath(row["path"]).parent))
        try:
            if row["kind"] == "csdef":
                definitions[key] = parse_definition(path.read_bytes(), artefact)
            else:
                configurations.append((key, parse_configuration(path.read_bytes(), artefact)))
        except Unreadable:
            continue  # malformed on purpose; VMR001's business
    subjects = [ServiceModelSubject(artefact=d.artefact, definition=d) for d in definitions.values()]
    subjects += [
        ServiceModelSubject(artefact=c.artefact, definition=definitions.get(key), configuration=c)
        for key, c in configurations
    ]
    return subjects


@pytest.fixture(scope="module")
def sample_findings():
    findings = []
    for subject in _subjects():
        for rule in MY_RULES:
            if subject.artefact.kind not in rule.applies_to:
                continue
            if any(getattr(subject, attr) is None for attr in rule.requires):
                continue
            with contextlib.suppress(NotApplicable):
                findings.extend(rule().check(subject))
    return findings


def test_rules_run_on_every_sample(sample_findings, snapshot):
    """Every finding on the whole corpus: a rule change that moves a real-world result shows up here."""
    assert all(f.message and f.location for f in sample_findings)
    snapshot.assert_match(sample_findings)


def test_eclipse_sample_certificate_is_flagged(sample_findings, snapshot):
    eclipse = "microsoft__WindowsAzureToolkitForEclipseWithJava"
    flagged = [f for f in sample_findings if f.rule_id == "VMR505" and f.artefact.startswith(eclipse)]
    assert flagged
    snapshot.assert_match(flagged)


def test_known_duplicate_ports_are_flagged(sample_findings, snapshot):
    # among them the second of two same-named endpoints: its location says which one ([2])
    snapshot.assert_match([f for f in sample_findings if f.rule_id in ("VMR511", "VMR513")])


def test_no_setting_values_in_findings(sample_findings):
    for f in sample_findings:
        assert "AccountKey=" not in f.message and "AccountKey=" not in str(f.evidence)
