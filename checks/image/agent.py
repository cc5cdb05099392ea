"""Integration components and guest agent (1xx): present, set to start, answer file in place."""

from __future__ import annotations

from collections.abc import Iterator

from harness.docs_sources import refs
from harness.engine.finding import Finding
from harness.engine.severity import Severity
from harness.facts.image import AZURE, VMROLE, ImageFacts, ImageSubject
from harness.facts.image_signatures import SignatureMatch

from ._base import AZURE_ONLY, BOTH, VMROLE_ONLY, ImageRule

SERVICES_KEY = "HKLM\\SYSTEM\\CurrentControlSet\\Services"


def _matches(facts: ImageFacts, profile: str) -> list[SignatureMatch]:
    return [m for m in facts.signature_matches if m.profile == profile]


def _signals(matches: list[SignatureMatch]) -> str:
    return ", ".join(sorted({m.signature_id for m in matches})) or "none"


class IntegrationComponentsMissing(ImageRule):
    """The VM-role integration components are not installed in the image.

    ## What it does
    VM-role profile: looks for the integration components with the signature file (uninstall entry
    or MSI registration, install folder, the agent service; extend with `--vmr-signatures`) and
    reports an image where no strong signal matched. Weak signals (the answer file, the
    ServiceRuntime in the GAC) are listed as evidence but are not enough.

    ## Why is this bad?
    Without the integration components the instance never talks to the fabric: it is not given its
    certificates or local storage, never reports Ready, and the load balancer never sends it
    traffic. The deployment times out.

    ## Example
    An image sysprepped straight after installing the application, without running
    `WaIntegrationComponents-x64.msi` from `wavmroleic.iso`.

    ## Use instead
    Attach `wavmroleic.iso` (SDK `iso` folder), run `WaIntegrationComponents-x64.msi`, then sysprep
    with the answer file it writes (`C:\\unattend.xml`).

    ## References
    - About the Windows Azure Integration Components (VM role, archived): https://learn.microsoft.com/en-us/previous-versions/azure/gg466232(v=msdn.10)
    - Hyper-V Integration Services — Hyper-V's own integration services are a different thing: https://learn.microsoft.com/en-us/virtualization/hyper-v-on-windows/reference/integration-services
    """

    id = "VMR101"
    name = "integration-components-missing"
    severity = Severity.CRITICAL
    profiles = VMROLE_ONLY
    parts = ("signatures",)
    references = refs("vmrole-ic", "hyperv-ic")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        matches = _matches(facts, VMROLE)
        if not any(m.strength == "strong" for m in matches):
            yield self.finding(
                subject,
                "C:\\Program Files\\Windows Azure Integration Components",
                "no sign of the VM-role integration components (uninstall entry, install folder or agent service): "
                "install WaIntegrationComponents-x64.msi before sysprep",
                evidence={"weak signals": _signals(matches)},
            )


class AzureVmAgentMissing(ImageRule):
    """The Azure VM agent is not installed in the image.

    ## What it does
    Azure profile: looks for the `WindowsAzureGuestAgent` and `RdAgent` services, the agent's files
    under `C:\\WindowsAzure` and its uninstall entry; reports an image where no strong signal matched.

    ## Why is this bad?
    Without the agent Azure cannot report provisioning success, reset passwords, or run any VM
    extension; the VM works, but much of the platform does not.

    ## Example
    An image generalized without running `WindowsAzureVmAgent.msi`.

    ## Use instead
    Install the VM agent (`WindowsAzureVmAgent.<version>.fre.msi`) before sysprep.

    ## References
    - Azure Virtual Machine Agent overview (Windows): https://learn.microsoft.com/en-us/azure/virtual-machines/extensions/agent-windows
    - Prepare a Windows VHD or VHDX to upload to Azure: https://learn.microsoft.com/en-us/azure/virtual-machines/windows/prepare-for-upload-vhd-image
    """

    id = "VMR102"
    name = "azure-vm-agent-missing"
    severity = Severity.MEDIUM
    profiles = AZURE_ONLY
    parts = ("signatures",)
    references = refs("azure-vm-agent", "azure-prepare-vhd")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        matches = _matches(facts, AZURE)
        if not any(m.strength == "strong" for m in matches):
            yield self.finding(
                subject,
                f"{SERVICES_KEY}\\WindowsAzureGuestAgent",
                "the Azure VM agent is not installed (no WindowsAzureGuestAgent/RdAgent service, no C:\\WindowsAzure "
                "agent files): install it before sysprep",
                evidence={"weak signals": _signals(matches)},
            )


class AgentServiceNotAutomatic(ImageRule):
    """An integration-component or agent service is installed but does not start automatically.

    ## What it does
    For every service signal of the image's profile that matched a service whose start type the
    signature does not accept (the agents must be Automatic, start type 2), reports the service and
    its start type.

    ## Why is this bad?
    The agent is what reports the instance Ready to the fabric (and, for Azure, provisioning
    success). Set to Manual or Disabled, it never starts after sysprep's first boot.

    ## Example
    `HKLM\\SYSTEM\\ControlSet001\\Services\\RdAgent\\Start = 4` (disabled while debugging).

    ## Use instead
    `sc config RdAgent start= auto` (and the same for the other agent services) before sysprep.

    ## References
    - About the Windows Azure Integration Components (VM role, archived) — the agent starts at boot: https://learn.microsoft.com/en-us/previous-versions/azure/gg466232(v=msdn.10)
    - Azure Virtual Machine Agent overview (Windows): https://learn.microsoft.com/en-us/azure/virtual-machines/extensions/agent-windows
    """

    id = "VMR103"
    name = "agent-service-not-automatic"
    severity = Severity.HIGH
    profiles = BOTH
    parts = ("signatures", "services")
    references = refs("vmrole-ic", "azure-vm-agent")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        seen: set[str] = set()
        for match in _matches(facts, subject.profile):
            if match.kind != "service" or match.requirements_met or match.subject.lower() in seen:
                continue
            seen.add(match.subject.lower())
            yield self.finding(
                subject,
                f"{SERVICES_KEY}\\{match.subject}\\Start",
                f"agent service {match.subject} does not start automatically ({match.detail}): set it to Automatic",
                evidence={"signature": match.signature_id},
            )


class RoleAnswerFileMissing(ImageRule):
    """The integration components' answer file is not at the root of the system drive.

    ## What it does
    VM-role profile: reports an image without an answer file at `C:\\unattend.xml` (or
    `C:\\Autounattend.xml`), the file the integration-component setup writes and sysprep is run with.

    ## Why is this bad?
    The answer file sets the locale, time zone and Windows Update defaults and drives the OOBE pass
    at first boot; without it (and with nothing earlier in Setup's search order) the instance stops
    at an interactive OOBE screen and never reports Ready.

    ## Example
    `C:\\unattend.xml` deleted "to clean up" before sysprep.

    ## Use instead
    Re-run the integration-component setup, or restore its answer file, and run
    `sysprep /generalize /oobe /shutdown /unattend:C:\\unattend.xml`.

    ## References
    - About the Windows Azure Integration Components (VM role, archived) — its answer file: https://learn.microsoft.com/en-us/previous-versions/azure/gg466232(v=msdn.10)
    - Windows Setup Automation Overview (answer file search order) — implicit answer file search order: https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/windows-setup-automation-overview
    """

    id = "VMR104"
    name = "role-answer-file-missing"
    severity = Severity.HIGH
    profiles = VMROLE_ONLY
    parts = ("answer files",)
    references = refs("vmrole-ic", "setup-automation")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        if any(position == 7 for position, _ in facts.answer_file_order):
            return
        yield self.finding(
            subject,
            "C:\\unattend.xml",
            "no answer file at the root of the system drive (C:\\unattend.xml, written by the integration components)",
            evidence={"answer files found": ", ".join(f"C:{p}" for _, p in facts.answer_file_order) or "none"},
        )


class AnswerFileLacksOobe(ImageRule):
    """The answer file that will take effect has no oobeSystem pass (or is not a valid answer file).

    ## What it does
    Takes the first answer file in Windows Setup's search order and checks that it parses as an
    `unattend` document and has a `<settings pass="oobeSystem">` section.

    ## Why is this bad?
    The OOBE pass is what runs unattended at the first boot of a generalized image. Without it
    Setup shows the interactive out-of-box screens and the instance never comes up.

    ## Example
    `C:\\unattend.xml` with only a `specialize` pass, or a file that is not XML at all.

    ## Use instead
    Keep the oobeSystem pass the integration components wrote (add sections, do not remove them).

    ## References
    - Windows Setup Automation Overview (answer file search order): https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/windows-setup-automation-overview
    - About the Windows Azure Integration Components (VM role, archived): https://learn.microsoft.com/en-us/previous-versions/azure/gg466232(v=msdn.10)
    """

    id = "VMR105"
    name = "answer-file-lacks-oobe"
    severity = Severity.MEDIUM
    profiles = VMROLE_ONLY
    parts = ("answer files",)
    references = refs("setup-automation", "vmrole-ic")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        if not facts.answer_files:
            return
        first = facts.answer_files[0]
        where = f"C:{first.path}"
        if first.problem:
            yield self.finding(
                subject, where, f"the answer file that takes effect ({where}) is unreadable: {first.problem}"
            )
        elif not first.is_unattend:
            yield self.finding(
                subject,
                where,
                f"{where} is not an unattend document (root <unattend>, namespace urn:schemas-microsoft-com:unattend)",
            )
        elif "oobeSystem" not in first.passes:
            yield self.finding(
                subject,
                where,
                f"{where} has no oobeSystem pass (passes: {', '.join(first.passes) or 'none'})",
            )
