"""Stage ``endpoints``: probe every endpoint of the deployment from outside, and internal ones from inside.

- every **input endpoint** on the VIP: TCP connect (connect timeout); ``http``: one GET (status, the instance
  that served it); ``https``: the TLS handshake — served certificate's SHA-1 thumbprint against the cscfg
  thumbprint of the endpoint's certificate, days to notAfter, names against the deployment's host name —
  then the same GET over it; ``tcp``: the banner, if the service sends one; ``udp``: one datagram;
- every **instance endpoint** (InstanceInputEndpoints: each instance's own public port on the VIP), the same
  way, and whether the answer came from that instance (``target.identify``);
- the **direct** instance addresses (IpAddress:LocalPort) only when the target says they are reachable
  (a ``direct_instance_addresses: true`` target attribute; off by default — from outside Azure they are not);
- every **internal endpoint** with a fixed port, from inside *another* instance over WinRM (``ctx.winrm``), with
  a .NET ``TcpClient`` connect; skipped with a note when WinRM is unavailable, marked ``unsupported`` when the
  guest cannot run the probe.

Connect and read timeouts are kept apart (``target.timeouts``); refused and reset connections are retried a
bounded number of times (they can be a backend flapping in the load balancer), timeouts are not (they would
only multiply the wait). Each check keeps its timings and, when it fails, a masked excerpt as evidence.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import http.client
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from harness.facts.live.deployment import DeploymentFacts, InstanceFacts
from harness.facts.live.endpoints import (
    BAD_RESPONSE,
    CLOSED,
    DIRECT,
    FAILED,
    HTTP_ERROR,
    INPUT,
    INSTANCE,
    INTERNAL,
    NO_REPLY,
    OK,
    REFUSED,
    RESET,
    SKIPPED,
    TIMEOUT,
    TLS_ERROR,
    UNREACHABLE,
    UNSUPPORTED,
    EndpointCheck,
    EndpointFacts,
    TlsFacts,
    normalize_thumbprint,
)
from harness.facts.live.platform import READY
from harness.facts.live.stats import samples_for_all
from harness.facts.servicemodel import INSTANCE_INPUT as CSDEF_INSTANCE_INPUT
from harness.facts.servicemodel import INTERNAL as CSDEF_INTERNAL
from harness.facts.servicemodel import Endpoint, ServiceConfiguration, ServiceDefinition
from harness.live.context import LiveContext
from harness.live.health import LB, Health
from harness.live.winrm_pool import Result
from harness.net import is_ip_address

RETRY_ATTEMPTS = 3  # for refused/reset connections only
RETRY_DELAY = 0.25  # seconds, doubled per retry
BANNER_WAIT = 1.0  # seconds a tcp endpoint gets to send a banner (capped by the read timeout)
MAX_BODY = 64 * 1024
MAX_WORKERS = 8
HTTP_PATH = "/"
WINRM_PROBE_TIMEOUT = 60.0
MARK = "VMR-CONNECT"


class _Retryable(Exception):
    """A refused or reset connection: worth another attempt."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class _Failed(Exception):
    def __init__(self, kind: str, message: str, evidence: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.evidence = evidence


@dataclass(frozen=True)
class Probe:
    """What to probe (one EndpointCheck will come out)."""

    kind: str
    role: str
    endpoint: str
    protocol: str
    host: str
    port: int
    instance: str | None = None
    certificate: str | None = None  # csdef certificate name (https)
    expected_thumbprints: tuple[str, ...] = ()
    expected_source: str = "none"
    note: str | None = None


@dataclass(frozen=True)
class Settings:
    connect: float
    read: float
    host_name: str
    header: str | None
    body_regex: re.Pattern[str] | None
    banner_regex: re.Pattern[str] | None
    masker: Callable[[str], str]
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    #: the run's dependency record: a VIP port found refusing (or silent) is not waited for again
    health: Health | None = None


# ---- low-level probes ----------------------------------------------------------------------------------------
def _classify_oserror(exc: OSError) -> tuple[str, str]:
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED, "connection refused"
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return RESET, "connection reset by the peer"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return TIMEOUT, "timed out"
    return UNREACHABLE, f"{type(exc).__name__}: {exc.strerror or exc}"


def _connect(host: str, port: int, timeout: float) -> tuple[socket.socket, float]:
    started = time.monotonic()
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        kind, text = _classify_oserror(exc)
        if kind in (REFUSED, RESET):
            raise _Retryable(kind, f"TCP connect to {host}:{port}: {text}") from None
        if kind == TIMEOUT:
            text = f"no TCP answer within the {timeout:g} s connect timeout"
        raise _Failed(kind, f"TCP connect to {host}:{port}: {text}") from None
    return sock, time.monotonic() - started


def _identify(
    settings: Settings, headers: dict[str, str] | None, text: str, regex: re.Pattern[str] | None
) -> str | None:
    if headers and settings.header:
        for key, value in headers.items():
            if key.lower() == settings.header.lower() and value.strip():
                return value.strip()
    if regex is not None:
        match = regex.search(text)
        if match:
            return match.group(1) if match.groups() else match.group(0)
    return None


def _names_match(host_name: str, names: tuple[str, ...]) -> bool:
    host = host_name.lower().rstrip(".")
    for name in names:
        pattern = name.lower().rstrip(".")
        if pattern == host:
            return True
        if pattern.startswith("*.") and "." in host:
            label, rest = host.split(".", 1)
            if label and rest == pattern[2:]:
                return True
    return False


def certificate_facts(der: bytes, settings: Settings, probe: Probe, seconds: float, version: str | None) -> TlsFacts:
    """Thumbprint, validity and names of a served certificate (DER)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    thumbprint = hashlib.sha1(der).hexdigest().upper()
    names: tuple[str, ...] = ()
    subject = ""
    not_after = None
    days_left = None
    try:
        cert = x509.load_der_x509_certificate(der)
        subject = cert.subject.rfc4514_string()
        expiry = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after.replace(tzinfo=dt.UTC)
        not_after = expiry.isoformat()
        days_left = round((expiry - settings.now()).total_seconds() / 86400, 2)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = tuple(san.get_values_for_type(x509.DNSName)) + tuple(
                str(ip) for ip in san.get_values_for_type(x509.IPAddress)
            )
        except x509.ExtensionNotFound:
            names = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    except ValueError:
        subject = "(certificate not parseable)"
    host = settings.host_name
    matches: bool | None = None
    if host:
        try:
            ip = ipaddress.ip_address(host)
            matches = str(ip) in names
        except ValueError:
            matches = _names_match(host, names)
    return TlsFacts(
        handshake_ok=True,
        thumbprint=thumbprint,
        expected_thumbprints=probe.expected_thumbprints,
        certificate_name=probe.certificate,
        expected_source=probe.expected_source,
        subject=subject,
        not_after=not_after,
        days_left=days_left,
        names=names,
        host_name=host,
        hostname_matches=matches,
        handshake_seconds=round(seconds, 4),
        version=version,
    )


def _tls(sock: socket.socket, settings: Settings, probe: Probe) -> tuple[ssl.SSLSocket, TlsFacts]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we judge the certificate ourselves (thumbprint, expiry, names)
    sock.settimeout(settings.read)
    started = time.monotonic()
    server_name = settings.host_name if settings.host_name and not is_ip_address(settings.host_name) else None
    try:
        tls = context.wrap_socket(sock, server_hostname=server_name)
    except (ssl.SSLError, OSError) as exc:
        kind, text = _classify_oserror(exc) if not isinstance(exc, ssl.SSLError) else (TLS_ERROR, str(exc))
        if kind in (RESET, REFUSED):
            raise _Retryable(kind, f"TLS handshake with {probe.host}:{probe.port}: {text}") from None
        if kind == TIMEOUT:
            text = f"no handshake answer within the {settings.read:g} s read timeout"
        raise _Failed(TLS_ERROR, f"TLS handshake with {probe.host}:{probe.port} failed: {text}") from None
    der = tls.getpeercert(binary_form=True) or b""
    if not der:
        tls.close()
        raise _Failed(TLS_ERROR, f"TLS handshake with {probe.host}:{probe.port}: the server sent no certificate")
    return tls, certificate_facts(der, settings, probe, time.monotonic() - started, tls.version())


def _http_get(sock: socket.socket, probe: Probe, settings: Settings) -> tuple[int, str, str | None, str]:
    """GET over an open (TLS) socket: (status, reason, served_by, evidence)."""
    host_header = settings.host_name or probe.host
    conn = http.client.HTTPConnection(probe.host, probe.port, timeout=settings.read)
    conn.sock = sock
    sock.settimeout(settings.read)
    try:
        conn.request(
            "GET",
            HTTP_PATH,
            headers={"Host": host_header, "Connection": "close", "User-Agent": "vmrole-harness/endpoints"},
        )
        response = conn.getresponse()
        body = response.read(MAX_BODY).decode("utf-8", "replace")
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
        raise _Retryable(
            RESET, f"HTTP GET {HTTP_PATH} on {probe.host}:{probe.port}: connection reset ({exc})"
        ) from None
    except TimeoutError:
        raise _Failed(
            TIMEOUT, f"HTTP GET {HTTP_PATH} on {probe.host}:{probe.port}: no answer within {settings.read:g} s"
        ) from None
    except http.client.RemoteDisconnected:
        raise _Failed(
            CLOSED,
            f"HTTP GET {HTTP_PATH} on {probe.host}:{probe.port}: the connection was closed without an answer "
            "(no healthy backend behind the load balancer?)",
        ) from None
    except (http.client.HTTPException, ValueError) as exc:
        raise _Failed(
            BAD_RESPONSE, f"HTTP GET {HTTP_PATH} on {probe.host}:{probe.port}: not an HTTP answer ({exc})"
        ) from None
    finally:
        conn.close()
    headers = {k: v for k, v in response.getheaders()}
    served_by = _identify(settings, headers, body, settings.body_regex)
    head = "\n".join(f"{k}: {v}" for k, v in headers.items())
    evidence = settings.masker(f"HTTP/1.1 {response.status} {response.reason}\n{head}\n\n{body[:600]}")
    return response.status, response.reason, served_by, evidence


def _tcp_banner(sock: socket.socket, probe: Probe, settings: Settings) -> str | None:
    """The first bytes a tcp endpoint sends (None: silent within the banner wait, which is fine)."""
    sock.settimeout(min(BANNER_WAIT, settings.read))
    try:
        data = sock.recv(512)
    except TimeoutError:
        return None
    except OSError as exc:
        kind, text = _classify_oserror(exc)
        if kind == RESET:
            raise _Retryable(RESET, f"TCP {probe.host}:{probe.port}: {text} after connect") from None
        raise _Failed(kind, f"TCP {probe.host}:{probe.port}: {text} after connect") from None
    if not data:
        raise _Failed(
            CLOSED,
            f"TCP {probe.host}:{probe.port}: connected, then closed without a byte (nothing serves behind it: "
            "the load balancer has no live backend for it)",
        )
    return data.decode("utf-8", "replace").strip()


def _udp(probe: Probe, settings: Settings) -> EndpointCheck:
    started = time.monotonic()
    with socket.socket(socket.AF_INET6 if ":" in probe.host else socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(min(BANNER_WAIT, settings.read))
        try:
            sock.connect((probe.host, probe.port))
            sock.send(b"vmrole-harness\r\n")
            data = sock.recv(512)
        except TimeoutError:
            return _check(
                probe,
                status=NO_REPLY,
                note="no UDP reply (not judged: a UDP service need not answer)",
                total_seconds=time.monotonic() - started,
            )
        except OSError as exc:
            kind, text = _classify_oserror(exc)
            return _check(
                probe,
                status=FAILED,
                error_kind=kind,
                error=f"UDP {probe.host}:{probe.port}: {text}",
                total_seconds=time.monotonic() - started,
            )
    text = data.decode("utf-8", "replace").strip()
    return _check(
        probe,
        status=OK,
        connected=True,
        banner=settings.masker(text[:200]),
        served_by=_identify(settings, None, text, settings.banner_regex),
        total_seconds=time.monotonic() - started,
    )


def _check(probe: Probe, **fields: Any) -> EndpointCheck:
    base = EndpointCheck(
        kind=probe.kind,
        role=probe.role,
        endpoint=probe.endpoint,
        protocol=probe.protocol,
        host=probe.host,
        port=probe.port,
        instance=probe.instance,
        note=probe.note,
    )
    if fields.get("total_seconds") is not None:
        fields["total_seconds"] = round(fields["total_seconds"], 4)
    return replace(base, **fields)


def _lb_address(probe: Probe, settings: Settings) -> str | None:
    """The VIP port a probe goes through (input and instance input endpoints), when the run keeps records."""
    if settings.health is None or probe.kind not in (INPUT, INSTANCE):
        return None
    return f"{probe.host}:{probe.port}"


def probe_endpoint(probe: Probe, settings: Settings, sleep: Callable[[float], None] = time.sleep) -> EndpointCheck:
    """Run one probe, retrying refused/reset connections (only) a bounded number of times.

    Through the VIP, a port (or the whole VIP) already found refusing connections, or silent, in this run is
    not tried again: the check fails at once with the recorded cause."""
    if probe.protocol == "udp":
        return _udp(probe, settings)
    lb = _lb_address(probe, settings)
    if lb is not None and settings.health is not None:
        down = settings.health.down(LB, lb)
        if down is not None:
            return _check(
                probe,
                status=FAILED,
                error_kind=REFUSED if down.certain else TIMEOUT,
                error=settings.masker(f"TCP connect to {probe.host}:{probe.port}: not tried: {down.reason}"),
                attempts=0,
                connected=False,
                total_seconds=0.0,
            )
    check = _probe_endpoint(probe, settings, sleep)
    if lb is not None and settings.health is not None:
        if check.connected:
            settings.health.mark_up(LB, lb)
        elif check.error_kind == REFUSED:
            settings.health.mark_down(LB, lb, "refused connections")
        elif check.error_kind == TIMEOUT:
            settings.health.mark_down(
                LB, lb, f"did not accept a connection within {settings.connect:g} s", certain=False
            )
    return check


def _probe_endpoint(probe: Probe, settings: Settings, sleep: Callable[[float], None]) -> EndpointCheck:
    started = time.monotonic()
    attempts = 0
    delay = RETRY_DELAY
    last: _Retryable | None = None
    while attempts < RETRY_ATTEMPTS:
        attempts += 1
        try:
            result = _probe_once(probe, settings)
            return replace(result, attempts=attempts, total_seconds=round(time.monotonic() - started, 4))
        except _Retryable as exc:
            last = exc
            if attempts < RETRY_ATTEMPTS:
                sleep(delay)
                delay *= 2
        except _Failed as exc:
            return _check(
                probe,
                status=FAILED,
                error_kind=exc.kind,
                error=settings.masker(exc.message),
                evidence=exc.evidence,
                attempts=attempts,
                connected=exc.kind not in (REFUSED, RESET, TIMEOUT, UNREACHABLE) or "after connect" in exc.message,
                total_seconds=time.monotonic() - started,
            )
    assert last is not None
    through = " (the load balancer refused)" if last.kind == REFUSED and probe.kind in (INPUT, INSTANCE) else ""
    return _check(
        probe,
        status=FAILED,
        error_kind=last.kind,
        error=settings.masker(f"{last.message} ({attempts} attempts){through}"),
        attempts=attempts,
        connected=False,
        total_seconds=time.monotonic() - started,
    )


def _probe_once(probe: Probe, settings: Settings) -> EndpointCheck:
    sock, connect_seconds = _connect(probe.host, probe.port, settings.connect)
    tls: TlsFacts | None = None
    try:
        if probe.protocol == "https":
            try:
                sock, tls = _tls(sock, settings, probe)
            except _Failed as exc:
                # TCP worked, TLS did not: keep what we know
                raise _Failed(exc.kind, exc.message) from None
        if probe.protocol in ("http", "https"):
            try:
                status, reason, served_by, evidence = _http_get(sock, probe, settings)
            except _Failed as exc:
                return _check(
                    probe,
                    status=FAILED,
                    connected=True,
                    connect_seconds=round(connect_seconds, 4),
                    error_kind=exc.kind,
                    error=settings.masker(exc.message),
                    tls=tls,
                )
            failed = status >= 500
            return _check(
                probe,
                status=FAILED if failed else OK,
                connected=True,
                connect_seconds=round(connect_seconds, 4),
                http_status=status,
                http_reason=reason,
                served_by=served_by,
                tls=tls,
                error_kind=HTTP_ERROR if failed else None,
                error=f"HTTP GET {HTTP_PATH} answered {status} {reason}" if failed else None,
                evidence=evidence if failed else "",
            )
        banner = _tcp_banner(sock, probe, settings)
        return _check(
            probe,
            status=OK,
            connected=True,
            connect_seconds=round(connect_seconds, 4),
            banner=settings.masker(banner[:200]) if banner else None,
            served_by=_identify(settings, None, banner or "", settings.banner_regex) if banner else None,
        )
    finally:
        with contextlib.suppress(OSError):
            sock.close()


# ---- what to probe ----------------------------------------------------------------------------------------
def _role_thumbprints(configuration: ServiceConfiguration | None, role: str) -> dict[str, str]:
    if configuration is None:
        return {}
    for rc in configuration.roles:
        if rc.name == role:
            return {c.name: normalize_thumbprint(c.thumbprint) for c in rc.certificates if c.thumbprint}
    return {}


def _expected(
    configuration: ServiceConfiguration | None, role: str, certificate: str | None, have_csdef: bool
) -> tuple[tuple[str, ...], str, str | None]:
    """(expected thumbprints, source, note) for an https endpoint."""
    thumbprints = _role_thumbprints(configuration, role)
    if configuration is None:
        return (), "none", "the deployment's ServiceConfiguration is unreadable: no thumbprint to compare with"
    if have_csdef and certificate:
        if certificate in thumbprints:
            return (thumbprints[certificate],), "csdef", None
        return (), "none", f"certificate {certificate!r} has no thumbprint in role {role!r} of the cscfg"
    if thumbprints:
        note = (
            "no csdef given: the served certificate is compared with every certificate of role "
            f"{role!r} in the cscfg ({', '.join(sorted(thumbprints))})"
        )
        return tuple(sorted(set(thumbprints.values()))), "role-certificates", note
    return (), "none", f"role {role!r} declares no certificate in the cscfg: no thumbprint to compare with"


def _csdef_endpoint(definition: ServiceDefinition | None, role: str, name: str, kind: str) -> Endpoint | None:
    if definition is None:
        return None
    for r in definition.roles:
        if r.name == role:
            return next((e for e in r.endpoints if e.kind == kind and e.name == name), None)
    return None


def plan(
    deployment: DeploymentFacts, definition: ServiceDefinition | None, *, direct: bool = False
) -> tuple[list[Probe], list[str]]:
    """The outside probes for a deployment (pure)."""
    probes: list[Probe] = []
    notes: list[str] = []
    configuration = deployment.configuration
    have_csdef = definition is not None
    for ep in deployment.input_endpoints:
        expected: tuple[str, ...] = ()
        source, note = "none", None
        if ep.protocol == "https":
            expected, source, note = _expected(configuration, ep.role, ep.certificate, have_csdef)
        elif ep.protocol_source == "lb":
            note = "no csdef: probed as plain TCP (the application protocol is unknown)"
        if ep.protocol_source == "guessed":
            guess = f"no csdef: probed as {ep.protocol} because its local port is {ep.local_port}"
            note = f"{guess}; {note}" if note else guess
        probes.append(
            Probe(
                INPUT,
                ep.role,
                ep.name,
                ep.protocol,
                ep.vip or deployment.vip,
                ep.port,
                None,
                ep.certificate,
                expected,
                source,
                note,
            )
        )
    inputs = {(ep.role, ep.name) for ep in deployment.input_endpoints}
    for inst in deployment.instances:
        for iep in inst.endpoints:
            if (inst.role, iep.name) in inputs or iep.public_port is None:
                continue
            declared = _csdef_endpoint(definition, inst.role, iep.name, CSDEF_INSTANCE_INPUT)
            protocol = (declared.protocol or iep.protocol).lower() if declared is not None else iep.protocol or "tcp"
            probes.append(
                Probe(INSTANCE, inst.role, iep.name, protocol, iep.vip or deployment.vip, iep.public_port, inst.name)
            )
        if direct:
            probes.extend(_direct(deployment, inst, definition, configuration))
    if not direct:
        notes.append(
            "direct instance addresses (IpAddress:LocalPort) not probed: the target does not say they are "
            "reachable from here"
        )
    return probes, notes


def _direct(
    deployment: DeploymentFacts,
    inst: InstanceFacts,
    definition: ServiceDefinition | None,
    configuration: ServiceConfiguration | None,
) -> list[Probe]:
    out = []
    for ep in deployment.input_endpoints:
        if ep.role != inst.role or not inst.ip or ep.local_port is None:
            continue
        expected: tuple[str, ...] = ()
        source, note = "none", None
        if ep.protocol == "https":
            expected, source, note = _expected(configuration, ep.role, ep.certificate, definition is not None)
        out.append(
            Probe(
                DIRECT,
                inst.role,
                ep.name,
                ep.protocol,
                inst.ip,
                ep.local_port,
                inst.name,
                ep.certificate,
                expected,
                source,
                note,
            )
        )
    return out


# ---- internal endpoints over WinRM --------------------------------------------------------------------------
def internal_script(host: str, port: int, timeout_ms: int) -> str:
    """A TCP connect from inside a Windows guest (.NET TcpClient; PowerShell 2.0 and later)."""
    return (
        "$c = New-Object System.Net.Sockets.TcpClient\n"
        "try {\n"
        f"  $a = $c.BeginConnect('{host}', {int(port)}, $null, $null)\n"
        f"  if ($a.AsyncWaitHandle.WaitOne({int(timeout_ms)}, $false)) {{ $c.EndConnect($a); '{MARK} ok' }}\n"
        f"  else {{ '{MARK} timeout' }}\n"
        "} catch {\n"
        "  $e = $_.Exception; while ($e.InnerException) { $e = $e.InnerException }\n"
        f"  '{MARK} error ' + $e.Message\n"
        "} finally { $c.Close() }"
    )


def _fixed_port(endpoint: Endpoint) -> int | None:
    for raw in [endpoint.port, *(r.min for r in endpoint.fixed_ports)]:
        try:
            if raw is not None and str(raw).strip() != "*":
                return int(str(raw).strip())
        except ValueError:
            continue
    return None


def internal_checks(
    ctx: LiveContext, deployment: DeploymentFacts, definition: ServiceDefinition | None, settings: Settings
) -> tuple[list[EndpointCheck], list[str]]:
    notes: list[str] = []
    if definition is None:
        return [], ["internal endpoints not checked: they are declared only in the csdef, and the target names none"]
    wanted = []
    for role_def in definition.roles:
        for ep in role_def.endpoints:
            if ep.kind != CSDEF_INTERNAL:
                continue
            port = _fixed_port(ep)
            if port is None:
                notes.append(f"internal endpoint {ep.name!r} of role {role_def.name!r} has a dynamic port: not checked")
                continue
            for inst in deployment.role_instances(role_def.name):
                wanted.append((role_def.name, ep.name, (ep.protocol or "tcp").lower(), inst, port))
    if not wanted:
        return [], notes
    try:
        pool = ctx.winrm
    except Exception as exc:  # the pool (or pywinrm) is unavailable: the outside checks still count
        return [], [*notes, f"internal endpoints not checked: WinRM is unavailable ({type(exc).__name__}: {exc})"]
    checks = []
    ready = [i for i in deployment.instances if i.status == READY] or list(deployment.instances)
    unsupported_from: dict[str, str] = {}
    for role, name, protocol, inst, port in wanted:
        probe = Probe(INTERNAL, role, name, protocol, inst.ip, port, inst.name)
        if protocol == "udp":
            checks.append(_check(probe, status=SKIPPED, note="UDP internal endpoints are not probed"))
            continue
        source = next((i for i in ready if i.name != inst.name), None)
        if source is None:
            checks.append(_check(probe, status=SKIPPED, note="no other instance to probe it from"))
            continue
        if source.name in unsupported_from:
            checks.append(
                _check(probe, status=UNSUPPORTED, from_instance=source.name, note=unsupported_from[source.name])
            )
            continue
        started = time.monotonic()
        try:
            result = pool.run_ps(
                source.name, internal_script(inst.ip, port, int(settings.connect * 1000)), timeout=WINRM_PROBE_TIMEOUT
            )
        except Exception as exc:
            checks.append(
                _check(
                    probe,
                    status=SKIPPED,
                    from_instance=source.name,
                    note=settings.masker(f"WinRM to {source.name} failed: {exc}")[:400],
                    total_seconds=time.monotonic() - started,
                )
            )
            continue
        rc, stdout, stderr = _result_fields(result)
        seconds = time.monotonic() - started
        match = re.search(rf"{MARK} (ok|timeout|error)(.*)", stdout)
        if match is None:
            why = (stderr or stdout).strip().splitlines()
            note = f"the guest of {source.name} cannot run the TCP probe (rc {rc}): " + (why[0][:200] if why else "")
            unsupported_from[source.name] = settings.masker(note)
            checks.append(
                _check(
                    probe,
                    status=UNSUPPORTED,
                    from_instance=source.name,
                    note=unsupported_from[source.name],
                    total_seconds=seconds,
                )
            )
            continue
        outcome, detail = match.group(1), match.group(2).strip()
        if outcome == "ok":
            checks.append(_check(probe, status=OK, connected=True, from_instance=source.name, total_seconds=seconds))
            continue
        kind = TIMEOUT if outcome == "timeout" else (REFUSED if "refused" in detail.lower() else UNREACHABLE)
        text = f"no TCP answer within {settings.connect:g} s" if outcome == "timeout" else (detail or "connect failed")
        checks.append(
            _check(
                probe,
                status=FAILED,
                from_instance=source.name,
                error_kind=kind,
                error=settings.masker(f"TCP connect from {source.name} to {inst.ip}:{port}: {text}"),
                evidence=settings.masker(f"rc={rc}\n{stdout.strip()[:600]}\n{stderr.strip()[:600]}"),
                total_seconds=seconds,
            )
        )
    return checks, notes


def _result_fields(result: Result) -> tuple[int, str, str]:
    return result.rc, result.stdout or "", result.stderr or ""


# ---- the stage ------------------------------------------------------------------------------------------------
def _compile(pattern: str | None) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error:
        return None


def settings_for(ctx: LiveContext, deployment: DeploymentFacts) -> Settings:
    target = ctx.target
    identify = target.identify
    return Settings(
        connect=float(target.timeouts.connect),
        read=float(target.timeouts.read),
        host_name=deployment.host_name,
        header=identify.header,
        body_regex=_compile(identify.body_regex),
        banner_regex=_compile(identify.banner_regex),
        masker=ctx.masker,
        health=ctx.health,
    )


def _ready_instances(deployment: DeploymentFacts, role: str) -> list[str]:
    return [i.name for i in deployment.instances if i.role == role and i.status == READY]


def tls_sweep(
    probe: Probe, settings: Settings, ready: list[str], confidence: float
) -> tuple[list[EndpointCheck], str | None]:
    """The certificate each Ready instance serves behind an https VIP endpoint.

    One probe through the load balancer sees one instance; a wrong certificate on another would hide.
    New connections are made until every Ready instance has answered (identified like the rotation
    probe) or the coupon-collector bound for ``confidence`` is spent; each instance's first answer
    becomes an input check carrying its instance name, so the TLS rules judge every instance.
    """
    if not ready:
        return [], None
    bound = samples_for_all(len(ready), confidence)
    seen: dict[str, EndpointCheck] = {}
    for _ in range(bound):
        try:
            check = _probe_once(probe, settings)
        except (_Retryable, _Failed):
            continue
        if check.served_by in ready and check.served_by not in seen:
            seen[check.served_by] = replace(check, instance=check.served_by)
        if len(seen) == len(ready):
            break
    missing = sorted(set(ready) - set(seen))
    note = None
    if missing:
        note = (
            f"the certificate of {', '.join(missing)} behind {probe.endpoint!r} was not seen in {bound} "
            f"connections (rotation checks whether they answer at all)"
        )
    return [seen[name] for name in sorted(seen)], note


def run(ctx: LiveContext) -> EndpointFacts:
    started = time.monotonic()
    deployment = ctx.deployment()
    model = ctx.model()
    definition = model.definition
    settings = settings_for(ctx, deployment)
    direct = ctx.target.direct_instance_addresses
    probes, notes = plan(deployment, definition, direct=direct)
    notes = list(model.notes) + notes
    with ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="vmr-endpoint") as pool:
        checks = list(pool.map(lambda p: probe_endpoint(p, settings), probes))
    confidence = float(ctx.target.rotation.confidence)
    for probe in probes:
        lb = _lb_address(probe, settings)
        if lb is not None and settings.health is not None and settings.health.down(LB, lb) is not None:
            continue  # its check already failed with the cause
        if probe.kind == INPUT and probe.protocol == "https":
            sweep, note = tls_sweep(probe, settings, _ready_instances(deployment, probe.role), confidence)
            checks += sweep
            if note:
                notes.append(note)
    internal, internal_notes = internal_checks(ctx, deployment, definition, settings)
    checks += internal
    notes += internal_notes
    facts = EndpointFacts(
        host_name=deployment.host_name,
        vip=deployment.vip,
        checks=tuple(checks),
        notes=tuple(dict.fromkeys(notes)),
        elapsed=time.monotonic() - started,
    )
    for check in checks:
        ctx.log(
            f"endpoint {check.label}: {check.status}",
            seconds=check.total_seconds,
            attempts=check.attempts,
            error=check.error,
        )
    ctx.evidence("endpoints", facts.table() + ("\n\nnotes:\n" + "\n".join(facts.notes) if facts.notes else ""))
    for check in checks:
        if check.status == FAILED and check.evidence:
            ctx.evidence(f"endpoint-{check.location}", check.evidence)
    return facts


__all__ = [
    "Probe",
    "Settings",
    "certificate_facts",
    "internal_checks",
    "internal_script",
    "plan",
    "probe_endpoint",
    "run",
]
