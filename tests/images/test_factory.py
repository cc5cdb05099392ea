"""The shipped image factory (harness.testing.images), the Windows skeletons and the key builders, checked
with independent readers: qemu-img, sfdisk, pyfsntfs (libfsntfs), python3-hivex, openssl, ssh-keygen, keytool."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12

from harness.readers.keysniff import sniff
from harness.testing import keymaterial as km
from harness.testing import windows
from harness.testing.hivewriter import REG_DWORD, REG_SZ, RegValue, dword, sz
from harness.testing.images import (
    FORMATS,
    ImageBuildError,
    ImageSpec,
    build_image,
    generate_many_files,
    missing_tools,
    volume_extent,
)
from harness.testing.windows import (
    ADMIN_NTUSER,
    AZURE_AGENT_PATH,
    FIREWALL_POLICY,
    IC_PRODUCT_CODE,
    IIS_MACHINE_KEYS,
    MACHINE_GUID_2008R2,
    SOFTWARE_HIVE,
    SYSTEM_HIVE,
    VMROLE_APP_PORTS,
    WINLOGON,
    answer_file,
    firewall_rule,
    packed_guid,
    pe_image,
    windows_server_2008r2_vmrole,
    windows_server_2019_azure,
)

pyfsntfs = pytest.importorskip("pyfsntfs")
hivex = pytest.importorskip("hivex")

pytestmark = pytest.mark.skipif(bool(missing_tools()), reason=f"image tools missing: {missing_tools()}")

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024

SMALL = ImageSpec(
    files={
        **{f"Windows/System32/file{i:02d}.txt": f"line {i}\r\n" * (i * 40) for i in range(40)},
        "Windows/System32/big.bin": bytes(range(256)) * 300,
        "Users/Administrator/Documents/readme.txt": "hello",
        "Program Files/Contoso/app.exe": pe_image(),
        "empty.txt": b"",
    },
    dirs=("Windows/Temp", "PerfLogs"),
    hives={
        "Windows/System32/config/SYSTEM": {
            "Select": {"Current": dword(1), "Default": dword(1)},
            "ControlSet001\\Control\\ComputerName\\ComputerName": {"ComputerName": sz("WIN-TEST")},
        }
    },
    hardlinks={
        "Windows/WinSxS/amd64_test_31bf3856ad364e35_6.1.7601.17514_none_0/file01.txt": "Windows/System32/file01.txt"
    },
    disk_size=16 * MIB,
)


# --------------------------------------------------------------------------------------------- helpers


class Region(io.RawIOBase):
    """A read-only window [offset, offset + size) of a file: pyfsntfs takes a file object, not an offset."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY)
        self._offset, self._size, self._pos = offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = (pos, self._pos + pos, self._size + pos)[whence]
        return self._pos

    def tell(self) -> int:
        return self._pos

    def get_size(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        n = self._size - self._pos if n is None or n < 0 else min(n, self._size - self._pos)
        data = os.pread(self._fd, max(n, 0), self._offset + self._pos)
        self._pos += len(data)
        return data

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class Volume:
    def __init__(self, raw: Path, spec: ImageSpec) -> None:
        offset, size = volume_extent(spec)
        self.region = Region(raw, offset, size)
        self.volume = pyfsntfs.volume()
        self.volume.open_file_object(self.region)

    def entry(self, path: str) -> Any:
        return self.volume.get_file_entry_by_path("\\" + path.replace("/", "\\"))

    def read(self, path: str) -> bytes:
        entry = self.entry(path)
        assert entry is not None, path
        return entry.read() if entry.get_size() else b""

    def close(self) -> None:
        self.volume.close()
        self.region.close()


def qemu_info(path: Path, fmt: str | None = None) -> dict:
    """qemu-img's view of an image. qemu only probes a VHD by the footer copy at offset 0, which a fixed VHD
    lacks, so a fixed VHD must be opened as ``-f vpc``."""
    args = ["qemu-img", "info", "--output=json", *(["-f", fmt] if fmt else []), str(path)]
    return json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def hive_values(data: bytes, tmp: Path, key: str) -> dict[str, tuple[int, bytes]]:
    """{value name: (type, data)} of one key, read with hivex from a temp copy of the hive."""
    path = tmp / f"hive-{hashlib.sha1(data).hexdigest()[:8]}"
    path.write_bytes(data)
    h = hivex.Hivex(str(path))
    node = h.root()
    for part in [p for p in key.split("\\") if p]:
        node = h.node_get_child(node, part)
        assert node, f"{key}: {part} missing"
    out = {}
    for value in h.node_values(node):
        vtype, vdata = h.value_value(value)
        out[h.value_key(value)] = (vtype, vdata)
    return out


@pytest.fixture(scope="module")
def vmrole_raw(image_cache: Path) -> Path:
    return build_image(windows_server_2008r2_vmrole(), "raw", cache_dir=image_cache)


@pytest.fixture(scope="module")
def vmrole_volume(vmrole_raw: Path) -> Iterator[Volume]:
    volume = Volume(vmrole_raw, windows_server_2008r2_vmrole())
    yield volume
    volume.close()


# --------------------------------------------------------------------------------------------- containers


@pytest.mark.parametrize("style", ["mbr", "gpt", "none"])
def test_every_format_for_every_partition_style(style: str, image_cache: Path) -> None:
    spec = SMALL.with_changes(partition_style=style)
    expected = {"raw": "raw", "vhd-fixed": "vpc", "vhd-dynamic": "vpc", "vhdx": "vhdx"}
    for fmt in FORMATS:
        path = build_image(spec, fmt, cache_dir=image_cache)
        info = qemu_info(path, "vpc" if fmt == "vhd-fixed" else None)
        assert info["format"] == expected[fmt], (fmt, info)
        assert info["virtual-size"] == spec.disk_size, (fmt, info["virtual-size"])  # force_size: no CHS rounding
        with open(path, "rb") as fh:
            head = fh.read(8)
            fh.seek(-512, os.SEEK_END)
            footer = fh.read(512)
        if fmt.startswith("vhd-"):
            assert footer[:8] == b"conectix"
            disk_type = struct.unpack(">I", footer[60:64])[0]
            assert disk_type == (2 if fmt == "vhd-fixed" else 3)
            assert struct.unpack(">Q", footer[48:56])[0] == spec.disk_size  # current size
            if fmt == "vhd-fixed":
                assert path.stat().st_size == spec.disk_size + 512
            else:
                assert head == b"conectix"
        elif fmt == "vhdx":
            assert head == b"vhdxfile"
        else:
            assert path.stat().st_size == spec.disk_size
    raw = build_image(spec, "raw", cache_dir=image_cache)
    offset, size = volume_extent(spec)
    with open(raw, "rb") as fh:
        fh.seek(offset)
        assert fh.read(11)[3:11] == b"NTFS    "
    if style == "none":
        assert offset == 0 and size == spec.disk_size
        return
    table = json.loads(
        subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True, text=True, check=True).stdout
    )
    table = table["partitiontable"]
    (part,) = table["partitions"]
    assert part["start"] * 512 == spec.partition_start == offset
    assert part["size"] * 512 == size and size % MIB == 0
    if style == "mbr":
        assert table["label"] == "dos" and part["type"] == "7" and part.get("bootable") is True
    else:
        assert table["label"] == "gpt" and part["type"] == "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
        assert part["name"] == "Basic data partition"


def test_raw_disk_is_reproducible(tmp_path: Path) -> None:
    spec = SMALL.with_changes(partition_style="gpt")
    first = build_image(spec, "raw", cache_dir=tmp_path / "a")
    second = build_image(spec, "raw", cache_dir=tmp_path / "b")
    assert first != second
    assert sha256(first) == sha256(second)
    other = build_image(spec.with_changes(files={"x.txt": "x"}), "raw", cache_dir=tmp_path / "a")
    ids = []
    for path in (first, other):
        table = json.loads(subprocess.run(["sfdisk", "--json", str(path)], capture_output=True, text=True).stdout)
        ids.append(table["partitiontable"]["id"])
    assert ids[0] != ids[1]  # disk GUIDs follow the spec, so two fixture disks never look like clones


def test_volume_holds_the_spec_independent_reader(image_cache: Path, tmp_path: Path) -> None:
    raw = build_image(SMALL, "raw", cache_dir=image_cache)
    volume = Volume(raw, SMALL)
    try:
        assert volume.volume.get_name() == "Windows"
        for path, content in SMALL.files.items():
            assert volume.read(path) == content, path
        for path in SMALL.dirs:
            assert volume.entry(path).has_directory_entries_index()
        link, target = next(iter(SMALL.hardlinks.items()))
        a, b = volume.entry(link), volume.entry(target)
        assert a.get_file_reference() & 0xFFFFFFFFFFFF == b.get_file_reference() & 0xFFFFFFFFFFFF
        assert volume.read(link) == SMALL.files[target]
        entry = volume.entry("Windows/System32/file03.txt")
        assert entry.get_modification_time().year == 2013  # the spec's timestamp, not the build time
        values = hive_values(volume.read("Windows/System32/config/SYSTEM"), tmp_path, "Select")
        assert values["Current"] == (REG_DWORD, struct.pack("<I", 1))
        values = hive_values(
            volume.read("Windows/System32/config/SYSTEM"),
            tmp_path,
            "ControlSet001\\Control\\ComputerName\\ComputerName",
        )
        assert values["ComputerName"] == (REG_SZ, "WIN-TEST\0".encode("utf-16-le"))
    finally:
        volume.close()


def test_volume_passes_ntfs_3g_consistency_check(image_cache: Path, tmp_path: Path) -> None:
    if shutil.which("ntfsfix") is None and not Path("/usr/bin/ntfsfix").exists():
        pytest.skip("ntfsfix not installed")
    spec = windows_server_2008r2_vmrole()
    raw = build_image(spec, "raw", cache_dir=image_cache)
    offset, size = volume_extent(spec)
    part = tmp_path / "volume.ntfs"
    with open(raw, "rb") as src, open(part, "wb") as dst:
        src.seek(offset)
        dst.write(src.read(size))
    done = subprocess.run(["ntfsfix", "--no-action", str(part)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "$MFTMirr" in done.stdout and "successfully" in done.stdout


def test_cache_hit_is_fast_and_shared(image_cache: Path) -> None:
    spec = SMALL.with_changes(volume_label="CACHE")
    first = build_image(spec, "vhd-fixed", cache_dir=image_cache)
    started = time.perf_counter()
    again = build_image(spec, "vhd-fixed", cache_dir=image_cache)
    assert time.perf_counter() - started < 0.05
    assert again == first
    assert build_image(spec, "raw", cache_dir=image_cache).exists()  # the raw disk it was converted from


def test_default_cache_dir_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VMR_IMAGE_CACHE", str(tmp_path / "env-cache"))
    path = build_image(SMALL.with_changes(volume_label="ENV"), "raw")
    assert path.parent == tmp_path / "env-cache"


_BUILDER = """
import sys
from pathlib import Path
from harness.testing.images import ImageSpec, build_image
from harness.testing.hivewriter import dword
spec = ImageSpec(
    files={f"Windows/f{i}.txt": f"content {i}" * 50 for i in range(300)},
    hives={"Windows/System32/config/SYSTEM": {"Select": {"Current": dword(1)}}},
    disk_size=32 * 1024 * 1024,
)
print(build_image(spec, sys.argv[2], cache_dir=Path(sys.argv[1])))
"""


def test_concurrent_builders_produce_one_good_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _BUILDER, str(cache), "vhd-fixed"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    paths = {out.strip() for out, _ in outputs}
    assert len(paths) == 1
    path = Path(paths.pop())
    info = qemu_info(path, "vpc")
    assert info["format"] == "vpc" and info["virtual-size"] == 32 * MIB
    images = sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))
    assert len(images) == 2 and {Path(n).suffixes[-1] for n in images} == {".raw", ".vhd"}, images  # no temp left


def test_tool_failure_names_the_tool_and_its_message(tmp_path: Path) -> None:
    spec = ImageSpec(files={"big.bin": os.urandom(6 * MIB)}, disk_size=4 * MIB, partition_style="none")
    with pytest.raises(ImageBuildError) as caught:
        build_image(spec, "raw", cache_dir=tmp_path)
    assert caught.value.tool == "wimlib-imagex"
    assert "wimlib-imagex" in str(caught.value) and caught.value.stderr
    assert not any(p.name.endswith(".raw") for p in tmp_path.iterdir())
    assert not any(p.name.startswith(".build-") for p in tmp_path.iterdir())


# --------------------------------------------------------------------------------------------- the spec


def test_spec_key_is_stable_and_canonical() -> None:
    a = ImageSpec(files={"a.txt": "x", "B/c.txt": b"y"}, dirs=("d",))
    b = ImageSpec(files={"B\\c.txt": b"y", "a.txt": b"x"}, dirs=("d", "d"))
    assert a.key() == b.key() and len(a.key()) == 64
    assert a.key() != a.with_changes(files={"a.txt": "z"}).key()
    assert a.key() != a.with_changes(disk_size=128 * MIB).key()
    assert a.key() != a.with_changes(volume_label="OTHER").key()
    assert hash(a) == hash(b)


def test_with_changes_merges_and_removes() -> None:
    spec = windows_server_2008r2_vmrole()
    changed = spec.with_changes(
        files={"windows/system32/CMD.EXE": b"MZ", "Windows/Panther/unattend.xml": answer_file(admin_password="x")},
        remove=["Users/Administrator/Documents", "unattend.xml"],
        hives={
            "SOFTWARE": {WINLOGON: {"DefaultPassword": sz("hunter2"), "AutoAdminLogon": sz("1")}},
            SYSTEM_HIVE: {"Setup": {"CmdLine": None}, "ControlSet002": None},
        },
    )
    assert changed.file("Windows/System32/cmd.exe") == b"MZ"
    assert "windows/system32/CMD.EXE" not in changed.files  # the existing spelling is kept
    assert changed.file("Users/Administrator/Documents/readme.txt") is None
    assert changed.file("unattend.xml") is None
    assert b"<PlainText>true</PlainText>" in (changed.file("Windows/Panther/unattend.xml") or b"")
    assert changed.value("SOFTWARE", WINLOGON, "defaultpassword") == sz("hunter2")
    assert changed.value("SOFTWARE", WINLOGON, "AutoAdminLogon") == sz("1")
    assert changed.value("SOFTWARE", WINLOGON, "Shell") == sz("explorer.exe")  # untouched values stay
    assert changed.value("SYSTEM", "Setup", "CmdLine") is None
    assert changed.value("SYSTEM", "Setup", "SetupType") == dword(2)
    assert not any(k.lower().startswith("controlset002") for k in changed.hive("SYSTEM") or {})
    assert spec.value("SOFTWARE", WINLOGON, "DefaultPassword") is None  # the original is unchanged
    assert changed.with_changes(hives={"SAM": None}).hive("SAM") is None
    corrupt = spec.with_changes(files={SYSTEM_HIVE: b"regf" + bytes(60)})  # raw bytes replace the hive
    assert corrupt.hive("SYSTEM") is None and corrupt.file(SYSTEM_HIVE) == b"regf" + bytes(60)
    with pytest.raises(KeyError):
        spec.with_changes(remove=["no/such/file"])
    with pytest.raises(KeyError):
        spec.with_changes(hives={"SYSTEM": {"No\\Such\\Key": None}})
    with pytest.raises(TypeError):
        spec.with_changes(no_such_field=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"files": {"a.txt": "1", "A.TXT": "2"}}, "differ only in case"),
        ({"files": {"a": "1", "a/b": "2"}}, "needs it to be a directory"),
        ({"files": {"a:b": "1"}}, "forbids"),
        ({"files": {"../x": "1"}}, "not a valid Windows name"),
        ({"partition_style": "apm"}, "partition_style"),
        ({"disk_size": 1000}, "multiple"),
        ({"hardlinks": {"x": "missing"}}, "not a file"),
    ],
)
def test_spec_rejects_what_windows_cannot_hold(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImageSpec(**kwargs)


def test_generated_files_have_realistic_shapes_and_build(image_cache: Path) -> None:
    spec = generate_many_files(ImageSpec(disk_size=32 * MIB), 1500, seed=7)
    again = generate_many_files(ImageSpec(disk_size=32 * MIB), 1500, seed=7)
    assert spec.key() == again.key()
    assert len(spec.files) == 1500
    tops = {p.split("/")[0] for p in spec.files}
    assert {"Windows", "Program Files", "Users"} <= tops
    assert any(p.startswith("Windows/WinSxS/amd64_microsoft-windows-") for p in spec.files)
    folders = {p.rsplit("/", 1)[0] for p in spec.files}
    assert len(spec.files) / len(folders) > 3  # files share folders, as on a real volume
    raw = build_image(spec, "raw", cache_dir=image_cache)
    volume = Volume(raw, spec)
    try:
        for path in list(spec.files)[::150]:
            assert volume.read(path) == spec.files[path]
    finally:
        volume.close()


@pytest.mark.slow
def test_two_hundred_thousand_files_build_in_about_a_minute(tmp_path: Path) -> None:
    started = time.perf_counter()
    spec = generate_many_files(windows_server_2008r2_vmrole(), 200_000, seed=1)
    raw = build_image(spec, "raw", cache_dir=tmp_path)
    elapsed = time.perf_counter() - started
    print(f"200,000-file raw image: {elapsed:.1f} s, virtual size {spec.disk_size / MIB:.0f} MiB")
    assert elapsed < 150
    volume = Volume(raw, spec)
    try:
        for path in list(spec.files)[::20011]:
            assert volume.read(path) == spec.files[path]
    finally:
        volume.close()
    assert qemu_info(build_image(spec, "vhdx", cache_dir=tmp_path))["virtual-size"] == spec.disk_size


# --------------------------------------------------------------------------------------------- skeletons


def _rule_fields(rule: str) -> dict[str, list[str]]:
    version, *fields = rule.rstrip("|").split("|")
    assert version.startswith("v2.")
    out: dict[str, list[str]] = {}
    for field in fields:
        name, value = field.split("=", 1)
        out.setdefault(name, []).append(value)
    return out


def _firewall_rules(spec: ImageSpec) -> dict[str, dict[str, list[str]]]:
    hive = spec.hive("SYSTEM") or {}
    values = hive[f"ControlSet001\\{FIREWALL_POLICY}\\FirewallRules"]
    return {name: _rule_fields(v.data.decode("utf-16-le").rstrip("\0")) for name, v in values.items()}


def _sample_vm_role_ports() -> set[int]:
    ns = "{http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition}"
    root = ET.parse(REPO / "harness/samples/vmrole/ServiceDefinition.csdef").getroot()
    role = root.find(f"{ns}VirtualMachineRole")
    assert role is not None
    ports = set()
    for endpoint in role.iter():
        if endpoint.tag in (f"{ns}InputEndpoint", f"{ns}InternalEndpoint", f"{ns}InstanceInputEndpoint"):
            ports.add(int(endpoint.get("localPort") or endpoint.get("port") or 0))
    return ports


def test_vmrole_firewall_opens_exactly_the_sample_endpoints() -> None:
    spec = windows_server_2008r2_vmrole()
    rules = _firewall_rules(spec)
    allowed_tcp = {
        int(port)
        for fields in rules.values()
        if fields["Action"] == ["Allow"] and fields["Dir"] == ["In"] and fields.get("Protocol") == ["6"]
        for port in fields.get("LPort", [])
    }
    assert {port for _, port in VMROLE_APP_PORTS} == _sample_vm_role_ports()
    assert _sample_vm_role_ports() <= allowed_tcp
    assert rules["RemoteDesktop-In-TCP"]["LPort"] == ["3389"]
    assert rules["WINRM-HTTP-In-TCP"]["LPort"] == ["5985"]
    assert rules["FPS-ICMP4-ERQ-In"]["ICMP4"] == ["8:*"]
    hive = spec.hive("SYSTEM") or {}
    for profile in ("DomainProfile", "StandardProfile", "PublicProfile"):
        values = hive[f"ControlSet001\\{FIREWALL_POLICY}\\{profile}"]
        assert values["EnableFirewall"] == dword(1) and values["DefaultInboundAction"] == dword(1)


def test_vmrole_skeleton_is_generalized_and_clean() -> None:
    spec = windows_server_2008r2_vmrole()
    v = spec.value
    assert v("SYSTEM", "Select", "Current") == dword(1) and v("SYSTEM", "Select", "LastKnownGood") == dword(2)
    assert v("SYSTEM", "Setup", "SystemSetupInProgress") == dword(1)
    assert v("SYSTEM", "Setup", "OOBEInProgress") == dword(1)
    assert v("SYSTEM", "Setup", "SetupType") == dword(2)
    assert v("SYSTEM", "Setup", "CmdLine") == sz("oobe\\windeploy.exe")
    assert v("SYSTEM", "Setup\\Status\\SysprepStatus", "GeneralizationState") == dword(4)
    for cs in ("ControlSet001", "ControlSet002"):
        assert v("SYSTEM", f"{cs}\\Control\\ProductOptions", "ProductType") == sz("ServerNT")
        assert v("SYSTEM", f"{cs}\\Control\\Session Manager\\Environment", "PROCESSOR_ARCHITECTURE") == sz("AMD64")
    assert v("SYSTEM", "ControlSet001\\Control\\Terminal Server\\WinStations\\RDP-Tcp", "PortNumber") == dword(3389)
    for service in ("mpssvc", "BFE", "Dhcp", "Dnscache", "TermService", "WinRM", "W32Time", "cdrom", "Tcpip"):
        assert v("SYSTEM", f"ControlSet001\\Services\\{service}", "ImagePath") is not None, service
    agent = v("SYSTEM", "ControlSet001\\Services\\WaAppAgent", "ImagePath")
    assert agent is not None and "Windows Azure" in agent.data.decode("utf-16-le")
    assert v("SYSTEM", "ControlSet001\\Services\\ContosoAdapter", "Start") == dword(2)
    cv = "Microsoft\\Windows NT\\CurrentVersion"
    assert v("SOFTWARE", cv, "ProductName") == sz("Windows Server 2008 R2 Enterprise")
    assert v("SOFTWARE", cv, "CurrentBuildNumber") == sz("7601") and v("SOFTWARE", cv, "CSDVersion") == sz(
        "Service Pack 1"
    )
    assert v("SOFTWARE", WINLOGON, "DefaultPassword") is None
    state = "Microsoft\\Windows\\CurrentVersion\\Setup\\State"
    assert v("SOFTWARE", state, "ImageState") == sz("IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE")
    uninstall = f"Microsoft\\Windows\\CurrentVersion\\Uninstall\\{IC_PRODUCT_CODE}"
    assert v("SOFTWARE", uninstall, "DisplayName") == sz("Windows Azure Integration Components")
    assert v("SOFTWARE", uninstall, "DisplayVersion").data.decode("utf-16-le").startswith("1.6.")  # type: ignore[union-attr]
    products = f"Classes\\Installer\\Products\\{packed_guid(IC_PRODUCT_CODE)}"
    assert v("SOFTWARE", products, "ProductName") == sz("Windows Azure Integration Components")
    assert v("SOFTWARE", "Microsoft\\Cryptography", "MachineGuid") == sz(MACHINE_GUID_2008R2)
    software = spec.hive(SOFTWARE_HIVE) or {}
    roots = [k for k in software if k.startswith("Microsoft\\SystemCertificates\\ROOT\\Certificates\\")]
    assert len(roots) == 1 and software[roots[0]]["Blob"].data[-0:4] != b""
    assert not any(k.startswith("Microsoft\\SystemCertificates\\MY\\Certificates\\") for k in software)
    unattend = spec.file("unattend.xml") or b""
    assert b'<settings pass="oobeSystem">' in unattend and b"Microsoft-Windows-Shell-Setup" in unattend
    assert b"<AdministratorPassword>" not in unattend and b"<Value>" not in unattend
    assert (
        spec.file("Windows/Setup/State/State.ini") == b"[State]\r\nImageState=IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE\r\n"
    )
    assert spec.file("Windows/System32/Sysprep/Sysprep_succeeded.tag") == b""
    assert spec.file("Windows/System32/Sysprep/Panther/setuperr.log") == b""
    keys = {p.rsplit("/", 1)[1] for p in spec.files if p.startswith("ProgramData/Microsoft/Crypto/RSA/MachineKeys/")}
    assert keys == {f"{prefix}_{MACHINE_GUID_2008R2}" for prefix in IIS_MACHINE_KEYS}
    assert not any(p.lower().startswith("windows/panther/unattend") for p in spec.files)
    assert spec.hive(ADMIN_NTUSER) is not None and spec.hive("Users/Default/NTUSER.DAT") is not None


def test_azure_skeleton_meets_todays_upload_rules() -> None:
    spec = windows_server_2019_azure()
    v = spec.value
    for name, exe in (("WindowsAzureGuestAgent", "WindowsAzureGuestAgent.exe"), ("RdAgent", "WaAppAgent.exe")):
        path = v("SYSTEM", f"ControlSet001\\Services\\{name}", "ImagePath")
        assert path is not None and exe in path.data.decode("utf-16-le")
    assert spec.file(
        AZURE_AGENT_PATH,
    ).startswith(b"MZ")  # type: ignore[union-attr]
    assert not any(p.lower().startswith("windows/panther") for p in spec.files)
    assert spec.file("unattend.xml") is None
    assert v("SYSTEM", "ControlSet001\\Control\\TimeZoneInformation", "RealTimeIsUniversal") == dword(1)
    assert v("SYSTEM", "ControlSet001\\Control\\Terminal Server", "fDenyTSConnections") == dword(0)
    assert v("SYSTEM", "ControlSet001\\Services\\cdrom", "Start") == dword(1)
    assert v("SYSTEM", "ControlSet001\\Services\\partmgr\\Parameters", "SanPolicy") == dword(1)
    rules = _firewall_rules(spec)
    assert rules["RemoteDesktop-UserMode-In-TCP"]["LPort"] == ["3389"]
    assert "WINRM-HTTP-In-TCP" in rules and "FPS-ICMP4-ERQ-In" in rules
    platform = [r for r in rules.values() if r.get("RA4") == ["168.63.129.16"]]
    assert platform and platform[0]["Dir"] == ["Out"] and platform[0]["Action"] == ["Allow"]
    cv = "Microsoft\\Windows NT\\CurrentVersion"
    assert v("SOFTWARE", cv, "CurrentBuildNumber") == sz("17763")


@pytest.mark.parametrize("make", [windows_server_2008r2_vmrole, windows_server_2019_azure])
def test_skeletons_carry_no_key_material(make: Callable[[], ImageSpec]) -> None:
    spec = make()
    assert [p for p in spec.files if sniff((spec.file(p) or b"")[:65536])] == []
    assert spec.key() == make().key()  # deterministic, so every worker and run shares the cached image


def test_skeleton_image_reads_back_with_pe_headers_and_hives(vmrole_volume: Volume, tmp_path: Path) -> None:
    cmd = vmrole_volume.read("Windows/System32/cmd.exe")
    assert cmd[:2] == b"MZ"
    e_lfanew = struct.unpack_from("<I", cmd, 0x3C)[0]
    assert cmd[e_lfanew : e_lfanew + 4] == b"PE\0\0"
    assert struct.unpack_from("<H", cmd, e_lfanew + 4)[0] == 0x8664  # IMAGE_FILE_MACHINE_AMD64
    assert struct.unpack_from("<H", cmd, e_lfanew + 24)[0] == 0x20B  # PE32+
    for path in ("Windows/explorer.exe", "Windows/System32/ntoskrnl.exe"):
        assert vmrole_volume.read(path)[:2] == b"MZ"
    sxs = next(k for k in windows_server_2008r2_vmrole().hardlinks if k.endswith("/cmd.exe"))
    assert (
        vmrole_volume.entry(sxs).get_file_reference() & 0xFFFFFFFFFFFF
        == vmrole_volume.entry("Windows/System32/cmd.exe").get_file_reference() & 0xFFFFFFFFFFFF
    )
    system = vmrole_volume.read(SYSTEM_HIVE)
    setup = hive_values(system, tmp_path, "Setup")
    assert setup["CmdLine"] == (REG_SZ, "oobe\\windeploy.exe\0".encode("utf-16-le"))
    rules = hive_values(system, tmp_path, f"ControlSet001\\{FIREWALL_POLICY}\\FirewallRules")
    assert rules["RemoteDesktop-In-TCP"][1].decode("utf-16-le").startswith("v2.10|Action=Allow|")
    software = vmrole_volume.read(SOFTWARE_HIVE)
    cv = hive_values(software, tmp_path, "Microsoft\\Windows NT\\CurrentVersion")
    assert cv["ProductName"][1].decode("utf-16-le").rstrip("\0") == "Windows Server 2008 R2 Enterprise"
    for hive in ("SAM", "SECURITY", "DEFAULT"):
        assert vmrole_volume.read(f"Windows/System32/config/{hive}")[:4] == b"regf"
    assert vmrole_volume.read(ADMIN_NTUSER)[:4] == b"regf"
    assert vmrole_volume.read("unattend.xml").startswith(b"<?xml")


def test_pe_image_checksum_and_headers() -> None:
    image = pe_image(subsystem=2, dll=True, data=b"hello")
    e_lfanew = struct.unpack_from("<I", image, 0x3C)[0]
    characteristics = struct.unpack_from("<H", image, e_lfanew + 4 + 18)[0]
    assert characteristics & 0x2000  # DLL
    opt = e_lfanew + 24
    assert struct.unpack_from("<H", image, opt + 68)[0] == 2  # subsystem GUI
    stored = struct.unpack_from("<I", image, opt + 64)[0]
    zeroed = image[: opt + 64] + b"\0\0\0\0" + image[opt + 68 :]
    total = sum(struct.unpack(f"<{len(zeroed) // 2}H", zeroed))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert stored == total + len(image)


def test_firewall_rule_grammar() -> None:
    rule = firewall_rule(
        Action="Allow", Active=True, Dir="In", Protocol=6, Profile=["Domain", "Public"], LPort=[80, 443]
    )
    assert rule == "v2.10|Action=Allow|Active=TRUE|Dir=In|Protocol=6|Profile=Domain|Profile=Public|LPort=80|LPort=443|"
    assert firewall_rule(version="2.26", Active=False).startswith("v2.26|Active=FALSE|")
    with pytest.raises(ValueError):
        firewall_rule(Name="a|b")


def test_packed_guid_is_the_msi_compressed_form() -> None:
    assert packed_guid("{12345678-ABCD-EF01-2345-6789ABCDEF01}") == "87654321DCBA10FE32547698BADCFE10"


def test_registry_value_types_survive_into_the_image(tmp_path: Path, image_cache: Path) -> None:
    odd = RegValue(0x1F4, b"")  # the SAM stores an account's RID as the type of an empty default value
    spec = SMALL.with_changes(hives={"SYSTEM": {"Odd": {"": odd}}})
    volume = Volume(build_image(spec, "raw", cache_dir=image_cache), spec)
    try:
        values = hive_values(volume.read(SYSTEM_HIVE), tmp_path, "Odd")
    finally:
        volume.close()
    assert values[""] == (0x1F4, b"")


# --------------------------------------------------------------------------------------------- key material


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed")
    return found


def test_key_builders_are_deterministic_and_sniffed() -> None:
    builders: dict[str, Callable[[], bytes]] = {
        "pkcs12": km.pfx_bytes,
        "pem-private-key": km.pem_private_key_bytes,
        "pvk": km.pvk_bytes,
        "snk-private-key": km.snk_private_bytes,
        "putty-private-key": km.putty_ppk_bytes,
        "openssh-private-key": km.openssh_key_bytes,
        "jks": km.jks_bytes,
        "publishsettings": km.publishsettings_bytes,
    }
    for label, build in builders.items():
        data = build()
        assert build() == data, label
        assert sniff(data[:65536]) == label, label
    for kind in ("pkcs1", "ec"):
        assert sniff(km.pem_private_key_bytes(kind=kind)) == "pem-private-key"
    assert sniff(km.pem_private_key_bytes(password=b"pw")) == "pem-private-key"
    assert sniff(km.snk_public_bytes()) is None  # a public strong-name key is not a secret
    assert sniff(km.capi_machine_key_file_bytes("iisWasKey")) is None
    assert sniff(km.cert_blob(windows.root_certificate_der())) is None


def test_rsa_keys_derive_the_same_in_a_fresh_process(tmp_path: Path) -> None:
    code = (
        "from harness.testing.keymaterial import rsa_private_key as k; "
        "print(k(4242, 1024).public_key().public_numbers().n)"
    )
    env = {**os.environ, "VMR_KEY_CACHE": str(tmp_path / "keys")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    assert int(done.stdout) == km.rsa_private_key(4242, 1024).public_key().public_numbers().n
    assert (tmp_path / "keys" / "rsa-1024-4242.json").exists()


def test_key_files_open_in_independent_tools(tmp_path: Path) -> None:
    openssl = _tool("openssl")

    def write(name: str, data: bytes) -> str:
        path = tmp_path / name
        path.write_bytes(data)
        path.chmod(0o600)
        return str(path)

    checks = [
        [openssl, "rsa", "-inform", "PVK", "-pvk-none", "-in", write("k.pvk", km.pvk_bytes()), "-noout", "-check"],
        [openssl, "rsa", "-inform", "MSBLOB", "-in", write("k.snk", km.snk_private_bytes()), "-noout", "-check"],
        [openssl, "pkcs12", "-in", write("k.pfx", km.pfx_bytes()), "-nodes", "-passin", "pass:", "-noout"],
        [openssl, "rsa", "-in", write("k.pem", km.pem_private_key_bytes()), "-noout", "-check"],
    ]
    for args in checks:
        done = subprocess.run(args, capture_output=True, text=True)
        assert done.returncode == 0, (args, done.stderr)
    ssh_keygen = _tool("ssh-keygen")
    done = subprocess.run(
        [ssh_keygen, "-y", "-f", write("id_ed25519", km.openssh_key_bytes())], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("ssh-ed25519 "), done.stderr
    key, cert, cas = pkcs12.load_key_and_certificates(km.pfx_bytes(), None)
    assert key is not None and cert is not None and len(cas) == 1
    assert "CN=webvm.contoso.example" in cert.subject.rfc4514_string()
    km.verify_signature(cert, cas[0])
    km.verify_signature(km.root_ca_certificate(), km.root_ca_certificate())
    pfx = base64.b64decode(re.search(rb'ManagementCertificate="([^"]+)"', km.publishsettings_bytes()).group(1))  # type: ignore[union-attr]
    assert pkcs12.load_key_and_certificates(pfx, None)[0] is not None


def test_jks_key_is_recoverable_by_keytool(tmp_path: Path) -> None:
    keytool = _tool("keytool")
    src = tmp_path / "store.jks"
    src.write_bytes(km.jks_bytes())
    done = subprocess.run(
        [
            keytool, "-importkeystore", "-noprompt", "-srckeystore", str(src), "-srcstoretype", "JKS",
            "-srcstorepass", "changeit", "-destkeystore", str(tmp_path / "out.p12"), "-deststoretype", "PKCS12",
            "-deststorepass", "changeit", "-srcalias", "webvm",
        ],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    key, cert, _ = pkcs12.load_key_and_certificates((tmp_path / "out.p12").read_bytes(), b"changeit")
    assert key is not None and cert is not None
    assert key.public_key().public_numbers() == km.rsa_private_key(107).public_key().public_numbers()  # type: ignore[union-attr]


def test_putty_key_mac_and_public_blob() -> None:
    text = km.putty_ppk_bytes().decode()
    lines = text.split("\r\n")
    assert lines[0] == "PuTTY-User-Key-File-2: ssh-rsa" and lines[1] == "Encryption: none"
    comment = lines[2].split(": ", 1)[1]
    n_pub = int(lines[3].split(": ")[1])
    public = base64.b64decode("".join(lines[4 : 4 + n_pub]))
    n_priv = int(lines[4 + n_pub].split(": ")[1])
    private = base64.b64decode("".join(lines[5 + n_pub : 5 + n_pub + n_priv]))
    mac = lines[5 + n_pub + n_priv].split(": ")[1]

    def string(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    mac_key = hashlib.sha1(b"putty-private-key-file-mac-key").digest()
    blob = b"".join(string(x) for x in (b"ssh-rsa", b"none", comment.encode(), public, private))
    assert hmac.new(mac_key, blob, hashlib.sha1).hexdigest() == mac
    # public blob: string "ssh-rsa", mpint e, mpint n
    pos = 4 + 7
    (e_len,) = struct.unpack_from(">I", public, pos)
    e = int.from_bytes(public[pos + 4 : pos + 4 + e_len], "big")
    pos += 4 + e_len
    (n_len,) = struct.unpack_from(">I", public, pos)
    n = int.from_bytes(public[pos + 4 : pos + 4 + n_len], "big")
    numbers = km.rsa_private_key(105).public_key().public_numbers()
    assert (e, n) == (numbers.e, numbers.n)


def test_cert_blob_layout_and_key_prov_info() -> None:
    der = km.server_certificate().public_bytes(Encoding.DER)
    info = km.KeyProvInfo(
        container="le-WebVM-SSL-0123", provider="Microsoft RSA SChannel Cryptographic Provider", prov_type=12
    )
    blob = km.cert_blob(der, key_prov_info=info, friendly_name="WebVM SSL")
    elements: dict[int, bytes] = {}
    pos = 0
    while pos < len(blob):
        prop, reserved, length = struct.unpack_from("<III", blob, pos)
        assert reserved == 1
        elements[prop] = blob[pos + 12 : pos + 12 + length]
        pos += 12 + length
    assert pos == len(blob)
    assert list(elements) == [2, 11, 3, 0x20]  # the certificate comes last
    assert elements[0x20] == der and elements[3] == hashlib.sha1(der).digest()
    assert elements[11].decode("utf-16-le") == "WebVM SSL\0"
    prov = elements[2]
    off_container, off_provider, prov_type, flags, reserved1, reserved2, key_spec = struct.unpack_from("<7I", prov)
    assert (prov_type, flags, reserved1, reserved2, key_spec) == (12, 0x20, 0, 0, 1)

    def utf16z(at: int) -> str:
        end = at
        while prov[end : end + 2] != b"\0\0":
            end += 2
        return prov[at:end].decode("utf-16-le")

    assert off_container == 28 and utf16z(off_container) == info.container
    assert utf16z(off_provider) == info.provider
    assert km.cert_thumbprint(der) == hashlib.sha1(der).hexdigest().upper()
    for prefix, container in list(IIS_MACHINE_KEYS.items())[:3]:  # Windows' own file names are the ground truth
        assert km.capi_container_file_name(container, MACHINE_GUID_2008R2) == f"{prefix}_{MACHINE_GUID_2008R2}"
