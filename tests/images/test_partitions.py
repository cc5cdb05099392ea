"""Partition tables: MBR (primary + logical), GPT (with backup fallback), bare NTFS volumes.

Tables come from sfdisk with pinned ids; the NTFS volume from mkntfs; the same GPT disk is read through
raw, dynamic VHD and VHDX containers. Damaged tables must give one Unreadable naming the problem.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from harness.readers.errors import Unreadable
from harness.readers.image.container import open_disk
from harness.readers.image.partitions import Partition, PartitionTable, read_partitions
from harness.readers.image.source import ByteSourceIO
from harness.testing.vhdwriter import corrupt_copy

MIB = 1024 * 1024
DISK = 24 * MIB
BASIC = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"
ESP = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
DISK_GUID = "11111111-2222-3333-4444-555555555555"

MBR_SCRIPT = """label: dos
label-id: 0x12345678
start=2048, size=16384, type=7, bootable
start=18432, size=28672, type=5
start=20480, size=4096, type=7
start=26624, size=8192, type=b
"""
GPT_SCRIPT = f"""label: gpt
label-id: {DISK_GUID}
start=2048, size=16384, type={BASIC}, uuid=AAAAAAAA-2222-3333-4444-555555555555, name="Basic data"
start=18432, size=8192, type={ESP}, uuid=BBBBBBBB-2222-3333-4444-555555555555, name=ESP, attrs=LegacyBIOSBootable
"""


def _need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")


def _run(*args: str | Path, stdin: str | None = None) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True, input=stdin, text=True)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Disks:
    def __init__(self, root: Path) -> None:
        _need("sfdisk", "mkntfs", "qemu-img")
        self.root = root
        # NTFS volume of 8 MiB, made for a partition at sector 2048.
        self.volume = root / "volume.ntfs"
        with open(self.volume, "wb") as f:
            f.truncate(8 * MIB)
        _run("mkntfs", "-F", "-Q", "-q", "-s", "512", "-c", "4096", "-p", "2048", "-H", "255", "-S", "63", "-L", "DATA",
             self.volume)  # fmt: skip
        self.mbr = root / "mbr.img"
        with open(self.mbr, "wb") as f:
            f.truncate(DISK)
        _run("sfdisk", "-q", self.mbr, stdin=MBR_SCRIPT)
        with open(self.mbr, "r+b") as f:
            f.seek(2048 * 512)
            f.write(self.volume.read_bytes())
            f.seek(26624 * 512)  # logical partition 6: recognisable bytes
            f.write(random.Random(5).randbytes(8192 * 512))
        self.gpt = root / "gpt.img"
        with open(self.gpt, "wb") as f:
            f.truncate(DISK)
        _run("sfdisk", "-q", self.gpt, stdin=GPT_SCRIPT)
        with open(self.gpt, "r+b") as f:
            f.seek(2048 * 512)
            f.write(random.Random(6).randbytes(16384 * 512))
        self.gpt_vhdx = root / "gpt.vhdx"
        _run("qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic", self.gpt, self.gpt_vhdx)
        self.gpt_vhd = root / "gpt.vhd"
        _run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on", self.gpt,
             self.gpt_vhd)  # fmt: skip
        # A bare volume (no partition table): mkntfs for offset 0.
        self.bare = root / "bare.img"
        with open(self.bare, "wb") as f:
            f.truncate(8 * MIB)
        _run("mkntfs", "-F", "-Q", "-q", "-s", "512", "-c", "4096", "-p", "0", "-H", "255", "-S", "63", "-L", "BARE",
             self.bare)  # fmt: skip


@pytest.fixture(scope="session")
def disks(tmp_path_factory: pytest.TempPathFactory) -> Disks:
    return Disks(tmp_path_factory.mktemp("partition-images"))


def _table(path: Path) -> PartitionTable:
    before = _sha(path)
    with open_disk(path) as disk:
        table = read_partitions(disk)
    assert _sha(path) == before
    return table


def _unreadable(path: Path, *words: str) -> Unreadable:
    t0 = time.monotonic()
    with pytest.raises(Unreadable) as info, open_disk(path) as disk:
        read_partitions(disk)
    assert time.monotonic() - t0 < 2
    for w in words:
        assert w in info.value.problem, f"{w!r} not in {info.value.problem!r}"
    return info.value


def test_mbr_primary_and_logical(disks: Disks) -> None:
    table = _table(disks.mbr)
    assert table.style == "mbr"
    assert table.disk_guid == "0x12345678"
    assert table.partitions == (
        Partition(1, 2048 * 512, 16384 * 512, "0x07", None, True),
        Partition(5, 20480 * 512, 4096 * 512, "0x07", None, False),
        Partition(6, 26624 * 512, 8192 * 512, "0x0b", None, False),
    )
    assert table.notes == ()


def test_partition_source_reads_the_partition(disks: Disks) -> None:
    pyfsntfs = pytest.importorskip("pyfsntfs")
    with open_disk(disks.mbr) as disk:
        table = read_partitions(disk)
        p1, _, p6 = table.partitions
        src = table.source(disk, p1)
        assert src.label == "mbr.img#p1" and src.size == p1.size
        assert src.read_at(0, 8 * MIB) == disks.volume.read_bytes()
        assert src.read_at(p1.size, 1) == b""
        assert table.source(disk, p6).read_at(0, 4096) == random.Random(5).randbytes(8192 * 512)[:4096]
        volume = pyfsntfs.volume()
        volume.open_file_object(ByteSourceIO(src))
        try:
            assert volume.get_name() == "DATA"
        finally:
            volume.close()


def test_gpt(disks: Disks) -> None:
    for path in (disks.gpt, disks.gpt_vhd, disks.gpt_vhdx):
        table = _table(path)
        assert table.style == "gpt"
        assert table.disk_guid == DISK_GUID
        assert table.partitions == (
            Partition(1, 2048 * 512, 16384 * 512, BASIC, "Basic data", False),
            Partition(2, 18432 * 512, 8192 * 512, ESP, "ESP", True),
        )
        assert table.notes == ()
    with open_disk(disks.gpt_vhdx) as disk:
        table = read_partitions(disk)
        assert table.source(disk, table.partitions[0]).read_at(0, 4096) == random.Random(6).randbytes(4096)


def test_bare_ntfs_volume(disks: Disks) -> None:
    table = _table(disks.bare)
    assert table.style == "none"
    assert table.partitions == (Partition(0, 0, 8 * MIB, "0x07", None, False),)
    assert table.disk_guid is None


def _gpt_fix(raw: bytearray, header_lba: int) -> None:
    """Recompute a GPT header's entry-array CRC and header CRC after a test changed them."""
    h = header_lba * 512
    entries_lba = int.from_bytes(raw[h + 72 : h + 80], "little")
    count = int.from_bytes(raw[h + 80 : h + 84], "little")
    esize = int.from_bytes(raw[h + 84 : h + 88], "little")
    array = raw[entries_lba * 512 : entries_lba * 512 + count * esize]
    raw[h + 88 : h + 92] = zlib.crc32(array).to_bytes(4, "little")
    hsize = int.from_bytes(raw[h + 12 : h + 16], "little")
    raw[h + 16 : h + 20] = bytes(4)
    raw[h + 16 : h + 20] = zlib.crc32(raw[h : h + hsize]).to_bytes(4, "little")


def test_gpt_bad_primary_falls_back_to_backup(disks: Disks, tmp_path: Path) -> None:
    expected = _table(disks.gpt).partitions
    bad_header = corrupt_copy(disks.gpt, tmp_path / "h.img", patch={512 + 16: b"\x00\x00\x00\x00"})
    table = _table(bad_header)
    assert table.partitions == expected
    assert any("primary header at LBA 1 is invalid (header CRC mismatch" in n and "backup" in n for n in table.notes)
    bad_entries = corrupt_copy(disks.gpt, tmp_path / "e.img", patch={1024 + 60: b"X"})
    table = _table(bad_entries)
    assert table.partitions == expected
    assert any("partition entry array CRC mismatch" in n for n in table.notes)
    last = DISK // 512 - 1
    both = corrupt_copy(disks.gpt, tmp_path / "b.img", patch={512 + 16: b"\x00", last * 512 + 16: b"\x00"})
    _unreadable(both, "GPT unreadable", "primary header at LBA 1", f"backup header at LBA {last}")


def test_gpt_without_protective_mbr(disks: Disks, tmp_path: Path) -> None:
    bare = corrupt_copy(disks.gpt, tmp_path / "g.img", patch={510: b"\x00\x00"})
    table = _table(bare)
    assert table.style == "gpt" and len(table.partitions) == 2
    assert any("no protective MBR" in n for n in table.notes)


def test_gpt_partition_past_end(disks: Disks, tmp_path: Path) -> None:
    raw = bytearray(disks.gpt.read_bytes())
    last = DISK // 512 - 1
    for header_lba in (1, last):
        h = header_lba * 512
        entries_lba = int.from_bytes(raw[h + 72 : h + 80], "little")
        e = entries_lba * 512 + 128  # entry 2
        raw[e + 40 : e + 48] = (DISK // 512 + 100).to_bytes(8, "little")
        _gpt_fix(raw, header_lba)
    bad = tmp_path / "past.img"
    bad.write_bytes(raw)
    err = _unreadable(bad, "partition 2 ends past the end of the disk")
    assert err.location == "GPT entry 2"
    raw = bytearray(disks.gpt.read_bytes())
    raw[512 + 80 : 512 + 84] = (0x7FFFFFFF).to_bytes(4, "little")  # absurd entry count in the primary only
    _gpt_fix_header_only(raw, 1)
    huge = tmp_path / "huge.img"
    huge.write_bytes(raw)
    table = _table(huge)
    assert any("partition entry array too large" in n for n in table.notes)


def _gpt_fix_header_only(raw: bytearray, header_lba: int) -> None:
    h = header_lba * 512
    hsize = int.from_bytes(raw[h + 12 : h + 16], "little")
    raw[h + 16 : h + 20] = bytes(4)
    raw[h + 16 : h + 20] = zlib.crc32(raw[h : h + hsize]).to_bytes(4, "little")


def _ebr(logical: tuple[int, int, int] | None, link: tuple[int, int] | None) -> bytes:
    """An EBR sector: entry 0 = (type, relative start, count), entry 1 = next EBR (relative start, count)."""
    sector = bytearray(512)
    if logical:
        t, rel, count = logical
        sector[446 + 4] = t
        sector[446 + 8 : 446 + 16] = rel.to_bytes(4, "little") + count.to_bytes(4, "little")
    if link:
        rel, count = link
        sector[462 + 4] = 0x05
        sector[462 + 8 : 462 + 16] = rel.to_bytes(4, "little") + count.to_bytes(4, "little")
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def test_mbr_extended_loop(disks: Disks, tmp_path: Path) -> None:
    # The second EBR (at 18432 + 8192 - 2048 = LBA 24576) links back to the first (relative 0).
    second_ebr = 24576 * 512
    raw = disks.mbr.read_bytes()
    assert raw[second_ebr + 510 : second_ebr + 512] == b"\x55\xaa"
    loop = corrupt_copy(disks.mbr, tmp_path / "loop.img", patch={second_ebr: _ebr((0x0B, 2048, 8192), (0, 100))})
    err = _unreadable(loop, "extended partition chain loops", "LBA 18432 → LBA 24576 → LBA 18432")
    assert err.location == "EBR at LBA 18432"
    selfloop = corrupt_copy(disks.mbr, tmp_path / "self.img", patch={18432 * 512: _ebr((7, 2048, 4096), (0, 100))})
    _unreadable(selfloop, "extended partition chain loops")


def test_long_ebr_chain_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "chain.img"
    n = 400
    ext_start, ext_count = 2048, n * 2 + 10
    with open(path, "wb") as f:
        f.truncate((ext_start + ext_count + 10) * 512)
        mbr = bytearray(512)
        mbr[446 + 4] = 0x05
        mbr[446 + 8 : 446 + 16] = ext_start.to_bytes(4, "little") + ext_count.to_bytes(4, "little")
        mbr[510:512] = b"\x55\xaa"
        f.write(mbr)
        for i in range(n):
            f.seek((ext_start + 2 * i) * 512)
            f.write(_ebr((7, 1, 1), (2 * (i + 1), 2) if i + 1 < n else None))
    _unreadable(path, "more than 256 logical partitions")


def test_mbr_partition_past_end(disks: Disks, tmp_path: Path) -> None:
    bad = corrupt_copy(disks.mbr, tmp_path / "p.img", patch={446 + 12: (DISK // 512).to_bytes(4, "little")})
    err = _unreadable(bad, "partition 1 ends past the end of the disk", f"disk size {DISK:#x}")
    assert err.location == "MBR entry 1"
    logical = corrupt_copy(
        disks.mbr, tmp_path / "l.img", patch={18432 * 512 + 446 + 12: (DISK // 512).to_bytes(4, "little")}
    )
    _unreadable(logical, "partition 5 ends past the end of the disk")
    outside = corrupt_copy(disks.mbr, tmp_path / "o.img", patch={18432 * 512 + 462 + 8: (10**6).to_bytes(4, "little")})
    _unreadable(outside, "lies outside the extended partition")


def test_no_table(tmp_path: Path) -> None:
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(MIB))
    _unreadable(blank, "no partition table")
    with pytest.raises(Unreadable, match="too small"):
        read_partitions(_Bytes(b"\x00" * 100))


class _Bytes:
    """An in-memory ByteSource for table-only tests."""

    def __init__(self, data: bytes, label: str = "mem") -> None:
        self.data, self.size, self.label = data, len(data), label

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise Unreadable(self.label, "negative")
        return self.data[offset : offset + length]


def _small_disks(root: Path) -> tuple[bytes, bytes]:
    """1 MiB MBR (primary, extended, two logicals; written by hand) and GPT (sfdisk) disks for fuzzing: small
    enough to copy hundreds of times."""
    mbr = bytearray(MIB)
    mbr[446 : 446 + 16] = bytes([0x80, 0, 0, 0, 7, 0, 0, 0]) + (64).to_bytes(4, "little") + (256).to_bytes(4, "little")
    mbr[462 : 462 + 16] = bytes([0, 0, 0, 0, 5, 0, 0, 0]) + (512).to_bytes(4, "little") + (1400).to_bytes(4, "little")
    mbr[510:512] = b"\x55\xaa"
    mbr[512 * 512 : 513 * 512] = _ebr((7, 64, 128), (512, 600))
    mbr[1024 * 512 : 1025 * 512] = _ebr((0x0B, 64, 128), None)
    gpt = root / "small-gpt.img"
    with open(gpt, "wb") as f:
        f.truncate(MIB)
    script = f"label: gpt\nlabel-id: {DISK_GUID}\nfirst-lba: 34\nstart=40, size=400, type={BASIC}, name=A\n"
    script += f"start=600, size=200, type={ESP}, name=B\n"
    _run("sfdisk", "-q", gpt, stdin=script)
    return bytes(mbr), gpt.read_bytes()


def test_fuzz_tables_only_unreadable(tmp_path: Path) -> None:
    """Random damage to MBR, EBRs and both GPT copies: a table or one Unreadable, never another error."""
    _need("sfdisk")
    mbr, gpt = _small_disks(tmp_path)
    assert len(read_partitions(_Bytes(mbr)).partitions) == 3
    assert len(read_partitions(_Bytes(gpt)).partitions) == 2
    started = time.monotonic()
    last = MIB // 512 - 1
    outcomes: dict[str, int] = {}
    for name, pristine, ranges in (
        ("mbr", mbr, [(0, 512), (512 * 512, 513 * 512), (1024 * 512, 1025 * 512)]),
        ("gpt", gpt, [(0, 512), (512, 1024), (1024, 1024 + 512), (last * 512, MIB)]),
    ):
        for i in range(400):
            rnd = random.Random(i)
            data = bytearray(pristine)
            for _ in range(rnd.randint(1, 8)):
                lo, hi = rnd.choice(ranges)
                pos = rnd.randrange(lo, hi)
                n = min(rnd.choice((1, 2, 4, 8)), len(data) - pos)
                data[pos : pos + n] = rnd.choice((b"\xff" * 8, bytes(8), rnd.randbytes(8)))[:n]
            if name == "gpt" and rnd.random() < 0.6:
                for lba in (1, last):
                    if data[lba * 512 : lba * 512 + 8] == b"EFI PART":
                        _gpt_fix(data, lba)
            try:
                read_partitions(_Bytes(bytes(data)))
                outcomes["table"] = outcomes.get("table", 0) + 1
            except Unreadable:
                outcomes["unreadable"] = outcomes.get("unreadable", 0) + 1
            except Exception as exc:  # pragma: no cover - the failure we hunt
                pytest.fail(f"{name} seed {i}: {type(exc).__name__}: {exc}")
    assert outcomes.get("table", 0) > 50 and outcomes.get("unreadable", 0) > 50, outcomes
    assert time.monotonic() - started < 20
