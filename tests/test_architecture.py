"""The layering, read from the source: readers -> extraction -> facts -> rules -> findings -> reports, never back.

Every module under harness/, checks/ (the ``harness.checks`` package) and suites/ is parsed with :mod:`ast`; every
import counts, wherever it is written: at module level, inside a function, under ``if TYPE_CHECKING:`` or in a
``try:``. Relative imports are resolved against the importing module. An import is recorded as the dotted name it
brings in (``from a.b import c`` is ``a.b.c``), so a rule about a package prefix holds however the import is
spelled. Imports built at run time (importlib with a string) are not seen.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("harness", "checks", "suites")
#: Top-level names of this repository's code; every other import is the standard library or a third-party package.
FIRST_PARTY = ("harness", "checks", "suites", "tests", "bench")


@dataclass(frozen=True)
class Import:
    path: str  # repository-relative file
    module: str  # the importing module's dotted name
    line: int
    target: str  # the dotted name imported

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module} imports {self.target}"


def module_name(path: Path) -> str:
    """Dotted name of a source file; checks/ is installed as ``harness.checks`` (pyproject package-dir)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] == "checks":
        parts[:1] = ["harness", "checks"]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, path: str, module: str, *, is_package: bool) -> list[Import]:
    """Every import in ``source`` (nested ones included) as the dotted names it brings in."""
    tree = ast.parse(source, path)
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(Import(path, module, node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                target = base if alias.name == "*" else f"{base}.{alias.name}" if base else alias.name
                found.append(Import(path, module, node.lineno, target))
    return found


@dataclass(frozen=True)
class SourceModule:
    path: str
    module: str
    tree: ast.Module
    imports: tuple[Import, ...]


@functools.cache
def source_modules() -> tuple[SourceModule, ...]:
    modules = []
    for directory in SOURCE_DIRS:
        for file in sorted((REPO / directory).rglob("*.py")):
            if any(part.startswith(".") or part == "__pycache__" for part in file.relative_to(REPO).parts):
                continue
            rel = file.relative_to(REPO).as_posix()
            name = module_name(file)
            text = file.read_text(encoding="utf-8")
            found = imports_of(text, rel, name, is_package=file.name == "__init__.py")
            modules.append(SourceModule(rel, name, ast.parse(text, rel), tuple(found)))
    return tuple(modules)


def under(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def first_party(target: str) -> bool:
    return under(target, *FIRST_PARTY)


def modules_under(*prefixes: str) -> Iterator[SourceModule]:
    return (m for m in source_modules() if under(m.module, *prefixes))


def offending(found: Iterable[Import], what: str) -> str:
    lines = sorted(str(i) for i in found)
    return f"{len(lines)} import(s) {what}:\n  " + "\n  ".join(lines)


# ---- the scan itself ------------------------------------------------------------------------------


def test_the_scan_sees_the_tree() -> None:
    """A wrong path would make every rule below pass vacuously."""
    names = {m.module for m in source_modules()}
    for expected in (
        "harness.facts.image",
        "harness.readers.xmlsafe",
        "harness.extraction.extract",
        "harness.checks.image.format",
        "harness.live.probes.reimage",
    ):
        assert expected in names
    assert any(m.path.startswith("suites/") for m in source_modules())
    reimage = next(m for m in source_modules() if m.module == "harness.live.probes.reimage")
    # a function-level import is seen (the azure SDK is imported inside _blob_container)
    assert any(i.target.startswith("azure.storage.blob") for i in reimage.imports)


def test_imports_are_resolved_as_written() -> None:
    source = (
        "import os, harness.readers.xmlsafe as x\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from harness.readers.image.container import ContainerInfo\n"
        "def f():\n"
        "    from . import sibling\n"
        "    from ..engine.rule import Rule\n"
        "    from .x import *\n"
    )
    found = [i.target for i in imports_of(source, "harness/facts/m.py", "harness.facts.m", is_package=False)]
    assert found == [
        "os",
        "harness.readers.xmlsafe",
        "typing.TYPE_CHECKING",
        "harness.readers.image.container.ContainerInfo",
        "harness.facts.sibling",
        "harness.engine.rule.Rule",
        "harness.facts.x",
    ]


# ---- the layering ---------------------------------------------------------------------------------

#: (who, the first-party packages they may import) — anything else first-party is a violation.
ALLOWED_ONLY: dict[str, tuple[str, ...]] = {
    # facts are data the rules read: no readers, no extraction, no live code, no rules
    "harness.facts": ("harness.facts", "harness.engine", "harness.ascii"),
    # rules read facts through the engine's types and cite public sources
    "harness.checks": ("harness.engine", "harness.facts", "harness.docs_sources", "harness.checks"),
}

#: (who, what they must never import).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # readers turn bytes into structures or typed facts (the service-model readers build harness.facts.servicemodel
    # directly: that is the flow's direction) and know nothing of extraction, rules, live probing or pytest
    "harness.readers": (
        "harness.extraction",
        "harness.checks",
        "checks",
        "harness.live",
        "harness.plugin",
    ),
    # extraction turns what readers read into facts; rules, live probing and pytest are above it
    "harness.extraction": ("harness.checks", "checks", "harness.live", "harness.plugin"),
    # the harness never depends on the suites that use it
    "harness": ("suites", "harness.suites"),
}


@pytest.mark.parametrize("layer", sorted(ALLOWED_ONLY))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    allowed = ALLOWED_ONLY[layer]
    bad = [
        i for m in modules_under(layer) for i in m.imports if first_party(i.target) and not under(i.target, *allowed)
    ]
    assert not bad, offending(bad, f"from {layer} outside {', '.join(allowed)}")


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_never_imports_upwards(layer: str) -> None:
    forbidden = FORBIDDEN[layer]
    bad = [i for m in modules_under(layer) for i in m.imports if under(i.target, *forbidden)]
    assert not bad, offending(bad, f"from {layer} into {', '.join(forbidden)}")


PROBES = "harness.live.probes"


def test_probes_are_independent_of_each_other_and_of_the_local_fabric() -> None:
    """A probe talks to a deployment, real or local, through harness.live; it never reaches into another probe
    or into the local emulator (harness.fabric), whose constants live in harness.facts.live.platform."""
    bad = []
    for m in modules_under(PROBES):
        for i in m.imports:
            other_probe = under(i.target, PROBES) and i.target != PROBES and not under(i.target, m.module)
            if other_probe or under(i.target, "harness.fabric"):
                bad.append(i)
    assert not bad, offending(bad, "from a probe into another probe or harness.fabric")


# ---- rules' subjects ------------------------------------------------------------------------------


def _mentions_any(annotation: ast.expr | None) -> bool:
    if annotation is None:
        return False
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):  # a quoted annotation
        try:
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return False
    for node in ast.walk(annotation):
        if isinstance(node, ast.Name) and node.id == "Any":
            return True
        if isinstance(node, ast.Attribute) and node.attr == "Any":
            return True
    return False


def test_no_rule_takes_an_untyped_subject() -> None:
    """``check(self, subject: Any)`` hides which facts a rule reads; name the subject type (ImageSubject, LiveFacts,
    ServiceModelSubject, ...) so that mypy follows the rule into the facts."""
    bad = []
    for m in modules_under("harness.checks"):
        for cls in (n for n in ast.walk(m.tree) if isinstance(n, ast.ClassDef)):
            for fn in cls.body:
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.name != "check":
                    continue
                params = [*fn.args.posonlyargs, *fn.args.args]
                if len(params) >= 2 and _mentions_any(params[1].annotation):
                    shown = ast.unparse(params[1].annotation) if params[1].annotation else ""
                    bad.append(f"{m.path}:{fn.lineno}: {m.module}.{cls.name}.check({params[1].arg}: {shown})")
    assert not bad, f"{len(bad)} rule(s) annotate the subject with Any:\n  " + "\n  ".join(sorted(bad))
