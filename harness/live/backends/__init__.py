"""Management back ends: how the live side reaches a deployment, whatever API manages it.

``management.api`` in the target file picks one (:func:`backend_for`):

- ``asm`` (the default): the classic Service Management API (:mod:`harness.live.backends.asm`, over
  :mod:`harness.live.management`);
- ``vmss``: an Azure Resource Manager VM scale set behind a load balancer (:mod:`harness.live.backends.vmss`,
  over azure-mgmt-compute, azure-mgmt-network and azure-identity).

Every back end gives the same calls (:class:`Backend`): the deployment as :class:`DeploymentFacts` (instances
with the platform statuses of :mod:`harness.facts.live.platform`, the load-balanced endpoints, per-instance
endpoints), and operations on ONE instance at a time (:class:`Operations`: reboot or reimage, followed to the
end within a deadline). The probes and the rules never know which back end answered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.facts.live.deployment import DeploymentFacts
    from harness.facts.live.reimage import DataDisk
    from harness.live.context import LiveContext
    from harness.live.management import OperationResult, OperationStatus


class Operations(Protocol):
    """Operations on one instance (never the whole deployment or scale set)."""

    def start_operation(self, kind: str, instance: str) -> str:
        """Start ``reboot`` or ``reimage`` (``rebuild``: asm only) of ``instance`` (its name in the facts);
        returns the operation's id (the request id Azure gave it)."""
        ...

    def wait_operation(
        self,
        request_id: str,
        timeout: float | None = None,
        *,
        deadline: float | None = None,
        interval: float = 0.5,
        on_poll: Callable[[OperationStatus], None] | None = None,
    ) -> OperationResult:
        """Follow the operation until Succeeded/Failed or the deadline (never raises for a failed poll)."""
        ...


class Backend(Protocol):
    api: str

    def fetch(self) -> DeploymentFacts:
        """The deployment as facts; StageError when the API cannot be used at all."""
        ...

    def operations(self) -> Operations: ...

    def down(self) -> bool:
        """The management API was found unreachable in this run (polling on would only wait)."""
        ...

    def data_disks(self, instance: str) -> tuple[DataDisk, ...] | None:
        """The data disks the platform attaches to ``instance`` (a scale-set VM model's
        ``storageProfile.dataDisks``: LUN and name); None where the API has none (asm: LocalStorage instead).
        Raises the back end's error (a :class:`harness.live.management.ManagementError`) when it cannot say."""
        ...

    def close(self) -> None: ...


def backend_for(ctx: LiveContext) -> Backend:
    """The back end the target names (``management.api``)."""
    api = ctx.target.management.api
    if api == "vmss":
        from harness.live.backends.vmss import VmssBackend

        return VmssBackend(ctx)
    from harness.live.backends.asm import AsmBackend

    return AsmBackend(ctx)


__all__ = ["Backend", "Operations", "backend_for"]
