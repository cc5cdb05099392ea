"""Service definition ↔ service configuration consistency (VMR501-VMR509).

Cross-file rules run on the .cscfg (``applies_to={CSCFG}``, ``requires`` both facts) so that each
problem is reported once, on the file a deployment would reject, with locations and lines in it.
Settings and certificates that an imported plugin module declares
(``Microsoft.WindowsAzure.Plugins.<Module>.*``) count as declared by a source csdef that imports the
module; a package's build csdef spells them out anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from harness.docs_sources import refs
from harness.engine.artefact import CSCFG
from harness.engine.finding import Finding
from harness.engine.rule import NotApplicable, Rule
from harness.engine.severity import Severity
from harness.facts.servicemodel import RoleConfig, RoleDef, ServiceModelSubject

from ._model import (
    THUMBPRINT_ALGORITHM,
    Missing,
    case_hint,
    config_role_location,
    name_mismatches,
    name_step,
    placeholder_kind,
    plugin_declared,
    thumbprint_problem,
)

CROSS_FILE = ("definition", "configuration")


def _paired_roles(subject: ServiceModelSubject) -> Iterator[tuple[RoleDef, RoleConfig]]:
    """csdef roles with their cscfg role (roles missing on either side are VMR501's business)."""
    assert subject.definition is not None and subject.configuration is not None
    for role in subject.definition.roles:
        config = subject.configuration.role(role.name)
        if config is not None:
            yield role, config


class UnmatchedRole(Rule):
    """A role is in the service definition but not in the configuration, or the reverse.

    ## What it does
    Pairs the roles of the .csdef with the ``<Role>`` elements of the .cscfg by name and reports
    every csdef role without a configuration and every configured role the csdef does not define.

    ## Why is this bad?
    A deployment is rejected when the configuration does not describe exactly the roles of the
    definition: a role without configuration has no instance count or settings, and a configured
    role that does not exist is an error. Names are case-sensitive.

    ## Example
    ```xml
    <!-- ServiceDefinition.csdef -->
    <WebRole name="Web" /> <WorkerRole name="Worker" />
    <!-- ServiceConfiguration.cscfg -->
    <Role name="Web"> … </Role> <Role name="Backend"> … </Role>
    ```

    ## Use instead
    ```xml
    <Role name="Web"> … </Role> <Role name="Worker"> … </Role>
    ```

    ## References
    - Azure Cloud Services (classic) Definition Schema (.csdef file): https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-file
    - Azure Cloud Services (classic) Config Schema (.cscfg file): https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-file
    - Azure Cloud Services (classic) Config Role Schema: https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-role
    """

    id = "VMR501"
    name = "unmatched-role"
    severity = Severity.HIGH
    applies_to = frozenset({CSCFG})
    requires = CROSS_FILE
    tags = ("service-model", "consistency")
    references = refs("csdef-schema", "cscfg-schema", "cscfg-role")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        definition, configuration = subject.definition, subject.configuration
        assert definition is not None and configuration is not None
        for mismatch in name_mismatches(definition.roles, configuration.roles):
            if isinstance(mismatch, Missing):
                role = mismatch.item
                hint = case_hint("the configuration has", mismatch.twin)
                yield self.finding(
                    subject,
                    config_role_location(role.name),
                    f"The service definition defines {role.kind} {role.name!r} but the configuration has no "
                    f"<Role name={role.name!r}>{hint}; add it with its instance count and settings.",
                    evidence={"role": role.name, "defined_at": role.location},
                )
            else:
                config = mismatch.item
                hint = case_hint("the definition has", mismatch.twin)
                yield self.finding(
                    subject,
                    config.location,
                    f"The configuration has <Role name={config.name!r}> but the service definition defines "
                    f"no such role{hint}; remove it or rename it to a defined role.",
                    evidence={"role": config.name},
                    line=config.line,
                )


class UnmatchedSetting(Rule):
    """A setting is declared in the definition but not set in the configuration, or the reverse.

    ## What it does
    For each role present in both files, compares the csdef ``ConfigurationSettings/Setting``
    names with the cscfg ``ConfigurationSettings/Setting`` names. Settings of an imported plugin
    module (``Microsoft.WindowsAzure.Plugins.<Module>.*``) count as declared when the role imports
    the module.

    ## Why is this bad?
    The platform rejects a configuration that leaves a declared setting unset or sets one the
    definition does not declare. Names must match exactly.

    ## Example
    ```xml
    <!-- csdef -->  <Setting name="StorageConnectionString" />
    <!-- cscfg -->  <Setting name="StorageConnection" value="…" />
    ```

    ## Use instead
    ```xml
    <!-- cscfg -->  <Setting name="StorageConnectionString" value="…" />
    ```

    ## References
    - Azure Cloud Services (classic) Config Role Schema — ConfigurationSettings: https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-role
    - Azure Cloud Services (classic) Definition WebRole Schema — ConfigurationSettings: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-webrole
    """

    id = "VMR502"
    name = "unmatched-setting"
    severity = Severity.HIGH
    applies_to = frozenset({CSCFG})
    requires = CROSS_FILE
    tags = ("service-model", "consistency")
    references = refs("cscfg-role", "csdef-webrole")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        for role, config in _paired_roles(subject):
            for mismatch in name_mismatches(role.settings, config.settings, partial(plugin_declared, role)):
                if isinstance(mismatch, Missing):
                    decl = mismatch.item
                    hint = case_hint("it sets", mismatch.twin)
                    yield self.finding(
                        subject,
                        f"{config.location}/ConfigurationSettings/{name_step('Setting', decl.name)}",
                        f"Role {role.name!r} declares setting {decl.name!r} in the service definition but the "
                        f"configuration does not set it{hint}; add <Setting name={decl.name!r} value=…/>.",
                        evidence={"role": role.name, "setting": decl.name, "declared_at": decl.location},
                        line=config.line,
                    )
                else:
                    value = mismatch.item
                    hint = case_hint("it declares", mismatch.twin)
                    yield self.finding(
                        subject,
                        value.location,
                        f"The configuration sets {value.name!r} for role {role.name!r} but the service "
                        f"definition does not declare it{hint}; declare it in the csdef or remove it here.",
                        evidence={"role": role.name, "setting": value.name},
                        line=value.line,
                    )


class UnmatchedCertificate(Rule):
    """A certificate is declared in the definition without a thumbprint in the configuration, or the reverse.

    ## What it does
    For each role present in both files, compares the csdef ``Certificates/Certificate`` names
    with the cscfg ``Certificates/Certificate`` names. Certificates of an imported plugin module
    (such as ``Microsoft.WindowsAzure.Plugins.RemoteAccess.PasswordEncryption``) count as
    declared when the role imports the module.

    ## Why is this bad?
    A declared certificate without a thumbprint cannot be installed, and a thumbprint for a
    certificate the definition does not declare is rejected: the deployment fails either way.

    ## Example
    ```xml
    <!-- csdef -->  <Certificate name="SSL" storeLocation="LocalMachine" storeName="My" />
    <!-- cscfg -->  <Certificates />
    ```

    ## Use instead
    ```xml
    <!-- cscfg -->  <Certificate name="SSL" thumbprint="<40 hex digits>" thumbprintAlgorithm="sha1" />
    ```

    ## References
    - Azure Cloud Services (classic) Config Role Schema — Certificates: https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-role
    - Azure Cloud Services (classic) Definition WebRole Schema — Certificates: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-webrole
    """

    id = "VMR503"
    name = "unmatched-certificate"
    severity = Severity.HIGH
    applies_to = frozenset({CSCFG})
    requires = CROSS_FILE
    tags = ("service-model", "consistency", "certificates")
    references = refs("cscfg-role", "csdef-webrole")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        for role, config in _paired_roles(subject):
            for mismatch in name_mismatches(role.certificates, config.certificates, partial(plugin_declared, role)):
                if isinstance(mismatch, Missing):
                    decl = mismatch.item
                    hint = case_hint("it has", mismatch.twin)
                    yield self.finding(
                        subject,
                        f"{config.location}/Certificates/{name_step('Certificate', decl.name)}",
                        f"Role {role.name!r} declares certificate {decl.name!r} but the configuration gives no "
                        f"thumbprint for it{hint}; add <Certificate name={decl.name!r} thumbprint=… "
                        f'thumbprintAlgorithm="sha1"/>.',
                        evidence={"role": role.name, "certificate": decl.name, "declared_at": decl.location},
                        line=config.line,
                    )
                else:
                    ref = mismatch.item
                    hint = case_hint("it declares", mismatch.twin)
                    yield self.finding(
                        subject,
                        ref.location,
                        f"The configuration gives a thumbprint for certificate {ref.name!r} of role {role.name!r} "
                        f"but the service definition does not declare it{hint}; declare it or remove it here.",
                        evidence={"role": role.name, "certificate": ref.name},
                        line=ref.line,
                    )


class MalformedThumbprint(Rule):
    """A certificate thumbprint is not 40 hex digits, or its algorithm is not sha1.

    ## What it does
    Checks every ``Certificates/Certificate`` of the configuration: ``thumbprint`` must be 40
    hexadecimal digits (a SHA-1 hash) and ``thumbprintAlgorithm`` must be ``sha1``.

    ## Why is this bad?
    The platform looks the certificate up by its SHA-1 thumbprint among the certificates uploaded to
    the hosted service. A thumbprint with spaces, a missing digit, or the invisible left-to-right
    mark the Windows certificate dialog copies along never matches, and the deployment fails.

    ## Example
    ```xml
    <Certificate name="SSL" thumbprint="‎a9 09 50 2d d8 2a e4 14 33 e6" thumbprintAlgorithm="sha256" />
    ```

    ## Use instead
    ```xml
    <Certificate name="SSL" thumbprint="A909502DD82AE41433E6F83886B00D4277A32A7B" thumbprintAlgorithm="sha1" />
    ```

    ## References
    - Azure Cloud Services (classic) Config Role Schema — Certificate thumbprint and thumbprintAlgorithm: https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-role
    - Certificates overview for Azure Cloud Services (classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-certs-create
    """

    id = "VMR504"
    name = "malformed-thumbprint"
    severity = Severity.HIGH
    applies_to = frozenset({CSCFG})
    requires = ("configuration",)
    tags = ("service-model", "certificates")
    references = refs("cscfg-role", "cloud-services-certs")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        assert subject.configuration is not None
        for role in subject.configuration.roles:
            for ref in role.certificates:
                problem = thumbprint_problem(ref.thumbprint)
                if problem is not None:
                    yield self.finding(
                        subject,
                        ref.location,
                        f"The thumbprint of certificate {ref.name!r} in role {role.name!r} {problem}; "
                        "write the certificate's SHA-1 thumbprint as 40 hex digits with nothing else.",
                        evidence={"role": role.name, "certificate": ref.name},
                        line=ref.line,
                    )
                algorithm = (ref.thumbprint_algorithm or "").strip()
                if algorithm.lower() != THUMBPRINT_ALGORITHM:
                    what = f"is {algorithm!r}" if algorithm else "is missing"
                    yield self.finding(
                        subject,
                        f"{ref.location}/@thumbprintAlgorithm",
                        f"The thumbprintAlgorithm of certificate {ref.name!r} in role {role.name!r} {what}; "
                        'set thumbprintAlgorithm="sha1" (the only algorithm the platform accepts).',
                        evidence={"role": role.name, "certificate": ref.name, "algorithm": algorithm},
                        line=ref.line,
                    )


class PlaceholderThumbprint(Rule):
    """A certificate thumbprint is a placeholder or belongs to a publicly known sample certificate.

    ## What it does
    Reports well-formed thumbprints that are obviously made up (one repeated digit, a counting
    sequence such as ``0123456789ABCDEF…``, a short pattern repeated) and thumbprints of sample
    certificates whose private key is public (the Windows Azure Toolkit for Eclipse sample
    certificate, whose password ships in the generated configuration) or that unrelated public
    projects share. Emulator configurations
    (``*.Local.cscfg``) are reported at low severity.

    ## Why is this bad?
    A placeholder matches no uploaded certificate, so the deployment fails late. A public sample
    certificate deploys fine, but anyone holding the sample key can decrypt what it protects, such
    as the Remote Desktop password, or impersonate the endpoint it secures.

    ## Example
    ```xml
    <Certificate name="SSL" thumbprint="0000000000000000000000000000000000000000" thumbprintAlgorithm="sha1" />
    ```

    ## Use instead
    ```xml
    <!-- the thumbprint of your own certificate, uploaded to the hosted service -->
    <Certificate name="SSL" thumbprint="A909502DD82AE41433E6F83886B00D4277A32A7B" thumbprintAlgorithm="sha1" />
    ```

    ## References
    - Certificates overview for Azure Cloud Services (classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-certs-create
    - Azure Cloud Services (classic) Config Role Schema: https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-role
    """

    id = "VMR505"
    name = "placeholder-thumbprint"
    severity = Severity.HIGH
    applies_to = frozenset({CSCFG})
    requires = ("configuration",)
    tags = ("service-model", "certificates", "secrets")
    references = refs("cloud-services-certs", "cscfg-role")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        configuration = subject.configuration
        assert configuration is not None
        severity = Severity.LOW if configuration.is_local else None
        for role in configuration.roles:
            for ref in role.certificates:
                kind = placeholder_kind(ref.thumbprint or "")
                if kind is None:
                    continue
                yield self.finding(
                    subject,
                    ref.location,
                    f"The thumbprint of certificate {ref.name!r} in role {role.name!r} is {kind}; create "
                    "your own certificate, upload it to the hosted service and use its thumbprint.",
                    evidence={"role": role.name, "certificate": ref.name, "thumbprint": ref.thumbprint or ""},
                    severity=severity,
                    line=ref.line,
                )


class ServiceNameMismatch(Rule):
    """The configuration's serviceName differs from the definition's name.

    ## What it does
    Compares ``ServiceConfiguration/@serviceName`` with ``ServiceDefinition/@name`` and reports a
    configuration without a ``serviceName``.

    ## Why is this bad?
    The configuration must name the service model it configures; tools and the platform reject a
    pair whose names differ, which usually means the wrong .cscfg was picked for the package.

    ## Example
    ```xml
    <ServiceDefinition name="MyService"> …
    <ServiceConfiguration serviceName="MyService-old"> …
    ```

    ## Use instead
    ```xml
    <ServiceConfiguration serviceName="MyService"> …
    ```

    ## References
    - Azure Cloud Services (classic) Config Schema (.cscfg file) — serviceName: https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-file
    - Azure Cloud Services (classic) Definition Schema (.csdef file): https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-file
    """

    id = "VMR506"
    name = "service-name-mismatch"
    severity = Severity.HIGH
    applies_to = frozenset({CSCFG})
    requires = CROSS_FILE
    tags = ("service-model", "consistency")
    references = refs("cscfg-schema", "csdef-schema")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        definition, configuration = subject.definition, subject.configuration
        assert definition is not None and configuration is not None
        if not definition.name:
            raise NotApplicable("the service definition has no name to compare with")
        service_name = (configuration.service_name or "").strip()
        location = "/ServiceConfiguration/@serviceName"
        if not service_name:
            yield self.finding(
                subject,
                location,
                f'The configuration has no serviceName; set serviceName="{definition.name}" to match the '
                "service definition.",
                evidence={"definition_name": definition.name},
            )
        elif service_name != definition.name:
            yield self.finding(
                subject,
                location,
                f"The configuration's serviceName {service_name!r} differs from the service definition's "
                f"name {definition.name!r}; use the configuration written for this definition or rename it.",
                evidence={"service_name": service_name, "definition_name": definition.name},
            )


class SingleInstanceRole(Rule):
    """A role runs a single instance, so it has no availability SLA.

    ## What it does
    Reports roles whose ``Instances/@count`` is 1 in a configuration meant for the cloud.
    Emulator configurations (``*.Local.cscfg``) are not checked.

    ## Why is this bad?
    The platform's compute SLA needs two or more instances per role: with one, every host update,
    reimage or hardware failure takes the role down, and VM-role instances are re-created from the
    image rather than live-migrated.

    ## Example
    ```xml
    <Role name="Web"><Instances count="1" /></Role>
    ```

    ## Use instead
    ```xml
    <Role name="Web"><Instances count="2" /></Role>
    ```

    ## References
    - How to update a Cloud Service (classic): upgrade domains and fault domains: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-update-azure-service
    - Azure Cloud Services (classic) Config Role Schema — Instances: https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-role
    """

    id = "VMR507"
    name = "single-instance-role"
    severity = Severity.MEDIUM
    applies_to = frozenset({CSCFG})
    requires = ("configuration",)
    tags = ("service-model", "availability")
    references = refs("cloud-services-update", "cscfg-role")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        configuration = subject.configuration
        assert configuration is not None
        if configuration.is_local:
            raise NotApplicable("emulator configuration: instance counts do not matter there")
        for role in configuration.roles:
            if role.instance_count == 1:
                yield self.finding(
                    subject,
                    role.instances_location or f"{role.location}/Instances",
                    f"Role {role.name!r} runs a single instance, which has no availability SLA; set "
                    '<Instances count="2"/> or more.',
                    evidence={"role": role.name, "count": "1"},
                    line=role.line,
                )


class InvalidInstanceCount(Rule):
    """A role's instance count is missing, not a whole number, or less than 1.

    ## What it does
    Checks ``Instances/@count`` of every configured role.

    ## Why is this bad?
    Every role needs an ``<Instances count="N"/>`` with N ≥ 1; without it the configuration is
    rejected and the role cannot be deployed.

    ## Example
    ```xml
    <Role name="Web"><Instances count="0" /></Role>
    ```

    ## Use instead
    ```xml
    <Role name="Web"><Instances count="2" /></Role>
    ```

    ## References
    - Azure Cloud Services (classic) Config Role Schema — Instances: https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-role
    """

    id = "VMR508"
    name = "invalid-instance-count"
    severity = Severity.HIGH
    applies_to = frozenset({CSCFG})
    requires = ("configuration",)
    tags = ("service-model",)
    references = refs("cscfg-role")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        configuration = subject.configuration
        assert configuration is not None
        for role in configuration.roles:
            count = role.instance_count
            if count is not None and count >= 1:
                continue
            if role.instances is None:
                problem = "has no <Instances count=…/>"
            elif count is None:
                problem = f"has instance count {role.instances.strip()!r}, which is not a whole number"
            else:
                problem = f"has instance count {count}"
            yield self.finding(
                subject,
                role.instances_location or f"{role.location}/Instances",
                f'Role {role.name!r} {problem}; set <Instances count="2"/> (at least 1, 2 for the SLA).',
                evidence={"role": role.name, "count": (role.instances or "").strip()[:20]},
                line=role.line,
            )
