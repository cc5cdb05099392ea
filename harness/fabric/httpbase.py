"""The loopback HTTP(S) server under the management API (``mgmt/server.py``) and the ARM face (``arm/server.py``).

Binds 127.0.0.1 without a DNS lookup, runs each TLS handshake in the connection's thread (not in the accept
loop), and tracks open connections so that shutdown can drop them (keep-alive ones, requests held by a fault).
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOOPBACK = "127.0.0.1"
HANDSHAKE_TIMEOUT = 10.0


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True  # a keep-alive connection must not block shutdown
    allow_reuse_address = True

    def __init__(self, port: int, handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None) -> None:
        self.tls = tls
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((LOOPBACK, port), handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        if self.tls is not None:
            # the handshake runs in the connection's thread (LoopbackHandler.setup), not in the accept loop
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves socket.getfqdn(host): a DNS lookup the loopback servers do not need
        socketserver.TCPServer.server_bind(self)
        self.server_name = LOOPBACK
        self.server_port = int(self.server_address[1])

    def drop_connections(self) -> None:
        """Shut down every open connection (after ``shutdown``/``server_close``)."""
        with self.connections_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class LoopbackHandler(BaseHTTPRequestHandler):
    server: LoopbackServer
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""

    def setup(self) -> None:
        with self.server.connections_lock:
            self.server.connections.add(self.request)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(HANDSHAKE_TIMEOUT)
            self.request.do_handshake()
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.request)
