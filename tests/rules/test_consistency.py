"""VMR501-VMR508: csdef <-> cscfg consistency, thumbprints and instance counts."""

from __future__ import annotations

import pytest
from harness.checks.servicemodel.consistency import (
    InvalidInstanceCount,
    MalformedThumbprint,
    PlaceholderThumbprint,
    ServiceNameMismatch,
    SingleInstanceRole,
    UnmatchedCertificate,
    UnmatchedRole,
    UnmatchedSetting,
)

from harness.engine.severity import Severity

GOOD_THUMBPRINT = "A909502DD82AE41433E6F83886B00D4277A32A7B"
RDP_THUMBPRINT = "3E3CA1DF3A9C1B0E8F1E1C7E35C2A8A6A2C4D9F1"

DEFINITION = """
<WebRole name="Web" vmsize="Small">
  <ConfigurationSettings><Setting name="Storage" /></ConfigurationSettings>
  <Certificates><Certificate name="SSL" storeLocation="LocalMachine" storeName="My" /></Certificates>
  <Endpoints><InputEndpoint name="HttpsIn" protocol="https" port="443" certificate="SSL" /></Endpoints>
  <Imports><Import moduleName="RemoteAccess" /></Imports>
</WebRole>
<WorkerRole name="Worker" />
"""

CONFIGURATION = f"""
<Role name="Web">
  <Instances count="2" />
  <ConfigurationSettings>
    <Setting name="Storage" value="UseDevelopmentStorage=true" />
    <Setting name="Microsoft.WindowsAzure.Plugins.RemoteAccess.Enabled" value="false" />
  </ConfigurationSettings>
  <Certificates>
    <Certificate name="SSL" thumbprint="{GOOD_THUMBPRINT}" thumbprintAlgorithm="sha1" />
    <Certificate name="Microsoft.WindowsAzure.Plugins.RemoteAccess.PasswordEncryption"
                 thumbprint="{RDP_THUMBPRINT}" thumbprintAlgorithm="sha1" />
  </Certificates>
</Role>
<Role name="Worker"><Instances count="3" /></Role>
"""

CONSISTENCY_RULES = [
    UnmatchedRole,
    UnmatchedSetting,
    UnmatchedCertificate,
    MalformedThumbprint,
    PlaceholderThumbprint,
    ServiceNameMismatch,
    SingleInstanceRole,
    InvalidInstanceCount,
]


def pair(sm, definition: str = DEFINITION, configuration: str = CONFIGURATION, **cfg):
    return sm.subject_for(sm.csdef(definition), sm.cscfg(configuration, **cfg), kind=sm.CSCFG)


@pytest.mark.parametrize("rule", CONSISTENCY_RULES, ids=lambda r: r.id)
def test_consistent_pair_passes(sm, rule):
    assert sm.run(rule, pair(sm)) == []


# ---- VMR501 ----------------------------------------------------------------------------------------


def test_vmr501_role_missing_from_configuration(sm):
    configuration = CONFIGURATION.replace('<Role name="Worker"><Instances count="3" /></Role>', "")
    finding = sm.only(sm.run(UnmatchedRole, pair(sm, configuration=configuration)))
    assert finding.rule_id == "VMR501"
    assert finding.location == "/ServiceConfiguration/Role[@name='Worker']"
    assert "WorkerRole 'Worker'" in finding.message and "add it" in finding.message
    assert finding.artefact.endswith(".cscfg")


def test_vmr501_role_missing_from_definition_hints_at_case(sm):
    configuration = CONFIGURATION.replace('<Role name="Worker">', '<Role name="worker">')
    findings = sm.run(UnmatchedRole, pair(sm, configuration=configuration))
    assert {f.location for f in findings} == {
        "/ServiceConfiguration/Role[@name='Worker']",
        "/ServiceConfiguration/Role[@name='worker']",
    }
    reverse = next(f for f in findings if f.location.endswith("'worker']"))
    assert "defines no such role" in reverse.message and "case-sensitive" in reverse.message
    assert reverse.line is not None


def test_vmr501_needs_both_files(sm):
    subject = sm.subject_for(configuration=sm.cscfg(CONFIGURATION))
    assert "requires definition" in sm.skip_reason(UnmatchedRole, subject)


# ---- VMR502 ----------------------------------------------------------------------------------------


def test_vmr502_declared_setting_not_set(sm):
    configuration = CONFIGURATION.replace('<Setting name="Storage" value="UseDevelopmentStorage=true" />', "")
    finding = sm.only(sm.run(UnmatchedSetting, pair(sm, configuration=configuration)))
    assert finding.location == (
        "/ServiceConfiguration/Role[@name='Web']/ConfigurationSettings/Setting[@name='Storage']"
    )
    assert "does not set it" in finding.message
    assert finding.evidence["setting"] == "Storage"


def test_vmr502_setting_not_declared_never_leaks_value(sm):
    configuration = CONFIGURATION.replace(
        "</ConfigurationSettings>", '<Setting name="Extra" value="s3cr3t-value" /></ConfigurationSettings>'
    )
    finding = sm.only(sm.run(UnmatchedSetting, pair(sm, configuration=configuration)))
    assert finding.location.endswith("Setting[@name='Extra']")
    assert "does not declare it" in finding.message
    assert "s3cr3t" not in finding.message and "s3cr3t" not in str(finding.evidence)


def test_vmr502_plugin_setting_needs_the_import(sm):
    definition = DEFINITION.replace('<Imports><Import moduleName="RemoteAccess" /></Imports>', "")
    finding = sm.only(sm.run(UnmatchedSetting, pair(sm, definition=definition)))
    assert "Microsoft.WindowsAzure.Plugins.RemoteAccess.Enabled" in finding.message


# ---- VMR503 ----------------------------------------------------------------------------------------


def test_vmr503_declared_certificate_without_thumbprint(sm):
    configuration = CONFIGURATION.replace(
        f'<Certificate name="SSL" thumbprint="{GOOD_THUMBPRINT}" thumbprintAlgorithm="sha1" />', ""
    )
    finding = sm.only(sm.run(UnmatchedCertificate, pair(sm, configuration=configuration)))
    assert finding.rule_id == "VMR503"
    assert finding.location == "/ServiceConfiguration/Role[@name='Web']/Certificates/Certificate[@name='SSL']"
    assert "gives no thumbprint" in finding.message


def test_vmr503_thumbprint_for_undeclared_certificate(sm):
    definition = DEFINITION.replace('<Import moduleName="RemoteAccess" />', '<Import moduleName="Diagnostics" />')
    finding = sm.only(sm.run(UnmatchedCertificate, pair(sm, definition=definition)))
    assert "RemoteAccess.PasswordEncryption" in finding.location
    assert "does not declare it" in finding.message


# ---- VMR504 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("thumbprint", "problem"),
    [
        ("A909502DD82AE41433E6F83886B00D4277A32A7", "39 hex digits"),
        ("A9 09 50 2D D8 2A E4 14 33 E6 F8 38 86 B0 0D 42 77 A3 2A 7B", "spaces"),
        ("\u200eA909502DD82AE41433E6F83886B00D4277A32A7B", "invisible"),
        ("G909502DD82AE41433E6F83886B00D4277A32A7B", "other than hex"),
        ("", "empty"),
    ],
)
def test_vmr504_malformed_thumbprint(sm, thumbprint, problem):
    configuration = CONFIGURATION.replace(GOOD_THUMBPRINT, thumbprint)
    finding = sm.only(sm.run(MalformedThumbprint, pair(sm, configuration=configuration)))
    assert finding.location == "/ServiceConfiguration/Role[@name='Web']/Certificates/Certificate[@name='SSL']"
    assert problem in finding.message
    assert "40 hex digits" in finding.message


def test_vmr504_lowercase_thumbprint_is_fine(sm):
    configuration = CONFIGURATION.replace(GOOD_THUMBPRINT, GOOD_THUMBPRINT.lower())
    assert sm.run(MalformedThumbprint, sm.subject_for(configuration=sm.cscfg(configuration))) == []


@pytest.mark.parametrize(("algorithm", "expected"), [('thumbprintAlgorithm="sha256"', "'sha256'"), ("", "missing")])
def test_vmr504_algorithm_not_sha1(sm, algorithm, expected):
    configuration = CONFIGURATION.replace(
        f'thumbprint="{GOOD_THUMBPRINT}" thumbprintAlgorithm="sha1"', f'thumbprint="{GOOD_THUMBPRINT}" {algorithm}'
    )
    finding = sm.only(sm.run(MalformedThumbprint, sm.subject_for(configuration=sm.cscfg(configuration))))
    assert finding.location.endswith("Certificate[@name='SSL']/@thumbprintAlgorithm")
    assert expected in finding.message and 'thumbprintAlgorithm="sha1"' in finding.message


# ---- VMR505 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("thumbprint", "kind"),
    [
        ("0" * 40, "one repeated digit"),
        ("F" * 40, "one repeated digit"),
        ("10" * 20, "2-digit pattern"),
        ("DEADBEEF" * 5, "8-digit pattern"),
        ("1234567890" * 4, "10-digit pattern"),
        (("0123456789ABCDEF" * 3)[:40], "counting sequence"),
        ("875F1656A34D93B266E71BF19C116C39F16B6987", "Toolkit for Eclipse sample"),
        ("875f1656a34d93b266e71bf19c116c39f16b6987", "Toolkit for Eclipse sample"),
    ],
)
def test_vmr505_placeholder_thumbprint(sm, thumbprint, kind):
    configuration = CONFIGURATION.replace(GOOD_THUMBPRINT, thumbprint)
    finding = sm.only(sm.run(PlaceholderThumbprint, sm.subject_for(configuration=sm.cscfg(configuration))))
    assert finding.rule_id == "VMR505"
    assert finding.location.endswith("Certificate[@name='SSL']")
    assert kind in finding.message and "create your own certificate" in finding.message
    assert finding.severity is Severity.HIGH


def test_vmr505_emulator_configuration_is_low(sm):
    configuration = CONFIGURATION.replace(GOOD_THUMBPRINT, "0" * 40)
    subject = sm.subject_for(configuration=sm.cscfg(configuration, filename="ServiceConfiguration.Local.cscfg"))
    assert sm.only(sm.run(PlaceholderThumbprint, subject)).severity is Severity.LOW


def test_vmr505_ignores_malformed_thumbprints(sm):
    configuration = CONFIGURATION.replace(GOOD_THUMBPRINT, "0" * 39)
    assert sm.run(PlaceholderThumbprint, sm.subject_for(configuration=sm.cscfg(configuration))) == []


# ---- VMR506 ----------------------------------------------------------------------------------------


def test_vmr506_service_name_differs(sm):
    finding = sm.only(sm.run(ServiceNameMismatch, pair(sm, service_name="OtherService")))
    assert finding.location == "/ServiceConfiguration/@serviceName"
    assert "'OtherService'" in finding.message and "'MyService'" in finding.message


def test_vmr506_service_name_missing(sm):
    finding = sm.only(sm.run(ServiceNameMismatch, pair(sm, service_name=None)))
    assert "no serviceName" in finding.message and 'serviceName="MyService"' in finding.message


# ---- VMR507 / VMR508 -------------------------------------------------------------------------------


def test_vmr507_single_instance(sm):
    configuration = CONFIGURATION.replace('<Instances count="3" />', '<Instances count="1" />')
    finding = sm.only(sm.run(SingleInstanceRole, sm.subject_for(configuration=sm.cscfg(configuration))))
    assert finding.location == "/ServiceConfiguration/Role[@name='Worker']/Instances"
    assert "no availability SLA" in finding.message
    assert finding.severity is Severity.MEDIUM


def test_vmr507_skips_emulator_configuration(sm):
    configuration = CONFIGURATION.replace('<Instances count="3" />', '<Instances count="1" />')
    subject = sm.subject_for(configuration=sm.cscfg(configuration, filename="ServiceConfiguration.Local.cscfg"))
    assert "emulator" in sm.skip_reason(SingleInstanceRole, subject)


@pytest.mark.parametrize(
    ("instances", "problem"),
    [
        ('<Instances count="0" />', "instance count 0"),
        ('<Instances count="two" />', "not a whole number"),
        ('<Instances count="-1" />', "not a whole number"),
        ("", "has no <Instances"),
    ],
)
def test_vmr508_invalid_instance_count(sm, instances, problem):
    configuration = CONFIGURATION.replace('<Instances count="3" />', instances)
    finding = sm.only(sm.run(InvalidInstanceCount, sm.subject_for(configuration=sm.cscfg(configuration))))
    assert finding.rule_id == "VMR508"
    assert finding.location == "/ServiceConfiguration/Role[@name='Worker']/Instances"
    assert problem in finding.message
