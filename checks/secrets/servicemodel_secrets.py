"""Plaintext secrets in the service model: cscfg setting values and csdef environment variables.

The helpers here classify a value by its *shape* (connection-string fields, key alphabets, CMS
blobs, placeholders); they return kinds and lengths, never the value. Other rule modules (the RDP
password rule) reuse them so that "what is a placeholder" has one answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from harness.docs_sources import refs
from harness.engine.artefact import CSCFG, CSDEF, CSPKG
from harness.engine.finding import Finding
from harness.engine.rule import NotApplicable, Rule
from harness.engine.severity import Severity
from harness.facts.servicemodel import ServiceModelSubject

REMOTE_ACCESS_PASSWORD = "Microsoft.WindowsAzure.Plugins.RemoteAccess.AccountEncryptedPassword"

# ---- value shapes ------------------------------------------------------------------------------

_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
#: A storage account key: 64 random bytes, base64 = 88 characters ending in "==".
_STORAGE_KEY = re.compile(r"^[A-Za-z0-9+/]{86}==$")
#: The storage emulator's account key is published in the SDK docs; it is not a secret. Compared
#: by hash so that this file does not itself look like it carries a key.
_EMULATOR_KEY_SHA256 = "0011cc25eb4320717494d2703e8cba85743e71b500283c21c8b88147992f9059"
_EMULATOR_ACCOUNT = "devstoreaccount1"
#: DER prefix of a CMS EnvelopedData ContentInfo: OID 1.2.840.113549.1.7.3.
_CMS_ENVELOPED_OID = bytes.fromhex("06092a864886f70d010703")

#: A whole value that is a template token: <...>, [...], {...}, {{...}}, $(...), ${...}, #{...},
#: %VAR%, __TOKEN__, @TOKEN@.
_TEMPLATE_TOKEN = re.compile(
    r"^\s*(<[^>]*>|\[[^\]]*\]|\{\{?[^}]*\}\}?|\$\([^)]*\)|\$\{[^}]*\}|#\{[^}]*\}|%[^%\s]+%|__\w+__|@\w+@)\s*$"
)
#: Words that mark an example value someone is meant to replace.
_PLACEHOLDER_WORDS = re.compile(
    r"todo|replace|your|here\b|placeholder|change[\s_-]?me|insert|enter[\s_-]|x{4,}|generated\s+by|"
    r"sample|example|dummy|fake|secret[\s_-]?goes",
    re.IGNORECASE,
)
#: A random-looking token (key alphabet, long, mixed classes): never a placeholder, even if a
#: placeholder word happens to occur in it.
_RANDOM_TOKEN = re.compile(r"^(?=.*[a-z])(?=.*[A-Z])(?=.*\d)[A-Za-z0-9+/=_-]{32,}$")

_NOT_SECRET = re.compile(r"^(true|false|yes|no|on|off|none|null|[\d.:,\s-]+)$", re.IGNORECASE)

#: Connection-string fields that carry a secret, by kind (lower-cased field names).
STORAGE_KEY_FIELDS = frozenset({"accountkey"})
PASSWORD_FIELDS = frozenset({"password", "pwd"})
SHARED_KEY_FIELDS = frozenset({"sharedaccesskey", "sharedsecretvalue", "sharedaccesssignature"})
_SAS_SIG = re.compile(r"[?&]sig=([^&;\s]+)", re.IGNORECASE)

#: Setting names whose value is a secret by name: the last word is one of these.
_SECRET_NAME = re.compile(
    r"(password|passwd|passphrase|pwd|secret|token|apikey|accesskey|key|credentials?)$", re.IGNORECASE
)
#: Names that end like a secret but are not one.
_NOT_SECRET_NAME = re.compile(
    r"(publickey|instrumentationkey|partitionkey|rowkey|sortkey|keyname|encryptedpassword)$", re.IGNORECASE
)


def is_placeholder(value: str | None) -> bool:
    """True for empty values and example values ("$todo:replaceWithYourOwn", "<YourAPIToken>", …)."""
    if value is None or not value.strip():
        return True
    text = value.strip()
    if _TEMPLATE_TOKEN.match(text):
        return True
    if _RANDOM_TOKEN.match(text):
        return False
    return bool(_PLACEHOLDER_WORDS.search(text))


def looks_like_cms_envelope(value: str | None) -> bool:
    """True when ``value`` is base64 of a DER CMS EnvelopedData (what the SDK's RDP password encryption writes)."""
    if value is None:
        return False
    text = "".join(value.split())
    if len(text) < 64 or not _BASE64.match(text):
        return False
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    # SEQUENCE (long form length) then the OID within the first few bytes.
    return der[:1] == b"\x30" and _CMS_ENVELOPED_OID in der[:16]


def _is_emulator_key(value: str) -> bool:
    return hashlib.sha256(value.strip().encode("utf-8")).hexdigest() == _EMULATOR_KEY_SHA256


def connection_string_fields(value: str) -> list[tuple[str, str]]:
    """``name=value`` pairs of a ';'-separated connection string (names lower-cased, values kept)."""
    pairs: list[tuple[str, str]] = []
    for segment in value.split(";"):
        name, sep, field_value = segment.partition("=")
        if sep and name.strip():
            pairs.append((name.strip().lower().replace(" ", ""), field_value.strip()))
    return pairs


@dataclass(frozen=True)
class SecretShape:
    """What was found in a value: a kind for people, the field it sat in, its length. Never the value."""

    kind: str
    field: str
    length: int


def storage_key_shapes(value: str) -> list[SecretShape]:
    fields = connection_string_fields(value)
    account = next((v for k, v in fields if k == "accountname"), "")
    found = [
        SecretShape("storage account key", "AccountKey", len(v))
        for k, v in fields
        if k in STORAGE_KEY_FIELDS
        and not is_placeholder(v)
        and not _is_emulator_key(v)
        and account.lower() != _EMULATOR_ACCOUNT
    ]
    bare = value.strip()
    if not found and _STORAGE_KEY.match(bare) and not _is_emulator_key(bare):
        found.append(SecretShape("storage account key (by shape: 88 base64 characters)", "", len(bare)))
    return found


def password_shapes(value: str) -> list[SecretShape]:
    return [
        SecretShape("connection-string password", k.capitalize(), len(v))
        for k, v in connection_string_fields(value)
        if k in PASSWORD_FIELDS and not is_placeholder(v)
    ]


def shared_key_shapes(value: str) -> list[SecretShape]:
    names = {
        "sharedaccesskey": "SharedAccessKey",
        "sharedsecretvalue": "SharedSecretValue",
        "sharedaccesssignature": "SharedAccessSignature",
    }
    found = [
        SecretShape("shared access key" if k != "sharedaccesssignature" else "SAS token", names[k], len(v))
        for k, v in connection_string_fields(value)
        if k in SHARED_KEY_FIELDS and not is_placeholder(v)
    ]
    if not any(s.field == "SharedAccessSignature" for s in found):
        found.extend(
            SecretShape("SAS token signature", "sig", len(m.group(1)))
            for m in _SAS_SIG.finditer(value)
            if not is_placeholder(m.group(1))
        )
    return found


def name_suggests_secret(name: str) -> bool:
    compact = re.sub(r"[^A-Za-z0-9]", "", name)
    return bool(_SECRET_NAME.search(compact)) and not _NOT_SECRET_NAME.search(compact)


def value_could_be_secret(value: str | None) -> bool:
    """A value worth reporting under a secret-sounding name: not empty, a placeholder, a flag or a number."""
    if value is None or is_placeholder(value):
        return False
    text = value.strip()
    return len(text) >= 4 and not _NOT_SECRET.match(text) and not looks_like_cms_envelope(text)


# ---- where values live -------------------------------------------------------------------------


@dataclass(frozen=True)
class ValueSite:
    """A named literal value in the artefact: a cscfg setting or a csdef environment variable."""

    what: str  # "setting" | "environment variable"
    name: str
    value: str
    role: str
    location: str
    line: int | None


def value_sites(subject: ServiceModelSubject) -> Iterator[ValueSite]:
    """The artefact's own literal values (a .csdef or .cspkg never reports its paired .cscfg)."""
    if subject.primary_kind == CSCFG:
        if subject.configuration is None:
            return
        for role in subject.configuration.roles:
            for setting in role.settings:
                if setting.value:
                    yield ValueSite("setting", setting.name, setting.value, role.name, setting.location, setting.line)
        return
    if subject.definition is None:
        return
    for role_def in subject.definition.roles:
        for variable in role_def.environment:
            if variable.value:
                yield ValueSite(
                    "environment variable",
                    variable.name,
                    variable.value,
                    role_def.name,
                    variable.location,  # the reader prefixes the package part
                    variable.line,
                )


def _own_facts_or_not_applicable(subject: ServiceModelSubject) -> None:
    own = subject.configuration if subject.primary_kind == CSCFG else subject.definition
    if own is None:
        raise NotApplicable(f"no parsed {subject.primary_kind} facts to scan for secrets")


# ---- rules -------------------------------------------------------------------------------------


class _ValueSecretRule(Rule):
    """Base for rules that scan literal values for one family of secret shapes."""

    applies_to = frozenset({CSCFG, CSDEF, CSPKG})
    waivable = False
    tags = ("secrets", "service-model")
    advice = "rotate it and supply it at deployment time from a secret store instead of the file"

    def shapes(self, site: ValueSite) -> list[SecretShape]:
        raise NotImplementedError  # abstract

    def check(self, subject: ServiceModelSubject) -> Iterable[Finding]:
        _own_facts_or_not_applicable(subject)
        for site in value_sites(subject):
            shapes = self.shapes(site)
            if not shapes:
                continue
            kinds = sorted({s.kind for s in shapes})
            fields = sorted({s.field for s in shapes if s.field})
            evidence = {
                "role": site.role,
                site.what.replace(" ", "_"): site.name,
                "kind": ", ".join(kinds),
                "length": ", ".join(str(s.length) for s in shapes),
            }
            if fields:
                evidence["field"] = ", ".join(fields)
            where = f" ({', '.join(f + '=' for f in fields)})" if fields else ""
            yield self.finding(
                subject,
                site.location,
                f"{site.what.capitalize()} '{site.name}' of role '{site.role}' holds a {kinds[0]} in plain "
                f"text{where}: {self.advice}.",
                evidence=evidence,
                line=site.line,
            )


class PlaintextStorageAccountKey(_ValueSecretRule):
    """A storage account key is written in plain text in the service model.

    ## What it does
    Looks at every `.cscfg` setting value and every literal csdef environment variable for an
    `AccountKey=` field of a storage connection string, or for a bare value shaped like a storage
    account key (88 base64 characters ending in `==`). Placeholders (`YOURSTORAGEACCOUNTKEY`, `#{Key}`)
    and the storage emulator's published key are ignored.

    ## Why is this bad?
    An account key grants full control of the storage account: every blob, table and queue,
    including the diagnostics data. Configuration files end up in source control, build logs and
    support tickets; a key found there must be treated as leaked.

    ## Example
    ```xml
    <Setting name="DataConnectionString"
             value="DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey=Qd8u…==" />
    ```

    ## Use instead
    Rotate the key, keep the checked-in file free of it (`UseDevelopmentStorage=true` in the local
    configuration, a token such as `#{StorageKey}` in the cloud one) and inject the real value at
    deployment time from a secret store.

    ## References
    - Manage storage account access keys: https://learn.microsoft.com/en-us/azure/storage/common/storage-account-keys-manage
    - Configure Azure Storage connection strings: https://learn.microsoft.com/en-us/azure/storage/common/storage-configure-connection-string
    - Azure Cloud Services (classic) Config Schema (.cscfg file): https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-file
    """

    id = "VMR301"
    name = "plaintext-storage-account-key"
    severity = Severity.CRITICAL
    references = refs("storage-keys", "storage-connection-strings", "cscfg-schema")

    def shapes(self, site: ValueSite) -> list[SecretShape]:
        return storage_key_shapes(site.value)


class PlaintextConnectionStringPassword(_ValueSecretRule):
    """A connection string in the service model carries a password in plain text.

    ## What it does
    Parses every `.cscfg` setting value and literal csdef environment variable as a
    `;`-separated connection string and reports a non-empty `Password=` or `Pwd=` field
    (SQL Server / SQL Database, MySQL, PostgreSQL and similar), unless it is a placeholder.

    ## Why is this bad?
    Whoever reads the configuration can log in to the database with that account. Cloud Service
    configurations travel with the package and sit in source control and deployment histories.

    ## Example
    ```xml
    <Setting name="SqlDatabaseConnectionString"
             value="Server=tcp:x.database.windows.net;Database=Db;User ID=app;Password=…;Encrypt=True" />
    ```

    ## Use instead
    Rotate the password; inject the connection string at deployment time from a secret store, or use
    an identity-based login so that no password exists in configuration.

    ## References
    - Connection strings and configuration files (ADO.NET): https://learn.microsoft.com/en-us/dotnet/framework/data/adonet/connection-strings-and-configuration-files
    - Azure Cloud Services (classic) Config Schema (.cscfg file): https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-file
    """

    id = "VMR302"
    name = "plaintext-connection-string-password"
    severity = Severity.CRITICAL
    references = refs("adonet-connection-strings", "cscfg-schema")

    def shapes(self, site: ValueSite) -> list[SecretShape]:
        return password_shapes(site.value)


class PlaintextSharedAccessKey(_ValueSecretRule):
    """A Service Bus / Event Hubs shared access key or a SAS token is written in plain text.

    ## What it does
    Reports `SharedAccessKey=`, `SharedSecretValue=` (ACS-era Service Bus issuer secret) and
    `SharedAccessSignature=` fields of connection strings, and `sig=` signatures of SAS URLs, in
    `.cscfg` setting values and literal csdef environment variables.

    ## Why is this bad?
    A shared access key signs tokens for its namespace or entity: with the usual
    `RootManageSharedAccessKey` that is full management of the namespace. A SAS token grants its
    permissions to anyone holding it until it expires.

    ## Example
    ```xml
    <Setting name="Microsoft.ServiceBus.ConnectionString"
             value="Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root…;SharedAccessKey=…" />
    ```

    ## Use instead
    Regenerate the key; give the role a narrowly scoped policy (send or listen only) and inject its
    connection string at deployment time from a secret store.

    ## References
    - Service Bus access control with Shared Access Signatures: https://learn.microsoft.com/en-us/azure/service-bus-messaging/service-bus-sas
    - Grant limited access with shared access signatures (SAS): https://learn.microsoft.com/en-us/azure/storage/common/storage-sas-overview
    """

    id = "VMR303"
    name = "plaintext-shared-access-key"
    severity = Severity.CRITICAL
    references = refs("service-bus-sas", "storage-sas")

    def shapes(self, site: ValueSite) -> list[SecretShape]:
        return shared_key_shapes(site.value)


class SecretNamedSettingValue(_ValueSecretRule):
    """A setting or variable named like a secret (`…Password`, `…Secret`, `…Key`, `…Token`) has a literal value.

    ## What it does
    Reports `.cscfg` settings and literal csdef environment variables whose name ends in
    `Password`, `Pwd`, `Secret`, `Token`, `Key`, `ApiKey`, `AccessKey` or `Credential(s)` and whose value is
    not empty, not a placeholder, not a flag or number, and not a CMS-encrypted blob.
    `AccountEncryptedPassword` (the RDP password, CMS-encrypted by the SDK) and names that are not
    secrets (`…PublicKey`, `…InstrumentationKey`, `…KeyName`) are left alone, and a value already reported
    by VMR301-VMR303 is not reported twice.

    ## Why is this bad?
    The value is very likely a credential (an API key, an admin password, a signing secret) and is
    readable by anyone who can read the configuration.

    ## Example
    ```xml
    <Setting name="SendGridPassword" value="…" />
    ```

    ## Use instead
    Rotate the credential and inject it at deployment time from a secret store; leave the checked-in
    value empty or a token such as `#{SendGridPassword}`.

    ## References
    - Azure Cloud Services (classic) Config Schema (.cscfg file): https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-file
    - Enable Remote Desktop Connection for a role in Azure Cloud Services (classic) — the encrypted RDP password: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-role-enable-remote-desktop-new-portal
    """

    id = "VMR304"
    name = "secret-named-setting-value"
    severity = Severity.HIGH
    references = refs("cscfg-schema", "cloud-services-rdp")

    def shapes(self, site: ValueSite) -> list[SecretShape]:
        if site.name == REMOTE_ACCESS_PASSWORD or not name_suggests_secret(site.name):
            return []
        if storage_key_shapes(site.value) or password_shapes(site.value) or shared_key_shapes(site.value):
            return []  # VMR301-VMR303 report it with a more precise kind
        if not value_could_be_secret(site.value):
            return []
        return [SecretShape("secret (by name)", "", len(site.value.strip()))]
