"""The controller's private control API (loopback, token-protected): status, faults, shutdown.

GET    /status                 fabric.json as the controller sees it now
POST   /faults                 {"kind", "target", "seconds", "delay_ms"} -> {"id", ...}
DELETE /faults[/<id>]          roll back one fault, or all
POST   /shutdown               stop the fabric
"""

from __future__ import annotations

import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness.fabric.faults import FaultError
from harness.fabric.ports import LOOPBACK

MAX_BODY = 64 * 1024


class ControlServer:
    def __init__(self, controller: Any, token: str) -> None:
        self.c = controller
        self.token = token
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

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the controller log is for events
                return

            def _reply(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                given = self.headers.get("X-Vmr-Token", "")
                if hmac.compare_digest(given, server.token):
                    return True
                self._reply(401, {"error": "missing or wrong control token"})
                return False

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    raise FaultError("request body too large")
                data = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(data, dict):
                    raise FaultError("expected a JSON object")
                return data

            def do_GET(self) -> None:
                if not self._authorised():
                    return
                if self.path == "/status":
                    server.c.write_ready()
                    self._reply(200, server.c.runtime)
                else:
                    self._reply(404, {"error": f"no such resource {self.path}"})

            def do_POST(self) -> None:
                if not self._authorised():
                    return
                try:
                    if self.path == "/faults":
                        body = self._body()
                        fault = server.c.faults.inject(
                            str(body.get("kind", "")),
                            body.get("target"),
                            float(body.get("seconds", 0)),
                            int(body.get("delay_ms", 0) or 0),
                        )
                        self._reply(201, fault.describe())
                    elif self.path == "/shutdown":
                        self._reply(202, {"state": "stopping"})
                        server.c.stopping.set()
                    else:
                        self._reply(404, {"error": f"no such resource {self.path}"})
                except (FaultError, ValueError, TypeError) as exc:
                    self._reply(400, {"error": str(exc)})

            def do_DELETE(self) -> None:
                if not self._authorised():
                    return
                if self.path == "/faults":
                    server.c.faults.clear()
                    self._reply(200, {"cleared": True})
                elif self.path.startswith("/faults/"):
                    found = server.c.faults.remove(self.path.removeprefix("/faults/"))
                    self._reply(200 if found else 404, {"cleared": found})
                else:
                    self._reply(404, {"error": f"no such resource {self.path}"})

        return Handler
