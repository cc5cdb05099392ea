"""What to run: a deployment spec built from a service model (csdef + cscfg, or a .cspkg).

The spec is pure data, derived from the typed facts of the service-model readers; the controller turns it
into processes. The deployment's public endpoints live on its own VIP address (``harness.fabric.ports.claim_vip``)
at the ports the service definition declares: an InputEndpoint's ``port``, and for an InstanceInputEndpoint
the ``n``-th port of its ``AllocatePublicPortFrom`` range for the role's ``n``-th instance. A declared port
that cannot be bound (below 1024 without the privilege, taken by another program, declared twice, or a
range too short) is replaced by an allocated one on the VIP and recorded in ``port_fallbacks`` (declared,
actual, reason). The instances' own listeners, agents and WinRM are allocated ports on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.engine.artefact import CSCFG, CSDEF, CSPKG, Artefact
from harness.fabric.ports import VipError, allocate, bind_problem, claim_vip
from harness.facts.servicemodel import (
    INPUT,
    INSTANCE_INPUT,
    INTERNAL,
    VM_ROLE,
    RoleConfig,
    ServiceConfiguration,
    ServiceDefinition,
    parse_int,
)
from harness.readers.errors import Unreadable

DEFAULT_INSTANCES = 2
PLAIN_PROTOCOLS = ("http", "https", "tcp", "udp")


class SpecError(Exception):
    """The service model cannot be deployed on the fabric; the message says why (file and problem)."""


@dataclass(frozen=True)
class EndpointSpec:
    role: str
    name: str
    kind: str  # INPUT | INSTANCE_INPUT (internal endpoints are instance-local only)
    protocol: str  # http | https | tcp | udp
    declared_port: int | None  # public port in the csdef (None for instance input endpoints)
    local_port: int | None  # the role's declared local port (informational)
    certificate: str | None = None
    ignore_role_instance_status: bool = False
    public_port: int = 0  # the port on the VIP (INPUT only): the declared one, or its fallback
    #: "app" (the role's app answers), or the instance's own WinRM listener when an InstanceInputEndpoint
    #: maps local port 5986 ("winrm-https") or 5985 ("winrm-http"), as one declares WinRM on Azure.
    serves: str = "app"


@dataclass(frozen=True)
class StorageSpec:
    name: str
    size_mb: int
    clean_on_role_recycle: bool


@dataclass(frozen=True)
class InstanceSpec:
    id: str  # WebVM_IN_0
    role: str
    index: int
    upgrade_domain: int
    fault_domain: int
    endpoint_ports: dict[str, int]  # endpoint name -> port this instance listens on
    instance_public_ports: dict[str, int]  # InstanceInputEndpoint name -> VIP port mapped to this instance
    agent_port: int
    winrm_https_port: int
    winrm_http_port: int
    #: The instance's address on the deployment's internal network (Get Deployment's IpAddress). Nothing
    #: listens on it: the emulated guests route <ip>:<declared internal port> to the instance's listener.
    internal_ip: str = "127.0.0.1"
    #: InstanceInputEndpoint name -> the public port the csdef's range gives this instance (None: no range)
    instance_declared_ports: dict[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class PortFallback:
    """A declared public port the deployment could not bind, and the port it answers on instead."""

    where: str  # "WebVM/HttpIn" (an InputEndpoint) or "WebVM_IN_0/Direct" (an InstanceInputEndpoint)
    declared: int | None
    actual: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"where": self.where, "declared": self.declared, "actual": self.actual, "reason": self.reason}


class PortCheck(Protocol):
    def __call__(self, host: str, port: int, *, udp: bool = False) -> str | None: ...


@dataclass(frozen=True)
class RoleSpec:
    name: str
    kind: str
    vmsize: str
    instances: int
    endpoints: tuple[EndpointSpec, ...]
    local_storage: tuple[StorageSpec, ...]
    certificates: tuple[str, ...]  # names declared in the csdef


@dataclass(frozen=True)
class DeploymentSpec:
    service_name: str
    deployment_name: str
    deployment_id: str
    roles: tuple[RoleSpec, ...]
    instances: tuple[InstanceSpec, ...]
    csdef_text: str  # the csdef text (from the package when deployed from a .cspkg)
    cscfg_text: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    vip: str = "127.0.0.1"  # the deployment's own loopback address: every public endpoint listens there
    port_fallbacks: tuple[PortFallback, ...] = ()

    def role(self, name: str) -> RoleSpec:
        for role in self.roles:
            if role.name == name:
                return role
        raise KeyError(name)

    def instance(self, instance_id: str) -> InstanceSpec:
        for inst in self.instances:
            if inst.id == instance_id:
                return inst
        raise KeyError(instance_id)

    @property
    def input_endpoints(self) -> list[EndpointSpec]:
        return [e for r in self.roles for e in r.endpoints if e.kind == INPUT]


def _read_model(
    csdef: Path | None, cscfg: Path | None, package: Path | None
) -> tuple[ServiceDefinition, ServiceConfiguration | None, str, str | None, str]:
    from harness.readers.servicemodel import read_configuration, read_definition

    try:
        if package is not None:
            from harness.readers.cspkg import read_package

            pkg = read_package(Artefact.from_path(package, CSPKG))
            if pkg.definition is None:
                raise SpecError(f"{package}: the package holds no readable ServiceDefinition")
            definition = pkg.definition
            # the packaged build csdef, so the deployment's state carries the model it runs
            csdef_text = (pkg.definition_bytes or b"").decode("utf-8-sig", errors="replace")
            identity = hashlib.sha256(package.read_bytes()).hexdigest()
        else:
            assert csdef is not None
            definition = read_definition(Artefact.from_path(csdef, CSDEF))
            csdef_text = csdef.read_bytes().decode("utf-8-sig", errors="replace")
            identity = csdef_text
        configuration = read_configuration(Artefact.from_path(cscfg, CSCFG)) if cscfg is not None else None
        cscfg_text = _decoded(cscfg) if cscfg is not None else None
    except Unreadable as exc:
        raise SpecError(str(exc)) from None
    return definition, configuration, csdef_text, cscfg_text, identity


def _decoded(path: Path) -> str:
    data = path.read_bytes()
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            return data.decode(codec)
    return data.decode("utf-8", errors="replace")


def _synthesised_cscfg(definition: ServiceDefinition) -> str:
    roles = "".join(
        f'  <Role name="{r.name}">\n    <Instances count="{DEFAULT_INSTANCES}" />\n  </Role>\n'
        for r in definition.roles
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<ServiceConfiguration serviceName="{definition.name or "Service"}" osFamily="2" osVersion="*" '
        'xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration">\n'
        f"{roles}</ServiceConfiguration>\n"
    )


WINRM_LOCAL_PORTS = {5986: "winrm-https", 5985: "winrm-http"}


def _internal_endpoint(role: str, ep: Any, protocol: str) -> EndpointSpec | None:
    """An InternalEndpoint with a fixed port (port, FixedPort or the first of a FixedPortRange); dynamic
    internal ports have no address another role could know, so they are not emulated."""
    candidates = [ep.port, *(r.min for r in ep.fixed_ports)]
    port = next((parse_int(c) for c in candidates if parse_int(c) is not None), None)
    if port is None:
        return None
    return EndpointSpec(
        role=role,
        name=ep.name,
        kind=INTERNAL,
        protocol="udp" if protocol == "udp" else ("http" if protocol == "http" else "tcp"),
        declared_port=port,
        local_port=port,
    )


def _serves(kind: str, local_port: int | None) -> str:
    if kind == INSTANCE_INPUT and local_port in WINRM_LOCAL_PORTS:
        return WINRM_LOCAL_PORTS[local_port]
    return "app"


def _ports_needed(definition: ServiceDefinition, configuration: ServiceConfiguration | None) -> int:
    total = 0
    for role in definition.roles:
        config = configuration.role(role.name) if configuration else None
        count = DEFAULT_INSTANCES if configuration is None else ((config.instance_count if config else 0) or 0)
        inputs = sum(ep.kind == INPUT for ep in role.endpoints)
        instance_inputs = sum(ep.kind == INSTANCE_INPUT for ep in role.endpoints)
        internals = sum(ep.kind == INTERNAL for ep in role.endpoints)
        total += count * (inputs + instance_inputs + internals + 3)
    return total


class _PublicPorts:
    """Public ports on the VIP: the declared port when it can be bound, else an allocated one (recorded)."""

    def __init__(self, vip: str, check: PortCheck) -> None:
        self.vip = vip
        self.check = check
        self.taken: set[int] = set()
        self.fallbacks: list[PortFallback] = []

    def resolve(self, where: str, declared: int | None, *, udp: bool, missing: str | None = None) -> int:
        reason: str | None
        if declared is None or not 0 < declared < 65536:
            reason = missing or f"declared port {declared} is not a port number"
        elif declared in self.taken:
            reason = f"port {declared} is already used by another endpoint of the deployment"
        else:
            reason = self.check(self.vip, declared, udp=udp)
        if reason is None:
            assert declared is not None
            self.taken.add(declared)
            return declared
        while True:
            (port,) = allocate(1, udp=udp, host=self.vip)
            if port not in self.taken:
                break
        self.taken.add(port)
        self.fallbacks.append(PortFallback(where, declared, port, reason))
        return port


def _range_port(ep: Any, index: int) -> tuple[int | None, str | None]:
    """The public port of an InstanceInputEndpoint's range for the role's ``index``-th instance, or why none."""
    rng = ep.public_port_range
    low = parse_int(rng.min) if rng is not None else None
    if low is None:
        return None, "no AllocatePublicPortFrom range declared"
    high = parse_int(rng.max) if rng.max is not None else low
    if high is None or low + index > high:
        return low + index, f"the declared range {rng.min}-{rng.max} has no port for instance {index}"
    return low + index, None


def build_spec(
    *,
    csdef: Path | None = None,
    cscfg: Path | None = None,
    package: Path | None = None,
    name: str | None = None,
    vip: str | None = None,
    vip_seed: str | None = None,
    port_check: PortCheck = bind_problem,
) -> DeploymentSpec:
    """The deployment spec. ``vip``: the address to bind the public endpoints on; by default one is claimed
    for this process (``claim_vip(vip_seed)``, the seed defaulting to the deployment id). ``port_check``
    says why a declared port cannot be bound (``bind_problem``; tests may inject another)."""
    if (csdef is None) == (package is None):
        raise SpecError("give either a .cspkg (--package) or a .csdef (--csdef) with its .cscfg")
    if package is None and cscfg is None:
        raise SpecError("a .csdef needs its .cscfg (--cscfg)")
    definition, configuration, csdef_text, cscfg_text, identity = _read_model(csdef, cscfg, package)
    notes: list[str] = []
    if configuration is None:
        cscfg_text = _synthesised_cscfg(definition)
        notes.append(f"no .cscfg given: {DEFAULT_INSTANCES} instances per role, no settings")
    assert cscfg_text is not None
    if not definition.roles:
        raise SpecError(f"{csdef or package}: the service definition declares no role")

    # One allocation for every port of the deployment, so no two of them can coincide.
    pool = iter(allocate(_ports_needed(definition, configuration), udp=True))
    service_name = definition.name or "Service"
    digest = hashlib.sha256((identity + cscfg_text).encode()).hexdigest()
    deployment_id = digest[:32]
    try:
        address = vip if vip is not None else claim_vip(vip_seed or deployment_id).address
    except VipError as exc:
        raise SpecError(str(exc)) from None
    public = _PublicPorts(address, port_check)
    roles: list[RoleSpec] = []
    instances: list[InstanceSpec] = []
    for role in definition.roles:
        config: RoleConfig | None = configuration.role(role.name) if configuration else None
        count = DEFAULT_INSTANCES if configuration is None else (config.instance_count if config else None)
        if count is None or count < 1:
            where = cscfg or "the configuration"
            raise SpecError(f"{where}: role {role.name!r} has no valid <Instances count>")
        endpoints: list[EndpointSpec] = []
        for ep in role.endpoints:
            protocol = (ep.protocol or "").lower()
            if ep.kind == INTERNAL:
                internal = _internal_endpoint(role.name, ep, protocol)
                if internal is not None:  # served by each instance, reached over the internal network
                    endpoints.append(internal)
                continue
            if protocol not in PLAIN_PROTOCOLS:
                raise SpecError(f"endpoint {ep.name!r} of role {role.name!r}: protocol {ep.protocol!r} unsupported")
            endpoints.append(
                EndpointSpec(
                    role=role.name,
                    name=ep.name,
                    kind=ep.kind,
                    protocol=protocol,
                    declared_port=parse_int(ep.port) if ep.kind == INPUT else None,
                    local_port=parse_int(ep.local_port) or (parse_int(ep.port) if ep.kind == INPUT else None),
                    certificate=ep.certificate,
                    ignore_role_instance_status=(ep.ignore_role_instance_status or "").lower() == "true",
                    public_port=(
                        public.resolve(f"{role.name}/{ep.name}", parse_int(ep.port), udp=protocol == "udp")
                        if ep.kind == INPUT
                        else 0
                    ),
                    serves=_serves(ep.kind, parse_int(ep.local_port)),
                )
            )
        storage = tuple(
            StorageSpec(ls.name, ls.size_mb_value or 100, ls.cleaned_on_recycle) for ls in role.local_storage
        )
        roles.append(
            RoleSpec(
                name=role.name,
                kind=role.kind,
                vmsize=role.vmsize or "Small",
                instances=count,
                endpoints=tuple(endpoints),
                local_storage=storage,
                certificates=tuple(c.name for c in role.certificates),
            )
        )
        for index in range(count):
            ports = pool
            endpoint_ports = {e.name: next(ports) for e in endpoints}
            instance_public: dict[str, int] = {}
            instance_declared: dict[str, int | None] = {}
            for ep in role.endpoints:
                if ep.kind != INSTANCE_INPUT:
                    continue
                declared, missing = _range_port(ep, index)
                wanted = declared if missing is None else None
                instance_declared[ep.name] = wanted
                instance_public[ep.name] = public.resolve(
                    f"{role.name}_IN_{index}/{ep.name}",
                    wanted,
                    udp=(ep.protocol or "").lower() == "udp",
                    missing=missing,
                )
            agent, winrm_https, winrm_http = next(ports), next(ports), next(ports)
            winrm = {"winrm-https": winrm_https, "winrm-http": winrm_http}
            endpoint_ports.update({e.name: winrm[e.serves] for e in endpoints if e.serves in winrm})
            instances.append(
                InstanceSpec(
                    id=f"{role.name}_IN_{index}",
                    role=role.name,
                    index=index,
                    upgrade_domain=index % 5,
                    fault_domain=index % 2,
                    endpoint_ports=endpoint_ports,
                    instance_public_ports=instance_public,
                    instance_declared_ports=instance_declared,
                    agent_port=agent,
                    winrm_https_port=winrm_https,
                    winrm_http_port=winrm_http,
                    internal_ip=f"127.0.1.{len(instances) + 4}",  # loopback: never leaves the machine
                )
            )
        if role.kind == VM_ROLE and config is not None and not config.os_image_href:
            notes.append(f"role {role.name!r}: no <OsImage href>; the fabric uses its generated base image")
    return DeploymentSpec(
        service_name=service_name,
        deployment_name=name or f"{service_name.lower()}-local",
        deployment_id=deployment_id,
        roles=tuple(roles),
        instances=tuple(instances),
        csdef_text=csdef_text,
        cscfg_text=cscfg_text,
        notes=tuple(notes),
        vip=address,
        port_fallbacks=tuple(public.fallbacks),
    )
