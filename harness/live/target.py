"""The deployment target file: where the deployment is and how to reach it (see CONTRACT.md).

Secrets are never written in the file: they are references, ``{file: PATH}`` or ``{env: VAR}``, resolved
only when used. A bad file is a :class:`TargetError` naming the file, the key and the problem.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.live.errors import TargetError
from harness.live.masking import Masker

MAX_TARGET_FILE = 256 * 1024
MAX_SECRET_FILE = 64 * 1024


@dataclass(frozen=True)
class SecretRef:
    """A secret by reference: a file (relative to the target file) or an environment variable."""

    file: Path | None = None
    env: str | None = None

    def describe(self) -> str:
        return f"file {self.file}" if self.file is not None else f"environment variable {self.env}"


#: ``management.api``: which management back end reaches the deployment (harness/live/backends/).
ASM, VMSS = "asm", "vmss"
MANAGEMENT_APIS = (ASM, VMSS)
#: Azure Resource Manager in Azure's public cloud (``management.url`` of an ``api: vmss`` target by default).
ARM_PUBLIC_URL = "https://management.azure.com"
#: ``management.credential.kind`` of an ``api: vmss`` target: the azure-identity credential used.
CREDENTIAL_KINDS = ("default", "cli", "managed_identity", "workload_identity", "client_secret")


@dataclass(frozen=True)
class Credential:
    """How an ARM back end gets its tokens (azure-identity). ``secret`` (client_secret) is a reference;
    ``token_file`` (workload_identity) is the federated token's file."""

    kind: str = "default"
    tenant_id: str | None = None
    client_id: str | None = None
    secret: SecretRef | None = None
    token_file: Path | None = None


@dataclass(frozen=True)
class Management:
    url: str
    subscription_id: str
    service: str  # asm: the cloud service; vmss: the scale set's name (as shown in reports)
    slot: str | None = None
    deployment: str | None = None
    certificate: SecretRef | None = None  # the certificate is not secret, but may share the file with the key
    key: SecretRef | None = None
    ca: Path | None = None
    verify: bool = True
    api: str = ASM
    # ---- api: vmss (Azure Resource Manager) ----
    resource_group: str | None = None
    scale_set: str | None = None
    #: the load balancer in front of the scale set; None: the one the scale set's network profile names
    load_balancer: str | None = None
    credential: Credential = field(default_factory=Credential)
    #: the Microsoft Entra authority host (a non-public cloud, or the local fabric's token endpoint)
    authority: str | None = None
    #: the token audience of Resource Manager (a sovereign cloud's own; the public cloud's by default, which
    #: is also what the local fabric expects)
    audience: str = ARM_PUBLIC_URL

    @property
    def scheme(self) -> str:
        return urllib.parse.urlsplit(self.url).scheme

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).netloc


@dataclass(frozen=True)
class WinRM:
    endpoint: str = "WinRM"
    scheme: str = "https"
    transport: str = "ntlm"
    username: str = ""
    password: SecretRef | None = None
    ca: Path | None = None
    verify: bool = True
    #: instance (computer name, instance id or name) -> (host, port) of its WinRM listener, given by hand
    #: (``api: vmss``: over an inbound NAT rule or instance public IP the load balancer does not show)
    addresses: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True)
class Storage:
    connection_string: SecretRef | None = None
    container: str = "vmrole-probe"


@dataclass(frozen=True)
class Model:
    csdef: Path | None = None


@dataclass(frozen=True)
class Identify:
    header: str | None = "X-Served-By"
    body_regex: str | None = r"served-by (\S+)"
    banner_regex: str | None = r"VMROLE (\S+)"


@dataclass(frozen=True)
class Rotation:
    confidence: float = 0.999
    probe_grace_seconds: float = 3.0
    busy_hook: str | None = None


@dataclass(frozen=True)
class Reimage:
    instance: str = "auto"
    timeout_seconds: float = 300.0
    #: vmss: LUN -> the volume its marker goes on (else the guest is asked which volume is on that LUN)
    data_disks: tuple[tuple[int, str], ...] = ()
    #: vmss: "auto" (the volume labelled Temporary Storage), "none" (no marker), or the volume's path
    temp_disk: str = "auto"


@dataclass(frozen=True)
class Timeouts:
    connect: float = 3.0
    read: float = 10.0
    ready: float = 120.0
    #: How long 409 ConflictError answers are retried (with backoff) before an operation is given up.
    conflict_retry: float = 120.0


@dataclass(frozen=True)
class Target:
    name: str
    path: Path
    management: Management
    winrm: WinRM = field(default_factory=WinRM)
    storage: Storage = field(default_factory=Storage)
    model: Model = field(default_factory=Model)
    identify: Identify = field(default_factory=Identify)
    rotation: Rotation = field(default_factory=Rotation)
    reimage: Reimage = field(default_factory=Reimage)
    app_state_paths: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: Whether instances' own addresses (IpAddress:LocalPort from Get Deployment) are reachable from here.
    direct_instance_addresses: bool = False

    def secret(self, ref: SecretRef | None) -> str:
        """Resolve a secret reference; TargetError when it cannot be read (never shows the value)."""
        if ref is None:
            raise TargetError(f"{self.path}: a secret is needed here but none is configured")
        if ref.env is not None:
            value = os.environ.get(ref.env)
            if value is None:
                raise TargetError(f"{self.path}: environment variable {ref.env} is not set")
            return value
        assert ref.file is not None
        try:
            size = ref.file.stat().st_size
            if size > MAX_SECRET_FILE:
                raise TargetError(f"{self.path}: secret file {ref.file} is over {MAX_SECRET_FILE} bytes")
            return ref.file.read_text("utf-8").strip()
        except OSError as exc:
            raise TargetError(f"{self.path}: cannot read secret file {ref.file} ({exc.strerror})") from None

    def masker(self) -> Masker:
        """A masker knowing every secret this target can resolve right now."""
        masker = Masker()
        refs = (self.management.key, self.management.credential.secret, self.winrm.password)
        for ref in (*refs, self.storage.connection_string):
            if ref is None:
                continue
            try:
                value = self.secret(ref)
            except TargetError:
                continue
            masker.add(value)
            if ref is self.storage.connection_string:
                for part in value.split(";"):  # the account key inside the connection string
                    if part.lower().startswith(("accountkey=", "sharedaccesssignature=")):
                        masker.add(part.split("=", 1)[1])
        return masker


# ---- loading ---------------------------------------------------------------------------------


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent

    def fail(self, key: str, problem: str) -> TargetError:
        return TargetError(f"target file {self.path}: {key}: {problem}")

    def section(self, data: dict[str, Any], key: str, allowed: set[str], required: bool = False) -> dict[str, Any]:
        value = data.get(key)
        if value is None:
            if required:
                raise self.fail(key, "is required")
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, "must be a mapping")
        unknown = set(value) - allowed
        if unknown:
            raise self.fail(key, f"unknown keys {sorted(unknown, key=str)}")  # YAML keys: any type
        return value

    def text(self, data: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                raise self.fail(f"{where}.{key}", "is required")
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{where}.{key}", "must be a non-empty string")
        return value.strip()

    def number(self, data: dict[str, Any], key: str, where: str, default: float, low: float, high: float) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
            raise self.fail(f"{where}.{key}", f"must be a number between {low:g} and {high:g}")
        return float(value)

    def flag(self, data: dict[str, Any], key: str, where: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key}", "must be true or false")
        return value

    def file(self, value: Any, where: str) -> Path:
        if isinstance(value, dict) and set(value) == {"file"}:
            value = value["file"]
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, "must be a file path")
        path = (self.base / os.path.expanduser(value)).resolve()
        if not path.is_file():
            raise self.fail(where, f"file {path} does not exist")
        return path

    def secret(self, data: dict[str, Any], key: str, where: str, required: bool = False) -> SecretRef | None:
        value = data.get(key)
        if value is None:
            if required:
                raise self.fail(f"{where}.{key}", "is required ({file: PATH} or {env: VAR})")
            return None
        if isinstance(value, str):
            raise self.fail(
                f"{where}.{key}", "secrets are not written in the target file: use {file: PATH} or {env: VAR}"
            )
        if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("file", "env"):
            raise self.fail(f"{where}.{key}", "expected {file: PATH} or {env: VAR}")
        if "env" in value:
            if not isinstance(value["env"], str) or not value["env"].strip():
                raise self.fail(f"{where}.{key}", "env must name a variable")
            return SecretRef(env=value["env"].strip())
        return SecretRef(file=self.file(value["file"], f"{where}.{key}"))


TOP_KEYS = {
    "name", "management", "winrm", "storage", "model", "identify", "rotation", "reimage", "app_state_paths",
    "services", "timeouts", "direct_instance_addresses",
}  # fmt: skip


ASM_KEYS = {"api", "url", "subscription_id", "service", "slot", "deployment", "certificate", "key", "ca", "verify"}
VMSS_KEYS = {
    "api", "url", "subscription_id", "resource_group", "scale_set", "load_balancer", "credential", "authority",
    "audience", "ca", "verify",
}  # fmt: skip
CREDENTIAL_KEYS = {"kind", "tenant_id", "client_id", "secret", "token_file"}


def _asm_management(r: _Reader, m: dict[str, Any], url: str) -> Management:
    """``management`` of the classic Service Management API (``api: asm``, the default)."""
    slot, deployment = r.text(m, "slot", "management"), r.text(m, "deployment", "management")
    if (slot is None) == (deployment is None):
        raise r.fail("management", "give exactly one of slot and deployment")
    if slot is not None and slot.lower() not in ("production", "staging"):
        raise r.fail("management.slot", "must be production or staging")
    # The certificate itself is public: a plain path is fine (the key must be a reference).
    cert_value = m.get("certificate")
    certificate = SecretRef(file=r.file(cert_value, "management.certificate")) if cert_value is not None else None
    management = Management(
        url=url,
        subscription_id=r.text(m, "subscription_id", "management", required=True) or "",
        service=r.text(m, "service", "management", required=True) or "",
        slot=slot,
        deployment=deployment,
        certificate=certificate,
        key=r.secret(m, "key", "management"),
        ca=r.file(m["ca"], "management.ca") if m.get("ca") is not None else None,
        verify=r.flag(m, "verify", "management", True),
    )
    if management.scheme == "https" and management.certificate is None:
        raise r.fail("management.certificate", "an https management endpoint needs the management certificate")
    return management


def _vmss_management(r: _Reader, m: dict[str, Any], url: str) -> Management:
    """``management`` of an ARM VM scale set (``api: vmss``): subscription, resource group, scale set, the
    load balancer (optional) and the azure-identity credential; ``url``/``authority``/``ca`` for another cloud."""
    authority = r.text(m, "authority", "management")
    if authority is not None:
        try:
            parts = urllib.parse.urlsplit(authority if "//" in authority else f"https://{authority}")
        except ValueError:
            raise r.fail("management.authority", "is not a valid host or URL") from None
        if parts.scheme != "https" or not parts.netloc or "@" in parts.netloc:
            raise r.fail("management.authority", "expected an https authority host (https://login.example)")
    if urllib.parse.urlsplit(url).scheme != "https":
        raise r.fail("management.url", "Azure Resource Manager is reached over https only (bearer tokens)")
    c = m.get("credential") or {}
    if not isinstance(c, dict):
        raise r.fail("management.credential", "must be a mapping (kind, tenant_id, client_id, secret, token_file)")
    if set(c) - CREDENTIAL_KEYS:
        raise r.fail("management.credential", f"unknown keys {sorted(set(c) - CREDENTIAL_KEYS, key=str)}")
    kind = (r.text(c, "kind", "management.credential") or "default").lower()
    if kind not in CREDENTIAL_KINDS:
        raise r.fail("management.credential.kind", f"must be one of {', '.join(CREDENTIAL_KINDS)}")
    credential = Credential(
        kind=kind,
        tenant_id=r.text(c, "tenant_id", "management.credential"),
        client_id=r.text(c, "client_id", "management.credential"),
        secret=r.secret(c, "secret", "management.credential", required=kind == "client_secret"),
        token_file=r.file(c["token_file"], "management.credential.token_file") if c.get("token_file") else None,
    )
    if kind == "client_secret" and (credential.tenant_id is None or credential.client_id is None):
        raise r.fail("management.credential", "client_secret needs tenant_id and client_id")
    if kind != "client_secret" and credential.secret is not None:
        raise r.fail("management.credential.secret", f"applies to kind client_secret only (kind is {kind})")
    scale_set = r.text(m, "scale_set", "management", required=True) or ""
    return Management(
        url=url.rstrip("/"),
        subscription_id=r.text(m, "subscription_id", "management", required=True) or "",
        service=scale_set,
        api=VMSS,
        resource_group=r.text(m, "resource_group", "management", required=True),
        scale_set=scale_set,
        load_balancer=r.text(m, "load_balancer", "management"),
        credential=credential,
        authority=authority,
        audience=(r.text(m, "audience", "management") or ARM_PUBLIC_URL).rstrip("/"),
        ca=r.file(m["ca"], "management.ca") if m.get("ca") is not None else None,
        verify=r.flag(m, "verify", "management", True),
    )


def _addresses(r: _Reader, value: Any) -> tuple[tuple[str, str, int], ...]:
    """``winrm.addresses``: ``{instance: "host:port"}``."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise r.fail("winrm.addresses", "must be a mapping of instance to host:port")
    out = []
    for instance, address in value.items():
        host, sep, port = str(address).rpartition(":")
        number = int(port) if sep and port.isascii() and port.isdigit() else 0
        if not isinstance(instance, (str, int)) or not host.strip() or not 0 < number < 65536:
            raise r.fail(f"winrm.addresses.{instance}", f"expected host:port, got {address!r}")
        out.append((str(instance), host.strip().strip("[]"), number))
    return tuple(out)


def _data_disk_volumes(r: _Reader, value: Any) -> tuple[tuple[int, str], ...]:
    """``reimage.data_disks``: {LUN (0-63): the volume's path in the guest, e.g. 'F:\\'}."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise r.fail("reimage.data_disks", "must be a mapping of LUN to the volume's path (e.g. {0: 'F:\\'})")
    out = []
    for lun, volume in value.items():
        text = str(lun).strip() if isinstance(lun, (int, str)) and not isinstance(lun, bool) else ""
        number = int(text) if text.isdigit() else None
        if number is None or not 0 <= number <= 63:
            raise r.fail("reimage.data_disks", f"{lun!r} is not a LUN (0-63)")
        if not isinstance(volume, str) or not volume.strip():
            raise r.fail(f"reimage.data_disks.{number}", "must be the volume's path in the guest (e.g. 'F:\\')")
        out.append((number, volume.strip()))
    return tuple(sorted(out))


def load_target(path: Path) -> Target:
    path = Path(path)
    r = _Reader(path.resolve())
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise TargetError(f"target file {path}: cannot read it ({exc.strerror or exc})") from None
    if size > MAX_TARGET_FILE:
        raise TargetError(f"target file {path}: {size} bytes, over the {MAX_TARGET_FILE} byte limit")
    try:
        data = yaml.safe_load(path.read_bytes()[:MAX_TARGET_FILE])
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise TargetError(f"target file {path}: not valid YAML{at}") from None
    if not isinstance(data, dict):
        raise TargetError(f"target file {path}: expected a mapping at the top level")
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise TargetError(f"target file {path}: unknown keys {sorted(unknown, key=str)}")  # YAML keys: any type

    m = r.section(data, "management", ASM_KEYS | VMSS_KEYS, required=True)
    api = (r.text(m, "api", "management") or ASM).lower()
    if api not in MANAGEMENT_APIS:
        raise r.fail("management.api", f"must be one of {', '.join(MANAGEMENT_APIS)} (got {api!r})")
    other = set(m) - (ASM_KEYS if api == ASM else VMSS_KEYS)
    if other:
        raise r.fail("management", f"keys {sorted(other, key=str)} do not apply to api: {api}")
    url = r.text(m, "url", "management", required=api == ASM) or ARM_PUBLIC_URL
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. "Invalid IPv6 URL" (found by fuzzing); not echoed: it may hold credentials
        raise r.fail("management.url", "is not a valid URL (expected http(s)://host:port)") from None
    if "@" in parts.netloc:  # user:password@host: a secret written in the file, and shown wherever the URL is
        raise r.fail(
            "management.url",
            "credentials in the URL are not accepted (secrets are not written in the target file): the "
            "management API authenticates with management.certificate and management.key ({file: PATH} or {env: VAR})",
        )
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise r.fail("management.url", f"expected http(s)://host:port, got {url!r}")
    management = _asm_management(r, m, url) if api == ASM else _vmss_management(r, m, url)

    w = r.section(
        data, "winrm", {"endpoint", "scheme", "transport", "username", "password", "ca", "verify", "addresses"}
    )
    winrm = WinRM(
        endpoint=r.text(w, "endpoint", "winrm") or "WinRM",
        scheme=(r.text(w, "scheme", "winrm") or "https").lower(),
        transport=(r.text(w, "transport", "winrm") or "ntlm").lower(),
        username=r.text(w, "username", "winrm") or "",
        password=r.secret(w, "password", "winrm"),
        ca=r.file(w["ca"], "winrm.ca") if w.get("ca") is not None else None,
        verify=r.flag(w, "verify", "winrm", True),
        addresses=_addresses(r, w.get("addresses")),
    )
    if winrm.addresses and management.api != VMSS:
        raise r.fail("winrm.addresses", "applies to management.api: vmss (Get Deployment gives every instance's)")
    if winrm.scheme not in ("http", "https"):
        raise r.fail("winrm.scheme", "must be http or https")
    if winrm.transport not in ("ntlm", "ssl", "basic"):
        raise r.fail("winrm.transport", "must be ntlm, ssl or basic")

    s = r.section(data, "storage", {"connection_string", "container"})
    storage = Storage(
        connection_string=r.secret(s, "connection_string", "storage"),
        container=r.text(s, "container", "storage") or "vmrole-probe",
    )
    md = r.section(data, "model", {"csdef"})
    model = Model(csdef=r.file(md["csdef"], "model.csdef") if md.get("csdef") is not None else None)
    i = r.section(data, "identify", {"header", "body_regex", "banner_regex"})
    identify = Identify(
        header=r.text(i, "header", "identify") if "header" in i else Identify.header,
        body_regex=r.text(i, "body_regex", "identify") if "body_regex" in i else Identify.body_regex,
        banner_regex=r.text(i, "banner_regex", "identify") if "banner_regex" in i else Identify.banner_regex,
    )
    ro = r.section(data, "rotation", {"confidence", "probe_grace_seconds", "busy_hook"})
    rotation = Rotation(
        confidence=r.number(ro, "confidence", "rotation", 0.999, 0.5, 0.999999),
        probe_grace_seconds=r.number(ro, "probe_grace_seconds", "rotation", 3.0, 0.0, 600.0),
        busy_hook=r.text(ro, "busy_hook", "rotation"),
    )
    re_ = r.section(data, "reimage", {"instance", "timeout_seconds", "data_disks", "temp_disk"})
    reimage = Reimage(
        instance=r.text(re_, "instance", "reimage") or "auto",
        timeout_seconds=r.number(re_, "timeout_seconds", "reimage", 300.0, 1.0, 7200.0),
        data_disks=_data_disk_volumes(r, re_.get("data_disks")),
        temp_disk=r.text(re_, "temp_disk", "reimage") or "auto",
    )
    t = r.section(data, "timeouts", {"connect", "read", "ready", "conflict_retry"})
    timeouts = Timeouts(
        connect=r.number(t, "connect", "timeouts", 3.0, 0.1, 300.0),
        read=r.number(t, "read", "timeouts", 10.0, 0.1, 600.0),
        ready=r.number(t, "ready", "timeouts", 120.0, 1.0, 7200.0),
        conflict_retry=r.number(t, "conflict_retry", "timeouts", 120.0, 0.0, 7200.0),
    )
    lists = {}
    for key in ("app_state_paths", "services"):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise r.fail(key, "must be a list of strings")
        lists[key] = tuple(v.strip() for v in value)
    name = r.text(data, "name", "target") or path.name.split(".")[0]
    return Target(
        name=name,
        path=path.resolve(),
        management=management,
        winrm=winrm,
        storage=storage,
        model=model,
        identify=identify,
        rotation=rotation,
        reimage=reimage,
        app_state_paths=lists["app_state_paths"],
        services=lists["services"],
        timeouts=timeouts,
        direct_instance_addresses=r.flag(data, "direct_instance_addresses", "target", False),
    )


# ---- credentials that would travel in clear ---------------------------------------------------

#: The command-line opt-in that accepts them (also ini ``vmr_allow_cleartext_credentials`` and environment
#: ``VMR_ALLOW_CLEARTEXT_CREDENTIALS``). Never a key of the target file: whoever can write the file is not
#: the user whose secrets it would send.
CLEARTEXT_OPT_IN = "--vmr-allow-cleartext-credentials (vmrole probe --allow-cleartext-credentials)"


def cleartext_credentials(target: Target) -> list[str]:
    """Every credential this target would send in clear, as ``"field: why"``; empty when none would.

    In clear means readable on the wire: HTTP Basic (WinRM ``basic``, or ``ssl`` which is Basic too) over
    plain http, or a shared access signature in a plain-http blob URL. Not in clear: anything over https,
    NTLM over http (message encryption is negotiated), a storage account key over http (Shared Key signs
    requests and never sends the key), the management API over http (its credential is the client
    certificate, which only a TLS handshake presents). Messages name fields, never values.
    """
    problems: list[str] = []
    w = target.winrm
    if w.scheme == "http" and w.transport in ("basic", "ssl"):
        problems.append(
            f"winrm.transport: {w.transport} is HTTP Basic, and over scheme http it sends the WinRM user name "
            "and password in clear: use scheme https, or transport ntlm (message encryption over http)"
        )
    ref = target.storage.connection_string
    if ref is not None:
        try:
            value = target.secret(ref)
        except TargetError:
            value = ""  # unreadable now: the blob probe reports it, and sends nothing
        if _blob_sas_over_http(value):
            problems.append(
                "storage.connection_string: a shared access signature with a plain-http blob endpoint is sent "
                "in clear in every request URL: use https (DefaultEndpointsProtocol=https, an https BlobEndpoint)"
            )
    return problems


def _blob_sas_over_http(connection_string: str) -> bool:
    fields: dict[str, str] = {}
    for part in connection_string.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
    if not fields.get("sharedaccesssignature"):
        return False
    endpoint = fields.get("blobendpoint")
    try:
        scheme = urllib.parse.urlsplit(endpoint).scheme if endpoint else fields.get("defaultendpointsprotocol", "https")
    except ValueError:  # "Invalid IPv6 URL" (found with the fuzz harness): the scheme is what precedes the colon
        scheme = (endpoint or "").split(":", 1)[0].strip()
    return scheme.lower() == "http"


# ---- the local fabric as a target ------------------------------------------------------------


def fabric_target_document(data: dict[str, Any], state_dir: Path) -> dict[str, Any]:
    """The target file content for a running fabric (from its fabric.json), secrets by file reference.

    The fabric serves the management API on HTTPS with the management certificate only (as Azure does)."""
    mgmt = data["management"]
    secrets = state_dir / "secrets"
    port = mgmt["https_port"]
    document: dict[str, Any] = {
        "name": "local-fabric",
        "management": {
            "url": f"https://127.0.0.1:{port}",
            "subscription_id": data["subscription_id"],
            "service": data["service_name"],
            "slot": data["slot"].lower(),
        },
        "winrm": {
            "endpoint": "WinRM",
            "scheme": "https",
            "transport": "ntlm",
            "username": data["winrm"]["username"],
            "password": {"file": str(secrets / "winrm-password")},
            "ca": {"file": mgmt["ca"]},
        },
        "storage": {"connection_string": {"file": str(secrets / "storage-connection-string")}},
        "identify": {"header": "X-Served-By", "body_regex": r"served-by (\S+)", "banner_regex": r"VMROLE (\S+)"},
        "rotation": {
            "confidence": 0.999,
            "probe_grace_seconds": float(data["haproxy"]["probe"]["removal_window_s"]),
            "busy_hook": f"vmrole fabric fault busy --state {state_dir} --target {{instance}} --seconds {{seconds}}",
        },
        "reimage": {"instance": "auto", "timeout_seconds": 120},
        "services": ["W3SVC", "WinRM"],
        "timeouts": {"connect": 3, "read": 10, "ready": 60},
    }
    document["management"].update(
        certificate={"file": mgmt["client_cert"]}, key={"file": mgmt["client_key"]}, ca={"file": mgmt["ca"]}
    )
    csdef = state_dir / "ServiceDefinition.csdef"
    if csdef.exists():
        document["model"] = {"csdef": str(csdef)}
    return document


def fabric_vmss_management(data: dict[str, Any], scale_set: str | None = None) -> dict[str, Any]:
    """The ``management`` section (``api: vmss``) for a fabric serving its deployment over ARM
    (``vmrole fabric up --api vmss``): its ARM endpoint and token authority, the client secret by file."""
    arm = data.get("arm") or {}
    if not arm:
        raise TargetError("the fabric serves no ARM face (start it with: vmrole fabric up --api vmss)")
    names = list(arm.get("scale_sets") or [])
    name = scale_set or (names[0] if names else "")
    if scale_set is not None and scale_set not in names:
        raise TargetError(f"the fabric has no scale set {scale_set!r} (it has {', '.join(names) or 'none'})")
    return {
        "api": VMSS,
        "url": arm["endpoint"],
        "authority": arm["authority"],
        "subscription_id": arm["subscription_id"],
        "resource_group": arm["resource_group"],
        "scale_set": name,
        "load_balancer": arm.get("load_balancer"),
        "ca": {"file": arm["ca"]},
        "credential": {
            "kind": "client_secret",
            "tenant_id": arm["tenant_id"],
            "client_id": arm["client_id"],
            "secret": {"file": arm["client_secret_file"]},
        },
    }


def target_for_fabric(fabric: Any, *, api: str = ASM, scale_set: str | None = None) -> Target:
    """A Target for a running :class:`harness.fabric.client.Fabric` (written next to its state); ``api: vmss``
    reaches it through its ARM face (``scale_set``: which one, default the first)."""
    state = Path(fabric.layout.root)
    document = fabric_target_document(fabric.data, state)
    name = "target.vmrtarget.yml"
    if api == VMSS:
        document["management"] = fabric_vmss_management(fabric.data, scale_set)
        document["name"] = "local-fabric-vmss"
        name = "target-vmss.vmrtarget.yml"
    path = state / name
    path.write_text(yaml.safe_dump(document, sort_keys=False), "utf-8")
    return load_target(path)
