"""Facts about a Cloud Service model: ServiceDefinition (.csdef), ServiceConfiguration (.cscfg), .cspkg.

Readers fill these from bytes (harness.readers); rules only read them. Values that a rule may judge
(ports, sizes, counts) are kept as the raw attribute strings so that "invalid" is a finding, not a
reader error; small pure helpers convert them.

Every element carries ``location``: an element path such as
``/ServiceDefinition/WebRole[@name='Web']/Endpoints/InputEndpoint[@name='HttpIn']`` (namespace
prefixes dropped, legacy wrappers kept as they appear in the file), and ``line`` when known.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from harness.ascii import parse_ascii_int
from harness.engine.artefact import Artefact

WEB_ROLE = "WebRole"
WORKER_ROLE = "WorkerRole"
VM_ROLE = "VirtualMachineRole"
ROLE_KINDS = (WEB_ROLE, WORKER_ROLE, VM_ROLE)

INPUT = "InputEndpoint"
INTERNAL = "InternalEndpoint"
INSTANCE_INPUT = "InstanceInputEndpoint"


def parse_int(text: str | None) -> int | None:
    """An attribute as an int, or None when absent or not a plain decimal integer (ASCII digits)."""
    return parse_ascii_int(text)


@dataclass(frozen=True)
class Located:
    location: str
    line: int | None = None


# ---- ServiceDefinition -------------------------------------------------------------------------


@dataclass(frozen=True)
class PortRange(Located):
    """A FixedPort (min == max) or FixedPortRange, raw strings."""

    min: str | None = None
    max: str | None = None


@dataclass(frozen=True)
class Endpoint(Located):
    kind: str = INPUT  # INPUT | INTERNAL | INSTANCE_INPUT
    name: str = ""
    protocol: str | None = None  # as written (rules compare case-insensitively)
    port: str | None = None  # public port (Input) or port (Internal)
    local_port: str | None = None  # "*" allowed for dynamic
    certificate: str | None = None
    load_balancer_probe: str | None = None
    ignore_role_instance_status: str | None = None
    fixed_ports: tuple[PortRange, ...] = ()  # InternalEndpoint FixedPort / FixedPortRange children
    public_port_range: PortRange | None = None  # InstanceInputEndpoint AllocatePublicPortFrom/FixedPortRange


@dataclass(frozen=True)
class CertificateDecl(Located):
    name: str = ""
    store_location: str | None = None
    store_name: str | None = None
    permission_level: str | None = None


@dataclass(frozen=True)
class SettingDecl(Located):
    name: str = ""


@dataclass(frozen=True)
class Import(Located):
    module_name: str = ""


@dataclass(frozen=True)
class LocalStorage(Located):
    name: str = ""
    size_mb: str | None = None  # default 100 when absent
    clean_on_role_recycle: str | None = None  # default "true" when absent

    @property
    def size_mb_value(self) -> int | None:
        return 100 if self.size_mb is None else parse_int(self.size_mb)

    @property
    def cleaned_on_recycle(self) -> bool:
        return (self.clean_on_role_recycle or "true").strip().lower() != "false"


@dataclass(frozen=True)
class EnvironmentVariable(Located):
    """A ``<Variable>`` under a role's ``Startup/Task/Environment`` or ``Runtime/Environment``.

    ``value`` is the literal ``value`` attribute, or None when the variable takes its value from a
    ``RoleInstanceValue`` child. It may be a secret: rules must never copy it into a finding.
    """

    name: str = ""
    value: str | None = None
    #: "Startup" (a startup task's environment) or "Runtime" (the role entry point's environment).
    source: str = ""


@dataclass(frozen=True)
class RoleDef(Located):
    kind: str = WEB_ROLE  # WEB_ROLE | WORKER_ROLE | VM_ROLE
    name: str = ""
    vmsize: str | None = None  # None = platform default (Small)
    endpoints: tuple[Endpoint, ...] = ()
    certificates: tuple[CertificateDecl, ...] = ()
    settings: tuple[SettingDecl, ...] = ()
    imports: tuple[Import, ...] = ()
    local_storage: tuple[LocalStorage, ...] = ()
    #: Child element names present directly under the role element (e.g. "Sites", "Startup",
    #: "Runtime", "Contents", "OsImage"), for rules about elements a role kind must not carry.
    children: tuple[str, ...] = ()
    #: Location of each child element named in ``children`` (first occurrence).
    child_locations: tuple[tuple[str, str], ...] = ()
    #: Environment variables declared for startup tasks and the runtime (optional; readers that do
    #: not fill it leave it empty).
    environment: tuple[EnvironmentVariable, ...] = ()

    def imports_module(self, module: str) -> bool:
        return any(i.module_name.lower() == module.lower() for i in self.imports)

    def child_location(self, child: str) -> str:
        for name, loc in self.child_locations:
            if name == child:
                return loc
        return f"{self.location}/{child}"


@dataclass(frozen=True)
class LoadBalancerProbe(Located):
    name: str = ""
    protocol: str | None = None
    port: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class ServiceDefinition:
    artefact: Artefact
    name: str | None
    roles: tuple[RoleDef, ...] = ()
    load_balancer_probes: tuple[LoadBalancerProbe, ...] = ()
    schema_version: str | None = None
    namespace: str | None = None
    #: True when the file uses 2009-era shapes (e.g. an <InputEndpoints> wrapper).
    legacy_shapes: bool = False
    #: Where the document came from inside a package ("SDPackage_….csdx!ServiceDefinition.build.csdef"),
    #: or None for a file on disk. Prefix for locations in findings about a packaged csdef.
    part: str | None = None

    def role(self, name: str) -> RoleDef | None:
        for role in self.roles:
            if role.name == name:
                return role
        return None


# ---- ServiceConfiguration ----------------------------------------------------------------------


@dataclass(frozen=True)
class SettingValue(Located):
    """A cscfg setting. ``value`` may be a secret: rules must never copy it into a finding."""

    name: str = ""
    value: str | None = None


@dataclass(frozen=True)
class CertificateRef(Located):
    name: str = ""
    thumbprint: str | None = None
    thumbprint_algorithm: str | None = None


@dataclass(frozen=True)
class RoleConfig(Located):
    name: str = ""
    instances: str | None = None  # Instances/@count raw
    instances_location: str | None = None
    settings: tuple[SettingValue, ...] = ()
    certificates: tuple[CertificateRef, ...] = ()
    os_image_href: str | None = None
    has_os_image: bool = False
    os_image_location: str | None = None

    @property
    def instance_count(self) -> int | None:
        return parse_int(self.instances)

    def setting(self, name: str) -> SettingValue | None:
        for s in self.settings:
            if s.name == name:
                return s
        return None


@dataclass(frozen=True)
class ServiceConfiguration:
    artefact: Artefact
    service_name: str | None
    roles: tuple[RoleConfig, ...] = ()
    os_family: str | None = None
    os_version: str | None = None
    schema_version: str | None = None
    namespace: str | None = None
    has_network_configuration: bool = False

    def role(self, name: str) -> RoleConfig | None:
        for role in self.roles:
            if role.name == name:
                return role
        return None

    @property
    def is_local(self) -> bool:
        """A configuration meant for the local emulator (ServiceConfiguration.Local.cscfg and similar)."""
        stem = self.artefact.path.name.lower()
        return ".local." in stem or stem.endswith(".local.cscfg") or "emulator" in stem


# ---- Package (.cspkg) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageEntry:
    """A file inside the package: a top-level part, a member of a nested OPC zip, or a file inside an
    unencrypted role payload (.cssx). ``name`` is the full logical path, nested levels joined by "!"
    (``Site_….cssx!approot/bin/site.pfx``). ``head`` holds the first bytes (≤ 64) for sniffing."""

    name: str
    size: int
    compressed_size: int
    head: bytes = b""
    #: Content sniffing result when the entry looks like key material ("pkcs12", "pem-private-key",
    #: "publishsettings", ...), else None. Only a label: key bytes never leave the reader.
    key_material: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class ManifestItem:
    name: str
    uri: str | None
    declared_hash: str | None
    actual_hash: str | None  # None when the part is missing from the package
    location: str = ""

    @property
    def matches(self) -> bool:
        return (
            self.declared_hash is not None
            and self.actual_hash is not None
            and self.declared_hash.strip().lower() == self.actual_hash.lower()
        )


@dataclass(frozen=True)
class RolePayload:
    """A role's .cssx part."""

    part: str
    role_name: str | None
    encrypted: bool
    size: int


@dataclass(frozen=True)
class Package:
    artefact: Artefact
    entries: tuple[PackageEntry, ...] = ()
    manifest_part: str | None = None
    manifest_items: tuple[ManifestItem, ...] = ()
    hash_type: str | None = None  # "1" = SHA-256
    encryption_keytype: str | None = None
    payloads: tuple[RolePayload, ...] = ()
    #: The ServiceDefinition.build.csdef from the SDPackage part, parsed like a csdef on disk.
    definition: ServiceDefinition | None = None
    #: Its bytes as packaged (bounded by the XML size cap), for tools that deploy the package.
    definition_bytes: bytes | None = None
    #: Problems that did not make the package unreadable (e.g. a nested part that is not a zip).
    problems: tuple[tuple[str, str], ...] = ()  # (location, message)
    sdk_version: str | None = None


# ---- What a service-model rule receives ---------------------------------------------------------


@dataclass(frozen=True)
class ServiceModelSubject:
    """The facts a service-model rule sees for one artefact.

    For a .csdef artefact: ``definition`` is it, ``configuration`` the paired .cscfg when one was
    found or given (else None). For a .cscfg: ``configuration`` is it, ``definition`` the paired .csdef.
    For a .cspkg: ``package`` is it, ``definition`` the package's build csdef, ``configuration`` a
    .cscfg given alongside. Rules about one file look only at the artefact's own facts
    (``primary_kind``) so that a finding is reported once, on the file that carries the problem.
    """

    artefact: Artefact
    definition: ServiceDefinition | None = None
    configuration: ServiceConfiguration | None = None
    package: Package | None = None
    #: The run's date (``--vmr-today``) for rules about expiry; None means today's UTC date.
    today: datetime.date | None = None

    @property
    def primary_kind(self) -> str:
        return self.artefact.kind
