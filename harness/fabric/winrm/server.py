"""The fabric's WinRM (WS-Management) server: HTTPS (Basic + NTLM/Negotiate) and HTTP (NTLM/Negotiate with
WinRM message encryption), serving the ``windows/shell/cmd`` resource on ``/wsman`` for the emulated guest
(:mod:`harness.fabric.winrm.guest`).

Behaviour the clients depend on (MS-WSMV, https://learn.microsoft.com/openspecs/windows_protocols/ms-wsmv/,
as Windows implements it):

* HTTP/1.1 keep-alive; NTLM authenticates the *connection* (type 1 → 401 + type 2 challenge → type 3), later
  requests on it carry no ``Authorization``.  Over HTTPS the client's channel-binding token
  (``tls-server-end-point`` of our certificate) is verified when sent and not required (Windows'
  ``CbtHardeningLevel=Relaxed``).
* Over HTTP only NTLM/Negotiate is offered; Basic is refused with 401 and so is an NTLM-authenticated request
  that is not ``multipart/encrypted`` (Windows ``AllowUnencrypted=false``).  The empty-body POST pywinrm sends
  to set up encryption is answered 200.
* Bad credentials and any pyspnego error → 401 (pywinrm ``InvalidCredentialsError``), never a dropped
  connection.  Paths other than ``/wsman`` → 404; bodies over 4 MiB → 413; chunked bodies → 411.
* ``delay_ms_file`` (the "slow WinRM" fault): when it exists and holds a number, every response is delayed by
  that many milliseconds (read per response, capped at 10 minutes).
* Shells/commands: Create/Command/Receive (long-poll up to ``OperationTimeout``, then the TimedOut fault
  2150858793 as HTTP 500)/Send/Signal/Delete; an unknown ShellId is the InvalidSelectors fault 2150858843
  (HTTP 400).  Commands run in their own thread, so output that appears later is delivered by later Receives.

* Failed logins are throttled per client address (issue 9; Windows' account lockout): every failed Basic or
  NTLM authentication is answered after ``failure_delay_ms`` (default 250; the connection's own thread
  sleeps, other clients are served meanwhile); after ``lockout_threshold`` failures (default 10) the address
  is locked out for ``lockout_seconds`` (default 10), doubling with each further lockout up to
  ``max_lockout_seconds`` (default 300): while locked out, every authentication attempt — even with the
  right password — is a delayed 401 and no password is checked. A successful login clears the record.
  Correct logins are never delayed.

The password is read from ``password_file`` and kept in memory and in a private NTLM user file (0600 in a
0700 folder ``vmr-winrm-<instance id>-*`` next to the password file — the fabric's secrets folder, never the
shared temp folder — removed on shutdown, and by the controller / `fabric down` after a kill); it is never
logged.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import logging
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from struct import error as struct_error
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import soap
from .ntlm import ENCRYPTED_CONTENT_TYPE, CredentialFile, NtlmAcceptor, channel_bindings_for, token_message_type

if TYPE_CHECKING:
    from spnego.channel_bindings import GssChannelBindings

    from .guest import Guest

log = logging.getLogger("harness.fabric.winrm")

MAX_BODY = 4 * 1024 * 1024
MAX_SHELLS = 64
MAX_COMMANDS_PER_SHELL = 25
SHELL_IDLE_EVICT = 300.0  # at MAX_SHELLS, shells unused this long are dropped
MAX_OUTPUT = 64 * 1024 * 1024  # per command, buffered and not yet received
RECEIVE_BUDGET = 96 * 1024  # raw bytes per ReceiveResponse (base64 stays under MaxEnvelopeSize 153600)
MAX_DELAY_MS = 600_000
CODEPAGES = {"437": "cp437", "65001": "utf-8", "1252": "cp1252", "850": "cp850", "20127": "ascii"}


# ---------------------------------------------------------------------------------------------------------
# shells and commands
# ---------------------------------------------------------------------------------------------------------


class Command:
    """A running guest command; also the CommandIO it writes to."""

    def __init__(self, command_id: str, encoding: str) -> None:
        self.id = command_id
        self.encoding = encoding
        self.cond = threading.Condition()
        self.out = bytearray()
        self.err = bytearray()
        self.done = False
        self.exit_code = 0
        self.cancel = threading.Event()
        self.overflow = False

    # CommandIO
    def stdout(self, data: bytes) -> None:
        self._append(self.out, data)

    def stderr(self, data: bytes) -> None:
        self._append(self.err, data)

    def _append(self, buf: bytearray, data: bytes) -> None:
        with self.cond:
            if len(self.out) + len(self.err) + len(data) > MAX_OUTPUT:
                self.overflow = True
                return
            buf += data
            self.cond.notify_all()

    def sleep(self, seconds: float) -> bool:
        return not self.cancel.wait(seconds)

    def finish(self, exit_code: int) -> None:
        with self.cond:
            self.exit_code = exit_code
            self.done = True
            self.cond.notify_all()

    def stop(self) -> None:
        self.cancel.set()
        with self.cond:
            self.cond.notify_all()


@dataclass
class Shell:
    id: str
    encoding: str
    owner: str
    commands: dict[str, Command] = field(default_factory=dict)
    last_used: float = field(default_factory=time.monotonic)


class AuthThrottle:
    """Failed-login bookkeeping per key (client address): delay, then lock out with a growing window."""

    MAX_KEYS = 4096

    def __init__(
        self,
        threshold: int = 10,
        lockout_seconds: float = 10.0,
        max_lockout_seconds: float = 300.0,
        failure_delay: float = 0.25,
        clock: Any = time.monotonic,
    ) -> None:
        if threshold < 1 or lockout_seconds < 0 or max_lockout_seconds < lockout_seconds or failure_delay < 0:
            raise ValueError("bad WinRM lockout settings")
        self.threshold = threshold
        self.lockout_seconds = lockout_seconds
        self.max_lockout_seconds = max_lockout_seconds
        self.failure_delay = failure_delay
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [failures since the last lockout, locked until, lockouts so far, last seen]
        self._entries: dict[str, list[float]] = {}

    def locked(self, key: str) -> float:
        """Seconds the key stays locked out (0: it may try)."""
        with self._lock:
            entry = self._entries.get(key)
            return max(0.0, entry[1] - self._clock()) if entry else 0.0

    def failed(self, key: str) -> None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                if len(self._entries) >= self.MAX_KEYS:  # forget the longest-quiet key (never a locked one first)
                    oldest = min(self._entries, key=lambda k: (self._entries[k][1] > now, self._entries[k][3]))
                    del self._entries[oldest]
                entry = self._entries[key] = [0, 0.0, 0, now]
            entry[3] = now
            if entry[1] > now:  # attempts while locked out are not checked and do not extend the lockout
                return
            entry[0] += 1
            if entry[0] >= self.threshold:
                entry[2] += 1
                window = min(self.lockout_seconds * 2 ** min(entry[2] - 1, 30), self.max_lockout_seconds)
                entry[0], entry[1] = 0, now + window
                log.warning("WinRM: %d failed logins from %s: locked out for %.1f s", self.threshold, key, window)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def pause(self) -> None:
        """The delay before answering a failed or refused attempt (in the connection's own thread)."""
        if self.failure_delay:
            time.sleep(self.failure_delay)


def _setting(winrm: dict[str, Any], key: str, default: float) -> float:
    value = winrm.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 0:
        raise ValueError(f"winrm.{key} must be a non-negative number")
    return float(value)


class WinRMService:
    """State shared by the HTTPS and HTTP listeners of one instance."""

    def __init__(self, winrm: dict[str, Any], instance: dict[str, Any]) -> None:
        self.username = str(winrm.get("username") or "vmradmin")
        password_file = winrm.get("password_file")
        if not password_file:
            raise ValueError("winrm.password_file is required")
        self._password = Path(password_file).read_text("utf-8").rstrip("\r\n")
        if not self._password:
            raise ValueError("the WinRM password file is empty")
        self.instance = instance
        self.machine = str(instance.get("id") or "localhost")
        # next to the password file (the fabric's 0700 secrets folder), never in the shared temp folder
        self.credentials = CredentialFile(
            self.username,
            self._password,
            (self.machine, self.machine.upper()),
            directory=Path(password_file).resolve().parent,
            tag=self.machine,
        )
        # The guest and pyspnego (with cryptography's x509, for the channel bindings) are loaded on first use,
        # not here: their imports cost an instance process ~0.3 CPU s before its ports listen, at every (re)start.
        self._lazy = threading.Lock()
        self._guest: Guest | None = None
        self._cert_file: str | None = winrm.get("cert") or None
        self._bindings: GssChannelBindings | None = None
        self._bindings_read = False
        self.delay_file = Path(winrm["delay_ms_file"]) if winrm.get("delay_ms_file") else None
        lockout = _setting(winrm, "lockout_seconds", 10.0)
        self.throttle = AuthThrottle(
            threshold=int(_setting(winrm, "lockout_threshold", 10)),
            lockout_seconds=lockout,
            max_lockout_seconds=max(lockout, _setting(winrm, "max_lockout_seconds", 300.0)),
            failure_delay=_setting(winrm, "failure_delay_ms", 250.0) / 1000.0,
        )
        self.shells: dict[str, Shell] = {}
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self._users = 0

    @property
    def guest(self) -> Guest:
        with self._lazy:
            if self._guest is None:
                from .guest import Guest

                self._guest = Guest(self.instance, self.username)
            return self._guest

    @property
    def bindings(self) -> GssChannelBindings | None:
        """The ``tls-server-end-point`` channel bindings of the HTTPS certificate (None without one)."""
        with self._lazy:
            if not self._bindings_read:
                self._bindings = channel_bindings_for(self._cert_file) if self._cert_file else None
                self._bindings_read = True
            return self._bindings

    @bindings.setter
    def bindings(self, value: GssChannelBindings | None) -> None:
        with self._lazy:
            self._bindings, self._bindings_read = value, True

    # -- auth ---------------------------------------------------------------------------------------------
    def check_basic(self, user: str, password: str) -> bool:
        name = user
        if "\\" in name:
            domain, name = name.split("\\", 1)
            if domain.lower() not in (".", "workgroup", "localhost", self.machine.lower()):
                return False
        ok_user = hmac.compare_digest(name.lower().encode(), self.username.lower().encode())
        ok_pass = hmac.compare_digest(password.encode(), self._password.encode())
        return ok_user and ok_pass

    def delay_seconds(self) -> float:
        if self.delay_file is None:
            return 0.0
        try:
            ms = float(self.delay_file.read_text("utf-8").strip())
        except (OSError, ValueError):
            return 0.0
        if ms != ms or ms <= 0:  # NaN or non-positive
            return 0.0
        return min(ms, MAX_DELAY_MS) / 1000.0

    # -- lifecycle ----------------------------------------------------------------------------------------
    def acquire(self) -> None:
        with self.lock:
            self._users += 1

    def release(self) -> None:
        with self.lock:
            self._users -= 1
            last = self._users <= 0
            shells = list(self.shells.values()) if last else []
            if last:
                self.shells.clear()
        if last:
            self.closing.set()
            for shell in shells:
                for cmd in shell.commands.values():
                    cmd.stop()
            self.credentials.remove()

    # -- SOAP dispatch ------------------------------------------------------------------------------------
    def dispatch(self, data: bytes, address: str, client_ip: str) -> tuple[int, bytes]:
        relates = ""
        try:
            req = soap.parse_request(data)
            relates = req.message_id
            action = req.action
            if action == soap.ACTION_CREATE:
                return 200, self._create(req, address, client_ip)
            if action == soap.ACTION_COMMAND:
                return 200, self._command(req)
            if action == soap.ACTION_RECEIVE:
                return 200, self._receive(req)
            if action == soap.ACTION_SEND:
                self._shell(req)
                return 200, soap.send_response(req)
            if action == soap.ACTION_SIGNAL:
                return 200, self._signal(req)
            if action == soap.ACTION_DELETE:
                return 200, self._delete(req)
            raise soap.action_not_supported(action)
        except soap.SoapError as err:
            if err.subcode != "TimedOut":
                log.info("WinRM fault %s: %s", err.subcode, err.reason)
            return err.status, soap.fault_response(err, relates, self.machine)
        except Exception:  # answered (without details), never a dropped connection
            log.exception("WinRM: request failed")
            internal = soap.SoapError(
                500, "s:Receiver", "InternalError", "The WS-Management service cannot process the request."
            )
            return internal.status, soap.fault_response(internal, relates, self.machine)

    def _shell(self, req: soap.Request) -> Shell:
        with self.lock:
            shell = self.shells.get(req.shell_id or "")
        if shell is None:
            raise soap.invalid_selectors()
        shell.last_used = time.monotonic()
        return shell

    def _create(self, req: soap.Request, address: str, client_ip: str) -> bytes:
        if req.resource_uri and req.resource_uri.lower() != soap.RESOURCE_CMD.lower():
            raise soap.SoapError(
                500, "s:Sender", "DestinationUnreachable", f"The resource URI is not supported: {req.resource_uri}"
            )
        encoding = CODEPAGES.get(req.options.get("WINRS_CODEPAGE", "437"), "cp437")
        shell = Shell(str(uuid.uuid4()).upper(), encoding, self.username)
        with self.lock:
            if len(self.shells) >= MAX_SHELLS:  # forget shells abandoned by clients that never sent Delete
                idle = time.monotonic() - SHELL_IDLE_EVICT
                for stale in [sh for sh in self.shells.values() if sh.last_used < idle]:
                    for cmd in stale.commands.values():
                        cmd.stop()
                    del self.shells[stale.id]
            if len(self.shells) >= MAX_SHELLS:
                raise soap.SoapError(
                    500,
                    "s:Receiver",
                    "QuotaLimit",
                    "The WS-Management service cannot process the request. The maximum number of concurrent shells "
                    "for this user has been exceeded.",
                )
            self.shells[shell.id] = shell
        return soap.create_response(req, shell.id, address, self.username, client_ip)

    def _command(self, req: soap.Request) -> bytes:
        shell = self._shell(req)
        command, args = req.command_line()
        cmd = Command(str(uuid.uuid4()).upper(), shell.encoding)
        with self.lock:
            running = [c for c in shell.commands.values() if not c.done]
            if len(running) >= MAX_COMMANDS_PER_SHELL:
                raise soap.SoapError(
                    500, "s:Receiver", "QuotaLimit", "The maximum number of processes per shell has been exceeded."
                )
            shell.commands[cmd.id] = cmd

        def run() -> None:
            rc = 1
            try:
                rc = self.guest.run(command, args, cmd)
            finally:
                cmd.finish(rc)

        threading.Thread(target=run, name=f"winrm-cmd-{cmd.id[:8]}", daemon=True).start()
        return soap.command_response(req, cmd.id)

    def _find_command(self, shell: Shell, command_id: str | None) -> Command:
        with self.lock:
            cmd = shell.commands.get(command_id or "")
        if cmd is None:
            raise soap.SoapError(
                500,
                "s:Sender",
                "InvalidParameter",
                f"The request for the Windows Remote Shell with ShellId {shell.id} failed because the command with "
                f"CommandId {command_id} was not found.",
            )
        return cmd

    def _receive(self, req: soap.Request) -> bytes:
        shell = self._shell(req)
        cmd = self._find_command(shell, req.receive_command_id())
        wanted = set(req.desired_streams())
        deadline = time.monotonic() + req.operation_timeout
        with cmd.cond:
            while not (cmd.out and "stdout" in wanted) and not (cmd.err and "stderr" in wanted) and not cmd.done:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closing.is_set():
                    raise soap.timed_out()
                cmd.cond.wait(min(remaining, 1.0))
            chunks: list[tuple[str, bytes]] = []
            budget = RECEIVE_BUDGET
            for name, buf in (("stdout", cmd.out), ("stderr", cmd.err)):
                if name in wanted and buf and budget > 0:
                    piece = bytes(buf[:budget])
                    del buf[: len(piece)]
                    budget -= len(piece)
                    chunks.append((name, piece))
            finished = cmd.done and not cmd.out and not cmd.err
            exit_code = cmd.exit_code if finished else None
        ended = sorted(wanted & {"stdout", "stderr"}) if finished else []
        return soap.receive_response(req, cmd.id, chunks, ended, exit_code)

    def _signal(self, req: soap.Request) -> bytes:
        shell = self._shell(req)
        command_id, code = req.signal()
        cmd = self._find_command(shell, command_id)
        cmd.stop()
        if code.endswith("/terminate"):
            with self.lock:
                shell.commands.pop(cmd.id, None)
        return soap.signal_response(req)

    def _delete(self, req: soap.Request) -> bytes:
        with self.lock:
            shell = self.shells.pop(req.shell_id or "", None)
        if shell is None:
            raise soap.invalid_selectors()
        for cmd in shell.commands.values():
            cmd.stop()
        return soap.delete_response(req)


# ---------------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    timeout = 120  # idle keep-alive connections
    server: _Listener

    def setup(self) -> None:
        super().setup()
        self.ntlm: NtlmAcceptor | None = None

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing -----------------------------------------------------------------------------------------
    def _reply(
        self, status: int, body: bytes = b"", content_type: str = "", headers: list[tuple[str, str]] | None = None
    ) -> None:
        delay = self.server.service.delay_seconds()
        if delay:
            time.sleep(delay)
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in headers or []:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _challenge(self, extra: str | None = None) -> None:
        if extra:
            headers = [("WWW-Authenticate", extra)]
        else:
            headers = [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "NTLM")]
            if self.server.tls:
                headers.append(("WWW-Authenticate", 'Basic realm="WSMAN"'))
        self._reply(401, headers=headers)

    def _bad(self, status: int, close: bool = False) -> None:
        if close:
            self.close_connection = True
        self._reply(status)

    def do_GET(self) -> None:
        self._other()

    def do_PUT(self) -> None:
        self._other()

    def do_DELETE(self) -> None:
        self._other()

    def _other(self) -> None:
        body = self._read_body()
        if body is None:
            return
        status = 404 if urlsplit(self.path).path.rstrip("/").lower() != "/wsman" else 405
        self._bad(status)

    def _read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._bad(411, close=True)
            return None
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            self._bad(400, close=True)
            return None
        if length < 0:
            self._bad(400, close=True)
            return None
        if length > MAX_BODY:
            self._bad(413, close=True)
            return None
        return self.rfile.read(length) if length else b""

    # -- the one real verb --------------------------------------------------------------------------------
    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:
            return
        if urlsplit(self.path).path.rstrip("/").lower() != "/wsman":
            self._bad(404)
            return
        service = self.server.service
        tls = self.server.tls
        auth = self.headers.get("Authorization")
        if auth:
            scheme, _, value = auth.strip().partition(" ")
            kind = scheme.lower()
            if kind == "basic":
                self.ntlm = None
                if not tls:
                    log.info("WinRM: Basic authentication refused over HTTP")
                    self._challenge()
                    return
                try:
                    user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
                except (binascii.Error, ValueError, UnicodeDecodeError):
                    self._challenge()
                    return
                if self._locked_out():
                    self._challenge()
                    return
                if not service.check_basic(user, password):
                    log.info("WinRM: Basic authentication failed for user %r", user)
                    service.throttle.failed(self.client_address[0])
                    service.throttle.pause()
                    self._challenge()
                    return
                service.throttle.succeeded(self.client_address[0])
            elif kind in ("ntlm", "negotiate"):
                if not self._ntlm_step(scheme, value.strip()):
                    return
            else:
                self._challenge()
                return
        elif self.ntlm is None or not self.ntlm.complete:
            self._challenge()
            return

        content_type = (self.headers.get("Content-Type") or "").lower()
        encrypted = content_type.startswith("multipart/encrypted")
        if encrypted:
            if self.ntlm is None or not self.ntlm.complete:
                self._challenge()
                return
            from spnego.exceptions import SpnegoError  # loaded with the NTLM context self.ntlm holds

            try:
                body = self.ntlm.decrypt(body)
            except (ValueError, SpnegoError, struct_error) as exc:
                log.info("WinRM: undecryptable request (%s)", type(exc).__name__)
                self._bad(400, close=True)
                return
        if not body:
            self._reply(200)  # pywinrm's empty "set up the security context" POST
            return
        if not tls and not encrypted:
            log.info("WinRM: unencrypted message over HTTP refused (AllowUnencrypted=false)")
            self._challenge()
            return
        host = self.headers.get("Host") or f"{self.server.server_address[0]!s}:{self.server.server_address[1]}"
        address = f"{'https' if tls else 'http'}://{host}/wsman"
        status, response = service.dispatch(body, address, self.client_address[0])
        if encrypted and self.ntlm is not None:
            self._reply(status, self.ntlm.encrypt(response), ENCRYPTED_CONTENT_TYPE)
        else:
            self._reply(status, response, "application/soap+xml;charset=UTF-8")

    def _locked_out(self) -> bool:
        """While the client is locked out its credentials are not checked: a delayed 401 (NTLM's negotiate
        step is still answered, so the client sees bad credentials at the authenticate step, as on Windows)."""
        service = self.server.service
        if not service.throttle.locked(self.client_address[0]):
            return False
        log.info("WinRM: authentication from %s refused (locked out)", self.client_address[0])
        service.throttle.pause()
        return True

    def _ntlm_step(self, scheme: str, value: str) -> bool:
        """Handles an NTLM/Negotiate Authorization header; True when the request may proceed."""
        from spnego.exceptions import SpnegoError  # pyspnego loads with the first NTLM login

        service = self.server.service
        try:
            token = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            self._challenge()
            return False
        mtype = token_message_type(token)
        try:
            if mtype == 1:
                acceptor = NtlmAcceptor(service.credentials, service.bindings if self.server.tls else None)
                challenge = acceptor.challenge(token)
                self.ntlm = acceptor
                self._challenge(f"{scheme} {base64.b64encode(challenge).decode('ascii')}")
                return False
            if mtype == 3 and self.ntlm is not None and not self.ntlm.complete:
                if self._locked_out():
                    self.ntlm = None
                    self._challenge()
                    return False
                try:
                    principal = self.ntlm.authenticate(token)
                except Exception:
                    service.throttle.failed(self.client_address[0])
                    service.throttle.pause()
                    raise
                service.throttle.succeeded(self.client_address[0])
                log.debug("WinRM: NTLM authenticated %s", principal)
                return True
        except SpnegoError as exc:
            log.info("WinRM: NTLM authentication failed (%s)", type(exc).__name__)
        except Exception as exc:  # malformed tokens must still end in a 401, not a dropped connection
            log.info("WinRM: NTLM token rejected (%s)", type(exc).__name__)
        self.ntlm = None
        self._challenge()
        return False


class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], service: WinRMService, ssl_ctx: ssl.SSLContext | None) -> None:
        self.service = service
        self.ssl_ctx = ssl_ctx
        self.tls = ssl_ctx is not None
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(sock)
            else:
                self._conns.discard(sock)

    def finish_request(self, request: Any, client_address: Any) -> None:
        conn = request
        self._track(conn, True)
        try:
            if self.ssl_ctx is not None:
                request.settimeout(15)
                try:
                    conn = self.ssl_ctx.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    log.debug("WinRM TLS handshake failed from %s: %s", client_address[0], type(exc).__name__)
                    return
                self._track(conn, True)
            _Handler(conn, client_address, self)
        finally:
            self._track(conn, False)
            self._track(request, False)
            if conn is not request:
                with contextlib.suppress(OSError):
                    conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("WinRM connection from %s ended with an error", client_address[0], exc_info=True)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Server:
    """One running listener (``scheme`` ``https`` or ``http``) in a daemon thread."""

    def __init__(self, listener: _Listener, scheme: str) -> None:
        self._listener = listener
        self.scheme = scheme
        self.host, self.port = str(listener.server_address[0]), int(listener.server_address[1])
        self.url = f"{scheme}://{self.host}:{self.port}/wsman"
        self._stopped = False
        listener.service.acquire()
        self._thread = threading.Thread(
            target=listener.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"winrm-{scheme}-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def shutdown(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._listener.shutdown()
        self._listener.server_close()
        self._listener.close_connections()
        self._thread.join(timeout=5)
        self._listener.service.release()

    def __repr__(self) -> str:
        return f"<winrm Server {self.url}>"


def start_winrm(winrm: dict[str, Any], instance: dict[str, Any]) -> list[Server]:
    """Starts the HTTPS and HTTP WinRM listeners of one instance (see the module docstring).

    ``winrm`` is instance.json's ``winrm`` section (https_port, http_port, cert, key, username,
    password_file, delay_ms_file); ``instance`` the whole instance.json dict (the guest reads drives,
    endpoints, services, status_file from it).  A port of 0/None skips that listener.  Returns the started
    servers (HTTPS first); each has ``.shutdown()``.  Binding errors propagate (ports can race; the caller
    retries), after stopping anything already started.
    """
    service = WinRMService(winrm, instance)
    host = str(instance.get("host") or "127.0.0.1")
    servers: list[Server] = []
    try:
        if winrm.get("https_port"):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(winrm["cert"], winrm["key"])
            servers.append(Server(_Listener((host, int(winrm["https_port"])), service, ctx), "https"))
        if winrm.get("http_port"):
            servers.append(Server(_Listener((host, int(winrm["http_port"])), service, None), "http"))
    except BaseException:
        for server in servers:
            server.shutdown()
        if not servers:
            service.credentials.remove()
        raise
    log.info(
        "WinRM for %s listening: %s", service.machine, ", ".join(s.url for s in servers) or "(no listener configured)"
    )
    return servers
