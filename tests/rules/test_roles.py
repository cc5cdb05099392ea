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

from harness.engine.severity import Severity

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
    ("body", "location", "text"),
    [
        (vm_role(vmsize="A6"), f"{VM}/@vmsize", "a VM role accepts only ExtraSmall, Small"),
        (vm_role(vmsize="Standard_D2_v2"), f"{VM}/@vmsize", "'Standard_D2_v2'"),
        ('<WebRole name="Web" vmsize="Huge" />', "/ServiceDefinition/WebRole[@name='Web']/@vmsize", "'Huge'"),
        (
            '<WorkerRole name="W" vmsize="Standard_DS2_v2" />',
            "/ServiceDefinition/WorkerRole[@name='W']/@vmsize",
            "Standard_* size name",
        ),
    ],
)
def test_vmr520_unknown_size(sm, body, location, text):
    finding = sm.only(sm.run(UnknownVmSize, sm.subject_for(sm.csdef(body))))
    assert finding.rule_id == "VMR520"
    assert finding.location == location
    assert text in finding.message
    assert finding.severity is Severity.HIGH


def test_vmr520_miscased_size_is_low(sm):
    finding = sm.only(sm.run(UnknownVmSize, sm.subject_for(sm.csdef(vm_role(vmsize="small")))))
    assert finding.severity is Severity.LOW and "write it 'Small'" in finding.message


@pytest.mark.parametrize("size", ["ExtraSmall", "A0", "A4", "A11", "Standard_D14", "Standard_A2m_v2", "Standard_H16mr"])
def test_vmr520_web_worker_sizes(sm, size):
    assert sm.run(UnknownVmSize, sm.subject_for(sm.csdef(f'<WorkerRole name="W" vmsize="{size}" />'))) == []


# ---- VMR521 / VMR522 -------------------------------------------------------------------------------


def test_vmr521_vm_role_storage_over_budget(sm):
    storage = '<LocalResources><LocalStorage name="A" sizeInMB="20400" /><LocalStorage name="B" /></LocalResources>'
    finding = sm.only(sm.run(LocalStorageExceedsVmSize, sm.subject_for(sm.csdef(vm_role(storage, "ExtraSmall")))))
    assert finding.location == f"{VM}/LocalResources"
    assert "20,500 MB" in finding.message and "20,480 MB" in finding.message
    assert finding.evidence["vmsize"] == "ExtraSmall"


def test_vmr521_web_role_has_more_room_than_vm_role(sm):
    storage = '<LocalResources><LocalStorage name="A" sizeInMB="200000" /></LocalResources>'
    web = f'<WebRole name="Web" vmsize="Small">{storage}</WebRole>'
    assert sm.run(LocalStorageExceedsVmSize, sm.subject_for(sm.csdef(web))) == []
    finding = sm.only(sm.run(LocalStorageExceedsVmSize, sm.subject_for(sm.csdef(vm_role(storage)))))
    assert "168,960 MB" in finding.message


def test_vmr521_default_size_is_small(sm):
    storage = '<LocalResources><LocalStorage name="A" sizeInMB="229401" /></LocalResources>'
    finding = sm.only(
        sm.run(LocalStorageExceedsVmSize, sm.subject_for(sm.csdef(f'<WorkerRole name="W">{storage}</WorkerRole>')))
    )
    assert "size Small" in finding.message


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "1GB", ""])
def test_vmr522_invalid_size(sm, value):
    storage = f'<LocalResources><LocalStorage name="A" sizeInMB="{value}" /></LocalResources>'
    finding = sm.only(sm.run(InvalidLocalStorageSize, sm.subject_for(sm.csdef(vm_role(storage)))))
    assert finding.location == f"{VM}/LocalResources/LocalStorage[@name='A']"
    assert f"sizeInMB {value!r}" in finding.message and "at least 1" in finding.message


# ---- VMR523 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("element", ["Sites", "Startup", "Runtime", "Contents", "EntryPoint"])
def test_vmr523_vm_role_with_package_content(sm, element):
    finding = sm.only(
        sm.run(UnsupportedVmRoleElement, sm.subject_for(sm.csdef(vm_role(f"<{element} />"), kind=sm.CSPKG)))
    )
    assert finding.location == f"{sm.BUILD_CSDEF_PART}!{VM}/{element}"
    assert f"<{element}>" in finding.message and "VM image" in finding.message


# ---- VMR524 ----------------------------------------------------------------------------------------


def test_vmr524_os_image_missing(sm):
    config = GOOD_CONFIG.replace('<OsImage href="myimage.vhd" />', "")
    finding = sm.only(sm.run(MissingOsImage, sm.subject_for(sm.csdef(GOOD), sm.cscfg(config), kind=sm.CSCFG)))
    assert finding.location == "/ServiceConfiguration/Role[@name='Vm']/OsImage"
    assert "no <OsImage>" in finding.message and finding.severity is Severity.MEDIUM


def test_vmr524_os_image_href_empty(sm):
    config = GOOD_CONFIG.replace('href="myimage.vhd"', 'href=" "')
    finding = sm.only(sm.run(MissingOsImage, sm.subject_for(sm.csdef(GOOD), sm.cscfg(config), kind=sm.CSCFG)))
    assert finding.location == "/ServiceConfiguration/Role[@name='Vm']/OsImage"
    assert "empty href" in finding.message


def test_vmr524_not_applicable_without_vm_role(sm):
    subject = sm.subject_for(
        sm.csdef('<WebRole name="Web" />'), sm.cscfg('<Role name="Web"><Instances count="2"/></Role>'), kind=sm.CSCFG
    )
    assert sm.skip_reason(MissingOsImage, subject) == "the service has no VM role"


# ---- VMR525 ----------------------------------------------------------------------------------------


def test_vmr525_current_user_certificate(sm):
    certs = '<Certificates><Certificate name="Client" storeLocation="CurrentUser" storeName="My" /></Certificates>'
    finding = sm.only(sm.run(VmRoleCertificateNotInLocalMachine, sm.subject_for(sm.csdef(vm_role(certs)))))
    assert finding.location == f"{VM}/Certificates/Certificate[@name='Client']"
    assert "'CurrentUser'" in finding.message and 'storeLocation="LocalMachine"' in finding.message


def test_vmr525_web_role_may_use_current_user(sm):
    body = (
        '<WebRole name="Web"><Certificates><Certificate name="C" storeLocation="CurrentUser" storeName="My" />'
        "</Certificates></WebRole>"
    )
    assert sm.run(VmRoleCertificateNotInLocalMachine, sm.subject_for(sm.csdef(body))) == []


# ---- VMR526 ----------------------------------------------------------------------------------------


def test_vmr526_five_roles_max_with_vm_role(sm):
    body = vm_role() + "".join(f'<WorkerRole name="W{i}" />' for i in range(5))
    finding = sm.only(sm.run(TooManyRoles, sm.subject_for(sm.csdef(body))))
    assert finding.location == "/ServiceDefinition"
    assert "6 roles" in finding.message and "limit of 5 for a service with a VM role" in finding.message


def test_vmr526_twenty_five_roles_max(sm):
    many = "".join(f'<WorkerRole name="W{i}" />' for i in range(25))
    assert sm.run(TooManyRoles, sm.subject_for(sm.csdef(many))) == []
    finding = sm.only(sm.run(TooManyRoles, sm.subject_for(sm.csdef(many + '<WorkerRole name="X" />', kind=sm.CSPKG))))
    assert finding.location == f"{sm.BUILD_CSDEF_PART}!/ServiceDefinition"
    assert "26 roles" in finding.message
