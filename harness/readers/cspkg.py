"""Read a .cspkg (an OPC zip, ECMA-376 Part 2) into :class:`Package` facts, without extracting anything.

Levels: the outer zip (level 1); its nested parts .csdx/.csnsx/.csmx and an unencrypted .cssx (level 2,
opened in place or from a bounded in-memory copy). Zips inside level 2 (a .war in a role payload, a
hostile zip-in-zip) are listed as entries but never opened, which bounds the work a package can demand.

Hostile structure anywhere (hostile names, zip bombs, too many members, a damaged outer zip) makes the
whole package Unreadable. Damage that leaves the rest meaningful (a nested part that is not a zip, a
manifest item missing from the package, a malformed build csdef) goes into ``Package.problems``.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import unquote

from harness.engine.artefact import Artefact
from harness.facts.servicemodel import ManifestItem, Package, PackageEntry, RolePayload, ServiceDefinition
from harness.readers import keysniff
from harness.readers.errors import Unreadable
from harness.readers.servicemodel import parse_definition
from harness.readers.xmlsafe import DEFAULT_MAX_BYTES, MIB, Document, parse_xml, size_text
from harness.readers.zipsafe import (
    CORRUPT,
    DEFAULT_LIMITS,
    Limits,
    Skipped,
    check_listing,
    duplicates,
    open_zip,
    read_bounded,
    read_prefix,
    sha256_member,
    stored_window,
)

HEAD = 64
NESTED_SUFFIXES = (".csdx", ".csnsx", ".csmx")
PAYLOAD_SUFFIX = ".cssx"
ZIP_MAGIC = b"PK\x03\x04"
#: A compressed nested part is decompressed into memory (stored ones are read in place): cap it.
MAX_NESTED_IN_MEMORY = 256 * MIB
#: Entries over all levels: 10,000 per level could otherwise multiply through many nested parts.
MAX_ENTRIES = 50_000
#: Bytes read for key sniffing over the whole package.
SNIFF_BUDGET = 64 * MIB
_GUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_PAYLOAD_NAME = re.compile(rf"^(?P<role>.+)_{_GUID}\.cssx$", re.IGNORECASE)
_BUILD_CSDEFS = ("ServiceDefinition.build.csdef", "ServiceDefinition.csdef")


def read_package(artefact: Artefact, limits: Limits = DEFAULT_LIMITS) -> Package:
    path = artefact.path
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise Unreadable(path, f"cannot read the file: {exc.strerror or type(exc).__name__}") from None
    with handle:
        outer = open_zip(handle, path, "package")
        with outer:
            return _Reader(artefact, handle, outer, limits).read()


def role_name_of(part: str) -> str | None:
    """The role a payload part belongs to: ``Web%20Site_<guid>.cssx`` → ``Web Site``."""
    match = _PAYLOAD_NAME.match(part.rsplit("/", 1)[-1])
    return unquote(match.group("role")) if match else None


@dataclass
class _Reader:
    artefact: Artefact
    handle: IO[bytes]
    outer: zipfile.ZipFile
    limits: Limits
    entries: list[PackageEntry] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)
    payloads: list[RolePayload] = field(default_factory=list)
    definition: ServiceDefinition | None = None
    definition_bytes: bytes | None = None
    sdk_version: str | None = None
    sniff_left: int = SNIFF_BUDGET
    inflated: int = 0

    @property
    def path(self) -> Path:
        return self.artefact.path

    def _inflate(self, size: int, what: str) -> None:
        """Count ``size`` bytes about to be decompressed against the whole-package cap (zipfile stops a member
        at its declared size, so declared sizes bound the work)."""
        self.inflated += size
        cap = self.limits.max_package_inflated
        if self.inflated > cap:
            raise Unreadable(
                self.path,
                f"package needs more than {size_text(cap)} decompressed to read (reached at {what}), over the "
                f"{size_text(cap)} limit for a whole package",
                location=what,
            )

    def read(self) -> Package:
        infos = self.outer.infolist()
        check_listing(infos, self.path, "package", self.limits)
        # Every part is hashed to its end: refuse before any work when the parts alone are over the cap.
        parts = [i for i in infos if not i.is_dir()]
        declared = sum(i.file_size for i in parts)
        if declared > self.limits.max_package_inflated:
            raise Unreadable(
                self.path,
                f"package parts inflate to {size_text(declared)} ({len(parts)} parts), over the "
                f"{size_text(self.limits.max_package_inflated)} limit for a whole package",
                location="package",
            )
        for name in duplicates(infos):
            self.problems.append((name, f"package has more than one member named {name!r}"))
        for info in infos:
            self._top_level(info)
        manifest_part, manifest = self._manifest(infos)
        return Package(
            artefact=self.artefact,
            entries=tuple(self.entries),
            manifest_part=manifest_part,
            manifest_items=manifest.items,
            hash_type=manifest.hash_type,
            encryption_keytype=manifest.keytype,
            payloads=tuple(self.payloads),
            definition=self.definition,
            definition_bytes=self.definition_bytes,
            problems=tuple(self.problems),
            sdk_version=self.sdk_version,
        )

    # ---- level 1 ---------------------------------------------------------------------------------

    def _top_level(self, info: zipfile.ZipInfo) -> None:
        name = info.filename
        if info.is_dir():
            return
        try:
            head = read_prefix(self.outer, info, HEAD)
            # Hashing reads the part to its end, which also makes zipfile verify its CRC.
            self._inflate(info.file_size, name)
            self.hashes[name] = sha256_member(self.outer, info, self.limits.max_member_size)
        except Skipped as exc:
            self.problems.append((name, f"part {name!r} is {exc}; its contents were not read"))
            self._add_entry(name, info, b"", None)
            if name.lower().endswith(PAYLOAD_SUFFIX):  # unreadable here means opaque to scanning too
                self.payloads.append(RolePayload(name, role_name_of(name), True, info.file_size))
            return
        except CORRUPT as exc:
            raise Unreadable(
                self.path, f"package member {name!r} is damaged or truncated: {exc}", location=name
            ) from None
        self._add_entry(name, info, head, self.hashes[name])
        lower = name.lower()
        if lower.endswith(PAYLOAD_SUFFIX):
            encrypted = not head.startswith(ZIP_MAGIC)
            self.payloads.append(RolePayload(name, role_name_of(name), encrypted, info.file_size))
            if not encrypted:
                self._nested(info)
        elif lower.endswith(NESTED_SUFFIXES):
            self._nested(info)
        elif keysniff.is_candidate(name, info.file_size):
            self._sniff(name, self.outer, info, head)

    def _add_entry(
        self, name: str, info: zipfile.ZipInfo, head: bytes, sha: str | None, key: str | None = None
    ) -> None:
        if len(self.entries) >= MAX_ENTRIES:
            raise Unreadable(self.path, f"package holds more than {MAX_ENTRIES} files over all its levels")
        self.entries.append(PackageEntry(name, info.file_size, info.compress_size, head[:HEAD], key, sha))

    def _sniff(self, name: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, head: bytes) -> None:
        """Replace the entry just added for ``name`` with one carrying a key-material label."""
        want = min(keysniff.PREFIX, info.file_size)
        if want > len(head):
            if want > self.sniff_left:
                return
            self.sniff_left -= want
            try:
                head = read_prefix(zf, info, want)
            except (Skipped, *CORRUPT):
                return
        label = keysniff.sniff(head)
        if label is not None:
            last = self.entries[-1]
            self.entries[-1] = PackageEntry(last.name, last.size, last.compressed_size, last.head, label, last.sha256)

    # ---- level 2 ---------------------------------------------------------------------------------

    def _nested(self, info: zipfile.ZipInfo) -> None:
        part = info.filename
        fileobj: IO[bytes] | None = stored_window(self.handle, info)  # type: ignore[assignment]
        if fileobj is None:
            try:
                self._inflate(min(info.file_size, MAX_NESTED_IN_MEMORY + 1), part)
                data = read_bounded(self.outer, info, MAX_NESTED_IN_MEMORY)
            except (Skipped, *CORRUPT):
                data = None  # already reported by _top_level when it matters
            if data is None:
                self.problems.append(
                    (part, f"nested part {part!r} is over {size_text(MAX_NESTED_IN_MEMORY)}; not opened")
                )
                return
            fileobj = io.BytesIO(data)
        try:
            inner = open_zip(fileobj, self.path, part)
        except Unreadable as exc:
            # Damage confined to one part: the rest of the package is still worth linting.
            detail = exc.problem.removeprefix(f"{part} is not a readable zip archive: ")
            self.problems.append((part, f"nested part {part!r} is not a zip archive ({detail}); not read"))
            return
        with inner:
            infos = inner.infolist()
            check_listing(infos, self.path, part, self.limits)
            for name in duplicates(infos):
                self.problems.append((f"{part}!{name}", f"{part} has more than one member named {name!r}"))
            for member in infos:
                if not member.is_dir():
                    self._nested_member(part, inner, member)
            lower = part.lower()
            if lower.endswith(".csdx"):
                self._definition(part, inner)
            elif lower.endswith(".csnsx"):
                self._support_data(part, inner)

    def _nested_member(self, part: str, inner: zipfile.ZipFile, member: zipfile.ZipInfo) -> None:
        full = f"{part}!{member.filename}"
        try:
            head = read_prefix(inner, member, HEAD)
        except Skipped as exc:
            self.problems.append((full, f"{full!r} is {exc}; its contents were not read"))
            head = b""
        except CORRUPT as exc:
            self.problems.append((full, f"{full!r} is damaged: {exc}"))
            head = b""
        self._add_entry(full, member, head, None)
        if head and keysniff.is_candidate(member.filename, member.file_size):
            self._sniff(full, inner, member, head)

    def _member_text(self, part: str, inner: zipfile.ZipFile, name: str) -> bytes | None:
        try:
            info = inner.getinfo(name)
            self._inflate(min(info.file_size, DEFAULT_MAX_BYTES + 1), f"{part}!{name}")
            data = read_bounded(inner, info, DEFAULT_MAX_BYTES)
        except KeyError:
            return None
        except (Skipped, *CORRUPT) as exc:
            self.problems.append((f"{part}!{name}", f"cannot read {name!r} in {part!r}: {exc}"))
            return None
        if data is None:
            self.problems.append(
                (f"{part}!{name}", f"{name!r} in {part!r} is over {size_text(DEFAULT_MAX_BYTES)}; not parsed")
            )
        return data

    def _definition(self, part: str, inner: zipfile.ZipFile) -> None:
        names = inner.namelist()
        wanted = next((n for n in _BUILD_CSDEFS if n in names), None)
        if wanted is None:
            wanted = next((n for n in names if n.lower().endswith(".csdef")), None)
        if wanted is None:
            self.problems.append((part, f"{part!r} holds no ServiceDefinition .csdef"))
            return
        data = self._member_text(part, inner, wanted)
        if data is None:
            return
        location = f"{part}!{wanted}"
        try:
            self.definition = parse_definition(data, self.artefact, part=location)
            self.definition_bytes = data
        except Unreadable as exc:
            self.problems.append((location, f"the packaged service definition is unreadable: {exc.problem}"))

    def _support_data(self, part: str, inner: zipfile.ZipFile) -> None:
        for name in inner.namelist():
            if self.sdk_version is not None or not name.startswith("SupportData/"):
                continue
            data = self._member_text(part, inner, name)
            if data is None:
                continue
            try:
                doc = parse_xml(data, self.path, what="package part", location=f"{part}!{name}")
            except Unreadable:
                continue  # optional metadata: the version is a nicety, not a fact rules depend on
            sdk = doc.root.find("SDKVersion")
            if sdk is not None and sdk.text.strip():
                self.sdk_version = sdk.text.strip()

    # ---- manifest ----------------------------------------------------------------------------------

    def _manifest(self, infos: list[zipfile.ZipInfo]) -> tuple[str | None, _Manifest]:
        candidates = [i for i in infos if i.filename.lower().endswith(".csman") and "/" not in i.filename]
        if not candidates:
            self.problems.append(("package", "package has no .csman manifest"))
            return None, _Manifest()
        info = candidates[0]
        part = info.filename
        try:
            self._inflate(min(info.file_size, DEFAULT_MAX_BYTES + 1), part)
            data = read_bounded(self.outer, info, DEFAULT_MAX_BYTES)
        except (Skipped, *CORRUPT) as exc:
            self.problems.append((part, f"cannot read the manifest: {exc}"))
            return part, _Manifest()
        if data is None:
            self.problems.append((part, f"manifest is over {size_text(DEFAULT_MAX_BYTES)}; not parsed"))
            return part, _Manifest()
        try:
            doc = parse_xml(data, self.path, what="package manifest", location_prefix=f"{part}!", location=part)
        except Unreadable as exc:
            self.problems.append((part, f"the manifest is unreadable: {exc.problem}"))
            return part, _Manifest()
        return part, self._manifest_items(part, doc)

    def _manifest_items(self, part: str, doc: Document) -> _Manifest:
        root = doc.root
        encryption = root.find("Encryption")
        contents = root.find("Contents")
        items: list[ManifestItem] = []
        listed: set[str] = set()
        for node in contents.findall("Item") if contents is not None else []:
            name, uri = node.get("name"), node.get("uri")
            member = _member_for(name, uri, self.hashes)
            if member is None:
                self.problems.append((node.location, f"manifest item {name or uri!r} is not in the package"))
            else:
                listed.add(member)
            items.append(
                ManifestItem(
                    name=name or "",
                    uri=uri,
                    declared_hash=node.get("hash"),
                    actual_hash=self.hashes.get(member) if member else None,
                    location=node.location,
                )
            )
        hash_type = contents.get("hashtype") if contents is not None else None
        if hash_type not in (None, "1"):
            self.problems.append(
                (part, f"manifest hash type {hash_type!r} is not SHA-256 (1); hashes compared as SHA-256")
            )
        for name in self.hashes:
            if name != part and name.lower().endswith((PAYLOAD_SUFFIX, *NESTED_SUFFIXES)) and name not in listed:
                self.problems.append((name, f"part {name!r} is not listed in the manifest"))
        return _Manifest(
            items=tuple(items),
            hash_type=hash_type,
            keytype=encryption.get("keytype") if encryption is not None else None,
        )


@dataclass(frozen=True)
class _Manifest:
    items: tuple[ManifestItem, ...] = ()
    hash_type: str | None = None
    keytype: str | None = None


def _member_for(name: str | None, uri: str | None, members: dict[str, str]) -> str | None:
    """The zip member a manifest item points at: OPC uris are URL-encoded with a leading slash."""
    for candidate in (uri and unquote(uri).lstrip("/"), uri and uri.lstrip("/"), name, name and unquote(name)):
        if candidate and candidate in members:
            return candidate
    return None
