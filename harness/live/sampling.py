"""Sampling through a load-balanced VIP endpoint: one new TCP connection per request, who answered each.

Shared by the probes ``rotation`` (does every Ready instance answer?) and ``drain`` (does one taken out of
Ready stop getting new connections?). Who answered is read from a response header, a body regex or a TCP
banner (the target's ``identify``). Pure of deployment calls except :func:`lb_down` / :func:`note_lb`, which
read and write the run's record of the load balancer being down.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.ascii import parse_ascii_int
from harness.facts.live.deployment import READY, DeploymentFacts
from harness.facts.live.rotation import PinProbe
from harness.live.health import LB, Down, Health
from harness.net import is_ip_address

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.live.target import Target

LB_PROTOCOLS = ("http", "https", "tcp")
DEFAULT_HEADER = "X-Served-By"
DEFAULT_BODY_REGEX = r"served-by (\S+)"
DEFAULT_BANNER_REGEX = r"VMROLE (\S+)"
MAX_RESPONSE = 256 * 1024  # bytes read from one answer at most
PIN_REQUESTS = 5
MAX_CONSECUTIVE_ERRORS = 12
EVIDENCE_LINES = 600


# ---- settings ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeSettings:
    header: str | None = DEFAULT_HEADER
    body_regex: re.Pattern[str] | None = None
    banner_regex: re.Pattern[str] | None = None
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    confidence: float = 0.999

    def describe(self) -> dict[str, str | None]:
        return {
            "header": self.header,
            "body_regex": self.body_regex.pattern if self.body_regex else None,
            "banner_regex": self.banner_regex.pattern if self.banner_regex else None,
        }


def settings_of(target: Target) -> ProbeSettings:
    """The probe settings from the target (``identify``, ``rotation.confidence``, ``timeouts``)."""
    identify = target.identify
    confidence = float(target.rotation.confidence)
    if not 0.0 < confidence < 1.0:
        confidence = 0.999
    return ProbeSettings(
        header=identify.header or None,
        body_regex=re.compile(identify.body_regex) if identify.body_regex else None,
        banner_regex=re.compile(identify.banner_regex) if identify.banner_regex else None,
        connect_timeout=float(target.timeouts.connect),
        read_timeout=float(target.timeouts.read),
        confidence=confidence,
    )


def default_settings() -> ProbeSettings:
    """The settings of a target that says nothing (``identify`` by X-Served-By, served-by, VMROLE banners)."""
    return ProbeSettings(
        header=DEFAULT_HEADER,
        body_regex=re.compile(DEFAULT_BODY_REGEX),
        banner_regex=re.compile(DEFAULT_BANNER_REGEX),
    )


# ---- the load-balanced endpoints of the deployment ---------------------------------------------------


@dataclass(frozen=True)
class InputEndpoint:
    role: str
    name: str
    protocol: str
    port: int
    vip: str | None
    detect: bool = False  # the protocol is only the load balancer's (tcp): find out what the app speaks


def input_endpoints_of(deployment: DeploymentFacts) -> list[InputEndpoint]:
    """The load-balanced input endpoints; ``vip`` falls back to the deployment's VIP or DNS name."""
    default = deployment.vip or deployment.host_name or None
    out = []
    for ep in deployment.input_endpoints:
        protocol = (ep.protocol or "tcp").lower()
        out.append(
            InputEndpoint(
                role=ep.role,
                name=ep.name,
                protocol=protocol,
                port=ep.port,
                vip=ep.vip or default,
                detect=protocol == "tcp" and ep.protocol_source == "lb",
            )
        )
    return out


def ready_instances(deployment: DeploymentFacts, role: str) -> tuple[str, ...]:
    return tuple(sorted(i.name for i in deployment.instances if i.role == role and i.status == READY))


# ---- one request ------------------------------------------------------------------------------------


@dataclass
class Sample:
    index: int  # 1-based over every request of the sampler
    t: float  # seconds since the sampler started
    phase: str
    source_port: int | None = None
    token: str | None = None  # what identified the instance
    instance: str | None = None  # the resolved instance (None: unknown token or unidentified)
    method: str | None = None  # header | body | banner
    status: int | None = None  # HTTP status
    error_kind: str | None = None
    error: str | None = None
    ms: float = 0.0

    @property
    def answered(self) -> bool:
        return self.error_kind is None

    def line(self) -> str:
        what = (
            f"{self.error_kind}: {self.error}"
            if self.error_kind
            else f"{self.instance or self.token or '(unidentified)'} via {self.method or '-'}"
            + (f" [{self.status}]" if self.status is not None else "")
        )
        return (
            f"{self.index:5d} {self.t:8.3f}s {self.phase:<9} src:{self.source_port or '-':<6} {self.ms:7.1f} ms  {what}"
        )


class ProbeError(Exception):
    def __init__(self, kind: str, message: str, source_port: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.source_port = source_port


def _classify(exc: BaseException) -> ProbeError:
    if isinstance(exc, ProbeError):
        return exc
    text = f"{type(exc).__name__}: {exc}".strip()
    if isinstance(exc, ConnectionRefusedError):
        return ProbeError("refused", text)
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return ProbeError("reset", f"closed during the TLS handshake ({text})")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return ProbeError("timeout", text)
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return ProbeError("reset", text)
    if isinstance(exc, ssl.SSLError):
        return ProbeError("tls", text)
    return ProbeError("other", text)


def _client_tls() -> ssl.SSLContext:
    # Verification off on purpose: this probe only asks *who* answered; the endpoint rules check thumbprints.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


_TLS: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    global _TLS
    if _TLS is None:
        _TLS = _client_tls()
    return _TLS


def _tls_wrap(sock: socket.socket, host: str) -> ssl.SSLSocket:
    """TLS over ``sock``, sending ``host`` as SNI unless it is an address literal."""
    return _tls().wrap_socket(sock, server_hostname=None if is_ip_address(host) else host)


def _connect(host: str, port: int, settings: ProbeSettings, source_port: int | None) -> socket.socket:
    if source_port is None:
        sock = socket.create_connection((host, port), timeout=settings.connect_timeout)
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # abortive close (RST): no TIME_WAIT on this 4-tuple, so the next connection may reuse the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.settimeout(settings.connect_timeout)
            sock.bind(("", source_port))
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
    sock.settimeout(settings.read_timeout)
    return sock


def _request(host: str, port: int, keep_alive: bool) -> bytes:
    default = 443 if port == 443 else 80
    authority = host if port == default else f"{host}:{port}"
    if ":" in host and not host.startswith("["):
        authority = f"[{host}]:{port}"
    return (
        f"GET / HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: vmrole-harness/rotation\r\nAccept: */*\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode("ascii")


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: str


def _read_http(reader: Any, *, to_eof: bool) -> HttpAnswer:
    line = reader.readline(8192)
    if not line:
        raise ProbeError("reset", "the connection closed before any answer")
    parts = line.decode("latin-1").split(" ", 2)
    status = parse_ascii_int(parts[1], strip=False) if len(parts) >= 2 and parts[0].startswith("HTTP/") else None
    if status is None:
        raise ProbeError("other", f"not an HTTP answer: {line[:80]!r}")
    headers: dict[str, str] = {}
    while True:
        raw = reader.readline(8192)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        size_total = 0
        while size_total < MAX_RESPONSE:
            size_line = reader.readline(1024)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                reader.readline(1024)
                break
            chunks.append(reader.read(size))
            reader.readline(8)
            size_total += size
        body = b"".join(chunks)
    elif "content-length" in headers:
        length = parse_ascii_int(headers["content-length"])
        if length is not None:
            body = reader.read(min(length, MAX_RESPONSE))
    elif to_eof:
        body = reader.read(MAX_RESPONSE)
    return HttpAnswer(status, headers, body.decode("utf-8", errors="replace"))


def _identify_http(answer: HttpAnswer, settings: ProbeSettings) -> tuple[str | None, str | None]:
    if settings.header:
        value = answer.headers.get(settings.header.lower())
        if value:
            return value.strip(), "header"
    if settings.body_regex is not None:
        match = settings.body_regex.search(answer.body)
        if match:
            return (match.group(1) if match.groups() else match.group(0)).strip(), "body"
    return None, None


def _identify_banner(banner: str, settings: ProbeSettings) -> tuple[str | None, str | None]:
    if settings.banner_regex is not None:
        match = settings.banner_regex.search(banner)
        if match:
            return (match.group(1) if match.groups() else match.group(0)).strip(), "banner"
    return None, None


def probe_once(
    host: str, port: int, protocol: str, settings: ProbeSettings, *, source_port: int | None = None
) -> tuple[int | None, str | None, str | None, int | None]:
    """One new TCP connection to ``host:port``: ``(source_port, token, method, http_status)``.

    Raises :class:`ProbeError` (``kind`` in refused/reset/timeout/tls/other) when there is no answer.
    """
    try:
        sock = _connect(host, port, settings, source_port)
    except OSError as exc:
        raise _classify(exc) from None
    local = None
    try:
        local = sock.getsockname()[1]
        if protocol == "tcp":
            reader = sock.makefile("rb")
            banner = reader.readline(4096)
            if not banner:
                raise ProbeError("reset", "the connection closed before any banner")
            token, method = _identify_banner(banner.decode("utf-8", errors="replace"), settings)
            return local, token, method, None
        conn: socket.socket = _tls_wrap(sock, host) if protocol == "https" else sock
        conn.sendall(_request(host, port, keep_alive=False))
        answer = _read_http(conn.makefile("rb"), to_eof=True)
        token, method = _identify_http(answer, settings)
        return local, token, method, answer.status
    except (OSError, ValueError, ProbeError) as exc:
        error = _classify(exc)
        error.source_port = local
        raise error from None
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def keep_alive_probe(
    host: str,
    port: int,
    protocol: str,
    settings: ProbeSettings,
    resolve: Callable[[str], str | None],
    requests: int = PIN_REQUESTS,
) -> PinProbe:
    """``requests`` requests over one HTTP/1.1 keep-alive connection: who answered each."""
    seen: list[str] = []
    answered = 0
    error = None
    try:
        sock = _connect(host, port, settings, None)
    except OSError as exc:
        return PinProbe("keep-alive", requests, 0, (), f"{_classify(exc).kind}: {exc}")
    try:
        conn: socket.socket = _tls_wrap(sock, host) if protocol == "https" else sock
        reader = conn.makefile("rb")
        for i in range(requests):
            conn.sendall(_request(host, port, keep_alive=i < requests - 1))
            answer = _read_http(reader, to_eof=False)
            answered += 1
            token, _ = _identify_http(answer, settings)
            name = (resolve(token) or token) if token else "(unidentified)"
            if name not in seen:
                seen.append(name)
            if answer.headers.get("connection", "").lower() == "close" and i < requests - 1:
                error = f"the server closed the keep-alive connection after {answered} request(s)"
                break
    except (OSError, ValueError, ProbeError) as exc:
        error = f"{_classify(exc).kind}: {exc}"
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    return PinProbe("keep-alive", requests, answered, tuple(seen), error)


def fixed_port_probe(
    host: str,
    port: int,
    protocol: str,
    settings: ProbeSettings,
    resolve: Callable[[str], str | None],
    requests: int = PIN_REQUESTS,
) -> PinProbe:
    """``requests`` new connections, all from one source port (SO_REUSEADDR): who answered each."""
    seen: list[str] = []
    answered = 0
    error = None
    source: int | None = None
    for _ in range(requests):
        try:
            local, token, _, _ = probe_once(host, port, protocol, settings, source_port=source if source else 0)
        except ProbeError as exc:
            error = f"{exc.kind}: {exc}"
            if source is not None and exc.kind == "other":
                break  # e.g. EADDRINUSE / EADDRNOTAVAIL: the OS would not reuse the port
            continue
        source = source or local
        answered += 1
        name = (resolve(token) or token) if token else "(unidentified)"
        if name not in seen:
            seen.append(name)
    return PinProbe("fixed-source-port", requests, answered, tuple(seen), error if answered < requests else None)


def detect_protocol(host: str, port: int, settings: ProbeSettings, wait: float = 1.0) -> str:
    """What an endpoint the load balancer only calls ``tcp`` speaks: ``tcp`` (it sends a banner first),
    ``http`` or ``https``. Falls back to ``tcp`` when nothing answers."""
    quick = ProbeSettings(
        header=settings.header,
        body_regex=settings.body_regex,
        banner_regex=settings.banner_regex,
        connect_timeout=settings.connect_timeout,
        read_timeout=min(wait, settings.read_timeout),
    )
    try:
        sock = _connect(host, port, quick, None)
    except OSError:
        return "tcp"
    try:
        try:
            if sock.recv(1, socket.MSG_PEEK):
                return "tcp"
        except TimeoutError:
            pass
        sock.settimeout(settings.read_timeout)
        sock.sendall(_request(host, port, keep_alive=False))
        if sock.recv(5, socket.MSG_PEEK).startswith(b"HTTP/"):
            return "http"
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    try:
        sock = _connect(host, port, settings, None)
    except OSError:
        return "tcp"
    try:
        with _tls_wrap(sock, host):
            return "https"
    except OSError:
        return "tcp"
    finally:
        with contextlib.suppress(OSError):
            sock.close()


# ---- many requests ----------------------------------------------------------------------------------


class Sampler:
    """Requests through one VIP endpoint, one new connection each, with running tallies."""

    def __init__(
        self,
        host: str,
        port: int,
        protocol: str,
        settings: ProbeSettings,
        *,
        instances: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port, self.protocol, self.settings = host, port, protocol, settings
        self.known = {name.lower(): name for name in instances}
        self.clock = clock
        self.started = clock()
        self.samples: list[Sample] = []
        self.phase = "sample"
        self.counts: Counter[str] = Counter()
        self.unknown: Counter[str] = Counter()
        self.unidentified = 0
        self.errors: Counter[str] = Counter()
        self.error_examples: list[str] = []
        self.methods: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.first_seen: dict[str, int] = {}  # instance -> 1-based answer index
        self.answered = 0
        self.ports: set[int] = set()
        self.consecutive_errors = 0

    def resolve(self, token: str | None) -> str | None:
        if not token:
            return None
        return self.known.get(token.lower())

    def take(self) -> Sample:
        start = self.clock()
        sample = Sample(index=len(self.samples) + 1, t=start - self.started, phase=self.phase)
        try:
            local, token, method, status = probe_once(self.host, self.port, self.protocol, self.settings)
        except ProbeError as exc:
            sample.error_kind, sample.error, sample.source_port = exc.kind, str(exc), exc.source_port
            self.errors[exc.kind] += 1
            self.consecutive_errors += 1
            if len(self.error_examples) < 5 and str(exc) not in self.error_examples:
                self.error_examples.append(str(exc))
        else:
            self.consecutive_errors = 0
            self.answered += 1
            sample.source_port, sample.token, sample.method, sample.status = local, token, method, status
            if local:
                self.ports.add(local)
            if status is not None:
                self.statuses[str(status)] += 1
            if method:
                self.methods[method] += 1
            sample.instance = self.resolve(token)
            if sample.instance is not None:
                self.counts[sample.instance] += 1
                self.first_seen.setdefault(sample.instance, self.answered)
            elif token:
                self.unknown[token] += 1
            else:
                self.unidentified += 1
        sample.ms = (self.clock() - start) * 1000.0
        self.samples.append(sample)
        return sample

    def run(
        self,
        *,
        until: Callable[[], bool] | None = None,
        answers: int | None = None,
        requests: int | None = None,
        deadline: float | None = None,
        pause: float = 0.0,
    ) -> int:
        """Take samples until ``until()`` holds, ``answers`` more answers, ``requests`` more requests, the
        ``deadline`` (a ``clock()`` value), or too many errors in a row. Returns the requests made."""
        start_answers, made = self.answered, 0
        while True:
            if until is not None and until():
                break
            if answers is not None and self.answered - start_answers >= answers:
                break
            if requests is not None and made >= requests:
                break
            if deadline is not None and self.clock() >= deadline:
                break
            if self.consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
                break
            self.take()
            made += 1
            if pause and (deadline is None or self.clock() + pause < deadline):
                _pause(pause)
        return made

    def counts_since(self, index: int) -> dict[str, int]:
        """Answers per instance (or token) among samples after ``index`` (a len(samples) mark)."""
        out: Counter[str] = Counter()
        for s in self.samples[index:]:
            if s.answered:
                out[s.instance or s.token or "(unidentified)"] += 1
        return dict(out)

    def errors_since(self, index: int) -> int:
        return sum(1 for s in self.samples[index:] if not s.answered)

    def evidence(self, title: str) -> str:
        lines = [title, f"{'#':>5} {'t':>9} {'phase':<9} {'source':<10} {'ms':>7}     result"]
        samples = self.samples
        if len(samples) > EVIDENCE_LINES:
            head = samples[: EVIDENCE_LINES // 2]
            tail = samples[-EVIDENCE_LINES // 2 :]
            lines += [s.line() for s in head]
            lines.append(f"  … {len(samples) - len(head) - len(tail)} samples left out …")
            lines += [s.line() for s in tail]
        else:
            lines += [s.line() for s in samples]
        return "\n".join(lines) + "\n"


def _pause(seconds: float) -> None:
    # Pacing between requests (a rate limit, not a wait for a condition).
    time.sleep(seconds)


def lb_down(health: Health, host: str, port: int) -> Down | None:
    """The run's record of this VIP port (or the whole VIP) being down, if any."""
    return health.down(LB, f"{host}:{port}")


def note_lb(health: Health, sampler: Sampler) -> Down | None:
    """After sampling: an answer marks the VIP port up; only refusals (or only timeouts) mark it down."""
    if not sampler.samples:
        return None
    address = f"{sampler.host}:{sampler.port}"
    if sampler.answered:
        health.mark_up(LB, address)
        return None
    total = sum(sampler.errors.values())
    if total and sampler.errors.get("refused", 0) == total:
        return health.mark_down(LB, address, "refused connections")
    if total and sampler.errors.get("timeout", 0) == total:
        wait = sampler.settings.connect_timeout
        return health.mark_down(LB, address, f"did not answer within {wait:g} s", certain=False)
    return None


__all__ = [
    "LB_PROTOCOLS",
    "InputEndpoint",
    "ProbeError",
    "ProbeSettings",
    "Sample",
    "Sampler",
    "default_settings",
    "detect_protocol",
    "fixed_port_probe",
    "input_endpoints_of",
    "keep_alive_probe",
    "lb_down",
    "note_lb",
    "probe_once",
    "ready_instances",
    "settings_of",
]
