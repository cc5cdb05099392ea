"""Inputs with canary secrets planted in every place a secret can sit: a service model (csdef, cscfg, a
malformed cscfg, a cspkg carrying the model and key files), a disk image (answer files, the Winlogon autologon
password, a private key, publish settings) and live target files (secret references)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from harness.testing import keymaterial as km
from harness.testing.cspkg import write_cspkg
from tests.security.canaries import SPECIALS, Canaries, make

SAMPLE = Path(__file__).resolve().parents[2] / "harness" / "samples" / "vmrole"
RDP_PASSWORD = "Microsoft.WindowsAzure.Plugins.RemoteAccess.AccountEncryptedPassword"


def _xml_attr(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;").replace(">", "&gt;")


def plant_model(folder: Path, canaries: Canaries) -> dict[str, Path]:
    """The bundled sample service model with canaries in every secret-bearing place; returns the files.

    cscfg (WebVM role): the storage ``AccountKey``, a SQL ``Password=``, a Service Bus ``SharedAccessKey``, a
    SAS URL's ``sig=``, an API token setting (with encoder-changing characters) and a plain-text RDP password.
    csdef: an environment variable named like a secret and a startup task's command line. The package carries
    that csdef and, in the WebVM payload, a PEM private key and a web.config with a connection-string password.
    A second, malformed cscfg holds a canary next to the point where parsing fails (VMR001).
    """
    account_key = canaries.add("cscfg-account-key", make("acctkey"))
    sql = canaries.add("cscfg-sql-password", make("sqlpwd"))
    bus = canaries.add("cscfg-sharedaccesskey", make("sbkey"))
    sig = canaries.add("cscfg-sas-sig", make("sassig"))
    token = canaries.add("cscfg-api-token", make("apitoken", specials=True))
    rdp = canaries.add("cscfg-rdp-password", make("rdppwd"))
    env_secret = canaries.add("csdef-env-secret", make("envsecret"))
    task_secret = canaries.add("csdef-task-password", make("taskpwd"))
    payload_pwd = canaries.add("cspkg-webconfig-password", make("webcfgpwd"))
    broken = canaries.add("cscfg-broken-secret", make("brokenxml"))

    csdef = (SAMPLE / "ServiceDefinition.csdef").read_text("utf-8")
    csdef = csdef.replace(
        '      <Setting name="AppStateBlobContainer" />\n',
        '      <Setting name="AppStateBlobContainer" />\n      <Setting name="SqlConnectionString" />\n'
        '      <Setting name="ServiceBusConnectionString" />\n      <Setting name="ReportsSasUrl" />\n'
        '      <Setting name="PaymentApiToken" />\n',
    )
    csdef = csdef.replace(
        '    <Imports>\n      <Import moduleName="RemoteAccess" />\n      <Import moduleName="RemoteForwarder" />',
        "    <Startup>\n"
        f'      <Task commandLine="setup.cmd /user:svc /password:{_xml_attr(task_secret)}" '
        'executionContext="elevated" taskType="simple">\n'
        f'        <Environment><Variable name="SetupApiKey" value="{_xml_attr(env_secret)}" /></Environment>\n'
        "      </Task>\n    </Startup>\n"
        "    <Runtime><Environment>\n"
        f'      <Variable name="LicenseSecret" value="{_xml_attr(env_secret)}" />\n'
        "    </Environment></Runtime>\n"
        '    <Imports>\n      <Import moduleName="RemoteAccess" />\n      <Import moduleName="RemoteForwarder" />',
    )
    cscfg = (SAMPLE / "ServiceConfiguration.Cloud.cscfg").read_text("utf-8")
    web, indexer = cscfg.split('<Role name="Indexer">')
    web = web.replace("AccountKey=$(StorageAccountKey)", f"AccountKey={account_key}", 1)
    extra = (
        f'      <Setting name="SqlConnectionString" value="Server=tcp:db.example.net;Database=Orders;User ID=app;'
        f'Password={_xml_attr(sql)};Encrypt=True" />\n'
        '      <Setting name="ServiceBusConnectionString" value="Endpoint=sb://contoso.servicebus.windows.net/;'
        f'SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={_xml_attr(bus)}" />\n'
        '      <Setting name="ReportsSasUrl" value="https://contosovmrole.blob.core.windows.net/reports?'
        f'sv=2019-12-12&amp;sr=c&amp;sp=rl&amp;se=2027-01-01T00%3A00%3A00Z&amp;sig={_xml_attr(sig)}" />\n'
        f'      <Setting name="PaymentApiToken" value="{_xml_attr(token)}" />\n'
    )
    web = web.replace(
        '      <Setting name="Microsoft.WindowsAzure.Plugins.RemoteAccess.Enabled"',
        extra + '      <Setting name="Microsoft.WindowsAzure.Plugins.RemoteAccess.Enabled"',
        1,
    )
    start = web.index(f'<Setting name="{RDP_PASSWORD}" value="') + len(f'<Setting name="{RDP_PASSWORD}" value="')
    end = web.index('"', start)
    web = web[:start] + rdp + web[end:]
    cscfg = web + '<Role name="Indexer">' + indexer

    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "csdef": folder / "ServiceDefinition.csdef",
        "cscfg": folder / "ServiceConfiguration.Cloud.cscfg",
        "broken": folder / "Broken.ServiceConfiguration.Cloud.cscfg",
        "cspkg": folder / "Contoso.cspkg",
    }
    files["csdef"].write_text(csdef, "utf-8")
    files["cscfg"].write_text(cscfg, "utf-8")
    # Malformed: the value's quote is never closed, so the parser stops right after the secret.
    files["broken"].write_text(
        cscfg.replace(
            '<Setting name="AppStateBlobContainer" value="appstate" />',
            f'<Setting name="AppStateBlobContainer" value="{broken} <Setting name="x" value="',
            1,
        ),
        "utf-8",
    )
    pem = km.pem_private_key_bytes(seed=7)
    canaries.add("cspkg-pem-key", pem.decode().splitlines()[3])
    web_config = (
        '<?xml version="1.0"?><configuration><connectionStrings><add name="Orders" connectionString="'
        f'Server=db;Database=Orders;User ID=app;Password={_xml_attr(payload_pwd)}" /></connectionStrings>'
        "</configuration>"
    ).encode()
    write_cspkg(
        files["cspkg"],
        csdef,
        {"WebVM": {"approot/web.config": web_config, "approot/keys/signing.pem": pem}},
    )
    return files


def _fixed(kind: str) -> str:
    """An image canary: fixed per kind so the image factory's cache keeps the built image between runs."""
    return f"CANARY-{kind}-{hashlib.sha256(kind.encode()).hexdigest()[:16]}"


def image_spec(canaries: Canaries):  # -> ImageSpec
    """The lint-clean WS2008 R2 VM-role skeleton with secrets: the IC answer file's AdministratorPassword
    (plain text) and AutoLogon password, a Panther answer file with the base64 ("PlainText=false") form,
    the Winlogon DefaultPassword, a PEM private key and a publish-settings file."""
    from harness.testing.hivewriter import sz
    from harness.testing.windows import WINLOGON, answer_file, windows_server_2008r2_vmrole

    admin = canaries.add("image-admin-password", _fixed("imgadmin") + "&<>")
    autologon = canaries.add("image-autologon-password", _fixed("imgautologon"))
    hidden = canaries.add("image-hidden-admin-password", _fixed("imghidden"))
    default = canaries.add("image-winlogon-defaultpassword", _fixed("imgdefaultpwd"))
    pem = km.pem_private_key_bytes(seed=8)
    canaries.add("image-pem-key", pem.decode().splitlines()[3])
    publish = km.publishsettings_bytes()
    certificate = re.search(rb'ManagementCertificate="([^"]+)"', publish)
    assert certificate is not None
    canaries.add("image-publishsettings-pfx", certificate.group(1)[400:464].decode())
    spec = windows_server_2008r2_vmrole()
    return spec.with_changes(
        files={
            "unattend.xml": answer_file(
                admin_password=admin.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"),
                autologon_password=autologon,
            ),
            "Windows/Panther/unattend.xml": answer_file(admin_password=hidden, plain_text=False),
            "inetpub/wwwroot/App_Data/signing.pem": pem,
            "Users/Administrator/Downloads/prod.publishsettings": publish,
        },
        hives={"SOFTWARE": {WINLOGON: {"DefaultPassword": sz(default), "AutoAdminLogon": sz("1")}}},
    )


__all__ = ["SPECIALS", "image_spec", "plant_model"]
