"""The app an instance runs on its input endpoints: the built-in default app, or the user's ``app_command``.

Default app, one server per endpoint, all on the instance host (127.0.0.1):

- ``http`` / ``https``: threading HTTP/1.1 server; every method and path answers 200 with
  ``X-Served-By: <ID>`` and body ``served-by <ID>\\n``, except ``/health`` (any method, query ignored):
  200 while the status file says ``ready``, 503 otherwise. HTTPS does the TLS handshake in the connection's
  thread (a client that never handshakes blocks nobody). Request bodies up to 1 MiB are read and discarded;
  larger ones get 413 and the connection is closed; chunked bodies are not read (the answer closes the
  connection).
- ``tcp``: writes ``VMROLE <ID> <endpoint>\\r\\n`` on connect, then echoes each line (lines longer than
  64 KiB are echoed in pieces) until EOF.
- ``udp``: answers each datagram with the same banner.

Each TCP-based server runs a thread per connection (at most 256 at once per endpoint; more are closed at
accept), with an idle timeout. ``DefaultApp.crash()`` closes the listeners *and* aborts open connections.

``CommandApp`` runs ``app_command`` instead (own session/process group, env ``VMR_*``), and reports alive
while the process runs; it is never restarted by the instance.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from harness.fabric.agent import READY, read_status

MAX_CONNECTIONS = 256
MAX_BODY = 1 << 20
MAX_LINE = 64 * 1024
IDLE_TIMEOUT = 60.0
POLL_INTERVAL = 0.2  # serve_forever poll: bounds how long a listener takes to stop


class EndpointError(Exception):
    """An endpoint could not be started (bind failure, bad certificate); the message names it."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _quiet_error(server: socketserver.BaseServer, client_address: object) -> None:
    exc = sys.exc_info()[1]
    if isinstance(exc, OSError):  # resets, timeouts, TLS failures (ssl.SSLError is an OSError)
        return
    _log(f"{getattr(server, 'label', 'endpoint')}: error serving {client_address}: {exc!r}")


class _Tracked(socketserver.ThreadingMixIn):
    """Thread per connection, bounded; remembers open connections so ``abort_connections`` can cut them."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128
    label = "endpoint"

    def _track_init(self) -> None:
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            full = len(self._conns) >= MAX_CONNECTIONS
            if not full:
                self._conns.add(request)
        if full:
            socketserver.TCPServer.shutdown_request(self, request)  # type: ignore[arg-type]
            return
        super().process_request(request, client_address)

    def _retrack(self, old: socket.socket, new: socket.socket) -> None:
        with self._conns_lock:
            self._conns.discard(old)
            self._conns.add(new)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)  # type: ignore[misc]

    def abort_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn, socket.SHUT_RDWR)  # base method: bypasses SSLSocket state

    def handle_error(self, request: Any, client_address: Any) -> None:
        _quiet_error(self, client_address)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- TCP / UDP


class _EchoHandler(socketserver.StreamRequestHandler):
    timeout = IDLE_TIMEOUT

    def handle(self) -> None:
        self.wfile.write(self.server.banner)  # type: ignore[attr-defined]
        while True:
            line = self.rfile.readline(MAX_LINE)
            if not line:
                return
            self.wfile.write(line)


class TcpEchoServer(_Tracked, socketserver.TCPServer):
    def __init__(self, address: tuple[str, int], banner: bytes, label: str) -> None:
        self.banner = banner
        self.label = label
        self._track_init()
        socketserver.TCPServer.__init__(self, address, _EchoHandler)


class _DatagramHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        _data, sock = self.request
        sock.sendto(self.server.banner, self.client_address)  # type: ignore[attr-defined]


class UdpBannerServer(socketserver.UDPServer):
    # No SO_REUSEADDR: on Linux it would let two processes bind the same UDP port.
    allow_reuse_address = False
    max_packet_size = 8192

    def __init__(self, address: tuple[str, int], banner: bytes, label: str) -> None:
        self.banner = banner
        self.label = label
        socketserver.UDPServer.__init__(self, address, _DatagramHandler)

    def abort_connections(self) -> None:
        pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        _quiet_error(self, client_address)


# ---------------------------------------------------------------------------------------------- HTTP(S)


def _http_classes() -> tuple[type, type]:
    """Built on first use so a TCP/UDP-only instance never imports http.server."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "vmrole-fabric"
        sys_version = ""
        timeout = IDLE_TIMEOUT
        server: Any

        def log_message(self, format: str, *args: Any) -> None:
            pass  # concise logs: no per-request lines

        def version_string(self) -> str:
            return self.server_version

        def _drain_body(self) -> bool:
            """Read and discard the request body; False when the connection must close without reading."""
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self.close_connection = True
                return True
            raw = self.headers.get("Content-Length")
            if not raw:
                return True
            try:
                length = int(raw)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                return False
            while length > 0:
                chunk = self.rfile.read(min(length, 65536))
                if not chunk:
                    self.close_connection = True
                    return True
                length -= len(chunk)
            return True

        def _answer(self) -> None:
            if not self._drain_body():
                self.close_connection = True
                self._send(413, b"request body too large\n")
                return
            path = self.path.split("?", 1)[0]
            if path == "/health":
                ready = read_status(self.server.status_file) == READY
                self._send(200 if ready else 503, b"ready\n" if ready else b"busy\n")
            else:
                self._send(200, self.server.body)

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("X-Served-By", self.server.instance_id)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _answer

    class Server(_Tracked, http.server.HTTPServer):
        def __init__(
            self,
            address: tuple[str, int],
            instance_id: str,
            status_file: Path,
            label: str,
            ssl_context: Any = None,
        ) -> None:
            self.instance_id = instance_id
            self.body = f"served-by {instance_id}\n".encode()
            self.status_file = status_file
            self.label = label
            self.ssl_context = ssl_context
            self._track_init()
            http.server.HTTPServer.__init__(self, address, Handler)

        def server_bind(self) -> None:
            # HTTPServer.server_bind calls socket.getfqdn (a DNS lookup): skip it, we only serve loopback.
            socketserver.TCPServer.server_bind(self)
            host, port = self.server_address[:2]
            self.server_name, self.server_port = str(host), int(port)

        def finish_request(self, request: Any, client_address: Any) -> None:
            if self.ssl_context is None:
                super().finish_request(request, client_address)
                return
            request.settimeout(IDLE_TIMEOUT)
            tls = self.ssl_context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
            self._retrack(request, tls)
            try:
                tls.do_handshake()
                super().finish_request(tls, client_address)
            finally:
                with self._conns_lock:
                    self._conns.discard(tls)
                with contextlib.suppress(OSError):
                    tls.close()

    return Handler, Server


def _ssl_context(cert: str, key: str | None) -> Any:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key or None)
    return ctx


# ---------------------------------------------------------------------------------------------- the apps


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


class DefaultApp:
    """The built-in app on every endpoint. ``bind()`` binds all (or raises EndpointError), ``start()`` serves."""

    def __init__(self, instance_id: str, host: str, endpoints: Iterable[dict[str, Any]], status_file: Path):
        self.instance_id = instance_id
        self.host = host
        self.endpoints = list(endpoints)
        self.status_file = status_file
        self.servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()

    def bind(self) -> None:
        http_classes: tuple[type, type] | None = None
        try:
            for ep in self.endpoints:
                name, proto, port = ep["name"], str(ep["protocol"]).lower(), int(ep["port"])
                label = f"endpoint {name} ({proto}) on {self.host}:{port}"
                banner = f"VMROLE {self.instance_id} {name}\r\n".encode()
                ctx = None
                if proto == "https":
                    try:
                        ctx = _ssl_context(ep["cert"], ep.get("key"))
                    except (OSError, KeyError) as exc:
                        raise EndpointError(f"cannot load certificate for {label}: {exc}") from None
                try:
                    if proto in ("http", "https"):
                        http_classes = http_classes or _http_classes()
                        server: socketserver.BaseServer = http_classes[1](
                            (self.host, port), self.instance_id, self.status_file, label, ctx
                        )
                    elif proto == "tcp":
                        server = TcpEchoServer((self.host, port), banner, label)
                    elif proto == "udp":
                        server = UdpBannerServer((self.host, port), banner, label)
                    else:
                        raise EndpointError(f"unknown protocol {proto!r} for endpoint {name}")
                except OSError as exc:
                    raise EndpointError(f"cannot bind {label}: {exc.strerror or exc}") from None
                self.servers.append(server)
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        for server in self.servers:
            t = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": POLL_INTERVAL},
                name=getattr(server, "label", "endpoint"),
                daemon=True,
            )
            t.start()
            self._threads.append(t)

    def alive(self) -> bool:
        return not self._stopped.is_set()

    def stop(self) -> None:
        """Stop serving: close listeners and cut open connections (also the crash fault)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        stop_servers(self.servers, serving=bool(self._threads))
        for server in self.servers:
            server.abort_connections()  # type: ignore[attr-defined]
        self.servers = []

    crash = stop

    def close(self) -> None:
        for server in self.servers:
            server.server_close()
        self.servers = []


def stop_servers(servers: list[Any], *, serving: bool = True) -> None:
    """``shutdown()`` every serve_forever loop in parallel (each takes up to POLL_INTERVAL), then close."""
    if serving:
        threads = [threading.Thread(target=s.shutdown, daemon=True) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(2.0)
    for s in servers:
        with contextlib.suppress(OSError):
            s.server_close()


class CommandApp:
    """Runs ``app_command`` with the ``VMR_*`` environment; alive while it runs; never restarted."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: str | None, on_exit: Callable[[int], None]):
        self.command = command
        self.env = env
        self.cwd = cwd
        self.on_exit = on_exit
        self.proc: Any = None

    @staticmethod
    def environment(config: dict[str, Any]) -> dict[str, str]:
        env = {"VMR_INSTANCE_ID": str(config.get("name") or config["id"])}  # the name it answers as
        for ep in config.get("endpoints") or []:
            env[f"VMR_PORT_{_env_name(ep['name'])}"] = str(ep["port"])
        drives = config.get("drives") or {}
        for letter in ("C", "E"):
            if drives.get(letter):
                env[f"VMR_DRIVE_{letter}"] = str(drives[letter])
        for name, path in (drives.get("local") or {}).items():
            env[f"VMR_LOCAL_{_env_name(name)}"] = str(path)
        return env

    def start(self) -> None:
        import subprocess

        try:
            self.proc = subprocess.Popen(
                self.command,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # own process group: stop() reaches its children too
            )
        except OSError as exc:
            raise EndpointError(f"cannot start app_command {self.command[0]!r}: {exc.strerror or exc}") from None
        threading.Thread(target=self._watch, name="app-watch", daemon=True).start()

    def _watch(self) -> None:
        code = self.proc.wait()
        self.on_exit(code)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def crash(self) -> None:
        """The crash fault: SIGKILL the app's process group."""
        if self.proc is not None:
            self._signal(signal.SIGKILL)

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM the process group, SIGKILL after ``grace`` seconds; reaps the process."""
        if self.proc is None:
            return
        import subprocess

        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        # The group may outlive its leader (children of the app): kill whatever is left.
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(2.0)
