"""VMR301-VMR309: plaintext secrets in the service model, key material in packages."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
from harness.checks.secrets.package_keys import (
    CapiKeyBlobInPackage,
    JavaKeystoreInPackage,
    PfxInPackage,
    PrivateKeyInPackage,
    PublishSettingsInPackage,
)
from harness.checks.secrets.servicemodel_secrets import (
    PlaintextConnectionStringPassword,
    PlaintextSharedAccessKey,
    PlaintextStorageAccountKey,
    SecretNamedSettingValue,
    is_placeholder,
)
from harness.checks.servicemodel.remote_access import RdpPasswordNotEncrypted
from package_facts import BUILD_CSDEF, PAYLOAD, assert_not_leaked, cms_blob, entry, package

from harness.engine.rule import NotApplicable
from harness.engine.severity import Severity
from harness.facts.servicemodel import EnvironmentVariable

VALUE_RULES = (
    PlaintextStorageAccountKey,
    PlaintextConnectionStringPassword,
    PlaintextSharedAccessKey,
    SecretNamedSettingValue,
)
KEY_RULES = (PrivateKeyInPackage, PfxInPackage, PublishSettingsInPackage, CapiKeyBlobInPackage, JavaKeystoreInPackage)

# Real-looking (random, made up for these tests) secret values of the shapes found in the wild.
ACCOUNT_KEY = base64.b64encode(bytes((i * 73 + 11) % 256 for i in range(64))).decode()
SB_KEY = base64.b64encode(bytes((i * 29 + 5) % 256 for i in range(32))).decode()
ACS_SECRET = base64.b64encode(bytes((i * 41 + 3) % 256 for i in range(32))).decode()
SQL_PASSWORD = "525!D6qzLw#p"
SENDGRID_PASSWORD = "kq8Vx2mZpT"
API_KEY = "d41f7c0e9b8a4c2d8e7f6a5b4c3d2e1f"
SAS_SIG = "Zk9xY2Vq%2FbW5sT0pLmNvRkZ1a0h4R3d5c2E%3D"

SECRET_SETTINGS = {
    "DataConnectionString": f"DefaultEndpointsProtocol=https;AccountName=contosodata;AccountKey={ACCOUNT_KEY}",
    "AZURE_STORAGE_ACCESS_KEY": ACCOUNT_KEY,
    "SqlDatabaseConnectionString": (
        "Server=tcp:abc.database.windows.net,1433;Database=Iot;User ID=app@abc;"
        f"Password={SQL_PASSWORD};Trusted_Connection=False;Encrypt=True"
    ),
    "Microsoft.ServiceBus.ConnectionString": (
        f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={SB_KEY}"
    ),
    "LegacyBus": f"Endpoint=sb://ns.servicebus.windows.net;SharedSecretIssuer=owner;SharedSecretValue={ACS_SECRET}",
    "BlobSas": f"BlobEndpoint=https://contoso.blob.core.windows.net/;SharedAccessSignature=sv=2015-04-05&amp;sig={SAS_SIG}",
    "SendGridPassword": SENDGRID_PASSWORD,
    "ReadabilityAPIKey": API_KEY,
}
SECRETS = (ACCOUNT_KEY, SB_KEY, ACS_SECRET, SQL_PASSWORD, SENDGRID_PASSWORD, API_KEY, SAS_SIG)


def cscfg_with(sm, settings: dict[str, str], filename: str | None = None):
    lines = "".join(f'<Setting name="{k}" value="{v}" />' for k, v in settings.items())
    body = f'<Role name="Web"><Instances count="2" /><ConfigurationSettings>{lines}</ConfigurationSettings></Role>'
    return sm.cscfg(body, filename=filename)


def run_on_settings(sm, rule, settings: dict[str, str]):
    return sm.run(rule, sm.subject_for(configuration=cscfg_with(sm, settings)))


def csdef_with_variables(sm, variables: dict[str, str | None], kind=None):
    definition = sm.csdef(
        '<WorkerRole name="Worker"><Startup><Task commandLine="s.cmd" /></Startup></WorkerRole>',
        **({"kind": kind} if kind else {}),
    )
    role = definition.roles[0]
    base = f"{role.location}/Startup/Task/Environment"
    env = tuple(
        EnvironmentVariable(location=f"{base}/Variable[@name='{n}']", name=n, value=v, source="Startup")
        for n, v in variables.items()
    )
    return replace(definition, roles=(replace(role, environment=env),))


# ---- the contract: secrets never reach a finding -----------------------------------------------------


def test_no_secret_value_appears_in_any_finding(sm, snapshot):
    subject = sm.subject_for(configuration=cscfg_with(sm, SECRET_SETTINGS))
    findings = [f for rule in VALUE_RULES for f in sm.run(rule, subject)]
    assert_not_leaked(findings, SECRETS)
    snapshot.assert_match(findings, secrets=SECRETS)  # each value once, by the most precise rule


def test_no_secret_value_appears_in_an_rdp_finding(sm, snapshot):
    password = "Sup3r$ecretRdp"
    body = (
        '<Role name="Web"><Instances count="2" /><ConfigurationSettings>'
        '<Setting name="Microsoft.WindowsAzure.Plugins.RemoteAccess.Enabled" value="true" />'
        f'<Setting name="Microsoft.WindowsAzure.Plugins.RemoteAccess.AccountEncryptedPassword" value="{password}" />'
        "</ConfigurationSettings></Role>"
    )
    findings = sm.run(RdpPasswordNotEncrypted, sm.subject_for(configuration=sm.cscfg(body)))
    assert_not_leaked(findings, [password])
    snapshot.assert_match(findings, secrets=[password])


@pytest.mark.parametrize("rule", VALUE_RULES + KEY_RULES, ids=lambda r: r.id)
def test_secrets_rules_are_not_waivable(rule):
    assert rule.waivable is False
    assert rule.severity >= Severity.HIGH


# ---- VMR301 ------------------------------------------------------------------------------------


def test_301_reports_an_account_key(sm, snapshot):
    findings = run_on_settings(sm, PlaintextStorageAccountKey, {"Data": SECRET_SETTINGS["DataConnectionString"]})
    snapshot.assert_match(findings, secrets=SECRETS)


def test_301_reports_a_bare_key_by_shape(sm, snapshot):
    findings = run_on_settings(sm, PlaintextStorageAccountKey, {"StorageKeyValue": ACCOUNT_KEY})
    snapshot.assert_match(findings, secrets=SECRETS)


@pytest.mark.parametrize(
    "value",
    [
        "UseDevelopmentStorage=true",
        "DefaultEndpointsProtocol=https;AccountName=YOURSTORAGEACCOUNT;AccountKey=YOURSTORAGEACCOUNTKEY",
        "DefaultEndpointsProtocol=https;AccountName=sampleName;AccountKey=sampleKey",
        "DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey=#{StorageKey}",
        "DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey=",
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY}",
    ],
)
def test_301_passes_placeholders_and_the_emulator(sm, value):
    assert run_on_settings(sm, PlaintextStorageAccountKey, {"Data": value}) == []


def test_301_scans_csdef_environment_variables_and_only_the_artefacts_own_file(sm, snapshot):
    value = SECRET_SETTINGS["DataConnectionString"]
    definition = csdef_with_variables(sm, {"STORAGE": value, "FROM_ROLE": None})
    configuration = cscfg_with(sm, {"Data": value})
    findings = sm.run(PlaintextStorageAccountKey, sm.subject_for(definition, configuration))
    snapshot.assert_match(findings, secrets=SECRETS)  # the csdef's variable only, not the cscfg's setting


def test_301_on_a_package_reports_its_build_csdef(sm, snapshot):
    definition = csdef_with_variables(sm, {"STORAGE": ACCOUNT_KEY}, kind=sm.CSPKG)
    findings = sm.run(PlaintextStorageAccountKey, sm.subject_for(definition, kind=sm.CSPKG))
    snapshot.assert_match(findings, secrets=SECRETS)


def test_301_does_not_apply_without_own_facts(sm):
    with pytest.raises(NotApplicable):
        sm.run(PlaintextStorageAccountKey, sm.subject_for(kind=sm.CSCFG))


# ---- VMR302 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["Password", "Pwd", pytest.param("password", id="password-lowercase")])
def test_302_reports_connection_string_passwords(sm, snapshot, field):
    value = f"Server=tcp:x.database.windows.net;Database=Db;User ID=app;{field}={SQL_PASSWORD};Encrypt=True"
    snapshot.assert_match(run_on_settings(sm, PlaintextConnectionStringPassword, {"Sql": value}), secrets=SECRETS)


def test_302_passes_integrated_security_and_placeholders(sm):
    settings = {
        "A": "Server=.;Database=Db;Integrated Security=SSPI",
        "B": "Server=x;Database=Db;User ID=app;Password=#{SqlPassword}",
        "C": "Server=x;Database=Db;User ID=app;Password=",
    }
    assert run_on_settings(sm, PlaintextConnectionStringPassword, settings) == []


# ---- VMR303 ------------------------------------------------------------------------------------


def test_303_reports_shared_access_keys_and_sas_tokens(sm, snapshot):
    names = ("Microsoft.ServiceBus.ConnectionString", "LegacyBus", "BlobSas")
    findings = run_on_settings(sm, PlaintextSharedAccessKey, {n: SECRET_SETTINGS[n] for n in names})
    snapshot.assert_match(findings, secrets=SECRETS)


def test_303_passes_placeholders(sm):
    value = (
        "Endpoint=sb://[your namespace].servicebus.windows.net;SharedSecretIssuer=owner;SharedSecretValue=[your secret]"
    )
    assert run_on_settings(sm, PlaintextSharedAccessKey, {"Bus": value}) == []


# ---- VMR304 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SendGridPassword", SENDGRID_PASSWORD),
        ("ReadabilityAPIKey", API_KEY),
        ("Http.AdminKey", "password"),
        ("ida.ClientSecret", "x7Y!pq0Lm"),
        ("Dynatrace.APIToken", "dt0c01.ABCDEF"),
    ],
    ids=["SendGridPassword", "ReadabilityAPIKey", "Http.AdminKey", "ida.ClientSecret", "Dynatrace.APIToken"],
)
def test_304_reports_secret_named_settings(sm, snapshot, name, value):
    findings = run_on_settings(sm, SecretNamedSettingValue, {name: value})
    snapshot.assert_match(findings, secrets=[value])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Microsoft.WindowsAzure.Plugins.RemoteAccess.AccountEncryptedPassword", "plain"),  # VMR534's business
        ("MyEncryptedPassword", cms_blob()),
        ("SendGridPassword", ""),
        ("Dynatrace.APIToken", "&lt;YourAPIToken&gt;"),
        ("serilog-ApplicationInsightsInstrumentationKey", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
        ("SharedAccessKeyName", "RootManageSharedAccessKey"),
        ("RUNTIMEVERSIONPRIMARYKEY", "5.3.17"),
        ("keyVault-VaultName", "contoso-vault"),
        ("FeatureKey", "true"),
        ("AzureStorageKey", f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={ACCOUNT_KEY}"),  # VMR301
    ],
)
def test_304_passes_non_secrets_and_values_other_rules_report(sm, name, value):
    assert run_on_settings(sm, SecretNamedSettingValue, {name: value}) == []


def test_304_reports_csdef_variables(sm, snapshot):
    definition = csdef_with_variables(sm, {"API_TOKEN": API_KEY, "RUNTIMEVERSIONPRIMARYKEY": "5.3.17"})
    snapshot.assert_match(sm.run(SecretNamedSettingValue, sm.subject_for(definition)), secrets=SECRETS)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", True),
        ("$todo:replaceWithYourOwn", True),
        ("[Will be generated by the Azure plugin]", True),
        ("#{Secret}", True),
        ("__Secret__", True),
        ("PASSWORD HERE", True),
        ("password", False),
        (ACCOUNT_KEY, False),
    ],
)
def test_placeholder_detection(value, expected):
    assert is_placeholder(value) is expected


# ---- VMR305-VMR309 -----------------------------------------------------------------------------------


KEY_CASES = [
    (PrivateKeyInPackage, "pem-private-key", "approot/certs/server.key"),
    (PrivateKeyInPackage, "openssh-private-key", "approot/.ssh/id_rsa"),
    (PrivateKeyInPackage, "putty-private-key", "approot/deploy.ppk"),
    (PfxInPackage, "pkcs12", "approot/bin/ssl.pfx"),
    (PublishSettingsInPackage, "publishsettings", "approot/My-credentials.publishsettings"),
    (CapiKeyBlobInPackage, "pvk", "approot/codesign.pvk"),
    (CapiKeyBlobInPackage, "snk-private-key", "approot/Company.snk"),
    (JavaKeystoreInPackage, "jks", "approot/conf/keystore.jks"),
    (JavaKeystoreInPackage, "jceks", "approot/conf/keys.jceks"),
]


@pytest.mark.parametrize(("rule", "label", "path"), KEY_CASES, ids=[label for _, label, _ in KEY_CASES])
def test_key_material_sniffed_by_the_reader_is_reported_by_one_rule(sm, snapshot, rule, label, path):
    name = f"{PAYLOAD}!{path}"
    subject = sm.subject_for(package=package(extra_entries=[entry(name, key_material=label, head=b"\x00" * 8)]))
    findings = [f for r in KEY_RULES for f in sm.run(r, subject)]
    assert {f.rule_id for f in findings} == {rule.id}
    snapshot.assert_match(findings)


@pytest.mark.parametrize(
    ("rule", "leaf"),
    [
        (PfxInPackage, "a.pfx"),
        (PfxInPackage, "a.P12"),
        (PublishSettingsInPackage, "x.publishsettings"),
        (CapiKeyBlobInPackage, "k.pvk"),
        (CapiKeyBlobInPackage, "unread.snk"),
        (JavaKeystoreInPackage, "t.keystore"),
    ],
)
def test_key_files_are_reported_by_name_when_not_sniffed(sm, snapshot, rule, leaf):
    name = f"{PAYLOAD}!approot/{leaf}"
    snapshot.assert_match(sm.run(rule, sm.subject_for(package=package(extra_entries=[entry(name)]))))


def test_a_public_only_snk_is_not_reported(sm):
    public = entry(f"{PAYLOAD}!approot/Public.snk", head=b"\x06\x02\x00\x00\x00\x24\x00\x00RSA1")
    assert sm.run(CapiKeyBlobInPackage, sm.subject_for(package=package(extra_entries=[public]))) == []


def test_each_key_family_has_its_own_rule():
    assert [r.id for r in KEY_RULES] == ["VMR305", "VMR306", "VMR307", "VMR308", "VMR309"]
    assert [r.severity for r in KEY_RULES] == [Severity.CRITICAL] * 3 + [Severity.HIGH] * 2


@pytest.mark.parametrize("rule", KEY_RULES, ids=lambda r: r.id)
def test_key_rules_pass_a_clean_package(sm, rule):
    assert sm.run(rule, sm.subject_for(package=package())) == []


@pytest.mark.parametrize("rule", KEY_RULES, ids=lambda r: r.id)
def test_key_rules_do_not_apply_when_every_payload_is_encrypted(sm, rule):
    assert "encrypted" in sm.skip_reason(rule, sm.subject_for(package=package(encrypted=True)))


def test_a_top_level_key_in_an_encrypted_package_is_still_reported(sm, snapshot):
    pkg = package(encrypted=True, extra_entries=[entry("Subscription.publishsettings", key_material="publishsettings")])
    snapshot.assert_match(sm.run(PublishSettingsInPackage, sm.subject_for(package=pkg)))


def test_key_findings_locate_nested_entries(sm, snapshot):
    name = f"{BUILD_CSDEF.split('!')[0]}!stray.pfx"
    snapshot.assert_match(sm.run(PfxInPackage, sm.subject_for(package=package(extra_entries=[entry(name)]))))


# ---- through the real builder and reader ---------------------------------------------------------------

PFX_HEAD = bytes.fromhex("30820a00020103308209c606092a864886f70d010701") + bytes(64)


def test_key_rules_on_a_built_package(tmp_path, sm, snapshot):
    from harness.engine.artefact import CSPKG, Artefact
    from harness.readers.cspkg import read_package
    from harness.testing.cspkg import write_cspkg

    csdef = (
        '<ServiceDefinition name="S" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition">'
        '<WebRole name="Web" /></ServiceDefinition>'
    )
    pem_body = "MIIEowIBAAKCAQEAq7BFUpkGp3+LQmlQYtHQ1Rn"
    files = {
        "approot/bin/site.pfx": PFX_HEAD,
        "approot/certs/server.key": f"-----BEGIN RSA PRIVATE KEY-----\n{pem_body}\n".encode(),
        "approot/readme.txt": b"hello",
    }
    path = write_cspkg(tmp_path / "svc.cspkg", csdef, payloads={"Web": files})
    pkg = read_package(Artefact.from_path(path, CSPKG, tmp_path))
    subject = sm.subject_for(pkg.definition, package=pkg)
    findings = [f for rule in KEY_RULES for f in sm.run(rule, subject)]
    snapshot.assert_match(findings, secrets=[pem_body])  # the .key and the .pfx, not the readme
