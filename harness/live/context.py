"""What a live stage gets: the target, clients built once, and places to put logs, evidence and charts."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from harness.live.health import Health
from harness.live.masking import Masker, withhold_auth_tokens

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.live.target import Target


class LiveContext:
    """One per target and process. Stages share its clients (one WinRM shell per instance, one
    management session) and its cached Get Deployment."""

    def __init__(self, target: Target, *, destructive: bool = False) -> None:
        self.target = target
        self.masker: Masker = target.masker()
        withhold_auth_tokens()  # WinRM's NTLM tokens would reach pytest's log capture at DEBUG
        self.destructive = destructive
        self.started = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self.evidence_texts: dict[str, str] = {}
        self.charts: dict[str, dict[str, Any]] = {}
        self._management: Any = None
        self._winrm: Any = None
        self._deployment: Any = None
        #: the stage running now (LiveSubject sets it): dependency records name where they were first seen
        self.stage: str | None = None
        #: dependencies found down in this run (the load balancer, blob storage, the management API, WinRM)
        self.health = Health(lambda: self.stage)

    # ---- clients --------------------------------------------------------------------------
    @property
    def management(self) -> Any:
        if self._management is None:
            from harness.live.management import ManagementClient, RetryPolicy

            policy = RetryPolicy(conflict_deadline=self.target.timeouts.conflict_retry)
            self._management = ManagementClient(
                self.target, self.masker, log=self.log, policy=policy, health=self.health
            )
        return self._management

    @property
    def winrm(self) -> Any:
        if self._winrm is None:
            from harness.live.winrm_pool import WinRMPool

            self._winrm = WinRMPool(self)
        return self._winrm

    def deployment(self, refresh: bool = False) -> Any:
        """Get Deployment as facts (cached until ``refresh``)."""
        if self._deployment is None or refresh:
            from harness.suites.live.deployment import fetch

            self._deployment = fetch(self)
        return self._deployment

    def model(self) -> Any:
        from harness.suites.live.deployment import model

        return model(self)

    def wait_ready(self) -> Any:
        """Block until the deployment is Running and every instance ReadyRole (or the deadline)."""
        from harness.suites.live.deployment import wait_ready

        return wait_ready(self)

    # ---- records --------------------------------------------------------------------------
    def log(self, event: str, **fields: Any) -> None:
        entry = {"t": round(time.monotonic() - self.started, 3), "event": self.masker(event)}
        entry.update({k: self.masker(v) if isinstance(v, str) else v for k, v in fields.items()})
        self.events.append(entry)

    def evidence(self, name: str, text: str) -> None:
        self.evidence_texts[name] = self.masker(text)

    def chart(self, key: str, data: dict[str, Any]) -> None:
        self.charts[key] = data

    def close(self) -> None:
        if self._winrm is not None:
            self._winrm.close()
