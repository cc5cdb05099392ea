"""The NTFS reader against volumes written by real tools (wimlib + ntfs-3g), cross-checked with libfsntfs,
and against damaged copies of them: only Unreadable or notes, never another exception or a hang."""

from __future__ import annotations

import contextlib
import itertools
import random
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.readers.errors import Unreadable
from harness.readers.image.ntfs import (
    EncryptedFile,
    FileEntry,
    Inventory,
    NtfsVolume,
    _Scan,
    decode_runs,
    parse_boot_sector,
)
from harness.readers.image.source import FileSource
from tests.images.ntfs_build import (
    BytesSource,
    RawVolume,
    add_stream,
    build_volume,
    extend_sparse,
    make_sample_tree,
    missing_tools,
    payload,
)

pytestmark = pytest.mark.skipif(bool(missing_tools()), reason=f"NTFS tools missing: {missing_tools()}")

MiB = 1024 * 1024
LINKS = 30
SPARSE_SIZE = 40 * MiB
DEEP_LEVELS = 258  # folders below \TooDeep: the reader cuts at 255 path components


@dataclass
class Sample:
    path: Path
    files: dict[str, bytes]  # relative posix path → content, for every regular file written by wimlib


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    work = tmp_path_factory.mktemp("ntfs-sample")
    tree = work / "tree"
    files = make_sample_tree(tree)
    target = tree / "Links" / "target.bin"
    target.parent.mkdir()
    files["Links/target.bin"] = payload(9, 30_000)
    target.write_bytes(files["Links/target.bin"])
    for i in range(LINKS):  # long names: the $FILE_NAMEs overflow the record → $ATTRIBUTE_LIST + extensions
        rel = f"Links/link-{i:02d}-{'z' * 150}.bin"
        (tree / rel).hardlink_to(target)
        files[rel] = files["Links/target.bin"]
    deep = tree / "TooDeep"
    deep.mkdir()
    for _ in range(DEEP_LEVELS):
        deep = deep / "z"
        deep.mkdir()
    (deep / "leaf.txt").write_bytes(b"too deep")
    volume = build_volume(tree, work / "sample.ntfs", 64 * MiB, label="VMRoleTest")
    add_stream(volume, "/ads-host.txt", "Zone.Identifier", b"[ZoneTransfer]\r\nZoneId=3\r\n", work)
    extend_sparse(volume, "/grow.bin", SPARSE_SIZE)
    files["grow.bin"] = files["grow.bin"] + bytes(SPARSE_SIZE - len(files["grow.bin"]))
    return Sample(volume, files)


@pytest.fixture(scope="session")
def sample_inventory(sample: Sample) -> tuple[NtfsVolume, Inventory]:
    vol = NtfsVolume(FileSource(sample.path))
    return vol, vol.inventory()


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small volume for damage and fuzz tests: its bytes."""
    work = tmp_path_factory.mktemp("ntfs-small")
    tree = work / "tree"
    for rel, data in {
        "Windows/System32/config/SYSTEM": b"regf" + payload(11, 6000),
        "Windows/win.ini": b"[fonts]\r\n",
        "Users/a.txt": b"a" * 900,
        "LoopA/LoopB/inner.txt": b"inner",
        "big.bin": payload(12, 200_000),
    }.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    (tree / "Windows" / "link.ini").hardlink_to(tree / "Windows" / "win.ini")
    return build_volume(tree, work / "small.ntfs", 8 * MiB).read_bytes()


# ---- libfsntfs as the independent reader ----------------------------------------------------------------


def fsntfs_walk(path: Path, max_depth: int = 255) -> dict[str, tuple[int, bool, int, bool]]:
    """path → (size, is_dir, record, has_ads) for every name libfsntfs lists from the root."""
    pyfsntfs = pytest.importorskip("pyfsntfs")
    vol = pyfsntfs.volume()
    fh = path.open("rb")
    vol.open_file_object(fh)
    out: dict[str, tuple[int, bool, int, bool]] = {}

    def walk(entry: Any, prefix: str, depth: int) -> None:
        for sub in entry.sub_file_entries:
            p = prefix + "\\" + sub.name
            is_dir = sub.has_directory_entries_index()
            out[p] = (sub.size, is_dir, sub.file_reference & ((1 << 48) - 1), sub.number_of_alternate_data_streams > 0)
            if is_dir and depth < max_depth:
                walk(sub, p, depth + 1)

    walk(vol.get_root_directory(), "", 1)
    vol.close()
    fh.close()
    return out


def tree_listing(tree: Path) -> dict[str, tuple[int, bool]]:
    """The source tree as the volume should show it: path → (size, is_dir)."""
    out: dict[str, tuple[int, bool]] = {}
    for path in tree.rglob("*"):
        rel = "\\" + str(path.relative_to(tree)).replace("/", "\\")
        out[rel] = (0, True) if path.is_dir() else (path.stat().st_size, False)
    return out


def ours(inv: Inventory) -> dict[str, tuple[int, bool, int, bool]]:
    out: dict[str, tuple[int, bool, int, bool]] = {}
    for path, e in inv.walk():
        assert path not in out, f"{path} yielded twice"
        out[path] = (e.size, e.is_dir, e.record, e.has_ads)
    return out


# ---- a healthy volume ------------------------------------------------------------------------------------


def test_geometry_label_and_serial(sample: Sample, sample_inventory: tuple[NtfsVolume, Inventory]) -> None:
    pyfsntfs = pytest.importorskip("pyfsntfs")
    vol, _ = sample_inventory
    assert (vol.cluster_size, vol.record_size, vol.bytes_per_sector) == (4096, 1024, 512)
    assert vol.label == "VMRoleTest"
    ref = pyfsntfs.volume()
    with sample.path.open("rb") as fh:
        ref.open_file_object(fh)
        assert int(vol.serial, 16) == ref.serial_number
        assert ref.name == "VMRoleTest"
        ref.close()


def test_inventory_matches_libfsntfs(sample: Sample, sample_inventory: tuple[NtfsVolume, Inventory]) -> None:
    _, inv = sample_inventory
    mine = ours(inv)
    theirs = fsntfs_walk(sample.path)
    assert mine.keys() == theirs.keys()
    assert mine == theirs  # sizes, folder flags, record numbers, streams
    assert len(mine) > 450


def test_every_file_reads_back(sample: Sample, sample_inventory: tuple[NtfsVolume, Inventory]) -> None:
    vol, inv = sample_inventory
    for rel, content in sample.files.items():
        entry = inv.lookup(rel)
        assert entry is not None, rel
        assert not entry.is_dir
        assert entry.size == len(content), rel
        assert vol.read_file(entry, len(content) + 100) == content, rel
        assert vol.read_file(entry, 1000) == content[:1000], rel
    assert vol.read_file(inv.lookup("big.bin") or inv.root(), 0) == b""


def test_sparse_tail_reads_as_zeros(sample: Sample, sample_inventory: tuple[NtfsVolume, Inventory]) -> None:
    pyfsntfs = pytest.importorskip("pyfsntfs")
    vol, inv = sample_inventory
    entry = inv.lookup("grow.bin")
    assert entry is not None and entry.size == SPARSE_SIZE
    data = vol.read_file(entry, SPARSE_SIZE)
    ref = pyfsntfs.volume()
    with sample.path.open("rb") as fh:
        ref.open_file_object(fh)
        assert data == ref.get_file_entry_by_path("\\grow.bin").read_buffer(SPARSE_SIZE)
        ref.close()


def test_hard_links_one_entry_per_name(sample: Sample, sample_inventory: tuple[NtfsVolume, Inventory]) -> None:
    _vol, inv = sample_inventory
    big = inv.lookup("big.bin")
    linked = inv.lookup("Windows/Temp/hardlink-to-big.bin")
    assert big is not None and linked is not None
    assert big.record == linked.record and big.links == linked.links == 2
    assert big.parent != linked.parent
    names = [(p, e) for p, e in inv.walk() if e.record == big.record]
    assert sorted(p for p, _ in names) == ["\\Windows\\Temp\\hardlink-to-big.bin", "\\big.bin"]


def test_attribute_list_and_extension_records(sample: Sample, sample_inventory: tuple[NtfsVolume, Inventory]) -> None:
    vol, inv = sample_inventory
    target = inv.lookup("Links/target.bin")
    assert target is not None
    raw = RawVolume(bytearray(sample.path.read_bytes()))
    assert 0x20 in [t for t, _, _ in raw.attributes(target.record)], "the fixture should need an $ATTRIBUTE_LIST"
    assert target.links == LINKS + 1
    same = [p for p, e in inv.walk() if e.record == target.record]
    assert len(same) == LINKS + 1
    assert vol.read_file(target, 10**9) == sample.files["Links/target.bin"]


def test_alternate_data_stream_flag(sample_inventory: tuple[NtfsVolume, Inventory]) -> None:
    vol, inv = sample_inventory
    host = inv.lookup("ads-host.txt")
    assert host is not None and host.has_ads
    assert vol.read_file(host, 100) == b"host of a stream"  # the unnamed stream, not the ADS
    assert not (inv.lookup("tiny.txt") or inv.root()).has_ads


def test_lookup_forms(sample_inventory: tuple[NtfsVolume, Inventory]) -> None:
    _, inv = sample_inventory
    want = inv.lookup("Windows\\System32\\config\\SYSTEM")
    assert want is not None and want.name == "SYSTEM"
    for form in (
        "\\Windows\\System32\\config\\SYSTEM",
        "C:\\Windows\\System32\\config\\SYSTEM",
        "c:/windows/system32/CONFIG/system",
        "/WINDOWS//System32/config/SYSTEM",
        "windows/system32/config/system/",
    ):
        assert inv.lookup(form) == want, form
    assert inv.lookup("Windows\\Temp\\mixed-case.txt") == inv.lookup("WINDOWS/TEMP/MIXED-CASE.TXT")
    assert (inv.lookup("windows/temp/mixed-case.txt") or inv.root()).name == "Mixed-Case.TxT"
    assert inv.lookup("Users/ÜNÏCÖDÉ ✓ 文件/NAÏVE.TXT") is not None
    assert (inv.lookup("Users/Ünïcödé ✓ 文件/😀 emoji.bin") or inv.root()).size == 1500
    assert inv.lookup("Windows/System32/config/SYSTEM/child") is None
    assert inv.lookup("Windows/nothing") is None
    assert inv.lookup("") == inv.lookup("\\") == inv.lookup("C:\\") == inv.root()


def test_children_and_paths(sample_inventory: tuple[NtfsVolume, Inventory]) -> None:
    _, inv = sample_inventory
    kids = {e.name for e in inv.children("Windows\\System32")}
    assert kids == {"config", "drivers", "CMD.EXE"}
    assert inv.children("EmptyDir") == []
    assert inv.children("tiny.txt") == []
    assert inv.children("no/such") == []
    assert {e.name for e in inv.children(inv.root())} >= {"$MFT", "Windows", "EmptyDir", "empty.txt"}
    for path, entry in inv.walk():
        assert inv.path_of(entry) == path
    assert inv.path_of(inv.root()) == "\\"


def test_special_files(sample: Sample, sample_inventory: tuple[NtfsVolume, Inventory]) -> None:
    vol, inv = sample_inventory
    raw = RawVolume(bytearray(sample.path.read_bytes()))
    # resident data inside the first sector, resident data across both sector ends (the update sequence
    # must be applied to read it), non-resident data
    for path, resident in (("tiny.txt", True), ("Many/f0092-b.dat", True), ("big.bin", False)):
        entry = inv.lookup(path)
        assert entry is not None
        data = raw.attribute(entry.record, 0x80)
        assert raw.fixed_record(entry.record)[data + 8] == (0 if resident else 1), path
        assert vol.read_file(entry, 10**8) == sample.files[path]
    across = raw.fixed_record((inv.lookup("Many/f0092-b.dat") or inv.root()).record)
    assert int.from_bytes(across[24:28], "little") > 1022
    empty = inv.lookup("empty.txt")
    assert empty is not None and empty.size == 0 and vol.read_file(empty, 100) == b""
    long_one = [p for p, _ in inv.walk() if p.startswith("\\LongPaths\\") and p.endswith(".txt")]
    assert len(long_one) == 1 and len(long_one[0]) > 260
    deep = inv.lookup("Deep/" + "/".join(f"d{i:03d}" for i in range(40)) + "/bottom.txt")
    assert deep is not None and vol.read_file(deep, 10) == b"bottom"
    folder = inv.lookup("EmptyDir")
    assert folder is not None and folder.is_dir and folder.size == 0
    with pytest.raises(Unreadable, match="is a folder; not read"):
        vol.read_file(folder, 10)


def test_counts(sample_inventory: tuple[NtfsVolume, Inventory]) -> None:
    _, inv = sample_inventory
    walked = list(inv.walk())
    assert inv.file_count == sum(1 for _, e in walked if not e.is_dir)
    assert inv.dir_count == sum(1 for _, e in walked if e.is_dir)


def test_depth_cut_at_255_components(sample_inventory: tuple[NtfsVolume, Inventory]) -> None:
    _, inv = sample_inventory
    deep = [p for p, _ in inv.walk() if p.startswith("\\TooDeep")]
    assert max(p.count("\\") for p in deep) == 255
    assert not any(p.endswith("leaf.txt") for p in deep)
    assert any("deeper than 255 levels" in n for n in inv.notes)
    assert inv.lookup("TooDeep/" + "/".join(["z"] * DEEP_LEVELS) + "/leaf.txt") is None


@pytest.mark.parametrize(("sector", "cluster"), [(512, 512), (4096, 4096), (512, 131072)])
def test_other_geometries(tmp_path_factory: pytest.TempPathFactory, sector: int, cluster: int) -> None:
    """Records spanning clusters (512-byte clusters), 4 KiB records (8 fixup strides), and the
    negative-exponent sectors-per-cluster code (128 KiB clusters: 0xF8)."""
    work = tmp_path_factory.mktemp(f"ntfs-{sector}-{cluster}")
    tree = work / "tree"
    files = make_sample_tree(tree)
    volume = build_volume(tree, work / "v.ntfs", 96 * MiB, cluster=cluster, sector=sector)
    vol = NtfsVolume(FileSource(volume))
    assert vol.cluster_size == cluster
    assert vol.record_size == max(1024, sector)
    inv = vol.inventory()
    mine = ours(inv)
    assert {p: v[:2] for p, v in mine.items() if not p.startswith("\\$")} == tree_listing(tree)
    if cluster <= 65536:  # libfsntfs lists no folder entries when clusters are over 64 KiB (ntfs-3g's ntfsls does)
        assert mine == fsntfs_walk(volume)
    for rel in ("big.bin", "resident-700.bin", "Windows/System32/config/SYSTEM", "Many/f0299-A.dat"):
        entry = inv.lookup(rel)
        assert entry is not None and vol.read_file(entry, 10**8) == files[rel]


# ---- boot sector and run lists ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "match"),
    [
        ((3, "<8s", b"MSDOS5.0"), "not an NTFS volume"),
        ((0x0B, "<H", 500), "bad bytes per sector 500"),
        ((0x0B, "<H", 0), "bad bytes per sector 0"),
        ((0x0D, "<B", 3), "bad sectors per cluster code 0x03"),
        ((0x0D, "<B", 0), "bad sectors per cluster code 0x00"),
        ((0x0D, "<B", 0xF3), "over NTFS's 2 MiB"),
        ((0x40, "<b", 0), "bad clusters-per-MFT-record code 0"),
        ((0x40, "<b", -20), "bad clusters-per-MFT-record code -20"),
        ((0x40, "<b", -8), "bad MFT record size 256"),
        ((0x28, "<Q", 0), "0 sectors"),
        ((0x28, "<Q", 1 << 40), "volume is truncated"),
        ((0x30, "<Q", 0), r"\$MFT cluster 0 lies outside"),
        ((0x30, "<Q", 1 << 30), r"\$MFT cluster \d+ lies outside"),
        ((0x38, "<Q", 1 << 50), r"\$MFTMirr cluster \d+ lies outside"),
    ],
)
def test_boot_sector_checks(small: bytes, field: tuple[int, str, Any], match: str) -> None:
    off, fmt, value = field
    boot = bytearray(small[:512])
    if isinstance(value, bytes):
        boot[off : off + len(value)] = value
    else:
        struct.pack_into(fmt, boot, off, value)
    with pytest.raises(Unreadable, match=match) as err:
        parse_boot_sector(bytes(boot), len(small), "small.ntfs")
    assert err.value.location == "boot sector"


def test_boot_sector_encodings(small: bytes) -> None:
    boot = bytearray(small[:512])
    struct.pack_into("<HB", boot, 0x0B, 512, 0xF4)  # 2^12 sectors of 512: 2 MiB clusters
    struct.pack_into("<QQQ", boot, 0x28, 1 << 20, 4, 8)
    struct.pack_into("<b", boot, 0x40, -10)  # 2^10-byte records
    info = parse_boot_sector(bytes(boot), 1 << 29, "x")
    assert (info.cluster_size, info.record_size, info.total_clusters) == (2 * MiB, 1024, 256)
    struct.pack_into("<B", boot, 0x0D, 8)
    struct.pack_into("<b", boot, 0x40, 1)  # positive: clusters per record
    info = parse_boot_sector(bytes(boot), 1 << 29, "x")
    assert (info.cluster_size, info.record_size) == (4096, 4096)


def test_garbage_and_short_sources(small: bytes) -> None:
    rng = random.Random(5)
    with pytest.raises(Unreadable, match="not an NTFS volume"):
        NtfsVolume(BytesSource(rng.randbytes(8 * MiB)))
    with pytest.raises(Unreadable, match="too small"):
        NtfsVolume(BytesSource(small[:100]))
    with pytest.raises(Unreadable, match="volume is truncated"):
        NtfsVolume(BytesSource(small[: len(small) // 2]))


def test_decode_runs() -> None:
    # 0x31: 1-byte length, 3-byte offset; 0x11 with a negative offset; 0x01: sparse
    runs = decode_runs(bytes([0x31, 0x10, 0x00, 0x10, 0x00, 0x11, 0x08, 0xF0, 0x01, 0x20, 0x00]), 10_000, "v", "r")
    assert [tuple(r) for r in runs] == [(0, 0x1000, 0x10), (0x10, 0x1000 - 0x10, 8), (0x18, -1, 0x20)]
    with pytest.raises(Unreadable, match="run of 0 clusters"):
        decode_runs(bytes([0x11, 0x00, 0x05, 0x00]), 10_000, "v", "MFT record 9")
    with pytest.raises(Unreadable, match="header byte 0x10"):
        decode_runs(bytes([0x10, 0x05, 0x00]), 10_000, "v", "MFT record 9")
    with pytest.raises(Unreadable, match="past the volume"):
        decode_runs(bytes([0x21, 0x10, 0x00, 0x30]), 100, "v", "MFT record 9")
    with pytest.raises(Unreadable, match="past the volume"):
        decode_runs(bytes([0x11, 0x10, 0x80]), 100, "v", "MFT record 9")  # negative LCN
    with pytest.raises(Unreadable, match="header byte"):
        decode_runs(bytes([0x44, 0x10]), 100, "v", "MFT record 9")  # cut short


# ---- damage ----------------------------------------------------------------------------------------------


def _inventory_of(image: bytearray) -> tuple[NtfsVolume, Inventory]:
    vol = NtfsVolume(BytesSource(image))
    return vol, vol.inventory()


def _record_of(small: bytes, path: str) -> int:
    entry = NtfsVolume(BytesSource(small)).inventory().lookup(path)
    assert entry is not None
    return entry.record


def test_parent_loop_is_noted_not_followed(small: bytes) -> None:
    image = bytearray(small)
    raw = RawVolume(image)
    a, b = _record_of(small, "LoopA"), _record_of(small, "LoopA/LoopB")
    fn = raw.attribute(a, 0x30)
    value = fn + int.from_bytes(raw.fixed_record(a)[fn + 20 : fn + 22], "little")
    seq_b = int.from_bytes(raw.fixed_record(b)[16:18], "little")
    raw.patch(a, value, (seq_b << 48 | b).to_bytes(8, "little"))  # LoopA's parent is now LoopB
    start = time.monotonic()
    _, inv = _inventory_of(image)
    paths = [p for p, _ in inv.walk()]
    assert time.monotonic() - start < 5
    assert not any(p.startswith("\\LoopA") for p in paths)
    assert "\\Windows\\win.ini" in paths
    assert any("parent loop (MFT loop)" in n for n in inv.notes)
    assert inv.lookup("LoopA") is None
    inner = inv.children(FileEntry(b, a, "LoopB", True, 0, 1, False))
    assert sorted(e.name for e in inner) == ["LoopA", "inner.txt"]  # LoopB now holds its own parent
    with pytest.raises(Unreadable, match="not reachable from the root"):
        inv.path_of(inner[0])
    assert inv.children("LoopA") == []


def test_orphan_is_noted(small: bytes) -> None:
    image = bytearray(small)
    raw = RawVolume(image)
    rec = _record_of(small, "Users/a.txt")
    fn = raw.attribute(rec, 0x30)
    value = fn + int.from_bytes(raw.fixed_record(rec)[fn + 20 : fn + 22], "little")
    raw.patch(rec, value, (7 << 48 | 3000).to_bytes(8, "little"))  # a parent that does not exist
    _, inv = _inventory_of(image)
    assert inv.lookup("Users/a.txt") is None
    assert any("orphans" in n for n in inv.notes)


def test_bad_fixup_skips_the_record(small: bytes) -> None:
    image = bytearray(small)
    raw = RawVolume(image)
    rec = _record_of(small, "Windows/win.ini")
    image[raw.record_offset(rec) + 510] ^= 0xFF  # the first sector's check bytes
    _, inv = _inventory_of(image)
    assert inv.lookup("Windows/win.ini") is None
    assert inv.lookup("Windows/link.ini") is None  # same record
    assert inv.lookup("Windows/System32/config/SYSTEM") is not None
    assert any("failing the update sequence check" in n and str(rec) in n for n in inv.notes)


def test_damaged_record_zero_falls_back_to_the_mirror(small: bytes) -> None:
    image = bytearray(small)
    raw = RawVolume(image)
    image[raw.record_offset(0) + 1022] ^= 0xFF
    _vol, inv = _inventory_of(image)
    assert any("$MFTMirr copy was used" in n for n in inv.notes)
    assert inv.lookup("big.bin") is not None
    mirror = int.from_bytes(image[0x38:0x40], "little") * raw.cluster
    image[mirror + 510] ^= 0xFF
    with pytest.raises(Unreadable, match=r"\$MFT record 0 fails its update sequence check") as err:
        NtfsVolume(BytesSource(image))
    assert err.value.location == "MFT record 0"


PAST_THE_END = bytes([0x31, 0x10, 0x00, 0x00, 0x40, 0x00])  # 16 clusters at LCN 0x400000, then the end


def _data_runs(raw: RawVolume, rec: int) -> int:
    """Offset of the first $DATA attribute's mapping pairs in a record (room for PAST_THE_END checked)."""
    data = raw.attribute(rec, 0x80)
    fixed = raw.fixed_record(rec)
    assert fixed[data + 8] == 1, "non-resident"
    runs = data + int.from_bytes(fixed[data + 32 : data + 34], "little")
    assert runs + len(PAST_THE_END) <= data + int.from_bytes(fixed[data + 4 : data + 8], "little")
    return runs


def test_run_list_past_the_end(small: bytes) -> None:
    image = bytearray(small)
    raw = RawVolume(image)
    rec = _record_of(small, "big.bin")
    raw.patch(rec, _data_runs(raw, rec), PAST_THE_END)
    vol, inv = _inventory_of(image)
    entry = inv.lookup("big.bin")
    assert entry is not None and entry.size == 200_000  # the inventory does not need the runs
    with pytest.raises(Unreadable, match=f"MFT record {rec}: run at VCN 0 points past the volume") as err:
        vol.read_file(entry, 100)
    assert err.value.location == f"MFT record {rec}"


def test_mft_run_list_past_the_end(small: bytes) -> None:
    image = bytearray(small)
    raw = RawVolume(image)
    raw.patch(0, _data_runs(raw, 0), PAST_THE_END)
    with pytest.raises(Unreadable, match="MFT record 0: run at VCN 0 points past the volume"):
        NtfsVolume(BytesSource(image))


def test_encrypted_is_refused_and_a_false_compressed_flag_is_caught(small: bytes) -> None:
    """EFS-encrypted data is refused as such (EncryptedFile, not damage); the compressed flag on data that
    has no compression unit is damage for non-resident data, and resident data is read as is (Windows never
    compresses resident data). Real compressed volumes: tests/images/test_ntfs_compressed.py."""
    for flag in (0x0001, 0x4000):
        image = bytearray(small)
        raw = RawVolume(image)
        for path in ("big.bin", "Users/a.txt"):  # non-resident and resident
            rec = _record_of(small, path)
            data = raw.attribute(rec, 0x80)
            flags = int.from_bytes(raw.fixed_record(rec)[data + 12 : data + 14], "little")
            raw.patch(rec, data + 12, (flags | flag).to_bytes(2, "little"))
            vol, inv = _inventory_of(image)
            entry = inv.lookup(path)
            assert entry is not None
            if flag == 0x4000:
                with pytest.raises(EncryptedFile, match="is EFS-encrypted"):
                    vol.read_file(entry, 100)
            elif raw.fixed_record(rec)[data + 8]:  # non-resident
                with pytest.raises(Unreadable, match="bad compression unit 0"):
                    vol.read_file(entry, 100)
            else:
                assert vol.read_file(entry, 100) == _inventory_of(bytearray(small))[0].read_file(entry, 100)


# ---- the tree logic on synthetic scans -------------------------------------------------------------------


def _synthetic(records: dict[int, tuple[bool, int]], names: list[tuple[int, int, str]]) -> Inventory:
    """records: number → (is_dir, seq); names: (record, parent record, name), parent refs with the
    parent's sequence number."""
    scan = _Scan(max(records) + 1)
    for number, (is_dir, seq) in records.items():
        scan.meta[number] = seq << 8 | 1 | (2 if is_dir else 0)
    for record, parent, name in names:
        pseq = records.get(parent, (False, 1))[1]
        scan.add_names(record, [(pseq << 48 | parent, name)])
    volume = cast(NtfsVolume, SimpleNamespace(notes=[], label_text="synthetic"))
    return Inventory(volume, scan)


def _scan_of(inv: Inventory) -> _Scan:
    """The scan behind an inventory (to rebuild one after editing its names)."""
    scan = _Scan(len(inv._meta))
    scan.meta, scan.sizes, scan.links = inv._meta, inv._sizes, inv._links
    scan.n_rec, scan.n_name, scan.kids, scan.dir_names = inv._rec, inv._name, inv._kids, inv._dir_names
    return scan


def test_synthetic_long_paths_are_cut() -> None:
    records = {5: (True, 5)}
    names = [(5, 5, ".")]
    parent = 5
    for i in range(140):  # 140 × 241 characters > 32,767
        records[100 + i] = (True, 1)
        names.append((100 + i, parent, f"{i:03d}" + "x" * 237))
        parent = 100 + i
    records[99] = (False, 1)
    names.append((99, parent, "file.txt"))
    inv = _synthetic(records, names)
    paths = [p for p, _ in inv.walk()]
    assert max(len(p) for p in paths) <= 32_767
    assert len(paths) < 141
    assert any("over 32767 characters" in n for n in inv.notes)


def test_synthetic_loops_orphans_and_reused_parents() -> None:
    records = {5: (True, 5), 20: (True, 1), 21: (True, 1), 22: (False, 1), 30: (True, 4), 31: (False, 1)}
    names = [
        (5, 5, "."),
        (20, 21, "A"),  # A ↔ B: a loop
        (21, 20, "B"),
        (22, 21, "in-loop.txt"),
        (30, 5, "Reused"),
        (31, 30, "fine.txt"),
    ]
    inv = _synthetic(records, names)
    # a name whose parent reference carries an old sequence number: the folder was deleted and reused
    scan_kids = inv._kids
    scan_kids.setdefault(3 << 48 | 30, []).append(len(inv._name))
    inv._rec.append(40)
    inv._name.append("stale.txt")
    assert sorted(p for p, _ in inv.walk()) == ["\\Reused", "\\Reused\\fine.txt"]
    notes = " ".join(inv.notes)
    assert "3 MFT records inside or below a parent loop" in notes
    assert "1 MFT record whose parent folder is missing or reused" in notes
    assert inv.lookup("reused/FINE.TXT") is not None


def test_synthetic_parent_reference_without_sequence_number() -> None:
    inv = _synthetic({5: (True, 5), 20: (True, 3), 21: (False, 1)}, [(5, 5, "."), (20, 5, "Dir")])
    inv._kids.setdefault(20, []).append(len(inv._name))  # parent ref 20 with sequence 0: "any"
    inv._rec.append(21)
    inv._name.append("file.txt")
    fresh = Inventory(cast(NtfsVolume, SimpleNamespace(notes=[], label_text="synthetic")), _scan_of(inv))
    assert sorted(p for p, _ in fresh.walk()) == ["\\Dir", "\\Dir\\file.txt"]
    assert fresh.notes == ()


def test_mft_chunks_join_records_split_between_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """512-byte clusters, 1 KiB records: runs of odd cluster counts split records between reads."""
    from harness.readers.image import ntfs

    monkeypatch.setattr(ntfs, "_CHUNK", 1536)  # also splits records between reads of one run
    rng = random.Random(3)
    runs = [ntfs._Run(0, 40, 3), ntfs._Run(3, 7, 5), ntfs._Run(8, 60, 1), ntfs._Run(9, 20, 11)]
    image = bytearray(rng.randbytes(100 * 512))
    stream = b"".join(bytes(image[r.lcn * 512 : (r.lcn + r.length) * 512]) for r in runs)
    vol = object.__new__(NtfsVolume)
    vol.source, vol.label_text = BytesSource(image), "synthetic"
    vol.record_size, vol.cluster_size, vol._mft_size, vol._mft_runs = 1024, 512, 10 * 1024, runs
    got = list(vol._chunks())
    assert all(len(buf) % 1024 == 0 for _, buf in got)
    counts = [len(buf) // 1024 for _, buf in got]
    assert [first for first, _ in got] == list(itertools.accumulate([0, *counts[:-1]]))
    assert b"".join(got_buf for _, got_buf in got) == stream[: 10 * 1024]


# ---- fuzz --------------------------------------------------------------------------------------------------


def _exercise(image: bytes | bytearray) -> None:
    """Everything a caller might do; only Unreadable may come out, within a time bound."""
    start = time.monotonic()
    try:
        vol = NtfsVolume(BytesSource(image))
        inv = vol.inventory()
        walked = list(inv.walk())
        inv.notes, inv.file_count, inv.dir_count  # noqa: B018
        for path, entry in walked[:200]:
            inv.path_of(entry)
            inv.lookup(path)
            if entry.is_dir:
                inv.children(entry)
            else:
                with contextlib.suppress(Unreadable):
                    vol.read_file(entry, 4096)
        inv.lookup("Windows/System32/config/SYSTEM")
    except Unreadable:
        pass
    assert time.monotonic() - start < 10


def _mft_span(small: bytes) -> tuple[int, int]:
    raw = RawVolume(bytearray(small[:4096]))
    return raw.mft, 64 * raw.record_size


def _mutations(small: bytes, rng: random.Random, count: int) -> Iterator[bytearray]:
    start, span = _mft_span(small)
    for _ in range(count):
        image = bytearray(small)
        for _ in range(rng.randint(1, 40)):
            off = start + rng.randrange(span)
            if rng.random() < 0.8 and off % 512 >= 510:
                continue  # mostly keep the fixups valid, to reach the attribute parsers
            image[off] = rng.randrange(256)
        if rng.random() < 0.1:  # and sometimes damage the boot sector too
            image[rng.randrange(0x0B, 0x50)] = rng.randrange(256)
        yield image


def test_seeded_fuzz_of_mft_bytes(small: bytes) -> None:
    rng = random.Random(20261126)
    for image in _mutations(small, rng, 150):
        _exercise(image)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 64 * 1024 - 1), st.integers(0, 255)), min_size=1, max_size=30))
def test_hypothesis_fuzz_of_mft_bytes(small: bytes, edits: list[tuple[int, int]]) -> None:
    start, span = _mft_span(small)
    image = bytearray(small)
    for off, value in edits:
        image[start + off % span] = value
    _exercise(image)
