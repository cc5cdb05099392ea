"""Certificates and key containers of an offline image, read from plain bytes and paths into
:mod:`harness.facts.image_certs` facts.

Sources: MS-GPEF 2.2.1.1.1 (certificate blobs), CNG "Key Storage and Retrieval" (key directories).

* :func:`parse_cert_blob` reads a registry certificate ``Blob`` (or a file-based store entry, same
  format): the DER certificate, the serialized ``KEY_PROV_INFO`` that links it to a private key,
  the friendly name. Other properties are kept as ids and lengths only, never their bytes.
* :func:`certificate_summary` describes a DER certificate with ``cryptography.x509``.
* :func:`classify_key_file` tells which key-container directory a file sits in and whether
  its name is on the machine-key allowlist (shipped ``harness/data/machinekeys-allowlist.yml``,
  extensible with user files).
* :func:`capi_container_file_prefix` derives a CAPI key file name from a container name.

:mod:`harness.extraction.certstores` (the registry and file-based stores) and
:mod:`harness.extraction.keyscan` (the key-container directories) call these for each entry they find.

Nothing here raises on hostile bytes: problems are returned as data. Key material never leaves
this module: a property that looks like a private key is reported by its keysniff label only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
import struct
import warnings
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import TypeVar

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from harness.facts.image_certs import (
    CAPI_MACHINE_DSS,
    CAPI_MACHINE_RSA,
    CAPI_SYSTEM,
    CAPI_USER,
    CERT_CERT_PROP_ID,
    CERT_FRIENDLY_NAME_PROP_ID,
    CERT_KEY_PROV_INFO_PROP_ID,
    CERT_SHA1_HASH_PROP_ID,
    CNG_MACHINE,
    CNG_SYSTEM,
    CNG_USER,
    DPAPI_MASTERKEY,
    KEY_FILE_KINDS,
    AllowlistEntry,
    CertBlob,
    CertProperty,
    CertSummary,
    KeyContainerFile,
    KeyProvInfo,
    MachineKeyAllowlist,
)
from harness.readers.keysniff import sniff

# ---- certificate blobs (MS-GPEF 2.2.1.1.1) ---------------------------------------------------------------------

#: Registry values are small; a blob over this is not read.
MAX_BLOB = 4 << 20
MAX_PROPERTIES = 1024
#: UTF-16 strings inside properties are cut to this many characters.
MAX_NAME_CHARS = 1024
T = TypeVar("T")

_HEADER = struct.Struct("<III")  # PropertyId, Reserved (encoding type, 1), Length
_KEY_PROV_INFO = struct.Struct("<7I")  # see KeyProvInfo


def _utf16z(value: bytes, offset: int, what: str, problems: list[str]) -> str | None:
    """A NUL-terminated UTF-16LE string at ``offset`` in ``value``; 0 = absent."""
    if offset == 0:
        return None
    if offset >= len(value):
        problems.append(f"{what} offset {offset} is past the end of the {len(value)}-byte value")
        return None
    end = offset
    limit = min(len(value), offset + 2 * MAX_NAME_CHARS)
    while end + 1 < limit and value[end : end + 2] != b"\x00\x00":
        end += 2
    if end + 1 >= limit:
        if limit == offset + 2 * MAX_NAME_CHARS:
            problems.append(f"{what} is longer than {MAX_NAME_CHARS} characters; cut")
        else:
            problems.append(f"{what} is not NUL-terminated")
    return value[offset:end].decode("utf-16-le", "replace")


def parse_key_prov_info(value: bytes) -> KeyProvInfo:
    """Parse a serialized KEY_PROV_INFO property value; never raises."""
    problems: list[str] = []
    if len(value) < _KEY_PROV_INFO.size:
        problems.append(f"KEY_PROV_INFO is {len(value)} bytes, shorter than its {_KEY_PROV_INFO.size}-byte header")
        return KeyProvInfo(None, None, 0, 0, 0, 0, tuple(problems))
    off_container, off_provider, prov_type, flags, param_count, _off_params, key_spec = _KEY_PROV_INFO.unpack_from(
        value, 0
    )
    for name, offset in (("container name", off_container), ("provider name", off_provider)):
        if 0 < offset < _KEY_PROV_INFO.size:
            problems.append(f"{name} offset {offset} points into the header")
    container = _utf16z(value, off_container, "container name", problems) if off_container >= 28 else None
    provider = _utf16z(value, off_provider, "provider name", problems) if off_provider >= 28 else None
    return KeyProvInfo(
        container_name=container,
        provider_name=provider,
        provider_type=prov_type,
        flags=flags,
        key_spec=key_spec,
        provider_param_count=param_count,
        problems=tuple(problems),
    )


def parse_cert_blob(blob: bytes, *, max_size: int = MAX_BLOB) -> CertBlob:
    """Parse a certificate blob: a sequence of {PropertyId u32, Reserved u32, Length u32, Value}.

    Bounded by ``max_size`` and :data:`MAX_PROPERTIES`; a truncated or overlong element ends the
    walk with a problem. Never raises.
    """
    problems: list[str] = []
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        return CertBlob(problems=(f"blob is {type(blob).__name__}, not binary data (REG_BINARY)",))
    data = bytes(blob)
    if len(data) > max_size:
        return CertBlob(problems=(f"blob is {len(data)} bytes, over the {max_size}-byte limit; not read",))
    if not data:
        return CertBlob(problems=("blob is empty",))

    properties: list[CertProperty] = []
    der: bytes | None = None
    kpi: KeyProvInfo | None = None
    friendly: str | None = None
    sha1: str | None = None
    key_material: list[tuple[int, str]] = []
    odd_reserved = False
    seen_ids: set[int] = set()
    duplicated: set[int] = set()
    pos = 0
    while pos < len(data):
        if len(properties) >= MAX_PROPERTIES:
            problems.append(f"more than {MAX_PROPERTIES} properties; the rest were not read")
            break
        if len(data) - pos < _HEADER.size:
            problems.append(f"{len(data) - pos} trailing bytes at offset {pos} are too short for a property header")
            break
        prop_id, reserved, length = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        if length > len(data) - start:
            problems.append(
                f"property {prop_id:#x} at offset {pos} claims {length} bytes but only {len(data) - start} remain"
            )
            break
        value = data[start : start + length]
        properties.append(CertProperty(prop_id, reserved, length, start))
        if reserved != 1 and not odd_reserved:
            odd_reserved = True
            problems.append(f"property {prop_id:#x} has reserved word {reserved} (expected 1)")
        if prop_id in seen_ids:
            if prop_id not in duplicated:
                duplicated.add(prop_id)
                problems.append(f"property {prop_id:#x} appears more than once; the first is used")
        elif prop_id == CERT_CERT_PROP_ID:
            der = value
        elif prop_id == CERT_KEY_PROV_INFO_PROP_ID:
            kpi = parse_key_prov_info(value)
        elif prop_id == CERT_FRIENDLY_NAME_PROP_ID:
            text = value[: 2 * MAX_NAME_CHARS + 2].decode("utf-16-le", "replace")
            friendly = text.split("\x00", 1)[0][:MAX_NAME_CHARS]
        elif prop_id == CERT_SHA1_HASH_PROP_ID:
            sha1 = value.hex().upper() if len(value) == 20 else None
            if sha1 is None:
                problems.append(f"SHA-1 property is {length} bytes, not 20")
        seen_ids.add(prop_id)
        if prop_id != CERT_CERT_PROP_ID:
            label = sniff(value[:4096])
            if label is not None:
                key_material.append((prop_id, label))
        pos = start + length
    if der is None:
        problems.append("no certificate property (0x20)")
    return CertBlob(
        properties=tuple(properties),
        der=der,
        key_prov_info=kpi,
        friendly_name=friendly,
        sha1_property=sha1,
        key_material=tuple(key_material),
        problems=tuple(problems),
    )


# ---- certificate summary --------------------------------------------------------------------------

#: DER certificates over this size are not parsed (real ones are a few KiB).
MAX_DER = 1 << 20


def _utc_iso(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


def _public_key_text(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(key).__name__


def _validity(cert: x509.Certificate, which: str) -> dt.datetime:
    """notBefore/notAfter as aware UTC (``*_utc`` on cryptography ≥ 42, naive UTC before)."""
    aware = getattr(cert, f"not_valid_{which}_utc", None)
    if isinstance(aware, dt.datetime):
        return aware
    naive: dt.datetime = getattr(cert, f"not_valid_{which}")
    return naive.replace(tzinfo=dt.UTC)


def _guard(what: str, problems: list[str], call: Callable[[], T]) -> T | None:
    """Run one cryptography accessor; hostile certificates make them raise (or panic in Rust)."""
    try:
        return call()
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # pyo3 PanicException derives from BaseException
        problems.append(f"{what}: {type(exc).__name__}")
        return None


def certificate_summary(der: bytes) -> CertSummary:
    """Describe a DER certificate; an unparsable one gives a summary with ``problem`` set."""
    data = bytes(der) if isinstance(der, (bytes, bytearray, memoryview)) else b""
    thumbprint = hashlib.sha1(data, usedforsecurity=False).hexdigest().upper()
    sha256 = hashlib.sha256(data).hexdigest().upper()
    if not isinstance(der, (bytes, bytearray, memoryview)):
        return CertSummary(thumbprint, sha256, problem=f"certificate is {type(der).__name__}, not bytes")
    if len(data) > MAX_DER:
        return CertSummary(thumbprint, sha256, problem=f"certificate is {len(data)} bytes, over the {MAX_DER} limit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = _summarise(data, thumbprint, sha256)
    ours = []
    serial = summary.serial_number or ""
    if summary.problem is None and (serial.startswith("-") or serial == "0"):
        # said in our words, whatever the library's warning text (cryptography reworded it in 45.0)
        ours.append("serial number is not positive (RFC 5280 section 4.1.2.2 requires a positive integer)")
    notes = tuple(dict.fromkeys([*ours, *(f"{w.category.__name__}: {w.message}"[:200] for w in caught)]))
    return dataclasses.replace(summary, warnings=notes) if notes else summary


def _summarise(data: bytes, thumbprint: str, sha256: str) -> CertSummary:
    problems: list[str] = []
    parsed = _guard("not a parsable DER certificate", problems, lambda: x509.load_der_x509_certificate(data))
    if parsed is None:
        return CertSummary(thumbprint, sha256, problem=problems[0] if problems else "not a DER certificate")
    cert: x509.Certificate = parsed

    subject = _guard("subject", problems, lambda: cert.subject.rfc4514_string())
    issuer = _guard("issuer", problems, lambda: cert.issuer.rfc4514_string())
    serial = _guard("serial number", problems, lambda: format(cert.serial_number, "X"))
    before = _guard("notBefore", problems, lambda: _utc_iso(_validity(cert, "before")))
    after = _guard("notAfter", problems, lambda: _utc_iso(_validity(cert, "after")))

    def ca_flag() -> bool:
        try:
            return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        except x509.ExtensionNotFound:
            return False

    is_ca = _guard("basic constraints", problems, ca_flag)
    same = _guard("names", problems, lambda: cert.subject == cert.issuer)
    public_key = _guard("public key", problems, lambda: _public_key_text(cert))
    return CertSummary(
        thumbprint=thumbprint,
        sha256=sha256,
        subject=subject,
        issuer=issuer,
        serial_number=serial,
        not_before=before,
        not_after=after,
        is_ca=is_ca,
        self_signed=same,
        public_key=public_key,
        problem="; ".join(problems) or None,
    )


# ---- key container files (CNG / CryptoAPI key directories) -------------------------------------------

_SID = r"s-1-[0-9-]+"
_SYSTEM_SIDS = r"s-1-5-(?:18|19|20)"
_ALL_USERS = r"(?:programdata|documents and settings/all users/application data)"
_USER_APPDATA = r"(?:users/[^/]+/appdata/roaming|documents and settings/[^/]+/application data)"
_SERVICE_PROFILE = r"windows/serviceprofiles/(?:localservice|networkservice)/appdata/roaming"
#: (kind, regex over the lower-cased, "/"-separated directory path) in order of precedence.
_KEY_DIRS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        (CAPI_MACHINE_RSA, rf"{_ALL_USERS}/microsoft/crypto/rsa/machinekeys"),
        (CAPI_MACHINE_DSS, rf"{_ALL_USERS}/microsoft/crypto/dss/machinekeys"),
        (CAPI_SYSTEM, rf"{_ALL_USERS}/microsoft/crypto/(?:rsa|dss)/{_SYSTEM_SIDS}"),
        (CNG_MACHINE, rf"{_ALL_USERS}/microsoft/crypto/keys"),
        (CNG_SYSTEM, rf"{_ALL_USERS}/microsoft/crypto/systemkeys"),
        (CNG_SYSTEM, rf"{_SERVICE_PROFILE}/microsoft/crypto/keys"),
        (CAPI_SYSTEM, rf"{_SERVICE_PROFILE}/microsoft/crypto/(?:rsa|dss)/{_SID}"),
        (CAPI_USER, rf"{_USER_APPDATA}/microsoft/crypto/(?:rsa|dss)/{_SID}"),
        (CNG_USER, rf"{_USER_APPDATA}/microsoft/crypto/keys"),
        (DPAPI_MASTERKEY, rf"{_USER_APPDATA}/microsoft/protect/{_SID}"),
        (DPAPI_MASTERKEY, rf"{_SERVICE_PROFILE}/microsoft/protect/{_SID}"),
        (DPAPI_MASTERKEY, rf"windows/system32/microsoft/protect/{_SYSTEM_SIDS}(?:/user)?"),
    )
)
#: Files in those directories that are not keys (DPAPI's pointer to the current master key, shell
#: metadata).
NOT_KEY_FILES = frozenset({"preferred", "desktop.ini", "thumbs.db"})


class AllowlistError(Exception):
    """An allowlist file cannot be used; the message names the file and the bad entry."""


MAX_ALLOWLIST_FILE = 1 << 20
_ALLOWLIST_KEYS = {"prefix", "description", "kinds", "container"}
_HEX32 = re.compile(r"[0-9a-f]{32}")


def _parse_allowlist(text: str, source: str) -> list[AllowlistEntry]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise AllowlistError(f"machine-key allowlist {source}: not valid YAML{at}") from None
    if data is None:
        return []
    if not isinstance(data, dict) or set(data) - {"version", "entries"}:
        raise AllowlistError(f"machine-key allowlist {source}: expected a mapping with 'version' and 'entries'")
    raw_entries = data.get("entries")
    if raw_entries is None:
        return []
    if not isinstance(raw_entries, list):
        raise AllowlistError(f"machine-key allowlist {source}: 'entries' must be a list")
    entries = []
    for index, raw in enumerate(raw_entries, start=1):
        where = f"machine-key allowlist {source}, entry {index}"
        if not isinstance(raw, dict):
            raise AllowlistError(f"{where}: expected a mapping with prefix and description")
        unknown = set(raw) - _ALLOWLIST_KEYS
        if unknown:
            raise AllowlistError(f"{where}: unknown keys {sorted(map(str, unknown))}")
        prefix = raw.get("prefix")
        if not isinstance(prefix, str) or not _HEX32.fullmatch(prefix.strip().lower()):
            raise AllowlistError(f"{where}: 'prefix' must be 32 hexadecimal characters")
        description = raw.get("description")
        if not isinstance(description, str) or not description.strip():
            raise AllowlistError(f"{where} ({prefix}): 'description' is required")
        kinds = raw.get("kinds", [])
        if not isinstance(kinds, list) or any(k not in KEY_FILE_KINDS for k in kinds):
            raise AllowlistError(f"{where} ({prefix}): 'kinds' must be a list of {', '.join(KEY_FILE_KINDS)}")
        container = raw.get("container")
        if container is not None and not isinstance(container, str):
            raise AllowlistError(f"{where} ({prefix}): 'container' must be a string")
        entries.append(AllowlistEntry(prefix.strip().lower(), description.strip(), frozenset(kinds), container, source))
    return entries


def load_machine_key_allowlist(
    extra: Iterable[Path | str] = (), *, include_default: bool = True
) -> MachineKeyAllowlist:
    """The shipped allowlist plus user files (same format), or raise :class:`AllowlistError`."""
    entries: list[AllowlistEntry] = []
    if include_default:
        shipped = resources.files("harness").joinpath("data/machinekeys-allowlist.yml")
        entries.extend(_parse_allowlist(shipped.read_text(encoding="utf-8"), "machinekeys-allowlist.yml (shipped)"))
    for item in extra:
        path = Path(item)
        try:
            size = path.stat().st_size
            if size > MAX_ALLOWLIST_FILE:
                raise AllowlistError(f"machine-key allowlist {path}: {size} bytes, over the {MAX_ALLOWLIST_FILE} limit")
            text = path.read_bytes()[:MAX_ALLOWLIST_FILE].decode("utf-8")
        except OSError as exc:
            raise AllowlistError(f"machine-key allowlist {path}: cannot read it ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise AllowlistError(f"machine-key allowlist {path}: not UTF-8 text") from None
        entries.extend(_parse_allowlist(text, str(path)))
    return MachineKeyAllowlist(tuple(entries))


#: The shipped allowlist: IIS and .NET configuration keys Windows itself creates.
MACHINE_KEY_ALLOWLIST = load_machine_key_allowlist()


def _normalise_path(path: str) -> str:
    text = path.replace("\\", "/")
    text = re.sub(r"^(?:[A-Za-z]:)?/*", "", text)
    return re.sub(r"/+", "/", text).rstrip("/")


def classify_key_file(path: str, name: str, allowlist: MachineKeyAllowlist | None = None) -> KeyContainerFile | None:
    """Which key-container directory a file is in, or None when it is in none (or is not a key file).

    ``path`` is the volume-relative Windows path of the file (``ProgramData\\Microsoft\\Crypto\\RSA\\
    MachineKeys\\<name>``; "/" or "\\", a leading separator or ``C:`` are accepted) or of its directory:
    when its last component is not ``name``, ``name`` is joined to it. Comparison is case-insensitive.
    """
    if not isinstance(path, str) or not isinstance(name, str) or not name or "/" in name or "\\" in name:
        return None
    normal = _normalise_path(path)
    parts = normal.split("/") if normal else []
    if parts and parts[-1].lower() == name.lower():
        parts = parts[:-1]
    directory = "/".join(parts).lower()
    if name.lower() in NOT_KEY_FILES:
        return None
    allowlist = MACHINE_KEY_ALLOWLIST if allowlist is None else allowlist
    for kind, pattern in _KEY_DIRS:
        if pattern.fullmatch(directory):
            entry = allowlist.match(kind, name)
            full = "\\".join([*parts, name])
            return KeyContainerFile(full, name, kind, entry is not None, entry)
    return None


def capi_container_file_prefix(container_name: str) -> str:
    """The 32-hex prefix of a CAPI key file for a container name (the part before ``_<MachineGuid>``).

    MD5 of the lower-cased name plus a terminating NUL (ANSI; cp1252 here, unencodable characters
    replaced), the digest printed as four little-endian 32-bit words. Not in a Microsoft document:
    it reproduces the well-known names ``iisConfigurationKey`` → ``6de9cb26…``, ``iisWasKey`` →
    ``76944fb3…``, ``NetFrameworkConfigurationKey`` → ``d6d986f0…``, ``TSSecKeySet1`` →
    ``f686aace…``. The plain hex digest (the rule as usually quoted) does not. Use it as a hint
    when matching KEY_PROV_INFO container names to files; CNG key files are named differently.
    """
    digest = hashlib.md5((container_name.lower() + "\0").encode("cp1252", "replace"), usedforsecurity=False).digest()
    return "".join(f"{word:08x}" for word in struct.unpack("<4I", digest))


def key_files_for_container(container_name: str, files: Sequence[KeyContainerFile]) -> list[KeyContainerFile]:
    """The CAPI key files whose name starts with the container's derived prefix (a hint, see above)."""
    prefix = capi_container_file_prefix(container_name)
    capi = {CAPI_MACHINE_RSA, CAPI_MACHINE_DSS, CAPI_SYSTEM, CAPI_USER}
    return [f for f in files if f.kind in capi and f.name.lower().startswith(prefix)]
