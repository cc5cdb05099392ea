"""Generated seeds for the kept corpora (``python -m tests.fuzz seeds [TARGET ...]``).

Small inputs built with the project's test factory and real tools (qemu-img, sfdisk, mkntfs + wimlib), a few KB
each: image seeds are sparse inputs (see :func:`tests.fuzz.targets.sparse_encode`) holding only the non-zero
sectors, and the NTFS seed keeps only the pages the reader touched. The real samples in ``../shared/samples`` are
never copied here: the runner reads them as extra seed folders at run time. Seeds are written as
``seed-<name>`` next to what fuzzing found; rerunning replaces them.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.fuzz.targets import DATA_DIR, MIB, TARGETS, MemorySource, corpus_dir, sparse_encode

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _tool(name: str) -> str | None:
    return shutil.which(name) or next((f"{d}/{name}" for d in ("/usr/sbin", "/sbin") if Path(d, name).exists()), None)


# ---- text seeds ------------------------------------------------------------------------------------------------


def _models() -> dict[str, bytes]:
    folder = REPO / "harness" / "samples" / "vmrole"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def seeds_xml() -> dict[str, bytes]:
    out = {f"model-{k}": v for k, v in _models().items()}
    out["utf16"] = '<?xml version="1.0" encoding="utf-16"?><a xmlns="urn:x" b="1"><c>é</c></a>'.encode("utf-16")
    out["ns-cdata"] = b'<?xml version="1.0"?><p:a xmlns:p="urn:p" p:x="1"><![CDATA[x<y]]><!-- c --><?pi x?></p:a>'
    out["latin1"] = '<?xml version="1.0" encoding="iso-8859-1"?><a>\xe9</a>'.encode("latin-1")
    return out


def seeds_csdef() -> dict[str, bytes]:
    return {k: v for k, v in _models().items() if k.endswith(".csdef")}


def seeds_cscfg() -> dict[str, bytes]:
    return {k: v for k, v in _models().items() if k.endswith(".cscfg")}


def seeds_unattend() -> dict[str, bytes]:
    from harness.testing.windows import answer_file

    return {
        "plain": answer_file().encode(),
        "admin-plain": answer_file(admin_password="P@ssw0rd!").encode(),
        "admin-b64": answer_file(admin_password="P@ssw0rd!", plain_text=False).encode(),
        "autologon": answer_file(autologon_password="secret", comment="x").encode(),
    }


def seeds_firewall() -> dict[str, bytes]:
    from harness.testing import windows

    rules = {**windows._common_rules(), **windows._rdp_rules_2008()}
    out = {f"rule-{i}": text.encode() for i, text in enumerate(list(rules.values())[:6])}
    out["many"] = "\n".join(list(rules.values())[:12]).encode()
    out["legacy"] = b"3389:TCP:*:Enabled:Remote Desktop"
    out["ranges"] = (
        b"v2.20|Action=Block|Dir=In|Protocol=17|LPort=1000-2000|LPort=RPC-EPMap|RA4=LocalSubnet|Profile=Public|"
    )
    return out


def seeds_target() -> dict[str, bytes]:
    full = """name: fuzz
management:
  url: https://127.0.0.1:8443
  subscription_id: 00000000-0000-0000-0000-0000000000aa
  service: ContosoVMRole
  slot: production
  certificate: {file: mgmt.pem}
  key: {file: secret.txt}
  verify: true
winrm:
  scheme: https
  transport: ntlm
  username: azureuser
  password: {env: VMR_FUZZ_SECRET}
storage:
  connection_string: {file: secret.txt}
services: [W3SVC, WinRM]
app_state_paths: ['C:\\\\App\\\\state']
model: {csdef: secret.txt}
identify: {header: X-Served-By, body_regex: 'served-by (\\S+)'}
rotation: {confidence: 0.99, probe_grace_seconds: 1.5}
reimage: {instance: WebVM_IN_0, timeout_seconds: 600}
timeouts: {connect: 2, read: 5.5, ready: 60, conflict_retry: 0}
direct_instance_addresses: false
"""
    return {
        "full": full.encode(),
        "minimal": b"management: {url: 'http://127.0.0.1:1', subscription_id: s, service: x, deployment: d}\n",
        "absolute-secret": full.replace("{file: secret.txt}", "{file: /etc/hostname}").encode(),
        "anchors": b"a: &a [1, 2]\nb: *a\nname: *a\n",
        "sas-over-http": b"management: {url: 'http://127.0.0.1:1', subscription_id: s, service: x, deployment: d}\n"
        b"storage: {connection_string: {env: VMR_FUZZ_CONN}}\n"
        b"#;SharedAccessSignature=sv=1&sig=x;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1\n",
    }


def seeds_mgmt() -> dict[str, bytes]:
    sub = "00000000-0000-0000-0000-0000000000aa"
    base = f"/{sub}/services/hostedservices"
    head = "x-ms-version: 2014-06-01\r\nHost: 127.0.0.1\r\nAuthorization: Bearer fuzz-token-0123456789\r\n"
    reqs = {
        "list": f"GET {base} HTTP/1.1\r\n{head}\r\n",
        "embed": f"GET {base}/ContosoVMRole?embed-detail=true HTTP/1.1\r\n{head}\r\n",
        "slot": f"GET {base}/ContosoVMRole/deploymentslots/Production HTTP/1.1\r\n{head}\r\n",
        "reimage": f"POST {base}/ContosoVMRole/deployments/c0ffee00c0ffee00c0ffee00c0ffee00/roleinstances/WebVM_IN_0"
        f"?comp=reimage HTTP/1.1\r\n{head}Content-Length: 4\r\n\r\nbody",
        "rebuild": f"POST {base}/ContosoVMRole/deploymentslots/production/roleinstances/WebVM_IN_0"
        f"?comp=rebuild&resources=allLocalDrives HTTP/1.1\r\n{head}Content-Length: 0\r\n\r\n",
        "operation": f"GET /{sub}/operations/01234567-89ab-cdef-0123-456789abcdef HTTP/1.1\r\n{head}\r\n",
        "no-version": f"DELETE {base} HTTP/1.0\r\n\r\n",
        "no-token": f"GET {base} HTTP/1.1\r\nx-ms-version: 2014-06-01\r\n\r\n",
        "bad-length": f"GET {base} HTTP/1.1\r\n{head}Content-Length: x1\r\n\r\n",
    }
    ns = 'xmlns="http://schemas.microsoft.com/windowsazure"'
    config = base64.b64encode(
        b'\xef\xbb\xbf<?xml version="1.0"?>\r\n<ServiceConfiguration serviceName="ContosoVMRole" '
        b'xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration">'
        b'<Role name="WebVM"><Instances count="2" /></Role></ServiceConfiguration>'
    ).decode()
    label = base64.b64encode(b"label").decode()
    dep = f"{base}/ContosoVMRole/deployments/c0ffee00c0ffee00c0ffee00c0ffee00"

    def post(path: str, body: str, method: str = "POST") -> str:
        length = len(body.encode())
        xml_head = f"{head}Content-Type: application/xml\r\nContent-Length: {length}\r\n"
        return f"{method} {path} HTTP/1.1\r\n{xml_head}\r\n{body}"

    bodies = {
        "create-deployment": post(
            f"{base}/ContosoVMRole/deploymentslots/staging",
            f"<CreateDeployment {ns}><Name>staged</Name><PackageUrl>http://127.0.0.1:10000/devstoreaccount1/"
            f"packages/app.cspkg</PackageUrl><Label>{label}</Label><Configuration>{config}</Configuration>"
            "<StartDeployment>true</StartDeployment><TreatWarningsAsError>false</TreatWarningsAsError>"
            "</CreateDeployment>",
        ),
        "change-config": post(
            f"{dep}/?comp=config",
            f"<ChangeConfiguration {ns}><Configuration>{config}</Configuration><Mode>Auto</Mode></ChangeConfiguration>",
        ),
        "status": post(
            f"{dep}/?comp=status", f"<UpdateDeploymentStatus {ns}><Status>Suspended</Status></UpdateDeploymentStatus>"
        ),
        "swap": post(
            f"{base}/ContosoVMRole",
            f"<Swap {ns}><Production>c0ffee00c0ffee00c0ffee00c0ffee00</Production>"
            "<SourceDeployment>b</SourceDeployment></Swap>",
        ),
        "create-service": post(
            base,
            f"<CreateHostedService {ns}><ServiceName>other</ServiceName><Label>{label}</Label>"
            "<Description>d</Description><Location>West US</Location></CreateHostedService>",
        ),
        "update-service": post(
            f"{base}/ContosoVMRole",
            f"<UpdateHostedService {ns}><Label>{label}</Label><Description>x</Description></UpdateHostedService>",
            "PUT",
        ),
        "delete-deployment": f"DELETE {dep} HTTP/1.1\r\n{head}\r\n",
        "isavailable": f"GET {base}/operations/isavailable/other HTTP/1.1\r\n{head}\r\n",
        "entities": post(
            f"{dep}/?comp=status",
            '<!DOCTYPE s [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            "<UpdateDeploymentStatus><Status>&b;</Status></UpdateDeploymentStatus>",
        ),
        "not-xml": post(f"{dep}/?comp=config", "<ChangeConfiguration><Configuration>"),
        "upgrade": post(
            f"{dep}/?comp=upgrade",
            f"<UpgradeDeployment {ns}><Mode>Manual</Mode><PackageUrl>http://127.0.0.1:10000/devstoreaccount1/"
            f"packages/app.cspkg</PackageUrl><Configuration>{config}</Configuration><Label>{label}</Label>"
            "<RoleToUpgrade>WebVM</RoleToUpgrade><Force>false</Force></UpgradeDeployment>",
        ),
        "walk": post(
            f"{dep}/?comp=walkupgradedomain",
            f"<WalkUpgradeDomain {ns}><UpgradeDomain>0</UpgradeDomain></WalkUpgradeDomain>",
        ),
        "delete-instances": post(
            f"{dep}/roleinstances/?comp=delete", f"<RoleInstances  {ns}><Name>WebVM_IN_0</Name></RoleInstances >"
        ),
        "add-certificate": post(
            f"{base}/ContosoVMRole/certificates",
            f"<CertificateFile {ns}><Data>MIIB</Data><CertificateFormat>cer</CertificateFormat>"
            "<Password /></CertificateFile>",
        ),
        "certificates": f"GET {base}/ContosoVMRole/certificates HTTP/1.1\r\n{head}\r\n",
        "subscription-operations": f"GET /{sub}/operations?StartTime=2026-01-01T00:00:00Z&EndTime=2027-01-01T00:00:00Z "
        f"HTTP/1.1\r\n{head}\r\n",
    }
    reqs.update(bodies)
    return {k: v.encode() for k, v in reqs.items()}


def seeds_control() -> dict[str, bytes]:
    tok = "X-Vmr-Token: fuzz-control-token-0123\r\n"

    def post(path: str, body: str) -> str:
        head = f"{tok}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        return f"POST {path} HTTP/1.1\r\n{head}\r\n{body}"

    reqs = {
        "status": f"GET /status HTTP/1.1\r\n{tok}\r\n",
        "fault": post("/faults", '{"kind": "busy", "target": "WebVM_IN_0", "seconds": 2, "delay_ms": 0}'),
        "fault-mgmt": post("/faults", '{"kind": "mgmt-500", "seconds": 1.5}'),
        "fault-unknown": post("/faults", '{"kind": "nope", "target": null}'),
        "fault-types": post("/faults", '{"kind": 1, "seconds": "x", "delay_ms": 1e999}'),
        "not-json": post("/faults", "{kind: busy"),
        "array": post("/faults", "[1, 2]"),
        "delete-all": f"DELETE /faults HTTP/1.1\r\n{tok}\r\n",
        "delete-one": f"DELETE /faults/f1 HTTP/1.1\r\n{tok}\r\n",
        "shutdown": post("/shutdown", ""),
        "no-token": "GET /status HTTP/1.1\r\n\r\n",
        "non-ascii-token": "GET /status HTTP/1.1\r\nX-Vmr-Token: \u00e9t\u00e9\r\n\r\n",
        "chunked": f"POST /faults HTTP/1.1\r\n{tok}Transfer-Encoding: chunked\r\n\r\n4\r\n{{}}\r\n0\r\n\r\n",
        "bad-length": f"POST /faults HTTP/1.1\r\n{tok}Content-Length: -1\r\n\r\n",
        "big-length": f"POST /faults HTTP/1.1\r\n{tok}Content-Length: 99999999999999\r\n\r\n",
    }
    return {k: v.encode("utf-8") for k, v in reqs.items()}


_ENV = (
    '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
    'xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell">'
    "<s:Header><a:To>http://127.0.0.1:5985/wsman</a:To>"
    "<w:ResourceURI>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</w:ResourceURI>"
    "<a:Action>{action}</a:Action><a:MessageID>uuid:6A4F3E1F-0000-0000-0000-000000000001</a:MessageID>"
    "<w:OperationTimeout>PT20.000S</w:OperationTimeout>{extra}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
)
_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
_SEL = '<w:SelectorSet><w:Selector Name="ShellId">11111111-2222-3333-4444-555555555555</w:Selector></w:SelectorSet>'


def seeds_winrm() -> dict[str, bytes]:
    opts = (
        '<w:OptionSet><w:Option Name="WINRS_NOPROFILE">FALSE</w:Option>'
        '<w:Option Name="WINRS_CODEPAGE">437</w:Option></w:OptionSet>'
    )
    stdin = base64.b64encode(b"dir\r\n").decode()
    items = {
        "create": ("http://schemas.xmlsoap.org/ws/2004/09/transfer/Create", opts, "<rsp:Shell><rsp:InputStreams>"
                   "stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams></rsp:Shell>"),
        "command": (f"{_SHELL}/Command", _SEL + opts, '<rsp:CommandLine><rsp:Command>ipconfig</rsp:Command>'
                    "<rsp:Arguments>/all</rsp:Arguments></rsp:CommandLine>"),
        "receive": (f"{_SHELL}/Receive", _SEL, '<rsp:Receive><rsp:DesiredStream CommandId="AAAA">stdout stderr'
                    "</rsp:DesiredStream></rsp:Receive>"),
        "signal": (f"{_SHELL}/Signal", _SEL, '<rsp:Signal CommandId="AAAA"><rsp:Code>'
                   "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate</rsp:Code></rsp:Signal>"),
        "send": (f"{_SHELL}/Send", _SEL, f'<rsp:Send><rsp:Stream Name="stdin" CommandId="AAAA" End="true">{stdin}'
                 "</rsp:Stream></rsp:Send>"),
        "delete": ("http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete", _SEL, ""),
    }  # fmt: skip
    return {k: _ENV.format(action=a, extra=x, body=b).encode() for k, (a, x, b) in items.items()}


# ---- packages ---------------------------------------------------------------------------------------------------


def seeds_cspkg() -> dict[str, bytes]:
    from harness.testing.cspkg import build_cspkg

    csdef = _models()["ServiceDefinition.csdef"]
    out = {}
    for label, kwargs in {
        "plain": {},
        "encrypted": {"encrypted": True},
        "bad-hash": {"corrupt_hash": ["*"]},
    }.items():
        try:
            built = build_cspkg(csdef, **kwargs)  # type: ignore[arg-type]
        except Exception:  # an option this factory version lacks: skip that seed
            continue
        out[label] = getattr(built, "data", None) or getattr(built, "bytes", None) or bytes(built)  # type: ignore[arg-type]
    return out


def seeds_zip() -> dict[str, bytes]:
    import io
    import zipfile

    out = dict(seeds_cspkg())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.txt", b"hello " * 20, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("dir/", b"")
        zf.writestr("b.bin", bytes(range(64)))
    out["small"] = buf.getvalue()
    return out


# ---- images ---------------------------------------------------------------------------------------------------


def _mbr_disk(path: Path, size: int, script: str) -> bytes:
    with path.open("wb") as fh:
        fh.truncate(size)
    sfdisk = _tool("sfdisk")
    if sfdisk is None:
        raise FileNotFoundError("sfdisk")
    subprocess.run([sfdisk, "-q", str(path)], input=script, text=True, check=True, capture_output=True)
    return path.read_bytes()


def _ntfs_boot(size_sectors: int) -> bytes:
    """A plausible NTFS boot sector (no MFT behind it): enough for a bare-volume ("none") partition style."""
    import struct

    boot = bytearray(512)
    boot[0:3] = b"\xebR\x90"
    boot[3:11] = b"NTFS    "
    struct.pack_into("<HBH", boot, 11, 512, 8, 0)
    boot[21] = 0xF8
    struct.pack_into("<QQQbxxxbxxx", boot, 40, size_sectors - 1, 4, size_sectors // 16, -10, 1)
    boot[510:512] = b"\x55\xaa"
    return bytes(boot)


def seeds_partitions(work: Path) -> dict[str, bytes]:
    out = {}
    disk = 4 * MIB
    out["mbr"] = _mbr_disk(
        work / "mbr.img", disk, "label: dos\nstart=2048, size=2048, type=7, bootable\nstart=4096, type=83\n"
    )
    out["mbr-extended"] = _mbr_disk(
        work / "ext.img", disk, "label: dos\nstart=2048, size=1024, type=7\nstart=3072, size=4096, type=5\n"
        "start=3200, size=1024, type=7\nstart=4352, size=1024, type=b\n"
    )  # fmt: skip
    out["gpt"] = _mbr_disk(
        work / "gpt.img", disk,
        "label: gpt\nstart=2048, size=2048, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=\"Basic data\"\n"
        "start=4096, size=2048, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n",
    )  # fmt: skip
    bare = bytearray(disk)
    bare[:512] = _ntfs_boot(disk // 512)
    out["bare-ntfs"] = bytes(bare)
    out["gpt-4k"] = _gpt_4k_disk(work / "gpt4k.img", disk)
    return {k: sparse_encode(v) for k, v in out.items()}


def _gpt_4k_disk(path: Path, size: int) -> bytes:
    """A GPT for 4096-byte logical sectors (header at byte 4096), written by fdisk -b 4096: sfdisk 2.38 writes
    512-byte-sector tables into files whatever its script says."""
    with path.open("wb") as fh:
        fh.truncate(size)
    fdisk = _tool("fdisk")
    if fdisk is None:
        raise FileNotFoundError("fdisk")
    # g: new GPT; n: partition 1 at LBA 256-511, t 11: Microsoft basic data; n: partition 2 after it; w: write.
    script = "g\nn\n1\n256\n511\nt\n11\nn\n2\n512\n767\nw\n"
    subprocess.run([fdisk, "-b", "4096", str(path)], input=script, text=True, check=True, capture_output=True)
    return path.read_bytes()


def _qemu(*args: str | Path) -> None:
    qemu = _tool("qemu-img")
    if qemu is None:
        raise FileNotFoundError("qemu-img")
    _run(qemu, *args)


def _raw_with_data(path: Path, size: int) -> Path:
    data = bytearray(size)
    for off in (0, 512 * 7, size // 2, size - 4096):  # a few non-zero sectors spread over the disk
        data[off : off + 512] = bytes((off // 512 + i) % 251 + 1 for i in range(512))
    data[510:512] = b"\x55\xaa"
    path.write_bytes(bytes(data))
    return path


def seeds_container(work: Path) -> dict[str, bytes]:
    from harness.testing.vhdwriter import write_differencing_vhd

    out: dict[str, bytes] = {}
    raw = _raw_with_data(work / "disk.raw", 2 * MIB)
    out["raw"] = sparse_encode(raw.read_bytes(), name=0)
    _qemu("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", raw, work / "fixed.vhd")
    out["vhd-fixed"] = sparse_encode((work / "fixed.vhd").read_bytes(), name=1)
    _qemu("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on", raw, work / "dyn.vhd")
    out["vhd-dynamic"] = sparse_encode((work / "dyn.vhd").read_bytes(), name=1)
    _qemu("convert", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic,block_size=1M", raw, work / "d.vhdx")
    out["vhdx-dynamic"] = sparse_encode((work / "d.vhdx").read_bytes(), name=2)
    # The parent every differencing seed refers to: a small fixed VHD the container target puts in its sandbox.
    parent_raw = _raw_with_data(work / "parent.raw", 1 * MIB)
    parent = work / "parent.vhd"
    _qemu("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", parent_raw, parent)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    (DATA_DIR / "parent.vhd.sprs").write_bytes(sparse_encode(parent.read_bytes(), name=1))
    for locator in ("relative", "absolute", "none"):
        child = work / f"child-{locator}.vhd"
        write_differencing_vhd(
            parent, child, writes={4096: b"\x11" * 1024}, locator=locator, block_size=512 * 1024,
            absolute_path_override="/tmp/does-not-exist/parent.vhd" if locator == "absolute" else None,
        )  # fmt: skip
        out[f"vhd-diff-{locator}"] = sparse_encode(child.read_bytes(), name=3)
    out.update(seeds_container_vhdx(work))
    return out


def seeds_container_vhdx(work: Path) -> dict[str, bytes]:
    """Differencing VHDX seeds (512 and 4096-byte sectors, fully and partially present blocks, a zero block)
    over ``parent.vhdx``, the small dynamic VHDX the container target puts in its sandbox, and one whose
    locator names the input itself (a cycle). Written by harness/testing/vhdxwriter.py with fixed identifiers,
    so rerunning gives the same bytes."""
    import uuid

    from harness.testing.vhdxwriter import write_base_vhdx, write_differencing_vhdx

    out: dict[str, bytes] = {}
    raw = _raw_with_data(work / "vparent.raw", 4 * MIB)
    parent = write_base_vhdx(work / "parent.vhdx", raw, data_write_guid=uuid.UUID(int=0x5EED))
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    (DATA_DIR / "parent.vhdx.sprs").write_bytes(sparse_encode(parent.read_bytes(), name=2))
    writes = {4096: b"\x11" * 1024, MIB: b"\x22" * 4096, 3 * MIB - 512: b"\x33" * 1024}
    child = work / "disk.vhdx"  # the name a sparse input with selector 2 takes in the sandbox
    write_differencing_vhdx(
        parent, child, writes=writes, zero_blocks=[2], data_write_guid=uuid.UUID(int=0xC1D), absent_fill=0
    )
    out["vhdx-diff"] = sparse_encode(child.read_bytes(), name=2)
    # 4096-byte sectors over the 512-byte parent (read, with a note): the 4K sector bitmap path.
    raw4k = work / "v4k.raw"
    raw4k.write_bytes(raw.read_bytes())
    parent4k = write_base_vhdx(work / "p4k.vhdx", raw4k, logical_sector_size=4096, data_write_guid=uuid.UUID(int=4))
    write_differencing_vhdx(
        parent4k, child, writes={8192: b"\x44" * 8192}, locator=[("parent_linkage", str(uuid.UUID(int=0x5EED))),
        ("relative_path", ".\\parent.vhdx")], data_write_guid=uuid.UUID(int=0x4C), absent_fill=0,
    )  # fmt: skip
    out["vhdx-diff-4k"] = sparse_encode(child.read_bytes(), name=2)
    write_differencing_vhdx(
        parent, child, locator=[("parent_linkage", str(uuid.UUID(int=0xC1C))), ("relative_path", "disk.vhdx")],
        data_write_guid=uuid.UUID(int=0xC1C),
    )  # fmt: skip
    out["vhdx-diff-self"] = sparse_encode(child.read_bytes(), name=2)
    return out


def _trace_ntfs(volume_bytes: bytes) -> bytes:
    """Only the pages the NTFS reader reads (inventory, walk, a few files), as a sparse input."""
    from harness.readers.image.ntfs import NtfsVolume

    class Tracing(MemorySource):
        touched: set[int] = set()

        def read_at(self, offset: int, length: int) -> bytes:
            data = super().read_at(offset, length)
            for page in range(offset // 4096, (offset + len(data) + 4095) // 4096):
                self.touched.add(page)
            return data

    src = Tracing(volume_bytes)
    vol = NtfsVolume(src)
    inv = vol.inventory()
    for n, (_path, entry) in enumerate(inv.walk()):
        if not entry.is_dir and n < 64:
            with contextlib.suppress(Exception):  # compressed or sparse: fine for a seed
                vol.read_file(entry, 4096)
    kept = bytearray(len(volume_bytes))
    for page in src.touched:
        kept[page * 4096 : (page + 1) * 4096] = volume_bytes[page * 4096 : (page + 1) * 4096]
    return sparse_encode(bytes(kept), granule=64)


def seeds_ntfs(work: Path) -> dict[str, bytes]:
    import sys

    sys.path.insert(0, str(REPO))
    from tests.images import ntfs_build

    if ntfs_build.missing_tools():
        raise FileNotFoundError(", ".join(ntfs_build.missing_tools()))
    out = {}
    tree = work / "tree"
    (tree / "Windows" / "System32" / "config").mkdir(parents=True)
    (tree / "Windows" / "System32" / "config" / "SYSTEM").write_bytes(b"regf" + bytes(100))
    (tree / "Users" / "Administrator").mkdir(parents=True)
    (tree / "unattend.xml").write_text("<unattend/>")
    (tree / "big.bin").write_bytes(bytes(range(256)) * 64)  # non-resident, one run
    for i in range(12):
        (tree / "Windows" / f"file{i:02d}.txt").write_text(f"file {i}\n")
    for cluster, sector in ((4096, 512), (1024, 512)):
        volume = ntfs_build.build_volume(tree, work / f"vol-{cluster}.img", 3 * MIB, cluster=cluster, sector=sector)
        out[f"volume-c{cluster}"] = _trace_ntfs(volume.read_bytes())
    # Many long hard-link names: the $FILE_NAME attributes overflow one record into an $ATTRIBUTE_LIST with
    # extension records.
    links = work / "links"
    (links / "Windows").mkdir(parents=True)
    first = links / "Windows" / "linked.dll"
    first.write_bytes(b"MZ" + bytes(range(200)))
    for i in range(24):
        (links / "Windows" / f"{'long-hard-link-name-' * 5}{i:02d}.dll").hardlink_to(first)
    volume = ntfs_build.build_volume(links, work / "vol-links.img", 3 * MIB, cluster=4096)
    out["volume-attribute-list"] = _trace_ntfs(volume.read_bytes())
    # Compressed files as Windows stores them: LZNT1 (ntfs-3g's compressor) and WOF chunks (wimlib's compressors)
    from harness.testing import ntfs_compressed

    if ntfs_compressed.unavailable() is None:
        files = {"Windows/System32/config/SYSTEM": b"regf" + b"compressible text " * 400, "b.bin": bytes(9000)}
        volume = ntfs_compressed.build_lznt1_volume(files, work / "vol-lznt1.img", 3 * MIB)
        out["volume-lznt1"] = _trace_ntfs(volume.read_bytes())
        fmts = {"Windows/System32/config/SYSTEM": "xpress4k", "b.bin": "lzx"}
        volume = ntfs_compressed.build_wof_volume(files, work / "vol-wof.img", 3 * MIB, fmt=fmts)
        out["volume-wof"] = _trace_ntfs(volume.read_bytes())
    return out


def seeds_decompress() -> dict[str, bytes]:
    """One unit or chunk per format, compressed by the real tools' code: LZNT1 units cut from an ntfs-3g
    volume are not needed, a hand-made stream in the [MS-XCA] layout is (a literal run then a match);
    XPRESS and LZX chunks by wimlib's compressors (harness.testing.ntfs_compressed)."""
    from harness.testing import ntfs_compressed

    text = b"".join(b"line %d of a compressible file\r\n" % i for i in range(1200))
    out = {}
    # LZNT1: a compressed chunk (header 0xB000 | size-1) of 8 literals then a 3-byte copy of offset 8
    chunk = bytes([0x00]) + b"ABCDEFGH" + bytes([0x01]) + (0x7000).to_bytes(2, "little")
    out["lznt1-literals-and-copy"] = (
        bytes([0]) + (65536 - 11).to_bytes(2, "little") + ((0xB000 | (len(chunk) - 1)).to_bytes(2, "little") + chunk)
    )
    if ntfs_compressed.unavailable() != "libwim (wimlib) is not installed":
        for fmt, selector in (("xpress4k", 1), ("xpress8k", 2), ("xpress16k", 3), ("lzx", 4)):
            _n, size = ntfs_compressed.WOF_FORMATS[fmt]
            stream = ntfs_compressed.wof_stream(text[:size], fmt)
            out[f"{fmt}-chunk"] = bytes([selector]) + bytes(2) + stream
            short = ntfs_compressed.wof_stream(text[: size - 100], fmt)
            out[f"{fmt}-short-chunk"] = bytes([selector]) + (100).to_bytes(2, "little") + short
    return out


def seeds_regf() -> dict[str, bytes]:
    from harness.testing.hivewriter import binary, build_hive, dword, expand_sz, multi_sz, qword, sz

    values = {
        "": sz("default"),
        "Name": sz("vm"),
        "Path": expand_sz("%SystemRoot%\\x"),
        "Count": dword(7),
        "Big": qword(1 << 40),
        "List": multi_sz(["a", "b", "ü"]),
        "Blob": binary(bytes(range(40))),
        "Tiny": binary(b"ab"),
    }
    out = {
        "small": build_hive({"ControlSet001\\Services\\Tcpip\\Parameters": values, "Select": {"Current": dword(1)}}),
        "bigdata": build_hive({"Software\\Big": {"Data": binary(bytes(range(256)) * 70)}}),
        "wide": build_hive({f"Keys\\K{i:03d}": {"v": dword(i)} for i in range(40)}),
        "unicode": build_hive({"Ключ\\子键": {"Значение": sz("данные")}}),
    }
    return out


# ---- writing ----------------------------------------------------------------------------------------------------

BUILDERS: dict[str, Callable[..., dict[str, bytes]]] = {
    "xml": seeds_xml,
    "csdef": seeds_csdef,
    "cscfg": seeds_cscfg,
    "zip": seeds_zip,
    "cspkg": seeds_cspkg,
    "container": seeds_container,
    "partitions": seeds_partitions,
    "ntfs": seeds_ntfs,
    "decompress": seeds_decompress,
    "regf": seeds_regf,
    "firewall": seeds_firewall,
    "unattend": seeds_unattend,
    "target": seeds_target,
    "mgmt": seeds_mgmt,
    "control": seeds_control,
    "winrm": seeds_winrm,
}
NEEDS_WORKDIR = {"container", "partitions", "ntfs"}


def build_all(names: list[str]) -> None:
    for name in names:
        assert name in TARGETS
        builder = BUILDERS[name]
        with tempfile.TemporaryDirectory(prefix=f"fuzz-seeds-{name}-") as tmp:
            try:
                seeds = builder(Path(tmp)) if name in NEEDS_WORKDIR else builder()
            except (FileNotFoundError, subprocess.CalledProcessError) as exc:
                print(f"{name}: seeds skipped ({exc})")
                continue
        folder = corpus_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            old.unlink()
        total = 0
        for label, data in seeds.items():
            (folder / f"seed-{label}").write_bytes(data)
            total += len(data)
        print(f"{name}: {len(seeds)} seeds, {total / 1024:.1f} KiB")
