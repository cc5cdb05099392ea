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


def test_vmr501_role_missing_from_configuration(sm, snapshot):
    configuration = CONFIGURATION.replace('<Role name="Worker"><Instances count="3" /></Role>', "")
    snapshot.assert_match(sm.run(UnmatchedRole, pair(sm, configuration=configuration)))


def test_vmr501_role_missing_from_definition_hints_at_case(sm, snapshot):
    configuration = CONFIGURATION.replace('<Role name="Worker">', '<Role name="worker">')
    snapshot.assert_match(sm.run(UnmatchedRole, pair(sm, configuration=configuration)))


def test_vmr501_needs_both_files(sm):
    subject = sm.subject_for(configuration=sm.cscfg(CONFIGURATION))
    assert "requires definition" in sm.skip_reason(UnmatchedRole, subject)


# ---- VMR502 ----------------------------------------------------------------------------------------


def test_vmr502_declared_setting_not_set(sm, snapshot):
    configuration = CONFIGURATION.replace('<Setting name="Storage" value="UseDevelopmentStorage=true" />', "")
    snapshot.assert_match(sm.run(UnmatchedSetting, pair(sm, configuration=configuration)))


def test_vmr502_setting_not_declared_never_leaks_value(sm, snapshot):
    configuration = CONFIGURATION.replace(
        "</ConfigurationSettings>", '<Setting name="Extra" value="s3cr3t-value" /></ConfigurationSettings>'
    )
    snapshot.assert_match(sm.run(UnmatchedSetting, pair(sm, configuration=configuration)), secrets=["s3cr3t-value"])


def test_vmr502_plugin_setting_needs_the_import(sm, snapshot):
    definition = DEFINITION.replace('<Imports><Import moduleName="RemoteAccess" /></Imports>', "")
    snapshot.assert_match(sm.run(UnmatchedSetting, pair(sm, definition=definition)))


# ---- VMR503 ----------------------------------------------------------------------------------------


def test_vmr503_declared_certificate_without_thumbprint(sm, snapshot):
    configuration = CONFIGURATION.replace(
        f'<Certificate name="SSL" thumbprint="{GOOD_THUMBPRINT}" thumbprintAlgorithm="sha1" />', ""
    )
    snapshot.assert_match(sm.run(UnmatchedCertificate, pair(sm, configuration=configuration)))


def test_vmr503_thumbprint_for_undeclared_certificate(sm, snapshot):
    definition = DEFINITION.replace('<Import moduleName="RemoteAccess" />', '<Import moduleName="Diagnostics" />')
    snapshot.assert_match(sm.run(UnmatchedCertificate, pair(sm, definition=definition)))


# ---- VMR504 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "thumbprint",
    [
        pytest.param("A909502DD82AE41433E6F83886B00D4277A32A7", id="39-digits"),
        pytest.param("A9 09 50 2D D8 2A E4 14 33 E6 F8 38 86 B0 0D 42 77 A3 2A 7B", id="spaces"),
        pytest.param("\u200eA909502DD82AE41433E6F83886B00D4277A32A7B", id="invisible-lrm"),
        pytest.param("G909502DD82AE41433E6F83886B00D4277A32A7B", id="not-hex"),
        pytest.param("", id="empty"),
    ],
)
def test_vmr504_malformed_thumbprint(sm, snapshot, thumbprint):
    configuration = CONFIGURATION.replace(GOOD_THUMBPRINT, thumbprint)
    snapshot.assert_match(sm.run(MalformedThumbprint, pair(sm, configuration=configuration)))


def test_vmr504_lowercase_thumbprint_is_fine(sm):
    configuration = CONFIGURATION.replace(GOOD_THUMBPRINT, GOOD_THUMBPRINT.lower())
    assert sm.run(MalformedThumbprint, sm.subject_for(configuration=sm.cscfg(configuration))) == []


@pytest.mark.parametrize(
    "algorithm", [pytest.param('thumbprintAlgorithm="sha256"', id="sha256"), pytest.param("", id="missing")]
)
def test_vmr504_algorithm_not_sha1(sm, snapshot, algorithm):
    configuration = CONFIGURATION.replace(
        f'thumbprint="{GOOD_THUMBPRINT}" thumbprintAlgorithm="sha1"', f'thumbprint="{GOOD_THUMBPRINT}" {algorithm}'
    )
    snapshot.assert_match(sm.run(MalformedThumbprint, sm.subject_for(configuration=sm.cscfg(configuration))))


# ---- VMR505 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "thumbprint",
    [
        pytest.param("0" * 40, id="zeros"),
        pytest.param("F" * 40, id="fs"),
        pytest.param("10" * 20, id="2-digit-pattern"),
        pytest.param("DEADBEEF" * 5, id="8-digit-pattern"),
        pytest.param("1234567890" * 4, id="10-digit-pattern"),
        pytest.param(("0123456789ABCDEF" * 3)[:40], id="counting"),
        pytest.param("875F1656A34D93B266E71BF19C116C39F16B6987", id="eclipse-sample"),
        pytest.param("875f1656a34d93b266e71bf19c116c39f16b6987", id="eclipse-sample-lowercase"),
    ],
)
def test_vmr505_placeholder_thumbprint(sm, snapshot, thumbprint):
    configuration = CONFIGURATION.replace(GOOD_THUMBPRINT, thumbprint)
    snapshot.assert_match(sm.run(PlaceholderThumbprint, sm.subject_for(configuration=sm.cscfg(configuration))))


def test_vmr505_emulator_configuration_is_low(sm, snapshot):
    configuration = CONFIGURATION.replace(GOOD_THUMBPRINT, "0" * 40)
    subject = sm.subject_for(configuration=sm.cscfg(configuration, filename="ServiceConfiguration.Local.cscfg"))
    snapshot.assert_match(sm.run(PlaceholderThumbprint, subject))


def test_vmr505_ignores_malformed_thumbprints(sm):
    configuration = CONFIGURATION.replace(GOOD_THUMBPRINT, "0" * 39)
    assert sm.run(PlaceholderThumbprint, sm.subject_for(configuration=sm.cscfg(configuration))) == []


# ---- VMR506 ----------------------------------------------------------------------------------------


def test_vmr506_service_name_differs(sm, snapshot):
    snapshot.assert_match(sm.run(ServiceNameMismatch, pair(sm, service_name="OtherService")))


def test_vmr506_service_name_missing(sm, snapshot):
    snapshot.assert_match(sm.run(ServiceNameMismatch, pair(sm, service_name=None)))


# ---- VMR507 / VMR508 -------------------------------------------------------------------------------


def test_vmr507_single_instance(sm, snapshot):
    configuration = CONFIGURATION.replace('<Instances count="3" />', '<Instances count="1" />')
    snapshot.assert_match(sm.run(SingleInstanceRole, sm.subject_for(configuration=sm.cscfg(configuration))))


def test_vmr507_skips_emulator_configuration(sm):
    configuration = CONFIGURATION.replace('<Instances count="3" />', '<Instances count="1" />')
    subject = sm.subject_for(configuration=sm.cscfg(configuration, filename="ServiceConfiguration.Local.cscfg"))
    assert "emulator" in sm.skip_reason(SingleInstanceRole, subject)


@pytest.mark.parametrize(
    "instances",
    [
        pytest.param('<Instances count="0" />', id="zero"),
        pytest.param('<Instances count="two" />', id="word"),
        pytest.param('<Instances count="-1" />', id="negative"),
        pytest.param("", id="no-instances-element"),
    ],
)
def test_vmr508_invalid_instance_count(sm, snapshot, instances):
    configuration = CONFIGURATION.replace('<Instances count="3" />', instances)
    snapshot.assert_match(sm.run(InvalidInstanceCount, sm.subject_for(configuration=sm.cscfg(configuration))))
