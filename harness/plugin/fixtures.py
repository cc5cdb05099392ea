r"""Fixtures that make a deployment feel like local hosts (testinfra style), for your own test files.

Registered by the plugin (``harness.plugin.main`` registers this module as ``vmrole-fixtures``), so any test
file run with ``--vmr-target T`` can ask for:

==========================  ================================================================================
fixture                     what it is
==========================  ================================================================================
``vmrole_target``           the parsed target file (:class:`harness.live.target.Target`); the test is skipped
                            with the reason when no ``--vmr-target`` is given
``vmrole_instances``        the deployment's role instances (:class:`InstanceFacts`), listed once per run
                            from the management API (Get Deployment), never by hand
``vmrole_vip``              the VIP: ``.address``, ``.ports`` (input endpoint name → public port), ``.url()``
``vmrole_http``             a ``requests.Session`` through the load balancer: ``vmrole_http.get("/")`` goes to
                            the VIP's HTTP endpoint (``.base_url``), with the target's timeouts
``vmrole_host``             a testinfra host per instance (``test_x[WebVM_IN_0]``, ``test_x[WebVM_IN_1]`` …):
                            ``host.run``, ``host.file`` … over WinRM, plus Windows helpers ``host.vmrole``
``vmrole_reimage``          ``vmrole_reimage("WebVM_IN_1")``: reimage one instance through the management API
                            and wait until it is ReadyRole again (needs ``--vmr-destructive``)
==========================  ================================================================================

Markers: ``@pytest.mark.vmrole_destructive`` (runs only with ``--vmr-destructive``, else skipped),
``@pytest.mark.vmrole_one_instance`` (``vmrole_host`` for one Ready instance instead of every one) and
``@pytest.mark.vmrole_role("WebVM")`` (``vmrole_host`` only for that role's instances).

Secrets: the WinRM password is resolved from the target's reference (``Target.secret``) when a shell opens;
it never appears in an item id, and command output and errors pass through the target's masker.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.facts.live.platform import READY

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.live.context import LiveContext
    from harness.live.target import Target

DESTRUCTIVE_MARK = "vmrole_destructive"
ONE_INSTANCE_MARK = "vmrole_one_instance"
ROLE_MARK = "vmrole_role"
NO_TARGET = "no-target"
TARGET_OPTION = "--vmr-target"

SESSIONS = pytest.StashKey[dict[Path, "DeploymentSession"]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{DESTRUCTIVE_MARK}: a test that reimages, reboots or changes instances (needs --vmr-destructive)"
    )
    config.addinivalue_line(
        "markers", f"{ONE_INSTANCE_MARK}: vmrole_host for one Ready instance instead of every instance"
    )
    config.addinivalue_line("markers", f"{ROLE_MARK}(name): vmrole_host only for the instances of this role")


def destructive_skip_reason(name: str) -> str:
    """Worded like the built-in destructive probes' skip reason."""
    return f"destructive test '{name}' not requested (run with --vmr-destructive)"


def _state(config: pytest.Config) -> Any:
    from harness.plugin.main import STATE

    return config.stash.get(STATE, None)


def _destructive(config: pytest.Config) -> bool:
    state = _state(config)
    return bool(state is not None and state.destructive)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker(DESTRUCTIVE_MARK) is not None and not _destructive(item.config):
        pytest.skip(destructive_skip_reason(item.name))


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A destructive test of yours goes to the xdist group of the target's built-in live items, so that under
    ``-n`` it never runs beside the built-in probes (or another destructive test) on the same deployment."""
    state = _state(config)
    targets = tuple(state.pairing.targets) if state is not None else ()
    if len(targets) != 1:
        return
    from harness.engine.artefact import DEPLOYMENT, Artefact

    identity = Artefact.from_path(Path(targets[0]), DEPLOYMENT, state.root).identity
    for item in items:
        if item.get_closest_marker(DESTRUCTIVE_MARK) is not None:
            item.add_marker(pytest.mark.xdist_group(name=f"vmr-live-{identity}"))


MAX_TRANSCRIPT = 6000


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test that used ``vmrole_host`` carries the instance's WinRM transcript (the commands and their
    output, masked as the built-in rules' evidence is) as a report section."""
    report = yield
    host = getattr(item, "funcargs", {}).get("vmrole_host")
    backend = getattr(host, "backend", None)
    if report.failed and backend is not None and hasattr(backend, "dep"):
        name = backend.instance.name
        text = backend.dep.ctx.evidence_texts.get(f"winrm-{name}")
        if text:
            clipped = text if len(text) <= MAX_TRANSCRIPT else "…(earlier commands cut)…\n" + text[-MAX_TRANSCRIPT:]
            report.sections.append((f"evidence: winrm-{name}", clipped))
    return report


# ---- one deployment per target and process -------------------------------------------------------------


class DeploymentUnusable(Exception):
    """The target cannot be used: a bad file, a refused target, or the management API failed (the message
    names the target and the cause, masked)."""


class DeploymentSession:
    """One target's parsed file, its live context (management client, WinRM shells) and its instances,
    listed once; the hosts built for its instances."""

    def __init__(self, path: Path, *, allow_cleartext: bool, destructive: bool) -> None:
        self.path = path
        self.allow_cleartext = allow_cleartext
        self.destructive = destructive
        self._target: Target | None = None
        self._ctx: LiveContext | None = None
        self._instances: list[Any] | None = None
        self._error: str | None = None
        self._hosts: dict[str, VmroleHost] = {}

    @property
    def label(self) -> str:
        name = self._target.name if self._target is not None else None
        return f"target {name} ({self.path})" if name else f"target file {self.path}"

    def target(self) -> Target:
        if self._target is None:
            from harness.live.errors import TargetError
            from harness.live.target import CLEARTEXT_OPT_IN, cleartext_credentials, load_target

            try:
                target = load_target(self.path)
            except TargetError as exc:
                raise DeploymentUnusable(str(exc)) from None
            problems = [] if self.allow_cleartext else cleartext_credentials(target)
            if problems:
                raise DeploymentUnusable(
                    f"{self.path}: refused, it would send a credential in clear: {'; '.join(problems)}. "
                    f"To accept that, opt in on the command line: {CLEARTEXT_OPT_IN}"
                )
            self._target = target
        return self._target

    @property
    def ctx(self) -> LiveContext:
        if self._ctx is None:
            from harness.live.context import LiveContext

            self._ctx = LiveContext(self.target(), destructive=self.destructive)
        return self._ctx

    def deployment(self, refresh: bool = False) -> Any:
        """Get Deployment as facts (cached); DeploymentUnusable naming the target and the cause."""
        ctx = self.ctx
        try:
            return ctx.deployment(refresh=refresh)
        except Exception as exc:
            raise DeploymentUnusable(
                ctx.masker(f"{self.label}: cannot list the deployment's instances: {type(exc).__name__}: {exc}")
            ) from None

    def instances(self) -> list[Any]:
        """The instances, from one Get Deployment per run (the error is remembered too)."""
        if self._error is not None:
            raise DeploymentUnusable(self._error)
        if self._instances is None:
            try:
                self._instances = list(self.deployment().instances)
            except DeploymentUnusable as exc:
                self._error = str(exc)
                raise
        return self._instances

    def instance(self, name: str) -> Any:
        for inst in self.instances():
            if inst.name == name:
                return inst
        raise DeploymentUnusable(f"{self.label}: no instance {name!r} in the deployment")

    def host(self, name: str) -> VmroleHost:
        if name not in self._hosts:
            self._hosts[name] = make_host(self, self.instance(name))
        return self._hosts[name]

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.close()


def _session(config: pytest.Config) -> DeploymentSession | None:
    """The session of the one target named with --vmr-target (None when none is named)."""
    state = _state(config)
    targets = tuple(state.pairing.targets) if state is not None else ()
    if not targets:
        return None
    if len(targets) > 1:
        raise DeploymentUnusable(
            f"the vmrole fixtures work on one deployment at a time, but {len(targets)} targets were named with "
            f"{TARGET_OPTION}: {', '.join(str(t) for t in targets)}"
        )
    sessions = config.stash.setdefault(SESSIONS, {})
    path = Path(targets[0])
    if path not in sessions:
        sessions[path] = DeploymentSession(
            path, allow_cleartext=state.allow_cleartext_credentials, destructive=state.destructive
        )
    return sessions[path]


def pytest_sessionfinish(session: pytest.Session) -> None:
    for dep in session.config.stash.get(SESSIONS, {}).values():
        dep.close()


def _no_target_reason() -> str:
    return (
        f"no deployment target: run with {TARGET_OPTION} FILE (e.g. `vmrole fabric up` writes "
        ".vmrole/fabric/target.vmrtarget.yml)"
    )


# ---- parametrizing vmrole_host over the deployment's instances -------------------------------------------


@dataclass(frozen=True)
class _HostParam:
    instance: str | None
    problem: str | None = None

    def __repr__(self) -> str:  # shown by pytest --setup-plan; never a secret
        return self.instance or self.problem or "?"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "vmrole_host" not in metafunc.fixturenames:
        return
    try:
        dep = _session(metafunc.config)
        if dep is None:
            metafunc.parametrize("vmrole_host", [_HostParam(None, _no_target_reason())], indirect=True, ids=[NO_TARGET])
            return
        instances = dep.instances()
    except DeploymentUnusable as exc:
        # A clean collection error naming the target and the cause (no traceback): the suite cannot run.
        raise pytest.Collector.CollectError(f"vmrole_host: {exc}") from None
    role_mark = metafunc.definition.get_closest_marker(ROLE_MARK)
    if role_mark is not None:
        roles = {str(r) for r in (*role_mark.args, *role_mark.kwargs.values())}
        instances = [i for i in instances if i.role in roles]
        if not instances:
            known = sorted({i.role for i in dep.instances()})
            problem = f"no instance of role {', '.join(sorted(roles))} in {dep.label} (roles: {', '.join(known)})"
            metafunc.parametrize("vmrole_host", [_HostParam(None, problem)], indirect=True, ids=["no-instance"])
            return
    if metafunc.definition.get_closest_marker(ONE_INSTANCE_MARK) is not None:
        ready = [i for i in instances if i.status == READY]
        if not ready:
            listed = ", ".join(f"{i.name} {i.status}" for i in instances)
            problem = f"vmrole_one_instance: no instance is {READY} in {dep.label} ({listed})"
            metafunc.parametrize("vmrole_host", [_HostParam(None, problem)], indirect=True, ids=["no-ready-instance"])
            return
        instances = ready[:1]
    names = [i.name for i in instances]
    metafunc.parametrize("vmrole_host", [_HostParam(n) for n in names], indirect=True, ids=names)


# ---- the fixtures ----------------------------------------------------------------------------------------


def _require_session(request: pytest.FixtureRequest) -> DeploymentSession:
    try:
        dep = _session(request.config)
    except DeploymentUnusable as exc:
        pytest.fail(str(exc), pytrace=False)
    if dep is None:
        pytest.skip(_no_target_reason())
    return dep


@pytest.fixture(scope="session")
def vmrole_target(request: pytest.FixtureRequest) -> Target:
    """The deployment target file named with --vmr-target, parsed (secrets stay references)."""
    dep = _require_session(request)
    try:
        return dep.target()
    except DeploymentUnusable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def vmrole_instances(request: pytest.FixtureRequest) -> list[Any]:
    """Every role instance of the deployment (``.name``, ``.role``, ``.status``, ``.endpoints`` …), from Get
    Deployment."""
    dep = _require_session(request)
    try:
        return dep.instances()
    except DeploymentUnusable as exc:
        pytest.fail(str(exc), pytrace=False)


@dataclass(frozen=True)
class Vip:
    """The deployment's virtual IP and its load-balanced input endpoints."""

    address: str
    #: input endpoint name → public port on the VIP
    ports: dict[str, int] = field(default_factory=dict)
    #: input endpoint name → protocol (http, https, tcp …)
    protocols: dict[str, str] = field(default_factory=dict)

    def url(self, endpoint: str | None = None) -> str:
        """``http://VIP:port`` of an input endpoint (default: the first http one, else the first https one)."""
        if endpoint is None:
            endpoint = next(
                (n for proto in ("http", "https") for n, p in self.protocols.items() if p == proto),
                None,
            )
            if endpoint is None:
                raise LookupError(f"the VIP {self.address} has no http or https input endpoint: {self.ports}")
        if endpoint not in self.ports:
            raise LookupError(f"no input endpoint {endpoint!r} on the VIP (endpoints: {', '.join(self.ports)})")
        scheme = self.protocols.get(endpoint, "http")
        scheme = scheme if scheme in ("http", "https") else "http"
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{scheme}://{host}:{self.ports[endpoint]}"


def vip_of(deployment: Any) -> Vip:
    endpoints = list(getattr(deployment, "input_endpoints", ()) or ())
    address = next((e.vip for e in endpoints if e.vip), None) or next(iter(deployment.vips or ()), "")
    if not address:
        raise DeploymentUnusable("the deployment has no virtual IP")
    return Vip(
        address=address,
        ports={e.name or f"port{e.port}": e.port for e in endpoints},
        protocols={e.name or f"port{e.port}": e.protocol for e in endpoints},
    )


@pytest.fixture(scope="session")
def vmrole_vip(request: pytest.FixtureRequest) -> Vip:
    """The VIP address and its input endpoints' public ports."""
    dep = _require_session(request)
    try:
        return vip_of(dep.deployment())
    except DeploymentUnusable as exc:
        pytest.fail(str(exc), pytrace=False)


def vip_session(base_url: str, timeout: tuple[float, float], verify: Any = True) -> Any:
    """A ``requests.Session`` whose relative URLs go to ``base_url`` (the VIP's HTTP endpoint), with default
    timeouts; never an environment proxy or CA bundle (``trust_env`` off: the target decides)."""
    import requests

    class VipSession(requests.Session):
        base_url: str = ""
        default_timeout: tuple[float, float] = (3.0, 10.0)

        def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
            text = url.decode() if isinstance(url, bytes) else url
            if not urllib.parse.urlsplit(text).scheme:
                text = urllib.parse.urljoin(self.base_url.rstrip("/") + "/", text.lstrip("/"))
            kwargs.setdefault("timeout", self.default_timeout)
            return super().request(method, text, *args, **kwargs)

    session = VipSession()
    session.base_url = base_url
    session.default_timeout = timeout
    session.trust_env = False
    session.verify = verify
    return session


@pytest.fixture
def vmrole_http(request: pytest.FixtureRequest, vmrole_target: Target, vmrole_vip: Vip) -> Iterator[Any]:
    """A requests Session through the load balancer: ``vmrole_http.get("/")`` is ``GET`` on the VIP's HTTP
    endpoint (``vmrole_http.base_url``)."""
    try:
        base = vmrole_vip.url()
    except LookupError as exc:
        pytest.fail(str(exc), pytrace=False)
    ca = vmrole_target.winrm.ca or vmrole_target.management.ca
    timeouts = vmrole_target.timeouts
    session = vip_session(base, (float(timeouts.connect), float(timeouts.read)), verify=str(ca) if ca else True)
    yield session
    session.close()


@pytest.fixture
def vmrole_host(request: pytest.FixtureRequest) -> VmroleHost:
    """A testinfra host for one instance of the deployment (the test runs once per instance)."""
    param = getattr(request, "param", None)
    if not isinstance(param, _HostParam):
        pytest.fail("vmrole_host is parametrized by the vmrole plugin; do not parametrize it yourself", pytrace=False)
    if param.instance is None:
        if param.problem == _no_target_reason():
            pytest.skip(param.problem)
        pytest.fail(param.problem or "no instance", pytrace=False)
    dep = _require_session(request)
    try:
        return dep.host(param.instance)
    except DeploymentUnusable as exc:
        pytest.fail(str(exc), pytrace=False)


@dataclass(frozen=True)
class Reimaged:
    instance: str
    request_id: str
    status: str
    seconds: float
    ready_seconds: float


@pytest.fixture
def vmrole_reimage(request: pytest.FixtureRequest) -> Callable[..., Reimaged]:
    """``vmrole_reimage(instance)``: Reimage Role Instance through the management API, follow the operation to
    Succeeded and wait until the instance is ReadyRole again (the target's ``reimage.timeout_seconds``).
    Destructive: skipped unless --vmr-destructive."""
    if not _destructive(request.config):
        pytest.skip(destructive_skip_reason(request.node.name))
    dep = _require_session(request)

    def reimage(instance: Any, timeout: float | None = None) -> Reimaged:
        name = getattr(instance, "name", None) or getattr(getattr(instance, "vmrole", None), "instance", None)
        name = str(name or instance)
        return _operate(dep, "reimage", name, timeout)

    return reimage


def _operate(dep: DeploymentSession, kind: str, name: str, timeout: float | None) -> Reimaged:
    __tracebackhide__ = True
    ctx = dep.ctx
    limit = float(timeout if timeout is not None else dep.target().reimage.timeout_seconds)
    started = time.monotonic()
    deadline = started + limit
    try:
        request_id = ctx.management.start_operation(kind, name)
    except Exception as exc:
        pytest.fail(ctx.masker(f"{kind} of {name} could not start: {type(exc).__name__}: {exc}"), pytrace=False)
    result = ctx.management.wait_operation(request_id, deadline=deadline, interval=0.2)
    ctx.winrm.forget(name)  # its shell died with the old VM
    if not result.succeeded:
        detail = " ".join(x for x in (result.error_code, result.error_message) if x)
        how = "timed out" if result.timed_out else f"ended {result.status}"
        pytest.fail(ctx.masker(f"{kind} of {name} (request {request_id}) {how}: {detail}".rstrip(": ")), pytrace=False)
    status = None
    while True:
        try:
            status = next((i.status for i in dep.deployment(refresh=True).instances if i.name == name), None)
        except DeploymentUnusable:
            status = None
        if status == READY:
            break
        if time.monotonic() >= deadline:
            pytest.fail(f"{name} was not {READY} {limit:g} s after the {kind} (last status: {status})", pytrace=False)
        time.sleep(0.2)
    seconds = time.monotonic() - started
    return Reimaged(name, request_id, result.status, result.seconds, seconds)


# ---- testinfra: a backend through the project's WinRM pool, and Windows helpers -------------------------


def make_host(dep: DeploymentSession, instance: Any) -> VmroleHost:
    try:
        from testinfra.host import Host
    except ImportError:  # pragma: no cover - pytest-testinfra is a dependency of vmrole-harness
        pytest.fail("vmrole_host needs pytest-testinfra (pip install pytest-testinfra)", pytrace=False)
    backend = _backend_class()(dep, instance)
    host: VmroleHost = _host_class(Host)(backend)
    backend.set_host(host)
    return host


_CLASSES: dict[str, Any] = {}


def _backend_class() -> Any:
    """:class:`VmroleWinRMBackend`, defined on first use so that testinfra is imported only when needed."""
    if "backend" not in _CLASSES:
        from testinfra.backend.base import BaseBackend, CommandResult

        class VmroleWinRMBackend(BaseBackend):
            """Runs testinfra's commands on one role instance through the project's WinRM pool: one shell per
            instance reused by every command, the target's CA, the instance's own WinRM port (its
            InstanceInputEndpoint on the VIP), output and errors masked."""

            NAME = "vmrole-winrm"

            def __init__(self, dep: DeploymentSession, instance: Any, *args: Any, **kwargs: Any) -> None:
                self.dep = dep
                self.instance = instance
                super().__init__(instance.name, *args, **kwargs)

            @staticmethod
            def quote(command: str, *args: str) -> str:
                """Arguments go into testinfra's Windows templates, which put them in PowerShell single
                quotes ('%s'): a quote in an argument is doubled; a double quote or a line break, which would
                end cmd.exe's quoting, is refused."""
                if not args:
                    return command
                for arg in args:
                    if '"' in arg or "\n" in arg or "\r" in arg:
                        raise ValueError(f"vmrole-winrm: argument {arg!r} holds a double quote or a line break")
                return command % tuple(a.replace("'", "''") for a in args)

            def get_command(self, command: str, *args: str) -> str:
                return self.quote(command, *args)  # no sudo on Windows

            @property
            def encoding(self) -> str:
                return "utf-8"  # the pool opens shells with code page 65001

            def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
                __tracebackhide__ = True
                from harness.live.winrm_pool import WinRMError

                line = windows_line(self.get_command(command, *args))
                ctx = self.dep.ctx
                try:
                    result = ctx.winrm.run_cmd(self.instance.name, line)
                except WinRMError as exc:
                    raise HostUnreachable(ctx.masker(str(exc))) from None
                mask = ctx.masker
                return self.result(result.rc, self.encode(mask(line)), mask(result.stdout), mask(result.stderr))

        _CLASSES["backend"] = VmroleWinRMBackend
    return _CLASSES["backend"]


_TESTINFRA_PS = re.compile(r'^powershell -command \\"(?P<script>[^"]*)\\"$', re.IGNORECASE | re.DOTALL)


def windows_line(line: str) -> str:
    r"""testinfra's Windows modules (``host.file(p).exists`` …) send ``powershell -command \"Test-Path 'p'\"``,
    escaped as for a POSIX shell: on Windows, cmd.exe passes the ``\"`` on and powershell.exe (C runtime
    rules) reads it as a literal quote, so PowerShell gets a string and prints it instead of running it. Such
    a line is sent as ``powershell -NoProfile -Command "<script>"``, which Windows runs as meant."""
    m = _TESTINFRA_PS.match(line)
    return powershell(m.group("script")) if m else line


class HostUnreachable(Exception):
    """A command could not be run on the instance (WinRM down, timed out…); the message names the instance."""


def _host_class(base: type) -> Any:
    if "host" not in _CLASSES:

        class _VmroleHost(base):
            """A testinfra Host for one role instance, with Windows helpers in ``.vmrole``."""

            def __init__(self, backend: Any) -> None:
                super().__init__(backend)
                self.vmrole = Windows(self, backend.dep, backend.instance)

            def __repr__(self) -> str:
                return f"<vmrole host {self.backend.instance.name}>"

        _CLASSES["host"] = _VmroleHost
    return _CLASSES["host"]


VmroleHost = Any  # a testinfra Host with a ``vmrole`` attribute (:class:`Windows`)


def ps_literal(text: str) -> str:
    """A PowerShell single-quoted literal."""
    if '"' in text or "\n" in text or "\r" in text:
        raise ValueError(f"{text!r}: a double quote or a line break cannot be sent inside cmd.exe's quotes")
    return "'" + text.replace("'", "''") + "'"


def powershell(script: str) -> str:
    """The cmd.exe line that runs one PowerShell command: ``powershell -NoProfile -Command "<script>"``."""
    return f'powershell -NoProfile -Command "{script}"'


@dataclass(frozen=True)
class Service:
    """A Windows service, read with Get-Service (testinfra's WindowsService runs Get-Service in cmd.exe)."""

    host: Any
    name: str

    def _get(self, expression: str) -> Any:
        return self.host.run(powershell(expression))

    @property
    def status(self) -> str | None:
        """``Running``, ``Stopped`` … (None when there is no such service)."""
        out = self._get(f"(Get-Service -Name {ps_literal(self.name)}).Status")
        return (out.stdout.strip() or None) if out.rc == 0 else None

    @property
    def exists(self) -> bool:
        return self.status is not None

    @property
    def is_running(self) -> bool:
        return self.status == "Running"

    @property
    def start_type(self) -> str | None:
        """``Automatic``, ``Manual``, ``Disabled`` … (None when there is no such service)."""
        out = self._get(f"Get-Service -Name {ps_literal(self.name)} | Select-Object -ExpandProperty StartType")
        return (out.stdout.strip() or None) if out.rc == 0 else None

    @property
    def is_enabled(self) -> bool:
        return self.start_type in ("Automatic", "AutomaticDelayedStart")


_LISTEN = re.compile(r"^\s*TCP\s+(\S+):(\d+)\s+\S+\s+LISTENING\s*$", re.IGNORECASE)


class Windows:
    """Windows helpers for one instance: ``host.vmrole.service("W3SVC").is_running``,
    ``host.vmrole.registry_value(r"HKLM:\\SOFTWARE\\…", "Name")``, ``host.vmrole.listening(80)``."""

    def __init__(self, host: Any, dep: DeploymentSession, instance: Any) -> None:
        self.host = host
        self._dep = dep
        self.facts = instance

    def __repr__(self) -> str:
        return f"<vmrole helpers of {self.instance}>"

    @property
    def instance(self) -> str:
        return str(self.facts.name)

    @property
    def role(self) -> str:
        return str(self.facts.role)

    def service(self, name: str) -> Service:
        return Service(self.host, name)

    def registry_value(self, key: str, name: str) -> str | None:
        r"""A registry value as text (``HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion``, ``ProductName``),
        None when the key or the value does not exist."""
        script = f"(Get-ItemProperty -Path {ps_literal(key)} -Name {ps_literal(name)}).{_member(name)}"
        out = self.host.run(powershell(script))
        return out.stdout.rstrip("\r\n") if out.rc == 0 and out.stdout.strip() else None

    def set_registry_value(self, key: str, name: str, value: str) -> None:
        """Create the key if it is missing and set a string value (``New-ItemProperty -Force``). The key is
        created only when ``Test-Path`` says it is not there: ``New-Item -Force`` on an existing registry key
        replaces it, losing its other values and subkeys."""
        exists = self.host.run(powershell(f"Test-Path -Path {ps_literal(key)}"))
        if exists.rc != 0:
            problem = exists.stderr.strip()[:300]
            raise AssertionError(f"{self.instance}: Test-Path {key} failed (rc {exists.rc}): {problem}")
        scripts = [] if exists.stdout.strip() == "True" else [f"New-Item -Path {ps_literal(key)} -Force | Out-Null"]
        scripts.append(
            f"New-ItemProperty -Path {ps_literal(key)} -Name {ps_literal(name)} -Value {ps_literal(value)} "
            "-PropertyType String -Force | Out-Null"
        )
        for script in scripts:
            out = self.host.run(powershell(script))
            if out.rc != 0:
                raise AssertionError(f"{self.instance}: {script} failed (rc {out.rc}): {out.stderr.strip()[:300]}")

    def listening(self, port: int) -> bool:
        """Whether a TCP socket listens on ``port`` (any address), from ``netstat -an``."""
        out = self.host.run("netstat -an")
        if out.rc != 0:
            raise AssertionError(f"{self.instance}: netstat -an failed (rc {out.rc}): {out.stderr.strip()[:300]}")
        return any((m := _LISTEN.match(line)) and int(m.group(2)) == int(port) for line in out.stdout.splitlines())

    def write_file(self, path: str, text: str) -> None:
        """Write a text file (its folder is created), with Set-Content."""
        folder = path.rsplit("\\", 1)[0] if "\\" in path.rstrip("\\") else None
        scripts = [f"New-Item -ItemType Directory -Force -Path {ps_literal(folder)} | Out-Null"] if folder else []
        scripts.append(f"Set-Content -Path {ps_literal(path)} -Value {ps_literal(text)}")
        for script in scripts:
            out = self.host.run(powershell(script))
            if out.rc != 0:
                raise AssertionError(f"{self.instance}: {script} failed (rc {out.rc}): {out.stderr.strip()[:300]}")

    def local_storage(self, name: str) -> str:
        r"""Where a LocalStorage resource of this role is: ``C:\Resources\Directory\<deployment id>.<Role>.<Name>``."""
        dep = self._dep.deployment()
        return f"C:\\Resources\\Directory\\{dep.private_id}.{self.role}.{name}"


def _member(name: str) -> str:
    """A property access for a value name: bare when it is an identifier, else quoted."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else ps_literal(name)


# ---- for the plugin's reports ----------------------------------------------------------------------------


def masker_of(config: pytest.Config, extra: list[Callable[[str], str]] | None = None) -> Callable[[str], str]:
    """Masks every secret of the targets the fixtures have opened (and of ``extra`` maskers)."""
    maskers = list(extra or [])
    for dep in config.stash.get(SESSIONS, {}).values():
        if dep._target is not None:
            maskers.append(dep.ctx.masker)

    def mask(text: str) -> str:
        for masker in maskers:
            text = masker(text)
        return text

    return mask


def target_name(config: pytest.Config) -> str:
    """The name of the target the fixtures use ("" when none is named or it could not be read)."""
    for dep in config.stash.get(SESSIONS, {}).values():
        if dep._target is not None:
            return dep._target.name
    return ""
