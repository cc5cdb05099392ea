"""A ``$MFT`` of 200+ runs in extension records (issue 11, item 2), on a real volume, checked three ways.

The volume: mkntfs + wimlib apply of 3,000 files (ntfs-3g writes it), then ``harness.testing.ntfs_fragment``
moves the ``$MFT``'s clusters after its first five to scattered free clusters (runs of 1-3 clusters) and
rewrites record 0 into an ``$ATTRIBUTE_LIST`` + extension records 16, 20, 40, 60, 61, 62 — each one only
reachable through the runs of the one before — keeping ``$Bitmap``, the ``$MFT`` bitmap and ``$MFTMirr``
consistent. libfsntfs (pyfsntfs) and ntfs-3g (ntfsls, ntfscat) must agree with this reader on every record,
every name, size and content hash; damaged copies raise only Unreadable, naming the problem.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import re
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.readers.errors import Unreadable
from harness.readers.image.ntfs import Inventory, NtfsVolume, _attributes
from harness.readers.image.source import FileSource
from harness.testing.ntfs_fragment import Fragmented, _Vol, attributes, fragment_mft
from tests.images.ntfs_build import BytesSource, build_volume, make_many_files, missing_tools

pytestmark = pytest.mark.skipif(bool(missing_tools()), reason=f"NTFS tools missing: {missing_tools()}")

MiB = 1024 * 1024
FILES = 3000
MASK = (1 << 48) - 1


@dataclass
class Frag:
    path: Path
    info: Fragmented
    files: dict[str, bytes]  # "\\Dir000\\Sub00\\File…" → content


_BUILT: dict[bool, Frag] = {}


def _build(factory: pytest.TempPathFactory, nonresident_list: bool) -> Frag:
    if nonresident_list not in _BUILT:
        work = factory.mktemp("ntfs-frag")
        tree = work / "tree"
        make_many_files(tree, FILES, per_dir=100, seed=11)
        files = {
            "\\" + str(p.relative_to(tree)).replace("/", "\\"): p.read_bytes() for p in tree.rglob("*") if p.is_file()
        }
        volume = build_volume(tree, work / "frag.ntfs", 64 * MiB)
        shutil.rmtree(tree)
        info = fragment_mft(volume, seed=5, nonresident_list=nonresident_list)
        _BUILT[nonresident_list] = Frag(volume, info, files)
    return _BUILT[nonresident_list]


@pytest.fixture(scope="module")
def frag(tmp_path_factory: pytest.TempPathFactory) -> Frag:
    """The fragmented volume, its attribute list resident in record 0 (the damage tests patch it there)."""
    return _build(tmp_path_factory, False)


@pytest.fixture(scope="module", params=[False, True], ids=["resident-list", "nonresident-list"])
def any_frag(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Frag:
    """Both forms of record 0's attribute list: resident, and in a cluster of its own."""
    return _build(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def reader(any_frag: Frag) -> tuple[NtfsVolume, Inventory]:
    vol = NtfsVolume(FileSource(any_frag.path))
    return vol, vol.inventory()


def _tool(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d, name)).exists()), None)


# ---- the fragmented volume is what the test says it is -----------------------------------------------------


def test_the_mft_really_is_fragmented(any_frag: Frag, reader: tuple[NtfsVolume, Inventory]) -> None:
    vol, _ = reader
    assert any_frag.info.runs >= 200
    assert any_frag.info.mft_records > FILES
    assert any_frag.info.extension_records[:4] == (16, 20, 40, 60)
    runs = vol._mft_runs
    assert len(runs) == any_frag.info.runs
    assert all(b.lcn != a.lcn + a.length for a, b in itertools.pairwise(runs))  # nothing merges
    first_extent = runs[0].length * vol.cluster_size
    # every extension record after the first lies outside record 0's extent (the case the old reader failed)
    assert all(r * vol.record_size >= first_extent for r in any_frag.info.extension_records[1:])
    listed = [a for a in _attributes(vol._record(0, "MFT record 0"), "x", "MFT record 0") if a.type == 0x20]
    assert len(listed) == 1 and listed[0].resident is not any_frag.info.nonresident_list
    assert any_frag.info.nonresident_list is (any_frag is _BUILT.get(True))


# ---- three readers agree -----------------------------------------------------------------------------------


def _fsntfs_records(path: Path) -> tuple[dict[int, tuple[list[tuple[int, str]], int | None, bool]], bytes]:
    """record → (names (parent record, name) without DOS names, size of a file or None, is_dir), for every
    in-use base record libfsntfs lists; extension records' names go to their base. Also $MFT's bytes."""
    pyfsntfs = pytest.importorskip("pyfsntfs")
    ref = pyfsntfs.volume()
    out: dict[int, tuple[list[tuple[int, str]], int | None, bool]] = {}
    with path.open("rb") as fh:
        ref.open_file_object(fh)
        for i in range(ref.number_of_file_entries):
            e = ref.get_file_entry(i)
            if not e.is_allocated() or e.base_record_file_reference:
                continue
            names = [
                (a.parent_file_reference & MASK, a.name)
                for a in e.attributes
                if a.attribute_type == 0x30 and a.name_space != 2
            ]
            is_dir = e.has_directory_entries_index()
            out[i] = (sorted(names), None if is_dir else e.size, is_dir)
        mft = ref.get_file_entry(0)
        data = mft.read_buffer(mft.size)
        ref.close()
    return out, data


def _our_records(inv: Inventory) -> dict[int, tuple[list[tuple[int, str]], int | None, bool]]:
    names: dict[int, list[tuple[int, str]]] = {}
    for pref, group in inv._kids.items():
        for i in group:
            names.setdefault(inv._rec[i], []).append((pref & MASK, inv._name[i]))
    out: dict[int, tuple[list[tuple[int, str]], int | None, bool]] = {}
    for r, m in enumerate(inv._meta):
        if m & 1:
            is_dir = bool(m & 2)
            out[r] = (sorted(names.get(r, [])), None if is_dir else inv._sizes[r], is_dir)
    return out


def test_every_record_matches_libfsntfs(any_frag: Frag, reader: tuple[NtfsVolume, Inventory]) -> None:
    vol, inv = reader
    theirs, mft_bytes = _fsntfs_records(any_frag.path)
    mine = _our_records(inv)
    assert len(mine) > FILES
    assert mine.keys() == theirs.keys()
    assert mine == theirs  # names, parents, sizes, folder flags of every in-use record
    assert len(mft_bytes) == vol._mft_size
    assert hashlib.sha256(vol._mft_bytes(0, vol._mft_size, "MFT")).digest() == hashlib.sha256(mft_bytes).digest()


def test_every_file_content_matches_libfsntfs_and_the_tree(
    any_frag: Frag, reader: tuple[NtfsVolume, Inventory]
) -> None:
    pyfsntfs = pytest.importorskip("pyfsntfs")
    vol, inv = reader
    ref = pyfsntfs.volume()
    listed = {path: e for path, e in inv.walk() if not e.is_dir and not path.startswith("\\$")}
    assert listed.keys() == any_frag.files.keys()
    with any_frag.path.open("rb") as fh:
        ref.open_file_object(fh)
        for path, e in listed.items():
            ours = vol.read_file(e, e.size)
            theirs = ref.get_file_entry(e.record).read_buffer(e.size) if e.size else b""
            want = hashlib.sha256(any_frag.files[path]).hexdigest()
            assert hashlib.sha256(ours).hexdigest() == hashlib.sha256(theirs).hexdigest() == want, path
        ref.close()


def _fixed_up(mft: bytes, rs: int) -> bytes:
    """The $MFT with every record's update sequence applied where it verifies: ntfscat returns some records
    (those ntfs-3g holds in memory) already fixed up, others as on disk."""
    out = bytearray(mft)
    for off in range(0, len(out) - rs + 1, rs):
        if out[off : off + 4] != b"FILE":
            continue
        usa = off + int.from_bytes(out[off + 4 : off + 6], "little")
        usn = out[usa : usa + 2]
        ends = [off + k * 512 - 2 for k in range(1, rs // 512 + 1)]
        if all(out[e : e + 2] == usn for e in ends):
            for k, e in enumerate(ends, 1):
                out[e : e + 2] = out[usa + 2 * k : usa + 2 * k + 2]
    return bytes(out)


_LONG = re.compile(r"^\s*(\d+) \w{3} [ \d]\d \d\d:\d\d \d{4} (.*)$")


def test_ntfs3g_lists_and_reads_the_same(any_frag: Frag, reader: tuple[NtfsVolume, Inventory]) -> None:
    ntfsls, ntfscat = _tool("ntfsls"), _tool("ntfscat")
    if not ntfsls or not ntfscat:
        pytest.skip("ntfs-3g's ntfsls/ntfscat are not installed")
    vol, inv = reader
    done = subprocess.run([ntfsls, "-R", "-l", "-F", "-p", "/", str(any_frag.path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    listed: dict[str, tuple[int, bool]] = {}
    folder = ""
    for line in done.stdout.splitlines():
        if line.startswith("/") and line.endswith(":"):
            folder = line[:-1].rstrip("/").replace("/", "\\")
            continue
        m = _LONG.match(line)
        if not m or m[2] in ("./", "../"):
            continue
        name, size = m[2], int(m[1])
        is_dir = name.endswith("/")
        listed[folder + "\\" + name.rstrip("/")] = (0 if is_dir else size, is_dir)
    ours = {p: (0 if e.is_dir else e.size, e.is_dir) for p, e in inv.walk() if not p.startswith("\\$")}
    assert len(ours) > FILES
    assert listed == ours
    # $MFT itself (every record's bytes, through ntfs-3g's run list) and a sample of files
    mft = subprocess.run([ntfscat, "-i", "0", str(any_frag.path)], capture_output=True, check=True).stdout
    ours_mft = vol._mft_bytes(0, vol._mft_size, "MFT")
    assert len(mft) == len(ours_mft)
    assert _fixed_up(mft, vol.record_size) == _fixed_up(ours_mft, vol.record_size)
    for path in random.Random(3).sample(sorted(any_frag.files), 40):
        entry = inv.lookup(path)
        assert entry is not None
        cat = subprocess.run([ntfscat, "-i", str(entry.record), str(any_frag.path)], capture_output=True, check=True)
        assert cat.stdout == vol.read_file(entry, entry.size) == any_frag.files[path], path


# ---- damage: Unreadable naming the problem, never a hang or another exception ------------------------------


def _patched(frag: Frag, number: int, change: Any) -> BytesSource:
    """A copy of the volume with record ``number`` (0 or 16: both in the first extent) changed by
    ``change(fixed_record)`` and its update sequence redone."""
    image = bytearray(frag.path.read_bytes())
    fd = os.open(frag.path, os.O_RDONLY)
    try:
        v = _Vol(fd, 0)
        off = v.mft_lcn * v.cs + number * v.rs
        rec = v.unfix(bytes(image[off : off + v.rs]))
        change(rec)
        image[off : off + v.rs] = v.refix(rec)
        if number == 0:
            image[v.mirr_lcn * v.cs : v.mirr_lcn * v.cs + v.rs] = image[off : off + v.rs]
    finally:
        os.close(fd)
    return BytesSource(image, "frag.ntfs")


def _list_entries(rec: bytearray) -> list[int]:
    """Offsets (in the record) of record 0's $ATTRIBUTE_LIST entries."""
    _t, p, _n = next(a for a in attributes(rec) if a[0] == 0x20)
    vlen, voff = struct.unpack_from("<IH", rec, p + 16)
    out, q = [], p + voff
    while q < p + voff + vlen:
        out.append(q)
        q += struct.unpack_from("<H", rec, q + 4)[0]
    return out


def _data_entry(rec: bytearray, record: int) -> int:
    return next(q for q in _list_entries(rec) if struct.unpack_from("<Q", rec, q + 16)[0] & MASK == record)


def _set_ref(record: int, new: int, seq: int | None = None) -> Any:
    def change(rec: bytearray) -> None:
        q = _data_entry(rec, record)
        old = struct.unpack_from("<Q", rec, q + 16)[0]
        struct.pack_into("<Q", rec, q + 16, (old >> 48 if seq is None else seq) << 48 | new)

    return change


def _shift_vcn(record: int, by: int) -> Any:
    def change(rec: bytearray) -> None:
        q = _data_entry(rec, record)
        struct.pack_into("<q", rec, q + 8, struct.unpack_from("<q", rec, q + 8)[0] + by)

    return change


def _ext_data(change_attr: Any) -> Any:
    def change(rec: bytearray) -> None:
        _t, p, _n = next(a for a in attributes(rec) if a[0] == 0x80)
        change_attr(rec, p)

    return change


def _not_in_use(rec: bytearray) -> None:
    struct.pack_into("<H", rec, 0x16, 0)


def _run_off_the_volume(rec: bytearray, p: int) -> None:
    roff = struct.unpack_from("<H", rec, p + 32)[0]
    head = rec[p + roff]
    ls, os_ = head & 15, head >> 4
    rec[p + roff + 1 + ls : p + roff + 1 + ls + os_] = ((1 << (8 * os_ - 1)) - 1).to_bytes(os_, "little")


CASES = [
    # (what, record patched, change, problem expected in the message)
    ("record 16 made to hold the extent that locates it", 0, _set_ref(16, 20), "known so far"),
    ("an extension record beyond every known run", 0, _set_ref(20, 40), "known so far"),
    ("an extension record past the end of the $MFT", 0, _set_ref(20, 10**9), "known so far"),
    ("a gap between extents", 0, _shift_vcn(20, 1), "gap"),
    ("overlapping extents", 0, _shift_vcn(20, -1), "overlaps"),
    ("a stale reference (sequence number)", 0, _set_ref(16, 16, seq=999), "stale"),
    ("an extension record not in use", 16, _not_in_use, "not an extension record"),
    ("an extent at another VCN than listed", 16, _ext_data(lambda r, p: struct.pack_into("<q", r, p + 16, 6)), "VCN 5"),
    (
        "a header's highest VCN that disagrees",
        16,
        _ext_data(lambda r, p: struct.pack_into("<q", r, p + 24, 10**6)),
        "header says",
    ),
    ("a run outside the volume", 16, _ext_data(_run_off_the_volume), "past the volume"),
    (
        "an allocation smaller than the extents",
        0,
        _ext_data(lambda r, p: struct.pack_into("<q", r, p + 40, 4 * 4096)),
        "allocated",
    ),
]


@pytest.mark.parametrize(("what", "number", "change", "problem"), CASES, ids=[c[0] for c in CASES])
def test_damaged_mft_extents_are_unreadable(frag: Frag, what: str, number: int, change: Any, problem: str) -> None:
    source = _patched(frag, number, change)
    started = time.monotonic()
    with pytest.raises(Unreadable) as err:
        NtfsVolume(source).inventory()
    assert time.monotonic() - started < 5
    assert problem in err.value.problem, (what, err.value.problem)


def test_random_damage_to_the_mft_extents_never_escapes(frag: Frag) -> None:
    """Random bytes of record 0's attribute list and $DATA and of record 16's $DATA: Unreadable or a read."""
    rng = random.Random(7)
    for _ in range(60):
        number = rng.choice((0, 16))

        def change(rec: bytearray, number: int = number) -> None:
            kinds = (0x20, 0x80) if number == 0 else (0x80,)
            _t, p, n = rng.choice([a for a in attributes(rec) if a[0] in kinds])
            for _k in range(rng.randint(1, 4)):
                rec[p + rng.randrange(16, n)] = rng.randrange(256)

        source = _patched(frag, number, change)
        started = time.monotonic()
        try:
            inv = NtfsVolume(source).inventory()
            inv.file_count  # noqa: B018
        except Unreadable:
            pass
        assert time.monotonic() - started < 10
