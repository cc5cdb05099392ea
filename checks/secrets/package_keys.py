"""Private keys and credential files inside a service package (.cspkg).

The package reader sniffs each readable entry (top-level parts, nested OPC members, files inside
unencrypted role payloads) and labels key material in ``PackageEntry.key_material``; key bytes
never leave the reader. These rules turn labels, and file names the sniffing did not confirm, into
findings that carry the entry name and the type only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from harness.docs_sources import refs
from harness.engine.artefact import CSPKG
from harness.engine.finding import Finding
from harness.engine.rule import NotApplicable, Rule
from harness.engine.severity import Severity
from harness.facts.servicemodel import Package, PackageEntry, ServiceModelSubject

# Families of key material. Each rule reports one family.
PRIVATE_KEY = "private-key"
PKCS12 = "pkcs12"
PUBLISH_SETTINGS = "publishsettings"
CAPI_BLOB = "capi-key-blob"
KEYSTORE = "java-keystore"

#: Reader labels (lower-cased) by family. A label not listed here is treated as a private key, so
#: that a new label from the reader is reported rather than dropped.
LABEL_FAMILIES: dict[str, str] = {
    "pkcs12": PKCS12,
    "pfx": PKCS12,
    "p12": PKCS12,
    "publishsettings": PUBLISH_SETTINGS,
    "pvk": CAPI_BLOB,
    "snk": CAPI_BLOB,
    "snk-private": CAPI_BLOB,
    "snk-private-key": CAPI_BLOB,
    "capi-private-key-blob": CAPI_BLOB,
    "jks": KEYSTORE,
    "jceks": KEYSTORE,
    "java-keystore": KEYSTORE,
    "keystore": KEYSTORE,
}

#: Extensions reported by name when the reader did not label the entry, with a human type.
NAME_FAMILIES: dict[str, tuple[str, str]] = {
    ".pfx": (PKCS12, "PKCS#12 (by name .pfx)"),
    ".p12": (PKCS12, "PKCS#12 (by name .p12)"),
    ".publishsettings": (PUBLISH_SETTINGS, "Azure publish settings (by name)"),
    ".pvk": (CAPI_BLOB, "PVK private key (by name)"),
    ".snk": (CAPI_BLOB, "strong-name key (by name)"),
    ".ppk": (PRIVATE_KEY, "PuTTY private key (by name)"),
    ".jks": (KEYSTORE, "Java keystore (by name)"),
    ".keystore": (KEYSTORE, "Java keystore (by name)"),
}


@dataclass(frozen=True)
class KeyEntry:
    entry: PackageEntry
    family: str
    type: str  # what the evidence says: the reader's label, or the by-name type
    detected_by: str  # "content" | "file name"


def classify(entry: PackageEntry) -> KeyEntry | None:
    """The key family of an entry, from the reader's label, else from its file name."""
    label = (entry.key_material or "").strip().lower()
    if label and "public" not in label:
        return KeyEntry(entry, LABEL_FAMILIES.get(label, PRIVATE_KEY), label, "content")
    if label:
        return None  # the reader saw a public-only blob (e.g. a delay-signing .snk)
    suffix = PurePosixPath(entry.name.rsplit("!", 1)[-1]).suffix.lower()
    if suffix == ".snk" and entry.head:
        return None  # sniffed and not a key pair: a public-key-only .snk for delay signing
    if suffix in NAME_FAMILIES:
        family, kind = NAME_FAMILIES[suffix]
        return KeyEntry(entry, family, kind, "file name")
    return None


def key_entries(package: Package, family: str) -> list[KeyEntry]:
    found = [k for k in map(classify, package.entries) if k is not None and k.family == family]
    if not found and package.payloads and all(p.encrypted for p in package.payloads):
        raise NotApplicable("every role payload is encrypted, so its files cannot be scanned (see VMR543)")
    return found


class _PackageKeyRule(Rule):
    applies_to = frozenset({CSPKG})
    requires = ("package",)
    waivable = False
    tags = ("secrets", "package")
    family: str
    what: str
    advice: str

    def check(self, subject: ServiceModelSubject) -> Iterable[Finding]:
        if subject.package is None:  # the engine checks ``requires`` first; this narrows the type
            raise NotApplicable("no package to check")
        for hit in key_entries(subject.package, self.family):
            entry = hit.entry
            yield self.finding(
                subject,
                entry.name,
                f"The package contains {self.what} '{entry.name}' ({hit.type}): {self.advice}",
                evidence={
                    "entry": entry.name,
                    "type": hit.type,
                    "detected_by": hit.detected_by,
                    "size": str(entry.size),
                },
            )


class PrivateKeyInPackage(_PackageKeyRule):
    """The package contains a private key file (PEM, PKCS#8/PKCS#1 DER, OpenSSH, PuTTY).

    ## What it does
    Reports entries of an unencrypted package (top-level parts, nested packages, files inside role
    payloads) that the reader identified as a private key by content (`-----BEGIN … PRIVATE
    KEY-----`, `PuTTY-User-Key-File-`, PKCS#8/PKCS#1 DER), and `.ppk` files by name.

    ## Why is this bad?
    Whoever gets the package (storage account, build drop, support engineer) gets the key: TLS
    impersonation, SSH access or code signing, depending on what it is for. Keys belong in the
    certificate store of the hosted service, not in the payload.

    ## Example
    `WebRole1_….cssx!approot/certs/server.key` starting with `-----BEGIN RSA PRIVATE KEY-----`.

    ## Use instead
    Remove the file from the project output, rotate the key, and deliver it as a certificate uploaded
    to the hosted service and declared in the csdef/cscfg `<Certificates>`.

    ## References
    - RFC 7468: Textual Encodings of PKIX, PKCS, and CMS Structures (PEM) — PEM: https://www.rfc-editor.org/rfc/rfc7468
    - RFC 5958: Asymmetric Key Packages (PKCS #8) — PKCS #8: https://www.rfc-editor.org/rfc/rfc5958
    - Certificates overview for Azure Cloud Services (classic) — upload certificates, do not package them: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-certs-create
    """

    id = "VMR305"
    name = "private-key-in-package"
    references = refs("rfc7468", "rfc5958", "cloud-services-certs")
    severity = Severity.CRITICAL
    family = PRIVATE_KEY
    what = "a private key"
    advice = "remove it, rotate the key, and deploy it as a hosted-service certificate instead."


class PfxInPackage(_PackageKeyRule):
    """The package contains a PKCS#12 (.pfx/.p12) file.

    ## What it does
    Reports entries the reader identified as PKCS#12 by content, and `.pfx`/`.p12` files by name,
    anywhere in an unencrypted package.

    ## Why is this bad?
    A PFX holds a certificate *with its private key*. Its password does not make it safe: PFX
    passwords are short, shared, often in the same repository, and can be brute-forced offline.

    ## Example
    `WebRole1_….cssx!approot/bin/ssl.pfx`

    ## Use instead
    Upload the PFX to the hosted service (`Add-AzureCertificate` / portal), reference its thumbprint in
    the cscfg, and remove it from the project output; rotate it if the package was shared.

    ## References
    - RFC 7292: PKCS #12: Personal Information Exchange Syntax v1.1: https://www.rfc-editor.org/rfc/rfc7292
    - Certificates overview for Azure Cloud Services (classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-certs-create
    """

    id = "VMR306"
    name = "pfx-in-package"
    references = refs("rfc7292", "cloud-services-certs")
    severity = Severity.CRITICAL
    family = PKCS12
    what = "a PKCS#12 file"
    advice = "remove it, rotate the certificate, and upload it to the hosted service instead."


class PublishSettingsInPackage(_PackageKeyRule):
    """The package contains an Azure `.publishsettings` file (a management certificate with its key).

    ## What it does
    Reports entries the reader identified as publish settings (`<PublishData><PublishProfile …
    ManagementCertificate="…">`) and `.publishsettings` files by name.

    ## Why is this bad?
    The file embeds a management-certificate PFX for the subscription: anyone holding it can create,
    change and delete every service in the subscription.

    ## Example
    `WebRole1_….cssx!approot/My Subscription-1-1-2013-credentials.publishsettings`

    ## Use instead
    Delete the management certificate from the subscription now (it is compromised), remove the file
    from the project, and keep publish settings out of source control and build outputs.

    ## References
    - Certificates overview for Azure Cloud Services (classic) — management certificates: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-certs-create
    - RFC 7292: PKCS #12: Personal Information Exchange Syntax v1.1: https://www.rfc-editor.org/rfc/rfc7292
    """

    id = "VMR307"
    name = "publishsettings-in-package"
    references = refs("cloud-services-certs", "rfc7292")
    severity = Severity.CRITICAL
    family = PUBLISH_SETTINGS
    what = "an Azure publish settings file"
    advice = "revoke its management certificate in the subscription and remove the file."


class CapiKeyBlobInPackage(_PackageKeyRule):
    """The package contains a Microsoft key blob: a PVK private key or a strong-name key pair (.snk).

    ## What it does
    Reports entries the reader identified as PVK (magic `0xB0B5F11E`) or as a private CAPI blob
    (`RSA2`, the shape of a `.snk` key pair), and `.pvk`/`.snk` files by name. A `.snk` found by name
    only (its content could not be read) may be a public-key-only file used for delay signing; check it.

    ## Why is this bad?
    A PVK is a code-signing or TLS private key. A strong-name key pair lets anyone sign assemblies
    that the runtime accepts as yours.

    ## Example
    `WorkerRole1_….cssx!approot/Company.snk`

    ## Use instead
    Sign at build time on the build agent; ship only signed assemblies. Rotate the key if the
    package left your control.

    ## References
    - Base Provider Key BLOBs (CryptoAPI): https://learn.microsoft.com/en-us/windows/win32/seccrypto/base-provider-key-blobs
    """

    id = "VMR308"
    name = "capi-key-blob-in-package"
    references = refs("capi-key-blobs")
    severity = Severity.HIGH
    family = CAPI_BLOB
    what = "a Microsoft private key blob"
    advice = "remove it from the project output and rotate the key."


class JavaKeystoreInPackage(_PackageKeyRule):
    """The package contains a Java keystore (JKS/JCEKS).

    ## What it does
    Reports entries the reader identified as a Java keystore (magic `FEEDFEED` / `CECECECE`) and
    `.jks`/`.keystore` files by name (Java roles built with the Azure toolkit ship `approot/…`).

    ## Why is this bad?
    Keystores usually hold private keys for TLS or client authentication; the keystore password is
    typically in a configuration file next to it.

    ## Example
    `WorkerRole1_….cssx!approot/server/conf/keystore.jks`

    ## Use instead
    Deploy the key as a hosted-service certificate and build the keystore on the instance at start-up
    from the certificate store; rotate the keys that shipped.

    ## References
    - keytool (Java SE 17 tool reference): https://docs.oracle.com/en/java/javase/17/docs/specs/man/keytool.html
    """

    id = "VMR309"
    name = "java-keystore-in-package"
    references = refs("keytool")
    severity = Severity.HIGH
    family = KEYSTORE
    what = "a Java keystore"
    advice = "remove it, rotate its keys, and deploy them as hosted-service certificates."
