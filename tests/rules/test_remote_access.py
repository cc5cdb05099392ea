"""VMR530-VMR534: Remote Desktop plugin configuration."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from harness.checks.servicemodel.remote_access import (
    RA_CERTIFICATE,
    RdpAccountExpired,
    RdpPasswordNotEncrypted,
    RemoteAccessCertificateMissing,
    RemoteAccessSettingsMissing,
    RemoteForwarderNotOnExactlyOneRole,
)
from package_facts import assert_not_leaked, cms_blob

from harness.engine.rule import NotApplicable

RA = "Microsoft.WindowsAzure.Plugins.RemoteAccess."
RF_ENABLED = "Microsoft.WindowsAzure.Plugins.RemoteForwarder.Enabled"
NOW = datetime(2013, 6, 1, 12, 0, tzinfo=UTC)
THUMB = "0123456789ABCDEF0123456789ABCDEF01234567"


def csdef_roles(*roles: tuple[str, tuple[str, ...]]) -> str:
    body = []
    for name, modules in roles:
        imports = "".join(f'<Import moduleName="{m}" />' for m in modules)
        body.append(f'<WebRole name="{name}"><Imports>{imports}</Imports></WebRole>')
    return "\n".join(body)


def rdp_role(
    name: str = "Web",
    *,
    enabled: str = "true",
    password: str | None = None,
    expiration: str = "2039-12-31T23:59:59.0000000-08:00",
    omit: tuple[str, ...] = (),
    forwarder: bool = True,
    certificate: str | None = THUMB,
) -> str:
    settings = {
        RA + "Enabled": enabled,
        RA + "AccountUsername": "rdpadmin",
        RA + "AccountEncryptedPassword": cms_blob() if password is None else password,
        RA + "AccountExpiration": expiration,
    }
    if forwarder:
        settings[RF_ENABLED] = "true"
    lines = "".join(
        f'<Setting name="{k}" value="{v}" />' for k, v in settings.items() if k.rsplit(".", 1)[-1] not in omit
    )
    certs = (
        f'<Certificates><Certificate name="{RA_CERTIFICATE}" thumbprint="{certificate}" '
        'thumbprintAlgorithm="sha1" /></Certificates>'
        if certificate is not None
        else "<Certificates />"
    )
    return (
        f'<Role name="{name}"><Instances count="2" /><ConfigurationSettings>{lines}</ConfigurationSettings>'
        f"{certs}</Role>"
    )


@pytest.fixture
def fixed_clock(monkeypatch):
    monkeypatch.setattr(RdpAccountExpired, "clock", staticmethod(lambda: NOW))


# ---- VMR530 ------------------------------------------------------------------------------------


def test_530_passes_when_all_plugin_settings_are_set(sm):
    definition = sm.csdef(csdef_roles(("Web", ("RemoteAccess", "RemoteForwarder"))))
    configuration = sm.cscfg(rdp_role())
    assert sm.run(RemoteAccessSettingsMissing, sm.subject_for(definition, configuration, kind=sm.CSCFG)) == []


def test_530_reports_each_missing_setting(sm, snapshot):
    definition = sm.csdef(csdef_roles(("Web", ("RemoteAccess", "RemoteForwarder"))))
    configuration = sm.cscfg(rdp_role(omit=("AccountUsername", "AccountExpiration"), forwarder=False))
    findings = sm.run(RemoteAccessSettingsMissing, sm.subject_for(definition, configuration, kind=sm.CSCFG))
    snapshot.assert_match(findings)
    assert len({f.fingerprint for f in findings}) == 3  # one baseline entry per missing setting


def test_530_ignores_roles_without_the_import(sm):
    definition = sm.csdef(csdef_roles(("Web", ())))
    configuration = sm.cscfg('<Role name="Web"><Instances count="2" /></Role>')
    assert sm.run(RemoteAccessSettingsMissing, sm.subject_for(definition, configuration, kind=sm.CSCFG)) == []


# ---- VMR531 ------------------------------------------------------------------------------------


def test_531_passes_with_the_password_encryption_certificate(sm):
    definition = sm.csdef(csdef_roles(("Web", ("RemoteAccess", "RemoteForwarder"))))
    configuration = sm.cscfg(rdp_role())
    assert sm.run(RemoteAccessCertificateMissing, sm.subject_for(definition, configuration, kind=sm.CSCFG)) == []


@pytest.mark.parametrize("certificate", [pytest.param(None, id="missing"), pytest.param("", id="empty-thumbprint")])
def test_531_reports_a_missing_or_empty_certificate(sm, snapshot, certificate):
    definition = sm.csdef(csdef_roles(("Web", ("RemoteAccess", "RemoteForwarder"))))
    configuration = sm.cscfg(rdp_role(certificate=certificate))
    snapshot.assert_match(
        sm.run(RemoteAccessCertificateMissing, sm.subject_for(definition, configuration, kind=sm.CSCFG))
    )


# ---- VMR532 ------------------------------------------------------------------------------------


def test_532_passes_with_one_forwarder(sm):
    definition = sm.csdef(csdef_roles(("Web", ("RemoteAccess", "RemoteForwarder")), ("Worker", ("RemoteAccess",))))
    assert sm.run(RemoteForwarderNotOnExactlyOneRole, sm.subject_for(definition)) == []


def test_532_passes_without_remote_desktop(sm):
    assert sm.run(RemoteForwarderNotOnExactlyOneRole, sm.subject_for(sm.csdef(csdef_roles(("Web", ()))))) == []


def test_532_reports_every_role_when_two_import_the_forwarder(sm, snapshot):
    definition = sm.csdef(
        csdef_roles(("Web", ("RemoteAccess", "RemoteForwarder")), ("Worker", ("RemoteAccess", "RemoteForwarder")))
    )
    findings = sm.run(RemoteForwarderNotOnExactlyOneRole, sm.subject_for(definition))
    snapshot.assert_match(findings)
    assert len({f.fingerprint for f in findings}) == 2  # one baseline entry per role


def test_532_reports_remote_access_without_forwarder_at_medium(sm, snapshot):
    definition = sm.csdef(csdef_roles(("Web", ("RemoteAccess",)), ("Worker", ("RemoteAccess",))))
    snapshot.assert_match(sm.run(RemoteForwarderNotOnExactlyOneRole, sm.subject_for(definition)))


def test_532_locates_findings_inside_a_package(sm, snapshot):
    definition = sm.csdef(
        csdef_roles(("Web", ("RemoteAccess", "RemoteForwarder")), ("Worker", ("RemoteAccess", "RemoteForwarder"))),
        kind=sm.CSPKG,
    )
    snapshot.assert_match(sm.run(RemoteForwarderNotOnExactlyOneRole, sm.subject_for(definition, kind=sm.CSPKG)))


# ---- VMR533 ------------------------------------------------------------------------------------


def test_533_passes_for_a_future_expiry(sm, fixed_clock):
    configuration = sm.cscfg(rdp_role(expiration="2039-12-31T23:59:59.0000000-08:00"))
    assert sm.run(RdpAccountExpired, sm.subject_for(configuration=configuration)) == []


def test_533_reports_an_expired_account(sm, snapshot, fixed_clock):
    configuration = sm.cscfg(rdp_role(expiration="2012-08-08T23:59:59.0000000+08:00"))
    snapshot.assert_match(sm.run(RdpAccountExpired, sm.subject_for(configuration=configuration)))


def test_533_reports_an_account_expiring_soon_at_low(sm, snapshot, fixed_clock):
    configuration = sm.cscfg(rdp_role(expiration="2013-06-11T23:59:59.0000000-07:00"))
    snapshot.assert_match(sm.run(RdpAccountExpired, sm.subject_for(configuration=configuration)))


def test_533_reports_an_unparsable_expiry(sm, snapshot, fixed_clock):
    configuration = sm.cscfg(rdp_role(expiration="next year"))
    snapshot.assert_match(sm.run(RdpAccountExpired, sm.subject_for(configuration=configuration)))


def test_533_clock_can_be_pinned_per_instance(sm, snapshot, monkeypatch):
    rule = RdpAccountExpired()
    monkeypatch.setattr(rule, "clock", lambda: datetime(2040, 1, 1, tzinfo=UTC))
    configuration = sm.cscfg(rdp_role(expiration="2039-12-31T23:59:59.0000000-08:00"))
    snapshot.assert_match(sm.run(rule, sm.subject_for(configuration=configuration)))


def test_533_does_not_apply_when_rdp_is_disabled(sm, fixed_clock):
    configuration = sm.cscfg(rdp_role(enabled="false", expiration="2001-01-01T00:00:00"))
    assert "not enabled" in sm.skip_reason(RdpAccountExpired, sm.subject_for(configuration=configuration))


# ---- VMR534 ------------------------------------------------------------------------------------


def test_534_passes_for_a_cms_blob(sm):
    configuration = sm.cscfg(rdp_role())
    assert sm.run(RdpPasswordNotEncrypted, sm.subject_for(configuration=configuration)) == []


def test_534_reports_a_plaintext_password_without_leaking_it(sm, snapshot):
    password = "Tr0ub4dor#3x!Q"
    configuration = sm.cscfg(rdp_role(password=password, enabled="false"))
    findings = sm.run(RdpPasswordNotEncrypted, sm.subject_for(configuration=configuration))
    assert_not_leaked(findings, [password])
    snapshot.assert_match(findings, secrets=[password])


@pytest.mark.parametrize(
    "placeholder",
    [
        pytest.param("", id="empty"),
        pytest.param("$todo:replaceWithYourOwnEncryptedPassword", id="sdk-todo"),
        pytest.param("PASSWORD HERE", id="here"),
    ],
)
def test_534_reports_a_placeholder_only_when_rdp_is_enabled(sm, snapshot, placeholder):
    enabled = sm.cscfg(rdp_role(password=placeholder))
    disabled = sm.cscfg(rdp_role(password=placeholder, enabled="false"))
    snapshot.assert_match(
        {
            "rdp-enabled": sm.run(RdpPasswordNotEncrypted, sm.subject_for(configuration=enabled)),
            "rdp-disabled": sm.run(RdpPasswordNotEncrypted, sm.subject_for(configuration=disabled)),
        }
    )


def test_534_does_not_apply_without_remote_desktop_settings(sm):
    configuration = sm.cscfg('<Role name="Web"><Instances count="2" /></Role>')
    with pytest.raises(NotApplicable):
        sm.run(RdpPasswordNotEncrypted, sm.subject_for(configuration=configuration))


def test_534_is_not_waivable():
    assert RdpPasswordNotEncrypted.waivable is False
