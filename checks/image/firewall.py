"""Firewall vs endpoints (4xx): the image's Windows Firewall against the service model."""

from __future__ import annotations

from collections.abc import Iterator

from harness.docs_sources import refs
from harness.engine.finding import Finding
from harness.engine.rule import NotApplicable
from harness.engine.severity import Severity
from harness.facts.image import ImageFacts, ImageSubject
from harness.facts.image_firewall import (
    FirewallPolicy,
    FirewallRule,
    check_port,
    endpoint_local_port,
    endpoint_local_port_range,
    endpoint_protocol_number,
)
from harness.facts.servicemodel import Endpoint, RoleDef

from ._base import AZURE_ONLY, BOTH, ImageRule

PROFILES = ("domain", "private", "public")
FIREWALL_KEY = "HKLM\\SYSTEM\\CurrentControlSet\\Services\\SharedAccess\\Parameters\\FirewallPolicy"
REMOTE_ACCESS = "RemoteAccess"
RDP_PORT = 3389
WINRM_PORTS = (5985, 5986)


def _policy(facts: ImageFacts) -> FirewallPolicy:
    if facts.firewall is None:
        raise NotApplicable("the image has no firewall policy in the SYSTEM hive")
    return facts.firewall


def _role(subject: ImageSubject) -> RoleDef:
    if subject.role is None:
        raise NotApplicable("no role of a service model is paired with the image (use --vmr-csdef or --vmr-package)")
    return subject.role


def _endpoint_ports(endpoint: Endpoint) -> tuple[int | None, list[int]] | None:
    """(protocol number, ports to check) of an endpoint; None when it cannot be checked statically."""
    try:
        protocol = endpoint_protocol_number(endpoint.protocol or "")
    except ValueError:
        return None  # unknown protocols are the service-model rules' business (VMR5xx)
    port = endpoint_local_port(endpoint)
    if isinstance(port, int):
        return protocol, [port]
    span = endpoint_local_port_range(endpoint)
    if span is not None:
        low, high = span
        return protocol, sorted({low, high})
    return None


def _where(endpoint: Endpoint) -> str:
    return endpoint.location


def _protocol_label(protocol: int | None) -> str:
    return {6: "TCP", 17: "UDP"}.get(protocol, "any-protocol") if protocol is not None else "any-protocol"


class EndpointPortNotAllowed(ImageRule):
    """A declared endpoint's local port is not allowed inbound by the image's firewall.

    ## What it does
    For every InputEndpoint, InternalEndpoint and InstanceInputEndpoint of the paired role with a
    fixed local port, checks the image's effective firewall policy (local and Group Policy stores
    merged) for an active inbound Allow rule matching the protocol and port in each profile
    (domain, private, public: which one a role VM lands in is not fixed).

    ## Why is this bad?
    The VM-role integration components do not open guest firewall ports for you: the load balancer
    sends traffic that Windows Firewall drops, the endpoint times out and the role looks dead.

    ## Example
    csdef `<InputEndpoint name="HttpIn" protocol="http" port="80" localPort="8080"/>` with no
    inbound rule for TCP 8080 in the image.

    ## Use instead
    Before sysprep: `netsh advfirewall firewall add rule name="HttpIn" dir=in action=allow
    protocol=TCP localport=8080` (or `New-NetFirewallRule`), for all profiles.

    ## References
    - [MS-GPFAS] 2.2.2.19 Firewall Rule and the Firewall Rule Grammar Rule: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-gpfas/2efe0b76-7b4a-41ff-9050-1023f8196d16
    - Use netsh advfirewall firewall instead of netsh firewall to control Windows Firewall behavior: https://learn.microsoft.com/en-us/troubleshoot/windows-server/networking/netsh-advfirewall-firewall-control-firewall-behavior
    - Azure Cloud Services (classic) Definition Schema (.csdef file): https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-file
    """

    id = "VMR401"
    name = "endpoint-port-not-allowed"
    severity = Severity.HIGH
    profiles = BOTH
    parts = ("firewall",)
    references = refs("ms-gpfas-rule", "netsh-advfirewall", "csdef-schema")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        role = _role(subject)
        policy = _policy(facts)
        for endpoint in role.endpoints:
            spec = _endpoint_ports(endpoint)
            if spec is None:
                continue
            protocol, ports = spec
            for port in ports:
                verdicts = [check_port(policy, protocol, port, p) for p in PROFILES]
                closed = [v for v in verdicts if v.firewall_enabled and not v.allowed and not v.blocking_rules]
                if closed:
                    names = ", ".join(v.profile for v in closed)
                    yield self.finding(
                        subject,
                        _where(endpoint),
                        f"endpoint {endpoint.name} ({_protocol_label(protocol)} {port}) is not allowed inbound "
                        f"in the {names} profile(s): {closed[0].reason}; add an inbound Allow rule",
                        evidence={"endpoint": endpoint.name, "port": str(port), "profiles": names},
                    )


class EndpointPortBlocked(ImageRule):
    """A Block rule in the image shadows a declared endpoint's port.

    ## What it does
    Reports an active inbound Block rule that matches an endpoint's protocol and local port in some
    profile. Block beats Allow in Windows Firewall (unless the Allow is an authenticated bypass).

    ## Why is this bad?
    The endpoint is dead even if an Allow rule for it exists; such rules are often left by
    hardening baselines or Group Policy and are easy to miss.

    ## Example
    `v2.10|Action=Block|Active=TRUE|Dir=In|Protocol=6|LPort=80|Name=Block HTTP|` with an HttpIn
    endpoint on port 80.

    ## Use instead
    Remove or narrow the Block rule (or its Group Policy), then lint again.

    ## References
    - [MS-GPFAS] 2.2.2.19 Firewall Rule and the Firewall Rule Grammar Rule: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-gpfas/2efe0b76-7b4a-41ff-9050-1023f8196d16
    - [MS-FASP] 2.2.37 FW_RULE: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-fasp/8c008258-166d-46d4-9090-f2ffaa01be4b
    - Use netsh advfirewall firewall instead of netsh firewall to control Windows Firewall behavior: https://learn.microsoft.com/en-us/troubleshoot/windows-server/networking/netsh-advfirewall-firewall-control-firewall-behavior
    """

    id = "VMR402"
    name = "endpoint-port-blocked"
    severity = Severity.HIGH
    profiles = BOTH
    parts = ("firewall",)
    references = refs("ms-gpfas-rule", "ms-fasp-rule", "netsh-advfirewall")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        role = _role(subject)
        policy = _policy(facts)
        for endpoint in role.endpoints:
            spec = _endpoint_ports(endpoint)
            if spec is None:
                continue
            protocol, ports = spec
            for port in ports:
                blocked = [v for v in (check_port(policy, protocol, port, p) for p in PROFILES) if v.blocking_rules]
                blocked = [v for v in blocked if v.firewall_enabled and not v.allowed]
                if blocked:
                    rules = {r.label for v in blocked for r in v.blocking_rules}
                    yield self.finding(
                        subject,
                        _where(endpoint),
                        f"endpoint {endpoint.name} ({_protocol_label(protocol)} {port}) is blocked: "
                        f"{blocked[0].reason}",
                        evidence={
                            "block rules": ", ".join(sorted(rules)),
                            "profiles": ", ".join(v.profile for v in blocked),
                        },
                    )


class FirewallDisabled(ImageRule):
    """Windows Firewall is off in a profile of the image.

    ## What it does
    Reports each profile (domain, private, public) whose effective `EnableFirewall` is 0, naming the
    store that turned it off (Group Policy or local).

    ## Why is this bad?
    Every port the image listens on is exposed, not only the endpoints the service model declares;
    on a VM role the instance is reachable from the other role instances and the internal network.

    ## Example
    `...\\FirewallPolicy\\PublicProfile\\EnableFirewall = 0`.

    ## Use instead
    Keep the firewall on and allow the declared endpoints explicitly
    (`netsh advfirewall set allprofiles state on`).

    ## References
    - Use netsh advfirewall firewall instead of netsh firewall to control Windows Firewall behavior: https://learn.microsoft.com/en-us/troubleshoot/windows-server/networking/netsh-advfirewall-firewall-control-firewall-behavior
    - Prepare a Windows VHD or VHDX to upload to Azure — the firewall stays on for every profile: https://learn.microsoft.com/en-us/azure/virtual-machines/windows/prepare-for-upload-vhd-image
    """

    id = "VMR403"
    name = "firewall-disabled"
    severity = Severity.MEDIUM
    profiles = BOTH
    parts = ("firewall",)
    references = refs("netsh-advfirewall", "azure-prepare-vhd")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        policy = _policy(facts)
        for name in PROFILES:
            prof = policy.profile(name)
            if not prof.firewall_on:
                key = {"domain": "DomainProfile", "private": "StandardProfile", "public": "PublicProfile"}[name]
                yield self.finding(
                    subject,
                    f"{FIREWALL_KEY}\\{key}\\EnableFirewall",
                    f"Windows Firewall is off in the {name} profile ({prof.enabled_source}): turn it on and allow "
                    "the declared endpoints",
                    evidence={"profile": name, "source": prof.enabled_source},
                )


def _numeric_ports(rule: FirewallRule) -> list[tuple[int, int]]:
    return [(p.low, p.high if p.high is not None else p.low) for p in rule.local_ports if p.low is not None]


CORE_NETWORKING_GROUP = "@firewallapi.dll,-25000"


def _core_networking(rule: FirewallRule) -> bool:
    """Windows' Core Networking group: what the OS itself needs to get an address and route."""
    return rule.id.lower().startswith("corenet-") or (rule.group or "").lower() == CORE_NETWORKING_GROUP


class UndeclaredInboundAllow(ImageRule):
    """The image allows inbound ports that no endpoint of the service model declares.

    ## What it does
    Lists active inbound Allow rules for TCP/UDP ports that match no endpoint of the paired role
    (RDP 3389 is expected when the role imports RemoteAccess). Rules without ports (program or
    service rules) and Windows' Core Networking rules (DHCP, ICMPv6, Teredo: ids `CoreNet-*`, group
    `@FirewallAPI.dll,-25000`) are not listed.

    ## Why is this bad?
    Each such rule is attack surface that nobody asked for: a leftover test port, a debugging
    service, a management agent. The load balancer does not forward it, but other instances and the
    internal network reach it.

    ## Example
    An Allow rule for TCP 1433 (SQL Server) on a web front-end role.

    ## Use instead
    Remove or disable the rule before sysprep, or declare the endpoint if the role really serves it.

    ## References
    - [MS-GPFAS] 2.2.2.19 Firewall Rule and the Firewall Rule Grammar Rule: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-gpfas/2efe0b76-7b4a-41ff-9050-1023f8196d16
    - Use netsh advfirewall firewall instead of netsh firewall to control Windows Firewall behavior: https://learn.microsoft.com/en-us/troubleshoot/windows-server/networking/netsh-advfirewall-firewall-control-firewall-behavior
    """

    id = "VMR404"
    name = "undeclared-inbound-allow"
    severity = Severity.LOW
    profiles = BOTH
    parts = ("firewall",)
    references = refs("ms-gpfas-rule", "netsh-advfirewall")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        role = _role(subject)
        policy = _policy(facts)
        declared: list[tuple[int | None, int]] = []
        for endpoint in role.endpoints:
            spec = _endpoint_ports(endpoint)
            if spec is not None:
                declared.extend((spec[0], port) for port in spec[1])
        if role.imports_module(REMOTE_ACCESS):
            declared.append((6, RDP_PORT))
        for rule in policy.rules:
            if not (rule.usable and rule.active and rule.direction == "in" and rule.action in ("allow", "bypass")):
                continue
            if rule.protocol not in (6, 17) or _core_networking(rule):
                continue
            ranges = _numeric_ports(rule)
            if not ranges:
                continue
            covered = any(
                (protocol is None or protocol == rule.protocol) and low <= port <= high
                for protocol, port in declared
                for low, high in ranges
            )
            if not covered:
                ports = ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)
                yield self.finding(
                    subject,
                    f"{FIREWALL_KEY}\\FirewallRules\\{rule.id}"
                    if rule.store == "local"
                    else f"GPO FirewallRules\\{rule.id}",
                    f"inbound Allow rule {rule.label} opens {_protocol_label(rule.protocol)} {ports}, which no "
                    f"endpoint of role {role.name} declares",
                    evidence={"rule": rule.id, "ports": ports, "store": rule.store},
                )


class RemoteDesktopNotReachable(ImageRule):
    """The role imports RemoteAccess but the image does not accept Remote Desktop.

    ## What it does
    When the paired role imports the RemoteAccess plugin, checks that RDP is enabled
    (`fDenyTSConnections = 0`), listens on 3389, and that TCP 3389 is allowed inbound in every profile.

    ## Why is this bad?
    The RemoteForwarder sends RDP to port 3389 of the instance; with RDP disabled or blocked,
    "Connect" in the portal fails and nobody can debug the instance.

    ## Example
    `fDenyTSConnections = 1`, or the built-in `RemoteDesktop-In-TCP` rule left disabled.

    ## Use instead
    `Set-ItemProperty 'HKLM:\\System\\CurrentControlSet\\Control\\Terminal Server' fDenyTSConnections 0`
    and `netsh advfirewall firewall set rule group="remote desktop" new enable=Yes` before sysprep.

    ## References
    - Enable Remote Desktop Connection for a role in Azure Cloud Services (classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-role-enable-remote-desktop-new-portal
    - Prepare a Windows VHD or VHDX to upload to Azure — Remote Desktop enabled and allowed: https://learn.microsoft.com/en-us/azure/virtual-machines/windows/prepare-for-upload-vhd-image
    """

    id = "VMR405"
    name = "remote-desktop-not-reachable"
    severity = Severity.HIGH
    profiles = BOTH
    parts = ("firewall", "remote access")
    references = refs("cloud-services-rdp", "azure-prepare-vhd")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        role = _role(subject)
        if not role.imports_module(REMOTE_ACCESS):
            return
        yield from _rdp_findings(self, subject, facts)


def _rdp_findings(rule: ImageRule, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
    remote = facts.remote_access
    ts_key = "HKLM\\SYSTEM\\CurrentControlSet\\Control\\Terminal Server"
    if remote is not None and remote.deny_ts_connections not in (0, None):
        yield rule.finding(
            subject, f"{ts_key}\\fDenyTSConnections", "Remote Desktop is disabled (fDenyTSConnections=1)"
        )
    port = remote.rdp_port if remote is not None and remote.rdp_port else RDP_PORT
    if port != RDP_PORT:
        yield rule.finding(
            subject,
            f"{ts_key}\\WinStations\\RDP-Tcp\\PortNumber",
            f"RDP listens on port {port}, not 3389 where remote access connects",
        )
    policy = _policy(facts)
    closed = [v for v in (check_port(policy, 6, port, p) for p in PROFILES) if v.firewall_enabled and not v.allowed]
    if closed:
        yield rule.finding(
            subject,
            f"{FIREWALL_KEY}\\FirewallRules",
            f"TCP {port} (Remote Desktop) is not allowed inbound in the {', '.join(v.profile for v in closed)} "
            f"profile(s): {closed[0].reason}",
        )


class AzureRemoteManagementClosed(ImageRule):
    """An Azure image does not allow Remote Desktop and WinRM inbound.

    ## What it does
    Azure profile: checks RDP (enabled, TCP 3389 allowed inbound) and WinRM (TCP 5985 or 5986
    allowed inbound) in every profile, as Azure's image-preparation guide asks.

    ## Why is this bad?
    Without RDP or WinRM, a VM created from the image cannot be reached for troubleshooting or
    configuration (serial console aside).

    ## Example
    The built-in `RemoteDesktop-In-TCP` and `WINRM-HTTP-In-TCP` rules disabled.

    ## Use instead
    `Enable-PSRemoting -Force`; `Set-NetFirewallRule -DisplayGroup 'Remote Desktop' -Enabled True`.

    ## References
    - Prepare a Windows VHD or VHDX to upload to Azure — Remote Desktop and WinRM: https://learn.microsoft.com/en-us/azure/virtual-machines/windows/prepare-for-upload-vhd-image
    - Installation and configuration for Windows Remote Management: https://learn.microsoft.com/en-us/windows/win32/winrm/installation-and-configuration-for-windows-remote-management
    """

    id = "VMR406"
    name = "azure-remote-management-closed"
    severity = Severity.MEDIUM
    profiles = AZURE_ONLY
    parts = ("firewall", "remote access")
    references = refs("azure-prepare-vhd", "winrm-config")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        yield from _rdp_findings(self, subject, facts)
        policy = _policy(facts)
        closed = [
            p
            for p in PROFILES
            if not any(check_port(policy, 6, port, p).allowed for port in WINRM_PORTS) and policy.profile(p).firewall_on
        ]
        if closed:
            yield self.finding(
                subject,
                f"{FIREWALL_KEY}\\FirewallRules",
                f"WinRM (TCP 5985/5986) is not allowed inbound in the {', '.join(closed)} profile(s)",
            )


class DynamicEndpointPort(ImageRule):
    """An endpoint's local port is dynamic, so the image's firewall cannot be checked for it.

    ## What it does
    Lists endpoints with `localPort="*"` (or an InternalEndpoint without a fixed port): the fabric
    picks the port at deployment, so no rule in the image can be matched against it.

    ## Why is this bad?
    It is not wrong in itself, but on a VM role nothing opens the chosen port in the guest unless
    the image allows the listening program or service (an App/Svc rule). This finding says the check
    did not cover the endpoint, rather than passing it silently.

    ## Example
    `<InternalEndpoint name="Gossip" protocol="tcp"/>`.

    ## Use instead
    Declare a fixed local port, or allow the listening program by path in the image's firewall.

    ## References
    - Azure Cloud Services (classic) Definition WebRole Schema — localPort="*": https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-webrole
    - [MS-GPFAS] 2.2.2.19 Firewall Rule and the Firewall Rule Grammar Rule: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-gpfas/2efe0b76-7b4a-41ff-9050-1023f8196d16
    """

    id = "VMR407"
    name = "dynamic-endpoint-port"
    severity = Severity.INFO
    profiles = BOTH
    parts = ("firewall",)
    references = refs("csdef-webrole", "ms-gpfas-rule")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        role = _role(subject)
        for endpoint in role.endpoints:
            if endpoint_local_port(endpoint) == "dynamic":
                yield self.finding(
                    subject,
                    _where(endpoint),
                    f"endpoint {endpoint.name} has a dynamic local port: the image's firewall was not checked for it",
                )


class LegacyOpenPorts(ImageRule):
    """The image carries pre-Vista GloballyOpenPorts firewall entries.

    ## What it does
    Lists entries of `...\\GloballyOpenPorts\\List` (the Windows XP/2003 firewall format) in the
    local or Group Policy store.

    ## Why is this bad?
    The `netsh firewall` context that writes them is deprecated, not removed: Windows Server 2008 R2
    still honours them for compatibility, so they open ports that no modern rule shows (`netsh
    advfirewall` and the MMC do not list them). Which legacy values each release still applies is not
    documented, hence the low severity.

    ## Example
    `"8080:TCP" = "8080:TCP:*:Enabled:Legacy app"` under `StandardProfile\\GloballyOpenPorts\\List`.

    ## Use instead
    Replace them with Windows Firewall with Advanced Security rules and delete the List values.

    ## References
    - Use netsh advfirewall firewall instead of netsh firewall to control Windows Firewall behavior: https://learn.microsoft.com/en-us/troubleshoot/windows-server/networking/netsh-advfirewall-firewall-control-firewall-behavior
    """

    id = "VMR408"
    name = "legacy-open-ports"
    severity = Severity.LOW
    profiles = BOTH
    parts = ("firewall",)
    references = refs("netsh-advfirewall")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        policy = _policy(facts)
        for entry in policy.legacy_open_ports:
            if entry.enabled:
                yield self.finding(
                    subject,
                    f"{entry.store} {entry.profile_key}\\GloballyOpenPorts\\List\\{entry.value_name}",
                    f"legacy open port {entry.value_name} ({entry.name or 'unnamed'}) is enabled",
                )


class FirewallRuleUnparsed(ImageRule):
    """A firewall rule string in the image does not follow the rule grammar.

    ## What it does
    Lists rules of the local and Group Policy stores that could not be fully understood (no version
    token, a non-numeric protocol, an invalid port) and rules carrying fields the grammar table does
    not know (kept, reported for review).

    ## Why is this bad?
    Windows ignores a rule it cannot parse, so the port it was meant to open stays closed; a rule
    with unknown fields may behave differently on the target OS version than the linter assumes.

    ## Example
    `v2.10|Action=Allow|Dir=In|Protocol=tcp|LPort=80|` (Protocol must be a number).

    ## Use instead
    Create rules with `netsh advfirewall` or `New-NetFirewallRule` rather than writing the registry.

    ## References
    - [MS-GPFAS] 2.2.2.19 Firewall Rule and the Firewall Rule Grammar Rule: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-gpfas/2efe0b76-7b4a-41ff-9050-1023f8196d16
    - [MS-FASP] 2.2.37 FW_RULE: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-fasp/8c008258-166d-46d4-9090-f2ffaa01be4b
    """

    id = "VMR409"
    name = "firewall-rule-unparsed"
    severity = Severity.LOW
    profiles = BOTH
    parts = ("firewall",)
    references = refs("ms-gpfas-rule", "ms-fasp-rule")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        policy = _policy(facts)
        for rule in policy.rules:
            if rule.problems:
                yield self.finding(
                    subject,
                    f"{rule.store} FirewallRules\\{rule.id}",
                    f"firewall rule {rule.label}: {'; '.join(rule.problems)}",
                )
            elif rule.unknown_fields or rule.unknown_version:
                unknown = [f"version {rule.unknown_version}"] if rule.unknown_version else []
                if rule.unknown_fields:
                    unknown.append(f"fields {', '.join(rule.unknown_fields)}")
                yield self.finding(
                    subject,
                    f"{rule.store} FirewallRules\\{rule.id}",
                    f"firewall rule {rule.label} has {' and '.join(unknown)} outside the MS-GPFAS rule grammar",
                    severity=Severity.INFO,
                )
