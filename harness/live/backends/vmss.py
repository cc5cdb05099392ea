"""The ARM VM scale set back end (``management.api: vmss``): a scale set behind a load balancer, through the real
clients: azure-mgmt-compute (the scale set, its VMs with their instance views, reimage/restart pollers),
azure-mgmt-network (the load balancer: frontend IPs, load-balancing rules, probes, inbound NAT rules; network
interfaces and instance public IPs) and an azure-identity credential the target file chooses.

What the rules read is the same typed facts as the classic back end: each scale-set VM is an instance named by
its computer name (what the guest calls itself), with its instance id beside it (``InstanceFacts.instance_id``,
``label`` = ``web000002 (instance 2)``); the scale set is the role; the load balancer's frontend IP is the VIP,
its load-balancing rules the input endpoints, an inbound NAT rule (or an instance public IP) an instance's own
endpoint (WinRM is reached through it).

Instance states map onto the platform statuses the rules know (:func:`instance_status`; the instance view's
``ProvisioningState/*`` and ``PowerState/*`` codes, and the Application Health extension's ``HealthState/*``
when installed):

================================================  ===========================  ==============
instance view                                      status                       classification
================================================  ===========================  ==============
ProvisioningState/failed/<code>                    ProvisioningFailed           failed
ProvisioningState/deleting                         DeletingVM                   failed
ProvisioningState/creating                         CreatingVM                   transitional
PowerState/deallocated                             StoppedDeallocated           failed
PowerState/deallocating, PowerState/stopping       StoppingVM                   transitional
PowerState/stopped                                 StoppedVM                    failed (locked:
                                                                                transitional)
PowerState/starting                                StartingVM                   transitional
ProvisioningState/updating (running)               RestartingRole               transitional
PowerState/running + HealthState/unhealthy         BusyRole                     transitional
PowerState/running + HealthState/initializing      StartingRole                 transitional
PowerState/running (healthy, or no health state)   ReadyRole                    healthy
no power state                                     Unknown                      transitional
================================================  ===========================  ==============

The scale set is ``Running`` unless it is being deleted (``Deleting``); it is ``locked`` (an operation holds
it, as Service Management's Locked) while the scale set or one of its VMs is ``Updating``.
States: https://learn.microsoft.com/en-us/azure/virtual-machines/states-billing and
https://learn.microsoft.com/en-us/azure/virtual-machine-scale-sets/virtual-machine-scale-sets-health-extension

Requests: every answer's ``x-ms-request-id`` and ``x-ms-correlation-request-id`` are kept (the evidence of a
failure names them); 429 (with ``Retry-After``) and transient 5xx are retried by azure-core's RetryPolicy within
a budget (:class:`BudgetRetryPolicy`: a ``Retry-After`` past the budget is not waited for); 409 at the start
of an operation is retried with backoff up to ``timeouts.conflict_retry``; an operation is followed through its
azure-core poller until its deadline. Failures are :class:`ArmError`: a named cause, the HTTP status, Azure's
error code and the request ids, masked — never a token (azure-core's logging policies redact Authorization).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.facts.live import platform
from harness.facts.live.deployment import DeploymentFacts, InstanceEndpointFacts, InstanceFacts
from harness.facts.live.reimage import DataDisk
from harness.facts.servicemodel import ServiceDefinition
from harness.live.backends.common import as_int, definition, input_endpoints
from harness.live.errors import StageError, TargetError
from harness.live.health import MGMT
from harness.live.management import ManagementError, OperationResult, OperationStatus
from harness.live.masking import Masker

if TYPE_CHECKING:  # pragma: no cover - typing only
    from azure.core.credentials import TokenCredential
    from azure.core.polling import LROPoller

    from harness.live.context import LiveContext
    from harness.live.target import Target

API = "vmss"
#: seconds a request (with its retries) may take before it is given up
REQUEST_BUDGET = 60.0
#: the pollers' interval when Azure sends no Retry-After
POLLING_INTERVAL = 2.0
#: operation kind -> the scale-set VM operation (ONE instance: never the scale set's own reimage/restart)
OPERATIONS = {"reimage": "begin_reimage", "reboot": "begin_restart", "rebuild": "begin_reimage_all"}
_NAT_POOL_SUFFIX = re.compile(r"\.\d+$")  # rules an inbound NAT pool makes are named <pool>.<n>
_VM_OF_IPCONFIG = re.compile(r"/virtualMachineScaleSets/([^/]+)/virtualMachines/([^/]+)/", re.IGNORECASE)


# ---- errors ----------------------------------------------------------------------------------------------
class ArmError(ManagementError):
    """An ARM call that failed for good (after any retries): a named cause, never a token. The fields of
    :class:`ManagementError`, and the answer's ``x-ms-correlation-request-id``."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str = "",
        correlation_id: str = "",
        attempts: int = 1,
        known_down: bool = False,
    ) -> None:
        super().__init__(
            message, status=status, code=code, request_id=request_id, attempts=attempts, known_down=known_down
        )
        self.correlation_id = correlation_id


def _ids(request_id: str, correlation_id: str) -> str:
    """The request ids an error or log line names (those the answer had)."""
    parts = (
        f"x-ms-request-id {request_id}" if request_id else "",
        f"x-ms-correlation-request-id {correlation_id}" if correlation_id else "",
    )
    return ", ".join(p for p in parts if p)


@dataclass
class Exchange:
    """One HTTP answer seen by the client pipeline (every attempt, retries included)."""

    method: str
    path: str
    status: int
    request_id: str = ""
    correlation_id: str = ""
    retry_after: str = ""


@dataclass
class Recorder:
    """Keeps what each answer said (``raw_response_hook`` of azure-core's CustomHookPolicy, per attempt)."""

    exchanges: list[Exchange] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    local: threading.local = field(default_factory=threading.local)

    def __call__(self, response: Any) -> None:
        http = response.http_response
        request = response.http_request
        headers = http.headers
        path = request.url.split("?", 1)[0]
        host = path.split("//", 1)[-1]
        exchange = Exchange(
            method=request.method,
            path="/" + host.split("/", 1)[1] if "/" in host else path,
            status=int(http.status_code),
            request_id=headers.get("x-ms-request-id", ""),
            correlation_id=headers.get("x-ms-correlation-request-id", ""),
            retry_after=headers.get("Retry-After", ""),
        )
        with self.lock:
            self.exchanges.append(exchange)
            del self.exchanges[:-200]
        self.local.last = exchange
        self.local.attempts = int(getattr(self.local, "attempts", 0)) + 1

    def last(self) -> Exchange | None:
        return getattr(self.local, "last", None)

    def reset(self) -> None:
        """A new call on this thread: forget its last answer, count its attempts from zero."""
        self.local.last = None
        self.local.attempts = 0

    def attempts(self) -> int:
        """Answers this thread's call has had since :meth:`reset` (its retries included)."""
        return int(getattr(self.local, "attempts", 0))


def _budget_retry_policy(budget: float, log: Callable[..., None]) -> Any:
    """azure-core's RetryPolicy (429 with Retry-After, 408, 5xx, connection errors) within ``budget`` seconds:
    a retry whose wait (Retry-After or backoff) would pass the budget is not made: the answer stands."""
    from azure.core.pipeline.policies import RetryPolicy

    class BudgetRetryPolicy(RetryPolicy):
        def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
            settings: dict[str, Any] = super().configure_retries(options)
            settings["vmr_start"] = time.monotonic()
            return settings

        def increment(self, settings: dict[str, Any], response: Any = None, error: Any = None) -> bool:
            if not super().increment(settings, response=response, error=error):
                return False
            http = getattr(response, "http_response", None)
            wait = self.get_retry_after(response) if http is not None else None
            if wait is None:
                wait = self.get_backoff_time(settings)
            spent = time.monotonic() - settings["vmr_start"]
            what = f"{http.status_code}" if http is not None else type(error).__name__
            if spent + wait > budget:
                log(f"ARM: {what}, not retried: waiting {wait:.1f} s would pass the {budget:g} s budget")
                return False
            log(f"ARM: {what}, retrying in {wait:.2f} s", delay=round(wait, 3))
            return True

    return BudgetRetryPolicy(
        retry_total=6,
        retry_connect=2,
        retry_read=1,
        retry_status=6,
        retry_backoff_factor=0.5,
        retry_backoff_max=8,
        timeout=budget,
    )


# ---- the clients ----------------------------------------------------------------------------------------
def _transport(target: Target) -> Any:
    """A requests transport of our own: the target's CA bundle (not REQUESTS_CA_BUNDLE: trust_env off),
    connect and read timeouts."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport

    session = requests.Session()
    session.trust_env = False
    mgmt = target.management
    verify: bool | str = str(mgmt.ca) if mgmt.ca is not None else mgmt.verify
    session.verify = verify
    return RequestsTransport(
        session=session,
        session_owner=True,
        connection_verify=verify,  # the transport passes its own verify to every request (session.verify is not read)
        connection_timeout=float(target.timeouts.connect),
        read_timeout=float(target.timeouts.read),
    )


def credential_for(target: Target) -> TokenCredential:
    """The azure-identity credential the target file names (``management.credential.kind``)."""
    import azure.identity as identity

    mgmt = target.management
    cred = mgmt.credential
    kwargs: dict[str, Any] = {"transport": _transport(target)}
    if mgmt.authority:
        kwargs["authority"] = mgmt.authority
        kwargs["disable_instance_discovery"] = True  # a non-public cloud or the local fabric: no discovery
    if cred.kind == "client_secret":
        assert cred.tenant_id and cred.client_id
        return identity.ClientSecretCredential(cred.tenant_id, cred.client_id, target.secret(cred.secret), **kwargs)
    if cred.kind == "workload_identity":
        token_file = str(cred.token_file) if cred.token_file else None
        return identity.WorkloadIdentityCredential(
            tenant_id=cred.tenant_id, client_id=cred.client_id, token_file_path=token_file, **kwargs
        )
    if cred.kind == "managed_identity":
        kwargs.pop("authority", None), kwargs.pop("disable_instance_discovery", None)
        return identity.ManagedIdentityCredential(client_id=cred.client_id, **kwargs)
    if cred.kind == "cli":
        return identity.AzureCliCredential(tenant_id=cred.tenant_id or "", process_timeout=int(target.timeouts.read))
    if cred.client_id:
        kwargs["managed_identity_client_id"] = cred.client_id
    if cred.tenant_id:
        kwargs["additionally_allowed_tenants"] = [cred.tenant_id]
    return identity.DefaultAzureCredential(**kwargs)


class MaskingCredential:
    """The target's credential, telling the masker every token it hands out: a token that would reach any
    text (an error message quoting a header, a log line) is masked like the target's secrets."""

    def __init__(self, inner: Any, masker: Masker) -> None:
        self.inner = inner
        self.masker = masker

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        token = self.inner.get_token(*scopes, **kwargs)
        self.masker.add(token.token)
        return token

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        if not hasattr(self.inner, "get_token_info"):
            return self.get_token(*scopes)
        info = self.inner.get_token_info(*scopes, options=options)
        self.masker.add(info.token)
        return info

    def close(self) -> None:
        getattr(self.inner, "close", lambda: None)()


class ArmClients:
    """The compute and network clients of one target, sharing one credential and one recorder."""

    def __init__(
        self, target: Target, *, log: Callable[..., None], budget: float = REQUEST_BUDGET, masker: Masker | None = None
    ) -> None:
        from azure.mgmt.compute import ComputeManagementClient
        from azure.mgmt.network import NetworkManagementClient

        mgmt = target.management
        self.recorder = Recorder()
        self.credential = MaskingCredential(credential_for(target), masker or Masker())
        base_url = mgmt.url.rstrip("/")
        common: dict[str, Any] = {
            "base_url": base_url,
            "credential_scopes": [f"{mgmt.audience}/.default"],
            "raw_response_hook": self.recorder,
            "polling_interval": POLLING_INTERVAL,
        }
        self.compute = ComputeManagementClient(
            self.credential,
            mgmt.subscription_id,
            transport=_transport(target),
            retry_policy=_budget_retry_policy(budget, log),
            **common,
        )
        self.network = NetworkManagementClient(
            self.credential,
            mgmt.subscription_id,
            transport=_transport(target),
            retry_policy=_budget_retry_policy(budget, log),
            **common,
        )

    def close(self) -> None:
        for client in (self.compute, self.network, self.credential):
            with contextlib.suppress(Exception):
                getattr(client, "close", lambda: None)()


# ---- pure mapping: ARM JSON (wire format) -> facts ---------------------------------------------------------
def _props(doc: dict[str, Any] | None) -> dict[str, Any]:
    value = (doc or {}).get("properties")
    return value if isinstance(value, dict) else {}


def _codes(statuses: Iterable[dict[str, Any]] | None, prefix: str) -> str:
    """The first ``<prefix>/<value>`` code's value, lower case ('' when none)."""
    for status in statuses or ():
        code = str(status.get("code") or "")
        if code.lower().startswith(prefix.lower() + "/"):
            return code.split("/", 1)[1]
    return ""


def instance_status(provisioning: str, power: str, health: str = "") -> tuple[str, str, str]:
    """(platform status, power state, error code) of a scale-set VM (the table in the module docstring)."""
    prov = provisioning.lower()
    pw = power.lower()
    hl = health.lower()
    power_state = platform.STARTED if pw == "running" else platform.STOPPED if pw else ""
    if prov.startswith("failed"):
        return platform.PROVISIONING_FAILED, power_state, provisioning.split("/", 1)[1] if "/" in prov else ""
    if prov == "deleting":
        return platform.DELETING_VM, power_state, ""
    if prov == "creating":
        return platform.CREATING_VM, power_state, ""
    if pw == "deallocated":
        return platform.STOPPED_DEALLOCATED, power_state, ""
    if pw in ("deallocating", "stopping"):
        return platform.STOPPING_VM, power_state, ""
    if pw == "stopped":
        return platform.STOPPED_VM, power_state, ""
    if pw == "starting":
        return platform.STARTING_VM, power_state, ""
    if prov == "updating":
        return platform.RESTARTING, power_state, ""
    if pw == "running":
        if hl == "unhealthy":
            return platform.BUSY, power_state, ""
        if hl == "initializing":
            return platform.STARTING_ROLE, power_state, ""
        return platform.READY, power_state, ""
    return platform.UNKNOWN_STATUS, power_state, ""


def nat_endpoint_name(rule: str, scale_set: str, *, pool: bool = True) -> str:
    """The endpoint a load balancer rule stands for: an inbound NAT pool's rules are named ``<pool>.<n>``
    (``pool``), and a rule or pool named ``<scale set>-<endpoint>`` (one load balancer in front of several scale
    sets, as a cloud service with several roles becomes) is that endpoint: ``WebVM-WinRM.2`` of scale set WebVM
    is ``WinRM``, load-balancing rule ``WebVM-HttpIn`` is ``HttpIn``."""
    base = _NAT_POOL_SUFFIX.sub("", rule) if pool else rule
    prefix = f"{scale_set}-"
    return (
        base[len(prefix) :]
        if scale_set and base.lower().startswith(prefix.lower()) and len(base) > len(prefix)
        else base
    )


def _vm_of(ip_configuration_id: str, scale_set: str) -> str | None:
    """The instance id an ipConfiguration id names (of this scale set), else None."""
    match = _VM_OF_IPCONFIG.search(ip_configuration_id or "")
    if match is None or match.group(1).lower() != scale_set.lower():
        return None
    return match.group(2)


@dataclass(frozen=True)
class ScaleSetDocuments:
    """What one discovery read (ARM JSON, wire format)."""

    scale_set: dict[str, Any]
    vms: list[dict[str, Any]]
    load_balancer: dict[str, Any] | None = None
    #: public IP resource id (lower case) -> the public IP document
    public_ips: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the scale set's network interfaces (private IPs), and the instance public IPs
    nics: list[dict[str, Any]] = field(default_factory=list)
    instance_public_ips: list[dict[str, Any]] = field(default_factory=list)
    notes: tuple[str, ...] = ()
    #: x-ms-request-id of the VM list (the instances' states) this discovery read
    request_id: str = ""


def _frontends(docs: ScaleSetDocuments) -> dict[str, tuple[str, str]]:
    """frontend IP configuration id (lower case) -> (address, fqdn)."""
    out: dict[str, tuple[str, str]] = {}
    for fe in _props(docs.load_balancer).get("frontendIPConfigurations") or ():
        p = _props(fe)
        address, fqdn = str(p.get("privateIPAddress") or ""), ""
        pip_id = str((p.get("publicIPAddress") or {}).get("id") or "")
        pip = docs.public_ips.get(pip_id.lower())
        if pip is not None:
            pp = _props(pip)
            address = str(pp.get("ipAddress") or address)
            fqdn = str((pp.get("dnsSettings") or {}).get("fqdn") or "")
        out[str(fe.get("id") or "").lower()] = (address, fqdn)
        out.setdefault(f"name:{str(fe.get('name') or '').lower()}", (address, fqdn))
    return out


def _frontend_of(rule: dict[str, Any], frontends: dict[str, tuple[str, str]]) -> str:
    fe_id = str((_props(rule).get("frontendIPConfiguration") or {}).get("id") or "").lower()
    if fe_id in frontends:
        return frontends[fe_id][0]
    return next((v[0] for k, v in frontends.items() if not k.startswith("name:")), "")


def scale_set_facts(
    docs: ScaleSetDocuments,
    *,
    winrm_endpoint: str = "WinRM",
    winrm_port: int = 5986,
    winrm_addresses: Iterable[tuple[str, str, int]] = (),
    request_id: str = "",
    seconds: float = 0.0,
    definition: ServiceDefinition | None = None,
    masker: Masker | None = None,
) -> DeploymentFacts:
    """Facts of a scale set, its VMs and its load balancer (pure: ARM JSON in, facts out)."""
    vmss = docs.scale_set
    name = str(vmss.get("name") or "")
    vp = _props(vmss)
    frontends = _frontends(docs)
    lb = _props(docs.load_balancer)
    rules = [r for r in lb.get("loadBalancingRules") or () if _props(r).get("frontendPort") is not None]
    lb_endpoints = [
        InstanceEndpointFacts(
            name=nat_endpoint_name(str(r.get("name") or ""), name, pool=False),
            protocol=str(_props(r).get("protocol") or "tcp").lower(),
            public_port=as_int(_props(r).get("frontendPort")),
            local_port=as_int(_props(r).get("backendPort")),
            vip=_frontend_of(r, frontends),
        )
        for r in rules
    ]
    nat: dict[str, list[InstanceEndpointFacts]] = {}
    for rule in lb.get("inboundNatRules") or ():
        p = _props(rule)
        instance_id = _vm_of(str((p.get("backendIPConfiguration") or {}).get("id") or ""), name)
        if instance_id is None or p.get("frontendPort") is None:
            continue
        nat.setdefault(instance_id, []).append(
            InstanceEndpointFacts(
                name=nat_endpoint_name(str(rule.get("name") or ""), name),
                protocol=str(p.get("protocol") or "tcp").lower(),
                public_port=as_int(p.get("frontendPort")),
                local_port=as_int(p.get("backendPort")),
                vip=_frontend_of(rule, frontends),
            )
        )
    private_ip: dict[str, str] = {}
    for nic in docs.nics:
        for ipc in _props(nic).get("ipConfigurations") or ():
            instance_id = _vm_of(str(ipc.get("id") or ""), name)
            address = str(_props(ipc).get("privateIPAddress") or "")
            if instance_id is not None and address and (_props(ipc).get("primary", True)):
                private_ip.setdefault(instance_id, address)
    public_ip: dict[str, str] = {}
    for pip in docs.instance_public_ips:
        pp = _props(pip)
        instance_id = _vm_of(str((pp.get("ipConfiguration") or {}).get("id") or ""), name)
        if instance_id is not None and pp.get("ipAddress"):
            public_ip.setdefault(instance_id, str(pp["ipAddress"]))

    instances = []
    any_updating = str(vp.get("provisioningState") or "").lower() == "updating"
    for vm in sorted(docs.vms, key=lambda v: (as_int(v.get("instanceId")) or 0, str(v.get("instanceId")))):
        p = _props(vm)
        raw_view = p.get("instanceView")
        view: dict[str, Any] = raw_view if isinstance(raw_view, dict) else {}
        statuses = view.get("statuses") or ()
        provisioning = _codes(statuses, "ProvisioningState") or str(p.get("provisioningState") or "")
        any_updating = any_updating or provisioning.lower() == "updating"
        health = _codes([(view.get("vmHealth") or {}).get("status") or {}], "HealthState")
        status, power_state, error_code = instance_status(provisioning, _codes(statuses, "PowerState"), health)
        instance_id = str(vm.get("instanceId") or "")
        computer = str((p.get("osProfile") or {}).get("computerName") or view.get("computerName") or "")
        endpoints = list(lb_endpoints) + nat.get(instance_id, [])
        given = next(
            ((host, port) for who, host, port in winrm_addresses if who in (instance_id, computer, vm.get("name"))),
            None,
        )
        if given is not None:  # the target file's address wins over a NAT rule or public IP
            endpoints = [e for e in endpoints if e.name.lower() != winrm_endpoint.lower()]
            endpoints.append(InstanceEndpointFacts(winrm_endpoint, "tcp", given[1], winrm_port, given[0]))
        if instance_id in public_ip and not any(e.name.lower() == winrm_endpoint.lower() for e in endpoints):
            endpoints.append(
                InstanceEndpointFacts(winrm_endpoint, "tcp", winrm_port, winrm_port, public_ip[instance_id])
            )
        details = "; ".join(
            str(s.get("displayStatus") or s.get("code"))
            for s in statuses
            if str(s.get("level") or "").lower() in ("warning", "error")
        )
        instances.append(
            InstanceFacts(
                name=computer or str(vm.get("name") or instance_id),
                role=name,
                status=status,
                upgrade_domain=as_int(view.get("platformUpdateDomain")),
                fault_domain=as_int(view.get("platformFaultDomain")),
                size=str((vm.get("sku") or {}).get("name") or ""),
                ip=private_ip.get(instance_id, ""),
                power_state=power_state,
                endpoints=tuple(endpoints),
                state_details=details,
                error_code=error_code,
                host_name=computer,
                instance_id=instance_id,
                computer_name=computer,
            )
        )
    facts_instances = tuple(instances)
    vips = tuple(dict.fromkeys(v[0] for k, v in frontends.items() if not k.startswith("name:") and v[0]))
    fqdn = next((v[1] for v in frontends.values() if v[1]), "")
    raw = [(name, _frontend_of(r, frontends), as_int(_props(r).get("frontendPort"))) for r in rules]
    capacity = as_int((vmss.get("sku") or {}).get("capacity"))
    masker = masker or Masker()
    return DeploymentFacts(
        service=name,
        name=name,
        slot="",
        status=platform.DELETING if str(vp.get("provisioningState") or "").lower() == "deleting" else platform.RUNNING,
        private_id=str(vp.get("uniqueId") or ""),
        url=f"http://{fqdn}/" if fqdn else "",
        vips=vips,
        instances=facts_instances,
        input_endpoints=input_endpoints(raw, facts_instances, definition, vips[0] if vips else ""),
        locked=any_updating,
        configuration=None,
        configuration_error=(
            "a VM scale set has no ServiceConfiguration (cscfg): settings and certificates come from its model"
        ),
        xml=masker(evidence_json(docs)),
        request_id=request_id,
        fetch_seconds=seconds,
        api=API,
        expected_counts=((name, capacity),) if capacity is not None else (),
    )


def evidence_json(docs: ScaleSetDocuments) -> str:
    """What discovery read, trimmed to what the facts came from (no OS profile, no user data, no secrets)."""
    vp = _props(docs.scale_set)
    summary: dict[str, Any] = {
        "scaleSet": {
            "id": docs.scale_set.get("id"),
            "sku": docs.scale_set.get("sku"),
            "provisioningState": vp.get("provisioningState"),
        },
        "virtualMachines": [
            {
                "instanceId": vm.get("instanceId"),
                "name": vm.get("name"),
                "computerName": (_props(vm).get("osProfile") or {}).get("computerName"),
                "provisioningState": _props(vm).get("provisioningState"),
                "statuses": [s.get("code") for s in ((_props(vm).get("instanceView") or {}).get("statuses") or ())],
                "vmHealth": ((_props(vm).get("instanceView") or {}).get("vmHealth") or {}).get("status"),
            }
            for vm in docs.vms
        ],
    }
    if docs.load_balancer is not None:
        lb = _props(docs.load_balancer)
        summary["loadBalancer"] = {
            "id": docs.load_balancer.get("id"),
            "loadBalancingRules": [
                {"name": r.get("name"), **_pick(_props(r))} for r in lb.get("loadBalancingRules") or ()
            ],
            "inboundNatRules": [{"name": r.get("name"), **_pick(_props(r))} for r in lb.get("inboundNatRules") or ()],
            "probes": [{"name": r.get("name"), **_pick(_props(r))} for r in lb.get("probes") or ()],
        }
    if docs.notes:
        summary["notes"] = list(docs.notes)
    return json.dumps(summary, indent=1, default=str)


def _pick(p: dict[str, Any]) -> dict[str, Any]:
    keys = ("protocol", "frontendPort", "backendPort", "port", "requestPath", "intervalInSeconds", "numberOfProbes")
    out = {k: p[k] for k in keys if k in p}
    backend = (p.get("backendIPConfiguration") or {}).get("id")
    if backend:
        out["backendIPConfiguration"] = backend
    return out


def load_balancer_of(scale_set: dict[str, Any]) -> tuple[str, str] | None:
    """(resource group, name) of the load balancer whose backend pool the scale set's NICs join."""
    profile = (_props(scale_set).get("virtualMachineProfile") or {}).get("networkProfile") or {}
    for nic in profile.get("networkInterfaceConfigurations") or ():
        for ipc in _props(nic).get("ipConfigurations") or ():
            ipp = _props(ipc)
            for ref in (ipp.get("loadBalancerBackendAddressPools") or []) + (
                ipp.get("loadBalancerInboundNatPools") or []
            ):
                match = re.search(
                    r"/resourceGroups/([^/]+)/providers/Microsoft\.Network/loadBalancers/([^/]+)/",
                    str(ref.get("id") or ""),
                    re.IGNORECASE,
                )
                if match:
                    return match.group(1), match.group(2)
    return None


# ---- the back end ----------------------------------------------------------------------------------------
@dataclass
class _Operation:
    kind: str
    instance: str
    instance_id: str
    poller: LROPoller[Any]
    started: float
    request_id: str
    correlation_id: str


class VmssBackend:
    """:class:`harness.live.backends.Backend` over ARM for one scale set."""

    api = API

    def __init__(self, ctx: LiveContext, *, budget: float = REQUEST_BUDGET) -> None:
        self.ctx = ctx
        self.target = ctx.target
        self.budget = budget
        self._clients: ArmClients | None = None
        self._operations: dict[str, _Operation] = {}
        #: the first discovery's load balancer, public IPs and NICs (later discoveries read the VMs only)
        self._network: ScaleSetDocuments | None = None
        #: seconds between a poller's status requests when Azure sends no Retry-After
        self.polling_interval = POLLING_INTERVAL
        mgmt = self.target.management
        self.base_url = mgmt.url.rstrip("/")
        assert mgmt.resource_group and mgmt.scale_set
        self.resource_group = mgmt.resource_group
        self.scale_set = mgmt.scale_set

    # ---- plumbing ---------------------------------------------------------------------------------
    def clients(self) -> ArmClients:
        if self._clients is None:
            try:
                self._clients = ArmClients(self.target, log=self.ctx.log, budget=self.budget, masker=self.ctx.masker)
            except ImportError as exc:
                raise StageError(
                    f"the ARM clients are not installed ({exc.name or exc}): pip install 'vmrole-harness[live]' "
                    "(azure-identity, azure-mgmt-compute, azure-mgmt-network)"
                ) from None
            except (TargetError, OSError, ValueError) as exc:
                raise StageError(self.ctx.masker(f"the ARM clients cannot be set up: {exc}")) from None
        return self._clients

    def down(self) -> bool:
        return self.ctx.health.down(MGMT, self.base_url) is not None

    def close(self) -> None:
        if self._clients is not None:
            self._clients.close()
            self._clients = None

    def call(self, what: str, fn: Callable[[ArmClients], Any]) -> Any:
        """One ARM call (azure-core retries inside it), its failure as an :class:`ArmError`."""
        down = self.ctx.health.down(MGMT, self.base_url)
        if down is not None:
            raise ArmError(self.ctx.masker(f"{what}: not tried: {down.reason}"), known_down=True)
        clients = self.clients()
        clients.recorder.reset()
        try:
            result = fn(clients)
        except Exception as exc:
            raise self._error(what, exc, clients.recorder) from None
        self.ctx.health.mark_up(MGMT, self.base_url)
        return result

    def _error(self, what: str, exc: Exception, recorder: Recorder) -> ArmError:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        masker = self.ctx.masker
        last = recorder.last()
        response = getattr(exc, "response", None)
        status = getattr(exc, "status_code", None) or (last.status if last else None)
        headers = getattr(response, "headers", None) or {}
        request_id = headers.get("x-ms-request-id", "") or (last.request_id if last else "")
        correlation_id = headers.get("x-ms-correlation-request-id", "") or (last.correlation_id if last else "")
        error = getattr(exc, "error", None)
        code = getattr(error, "code", None) or None
        message = " ".join(str(getattr(error, "message", "") or "").split())
        attempts = recorder.attempts() or 1
        ids = _ids(request_id, correlation_id)
        where = f" ({ids})" if ids else ""
        if isinstance(exc, ClientAuthenticationError) and status is None:
            cause = f"the credential ({self.target.management.credential.kind}) could not get a token: {_short(exc)}"
        elif isinstance(exc, ClientAuthenticationError) or status in (401, 403):
            cause = f"authentication or authorization failed: {status} {code or ''}".rstrip()
            cause += f": {message}" if message else ""
        elif isinstance(exc, ResourceNotFoundError) or status == 404:
            cause = f"not found: {status} {code or 'NotFound'}" + (f": {message}" if message else "")
        elif status == 429:
            after = f", Retry-After {last.retry_after} s" if last and last.retry_after else ""
            cause = f"throttled: 429 {code or 'TooManyRequests'}{after} (retried within the {self.budget:g} s budget)"
        elif isinstance(exc, HttpResponseError) and status is not None:
            cause = f"the management API answered {status} {code or 'error'}" + (f": {message}" if message else "")
        elif isinstance(exc, (ServiceRequestError, ServiceResponseError)):
            text = str(exc).lower()
            refused = "refused" in text
            timed_out = "timed out" in text or "timeout" in text
            cause = (
                f"the management API at {self.base_url} is unreachable ("
                + ("connection refused" if refused else "no answer in time" if timed_out else _short(exc))
                + ")"
            )
            if refused or timed_out:
                self.ctx.health.mark_down(
                    MGMT, self.base_url, "refused connections" if refused else "did not answer", certain=refused
                )
        else:
            cause = f"{type(exc).__name__}: {_short(exc)}"
        if attempts > 1:
            cause += f" after {attempts} attempts"
        return ArmError(
            masker(f"{what}: {cause}{where}"),
            status=status,
            code=code,
            request_id=request_id,
            correlation_id=correlation_id,
            attempts=attempts,
        )

    # ---- discovery -----------------------------------------------------------------------------------
    def documents(self) -> ScaleSetDocuments:
        rg, name = self.resource_group, self.scale_set
        notes: list[str] = []
        vmss = self.call(
            f"Get scale set {rg}/{name}", lambda c: c.compute.virtual_machine_scale_sets.get(rg, name).as_dict()
        )
        vms = self.call(
            f"List VMs of scale set {rg}/{name}",
            lambda c: [
                v.as_dict() for v in c.compute.virtual_machine_scale_set_vms.list(rg, name, expand="instanceView")
            ],
        )
        listed = self.clients().recorder.last()
        request_id = listed.request_id if listed else ""
        if self._network is not None:  # the load balancer and addresses of this run: read once (polls read states)
            return dataclasses.replace(self._network, scale_set=vmss, vms=vms, request_id=request_id)
        lb_ref = (rg, self.target.management.load_balancer) if self.target.management.load_balancer else None
        lb_ref = lb_ref or load_balancer_of(vmss)
        lb: dict[str, Any] | None = None
        public_ips: dict[str, dict[str, Any]] = {}
        if lb_ref is None:
            notes.append("the scale set's network profile names no load balancer and the target names none")
        else:
            lb_rg, lb_name = lb_ref
            lb = self.call(
                f"Get load balancer {lb_rg}/{lb_name}",
                lambda c: c.network.load_balancers.get(lb_rg, lb_name).as_dict(),
            )
            for fe in _props(lb).get("frontendIPConfigurations") or ():
                pip_id = str((_props(fe).get("publicIPAddress") or {}).get("id") or "")
                match = re.search(r"/resourceGroups/([^/]+)/.*/publicIPAddresses/([^/]+)$", pip_id, re.IGNORECASE)
                if match:
                    pip_rg, pip_name = match.group(1), match.group(2)
                    public_ips[pip_id.lower()] = self.call(
                        f"Get public IP {pip_rg}/{pip_name}",
                        _public_ip_getter(pip_rg, pip_name),
                    )
        nics: list[dict[str, Any]] = []
        instance_ips: list[dict[str, Any]] = []
        try:
            nics = self.call(
                f"List network interfaces of {rg}/{name}",
                lambda c: [
                    n.as_dict()
                    for n in c.network.network_interfaces.list_virtual_machine_scale_set_network_interfaces(rg, name)
                ],
            )
            instance_ips = self.call(
                f"List instance public IPs of {rg}/{name}",
                lambda c: [
                    p.as_dict()
                    for p in c.network.public_ip_addresses.list_virtual_machine_scale_set_public_ip_addresses(rg, name)
                ],
            )
        except ArmError as exc:  # instances' own addresses are optional: the NAT rules reach them
            if exc.known_down or exc.status is None:
                raise
            notes.append(f"instance addresses not read: {exc}")
        docs = ScaleSetDocuments(vmss, vms, lb, public_ips, nics, instance_ips, tuple(notes), request_id)
        self._network = docs
        return docs

    def fetch(self) -> DeploymentFacts:
        started = time.monotonic()
        try:
            docs = self.documents()
        except ArmError as exc:
            self.ctx.log("ARM discovery failed", status=exc.status, code=exc.code, attempts=exc.attempts)
            raise StageError(f"scale set discovery failed: {exc}") from None
        csdef, _ = definition(self.target)
        winrm = self.target.winrm
        facts = scale_set_facts(
            docs,
            winrm_endpoint=winrm.endpoint,
            winrm_port=5986 if winrm.scheme == "https" else 5985,
            winrm_addresses=winrm.addresses,
            request_id=docs.request_id,
            seconds=time.monotonic() - started,
            definition=csdef,
            masker=self.ctx.masker,
        )
        self.ctx.log(
            "ARM discovery",
            seconds=round(facts.fetch_seconds, 3),
            status=facts.status,
            instances=len(facts.instances),
            request_id=facts.request_id,
        )
        return facts

    def data_disks(self, instance: str) -> tuple[DataDisk, ...]:
        """The VM model's ``storageProfile.dataDisks`` (LUN, name) of one scale-set VM (Get of the VM)."""
        instance_id = self._instance_id(instance)
        rg, name = self.resource_group, self.scale_set
        vm = self.call(
            f"Get scale-set VM {name} instance {instance_id} ({instance})",
            lambda c: c.compute.virtual_machine_scale_set_vms.get(rg, name, instance_id).as_dict(),
        )
        return data_disks_of(vm)

    # ---- operations on one instance -------------------------------------------------------------------
    def operations(self) -> VmssBackend:
        return self

    def _instance_id(self, instance: str) -> str:
        facts = self.ctx.deployment()
        for inst in facts.instances:
            if instance in (inst.name, inst.instance_id, inst.computer_name, f"{self.scale_set}_{inst.instance_id}"):
                return inst.instance_id
        raise ArmError(f"instance {instance!r} is not a VM of scale set {self.scale_set}")

    def start_operation(self, kind: str, instance: str) -> str:
        """Start reimage/restart (rebuild: reimage of all its disks) of ONE scale-set VM through its azure-core
        poller; a 409 Conflict is retried with backoff up to ``timeouts.conflict_retry``. Returns the start
        answer's x-ms-request-id (the operation's id here)."""
        if kind not in OPERATIONS:
            raise ValueError(f"unknown operation {kind!r} (choose from {', '.join(OPERATIONS)})")
        instance_id = self._instance_id(instance)
        method = OPERATIONS[kind]
        what = f"{kind} of scale-set VM {self.scale_set} instance {instance_id} ({instance})"
        rg, name = self.resource_group, self.scale_set
        deadline = time.monotonic() + float(self.target.timeouts.conflict_retry)
        delay = 0.5
        attempts = 0
        while True:
            attempts += 1
            try:
                poller = self.call(
                    what,
                    lambda c: getattr(c.compute.virtual_machine_scale_set_vms, method)(
                        rg, name, instance_id, polling_interval=self.polling_interval
                    ),
                )
                break
            except ArmError as exc:
                if exc.status != 409 or time.monotonic() + delay > deadline:
                    raise
                self.ctx.log(f"ARM {what}: 409 {exc.code or 'Conflict'}, retrying in {delay:.2f} s", attempt=attempts)
                time.sleep(delay)
                delay = min(delay * 2, 16.0)
        last = self.clients().recorder.last()
        request_id = (last.request_id if last else "") or f"{kind}-{instance_id}-{len(self._operations) + 1}"
        self._operations[request_id] = _Operation(
            kind, instance, instance_id, poller, time.monotonic(), request_id, last.correlation_id if last else ""
        )
        self.ctx.log(f"ARM {what}: started", request_id=request_id, attempts=attempts)
        return request_id

    def wait_operation(
        self,
        request_id: str,
        timeout: float | None = None,
        *,
        deadline: float | None = None,
        interval: float = 0.5,
        on_poll: Callable[[OperationStatus], None] | None = None,
    ) -> OperationResult:
        """Follow the operation's poller until it is done or the deadline passes (the poller's thread is left to
        finish on its own: ``timed_out``). Never raises for a failed operation: it is the result."""
        from azure.core.exceptions import HttpResponseError

        op = self._operations.get(request_id)
        start = time.monotonic()
        if deadline is None:
            deadline = start + (timeout if timeout is not None else self.target.timeouts.ready)
        if op is None:
            return OperationResult(request_id, "Unknown", 0.0, False, (), None, "no such operation started here")
        history: list[tuple[float, str]] = []
        while True:
            op.poller.wait(timeout=max(0.0, min(interval, deadline - time.monotonic())))
            done = op.poller.done()
            status = platform.IN_PROGRESS
            error_code = error_message = None
            if done:
                try:
                    op.poller.result(timeout=0)
                    status = platform.SUCCEEDED
                except HttpResponseError as exc:
                    status = platform.OPERATION_FAILED
                    error = getattr(exc, "error", None)
                    error_code = getattr(error, "code", None) or str(getattr(exc, "status_code", "") or "") or None
                    error_message = self.ctx.masker(" ".join(str(getattr(error, "message", "") or exc).split()))[:400]
                except Exception as exc:  # a poll that broke (connection, bad answer): the operation's end is unknown
                    status = platform.OPERATION_FAILED
                    error_code, error_message = type(exc).__name__, self.ctx.masker(_short(exc))
            if on_poll is not None:
                on_poll(OperationStatus(request_id, status, "", error_code, error_message))
            if not history or history[-1][1] != status:
                history.append((round(time.monotonic() - start, 3), status))
                self.ctx.log(f"operation {request_id}: {status}", seconds=history[-1][0])
            if done:
                return OperationResult(
                    request_id, status, time.monotonic() - start, False, tuple(history), error_code, error_message
                )
            if time.monotonic() >= deadline:
                return OperationResult(
                    request_id,
                    status,
                    time.monotonic() - start,
                    True,
                    tuple(history),
                    None,
                    f"the poller had not finished when the {time.monotonic() - start:.1f} s deadline passed",
                )


def data_disks_of(vm: dict[str, Any]) -> tuple[DataDisk, ...]:
    """A scale-set VM's data disks by LUN (its model, as the SDK's ``as_dict()`` or ARM's wire JSON spell it)."""
    props: dict[str, Any] = vm["properties"] if isinstance(vm.get("properties"), dict) else vm
    profile = props.get("storage_profile") or props.get("storageProfile") or {}
    disks = profile.get("data_disks") or profile.get("dataDisks") or ()
    out = []
    for d in disks:
        lun = as_int(d.get("lun"))
        if lun is not None:
            out.append(DataDisk(lun=lun, name=str(d.get("name") or f"lun{lun}")))
    return tuple(sorted(out, key=lambda d: d.lun))


def _public_ip_getter(resource_group: str, name: str) -> Callable[[ArmClients], dict[str, Any]]:
    return lambda c: c.network.public_ip_addresses.get(resource_group, name).as_dict()


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "API",
    "OPERATIONS",
    "ArmClients",
    "ArmError",
    "ScaleSetDocuments",
    "VmssBackend",
    "credential_for",
    "evidence_json",
    "instance_status",
    "load_balancer_of",
    "nat_endpoint_name",
    "scale_set_facts",
]
