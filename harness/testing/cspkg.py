"""Build realistic .cspkg packages for tests and demos.

The layout copies real SDK 2.x packages: an OPC zip whose parts are

- ``<Role>_<guid>.cssx``: the role payload, *stored*; a plain zip of the payload files, or opaque bytes
  when ``encrypted=True`` (what cspack writes without ``_CSPACK_FORCE_NOENCRYPT_``);
- ``SDPackage_<guid>.csdx``: nested OPC zip with the csdef (``ServiceDefinition.build.csdef``),
  its own ``<guid>.csman``, ``_rels/.rels`` and ``[Content_Types].xml``;
- ``NamedStreamPackage_<guid>.csnsx``: nested zip of RequiredFeatures/SupportedOSes/SupportData streams;
- ``SMPackage_<guid>.csmx``: nested zip with a minimal ``ServiceDefinition.rd``;
- ``<guid>.csman``: the manifest, with the SHA-256 of every part above;
- ``_rels/.rels`` and ``[Content_Types].xml``.

Everything (GUIDs, timestamps, opaque payload bytes) derives from ``seed``, so a build is byte-for-byte
reproducible. Options make broken packages on purpose: a wrong manifest hash, a part missing from the
zip, replaced part bytes, extra members with hostile names (``..``, absolute, drive letters, even NUL,
which zipfile cannot write and is patched in afterwards), a zip-encryption flag, zip64 headers.

Example::

    from harness.testing.cspkg import write_cspkg
    pkg = write_cspkg(tmp_path / "app.cspkg", csdef_text, payloads={"Web": {"approot/site.pfx": pfx}})
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import uuid
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

DATE_TIME = (2015, 3, 18, 20, 6, 0)
BOM = b"\xef\xbb\xbf"
XML_DECL = '<?xml version="1.0" encoding="utf-8"?>'
RELS_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
TYPES_NS = "http://schemas.openxmlformats.org/package/2006/content-types"
REQUIRED = "http://schemas.microsoft.com/opc/2006/sample/required-resource"
#: System.IO.Packaging pads local headers with this extra field; readers must tolerate it.
OPC_PADDING = struct.pack("<HH", 0xA220, 4) + b"\xa0\x28\x00\x00"
_ROLE = re.compile(r"<\s*(?:\w+:)?(WebRole|WorkerRole|VirtualMachineRole)\b[^>]*?\bname\s*=\s*[\"']([^\"']+)")


@dataclass
class Member:
    """One zip member. ``name`` may be hostile; ``deflate=False`` stores it."""

    name: str
    data: bytes
    deflate: bool = True


@dataclass
class BuiltPackage:
    """What a build produced: the bytes and the names a test may want to point at."""

    data: bytes
    parts: dict[str, str] = field(default_factory=dict)  # "csdx", "csnsx", "csmx", "manifest", role → part
    manifest_hashes: dict[str, str] = field(default_factory=dict)  # part → declared hash


def role_names(csdef: str) -> list[str]:
    """Role names in a csdef, in order (a light scan: the builder must not depend on the reader)."""
    return [m.group(2) for m in _ROLE.finditer(csdef)]


def _guid(seed: int, label: str) -> str:
    return str(uuid.UUID(bytes=hashlib.sha256(f"{seed}:{label}".encode()).digest()[:16], version=4))


def _opaque(seed: int, label: str, size: int) -> bytes:
    """Deterministic bytes that look like ciphertext (never start with a zip signature)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{label}:{counter}".encode()).digest()
        counter += 1
    if out[:2] == b"PK":
        out[0] ^= 0xFF
    return bytes(out[:size])


def _xml(text: str) -> bytes:
    return BOM + (XML_DECL + text).encode()


def _rels(targets: Iterable[tuple[str, str]]) -> bytes:
    body = "".join(f'<Relationship Type="{REQUIRED}" Target="/{t}" Id="{i}" />' for i, t in targets)
    return _xml(f'<Relationships xmlns="{RELS_NS}">{body}</Relationships>')


def _types(defaults: Mapping[str, str]) -> bytes:
    body = "".join(f'<Default Extension="{ext}" ContentType="{ct}" />' for ext, ct in defaults.items())
    return _xml(f'<Types xmlns="{TYPES_NS}">{body}</Types>')


def _csman(items: Iterable[tuple[str, str]], extra: str = "<NamedStreams />") -> bytes:
    body = "".join(f'<Item name={quoteattr(n)} hash="{h}" uri={quoteattr("/" + n)} />' for n, h in items)
    text = f'<PackageManifest version="2"><Encryption keytype="1" /><Contents hashtype="1">{body}</Contents>{extra}'
    return BOM + (text + "</PackageManifest>").encode()


def sha256_upper(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest().upper()


def zip_members(
    members: Iterable[Member],
    *,
    force_zip64: bool = False,
    encrypted_flag: Iterable[str] = (),
    opc_padding: bool = True,
) -> bytes:
    """A zip of ``members`` in order. Names with NUL are written with a placeholder and patched after,
    because zipfile truncates names at NUL; ``encrypted_flag`` names get general-purpose bit 0 set
    (zipfile cannot write encrypted members, but readers must cope with the flag)."""
    buffer = io.BytesIO()
    patches: list[tuple[bytes, bytes]] = []
    with zipfile.ZipFile(buffer, "w") as zf:
        for member in members:
            name = member.name
            if "\x00" in name:
                placeholder = name.replace("\x00", "\x01")
                patches.append((placeholder.encode(), name.encode()))
                name = placeholder
            info = zipfile.ZipInfo(name, DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED if member.deflate else zipfile.ZIP_STORED
            if opc_padding:
                info.extra = OPC_PADDING
            with zf.open(info, "w", force_zip64=force_zip64) as handle:
                handle.write(member.data)
    out = buffer.getvalue()
    for stand_in, real in patches:
        out = out.replace(stand_in, real)
    for flagged in encrypted_flag:
        out = _set_flag(out, flagged.encode(), 0x1)
    return out


def _set_flag(data: bytes, name: bytes, bit: int) -> bytes:
    out = bytearray(data)
    for signature, flag_at, len_at, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        start = 0
        while (pos := out.find(signature, start)) >= 0:
            (name_len,) = struct.unpack_from("<H", out, pos + len_at)
            if bytes(out[pos + name_at : pos + name_at + name_len]) == name:
                (flags,) = struct.unpack_from("<H", out, pos + flag_at)
                struct.pack_into("<H", out, pos + flag_at, flags | bit)
            start = pos + 4
    return bytes(out)


def default_payload(role: str) -> dict[str, bytes]:
    """Files a real unencrypted payload carries (trimmed): role model, runtime setup, an approot."""
    return {
        "RoleModel.xml": _xml(f'<RoleModel name="{role}" version="2.9.7499.7"><Startup /></RoleModel>'),
        "RuntimeSetup.Manifest": _xml("<RuntimeSetup />"),
        f"approot/{role}.dll": b"MZ" + b"\x00" * 126,
        "approot/Web.config": _xml("<configuration />"),
    }


def _payload_zip(seed: int, role: str, files: Mapping[str, bytes], **zip_options: object) -> bytes:
    guid = _guid(seed, f"payload-manifest:{role}")
    members = [Member(name, data) for name, data in files.items()]
    items = [(m.name, sha256_upper(m.data)) for m in members if "\x00" not in m.name]
    members += [
        Member(f"{guid}.csman", _csman(items)),
        Member("_rels/.rels", _rels([("MANIFEST", f"{guid}.csman")]), deflate=False),
        Member("[Content_Types].xml", _types({"csman": "text/ucmanifest", "xml": "text/xml"})),
    ]
    return zip_members(members, **zip_options)  # type: ignore[arg-type]


def build_cspkg(
    csdef: bytes | str,
    payloads: Mapping[str, Mapping[str, bytes]] | None = None,
    *,
    encrypted: bool = False,
    seed: int = 0,
    sdk_version: str = "2.9.7499.7",
    csdef_name: str = "ServiceDefinition.build.csdef",
    corrupt_hash: Iterable[str] = (),
    omit_parts: Iterable[str] = (),
    replace_parts: Mapping[str, bytes] | None = None,
    extra_members: Iterable[Member] | Mapping[str, bytes] = (),
    payload_zip_options: Mapping[str, object] | None = None,
    force_zip64: bool = False,
    encrypted_flag: Iterable[str] = (),
) -> BuiltPackage:
    """Build a package in memory.

    - ``payloads``: role name → {path inside the payload: bytes}. Roles of the csdef missing here get
      :func:`default_payload`. With ``encrypted=True`` every payload is opaque bytes instead.
    - ``corrupt_hash``: part kinds ("csdx", "csnsx", "csmx") or role names whose manifest hash is wrong.
    - ``omit_parts``: part kinds or role names listed in the manifest but left out of the zip.
    - ``replace_parts``: part kind or role name → bytes to store instead (hashed honestly).
    - ``extra_members``: extra top-level members, not in the manifest (hostile names welcome).
    - ``payload_zip_options``: passed to :func:`zip_members` for every payload (e.g. hostile tests).
    - ``force_zip64`` / ``encrypted_flag``: zip64 headers on every outer member / bit 0 on named members.
    """
    text = csdef.decode("utf-8-sig") if isinstance(csdef, bytes) else csdef
    csdef_bytes = csdef if isinstance(csdef, bytes) else BOM + csdef.encode()
    roles = role_names(text)
    given = dict(payloads or {})
    for role in given:
        if role not in roles:
            roles.append(role)
    guids = {label: _guid(seed, label) for label in ("csdx", "csnsx", "csmx", "manifest", "inner")}
    parts: dict[str, str] = {
        "csmx": f"SMPackage_{guids['csmx']}.csmx",
        "csdx": f"SDPackage_{guids['csdx']}.csdx",
        "csnsx": f"NamedStreamPackage_{guids['csnsx']}.csnsx",
    }
    contents: dict[str, bytes] = {}
    for role in roles:
        part = f"{role.replace(' ', '%20')}_{_guid(seed, 'role:' + role)}.cssx"
        parts[role] = part
        if encrypted:
            contents[role] = _opaque(seed, role, 4096)
        else:
            files = given.get(role) or default_payload(role)
            contents[role] = _payload_zip(seed, role, files, **(payload_zip_options or {}))
    contents["csmx"] = _csmx(seed, text)
    contents["csdx"] = _csdx(seed, csdef_bytes, csdef_name)
    contents["csnsx"] = _csnsx(seed, roles, sdk_version)
    for key, data in (replace_parts or {}).items():
        contents[key] = data

    order = [*roles, "csmx", "csdx", "csnsx"]  # the order cspack writes them
    corrupt, omit = set(corrupt_hash), set(omit_parts)
    hashes = {
        parts[k]: sha256_upper(b"corrupted:" + contents[k]) if k in corrupt else sha256_upper(contents[k])
        for k in order
    }
    streams = "".join(
        f'<Stream name="{kind}/{role}/1.0" />'
        for role in roles
        for kind in ("RequiredFeatures", "SupportedOSes", "SupportData")
    )
    manifest = _csman([(parts[k], hashes[parts[k]]) for k in order], f"<NamedStreams>{streams}</NamedStreams>")
    parts["manifest"] = f"{guids['manifest']}.csman"

    members = [Member(parts[k], contents[k], deflate=False) for k in order if k not in omit]
    rel_targets = [("SERVICEMODEL", parts["csmx"]), ("SERVICEDESCRIPTION", parts["csdx"])]
    rel_targets += [("NAMEDSTREAMPACKAGE", parts["csnsx"]), ("MANIFEST", parts["manifest"])]
    members.insert(len(roles) + 1, Member("_rels/.rels", _rels(rel_targets), deflate=False))
    members.append(Member(parts["manifest"], manifest))
    members.append(
        Member(
            "[Content_Types].xml",
            _types(
                {
                    "cssx": "binary/software",
                    "csmx": "user/user",
                    "rels": "application/vnd.openxmlformats-package.relationships+xml",
                    "csdx": "user/user",
                    "csnsx": "user/user",
                    "csman": "text/ucmanifest",
                }
            ),
        )
    )
    extras = extra_members.items() if isinstance(extra_members, Mapping) else None
    members += [Member(n, d) for n, d in extras] if extras is not None else list(extra_members)  # type: ignore[arg-type]
    data = zip_members(members, force_zip64=force_zip64, encrypted_flag=encrypted_flag)
    return BuiltPackage(data=data, parts=parts, manifest_hashes=hashes)


def write_cspkg(
    path: Path, csdef: bytes | str, payloads: Mapping[str, Mapping[str, bytes]] | None = None, **options: object
) -> Path:
    """:func:`build_cspkg` written to ``path``; returns ``path``."""
    built = build_cspkg(csdef, payloads, **options)  # type: ignore[arg-type]
    path.write_bytes(built.data)
    return path


def _csdx(seed: int, csdef: bytes, csdef_name: str) -> bytes:
    guid = _guid(seed, "csdx-manifest")
    return zip_members(
        [
            Member(csdef_name, csdef),
            Member("_rels/.rels", _rels([("SERVICEDESCRIPTION", csdef_name), ("MANIFEST", f"{guid}.csman")]), False),
            Member(f"{guid}.csman", _csman([(csdef_name, sha256_upper(csdef))])),
            Member(
                "[Content_Types].xml",
                _types(
                    {
                        "csdef": "text/servicedescription",
                        "rels": "application/vnd.openxmlformats-package.relationships+xml",
                        "csman": "text/ucmanifest",
                    }
                ),
            ),
        ]
    )


def _csnsx(seed: int, roles: list[str], sdk_version: str) -> bytes:
    guid = _guid(seed, "csnsx-manifest")
    streams: list[Member] = []
    for role in roles:
        streams += [
            Member(
                f"RequiredFeatures/{role}/1.0",
                _xml('<RequiredFeatures version="1.0"><Feature name="NetFx40" version="0" /></RequiredFeatures>'),
            ),
            Member(
                f"SupportedOSes/{role}/1.0",
                _xml('<SupportedOsFamilies version="1.0"><OsFamily name="4" version="0" /></SupportedOsFamilies>'),
            ),
            Member(
                f"SupportData/{role}/1.0",
                _xml(
                    f'<SupportData version="1.0"><SDKVersion>{sdk_version}</SDKVersion>'
                    "<TargetFrameworkVersion>v4.0</TargetFrameworkVersion><Imports /></SupportData>"
                ),
            ),
        ]
    items = [(m.name, sha256_upper(m.data)) for m in streams]
    return zip_members(
        [
            *streams,
            Member(f"{guid}.csman", _csman(items)),
            Member("_rels/.rels", _rels([("MANIFEST", f"{guid}.csman")]), deflate=False),
            Member(
                "[Content_Types].xml",
                _types(
                    {
                        "0": "user/user",
                        "csman": "text/ucmanifest",
                        "rels": "application/vnd.openxmlformats-package.relationships+xml",
                    }
                ),
                deflate=False,
            ),
        ]
    )


def _csmx(seed: int, csdef_text: str) -> bytes:
    guid = _guid(seed, "csmx-manifest")
    name = re.search(r"<\s*(?:\w+:)?ServiceDefinition\b[^>]*?\bname\s*=\s*[\"']([^\"']*)", csdef_text)
    service = name.group(1) if name else "Service"
    rd = _xml(
        f'<serviceModel name={quoteattr(service)} generation="1" functional="0" release="0" '
        'dslVersion="1.2.0.0" xmlns="http://schemas.microsoft.com/dsltools/RDSM" />'
    )
    return zip_members(
        [
            Member("ServiceDefinition.rd", rd),
            Member(
                "_rels/.rels", _rels([("SERVICEMODEL", "ServiceDefinition.rd"), ("MANIFEST", f"{guid}.csman")]), False
            ),
            Member(f"{guid}.csman", _csman([("ServiceDefinition.rd", sha256_upper(rd))])),
            Member(
                "[Content_Types].xml",
                _types({"rd": "text/servicemodel", "csman": "text/ucmanifest"}),
            ),
        ]
    )
