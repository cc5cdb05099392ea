"""Shared knowledge for the service-model rules: ports, the protocol matrix, size tables, thumbprints.

Data and small pure helpers only; no rules live here (the catalogue ignores classes without ``id``).
Sources are the Cloud Services (classic) schema pages and the archived Service Definition and Service Configuration
schemas (see ``harness.docs_sources``: csdef-schema, csdef-webrole, cscfg-schema, csdef-archive) unless a comment
says otherwise.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from harness.engine.rule import NotApplicable
from harness.facts.servicemodel import (
    INPUT,
    INSTANCE_INPUT,
    INTERNAL,
    VM_ROLE,
    Endpoint,
    Package,
    PortRange,
    RoleDef,
    ServiceConfiguration,
    ServiceDefinition,
    ServiceModelSubject,
    parse_int,
)

# ---- subjects ------------------------------------------------------------------------------------


def definition_of(subject: ServiceModelSubject) -> ServiceDefinition:
    """The csdef a csdef-only rule judges (a .csdef, or a package's build csdef)."""
    if subject.definition is None:
        raise NotApplicable("no service definition to check")
    return subject.definition


def configuration_of(subject: ServiceModelSubject) -> ServiceConfiguration:
    """The cscfg a rule with ``requires = ("configuration",)`` judges (the engine has checked it is there)."""
    if subject.configuration is None:
        raise NotApplicable("no service configuration to check")
    return subject.configuration


def package_of(subject: ServiceModelSubject) -> Package:
    """The package a rule with ``requires = ("package",)`` judges (the engine has checked it is there)."""
    if subject.package is None:
        raise NotApplicable("no package to check")
    return subject.package


def definition_root(definition: ServiceDefinition) -> str:
    """Logical location of the ``<ServiceDefinition>`` element itself.

    Element locations from a package are prefixed by the reader; derive the root the same way from
    any located element so that service-level findings share that prefix.
    """
    for role in definition.roles:
        head, sep, _ = role.location.partition("/ServiceDefinition")
        if sep:
            return f"{head}/ServiceDefinition"
    for probe in definition.load_balancer_probes:
        head, sep, _ = probe.location.partition("/ServiceDefinition")
        if sep:
            return f"{head}/ServiceDefinition"
    return f"{definition.part}!/ServiceDefinition" if definition.part else "/ServiceDefinition"


def name_step(tag: str, name: str) -> str:
    """``Tag[@name='…']``, quoted the way the reader writes element locations."""
    quoted = f'"{name}"' if "'" in name else f"'{name}'"
    return f"{tag}[@name={quoted}]"


def config_role_location(role_name: str) -> str:
    """Where a cscfg ``<Role>`` for ``role_name`` is (or should be)."""
    return f"/ServiceConfiguration/{name_step('Role', role_name)}"


PLUGIN_PREFIX = "Microsoft.WindowsAzure.Plugins."


def plugin_declared(role: RoleDef, name: str) -> bool:
    """True when setting/certificate ``name`` comes from a plugin module the role imports.

    Plugin names are ``Microsoft.WindowsAzure.Plugins.<Area>.…``; ``<Area>`` is the module name
    (RemoteAccess, Diagnostics, Caching) or its first part (``RemoteDebugger.*`` for the
    RemoteDebuggerConnector module). A source csdef leaves them to the import; a build csdef lists them.
    """
    if not name.startswith(PLUGIN_PREFIX):
        return False
    area = name[len(PLUGIN_PREFIX) :].split(".", 1)[0].lower()
    return bool(area) and any(i.module_name.lower().startswith(area) for i in role.imports)


# ---- names across the two files ------------------------------------------------------------------


class _Named(Protocol):
    @property
    def name(self) -> str: ...


D = TypeVar("D", bound=_Named)
P = TypeVar("P", bound=_Named)


def case_twin(name: str, candidates: Sequence[str]) -> str | None:
    """A candidate that differs from ``name`` only in letter case, or None."""
    return next((c for c in candidates if c != name and c.lower() == name.lower()), None)


def case_hint(lead: str, twin: str | None) -> str:
    """`` ({lead} 'Twin': names are case-sensitive)`` for a message, or "" without a twin."""
    return f" ({lead} {twin!r}: names are case-sensitive)" if twin else ""


@dataclass(frozen=True)
class Missing(Generic[D]):
    """A declared item that the other side does not have; ``twin`` is its name there in other case."""

    item: D
    twin: str | None


@dataclass(frozen=True)
class Undeclared(Generic[P]):
    """An item present on the other side that is not declared; ``twin`` is the declared name in other case."""

    item: P
    twin: str | None


def name_mismatches(
    declared: Sequence[D], present: Sequence[P], implied: Callable[[str], bool] = lambda name: False
) -> Iterator[Missing[D] | Undeclared[P]]:
    """Compare two lists by exact name, both ways: every declared item absent from ``present``
    (in order), then every present item that is neither declared nor ``implied``."""
    declared_names = [d.name for d in declared]
    present_names = [p.name for p in present]
    for decl in declared:
        if decl.name not in present_names:
            yield Missing(decl, case_twin(decl.name, present_names))
    for item in present:
        if item.name not in declared_names and not implied(item.name):
            yield Undeclared(item, case_twin(item.name, declared_names))


# ---- ports ---------------------------------------------------------------------------------------

MIN_PORT = 1
MAX_PORT = 65535
DYNAMIC_PORT = "*"


def parse_port(text: str | None) -> int | None:
    """A port number in 1-65535, or None when absent, not an integer, or out of range."""
    value = parse_int(text)
    if value is None or not MIN_PORT <= value <= MAX_PORT:
        return None
    return value


@dataclass(frozen=True)
class Span:
    """An inclusive port span."""

    low: int
    high: int

    @property
    def size(self) -> int:
        return self.high - self.low + 1

    def overlaps(self, other: Span) -> bool:
        return self.low <= other.high and other.low <= self.high

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


def range_span(port_range: PortRange | None) -> Span | None:
    """The span of a FixedPort/FixedPortRange, or None when absent or invalid."""
    if port_range is None:
        return None
    low, high = parse_port(port_range.min), parse_port(port_range.max)
    if low is None or high is None or low > high:
        return None
    return Span(low, high)


def public_span(endpoint: Endpoint) -> Span | None:
    """The public port(s) an endpoint takes on the service's VIP, or None (internal, or invalid)."""
    if endpoint.kind == INPUT:
        port = parse_port(endpoint.port)
        return None if port is None else Span(port, port)
    if endpoint.kind == INSTANCE_INPUT:
        return range_span(endpoint.public_port_range)
    return None


def internal_spans(endpoint: Endpoint) -> list[Span]:
    """The fixed ports an InternalEndpoint takes (its ``port`` and FixedPort/FixedPortRange children)."""
    spans: list[Span] = []
    port = parse_port(endpoint.port)
    if port is not None:
        spans.append(Span(port, port))
    for fixed in endpoint.fixed_ports:
        span = range_span(fixed)
        if span is not None:
            spans.append(span)
    return spans


# ---- protocols (the endpoint elements of the WebRole / WorkerRole schemas) -------------------------

ALLOWED_PROTOCOLS: dict[str, tuple[str, ...]] = {
    INPUT: ("http", "https", "tcp", "udp"),
    INTERNAL: ("http", "tcp", "udp", "any"),
    INSTANCE_INPUT: ("tcp", "udp"),
}
PROBE_PROTOCOLS: tuple[str, ...] = ("http", "tcp")

TCP = "tcp"
UDP = "udp"


def protocol_of(endpoint: Endpoint) -> str | None:
    return endpoint.protocol.strip().lower() if endpoint.protocol else None


def transports(protocol: str | None) -> frozenset[str]:
    """Transport families a protocol occupies: http/https/tcp ride on TCP, ``any`` on both.

    The load balancer keys its rules on (VIP, transport, port), so a TCP and a UDP endpoint may
    share a port number; two endpoints of the same transport may not.
    """
    if protocol in ("http", "https", TCP):
        return frozenset({TCP})
    if protocol == UDP:
        return frozenset({UDP})
    if protocol == "any":
        return frozenset({TCP, UDP})
    return frozenset()


T = TypeVar("T")


@dataclass(frozen=True)
class PortClash(Generic[T]):
    """A span that overlaps an earlier claim on a transport both use."""

    span: Span
    other_span: Span
    other: T
    transport: str  # the shared transports: "tcp", "udp" or "tcp/udp"


class PortClaims(Generic[T]):
    """Port spans claimed so far, each with its transports and its owner, in claim order."""

    def __init__(self) -> None:
        self._claims: list[tuple[Span, frozenset[str], T]] = []

    def clash(self, spans: Iterable[Span], families: frozenset[str]) -> PortClash[T] | None:
        """The first earlier claim that one of ``spans`` (in order) overlaps on a shared transport."""
        for span in spans:
            for other_span, other_families, other in self._claims:
                shared = families & other_families
                if shared and span.overlaps(other_span):
                    return PortClash(span, other_span, other, "/".join(sorted(shared)))
        return None

    def claim(self, spans: Iterable[Span], families: frozenset[str], owner: T) -> None:
        self._claims.extend((span, families, owner) for span in spans)


# ---- sizes (archived MSDN ee814754 "How to Configure Virtual Machine Sizes", Sept 2011; later sizes from
# the "Size for Cloud Services (classic)" page) -----------------------------------------------------------

VM_ROLE_SIZES: tuple[str, ...] = ("ExtraSmall", "Small", "Medium", "Large", "ExtraLarge")
#: The classic names and their A-series aliases (A0-A4 name ExtraSmall-ExtraLarge).
CLASSIC_ALIASES: dict[str, str] = {"A0": "ExtraSmall", "A1": "Small", "A2": "Medium", "A3": "Large", "A4": "ExtraLarge"}
PAAS_EXTRA_SIZES: tuple[str, ...] = ("A5", "A6", "A7", "A8", "A9", "A10", "A11")
#: Later web/worker sizes: Standard_D1, Standard_D11_v2, Standard_A2m_v2, Standard_H16mr, …
STANDARD_SIZE = re.compile(r"^Standard_[A-Z]\d+[a-z]*(?:_v\d+)?$")
DEFAULT_SIZE = "Small"

_MB_PER_GB = 1024
#: Disk space for local storage resources in a VM role (ee814754).
VM_ROLE_LOCAL_STORAGE_MB: dict[str, int] = {
    "ExtraSmall": 20 * _MB_PER_GB,
    "Small": 165 * _MB_PER_GB,
    "Medium": 340 * _MB_PER_GB,
    "Large": 850 * _MB_PER_GB,
    "ExtraLarge": 1890 * _MB_PER_GB,
}
#: Disk space for local storage resources in web and worker roles (ee814754: after the 6,144 MB the
#: system reserves). A5-A7 have the disks of Medium/Large/ExtraLarge and A8-A11 a 382 GB disk (Cloud
#: Services size docs, 2015; total disk, so an upper bound).
WEB_WORKER_LOCAL_STORAGE_MB: dict[str, int] = {
    "ExtraSmall": 19_480,
    "Small": 229_400,
    "Medium": 500_760,
    "Large": 1_023_000,
    "ExtraLarge": 2_087_960,
    "A5": 500_760,
    "A6": 1_023_000,
    "A7": 2_087_960,
    "A8": 382 * _MB_PER_GB,
    "A9": 382 * _MB_PER_GB,
    "A10": 382 * _MB_PER_GB,
    "A11": 382 * _MB_PER_GB,
}


def canonical_size(role: RoleDef) -> str | None:
    """The role's size as the platform names it, or None when unknown for the role kind.

    Size names are matched case-insensitively; an absent vmsize is the platform default (Small).
    """
    raw = (role.vmsize or DEFAULT_SIZE).strip()
    if role.kind == VM_ROLE:
        return next((s for s in VM_ROLE_SIZES if s.lower() == raw.lower()), None)
    for name in (*VM_ROLE_SIZES, *PAAS_EXTRA_SIZES):
        if name.lower() == raw.lower():
            return name
    for alias, name in CLASSIC_ALIASES.items():
        if alias.lower() == raw.lower():
            return name
    if STANDARD_SIZE.match(raw):
        return raw
    return None


def local_storage_capacity_mb(role: RoleDef) -> int | None:
    """MB available to LocalStorage resources for the role's size, or None when not tabulated."""
    size = canonical_size(role)
    if size is None:
        return None
    table = VM_ROLE_LOCAL_STORAGE_MB if role.kind == VM_ROLE else WEB_WORKER_LOCAL_STORAGE_MB
    return table.get(size)


# ---- limits (2011 platform limits; today's in "Azure subscription and service limits") ---------------

MAX_INPUT_ENDPOINTS_PER_SERVICE = 25
MAX_INTERNAL_ENDPOINTS_PER_ROLE = 5
MAX_ROLES_PER_SERVICE = 25
MAX_ROLES_WITH_VM_ROLE = 5

# ---- thumbprints ---------------------------------------------------------------------------------

THUMBPRINT = re.compile(r"^[0-9A-Fa-f]{40}$")
THUMBPRINT_ALGORITHM = "sha1"

#: Thumbprints of certificates whose private key ships in public samples, so every copy is the same
#: key. Upper-case hex -> where it comes from (safe to print).
KNOWN_SAMPLE_THUMBPRINTS: dict[str, str] = {
    # SampleRemoteDesktopPrivate.pfx from the Windows Azure Starter Kit / Toolkit for Eclipse with Java:
    # its .pfx password ("Password1") is printed in the generated cscfg comment. Seen in the toolkit's
    # own test data and in unrelated projects built from it.
    "875F1656A34D93B266E71BF19C116C39F16B6987": "the Windows Azure Toolkit for Eclipse sample certificate",
    # One certificate in the cscfgs of unrelated public projects (NuGet services, referengine) and in a
    # netsh sslcert example elsewhere: a shared test certificate, not one the service owner controls.
    "F8ACE24A36F93B006BFAF495F6C14FB827AC61A3": "a test certificate shared across unrelated public projects",
}


def thumbprint_problem(thumbprint: str | None) -> str | None:
    """Why a thumbprint is malformed, or None when it is 40 hex digits."""
    if thumbprint is None or not thumbprint.strip():
        return "is empty"
    text = thumbprint
    if text != text.strip() or " " in text:
        return "contains spaces"
    if any(not ch.isascii() or not ch.isprintable() for ch in text):
        # Copying a thumbprint from the certificate dialog brings an invisible U+200E along.
        return "contains invisible or non-ASCII characters"
    if not all(ch in "0123456789abcdefABCDEF" for ch in text):
        return "contains characters other than hex digits"
    if len(text) != 40:
        return f"has {len(text)} hex digits instead of 40"
    return None


def placeholder_kind(thumbprint: str) -> str | None:
    """Why a well-formed thumbprint looks like a placeholder or a public sample, or None."""
    value = thumbprint.upper()
    if not THUMBPRINT.match(value):
        return None
    if value in KNOWN_SAMPLE_THUMBPRINTS:
        return KNOWN_SAMPLE_THUMBPRINTS[value]
    digits = [int(ch, 16) for ch in value]
    steps = {(b - a) % 16 for a, b in itertools.pairwise(digits)}
    if len(steps) == 1:
        step = steps.pop()
        return "one repeated digit" if step == 0 else "a counting sequence of hex digits"
    for period in range(2, 11):
        if all(value[i] == value[i % period] for i in range(len(value))):
            return f"a {period}-digit pattern repeated"
    return None


def iter_endpoints(definition: ServiceDefinition, *kinds: str) -> Iterator[tuple[RoleDef, Endpoint]]:
    """(role, endpoint) pairs in document order, optionally only endpoints of ``kinds``."""
    for role in definition.roles:
        for endpoint in role.endpoints:
            if not kinds or endpoint.kind in kinds:
                yield role, endpoint
