"""Facts of the load-balancer probes: rotation (every Ready instance answers through the VIP) and drain
(an instance taken out of Ready gets no new connections, then comes back).

Filled by the probes ``harness.live.probes.rotation`` / ``harness.live.probes.drain``; judged by
``checks/live/rotation.py`` (VMR800–VMR819). Numbers behind the bounds: ``harness.facts.live.stats``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Error kinds counted separately (a connection through the VIP that gave no identifiable answer).
ERROR_KINDS = ("refused", "reset", "timeout", "tls", "other")

AFFINITY_SOURCE_IP = "source-ip"


@dataclass(frozen=True)
class ErrorCounts:
    refused: int = 0  # connection refused (nothing listening on the VIP port)
    reset: int = 0  # reset, or closed before any answer (e.g. the LB could not reach the backend)
    timeout: int = 0  # connect or read timeout
    tls: int = 0  # TLS handshake failed
    other: int = 0  # anything else: malformed answer, unexpected OS error

    @property
    def total(self) -> int:
        return self.refused + self.reset + self.timeout + self.tls + self.other

    def as_dict(self) -> dict[str, int]:
        return {kind: getattr(self, kind) for kind in ERROR_KINDS}

    def describe(self) -> str:
        parts = [f"{n} {kind}" for kind, n in self.as_dict().items() if n]
        return ", ".join(parts) if parts else "none"

    @classmethod
    def of(cls, counts: dict[str, int]) -> ErrorCounts:
        return cls(**{k: int(counts.get(k, 0)) for k in ERROR_KINDS})


@dataclass(frozen=True)
class PinProbe:
    """A few requests that *should* stay on one instance: over one keep-alive connection, or from one
    fixed source port. ``instances`` lists who answered (in order of first appearance)."""

    kind: str  # "keep-alive" | "fixed-source-port"
    requests: int
    answered: int
    instances: tuple[str, ...]
    error: str | None = None  # why the probe could not run (e.g. the OS refused to reuse the port)

    @property
    def pinned(self) -> bool | None:
        """True when every answer came from one instance; None when nothing answered."""
        if not self.instances:
            return None
        return len(self.instances) == 1


@dataclass(frozen=True)
class EndpointRotation:
    """One load-balanced input endpoint sampled through its VIP with a new TCP connection per request."""

    role: str
    endpoint: str
    protocol: str  # http | https | tcp | udp
    vip: str
    port: int
    probeable: bool = True  # False for UDP (no connection to attribute an answer to) or without a VIP
    note: str | None = None  # why it was not probed, or anything unusual
    requests: int = 0  # connections attempted
    answered: int = 0  # answers received (attributed to an instance, to an unknown token, or to nothing)
    bound: int = 0  # requests needed to see every expected instance with ``confidence`` (uniform hash)
    confidence: float = 0.0
    expected: tuple[str, ...] = ()  # Ready instances of the role (from Get Deployment)
    counts: dict[str, int] = field(default_factory=dict)  # instance (or token) -> answers
    first_seen: dict[str, int] = field(default_factory=dict)  # instance -> 1-based answer index of its first
    unseen: tuple[str, ...] = ()  # expected instances that never answered
    late: dict[str, int] = field(default_factory=dict)  # expected instances first seen only after the bound
    unknown: dict[str, int] = field(default_factory=dict)  # tokens that name no instance of the role
    unidentified: int = 0  # answers with no header/body/banner match
    errors: ErrorCounts = field(default_factory=ErrorCounts)
    error_examples: tuple[str, ...] = ()  # a few error messages (masked)
    identification: dict[str, int] = field(default_factory=dict)  # header/body/banner -> answers
    http_statuses: dict[str, int] = field(default_factory=dict)  # "200" -> n
    requests_to_all: int | None = None  # the request at which the last expected instance was first seen
    source_ports: int = 0  # distinct client source ports used
    spread: dict[str, Any] | None = None  # harness.facts.live.stats.Spread.to_json() over ``expected``
    keep_alive: PinProbe | None = None
    fixed_port: PinProbe | None = None
    affinity: str | None = None  # AFFINITY_SOURCE_IP when new connections all land on one instance
    status_now: dict[str, str] = field(default_factory=dict)  # Get Deployment status of unseen instances after
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.role}/{self.endpoint}"

    @property
    def where(self) -> str:
        return f"{self.protocol}://{self.vip}:{self.port}"

    @property
    def seen(self) -> tuple[str, ...]:
        return tuple(name for name in self.expected if self.counts.get(name))

    @property
    def error_rate(self) -> float:
        return self.errors.total / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class RotationFacts:
    endpoints: tuple[EndpointRotation, ...] = ()
    confidence: float = 0.999
    identify: dict[str, str | None] = field(default_factory=dict)  # header / body_regex / banner_regex in use
    note: str | None = None  # e.g. "the deployment has no load-balanced input endpoints"
    seconds: float = 0.0

    @property
    def probed(self) -> tuple[EndpointRotation, ...]:
        return tuple(e for e in self.endpoints if e.probeable)

    @property
    def unprobed(self) -> tuple[EndpointRotation, ...]:
        """Endpoints not probed through the VIP (UDP; no VIP known), each with its ``note``."""
        return tuple(e for e in self.endpoints if not e.probeable)


@dataclass(frozen=True)
class DrainPhase:
    """Requests of one phase of the drain probe: before / draining (grace) / drained / after."""

    name: str
    requests: int
    counts: dict[str, int]
    errors: int
    seconds: float
    started_s: float = 0.0  # since the instance was taken out (negative: before)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requests": self.requests,
            "counts": dict(self.counts),
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "started_s": round(self.started_s, 3),
        }


@dataclass(frozen=True)
class DrainFacts:
    """One Ready instance taken out (Busy through the target's hook, or rebooted through the management
    API), sampled after the probe grace period, and brought back."""

    role: str = ""
    endpoint: str = ""
    vip: str = ""
    port: int = 0
    instance: str | None = None  # the instance taken out
    others: tuple[str, ...] = ()  # the other Ready instances of the role
    method: str | None = None  # "hook" | "reboot" | None (not performed)
    command: str | None = None  # the hook command as run (masked) or "reboot <instance>"
    hook_rc: int | None = None
    hook_output: str = ""  # masked, trimmed
    operation_id: str | None = None  # the reboot's request id
    not_performed: str | None = None  # why the instance could not be taken out
    hold_seconds: float | None = None  # how long the hook keeps it Busy
    grace_seconds: float = 0.0
    grace_source: str = ""  # "target" | "fabric.json removal_window_s" | "default"
    confidence: float = 0.999  # the target's
    required_samples: int = 0  # k with (1 − 1/n)^k ≤ 1 − confidence
    samples_after_grace: int = 0  # answered requests after the grace period
    hits_after_grace: int = 0  # of which the drained instance answered (must be 0)
    others_seen_after_grace: tuple[str, ...] = ()
    errors_after_grace: int = 0
    stated_confidence: float = 0.0  # 1 − (1 − 1/n)^samples_after_grace (when hits are 0)
    hits_during_grace: int = 0
    left_after_s: float | None = None  # last answer from it after it was taken out (0 when none)
    status_left: str | None = None  # the status Get Deployment showed while out (e.g. BusyRole)
    returned: bool | None = None  # seen again through the VIP before the deadline (None: not tried)
    return_seconds: float | None = None  # from its release (hook expiry / operation end) to its first answer
    return_deadline_s: float = 0.0
    ready_again: bool | None = None  # Get Deployment shows it ReadyRole again
    phases: tuple[DrainPhase, ...] = ()
    errors: ErrorCounts = field(default_factory=ErrorCounts)  # over every phase
    notes: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.role}/{self.endpoint}"
