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


def test_rules_run_on_every_sample(sample_findings):
    assert all(f.message and f.location for f in sample_findings)


def test_eclipse_sample_certificate_is_flagged(sample_findings):
    flagged = {
        f.artefact.split("/", 1)[0]
        for f in sample_findings
        if f.rule_id == "VMR505" and "Toolkit for Eclipse sample certificate" in f.message
    }
    assert "microsoft__WindowsAzureToolkitForEclipseWithJava" in flagged


def test_known_duplicate_ports_are_flagged(sample_findings):
    by_rule = {(f.rule_id, f.artefact.rsplit("__", 1)[-1], f.location.rsplit("/", 1)[-1]) for f in sample_findings}
    assert ("VMR511", "ServiceDefinition.csdef", "InputEndpoint[@name='http1']") in by_rule
    # the second of two same-named endpoints: its location says which one
    assert ("VMR513", "ServiceDefinition.csdef", "InternalEndpoint[@name='http_SESSION_AFFINITY'][2]") in by_rule


def test_no_setting_values_in_findings(sample_findings):
    for f in sample_findings:
        assert "AccountKey=" not in f.message and "AccountKey=" not in str(f.evidence)
