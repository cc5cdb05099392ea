"""HAProxy as the fabric's VIP: config rendering (validated by ``haproxy -c``) and a real HAProxy in front of
tiny backends started here (HTTP servers answering with their name + agent servers answering a variable)."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import socketserver
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.fabric.haproxy import (
    HAProxy,
    HAProxyError,
    LbEndpoint,
    LbInstanceEndpoint,
    LbServer,
    LbSpec,
    ProbeProfile,
    backend_name,
    check_config,
    instance_backend_name,
    render_config,
    spec_from_deployment,
    unbalanced_endpoints,
)
from harness.fabric.ports import allocate, is_listening

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed (./dev setup)")

# N=3 under a uniform hash: all seen within 37 requests with probability 1-1e-6 (coupon collector)
ALL_SEEN_BOUND = 40
# "instance X left rotation": zero hits in n requests while still in rotation has (2/3)^n; n=30 -> 5e-6
ABSENT_SAMPLE = 30


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> float:
    """Poll ``predicate`` until true; returns the time it took, fails the test at the deadline."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"condition not met within {timeout:.2f}s")
        time.sleep(interval)
    return time.monotonic() - t0


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for the unix socket (sun_path is 108 bytes; pytest's tmp_path can be long)."""
    d = Path(tempfile.mkdtemp(prefix="vmr-hx-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- render ----------------------------------------------------------------------------------------------


def _full_spec(sock: Path) -> LbSpec:
    p = allocate(16)
    web = [LbServer(f"WebVM_IN_{i}", p[i], p[3 + i]) for i in range(3)]
    return LbSpec(
        socket=sock,
        endpoints=(
            LbEndpoint("WebVM", "HttpIn", "http", p[6], tuple(web)),
            LbEndpoint("WebVM", "HttpsIn", "HTTPS", p[7], tuple(web)),
            LbEndpoint("WebVM", "Raw", "tcp", p[8], tuple(web), ignore_role_instance_status=True),
            LbEndpoint("WebVM", "Sticky", "tcp", p[9], tuple(web), distribution="sourceIP"),
            LbEndpoint("WebVM", "Dns", "udp", p[10], tuple(web)),
        ),
        instance_endpoints=(
            LbInstanceEndpoint("WebVM", "WinRM", "tcp", "WebVM_IN_0", p[11], p[12]),
            LbInstanceEndpoint("WebVM", "WinRM", "tcp", "WebVM_IN_1", p[13], p[14]),
            LbInstanceEndpoint("WebVM", "Syslog", "udp", "WebVM_IN_0", p[15], p[15]),
        ),
    )


def _section(cfg: str, header: str) -> str:
    start = cfg.index("\n" + header + "\n") + 1
    end = cfg.find("\n\n", start)
    return cfg[start : end if end != -1 else None]


def test_render_all_endpoint_kinds_is_valid_haproxy(tmp_path, short_dir):
    spec = _full_spec(short_dir / "haproxy.sock")
    cfg = render_config(spec)
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg)
    check_config(path)  # haproxy -c

    assert f"stats socket {short_dir / 'haproxy.sock'} mode 600 level admin" in cfg
    assert "daemon" not in cfg and "chroot" not in cfg and "\n    user " not in cfg
    lines = [ln.strip() for ln in cfg.splitlines() if not ln.startswith("#")]
    assert lines.count("mode tcp") == 1 and "mode http" not in lines  # TLS end to end
    http_be = _section(cfg, f"backend {backend_name('WebVM', 'HttpIn')}")
    assert "balance hash src_port" in http_be and "hash-type consistent" in http_be
    assert "check inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2" in http_be
    assert http_be.count("agent-check agent-port") == 3 and "agent-inter 500ms" in http_be
    assert "agent-check" in _section(cfg, "backend be_WebVM_HttpsIn")
    raw_be = _section(cfg, "backend be_WebVM_Raw")
    assert "agent-check" not in raw_be and "check inter" in raw_be  # ignoreRoleInstanceStatus: TCP check only
    assert "balance source" in _section(cfg, "backend be_WebVM_Sticky")
    # UDP: documented, never bound
    assert "be_WebVM_Dns" not in cfg and f":{spec.endpoints[4].public_port}\n" not in cfg
    assert "HAProxy 2.6 has no UDP" in cfg
    assert unbalanced_endpoints(spec) == ["WebVM/Dns", "WebVM_IN_0/Syslog"]
    # instance input endpoints: 1:1, one server, no probe
    ie = spec.instance_endpoints[1]
    ie_be = _section(cfg, f"backend {instance_backend_name('WebVM_IN_1', 'WinRM')}")
    assert ie_be.splitlines()[1:] == [f"    server WebVM_IN_1 127.0.0.1:{ie.port}"]
    assert f"bind 127.0.0.1:{ie.public_port}" in cfg


def test_probe_profile_and_fast_failover_render(tmp_path, short_dir):
    spec = _full_spec(short_dir / "s.sock")
    profile = ProbeProfile(inter_ms=2000, fastinter_ms=1000, downinter_ms=1500, fall=3, rise=4, fast_failover=True)
    cfg = render_config(LbSpec(socket=spec.socket, endpoints=spec.endpoints, probe=profile))
    (tmp_path / "h.cfg").write_text(cfg)
    check_config(tmp_path / "h.cfg")
    assert "check inter 2000ms fastinter 1000ms downinter 1500ms fall 3 rise 4 observe layer4" in cfg
    assert "agent-inter 2000ms" in cfg and "option redispatch 1" in cfg
    assert profile.to_json() == {"inter_ms": 2000, "fastinter_ms": 1000, "fall": 3, "rise": 4}


def test_render_rejects_bad_specs(short_dir):
    web = (LbServer("WebVM_IN_0", 1001, 1002),)
    with pytest.raises(ValueError, match="public port 9000"):
        render_config(
            LbSpec(
                socket=short_dir / "s",
                endpoints=(LbEndpoint("R", "A", "tcp", 9000, web), LbEndpoint("R", "B", "http", 9000, web)),
            )
        )
    with pytest.raises(ValueError, match="too long"):
        render_config(LbSpec(socket=short_dir / ("x" * 120), endpoints=(LbEndpoint("R", "A", "tcp", 9000, web),)))
    with pytest.raises(ValueError, match="unknown protocol"):
        render_config(LbSpec(socket=short_dir / "s", endpoints=(LbEndpoint("R", "A", "sctp", 9000, web),)))


def test_check_config_reports_haproxy_stderr(tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text("defaults\n    mode tcp\nbackend b\n    balance no-such-algo\n")
    with pytest.raises(HAProxyError, match=r"bad\.cfg:4\] : balance"):
        check_config(bad)
    with pytest.raises(HAProxyError, match=r"bad\.cfg:4\] : balance"):
        HAProxy().start(bad)


def test_spec_from_deployment_maps_instances_and_instance_endpoints(short_dir):
    """The controller's builder: INPUT endpoints balance over the role's instances (agent-check on each
    instance's agent port), INSTANCE_INPUT endpoints map one public port to one instance, UDP is reported."""
    from types import SimpleNamespace as NS

    role = NS(
        name="WebVM",
        endpoints=[
            NS(kind="InputEndpoint", name="HttpIn", protocol="http", public_port=8080),
            NS(kind="InputEndpoint", name="Dns", protocol="udp", public_port=5353, ignore_role_instance_status=True),
            NS(kind="InstanceInputEndpoint", name="Direct", protocol="tcp", public_port=0),
        ],
    )
    instances = [
        NS(
            id=f"WebVM_IN_{i}",
            role="WebVM",
            endpoint_ports={"HttpIn": 41001 + 10 * i, "Dns": 41002 + 10 * i, "Direct": 41003 + 10 * i},
            instance_public_ports={"Direct": 10000 + i},
            agent_port=41009 + 10 * i,
        )
        for i in range(2)
    ]
    deployment = NS(roles=[role], instances=instances, deployment_name="dep1")
    spec = spec_from_deployment(deployment, short_dir / "h.sock")
    http_ep = spec.endpoints[0]
    assert [(s.id, s.port, s.agent_port) for s in http_ep.servers] == [
        ("WebVM_IN_0", 41001, 41009),
        ("WebVM_IN_1", 41011, 41019),
    ]
    assert spec.endpoints[1].ignore_role_instance_status is True
    assert [(ie.instance, ie.public_port, ie.port) for ie in spec.instance_endpoints] == [
        ("WebVM_IN_0", 10000, 41003),
        ("WebVM_IN_1", 10001, 41013),
    ]
    assert unbalanced_endpoints(spec) == ["WebVM/Dns"]
    assert "dep1" in render_config(spec)


# -- live ------------------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        body = f"served-by {self.server.name}\n".encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("X-Served-By", self.server.name)  # type: ignore[attr-defined]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Agent(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(self.server.reply[self.server.name].encode())  # type: ignore[attr-defined]


class _ThreadingTCP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _ThreadingHTTP(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # HAProxy's TCP health checks connect and reset: expected, not worth a traceback.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@dataclass
class Deployment:
    lb: HAProxy
    spec: LbSpec
    agent_reply: dict[str, str]
    webs: dict[str, socketserver.BaseServer] = field(default_factory=dict)

    @property
    def vip_port(self) -> int:
        return self.spec.endpoints[0].public_port

    @property
    def backend(self) -> str:
        return self.spec.endpoints[0].backend


def fetch(port: int) -> str:
    """One request on a new TCP connection (a new source port): the name of the instance that served it."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head
    return body.decode().strip().removeprefix("served-by ")


def hits(port: int, n: int) -> Counter[str]:
    return Counter(fetch(port) for _ in range(n))


@pytest.fixture
def deployment(short_dir, tmp_path) -> Iterator[Deployment]:
    names = [f"WebVM_IN_{i}" for i in range(3)]
    reply = dict.fromkeys(names, "up ready\n")
    servers: list[socketserver.BaseServer] = []
    webs: dict[str, socketserver.BaseServer] = {}
    lb_servers = []
    try:
        for name in names:
            web = _ThreadingHTTP(("127.0.0.1", 0), _Handler)
            web.name = name  # type: ignore[attr-defined]
            webs[name] = web
            agent = _ThreadingTCP(("127.0.0.1", 0), _Agent)
            agent.name, agent.reply = name, reply  # type: ignore[attr-defined]
            for srv in (web, agent):
                servers.append(srv)
                threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            lb_servers.append(LbServer(name, web.server_address[1], agent.server_address[1]))
        public, direct = allocate(2)
        spec = LbSpec(
            socket=short_dir / "haproxy.sock",
            endpoints=(LbEndpoint("WebVM", "HttpIn", "http", public, tuple(lb_servers)),),
            instance_endpoints=(
                LbInstanceEndpoint("WebVM", "Direct", "tcp", "WebVM_IN_2", direct, lb_servers[2].port),
            ),
        )
        cfg = tmp_path / "haproxy" / "haproxy.cfg"
        cfg.parent.mkdir()
        cfg.write_text(render_config(spec))
        lb = HAProxy()
        lb.start(cfg, timeout=10)
        try:
            yield Deployment(lb, spec, reply, webs)
        finally:
            lb.stop()
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_start_writes_pid_and_answers_runtime_api(deployment):
    lb = deployment.lb
    assert lb.running and lb.pid
    assert (lb.config_path.parent / "haproxy.pid").read_text().strip() == str(lb.pid)
    info = lb.runtime.show_info()
    assert info["Version"].startswith("2.") and int(info["Pid"]) == lb.pid
    servers = lb.runtime.show_servers(deployment.backend)
    assert [s["name"] for s in servers] == ["WebVM_IN_0", "WebVM_IN_1", "WebVM_IN_2"]
    assert all(s["agent"] and s["weight"] > 0 and s["op_state"] == "running" for s in servers)
    assert deployment.backend in lb.runtime.backends()


def test_rotation_spreads_new_connections_from_one_client(deployment):
    # one client IP, a new connection (source port) per request: all 3 instances within the bound
    seen: list[str] = []
    while len(set(seen)) < 3:
        seen.append(fetch(deployment.vip_port))
        assert len(seen) <= ALL_SEEN_BOUND, f"not all instances seen in {ALL_SEEN_BOUND} requests: {Counter(seen)}"
    spread = hits(deployment.vip_port, 90)
    assert set(spread) == {"WebVM_IN_0", "WebVM_IN_1", "WebVM_IN_2"}
    assert min(spread.values()) >= 10, spread  # uniform-ish (expected 30 each); not affinity


def test_instance_input_endpoint_maps_to_one_instance(deployment):
    direct = deployment.spec.instance_endpoints[0].public_port
    assert set(hits(direct, 12)) == {"WebVM_IN_2"}


def test_agent_down_leaves_rotation_and_up_ready_returns(deployment):
    rt, be, probe = deployment.lb.runtime, deployment.backend, deployment.spec.probe
    deployment.agent_reply["WebVM_IN_1"] = "down\n"
    t_out = wait_until(lambda: "WebVM_IN_1" not in rt.in_rotation(be), probe.removal_window_s + 1.0)
    assert t_out <= probe.removal_window_s + 1.0
    status = {s["name"]: s for s in rt.show_servers(be)}["WebVM_IN_1"]
    assert status["status"].startswith("DOWN") and not status["in_rotation"]
    assert "WebVM_IN_1" not in hits(deployment.vip_port, ABSENT_SAMPLE)

    deployment.agent_reply["WebVM_IN_1"] = "up ready\n"
    wait_until(lambda: "WebVM_IN_1" in rt.in_rotation(be), probe.return_window_s + 1.0)
    seen: set[str] = set()
    wait_until(lambda: seen.add(fetch(deployment.vip_port)) or "WebVM_IN_1" in seen, 10)


def test_agent_drain_is_busy(deployment):
    rt, be = deployment.lb.runtime, deployment.backend
    deployment.agent_reply["WebVM_IN_0"] = "drain\n"
    wait_until(lambda: "WebVM_IN_0" not in rt.in_rotation(be), deployment.spec.probe.removal_window_s + 1.0)
    assert "DRAIN" in {s["name"]: s for s in rt.show_servers(be)}["WebVM_IN_0"]["status"]
    assert "WebVM_IN_0" not in hits(deployment.vip_port, ABSENT_SAMPLE)


def test_runtime_maint_is_cancelled_by_a_ready_agent_unless_agent_disabled(deployment):
    rt, be, probe = deployment.lb.runtime, deployment.backend, deployment.spec.probe
    # the trap: the agent's "ready" undoes drain and maint within an agent interval
    for state in ("drain", "maint"):
        rt.set_server_state(be, "WebVM_IN_2", state)
        assert "WebVM_IN_2" not in rt.in_rotation(be)
        wait_until(lambda: "WebVM_IN_2" in rt.in_rotation(be), probe.removal_window_s + 1.0)

    # fault injection done right: agent off, then maint -> stays out
    rt.take_out(be, "WebVM_IN_2", "maint")
    srv = {s["name"]: s for s in rt.show_servers(be)}["WebVM_IN_2"]
    assert srv["status"] == "MAINT" and "maint" in srv["admin"] and not srv["agent"]
    deadline = time.monotonic() + 3 * int(probe.agent_inter_ms or 500) / 1000  # several agent polls
    counts: Counter[str] = Counter()
    while time.monotonic() < deadline or sum(counts.values()) < ABSENT_SAMPLE:
        counts[fetch(deployment.vip_port)] += 1
    assert "WebVM_IN_2" not in counts and "WebVM_IN_2" not in rt.in_rotation(be)

    rt.put_back(be, "WebVM_IN_2")
    wait_until(lambda: "WebVM_IN_2" in rt.in_rotation(be), probe.return_window_s + 1.0)
    assert {s["name"]: s for s in rt.show_servers(be)}["WebVM_IN_2"]["agent"]


def test_runtime_errors_are_raised(deployment):
    rt = deployment.lb.runtime
    with pytest.raises(Exception, match=r"(?i)no such|not found|unknown"):
        rt.set_server_state(deployment.backend, "NoSuchServer", "maint")
    with pytest.raises(ValueError):
        rt.set_server_state(deployment.backend, "WebVM_IN_0", "down")


def test_killed_backend_health_check_marks_it_down(deployment):
    rt, be = deployment.lb.runtime, deployment.backend
    rt.disable_agent(be, "WebVM_IN_0")  # only the TCP check now
    web = deployment.webs["WebVM_IN_0"]
    web.shutdown()
    web.server_close()
    wait_until(lambda: "WebVM_IN_0" not in rt.in_rotation(be), deployment.spec.probe.removal_window_s + 1.0)
    assert "L4CON" in {s["name"]: s for s in rt.show_servers(be)}["WebVM_IN_0"]["check_status"]


def test_stop_leaves_no_process_and_frees_ports(deployment):
    lb = deployment.lb
    pid, ports = lb.pid, [p for _, p in lb.frontends]
    assert pid and all(is_listening(p) for p in ports)
    lb.stop()
    assert not lb.running and lb.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not any(is_listening(p) for p in ports)
    for port in ports:  # free: we can bind them ourselves
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    assert not deployment.spec.socket.exists()
    lb.stop()  # idempotent


def test_render_from_a_deployment_spec_and_layout(tmp_path):
    """The controller passes its DeploymentSpec + Layout (duck-typed here to keep the test independent)."""
    from types import SimpleNamespace as NS

    from harness.fabric.layout import Layout

    p = allocate(10)
    role = NS(
        name="WebVM",
        endpoints=(
            NS(
                name="HttpIn",
                kind="InputEndpoint",
                protocol="http",
                public_port=p[0],
                ignore_role_instance_status=False,
            ),
            NS(name="Direct", kind="InstanceInputEndpoint", protocol="tcp", public_port=0),
            NS(name="Control", kind="InternalEndpoint", protocol="tcp", public_port=0),
        ),
    )
    instances = tuple(
        NS(
            id=f"WebVM_IN_{i}",
            role="WebVM",
            endpoint_ports={"HttpIn": p[1 + i], "Direct": p[3 + i], "Control": p[5 + i]},
            instance_public_ports={"Direct": p[7 + i]},
            agent_port=p[9] - i,
        )
        for i in range(2)
    )
    deployment = NS(roles=(role,), instances=instances, deployment_name="dep")
    short = Path(tempfile.mkdtemp(prefix="vmr-hx-"))
    try:
        cfg = render_config(deployment, Layout(short))
        (tmp_path / "h.cfg").write_text(cfg)
        check_config(tmp_path / "h.cfg")
    finally:
        shutil.rmtree(short, ignore_errors=True)
    assert f"stats socket {short / 'haproxy' / 'haproxy.sock'} " in cfg
    assert f"server WebVM_IN_1 127.0.0.1:{p[2]} agent-check agent-port {p[9] - 1}" in cfg
    assert f"bind 127.0.0.1:{p[8]}" in cfg and f"server WebVM_IN_1 127.0.0.1:{p[4]}\n" in cfg
    assert "Control" not in cfg
    with pytest.raises(TypeError):
        render_config(deployment)
