"""Facts about a Windows disk image, read offline.

The extractor (harness.extraction.extract) fills these in a worker process from the image readers
(harness.readers.image); rules only read them. Every value a rule may judge is kept as found (strings
as written, DWORDs as ints, None when absent) so that "missing" and "wrong" are findings, not errors.

Secrets never enter facts: a password in an answer file or an autologon value is recorded as
"present" (and how it is encoded), key material as a type label plus a fingerprint of the file.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness.ascii import parse_ascii_int

if TYPE_CHECKING:
    from harness.engine.artefact import Artefact
    from harness.facts.image_certs import KeyContainerFile
    from harness.facts.image_firewall import FirewallPolicy
    from harness.facts.image_signatures import ProductInfo, ServiceInfo, SignatureMatch
    from harness.facts.image_unattend import AnswerFile
    from harness.facts.servicemodel import RoleDef, ServiceConfiguration, ServiceDefinition

#: Profiles: the 2010-2013 VM role (WS2008 R2 x64 + integration components) and today's Azure
#: generalized-image upload rules.
VMROLE = "vmrole"
AZURE = "azure"
PROFILES = (VMROLE, AZURE)

GENERALIZED_STATE = "IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE"

#: The hives each part of the facts is read from: a part whose hive is missing is not read (extractor), and
#: rules needing it say which hive was the problem (checks/image/_base.py).
HIVES_FOR_PART: dict[str, tuple[str, ...]] = {
    "os": ("SOFTWARE",),
    "services": ("SYSTEM",),
    "products": ("SOFTWARE",),
    "sysprep": ("SYSTEM", "SOFTWARE"),
    "winlogon": ("SOFTWARE",),
    "remote access": ("SYSTEM",),
    "firewall": ("SYSTEM",),
    "certificates": ("SOFTWARE",),
}
#: Parts computed from other parts: the signature match combines the services and the products (and files), so
#: when either was lost to damage the match is not made (extractor), and rules say which hive it was.
PART_INPUTS: dict[str, tuple[str, ...]] = {"signatures": ("services", "products")}


def hives_for(part: str) -> tuple[str, ...]:
    """The hives ``part`` is read from, directly or through the parts it is computed from."""
    hives = list(HIVES_FOR_PART.get(part, ()))
    for source in PART_INPUTS.get(part, ()):
        hives += [h for h in HIVES_FOR_PART.get(source, ()) if h not in hives]
    return tuple(hives)


# The container and the partition table as rules see them: copies of the readers' ContainerInfo / Partition /
# PartitionTable fields (harness.readers.image.container, .partitions), made by the extractor, so that facts hold
# no reader types (a reader's PartitionTable also slices a disk).


@dataclass(frozen=True)
class ContainerFacts:
    """What the container says about itself. Rules read this (format, type, alignment, footer state)."""

    path: str
    format: str  # "raw" | "vhd" | "vhdx", or a container not read: "qcow2" | "vmdk" | "vdi"
    disk_type: str | None  # "fixed" | "dynamic" | "differencing" | None (raw)
    virtual_size: int
    file_size: int
    footer_cookie_ok: bool | None
    footer_checksum_ok: bool | None
    footer_copy_ok: bool | None
    creator_application: str | None
    block_size: int | None
    logical_sector_size: int | None
    unique_id: str | None
    parent_chain: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    #: What content detection found when the format alone does not say it, in words: "a bare NTFS volume with a
    #: stray VHD footer at its end (...)", "a QCOW2 image (version 3) ('QFI\\xfb' at offset 0)", "an ext4 file
    #: system". None for an ordinary raw, VHD or VHDX disk.
    detected: str | None = None


@dataclass(frozen=True)
class PartitionFacts:
    """One partition (fields as :class:`harness.readers.image.partitions.Partition` documents them)."""

    index: int
    start: int
    size: int
    type_id: str
    name: str | None
    bootable: bool


@dataclass(frozen=True)
class PartitionTableFacts:
    """The disk's partitions; ``disk_guid`` is the GPT disk GUID, the MBR signature ("0x1234abcd") or None."""

    style: str  # "mbr" | "gpt" | "none"
    partitions: tuple[PartitionFacts, ...]
    disk_guid: str | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageProblem:
    """A part of the image the extractor could not read (the rest was read)."""

    part: str  # "SYSTEM hive", "SOFTWARE hive", "NTFS volume", "answer file", ...
    path: str  # volume path ("\\Windows\\System32\\config\\SYSTEM") or "" for the container
    problem: str
    key: str = ""  # registry key path inside the hive being read when the damage was met ("Select")
    offset: str = ""  # where in the part: a hive cell offset ("0x2340"), "BAT entry 17", an MFT record...

    @property
    def location(self) -> str:
        """Where, for a finding: the part, its path, the key and the offset when known.

        ``SYSTEM hive \\Windows\\System32\\config\\SYSTEM [ControlSet001] @ 0x7ffffff8``
        """
        where = f"{self.part} {self.path}" if self.path else self.part
        if self.key:
            where += f" [{self.key}]"
        if self.offset:
            where += f" @ {self.offset}"
        return where


@dataclass(frozen=True)
class VolumeInfo:
    partition_index: int
    partition_style: str  # "mbr" | "gpt" | "none"
    offset: int
    size: int
    label: str | None
    cluster_size: int
    file_count: int
    dir_count: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ControlSet:
    """SYSTEM\\Select resolved offline: Default is the set used at next boot."""

    number: int | None
    current: int | None
    default: int | None
    last_known_good: int | None

    @property
    def key(self) -> str | None:
        return None if self.number is None else f"ControlSet{self.number:03d}"


@dataclass(frozen=True)
class OsInfo:
    product_name: str | None
    current_version: str | None  # "6.1"
    build: str | None  # CurrentBuildNumber / CurrentBuild
    edition_id: str | None
    installation_type: str | None  # "Server", "Server Core", "Client"
    service_pack: str | None  # CSDVersion
    product_type: str | None  # SYSTEM ...\ProductOptions ProductType: WinNT | ServerNT | LanmanNT
    architecture: str | None  # "x64" | "x86" | "arm64" | "ia64" | raw value when unknown
    architecture_source: str | None  # where the architecture came from

    @property
    def is_server(self) -> bool | None:
        if self.product_type is not None:
            return self.product_type.lower() in ("servernt", "lanmannt")
        if self.product_name is not None:
            return "server" in self.product_name.lower()
        return None

    @property
    def build_number(self) -> int | None:
        return parse_ascii_int(self.build)


@dataclass(frozen=True)
class SysprepInfo:
    """Generalization state from the registry and the files sysprep leaves."""

    image_state_registry: str | None
    image_state_ini: str | None
    state_ini_found: bool
    system_setup_in_progress: int | None
    oobe_in_progress: int | None
    setup_type: int | None
    cmdline: str | None
    unattend_file: str | None
    generalization_state: int | None
    succeeded_tag: bool
    setuperr_error_lines: int
    panther_files: tuple[str, ...] = ()  # files under %WINDIR%\Panther (cached answer files, logs)


@dataclass(frozen=True)
class WinlogonInfo:
    default_password_present: bool
    auto_admin_logon: str | None
    default_user_name: str | None
    location: str = "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Winlogon"


@dataclass(frozen=True)
class RemoteAccessInfo:
    deny_ts_connections: int | None  # fDenyTSConnections (0 = RDP allowed)
    rdp_port: int | None
    user_authentication: int | None  # NLA


@dataclass(frozen=True)
class CertificateEntry:
    """A certificate in a registry or file-based store. No key material, ever."""

    location: str  # "LocalMachine" | "GroupPolicy" | "Enterprise" | "Service:<name>" | "User:<profile>"
    store: str  # "MY", "Root", ...
    source: str  # registry path or volume path of the blob
    thumbprint: str  # the key name (upper hex)
    subject: str | None
    issuer: str | None
    not_after: str | None  # ISO 8601
    claims_private_key: bool  # KEY_PROV_INFO present
    container: str | None
    provider: str | None
    machine_keyset: bool | None
    key_file: str | None  # volume path of the key container file when it was found
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeyMaterialFile:
    """A file whose bytes look like a private key, PFX, keystore or publish settings."""

    path: str
    label: str  # keysniff label: "pkcs12", "pem-private-key", "pvk", ...
    size: int
    fingerprint: str  # sha256 of the file's first MiB, hex, first 16 characters


@dataclass(frozen=True)
class ImageFacts:
    container: ContainerFacts
    partitions: PartitionTableFacts
    volume: VolumeInfo | None = None
    windows_found: bool = False
    control_set: ControlSet | None = None
    os: OsInfo | None = None
    services: tuple[ServiceInfo, ...] = ()
    products: tuple[ProductInfo, ...] = ()
    answer_files: tuple[AnswerFile, ...] = ()
    answer_file_order: tuple[tuple[int, str], ...] = ()  # (search position, volume path) found, in order
    sysprep: SysprepInfo | None = None
    winlogon: WinlogonInfo | None = None
    remote_access: RemoteAccessInfo | None = None
    firewall: FirewallPolicy | None = None
    certificates: tuple[CertificateEntry, ...] = ()
    key_containers: tuple[KeyContainerFile, ...] = ()
    key_material: tuple[KeyMaterialFile, ...] = ()
    signature_matches: tuple[SignatureMatch, ...] = ()
    user_profiles: tuple[str, ...] = ()
    #: What the disk holds when it has no NTFS volume at all, in words, one entry per partition (or one for a
    #: disk without a partition table): ("partition 1 (0x83): an ext4 file system",). Empty otherwise.
    contents: tuple[str, ...] = ()
    problems: tuple[ImageProblem, ...] = ()
    #: Volume paths of EFS-encrypted files the extractor needed (read_file raised EncryptedFile): their contents
    #: cannot be read without the owner's key, which is not damage, so they are not in ``problems``.
    encrypted_files: tuple[str, ...] = ()
    #: Which parts of the facts were read; rules skip (NotApplicable) when their part is missing.
    parts_read: frozenset[str] = frozenset()
    stats: dict[str, float] = field(default_factory=dict)

    def service(self, name: str) -> ServiceInfo | None:
        lowered = name.lower()
        return next((s for s in self.services if s.name.lower() == lowered), None)


@dataclass(frozen=True)
class ImageSubject:
    """What image rules see: the image's facts, the profile, and the paired service model (if any)."""

    artefact: Artefact
    facts: ImageFacts
    profile: str
    profile_reason: str
    definition: ServiceDefinition | None = None
    configuration: ServiceConfiguration | None = None
    role: RoleDef | None = None
    today: datetime.date | None = None
