"""The controller's control API under hostile input (issue 9 finding 2): every malformed request is a proper
HTTP error reply, never a dropped connection or a traceback."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import pytest

from harness.fabric.control import MAX_BODY, ControlServer
from harness.fabric.faults import FaultError

TOKEN = "0123456789abcdef0123456789abcdef"


class _Faults:
    def __init__(self) -> None:
        self.injected: list[tuple[Any, ...]] = []

    def inject(self, kind: str, target: Any, seconds: float, delay_ms: int) -> Any:
        if kind != "busy":
            raise FaultError(f"unknown fault {kind!r}")
        self.injected.append((kind, target, seconds, delay_ms))
        fault = type("F", (), {})()
        fault.describe = lambda: {"id": "f1", "kind": kind}  # type: ignore[attr-defined]
        return fault

    def clear(self) -> None:
        self.injected.clear()

    def remove(self, fault_id: str) -> bool:
        return False


class _Controller:
    def __init__(self) -> None:
        self.runtime = {"state": "ready"}
        self.faults = _Faults()
        self.stopping = threading.Event()

    def write_ready(self) -> None:
        return None


@pytest.fixture
def control():
    c = _Controller()
    server = ControlServer(c, TOKEN)
    server.start()
    yield server, c
    server.shutdown()


def raw_request(port: int, head: bytes, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def request(port: int, method: str, path: str, headers: dict[str, bytes], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name.encode() + b": " + value for name, value in headers.items()]
    return raw_request(port, b"\r\n".join(lines) + b"\r\n\r\n", body)


def status_of(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1."), reply[:200]
    return int(reply.split(b" ", 2)[1])


@pytest.mark.parametrize(
    "token",
    [
        b"",
        b"wrong",
        "ünïcödé".encode(),
        "ünïcödé".encode("latin-1"),
        b"\xff\xfe" * 20,
        TOKEN[:-1].encode(),
        b"x" * 5000,
    ],
)
def test_wrong_or_malformed_token_is_401(control, token):
    server, c = control
    for method in ("GET", "POST", "DELETE"):
        reply = request(server.port, method, "/status" if method == "GET" else "/faults", {"X-Vmr-Token": token})
        assert status_of(reply) == 401, (method, token, reply[:200])
        assert b"Traceback" not in reply
    assert not c.stopping.is_set() and c.faults.injected == []


def test_missing_token_is_401(control):
    server, _ = control
    assert status_of(request(server.port, "POST", "/shutdown", {})) == 401


def test_right_token_works(control):
    server, c = control
    reply = request(server.port, "GET", "/status", {"X-Vmr-Token": TOKEN.encode()})
    assert status_of(reply) == 200 and json.loads(reply.split(b"\r\n\r\n", 1)[1]) == {"state": "ready"}
    body = json.dumps({"kind": "busy", "target": "WebVM_IN_0", "seconds": 1}).encode()
    headers = {"X-Vmr-Token": TOKEN.encode(), "Content-Length": str(len(body)).encode()}
    assert status_of(request(server.port, "POST", "/faults", headers, body)) == 201
    assert c.faults.injected == [("busy", "WebVM_IN_0", 1.0, 0)]


@pytest.mark.parametrize(
    ("length", "body", "expected"),
    [
        (b"abc", b"", 400),
        (b"-5", b"", 400),
        (b"99999999999999999999999", b"", 413),
        (str(MAX_BODY + 1).encode(), b"", 413),
        (b"8", b"not json", 400),
        (b"4", b"\xff\xfe\xfd\xfc", 400),
        (b"2", b"[]", 400),
        (b"25", b'{"kind": "busy", "seconds": "x"}'[:25], 400),
        (b"34", b'{"kind": "busy", "seconds": "nan"}', 400),
        (b"31", b'{"kind": "busy", "delay_ms": {}}', 400),
        (b"27", b'{"kind": "nope", "seconds":', 400),
    ],
)
def test_malformed_bodies_are_4xx(control, length, body, expected):
    server, c = control
    headers = {"X-Vmr-Token": TOKEN.encode(), "Content-Length": length}
    reply = request(server.port, "POST", "/faults", headers, body)
    assert status_of(reply) == expected, reply[:300]
    assert b"Traceback" not in reply
    assert c.faults.injected == []


def test_chunked_body_is_refused(control):
    server, _ = control
    headers = {"X-Vmr-Token": TOKEN.encode(), "Transfer-Encoding": b"chunked"}
    reply = request(server.port, "POST", "/faults", headers, b"5\r\nhello\r\n0\r\n\r\n")
    assert status_of(reply) in (400, 411)


def test_server_survives_garbage(control):
    server, _ = control
    raw_request(server.port, b"\x00\x01garbage\r\n\r\n")
    raw_request(server.port, b"GET /status HTTP/1.1\r\n" + b"X: " + b"a" * 70000 + b"\r\n\r\n")
    assert status_of(request(server.port, "GET", "/status", {"X-Vmr-Token": TOKEN.encode()})) == 200
