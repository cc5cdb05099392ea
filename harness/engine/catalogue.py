"""The rule catalogue: every Rule subclass in the harness.checks package, by id."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from harness.engine.rule import Rule


def _walk_modules(package_name: str) -> None:
    package = importlib.import_module(package_name)
    for info in pkgutil.walk_packages(package.__path__, prefix=package_name + "."):
        importlib.import_module(info.name)


def _subclasses(base: type[Rule]) -> list[type[Rule]]:
    found: list[type[Rule]] = []
    for sub in base.__subclasses__():
        if "id" in sub.__dict__:
            found.append(sub)
        found.extend(_subclasses(sub))
    return found


@cache
def all_rules() -> tuple[type[Rule], ...]:
    """All catalogue rules sorted by id. Raises ValueError on duplicate ids or names."""
    _walk_modules("harness.checks")
    rules = sorted({r for r in _subclasses(Rule) if r.__module__.startswith("harness.")}, key=lambda r: r.id)
    seen_ids: dict[str, type[Rule]] = {}
    seen_names: dict[str, type[Rule]] = {}
    for rule in rules:
        if rule.id in seen_ids:
            raise ValueError(f"duplicate rule id {rule.id}: {seen_ids[rule.id]} and {rule}")
        if rule.name in seen_names:
            raise ValueError(f"duplicate rule name {rule.name}: {seen_names[rule.name]} and {rule}")
        seen_ids[rule.id] = rule
        seen_names[rule.name] = rule
    return tuple(rules)


def rule_by_id(rule_id: str) -> type[Rule]:
    for rule in all_rules():
        if rule.id == rule_id:
            return rule
    raise KeyError(rule_id)


def select(selectors: list[str], ignores: list[str]) -> list[type[Rule]]:
    """Rules matching any selector (all when none given) and no ignore."""
    chosen = []
    for rule in all_rules():
        if selectors and not any(rule.matches(s) for s in selectors):
            continue
        if any(rule.matches(s) for s in ignores):
            continue
        chosen.append(rule)
    return chosen
