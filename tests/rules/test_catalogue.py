"""The whole catalogue: every rule class in checks/** is in it exactly once, its metadata is well-formed and
agrees with what the project documents (id ranges, live stages, subject attributes, secrets are not waivable),
and every rule has a reviewed finding in a snapshot (tests/rules/SNAPSHOTS.md).

Each test here reads something the catalogue does not compute itself (the source, the package docstrings,
the README, the stage table, the snapshots), so that it can fail: ``all_rules()`` already refuses duplicate
ids and names, so counting them in its own result could not.
"""

from __future__ import annotations

import ast
import dataclasses
import gc
import importlib
import re
from collections import Counter
from pathlib import Path

import pytest
from finding_snapshots import stored_findings

from harness.engine.artefact import CSCFG, CSDEF, CSPKG, DEPLOYMENT, IMAGE, KINDS
from harness.engine.catalogue import all_rules
from harness.engine.rule import Rule
from harness.engine.severity import Severity
from harness.facts.image import ImageSubject
from harness.facts.servicemodel import ServiceModelSubject

RULES = all_rules()
RULE_TESTS = Path(__file__).resolve().parent
REPO = RULE_TESTS.parents[1]
CHECKS = REPO / "checks"
CHECKS_PACKAGE = "harness.checks"


def _ids(rules) -> list[str]:
    return [r.id for r in rules]


# ---- the catalogue is the rule classes of checks/** -----------------------------------------------------


def _declared_rules() -> list[tuple[str, str, str, str]]:
    """(module, class, id, name) of every class in checks/** whose body assigns ``id = "..."``, read from the
    source with ast (no import, so nothing the catalogue's walk misses can hide here)."""
    found = []
    for path in sorted(CHECKS.rglob("*.py")):
        rel = path.relative_to(CHECKS).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        module = ".".join((CHECKS_PACKAGE, *parts))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if not isinstance(node, ast.ClassDef):
                continue
            attrs = {}
            for stmt in node.body:
                targets = (
                    stmt.targets
                    if isinstance(stmt, ast.Assign)
                    else [stmt.target]
                    if isinstance(stmt, ast.AnnAssign)
                    else []
                )
                value = getattr(stmt, "value", None)
                for target in targets:
                    if (
                        isinstance(target, ast.Name)
                        and isinstance(value, ast.Constant)
                        and isinstance(value.value, str)
                    ):
                        attrs[target.id] = value.value
            if "id" in attrs:
                found.append((module, node.name, attrs["id"], attrs.get("name", "")))
    return found


DECLARED = _declared_rules()


def test_the_catalogue_is_every_rule_class_in_checks():
    """A rule class the catalogue's walk does not load (a module it cannot import, a package without
    ``__init__.py``, a class outside the harness namespace) or a rule from elsewhere shows up here."""
    declared = {(module, cls, rule_id) for module, cls, rule_id, _ in DECLARED}
    loaded = {(r.__module__, r.__qualname__, r.id) for r in RULES}
    assert sorted(declared - loaded) == [], "rule classes in checks/** missing from the catalogue"
    assert sorted(loaded - declared) == [], "catalogue rules not declared in checks/**"


def test_ids_and_names_are_unique_in_the_source():
    ids = Counter(rule_id for _, _, rule_id, _ in DECLARED)
    names = Counter(name for _, _, _, name in DECLARED)
    assert [i for i, n in ids.items() if n > 1] == []
    assert [name for name, n in names.items() if n > 1] == []


@pytest.mark.parametrize("clash", ["id", "name"])
def test_the_catalogue_refuses_a_duplicate_id_or_name(clash: str):
    """The guard ``all_rules()`` relies on (a duplicate would otherwise shadow a rule in selectors and reports)."""
    first = RULES[0]
    attrs = {
        "__module__": f"{CHECKS_PACKAGE}.zz_duplicate_for_a_test",
        "__doc__": first.__doc__,
        "id": first.id if clash == "id" else "VMR999",
        "name": first.name if clash == "name" else "zz-duplicate-for-a-test",
        "severity": first.severity,
        "applies_to": first.applies_to,
    }
    duplicate = type("DuplicateForATest", (Rule,), attrs)
    try:
        with pytest.raises(ValueError, match=f"duplicate rule {clash} "):
            all_rules.__wrapped__()  # uncached: the session's catalogue stays as it is
    finally:
        del duplicate
        gc.collect()  # a class lives in Rule.__subclasses__() until it is collected
    assert "DuplicateForATest" not in {c.__name__ for c in Rule.__subclasses__()}


# ---- metadata -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES, ids=_ids(RULES))
def test_rule_metadata_is_valid(rule: type[Rule]):
    assert list(rule.validate_metadata()) == []
    assert isinstance(rule.severity, Severity) and rule.severity in set(Severity)
    assert isinstance(rule.applies_to, frozenset) and rule.applies_to, f"{rule.id}: applies_to {rule.applies_to!r}"
    assert rule.applies_to <= set(KINDS), f"{rule.id}: unknown kinds {set(rule.applies_to) - set(KINDS)}"
    assert isinstance(rule.requires, tuple) and all(isinstance(r, str) for r in rule.requires), rule.requires
    assert len(set(rule.requires)) == len(rule.requires), f"{rule.id} requires {rule.requires}"


def _live_stages() -> set[str]:
    """The stage table the live subject runs (harness.live.stages; harness.live.subject before the move)."""
    for module in ("harness.live.stages", "harness.live.subject"):
        try:
            return set(importlib.import_module(module).STAGES)
        except (ImportError, AttributeError):
            continue
    raise AssertionError("no STAGES table in harness.live.stages or harness.live.subject")


#: What ``requires`` may name, per artefact kind: the attributes the engine finds on that kind's subject.
REQUIRABLE = {
    CSDEF: {f.name for f in dataclasses.fields(ServiceModelSubject)},
    CSCFG: {f.name for f in dataclasses.fields(ServiceModelSubject)},
    CSPKG: {f.name for f in dataclasses.fields(ServiceModelSubject)},
    IMAGE: {f.name for f in dataclasses.fields(ImageSubject)},
    DEPLOYMENT: _live_stages(),
}


def test_every_kind_says_what_may_be_required():
    assert set(REQUIRABLE) == set(KINDS)


@pytest.mark.parametrize("rule", RULES, ids=_ids(RULES))
def test_requires_names_what_the_subject_has(rule: type[Rule]):
    """A misspelt stage or fact (``requires = ("rebot",)``) would skip the rule on every run, silently."""
    for kind in sorted(rule.applies_to):
        unknown = set(rule.requires) - REQUIRABLE[kind]
        assert not unknown, f"{rule.id} requires {sorted(unknown)}, which a {kind} subject does not have"


# ---- ids in the documented ranges --------------------------------------------------------------------

RANGE = re.compile(r"\b(\d[\dx]x)\b")


def _package_of(rule: type[Rule]) -> str:
    return rule.__module__.removeprefix(CHECKS_PACKAGE + ".").split(".")[0]


def _documented_ranges(package: str) -> list[str]:
    """The id ranges (``5xx``, ``31x``) the docstring of ``checks/<package>`` (or ``checks/<package>.py``)
    names: ``Image rules: format (01x), integration components (1xx), …``."""
    doc = importlib.import_module(f"{CHECKS_PACKAGE}.{package}").__doc__ or ""
    return RANGE.findall(doc)


def _in_range(rule_id: str, pattern: str) -> bool:
    return re.fullmatch("VMR" + pattern.replace("x", r"\d"), rule_id) is not None


@pytest.mark.parametrize("rule", RULES, ids=_ids(RULES))
def test_rule_id_is_in_a_range_its_package_documents(rule: type[Rule]):
    ranges = _documented_ranges(_package_of(rule))
    assert ranges, f"the docstring of {CHECKS_PACKAGE}.{_package_of(rule)} names no id range (e.g. '5xx')"
    assert any(_in_range(rule.id, p) for p in ranges), f"{rule.id} ({rule.__module__}) is outside {ranges}"


def test_every_documented_range_has_rules():
    """A range a package docstring still names after its rules moved is stale documentation."""
    stale = [
        f"{package}: {pattern}"
        for package in sorted({_package_of(r) for r in RULES})
        for pattern in _documented_ranges(package)
        if not any(_in_range(r.id, pattern) for r in RULES if _package_of(r) == package)
    ]
    assert stale == []


def _readme_areas() -> dict[str, str]:
    """``{"0": "the harness itself", …, "9": "reserved for your own rules"}`` from the README's rules section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"area by hundreds\W+(.*?)\.\s", text, re.DOTALL)
    assert match, "README.md no longer says which area each hundred of ids is"
    return {digit: area.strip() for digit, area in re.findall(r"\b(\d)xx ([^,]+)", match.group(1))}


def test_ids_use_the_hundreds_the_readme_documents():
    areas = _readme_areas()
    assert set(areas) == set("0123456789"), areas
    reserved = {d for d, area in areas.items() if "reserved" in area}
    assert reserved == {"9"}, areas
    outside = [r.id for r in RULES if r.id[3] not in areas or r.id[3] in reserved]
    assert outside == [], "ids in an undocumented or reserved hundred (9xx is for users' own rules)"


# ---- secrets ------------------------------------------------------------------------------------------

SECRETS_MODULES = (f"{CHECKS_PACKAGE}.secrets.", f"{CHECKS_PACKAGE}.image.secrets")


def test_secrets_rules_are_not_waivable_and_only_they_are():
    """Rule.waivable: secrets rules are not waivable. A rule in a secrets module must say so (and be tagged
    and rated as one); a rule that is not waivable must be a secrets rule (tagged ``secrets``)."""
    problems = []
    for rule in RULES:
        in_secrets_module = rule.__module__.startswith(SECRETS_MODULES)
        if in_secrets_module and (rule.waivable or "secrets" not in rule.tags or rule.severity < Severity.HIGH):
            problems.append(f"{rule.id}: waivable={rule.waivable} tags={rule.tags} severity={rule.severity}")
        if not rule.waivable and "secrets" not in rule.tags:
            problems.append(f"{rule.id}: not waivable but not tagged secrets")
    assert problems == []


def test_tags_are_spelled_one_way():
    """Tags select rules (``-m``-like filters, report grouping): two spellings of one tag split the rules."""
    by_key: dict[str, set[str]] = {}
    for rule in RULES:
        for tag in rule.tags:
            by_key.setdefault(tag.replace("-", "").replace("_", "").lower(), set()).add(tag)
    assert [sorted(spellings) for spellings in by_key.values() if len(spellings) > 1] == []


# ---- every rule has a reviewed finding ------------------------------------------------------------------


def test_every_rule_has_a_reviewed_finding():
    """Some rule test ran each rule on an input it must report, and its findings were reviewed and stored
    (tests/rules/snapshots). A mention of the id in a comment or a docstring does not count."""
    stored = stored_findings()
    shown = {f["rule_id"] for f in stored}
    missing = [f"{r.id} {r.name} ({r.__module__})" for r in RULES if r.id not in shown]
    assert missing == [], "rules without a reviewed finding under tests/rules/snapshots: " + ", ".join(missing)
    # and the snapshot names the rule as the catalogue does now (a renamed rule is re-reviewed)
    names = {r.id: r.name for r in RULES}
    renamed = sorted(
        {
            f"{f['rule_id']}: {f['rule_name']} in {f['snapshot']}"
            for f in stored
            if names.get(f["rule_id"]) != f["rule_name"]
        }
    )
    assert renamed == []
