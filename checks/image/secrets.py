"""Embedded secrets in an image (31x): key files, publish settings, certificates with keys, key containers."""

from __future__ import annotations

from collections.abc import Iterator

from harness.docs_sources import refs
from harness.engine.finding import Finding
from harness.engine.severity import Severity
from harness.facts.image import CertificateEntry, ImageFacts, ImageSubject

from ._base import BOTH, ImageRule, image_location

PRIVATE_KEY_LABELS = frozenset(
    {
        "pkcs12", "pem-private-key", "der-private-key", "pvk", "snk-private-key", "putty-private-key",
        "openssh-private-key", "jks", "jceks",
    }
)  # fmt: skip
PERSONAL_STORES = frozenset({"my"})


class _SecretRule(ImageRule):
    waivable = False
    profiles = BOTH
    tags = ("secrets",)


class ImagePrivateKeyFile(_SecretRule):
    """A file in the image holds a private key, a PFX or a keystore.

    ## What it does
    Sniffs the candidate files of the image (key-like extensions anywhere; small text and
    extensionless files in user profiles, `inetpub`, the volume root, `Windows\\Temp`,
    `Windows\\Panther` and `.ssh` folders) for PKCS#12/PFX, PEM and DER private keys, PVK, private
    SNK, PuTTY and OpenSSH keys, and Java keystores. Findings give the path, the type and a
    fingerprint of the file, never its content.

    ## Why is this bad?
    Every instance, every copy of the VHD and every storage account it is uploaded to carries the
    key. Sysprep does not touch files: a key in a file survives generalization intact. A
    password-protected PFX is still a secret (passwords are guessed offline).

    ## Example
    `C:\\inetpub\\wwwroot\\site.pfx` left after configuring IIS on the reference machine.

    ## Use instead
    Declare the certificate in the service model (`<Certificates>` in csdef and cscfg) so the
    platform installs it at provisioning, delete the file, and replace the exposed key.

    ## References
    - RFC 7468: Textual Encodings of PKIX, PKCS, and CMS Structures (PEM): https://www.rfc-editor.org/rfc/rfc7468
    - RFC 7292: PKCS #12: Personal Information Exchange Syntax v1.1: https://www.rfc-editor.org/rfc/rfc7292
    - Sysprep (Generalize) a Windows installation: https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/sysprep--generalize--a-windows-installation
    """

    id = "VMR310"
    name = "image-private-key-file"
    references = refs("rfc7468", "rfc7292", "sysprep-generalize")
    severity = Severity.CRITICAL
    parts = ("key material",)

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        for item in facts.key_material:
            if item.label in PRIVATE_KEY_LABELS:
                yield self.finding(
                    subject,
                    image_location(item.path),
                    f"{image_location(item.path)} holds key material ({item.label}): remove it and replace the key",
                    evidence={
                        "type": item.label,
                        "size": str(item.size),
                        "sha256 (first MiB, 16 hex)": item.fingerprint,
                    },
                )


class ImagePublishSettings(_SecretRule):
    """A .publishsettings file (a management certificate with its key) is in the image.

    ## What it does
    Reports files whose content is an Azure publish-settings document (`<PublishData>` with a
    `ManagementCertificate`), whatever their name.

    ## Why is this bad?
    The file embeds a management-certificate PFX: whoever reads the image controls the whole
    subscription (create, delete, read every storage key).

    ## Example
    `C:\\Users\\Administrator\\Downloads\\MySubscription-1-1-2012-credentials.publishsettings`.

    ## Use instead
    Delete the file, remove the management certificate from the subscription, and keep publish
    settings on build machines only.

    ## References
    - Certificates overview for Azure Cloud Services (classic) — management certificates: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-certs-create
    - RFC 7292: PKCS #12: Personal Information Exchange Syntax v1.1: https://www.rfc-editor.org/rfc/rfc7292
    """

    id = "VMR311"
    name = "image-publishsettings"
    references = refs("cloud-services-certs", "rfc7292")
    severity = Severity.CRITICAL
    parts = ("key material",)

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        for item in facts.key_material:
            if item.label == "publishsettings":
                yield self.finding(
                    subject,
                    image_location(item.path),
                    f"{image_location(item.path)} is a publish-settings file with a management certificate: delete it "
                    "and revoke that certificate",
                    evidence={"size": str(item.size), "sha256 (first MiB, 16 hex)": item.fingerprint},
                )


def _cert_evidence(cert: CertificateEntry) -> dict[str, str]:
    return {
        "store": f"{cert.location}\\{cert.store}",
        "thumbprint": cert.thumbprint,
        "subject": cert.subject or "-",
        "key container file": cert.key_file or "not found in the image",
    }


class _PersonalCertWithKey(_SecretRule):
    machine: bool = True

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        for cert in facts.certificates:
            is_user = cert.location.startswith("User:")
            if is_user == self.machine or cert.store.lower() not in PERSONAL_STORES or not cert.claims_private_key:
                continue
            where = f"{cert.location} {cert.store} store"
            if cert.key_file:
                message = (
                    f"certificate {cert.thumbprint} ({cert.subject or 'no subject'}) in the {where} has its "
                    f"private key in the image ({image_location(cert.key_file)}): declare it in the service model"
                )
                severity = self.severity
            else:
                message = (
                    f"certificate {cert.thumbprint} in the {where} claims a private key whose container "
                    f"({cert.container or 'unnamed'}) is not in the image: an orphaned key reference"
                )
                severity = Severity.LOW
            yield self.finding(subject, cert.source, message, evidence=_cert_evidence(cert), severity=severity)


class MachineCertificateWithPrivateKey(_PersonalCertWithKey):
    """A machine Personal (MY) certificate in the image comes with its private key.

    ## What it does
    Reads the LocalMachine, Group Policy, Enterprise and service certificate stores from the SOFTWARE
    hive and reports MY-store certificates whose blob has a KEY_PROV_INFO property, resolving the
    key container to its file in `ProgramData\\Microsoft\\Crypto`. A claim whose key file is missing
    is reported at low severity (an orphaned reference).

    ## Why is this bad?
    The VM role installs certificates itself from the service model; one baked into the image is
    shared by every instance and every copy of the VHD, and sysprep only makes its DPAPI-protected
    key unusable, not gone.

    ## Example
    An SSL certificate imported with its key into `LocalMachine\\My` on the reference machine.

    ## Use instead
    Delete the certificate and its key before sysprep (`certutil -delstore My <thumbprint>`), and
    declare it in csdef/cscfg so the agent installs it at provisioning.

    ## References
    - About the Windows Azure Integration Components (VM role, archived) — install no certificate before upload: https://learn.microsoft.com/en-us/previous-versions/azure/gg466232(v=msdn.10)
    - System Store Locations: https://learn.microsoft.com/en-us/windows/win32/seccrypto/system-store-locations
    - Key Storage and Retrieval (CNG): https://learn.microsoft.com/en-us/windows/win32/seccng/key-storage-and-retrieval
    """

    id = "VMR312"
    name = "machine-certificate-with-private-key"
    references = refs("vmrole-ic", "cert-store-locations", "cng-key-storage")
    severity = Severity.CRITICAL
    parts = ("certificates",)
    machine = True


class UserCertificateWithPrivateKey(_PersonalCertWithKey):
    """A user's Personal (MY) certificate in the image comes with its private key.

    ## What it does
    Reads each profile's NTUSER.DAT store and its file-based `SystemCertificates\\My` store and
    reports certificates claiming a private key, resolving the container to the profile's
    `AppData\\Roaming\\Microsoft\\Crypto` files.

    ## Why is this bad?
    The key (code-signing, client authentication, SSL) ships to every instance and every copy of
    the VHD; whoever gets the image can try the user's DPAPI secrets offline.

    ## Example
    A code-signing certificate in the Administrator's Personal store.

    ## Use instead
    Remove the certificate and its key from the profile (or delete the profile) before sysprep, and
    replace the key.

    ## References
    - System Store Locations: https://learn.microsoft.com/en-us/windows/win32/seccrypto/system-store-locations
    - Key Storage and Retrieval (CNG): https://learn.microsoft.com/en-us/windows/win32/seccng/key-storage-and-retrieval
    """

    id = "VMR313"
    name = "user-certificate-with-private-key"
    references = refs("cert-store-locations", "cng-key-storage")
    severity = Severity.HIGH
    parts = ("certificates",)
    machine = False


class UnexpectedKeyContainer(_SecretRule):
    """A key container file in the image is not on the allowlist of keys Windows ships.

    ## What it does
    Lists files in the machine, system-account and user key directories (`Crypto\\RSA\\MachineKeys`,
    `Crypto\\Keys`, `Crypto\\SystemKeys`, `S-1-5-18`, user `Crypto\\RSA\\<SID>` …) whose names are not
    on the allowlist (IIS configuration keys, .NET configuration key, …; extend it with
    `--vmr-machine-key-allowlist`).

    ## Why is this bad?
    Each such file is a private key someone created on the reference machine. Sysprep does not
    delete key files; whether the key is still usable after generalization depends on DPAPI, so
    treat it as leaked.

    ## Example
    `C:\\ProgramData\\Microsoft\\Crypto\\RSA\\MachineKeys\\3a5f…_<MachineGuid>` left by importing a PFX.

    ## Use instead
    Delete the certificate and the key (`certutil -delkey`), or rebuild the reference machine
    without it. If the key is a known system key, add its name prefix to an allowlist file.

    ## References
    - Key Storage and Retrieval (CNG) — key directories: https://learn.microsoft.com/en-us/windows/win32/seccng/key-storage-and-retrieval
    - Base Provider Key BLOBs (CryptoAPI): https://learn.microsoft.com/en-us/windows/win32/seccrypto/base-provider-key-blobs
    """

    id = "VMR314"
    name = "unexpected-key-container"
    references = refs("cng-key-storage", "capi-key-blobs")
    severity = Severity.HIGH
    parts = ("key containers",)

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        for key in facts.key_containers:
            if key.allowlisted or key.kind == "dpapi-masterkey":
                continue
            yield self.finding(
                subject,
                image_location(key.path),
                f"key container {image_location(key.path)} ({key.kind}) is not a known system key: delete it",
                evidence={"kind": key.kind, "name": key.name},
            )
