"""Realistic, lint-clean Windows image skeletons and the small builders rule tests need.

- :func:`windows_server_2008r2_vmrole`: a generalized Windows Server 2008 R2 SP1 x64 VM-role image with the
  Windows Azure Integration Components, a VM-role adapter service and an IIS app whose firewall rules open
  exactly the ports of the bundled sample service model (``harness/samples/vmrole``).
- :func:`windows_server_2019_azure`: a generalized Windows Server 2019 image prepared for today's Azure upload
  rules (Azure VM agent, no cached answer file, RDP/WinRM/ICMP rules, DHCP, UTC clock, SAN policy, ...).

Both return an :class:`~harness.testing.images.ImageSpec`; derive bad variants with
:meth:`ImageSpec.with_changes`, e.g.::

    bad = windows_server_2008r2_vmrole().with_changes(
        hives={"SOFTWARE": {WINLOGON: {"DefaultPassword": sz("hunter2")}}},
        files={"Windows/Panther/unattend.xml": answer_file(admin_password="P@ss")},
    )

Identifiers (MachineGuid, SIDs, product codes, computer names) are synthetic but fixed (uuid5 of a label), so
specs are deterministic. Exact strings no public source confirms are plausible stand-ins.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.serialization import Encoding

from harness.testing.hivewriter import RegValue, binary, dword, expand_sz, multi_sz, sz
from harness.testing.images import ImageSpec
from harness.testing.keymaterial import (
    capi_machine_key_file_bytes,
    cert_blob,
    cert_thumbprint,
    root_ca_certificate,
)

__all__ = [
    "ADMIN_NTUSER",
    "AZURE_AGENT_PATH",
    "DEFAULT_HIVE",
    "DEFAULT_NTUSER",
    "FIREWALL_POLICY",
    "IC_PRODUCT_CODE",
    "IIS_MACHINE_KEYS",
    "MACHINE_GUID_2008R2",
    "MACHINE_GUID_2019",
    "SAM_HIVE",
    "SECURITY_HIVE",
    "SOFTWARE_HIVE",
    "SYSTEM_HIVE",
    "VMROLE_APP_PORTS",
    "WINLOGON",
    "answer_file",
    "firewall_rule",
    "machine_sid",
    "packed_guid",
    "pe_image",
    "root_certificate_der",
    "windows_server_2008r2_vmrole",
    "windows_server_2019_azure",
]

SYSTEM_HIVE = "Windows/System32/config/SYSTEM"
SOFTWARE_HIVE = "Windows/System32/config/SOFTWARE"
SAM_HIVE = "Windows/System32/config/SAM"
SECURITY_HIVE = "Windows/System32/config/SECURITY"
DEFAULT_HIVE = "Windows/System32/config/DEFAULT"
ADMIN_NTUSER = "Users/Administrator/NTUSER.DAT"
DEFAULT_NTUSER = "Users/Default/NTUSER.DAT"

#: SOFTWARE key paths rule tests change most.
WINLOGON = "Microsoft\\Windows NT\\CurrentVersion\\Winlogon"
CURRENT_VERSION = "Microsoft\\Windows NT\\CurrentVersion"
SETUP_STATE = "Microsoft\\Windows\\CurrentVersion\\Setup\\State"
UNINSTALL = "Microsoft\\Windows\\CurrentVersion\\Uninstall"
#: Relative to a control set ("ControlSet001\\" + FIREWALL_POLICY).
FIREWALL_POLICY = "Services\\SharedAccess\\Parameters\\FirewallPolicy"

_NS = uuid.UUID("5b0c1d7e-9c1a-4f1e-8b44-0d7e5f3a9c21")  # namespace of this module's synthetic identifiers


def _guid(label: str) -> str:
    return str(uuid.uuid5(_NS, label))


def _braced(label: str) -> str:
    return "{" + _guid(label).upper() + "}"


MACHINE_GUID_2008R2 = _guid("machine-guid ws2008r2-vmrole")
MACHINE_GUID_2019 = _guid("machine-guid ws2019-azure")
IC_PRODUCT_CODE = _braced("msi product Windows Azure Integration Components 1.6")
ADAPTER_PRODUCT_CODE = _braced("msi product Contoso WebVM Adapter")
AZURE_AGENT_PRODUCT_CODE = _braced("msi product Windows Azure VM Agent 2.7")
AZURE_AGENT_PATH = "WindowsAzure/Packages/GuestAgent/WindowsAzureGuestAgent.exe"

#: MachineKeys files Windows and IIS ship (the shipped machine-key allowlist): name prefix -> key container. The first
#: three prefixes are derived from their container names (keymaterial.capi_container_file_name); the container
#: names of the last two are not known.
IIS_MACHINE_KEYS = {
    "6de9cb26d2b98c01ec4e9e8b34824aa2": "iisConfigurationKey",
    "76944fb33636aeddb9590521c2e8815a": "iisWasKey",
    "d6d986f09a1ee04e24c949879fdb506c": "NetFrameworkConfigurationKey",
    "c2319c42033a5ca7f44e731bfd3fa2b5": "unknown-c2319c42",
    "7a436fe806e483969f48a894af2fe9a1": "unknown-7a436fe8",
}

#: (endpoint name, TCP port) of the VM role in harness/samples/vmrole/ServiceDefinition.csdef: the image's
#: firewall must allow each of them inbound (VMR401).
VMROLE_APP_PORTS = (("HttpIn", 80), ("HttpsIn", 443), ("Control", 8080), ("Direct", 8443), ("WinRM", 5986))

_PUBLIC_KEY_TOKEN = "31bf3856ad364e35"


# --------------------------------------------------------------------------------------------- builders


def packed_guid(guid: str) -> str:
    """The Windows Installer "packed" (compressed) form of a GUID, as used under
    ``Classes\\Installer\\Products``: each of the first three groups reversed, then each byte's nibbles
    swapped, upper-case, no braces."""
    hexs = uuid.UUID(guid.strip("{}")).hex.upper()
    head = hexs[0:8][::-1] + hexs[8:12][::-1] + hexs[12:16][::-1]
    tail = "".join(hexs[i + 1] + hexs[i] for i in range(16, 32, 2))
    return head + tail


def firewall_rule(*, version: str = "2.10", **fields: str | int | bool | Sequence[str | int]) -> str:
    """A Windows Firewall rule string in the MS-GPFAS 2.2.2.19 grammar:
    ``v2.10|Action=Allow|Active=TRUE|Dir=In|...|``. Fields are written in the order given; booleans become
    TRUE/FALSE; a list or tuple repeats the field (``LPort=[80, 443]`` → ``LPort=80|LPort=443|``)."""
    parts = [f"v{version}"]
    for name, value in fields.items():
        values = list(value) if isinstance(value, list | tuple) else [value]
        for item in values:
            text = ("TRUE" if item else "FALSE") if isinstance(item, bool) else str(item)
            if "|" in text:
                raise ValueError(f"firewall rule field {name}: a value may not contain '|': {text!r}")
            parts.append(f"{name}={text}")
    return "|".join(parts) + "|"


_DOS_STUB = bytes.fromhex("0e1fba0e00b409cd21b8014ccd21") + b"This program cannot be run in DOS mode.\r\r\n$" + bytes(7)


def _pe_checksum(data: bytes, checksum_at: int) -> int:
    total = 0
    padded = data + (b"\0" if len(data) % 2 else b"")
    for (word,) in struct.iter_unpack("<H", padded):
        total += word
    total -= struct.unpack_from("<H", data, checksum_at)[0] + struct.unpack_from("<H", data, checksum_at + 2)[0]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total + len(data)


def pe_image(
    *,
    subsystem: int = 3,
    dll: bool = False,
    machine: int = 0x8664,
    os_version: tuple[int, int] = (6, 1),
    timestamp: int = 0x4CE7979D,
    data: bytes = b"",
) -> bytes:
    """A minimal but well-formed PE32+ image: MZ header and DOS stub, ``PE\\0\\0``, IMAGE_FILE_HEADER (machine
    AMD64 by default), a PE32+ optional header (magic 0x20B) with 16 data directories, one ``.text`` section
    holding ``ret`` plus ``data``, and a correct checksum. ``subsystem`` 1 = native (drivers, ntoskrnl),
    2 = GUI, 3 = console."""
    file_align, section_align, headers_size = 0x200, 0x1000, 0x400
    body = b"\xc3" + data
    raw_size = -(-len(body) // file_align) * file_align
    image_size = section_align + -(-len(body) // section_align) * section_align
    dos = bytearray(0x80)
    struct.pack_into("<2sHHHHHHHHHHHHH", dos, 0, b"MZ", 0x90, 3, 0, 4, 0, 0xFFFF, 0, 0xB8, 0, 0, 0, 0x40, 0)
    struct.pack_into("<I", dos, 0x3C, 0x80)
    dos[0x40 : 0x40 + len(_DOS_STUB)] = _DOS_STUB
    characteristics = 0x0022 | (0x2000 if dll else 0)  # EXECUTABLE_IMAGE | LARGE_ADDRESS_AWARE (| DLL)
    file_header = struct.pack("<HHIIIHH", machine, 1, timestamp, 0, 0, 0xF0, characteristics)
    major, minor = os_version
    optional = struct.pack("<HBBIIIII", 0x20B, 9, 0, raw_size, 0, 0, section_align, section_align)
    optional += struct.pack(
        "<QIIHHHHHHIIIIHHQQQQII",
        0x180000000 if dll else 0x140000000,
        section_align,
        file_align,
        major,
        minor,
        major,
        minor,
        major,
        minor,
        0,
        image_size,
        headers_size,
        0,
        subsystem,
        0x8160 if not dll else 0x0160,
        0x100000,
        0x1000,
        0x100000,
        0x1000,
        0,
        16,
    )
    optional += bytes(16 * 8)
    section = struct.pack(
        "<8sIIIIIIHHI", b".text", len(body), section_align, raw_size, headers_size, 0, 0, 0, 0, 0x60000020
    )
    headers = bytes(dos) + b"PE\0\0" + file_header + optional + section
    image = headers.ljust(headers_size, b"\0") + body.ljust(raw_size, b"\0")
    checksum_at = 0x80 + 4 + 20 + 64
    return image[:checksum_at] + struct.pack("<I", _pe_checksum(image, checksum_at)) + image[checksum_at + 4 :]


def machine_sid(label: str) -> str:
    """A synthetic machine SID ``S-1-5-21-a-b-c`` derived from ``label``."""
    raw = uuid.uuid5(_NS, f"sid {label}").bytes
    a, b, c = struct.unpack("<III", raw[:12])
    return f"S-1-5-21-{a}-{b}-{c}"


def _sid_bytes(sid: str) -> bytes:
    parts = sid.split("-")
    subs = [int(x) for x in parts[3:]]
    return (
        struct.pack("<BB", int(parts[1]), len(subs))
        + int(parts[2]).to_bytes(6, "big")
        + struct.pack(f"<{len(subs)}I", *subs)
    )


def root_certificate_der() -> bytes:
    """The public root CA certificate in both skeletons' LocalMachine ROOT store (DER)."""
    return root_ca_certificate().public_bytes(Encoding.DER)


def answer_file(
    *,
    admin_password: str | None = None,
    plain_text: bool = True,
    autologon_password: str | None = None,
    comment: str | None = None,
    time_zone: str = "UTC",
) -> str:
    """An oobeSystem answer file in the shape the VM-role Integration Components install at ``C:\\unattend.xml``
    (International-Core en-US, Shell-Setup with OOBE skipped, UTC, Windows Update off). The real IC file holds
    the Administrator password given at IC install time in plain text; pass ``admin_password`` (and
    ``plain_text=False`` for the base64 form) or ``autologon_password`` to build the leaking variants."""
    arch = (
        f'processorArchitecture="amd64" publicKeyToken="{_PUBLIC_KEY_TOKEN}" language="neutral" '
        'versionScope="nonSxS" xmlns:wcm="http://schemas.microsoft.com/WMIConfig/2002/State" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    )
    accounts = ""
    if admin_password is not None:
        import base64

        value = (
            admin_password
            if plain_text
            else base64.b64encode((admin_password + "AdministratorPassword").encode("utf-16-le")).decode()
        )
        accounts = (
            "      <UserAccounts>\r\n        <AdministratorPassword>\r\n"
            f"          <Value>{value}</Value>\r\n"
            f"          <PlainText>{'true' if plain_text else 'false'}</PlainText>\r\n"
            "        </AdministratorPassword>\r\n      </UserAccounts>\r\n"
        )
    autologon = ""
    if autologon_password is not None:
        autologon = (
            "      <AutoLogon>\r\n        <Enabled>true</Enabled>\r\n        <Username>Administrator</Username>\r\n"
            f"        <Password>\r\n          <Value>{autologon_password}</Value>\r\n"
            "          <PlainText>true</PlainText>\r\n        </Password>\r\n      </AutoLogon>\r\n"
        )
    note = f"<!-- {comment} -->\r\n" if comment else ""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\r\n'
        f"{note}"
        '<unattend xmlns="urn:schemas-microsoft-com:unattend">\r\n'
        '  <settings pass="oobeSystem">\r\n'
        f'    <component name="Microsoft-Windows-International-Core" {arch}>\r\n'
        "      <InputLocale>en-US</InputLocale>\r\n      <SystemLocale>en-US</SystemLocale>\r\n"
        "      <UILanguage>en-US</UILanguage>\r\n      <UserLocale>en-US</UserLocale>\r\n"
        "    </component>\r\n"
        f'    <component name="Microsoft-Windows-Shell-Setup" {arch}>\r\n'
        "      <OOBE>\r\n        <HideEULAPage>true</HideEULAPage>\r\n"
        "        <NetworkLocation>Work</NetworkLocation>\r\n"
        "        <ProtectYourPC>3</ProtectYourPC>\r\n        <SkipMachineOOBE>true</SkipMachineOOBE>\r\n"
        "        <SkipUserOOBE>true</SkipUserOOBE>\r\n      </OOBE>\r\n"
        f"{accounts}{autologon}"
        f"      <TimeZone>{time_zone}</TimeZone>\r\n"
        "    </component>\r\n"
        "  </settings>\r\n"
        "</unattend>\r\n"
    )


# --------------------------------------------------------------------------------------------- the OS


@dataclass(frozen=True)
class _Os:
    label: str
    product_name: str
    current_version: str
    build: str
    edition_id: str
    csd_version: str | None
    build_lab: str
    pe_version: tuple[int, int]
    iis: tuple[int, int]
    computer_name: str
    machine_guid: str
    sysprep_time: str  # "YYYY-MM-DD HH:MM:SS" of the sysprep run in the logs
    timestamp: int  # Unix seconds: file times and hive key times
    winsxs_version: str


_WS2008R2 = _Os(
    label="ws2008r2-vmrole",
    product_name="Windows Server 2008 R2 Enterprise",
    current_version="6.1",
    build="7601",
    edition_id="ServerEnterprise",
    csd_version="Service Pack 1",
    build_lab="7601.win7sp1_rtm.101119-1850",
    pe_version=(6, 1),
    iis=(7, 5),
    computer_name="WIN-7Q2K4M1RJ3E",
    machine_guid=MACHINE_GUID_2008R2,
    sysprep_time="2013-02-01 11:52:03",
    timestamp=1359720000,  # 2013-02-01T12:00:00Z
    winsxs_version="6.1.7601.17514",
)
_WS2019 = _Os(
    label="ws2019-azure",
    product_name="Windows Server 2019 Datacenter",
    current_version="6.3",
    build="17763",
    edition_id="ServerDatacenter",
    csd_version=None,
    build_lab="17763.rs5_release.180914-1434",
    pe_version=(10, 0),
    iis=(10, 0),
    computer_name="WIN-H8D3RTQ5LB2",
    machine_guid=MACHINE_GUID_2019,
    sysprep_time="2020-06-01 09:41:17",
    timestamp=1591005600,  # 2020-06-01T10:00:00Z
    winsxs_version="10.0.17763.1",
)


def _svc(
    display: str,
    image_path: str,
    *,
    start: int,
    type_: int = 0x20,
    account: str | None = "LocalSystem",
    group: str | None = None,
    depend: Sequence[str] = (),
    delayed: bool = False,
    description: str | None = None,
) -> dict[str, RegValue]:
    values: dict[str, RegValue] = {
        "Type": dword(type_),
        "Start": dword(start),
        "ErrorControl": dword(1),
        "ImagePath": expand_sz(image_path),
        "DisplayName": sz(display),
    }
    if account is not None:
        values["ObjectName"] = sz(account)
    if group is not None:
        values["Group"] = sz(group)
    if depend:
        values["DependOnService"] = multi_sz(list(depend))
    if delayed:
        values["DelayedAutostart"] = dword(1)
    if description is not None:
        values["Description"] = sz(description)
    return values


_LOCAL_SERVICE = "NT AUTHORITY\\LocalService"
_NETWORK_SERVICE = "NT AUTHORITY\\NetworkService"
_SVCHOST = "%SystemRoot%\\system32\\svchost.exe -k "


def _base_services(os_: _Os) -> dict[str, dict[str, RegValue]]:
    return {
        "mpssvc": _svc(
            "Windows Firewall",
            _SVCHOST + "LocalServiceNoNetwork",
            start=2,
            account=_LOCAL_SERVICE,
            depend=["mpsdrv", "bfe"],
        ),
        "BFE": _svc(
            "Base Filtering Engine",
            _SVCHOST + "LocalServiceNoNetwork",
            start=2,
            account=_LOCAL_SERVICE,
            depend=["RpcSs"],
        ),
        "Dhcp": _svc(
            "DHCP Client",
            _SVCHOST + "LocalServiceNetworkRestricted",
            start=2,
            account=_LOCAL_SERVICE,
            depend=["NSI", "Tdx", "Afd"],
        ),
        "Dnscache": _svc(
            "DNS Client", _SVCHOST + "NetworkService", start=2, account=_NETWORK_SERVICE, depend=["nsi", "Tdx"]
        ),
        "TermService": _svc(
            "Remote Desktop Services", _SVCHOST + "NetworkService", start=3, account=_NETWORK_SERVICE, depend=["RPCSS"]
        ),
        "WinRM": _svc(
            "Windows Remote Management (WS-Management)",
            _SVCHOST + "NetworkService",
            start=2,
            account=_NETWORK_SERVICE,
            depend=["RPCSS", "HTTP"],
            delayed=True,
        ),
        "W32Time": _svc("Windows Time", _SVCHOST + "LocalService", start=3, account=_LOCAL_SERVICE),
        "W32Time\\Parameters": {
            "Type": sz("NTP"),
            "NtpServer": sz("time.windows.com,0x9"),
            "ServiceDll": expand_sz("%systemroot%\\system32\\w32time.dll"),
        },
        "cdrom": _svc(
            "CD-ROM Driver", "system32\\DRIVERS\\cdrom.sys", start=1, type_=1, account=None, group="SCSI CDROM Class"
        ),
        "Tcpip": _svc(
            "TCP/IP Protocol Driver", "System32\\drivers\\tcpip.sys", start=0, type_=1, account=None, group="PNP_TDI"
        ),
        "Tcpip\\Parameters": {
            "Hostname": sz(os_.computer_name),
            "NV Hostname": sz(os_.computer_name),
            "Domain": sz(""),
            "DataBasePath": expand_sz("%SystemRoot%\\System32\\drivers\\etc"),
        },
        f"Tcpip\\Parameters\\Interfaces\\{_braced(os_.label + ' nic')}": {
            "EnableDHCP": dword(1),
            "NameServer": sz(""),
            "Domain": sz(""),
        },
        "SharedAccess": _svc(
            "Internet Connection Sharing (ICS)", _SVCHOST + "netsvcs", start=4, depend=["Netman", "WinMgmt"]
        ),
        "W3SVC": _svc(
            "World Wide Web Publishing Service",
            "%systemroot%\\system32\\svchost.exe -k iissvcs",
            start=2,
            depend=["WAS", "HTTP"],
        ),
        "WAS": _svc(
            "Windows Process Activation Service",
            "%windir%\\system32\\svchost.exe -k iissvcs",
            start=3,
            depend=["RPCSS"],
        ),
    }


def _firewall(rules: Mapping[str, str], *, policy_version: int | None) -> dict[str, dict[str, RegValue]]:
    profile = {
        "EnableFirewall": dword(1),
        "DefaultInboundAction": dword(1),
        "DefaultOutboundAction": dword(0),
        "DisableNotifications": dword(1),
    }
    out: dict[str, dict[str, RegValue]] = {
        FIREWALL_POLICY: {"PolicyVersion": dword(policy_version)} if policy_version is not None else {},
        FIREWALL_POLICY + "\\DomainProfile": dict(profile),
        FIREWALL_POLICY + "\\StandardProfile": dict(profile),
        FIREWALL_POLICY + "\\PublicProfile": dict(profile),
        FIREWALL_POLICY + "\\FirewallRules": {name: sz(rule) for name, rule in rules.items()},
        FIREWALL_POLICY + "\\RestrictedServices\\Static\\System": {},
    }
    return out


def _rdp_rules_2008() -> dict[str, str]:
    return {
        "RemoteDesktop-In-TCP": firewall_rule(
            Action="Allow",
            Active=True,
            Dir="In",
            Protocol=6,
            LPort=3389,
            App="System",
            Name="@FirewallAPI.dll,-28753",
            Desc="@FirewallAPI.dll,-28756",
            EmbedCtxt="@FirewallAPI.dll,-28752",
        ),
    }


def _common_rules(*, winrm_http: bool = True) -> dict[str, str]:
    """Built-in rules. ``winrm_http``: the WinRM HTTP (5985) rules are enabled (Azure's guide enables them;
    the VM-role sample serves WinRM over HTTPS 5986 only, as its csdef declares, so they stay disabled)."""
    return {
        "WINRM-HTTP-In-TCP": firewall_rule(
            Action="Allow",
            Active=winrm_http,
            Dir="In",
            Protocol=6,
            Profile=["Domain", "Private"],
            LPort=5985,
            App="System",
            Name="Windows Remote Management (HTTP-In)",
            Desc="Inbound rule for Windows Remote Management via WS-Management. [TCP 5985]",
            EmbedCtxt="Windows Remote Management",
        ),
        "WINRM-HTTP-In-TCP-PUBLIC": firewall_rule(
            Action="Allow",
            Active=winrm_http,
            Dir="In",
            Protocol=6,
            Profile="Public",
            LPort=5985,
            RA4="LocalSubnet",
            App="System",
            Name="Windows Remote Management (HTTP-In)",
            Desc="Inbound rule for Windows Remote Management via WS-Management. [TCP 5985]",
            EmbedCtxt="Windows Remote Management",
        ),
        "FPS-ICMP4-ERQ-In": firewall_rule(
            Action="Allow",
            Active=True,
            Dir="In",
            Protocol=1,
            ICMP4="8:*",
            App="System",
            Name="File and Printer Sharing (Echo Request - ICMPv4-In)",
            Desc="Echo Request messages are sent as ping requests to other nodes.",
            EmbedCtxt="File and Printer Sharing",
        ),
        "CoreNet-DHCP-In": firewall_rule(
            Action="Allow",
            Active=True,
            Dir="In",
            Protocol=17,
            LPort=68,
            RPort=67,
            App="%SystemRoot%\\system32\\svchost.exe",
            Svc="dhcp",
            Name="Core Networking - Dynamic Host Configuration Protocol (DHCP-In)",
            EmbedCtxt="Core Networking",
        ),
        "CoreNet-DHCP-Out": firewall_rule(
            Action="Allow",
            Active=True,
            Dir="Out",
            Protocol=17,
            LPort=68,
            RPort=67,
            App="%SystemRoot%\\system32\\svchost.exe",
            Svc="dhcp",
            Name="Core Networking - Dynamic Host Configuration Protocol (DHCP-Out)",
            EmbedCtxt="Core Networking",
        ),
        "IIS-WebServerRole-HTTP-In-TCP": firewall_rule(
            Action="Allow",
            Active=True,
            Dir="In",
            Protocol=6,
            LPort=80,
            App="System",
            Name="World Wide Web Services (HTTP Traffic-In)",
            EmbedCtxt="World Wide Web Services (HTTP)",
        ),
        "IIS-WebServerRole-HTTPS-In-TCP": firewall_rule(
            Action="Allow",
            Active=True,
            Dir="In",
            Protocol=6,
            LPort=443,
            App="System",
            Name="World Wide Web Services (HTTPS Traffic-In)",
            EmbedCtxt="Secure World Wide Web Services (HTTPS)",
        ),
    }


def _vmrole_app_rules() -> dict[str, str]:
    return {
        _braced("fw contoso control 8080"): firewall_rule(
            Action="Allow",
            Active=True,
            Dir="In",
            Protocol=6,
            LPort=8080,
            App="C:\\Program Files\\Contoso\\WebVM Adapter\\ContosoControl.exe",
            Name="Contoso WebVM control (TCP 8080)",
        ),
        _braced("fw contoso direct 8443"): firewall_rule(
            Action="Allow",
            Active=True,
            Dir="In",
            Protocol=6,
            LPort=8443,
            App="System",
            Name="Contoso WebVM direct (TCP 8443)",
        ),
        _braced("fw winrm https 5986"): firewall_rule(
            Action="Allow",
            Active=True,
            Dir="In",
            Protocol=6,
            LPort=5986,
            App="System",
            Name="Windows Remote Management (HTTPS-In)",
            Desc="Inbound rule for Windows Remote Management via WS-Management. [TCP 5986]",
            EmbedCtxt="Windows Remote Management",
        ),
    }


def _azure_rules() -> dict[str, str]:
    return {
        "RemoteDesktop-UserMode-In-TCP": firewall_rule(
            Action="Allow",
            Active=True,
            Dir="In",
            Protocol=6,
            LPort=3389,
            App="%SystemRoot%\\system32\\svchost.exe",
            Svc="termservice",
            Name="@FirewallAPI.dll,-28775",
            Desc="@FirewallAPI.dll,-28756",
            EmbedCtxt="@FirewallAPI.dll,-28752",
        ),
        "RemoteDesktop-UserMode-In-UDP": firewall_rule(
            Action="Allow",
            Active=True,
            Dir="In",
            Protocol=17,
            LPort=3389,
            App="%SystemRoot%\\system32\\svchost.exe",
            Svc="termservice",
            Name="@FirewallAPI.dll,-28776",
            Desc="@FirewallAPI.dll,-28777",
            EmbedCtxt="@FirewallAPI.dll,-28752",
        ),
        _braced("fw azure platform"): firewall_rule(
            Action="Allow", Active=True, Dir="Out", RA4="168.63.129.16", Name="AzurePlatform"
        ),
    }


def _control_set(
    os_: _Os, services: Mapping[str, Mapping[str, RegValue]], rules: Mapping[str, str], *, azure: bool
) -> dict[str, dict[str, RegValue]]:
    cs: dict[str, dict[str, RegValue]] = {
        "Control": {
            "SystemStartOptions": sz(" NOEXECUTE=OPTOUT"),
            "SystemBootDevice": sz("multi(0)disk(0)rdisk(0)partition(1)"),
        },
        "Control\\ProductOptions": {
            "ProductType": sz("ServerNT"),
            "ProductSuite": multi_sz(["Enterprise", "Terminal Server"] if not azure else ["Terminal Server"]),
        },
        "Control\\Session Manager\\Environment": {
            "ComSpec": expand_sz("%SystemRoot%\\system32\\cmd.exe"),
            "OS": sz("Windows_NT"),
            "Path": expand_sz(
                "%SystemRoot%\\system32;%SystemRoot%;%SystemRoot%\\System32\\Wbem;%SYSTEMROOT%\\System32\\WindowsPowerShell\\v1.0\\"
            ),
            "PATHEXT": sz(".COM;.EXE;.BAT;.CMD;.VBS;.VBE;.JS;.JSE;.WSF;.WSH;.MSC"),
            "PROCESSOR_ARCHITECTURE": sz("AMD64"),
            "NUMBER_OF_PROCESSORS": sz("1"),
            "TEMP": expand_sz("%SystemRoot%\\TEMP"),
            "TMP": expand_sz("%SystemRoot%\\TEMP"),
            "windir": expand_sz("%SystemRoot%"),
        },
        "Control\\Session Manager\\Memory Management": {
            "PagingFiles": multi_sz(["D:\\pagefile.sys 0 0"] if azure else ["?:\\pagefile.sys"]),
            "ClearPageFileAtShutdown": dword(0),
        },
        "Control\\ComputerName\\ComputerName": {"ComputerName": sz(os_.computer_name)},
        "Control\\ComputerName\\ActiveComputerName": {"ComputerName": sz(os_.computer_name)},
        "Control\\Terminal Server": {"fDenyTSConnections": dword(0), "fSingleSessionPerUser": dword(1)},
        "Control\\Terminal Server\\WinStations\\RDP-Tcp": {
            "PortNumber": dword(3389),
            "LanAdapter": dword(0),
            "UserAuthentication": dword(1),
            "KeepAliveTimeout": dword(1) if azure else dword(0),
            "fEnableWinStation": dword(1),
        },
        "Control\\TimeZoneInformation": {
            "TimeZoneKeyName": sz("UTC"),
            "StandardName": sz("Coordinated Universal Time"),
            "DaylightName": sz("Coordinated Universal Time"),
            "Bias": dword(0),
            "ActiveTimeBias": dword(0),
            **({"RealTimeIsUniversal": dword(1)} if azure else {}),
        },
        "Control\\Windows": {"CSDVersion": dword(0x100 if os_.csd_version else 0)},
        "Enum": {},
        "Hardware Profiles\\Current": {},
    }
    for name, values in services.items():
        cs[f"Services\\{name}"] = dict(values)
    cs.update(_firewall(rules, policy_version=0x20A if not azure else None))
    return cs


def _system_hive(
    os_: _Os, services: Mapping[str, Mapping[str, RegValue]], rules: Mapping[str, str], *, azure: bool
) -> dict[str, Mapping[str, RegValue]]:
    cs = _control_set(os_, services, rules, azure=azure)
    hive: dict[str, Mapping[str, RegValue]] = {
        "Select": {"Current": dword(1), "Default": dword(1), "Failed": dword(0), "LastKnownGood": dword(2)},
        "Setup": {
            "SystemSetupInProgress": dword(1),
            "OOBEInProgress": dword(1),
            "SetupType": dword(2),
            "CmdLine": sz("oobe\\windeploy.exe"),
            "SetupPhase": dword(0),
            "OsLoaderPath": sz("\\"),
            "SystemPartition": sz("\\Device\\HarddiskVolume1"),
        },
        "Setup\\Status\\SysprepStatus": {"GeneralizationState": dword(4), "CleanupState": dword(2)},
        "MountedDevices": {},
    }
    for n in (1, 2):  # ControlSet002 is the last-known-good copy
        for path, values in cs.items():
            hive[f"ControlSet{n:03d}\\{path}"] = dict(values)
    return hive


def _software_hive(
    os_: _Os, *, products: Mapping[str, Mapping[str, RegValue]], azure: bool
) -> dict[str, Mapping[str, RegValue]]:
    root_der = root_certificate_der()
    thumb = cert_thumbprint(root_der)
    current = {
        "ProductName": sz(os_.product_name),
        "CurrentVersion": sz(os_.current_version),
        "CurrentBuild": sz(os_.build),
        "CurrentBuildNumber": sz(os_.build),
        "EditionID": sz(os_.edition_id),
        "InstallationType": sz("Server"),
        "CurrentType": sz("Multiprocessor Free"),
        "BuildLab": sz(os_.build_lab),
        "SystemRoot": sz("C:\\Windows"),
        "PathName": sz("C:\\Windows"),
        "RegisteredOwner": sz("Windows User"),
        "RegisteredOrganization": sz(""),
        "SoftwareType": sz("System"),
        "InstallDate": dword(os_.timestamp - 86400 * 3),
    }
    if os_.csd_version:
        current["CSDVersion"] = sz(os_.csd_version)
        current["CSDBuildNumber"] = sz("1130")
    if azure:
        current.update(
            {
                "CurrentMajorVersionNumber": dword(10),
                "CurrentMinorVersionNumber": dword(0),
                "ReleaseId": sz("1809"),
                "UBR": dword(1282),
            }
        )
    sid = machine_sid(os_.label)
    hive: dict[str, Mapping[str, RegValue]] = {
        CURRENT_VERSION: current,
        WINLOGON: {
            "AutoAdminLogon": sz("0"),
            "DefaultUserName": sz("Administrator"),
            "DefaultDomainName": sz(os_.computer_name),
            "Shell": sz("explorer.exe"),
            "Userinit": sz("C:\\Windows\\system32\\userinit.exe,"),
            "LegalNoticeCaption": sz(""),
            "LegalNoticeText": sz(""),
        },
        CURRENT_VERSION + "\\ProfileList": {
            "ProfilesDirectory": expand_sz("%SystemDrive%\\Users"),
            "Default": expand_sz("%SystemDrive%\\Users\\Default"),
            "Public": expand_sz("%SystemDrive%\\Users\\Public"),
        },
        CURRENT_VERSION + "\\ProfileList\\S-1-5-18": {
            "ProfileImagePath": expand_sz("%systemroot%\\system32\\config\\systemprofile"),
            "Flags": dword(12),
        },
        CURRENT_VERSION + f"\\ProfileList\\{sid}-500": {
            "ProfileImagePath": expand_sz("C:\\Users\\Administrator"),
            "Sid": binary(_sid_bytes(f"{sid}-500")),
            "Flags": dword(0),
            "State": dword(0),
        },
        "Microsoft\\Windows\\CurrentVersion": {
            "ProgramFilesDir": sz("C:\\Program Files"),
            "ProgramFilesDir (x86)": sz("C:\\Program Files (x86)"),
            "CommonFilesDir": sz("C:\\Program Files\\Common Files"),
            "ProgramW6432Dir": sz("C:\\Program Files"),
        },
        SETUP_STATE: {"ImageState": sz("IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE")},
        "Microsoft\\Cryptography": {"MachineGuid": sz(os_.machine_guid)},
        f"Microsoft\\SystemCertificates\\ROOT\\Certificates\\{thumb}": {
            "Blob": binary(cert_blob(root_der, friendly_name="vmrole-harness Test Root CA"))
        },
        "Microsoft\\SystemCertificates\\ROOT\\CRLs": {},
        "Microsoft\\SystemCertificates\\ROOT\\CTLs": {},
        "Microsoft\\SystemCertificates\\MY\\Certificates": {},
        "Microsoft\\SystemCertificates\\MY\\CRLs": {},
        "Microsoft\\SystemCertificates\\MY\\CTLs": {},
        "Microsoft\\SystemCertificates\\CA\\Certificates": {},
        "Microsoft\\SystemCertificates\\Disallowed\\Certificates": {},
        "Microsoft\\InetStp": {
            "MajorVersion": dword(os_.iis[0]),
            "MinorVersion": dword(os_.iis[1]),
            "InstallPath": sz("C:\\Windows\\system32\\inetsrv"),
            "PathWWWRoot": expand_sz("%SystemDrive%\\inetpub\\wwwroot"),
        },
        "Microsoft\\NET Framework Setup\\NDP\\v4\\Full": (
            {"Install": dword(1), "Release": dword(461814), "Version": sz("4.7.03190")}
            if azure
            else {"Install": dword(1), "Version": sz("4.0.30319")}
        ),
        "Policies\\Microsoft\\Windows": {},
        "Classes\\Installer\\Products": {},
    }
    for code, values in products.items():
        hive[f"{UNINSTALL}\\{code}"] = dict(values)
        packed = packed_guid(code)
        hive[f"Classes\\Installer\\Products\\{packed}"] = {
            "ProductName": values["DisplayName"],
            "PackageCode": sz(packed_guid(_guid(f"package {code}"))),
            "Language": dword(1033),
            "Version": values["Version"],
            "Assignment": dword(1),
            "AdvertiseFlags": dword(0x184),
        }
    return hive


def _product(
    display: str, version: tuple[int, int, int], install_location: str, *, publisher: str, code: str, date: str
) -> dict[str, RegValue]:
    major, minor, build = version
    return {
        "DisplayName": sz(display),
        "Publisher": sz(publisher),
        "DisplayVersion": sz(f"{major}.{minor}.{build}"),
        "Version": dword((major << 24) | (minor << 16) | build),
        "VersionMajor": dword(major),
        "VersionMinor": dword(minor),
        "InstallLocation": sz(install_location),
        "InstallDate": sz(date),
        "UninstallString": expand_sz(f"MsiExec.exe /X{code}"),
        "WindowsInstaller": dword(1),
        "EstimatedSize": dword(5120),
        "Language": dword(1033),
    }


def _sam_hive() -> dict[str, Mapping[str, RegValue]]:
    # The RID of each account is stored as the *type* of the default value under Users\Names\<name>.
    return {
        "SAM\\Domains\\Account": {"F": binary(bytes(80))},
        "SAM\\Domains\\Account\\Users\\000001F4": {"F": binary(bytes(80))},
        "SAM\\Domains\\Account\\Users\\000001F5": {"F": binary(bytes(80))},
        "SAM\\Domains\\Account\\Users\\Names\\Administrator": {"": RegValue(0x1F4, b"")},
        "SAM\\Domains\\Account\\Users\\Names\\Guest": {"": RegValue(0x1F5, b"")},
        "SAM\\Domains\\Builtin\\Aliases\\00000220": {},
    }


def _security_hive(os_: _Os) -> dict[str, Mapping[str, RegValue]]:
    return {
        "Policy\\PolAcDmS": {"": binary(_sid_bytes(machine_sid(os_.label)))},
        "Policy\\PolAcDmN": {"": binary(b"WORKGROUP".ljust(24, b"\0"))},
        "Policy\\Secrets": {},
        "Policy\\Accounts": {},
    }


def _user_hive(profile: str | None) -> dict[str, Mapping[str, RegValue]]:
    hive: dict[str, Mapping[str, RegValue]] = {
        "Control Panel\\International": {
            "LocaleName": sz("en-US"),
            "sLanguage": sz("ENU"),
            "sShortDate": sz("M/d/yyyy"),
        },
        "Environment": {
            "TEMP": expand_sz("%USERPROFILE%\\AppData\\Local\\Temp"),
            "TMP": expand_sz("%USERPROFILE%\\AppData\\Local\\Temp"),
        },
        "Software\\Microsoft\\Windows\\CurrentVersion\\Run": {},
        "Software\\Microsoft\\SystemCertificates\\My\\Certificates": {},
    }
    if profile is not None:
        hive["Software\\Microsoft\\Windows\\CurrentVersion\\Explorer\\Shell Folders"] = {
            "Personal": sz(f"C:\\Users\\{profile}\\Documents"),
            "Desktop": sz(f"C:\\Users\\{profile}\\Desktop"),
            "AppData": sz(f"C:\\Users\\{profile}\\AppData\\Roaming"),
        }
    return hive


def _sysprep_log(os_: _Os) -> str:
    day, clock = os_.sysprep_time.split(" ")
    hh, mm, ss = (int(x) for x in clock.split(":"))

    def at(delta: int) -> str:
        total = hh * 3600 + mm * 60 + ss + delta
        return f"{day} {total // 3600:02d}:{total // 60 % 60:02d}:{total % 60:02d}"

    lines = [
        (0, "[0x0f004c] SYSPRP ========================================================"),
        (0, "[0x0f004d] SYSPRP ===          Beginning of a new sysprep run          ==="),
        (0, "[0x0f004e] SYSPRP ========================================================"),
        (0, "[0x0f0054] SYSPRP ValidateUser:User has required privileges to sysprep machine"),
        (0, "[0x0f0056] SYSPRP ParseCommands:Found supported command line option 'GENERALIZE'"),
        (0, "[0x0f0056] SYSPRP ParseCommands:Found supported command line option 'OOBE'"),
        (0, "[0x0f0056] SYSPRP ParseCommands:Found supported command line option 'SHUTDOWN'"),
        (1, "[0x0f003d] SYSPRP WinMain:Processing 'cleanup' internal provider..."),
        (9, "[0x0f0076] SYSPRP Sysprep_Clean_Validate_Opk: Successfully completed"),
        (40, "[0x0f003d] SYSPRP WinMain:Processing 'generalize' internal provider..."),
        (
            212,
            "[0x0f0082] SYSPRP FCreateTagFile:Tag file C:\\Windows\\System32\\Sysprep\\Sysprep_succeeded.tag "
            "does not already exist, no need to delete anything",
        ),
        (213, "[0x0f003d] SYSPRP WinMain:Completed processing 'generalize' internal provider: Successfully completed"),
        (214, "[0x0f0052] SYSPRP WinMain:Shutting down the system..."),
    ]
    return "".join(f"{at(d)}, Info                  {text}\r\n" for d, text in lines)


def _text(*lines: str) -> str:
    """Windows text: the lines joined with CRLF, each terminated."""
    return "".join(line + "\r\n" for line in lines)


_HOSTS = _text(
    "# Copyright (c) 1993-2009 Microsoft Corp.",
    "#",
    "# This is a sample HOSTS file used by Microsoft TCP/IP for Windows.",
    "#",
    "# localhost name resolution is handled within DNS itself.",
    "#\t127.0.0.1       localhost",
    "#\t::1             localhost",
)
_IIS_START = _text(
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">',
    '<html xmlns="http://www.w3.org/1999/xhtml">',
    '<head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1" /><title>IIS7</title></head>',
    '<body><div id="container"><a href="http://go.microsoft.com/fwlink/?linkid=66138">IIS7</a></div></body>',
    "</html>",
)
_WEB_CONFIG = _text(
    '<?xml version="1.0" encoding="utf-8"?>',
    "<configuration>",
    "  <appSettings>",
    '    <add key="StorageAccountSetting" value="StorageConnectionString" />',
    "  </appSettings>",
    "  <system.web>",
    '    <compilation debug="false" targetFramework="4.0" />',
    '    <customErrors mode="RemoteOnly" />',
    "  </system.web>",
    "  <system.webServer>",
    '    <defaultDocument><files><add value="index.html" /></files></defaultDocument>',
    "  </system.webServer>",
    "</configuration>",
)
_NET4_CONFIG = _text(
    '<?xml version="1.0"?>',
    "<configuration>",
    '  <startup><supportedRuntime version="v4.0" /></startup>',
    "</configuration>",
)
_ADAPTER_CONFIG = _text(
    '<?xml version="1.0"?>',
    "<configuration>",
    '  <appSettings><add key="SiteName" value="Default Web Site" /></appSettings>',
    "</configuration>",
)


def _desktop_ini(resource: int) -> bytes:
    body = _text("[.ShellClassInfo]", f"LocalizedResourceName=@%SystemRoot%\\system32\\shell32.dll,-{resource}")
    return ("\ufeff" + body).encode("utf-16-le")


def _files(os_: _Os) -> tuple[dict[str, bytes | str], dict[str, str]]:
    v = os_.pe_version

    def exe(subsystem: int = 3, *, dll: bool = False, data: bytes = b"") -> bytes:
        return pe_image(subsystem=subsystem, dll=dll, os_version=v, data=data)

    sxs = f"{_PUBLIC_KEY_TOKEN}_{os_.winsxs_version}_none"
    cmd_component = f"amd64_microsoft-windows-commandprompt_{sxs}_e932cc2c30fc13b0"
    notepad_component = f"amd64_microsoft-windows-notepad_{sxs}_cb6e7a8d7d5b5d33"
    files: dict[str, bytes | str] = {
        "bootmgr": b"\0" * 512,
        "Windows/System32/cmd.exe": exe(3, data=f"Microsoft Windows [Version {os_.build}]".encode("utf-16-le")),
        "Windows/System32/ntoskrnl.exe": exe(1),
        "Windows/System32/hal.dll": exe(1, dll=True),
        "Windows/System32/winload.exe": exe(1),
        "Windows/System32/kernel32.dll": exe(3, dll=True),
        "Windows/System32/ntdll.dll": exe(3, dll=True),
        "Windows/System32/svchost.exe": exe(2),
        "Windows/System32/lsass.exe": exe(2),
        "Windows/System32/services.exe": exe(2),
        "Windows/System32/winlogon.exe": exe(2),
        "Windows/System32/userinit.exe": exe(2),
        "Windows/System32/notepad.exe": exe(2),
        "Windows/System32/drivers/tcpip.sys": exe(1),
        "Windows/System32/drivers/cdrom.sys": exe(1),
        "Windows/System32/drivers/etc/hosts": _HOSTS,
        "Windows/System32/oobe/windeploy.exe": exe(2),
        "Windows/System32/Sysprep/sysprep.exe": exe(2),
        "Windows/System32/Sysprep/Sysprep_succeeded.tag": b"",
        "Windows/System32/Sysprep/Panther/setupact.log": _sysprep_log(os_),
        "Windows/System32/Sysprep/Panther/setuperr.log": b"",
        "Windows/System32/inetsrv/w3wp.exe": exe(3),
        "Windows/System32/inetsrv/config/applicationHost.config": _text(
            '<?xml version="1.0" encoding="UTF-8"?>', "<configuration>", "</configuration>"
        ),
        "Windows/explorer.exe": exe(2),
        "Windows/regedit.exe": exe(2),
        "Windows/win.ini": _text(
            "; for 16-bit app support", "[fonts]", "[extensions]", "[mci extensions]", "[files]", "[Mail]", "MAPI=1"
        ),
        "Windows/Setup/State/State.ini": "[State]\r\nImageState=IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE\r\n",
        f"Windows/WinSxS/Manifests/{cmd_component}.manifest": _text(
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>',
            '<assembly xmlns="urn:schemas-microsoft-com:asm.v3" manifestVersion="1.0">',
            "</assembly>",
        ),
        "Users/Administrator/Documents/readme.txt": _text(
            "Build notes for the web VM image.", "App: C:\\inetpub\\wwwroot. Logs: C:\\inetpub\\logs."
        ),
        "Users/Administrator/Desktop/desktop.ini": _desktop_ini(21769),
        "Users/Public/Desktop/desktop.ini": _desktop_ini(21799),
        "inetpub/wwwroot/iisstart.htm": _IIS_START,
        "inetpub/wwwroot/index.html": _text(
            "<!DOCTYPE html>",
            "<html><head><title>Contoso WebVM</title></head><body><h1>Contoso WebVM</h1></body></html>",
        ),
        "inetpub/wwwroot/web.config": _WEB_CONFIG,
        "inetpub/wwwroot/bin/Contoso.Web.dll": exe(3, dll=True, data=b"Contoso.Web\0"),
        "inetpub/wwwroot/Content/site.css": "body { font-family: Segoe UI, sans-serif; }\r\n",
    }
    for prefix, container in IIS_MACHINE_KEYS.items():
        files[f"ProgramData/Microsoft/Crypto/RSA/MachineKeys/{prefix}_{os_.machine_guid}"] = (
            capi_machine_key_file_bytes(container, seed=300 + len(container), bits=0)
        )
    hardlinks = {
        f"Windows/WinSxS/{cmd_component}/cmd.exe": "Windows/System32/cmd.exe",
        f"Windows/WinSxS/{notepad_component}/notepad.exe": "Windows/System32/notepad.exe",
        "Windows/notepad.exe": "Windows/System32/notepad.exe",
    }
    return files, hardlinks


_DIRS = (
    "Windows/Temp",
    "Windows/Logs",
    "Windows/System32/config/RegBack",
    "Windows/System32/LogFiles",
    "Users/Public/Documents",
    "Users/Default/Documents",
    "ProgramData/Microsoft/Crypto/Keys",
    "ProgramData/Microsoft/Crypto/RSA/S-1-5-18",
    "PerfLogs",
    "inetpub/logs/LogFiles",
    "inetpub/temp",
)


def _hives(
    os_: _Os, system: Mapping[str, Mapping[str, RegValue]], software: Mapping[str, Mapping[str, RegValue]]
) -> dict[str, Mapping[str, Mapping[str, RegValue]]]:
    return {
        SYSTEM_HIVE: system,
        SOFTWARE_HIVE: software,
        SAM_HIVE: _sam_hive(),
        SECURITY_HIVE: _security_hive(os_),
        DEFAULT_HIVE: _user_hive(None),
        ADMIN_NTUSER: _user_hive("Administrator"),
        DEFAULT_NTUSER: _user_hive(None),
    }


# --------------------------------------------------------------------------------------------- skeletons


_IC_DIR = "Program Files/Windows Azure Integration Components/v1.6"
_ADAPTER_DIR = "Program Files/Contoso/WebVM Adapter"
_RUNTIME = "Microsoft.WindowsAzure.ServiceRuntime"


def windows_server_2008r2_vmrole() -> ImageSpec:
    """A good (lint-clean) generalized Windows Server 2008 R2 SP1 x64 VM-role image.

    SYSTEM: Select 1/1/0/2; ControlSet001 and its ControlSet002 copy; ServerNT, AMD64, computer name, RDP
    allowed on 3389 with NLA; services mpssvc, BFE, Dhcp, Dnscache, TermService, WinRM, W32Time, cdrom, Tcpip
    (DHCP NIC), W3SVC, WAS, the IC agent ``WaAppAgent`` ("Windows Azure VM Role Agent") and the
    ``ContosoAdapter`` role adapter (auto-start, uses Microsoft.WindowsAzure.ServiceRuntime); firewall on in
    all three profiles (inbound default block) with rules RemoteDesktop-In-TCP 3389, WINRM-HTTP-In-TCP(-PUBLIC)
    5985, FPS-ICMP4-ERQ-In, CoreNet-DHCP-In/Out, IIS HTTP 80 / HTTPS 443 and the app's 8080, 8443, 5986;
    Setup resealed to OOBE (SystemSetupInProgress=1, OOBEInProgress=1, SetupType=2, oobe\\windeploy.exe,
    GeneralizationState=4).
    SOFTWARE: WS2008 R2 Enterprise SP1 (6.1.7601), Winlogon without DefaultPassword, ImageState
    GENERALIZE_RESEAL_TO_OOBE, Uninstall + Installer\\Products entries for "Windows Azure Integration
    Components" 1.6 and the adapter, MachineGuid, one public root certificate in ROOT, empty MY.
    Files: C:\\unattend.xml (the IC answer file, oobeSystem pass, without the Administrator password),
    State.ini, Sysprep_succeeded.tag and the generalize logs, PE32+ system binaries, the ICs and the adapter,
    the IIS app, allowlisted IIS machine keys, a readme in the Administrator profile.
    """
    os_ = _WS2008R2
    services = _base_services(os_)
    services["WaAppAgent"] = _svc(
        "Windows Azure VM Role Agent",
        f'"C:\\{_IC_DIR.replace("/", chr(92))}\\Agent\\WaAppAgent.exe"',
        start=2,
        type_=0x10,
        depend=["RpcSs", "winmgmt"],
        description="Reports the role instance state to the Windows Azure fabric and installs certificates.",
    )
    services["ContosoAdapter"] = _svc(
        "Contoso WebVM Role Adapter",
        f'"C:\\{_ADAPTER_DIR.replace("/", chr(92))}\\ContosoAdapter.exe"',
        start=2,
        type_=0x10,
        depend=["WaAppAgent", "W3SVC"],
        description="Configures the Contoso web app from the Windows Azure service model at boot.",
    )
    rules = {**_rdp_rules_2008(), **_common_rules(winrm_http=False), **_vmrole_app_rules()}
    products = {
        IC_PRODUCT_CODE: _product(
            "Windows Azure Integration Components",
            (1, 6, 21103),
            f"C:\\{_IC_DIR.replace('/', chr(92))}\\",
            publisher="Microsoft Corporation",
            code=IC_PRODUCT_CODE,
            date="20130130",
        ),
        ADAPTER_PRODUCT_CODE: _product(
            "Contoso WebVM Adapter",
            (1, 0, 42),
            f"C:\\{_ADAPTER_DIR.replace('/', chr(92))}\\",
            publisher="Contoso Ltd.",
            code=ADAPTER_PRODUCT_CODE,
            date="20130131",
        ),
    }
    files, hardlinks = _files(os_)
    runtime_dll = pe_image(subsystem=3, dll=True, data=_RUNTIME.encode() + b"\0")
    files.update(
        {
            "unattend.xml": answer_file(
                comment=(
                    "Installed by the Windows Azure Integration Components (C:\\unattend.xml), used by "
                    "sysprep /generalize /oobe /unattend:C:\\unattend.xml. The real IC file also sets the "
                    "Administrator password typed at IC install time, in plain text (UserAccounts, "
                    "AdministratorPassword, PlainText true). This good fixture leaves it out: a password in an "
                    "image is a leaked secret. answer_file(admin_password=...) builds the leaking variant."
                )
            ),
            f"{_IC_DIR}/Agent/WaAppAgent.exe": pe_image(
                subsystem=3, data=b"Windows Azure VM Role Agent\0" + _RUNTIME.encode() + b"\0"
            ),
            f"{_IC_DIR}/Agent/WaAppAgent.exe.config": _NET4_CONFIG,
            f"{_IC_DIR}/Agent/{_RUNTIME}.dll": runtime_dll,
            f"{_IC_DIR}/Drivers/README.txt": "Windows Azure Integration Components drivers.\r\n",
            f"Windows/assembly/GAC_MSIL/{_RUNTIME}/1.0.0.0__{_PUBLIC_KEY_TOKEN}/{_RUNTIME}.dll": runtime_dll,
            f"{_ADAPTER_DIR}/ContosoAdapter.exe": pe_image(
                subsystem=3, data=b"ContosoAdapter\0" + _RUNTIME.encode() + b".dll\0RoleEnvironment\0"
            ),
            f"{_ADAPTER_DIR}/ContosoAdapter.exe.config": _ADAPTER_CONFIG,
            f"{_ADAPTER_DIR}/ContosoControl.exe": pe_image(subsystem=3, data=b"ContosoControl\0"),
            "Windows/Panther/setupact.log": _text(
                f"{os_.sysprep_time}, Info                  [windeploy.exe] Setup completed."
            ),
        }
    )
    return ImageSpec(
        files=files,
        dirs=(*_DIRS, f"{_IC_DIR}/Logs"),
        hives=_hives(
            os_, _system_hive(os_, services, rules, azure=False), _software_hive(os_, products=products, azure=False)
        ),
        hardlinks=hardlinks,
        partition_style="mbr",
        volume_label="Windows",
        timestamp=os_.timestamp,
    )


def windows_server_2019_azure() -> ImageSpec:
    """A good generalized Windows Server 2019 Datacenter image for today's Azure upload rules (profile
    "azure"): the VM agent (services WindowsAzureGuestAgent + RdAgent, C:\\WindowsAzure\\Packages\\...), no
    answer file at the root and no C:\\Windows\\Panther, RDP (RemoteDesktop-UserMode-In-TCP/UDP), WinRM
    (WINRM-HTTP-In-TCP(-PUBLIC)), ICMP echo (FPS-ICMP4-ERQ-In), DHCP, the outbound AzurePlatform rule to
    168.63.129.16, IIS 80/443; RealTimeIsUniversal=1, pagefile on D:, SanPolicy=1 (OnlineAll), cdrom
    enabled, the doc's service start types (BFE, Dhcp, Dnscache, IKEEXT, iphlpsvc, nsi, mpssvc,
    RemoteRegistry automatic; Netlogon, Netman, TermService manual); sysprep state as for the VM role.
    Use fixed VHD (``build_image(spec, "vhd-fixed")``) for a clean upload format."""
    os_ = _WS2019
    services = _base_services(os_)
    services.update(
        {
            "IKEEXT": _svc("IKE and AuthIP IPsec Keying Modules", _SVCHOST + "netsvcs", start=2, depend=["BFE", "nsi"]),
            "iphlpsvc": _svc(
                "IP Helper", _SVCHOST + "NetSvcs", start=2, depend=["RpcSS", "Tcpip", "nsi", "WinHttpAutoProxySvc"]
            ),
            "nsi": _svc(
                "Network Store Interface Service",
                _SVCHOST + "LocalService",
                start=2,
                account=_LOCAL_SERVICE,
                depend=["rpcss", "nsiproxy"],
            ),
            "RemoteRegistry": _svc(
                "Remote Registry",
                _SVCHOST + "localService",
                start=2,
                account=_LOCAL_SERVICE,
                depend=["RPCSS"],
                delayed=True,
            ),
            "Netlogon": _svc("Netlogon", "%systemroot%\\system32\\lsass.exe", start=3, depend=["LanmanWorkstation"]),
            "Netman": _svc(
                "Network Connections", _SVCHOST + "LocalSystemNetworkRestricted", start=3, depend=["RpcSs", "nsi"]
            ),
            "partmgr": _svc(
                "Partition driver",
                "System32\\drivers\\partmgr.sys",
                start=0,
                type_=1,
                account=None,
                group="System Bus Extender",
            ),
            "partmgr\\Parameters": {"SanPolicy": dword(1)},
            "WindowsAzureGuestAgent": _svc(
                "Windows Azure Guest Agent",
                "C:\\WindowsAzure\\Packages\\GuestAgent\\WindowsAzureGuestAgent.exe",
                start=2,
                type_=0x10,
                depend=["RdAgent"],
                description="Azure Windows Guest Agent",
            ),
            "RdAgent": _svc("RdAgent", "C:\\WindowsAzure\\Packages\\WaAppAgent.exe", start=2, type_=0x10),
        }
    )
    rules = {**_azure_rules(), **_common_rules()}
    products = {
        AZURE_AGENT_PRODUCT_CODE: _product(
            "Windows Azure VM Agent - 2.7.41491.971",
            (2, 7, 41491),
            "C:\\WindowsAzure\\Packages\\",
            publisher="Microsoft Corporation",
            code=AZURE_AGENT_PRODUCT_CODE,
            date="20200529",
        ),
    }
    files, hardlinks = _files(os_)
    files.update(
        {
            AZURE_AGENT_PATH: pe_image(subsystem=3, os_version=(6, 0), data=b"WindowsAzureGuestAgent\0"),
            "WindowsAzure/Packages/WaAppAgent.exe": pe_image(subsystem=3, os_version=(6, 0), data=b"WaAppAgent\0"),
            "WindowsAzure/Packages/WaAppAgent.exe.config": _NET4_CONFIG,
            "WindowsAzure/Packages/GuestAgent/WindowsAzureGuestAgent.exe.config": _NET4_CONFIG,
            "Windows/System32/drivers/partmgr.sys": pe_image(subsystem=1, os_version=(10, 0)),
        }
    )
    return ImageSpec(
        files=files,
        dirs=(*_DIRS, "WindowsAzure/Logs", "WindowsAzure/Config", "Packages/Plugins"),
        hives=_hives(
            os_, _system_hive(os_, services, rules, azure=True), _software_hive(os_, products=products, azure=True)
        ),
        hardlinks=hardlinks,
        partition_style="mbr",
        volume_label="Windows",
        timestamp=os_.timestamp,
    )
