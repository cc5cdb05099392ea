"""Virtual package facts (a well-formed Package the tests damage) for the package, RDP and secrets rule tests.

``package()`` builds a well-formed :class:`Package` (the shape cspack writes, as the reader reports
it) that a test then damages with ``dataclasses.replace`` or keyword overrides, so package rules can
be tested without building zips.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from harness.engine.artefact import CSPKG, Artefact
from harness.engine.finding import Finding
from harness.facts.servicemodel import (
    ManifestItem,
    Package,
    PackageEntry,
    RolePayload,
    ServiceDefinition,
)

GUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
MANIFEST = f"{GUID}.csman"
PAYLOAD = f"WebRole1_{GUID}.cssx"
SD_PART = f"SDPackage_{GUID}.csdx"
NS_PART = f"NamedStreamPackage_{GUID}.csnsx"
BUILD_CSDEF = f"{SD_PART}!ServiceDefinition.build.csdef"


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def pkg_artefact(filename: str = "MyService.cspkg") -> Artefact:
    identity = f"svc/{filename}"
    return Artefact(kind=CSPKG, identity=identity, path=Path("/nonexistent") / identity, display=filename)


def entry(name: str, key_material: str | None = None, head: bytes = b"", size: int = 100) -> PackageEntry:
    return PackageEntry(name=name, size=size, compressed_size=size, head=head, key_material=key_material)


def item(part: str, declared: str | None = "same", actual: str | None = "same") -> ManifestItem:
    """A manifest item for ``part``; "same" means the part's (fake) SHA-256."""
    return ManifestItem(
        name=part,
        uri="/" + part,
        declared_hash=sha(part).upper() if declared == "same" else declared,
        actual_hash=sha(part) if actual == "same" else actual,
        location=f"{MANIFEST}!/PackageManifest/Contents/Item[@name='{part}']",
    )


def package(
    *,
    extra_entries: Iterable[PackageEntry] = (),
    entries: Iterable[PackageEntry] | None = None,
    items: Iterable[ManifestItem] | None = None,
    encrypted: bool = False,
    payloads: Iterable[RolePayload] | None = None,
    manifest_part: str | None = MANIFEST,
    definition: ServiceDefinition | str | None = "default",
    problems: Iterable[tuple[str, str]] = (),
    hash_type: str | None = "1",
) -> Package:
    """A well-formed package with one role payload, unless overridden."""
    art = pkg_artefact()
    if entries is None:
        entries = [
            entry("[Content_Types].xml"),
            entry("_rels/.rels"),
            entry(MANIFEST),
            entry(PAYLOAD, head=b"" if encrypted else b"PK\x03\x04"),
            entry(SD_PART),
            entry(f"{SD_PART}!ServiceDefinition.build.csdef"),
        ]
        if not encrypted:
            entries.append(entry(f"{PAYLOAD}!approot/WebRole1.dll"))
    if items is None:
        items = [item(PAYLOAD), item(SD_PART)]
    if payloads is None:
        payloads = [RolePayload(part=PAYLOAD, role_name="WebRole1", encrypted=encrypted, size=4096)]
    if definition == "default":
        definition = ServiceDefinition(artefact=art, name="MyService", part=BUILD_CSDEF)
    return Package(
        artefact=art,
        entries=(*entries, *extra_entries),
        manifest_part=manifest_part,
        manifest_items=tuple(items),
        hash_type=hash_type,
        encryption_keytype="1" if encrypted else None,
        payloads=tuple(payloads),
        definition=definition if not isinstance(definition, str) else None,
        problems=tuple(problems),
    )


def cms_blob(size: int = 400) -> str:
    """Base64 of a DER CMS EnvelopedData header plus filler: the shape the SDK writes for RDP passwords."""
    der = bytes.fromhex("3082019d06092a864886f70d010703a082018e") + bytes((i * 37) % 256 for i in range(size))
    return base64.b64encode(der).decode()


def dumped(findings: Iterable[Finding]) -> str:
    """All findings serialised as a report would: what must never contain a secret."""
    return json.dumps([f.to_dict() for f in findings])


def assert_not_leaked(findings: Iterable[Finding], secrets: Iterable[str]) -> None:
    """Neither a secret nor its first or last 6 characters appear in the serialised findings."""
    text = dumped(findings)
    for secret in secrets:
        for piece in (secret, secret[:6], secret[-6:]):
            assert piece not in text, f"a secret (or its prefix/suffix {piece[:2]}…) leaked into a finding"
