"""HAProxy 2.6 as the local fabric's load balancer (the deployment VIP): config, process, runtime API.

Design:

* Every frontend binds ``<vip>:<public port>`` (the deployment's own loopback address and, where it could be
  bound, the declared port; the servers behind are the instances' listeners on ``server_host``, 127.0.0.1)
  and runs **mode tcp** (also for http/https endpoints): an L4
  load balancer like Azure's, so TLS is end to end and clients see the instance's own certificate.
* Distribution: ``balance hash src_port`` + ``hash-type consistent`` (valid in 2.6, checked with
  ``haproxy -c``). Azure hashes the 5-tuple; on loopback only the client's source port varies, so hashing
  the source port is the faithful equivalent: each *new* connection from the same client IP may land on
  another instance, one connection stays on one instance. Measured on this box (3 backends, fresh
  connection per request): uniform spread, all 3 seen after ~5.9 requests on average, p99 15.
  ``balance source`` would be SourceIP affinity (one client -> one instance) and is only used for
  endpoints declared with ``distribution="sourceIP"``; ``roundrobin`` is never used (it makes rotation
  tests pass too easily).
* Probe: a TCP connect check to the instance port (``check inter … fastinter … downinter … fall … rise``)
  plus ``agent-check`` on the instance's agent port, which *is* the instance state (``up ready`` /
  ``down``). Endpoints with ``ignoreRoleInstanceStatus="true"`` get no agent-check (only the TCP check).
* InstanceInputEndpoints: one frontend per (instance, public port) forwarding 1:1 to that instance's
  local port, no probe (like Azure's NAT rule: a down instance refuses the connection).
* UDP: HAProxy 2.6 cannot proxy UDP. UDP input endpoints are **not** load-balanced; they are reachable
  only on each instance's own port. The config carries a comment, and :func:`unbalanced_endpoints`
  lists them so the fabric can report it. Nothing fakes it.
* Trap: an agent answering ``ready`` cancels runtime-API ``drain``/``maint`` within one agent interval (an
  agent-check reply sets the server's administrative state, https://docs.haproxy.org/2.6/configuration.html#5.2-agent-check).
  Fault injection must ``disable agent`` first (:meth:`RuntimeAPI.take_out` does both).
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from harness.fabric.ports import LOOPBACK, is_listening
from harness.fabric.procs import stop_process

__all__ = [
    "HAProxy",
    "HAProxyError",
    "LbEndpoint",
    "LbInstanceEndpoint",
    "LbServer",
    "LbSpec",
    "ProbeProfile",
    "RuntimeAPI",
    "RuntimeAPIError",
    "Timeouts",
    "backend_name",
    "check_config",
    "instance_backend_name",
    "render_config",
    "spec_from_deployment",
    "unbalanced_endpoints",
]

TEMPLATE = "haproxy.cfg.j2"
MAX_UNIX_PATH = 107  # sun_path is 108 bytes including the NUL


class HAProxyError(RuntimeError):
    """HAProxy refused the config, failed to start or to stop."""


class RuntimeAPIError(RuntimeError):
    """The runtime API answered a command with an error."""


# -- spec ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeProfile:
    """Health-check timing. The defaults are a fast local profile (a failed instance is out within about a
    second), much faster than an Azure load-balancer probe (15 s interval by default).

    Removal after a failed check takes about ``fastinter * fall`` (0.5 s); the agent acts on its next
    poll (``agent_inter_ms``). ``fast_failover`` adds ``retries 2`` + ``option redispatch 1`` +
    ``observe layer4 error-limit 1 on-error mark-down`` (a killed instance is out in ~40 ms and clients
    see no errors) — kinder than Azure, so off by default.
    """

    inter_ms: int = 500
    fastinter_ms: int = 250
    downinter_ms: int = 500
    fall: int = 2
    rise: int = 2
    timeout_ms: int = 1000
    agent_inter_ms: int | None = None  # None: same as inter_ms
    fast_failover: bool = False

    def __post_init__(self) -> None:
        if self.agent_inter_ms is None:
            object.__setattr__(self, "agent_inter_ms", self.inter_ms)
        for name in ("inter_ms", "fastinter_ms", "downinter_ms", "fall", "rise", "timeout_ms", "agent_inter_ms"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"probe {name} must be positive")

    def to_json(self) -> dict[str, Any]:
        """What ``fabric.json`` carries under ``haproxy.probe``."""
        return {"inter_ms": self.inter_ms, "fastinter_ms": self.fastinter_ms, "fall": self.fall, "rise": self.rise}

    @property
    def removal_window_s(self) -> float:
        """Upper bound for a failed instance to leave rotation (health check or agent), in seconds."""
        check = self.inter_ms + self.fastinter_ms * (self.fall - 1) + self.timeout_ms
        return max(check, 2 * int(self.agent_inter_ms or self.inter_ms)) / 1000.0

    @property
    def return_window_s(self) -> float:
        """Upper bound for a recovered instance to re-enter rotation, in seconds."""
        check = self.downinter_ms * self.rise + self.timeout_ms
        return max(check, 2 * int(self.agent_inter_ms or self.inter_ms)) / 1000.0


@dataclass(frozen=True)
class Timeouts:
    connect_ms: int = 2000
    client_ms: int = 60000
    server_ms: int = 60000


@dataclass(frozen=True)
class LbServer:
    id: str  # the instance id, e.g. WebVM_IN_0 (the HAProxy server name)
    port: int  # where the instance listens for this endpoint
    agent_port: int | None = None


@dataclass(frozen=True)
class LbEndpoint:
    """A load-balanced InputEndpoint of a role."""

    role: str
    name: str
    protocol: str  # http | https | tcp | udp
    public_port: int
    servers: tuple[LbServer, ...]
    ignore_role_instance_status: bool = False
    distribution: str = "none"  # "none" (5-tuple) | "sourceIP" (client-IP affinity)

    @property
    def frontend(self) -> str:
        return "fe_" + _ident(f"{self.role}_{self.name}")

    @property
    def backend(self) -> str:
        return backend_name(self.role, self.name)


@dataclass(frozen=True)
class LbInstanceEndpoint:
    """An InstanceInputEndpoint mapping: VIP:public_port -> one instance's local port."""

    role: str
    name: str
    protocol: str  # tcp | udp
    instance: str
    public_port: int
    port: int

    @property
    def frontend(self) -> str:
        return "fe_" + _ident(f"{self.instance}_{self.name}")

    @property
    def backend(self) -> str:
        return instance_backend_name(self.instance, self.name)


@dataclass(frozen=True)
class LbSpec:
    socket: Path  # STATE/haproxy/haproxy.sock
    endpoints: tuple[LbEndpoint, ...] = ()
    instance_endpoints: tuple[LbInstanceEndpoint, ...] = ()
    probe: ProbeProfile = field(default_factory=ProbeProfile)
    name: str = "local"
    vip: str = LOOPBACK  # where the frontends bind
    server_host: str = LOOPBACK  # where the instances listen
    maxconn: int = 1024
    timeouts: Timeouts = field(default_factory=Timeouts)
    log_traffic: bool = True  # one tcplog line per connection on stdout (-> haproxy.log)


_IDENT_RE = re.compile(r"[^A-Za-z0-9_.:-]")


def _ident(text: str) -> str:
    return _IDENT_RE.sub("_", text)


def backend_name(role: str, endpoint: str) -> str:
    """The HAProxy backend of a load-balanced input endpoint (for the runtime API)."""
    return "be_" + _ident(f"{role}_{endpoint}")


def instance_backend_name(instance_id: str, endpoint: str) -> str:
    """The HAProxy backend of one instance's InstanceInputEndpoint."""
    return "be_" + _ident(f"{instance_id}_{endpoint}")


def unbalanced_endpoints(spec: LbSpec) -> list[str]:
    """``Role/Endpoint`` (and ``Instance/Endpoint``) names HAProxy cannot serve: UDP endpoints."""
    out = [f"{ep.role}/{ep.name}" for ep in spec.endpoints if ep.protocol.lower() == "udp"]
    out += [f"{ie.instance}/{ie.name}" for ie in spec.instance_endpoints if ie.protocol.lower() == "udp"]
    return out


def _validate_spec(spec: LbSpec) -> None:
    if len(os.fsencode(str(spec.socket))) > MAX_UNIX_PATH:
        raise ValueError(f"the runtime API socket path is too long for a unix socket: {spec.socket}")
    ports: dict[int, str] = {}
    names: set[str] = set()
    for ep in spec.endpoints:
        if ep.protocol.lower() not in ("http", "https", "tcp", "udp"):
            raise ValueError(f"{ep.role}/{ep.name}: unknown protocol {ep.protocol!r}")
        if ep.distribution not in ("none", "sourceIP", "sourceIPProtocol"):
            raise ValueError(f"{ep.role}/{ep.name}: unknown distribution {ep.distribution!r}")
        if ep.protocol.lower() == "udp":
            continue
        if not ep.servers:
            raise ValueError(f"{ep.role}/{ep.name}: no instances behind the endpoint")
        label = f"{ep.role}/{ep.name}"
        if ep.public_port in ports:
            raise ValueError(f"public port {ep.public_port} used by {ports[ep.public_port]} and {label}")
        ports[ep.public_port] = label
        if ep.backend in names:
            raise ValueError(f"duplicate endpoint {ep.role}/{ep.name}")
        names.add(ep.backend)
    for ie in spec.instance_endpoints:
        if ie.protocol.lower() == "udp":
            continue
        label = f"{ie.instance}/{ie.name}"
        if ie.public_port in ports:
            raise ValueError(f"public port {ie.public_port} used by {ports[ie.public_port]} and {label}")
        ports[ie.public_port] = label
        if ie.backend in names:
            raise ValueError(f"duplicate instance endpoint {label}")
        names.add(ie.backend)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_config(spec: Any, layout: Any = None, *, probe: ProbeProfile | None = None) -> str:
    """The haproxy.cfg text for ``spec`` (validate it with :func:`check_config`).

    ``spec`` is an :class:`LbSpec`, or the controller's ``DeploymentSpec`` together with its ``Layout``
    (converted by :func:`spec_from_deployment`; the socket goes to ``layout.haproxy/haproxy.sock``).
    """
    if not isinstance(spec, LbSpec):
        if layout is None:
            raise TypeError("render_config(DeploymentSpec, layout): the layout is needed for the socket path")
        spec = spec_from_deployment(spec, Path(layout.haproxy) / "haproxy.sock", probe=probe)
    elif probe is not None:
        spec = LbSpec(**{**spec.__dict__, "probe": probe})
    _validate_spec(spec)
    norm = LbSpec(
        socket=spec.socket,
        endpoints=tuple(
            LbEndpoint(
                ep.role,
                ep.name,
                ep.protocol.lower(),
                ep.public_port,
                tuple(ep.servers),
                ep.ignore_role_instance_status,
                ep.distribution,
            )
            for ep in spec.endpoints
        ),
        instance_endpoints=tuple(spec.instance_endpoints),
        probe=spec.probe,
        name=spec.name,
        vip=spec.vip,
        server_host=spec.server_host,
        maxconn=spec.maxconn,
        timeouts=spec.timeouts,
        log_traffic=spec.log_traffic,
    )
    return _environment().get_template(TEMPLATE).render(spec=norm, probe=norm.probe)


def spec_from_deployment(deployment: Any, socket_path: Path | str, *, probe: ProbeProfile | None = None) -> LbSpec:
    """Build the spec from ``harness.fabric.spec.DeploymentSpec`` (duck-typed, to keep the modules apart).

    INPUT endpoints -> load-balanced frontends over the role's instances (``endpoint_ports[name]``, agent
    ``agent_port``); INSTANCE_INPUT endpoints -> one frontend per instance (``instance_public_ports[name]``
    -> ``endpoint_ports[name]``). An endpoint's optional ``distribution`` attribute selects affinity.
    """
    endpoints: list[LbEndpoint] = []
    instance_eps: list[LbInstanceEndpoint] = []
    for role in deployment.roles:
        members = [inst for inst in deployment.instances if inst.role == role.name]
        for ep in role.endpoints:
            kind = str(getattr(ep, "kind", "InputEndpoint")).upper().replace("_", "")
            if kind in ("INPUT", "INPUTENDPOINT"):
                servers = tuple(
                    LbServer(inst.id, int(inst.endpoint_ports[ep.name]), int(inst.agent_port) or None)
                    for inst in members
                    if ep.name in inst.endpoint_ports
                )
                endpoints.append(
                    LbEndpoint(
                        role.name,
                        ep.name,
                        ep.protocol,
                        int(ep.public_port),
                        servers,
                        ignore_role_instance_status=bool(getattr(ep, "ignore_role_instance_status", False)),
                        distribution=str(getattr(ep, "distribution", None) or "none"),
                    )
                )
            elif kind in ("INSTANCEINPUT", "INSTANCEINPUTENDPOINT"):
                for inst in members:
                    public = inst.instance_public_ports.get(ep.name)
                    local = inst.endpoint_ports.get(ep.name)
                    if public is None or local is None:
                        raise ValueError(f"{inst.id}: instance endpoint {ep.name} lacks a public or local port")
                    instance_eps.append(
                        LbInstanceEndpoint(role.name, ep.name, ep.protocol, inst.id, int(public), int(local))
                    )
    return LbSpec(
        socket=Path(socket_path),
        endpoints=tuple(endpoints),
        instance_endpoints=tuple(instance_eps),
        probe=probe or ProbeProfile(),
        name=str(getattr(deployment, "deployment_name", "") or "local"),
        vip=str(getattr(deployment, "vip", "") or LOOPBACK),
    )


# -- process ---------------------------------------------------------------------------------------------


def _executable(executable: str | None) -> str:
    found = shutil.which(executable or "haproxy")
    if not found:
        raise HAProxyError("haproxy not found on PATH: install it (Debian: apt-get install -y haproxy; 2.6+)")
    return found


def check_config(config: Path | str, *, executable: str | None = None) -> None:
    """``haproxy -c -f config``; raises :class:`HAProxyError` with HAProxy's own messages."""
    proc = subprocess.run(
        [_executable(executable), "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    if proc.returncode != 0:
        raise HAProxyError(f"haproxy rejected {config}:\n{(proc.stderr + proc.stdout).strip()}")


_BIND_RE = re.compile(r"^\s*bind\s+(?P<host>[^\s:]+):(?P<port>\d+)\b", re.M)
_SOCKET_RE = re.compile(r"^\s*stats\s+socket\s+(?P<path>\S+)", re.M)


def _tail(path: Path | None, n: int = 4000) -> str:
    if path is None or not path.exists():
        return ""
    data = path.read_bytes()[-n:]
    return data.decode("utf-8", "replace")


class HAProxy:
    """One ``haproxy -db`` process under our supervision (foreground, own session, logs to a file)."""

    def __init__(self, socket_path: Path | str | None = None, *, executable: str | None = None) -> None:
        # socket_path is informational: the config's `stats socket` line is authoritative
        self._exe = executable
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self.config_path: Path | None = None
        self.socket_path: Path | None = Path(socket_path) if socket_path is not None else None
        self.frontends: list[tuple[str, int]] = []

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        return self._log

    def start(
        self,
        config_path: Path | str,
        *,
        timeout: float = 10.0,
        log_path: Path | str | None = None,
        pid_file: Path | str | None = None,
    ) -> None:
        """Validate, start and wait until every frontend accepts connections (and the socket exists).

        Output goes to ``log_path`` (default ``haproxy.log`` next to the config); ``pid_file`` defaults
        to ``haproxy.pid`` next to the config. Raises :class:`HAProxyError` with HAProxy's stderr on a bad
        config, on an early exit (e.g. a port taken meanwhile: re-allocate and retry) or on the deadline.
        """
        if self.running:
            raise HAProxyError("haproxy is already running")
        exe = _executable(self._exe)
        config_path = Path(config_path)
        check_config(config_path, executable=exe)
        text = config_path.read_text("utf-8")
        self.config_path = config_path
        self.frontends = [(m["host"], int(m["port"])) for m in _BIND_RE.finditer(text)]
        sock = _SOCKET_RE.search(text)
        self.socket_path = Path(sock["path"]) if sock else None
        if self.socket_path is not None and self.socket_path.exists():
            self.socket_path.unlink()  # a stale socket from a killed run would look ready
        self._log = Path(log_path) if log_path is not None else config_path.with_name("haproxy.log")
        self._log.parent.mkdir(parents=True, exist_ok=True)
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(
                [exe, "-db", "-f", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        pid_path = Path(pid_file) if pid_file is not None else config_path.with_name("haproxy.pid")
        pid_path.write_text(f"{self._proc.pid}\n", "ascii")
        deadline = time.monotonic() + timeout
        pending = list(self.frontends)
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise HAProxyError(f"haproxy exited with {code} during startup:\n{_tail(self._log)}")
            pending = [(h, p) for h, p in pending if not is_listening(p, h)]
            sock_ready = self.socket_path is None or self.socket_path.exists()
            if not pending and sock_ready:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise HAProxyError(
                    f"haproxy not ready after {timeout:.1f}s (frontends not listening: {pending}, "
                    f"socket ready: {sock_ready}):\n{_tail(self._log)}"
                )
            time.sleep(0.02)

    def stop(self, *, grace: float = 2.0, timeout: float = 5.0) -> None:
        """Soft stop (SIGUSR1: stop listening, let sessions end) for ``grace`` s, then SIGTERM, then SIGKILL."""
        proc = self._proc
        if proc is None:
            return
        try:
            if not stop_process(proc, grace, first_signal=signal.SIGUSR1, kill_seconds=timeout):
                raise HAProxyError(f"haproxy {proc.pid} did not exit")
        finally:
            self._proc = None
            if self.socket_path is not None and self.socket_path.exists():
                self.socket_path.unlink(missing_ok=True)

    @property
    def runtime(self) -> RuntimeAPI:
        if self.socket_path is None:
            raise HAProxyError("the config has no 'stats socket': no runtime API")
        return RuntimeAPI(self.socket_path)

    def __enter__(self) -> HAProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- runtime API -----------------------------------------------------------------------------------------

# srv_admin_state bits (haproxy/include/haproxy/server-t.h)
ADMIN_FMAINT, ADMIN_IMAINT, ADMIN_CMAINT, ADMIN_FDRAIN, ADMIN_IDRAIN, ADMIN_RMAINT, ADMIN_HMAINT = (
    0x01,
    0x02,
    0x04,
    0x08,
    0x10,
    0x20,
    0x40,
)
OP_STATES = {0: "stopped", 1: "starting", 2: "running", 3: "stopping"}


class RuntimeAPI:
    """HAProxy's runtime API over the admin unix socket (one command per connection)."""

    def __init__(self, socket_path: Path | str, *, timeout: float = 5.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    def command(self, cmd: str) -> str:
        if "\n" in cmd:
            raise ValueError("one command at a time")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(str(self.socket_path))
            s.sendall(cmd.encode("ascii") + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode("utf-8", "replace")

    def _action(self, cmd: str) -> None:
        answer = self.command(cmd).strip()
        if answer:
            raise RuntimeAPIError(f"{cmd!r}: {answer}")

    # -- reading

    def show_info(self) -> dict[str, str]:
        info = {}
        for line in self.command("show info").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                info[key.strip()] = value.strip()
        return info

    def show_stat(self) -> list[dict[str, str]]:
        """``show stat`` as dicts keyed by the CSV header (pxname, svname, status, weight, check_status, …)."""
        text = self.command("show stat")
        if not text.startswith("# "):
            raise RuntimeAPIError(f"unexpected 'show stat' answer: {text[:200]!r}")
        rows = list(csv.DictReader(io.StringIO(text[2:])))
        return [{k: v for k, v in row.items() if k} for row in rows if row.get("pxname")]

    def show_servers_state(self, backend: str) -> list[dict[str, str]]:
        text = self.command(f"show servers state {backend}")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        header = next((ln for ln in lines if ln.startswith("# ")), None)
        if header is None:
            raise RuntimeAPIError(f"show servers state {backend}: {text.strip()}")
        keys = header[2:].split()
        return [dict(zip(keys, ln.split(), strict=False)) for ln in lines if not ln.startswith("#") and " " in ln]

    def show_servers(self, backend: str) -> list[dict[str, Any]]:
        """One dict per server of ``backend``.

        Keys: ``name``, ``address`` (ip:port), ``status`` (HAProxy's: ``UP``, ``DOWN``, ``MAINT``, ``DRAIN``,
        ``UP 1/2``, ``DOWN (agent)``, ``no check``…), ``op_state`` (running/stopped/…), ``admin``
        (set of ``maint``/``drain`` flags), ``weight``, ``check_status``, ``agent_status``, ``agent``
        (``True`` when an agent-check is configured and enabled) and ``in_rotation`` (gets new
        connections: up and weight > 0).
        """
        stats = {r["svname"]: r for r in self.show_stat() if r["pxname"] == backend and r.get("type") == "2"}
        out = []
        for st in self.show_servers_state(backend):
            name = st["srv_name"]
            stat = stats.get(name, {})
            admin_bits = int(st.get("srv_admin_state", "0"))
            admin = set()
            if admin_bits & (ADMIN_FMAINT | ADMIN_IMAINT | ADMIN_CMAINT | ADMIN_RMAINT | ADMIN_HMAINT):
                admin.add("maint")
            if admin_bits & (ADMIN_FDRAIN | ADMIN_IDRAIN):
                admin.add("drain")
            status = stat.get("status", "")
            weight = int(stat.get("weight") or st.get("srv_uweight") or 0)
            agent_state = int(st.get("srv_agent_state", "0"))
            out.append(
                {
                    "name": name,
                    "address": f"{st.get('srv_addr')}:{st.get('srv_port')}",
                    "status": status,
                    "op_state": OP_STATES.get(int(st.get("srv_op_state", "-1")), "unknown"),
                    "admin": admin,
                    "weight": weight,
                    "check_status": stat.get("check_status", ""),
                    "agent_status": stat.get("agent_status", ""),
                    # CHK_ST_CONFIGURED 0x10 | CHK_ST_ENABLED 0x04
                    "agent": bool(agent_state & 0x10) and bool(agent_state & 0x04),
                    "in_rotation": (status.startswith("UP") or status == "no check") and weight > 0,
                }
            )
        return out

    def in_rotation(self, backend: str) -> set[str]:
        return {s["name"] for s in self.show_servers(backend) if s["in_rotation"]}

    # -- acting

    def set_server_state(self, backend: str, server: str, state: str) -> None:
        """``ready`` | ``drain`` | ``maint``. With an active agent saying ``ready`` a drain/maint is undone
        within one agent interval: use :meth:`take_out` for fault injection."""
        if state not in ("ready", "drain", "maint"):
            raise ValueError(f"state must be ready, drain or maint, not {state!r}")
        self._action(f"set server {backend}/{server} state {state}")

    def disable_agent(self, backend: str, server: str) -> None:
        self._action(f"disable agent {backend}/{server}")

    def enable_agent(self, backend: str, server: str) -> None:
        self._action(f"enable agent {backend}/{server}")

    def take_out(self, backend: str, server: str, state: str = "maint") -> None:
        """Fault injection: disable the agent (so it cannot undo it), then put the server in ``state``."""
        self.disable_agent(backend, server)
        self.set_server_state(backend, server, state)

    def put_back(self, backend: str, server: str) -> None:
        """Undo :meth:`take_out`: ready again, and the agent (the instance state) back in charge."""
        self.set_server_state(backend, server, "ready")
        self.enable_agent(backend, server)

    def backends(self) -> list[str]:
        return sorted({r["pxname"] for r in self.show_stat() if r.get("type") == "1"})
