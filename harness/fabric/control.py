"""The controller's private control API (loopback, token-protected): status, faults, shutdown.

GET    /status                 fabric.json as the controller sees it now
POST   /faults                 {"kind", "target", "seconds", "delay_ms"} -> {"id", ...}
DELETE /faults[/<id>]          roll back one fault, or all
POST   /shutdown               stop the fabric

Every request needs ``X-Vmr-Token: <STATE/secrets/control-token>`` (compared as bytes in constant time);
anything else is 401. Malformed requests are answered, never dropped (issue 9): a bad ``Content-Length`` or a
body that is not a JSON object of the expected types is 400, a body over ``MAX_BODY`` is 413 (not read), a
chunked body is 411; unexpected errors are a 500 without details (logged in the controller log).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness.fabric.faults import FaultError
from harness.fabric.ports import LOOPBACK
from harness.net import BadBodyLength, request_body_length, secret_matches

MAX_BODY = 64 * 1024

log = logging.getLogger("vmrole.fabric.control")

_BODY_ERRORS = {
    "chunked": (411, "chunked request bodies are not supported"),
    "malformed": (400, "bad Content-Length"),
    "too-large": (413, f"request body too large (at most {MAX_BODY} bytes)"),
}


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _number(value: Any, name: str, default: float = 0.0) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadRequest(400, f"{name} must be a number")
    if not math.isfinite(value):
        raise _BadRequest(400, f"{name} must be a finite number")
    return float(value)


class ControlServer:
    def __init__(self, controller: Any, token: str) -> None:
        self.c = controller
        self.token = token
        self.token_bytes = token.encode("utf-8")
        handler = self._handler()
        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="control-api", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30  # idle keep-alive connections

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the controller log is for events
                return

            def _reply(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                if secret_matches(self.headers.get("X-Vmr-Token"), server.token_bytes):
                    return True
                self._drain_or_close()
                self._reply(401, {"error": "missing or wrong control token"})
                return False

            def _length(self) -> int:
                try:
                    return request_body_length(self.headers, MAX_BODY)
                except BadBodyLength as exc:
                    self.close_connection = True
                    status, message = _BODY_ERRORS[exc.reason]
                    raise _BadRequest(status, message) from None

            def _drain_or_close(self) -> None:
                """Skip a body nobody will read (so keep-alive stays in step), or close the connection."""
                try:
                    length = self._length()
                except _BadRequest:
                    return
                if length:
                    self.rfile.read(length)

            def _body(self) -> dict[str, Any]:
                length = self._length()
                raw = self.rfile.read(length) if length else b""
                try:
                    data = json.loads(raw or b"{}")
                except ValueError:  # includes UnicodeDecodeError
                    raise _BadRequest(400, "the body is not JSON") from None
                if not isinstance(data, dict):
                    raise _BadRequest(400, "expected a JSON object")
                return data

            def _safely(self, work: Any) -> None:
                try:
                    work()
                except _BadRequest as exc:
                    self._reply(exc.status, {"error": exc.message})
                except FaultError as exc:
                    self._reply(400, {"error": str(exc)})
                except Exception:
                    log.exception("control API: %s %s failed", self.command, self.path)
                    self.close_connection = True
                    self._reply(500, {"error": "internal error (see the controller log)"})

            def do_GET(self) -> None:
                if self._authorised():
                    self._safely(self._get)

            def do_POST(self) -> None:
                if self._authorised():
                    self._safely(self._post)

            def do_DELETE(self) -> None:
                if self._authorised():
                    self._safely(self._delete)

            def _get(self) -> None:
                self._drain_or_close()
                if self.path == "/status":
                    server.c.write_ready()
                    self._reply(200, server.c.runtime)
                else:
                    self._reply(404, {"error": "no such resource"})

            def _post(self) -> None:
                if self.path == "/faults":
                    body = self._body()
                    kind, target = body.get("kind", ""), body.get("target")
                    if not isinstance(kind, str) or not (target is None or isinstance(target, str)):
                        raise _BadRequest(400, "kind and target must be strings")
                    seconds = _number(body.get("seconds"), "seconds")
                    delay_ms = _number(body.get("delay_ms"), "delay_ms")
                    if not 0 <= delay_ms <= 3_600_000:
                        raise _BadRequest(400, "delay_ms must be between 0 and 3600000")
                    fault = server.c.faults.inject(kind, target, seconds, int(delay_ms))
                    self._reply(201, fault.describe())
                elif self.path == "/shutdown":
                    self._drain_or_close()
                    self._reply(202, {"state": "stopping"})
                    server.c.stopping.set()
                else:
                    self._drain_or_close()
                    self._reply(404, {"error": "no such resource"})

            def _delete(self) -> None:
                self._drain_or_close()
                if self.path == "/faults":
                    server.c.faults.clear()
                    self._reply(200, {"cleared": True})
                elif self.path.startswith("/faults/"):
                    found = server.c.faults.remove(self.path.removeprefix("/faults/"))
                    self._reply(200 if found else 404, {"cleared": found})
                else:
                    self._reply(404, {"error": "no such resource"})

        return Handler
