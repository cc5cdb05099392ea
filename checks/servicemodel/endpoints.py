"""Endpoint rules (VMR510-VMR519): protocols, ports, certificates, probes and limits.

All but VMR514 look at the service definition alone (a .csdef, or a package's build csdef, which
also carries the endpoints that imported plugins add). Port conflicts are judged per transport:
the load balancer keys a rule on (VIP, transport, port), so ``tcp``/``http``/``https`` endpoints
conflict with one another but not with a ``udp`` endpoint on the same number (``any`` takes both).
"""

from __future__ import annotations

from collections.abc import Iterator

from harness.docs_sources import refs
from harness.engine.artefact import CSCFG, CSDEF, CSPKG
from harness.engine.finding import Finding
from harness.engine.rule import Rule
from harness.engine.severity import Severity
from harness.facts.servicemodel import (
    INPUT,
    INSTANCE_INPUT,
    INTERNAL,
    VM_ROLE,
    Endpoint,
    PortRange,
    RoleDef,
    ServiceModelSubject,
)

from ._model import (
    ALLOWED_PROTOCOLS,
    DYNAMIC_PORT,
    MAX_INPUT_ENDPOINTS_PER_SERVICE,
    MAX_INTERNAL_ENDPOINTS_PER_ROLE,
    MAX_PORT,
    MIN_PORT,
    PROBE_PROTOCOLS,
    PortClaims,
    case_hint,
    case_twin,
    definition_of,
    definition_root,
    internal_spans,
    iter_endpoints,
    parse_port,
    plugin_declared,
    protocol_of,
    public_span,
    range_span,
    transports,
)

CSDEF_KINDS = frozenset({CSDEF, CSPKG})
LATER_INTERNAL_ENDPOINTS_PER_SERVICE = 25


def _describe(role: RoleDef, endpoint: Endpoint) -> str:
    return f"{endpoint.kind} {endpoint.name!r} of role {role.name!r}"


class HttpsEndpointWithoutCertificate(Rule):
    """An https input endpoint names no certificate, or one its role does not declare.

    ## What it does
    Checks every ``InputEndpoint`` with ``protocol="https"``: it must have a ``certificate``
    attribute naming a ``Certificates/Certificate`` declared in the same role (or by a plugin
    module the role imports).

    ## Why is this bad?
    The load balancer hands https connections to the instance, which must present the named
    certificate. Without it, or with a name the role does not declare, the package is rejected.

    ## Example
    ```xml
    <InputEndpoint name="HttpsIn" protocol="https" port="443" />
    ```

    ## Use instead
    ```xml
    <InputEndpoint name="HttpsIn" protocol="https" port="443" certificate="SSL" />
    <!-- and in the role: <Certificates><Certificate name="SSL" storeLocation="LocalMachine" storeName="My" /> -->
    ```

    ## References
    - Azure Cloud Services (classic) Definition WebRole Schema — InputEndpoint certificate: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-webrole
    - Configure TLS for an application in Azure Cloud Services (classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-configure-ssl-certificate-portal
    """

    id = "VMR510"
    name = "https-endpoint-without-certificate"
    severity = Severity.HIGH
    applies_to = CSDEF_KINDS
    requires = ("definition",)
    tags = ("service-model", "endpoints", "certificates")
    references = refs("csdef-webrole", "cloud-services-ssl")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        for role, endpoint in iter_endpoints(definition_of(subject), INPUT):
            if protocol_of(endpoint) != "https":
                continue
            certificate = (endpoint.certificate or "").strip()
            declared = [c.name for c in role.certificates]
            if not certificate:
                message = (
                    f'https {_describe(role, endpoint)} names no certificate; add certificate="…" naming '
                    "a certificate declared in the role."
                )
            elif certificate not in declared and not plugin_declared(role, certificate):
                message = (
                    f"https {_describe(role, endpoint)} uses certificate {certificate!r}, which the role does "
                    f"not declare; declare <Certificate name={certificate!r} …/> in the role's Certificates."
                )
            else:
                continue
            yield self.finding(
                subject,
                endpoint.location,
                message,
                evidence={"role": role.name, "endpoint": endpoint.name, "certificate": certificate},
                line=endpoint.line,
            )


class DuplicatePublicPort(Rule):
    """Two endpoints take the same public port of the service.

    ## What it does
    Collects the public ports of every ``InputEndpoint`` (``port``) and every
    ``InstanceInputEndpoint`` (its ``AllocatePublicPortFrom/FixedPortRange``) across all roles
    and reports an endpoint whose port or range overlaps an earlier one of the same transport
    (TCP for http/https/tcp, UDP for udp).

    ## Why is this bad?
    All roles share one virtual IP, so a public port can be used once per transport in the whole
    service; the platform rejects a model that uses it twice.

    ## Example
    ```xml
    <WebRole name="Web">    … <InputEndpoint name="Http" protocol="http" port="80" /> …
    <WorkerRole name="Api"> … <InputEndpoint name="Api"  protocol="tcp"  port="80" /> …
    ```

    ## Use instead
    ```xml
    <WorkerRole name="Api"> … <InputEndpoint name="Api" protocol="tcp" port="8080" /> …
    ```

    ## References
    - Azure Cloud Services (classic) Definition WebRole Schema — InputEndpoint: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-webrole
    """

    id = "VMR511"
    name = "duplicate-public-port"
    severity = Severity.HIGH
    applies_to = CSDEF_KINDS
    requires = ("definition",)
    tags = ("service-model", "endpoints")
    references = refs("csdef-webrole")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        claims: PortClaims[tuple[RoleDef, Endpoint]] = PortClaims()
        for role, endpoint in iter_endpoints(definition_of(subject), INPUT, INSTANCE_INPUT):
            span = public_span(endpoint)
            families = transports(protocol_of(endpoint))
            if span is None or not families:
                continue  # invalid ports and protocols are VMR512's and VMR515's business
            clash = claims.clash([span], families)
            if clash is not None:
                other_role, other = clash.other
                yield self.finding(
                    subject,
                    endpoint.location,
                    f"Public port {span}/{clash.transport} of {_describe(role, endpoint)} is already taken by "
                    f"{_describe(other_role, other)} (port {clash.other_span}); give each endpoint its own "
                    "public port.",
                    evidence={
                        "endpoint": endpoint.name,
                        "port": str(span),
                        "transport": clash.transport,
                        "conflicts_with": f"{other_role.name}/{other.name}",
                    },
                    line=endpoint.line,
                )
            claims.claim([span], families, (role, endpoint))


class InvalidPort(Rule):
    """A port number is missing, not a whole number, outside 1-65535, or a range is reversed.

    ## What it does
    Checks ``port`` and ``localPort`` of input endpoints (``localPort`` may be ``*``), ``port``,
    ``FixedPort`` and ``FixedPortRange`` of internal endpoints, ``localPort`` and the public
    ``FixedPortRange`` of instance input endpoints, and ``port`` of load-balancer probes.

    ## Why is this bad?
    Ports are 1-65535 and a range needs ``min`` ≤ ``max``; the package is rejected otherwise. A
    required port that is missing (the public port of an input endpoint, the local port of an
    instance input endpoint) leaves the endpoint unusable.

    ## Example
    ```xml
    <InputEndpoint name="Http" protocol="http" port="80" localPort="80800" />
    <FixedPortRange min="20000" max="10000" />
    ```

    ## Use instead
    ```xml
    <InputEndpoint name="Http" protocol="http" port="80" localPort="8080" />
    <FixedPortRange min="10000" max="20000" />
    ```

    ## References
    - Azure Cloud Services (classic) Definition WebRole Schema — port ranges: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-webrole
    """

    id = "VMR512"
    name = "invalid-port"
    severity = Severity.HIGH
    applies_to = CSDEF_KINDS
    requires = ("definition",)
    tags = ("service-model", "endpoints")
    references = refs("csdef-webrole")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        definition = definition_of(subject)
        for role, endpoint in iter_endpoints(definition):
            what = _describe(role, endpoint)
            evidence = {"role": role.name, "endpoint": endpoint.name}
            if endpoint.kind == INPUT:
                yield from self._port(subject, endpoint, "port", endpoint.port, what, evidence, required=True)
                yield from self._port(subject, endpoint, "localPort", endpoint.local_port, what, evidence)
            elif endpoint.kind == INTERNAL:
                yield from self._port(subject, endpoint, "port", endpoint.port, what, evidence)
                for fixed in endpoint.fixed_ports:
                    yield from self._range(subject, fixed, what, evidence)
            elif endpoint.kind == INSTANCE_INPUT:
                yield from self._port(
                    subject, endpoint, "localPort", endpoint.local_port, what, evidence, required=True
                )
                if endpoint.public_port_range is None:
                    yield self.finding(
                        subject,
                        f"{endpoint.location}/AllocatePublicPortFrom",
                        f"{what} has no public port range; add <AllocatePublicPortFrom><FixedPortRange "
                        'min="…" max="…"/></AllocatePublicPortFrom> with room for every instance.',
                        evidence=evidence,
                        line=endpoint.line,
                    )
                else:
                    yield from self._range(subject, endpoint.public_port_range, what, evidence)
        for probe in definition.load_balancer_probes:
            what = f"load-balancer probe {probe.name!r}"
            if parse_port(probe.port) is None:
                yield self.finding(
                    subject,
                    f"{probe.location}/@port",
                    f"{what} {self._problem(probe.port)}; set port to the instance port it checks "
                    f"({MIN_PORT}-{MAX_PORT}).",
                    evidence={"probe": probe.name, "value": self._safe(probe.port)},
                    line=probe.line,
                )

    @staticmethod
    def _safe(value: str | None) -> str:
        return (value or "").strip()[:20]

    @staticmethod
    def _problem(value: str | None, attribute: str = "port") -> str:
        if value is None or not value.strip():
            return f"has no {attribute}"
        return f"has {attribute} {value.strip()[:20]!r}, which is not a whole number in {MIN_PORT}-{MAX_PORT}"

    def _port(
        self,
        subject: ServiceModelSubject,
        endpoint: Endpoint,
        attribute: str,
        value: str | None,
        what: str,
        evidence: dict[str, str],
        *,
        required: bool = False,
    ) -> Iterator[Finding]:
        text = (value or "").strip()
        # "*" asks for a dynamic port: allowed for an input endpoint's localPort (SDK 1.5+) and an
        # internal endpoint's port (omitted or "*" = dynamic).
        dynamic_ok = (endpoint.kind == INPUT and attribute == "localPort") or endpoint.kind == INTERNAL
        if (value is None and not required) or (text == DYNAMIC_PORT and dynamic_ok):
            return
        if parse_port(value) is not None:
            return
        advice = f"use a port number from {MIN_PORT} to {MAX_PORT}"
        if dynamic_ok:
            advice += ' (or "*" for a dynamic port)'
        yield self.finding(
            subject,
            f"{endpoint.location}/@{attribute}",
            f"{what} {self._problem(value, attribute)}; {advice}.",
            evidence={**evidence, "attribute": attribute, "value": self._safe(value)},
            line=endpoint.line,
        )

    def _range(
        self, subject: ServiceModelSubject, port_range: PortRange, what: str, evidence: dict[str, str]
    ) -> Iterator[Finding]:
        if range_span(port_range) is not None:
            return
        low, high = parse_port(port_range.min), parse_port(port_range.max)
        element = port_range.location.rsplit("/", 1)[-1].split("[", 1)[0] or "FixedPortRange"
        if low is not None and high is not None:
            problem = f"has a reversed {element} {low}-{high} (min > max); swap min and max."
        elif element == "FixedPort":
            problem = (
                f"has a FixedPort that {self._problem(port_range.min)}; use a port number from "
                f"{MIN_PORT} to {MAX_PORT}."
            )
        else:
            bound, bad = ("min", port_range.min) if low is None else ("max", port_range.max)
            problem = (
                f"has a {element} that {self._problem(bad, bound)}; use port numbers from "
                f"{MIN_PORT} to {MAX_PORT} with min ≤ max."
            )
        yield self.finding(
            subject,
            port_range.location,
            f"{what} {problem}",
            evidence={**evidence, "min": self._safe(port_range.min), "max": self._safe(port_range.max)},
            line=port_range.line,
        )


class DuplicateInternalPort(Rule):
    """Two internal endpoints of one role use the same fixed port.

    ## What it does
    Within each role, compares the fixed ports of ``InternalEndpoint`` elements (``port``,
    ``FixedPort``, ``FixedPortRange``) and reports an endpoint whose ports overlap an earlier one
    of the same transport (``any`` takes TCP and UDP).

    ## Why is this bad?
    Internal ports must be unique per role: two endpoints cannot listen on the same port of one
    instance, and the platform rejects the model.

    ## Example
    ```xml
    <InternalEndpoint name="Cache" protocol="tcp" port="8080" />
    <InternalEndpoint name="Admin" protocol="http" port="8080" />
    ```

    ## Use instead
    ```xml
    <InternalEndpoint name="Cache" protocol="tcp" port="8080" />
    <InternalEndpoint name="Admin" protocol="http" port="8081" />
    ```

    ## References
    - Azure Cloud Services (classic) Definition WebRole Schema — InternalEndpoint: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-webrole
    - Communication for roles in Cloud Services (classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-enable-communication-role-instances
    """

    id = "VMR513"
    name = "duplicate-internal-port"
    severity = Severity.HIGH
    applies_to = CSDEF_KINDS
    requires = ("definition",)
    tags = ("service-model", "endpoints")
    references = refs("csdef-webrole", "cloud-services-internal-endpoints")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        for role in definition_of(subject).roles:
            claims: PortClaims[Endpoint] = PortClaims()
            for endpoint in role.endpoints:
                if endpoint.kind != INTERNAL:
                    continue
                families = transports(protocol_of(endpoint))
                spans = internal_spans(endpoint)
                clash = claims.clash(spans, families)
                if clash is not None:
                    yield self.finding(
                        subject,
                        endpoint.location,
                        f"Internal port {clash.span}/{clash.transport} of {_describe(role, endpoint)} is already "
                        f"used by internal endpoint {clash.other.name!r} (port {clash.other_span}); give each "
                        "internal endpoint its own port.",
                        evidence={
                            "role": role.name,
                            "endpoint": endpoint.name,
                            "port": str(clash.span),
                            "conflicts_with": clash.other.name,
                        },
                        line=endpoint.line,
                    )
                claims.claim(spans, families, endpoint)


class InstancePortRangeTooSmall(Rule):
    """An instance input endpoint's public port range has fewer ports than the role has instances.

    ## What it does
    For each role of the configuration, compares ``Instances/@count`` with the size of the public
    ``FixedPortRange`` of every ``InstanceInputEndpoint`` the definition gives the role.

    ## Why is this bad?
    Each instance gets its own public port from the range; with fewer ports than instances the
    deployment (or a later scale-out) fails.

    ## Example
    ```xml
    <!-- csdef --> <InstanceInputEndpoint name="Direct" localPort="3390" protocol="tcp">
                      <AllocatePublicPortFrom><FixedPortRange min="10000" max="10001" /></AllocatePublicPortFrom>
    <!-- cscfg --> <Instances count="4" />
    ```

    ## Use instead
    ```xml
    <FixedPortRange min="10000" max="10009" />  <!-- room to scale to 10 instances -->
    ```

    ## References
    - Azure Cloud Services (classic) Definition WebRole Schema — InstanceInputEndpoint and AllocatePublicPortFrom: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-webrole
    - Azure Cloud Services (classic) Config Role Schema — Instances: https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-role
    """

    id = "VMR514"
    name = "instance-port-range-too-small"
    severity = Severity.HIGH
    applies_to = frozenset({CSCFG})
    requires = ("definition", "configuration")
    tags = ("service-model", "endpoints")
    references = refs("csdef-webrole", "cscfg-role")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        definition, configuration = subject.definition, subject.configuration
        assert definition is not None and configuration is not None
        for role in definition.roles:
            config = configuration.role(role.name)
            count = config.instance_count if config is not None else None
            if config is None or count is None:
                continue  # VMR501 / VMR508
            short = [
                (endpoint, span)
                for endpoint in role.endpoints
                if endpoint.kind == INSTANCE_INPUT
                and (span := range_span(endpoint.public_port_range)) is not None
                and span.size < count
            ]
            if not short:
                continue
            listed = ", ".join(f"{e.name!r} ({s}: {s.size} port{'s' if s.size > 1 else ''})" for e, s in short)
            yield self.finding(
                subject,
                config.instances_location or f"{config.location}/Instances",
                f"Role {role.name!r} has {count} instances but instance input endpoint(s) {listed} cannot give "
                f"each instance a public port; widen the FixedPortRange to at least {count} ports or lower "
                "the instance count.",
                evidence={
                    "role": role.name,
                    "count": str(count),
                    "endpoints": ", ".join(e.name for e, _ in short),
                    "ranges": ", ".join(str(s) for _, s in short),
                },
                line=config.line,
            )


class UnsupportedEndpointProtocol(Rule):
    """An endpoint or probe uses a protocol its type does not allow, or names none.

    ## What it does
    Checks ``protocol`` against the matrix: input endpoints allow http, https, tcp and udp;
    internal endpoints http, tcp, udp and any; instance input endpoints tcp and udp;
    load-balancer probes http and tcp.

    ## Why is this bad?
    The platform rejects other protocols (https is terminated on the input endpoint only; ``any``
    makes sense only inside the service).

    ## Example
    ```xml
    <InstanceInputEndpoint name="Direct" localPort="443" protocol="https"> …
    ```

    ## Use instead
    ```xml
    <InstanceInputEndpoint name="Direct" localPort="443" protocol="tcp"> …
    ```

    ## References
    - Azure Cloud Services (classic) Definition WebRole Schema — endpoint protocols: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-webrole
    """

    id = "VMR515"
    name = "unsupported-endpoint-protocol"
    severity = Severity.HIGH
    applies_to = CSDEF_KINDS
    requires = ("definition",)
    tags = ("service-model", "endpoints")
    references = refs("csdef-webrole")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        definition = definition_of(subject)
        for role, endpoint in iter_endpoints(definition):
            allowed = ALLOWED_PROTOCOLS.get(endpoint.kind)
            protocol = protocol_of(endpoint)
            if allowed is None or protocol in allowed:
                continue
            problem = f"uses protocol {protocol!r}" if protocol else "has no protocol"
            yield self.finding(
                subject,
                f"{endpoint.location}/@protocol",
                f"{_describe(role, endpoint)} {problem}; {endpoint.kind} allows {', '.join(allowed)}.",
                evidence={"role": role.name, "endpoint": endpoint.name, "protocol": protocol or ""},
                line=endpoint.line,
            )
        for probe in definition.load_balancer_probes:
            protocol = (probe.protocol or "").strip().lower() or None
            if protocol in PROBE_PROTOCOLS:
                continue
            problem = f"uses protocol {protocol!r}" if protocol else "has no protocol"
            yield self.finding(
                subject,
                f"{probe.location}/@protocol",
                f"Load-balancer probe {probe.name!r} {problem}; probes allow {', '.join(PROBE_PROTOCOLS)}.",
                evidence={"probe": probe.name, "protocol": protocol or ""},
                line=probe.line,
            )


class TooManyInputEndpoints(Rule):
    """The service has more than 25 input endpoints or 25 instance input endpoints.

    ## What it does
    Counts the ``InputEndpoint`` and the ``InstanceInputEndpoint`` elements of all roles. A
    package's build csdef includes the endpoints imported plugins add (such as the Remote Desktop
    forwarder's), so it gives the count the platform sees.

    ## Why is this bad?
    A deployment may have at most 25 input endpoints (raised from 5 in March 2011) and 25 instance
    input endpoints; the platform rejects a model with more.

    ## Example
    ```xml
    <!-- 26 <InputEndpoint> elements across the roles of one service -->
    ```

    ## Use instead
    ```xml
    <!-- Multiplex behind fewer endpoints (one https endpoint with host-name routing), or split the
         service into two cloud services. -->
    ```

    ## References
    - Azure subscription and service limits: Azure Cloud Services limits: https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/azure-subscription-service-limits
    - Azure Cloud Services (classic) Definition WebRole Schema: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-webrole
    """

    id = "VMR516"
    name = "too-many-input-endpoints"
    severity = Severity.HIGH
    applies_to = CSDEF_KINDS
    requires = ("definition",)
    tags = ("service-model", "endpoints", "limits")
    references = refs("cloud-services-limits", "csdef-webrole")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        definition = definition_of(subject)
        for kind in (INPUT, INSTANCE_INPUT):
            count = sum(1 for _ in iter_endpoints(definition, kind))
            if count <= MAX_INPUT_ENDPOINTS_PER_SERVICE:
                continue
            yield self.finding(
                subject,
                f"{definition_root(definition)}//{kind}",
                f"The service has {count} {kind} elements, over the platform limit of "
                f"{MAX_INPUT_ENDPOINTS_PER_SERVICE} per deployment; remove or merge endpoints, or split the "
                "service.",
                evidence={"kind": kind, "count": str(count), "limit": str(MAX_INPUT_ENDPOINTS_PER_SERVICE)},
            )


class TooManyInternalEndpoints(Rule):
    """A role has more internal endpoints than the platform allows.

    ## What it does
    For a service with a VM role (the 2011 platform), reports roles with more than 5
    ``InternalEndpoint`` elements. For any service, reports more than 25 internal endpoints in
    total (the later per-deployment limit).

    ## Why is this bad?
    The platform that ran VM roles allowed 5 internal endpoints per role; later platforms allow 25
    per deployment. A model over the limit is rejected. Imported plugins add internal endpoints
    of their own (Remote Desktop, Caching): check the package's build csdef.

    ## Example
    ```xml
    <VirtualMachineRole name="Vm"> … six <InternalEndpoint> elements … </VirtualMachineRole>
    ```

    ## Use instead
    ```xml
    <!-- Use one InternalEndpoint with a FixedPortRange (protocol="any") instead of one per port. -->
    ```

    ## References
    - Azure subscription and service limits: Azure Cloud Services limits: https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/azure-subscription-service-limits
    - Communication for roles in Cloud Services (classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-enable-communication-role-instances
    """

    id = "VMR517"
    name = "too-many-internal-endpoints"
    severity = Severity.HIGH
    applies_to = CSDEF_KINDS
    requires = ("definition",)
    tags = ("service-model", "endpoints", "limits")
    references = refs("cloud-services-limits", "cloud-services-internal-endpoints")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        definition = definition_of(subject)
        if any(role.kind == VM_ROLE for role in definition.roles):
            for role in definition.roles:
                count = sum(1 for e in role.endpoints if e.kind == INTERNAL)
                if count > MAX_INTERNAL_ENDPOINTS_PER_ROLE:
                    yield self.finding(
                        subject,
                        f"{role.location}/Endpoints",
                        f"Role {role.name!r} has {count} internal endpoints, over the limit of "
                        f"{MAX_INTERNAL_ENDPOINTS_PER_ROLE} per role on the platform that runs VM roles; merge "
                        "them (one endpoint with a FixedPortRange) or move some to another role.",
                        evidence={
                            "role": role.name,
                            "count": str(count),
                            "limit": str(MAX_INTERNAL_ENDPOINTS_PER_ROLE),
                        },
                        line=role.line,
                    )
        total = sum(1 for _ in iter_endpoints(definition, INTERNAL))
        if total > LATER_INTERNAL_ENDPOINTS_PER_SERVICE:
            yield self.finding(
                subject,
                f"{definition_root(definition)}//{INTERNAL}",
                f"The service has {total} internal endpoints, over the limit of "
                f"{LATER_INTERNAL_ENDPOINTS_PER_SERVICE} per deployment; merge them or split the service.",
                evidence={"count": str(total), "limit": str(LATER_INTERNAL_ENDPOINTS_PER_SERVICE)},
            )


class UndefinedLoadBalancerProbe(Rule):
    """An input endpoint names a load-balancer probe the service does not define.

    ## What it does
    Checks that the ``loadBalancerProbe`` attribute of every ``InputEndpoint`` names a
    ``LoadBalancerProbes/LoadBalancerProbe`` of the service definition.

    ## Why is this bad?
    The package is rejected, and the intended health check never runs.

    ## Example
    ```xml
    <InputEndpoint name="Http" protocol="http" port="80" loadBalancerProbe="Health" />
    <!-- no <LoadBalancerProbe name="Health"> -->
    ```

    ## Use instead
    ```xml
    <LoadBalancerProbes>
      <LoadBalancerProbe name="Health" protocol="http" port="80" path="/health" />
    </LoadBalancerProbes>
    ```

    ## References
    - Azure Cloud Services (classic) Definition LoadBalancerProbe Schema: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-loadbalancerprobe
    - Azure Cloud Services (classic) Definition WebRole Schema — InputEndpoint loadBalancerProbe: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-webrole
    """

    id = "VMR518"
    name = "undefined-load-balancer-probe"
    severity = Severity.HIGH
    applies_to = CSDEF_KINDS
    requires = ("definition",)
    tags = ("service-model", "endpoints", "load-balancer")
    references = refs("csdef-lb-probe", "csdef-webrole")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        definition = definition_of(subject)
        probes = [p.name for p in definition.load_balancer_probes]
        for role, endpoint in iter_endpoints(definition, INPUT):
            probe = (endpoint.load_balancer_probe or "").strip()
            if not probe or probe in probes:
                continue
            hint = case_hint("there is", case_twin(probe, probes))
            yield self.finding(
                subject,
                f"{endpoint.location}/@loadBalancerProbe",
                f"{_describe(role, endpoint)} uses load-balancer probe {probe!r}, which the service does not "
                f"define{hint}; add it under <LoadBalancerProbes> or fix the name.",
                evidence={"role": role.name, "endpoint": endpoint.name, "probe": probe},
                line=endpoint.line,
            )


class VmRoleUdpWithoutConnect(Rule):
    """A VM role exposes a UDP endpoint but does not import Windows Azure Connect.

    ## What it does
    Reports a ``VirtualMachineRole`` with a ``udp`` InputEndpoint or InstanceInputEndpoint when the role
    does not import the ``Connect`` module.

    ## Why is this bad?
    UDP input endpoints arrived with SDK 1.5, after the VM role beta shipped (SDK 1.3-1.4), and the
    VM-role guidance of that time routed non-HTTP/TCP traffic to VM roles through Windows Azure Connect
    (IP-level, IPsec-protected connectivity), not through the load balancer. A VM-role image built for
    that model receives no UDP from the load balancer unless the role was also moved to SDK 1.5+
    tooling, and UDP cannot be probed by the load balancer, so a dead UDP listener stays in rotation.
    No surviving public page says how the VM role treated UDP endpoints: this is inferred from the
    timeline above, so the severity is low.

    ## Example
    ```xml
    <VirtualMachineRole name="Game" vmsize="Small">
      <Endpoints><InputEndpoint name="Voice" protocol="udp" port="3478" /></Endpoints>
    </VirtualMachineRole>
    ```

    ## Use instead
    ```xml
    <VirtualMachineRole name="Game" vmsize="Small">
      <Endpoints><InputEndpoint name="Voice" protocol="udp" port="3478" /></Endpoints>
      <Imports><Import moduleName="Connect" /></Imports>
    </VirtualMachineRole>
    ```
    or serve the traffic over TCP, which the load balancer can probe.

    ## References
    - Azure Cloud Services (classic) Definition WebRole Schema — InputEndpoint protocols: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-webrole
    - Azure Load Balancer health probes: https://learn.microsoft.com/en-us/azure/load-balancer/load-balancer-custom-probe-overview
    """

    id = "VMR519"
    name = "vm-role-udp-without-connect"
    severity = Severity.LOW
    applies_to = CSDEF_KINDS
    requires = ("definition",)
    tags = ("service-model", "endpoints", "vm-role")
    references = refs("csdef-webrole", "lb-health-probes")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        definition = definition_of(subject)
        for role, endpoint in iter_endpoints(definition, INPUT, INSTANCE_INPUT):
            if role.kind != VM_ROLE or role.imports_module("Connect"):
                continue
            if protocol_of(endpoint) != "udp":
                continue
            yield self.finding(
                subject,
                endpoint.location,
                f"{_describe(role, endpoint)} is UDP but the VM role does not import Connect: add "
                '<Import moduleName="Connect" /> or serve the traffic over TCP.',
                evidence={"role": role.name, "endpoint": endpoint.name, "protocol": "udp"},
                line=endpoint.line,
            )
