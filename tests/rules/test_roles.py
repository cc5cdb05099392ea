"""VMR520-VMR526: sizes, local storage, VM-role shape and role limits."""

from __future__ import annotations

import pytest
from harness.checks.servicemodel.roles import (
    InvalidLocalStorageSize,
    LocalStorageExceedsVmSize,
    MissingOsImage,
    TooManyRoles,
    UnknownVmSize,
    UnsupportedVmRoleElement,
    VmRoleCertificateNotInLocalMachine,
)

VM = "/ServiceDefinition/VirtualMachineRole[@name='Vm']"
GOOD = """
<VirtualMachineRole name="Vm" vmsize="Medium">
  <Certificates><Certificate name="SSL" storeLocation="LocalMachine" storeName="My" /></Certificates>
  <Endpoints><InputEndpoint name="Http" protocol="http" port="80" /></Endpoints>
  <LocalResources><LocalStorage name="Data" sizeInMB="348160" cleanOnRoleRecycle="false" /></LocalResources>
</VirtualMachineRole>
<WebRole name="Web" vmsize="Standard_D1_v2">
  <Sites><Site name="Web" /></Sites>
  <LocalResources><LocalStorage name="Scratch" /></LocalResources>
</WebRole>
<WorkerRole name="Worker" vmsize="A7">
  <Startup><Task commandLine="setup.cmd" /></Startup>
  <LocalResources><LocalStorage name="Big" sizeInMB="2087960" /></LocalResources>
</WorkerRole>
<WorkerRole name="Default" />
"""
GOOD_CONFIG = """
<Role name="Vm"><OsImage href="myimage.vhd" /><Instances count="2" /></Role>
<Role name="Web"><Instances count="2" /></Role>
<Role name="Worker"><Instances count="2" /></Role>
<Role name="Default"><Instances count="2" /></Role>
"""

CSDEF_RULES = [
    UnknownVmSize,
    LocalStorageExceedsVmSize,
    InvalidLocalStorageSize,
    UnsupportedVmRoleElement,
    VmRoleCertificateNotInLocalMachine,
    TooManyRoles,
]


def vm_role(inner: str = "", vmsize: str = "Small") -> str:
    return f'<VirtualMachineRole name="Vm" vmsize="{vmsize}">{inner}</VirtualMachineRole>'


@pytest.mark.parametrize("kind", ["csdef", "cspkg"])
@pytest.mark.parametrize("rule", CSDEF_RULES, ids=lambda r: r.id)
def test_good_definition_passes(sm, rule, kind):
    assert sm.run(rule, sm.subject_for(sm.csdef(GOOD, kind=kind))) == []


def test_good_pair_passes_os_image_check(sm):
    subject = sm.subject_for(sm.csdef(GOOD), sm.cscfg(GOOD_CONFIG), kind=sm.CSCFG)
    assert sm.run(MissingOsImage, subject) == []


# ---- VMR520 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(vm_role(vmsize="A6"), id="vm-role-A6"),
        pytest.param(vm_role(vmsize="Standard_D2_v2"), id="vm-role-Standard_D2_v2"),
        pytest.param('<WebRole name="Web" vmsize="Huge" />', id="web-role-Huge"),
        pytest.param('<WorkerRole name="W" vmsize="Standard_DS2_v2" />', id="worker-role-Standard_DS2_v2"),
    ],
)
def test_vmr520_unknown_size(sm, snapshot, body):
    snapshot.assert_match(sm.run(UnknownVmSize, sm.subject_for(sm.csdef(body))))


def test_vmr520_miscased_size_is_low(sm, snapshot):
    snapshot.assert_match(sm.run(UnknownVmSize, sm.subject_for(sm.csdef(vm_role(vmsize="small")))))


@pytest.mark.parametrize("size", ["ExtraSmall", "A0", "A4", "A11", "Standard_D14", "Standard_A2m_v2", "Standard_H16mr"])
def test_vmr520_web_worker_sizes(sm, size):
    assert sm.run(UnknownVmSize, sm.subject_for(sm.csdef(f'<WorkerRole name="W" vmsize="{size}" />'))) == []


# ---- VMR521 / VMR522 -------------------------------------------------------------------------------


def test_vmr521_vm_role_storage_over_budget(sm, snapshot):
    storage = '<LocalResources><LocalStorage name="A" sizeInMB="20400" /><LocalStorage name="B" /></LocalResources>'
    snapshot.assert_match(
        sm.run(LocalStorageExceedsVmSize, sm.subject_for(sm.csdef(vm_role(storage, "ExtraSmall"))))
    )  # 20,400 MB + 100 MB for the storage without a size


def test_vmr521_web_role_has_more_room_than_vm_role(sm, snapshot):
    storage = '<LocalResources><LocalStorage name="A" sizeInMB="200000" /></LocalResources>'
    web = f'<WebRole name="Web" vmsize="Small">{storage}</WebRole>'
    assert sm.run(LocalStorageExceedsVmSize, sm.subject_for(sm.csdef(web))) == []
    snapshot.assert_match(sm.run(LocalStorageExceedsVmSize, sm.subject_for(sm.csdef(vm_role(storage)))))


def test_vmr521_default_size_is_small(sm, snapshot):
    storage = '<LocalResources><LocalStorage name="A" sizeInMB="229401" /></LocalResources>'
    worker = f'<WorkerRole name="W">{storage}</WorkerRole>'
    snapshot.assert_match(sm.run(LocalStorageExceedsVmSize, sm.subject_for(sm.csdef(worker))))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("0", id="zero"),
        pytest.param("-5", id="negative"),
        pytest.param("1.5", id="fraction"),
        pytest.param("1GB", id="unit"),
        pytest.param("", id="empty"),
    ],
)
def test_vmr522_invalid_size(sm, snapshot, value):
    storage = f'<LocalResources><LocalStorage name="A" sizeInMB="{value}" /></LocalResources>'
    snapshot.assert_match(sm.run(InvalidLocalStorageSize, sm.subject_for(sm.csdef(vm_role(storage)))))


# ---- VMR523 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("element", ["Sites", "Startup", "Runtime", "Contents", "EntryPoint"])
def test_vmr523_vm_role_with_package_content(sm, snapshot, element):
    snapshot.assert_match(
        sm.run(UnsupportedVmRoleElement, sm.subject_for(sm.csdef(vm_role(f"<{element} />"), kind=sm.CSPKG)))
    )


# ---- VMR524 ----------------------------------------------------------------------------------------


def test_vmr524_os_image_missing(sm, snapshot):
    config = GOOD_CONFIG.replace('<OsImage href="myimage.vhd" />', "")
    snapshot.assert_match(sm.run(MissingOsImage, sm.subject_for(sm.csdef(GOOD), sm.cscfg(config), kind=sm.CSCFG)))


def test_vmr524_os_image_href_empty(sm, snapshot):
    config = GOOD_CONFIG.replace('href="myimage.vhd"', 'href=" "')
    snapshot.assert_match(sm.run(MissingOsImage, sm.subject_for(sm.csdef(GOOD), sm.cscfg(config), kind=sm.CSCFG)))


def test_vmr524_not_applicable_without_vm_role(sm):
    subject = sm.subject_for(
        sm.csdef('<WebRole name="Web" />'), sm.cscfg('<Role name="Web"><Instances count="2"/></Role>'), kind=sm.CSCFG
    )
    assert sm.skip_reason(MissingOsImage, subject) == "the service has no VM role"


# ---- VMR525 ----------------------------------------------------------------------------------------


def test_vmr525_current_user_certificate(sm, snapshot):
    certs = '<Certificates><Certificate name="Client" storeLocation="CurrentUser" storeName="My" /></Certificates>'
    snapshot.assert_match(sm.run(VmRoleCertificateNotInLocalMachine, sm.subject_for(sm.csdef(vm_role(certs)))))


def test_vmr525_web_role_may_use_current_user(sm):
    body = (
        '<WebRole name="Web"><Certificates><Certificate name="C" storeLocation="CurrentUser" storeName="My" />'
        "</Certificates></WebRole>"
    )
    assert sm.run(VmRoleCertificateNotInLocalMachine, sm.subject_for(sm.csdef(body))) == []


# ---- VMR526 ----------------------------------------------------------------------------------------


def test_vmr526_five_roles_max_with_vm_role(sm, snapshot):
    body = vm_role() + "".join(f'<WorkerRole name="W{i}" />' for i in range(5))
    snapshot.assert_match(sm.run(TooManyRoles, sm.subject_for(sm.csdef(body))))


def test_vmr526_twenty_five_roles_max(sm, snapshot):
    many = "".join(f'<WorkerRole name="W{i}" />' for i in range(25))
    assert sm.run(TooManyRoles, sm.subject_for(sm.csdef(many))) == []
    snapshot.assert_match(
        sm.run(TooManyRoles, sm.subject_for(sm.csdef(many + '<WorkerRole name="X" />', kind=sm.CSPKG)))
    )
