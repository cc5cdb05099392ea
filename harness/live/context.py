"""What a live probe gets: the target, clients built once, and places to put logs, evidence and charts."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from harness.live.health import Health
from harness.live.masking import Masker, withhold_auth_tokens

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.facts.live.deployment import DeploymentFacts, ModelFacts, ReadinessFacts
    from harness.live.backends import Backend, Operations
    from harness.live.management import ManagementClient
    from harness.live.target import Target
    from harness.live.winrm_pool import WinRMPool


class LiveContext:
    """One per target and process. Probes share its clients (one WinRM shell per instance, one
    management session) and its cached Get Deployment.

    The deployment source (:mod:`harness.live.deployment_source`, over the back end the target's
    ``management.api`` names: :attr:`backend`) is what the probes reach, and only through :meth:`deployment`,
    :meth:`model`, :meth:`wait_ready` and :attr:`management` (operations on one instance)."""

    def __init__(self, target: Target, *, destructive: bool = False) -> None:
        self.target = target
        self.masker: Masker = target.masker()
        withhold_auth_tokens()  # WinRM's NTLM tokens would reach pytest's log capture at DEBUG
        self.destructive = destructive
        self.started = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self.evidence_texts: dict[str, str] = {}
        self.charts: dict[str, dict[str, Any]] = {}
        self._management: ManagementClient | None = None
        self._backend: Backend | None = None
        self._winrm: WinRMPool | None = None
        self._deployment: DeploymentFacts | None = None
        #: the probe running now (LiveSubject sets it): dependency records name where they were first seen
        self.stage: str | None = None
        #: dependencies found down in this run (the load balancer, blob storage, the management API, WinRM)
        self.health = Health(lambda: self.stage)

    # ---- clients --------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The management back end the target names (``management.api``: asm or vmss)."""
        if self._backend is None:
            from harness.live.backends import backend_for

            self._backend = backend_for(self)
        return self._backend

    @property
    def management(self) -> Operations:
        """Operations on one instance (reboot, reimage), through the back end."""
        return self.backend.operations()

    def management_client(self) -> ManagementClient:
        """The classic Service Management client (``management.api: asm`` only)."""
        if self._management is None:
            from harness.live.management import ManagementClient, RetryPolicy

            policy = RetryPolicy(conflict_deadline=self.target.timeouts.conflict_retry)
            self._management = ManagementClient(
                self.target, self.masker, log=self.log, policy=policy, health=self.health
            )
        return self._management

    @property
    def management_if_built(self) -> ManagementClient | None:
        """The management client when one was built (never builds one)."""
        return self._management

    @property
    def winrm(self) -> WinRMPool:
        if self._winrm is None:
            from harness.live.winrm_pool import WinRMPool

            self._winrm = WinRMPool(self)
        return self._winrm

    # ---- the deployment (through the deployment source) -----------------------------------
    def deployment(self, refresh: bool = False) -> DeploymentFacts:
        """Get Deployment as facts (cached until ``refresh``)."""
        if self._deployment is None or refresh:
            from harness.live.deployment_source import fetch

            self._deployment = fetch(self)
        return self._deployment

    def remember_deployment(self, facts: DeploymentFacts) -> None:
        """Cache a Get Deployment a wait has just read."""
        self._deployment = facts

    def model(self) -> ModelFacts:
        from harness.live.deployment_source import model

        return model(self)

    def wait_ready(self) -> ReadinessFacts:
        """Block until the deployment is Running and every instance ReadyRole (or the deadline)."""
        from harness.live.deployment_source import wait_ready

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
        if self._backend is not None:
            self._backend.close()
