"""Certificates and key containers of an offline image: the data rules read.

Sources: MS-GPEF 2.2.1.1.1 (certificate blobs), CNG "Key Storage and Retrieval" (key directories).

Data only. :mod:`harness.extraction.certs` fills these in from plain bytes and paths (``parse_cert_blob``,
``certificate_summary``, ``classify_key_file``, the machine-key allowlist loader) and
:mod:`harness.extraction.certstores` walks an image's certificate stores with it. Key material never enters
these facts: a property that looks like a private key is recorded by its keysniff label only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ---- certificate blobs (MS-GPEF 2.2.1.1.1) ---------------------------------------------------------------------

CERT_CERT_PROP_ID = 0x20
CERT_KEY_PROV_INFO_PROP_ID = 2
CERT_SHA1_HASH_PROP_ID = 3
CERT_FRIENDLY_NAME_PROP_ID = 11
CRYPT_MACHINE_KEYSET = 0x20


@dataclass(frozen=True)
class CertProperty:
    """One element of a blob: the id, the reserved word, the declared length, where the value starts."""

    id: int
    reserved: int
    length: int
    offset: int


@dataclass(frozen=True)
class KeyProvInfo:
    """Serialized ``CRYPT_KEY_PROV_INFO`` (property 2; MS-GPEF 2.2.1.1.1.1.1).

    Layout (little-endian u32): offset of the container name, offset of the provider name,
    provider type, flags, provider parameter count, offset of the parameters, key spec; the
    UTF-16LE strings follow, offsets counted from the start of the property value.
    """

    container_name: str | None
    provider_name: str | None
    provider_type: int  # 0 = CNG key storage provider, 1 = PROV_RSA_FULL, 24 = PROV_RSA_AES, ...
    flags: int
    key_spec: int  # 1 = AT_KEYEXCHANGE, 2 = AT_SIGNATURE (CNG: 0 or 0xFFFFFFFF)
    provider_param_count: int = 0
    problems: tuple[str, ...] = ()

    @property
    def machine_keyset(self) -> bool:
        return bool(self.flags & CRYPT_MACHINE_KEYSET)

    @property
    def is_cng(self) -> bool:
        return self.provider_type == 0


@dataclass(frozen=True)
class CertBlob:
    """A parsed certificate blob. ``der`` is the certificate (public data; left out of repr)."""

    properties: tuple[CertProperty, ...] = ()
    der: bytes | None = field(default=None, repr=False)
    key_prov_info: KeyProvInfo | None = None
    friendly_name: str | None = None
    #: Property 3 (SHA-1 of the certificate, stored by Windows), upper-case hex, when present.
    sha1_property: str | None = None
    #: (property id, keysniff label) for any property whose value looks like key material.
    key_material: tuple[tuple[int, str], ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def has_key_reference(self) -> bool:
        """The blob claims a private key (property 2 present, even when unparsable)."""
        return any(p.id == CERT_KEY_PROV_INFO_PROP_ID for p in self.properties)

    @property
    def property_ids(self) -> tuple[int, ...]:
        return tuple(p.id for p in self.properties)


# ---- certificate summary --------------------------------------------------------------------------


@dataclass(frozen=True)
class CertSummary:
    """What a rule may print about a certificate: fingerprints and names, never key material.

    ``thumbprint`` (SHA-1 of the DER, upper-case hex, as Windows names store entries) is computed
    even when the DER does not parse; the other fields are then None and ``problem`` says why.
    """

    thumbprint: str
    sha256: str
    subject: str | None = None  # RFC 4514
    issuer: str | None = None
    serial_number: str | None = None  # upper-case hex
    not_before: str | None = None  # ISO 8601, UTC
    not_after: str | None = None
    is_ca: bool | None = None  # BasicConstraints cA; False when the extension is absent
    self_signed: bool | None = None  # subject == issuer (names compared, signature not verified)
    public_key: str | None = None  # "RSA 2048", "EC secp256r1", ...
    problem: str | None = None
    #: Parser warnings about a certificate that did parse (e.g. a negative serial number).
    warnings: tuple[str, ...] = ()


# ---- key container files (CNG / CryptoAPI key directories) -------------------------------------------

CAPI_MACHINE_RSA = "capi-machine-rsa"
CAPI_MACHINE_DSS = "capi-machine-dss"
CAPI_SYSTEM = "capi-system"
CNG_MACHINE = "cng-machine"
CNG_SYSTEM = "cng-system"
CAPI_USER = "capi-user"
CNG_USER = "cng-user"
DPAPI_MASTERKEY = "dpapi-masterkey"
KEY_FILE_KINDS = (
    CAPI_MACHINE_RSA, CAPI_MACHINE_DSS, CAPI_SYSTEM, CNG_MACHINE, CNG_SYSTEM, CAPI_USER, CNG_USER, DPAPI_MASTERKEY,
)  # fmt: skip


@dataclass(frozen=True)
class AllowlistEntry:
    """A well-known key file name prefix (the 32-hex part before ``_<MachineGuid>``)."""

    prefix: str  # lower-case
    description: str
    kinds: frozenset[str] = frozenset()  # empty = any kind
    container: str | None = None  # the container name the prefix is derived from, when known
    source: str = ""  # the file it came from

    def matches(self, kind: str, name: str) -> bool:
        lowered = name.lower()
        if self.kinds and kind not in self.kinds:
            return False
        return lowered == self.prefix or lowered.startswith(self.prefix + "_")


@dataclass(frozen=True)
class MachineKeyAllowlist:
    entries: tuple[AllowlistEntry, ...] = ()

    def match(self, kind: str, name: str) -> AllowlistEntry | None:
        for entry in self.entries:
            if entry.matches(kind, name):
                return entry
        return None


@dataclass(frozen=True)
class KeyContainerFile:
    """A file in a key-container directory. ``path`` is volume-relative with backslashes."""

    path: str
    name: str
    kind: str  # one of KEY_FILE_KINDS
    allowlisted: bool = False
    allowlist_entry: AllowlistEntry | None = None
