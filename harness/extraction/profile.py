"""Which rule profile an image is judged by, and which role of the service model it belongs to.

``vmrole``: the 2010-2013 VM role (Windows Server 2008 R2 x64, integration components, csupload).
``azure``: today's generalized-image upload (fixed VHD, 1 MiB aligned, Azure VM agent), as "Prepare a Windows
VHD or VHDX to upload to Azure" describes it.

With ``--vmr-image-profile auto`` (the default) the choice is made from evidence, in this order, and
the reason is reported with every image rule so nobody has to guess which rules ran:

1. the paired service model declares a VirtualMachineRole → vmrole;
2. the image carries the Azure VM agent (signature match) → azure;
3. the image carries the VM-role integration components → vmrole;
4. the OS is Windows Server 2008 R2 (6.1) → vmrole; a newer OS → azure;
5. nothing to go on → vmrole (the project's seed use case).
"""

from __future__ import annotations

from harness.facts.image import AZURE, VMROLE, ImageFacts
from harness.facts.servicemodel import VM_ROLE, RoleDef, ServiceDefinition


def _matched(facts: ImageFacts, profile: str) -> bool:
    return any(m.profile == profile and m.strength == "strong" for m in facts.signature_matches)


def choose_profile(requested: str, facts: ImageFacts, definition: ServiceDefinition | None) -> tuple[str, str]:
    """(profile, reason) for ``requested`` in ("auto", "vmrole", "azure")."""
    if requested in (VMROLE, AZURE):
        return requested, f"--vmr-image-profile {requested}"
    other = "pass --vmr-image-profile {} to apply the other rules"
    if definition is not None and any(r.kind == VM_ROLE for r in definition.roles):
        return VMROLE, "auto: the service model declares a VirtualMachineRole; " + other.format(AZURE)
    if _matched(facts, AZURE):
        return AZURE, "auto: the image carries the Azure VM agent; " + other.format(VMROLE)
    if _matched(facts, VMROLE):
        return VMROLE, "auto: the image carries the VM-role integration components; " + other.format(AZURE)
    version = facts.os.current_version if facts.os else None
    if version:
        try:
            newer = tuple(int(x) for x in version.split(".")[:2]) > (6, 1)
        except ValueError:
            newer = False
        if newer or (facts.os and (facts.os.build_number or 0) > 7601):
            return AZURE, f"auto: the OS ({version}) is newer than Windows Server 2008 R2; " + other.format(VMROLE)
        return VMROLE, f"auto: the OS version is {version} (Windows Server 2008 R2 era); " + other.format(AZURE)
    return VMROLE, "auto: no service model, agent or OS version to go on; " + other.format(AZURE)


def choose_role(definition: ServiceDefinition, requested: str | None) -> tuple[RoleDef | None, str]:
    """The role an image is deployed as: --vmr-role, else the only VirtualMachineRole, else the only role."""
    if requested:
        role = definition.role(requested)
        if role is None:
            names = ", ".join(r.name for r in definition.roles) or "none"
            return None, f"--vmr-role {requested!r} is not a role of the service model (roles: {names})"
        return role, ""
    vm_roles = [r for r in definition.roles if r.kind == VM_ROLE]
    if len(vm_roles) == 1:
        return vm_roles[0], ""
    if not vm_roles and len(definition.roles) == 1:
        return definition.roles[0], ""
    names = ", ".join(r.name for r in (vm_roles or definition.roles)) or "none"
    return None, f"the service model has several candidate roles ({names}): name one with --vmr-role"
