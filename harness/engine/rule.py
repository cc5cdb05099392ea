"""Rules: pure functions from typed facts to findings, with metadata as class attributes.

A rule is a subclass of :class:`Rule` in a module under ``checks/`` (installed as
``harness.checks``). It never does I/O: readers build facts, the rule looks at them.

Docstrings follow one shape (checked by the test suite) so that the rules table, SARIF help text
and the HTML report can all show them::

    One-line summary.

    ## What it does
    ## Why is this bad?
    ## Example
    ## Use instead
    ## References
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

from harness.engine.finding import Finding
from harness.engine.severity import Severity

RULE_ID = re.compile(r"^VMR\d{3}$")
RULE_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
DOC_SECTIONS = ("What it does", "Why is this bad?", "Example", "Use instead", "References")


class NotApplicable(Exception):
    """Raised by a rule when the subject lacks what the rule needs; the item is skipped with the reason."""


class Rule:
    """Base class of every rule in the catalogue."""

    id: ClassVar[str]
    name: ClassVar[str]
    severity: ClassVar[Severity]
    #: Artefact kinds the rule applies to (see harness.engine.artefact).
    applies_to: ClassVar[frozenset[str]]
    #: Subject attributes that must not be None for the rule to run, e.g. ("definition", "configuration").
    requires: ClassVar[tuple[str, ...]] = ()
    #: Secrets rules are not waivable unless the run explicitly allows it.
    waivable: ClassVar[bool] = True
    tags: ClassVar[tuple[str, ...]] = ()
    #: The public sources behind the rule: https URLs from ``harness.docs_sources.refs(...)``, the same ones (in the
    #: same order) as the docstring's ``## References`` lines (``- <title>: <URL>``).
    references: ClassVar[tuple[str, ...]] = ()

    # ---- what subclasses implement -------------------------------------------------------
    def check(self, subject: Any) -> Iterable[Finding]:
        """Yield findings for ``subject``; raise NotApplicable when the rule cannot judge it."""
        raise NotImplementedError  # abstract: every catalogue rule overrides it

    # ---- helpers for subclasses ----------------------------------------------------------
    def finding(
        self,
        subject: Any,
        location: str,
        message: str,
        *,
        evidence: Mapping[str, str] | None = None,
        severity: Severity | None = None,
        line: int | None = None,
        artefact: str | None = None,
    ) -> Finding:
        return Finding(
            rule_id=self.id,
            rule_name=self.name,
            severity=severity if severity is not None else self.severity,
            artefact=artefact if artefact is not None else subject.artefact.identity,
            location=location,
            message=message,
            evidence=dict(evidence or {}),
            line=line,
        )

    # ---- metadata ------------------------------------------------------------------------
    @classmethod
    def summary(cls) -> str:
        return (inspect.getdoc(cls) or "").strip().splitlines()[0] if cls.__doc__ else ""

    @classmethod
    def doc_sections(cls) -> dict[str, str]:
        """The docstring split into its named sections (body text without the heading)."""
        doc = inspect.getdoc(cls) or ""
        sections: dict[str, str] = {}
        current: str | None = None
        lines: list[str] = []
        for raw in doc.splitlines():
            if raw.startswith("## "):
                if current is not None:
                    sections[current] = "\n".join(lines).strip()
                current, lines = raw[3:].strip(), []
            elif current is not None:
                lines.append(raw)
        if current is not None:
            sections[current] = "\n".join(lines).strip()
        return sections

    @classmethod
    def help_markdown(cls) -> str:
        doc = inspect.getdoc(cls) or ""
        return doc.replace("## ", "### ")

    @classmethod
    def matches(cls, selector: str) -> bool:
        """True when ``selector`` names this rule: full id, id prefix (``VMR5``), or kebab name."""
        sel = selector.strip()
        if not sel:
            return False
        if sel.upper().startswith("VMR"):
            return cls.id.startswith(sel.upper())
        return cls.name == sel.lower()

    @classmethod
    def validate_metadata(cls) -> Iterator[str]:
        """Problems with the rule's metadata (empty when it is well-formed)."""
        where = f"{cls.__module__}.{cls.__qualname__}"
        if not RULE_ID.match(getattr(cls, "id", "")):
            yield f"{where}: id {getattr(cls, 'id', None)!r} is not VMR + 3 digits"
        if not RULE_NAME.match(getattr(cls, "name", "")):
            yield f"{where}: name {getattr(cls, 'name', None)!r} is not kebab-case"
        if not isinstance(getattr(cls, "severity", None), Severity):
            yield f"{where}: severity must be a Severity"
        if not getattr(cls, "applies_to", None):
            yield f"{where}: applies_to is empty"
        if not cls.summary():
            yield f"{where}: docstring has no summary line"
        sections = cls.doc_sections()
        for heading in DOC_SECTIONS:
            if not sections.get(heading):
                yield f"{where}: docstring lacks a non-empty '## {heading}' section"
