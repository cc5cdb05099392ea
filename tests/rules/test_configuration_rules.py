"""VMR535-VMR538: cscfg values that only make sense locally, pin the Guest OS, or weaken transport."""

from __future__ import annotations

import pytest
from harness.checks.servicemodel.configuration import (
    DevelopmentStorageInCloudConfiguration,
    GuestOsVersionPinned,
    PlaceholderSettingValue,
    StorageConnectionOverHttp,
)

DIAG = "Microsoft.WindowsAzure.Plugins.Diagnostics.ConnectionString"
REAL = "DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey=#{StorageKey}"


def role(*settings: tuple[str, str], name: str = "Web", extra: str = "") -> str:
    lines = "".join(f'<Setting name="{k}" value="{v}" />' for k, v in settings)
    return (
        f'<Role name="{name}">{extra}<Instances count="2" />'
        f"<ConfigurationSettings>{lines}</ConfigurationSettings></Role>"
    )


def subject(sm, body: str, filename: str | None = None, **kw):
    return sm.subject_for(configuration=sm.cscfg(body, filename=filename, **kw))


# ---- VMR535 ------------------------------------------------------------------------------------


def test_535_passes_for_real_storage_in_the_cloud_configuration(sm):
    body = role((DIAG, REAL), ("Data", REAL))
    assert sm.run(DevelopmentStorageInCloudConfiguration, subject(sm, body)) == []


def test_535_reports_development_storage_in_the_cloud_configuration(sm, snapshot):
    body = role((DIAG, "UseDevelopmentStorage=true"), ("Data", "UseDevelopmentStorage=true"), ("Other", REAL))
    findings = sm.run(DevelopmentStorageInCloudConfiguration, subject(sm, body, "ServiceConfiguration.Cloud.cscfg"))
    snapshot.assert_match(findings)  # both settings at high; the diagnostics one says the role recycles


def test_535_reports_a_plain_configuration_at_medium(sm, snapshot):
    body = role((DIAG, "UseDevelopmentStorage=true"))
    findings = sm.run(DevelopmentStorageInCloudConfiguration, subject(sm, body, "ServiceConfiguration.cscfg"))
    snapshot.assert_match(findings)


def test_535_does_not_apply_to_a_local_configuration(sm):
    body = role((DIAG, "UseDevelopmentStorage=true"))
    reason = sm.skip_reason(
        DevelopmentStorageInCloudConfiguration, subject(sm, body, "ServiceConfiguration.Local.cscfg")
    )
    assert reason is not None and "local" in reason


# ---- VMR536 ------------------------------------------------------------------------------------


def test_536_passes_for_automatic_guest_os_updates(sm):
    assert sm.run(GuestOsVersionPinned, subject(sm, role())) == []


def test_536_reports_a_pinned_guest_os_as_info(sm, snapshot):
    pinned = subject(sm, role(), extra_attrs='osFamily="2" osVersion="WA-GUEST-OS-2.12_201208-02"')
    snapshot.assert_match(sm.run(GuestOsVersionPinned, pinned))


def test_536_does_not_apply_when_every_role_brings_its_image(sm):
    body = role(name="VM", extra='<OsImage href="myimage.vhd" />')
    pinned = subject(sm, body, extra_attrs='osFamily="2" osVersion="WA-GUEST-OS-2.12_201208-02"')
    assert sm.skip_reason(GuestOsVersionPinned, pinned) is not None


# ---- VMR537 ------------------------------------------------------------------------------------


def test_537_passes_for_https_and_development_storage(sm):
    body = role(("A", REAL), ("B", "UseDevelopmentStorage=true"), ("C", "http://example.org/not-storage"))
    assert sm.run(StorageConnectionOverHttp, subject(sm, body)) == []


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("DefaultEndpointsProtocol=http;AccountName=contoso;AccountKey=#{Key}", id="protocol"),
        pytest.param("BlobEndpoint=http://contoso.blob.core.windows.net/;SharedAccessSignature=#{Sas}", id="endpoint"),
        pytest.param("BaseEndpoint=core.windows.net;Protocol=http;AccountName=contoso;AccountKey=#{Key}", id="legacy"),
    ],
)
def test_537_reports_storage_over_http(sm, snapshot, value):
    snapshot.assert_match(sm.run(StorageConnectionOverHttp, subject(sm, role(("Data", value)))))


# ---- VMR538 ------------------------------------------------------------------------------------


def test_538_passes_for_real_and_empty_values(sm):
    body = role(("A", REAL.replace("#{StorageKey}", "abc")), ("B", ""), ("C", "Production"), ("D", "30"))
    assert sm.run(PlaceholderSettingValue, subject(sm, body)) == []


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(
            "DefaultEndpointsProtocol=https;AccountName=YOURSTORAGEACCOUNT;AccountKey=YOURSTORAGEACCOUNTKEY",
            id="storage-account",
        ),
        pytest.param("&lt;YourAPIToken&gt;", id="angle-brackets"),
        pytest.param("[SERVICE BUS CONNECTION STRING]", id="square-brackets"),
        pytest.param("CONNECTION STRING HERE", id="here"),
        pytest.param(
            "Endpoint=sb://[your namespace].servicebus.windows.net;SharedSecretIssuer=owner;SharedSecretValue=[x]",
            id="service-bus",
        ),
    ],
)
def test_538_reports_placeholders_in_a_cloud_configuration(sm, snapshot, value):
    snapshot.assert_match(sm.run(PlaceholderSettingValue, subject(sm, role(("Setting1", value)))))


def test_538_leaves_remote_access_and_local_configurations_alone(sm):
    rdp = role(("Microsoft.WindowsAzure.Plugins.RemoteAccess.AccountEncryptedPassword", "$todo:replaceWithYourOwn"))
    assert sm.run(PlaceholderSettingValue, subject(sm, rdp)) == []
    local = role(("Data", "YOURSTORAGEACCOUNTKEY"))
    assert sm.skip_reason(PlaceholderSettingValue, subject(sm, local, "ServiceConfiguration.Local.cscfg"))
