"""The lint engine's one entry point: artefacts in, findings out, without pytest.

``lint(["svc/"], LintOptions(csdef=Path("svc/ServiceDefinition.csdef")))`` reads each artefact, pairs it
(:mod:`harness.subjects`), runs every applicable rule on it and returns what each rule found or why it did
not run. The pytest plugin (one item per rule and artefact), the benchmarks and the tests build subjects
with the same code, and tests/test_lint_api.py checks that this and ``vmrole lint`` report the same
findings for the same files.

What the plugin does on top: waivers, baselines, severity overrides, reports, live targets.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.engine import catalogue
from harness.engine.artefact import DEPLOYMENT, IMAGE, Artefact, kind_of
from harness.engine.evaluate import evaluate
from harness.engine.finding import Finding
from harness.engine.rule import Rule
from harness.engine.severity import Severity
from harness.readers.errors import Unreadable
from harness.readers.image.blob import is_blob_url, registered_label
from harness.subjects import ImageSettings, Pairing, build_subject

__all__ = [
    "ArtefactResult",
    "ImageSettings",
    "LintOptions",
    "LintResult",
    "Prepared",
    "RuleOutcome",
    "lint",
    "prepare",
    "prepare_unreadable",
    "rules_for",
]

#: Directories a directory walk does not enter: pytest's default ``norecursedirs``, which `vmrole lint` keeps.
NORECURSE = ("*.egg", ".*", "_darcs", "build", "CVS", "dist", "node_modules", "venv", "{arch}")


@dataclass(frozen=True)
class LintOptions:
    """How artefacts pair up and are judged (the `vmrole lint` options, less waivers, baselines and reports).

    Relative paths are relative to the working directory, as on the command line.
    """

    #: The .csdef every .cscfg and image is checked against (``--csdef``).
    csdef: Path | None = None
    #: Packages: a single one's build csdef pairs the .cscfg files and images (``--package``).
    packages: tuple[Path, ...] = ()
    #: A single .cscfg is the configuration of every package and image (``--cscfg``).
    cscfgs: tuple[Path, ...] = ()
    #: Look for a sibling .csdef when nothing else pairs a .cscfg (off for corpora of mixed commits).
    siblings: bool = True
    image: ImageSettings = field(default_factory=ImageSettings)
    #: Rule ids, prefixes or names to run (all when empty) and to leave out (``--select`` / ``--ignore``).
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    #: The lowest severity that fails (``--fail-on``): :attr:`LintResult.failed`.
    fail_on: Severity = Severity.HIGH
    #: The date expiry rules judge against (``--vmr-today``); None is today's UTC date.
    today: dt.date | None = None
    #: Artefact identities are relative to this directory (the run's root); None is the working directory.
    root: Path | None = None

    def pairing(self) -> Pairing:
        def absolute(p: Path | str) -> Path:
            return Path(os.path.abspath(os.path.expanduser(p)))

        return Pairing(
            csdef=absolute(self.csdef) if self.csdef is not None else None,
            packages=tuple(absolute(p) for p in self.packages),
            cscfgs=tuple(absolute(p) for p in self.cscfgs),
            image=self.image,
            siblings=self.siblings,
        )

    def rules(self) -> list[type[Rule]]:
        """The selected rules; raises ValueError for a selector that matches no rule (a usage error)."""
        every = catalogue.all_rules()
        for flag, values in (("select", self.select), ("ignore", self.ignore)):
            for sel in values:
                if not any(r.matches(sel) for r in every):
                    raise ValueError(f"{flag}: {sel!r} matches no rule (see `vmrole rules`)")
        return catalogue.select(list(self.select), list(self.ignore))


@dataclass(frozen=True)
class RuleOutcome:
    """One rule on one artefact (one plugin item): its findings, or why it did not run."""

    rule_id: str
    findings: tuple[Finding, ...] = ()
    #: Set when the rule did not run: a missing related artefact, or the rule said NotApplicable.
    skip_reason: str | None = None


@dataclass(frozen=True)
class ArtefactResult:
    artefact: Artefact
    outcomes: tuple[RuleOutcome, ...]
    #: Why a related artefact is missing, by slot ("definition", "configuration", "role").
    notes: Mapping[str, str] = field(default_factory=dict)
    #: Set when the artefact itself could not be read (then the only outcome is VMR001's finding).
    unreadable: str | None = None

    def outcome(self, rule_id: str) -> RuleOutcome | None:
        return next((o for o in self.outcomes if o.rule_id == rule_id), None)


@dataclass(frozen=True)
class LintResult:
    artefacts: tuple[ArtefactResult, ...]
    #: Run-level notes in words (the image profile chosen and why; named files that were not linted).
    notes: tuple[str, ...]
    fail_on: Severity

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for a in self.artefacts for o in a.outcomes for f in o.findings)

    @property
    def failed(self) -> tuple[Finding, ...]:
        """Findings at or above ``fail_on``: `vmrole lint` exits 1 when there is one (without waivers)."""
        return tuple(f for f in self.findings if f.severity >= self.fail_on)

    def result_for(self, path: Path | str) -> ArtefactResult | None:
        """The result of the artefact at ``path``, or of the blob image at a URL (its query, the SAS, ignored)."""
        if isinstance(path, str) and is_blob_url(path):
            url = path.partition("?")[0]
            return next((a for a in self.artefacts if a.artefact.identity == url), None)
        target = Path(os.path.abspath(path))
        return next((a for a in self.artefacts if a.artefact.path == target), None)


@dataclass(frozen=True)
class Prepared:
    """An artefact ready to judge: what the rules see, why related artefacts are missing, which rules run."""

    subject: Any
    notes: Mapping[str, str]
    rules: Sequence[type[Rule]]
    unreadable: str | None = None


def prepare(artefact: Artefact, pairing: Pairing, root: Path, today: dt.date, rules: Sequence[type[Rule]]) -> Prepared:
    """Read and pair ``artefact`` (not a deployment). An unreadable artefact gets VMR001 alone, even when the
    selection leaves it out: nothing else could check it.

    :func:`lint` and the pytest plugin's collection (``harness.plugin.main.ArtefactFile``) both call this,
    so the two read, date and choose rules alike."""
    try:
        built = build_subject(artefact, pairing, root)
    except Unreadable as exc:
        return prepare_unreadable(artefact, exc, rules)
    subject = dataclasses.replace(built.subject, today=today)
    return Prepared(subject, built.notes, rules_for(artefact.kind, rules))


def rules_for(kind: str, rules: Sequence[type[Rule]]) -> list[type[Rule]]:
    """The rules of ``rules`` that apply to an artefact of ``kind``."""
    return [r for r in rules if kind in r.applies_to]


def prepare_unreadable(artefact: Artefact, exc: Unreadable, rules: Sequence[type[Rule]]) -> Prepared:
    """What an unreadable artefact (a deployment target too) is judged with: VMR001 alone, even when the
    selection ``rules`` leaves it out (nothing else could check it)."""
    from harness.checks.core import ArtefactUnreadable, UnreadableSubject

    subject = UnreadableSubject(artefact, exc.problem, exc.location)
    chosen = [r for r in rules if r is ArtefactUnreadable] or [ArtefactUnreadable]
    return Prepared(subject, {}, chosen, unreadable=exc.problem)


def lint(artefacts: Iterable[str | os.PathLike[str] | Artefact], options: LintOptions | None = None) -> LintResult:
    """Lint files, directories (walked like `vmrole lint` does), images in Azure blob storage and Artefact objects.

    An image in blob storage is named by its URL, as with ``vmrole lint --image``: ``https://ACCOUNT.blob.core.
    windows.net/CONTAINER/BLOB`` (``http://`` for Azurite) with a SAS token as the query (``?{env:NAME}``,
    ``?{file:PATH}``, a literal token, or none: then ``VMROLE_BLOB_SAS`` if set, else anonymous), or
    ``azure://ACCOUNT/CONTAINER/BLOB`` (azure-identity's credential, ``VMROLE_BLOB_ACCOUNT_KEY`` or a SAS). It is
    read in place; its artefact's identity is the URL without its query, which is all any result shows.

    Raises ValueError for a named path that does not exist or is no artefact kind, a malformed blob URL or a SAS
    reference that does not resolve, or a selector that matches no rule. A blob that cannot be read (missing,
    access denied, no answer) is a VMR001 finding, like an unreadable file. A deployment target is never probed:
    it is left out with a note. Files the options name for pairing (``csdef``, ``packages``, ``cscfgs``) are linted
    only when listed in ``artefacts`` too.
    """
    options = options or LintOptions()
    root = Path(os.path.abspath(options.root if options.root is not None else os.getcwd()))
    rules = options.rules()
    today = options.today or dt.datetime.now(dt.UTC).date()
    pairing = options.pairing()
    notes: list[str] = []
    results: list[ArtefactResult] = []
    for artefact in _artefacts(artefacts, root, notes):
        prepared = prepare(artefact, pairing, root, today, rules)
        profile = getattr(prepared.subject, "profile", None)
        if artefact.kind == IMAGE and isinstance(profile, str):
            notes.append(f"{artefact.display}: image profile {profile} ({prepared.subject.profile_reason})")
        outcomes = []
        for rule in prepared.rules:
            evaluation = evaluate(rule, prepared.subject, prepared.notes)
            outcomes.append(RuleOutcome(rule.id, evaluation.findings, evaluation.skip_reason))
        results.append(ArtefactResult(artefact, tuple(outcomes), dict(prepared.notes), prepared.unreadable))
    return LintResult(tuple(results), tuple(notes), options.fail_on)


def _artefacts(named: Iterable[str | os.PathLike[str] | Artefact], root: Path, notes: list[str]) -> Iterator[Artefact]:
    seen: set[Path] = set()
    for item in named:
        if isinstance(item, Artefact):
            candidates = [item]
        elif isinstance(item, str) and is_blob_url(item):
            from harness.plugin.blobimages import register_url

            placeholder = Path(os.path.abspath(register_url(item)))  # ValueError: bad URL or SAS reference
            label = registered_label(placeholder) or item.partition("?")[0]
            candidates = [Artefact(IMAGE, label, placeholder, label.rsplit("/", 1)[-1])]
        else:
            path = Path(os.path.abspath(os.path.expanduser(item)))
            if path.is_dir():
                candidates = [Artefact.from_path(p, k, root) for p, k in _walk(path) if k != DEPLOYMENT]
            elif not path.exists():
                raise ValueError(f"{item}: no such file or directory")
            else:
                kind = kind_of(path)
                if kind is None:
                    raise ValueError(f"{item}: not an artefact the harness lints (see `vmrole lint --help`)")
                candidates = [Artefact.from_path(path, kind, root)]
        for artefact in candidates:
            if artefact.path in seen:
                continue
            seen.add(artefact.path)
            if artefact.kind == DEPLOYMENT:
                notes.append(
                    f"{artefact.display} is a target file and was not probed (linting never contacts a "
                    f"deployment): probe it with `vmrole probe {artefact.display}`"
                )
                continue
            yield artefact


def _walk(folder: Path) -> Iterator[tuple[Path, str]]:
    """Files with an artefact kind under ``folder`` in pytest's collection order (entries sorted by name, a
    sub-directory walked where it sorts), skipping what pytest skips: ``NORECURSE`` names, virtual environments."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir():
            if not any(fnmatch.fnmatch(entry.name, pat) for pat in NORECURSE) and not _is_venv(entry):
                yield from _walk(entry)
        elif entry.is_file():
            kind = kind_of(entry)
            if kind is not None:
                yield entry, kind


def _is_venv(path: Path) -> bool:
    return (path / "pyvenv.cfg").is_file() or (path / "bin" / "activate").is_file()
