"""The Service Management REST API emulator: the subset azure-servicemanagement-legacy 0.20.8 uses for a
Cloud Service deployment, over plain HTTP and HTTPS (optionally mutual TLS), bound to 127.0.0.1 only.

Resources (``/<subscription-id>/...``):

- ``GET services/hostedservices`` and ``GET services/hostedservices/<svc>[?embed-detail=true]``
- ``GET services/hostedservices/<svc>/deploymentslots/<slot>`` and ``.../deployments/<name>`` → ``<Deployment>``
- ``POST .../(deploymentslots/<slot>|deployments/<name>)/roleinstances/<instance>?comp=reboot|reimage``
  and ``?comp=rebuild&resources=allLocalDrives`` → 202, ``x-ms-request-id`` = the lifecycle's request id
- ``GET operations/<request-id>`` (with or without dashes) → ``<Operation>``
- ``GET operations?StartTime=&EndTime=`` → List Subscription Operations (the changes made through this API)
- ``certificates[/<thumbprint>]``: List/Add/Get/Delete Management Certificate (the pinned set that authenticates)

With the fabric's :class:`~harness.fabric.deployments.HostedServices` as lifecycle, everything under
``services/hostedservices`` goes through :mod:`harness.fabric.mgmt.operations` (create/update/delete hosted
services, Create/Delete/Swap/Upgrade Deployment, Change Configuration, Update Deployment Status, Walk Upgrade
Domain, Delete Role Instances, service certificates). Request bodies are read (at most :data:`MAX_BODY`).

Errors are Azure's ``<Error><Code/><Message/></Error>``; every response carries ``x-ms-request-id``.
Every listener authenticates (issue 9: loopback is not a security boundary, every local user reaches it):
the HTTPS port, when ``require_client_cert``, answers ``403 ForbiddenError`` unless the client presented the
management certificate. With a pinned ``client_cert`` the TLS handshake completes whatever certificate (or
none) the client presents, as Azure's does (``tls.py``), and the certificate is compared with the pin over
HTTP; without a pin any certificate that ``ca_cert`` verifies is accepted (and one it cannot verify fails the
handshake). The plain-HTTP port (and HTTPS without ``require_client_cert``) needs the server's secret
``token`` in ``Authorization: Bearer <token>`` (compared as bytes in constant time), or it answers the same
``403 ForbiddenError``. Authentication is checked before anything else (faults, routing) runs.

Azure's error texts (https://learn.microsoft.com/en-us/previous-versions/azure/reference/ee460801(v=azure.100),
"Service Management Status and Error Codes", unless noted):

- 403 ``ForbiddenError`` :data:`FORBIDDEN_MESSAGE`: the code and body Azure sent on the wire (recorded in
  Azure/migAz#47 and #69; the table on ee460801 names the code ``AuthenticationFailed`` with the same text).
- 400 ``MissingOrIncorrectVersionHeader``: no ``x-ms-version`` or not ``YYYY-MM-DD`` (:data:`VERSION_MESSAGE`);
  a version older than the operation's (the minimum on each operation's page: Get Deployment ee460804,
  Reboot gg441298, Reimage gg441292, Rebuild dn627518) gets the text Azure sent for an unsupported version
  (chef/knife-azure#286): "The x-ms-version header value '<v>' is not one of the supported version headers."
- 400 ``InvalidHttpVerb`` :data:`INVALID_VERB_MESSAGE`: a method the resource does not take, or one the server
  does not know (OPTIONS, HEAD …).
- 409 ``ConflictError``: "Windows Azure is currently performing an operation with x-ms-requestid <id> on this
  deployment that requires exclusive access." with the request id of the operation holding the deployment.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import re
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from harness.fabric.deployments import ApiProblem, Deployment, HostedService, HostedServices, certificate_der
from harness.fabric.httpbase import LOOPBACK, LoopbackHandler, LoopbackServer
from harness.fabric.mgmt import xml as mx
from harness.fabric.mgmt.faults import TIMEOUT, FaultState
from harness.fabric.mgmt.operations import MISSING_QUERY_MESSAGE, Router, child_text, parse_body
from harness.fabric.mgmt.tls import accept_any_client_certificate
from harness.fabric.views import Conflict, DeploymentView, Lifecycle
from harness.facts.live.platform import IN_PROGRESS
from harness.net import BadBodyLength, request_body_length, secret_matches

__all__ = ["FaultState", "ManagementServer", "RequestRecord"]  # FaultState re-exported for the controller

log = logging.getLogger("harness.fabric.mgmt")

LOCATION = "Local Fabric"
IDLE_TIMEOUT = 30.0  # seconds a keep-alive connection may stay idle

_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HEX32 = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{32}(?![0-9a-fA-F])")
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
MAX_BODY = 1 << 20  # request bodies (Create Deployment's base64 configuration) above this: 400, connection closed
_BODY_ERRORS = {
    "chunked": "Chunked request bodies are not supported.",
    "malformed": "The Content-Length header is not valid.",
    "too-large": "The request body is too large.",
}
_VERBS = frozenset({"GET", "POST", "PUT", "DELETE"})  # the verbs of the Service Management API
_OPERATION_KINDS = {"reboot": "reboot", "reimage": "reimage", "rebuild": "rebuild"}

FORBIDDEN_MESSAGE = (
    "The server failed to authenticate the request. "
    "Verify that the certificate is valid and is associated with this subscription."
)
VERSION_MESSAGE = "The versioning header is not specified or was specified incorrectly."
INVALID_VERB_MESSAGE = "The HTTP verb specified was not recognized by the server or isn't valid for this resource."
CONFLICT_MESSAGE = (
    "Windows Azure is currently performing an operation with x-ms-requestid {request_id} on this deployment "
    "that requires exclusive access."
)
# the oldest x-ms-version each operation accepts (its documentation page)
V_GET = "2009-10-01"  # Get Deployment, Get/List Cloud Service(s), Get Operation Status
V_REBOOT_REIMAGE = "2010-10-28"
V_REBUILD = "2013-06-01"
_MIN_VERSION = {"reboot": V_REBOOT_REIMAGE, "reimage": V_REBOOT_REIMAGE, "rebuild": V_REBUILD}


V_SUBSCRIPTION_OPERATIONS = "2011-02-25"  # List Subscription Operations
SUCCEEDED_TEXT = "Succeeded"


def _iso(value: str | None, default: float) -> float:
    """An ISO 8601 time (``2026-12-07T22:00:00Z``, fractions and offsets too) as epoch seconds; ``default`` when
    absent; a value that is not a time is Azure's 400 for a bad query parameter."""
    import datetime

    if not value:
        return default
    try:
        parsed = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _ApiError(400, "MissingOrInvalidRequiredQueryParameter", MISSING_QUERY_MESSAGE) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def _iso_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def unsupported_version_message(version: str) -> str:
    return f"The x-ms-version header value '{version}' is not one of the supported version headers."


@dataclass
class _Change:
    """A change made through the API, as List Subscription Operations reports it."""

    request_id: str
    object_id: str
    name: str
    caller_thumbprint: str
    client_ip: str
    started: float
    http_status: int | None  # a synchronous operation's answer; None: read the operation's status
    completed: float | None = None


@dataclass(frozen=True)
class RequestRecord:
    """One answered request (``status`` 0: held by a timeout fault and dropped)."""

    time: float
    scheme: str
    method: str
    path: str
    status: int
    request_id: str


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _not_found(message: str) -> _ApiError:
    return _ApiError(404, "ResourceNotFound", message)


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _cert_ders(path: str | Path) -> set[bytes]:
    blocks = _PEM_CERT.findall(Path(path).read_bytes())
    if not blocks:
        raise ValueError(f"no PEM certificate in {path}")
    return {ssl.PEM_cert_to_DER_cert(b.decode("ascii")) for b in blocks}


class _Server(LoopbackServer):
    def __init__(self, port: int, api: ManagementServer, tls: ssl.SSLContext | None) -> None:
        self.api = api
        self.scheme = "https" if tls else "http"
        super().__init__(port, _Handler, tls)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("management API connection from %s failed", client_address, exc_info=True)


class _Handler(LoopbackHandler):
    server: _Server
    timeout = IDLE_TIMEOUT

    # x-ms-request-id on every response, also the ones BaseHTTPRequestHandler makes itself (send_error)
    _request_id_sent = True

    def send_response(self, code: int, message: str | None = None) -> None:
        self._request_id_sent = False
        super().send_response(code, message)

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "x-ms-request-id":
            self._request_id_sent = True
        super().send_header(keyword, value)

    def end_headers(self) -> None:
        if not self._request_id_sent:
            self.send_header("x-ms-request-id", uuid.uuid4().hex)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler dispatches to do_<METHOD>: every method reaches the API (authenticated first),
        # which answers Azure's 400 InvalidHttpVerb for one the resource does not take, not http.server's 501
        if name.startswith("do_") and len(name) > 3:
            method = name[3:]
            return lambda: self.server.api._handle(self, method)
        raise AttributeError(name)


class ManagementServer:
    """Service Management API emulator over a :class:`~harness.fabric.views.Lifecycle`.

    ``http_port``/``https_port``: the ports to bind on 127.0.0.1 (``0``: any free port, read back from
    :attr:`http_port`/:attr:`https_port` after :meth:`start`; ``None``: that listener is off). HTTPS needs
    ``server_cert`` and ``server_key`` (PEM files). With ``require_client_cert`` the HTTPS port asks for a
    client certificate, verifies it against ``ca_cert`` (or the pinned ``client_cert`` itself when it is
    self-signed and there is no ``ca_cert``), and answers 403 unless it is the management certificate.
    ``faults`` is shared with whoever injects them (the controller); a private one is made if omitted.
    ``token``: the secret a request without a client certificate must send as ``Authorization: Bearer
    <token>`` (the plain-HTTP port always, HTTPS when it does not require the certificate); a random one is
    made when omitted (read it back from :attr:`token`), so no listener is ever unauthenticated.
    """

    def __init__(
        self,
        lifecycle: Lifecycle,
        *,
        subscription_id: str,
        http_port: int | None,
        https_port: int | None = None,
        server_cert: str | Path | None = None,
        server_key: str | Path | None = None,
        ca_cert: str | Path | None = None,
        require_client_cert: bool = False,
        faults: FaultState | None = None,
        client_cert: str | Path | None = None,
        request_log_size: int = 1000,
        token: str | None = None,
    ) -> None:
        if http_port is None and https_port is None:
            raise ValueError("neither http_port nor https_port given")
        if token is not None and (len(token) < 16 or not token.isascii() or not token.isprintable()):
            raise ValueError("token must be at least 16 printable ASCII characters")
        self.token = token if token is not None else secrets.token_urlsafe(32)
        self._token_bytes = self.token.encode("ascii")
        self.lifecycle = lifecycle
        self.subscription_id = subscription_id
        self.require_client_cert = require_client_cert
        self.faults = faults if faults is not None else FaultState()
        self._http_port = http_port
        self._https_port = https_port
        self._tls: ssl.SSLContext | None = None
        self._pinned: set[bytes] | None = None
        self.tls_accepts_any_certificate = False  # the handshake completes whatever the client presents
        if https_port is not None:
            if server_cert is None or server_key is None:
                raise ValueError("https_port needs server_cert and server_key")
            self._tls = self._tls_context(server_cert, server_key, ca_cert, client_cert)
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()  # operations started here that may still run (→ <Locked>)
        self._created = _now_iso()
        self.request_log: collections.deque[RequestRecord] = collections.deque(maxlen=request_log_size)
        # List Subscription Operations: the changes made through this API (newest last, bounded)
        self.subscription_log: collections.deque[_Change] = collections.deque(maxlen=request_log_size)
        # Add/Delete Management Certificate change the pinned set (when there is one): thumbprint -> created
        pinned: set[bytes] = self._pinned or set()
        self._cert_created = {hashlib.sha1(d).hexdigest().upper(): self._created for d in pinned}

    # -- lifecycle of the server ------------------------------------------------------------------------

    def _tls_context(
        self,
        server_cert: str | Path,
        server_key: str | Path,
        ca_cert: str | Path | None,
        client_cert: str | Path | None,
    ) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(server_cert), str(server_key))
        if self.require_client_cert:
            trust = ca_cert or client_cert
            if trust is None:
                raise ValueError("require_client_cert needs ca_cert (or a self-signed client_cert to pin)")
            # OPTIONAL, not REQUIRED: a missing or non-management certificate gets Azure's 403, not a TLS alert.
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.load_verify_locations(cafile=str(trust))
            if client_cert is not None:
                self._pinned = _cert_ders(client_cert)
                # pinned: the HTTP layer compares the certificate itself, so the handshake may accept any (a
                # certificate of a foreign CA gets the 403 too, as on Azure). Without a pin the CA check stays.
                self.tls_accepts_any_certificate = accept_any_client_certificate(ctx)
                if not self.tls_accepts_any_certificate:
                    log.warning("management API: a certificate ca_cert cannot verify fails the TLS handshake")
        return ctx

    def start(self) -> ManagementServer:
        """Bind and serve (daemon threads). Raises OSError when a port cannot be bound (nothing is left open)."""
        if self._servers:
            raise RuntimeError("already started")
        self._stop.clear()
        try:
            if self._http_port is not None:
                self._servers.append(_Server(self._http_port, self, None))
            if self._https_port is not None:
                self._servers.append(_Server(self._https_port, self, self._tls))
        except BaseException:
            for s in self._servers:
                s.server_close()
            self._servers = []
            raise
        for s in self._servers:
            t = threading.Thread(
                target=s.serve_forever, kwargs={"poll_interval": 0.05}, name=f"mgmt-{s.scheme}", daemon=True
            )
            t.start()
            self._threads.append(t)
        log.info("management API listening: %s", ", ".join(self.urls))
        return self

    def shutdown(self) -> None:
        """Stop serving, drop open connections (and requests held by a timeout fault). Idempotent."""
        self._stop.set()
        stoppers = [threading.Thread(target=s.shutdown, daemon=True) for s in self._servers]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(timeout=5)
        for s in self._servers:
            s.server_close()
            s.drop_connections()
        for t in self._threads:
            t.join(timeout=5)
        self._servers = []
        self._threads = []

    def __enter__(self) -> ManagementServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _port(self, scheme: str) -> int | None:
        for s in self._servers:
            if s.scheme == scheme:
                return int(s.server_address[1])
        return self._http_port if scheme == "http" else self._https_port

    @property
    def http_port(self) -> int | None:
        return self._port("http")

    @property
    def https_port(self) -> int | None:
        return self._port("https")

    @property
    def urls(self) -> list[str]:
        return [f"{s.scheme}://{LOOPBACK}:{s.server_address[1]}" for s in self._servers]

    # -- request handling -------------------------------------------------------------------------------

    def _handle(self, h: _Handler, method: str) -> None:
        scheme = h.server.scheme
        request_id = uuid.uuid4().hex
        status = 500
        try:
            body = self._read_body(h)
            if not self._authenticated(h):
                raise _ApiError(403, "ForbiddenError", FORBIDDEN_MESSAGE)
            if method not in _VERBS:  # a verb no Service Management resource takes
                raise _ApiError(400, "InvalidHttpVerb", INVALID_VERB_MESSAGE)
            fault = self.faults.for_request(method)
            if fault is not None:
                if fault.kind == TIMEOUT:
                    held = self.faults.hold(fault, self._stop)
                    log.info("fault timeout: held %s %s for %.1fs, dropping it", method, h.path, held)
                    h.close_connection = True
                    status = 0
                    return
                log.info("fault %s: %s %s", fault.kind, method, h.path)
                if fault.status_code == 409:
                    # Azure's text names the operation holding the deployment: ours if one runs, else a made-up one
                    holder = self._running_operation() or uuid.uuid4().hex
                    raise _ApiError(409, "ConflictError", CONFLICT_MESSAGE.format(request_id=holder))
                raise _ApiError(
                    500, "InternalError", "The server encountered an internal error. Please retry the request."
                )
            version = (h.headers.get("x-ms-version") or "").strip()
            if not _VERSION.match(version):
                raise _ApiError(400, "MissingOrIncorrectVersionHeader", VERSION_MESSAGE)
            status, answer, request_id = self._route(h, method, version, request_id, body)
            self._send(h, status, answer, request_id)
        except ApiProblem as e:
            status = e.status
            self._send(h, e.status, mx.error_body(e.code, e.message), request_id)
        except Conflict as e:
            status = 409
            self._send(h, 409, mx.error_body("ConflictError", self._conflict_message(e)), request_id)
        except _ApiError as e:
            status = e.status
            self._send(h, e.status, mx.error_body(e.code, e.message), request_id)
        except Exception:
            log.exception("management API: %s %s failed", method, h.path)
            status = 500
            self._send(h, 500, mx.error_body("InternalError", "The server encountered an internal error."), request_id)
        finally:
            self.request_log.append(RequestRecord(time.time(), scheme, method, h.path, status, request_id))
            log.debug("%s %s %s -> %s (x-ms-request-id %s)", scheme, method, h.path, status, request_id)

    @staticmethod
    def _read_body(h: _Handler) -> bytes:
        try:
            length = request_body_length(h.headers, MAX_BODY)
        except BadBodyLength as exc:
            h.close_connection = True  # the body cannot be skipped reliably: do not read the next request from it
            raise _ApiError(400, "BadRequest", _BODY_ERRORS[exc.reason]) from None
        if length <= 0:
            return b""
        body = h.rfile.read(length)
        if len(body) < length:  # the client went away mid-body
            h.close_connection = True
            raise _ApiError(400, "BadRequest", _BODY_ERRORS["malformed"])
        return body

    def _authenticated(self, h: _Handler) -> bool:
        if h.server.scheme == "https" and self.require_client_cert:
            return self._authorized(h)
        return self._bearer_ok(h)

    def _bearer_ok(self, h: _Handler) -> bool:
        scheme, _, token = (h.headers.get("Authorization") or "").strip().partition(" ")
        return scheme.lower() == "bearer" and secret_matches(token, self._token_bytes)

    def _authorized(self, h: _Handler) -> bool:
        sock = h.request
        if not isinstance(sock, ssl.SSLSocket):
            return False
        der = sock.getpeercert(binary_form=True)
        if not der:
            return False
        if self._pinned is None:
            return True  # no pin: only reachable when ca_cert verified the certificate in the handshake
        if der in self._pinned:  # the whole certificate, not only its SHA-1 thumbprint
            return True
        log.info("management API: certificate %s is not the management certificate", hashlib.sha1(der).hexdigest())
        return False

    @staticmethod
    def _send(h: _Handler, status: int, body: bytes, request_id: str) -> None:
        h.send_response(status)
        if body:
            h.send_header("Content-Type", "application/xml; charset=utf-8")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("x-ms-request-id", request_id)
        h.send_header("Cache-Control", "no-cache")
        h.end_headers()
        if body and h.command != "HEAD":
            h.wfile.write(body)

    def _route(
        self, h: _Handler, method: str, version: str, request_id: str, body: bytes = b""
    ) -> tuple[int, bytes, str]:
        url = urlsplit(h.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
        query = {k.lower(): v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if not parts or parts[0].lower() != self.subscription_id.lower():
            raise _not_found(f"The subscription '{parts[0] if parts else ''}' could not be found.")
        rest = parts[1:]
        if len(rest) == 2 and rest[0].lower() == "operations":
            self._accept(method, "GET", version, V_GET)
            return 200, self._operation(rest[1]), request_id
        if len(rest) == 1 and rest[0].lower() == "operations":
            self._accept(method, "GET", version, V_SUBSCRIPTION_OPERATIONS)
            return 200, self._subscription_operations(query), request_id
        if rest and rest[0].lower() == "certificates" and len(rest) <= 2:
            status, answer, name = self._management_certificates(h, method, version, rest[1:], body)
            if name:
                self._record(h, request_id, name, status)
            return status, answer, request_id
        if len(rest) < 2 or [p.lower() for p in rest[:2]] != ["services", "hostedservices"]:
            raise _not_found("The requested resource does not exist.")
        rest = rest[2:]
        if isinstance(self.lifecycle, HostedServices):
            return self._route_services(h, rest, method, version, request_id, query, body)
        dep = self.lifecycle.deployment()
        if not rest:
            self._accept(method, "GET", version, V_GET)
            return 200, mx.hosted_services_body([self._hosted_service(h, dep, embed=False)]), request_id
        if rest[0].lower() != dep.service_name.lower():
            raise _not_found("The hosted service does not exist.")
        if len(rest) == 1:
            self._accept(method, "GET", version, V_GET)
            embed = query.get("embed-detail", "false").lower() == "true"
            node = self._hosted_service(h, dep, embed=embed, attrs=mx.ROOT_ATTRS)
            return 200, node.encode("utf-8"), request_id
        if len(rest) >= 3 and rest[1].lower() in ("deploymentslots", "deployments"):
            by_slot = rest[1].lower() == "deploymentslots"
            if by_slot and rest[2].lower() != dep.slot.lower():
                raise _not_found("No deployments were found.")
            if not by_slot and rest[2] != dep.name:
                raise _not_found(f"The deployment name '{rest[2]}' does not exist.")
            if len(rest) == 3:
                self._accept(method, "GET", version, V_GET)
                return 200, mx.deployment_body(dep, **self._times(dep)), request_id
            if len(rest) == 5 and rest[3].lower() == "roleinstances":
                self._accept(method, "POST", version, V_GET)
                rid = self._start_operation(dep, rest[4], query, version)
                return 202, b"", rid
        raise _not_found("The requested resource does not exist.")

    def _route_services(
        self,
        h: _Handler,
        rest: list[str],
        method: str,
        version: str,
        request_id: str,
        query: dict[str, str],
        body: bytes,
    ) -> tuple[int, bytes, str]:
        """The fabric's hosted services and deployments (``operations.py``)."""
        services = self.lifecycle
        assert isinstance(services, HostedServices)

        def accept(got: str, allowed: str, oldest: str) -> None:
            self._accept(got, allowed, version, oldest)

        def render(svc: HostedService, embed: bool, attrs: str) -> str:
            port = h.server.server_address[1]
            with services.lock:
                deps = sorted(svc.slots.values(), key=lambda d: d.slot)
            rendered = (
                [mx.deployment_element(d.view(), locked=d.locked, created=d.created, modified=d.modified) for d in deps]
                if embed
                else None
            )
            return mx.service_element(
                svc.name,
                label=svc.label,
                description=svc.description,
                service_url=f"{h.server.scheme}://{LOOPBACK}:{port}/{self.subscription_id}/services/hostedservices/"
                f"{svc.name}",
                location=svc.location,
                created=svc.created,
                modified=svc.modified,
                deployments=rendered,
                attrs=attrs,
            )

        def instance_op(dep: Deployment, instance: str, q: dict[str, str]) -> str:
            return self._start_operation(dep.view(), instance, q, version, dep.instances.start_operation)

        def certificate_url(service: str, thumbprint: str) -> str:
            port = h.server.server_address[1]
            base = f"{h.server.scheme}://{LOOPBACK}:{port}/{self.subscription_id}/services/hostedservices/{service}"
            return f"{base}/certificates/sha1-{thumbprint}"

        reply = Router(services, certificate_url).hosted_services(
            rest, method, query, body, accept, render, instance_op
        )
        if reply.request_id is not None:
            with self._lock:
                self._in_flight.add(reply.request_id)
        if reply.name:
            self._record(h, reply.request_id or request_id, reply.name, None if reply.request_id else reply.status)
        return reply.status, reply.body, reply.request_id or request_id

    # -- subscription: management certificates, operations ----------------------------------------------

    def _caller(self, h: _Handler) -> str:
        sock = h.request
        der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        return hashlib.sha1(der).hexdigest().upper() if der else ""

    def _record(self, h: _Handler, request_id: str, name: str, http_status: int | None) -> None:
        object_id = urlsplit(h.path).path.rstrip("/")
        change = _Change(request_id, object_id, name, self._caller(h), h.client_address[0], time.time(), http_status)
        if http_status is not None:
            change.completed = change.started
        with self._lock:
            self.subscription_log.append(change)

    def _subscription_operations(self, query: dict[str, str]) -> bytes:
        """List Subscription Operations between StartTime and EndTime (ISO 8601; both optional here),
        optionally only one ObjectIdFilter and one OperationResultFilter (Succeeded, Failed, InProgress)."""
        start, end = _iso(query.get("starttime"), 0.0), _iso(query.get("endtime"), float("inf"))
        object_filter = (query.get("objectidfilter") or "").rstrip("/").lower()
        result_filter = (query.get("operationresultfilter") or "").lower()
        with self._lock:
            changes = list(self.subscription_log)
        nodes = []
        for c in changes:
            if not start <= c.started <= end or (object_filter and c.object_id.lower() != object_filter):
                continue
            status, code = SUCCEEDED_TEXT, c.http_status
            if c.http_status is None:
                op = self.lifecycle.operation(c.request_id)
                status, code = (op.status, op.http_status_code) if op is not None else (IN_PROGRESS, None)
                if status == IN_PROGRESS:
                    code = None
                elif c.completed is None:
                    c.completed = time.time()  # first seen finished
            if result_filter and status.lower() != result_filter:
                continue
            nodes.append(
                mx.subscription_operation_element(
                    request_id=c.request_id,
                    object_id=c.object_id,
                    name=c.name,
                    caller_thumbprint=c.caller_thumbprint,
                    client_ip=c.client_ip,
                    status=status,
                    http_status=code,
                    started=_iso_time(c.started),
                    completed=_iso_time(c.completed) if c.completed is not None else None,
                )
            )
        return mx.subscription_operations_body(nodes)

    def _management_certificates(
        self, h: _Handler, method: str, version: str, rest: list[str], body: bytes
    ) -> tuple[int, bytes, str]:
        """List/Add on ``certificates``, Get/Delete on ``certificates/<thumbprint>``: the pinned management
        certificates (what authenticates a client). Adding one lets its holder in; deleting one shuts it out."""
        if self._pinned is None:
            raise _not_found("The requested resource does not exist.")
        if not rest:
            if method == "POST":
                self._accept(method, "POST", version, V_GET)
                doc = parse_body(body, "SubscriptionCertificate")
                data = child_text(doc, "SubscriptionCertificateData", required=True) or ""
                der = certificate_der(data, "cer", "")
                thumbprint = hashlib.sha1(der).hexdigest().upper()
                given = (child_text(doc, "SubscriptionCertificateThumbprint") or "").replace(" ", "").upper()
                if given and given != thumbprint:
                    raise _ApiError(400, "BadRequest", "The thumbprint does not match the certificate data.")
                with self._lock:
                    self._pinned.add(der)
                    self._cert_created.setdefault(thumbprint, _now_iso())
                return 201, b"", "AddSubscriptionCertificate"
            self._accept(method, "GET", version, V_GET)
            with self._lock:
                held = sorted(self._pinned)
            return 200, mx.subscription_certificates_body([self._management_certificate(d) for d in held]), ""
        wanted = rest[0].replace(" ", "").upper()
        with self._lock:
            found = next((d for d in self._pinned if hashlib.sha1(d).hexdigest().upper() == wanted), None)
        if found is None:
            raise _not_found("The specified certificate does not exist.")
        der = found
        if method == "DELETE":
            self._accept(method, "DELETE", version, V_GET)
            with self._lock:
                self._pinned.discard(der)
                self._cert_created.pop(wanted, None)
            return 200, b"", "RemoveSubscriptionCertificate"
        self._accept(method, "GET", version, V_GET)
        return 200, mx.subscription_certificate_body(self._management_certificate(der)), ""

    def _management_certificate(self, der: bytes) -> str:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        public = (
            x509.load_der_x509_certificate(der)
            .public_key()
            .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        )
        thumbprint = hashlib.sha1(der).hexdigest().upper()
        return mx.subscription_certificate_element(der, public, thumbprint, self._cert_created.get(thumbprint, ""))

    @staticmethod
    def _accept(method: str, allowed: str, version: str, oldest: str) -> None:
        """The resource takes ``allowed`` only, from x-ms-version ``oldest`` on (versions are YYYY-MM-DD here)."""
        if method != allowed:
            raise _ApiError(400, "InvalidHttpVerb", INVALID_VERB_MESSAGE)
        if version < oldest:
            raise _ApiError(400, "MissingOrIncorrectVersionHeader", unsupported_version_message(version))

    def _times(self, dep: DeploymentView) -> dict[str, Any]:
        created = getattr(dep, "created_time", None) or self._created
        return {
            "locked": self._locked(),
            "created": created,
            "modified": getattr(dep, "last_modified_time", None) or created,
        }

    def _hosted_service(self, h: _Handler, dep: DeploymentView, *, embed: bool, attrs: str = "") -> str:
        port = h.server.server_address[1]
        times = self._times(dep)
        deployments = [mx.deployment_element(dep, **times)] if embed else None
        return mx.hosted_service_element(
            dep,
            service_url=f"{h.server.scheme}://{LOOPBACK}:{port}/{self.subscription_id}/services/hostedservices/"
            f"{dep.service_name}",
            location=LOCATION,
            created=times["created"],
            modified=times["modified"],
            deployments=deployments,
            attrs=attrs,
        )

    def _start_operation(
        self,
        dep: DeploymentView,
        instance: str,
        query: dict[str, str],
        version: str,
        start: Callable[[str, str], str] | None = None,
    ) -> str:
        comp = query.get("comp", "").lower()
        kind = _OPERATION_KINDS.get(comp)
        if kind is None:
            raise _ApiError(
                400,
                "BadRequest",
                f"The value '{comp}' of the query parameter 'comp' is not supported on a role instance.",
            )
        if version < _MIN_VERSION[kind]:
            raise _ApiError(400, "MissingOrIncorrectVersionHeader", unsupported_version_message(version))
        if kind == "rebuild" and query.get("resources", "").lower() != "alllocaldrives":
            raise _ApiError(
                400, "BadRequest", "Rebuild Role Instance requires the query parameter resources=allLocalDrives."
            )
        if instance not in {i.instance_name for i in dep.instances}:
            raise _not_found(f"The role instance '{instance}' was not found in deployment '{dep.name}'.")
        try:
            rid = (start or self.lifecycle.start_operation)(kind, instance)
        except Conflict as e:
            raise _ApiError(409, "ConflictError", self._conflict_message(e)) from e
        except KeyError as e:
            raise _not_found(f"The role instance '{instance}' was not found in deployment '{dep.name}'.") from e
        with self._lock:
            self._in_flight.add(rid)
        log.info("%s %s: request id %s", kind, instance, rid)
        return rid

    def _running_operation(self) -> str | None:
        """The request id of an operation started here that is still in progress (forgetting finished ones)."""
        with self._lock:
            ids = list(self._in_flight)
        running = None
        for rid in ids:
            op = self.lifecycle.operation(rid)
            if op is not None and op.status == IN_PROGRESS:
                running = running or rid
            else:
                with self._lock:
                    self._in_flight.discard(rid)
        return running

    def _locked(self) -> bool:
        return self._running_operation() is not None

    def _conflict_message(self, e: Conflict) -> str:
        """Azure's text naming the operation that holds the deployment: the Conflict's ``request_id`` attribute,
        a 32-hex request id in its arguments (the controller's lifecycle writes "operation <id> (…) is in
        progress"), else the operation in progress started here, else a made-up id (the text stays Azure's)."""
        found = getattr(e, "request_id", None)
        if not found:
            for arg in e.args:
                m = _HEX32.search(arg) if isinstance(arg, str) else None
                if m:
                    found = m.group(0)
                    break
        found = found or self._running_operation() or uuid.uuid4().hex
        return CONFLICT_MESSAGE.format(request_id=str(found).lower())

    def _operation(self, raw_id: str) -> bytes:
        normalized = mx.normalize_request_id(raw_id)
        op = self.lifecycle.operation(normalized)
        if op is None and normalized != raw_id:
            op = self.lifecycle.operation(raw_id)
        if op is None:
            raise _not_found(f"The operation request ID '{raw_id}' was not found.")
        return mx.operation_body(op)
