"""ARM's request throttling: a token bucket per subscription and kind (reads, writes), as
https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/request-limits-and-throttling
describes it (bucket 250 reads refilled at 25/s, 200 writes at 10/s, per subscription and region). Each
answer carries ``x-ms-ratelimit-remaining-subscription-<kind>``; an empty bucket answers ``429
SubscriptionRequestsThrottled`` with ``Retry-After`` (seconds until a token is back).

``VMR_FABRIC_ARM_THROTTLE`` (``reads=250/25,writes=200/10``) sets other buckets, e.g. for a test of the 429.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

DEFAULTS = {"reads": (250.0, 25.0), "writes": (200.0, 10.0)}
ENV = "VMR_FABRIC_ARM_THROTTLE"


def parse(text: str | None) -> dict[str, tuple[float, float]]:
    """``reads=250/25,writes=200/10`` → limits; raises ValueError naming the bad part."""
    limits = dict(DEFAULTS)
    for part in (text or "").split(","):
        if not part.strip():
            continue
        kind, _, value = part.partition("=")
        size, _, rate = value.partition("/")
        try:
            bucket, refill = float(size), float(rate)
        except ValueError:
            raise ValueError(f"{ENV}: {part.strip()!r} is not KIND=BUCKET/REFILL_PER_SECOND") from None
        if kind.strip() not in DEFAULTS or not (0 < bucket <= 1e6 and 0 < refill <= 1e6):
            raise ValueError(f"{ENV}: {part.strip()!r} (kinds: reads, writes; positive numbers)")
        limits[kind.strip()] = (bucket, refill)
    return limits


class Buckets:
    def __init__(self, limits: dict[str, tuple[float, float]], clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self.level = {k: size for k, (size, _) in limits.items()}
        self.stamp = {k: clock() for k in limits}
        self.lock = threading.Lock()

    def take(self, kind: str) -> tuple[bool, int]:
        """(allowed, remaining) when allowed; (False, seconds to wait) when the bucket is empty."""
        size, rate = self.limits[kind]
        with self.lock:
            now = self.clock()
            self.level[kind] = min(size, self.level[kind] + (now - self.stamp[kind]) * rate)
            self.stamp[kind] = now
            if self.level[kind] >= 1:
                self.level[kind] -= 1
                return True, int(self.level[kind])
            return False, max(1, math.ceil((1 - self.level[kind]) / rate))
