"""Differencing VHDX (``.avhdx``, Hyper-V checkpoints) and 4 KiB logical sectors.

The chains are written by harness/testing/vhdxwriter.py after [MS-VHDX]
(https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-vhdx/) and read three ways: by our reader, by
libvhdi (pyvhdi, a reader we did not write, with ``set_parent`` along the chain) and against the bytes the
writes must produce. qemu-img 7.2 does not open a differencing VHDX ("Operation not supported": its VHDX
driver has no parent support) nor a VHDX with 4096-byte logical sectors, so libvhdi is the independent reader
for those; qemu-img checks the writer's 512-byte base disks.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from harness.extraction.extract import extract
from harness.readers.errors import Unreadable
from harness.readers.image.container import open_disk
from harness.readers.image.partitions import read_partitions
from harness.testing import keymaterial as km
from harness.testing.hivewriter import sz
from harness.testing.images import ImageSpec, build_image, missing_tools, volume_extent
from harness.testing.vhdxwriter import (
    FULLY_PRESENT,
    NOT_PRESENT,
    PARTIALLY_PRESENT,
    UNDEFINED,
    UNMAPPED,
    VHDX_PARENT_LOCATOR_TYPE,
    ZERO,
    parent_locator,
    read_data_write_guid,
    write_base_vhdx,
    write_differencing_vhdx,
    write_vhdx,
)
from harness.testing.windows import WINLOGON, windows_server_2008r2_vmrole

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
#: Not a multiple of the block size: the last block is short (and its chunk's bitmap is partial).
SIZE = 6 * MIB + 3 * 4096


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _content(seed: int) -> bytes:
    rnd = random.Random(seed)
    data = bytearray(SIZE)
    for off, ln in ((0, 8192), (MIB + 100 * 512, 3 * MIB), (5 * MIB, 4096), (SIZE - 4096, 4096)):
        data[off : off + ln] = rnd.randbytes(ln)
    return bytes(data)


def _writes(seed: int, lss: int) -> dict[int, bytes]:
    """Writes that leave blocks fully present, partially present (runs starting and ending inside bitmap
    bytes), untouched, and one crossing a block boundary."""
    rnd = random.Random(seed)
    return {
        0: rnd.randbytes(3 * lss),
        MIB + 5 * lss: rnd.randbytes(2 * lss),
        2 * MIB: rnd.randbytes(MIB),
        4 * MIB - lss: rnd.randbytes(2 * lss),
        SIZE - lss: rnd.randbytes(lss),
    }


def _apply(data: bytes, *writes: Mapping[int, bytes]) -> bytes:
    out = bytearray(data)
    for w in writes:
        for off, chunk in w.items():
            out[off : off + len(chunk)] = chunk
    return bytes(out)


def _read_all(path: Path, **kw: object) -> bytes:
    with open_disk(path, **kw) as d:  # type: ignore[arg-type]
        return d.read_at(0, d.size)


def _libvhdi_read(chain: list[Path]) -> bytes:
    """The top of ``chain`` (base first) read by libvhdi, each file given its parent."""
    pyvhdi = pytest.importorskip("pyvhdi")
    files: list[Any] = []
    try:
        for path in chain:
            f = pyvhdi.file()
            f.open(str(path))
            if files:
                assert f.get_parent_identifier() == files[-1].get_identifier()
                f.set_parent(files[-1])
            files.append(f)
        top = files[-1]
        return bytes(top.read_buffer_at_offset(top.media_size, 0))
    finally:
        for f in reversed(files):
            f.close()


def _expect_unreadable(path: Path, *words: str, read: bool = False, **kw: object) -> Unreadable:
    """One Unreadable naming the file and holding ``words``, within a second, the file unchanged."""
    before = _sha(path)
    t0 = time.monotonic()
    with pytest.raises(Unreadable) as info:
        disk = open_disk(path, **kw)  # type: ignore[arg-type]
        try:
            assert read, f"opened without error: {disk.info}"
            disk.read_at(0, disk.size)
        finally:
            disk.close()
    assert time.monotonic() - t0 < 1.0
    assert _sha(path) == before
    err = info.value
    assert err.path.name == path.name or path.name in err.problem  # a cycle is found by a file further down
    for w in words:
        assert w in err.problem, f"{w!r} not in {err.problem!r}"
    return err


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, bytes]]:
    """Base disks: {name: (path, virtual disk bytes)} for 512 and 4096-byte sectors, dynamic and fixed."""
    root = tmp_path_factory.mktemp("vhdx-bases")
    content = _content(1)
    raw = root / "base.raw"
    raw.write_bytes(content)
    out = {}
    for name, lss, fixed in (("d512", 512, False), ("f512", 512, True), ("d4k", 4096, False)):
        out[name] = (write_base_vhdx(root / f"{name}.vhdx", raw, logical_sector_size=lss, fixed=fixed), content)
    return out


# ---- the writer, checked by readers we did not write ------------------------------------------------------


def test_writer_base_disks_read_by_qemu_and_libvhdi(bases: dict[str, tuple[Path, bytes]], tmp_path: Path) -> None:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    for name in ("d512", "f512"):
        path, content = bases[name]
        out = tmp_path / f"{name}.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(path), str(out)], check=True, capture_output=True)
        assert out.read_bytes() == content, name
    for path, content in bases.values():
        assert _libvhdi_read([path]) == content
        assert _read_all(path) == content


def test_qemu_img_cannot_read_a_differencing_vhdx(bases: dict[str, tuple[Path, bytes]], tmp_path: Path) -> None:
    """Why libvhdi is the reference here: qemu-img refuses the child (if this starts passing, compare with it)."""
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    child = write_differencing_vhdx(bases["d512"][0], tmp_path / "child.avhdx", writes=_writes(2, 512))
    proc = subprocess.run(
        ["qemu-img", "convert", "-O", "raw", str(child), str(tmp_path / "c.raw")], capture_output=True
    )
    assert proc.returncode != 0 and b"not supported" in proc.stderr


# ---- chains read byte for byte -------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["d512", "f512", "d4k"])
def test_three_level_chain_matches_libvhdi(bases: dict[str, tuple[Path, bytes]], tmp_path: Path, base: str) -> None:
    parent, content = bases[base]
    lss = 4096 if base == "d4k" else 512
    w1, w2 = _writes(3, lss), _writes(4, lss)
    w2[7 * lss] = random.Random(5).randbytes(9 * lss)
    mid = write_differencing_vhdx(parent, tmp_path / "mid.avhdx", writes=w1)
    top = write_differencing_vhdx(mid, tmp_path / "top.avhdx", writes=w2, block_size=2 * MIB)
    expected = _apply(content, w1, w2)
    before = _sha(parent), _sha(mid)
    assert _libvhdi_read([parent, mid, top]) == expected
    with open_disk(top, parent_dirs=[parent.parent]) as d:
        assert (d.info.format, d.info.disk_type, d.info.logical_sector_size) == ("vhdx", "differencing", lss)
        assert d.info.parent_chain == (str(mid), str(parent))
        assert d.info.unique_id == str(read_data_write_guid(top))
        assert d.info.notes == ()
        assert d.read_at(0, d.size) == expected
        # Reads starting and ending inside bitmap runs and across the child/parent/grandparent boundaries.
        for off, ln in ((lss, lss * 9), (7 * lss + 100, 3000), (MIB + 4 * lss, 4 * lss + 17), (4 * MIB - 700, 1400)):
            assert d.read_at(off, ln) == expected[off : off + ln]
    assert (_sha(parent), _sha(mid)) == before


def test_block_states_in_a_child(bases: dict[str, tuple[Path, bytes]], tmp_path: Path) -> None:
    """NOT_PRESENT, UNDEFINED and UNMAPPED read the parent; ZERO reads zeros (MS-VHDX 2.5.1.1: "the contents
    of this block are defined to be zeros"). libvhdi 20260901 reads the parent for ZERO blocks too, so this
    is checked against the specification, not against it."""
    parent, content = bases["d512"]
    guid = read_data_write_guid(parent)
    item = parent_locator([("parent_linkage", "{" + str(guid) + "}"), ("relative_path", ".\\d512.vhdx")])
    child = parent.parent / "states.avhdx"
    present = random.Random(6).randbytes(MIB)
    write_vhdx(
        child,
        virtual_size=SIZE,
        blocks={
            0: (NOT_PRESENT, None, None),
            1: (UNDEFINED, None, None),
            2: (ZERO, None, None),
            3: (UNMAPPED, None, None),
            4: (FULLY_PRESENT, present, None),
        },
        parent_locator_item=item,
    )
    expected = content[: 2 * MIB] + bytes(MIB) + content[3 * MIB : 4 * MIB] + present + content[5 * MIB :]
    assert _read_all(child) == expected


def test_partially_present_without_its_sector_bitmap(bases: dict[str, tuple[Path, bytes]], tmp_path: Path) -> None:
    parent, _ = bases["d512"]
    shutil.copyfile(parent, tmp_path / "p.vhdx")
    guid = read_data_write_guid(parent)
    item = parent_locator([("parent_linkage", str(guid)), ("relative_path", "p.vhdx")])
    child = tmp_path / "c.avhdx"
    write_vhdx(
        child, virtual_size=SIZE, blocks={1: (PARTIALLY_PRESENT, bytes(MIB), bytes(256))}, parent_locator_item=item
    )
    raw = bytearray(child.read_bytes())
    bat = 3 * MIB
    chunk_ratio = (1 << 23) * 512 // MIB
    sb = bat + 8 * chunk_ratio  # the sector bitmap entry of chunk 0, after chunk_ratio payload entries
    assert int.from_bytes(raw[sb : sb + 8], "little") & 7 == 6
    raw[sb : sb + 8] = bytes(8)
    damaged = tmp_path / "nobitmap.avhdx"
    damaged.write_bytes(bytes(raw))
    _expect_unreadable(damaged, "block 1) is partially present", f"BAT entry {chunk_ratio}", "state 0", read=True)
    raw[sb : sb + 8] = ((0xFFFFF << 20) | 6).to_bytes(8, "little")
    damaged.write_bytes(bytes(raw))
    _expect_unreadable(damaged, "sector bitmap of chunk 0", "past the end of the file", read=True)


# ---- finding the parent ----------------------------------------------------------------------------------------


def test_parent_found_by_relative_absolute_and_name(bases: dict[str, tuple[Path, bytes]], tmp_path: Path) -> None:
    parent, content = bases["d512"]
    w = _writes(7, 512)
    sub = tmp_path / "sub"
    sub.mkdir()
    rel = write_differencing_vhdx(parent, sub / "rel.avhdx", writes=w, absolute_path="C:\\VMs\\gone.vhdx")
    assert _read_all(rel, parent_dirs=[parent.parent]) == _apply(content, w)
    guid = "{" + str(read_data_write_guid(parent)) + "}"
    absolute = write_differencing_vhdx(
        parent, sub / "abs.avhdx", writes=w, locator=[("parent_linkage", guid), ("absolute_win32_path", str(parent))]
    )
    assert _read_all(absolute, parent_dirs=[parent.parent]) == _apply(content, w)
    # Only Windows paths that do not resolve here: the file name next to the child.
    shutil.copyfile(parent, tmp_path / "local.vhdx")
    named = write_differencing_vhdx(
        tmp_path / "local.vhdx",
        tmp_path / "named.avhdx",
        writes=w,
        locator=[
            ("parent_linkage", guid),
            ("relative_path", "..\\elsewhere\\local.vhdx"),
            ("volume_path", "\\\\?\\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\\VMs\\local.vhdx"),
            ("absolute_win32_path", "D:\\VMs\\local.vhdx"),
        ],
    )
    with open_disk(named) as d:
        assert d.info.parent_chain == (str(tmp_path / "local.vhdx"),)
        assert d.read_at(0, d.size) == _apply(content, w)


def test_missing_parent_names_every_path_tried(bases: dict[str, tuple[Path, bytes]], tmp_path: Path) -> None:
    parent = tmp_path / "parent.vhdx"
    shutil.copyfile(bases["d512"][0], parent)
    sub = tmp_path / "sub"
    sub.mkdir()
    child = write_differencing_vhdx(parent, sub / "child.avhdx", writes=_writes(8, 512), absolute_path="E:\\x\\p.vhdx")
    parent.rename(tmp_path / "moved.vhdx")
    err = _expect_unreadable(child, "parent of differencing disk not found", "relative locator", "E:\\x\\p.vhdx")
    assert f"{parent} (relative locator)" in err.problem
    assert str(sub / "p.vhdx") in err.problem  # the absolute path's file name next to the child


def test_parent_outside_the_allowed_directories(bases: dict[str, tuple[Path, bytes]], tmp_path: Path) -> None:
    parent, content = bases["d512"]
    child = write_differencing_vhdx(parent, tmp_path / "child.avhdx")
    _expect_unreadable(child, str(parent), "not opened: outside the allowed directories", "--vmr-image-parent-dir")
    assert _read_all(child, parent_dirs=[parent.parent]) == content


def test_mismatched_data_write_guid_is_named(bases: dict[str, tuple[Path, bytes]], tmp_path: Path) -> None:
    parent = tmp_path / "parent.vhdx"
    shutil.copyfile(bases["d512"][0], parent)
    wrong = uuid.UUID(int=7)
    child = write_differencing_vhdx(parent, tmp_path / "child.avhdx", parent_linkage=wrong)
    actual = read_data_write_guid(parent)
    _expect_unreadable(
        child,
        "parent of differencing disk not found",
        str(parent),
        f"not the parent: its DataWriteGuid {actual} is not the parent_linkage {wrong}",
    )
    # parent_linkage2 is the other identity the parent may have.
    guid = "{" + str(actual) + "}"
    both = write_differencing_vhdx(
        parent,
        tmp_path / "both.avhdx",
        locator=[("parent_linkage", str(wrong)), ("parent_linkage2", guid), ("relative_path", ".\\parent.vhdx")],
    )
    assert _read_all(both) == bases["d512"][1]
    # A same-named file with another DataWriteGuid is passed over for the next candidate.
    other = tmp_path / "other"
    other.mkdir()
    shutil.copyfile(bases["f512"][0], other / "parent.vhdx")
    skip = write_differencing_vhdx(
        parent,
        other / "skip.avhdx",
        locator=[("parent_linkage", guid), ("relative_path", ".\\parent.vhdx"), ("absolute_win32_path", str(parent))],
    )
    with open_disk(skip, parent_dirs=[tmp_path]) as d:
        assert d.info.parent_chain == (str(parent),)


def test_vhd_parent_is_not_a_vhdx_parent(tmp_path: Path) -> None:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    vhd = tmp_path / "parent.vhd"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed,force_size=on", str(vhd), "4M"], check=True
    )
    item = parent_locator([("parent_linkage", str(uuid.uuid4())), ("relative_path", "parent.vhd")])
    child = write_vhdx(tmp_path / "child.avhdx", virtual_size=4 * MIB, blocks={}, parent_locator_item=item)
    _expect_unreadable(child, "not the parent: a vhd image, a VHDX's parent must be a VHDX")


def test_cycles_and_depth(bases: dict[str, tuple[Path, bytes]], tmp_path: Path) -> None:
    a, b = tmp_path / "a.avhdx", tmp_path / "b.avhdx"
    write_differencing_vhdx(bases["d512"][0], a)
    write_differencing_vhdx(a, b)
    write_differencing_vhdx(b, a)  # a's parent is now b: a → b → a
    _expect_unreadable(a, "cyclic differencing chain: a.avhdx → b.avhdx → a.avhdx")
    selfref = tmp_path / "self.avhdx"
    write_differencing_vhdx(bases["d512"][0], selfref)
    write_differencing_vhdx(selfref, selfref)
    _expect_unreadable(selfref, "cyclic differencing chain: self.avhdx → self.avhdx")

    chain = [tmp_path / "base.vhdx"]
    shutil.copyfile(bases["d512"][0], chain[0])
    for i in range(4):
        chain.append(
            write_differencing_vhdx(chain[-1], tmp_path / f"c{i}.avhdx", writes={i * 512: bytes([i + 1]) * 512})
        )
    _expect_unreadable(chain[-1], "differencing chain longer than 2 parents", max_chain=2)
    with open_disk(chain[-1], max_chain=4) as d:
        assert len(d.info.parent_chain) == 4
        assert d.read_at(0, 4 * 512) == b"".join(bytes([i + 1]) * 512 for i in range(4))


# ---- hostile parent locators ---------------------------------------------------------------------------------


def _raw_locator(entries: list[tuple[int, int, int, int]], strings: bytes, *, count: int | None = None) -> bytes:
    head = (
        VHDX_PARENT_LOCATOR_TYPE.bytes_le + bytes(2) + (len(entries) if count is None else count).to_bytes(2, "little")
    )
    table = b"".join(
        ko.to_bytes(4, "little") + vo.to_bytes(4, "little") + kl.to_bytes(2, "little") + vl.to_bytes(2, "little")
        for ko, vo, kl, vl in entries
    )
    return head + table + strings


_KEY = "parent_linkage".encode("utf-16-le")
_VALUE = ("{" + str(uuid.UUID(int=1)) + "}").encode("utf-16-le")
_AT = 20 + 12  # strings after the header and one entry
HOSTILE = {
    "key past the end": (_raw_locator([(_AT, _AT + len(_KEY), 4000, len(_VALUE))], _KEY + _VALUE), "lies outside"),
    "value offset huge": (_raw_locator([(_AT, 0xFFFFFFFF, len(_KEY), 2)], _KEY), "lies outside"),
    "value over the table": (_raw_locator([(_AT, 4, len(_KEY), 8)], _KEY), "lies outside"),
    "odd length": (_raw_locator([(_AT, _AT + len(_KEY), len(_KEY) - 1, len(_VALUE))], _KEY + _VALUE), "UTF-16"),
    "empty key": (_raw_locator([(_AT, _AT, 0, len(_VALUE))], _VALUE), "lies outside"),
    "lone surrogate": (
        _raw_locator([(_AT, _AT + len(_KEY), len(_KEY), 4)], _KEY + b"\x00\xd8a\x00"),
        "is not valid UTF-16",
    ),
    "huge count": (_raw_locator([], b"", count=0xFFFF), "claims 65535 key-value entries"),
    "duplicate key": (
        _raw_locator([(44, 44 + len(_KEY), len(_KEY), len(_VALUE))] * 2, _KEY + _VALUE),
        "repeats the key 'parent_linkage'",
    ),
    "no linkage": (parent_locator([("relative_path", "x.vhdx")]), "has no parent_linkage"),
    "linkage not a guid": (parent_locator([("parent_linkage", "{nope}")]), "is not a GUID"),
    "other locator type": (uuid.UUID(int=3).bytes_le + bytes(4), "unknown type"),
    "short": (b"\x00" * 10, "shorter than its 20-byte header"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_parent_locator(case: str, tmp_path: Path) -> None:
    item, words = HOSTILE[case]
    child = write_vhdx(tmp_path / "child.avhdx", virtual_size=4 * MIB, blocks={}, parent_locator_item=item)
    _expect_unreadable(child, "parent locator", words)


def test_has_parent_without_locator(tmp_path: Path) -> None:
    child = write_vhdx(tmp_path / "c.avhdx", virtual_size=4 * MIB, blocks={}, parent_locator_item=b"x" * 40)
    raw = bytearray(child.read_bytes())
    table = 2 * MIB
    for i in range(int.from_bytes(raw[table + 10 : table + 12], "little")):
        e = table + 32 + 32 * i
        if uuid.UUID(bytes_le=bytes(raw[e : e + 16])) == uuid.UUID("a8d35f2d-b30b-454d-abf7-d3d84834ab0c"):
            raw[e : e + 16] = uuid.UUID(int=9).bytes_le  # an unknown item now, and not required
            raw[e + 24 : e + 28] = (2).to_bytes(4, "little")
    child.write_bytes(bytes(raw))
    _expect_unreadable(child, "differencing VHDX (HasParent set) without a parent locator")


# ---- 4 KiB logical sectors --------------------------------------------------------------------------------------


def test_4k_gpt_partition_table(tmp_path: Path) -> None:
    """fdisk writes a GPT for 4096-byte sectors (header at byte 4096, LBAs in 4 KiB units); in a 4K VHDX the
    partition reader takes the sector size from the container, in a 512 one it says where the header is."""
    if shutil.which("fdisk") is None:
        pytest.skip("fdisk not installed")
    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(8 * MIB))
    # g: new GPT; n: partition 1 from LBA 256 to 767; t 11: Microsoft basic data; w: write.
    subprocess.run(
        ["fdisk", "-b", "4096", str(raw)], input=b"g\nn\n1\n256\n767\nt\n11\nw\n", check=True, capture_output=True
    )
    data = raw.read_bytes()
    assert data[4096 : 4096 + 8] == b"EFI PART" and data[512:520] != b"EFI PART"
    for lss in (4096, 512):
        vhdx = write_base_vhdx(tmp_path / f"disk{lss}.vhdx", raw, logical_sector_size=lss)
        with open_disk(vhdx) as d:
            assert d.info.logical_sector_size == lss
            if lss == 4096:
                table = read_partitions(d)
                assert table.style == "gpt"
                (p,) = table.partitions
                assert (p.start, p.size, p.type_id) == (256 * 4096, 512 * 4096, "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7")
            else:
                with pytest.raises(Unreadable, match="written for 4096-byte sectors but the container declares 512"):
                    read_partitions(d)


# ---- end to end: a checkpoint of a 4Kn Windows disk ------------------------------------------------------------


def _four_k_disk(spec: ImageSpec, image_cache: Path, out: Path) -> Path:
    """The factory's GPT disk for ``spec`` laid out again for 4096-byte logical sectors: the GPT written by
    fdisk -b 4096 (header at byte 4096, LBAs in 4 KiB units) and the NTFS boot sector
    saying 4096 bytes per sector, 1 sector per (4 KiB) cluster, hidden sectors and total sectors in 4 KiB
    units, as mkntfs -s 4096 writes them."""
    raw = build_image(spec, "raw", cache_dir=image_cache)
    start, size = volume_extent(spec)
    assert start % 4096 == 0 and size % 4096 == 0
    with open(raw, "rb") as f:
        f.seek(start)
        volume = bytearray(f.read(size))
    assert volume[3:11] == b"NTFS    " and volume[13] * 512 == 4096
    volume[11:13] = (4096).to_bytes(2, "little")
    volume[13] = 1
    volume[28:32] = (start // 4096).to_bytes(4, "little")
    volume[40:48] = (size // 4096 - 1).to_bytes(8, "little")
    volume[size - 4096 : size - 4096 + 512] = volume[:512]  # the backup boot sector: the last logical sector
    disk = spec.disk_size
    with open(out, "wb") as f:
        f.truncate(disk)
    # fdisk -b 4096 (sfdisk 2.38 writes 512-byte-sector tables into files whatever its script says): g a new
    # GPT, n partition 1 over the volume's 4 KiB LBAs, t 11 Microsoft basic data, w write.
    first, last = start // 4096, (start + size) // 4096 - 1
    subprocess.run(
        ["fdisk", "-b", "4096", str(out)],
        input=f"g\nn\n1\n{first}\n{last}\nt\n11\nw\n".encode(),
        check=True,
        capture_output=True,
    )
    with open(out, "r+b") as f:
        f.seek(start)
        f.write(volume)
    return out


def _lint_findings(image: Path, tmp_path: Path, *extra: str) -> tuple[int, set[tuple[str, str]]]:
    """`vmrole lint --image IMAGE` in a subprocess: exit code and (rule id, message) of every finding."""
    reports = tmp_path / f"reports-{image.name}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "harness.cli", "lint", "--image", str(image), "--report-dir", str(reports)]
    command += [*extra, "--format", "json", "--no-junit", "--no-allure", "-q"]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    found: set[tuple[str, str]] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "rule_id" in node and "message" in node:
                found.add((str(node["rule_id"]), str(node["message"]).replace(image.name, "IMAGE")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads((reports / "vmrole.json").read_text("utf-8")))
    return proc.returncode, found


def test_4k_checkpoint_lints_like_its_flattened_disk(image_cache: Path, tmp_path: Path) -> None:
    """A 4Kn Windows disk as a base VHDX (4096-byte logical sectors) and a checkpoint holding every 4 KiB page
    where a badly prepared image differs: `vmrole lint --image child.avhdx` gives the findings of the
    flattened disk (flattened by libvhdi, independently) but for the container's own format findings."""
    missing = missing_tools()
    if missing or shutil.which("fdisk") is None:
        pytest.skip(f"image tools missing: {missing}")
    good_spec = windows_server_2008r2_vmrole().with_changes(partition_style="gpt")
    bad_spec = good_spec.with_changes(
        files={"inetpub/wwwroot/site.pfx": km.pfx_bytes()},
        hives={"SOFTWARE": {WINLOGON: {"DefaultPassword": sz("Hunter2!x")}}},
    )
    work = tmp_path / "work"
    work.mkdir()
    good_raw = _four_k_disk(good_spec, image_cache, work / "good.raw")
    bad_raw = _four_k_disk(bad_spec, image_cache, work / "bad.raw")
    good, bad = good_raw.read_bytes(), bad_raw.read_bytes()
    writes = {
        off: bad[off : off + 4096]
        for off in range(0, len(bad), 4096)
        if bad[off : off + 4096] != good[off : off + 4096]
    }
    assert writes
    vm = tmp_path / "vm"
    vm.mkdir()
    base = write_base_vhdx(vm / "base.vhdx", good_raw, logical_sector_size=4096)
    child = write_differencing_vhdx(base, vm / "checkpoint.avhdx", writes=writes)
    del good
    flat = work / "flattened.raw"
    flat.write_bytes(_libvhdi_read([base, child]))
    assert flat.read_bytes() == bad
    with open_disk(child) as d:
        assert d.info.logical_sector_size == 4096
        table = read_partitions(d)
        assert table.style == "gpt" and table.partitions[0].start == 1 * MIB

    # Content rules find the same problems; the format rules judge each container (VMR012: a chain to merge,
    # VMR013: VHDX or raw rather than a fixed VHD) by design.
    code, child_found = _lint_findings(child, tmp_path)
    _, flat_found = _lint_findings(flat, tmp_path)
    content = {f for f in flat_found if not f[0].startswith("VMR01")}
    assert {r for r, _ in content} == {"VMR211", "VMR310"}, flat_found
    assert {f for f in child_found if not f[0].startswith("VMR01")} == content
    assert {r for r, _ in child_found if r.startswith("VMR01")} == {"VMR012", "VMR013"}, child_found
    assert code == 1
    assert not extract(base).key_material  # the base alone holds no key: the checkpoint's pages are read
