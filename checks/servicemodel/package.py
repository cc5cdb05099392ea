"""Service package (.cspkg) integrity: OPC structure, manifest hashes, payload encryption, build csdef."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote

from harness.checks.servicemodel._model import package_of

from harness.docs_sources import refs
from harness.engine.artefact import CSPKG
from harness.engine.finding import Finding
from harness.engine.rule import NotApplicable, Rule
from harness.engine.severity import Severity
from harness.facts.servicemodel import ManifestItem, Package, ServiceModelSubject

CONTENT_TYPES = "[Content_Types].xml"
SHA256_HASHTYPE = "1"
#: Nested packages cspack writes next to the role payloads. Whether the outer manifest lists each
#: kind is not documented, so they are demanded only when the manifest lists that kind at all.
NESTED_PACKAGE_SUFFIXES = (".csdx", ".csmx", ".csnsx")
PAYLOAD_SUFFIX = ".cssx"
MANIFEST_SUFFIX = ".csman"
#: Where the reader (and VMR544) locate "the package has no manifest".
NO_MANIFEST_LOCATION = "package"


def part_key(name: str) -> str:
    """OPC part names compare case-insensitively, URL-decoded, without the leading slash of a uri."""
    return unquote(name).lstrip("/").lower()


def top_level_parts(package: Package) -> list[str]:
    """Names of the outer zip's members (entries of nested levels contain "!")."""
    return [e.name for e in package.entries if "!" not in e.name]


def is_opc_infrastructure(name: str) -> bool:
    key = part_key(name)
    return key == CONTENT_TYPES.lower() or key.startswith("_rels/") or key.endswith(MANIFEST_SUFFIX)


def unlisted_parts(package: Package) -> list[str]:
    """Top-level parts no manifest item names (OPC bookkeeping and manifests excluded)."""
    listed = {part_key(i.uri or i.name) for i in package.manifest_items}
    listed |= {part_key(i.name) for i in package.manifest_items}
    return [n for n in top_level_parts(package) if not is_opc_infrastructure(n) and part_key(n) not in listed]


def definition_parts(package: Package) -> list[str]:
    """Top-level service-definition parts (SDPackage_<guid>.csdx)."""
    return [n for n in top_level_parts(package) if part_key(n).endswith(".csdx")]


def definition_problems(package: Package) -> list[tuple[str, str]]:
    """Reader problems about the service-definition part (reported by VMR545 when there is no csdef)."""
    parts = definition_parts(package)
    return [(loc, msg) for loc, msg in package.problems if any(loc == p or loc.startswith(p + "!") for p in parts)]


def _item_location(package: Package, item: ManifestItem) -> str:
    return item.location or f"{package.manifest_part or 'manifest'}!Item[@name='{item.name}']"


class _PackageRule(Rule):
    applies_to = frozenset({CSPKG})
    requires = ("package",)
    tags = ("service-model", "package")


def _package_with_manifest(subject: ServiceModelSubject) -> Package:
    """The subject's package; NotApplicable when it has no manifest (VMR544 reports that)."""
    package = package_of(subject)
    if package.manifest_part is None:
        raise NotApplicable("the package has no manifest (.csman); VMR544 reports that")
    return package


class PackageManifestHashMismatch(_PackageRule):
    """A part's SHA-256 differs from the hash the package manifest declares for it.

    ## What it does
    Compares each `<Item hash="…">` of the package manifest (`.csman`, `hashtype="1"` = SHA-256)
    with the hash of the part's bytes. Reports a mismatch (high) and an item that declares no hash
    (medium). Not applicable when the manifest uses another hash type or the package has no
    manifest.

    ## Why is this bad?
    The fabric verifies these hashes: a mismatching package is rejected at deployment. A part
    changed after `cspack` ran also means the package was edited by hand or damaged in transit, so
    what is deployed is not what was built and tested.

    ## Example
    ```xml
    <Item name="WebRole1_….cssx" hash="9F86D0…" uri="/WebRole1_….cssx" />  <!-- part bytes hash to 2C26B4… -->
    ```

    ## Use instead
    Rebuild the package with `cspack` (or the Visual Studio / MSBuild packaging target) instead of
    editing it, and copy it in binary mode.

    ## References
    - What is the Cloud Service (classic) model and how do I package it?: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-model-and-package
    - ECMA-376 Office Open XML, Part 2: Open Packaging Conventions: https://ecma-international.org/publications-and-standards/standards/ecma-376/
    """

    id = "VMR540"
    name = "package-manifest-hash-mismatch"
    references = refs("cloud-services-model", "opc-ecma-376")
    severity = Severity.HIGH

    def check(self, subject: ServiceModelSubject) -> Iterable[Finding]:
        package = _package_with_manifest(subject)
        hash_type = (package.hash_type or SHA256_HASHTYPE).strip()
        if hash_type != SHA256_HASHTYPE:
            raise NotApplicable(f"manifest hashtype {hash_type!r} is not SHA-256; hashes cannot be verified")
        for item in package.manifest_items:
            if item.actual_hash is None:
                continue  # the part is missing: VMR541
            if not (item.declared_hash or "").strip():
                yield self.finding(
                    subject,
                    _item_location(package, item),
                    f"Manifest item '{item.name}' declares no hash: rebuild the package with cspack.",
                    evidence={"item": item.name, "actual_sha256": item.actual_hash.lower()},
                    severity=Severity.MEDIUM,
                )
            elif not item.matches:
                yield self.finding(
                    subject,
                    _item_location(package, item),
                    f"Part '{item.name}' does not match its manifest hash: the package was modified after "
                    "it was built; rebuild it.",
                    evidence={
                        "item": item.name,
                        "declared_sha256": (item.declared_hash or "").strip().lower(),
                        "actual_sha256": item.actual_hash.lower(),
                    },
                )


class PackageManifestItemMissing(_PackageRule):
    """The package manifest lists a part that is not in the package.

    ## What it does
    Reports every manifest `<Item>` whose part (by `uri`, else `name`) is absent from the outer zip.

    ## Why is this bad?
    The package is incomplete: a role payload or the service-model part was dropped, typically by a
    tool that rewrote the zip. The deployment is rejected, or a role has nothing to run.

    ## Example
    ```xml
    <Item name="WorkerRole1_….cssx" hash="…" uri="/WorkerRole1_….cssx" />  <!-- no such part -->
    ```

    ## Use instead
    Rebuild the package with `cspack`; never add or remove parts with a generic zip tool.

    ## References
    - What is the Cloud Service (classic) model and how do I package it?: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-model-and-package
    - ECMA-376 Office Open XML, Part 2: Open Packaging Conventions: https://ecma-international.org/publications-and-standards/standards/ecma-376/
    """

    id = "VMR541"
    name = "package-manifest-item-missing"
    references = refs("cloud-services-model", "opc-ecma-376")
    severity = Severity.HIGH

    def check(self, subject: ServiceModelSubject) -> Iterable[Finding]:
        package = _package_with_manifest(subject)
        for item in package.manifest_items:
            if item.actual_hash is None:
                yield self.finding(
                    subject,
                    _item_location(package, item),
                    f"Manifest item '{item.name}' has no part in the package: rebuild the package.",
                    evidence={"item": item.name, "uri": item.uri or ""},
                )


class PackagePartNotInManifest(_PackageRule):
    """The package contains a part that its manifest does not list (and so does not protect).

    ## What it does
    Reports top-level parts of the `.cspkg` that no manifest `<Item>` names: role payloads
    (`.cssx`) and any stray file. OPC bookkeeping (`[Content_Types].xml`, `_rels/…`) and manifests
    are exempt; nested service-model packages (`.csdx`, `.csmx`, `.csnsx`) are demanded only when the
    manifest lists parts of that kind at all.

    ## Why is this bad?
    Nothing verifies an unlisted part: it was added after the build (a tampered or hand-edited
    package), or the manifest belongs to another build. Either way the package is not the one that
    was tested.

    ## Example
    A `.cspkg` with `notes.txt` or a second `WebRole1_<other guid>.cssx` next to the parts the manifest
    lists.

    ## Use instead
    Rebuild the package with `cspack` from a clean output directory.

    ## References
    - What is the Cloud Service (classic) model and how do I package it?: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-model-and-package
    - ECMA-376 Office Open XML, Part 2: Open Packaging Conventions: https://ecma-international.org/publications-and-standards/standards/ecma-376/
    """

    id = "VMR542"
    name = "package-part-not-in-manifest"
    references = refs("cloud-services-model", "opc-ecma-376")
    severity = Severity.MEDIUM

    def check(self, subject: ServiceModelSubject) -> Iterable[Finding]:
        package = _package_with_manifest(subject)
        keys = {part_key(i.uri or i.name) for i in package.manifest_items}
        listed_nested = {s for s in NESTED_PACKAGE_SUFFIXES if any(k.endswith(s) for k in keys)}
        for name in unlisted_parts(package):
            nested = next((s for s in NESTED_PACKAGE_SUFFIXES if part_key(name).endswith(s)), None)
            if nested is not None and nested not in listed_nested:
                continue
            yield self.finding(
                subject,
                name,
                f"Part '{name}' is not listed in the package manifest, so nothing verifies it: rebuild the "
                "package with cspack.",
                evidence={"part": name, "manifest": package.manifest_part or ""},
            )


class EncryptedRolePayload(_PackageRule):
    """A role payload is encrypted: its contents cannot be scanned.

    ## What it does
    Reports, for information, every role payload (`.cssx`) that `cspack` encrypted. The harness
    cannot look inside it, so the key and secret scans (VMR305-VMR309) saw nothing of that role;
    this finding makes the gap explicit instead of a silent pass.

    ## Why is this bad?
    It is not: encryption is cspack's default and protects the package in transit. But a clean key
    scan of an encrypted package proves nothing about the files inside it.

    ## Example
    A package built by Visual Studio or `cspack` with default settings.

    ## Use instead
    To have the contents scanned, build a scan copy with `_CSPACK_FORCE_NOENCRYPT_=true` (cspack
    warns `CloudServices44 : Forcing creation of unencrypted package.`) and lint that, or waive this
    finding for packages that are scanned another way.

    ## References
    - What is the Cloud Service (classic) model and how do I package it?: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-model-and-package
    """

    id = "VMR543"
    name = "encrypted-role-payload"
    references = refs("cloud-services-model")
    severity = Severity.INFO

    def check(self, subject: ServiceModelSubject) -> Iterable[Finding]:
        package = package_of(subject)
        if not package.payloads:
            raise NotApplicable("the package has no role payloads")
        for payload in package.payloads:
            if payload.encrypted:
                role = payload.role_name or "?"
                yield self.finding(
                    subject,
                    payload.part,
                    f"Role payload '{payload.part}' (role '{role}') is encrypted - contents not scannable: "
                    "lint an unencrypted build (_CSPACK_FORCE_NOENCRYPT_=true) to scan it for keys.",
                    evidence={"part": payload.part, "role": role, "size": str(payload.size)},
                )


class PackageStructureProblem(_PackageRule):
    """The package is not a well-formed cspack package.

    ## What it does
    Reports what the package reader noted but could read past (a nested part that is not a zip,
    an unparsable manifest, …), and checks the outer OPC zip for `[Content_Types].xml`, a
    manifest (`.csman`) and at least one role payload (`.cssx`).

    ## Why is this bad?
    The fabric rejects a package without these parts, and a part the reader could not open is a
    part no other rule has checked.

    ## Example
    A `.cspkg` re-zipped by hand: the parts are there but `[Content_Types].xml` was dropped.

    ## Use instead
    Build the package with `cspack` (or the Visual Studio / MSBuild packaging target) and ship it
    unmodified.

    ## References
    - What is the Cloud Service (classic) model and how do I package it?: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-model-and-package
    - ECMA-376 Office Open XML, Part 2: Open Packaging Conventions: https://ecma-international.org/publications-and-standards/standards/ecma-376/
    """

    id = "VMR544"
    name = "package-structure-problem"
    references = refs("cloud-services-model", "opc-ecma-376")
    severity = Severity.HIGH

    def check(self, subject: ServiceModelSubject) -> Iterable[Finding]:
        package = package_of(subject)
        found: dict[str, list[str]] = {}
        parts = {part_key(n) for n in top_level_parts(package)}
        if CONTENT_TYPES.lower() not in parts:
            found[CONTENT_TYPES] = [
                f"the package has no {CONTENT_TYPES}, so it is not an OPC package as cspack writes it"
            ]
        if package.manifest_part is None:
            found[NO_MANIFEST_LOCATION] = ["the package has no manifest (.csman), so its parts cannot be verified"]
        if not package.payloads and not any(p.endswith(PAYLOAD_SUFFIX) for p in parts):
            found["*" + PAYLOAD_SUFFIX] = ["the package has no role payload (.cssx), so no role can be deployed"]
        # Problems that a dedicated rule reports (VMR541, VMR542, VMR545) are left to it.
        claimed = {i.location for i in package.manifest_items if i.actual_hash is None and i.location}
        claimed |= set(unlisted_parts(package))
        if package.definition is None:
            claimed |= {loc for loc, _ in definition_problems(package)}
        for location, message in package.problems:
            where = location or NO_MANIFEST_LOCATION
            if where in claimed or (where == NO_MANIFEST_LOCATION and package.manifest_part is None):
                continue
            found.setdefault(where, []).append(message)
        for location, messages in found.items():
            text = "; ".join(messages)
            yield self.finding(
                subject,
                location,
                f"{text[:1].upper()}{text[1:]}: rebuild the package with cspack.",
                evidence={"problem": text},
            )


class PackageBuildDefinitionMissing(_PackageRule):
    """The package carries no `ServiceDefinition.build.csdef`.

    ## What it does
    Reports a package whose service-definition part (`SDPackage_<guid>.csdx`) is missing, or holds
    no `ServiceDefinition.build.csdef` the reader could use.

    ## Why is this bad?
    The build csdef is the service model the fabric deploys. Without it the package cannot be
    deployed, and none of the service-definition rules (endpoints, sizes, imports, firewall
    comparison) could check this package.

    ## Example
    A package assembled from `.cssx` parts and a manifest without the `SDPackage_….csdx` part.

    ## Use instead
    Build the package with `cspack ServiceDefinition.csdef …` so that the SDPackage part is written.

    ## References
    - What is the Cloud Service (classic) model and how do I package it?: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-model-and-package
    - Azure Cloud Services (classic) Definition Schema (.csdef file): https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-file
    """

    id = "VMR545"
    name = "package-build-csdef-missing"
    references = refs("cloud-services-model", "csdef-schema")
    severity = Severity.HIGH

    def check(self, subject: ServiceModelSubject) -> Iterable[Finding]:
        package = package_of(subject)
        if package.definition is not None:
            return
        sd_parts = definition_parts(package)
        where = f"{sd_parts[0]}!ServiceDefinition.build.csdef" if sd_parts else "SDPackage_*.csdx"
        why = "; ".join(msg for _, msg in definition_problems(package)) or (
            "a service-definition part is there but the reader found no csdef in it"
            if sd_parts
            else "no SDPackage_<guid>.csdx part"
        )
        yield self.finding(
            subject,
            where,
            f"The package has no readable ServiceDefinition.build.csdef ({why}): rebuild it with cspack; "
            "service-definition rules could not check it.",
            evidence={"sdpackage_part": sd_parts[0] if sd_parts else "", "problem": why},
        )
