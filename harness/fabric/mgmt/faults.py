"""Injectable faults of the management API, each with a duration and guaranteed rollback.

One fault at a time (``set`` replaces the current one). Every request checks the deadline, so an expired
fault is gone even if nobody calls ``clear()``; ``clear()`` ends it at once and releases held requests.

Kinds (aliases in brackets):

- ``conflict`` [``409``]: answer ``409 ConflictError``.
- ``internal-error`` [``500``, ``error``]: answer ``500 InternalError``.
- ``timeout``: hold the request without answering, then drop the connection. A request is held until the
  fault ends (deadline or ``clear()``) or ``hold_seconds`` pass (default: the fault's duration), whichever is
  first, and never longer than ``MAX_HOLD_SECONDS``.

Scopes: ``all`` (every request) or ``post`` (only POSTs: reboot/reimage/rebuild).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

CONFLICT = "conflict"
INTERNAL_ERROR = "internal-error"
TIMEOUT = "timeout"

KINDS = (CONFLICT, INTERNAL_ERROR, TIMEOUT)
_ALIASES = {"409": CONFLICT, "500": INTERNAL_ERROR, "error": INTERNAL_ERROR, "internal_error": INTERNAL_ERROR}

SCOPE_ALL = "all"
SCOPE_POST = "post"
SCOPES = (SCOPE_ALL, SCOPE_POST)

MAX_FAULT_SECONDS = 3600.0
MAX_HOLD_SECONDS = 120.0


@dataclass(frozen=True)
class ActiveFault:
    kind: str
    scope: str
    seconds: float  # the duration it was set for
    expires_at: float  # time.monotonic() deadline
    hold_seconds: float  # timeout only: the longest a request is held
    generation: int  # changes on every set()/clear()

    @property
    def remaining(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    @property
    def status_code(self) -> int | None:
        return {CONFLICT: 409, INTERNAL_ERROR: 500}.get(self.kind)

    def applies_to(self, method: str) -> bool:
        return self.scope == SCOPE_ALL or method.upper() == "POST"

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "scope": self.scope,
            "seconds": self.seconds,
            "remaining": round(self.remaining, 3),
            "hold_seconds": self.hold_seconds if self.kind == TIMEOUT else None,
        }


def normalize_kind(kind: str) -> str:
    k = str(kind).strip().lower()
    k = _ALIASES.get(k, k)
    if k not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(KINDS)} (or 409, 500)")
    return k


class FaultState:
    """Thread-safe holder of the current management-API fault."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._fault: ActiveFault | None = None
        self._generation = 0
        self.hits = 0  # requests answered by a fault (since construction)

    def set(
        self, kind: str, seconds: float, scope: str = SCOPE_ALL, *, hold_seconds: float | None = None
    ) -> ActiveFault:
        """Arm ``kind`` for ``seconds`` (0 < seconds ≤ MAX_FAULT_SECONDS) on ``scope``; replaces any current fault."""
        k = normalize_kind(kind)
        s = str(scope).strip().lower()
        if s not in SCOPES:
            raise ValueError(f"unknown fault scope {scope!r}; expected one of {', '.join(SCOPES)}")
        duration = float(seconds)
        if not 0 < duration <= MAX_FAULT_SECONDS:
            raise ValueError(f"fault duration must be in (0, {MAX_FAULT_SECONDS:g}] seconds, got {seconds!r}")
        hold = duration if hold_seconds is None else float(hold_seconds)
        if hold <= 0:
            raise ValueError(f"hold_seconds must be > 0, got {hold_seconds!r}")
        hold = min(hold, MAX_HOLD_SECONDS)
        with self._cond:
            self._generation += 1
            self._fault = ActiveFault(k, s, duration, time.monotonic() + duration, hold, self._generation)
            self._cond.notify_all()
            return self._fault

    def clear(self) -> None:
        """End the current fault now (held requests are released)."""
        with self._cond:
            self._generation += 1
            self._fault = None
            self._cond.notify_all()

    def active(self) -> ActiveFault | None:
        """The current fault, or None (an expired fault is dropped here: the deadline check)."""
        with self._cond:
            f = self._fault
            if f is not None and time.monotonic() >= f.expires_at:
                self._fault = None
                self._generation += 1
                self._cond.notify_all()
                return None
            return f

    def for_request(self, method: str) -> ActiveFault | None:
        """The fault that answers a request with ``method`` (counted as a hit), or None."""
        f = self.active()
        if f is None or not f.applies_to(method):
            return None
        with self._cond:
            self.hits += 1
        return f

    def hold(self, fault: ActiveFault, stop: threading.Event | None = None) -> float:
        """Block (a ``timeout`` fault's request) until the fault ends, is replaced or cleared, its hold time
        passes, or ``stop`` is set. Returns the seconds held."""
        start = time.monotonic()
        end = min(fault.expires_at, start + fault.hold_seconds)
        with self._cond:
            while True:
                now = time.monotonic()
                if now >= end or self._generation != fault.generation or (stop is not None and stop.is_set()):
                    break
                # short waits so a `stop` event (server shutdown) is noticed promptly
                self._cond.wait(min(end - now, 0.1))
        return time.monotonic() - start
