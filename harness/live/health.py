"""What the probe knows, per run, about the deployment's dependencies: which ones are down.

A stage that finds a dependency down (the load balancer refused a connection, blob storage did not
answer, the management API is unreachable, an instance's WinRM refused) records it here once; every later
probe that needs that dependency asks first and gives up at once with the recorded cause
("the load balancer at 127.0.0.1:13104 refused connections (first seen in stage endpoints)") instead of
waiting out its own timeouts and retries again.

A refused connection is certain. A timeout is not, but it costs a full timeout each time: it is tried once
per dependency and then remembered too. A later success on the same dependency clears the record.

Keys are ``(kind, address)``: ``("lb", "127.0.0.1:13104")`` (one VIP port), ``("blob", url)``,
``("mgmt", url)``, ``("winrm", instance)``. The VIP as a whole counts as down once connections to
:data:`LB_PORTS_DOWN` distinct VIP ports were refused and none to that address succeeded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

LB, BLOB, MGMT, WINRM = "lb", "blob", "mgmt", "winrm"
LB_PORTS_DOWN = 2

#: what each kind of dependency is called in messages
NAMES = {
    LB: "the load balancer",
    BLOB: "blob storage",
    MGMT: "the management API",
    WINRM: "WinRM",
}


@dataclass(frozen=True)
class Down:
    """A dependency found down: where, how (``problem``: "refused connections", "did not answer within 3 s"),
    in which stage first, and whether that is certain (refused) or remembered after one timeout."""

    kind: str
    address: str
    problem: str
    stage: str | None = None
    certain: bool = True
    what: str = ""  # e.g. "WinRM of WebVM_IN_0 at 127.0.0.1:13011"; default: NAMES[kind] at address

    @property
    def reason(self) -> str:
        where = self.what or f"{NAMES.get(self.kind, self.kind)} at {self.address}"
        first = f" (first seen in stage {self.stage})" if self.stage else ""
        return f"{where} {self.problem}{first}"


class DependencyDown(Exception):
    """Raised by :meth:`Health.check` (and by clients that consult it) when a dependency is known down."""

    def __init__(self, down: Down) -> None:
        super().__init__(down.reason)
        self.down = down


class Health:
    """Per-run record of dependencies found down (thread-safe; stages probe in threads)."""

    def __init__(self, stage: Callable[[], str | None] = lambda: None) -> None:
        self._stage = stage
        self._down: dict[tuple[str, str], Down] = {}
        self._up: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def mark_down(self, kind: str, address: str, problem: str, *, certain: bool = True, what: str = "") -> Down:
        """Record ``kind``/``address`` as down (the first record, with its stage, is kept)."""
        key = (kind, address)
        with self._lock:
            existing = self._down.get(key)
            if existing is not None:
                return existing
            down = Down(kind, address, problem, self._stage(), certain, what)
            self._down[key] = down
            self._up.discard(key)
            return down

    def mark_up(self, kind: str, address: str) -> None:
        """It answered: forget any record of it being down."""
        key = (kind, address)
        with self._lock:
            self._down.pop(key, None)
            self._up.add(key)

    def down(self, kind: str, address: str) -> Down | None:
        with self._lock:
            found = self._down.get((kind, address))
            if found is None and kind == LB:
                found = self._lb_host_down(address)
            return found

    def check(self, kind: str, address: str) -> None:
        """Raise :class:`DependencyDown` when ``kind``/``address`` is known down."""
        found = self.down(kind, address)
        if found is not None:
            raise DependencyDown(found)

    def _lb_host_down(self, address: str) -> Down | None:
        host = _host_of(address)
        refused = [d for (k, a), d in self._down.items() if k == LB and _host_of(a) == host and d.certain]
        alive = any(k == LB and _host_of(a) == host for k, a in self._up)
        if len(refused) < LB_PORTS_DOWN or alive:
            return None
        first = refused[0]
        ports = ", ".join(sorted((d.address.rsplit(":", 1)[-1] for d in refused), key=lambda p: (len(p), p)))
        return Down(LB, host, f"{first.problem} on every port tried ({ports})", first.stage, True)


def _host_of(address: str) -> str:
    return address.rsplit(":", 1)[0] if ":" in address else address


__all__ = ["BLOB", "LB", "MGMT", "NAMES", "WINRM", "DependencyDown", "Down", "Health"]
