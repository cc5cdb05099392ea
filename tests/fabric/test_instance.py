"""The instance process (harness.fabric.instance): real subprocesses, real sockets, real HAProxy."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.fabric.layout import write_text_atomic
from harness.fabric.ports import allocate, is_listening

T = TypeVar("T")
START_TIMEOUT = 15.0  # generous: CI machines with 2 cores and parallel test runs
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def wait_until(condition: Callable[[], T], timeout: float, message: str, interval: float = 0.02) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``message`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.1f}s: {message}")
        time.sleep(interval)


def pid_gone(pid: int) -> bool:
    """True when ``pid`` no longer exists (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@dataclass
class Inst:
    id: str
    dir: Path
    config: dict[str, Any]
    proc: subprocess.Popen[bytes]
    log: Path
    extra_pids: list[int] = field(default_factory=list)

    def port(self, name: str) -> int:
        return next(e["port"] for e in self.config["endpoints"] if e["name"] == name)

    @property
    def agent_port(self) -> int:
        return int(self.config["agent_port"])

    def set_status(self, word: str) -> None:
        write_text_atomic(self.dir / "status", word + "\n")

    def agent(self) -> str:
        with socket.create_connection(("127.0.0.1", self.agent_port), timeout=5) as s:
            data = b""
            while chunk := s.recv(64):
                data += chunk
        return data.decode()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def _write_config(tmp_path: Path, instance_id: str, endpoints: list[dict[str, Any]], **extra: Any) -> tuple[Path, dict]:
    idir = tmp_path / "instances" / instance_id
    (idir / "drives" / "app").mkdir(parents=True, exist_ok=True)
    (idir / "drives" / "os").mkdir(parents=True, exist_ok=True)
    (idir / "drives" / "local" / "AppData").mkdir(parents=True, exist_ok=True)
    ports = allocate(len(endpoints) + 1, udp=True)
    eps = [{**ep, "port": ep.get("port") or port} for ep, port in zip(endpoints, ports, strict=False)]
    config = {
        "id": instance_id,
        "role": instance_id.split("_IN_")[0],
        "index": int(instance_id.rsplit("_", 1)[1]),
        "deployment_id": "0" * 32,
        "host": "127.0.0.1",
        "endpoints": eps,
        "agent_port": extra.pop("agent_port", None) or ports[-1],
        "drives": {
            "C": str(idir / "drives" / "os"),
            "E": str(idir / "drives" / "app"),
            "local": {"AppData": str(idir / "drives" / "local" / "AppData")},
        },
        "status_file": str(idir / "status"),
        "app_command": None,
        "services": [],
        **extra,
    }
    (idir / "instance.json").write_text(json.dumps(config, indent=2))
    return idir, config


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Inst]]:
    """Start instance processes; every one (and any app pid it reports) is killed at teardown."""
    started: list[Inst] = []
    handles: list[Any] = []

    def start(
        instance_id: str = "WebVM_IN_0",
        endpoints: list[dict[str, Any]] | None = None,
        *,
        status: str | None = "ready",
        wait: bool = True,
        **extra: Any,
    ) -> Inst:
        if endpoints is None:
            endpoints = [
                {"name": "HttpIn", "protocol": "http"},
                {"name": "Raw", "protocol": "tcp"},
                {"name": "Dns", "protocol": "udp"},
            ]
        idir, config = _write_config(tmp_path, instance_id, endpoints, **extra)
        if status is not None:
            write_text_atomic(idir / "status", status + "\n")
        log = idir / "log"
        handle = log.open("wb")
        handles.append(handle)
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.fabric.instance", "--config", str(idir / "instance.json")],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=handle,
        )
        inst = Inst(instance_id, idir, config, proc, log)
        started.append(inst)
        if wait:
            wait_until(
                lambda: (idir / "pid").exists() or proc.poll() is not None,
                START_TIMEOUT,
                f"{instance_id} to start",
            )
            assert proc.poll() is None, f"{instance_id} exited {proc.returncode}: {inst.stderr()}"
        return inst

    yield start

    for inst in started:  # signal all first, then wait: teardown takes one shutdown, not N
        if inst.proc.poll() is None:
            inst.proc.send_signal(signal.SIGTERM)
    for inst in started:
        try:
            inst.proc.wait(8)
        except subprocess.TimeoutExpired:
            inst.proc.kill()
            inst.proc.wait(5)
        for pid in inst.extra_pids:
            if not pid_gone(pid):
                os.kill(pid, signal.SIGKILL)
    for handle in handles:
        handle.close()


def http_get(port: int, path: str = "/", *, context: ssl.SSLContext | None = None, method: str = "GET", body=None):
    """One request on a fresh connection: (status, headers, body)."""
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    try:
        conn.request(method, path, body=body, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------- default app


def test_http_answers_every_path_with_the_instance_token(spawn):
    inst = spawn("WebVM_IN_3")
    port = inst.port("HttpIn")
    for path in ("/", "/some/deep/path?q=1"):
        status, headers, body = http_get(port, path)
        assert (status, headers["X-Served-By"], body) == (200, "WebVM_IN_3", b"served-by WebVM_IN_3\n")
    status, headers, body = http_get(port, "/post", method="POST", body=b"x" * 100_000)
    assert (status, headers["X-Served-By"], body) == (200, "WebVM_IN_3", b"served-by WebVM_IN_3\n")
    status, headers, body = http_get(port, "/", method="HEAD")
    assert (status, headers["Content-Length"], body) == (200, "21", b"")

    # HTTP/1.1 keep-alive: two requests on one connection
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        for _ in range(2):
            conn.request("GET", "/")
            resp = conn.getresponse()
            assert resp.read() == b"served-by WebVM_IN_3\n"
    finally:
        conn.close()


def test_oversized_body_is_refused(spawn):
    inst = spawn()
    # Only the headers are sent: the server answers 413 from Content-Length and closes without reading the
    # body, so sending a 2 MiB body races with that close (BrokenPipeError on a loaded machine).
    conn = http.client.HTTPConnection("127.0.0.1", inst.port("HttpIn"), timeout=5)
    try:
        conn.putrequest("POST", "/")
        conn.putheader("Content-Length", str(2 << 20))
        conn.putheader("Connection", "close")
        conn.endheaders()
        resp = conn.getresponse()
        status, headers = resp.status, resp.headers
    finally:
        conn.close()
    assert status == 413
    assert headers["X-Served-By"] == "WebVM_IN_0"


def test_https_answers_with_the_instance_token(spawn, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "svc-SSL.pem", tmp_path / "svc-SSL.key"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    inst = spawn(
        "WebVM_IN_1",
        [
            {"name": "HttpIn", "protocol": "http"},
            {"name": "HttpsIn", "protocol": "https", "cert": str(cert), "key": str(key)},
        ],
    )
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    status, headers, body = http_get(inst.port("HttpsIn"), "/x", context=ctx)
    assert (status, headers["X-Served-By"], body) == (200, "WebVM_IN_1", b"served-by WebVM_IN_1\n")

    # a client that connects and never handshakes blocks nobody
    with socket.create_connection(("127.0.0.1", inst.port("HttpsIn")), timeout=5):
        started = time.monotonic()
        status, _, _ = http_get(inst.port("HttpsIn"), "/health", context=ctx)
        assert status == 200
        assert time.monotonic() - started < 3


def test_health_follows_the_status_file(spawn):
    inst = spawn()
    port = inst.port("HttpIn")
    assert http_get(port, "/health")[0] == 200
    inst.set_status("busy")
    assert http_get(port, "/health")[0] == 503
    assert http_get(port, "/")[0] == 200  # busy only affects the probe path
    inst.set_status("ready")
    assert http_get(port, "/health?full=1")[0] == 200
    (inst.dir / "status").unlink()
    status, headers, _ = http_get(port, "/health")
    assert (status, headers["X-Served-By"]) == (503, "WebVM_IN_0")


def test_tcp_banner_then_echo(spawn):
    inst = spawn()
    with socket.create_connection(("127.0.0.1", inst.port("Raw")), timeout=5) as s:
        f = s.makefile("rwb")
        assert f.readline() == b"VMROLE WebVM_IN_0 Raw\r\n"
        for line in (b"hello\n", b"second line\r\n"):
            f.write(line)
            f.flush()
            assert f.readline() == line
        s.shutdown(socket.SHUT_WR)
        assert f.read() == b""  # server closes on EOF
        f.close()


def test_slow_client_does_not_block_others(spawn):
    inst = spawn()
    with (
        socket.create_connection(("127.0.0.1", inst.port("HttpIn")), timeout=5) as idle_http,
        socket.create_connection(("127.0.0.1", inst.port("Raw")), timeout=5) as idle_tcp,
    ):
        idle_http.sendall(b"GET / HTTP/1.1\r\n")  # half a request, never finished
        started = time.monotonic()
        assert http_get(inst.port("HttpIn"))[0] == 200
        with socket.create_connection(("127.0.0.1", inst.port("Raw")), timeout=5) as s:
            assert s.makefile("rb").readline() == b"VMROLE WebVM_IN_0 Raw\r\n"
        assert time.monotonic() - started < 3
        assert idle_tcp.recv(64) == b"VMROLE WebVM_IN_0 Raw\r\n"


def test_udp_answers_each_datagram_with_the_banner(spawn):
    inst = spawn()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for payload in (b"ping", b"\x00" * 512):
            s.sendto(payload, ("127.0.0.1", inst.port("Dns")))
            data, _ = s.recvfrom(1024)
            assert data == b"VMROLE WebVM_IN_0 Dns\r\n"


def test_agent_line_follows_the_status_file(spawn):
    inst = spawn()
    assert inst.agent() == "up ready\n"
    inst.set_status("busy")
    assert inst.agent() == "drain\n"  # Busy: no new connections; health checks cannot undo it
    inst.set_status("ready")
    assert inst.agent() == "up ready\n"
    (inst.dir / "status").write_text("rea")  # a partial write reads as busy
    assert inst.agent() == "drain\n"
    (inst.dir / "status").unlink()
    assert inst.agent() == "drain\n"
    inst.set_status("ready")
    assert inst.agent() == "up ready\n"


def test_sigusr1_crashes_the_app_but_keeps_the_agent(spawn):
    inst = spawn()
    with socket.create_connection(("127.0.0.1", inst.port("Raw")), timeout=5) as open_conn:
        assert open_conn.recv(64).startswith(b"VMROLE")
        inst.proc.send_signal(signal.SIGUSR1)
        wait_until(
            lambda: not is_listening(inst.port("HttpIn")) and not is_listening(inst.port("Raw")),
            5,
            "endpoints to refuse connections after SIGUSR1",
        )
        assert open_conn.recv(64) == b""  # open connections are cut too
    with pytest.raises(ConnectionRefusedError):
        http_get(inst.port("HttpIn"))
    assert inst.agent() == "down\n"
    assert inst.proc.poll() is None
    assert "crash fault" in inst.stderr()


# ---------------------------------------------------------------------------------------------- app_command

APP = textwrap.dedent(
    """
    import http.server, os, signal, sys
    if sys.argv[1:] == ["ignore-term"]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(os.path.join(os.environ["VMR_DRIVE_E"], "app.pid"), "w") as f:
        f.write(str(os.getpid()))
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = " ".join([os.environ["VMR_INSTANCE_ID"], os.environ["VMR_LOCAL_APPDATA"],
                             os.environ["VMR_DRIVE_C"], os.getcwd()]).encode()
            self.send_response(200)
            self.send_header("X-App", "custom")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            if self.path == "/exit":
                os._exit(7)
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(os.environ["VMR_PORT_HTTPIN"])), H).serve_forever()
    """
)


def _start_app(spawn, *args: str) -> tuple[Inst, int]:
    inst = spawn("AppVM_IN_0", [{"name": "HttpIn", "protocol": "http"}], app_command=[sys.executable, "-c", APP, *args])
    pid_file = Path(inst.config["drives"]["E"]) / "app.pid"
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), START_TIMEOUT, "the app to write its pid")
    app_pid = int(pid_file.read_text())
    inst.extra_pids.append(app_pid)
    wait_until(lambda: is_listening(inst.port("HttpIn")), START_TIMEOUT, "the app to listen")
    return inst, app_pid


def test_app_command_serves_instead_of_the_default_app(spawn):
    inst, _ = _start_app(spawn)
    status, headers, body = http_get(inst.port("HttpIn"), "/")
    drives = inst.config["drives"]
    assert status == 200
    assert headers["X-App"] == "custom"
    assert "X-Served-By" not in headers
    assert body.decode().split() == ["AppVM_IN_0", drives["local"]["AppData"], drives["C"], drives["E"]]
    assert inst.agent() == "up ready\n"
    inst.set_status("busy")
    assert inst.agent() == "drain\n"
    inst.set_status("ready")
    assert inst.agent() == "up ready\n"

    http_get(inst.port("HttpIn"), "/exit")  # the app exits after answering
    wait_until(lambda: inst.agent() == "down\n", 5, "the agent to report the dead app as down")
    assert inst.proc.poll() is None  # the instance stays up, and does not restart the app
    assert not is_listening(inst.port("HttpIn"))
    assert "exited with code 7" in inst.stderr()


def test_sigusr1_kills_the_app_command(spawn):
    inst, app_pid = _start_app(spawn)
    inst.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: pid_gone(app_pid), 5, "the app to be killed by the crash fault")
    wait_until(lambda: inst.agent() == "down\n", 5, "the agent to report down")
    assert inst.proc.poll() is None


def test_sigterm_stops_the_app_command(spawn):
    inst, app_pid = _start_app(spawn)
    started = time.monotonic()
    inst.proc.send_signal(signal.SIGTERM)
    assert inst.proc.wait(10) == 0
    assert time.monotonic() - started < 2.5
    assert pid_gone(app_pid)
    assert not is_listening(inst.port("HttpIn"))
    assert not is_listening(inst.agent_port)


def test_sigterm_kills_an_app_command_that_ignores_it(spawn):
    inst, app_pid = _start_app(spawn, "ignore-term")
    started = time.monotonic()
    inst.proc.send_signal(signal.SIGTERM)
    assert inst.proc.wait(15) == 0
    assert 2.5 < time.monotonic() - started < 10  # SIGTERM, 3 s grace, SIGKILL
    assert pid_gone(app_pid)


# ---------------------------------------------------------------------------------------------- process hygiene


def test_sigterm_exits_promptly_and_frees_every_port(spawn):
    inst = spawn()
    assert (inst.dir / "pid").read_text().strip() == str(inst.proc.pid)
    assert is_listening(inst.port("HttpIn")) and is_listening(inst.agent_port)
    started = time.monotonic()
    inst.proc.send_signal(signal.SIGTERM)
    assert inst.proc.wait(10) == 0
    assert time.monotonic() - started < 2.0  # ~1 s budget; slack for loaded CI machines
    for port in (inst.port("HttpIn"), inst.port("Raw"), inst.agent_port):
        assert not is_listening(port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", inst.port("Dns")))  # the UDP port is free again
    assert not (inst.dir / "pid").exists()
    assert "stopped" in inst.stderr()


def test_sigint_exits_cleanly(spawn):
    inst = spawn()
    inst.proc.send_signal(signal.SIGINT)
    assert inst.proc.wait(10) == 0
    assert "Traceback" not in inst.stderr()


def test_port_in_use_fails_with_a_one_line_error(spawn):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy_port = blocker.getsockname()[1]
        inst = spawn(
            endpoints=[{"name": "Raw", "protocol": "tcp"}, {"name": "HttpIn", "protocol": "http", "port": busy_port}],
            wait=False,
        )
        assert inst.proc.wait(10) == 3
        err = inst.stderr().strip()
        assert len(err.splitlines()) == 1
        assert "HttpIn" in err and str(busy_port) in err and "Traceback" not in err
        assert not is_listening(inst.port("Raw"))  # what was bound before is released
        assert not is_listening(inst.agent_port)

        agent_clash = spawn("WebVM_IN_1", agent_port=busy_port, wait=False)
        assert agent_clash.proc.wait(10) == 3
        assert f"agent on 127.0.0.1:{busy_port}" in agent_clash.stderr()


def test_bad_config_exits_2(tmp_path):
    cfg = tmp_path / "instance.json"
    cfg.write_text("{not json")
    done = subprocess.run(
        [sys.executable, "-m", "harness.fabric.instance", "--config", str(cfg)], capture_output=True, timeout=30
    )
    assert done.returncode == 2
    assert b"not valid JSON" in done.stderr


# ---------------------------------------------------------------------------------------------- real HAProxy


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Callable[[list[Inst]], int]]:
    """Start HAProxy in front of instances; returns the frontend port. Killed at teardown."""
    if not Path(HAPROXY).exists():
        pytest.skip("haproxy is not installed")
    procs: list[subprocess.Popen[bytes]] = []

    def start(instances: list[Inst]) -> int:
        (fe_port,) = allocate(1)
        servers = "\n".join(
            f"    server {i.id} 127.0.0.1:{i.port('HttpIn')} agent-port {i.agent_port}" for i in instances
        )
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(
            textwrap.dedent(
                f"""\
                global
                    maxconn 256
                defaults
                    mode http
                    option http-server-close
                    timeout connect 2s
                    timeout client 10s
                    timeout server 10s
                    timeout check 1s
                frontend vip
                    bind 127.0.0.1:{fe_port}
                    default_backend be
                backend be
                    balance roundrobin
                    default-server check inter 500ms fall 2 rise 2 agent-check agent-inter 250ms
                """
            )
            + servers
            + "\n"
        )
        log = (tmp_path / "haproxy.log").open("wb")
        proc = subprocess.Popen([HAPROXY, "-f", str(cfg), "-db"], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        procs.append(proc)
        wait_until(lambda: is_listening(fe_port) or proc.poll() is not None, START_TIMEOUT, "haproxy to listen")
        assert proc.poll() is None, (tmp_path / "haproxy.log").read_text()
        return fe_port

    yield start

    for proc in procs:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_haproxy_agent_check_takes_a_busy_instance_out_of_rotation(spawn, haproxy):
    instances = [spawn(f"WebVM_IN_{n}", [{"name": "HttpIn", "protocol": "http"}]) for n in range(3)]
    ids = {i.id for i in instances}
    vip = haproxy(instances)

    def served_by() -> str | None:
        status, headers, _ = http_get(vip, "/")
        return headers.get("X-Served-By") if status == 200 else None

    seen: set[str] = set()
    for _ in range(40):
        if (who := served_by()) is not None:
            seen.add(who)
    assert seen == ids

    victim = instances[1]
    window: deque[str | None] = deque(maxlen=9)  # roundrobin: 9 answers in a row without it = out of rotation

    def out_of_rotation() -> bool:
        window.append(served_by())
        return len(window) == window.maxlen and victim.id not in window

    victim.set_status("busy")
    busy_at = time.monotonic()
    wait_until(out_of_rotation, 3.0, f"{victim.id} to leave the rotation once busy", interval=0.01)
    assert set(window) == ids - {victim.id}  # the others kept answering, no errors

    victim.set_status("ready")
    ready_at = time.monotonic()
    wait_until(lambda: served_by() == victim.id, 5.0, f"{victim.id} to rejoin the rotation", interval=0.01)
    print(f"out of rotation within {ready_at - busy_at:.2f}s, back in {time.monotonic() - ready_at:.2f}s")
