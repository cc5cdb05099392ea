"""The instance agent: the port HAProxy's ``agent-check`` polls (see CONTRACT.md and
https://docs.haproxy.org/2.6/configuration.html#5.2-agent-check).

Protocol (per TCP connection, nothing is read from the client):

- the agent writes exactly one line and closes the connection;
- ``up ready\\n`` when the instance's status file holds ``ready`` **and** the app is alive;
- ``drain\\n`` when the app is alive but the status is not ``ready`` (``busy``, or a status file that is
  missing/empty/partial/unreadable): health checks cannot undo a drain, so a Busy instance stays out of rotation;
- ``down\\n`` when the app is dead or crashed.

The status file is read on every connection, so the controller's atomic rewrite of it takes effect on the
next check. Because the agent reports the instance state itself, an ``up ready`` answer also cancels any
runtime-API ``drain``/``maint`` set on the server: fault injection through the runtime
API must ``disable agent`` first.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sys
from collections.abc import Callable
from pathlib import Path

UP = b"up ready\n"
DOWN = b"down\n"
DRAIN = b"drain\n"
READY = "ready"
BUSY = "busy"

_STATUS_MAX = 64  # one word; anything longer is not a status we wrote


def read_status(path: Path) -> str:
    """``"ready"`` or ``"busy"``: a missing, empty, partial or unreadable status file counts as busy."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_STATUS_MAX)
    except OSError:
        return BUSY
    try:
        word = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return BUSY
    return READY if word == READY else BUSY


def agent_line(status_file: Path, app_alive: Callable[[], bool]) -> bytes:
    """The line the agent sends now."""
    if not app_alive():
        return DOWN
    return UP if read_status(status_file) == READY else DRAIN


class _AgentHandler(socketserver.BaseRequestHandler):
    server: AgentServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(1.0)
        with contextlib.suppress(OSError):
            sock.sendall(agent_line(self.server.status_file, self.server.app_alive))


class AgentServer(socketserver.TCPServer):
    """Answers each connection inline (one short write, never a read): a slow client cannot block it."""

    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, host: str, port: int, status_file: Path, app_alive: Callable[[], bool]) -> None:
        self.status_file = Path(status_file)
        self.app_alive = app_alive
        super().__init__((host, port), _AgentHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            print(f"agent: error answering {client_address}: {exc!r}", file=sys.stderr, flush=True)
