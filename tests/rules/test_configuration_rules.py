"""VMR535-VMR538: cscfg values that only make sense locally, pin the Guest OS, or weaken transport."""

from __future__ import annotations

import pytest
from harness.checks.servicemodel.configuration import (
    DevelopmentStorageInCloudConfiguration,
    GuestOsVersionPinned,
    PlaceholderSettingValue,
    StorageConnectionOverHttp,
)

from harness.engine.severity import Severity

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


def test_535_reports_development_storage_in_the_cloud_configuration(sm):
    body = role((DIAG, "UseDevelopmentStorage=true"), ("Data", "UseDevelopmentStorage=true"), ("Other", REAL))
    findings = sm.run(DevelopmentStorageInCloudConfiguration, subject(sm, body, "ServiceConfiguration.Cloud.cscfg"))
    assert sorted(f.evidence["setting"] for f in findings) == ["Data", DIAG]
    diag = next(f for f in findings if f.evidence["setting"] == DIAG)
    assert diag.evidence["diagnostics"] == "true"
    assert "recycles" in diag.message
    assert {f.severity for f in findings} == {Severity.HIGH}


def test_535_reports_a_plain_configuration_at_medium(sm):
    body = role((DIAG, "UseDevelopmentStorage=true"))
    finding = sm.only(sm.run(DevelopmentStorageInCloudConfiguration, subject(sm, body, "ServiceConfiguration.cscfg")))
    assert finding.severity is Severity.MEDIUM


def test_535_does_not_apply_to_a_local_configuration(sm):
    body = role((DIAG, "UseDevelopmentStorage=true"))
    reason = sm.skip_reason(
        DevelopmentStorageInCloudConfiguration, subject(sm, body, "ServiceConfiguration.Local.cscfg")
    )
    assert reason is not None and "local" in reason


# ---- VMR536 ------------------------------------------------------------------------------------


def test_536_passes_for_automatic_guest_os_updates(sm):
    assert sm.run(GuestOsVersionPinned, subject(sm, role())) == []


def test_536_reports_a_pinned_guest_os_as_info(sm):
    pinned = subject(sm, role(), extra_attrs='osFamily="2" osVersion="WA-GUEST-OS-2.12_201208-02"')
    finding = sm.only(sm.run(GuestOsVersionPinned, pinned))
    assert finding.severity is Severity.INFO
    assert finding.evidence["osVersion"] == "WA-GUEST-OS-2.12_201208-02"


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
        "DefaultEndpointsProtocol=http;AccountName=contoso;AccountKey=#{Key}",
        "BlobEndpoint=http://contoso.blob.core.windows.net/;SharedAccessSignature=#{Sas}",
        "BaseEndpoint=core.windows.net;Protocol=http;AccountName=contoso;AccountKey=#{Key}",
    ],
)
def test_537_reports_storage_over_http(sm, value):
    finding = sm.only(sm.run(StorageConnectionOverHttp, subject(sm, role(("Data", value)))))
    assert finding.evidence["setting"] == "Data"


# ---- VMR538 ------------------------------------------------------------------------------------


def test_538_passes_for_real_and_empty_values(sm):
    body = role(("A", REAL.replace("#{StorageKey}", "abc")), ("B", ""), ("C", "Production"), ("D", "30"))
    assert sm.run(PlaceholderSettingValue, subject(sm, body)) == []


@pytest.mark.parametrize(
    "value",
    [
        "DefaultEndpointsProtocol=https;AccountName=YOURSTORAGEACCOUNT;AccountKey=YOURSTORAGEACCOUNTKEY",
        "&lt;YourAPIToken&gt;",
        "[SERVICE BUS CONNECTION STRING]",
        "CONNECTION STRING HERE",
        "Endpoint=sb://[your namespace].servicebus.windows.net;SharedSecretIssuer=owner;SharedSecretValue=[x]",
    ],
)
def test_538_reports_placeholders_in_a_cloud_configuration(sm, value):
    finding = sm.only(sm.run(PlaceholderSettingValue, subject(sm, role(("Setting1", value)))))
    assert finding.evidence["setting"] == "Setting1"


def test_538_leaves_remote_access_and_local_configurations_alone(sm):
    rdp = role(("Microsoft.WindowsAzure.Plugins.RemoteAccess.AccountEncryptedPassword", "$todo:replaceWithYourOwn"))
    assert sm.run(PlaceholderSettingValue, subject(sm, rdp)) == []
    local = role(("Data", "YOURSTORAGEACCOUNTKEY"))
    assert sm.skip_reason(PlaceholderSettingValue, subject(sm, local, "ServiceConfiguration.Local.cscfg"))
