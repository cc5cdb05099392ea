"""ServiceConfiguration (.cscfg) values that only make sense locally, or that pin or weaken the deployment."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from harness.checks.secrets.servicemodel_secrets import connection_string_fields, is_placeholder
from harness.checks.servicemodel._model import configuration_of

from harness.docs_sources import refs
from harness.engine.artefact import CSCFG
from harness.engine.finding import Finding
from harness.engine.rule import NotApplicable, Rule
from harness.engine.severity import Severity
from harness.facts.servicemodel import RoleConfig, ServiceConfiguration, ServiceModelSubject, SettingValue

DIAGNOSTICS_CONNECTION = "Microsoft.WindowsAzure.Plugins.Diagnostics.ConnectionString"
_REMOTE_ACCESS_PREFIX = "Microsoft.WindowsAzure.Plugins.RemoteAccess."
_STORAGE_ENDPOINT_FIELDS = frozenset({"blobendpoint", "queueendpoint", "tableendpoint", "fileendpoint"})
_PINNED_OS = re.compile(r"^WA-GUEST-OS-", re.IGNORECASE)


def _settings(configuration: ServiceConfiguration) -> Iterator[tuple[RoleConfig, SettingValue]]:
    for role in configuration.roles:
        for setting in role.settings:
            yield role, setting


def uses_development_storage(value: str | None) -> bool:
    return any(k == "usedevelopmentstorage" and v.lower() == "true" for k, v in connection_string_fields(value or ""))


class _ConfigurationRule(Rule):
    applies_to = frozenset({CSCFG})
    requires = ("configuration",)
    tags = ("service-model", "configuration")


class DevelopmentStorageInCloudConfiguration(_ConfigurationRule):
    """A configuration meant for the cloud points a setting at the local storage emulator.

    ## What it does
    Reports every setting whose value is a storage connection string with
    `UseDevelopmentStorage=true` in a `.cscfg` that is not a local one (`ServiceConfiguration.Local.cscfg`
    and emulator configurations are exempt). The diagnostics connection string is called out
    because it breaks role start-up. A `.Cloud.cscfg` (or any other explicitly non-local name) is
    reported at high severity; a plain `ServiceConfiguration.cscfg`, which older SDK projects used
    for both the emulator and the cloud, at medium.

    ## Why is this bad?
    There is no storage emulator in a data centre: the role cannot reach its storage. With the
    Diagnostics plugin the diagnostics agent fails to start and the instance cycles between Busy and
    Recycling; application settings fail on first use.

    ## Example
    ```xml
    <!-- ServiceConfiguration.Cloud.cscfg -->
    <Setting name="Microsoft.WindowsAzure.Plugins.Diagnostics.ConnectionString" value="UseDevelopmentStorage=true" />
    ```

    ## Use instead
    A real storage connection string in the cloud configuration (injected at deployment time; see
    VMR301), and `UseDevelopmentStorage=true` only in `ServiceConfiguration.Local.cscfg`.

    ## References
    - Use the Azure Storage Emulator for development and testing: https://learn.microsoft.com/en-us/azure/storage/common/storage-use-emulator
    - Configure Azure Storage connection strings: https://learn.microsoft.com/en-us/azure/storage/common/storage-configure-connection-string
    """

    id = "VMR535"
    name = "development-storage-in-cloud-configuration"
    references = refs("storage-emulator", "storage-connection-strings")
    severity = Severity.HIGH

    def check(self, subject: ServiceModelSubject) -> Iterable[Finding]:
        configuration = configuration_of(subject)
        if configuration.is_local:
            raise NotApplicable("a local (emulator) configuration may use development storage")
        plain = configuration.artefact.path.name.lower() == "serviceconfiguration.cscfg"
        for role, setting in _settings(configuration):
            if not uses_development_storage(setting.value):
                continue
            diagnostics = setting.name == DIAGNOSTICS_CONNECTION
            why = (
                "the diagnostics agent cannot start and the instance recycles"
                if diagnostics
                else "there is no storage emulator in the cloud"
            )
            yield self.finding(
                subject,
                setting.location,
                f"Setting '{setting.name}' of role '{role.name}' uses UseDevelopmentStorage=true in a "
                f"non-local configuration ({why}): use a real storage account, keep development storage "
                "to ServiceConfiguration.Local.cscfg.",
                evidence={"role": role.name, "setting": setting.name, "diagnostics": str(diagnostics).lower()},
                severity=Severity.MEDIUM if plain else None,
                line=setting.line,
            )


class GuestOsVersionPinned(_ConfigurationRule):
    """The configuration pins a specific Guest OS release instead of `osVersion="*"`.

    ## What it does
    Reports `osVersion="WA-GUEST-OS-…"` (any value other than `*`) on `<ServiceConfiguration>`.
    Information only. Not applicable when every role brings its own image (`<OsImage>`, VM roles):
    their OS does not come from the Guest OS family.

    ## Why is this bad?
    A pinned Guest OS stops receiving the monthly security updates once the release is retired,
    and the platform eventually forces an upgrade anyway, at a time you did not choose.

    ## Example
    ```xml
    <ServiceConfiguration serviceName="Svc" osFamily="2" osVersion="WA-GUEST-OS-2.12_201208-02">
    ```

    ## Use instead
    ```xml
    <ServiceConfiguration serviceName="Svc" osFamily="2" osVersion="*">
    ```
    and pin only while you validate a release, with a plan to unpin.

    ## References
    - Azure Guest OS releases and SDK compatibility matrix: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-guestos-update-matrix
    - Supported Guest OS versions and retirement policy: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-guestos-retirement-policy
    - Azure Cloud Services (classic) Config Schema (.cscfg file) — osVersion: https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-file
    """

    id = "VMR536"
    name = "guest-os-version-pinned"
    references = refs("guest-os-matrix", "guest-os-retirement", "cscfg-schema")
    severity = Severity.INFO

    def check(self, subject: ServiceModelSubject) -> Iterable[Finding]:
        configuration = configuration_of(subject)
        if configuration.roles and all(r.has_os_image for r in configuration.roles):
            raise NotApplicable("every role brings its own OS image; osVersion does not apply")
        version = (configuration.os_version or "").strip()
        if not version or version == "*":
            return
        kind = "a specific Guest OS release" if _PINNED_OS.match(version) else "a non-standard value"
        yield self.finding(
            subject,
            "/ServiceConfiguration/@osVersion",
            f"osVersion is pinned to {kind} ('{version}'): use osVersion=\"*\" to receive Guest OS updates "
            "automatically.",
            evidence={"osVersion": version, "osFamily": configuration.os_family or ""},
        )


class StorageConnectionOverHttp(_ConfigurationRule):
    """A storage connection string uses plain HTTP.

    ## What it does
    Reports settings whose value is a storage connection string with
    `DefaultEndpointsProtocol=http`, `Protocol=http`, or an explicit `BlobEndpoint`/`QueueEndpoint`/
    `TableEndpoint`/`FileEndpoint` starting with `http://`. Development storage strings are ignored.

    ## Why is this bad?
    Blobs, queue messages and table entities (including diagnostics logs) travel unencrypted
    between the role and storage, and SAS tokens in the requests can be captured and replayed.
    Storage accounts with "secure transfer required" reject the requests outright.

    ## Example
    ```xml
    <Setting name="DataConnectionString" value="DefaultEndpointsProtocol=http;AccountName=contoso;AccountKey=…" />
    ```

    ## Use instead
    ```xml
    <Setting name="DataConnectionString" value="DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey=…" />
    ```

    ## References
    - Require secure transfer to ensure secure connections (Azure Storage): https://learn.microsoft.com/en-us/azure/storage/common/storage-require-secure-transfer
    - Configure Azure Storage connection strings: https://learn.microsoft.com/en-us/azure/storage/common/storage-configure-connection-string
    """

    id = "VMR537"
    name = "storage-connection-over-http"
    references = refs("storage-secure-transfer", "storage-connection-strings")
    severity = Severity.MEDIUM

    def check(self, subject: ServiceModelSubject) -> Iterable[Finding]:
        for role, setting in _settings(configuration_of(subject)):
            fields = connection_string_fields(setting.value or "")
            names = {k for k, _ in fields}
            if "accountname" not in names and not names & _STORAGE_ENDPOINT_FIELDS:
                continue
            insecure = sorted(
                k
                for k, v in fields
                if (k in ("defaultendpointsprotocol", "protocol") and v.lower() == "http")
                or (k in _STORAGE_ENDPOINT_FIELDS and v.lower().startswith("http://"))
            )
            if insecure:
                yield self.finding(
                    subject,
                    setting.location,
                    f"Setting '{setting.name}' of role '{role.name}' connects to storage over plain HTTP "
                    f"({', '.join(insecure)}): use https.",
                    evidence={"role": role.name, "setting": setting.name, "fields": ", ".join(insecure)},
                    line=setting.line,
                )


class PlaceholderSettingValue(_ConfigurationRule):
    """A non-local configuration still holds an example value (`YOURSTORAGEACCOUNT`, `<YourAPIToken>`).

    ## What it does
    Reports settings in a non-local `.cscfg` whose value, or a field of whose connection string, is
    a template placeholder: `$todo:…`, `[your namespace]`, `<YourAPIToken>`, `YOURSTORAGEACCOUNTKEY`,
    `#{Token}`, `__Token__` and similar. Empty values are not reported (many settings are optional),
    nor are the RemoteAccess settings (VMR534 judges the RDP password).

    ## Why is this bad?
    The deployment succeeds and the role fails later, when it first uses the setting: a storage or
    Service Bus client with a fake account, an API call with a fake token. Left-over tokens also
    show that a deployment-time substitution step did not run.

    ## Example
    ```xml
    <Setting name="DataConnectionString"
             value="DefaultEndpointsProtocol=https;AccountName=YOURSTORAGEACCOUNT;AccountKey=YOURSTORAGEACCOUNTKEY" />
    ```

    ## Use instead
    Substitute real values at deployment time (and check the substitution ran), or keep the example
    in a `.Local.cscfg` that is never deployed.

    ## References
    - Azure Cloud Services (classic) Config Role Schema — ConfigurationSettings: https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-role
    """

    id = "VMR538"
    name = "placeholder-setting-value"
    references = refs("cscfg-role")
    severity = Severity.MEDIUM

    def check(self, subject: ServiceModelSubject) -> Iterable[Finding]:
        configuration = configuration_of(subject)
        if configuration.is_local:
            raise NotApplicable("a local configuration may keep example values")
        for role, setting in _settings(configuration):
            value = (setting.value or "").strip()
            if not value or setting.name.startswith(_REMOTE_ACCESS_PREFIX):
                continue
            fields = connection_string_fields(value)
            parts = [v for _, v in fields if v] if fields else [value]
            if not any(is_placeholder(p) for p in parts):
                continue
            yield self.finding(
                subject,
                setting.location,
                f"Setting '{setting.name}' of role '{role.name}' holds a placeholder value in a non-local "
                "configuration: substitute the real value before deploying.",
                evidence={"role": role.name, "setting": setting.name, "length": str(len(value))},
                line=setting.line,
            )
