"""What the management API renders, and the lifecycle interface it drives (controller side)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

# The status strings the fabric walks through: one set for the whole project (harness/facts/live/platform.py).
from harness.facts.live.platform import BUSY as BUSY
from harness.facts.live.platform import IN_PROGRESS as IN_PROGRESS
from harness.facts.live.platform import READY as READY
from harness.facts.live.platform import RESTARTING as RESTARTING
from harness.facts.live.platform import STARTING_VM as STARTING_VM
from harness.facts.live.platform import STOPPED_VM as STOPPED_VM
from harness.facts.live.platform import STOPPING as STOPPING
from harness.facts.live.platform import SUCCEEDED as SUCCEEDED
from harness.facts.live.platform import UNKNOWN as UNKNOWN


class Conflict(Exception):
    """Another operation is in progress on the deployment (the API answers 409 ConflictError)."""


@dataclass(frozen=True)
class InstanceEndpointView:
    name: str
    protocol: str  # "tcp" | "udp" (http endpoints appear as tcp at LB level)
    public_port: int
    local_port: int
    vip: str


@dataclass(frozen=True)
class InstanceView:
    role_name: str
    instance_name: str  # WebVM_IN_0
    status: str  # one of the statuses above
    upgrade_domain: int
    fault_domain: int
    size: str  # vmsize
    ip_address: str
    power_state: str  # "Started" | "Stopped" | "Starting" | "Stopping"
    endpoints: tuple[InstanceEndpointView, ...] = ()


@dataclass(frozen=True)
class InputEndpointView:
    role_name: str
    name: str
    protocol: str
    port: int  # public port on the VIP
    local_port: int
    vip: str


@dataclass(frozen=True)
class DeploymentView:
    service_name: str
    name: str
    slot: str  # "Production" | "Staging"
    private_id: str
    status: str  # "Running" ...
    label: str
    url: str
    configuration: str  # the effective cscfg XML text (rendered base64 by the API)
    sdk_version: str
    vip: str
    instances: tuple[InstanceView, ...] = ()
    input_endpoints: tuple[InputEndpointView, ...] = ()
    roles: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (role name, os version / image)


@dataclass(frozen=True)
class OperationView:
    request_id: str
    status: str  # IN_PROGRESS | SUCCEEDED | FAILED
    http_status_code: int  # 200 when succeeded; the error's code when failed
    error_code: str | None = None
    error_message: str | None = None


class Lifecycle(Protocol):
    def deployment(self) -> DeploymentView: ...

    def start_operation(self, kind: str, instance_id: str) -> str:
        """Start reboot/reimage/rebuild; returns the request id. Raises Conflict or KeyError."""
        ...

    def operation(self, request_id: str) -> OperationView | None: ...
