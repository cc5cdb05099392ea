"""Shared helpers for rule tests: facts built from XML snippets by the real service-model reader.

Use them through fixtures (works whatever the import mode; ``tests`` is not a package)::

    def test_something(sm):
        definition = sm.csdef('<WebRole name="Web"><Endpoints>…</Endpoints></WebRole>')
        findings = sm.run(MyRule, sm.subject_for(definition))

``sm`` bundles every helper; ``csdef``, ``cscfg``, ``subject_for`` and ``run_rule`` are also single
fixtures.

``snapshot`` compares a test's findings with its reviewed JSON snapshot (finding_snapshots.py,
SNAPSHOTS.md); ``--snapshot-update`` rewrites the snapshots instead.

``csdef``/``cscfg`` wrap a body in the root element (with the real namespace) unless the text already
starts with ``<?xml`` or the root element, so tests can also feed whole documents. Artefact paths
need not exist. The reader is imported lazily so that collection works while it is being written.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace

import pytest
from finding_snapshots import SNAPSHOT_DIR, UPDATE_ENV, Recorder, Snapshot, file_name

from harness.engine.artefact import CSCFG, CSDEF, CSPKG, Artefact
from harness.engine.finding import Finding
from harness.engine.rule import NotApplicable, Rule
from harness.facts.servicemodel import (
    Package,
    ServiceConfiguration,
    ServiceDefinition,
    ServiceModelSubject,
)

DEF_NS = "http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition"
CFG_NS = "http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration"
SERVICE = "MyService"
#: Part name a packaged csdef lives in (what the package reader prefixes locations with).
BUILD_CSDEF_PART = "SDPackage_00000000-0000-0000-0000-000000000000.csdx!ServiceDefinition.build.csdef"

_DEFAULT_FILE = {
    CSDEF: "ServiceDefinition.csdef",
    CSCFG: "ServiceConfiguration.Cloud.cscfg",
    CSPKG: "MyService.cspkg",
}


def artefact(kind: str = CSDEF, filename: str | None = None, directory: str = "svc") -> Artefact:
    """An Artefact of ``kind`` at ``<directory>/<filename>`` (relative identity, path need not exist)."""
    name = filename or _DEFAULT_FILE[kind]
    identity = f"{directory}/{name}" if directory else name
    return Artefact(kind=kind, identity=identity, path=Path("/nonexistent") / identity, display=name)


def _document(body: str, root: str, attrs: str, namespace: str) -> bytes:
    text = body.strip()
    if text.startswith("<?xml") or text.startswith(f"<{root}"):
        return text.encode("utf-8")
    return f'<{root} {attrs} xmlns="{namespace}">\n{text}\n</{root}>'.encode()


def csdef(
    body: str = "",
    *,
    name: str | None = SERVICE,
    kind: str = CSDEF,
    filename: str | None = None,
    extra_attrs: str = "",
) -> ServiceDefinition:
    """A ServiceDefinition parsed by the real reader from ``body`` (role elements, probes …).

    ``kind=CSPKG`` gives the definition as a package carries it: the package's artefact, ``part``
    set, and every location prefixed ``"{part}!"`` by the reader.
    """
    from harness.readers.servicemodel import parse_definition

    attrs = (f'name="{name}" ' if name is not None else "") + extra_attrs
    data = _document(body, "ServiceDefinition", attrs.strip(), DEF_NS)
    part = BUILD_CSDEF_PART if kind == CSPKG else None
    return parse_definition(data, artefact(kind, filename), part=part)


def cscfg(
    body: str = "",
    *,
    service_name: str | None = SERVICE,
    filename: str | None = None,
    extra_attrs: str = 'osFamily="2" osVersion="*"',
) -> ServiceConfiguration:
    """A ServiceConfiguration parsed by the real reader from ``body`` (``<Role>`` elements)."""
    from harness.readers.servicemodel import parse_configuration

    attrs = (f'serviceName="{service_name}" ' if service_name is not None else "") + extra_attrs
    data = _document(body, "ServiceConfiguration", attrs.strip(), CFG_NS)
    return parse_configuration(data, artefact(CSCFG, filename))


def subject_for(
    definition: ServiceDefinition | None = None,
    configuration: ServiceConfiguration | None = None,
    *,
    kind: str | None = None,
    package: Package | None = None,
) -> ServiceModelSubject:
    """The subject a rule sees. ``kind`` defaults to the artefact of the first fact given
    (package, else configuration when there is no definition or ``kind=CSCFG``, else definition)."""
    if kind is None:
        if package is not None:
            kind = CSPKG
        elif definition is not None:
            kind = definition.artefact.kind
        else:
            kind = CSCFG
    if kind == CSPKG:
        own = package.artefact if package is not None else artefact(CSPKG)
    elif kind == CSCFG:
        own = configuration.artefact if configuration is not None else artefact(CSCFG)
    else:
        own = definition.artefact if definition is not None else artefact(CSDEF)
    return ServiceModelSubject(artefact=own, definition=definition, configuration=configuration, package=package)


def _applicable(rule: type[Rule] | Rule, subject: ServiceModelSubject) -> str | None:
    """Why the engine would not run ``rule`` on ``subject`` (None when it would)."""
    if subject.artefact.kind not in rule.applies_to:
        return f"{rule.id} does not apply to {subject.artefact.kind}"
    for attr in rule.requires:
        if getattr(subject, attr, None) is None:
            return f"{rule.id} requires {attr}"
    return None


def run(rule: type[Rule] | Rule, subject: ServiceModelSubject) -> list[Finding]:
    """Findings of ``rule`` on ``subject``, after the engine's applies_to/requires gate.

    Fails the test when the gate would skip the rule (use :func:`skip_reason` to test that).
    NotApplicable raised by the rule propagates, so ``pytest.raises(NotApplicable)`` works.
    """
    reason = _applicable(rule, subject)
    if reason is not None:
        pytest.fail(f"the engine would not run the rule: {reason}")
    instance = rule() if isinstance(rule, type) else rule
    return list(instance.check(subject))


def skip_reason(rule: type[Rule] | Rule, subject: ServiceModelSubject) -> str | None:
    """Why the rule would be skipped on ``subject`` (gate or NotApplicable), or None when it runs."""
    reason = _applicable(rule, subject)
    if reason is not None:
        return reason
    instance = rule() if isinstance(rule, type) else rule
    try:
        list(instance.check(subject))
    except NotApplicable as exc:
        return str(exc) or type(exc).__name__
    return None


def ids(findings: Iterable[Finding]) -> list[str]:
    return [f.rule_id for f in findings]


def only(findings: list[Finding]) -> Finding:
    """The single finding (fails with the list when there is not exactly one)."""
    assert len(findings) == 1, [f"{f.rule_id} {f.location}: {f.message}" for f in findings]
    return findings[0]


# ---- the same helpers as fixtures ----------------------------------------------------------------


@pytest.fixture(name="csdef")
def csdef_fixture():
    return csdef


@pytest.fixture(name="cscfg")
def cscfg_fixture():
    return cscfg


@pytest.fixture(name="subject_for")
def subject_for_fixture():
    return subject_for


@pytest.fixture(name="run_rule")
def run_rule_fixture():
    return run


@pytest.fixture
def sm() -> SimpleNamespace:
    """All service-model helpers in one namespace: sm.csdef, sm.cscfg, sm.subject_for, sm.run, …"""
    return SimpleNamespace(
        csdef=csdef,
        cscfg=cscfg,
        subject_for=subject_for,
        artefact=artefact,
        run=run,
        skip_reason=skip_reason,
        ids=ids,
        only=only,
        CSDEF=CSDEF,
        CSCFG=CSCFG,
        CSPKG=CSPKG,
        BUILD_CSDEF_PART=BUILD_CSDEF_PART,
    )


# ---- finding snapshots (finding_snapshots.py, SNAPSHOTS.md) -----------------------------------------

REPO = Path(__file__).resolve().parents[2]
_RECORDER = pytest.StashKey[Recorder]()
_WORKER_KEY = "vmr_finding_snapshots"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--snapshot-update",
        action="store_true",
        default=False,
        help="rule tests: write tests/rules/snapshots/** from this run's findings instead of comparing "
        f"(also {UPDATE_ENV}=1); review with git diff tests/rules/snapshots",
    )


def _updating(config: pytest.Config) -> bool:
    return bool(config.getoption("--snapshot-update", default=False)) or os.environ.get(UPDATE_ENV, "") not in (
        "",
        "0",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RECORDER] = Recorder()


@pytest.fixture
def snapshot(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    """The test's reviewed findings snapshot: ``snapshot.assert_match(findings)`` (see SNAPSHOTS.md).

    Paths that differ between machines and runs are written as placeholders: the test's ``<tmp_path>``
    and ``<image_cache>`` (when the test uses those fixtures), pytest's ``<basetemp>``, the ``<repo>``
    checkout and the ``<shared>`` samples beside it.
    """
    node = request.node
    module = Path(str(node.path)).stem
    path = SNAPSHOT_DIR / module / file_name(node.name)
    replacements: list[tuple[Path | str, str]] = []
    for fixture, placeholder in (("tmp_path", "<tmp_path>"), ("image_cache", "<image_cache>")):
        if fixture in request.fixturenames:
            replacements.append((request.getfixturevalue(fixture), placeholder))
    basetemp = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        basetemp = basetemp.parent  # the session folder beside popen-gwN: shared caches live there
    replacements += [(basetemp, "<basetemp>"), (REPO.parent / "shared", "<shared>"), (REPO, "<repo>")]
    machine_dirs = [basetemp, REPO, REPO.parent, Path.home(), Path(tempfile.gettempdir())]
    return Snapshot(
        path,
        node.nodeid,
        update=_updating(request.config),
        replacements=replacements,
        machine_dirs=machine_dirs,
        recorder=request.config.stash[_RECORDER],
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the record to the controller
        workeroutput[_WORKER_KEY] = json.dumps(session.config.stash[_RECORDER].to_json())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # xdist controller: a worker finished
    data = getattr(node, "workeroutput", {}).get(_WORKER_KEY)
    if data:
        node.config.stash[_RECORDER].merge(json.loads(data))


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    record = config.stash.get(_RECORDER, None)
    if record is None or not _updating(config):
        return
    written = sorted(record.created | record.changed)
    terminalreporter.write_sep("-", "finding snapshots")
    terminalreporter.write_line(
        f"{len(record.used_paths)} snapshot(s) checked, {len(record.created)} created, "
        f"{len(record.changed)} rewritten" + (": review with  git diff tests/rules/snapshots" if written else "")
    )
    for path in written:
        terminalreporter.write_line(f"  {Path(path).relative_to(REPO).as_posix()}")
