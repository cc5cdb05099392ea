"""The public sources rule documentation cites, in one table, so every page, SARIF log and report links
the same document with the same URL and title.

A rule names its sources with :func:`refs`::

    references = refs("vhd-spec", "azure-prepare-vhd")

which gives the URLs (its ``references`` tuple, used by SARIF, JSON and the rule pages); the rule's
docstring lists the same URLs as Markdown links in its ``## References`` section (``tests/rules/
test_rule_docs.py`` keeps the two in step and every URL in this table). Nothing here points at a document
that is not public: a fact a rule relies on is stated in the rule's own "Why is this bad?" section.

Pages that only survive in Microsoft's archive (the VM role was retired in 2013, Cloud Services (classic)
in 2024) are cited at their ``learn.microsoft.com/.../previous-versions`` address.

This module also decides where a rule's own page lives (:func:`rule_page_url`), for SARIF ``helpUri``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import metadata


@dataclass(frozen=True)
class Source:
    key: str
    title: str
    url: str


_LEARN = "https://learn.microsoft.com/en-us"
_CS = f"{_LEARN}/azure/cloud-services"
_SETUP = f"{_LEARN}/windows-hardware/manufacture/desktop"
_RFC = "https://www.rfc-editor.org/rfc"

_TABLE = (
    # ---- disk image formats and upload --------------------------------------------------------------
    Source(
        "vhd-spec",
        "Virtual Hard Disk Image Format Specification (Microsoft, v1.0)",
        "https://www.microsoft.com/en-us/download/details.aspx?id=23850",
    ),
    Source(
        "ms-vhdx",
        "[MS-VHDX]: Virtual Hard Disk v2 (VHDX) File Format",
        f"{_LEARN}/openspecs/windows_protocols/ms-vhdx/83e061f8-f6e2-4de1-91bd-5d518a43d477",
    ),
    Source(
        "azure-prepare-vhd",
        "Prepare a Windows VHD or VHDX to upload to Azure",
        f"{_LEARN}/azure/virtual-machines/windows/prepare-for-upload-vhd-image",
    ),
    Source(
        "add-azvhd", "Add-AzVhd (Az.Compute): upload a VHD to Azure", f"{_LEARN}/powershell/module/az.compute/add-azvhd"
    ),
    Source(
        "azure-resize-vhd",
        "Prepare Linux for imaging in Azure — Resizing VHDs (qemu-img convert to a fixed VHD)",
        f"{_LEARN}/azure/virtual-machines/linux/create-upload-generic#resizing-vhds",
    ),
    Source(
        "azure-generalize",
        "Generalize a VM before creating an image (Azure)",
        f"{_LEARN}/azure/virtual-machines/generalize",
    ),
    # ---- VM role, integration components, agents ----------------------------------------------------
    Source(
        "vmrole-ic",
        "About the Windows Azure Integration Components (VM role, archived)",
        f"{_LEARN}/previous-versions/azure/gg466232(v=msdn.10)",
    ),
    Source(
        "hyperv-ic",
        "Hyper-V Integration Services",
        f"{_LEARN}/virtualization/hyper-v-on-windows/reference/integration-services",
    ),
    Source(
        "azure-vm-agent",
        "Azure Virtual Machine Agent overview (Windows)",
        f"{_LEARN}/azure/virtual-machines/extensions/agent-windows",
    ),
    # ---- Windows Setup, sysprep, answer files -------------------------------------------------------
    Source("setup-states", "Windows Setup States (ImageState)", f"{_SETUP}/windows-setup-states"),
    Source(
        "sysprep-generalize",
        "Sysprep (Generalize) a Windows installation",
        f"{_SETUP}/sysprep--generalize--a-windows-installation",
    ),
    Source("sysprep-options", "Sysprep command-line options", f"{_SETUP}/sysprep-command-line-options"),
    Source(
        "setup-automation",
        "Windows Setup Automation Overview (answer file search order)",
        f"{_SETUP}/windows-setup-automation-overview",
    ),
    Source(
        "hide-answer-file-secrets",
        "Hide sensitive data in an answer file",
        f"{_LEARN}/windows-hardware/customize/desktop/wsim/hide-sensitive-data-in-an-answer-file",
    ),
    Source(
        "unattend-autologon",
        "Microsoft-Windows-Shell-Setup | AutoLogon (unattend reference)",
        f"{_LEARN}/windows-hardware/customize/desktop/unattend/microsoft-windows-shell-setup-autologon",
    ),
    Source(
        "winlogon-autologon",
        "Turn on automatic logon in Windows (Winlogon DefaultPassword)",
        f"{_LEARN}/troubleshoot/windows-server/user-profiles-and-logon/turn-on-automatic-logon",
    ),
    # ---- Windows Firewall ---------------------------------------------------------------------------
    Source(
        "ms-gpfas-rule",
        "[MS-GPFAS] 2.2.2.19 Firewall Rule and the Firewall Rule Grammar Rule",
        f"{_LEARN}/openspecs/windows_protocols/ms-gpfas/2efe0b76-7b4a-41ff-9050-1023f8196d16",
    ),
    Source(
        "ms-fasp-rule",
        "[MS-FASP] 2.2.37 FW_RULE",
        f"{_LEARN}/openspecs/windows_protocols/ms-fasp/8c008258-166d-46d4-9090-f2ffaa01be4b",
    ),
    Source(
        "netsh-advfirewall",
        "Use netsh advfirewall firewall instead of netsh firewall to control Windows Firewall behavior",
        f"{_LEARN}/troubleshoot/windows-server/networking/netsh-advfirewall-firewall-control-firewall-behavior",
    ),
    Source(
        "winrm-config",
        "Installation and configuration for Windows Remote Management",
        f"{_LEARN}/windows/win32/winrm/installation-and-configuration-for-windows-remote-management",
    ),
    Source(
        "get-service",
        "Get-Service (Microsoft.PowerShell.Management)",
        f"{_LEARN}/powershell/module/microsoft.powershell.management/get-service",
    ),
    # ---- certificates and keys ----------------------------------------------------------------------
    Source(
        "cng-key-storage", "Key Storage and Retrieval (CNG)", f"{_LEARN}/windows/win32/seccng/key-storage-and-retrieval"
    ),
    Source("efs", "File Encryption (EFS, Win32)", f"{_LEARN}/windows/win32/fileio/file-encryption"),
    Source(
        "capi-key-blobs",
        "Base Provider Key BLOBs (CryptoAPI)",
        f"{_LEARN}/windows/win32/seccrypto/base-provider-key-blobs",
    ),
    Source(
        "cert-store-locations", "System Store Locations", f"{_LEARN}/windows/win32/seccrypto/system-store-locations"
    ),
    Source("rfc7292", "RFC 7292: PKCS #12: Personal Information Exchange Syntax v1.1", f"{_RFC}/rfc7292"),
    Source("rfc5958", "RFC 5958: Asymmetric Key Packages (PKCS #8)", f"{_RFC}/rfc5958"),
    Source("rfc7468", "RFC 7468: Textual Encodings of PKIX, PKCS, and CMS Structures (PEM)", f"{_RFC}/rfc7468"),
    Source(
        "keytool",
        "keytool (Java SE 17 tool reference)",
        "https://docs.oracle.com/en/java/javase/17/docs/specs/man/keytool.html",
    ),
    Source(
        "cloud-services-certs",
        "Certificates overview for Azure Cloud Services (classic)",
        f"{_CS}/cloud-services-certs-create",
    ),
    Source(
        "cloud-services-ssl",
        "Configure TLS for an application in Azure Cloud Services (classic)",
        f"{_CS}/cloud-services-configure-ssl-certificate-portal",
    ),
    # ---- storage and other credentials --------------------------------------------------------------
    Source(
        "storage-keys",
        "Manage storage account access keys",
        f"{_LEARN}/azure/storage/common/storage-account-keys-manage",
    ),
    Source(
        "storage-connection-strings",
        "Configure Azure Storage connection strings",
        f"{_LEARN}/azure/storage/common/storage-configure-connection-string",
    ),
    Source(
        "storage-secure-transfer",
        "Require secure transfer to ensure secure connections (Azure Storage)",
        f"{_LEARN}/azure/storage/common/storage-require-secure-transfer",
    ),
    Source(
        "storage-emulator",
        "Use the Azure Storage Emulator for development and testing",
        f"{_LEARN}/azure/storage/common/storage-use-emulator",
    ),
    Source(
        "storage-sas",
        "Grant limited access with shared access signatures (SAS)",
        f"{_LEARN}/azure/storage/common/storage-sas-overview",
    ),
    Source("storage-redundancy", "Azure Storage redundancy", f"{_LEARN}/azure/storage/common/storage-redundancy"),
    Source(
        "service-bus-sas",
        "Service Bus access control with Shared Access Signatures",
        f"{_LEARN}/azure/service-bus-messaging/service-bus-sas",
    ),
    Source(
        "adonet-connection-strings",
        "Connection strings and configuration files (ADO.NET)",
        f"{_LEARN}/dotnet/framework/data/adonet/connection-strings-and-configuration-files",
    ),
    # ---- service model: csdef, cscfg, cspkg ---------------------------------------------------------
    Source(
        "csdef-schema", "Azure Cloud Services (classic) Definition Schema (.csdef file)", f"{_CS}/schema-csdef-file"
    ),
    Source("csdef-webrole", "Azure Cloud Services (classic) Definition WebRole Schema", f"{_CS}/schema-csdef-webrole"),
    Source(
        "csdef-workerrole",
        "Azure Cloud Services (classic) Definition WorkerRole Schema",
        f"{_CS}/schema-csdef-workerrole",
    ),
    Source(
        "csdef-lb-probe",
        "Azure Cloud Services (classic) Definition LoadBalancerProbe Schema",
        f"{_CS}/schema-csdef-loadbalancerprobe",
    ),
    Source(
        "csdef-network-traffic-rules",
        "Azure Cloud Services (classic) Definition NetworkTrafficRules Schema",
        f"{_CS}/schema-csdef-networktrafficrules",
    ),
    Source(
        "csdef-archive",
        "Azure Service Definition Schema (.csdef file), archived",
        f"{_LEARN}/previous-versions/azure/reference/ee758711(v=azure.100)",
    ),
    Source("cscfg-schema", "Azure Cloud Services (classic) Config Schema (.cscfg file)", f"{_CS}/schema-cscfg-file"),
    Source("cscfg-role", "Azure Cloud Services (classic) Config Role Schema", f"{_CS}/schema-cscfg-role"),
    Source(
        "cscfg-archive",
        "Azure Service Configuration Schema (.cscfg file), archived",
        f"{_LEARN}/previous-versions/azure/reference/ee758710(v=azure.100)",
    ),
    Source(
        "cloud-services-model",
        "What is the Cloud Service (classic) model and how do I package it?",
        f"{_CS}/cloud-services-model-and-package",
    ),
    Source("cloud-services-sizes", "Size for Cloud Services (classic)", f"{_CS}/cloud-services-sizes-specs"),
    Source(
        "cloud-services-local-storage",
        "Configure local storage resources (Cloud Services classic)",
        f"{_CS}/cloud-services-configure-local-storage-resources",
    ),
    Source(
        "cloud-services-limits",
        "Azure subscription and service limits: Azure Cloud Services limits",
        f"{_LEARN}/azure/azure-resource-manager/management/azure-subscription-service-limits",
    ),
    Source(
        "cloud-services-internal-endpoints",
        "Communication for roles in Cloud Services (classic)",
        f"{_CS}/cloud-services-enable-communication-role-instances",
    ),
    Source(
        "cloud-services-update",
        "How to update a Cloud Service (classic): upgrade domains and fault domains",
        f"{_CS}/cloud-services-update-azure-service",
    ),
    Source(
        "cloud-services-rdp",
        "Enable Remote Desktop Connection for a role in Azure Cloud Services (classic)",
        f"{_CS}/cloud-services-role-enable-remote-desktop-new-portal",
    ),
    Source(
        "cloud-services-rdp-vs",
        "Enable Remote Desktop for a role in Cloud Services (classic) using Visual Studio",
        f"{_CS}/cloud-services-role-enable-remote-desktop-visual-studio",
    ),
    Source(
        "guest-os-matrix",
        "Azure Guest OS releases and SDK compatibility matrix",
        f"{_CS}/cloud-services-guestos-update-matrix",
    ),
    Source(
        "guest-os-retirement",
        "Supported Guest OS versions and retirement policy",
        f"{_CS}/cloud-services-guestos-retirement-policy",
    ),
    Source(
        "role-lifecycle",
        "Customize the lifecycle of a web or worker role in .NET (Cloud Services classic)",
        f"{_CS}/cloud-services-role-lifecycle-dotnet",
    ),
    Source(
        "opc-ecma-376",
        "ECMA-376 Office Open XML, Part 2: Open Packaging Conventions",
        "https://ecma-international.org/publications-and-standards/standards/ecma-376/",
    ),
    # ---- Service Management API (classic) and ARM ---------------------------------------------------
    Source(
        "sm-cloud-services-api",
        "Cloud Services REST APIs (Service Management, classic)",
        f"{_LEARN}/rest/api/compute/cloudservices/",
    ),
    Source(
        "sm-get-deployment",
        "Get Deployment (Service Management REST API)",
        f"{_LEARN}/rest/api/compute/cloudservices/rest-get-deployment",
    ),
    Source(
        "sm-reimage",
        "Reimage Role Instance (Service Management REST API)",
        f"{_LEARN}/rest/api/compute/cloudservices/rest-reimage-role-instance",
    ),
    Source(
        "sm-reboot",
        "Reboot Role Instance (Service Management REST API, archived)",
        f"{_LEARN}/previous-versions/azure/reference/gg441298(v=azure.100)",
    ),
    Source(
        "sm-rebuild",
        "Rebuild Role Instance (Service Management REST API, archived)",
        f"{_LEARN}/previous-versions/azure/reference/dn627518(v=azure.100)",
    ),
    # ---- VM scale sets (management.api: vmss) --------------------------------------------------------
    Source(
        "vmss-vm-reimage",
        "Virtual Machine Scale Set VMs - Reimage (Azure REST API)",
        f"{_LEARN}/rest/api/compute/virtual-machine-scale-set-vms/reimage",
    ),
    Source(
        "vmss-vm-restart",
        "Virtual Machine Scale Set VMs - Restart (Azure REST API)",
        f"{_LEARN}/rest/api/compute/virtual-machine-scale-set-vms/restart",
    ),
    Source(
        "vm-reimage",
        "Virtual Machines - Reimage (Azure REST API): the OS disk is reset, its deleteOption decides the old one",
        f"{_LEARN}/rest/api/compute/virtual-machines/reimage",
    ),
    Source(
        "vm-temporary-disk",
        "Introduction to Azure managed disks - Temporary disk",
        f"{_LEARN}/azure/virtual-machines/managed-disks-overview#temporary-disk",
    ),
    Source(
        "vmss-attached-disks",
        "Azure Virtual Machine Scale Sets and attached data disks",
        f"{_LEARN}/azure/virtual-machine-scale-sets/virtual-machine-scale-sets-attached-disks",
    ),
    Source(
        "vm-disk-mapping",
        "How to map Azure Disks to Windows VM guest disks (the LUN in a disk's Location)",
        f"{_LEARN}/azure/virtual-machines/windows/azure-to-guest-disk-mapping",
    ),
    Source(
        "vm-attach-data-disk-windows",
        "Attach a managed data disk to a Windows VM (a new disk must be initialized in the guest)",
        f"{_LEARN}/azure/virtual-machines/windows/attach-managed-disk-portal",
    ),
    Source(
        "ephemeral-os-disks",
        "Ephemeral OS disks for Azure VMs",
        f"{_LEARN}/azure/virtual-machines/ephemeral-os-disks",
    ),
    Source(
        "arm-deployment-models",
        "Azure Resource Manager vs. classic deployment",
        f"{_LEARN}/azure/azure-resource-manager/management/deployment-models",
    ),
    # ---- load balancer, TLS, HTTP -------------------------------------------------------------------
    Source(
        "lb-distribution",
        "Azure Load Balancer distribution modes",
        f"{_LEARN}/azure/load-balancer/distribution-mode-concepts",
    ),
    Source(
        "lb-health-probes",
        "Azure Load Balancer health probes",
        f"{_LEARN}/azure/load-balancer/load-balancer-custom-probe-overview",
    ),
    Source("rfc5280", "RFC 5280: Internet X.509 PKI Certificate and CRL Profile", f"{_RFC}/rfc5280"),
    Source(
        "rfc6125",
        "RFC 6125: Representation and Verification of Domain-Based Application Service Identity (TLS)",
        f"{_RFC}/rfc6125",
    ),
    Source("rfc8446", "RFC 8446: The Transport Layer Security (TLS) Protocol Version 1.3", f"{_RFC}/rfc8446"),
    Source("rfc9110", "RFC 9110: HTTP Semantics", f"{_RFC}/rfc9110"),
    Source("rfc9112", "RFC 9112: HTTP/1.1 (persistent connections)", f"{_RFC}/rfc9112"),
)

#: Every cited source by key.
SOURCES: dict[str, Source] = {s.key: s for s in _TABLE}
#: Every cited source by URL.
BY_URL: dict[str, Source] = {s.url: s for s in _TABLE}


def refs(*keys: str) -> tuple[str, ...]:
    """The URLs of the sources named by ``keys`` (a rule's ``references``). Raises KeyError on an unknown key."""
    return tuple(SOURCES[key].url for key in keys)


def title_of(url: str) -> str:
    """The title a URL is cited under (the URL itself when it is not in the table)."""
    source = BY_URL.get(url)
    return source.title if source else url


def link(url: str) -> str:
    """A Markdown link to ``url`` under its table title."""
    return f"[{title_of(url)}]({url})"


# ---- reference lines in docstrings ---------------------------------------------------------------------

#: A reference line of a docstring's References section: ``- <title>[ — <note>]: <https URL>`` (plain text
#: that reads well in a terminal; :func:`linked_references` makes it a Markdown link).
REFERENCE_LINE = re.compile(r"^(?P<indent>\s*)- (?P<text>.+?): (?P<url>https://\S+)$")


def reference_links(text: str) -> list[tuple[str, str]]:
    """(text, URL) of each reference line in ``text``; other lines are ignored."""
    return [(m["text"], m["url"]) for m in map(REFERENCE_LINE.match, text.splitlines()) if m]


def linked_references(text: str) -> str:
    """``text`` with every reference line turned into a Markdown link (``- [title](URL)``)."""
    lines = []
    for line in text.splitlines():
        match = REFERENCE_LINE.match(line)
        lines.append(f"{match['indent']}- [{match['text']}]({match['url']})" if match else line)
    return "\n".join(lines)


# ---- where the rule pages live ------------------------------------------------------------------------

#: The rule pages' folder in the repository (``vmrole rules --docs docs/rules`` writes it).
RULE_DOCS_DIR = "docs/rules"
#: ``[project.urls]`` labels that name the rule pages' base URL directly (a page is ``<base>/<ID>.md``).
_RULE_DOCS_LABELS = ("rules", "rule documentation", "rule-docs")
#: Labels of a GitHub repository URL: pages are then ``<repository>/blob/main/docs/rules/<ID>.md``.
_REPOSITORY_LABELS = ("repository", "source", "homepage")


@cache
def _project_urls() -> dict[str, str]:
    try:
        entries = metadata.metadata("vmrole-harness").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return {}
    urls: dict[str, str] = {}
    for entry in entries:
        label, _, url = entry.partition(",")
        urls[label.strip().lower()] = url.strip()
    return urls


@cache
def rule_docs_base_url() -> str | None:
    """The public base URL of the rule pages, from the distribution's ``[project.urls]``; None when not
    configured. A ``Rules`` URL is used as is; otherwise a GitHub ``Repository``/``Source``/``Homepage``
    URL gives ``<repository>/blob/main/docs/rules``."""
    urls = _project_urls()
    for label in _RULE_DOCS_LABELS:
        if urls.get(label, "").startswith("https://"):
            return urls[label].rstrip("/")
    for label in _REPOSITORY_LABELS:
        url = urls.get(label, "")
        if url.startswith("https://github.com/"):
            return f"{url.rstrip('/').removesuffix('.git')}/blob/main/{RULE_DOCS_DIR}"
    return None


def rule_page_name(rule_id: str) -> str:
    """The file name of a rule's page (``VMR010.md``): by id, which never changes, unlike names."""
    return f"{rule_id}.md"


def rule_page_url(rule_id: str) -> str | None:
    """The public URL of a rule's generated page, or None when no base URL is configured."""
    base = rule_docs_base_url()
    return f"{base}/{rule_page_name(rule_id)}" if base else None


def help_uri(rule_id: str, references: tuple[str, ...] | list[str]) -> str | None:
    """Where a reader of a report learns about a rule: its page when the pages' public URL is known,
    otherwise its first public reference (an https URL), otherwise None."""
    page = rule_page_url(rule_id)
    if page:
        return page
    return next((ref for ref in references if ref.startswith("https://")), None)
