"""In-guest rules (VMR630-VMR649): listeners, runtime firewall, services and app state, seen over WinRM.

They judge :class:`harness.facts.live.guest.GuestFacts` (stage ``guest``), except VMR634, which needs only
the target's ``app_state_paths``.
"""

from __future__ import annotations

from collections.abc import Iterator

from harness.checks.live._naming import instance_label

from harness.docs_sources import refs
from harness.engine.artefact import DEPLOYMENT
from harness.engine.finding import Finding
from harness.engine.rule import Rule
from harness.engine.severity import Severity
from harness.facts.live.subject import LiveFacts, present

KINDS = frozenset({DEPLOYMENT})


def _loc(instance: str, what: str = "") -> str:
    return f"instance {instance}" + (f" / {what}" if what else "")


class GuestUnreachable(Rule):
    """An instance cannot be reached over WinRM, or an in-guest check could not run.

    ## What it does
    Reports every instance whose WinRM shell could not be opened (through the instance input endpoint
    named by ``winrm.endpoint``) and every in-guest check (``netstat``, ``netsh``, services) that failed.

    ## Why is this bad?
    Without WinRM no in-guest fact can be checked: listeners, firewall and services go unverified, and
    operators lose their only remote shell into the VM role.

    ## Example
    An InstanceInputEndpoint ``WinRM`` whose local port 5986 has no HTTPS listener, or a wrong password.

    ## Use instead
    Declare ``<InstanceInputEndpoint name="WinRM" localPort="5986" protocol="tcp">`` with a public port range,
    configure an HTTPS listener in the image and give the target the right credentials and CA.

    ## References
    - Installation and configuration for Windows Remote Management: https://learn.microsoft.com/en-us/windows/win32/winrm/installation-and-configuration-for-windows-remote-management
    """

    id = "VMR630"
    name = "guest-winrm-unreachable"
    severity = Severity.HIGH
    applies_to = KINDS
    requires = ("guest",)
    tags = ("live", "guest", "winrm")
    references = refs("winrm-config")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for inst in present(subject.guest, "guest").instances:
            if not inst.reachable:
                yield self.finding(
                    subject,
                    _loc(inst.instance),
                    f"instance {instance_label(subject, inst.instance)} (role {inst.role}) cannot be reached over "
                    f"WinRM: {inst.error}",
                    evidence={"instance": inst.instance, "error": inst.error or ""},
                )
            for error in inst.check_errors:
                yield self.finding(
                    subject,
                    _loc(inst.instance),
                    f"an in-guest check could not run in {instance_label(subject, inst.instance)}: {error}",
                    evidence={"instance": inst.instance, "error": error},
                    severity=Severity.MEDIUM,
                )


class EndpointNotListening(Rule):
    """A declared endpoint's local port has no listener inside the instance.

    ## What it does
    For every InputEndpoint and InstanceInputEndpoint of the role, looks for its ``localPort`` among the
    listening sockets ``netstat -an`` shows inside each instance.

    ## Why is this bad?
    The load balancer forwards the public port to the local port: with nothing listening there, every
    connection through the VIP to that instance is refused.

    ## Example
    ``<InputEndpoint name="HttpIn" protocol="http" port="80" localPort="80" />`` while IIS is stopped or
    bound to 8080.

    ## Use instead
    Start the application on the declared local port (or declare the port it really uses).

    ## References
    - Azure Cloud Services (classic) Definition WebRole Schema — localPort: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-webrole
    - Azure Load Balancer health probes: https://learn.microsoft.com/en-us/azure/load-balancer/load-balancer-custom-probe-overview
    """

    id = "VMR631"
    name = "endpoint-not-listening"
    severity = Severity.HIGH
    applies_to = KINDS
    requires = ("guest",)
    tags = ("live", "guest", "endpoints")
    references = refs("csdef-webrole", "lb-health-probes")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for inst in present(subject.guest, "guest").instances:
            for port in inst.ports:
                if port.listening is False:
                    yield self.finding(
                        subject,
                        _loc(inst.instance, port.endpoint),
                        f"{port.kind} {port.endpoint!r}: nothing listens on local {port.protocol.upper()} port "
                        f"{port.local_port} in instance {instance_label(subject, inst.instance)} (netstat -an)",
                        evidence={"instance": inst.instance, "endpoint": port.endpoint, "port": str(port.local_port)},
                    )


class FirewallBlocksEndpoint(Rule):
    """The instance's Windows Firewall does not let a declared endpoint's local port in.

    ## What it does
    Reads ``netsh advfirewall show allprofiles state`` and ``netsh advfirewall firewall show rule name=all
    dir=in`` in each instance: every profile that is on needs an enabled inbound Allow rule covering the
    endpoint's protocol and local port, and no enabled inbound Block rule may match it.

    ## Why is this bad?
    The load balancer delivers the traffic to the VM, and the guest's own firewall drops it: the endpoint
    looks dead from outside although the application listens.

    ## Example
    A custom image whose firewall allows only WinRM (5986) while the role declares HttpIn on local port 80.

    ## Use instead
    ``netsh advfirewall firewall add rule name="HttpIn" dir=in action=allow protocol=TCP localport=80`` in
    the image or a startup task.

    ## References
    - Use netsh advfirewall firewall instead of netsh firewall to control Windows Firewall behavior: https://learn.microsoft.com/en-us/troubleshoot/windows-server/networking/netsh-advfirewall-firewall-control-firewall-behavior
    - [MS-GPFAS] 2.2.2.19 Firewall Rule and the Firewall Rule Grammar Rule: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-gpfas/2efe0b76-7b4a-41ff-9050-1023f8196d16
    """

    id = "VMR632"
    name = "firewall-blocks-endpoint"
    severity = Severity.HIGH
    applies_to = KINDS
    requires = ("guest",)
    tags = ("live", "guest", "firewall")
    references = refs("netsh-advfirewall", "ms-gpfas-rule")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for inst in present(subject.guest, "guest").instances:
            for port in inst.ports:
                if port.firewall_allowed is not False:
                    continue
                if port.block_rule:
                    cause = f"the inbound block rule {port.block_rule!r} matches it"
                else:
                    cause = f"no enabled inbound allow rule for it in the {', '.join(port.blocked_profiles)} profile(s)"
                yield self.finding(
                    subject,
                    _loc(inst.instance, port.endpoint),
                    f"{port.kind} {port.endpoint!r}: the firewall of instance {instance_label(subject, inst.instance)} "
                    f"blocks inbound {port.protocol.upper()} {port.local_port}: {cause}",
                    evidence={
                        "instance": inst.instance,
                        "endpoint": port.endpoint,
                        "port": str(port.local_port),
                        "profiles": ",".join(port.blocked_profiles),
                    },
                )


class ServiceNotRunning(Rule):
    """A service the target expects is not running (or not installed) in an instance.

    ## What it does
    Queries every service named in the target's ``services`` list in each instance (``Get-Service`` through
    one PowerShell batch, ``sc query`` as fallback) and reports those not ``Running``.

    ## Why is this bad?
    The role reports Ready while the service that does its work is stopped: requests fail although the
    platform sees a healthy instance.

    ## Example
    ``services: [W3SVC]`` while IIS is stopped or set to manual start in the image.

    ## Use instead
    Set the service to start automatically in the image (``sc config W3SVC start= auto``) and make sure it
    starts.

    ## References
    - Get-Service (Microsoft.PowerShell.Management): https://learn.microsoft.com/en-us/powershell/module/microsoft.powershell.management/get-service
    - Installation and configuration for Windows Remote Management: https://learn.microsoft.com/en-us/windows/win32/winrm/installation-and-configuration-for-windows-remote-management
    """

    id = "VMR633"
    name = "service-not-running"
    severity = Severity.HIGH
    applies_to = KINDS
    requires = ("guest",)
    tags = ("live", "guest", "services")
    references = refs("get-service", "winrm-config")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for inst in present(subject.guest, "guest").instances:
            who = instance_label(subject, inst.instance)
            for svc in inst.services:
                if svc.exists is False:
                    message = f"service {svc.name!r} is not installed in instance {who}"
                elif svc.exists and svc.status != "Running":
                    message = f"service {svc.name!r} is {svc.status} in instance {who}, expected Running"
                else:
                    continue
                yield self.finding(
                    subject,
                    _loc(inst.instance, svc.name),
                    message,
                    evidence={"instance": inst.instance, "service": svc.name, "status": str(svc.status)},
                )


class AppStateOnOsDrive(Rule):
    """Declared application state lives on the OS drive, which a reimage resets.

    ## What it does
    Looks at the target's ``app_state_paths``: a path on ``C:`` outside the LocalStorage roots
    (``C:\\Resources\\Directory\\…``) is flagged.

    ## Why is this bad?
    The VM role is stateless: a reimage (or a move to new hardware) recreates the OS drive from the image,
    so anything written there is lost.

    ## Example
    ``app_state_paths: ['C:\\AppState\\orders.db']``

    ## Use instead
    Keep state in blob storage or a database; for caches use a LocalStorage resource with
    ``cleanOnRoleRecycle="false"`` (kept on reimage, still lost when the VM moves).

    ## References
    - Reimage Role Instance (Service Management REST API): https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-reimage-role-instance
    - Configure local storage resources (Cloud Services classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-configure-local-storage-resources
    """

    id = "VMR634"
    name = "app-state-on-os-drive"
    severity = Severity.MEDIUM
    applies_to = KINDS
    requires = ("guest",)
    tags = ("live", "guest", "state")
    references = refs("sm-reimage", "cloud-services-local-storage")

    def check(self, subject: LiveFacts) -> Iterator[Finding]:
        for path in present(subject.guest, "guest").app_state_paths:
            if path.on_os_drive:
                yield self.finding(
                    subject,
                    f"app_state_paths / {path.path}",
                    f"application state '{path.path}' is on the OS drive {path.drive}:, which a reimage resets "
                    "to the image: keep it in blob storage (or LocalStorage with cleanOnRoleRecycle=false)",
                    evidence={"path": path.path},
                )
