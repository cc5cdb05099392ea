"""Facts of the endpoint probes: every input endpoint on the VIP, every instance's own endpoints, and the
internal endpoints as seen from another instance (over WinRM).

One :class:`EndpointCheck` per probe: what was probed (kind, role, endpoint, protocol, address, the instance it
is about), how it went (``status`` and, when not ok, ``error_kind`` + ``error`` naming the cause), timings, and
what the answer said (HTTP status, banner, the instance that served it, TLS certificate facts).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

INPUT, INSTANCE, DIRECT, INTERNAL = "input", "instance", "direct", "internal"
KINDS = (INPUT, INSTANCE, DIRECT, INTERNAL)

OK = "ok"  # answered as expected
FAILED = "failed"  # the probe shows a problem (error_kind/error say which)
NO_REPLY = "no-reply"  # UDP: nothing came back (not judged: UDP services need not answer)
SKIPPED = "skipped"  # not probed (note says why)
UNSUPPORTED = "unsupported"  # the probe could not run where it had to (e.g. the guest lacks a cmdlet)

# error kinds
REFUSED, RESET, TIMEOUT, CLOSED = "refused", "reset", "timeout", "closed"
TLS_ERROR, HTTP_ERROR, BAD_RESPONSE, UNREACHABLE = "tls", "http-status", "bad-response", "unreachable"


def normalize_thumbprint(value: str | None) -> str:
    return "".join(ch for ch in (value or "") if ch.isalnum()).upper()


def is_local_address(host: str) -> bool:
    """Loopback, private or link-local: a name on the certificate cannot be expected to match it."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host.lower() in ("localhost", "")
    return ip.is_loopback or ip.is_private or ip.is_link_local


@dataclass(frozen=True)
class TlsFacts:
    """The TLS handshake with an https endpoint and the certificate it served."""

    handshake_ok: bool
    error: str | None = None
    thumbprint: str | None = None  # SHA-1 of the DER, upper hex
    expected_thumbprints: tuple[str, ...] = ()
    certificate_name: str | None = None  # the csdef endpoint's certificate="…"
    expected_source: str = "none"  # csdef | role-certificates | none
    subject: str = ""
    not_after: str | None = None  # ISO 8601 UTC
    days_left: float | None = None
    names: tuple[str, ...] = ()  # SAN DNS names and IPs (or the CN when there is no SAN)
    host_name: str = ""  # what the names were compared with (the deployment's host name)
    hostname_matches: bool | None = None
    handshake_seconds: float | None = None
    version: str | None = None

    @property
    def thumbprint_matches(self) -> bool | None:
        """None when nothing was expected (no cscfg certificate to compare with) or nothing served."""
        if not self.thumbprint or not self.expected_thumbprints:
            return None
        return normalize_thumbprint(self.thumbprint) in {normalize_thumbprint(t) for t in self.expected_thumbprints}


@dataclass(frozen=True)
class EndpointCheck:
    kind: str  # input | instance | direct | internal
    role: str
    endpoint: str
    protocol: str  # http | https | tcp | udp
    host: str
    port: int
    status: str = OK
    instance: str | None = None  # the instance the check is about (instance/direct/internal)
    from_instance: str | None = None  # internal: the instance the probe ran in
    connected: bool = False
    connect_seconds: float | None = None
    total_seconds: float | None = None
    attempts: int = 1
    error_kind: str | None = None
    error: str | None = None
    http_status: int | None = None
    http_reason: str = ""
    served_by: str | None = None
    banner: str | None = None
    tls: TlsFacts | None = None
    note: str | None = None
    evidence: str = ""  # masked excerpt of the exchange, for failing items

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def label(self) -> str:
        what = {
            INPUT: "input endpoint",
            INSTANCE: "instance endpoint",
            DIRECT: "direct address of",
            INTERNAL: "internal endpoint",
        }[self.kind]
        owner = f"{self.instance}" if self.instance else f"role {self.role}"
        return f"{what} {self.endpoint!r} ({self.protocol}) of {owner} at {self.address}"

    @property
    def location(self) -> str:
        """A stable logical location for findings."""
        parts = [f"endpoints/{self.kind}", self.role, self.endpoint]
        if self.instance:
            parts.append(self.instance)
        return "/".join(parts)


@dataclass(frozen=True)
class EndpointFacts:
    host_name: str  # the deployment's DNS name (from its URL)
    vip: str
    checks: tuple[EndpointCheck, ...] = ()
    notes: tuple[str, ...] = ()
    elapsed: float = 0.0

    def of_kind(self, kind: str) -> tuple[EndpointCheck, ...]:
        return tuple(c for c in self.checks if c.kind == kind)

    def table(self) -> str:
        rows = []
        for c in self.checks:
            extra = []
            if c.http_status is not None:
                extra.append(f"HTTP {c.http_status}")
            if c.tls is not None and c.tls.thumbprint:
                extra.append(f"tls {c.tls.thumbprint}")
            if c.served_by:
                extra.append(f"served by {c.served_by}")
            if c.error:
                extra.append(f"{c.error_kind}: {c.error}")
            if c.note:
                extra.append(c.note)
            timing = f"{c.total_seconds * 1000:7.1f} ms" if c.total_seconds is not None else "        -"
            rows.append(f"{c.status:<11} {timing}  {c.label}  {'; '.join(extra)}")
        return "\n".join(rows)


__all__ = [
    "BAD_RESPONSE",
    "CLOSED",
    "DIRECT",
    "FAILED",
    "HTTP_ERROR",
    "INPUT",
    "INSTANCE",
    "INTERNAL",
    "KINDS",
    "NO_REPLY",
    "OK",
    "REFUSED",
    "RESET",
    "SKIPPED",
    "TIMEOUT",
    "TLS_ERROR",
    "UNREACHABLE",
    "UNSUPPORTED",
    "EndpointCheck",
    "EndpointFacts",
    "TlsFacts",
    "is_local_address",
    "normalize_thumbprint",
]
