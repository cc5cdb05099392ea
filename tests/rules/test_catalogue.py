"""The whole catalogue: metadata is well-formed, ids and names are unique, every rule is tested."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from harness.engine.artefact import KINDS
from harness.engine.catalogue import all_rules
from harness.engine.rule import Rule

RULES = all_rules()
RULE_TESTS = Path(__file__).parent


def test_catalogue_is_not_empty():
    assert RULES


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_rule_metadata_is_valid(rule: type[Rule]):
    assert list(rule.validate_metadata()) == []
    assert rule.applies_to <= set(KINDS), f"{rule.id}: unknown kinds {set(rule.applies_to) - set(KINDS)}"


def test_rule_ids_are_unique():
    duplicates = [rule_id for rule_id, n in Counter(r.id for r in RULES).items() if n > 1]
    assert duplicates == []


def test_rule_names_are_unique():
    duplicates = [name for name, n in Counter(r.name for r in RULES).items() if n > 1]
    assert duplicates == []


def test_every_rule_is_exercised_by_a_rule_test():
    """A rule id must appear in some tests/rules/test_*.py other than this one (so new rules need tests)."""
    sources = "\n".join(
        p.read_text(encoding="utf-8") for p in sorted(RULE_TESTS.glob("test_*.py")) if p.name != Path(__file__).name
    )
    mentioned = set(re.findall(r"VMR\d{3}", sources))
    untested = [f"{r.id} {r.name} ({r.__module__})" for r in RULES if r.id not in mentioned]
    assert untested == [], "rules without a test under tests/rules: " + ", ".join(untested)
