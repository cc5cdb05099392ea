"""Role rules (VMR520-VMR529): sizes, local storage, VM-role shape and limits.

VM roles (2010-2013) ran on the 2011 platform: only the five classic sizes, a local-storage budget
of their own (the image brings the OS), no application payload in the package, and the image named
in the configuration. Web and worker roles also accept the later A5-A11 and ``Standard_*`` sizes.
"""

from __future__ import annotations

from collections.abc import Iterator

from harness.docs_sources import refs
from harness.engine.artefact import CSCFG, CSDEF, CSPKG
from harness.engine.finding import Finding
from harness.engine.rule import NotApplicable, Rule
from harness.engine.severity import Severity
from harness.facts.servicemodel import VM_ROLE, ServiceModelSubject

from ._model import (
    DEFAULT_SIZE,
    MAX_ROLES_PER_SERVICE,
    MAX_ROLES_WITH_VM_ROLE,
    VM_ROLE_SIZES,
    canonical_size,
    definition_of,
    definition_root,
    local_storage_capacity_mb,
)

CSDEF_KINDS = frozenset({CSDEF, CSPKG})
#: Children a VirtualMachineRole must not carry: the application lives in the image.
VM_ROLE_FORBIDDEN_CHILDREN = ("Sites", "Startup", "Runtime", "Contents", "EntryPoint")


class UnknownVmSize(Rule):
    """A role asks for a vmsize the platform does not offer for its kind.

    ## What it does
    Checks ``vmsize`` of every role. A ``VirtualMachineRole`` accepts ``ExtraSmall``, ``Small``,
    ``Medium``, ``Large`` and ``ExtraLarge``; web and worker roles also accept ``A0``-``A11`` and
    the later ``Standard_<series><n>[_v<n>]`` names (such as ``Standard_D1_v2``). An absent
    ``vmsize`` means ``Small``. A known name spelled with different letter case is reported at low
    severity.

    ## Why is this bad?
    The package is rejected when the size is unknown, and a VM role cannot run on the later
    sizes at all: they came after the VM role was retired.

    ## Example
    ```xml
    <VirtualMachineRole name="Vm" vmsize="Standard_D2_v2"> …
    ```

    ## Use instead
    ```xml
    <VirtualMachineRole name="Vm" vmsize="Medium"> …
    ```

    ## References
    - Size for Cloud Services (classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-sizes-specs
    - Azure Service Definition Schema (.csdef file), archived: https://learn.microsoft.com/en-us/previous-versions/azure/reference/ee758711(v=azure.100)
    """

    id = "VMR520"
    name = "unknown-vm-size"
    severity = Severity.HIGH
    applies_to = CSDEF_KINDS
    requires = ("definition",)
    tags = ("service-model", "roles")
    references = refs("cloud-services-sizes", "csdef-archive")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        for role in definition_of(subject).roles:
            raw = (role.vmsize or DEFAULT_SIZE).strip()
            size = canonical_size(role)
            location = f"{role.location}/@vmsize"
            evidence = {"role": role.name, "kind": role.kind, "vmsize": raw[:40]}
            if size is None:
                if role.kind == VM_ROLE:
                    advice = f"a VM role accepts only {', '.join(VM_ROLE_SIZES)}"
                else:
                    advice = "use ExtraSmall-ExtraLarge, A5-A11 or a Standard_* size name such as Standard_D1_v2"
                yield self.finding(
                    subject,
                    location,
                    f"{role.kind} {role.name!r} asks for vmsize {raw[:40]!r}, which is not a known size; {advice}.",
                    evidence=evidence,
                    line=role.line,
                )
            elif size != raw and not raw.lower().startswith("standard_") and size.lower() == raw.lower():
                yield self.finding(
                    subject,
                    location,
                    f"{role.kind} {role.name!r} spells its vmsize {raw!r}; write it {size!r} as the schema does.",
                    evidence=evidence,
                    severity=Severity.LOW,
                    line=role.line,
                )


class LocalStorageExceedsVmSize(Rule):
    """A role's local storage resources add up to more disk than its vmsize provides.

    ## What it does
    Adds up ``sizeInMB`` of the role's ``LocalResources/LocalStorage`` elements (100 MB when
    absent) and compares the total with the local-storage space of the role's size: for VM roles
    20/165/340/850/1890 GB (ExtraSmall-ExtraLarge), for web and worker roles 19,480 to 2,087,960 MB
    and the A5-A11 disks. Sizes without a published figure (``Standard_*``) are not checked.

    ## Why is this bad?
    The platform cannot allocate the local resources and rejects the deployment. VM roles have
    less room than web and worker roles of the same size because their own OS lives on the disk.

    ## Example
    ```xml
    <VirtualMachineRole name="Vm" vmsize="ExtraSmall">
      <LocalResources><LocalStorage name="Data" sizeInMB="40960" /></LocalResources>
    </VirtualMachineRole>
    ```

    ## Use instead
    ```xml
    <VirtualMachineRole name="Vm" vmsize="Medium">
      <LocalResources><LocalStorage name="Data" sizeInMB="40960" /></LocalResources>
    </VirtualMachineRole>
    ```

    ## References
    - Size for Cloud Services (classic) — temporary disk per size: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-sizes-specs
    - Configure local storage resources (Cloud Services classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-configure-local-storage-resources
    """

    id = "VMR521"
    name = "local-storage-exceeds-vm-size"
    severity = Severity.HIGH
    applies_to = CSDEF_KINDS
    requires = ("definition",)
    tags = ("service-model", "roles", "storage")
    references = refs("cloud-services-sizes", "cloud-services-local-storage")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        for role in definition_of(subject).roles:
            capacity = local_storage_capacity_mb(role)
            if capacity is None or not role.local_storage:
                continue
            sizes = [ls.size_mb_value for ls in role.local_storage]
            total = sum(s for s in sizes if s is not None and s >= 1)
            if total <= capacity:
                continue
            size = canonical_size(role)
            yield self.finding(
                subject,
                f"{role.location}/LocalResources",
                f"{role.kind} {role.name!r} asks for {total:,} MB of local storage but size {size} offers "
                f"{capacity:,} MB; shrink the LocalStorage resources or choose a larger vmsize.",
                evidence={
                    "role": role.name,
                    "vmsize": str(size),
                    "total_mb": str(total),
                    "capacity_mb": str(capacity),
                },
                line=role.line,
            )


class InvalidLocalStorageSize(Rule):
    """A LocalStorage sizeInMB is not a whole number of at least 1.

    ## What it does
    Checks the ``sizeInMB`` attribute of every ``LocalResources/LocalStorage`` element when it is
    present (absent means 100 MB).

    ## Why is this bad?
    The schema requires a positive whole number of megabytes; the package is rejected otherwise.

    ## Example
    ```xml
    <LocalStorage name="Scratch" sizeInMB="0" />
    <LocalStorage name="Cache" sizeInMB="1.5GB" />
    ```

    ## Use instead
    ```xml
    <LocalStorage name="Scratch" sizeInMB="1024" />
    ```

    ## References
    - Configure local storage resources (Cloud Services classic): https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-configure-local-storage-resources
    - Azure Cloud Services (classic) Definition WebRole Schema — LocalStorage sizeInMB: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-webrole
    """

    id = "VMR522"
    name = "invalid-local-storage-size"
    severity = Severity.HIGH
    applies_to = CSDEF_KINDS
    requires = ("definition",)
    tags = ("service-model", "roles", "storage")
    references = refs("cloud-services-local-storage", "csdef-webrole")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        for role in definition_of(subject).roles:
            for storage in role.local_storage:
                value = storage.size_mb_value
                if value is not None and value >= 1:
                    continue
                raw = (storage.size_mb or "").strip()[:20]
                yield self.finding(
                    subject,
                    storage.location,
                    f"LocalStorage {storage.name!r} of role {role.name!r} has sizeInMB {raw!r}; give a whole "
                    "number of megabytes, at least 1.",
                    evidence={"role": role.name, "local_storage": storage.name, "sizeInMB": raw},
                    line=storage.line,
                )


class UnsupportedVmRoleElement(Rule):
    """A VM role carries Sites, Startup, Runtime, Contents or EntryPoint.

    ## What it does
    Reports those child elements under a ``VirtualMachineRole``: they describe an application the
    platform deploys into a web or worker role.

    ## Why is this bad?
    A VM role's software lives in its uploaded image; the package carries no application. The
    schema does not allow these elements in a VM role, so the package is rejected, and any startup
    task or site the author expected would never run.

    ## Example
    ```xml
    <VirtualMachineRole name="Vm">
      <Startup><Task commandLine="install.cmd" /></Startup>
    </VirtualMachineRole>
    ```

    ## Use instead
    ```xml
    <VirtualMachineRole name="Vm" />
    <!-- install the software into the image before sysprep, or run it from the image's own startup -->
    ```

    ## References
    - Azure Service Definition Schema (.csdef file), archived: https://learn.microsoft.com/en-us/previous-versions/azure/reference/ee758711(v=azure.100)
    - Azure Cloud Services (classic) Definition WorkerRole Schema: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-workerrole
    - About the Windows Azure Integration Components (VM role, archived): https://learn.microsoft.com/en-us/previous-versions/azure/gg466232(v=msdn.10)
    """

    id = "VMR523"
    name = "unsupported-vm-role-element"
    severity = Severity.HIGH
    applies_to = CSDEF_KINDS
    requires = ("definition",)
    tags = ("service-model", "roles", "vm-role")
    references = refs("csdef-archive", "csdef-workerrole", "vmrole-ic")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        for role in definition_of(subject).roles:
            if role.kind != VM_ROLE:
                continue
            for child in VM_ROLE_FORBIDDEN_CHILDREN:
                if child not in role.children:
                    continue
                yield self.finding(
                    subject,
                    role.child_location(child),
                    f"VM role {role.name!r} carries <{child}>, which only web and worker roles support; "
                    "remove it and put the software and its startup into the VM image.",
                    evidence={"role": role.name, "element": child},
                    line=role.line,
                )


class MissingOsImage(Rule):
    """A VM role's configuration names no OS image.

    ## What it does
    For every ``VirtualMachineRole`` of the definition, checks that the configuration's ``<Role>``
    has an ``<OsImage href="…"/>`` with a non-empty ``href``.

    ## Why is this bad?
    The configuration of a service with a VM role names the VHD the instances are created from
    (the image name given to ``csupload Add-VMImage``). Without it there is nothing to boot. The
    element's exact spelling survives in no public page (the archived schema pages no longer
    describe the VM role), so this rule is medium severity.

    ## Example
    ```xml
    <Role name="Vm"><Instances count="2" /></Role>
    ```

    ## Use instead
    ```xml
    <Role name="Vm"><OsImage href="myimage.vhd" /><Instances count="2" /></Role>
    ```

    ## References
    - Azure Service Configuration Schema (.cscfg file), archived: https://learn.microsoft.com/en-us/previous-versions/azure/reference/ee758710(v=azure.100)
    - Azure Cloud Services (classic) Config Role Schema: https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-role
    """

    id = "VMR524"
    name = "missing-os-image"
    severity = Severity.MEDIUM
    applies_to = frozenset({CSCFG})
    requires = ("definition", "configuration")
    tags = ("service-model", "roles", "vm-role", "consistency")
    references = refs("cscfg-archive", "cscfg-role")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        definition, configuration = subject.definition, subject.configuration
        assert definition is not None and configuration is not None
        vm_roles = [r for r in definition.roles if r.kind == VM_ROLE]
        if not vm_roles:
            raise NotApplicable("the service has no VM role")
        for role in vm_roles:
            config = configuration.role(role.name)
            if config is None:
                continue  # VMR501
            if not config.has_os_image:
                yield self.finding(
                    subject,
                    f"{config.location}/OsImage",
                    f"VM role {role.name!r} has no <OsImage> in the configuration; add "
                    '<OsImage href="<image name>"/> naming the VHD uploaded with csupload.',
                    evidence={"role": role.name},
                    line=config.line,
                )
            elif not (config.os_image_href or "").strip():
                yield self.finding(
                    subject,
                    config.os_image_location or f"{config.location}/OsImage",
                    f"The <OsImage> of VM role {role.name!r} has an empty href; set it to the name of the "
                    "VHD uploaded with csupload.",
                    evidence={"role": role.name},
                    line=config.line,
                )


class VmRoleCertificateNotInLocalMachine(Rule):
    """A VM role installs a certificate somewhere other than the LocalMachine store.

    ## What it does
    Reports ``Certificates/Certificate`` elements of a ``VirtualMachineRole`` whose
    ``storeLocation`` is not ``LocalMachine``.

    ## Why is this bad?
    The VM role's agent installs certificates into the machine's stores only; a ``CurrentUser``
    certificate is never installed, so the endpoint or service that needs it fails at run time.

    ## Example
    ```xml
    <Certificate name="SSL" storeLocation="CurrentUser" storeName="My" />
    ```

    ## Use instead
    ```xml
    <Certificate name="SSL" storeLocation="LocalMachine" storeName="My" />
    ```

    ## References
    - About the Windows Azure Integration Components (VM role, archived) — LocalMachine store only: https://learn.microsoft.com/en-us/previous-versions/azure/gg466232(v=msdn.10)
    - System Store Locations: https://learn.microsoft.com/en-us/windows/win32/seccrypto/system-store-locations
    """

    id = "VMR525"
    name = "vm-role-certificate-not-in-local-machine"
    severity = Severity.HIGH
    applies_to = CSDEF_KINDS
    requires = ("definition",)
    tags = ("service-model", "roles", "vm-role", "certificates")
    references = refs("vmrole-ic", "cert-store-locations")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        for role in definition_of(subject).roles:
            if role.kind != VM_ROLE:
                continue
            for cert in role.certificates:
                location = (cert.store_location or "").strip()
                if not location or location.lower() == "localmachine":
                    continue
                yield self.finding(
                    subject,
                    cert.location,
                    f"VM role {role.name!r} installs certificate {cert.name!r} into store location "
                    f'{location[:30]!r}; a VM role supports only storeLocation="LocalMachine".',
                    evidence={"role": role.name, "certificate": cert.name, "storeLocation": location[:30]},
                    line=cert.line,
                )


class TooManyRoles(Rule):
    """The service defines more roles than the platform allows.

    ## What it does
    Counts the roles of the service definition: at most 25, or at most 5 when the service has a
    VM role (the 2011 platform that ran VM roles).

    ## Why is this bad?
    The platform rejects a service with more roles than its limit.

    ## Example
    ```xml
    <!-- a VirtualMachineRole and five web/worker roles in one ServiceDefinition -->
    ```

    ## Use instead
    ```xml
    <!-- merge roles that can share instances, or split the application into two cloud services -->
    ```

    ## References
    - Azure Cloud Services (classic) Definition Schema (.csdef file) — up to 25 roles: https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-file
    - Azure subscription and service limits: Azure Cloud Services limits: https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/azure-subscription-service-limits
    """

    id = "VMR526"
    name = "too-many-roles"
    severity = Severity.HIGH
    applies_to = CSDEF_KINDS
    requires = ("definition",)
    tags = ("service-model", "roles", "limits")
    references = refs("csdef-schema", "cloud-services-limits")

    def check(self, subject: ServiceModelSubject) -> Iterator[Finding]:
        definition = definition_of(subject)
        has_vm_role = any(r.kind == VM_ROLE for r in definition.roles)
        limit = MAX_ROLES_WITH_VM_ROLE if has_vm_role else MAX_ROLES_PER_SERVICE
        count = len(definition.roles)
        if count <= limit:
            return
        why = " for a service with a VM role" if has_vm_role else ""
        yield self.finding(
            subject,
            definition_root(definition),
            f"The service defines {count} roles, over the limit of {limit}{why}; merge roles or split the "
            "service into several cloud services.",
            evidence={"count": str(count), "limit": str(limit)},
        )
