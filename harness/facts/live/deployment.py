"""Facts of a live deployment: Get Deployment, readiness (every instance ReadyRole), and the service model.

Instance statuses (:mod:`harness.facts.live.platform`) are classified ``healthy`` (ReadyRole), ``transitional``
(keep polling until the deadline) and ``failed`` (stop polling: nothing will get better by waiting).
The deployment's ServiceConfiguration may contain secrets: ``configuration_xml`` is kept for parsing only
(hidden from ``repr``) and never goes into findings or evidence; ``xml`` (the evidence) has it stripped.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from harness.facts.live import platform
from harness.facts.live.platform import READY, RUNNING, STOPPED_VM
from harness.facts.servicemodel import ServiceConfiguration, ServiceDefinition

HEALTHY, TRANSITIONAL, FAILED = "healthy", "transitional", "failed"

#: Keep polling (with the deadline): the instance is on its way somewhere.
TRANSITIONAL_STATUSES = frozenset(
    {
        platform.UNKNOWN,
        platform.UNKNOWN_STATUS,
        platform.CREATING_VM,
        platform.STARTING_VM,
        platform.CREATING_ROLE,
        platform.STARTING_ROLE,
        platform.BUSY,
        platform.RESTARTING,
        platform.STOPPING,
        platform.STOPPING_VM,
        platform.PROVISIONING,
        platform.PREPARING,
    }
)
#: Stop polling: the platform gave up on the instance (or it is stopped and nothing will start it).
FAILED_STATUSES = frozenset(
    {
        platform.CYCLING,
        platform.FAILED_STARTING_ROLE,
        platform.FAILED_STARTING_VM,
        platform.UNRESPONSIVE,
        platform.PROVISIONING_FAILED,
        platform.PROVISIONING_TIMEOUT,
        platform.STOPPED_DEALLOCATED,
        platform.DELETING_VM,
    }
)
#: Deployment statuses that will not reach Running by waiting.
DEPLOYMENT_STOPPED_STATUSES = frozenset(
    {platform.SUSPENDED, platform.SUSPENDING, platform.SUSPENDED_TRANSITIONING, platform.DELETING}
)


def classify(status: str, *, locked: bool = False) -> str:
    """``healthy`` / ``transitional`` / ``failed`` for an InstanceStatus (unknown values: transitional)."""
    if status == READY:
        return HEALTHY
    if status == STOPPED_VM:  # reboot/reimage walk through it while their operation holds the deployment
        return TRANSITIONAL if locked else FAILED
    if status in FAILED_STATUSES:
        return FAILED
    return TRANSITIONAL


@dataclass(frozen=True)
class InstanceEndpointFacts:
    """One ``RoleInstance/InstanceEndpoints/InstanceEndpoint`` (InstanceInputEndpoints and the role's
    load-balanced input endpoints; ``protocol`` is the load-balancer-level one: tcp or udp)."""

    name: str
    protocol: str
    public_port: int | None
    local_port: int | None
    vip: str


@dataclass(frozen=True)
class InstanceFacts:
    name: str
    role: str
    status: str
    upgrade_domain: int | None
    fault_domain: int | None
    size: str
    ip: str
    power_state: str
    endpoints: tuple[InstanceEndpointFacts, ...] = ()
    state_details: str = ""
    error_code: str = ""
    host_name: str = ""
    #: a scale-set VM (management api ``vmss``): its instance id and computer name (``name`` is the computer
    #: name, what the guest and its answers call itself); empty for a classic role instance
    instance_id: str = ""
    computer_name: str = ""

    @property
    def label(self) -> str:
        """How findings name the instance: ``web000002 (instance 2)`` for a scale-set VM, else its name."""
        return f"{self.name} (instance {self.instance_id})" if self.instance_id else self.name

    def endpoint(self, name: str) -> InstanceEndpointFacts | None:
        return next((e for e in self.endpoints if e.name == name), None)


@dataclass(frozen=True)
class InputEndpointFacts:
    """A load-balanced input endpoint on the VIP. Get Deployment's ``InputEndpointList`` gives role, VIP and
    port; the name and local port come from the role's instances' endpoint lists, the protocol from the csdef
    when known (``protocol_source`` = ``csdef``), else from a well-known local port (80 http, 443 https:
    ``guessed``), else the load-balancer protocol (``lb``: tcp/udp)."""

    role: str
    name: str
    protocol: str
    port: int
    local_port: int | None
    vip: str
    protocol_source: str = "lb"
    certificate: str | None = None  # the csdef's certificate="…" (https), when the csdef is known


@dataclass(frozen=True)
class DeploymentFacts:
    service: str
    name: str
    slot: str
    status: str
    private_id: str
    url: str
    vips: tuple[str, ...]
    instances: tuple[InstanceFacts, ...]
    input_endpoints: tuple[InputEndpointFacts, ...]
    locked: bool = False
    label: str = ""
    sdk_version: str = ""
    upgrade_domain_count: int | None = None
    #: The ServiceConfiguration from the deployment (decoded). May contain secrets: never in findings.
    configuration_xml: str = field(default="", repr=False)
    configuration: ServiceConfiguration | None = field(default=None, repr=False)
    configuration_error: str | None = None
    #: The raw Get Deployment XML for evidence (masked; <Configuration> replaced by a placeholder); for a scale
    #: set, the ARM JSON documents read (masked).
    xml: str = field(default="", repr=False)
    request_id: str = ""
    fetch_seconds: float = 0.0
    #: the management back end that gave these facts (``asm`` or ``vmss``)
    api: str = "asm"
    #: role -> instance count the deployment asks for when it has no ServiceConfiguration (a scale set's
    #: capacity); empty: read the counts from ``configuration``
    expected_counts: tuple[tuple[str, int], ...] = ()

    @property
    def host_name(self) -> str:
        """The service's DNS name (from the deployment URL), e.g. ``contoso.cloudapp.net``."""
        return urllib.parse.urlsplit(self.url).hostname or ""

    @property
    def vip(self) -> str:
        return self.vips[0] if self.vips else ""

    def instance(self, name: str) -> InstanceFacts | None:
        return next((i for i in self.instances if i.name == name), None)

    def role_instances(self, role: str) -> tuple[InstanceFacts, ...]:
        return tuple(i for i in self.instances if i.role == role)

    @property
    def roles(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for inst in self.instances:
            seen.setdefault(inst.role, None)
        return tuple(seen)


@dataclass(frozen=True)
class ModelFacts:
    """The service model behind a live deployment: the csdef when the target names one, the cscfg from the
    deployment's Configuration."""

    definition: ServiceDefinition | None
    configuration: ServiceConfiguration | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class InstanceReadiness:
    name: str
    role: str
    status: str  # the last status seen
    classification: str  # healthy | transitional | failed
    ready_after: float | None  # seconds from the start of the wait to the first ReadyRole seen (None: never)
    upgrade_domain: int | None = None
    fault_domain: int | None = None
    power_state: str = ""
    state_details: str = ""
    error_code: str = ""
    instance_id: str = ""  # a scale-set VM's instance id (see InstanceFacts)


@dataclass(frozen=True)
class StatusChange:
    t: float  # seconds since the wait started
    subject: str  # an instance name, or "deployment"
    status: str


@dataclass(frozen=True)
class ReadinessFacts:
    """How waiting for the deployment to be Running with every instance ReadyRole went."""

    deadline: float  # the ready timeout, seconds
    elapsed: float
    deployment_status: str
    instances: tuple[InstanceReadiness, ...]
    deadline_passed: bool  # the wait ended on the deadline with something not ready
    failed_fast: bool  # the wait stopped early on a failed status
    history: tuple[StatusChange, ...] = ()
    polls: int = 0
    poll_errors: tuple[str, ...] = ()
    #: role → instance count the deployment's ServiceConfiguration asks for (None when unreadable)
    expected_counts: tuple[tuple[str, int], ...] = ()
    locked: bool = False

    @property
    def ready(self) -> bool:
        return self.deployment_status == RUNNING and all(i.classification == HEALTHY for i in self.instances)

    def by_classification(self, classification: str) -> tuple[InstanceReadiness, ...]:
        return tuple(i for i in self.instances if i.classification == classification)

    def history_text(self) -> str:
        return "\n".join(f"{c.t:8.3f}s  {c.subject:<24} {c.status}" for c in self.history)


__all__ = [
    "FAILED",
    "FAILED_STATUSES",
    "HEALTHY",
    "READY",
    "RUNNING",
    "STOPPED_VM",
    "TRANSITIONAL",
    "TRANSITIONAL_STATUSES",
    "DeploymentFacts",
    "InputEndpointFacts",
    "InstanceEndpointFacts",
    "InstanceFacts",
    "InstanceReadiness",
    "ModelFacts",
    "ReadinessFacts",
    "StatusChange",
    "classify",
]
