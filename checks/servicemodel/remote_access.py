"""Remote Desktop (RemoteAccess / RemoteForwarder plugins): configuration completeness and safety.

RDP settings live in the .cscfg (ConfigurationSettings of each role); the imports live in the .csdef. Rules
about the pair run on the .cscfg; the "exactly one forwarder" rule is about the csdef alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from harness.checks.secrets.servicemodel_secrets import (
    is_placeholder,
    looks_like_cms_envelope,
)
from harness.checks.servicemodel._model import configuration_of, definition_of

from harness.docs_sources import refs
from harness.engine.artefact import CSCFG, CSDEF, CSPKG
from harness.engine.finding import Finding
from harness.engine.rule import NotApplicable, Rule
from harness.engine.severity import Severity
from harness.facts.servicemodel import RoleConfig, ServiceModelSubject

REMOTE_ACCESS = "RemoteAccess"
REMOTE_FORWARDER = "RemoteForwarder"
_RA = "Microsoft.WindowsAzure.Plugins.RemoteAccess."
RA_ENABLED = _RA + "Enabled"
RA_USERNAME = _RA + "AccountUsername"
RA_PASSWORD = _RA + "AccountEncryptedPassword"
RA_EXPIRATION = _RA + "AccountExpiration"
RA_CERTIFICATE = _RA + "PasswordEncryption"
RF_ENABLED = "Microsoft.WindowsAzure.Plugins.RemoteForwarder.Enabled"
REMOTE_ACCESS_SETTINGS = (RA_ENABLED, RA_USERNAME, RA_PASSWORD, RA_EXPIRATION)


def _setting_location(role: RoleConfig, name: str) -> str:
    """Where a setting is, or would be when missing."""
    found = role.setting(name)
    return found.location if found is not None else f"{role.location}/ConfigurationSettings/Setting[@name='{name}']"


def _is_true(text: str | None) -> bool:
    return (text or "").strip().lower() == "true"


def _rdp_enabled(role: RoleConfig) -> bool:
    enabled = role.setting(RA_ENABLED)
    return enabled is not None and _is_true(enabled.value)


def _importing_pairs(subject: ServiceModelSubject, module: str) -> list[tuple[str, RoleConfig]]:
    """(csdef role name, cscfg role) for roles that import ``module`` and have a cscfg role.

    A csdef role without a cscfg role is another rule's finding (role sets must match)."""
    assert subject.definition is not None and subject.configuration is not None
    pairs = []
    for role in subject.definition.roles:
        if role.imports_module(module):
            config = subject.configuration.role(role.name)
            if config is not None:
                pairs.append((role.name, config))
    return pairs


class _CrossFileRule(Rule):
    applies_to = frozenset({CSCFG})
    requires = ("definition", "configuration")
    tags = ("service-model", "remote-desktop")


class RemoteAccessSettingsMissing(_CrossFileRule):
    """A role imports RemoteAccess or RemoteForwarder but the .cscfg lacks the plugin's settings.

    ## What it does
    For every csdef role with `<Import moduleName="RemoteAccess"/>`, checks that the matching
    cscfg role sets `Microsoft.WindowsAzure.Plugins.RemoteAccess.Enabled`, `.AccountUsername`,
    `.AccountEncryptedPassword` and `.AccountExpiration`; for a role importing `RemoteForwarder`,
    that it sets `Microsoft.WindowsAzure.Plugins.RemoteForwarder.Enabled`. One finding per missing
    setting.

    ## Why is this bad?
    An import adds these settings to the role's definition; a configuration that does not give
    each one a value is rejected at deployment ("setting is not defined in the service configuration").

    ## Example
    ```xml
    <!-- csdef -->  <Imports><Import moduleName="RemoteAccess" /></Imports>
    <!-- cscfg -->  <ConfigurationSettings>
                      <Setting name="Microsoft.WindowsAzure.Plugins.RemoteAccess.Enabled" value="true" />
                    </ConfigurationSettings>
    ```

    ## Use instead
    Configure Remote Desktop with the SDK tooling (it writes all four settings and the
    certificate), or remove the import when RDP is not wanted.

    ## References
    - Enable Remote Desktop for a role in Cloud Services (classic) using Visual Studio: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-role-enable-remote-desktop-visual-studio
    - Azure Cloud Services (classic) Config Role Schema — ConfigurationSettings: https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-role
    """

    id = "VMR530"
    name = "remote-access-settings-missing"
    references = refs("cloud-services-rdp-vs", "cscfg-role")
    severity = Severity.HIGH

    def check(self, subject: ServiceModelSubject) -> Iterable[Finding]:
        wanted = [(REMOTE_ACCESS, s) for s in REMOTE_ACCESS_SETTINGS] + [(REMOTE_FORWARDER, RF_ENABLED)]
        for module, setting in wanted:
            for role_name, config in _importing_pairs(subject, module):
                if config.setting(setting) is None:
                    yield self.finding(
                        subject,
                        _setting_location(config, setting),
                        f"Role '{role_name}' imports {module} but the configuration has no setting "
                        f"'{setting}': add it (or remove the import).",
                        evidence={"role": role_name, "module": module, "setting": setting},
                        line=config.line,
                    )


class RemoteAccessCertificateMissing(_CrossFileRule):
    """A role imports RemoteAccess but the .cscfg names no PasswordEncryption certificate.

    ## What it does
    For every csdef role importing `RemoteAccess`, checks that the matching cscfg role has
    `<Certificate name="Microsoft.WindowsAzure.Plugins.RemoteAccess.PasswordEncryption">` with a
    thumbprint.

    ## Why is this bad?
    The RDP password is encrypted to this certificate; the instance needs its private key to
    decrypt it. Without the reference the deployment is rejected (the import declares the
    certificate in the definition) and the account cannot be created.

    ## Example
    ```xml
    <Role name="Web">
      <Certificates />
    </Role>
    ```

    ## Use instead
    ```xml
    <Certificates>
      <Certificate name="Microsoft.WindowsAzure.Plugins.RemoteAccess.PasswordEncryption"
                   thumbprint="0123…ABCD" thumbprintAlgorithm="sha1" />
    </Certificates>
    ```
    and upload that certificate (with its private key) to the hosted service.

    ## References
    - Enable Remote Desktop Connection for a role in Azure Cloud Services (classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-role-enable-remote-desktop-new-portal
    - Certificates overview for Azure Cloud Services (classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-certs-create
    """

    id = "VMR531"
    name = "remote-access-certificate-missing"
    references = refs("cloud-services-rdp", "cloud-services-certs")
    severity = Severity.HIGH

    def check(self, subject: ServiceModelSubject) -> Iterable[Finding]:
        for role_name, config in _importing_pairs(subject, REMOTE_ACCESS):
            cert = next((c for c in config.certificates if c.name == RA_CERTIFICATE), None)
            if cert is not None and (cert.thumbprint or "").strip():
                continue
            where = cert.location if cert else f"{config.location}/Certificates/Certificate[@name='{RA_CERTIFICATE}']"
            problem = "has no thumbprint" if cert else "is missing"
            yield self.finding(
                subject,
                where,
                f"Role '{role_name}' imports RemoteAccess but its certificate '{RA_CERTIFICATE}' {problem}: "
                "reference the certificate the RDP password is encrypted to.",
                evidence={"role": role_name, "certificate": RA_CERTIFICATE, "problem": problem},
                line=cert.line if cert else config.line,
            )


class RemoteForwarderNotOnExactlyOneRole(Rule):
    """RemoteForwarder must be imported by exactly one role when Remote Desktop is used.

    ## What it does
    Counts the csdef roles with `<Import moduleName="RemoteForwarder"/>`. Reports more than one,
    and none while some role imports `RemoteAccess`.

    ## Why is this bad?
    The forwarder owns the service's single RDP input endpoint (public port 3389) and routes
    connections to the instances. Two forwarders collide on that endpoint and the package is
    rejected; with none, RDP is enabled on the instances but nothing is reachable from outside.

    ## Example
    ```xml
    <WebRole name="Web"><Imports><Import moduleName="RemoteAccess" /></Imports></WebRole>
    <WorkerRole name="Worker"><Imports><Import moduleName="RemoteAccess" /></Imports></WorkerRole>
    ```

    ## Use instead
    ```xml
    <WebRole name="Web"><Imports>
      <Import moduleName="RemoteAccess" /><Import moduleName="RemoteForwarder" />
    </Imports></WebRole>
    <WorkerRole name="Worker"><Imports><Import moduleName="RemoteAccess" /></Imports></WorkerRole>
    ```

    ## References
    - Enable Remote Desktop for a role in Cloud Services (classic) using Visual Studio — the RemoteAccess imports: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-role-enable-remote-desktop-visual-studio
    - Azure Cloud Services (classic) Definition Schema (.csdef file): https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-file
    """

    id = "VMR532"
    name = "remote-forwarder-not-on-exactly-one-role"
    severity = Severity.HIGH
    applies_to = frozenset({CSDEF, CSPKG})
    requires = ("definition",)
    tags = ("service-model", "remote-desktop")
    references = refs("cloud-services-rdp-vs", "csdef-schema")

    def check(self, subject: ServiceModelSubject) -> Iterable[Finding]:
        definition = definition_of(subject)
        forwarders = [r for r in definition.roles if r.imports_module(REMOTE_FORWARDER)]
        remote_access = [r for r in definition.roles if r.imports_module(REMOTE_ACCESS)]
        if len(forwarders) > 1:
            names = ", ".join(r.name for r in forwarders)
            for role in forwarders:
                imp = next(i for i in role.imports if i.module_name.lower() == REMOTE_FORWARDER.lower())
                yield self.finding(
                    subject,
                    imp.location,
                    f"RemoteForwarder is imported by {len(forwarders)} roles ({names}): keep it on one role only.",
                    evidence={"role": role.name, "forwarder_roles": names},
                    line=imp.line,
                )
        elif not forwarders and remote_access:
            first = remote_access[0]
            imp = next(i for i in first.imports if i.module_name.lower() == REMOTE_ACCESS.lower())
            yield self.finding(
                subject,
                imp.location,
                "Roles import RemoteAccess but no role imports RemoteForwarder, so RDP cannot be reached: "
                f"add <Import moduleName=\"RemoteForwarder\"/> to exactly one role (e.g. '{first.name}').",
                evidence={"remote_access_roles": ", ".join(r.name for r in remote_access)},
                severity=Severity.MEDIUM,
                line=imp.line,
            )


def parse_expiration(text: str | None) -> datetime | None:
    """An AccountExpiration value ("2014-02-02T23:59:59.0000000-08:00") as an aware datetime, else None.

    Values without an offset are taken as UTC."""
    if text is None or not text.strip():
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class RdpAccountExpired(Rule):
    """The Remote Desktop account has expired, expires within 30 days, or has no valid expiry date.

    ## What it does
    For every cscfg role with `Microsoft.WindowsAzure.Plugins.RemoteAccess.Enabled` = `true`,
    reads `…RemoteAccess.AccountExpiration` (an ISO 8601 date-time with offset). Reports a date in
    the past (medium), a date less than 30 days ahead (low), and a value that is not a date
    (medium). "Now" is the start of the run's date when the subject carries one (`--vmr-today`),
    else the rule's `clock()` (UTC wall clock), so reproducible runs and tests can pin it.

    ## Why is this bad?
    After the expiry the RDP account is disabled on every instance: Remote Desktop fails exactly
    when someone needs to debug a live problem. An unparsable date is rejected by the plugin.

    ## Example
    ```xml
    <Setting name="Microsoft.WindowsAzure.Plugins.RemoteAccess.AccountExpiration"
             value="2014-02-02T23:59:59.0000000-08:00" />
    ```

    ## Use instead
    Set a date in the future (and rotate the password with it), or set `RemoteAccess.Enabled` to
    `false` when RDP is not needed.

    ## References
    - Enable Remote Desktop Connection for a role in Azure Cloud Services (classic) — account expiration: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-role-enable-remote-desktop-new-portal
    """

    id = "VMR533"
    name = "rdp-account-expired"
    severity = Severity.MEDIUM
    applies_to = frozenset({CSCFG})
    requires = ("configuration",)
    tags = ("service-model", "remote-desktop")
    references = refs("cloud-services-rdp")

    @staticmethod
    def clock() -> datetime:
        """Where "now" comes from (UTC wall clock). The only impure input of the rule; tests and
        reproducible runs pin it: ``monkeypatch.setattr(RdpAccountExpired, "clock", staticmethod(lambda: t))``."""
        return datetime.now(UTC)

    #: An expiry closer than this is reported at low severity.
    warn_within: ClassVar[timedelta] = timedelta(days=30)

    def check(self, subject: ServiceModelSubject) -> Iterable[Finding]:
        today = getattr(subject, "today", None)
        now = datetime.combine(today, datetime.min.time(), UTC) if today is not None else self.clock()
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        enabled = [r for r in configuration_of(subject).roles if _rdp_enabled(r)]
        if not enabled:
            raise NotApplicable("Remote Desktop is not enabled on any role")
        for role in enabled:
            setting = role.setting(RA_EXPIRATION)
            if setting is None:
                continue  # VMR530 reports a missing setting
            when = parse_expiration(setting.value)
            evidence = {"role": role.name, "setting": RA_EXPIRATION, "expiration": (setting.value or "").strip()}
            if when is None:
                yield self.finding(
                    subject,
                    setting.location,
                    f"Role '{role.name}': RDP AccountExpiration is not an ISO 8601 date-time: set a valid "
                    "future date such as 2030-12-31T23:59:59.0000000+00:00.",
                    evidence=evidence,
                    line=setting.line,
                )
            elif when <= now:
                yield self.finding(
                    subject,
                    setting.location,
                    f"Role '{role.name}': the RDP account expired on {when.date().isoformat()}: set a future "
                    "expiry (and rotate the password) or disable RemoteAccess.",
                    evidence=evidence,
                    line=setting.line,
                )
            elif when - now < self.warn_within:
                days = (when - now).days
                yield self.finding(
                    subject,
                    setting.location,
                    f"Role '{role.name}': the RDP account expires in {days} day(s), on "
                    f"{when.date().isoformat()}: extend it before it locks you out.",
                    evidence={**evidence, "days_left": str(days)},
                    severity=Severity.LOW,
                    line=setting.line,
                )


class RdpPasswordNotEncrypted(Rule):
    """The RDP password setting is not a CMS-encrypted blob: a plaintext password or a placeholder.

    ## What it does
    Checks `Microsoft.WindowsAzure.Plugins.RemoteAccess.AccountEncryptedPassword` in every cscfg
    role. The SDK writes base64 of a DER CMS EnvelopedData (it starts `MII…` and carries OID
    1.2.840.113549.1.7.3). A value that is not, and is not a placeholder, is reported as a plaintext
    password (critical) whether or not RDP is enabled. An empty or placeholder value
    (`$todo:replaceWithYourOwn`, `PASSWORD HERE`) is reported (medium) only when
    `RemoteAccess.Enabled` is `true`. The value never appears in the finding: only its length.

    ## Why is this bad?
    A plaintext value is the administrator password of every instance, readable by anyone with the
    configuration; the plugin also fails to decrypt it, so RDP does not work either. A placeholder
    with RDP enabled fails the same way at role start.

    ## Example
    ```xml
    <Setting name="Microsoft.WindowsAzure.Plugins.RemoteAccess.AccountEncryptedPassword" value="P@ssw0rd!" />
    ```

    ## Use instead
    Encrypt the password to the PasswordEncryption certificate (Visual Studio "Configure Remote
    Desktop", `Set-AzureServiceRemoteDesktopExtension`, or `csencrypt encrypt-password`) and paste the
    resulting `MII…` blob; rotate a password that was committed in clear.

    ## References
    - Enable Remote Desktop Connection for a role in Azure Cloud Services (classic) — encrypted password: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-role-enable-remote-desktop-new-portal
    - Certificates overview for Azure Cloud Services (classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-certs-create
    """

    id = "VMR534"
    name = "rdp-password-not-encrypted"
    severity = Severity.CRITICAL
    applies_to = frozenset({CSCFG})
    requires = ("configuration",)
    waivable = False
    tags = ("service-model", "remote-desktop", "secrets")
    references = refs("cloud-services-rdp", "cloud-services-certs")

    def check(self, subject: ServiceModelSubject) -> Iterable[Finding]:
        roles = [r for r in configuration_of(subject).roles if r.setting(RA_PASSWORD) is not None]
        if not roles:
            raise NotApplicable("no role sets RemoteAccess.AccountEncryptedPassword")
        for role in roles:
            setting = role.setting(RA_PASSWORD)
            assert setting is not None
            value = setting.value or ""
            if looks_like_cms_envelope(value):
                continue
            evidence = {"role": role.name, "setting": RA_PASSWORD, "length": str(len(value.strip()))}
            if not is_placeholder(value):
                yield self.finding(
                    subject,
                    setting.location,
                    f"Role '{role.name}': AccountEncryptedPassword is not a CMS-encrypted blob, so it is a "
                    "plaintext password: rotate it and store only the value encrypted to the "
                    "PasswordEncryption certificate.",
                    evidence={**evidence, "kind": "plaintext password"},
                    line=setting.line,
                )
            elif _rdp_enabled(role):
                yield self.finding(
                    subject,
                    setting.location,
                    f"Role '{role.name}': RDP is enabled but AccountEncryptedPassword is empty or a "
                    "placeholder: encrypt a real password to the PasswordEncryption certificate, or set "
                    "RemoteAccess.Enabled to false.",
                    evidence={**evidence, "kind": "empty or placeholder"},
                    severity=Severity.MEDIUM,
                    line=setting.line,
                )
