"""Container reader: raw / VHD (fixed, dynamic, differencing) / VHDX against images made by real tools.

qemu-img builds the fixed, dynamic and VHDX images from one raw disk; our vhdwriter builds differencing
VHDs, checked against libvhdi (pyvhdi). Every format must give the raw disk's bytes back exactly; every
damaged file must give one clear Unreadable (or a flag in ``info``), quickly, and never change the file.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.readers.errors import Unreadable
from harness.readers.image.container import Disk, crc32c, open_disk
from harness.readers.image.source import ByteSourceIO, FileSource, SliceSource
from harness.testing.vhdwriter import corrupt_copy, vhd_checksum, write_differencing_vhd

MIB = 1024 * 1024
#: Odd size: not a multiple of any block size, not 1 MiB aligned.
CONTENT_SIZE = 37 * MIB + 3 * 512
#: (offset, length) of random data; the rest stays zero so dynamic formats have unallocated blocks.
CONTENT_REGIONS = [
    (0, 8192),
    (1 * MIB, 1 * MIB),
    (10 * MIB - 300, 5 * MIB + 1077),
    (24 * MIB, 512),
    (CONTENT_SIZE - 100_000, 100_000),
]


def _need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")


def _run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True)


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
    return h.hexdigest()


def _fill(path: Path, size: int, regions: list[tuple[int, int]], seed: int) -> bytes:
    rnd = random.Random(seed)
    data = bytearray(size)
    for off, ln in regions:
        data[off : off + ln] = rnd.randbytes(ln)
    path.write_bytes(data)
    return bytes(data)


class Images:
    """The session's image set: one raw disk and its conversions, plus a small base for differencing."""

    def __init__(self, root: Path) -> None:
        _need("qemu-img")
        self.root = root
        self.raw = root / "content.img"
        self.content = _fill(self.raw, CONTENT_SIZE, CONTENT_REGIONS, seed=1)
        self.raw_sha = hashlib.sha256(self.content).hexdigest()
        self.files: dict[str, Path] = {"raw": self.raw}
        conversions = {
            "vhd-fixed": ("vpc", "subformat=fixed,force_size=on", "fixed.vhd"),
            "vhd-dynamic": ("vpc", "subformat=dynamic,force_size=on", "dynamic.vhd"),
            "vhdx-dynamic": ("vhdx", "subformat=dynamic", "dynamic.vhdx"),
            "vhdx-1m": ("vhdx", "subformat=dynamic,block_size=1M", "block1m.vhdx"),
            "vhdx-32m": ("vhdx", "subformat=dynamic,block_size=32M", "block32m.vhdx"),
            "vhdx-fixed": ("vhdx", "subformat=fixed", "fixed.vhdx"),
        }
        for key, (fmt, opts, name) in conversions.items():
            out = root / name
            _run("qemu-img", "convert", "-f", "raw", "-O", fmt, "-o", opts, self.raw, out)
            self.files[key] = out
        # A 1 MiB-aligned fixed VHD (what Azure wants).
        aligned_raw = root / "aligned.img"
        _fill(aligned_raw, 8 * MIB, [(0, 4096)], seed=2)
        self.aligned = root / "aligned.vhd"
        _run(
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "vpc",
            "-o",
            "subformat=fixed,force_size=on",
            aligned_raw,
            self.aligned,
        )
        # Small base for differencing chains: 8 MiB, random everywhere except block 2.
        base_raw = root / "base.img"
        self.base_content = _fill(base_raw, 8 * MIB, [(0, 4 * MIB), (6 * MIB, 2 * MIB)], seed=3)
        self.base = root / "base.vhd"
        _run(
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "vpc",
            "-o",
            "subformat=dynamic,force_size=on",
            base_raw,
            self.base,
        )
        # Tiny images for the fuzz test.
        tiny_raw = root / "tiny.img"
        _fill(tiny_raw, 4 * MIB, [(0, 4096), (2 * MIB + 512, 8192)], seed=4)
        self.tiny_vhd = root / "tiny.vhd"
        self.tiny_vhdx = root / "tiny.vhdx"
        _run(
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "vpc",
            "-o",
            "subformat=dynamic,force_size=on",
            tiny_raw,
            self.tiny_vhd,
        )
        _run(
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "vhdx",
            "-o",
            "subformat=dynamic,block_size=1M",
            tiny_raw,
            self.tiny_vhdx,
        )
        self.stamps = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.iterdir()}


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    return Images(tmp_path_factory.mktemp("container-images"))


@pytest.fixture(autouse=True)
def _images_untouched(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test, the session images still have their size and mtime (cheap; the sha256 checks
    are in the tests that read)."""
    yield
    if "images" in request.fixturenames:
        imgs: Images = request.getfixturevalue("images")
        for p, stamp in imgs.stamps.items():
            assert (p.stat().st_size, p.stat().st_mtime_ns) == stamp, f"{p} was modified"


def _hash_disk(disk: Disk, chunk: int = 1_234_567) -> str:
    h = hashlib.sha256()
    off = 0
    while off < disk.size:
        data = disk.read_at(off, chunk)
        assert data, f"empty read at {off:#x}"
        h.update(data)
        off += len(data)
    return h.hexdigest()


def _read_all(path: Path, **kw: Any) -> bytes:
    """Open and read the whole virtual disk, asserting the file is byte-identical afterwards."""
    before = _sha(path)
    with open_disk(path, **kw) as disk:
        data = disk.read_at(0, disk.size)
    assert _sha(path) == before
    return data


def _expect_unreadable(path: Path, *words: str, read: bool = False, limit: float = 2.0) -> Unreadable:
    """The file gives exactly one Unreadable (at open, or at the full read when ``read``), naming the file
    and containing ``words``, within ``limit`` seconds, and the file is unchanged."""
    before = _sha(path)
    t0 = time.monotonic()
    with pytest.raises(Unreadable) as info:
        disk = open_disk(path)
        try:
            assert read, f"opened without error: {disk.info}"
            disk.read_at(0, disk.size)
        finally:
            disk.close()
    assert time.monotonic() - t0 < limit
    assert _sha(path) == before
    err = info.value
    assert err.path.name == path.name or path.name in err.problem
    for w in words:
        assert w in err.problem, f"{w!r} not in {err.problem!r}"
    return err


# ---------------------------------------------------------------------------------------------
# Byte sources


def test_file_source_counts_and_clips(images: Images) -> None:
    src = FileSource(images.raw)
    try:
        total = FileSource.total_bytes_read
        assert src.read_at(0, 100) == images.content[:100]
        assert src.read_at(CONTENT_SIZE - 10, 100) == images.content[-10:]
        assert src.read_at(CONTENT_SIZE, 10) == b""
        assert src.read_at(CONTENT_SIZE + 5000, 10) == b""
        assert src.bytes_read == 110
        assert FileSource.total_bytes_read - total == 110
        with pytest.raises(Unreadable):
            src.read_at(-1, 10)
        with pytest.raises(Unreadable):
            src.read_at(0, -1)
    finally:
        src.close()
    with pytest.raises(Unreadable, match="cannot open"):
        FileSource(images.root / "nope.img")
    with pytest.raises(Unreadable, match="not a regular file"):
        FileSource(images.root)


def test_slice_source_and_io_adapter(images: Images) -> None:
    with open_disk(images.files["vhd-dynamic"]) as disk:
        part = SliceSource(disk, 10 * MIB - 300, 3 * MIB, "dynamic.vhd#p9")
        assert part.read_at(0, 1000) == images.content[10 * MIB - 300 : 10 * MIB + 700]
        assert part.read_at(3 * MIB - 5, 100) == images.content[13 * MIB - 305 : 13 * MIB - 300]
        assert part.read_at(3 * MIB, 1) == b""
        with pytest.raises(Unreadable, match="outside"):
            SliceSource(disk, disk.size - 10, 11, "bad")
        io = ByteSourceIO(part)
        assert io.seekable() and io.readable() and not io.writable()
        io.seek(100)
        assert io.read(50) == images.content[10 * MIB - 200 : 10 * MIB - 150]
        assert io.tell() == 150
        io.seek(-10, os.SEEK_END)
        assert io.read() == images.content[13 * MIB - 310 : 13 * MIB - 300]
        assert io.read(10) == b""
        buf = bytearray(7)
        io.seek(0)
        assert io.readinto(buf) == 7 and bytes(buf) == images.content[10 * MIB - 300 : 10 * MIB - 293]


def test_crc32c_known_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    # The zero-run shortcut agrees with the byte loop.
    data = b"abc" + bytes(70_000)
    assert crc32c(data) == crc32c(bytes(70_000), crc32c(b"abc"))
    assert crc32c(bytes(32)) == 0x8A9136AA


# ---------------------------------------------------------------------------------------------
# Formats give the raw bytes back


@pytest.mark.parametrize(
    "fmt", ["raw", "vhd-fixed", "vhd-dynamic", "vhdx-dynamic", "vhdx-1m", "vhdx-32m", "vhdx-fixed"]
)
def test_virtual_disk_equals_raw(images: Images, fmt: str) -> None:
    path = images.files[fmt]
    before = _sha(path)
    with open_disk(path) as disk:
        assert disk.size == CONTENT_SIZE
        assert _hash_disk(disk) == images.raw_sha
        assert _hash_disk(disk, chunk=MIB + 513) == images.raw_sha
        rnd = random.Random(fmt)
        bs = disk.info.block_size or 2 * MIB
        probes = [(k * bs - d, 2 * d + 1) for k in range(1, 5) for d in (1, 511, 4097)]
        probes += [(rnd.randrange(CONTENT_SIZE), rnd.randrange(1, 3 * MIB)) for _ in range(40)]
        for off, ln in probes:
            assert disk.read_at(off, ln) == images.content[off : off + ln], (off, ln)
        assert disk.read_at(CONTENT_SIZE - 3, 10) == images.content[-3:]
        assert disk.read_at(CONTENT_SIZE, 10) == b""
        assert disk.read_at(0, 0) == b""
        with pytest.raises(Unreadable):
            disk.read_at(-512, 10)
    assert _sha(path) == before


def test_pyvhdi_agrees_on_qemu_images(images: Images) -> None:
    pyvhdi = pytest.importorskip("pyvhdi")
    for fmt in ("vhd-dynamic", "vhdx-dynamic", "vhdx-1m"):
        f = pyvhdi.file()
        f.open(str(images.files[fmt]))
        try:
            with open_disk(images.files[fmt]) as disk:
                assert f.media_size == disk.size
                assert f.get_identifier() == disk.info.unique_id
                for off in (0, 10 * MIB - 300, 24 * MIB, CONTENT_SIZE - 100_000):
                    assert f.read_buffer_at_offset(200_000, off) == disk.read_at(off, 200_000)
        finally:
            f.close()


def test_info_fields(images: Images) -> None:
    size = images.raw.stat().st_size
    with open_disk(images.raw) as d:
        i = d.info
        assert (i.format, i.disk_type, i.virtual_size, i.file_size) == ("raw", None, size, size)
        assert i.footer_cookie_ok is None and i.footer_checksum_ok is None and i.block_size is None
        assert i.logical_sector_size == 512 and i.parent_chain == () and i.notes == ()
    with open_disk(images.files["vhd-fixed"]) as d:
        i = d.info
        assert (i.format, i.disk_type, i.virtual_size) == ("vhd", "fixed", CONTENT_SIZE)
        assert i.file_size == CONTENT_SIZE + 512
        assert i.footer_cookie_ok and i.footer_checksum_ok and i.footer_copy_ok is None
        assert i.creator_application == "qem2" and i.block_size is None
        assert uuid.UUID(i.unique_id or "") and i.notes == ()
    with open_disk(images.files["vhd-dynamic"]) as d:
        i = d.info
        assert (i.format, i.disk_type, i.virtual_size, i.block_size) == ("vhd", "dynamic", CONTENT_SIZE, 2 * MIB)
        assert i.footer_cookie_ok and i.footer_checksum_ok and i.footer_copy_ok
        assert i.file_size < CONTENT_SIZE  # sparse: zero blocks not stored
    for fmt, bs, kind in (
        ("vhdx-1m", MIB, "dynamic"),
        ("vhdx-32m", 32 * MIB, "dynamic"),
        ("vhdx-fixed", None, "fixed"),
    ):
        with open_disk(images.files[fmt]) as d:
            i = d.info
            assert (i.format, i.disk_type, i.virtual_size) == ("vhdx", kind, CONTENT_SIZE)
            assert bs is None or i.block_size == bs
            assert i.logical_sector_size == 512
            assert i.footer_cookie_ok is None and i.footer_checksum_ok is None and i.footer_copy_ok is None
            assert (i.creator_application or "").startswith("QEMU")
            assert i.notes == ()


def test_alignment_reflected_by_virtual_size(images: Images) -> None:
    with open_disk(images.aligned) as d:
        assert d.info.virtual_size == 8 * MIB and d.info.virtual_size % MIB == 0
        assert d.info.file_size == d.info.virtual_size + 512
    with open_disk(images.files["vhd-fixed"]) as d:
        assert d.info.virtual_size % MIB != 0


def test_detection_by_content_not_name(images: Images, tmp_path: Path) -> None:
    renamed = tmp_path / "disk.img"
    shutil.copyfile(images.files["vhd-dynamic"], renamed)
    with open_disk(renamed) as d:
        assert (d.info.format, d.info.disk_type) == ("vhd", "dynamic")
    vhdx_as_vhd = tmp_path / "disk.vhd"
    shutil.copyfile(images.files["vhdx-1m"], vhdx_as_vhd)
    with open_disk(vhdx_as_vhd) as d:
        assert d.info.format == "vhdx"
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"x" * 1000)
    _expect_unreadable(odd, "multiple of 512")
    not_vhdx = tmp_path / "fake.vhdx"
    not_vhdx.write_bytes(bytes(4096))
    _expect_unreadable(not_vhdx, "vhdxfile")
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    _expect_unreadable(empty, "empty")


# ---------------------------------------------------------------------------------------------
# Differencing VHD chains


def _expected(base: bytes, *layers: dict[int, bytes]) -> bytes:
    out = bytearray(base)
    for layer in layers:
        for off, data in layer.items():
            out[off : off + len(data)] = data
    return bytes(out)


def _writes(seed: int, aligned_ends: bool = False) -> dict[int, bytes]:
    """Sector-aligned writes: inside a block, across a block boundary, a whole block, odd runs. With
    ``aligned_ends`` every write ends on a 4 KiB boundary (see the libvhdi note below)."""
    rnd = random.Random(seed)
    spans = [(0, 3), (7, 1), (4090, 20), (2 * 4096, 4096), (3 * 4096 + 5, 300), (4 * 4096 - 1, 1)]
    out: dict[int, bytes] = {}
    for first, count in spans:
        if aligned_ends:
            count += -(first + count) % 8
        out[first * 512] = rnd.randbytes(count * 512)
    return out


def test_differencing_relative_locator(images: Images, tmp_path: Path) -> None:
    child = tmp_path / "child.vhd"
    writes = _writes(10)
    write_differencing_vhd(images.base, child, writes=writes, locator="relative")
    base_sha = _sha(images.base)
    data = _read_all(child, parent_dirs=[images.root])  # the parent is not next to the child: allowed
    assert data == _expected(images.base_content, writes)
    assert _sha(images.base) == base_sha
    with open_disk(child, parent_dirs=[images.root]) as d:
        assert d.info.disk_type == "differencing" and d.info.format == "vhd"
        assert d.info.parent_chain == (str(images.base),)
        assert d.info.footer_checksum_ok and d.info.footer_copy_ok and d.info.notes == ()
        assert d.info.block_size == 2 * MIB
        # Reads that start and end inside mixed bitmap bytes.
        for off, ln in ((512 * 2, 512 * 7), (512 * 4089, 512 * 3 + 17), (100, 9000), (4 * MIB - 700, 1400)):
            assert d.read_at(off, ln) == _expected(images.base_content, writes)[off : off + ln]


def test_writer_verified_by_libvhdi(images: Images, tmp_path: Path) -> None:
    """libvhdi (an independent reader) reads our differencing disks like we do.

    libvhdi 20260901 misreads a VHD sector bitmap byte in which a set bit is followed by clear bits (it
    shifts without masking, so the clear sectors after a set one read as present): the writes here end on
    4 KiB boundaries (whole bitmap bytes at the end of each run); unaligned ends are covered by the
    expected-bytes comparisons in the other tests.
    """
    pyvhdi = pytest.importorskip("pyvhdi")
    for parent, content in ((images.base, images.base_content), (images.files["vhd-dynamic"], images.content)):
        child = tmp_path / f"child-of-{parent.stem}.vhd"
        writes = _writes(11, aligned_ends=True)
        write_differencing_vhd(parent, child, writes=writes, locator="both")
        expected = _expected(content, writes)
        p, c = pyvhdi.file(), pyvhdi.file()
        p.open(str(parent))
        c.open(str(child))
        try:
            assert c.disk_type == 4
            assert c.get_parent_identifier() == p.get_identifier()
            assert c.get_parent_filename() == parent.name
            c.set_parent(p)
            assert c.read_buffer_at_offset(c.media_size, 0) == expected
        finally:
            c.close()
            p.close()
        assert _read_all(child, parent_dirs=[images.root]) == expected


def test_differencing_absolute_locator(images: Images, tmp_path: Path) -> None:
    elsewhere = tmp_path / "a" / "b"
    elsewhere.mkdir(parents=True)
    child = elsewhere / "child.vhd"
    writes = _writes(12)
    write_differencing_vhd(images.base, child, writes=writes, locator="absolute")
    assert _read_all(child, parent_dirs=[images.root]) == _expected(images.base_content, writes)


def test_differencing_header_name_next_to_child(images: Images, tmp_path: Path) -> None:
    shutil.copyfile(images.base, tmp_path / "base.vhd")
    child = tmp_path / "child.vhd"
    writes = _writes(13)
    write_differencing_vhd(
        tmp_path / "base.vhd", child, writes=writes, locator="absolute", absolute_path_override="D:\\VMs\\base.vhd"
    )
    assert _read_all(child) == _expected(images.base_content, writes)
    (tmp_path / "none.vhd").unlink(missing_ok=True)
    write_differencing_vhd(tmp_path / "base.vhd", tmp_path / "none.vhd", writes=writes, locator="none")
    assert _read_all(tmp_path / "none.vhd") == _expected(images.base_content, writes)


def test_missing_parent_lists_paths_tried(images: Images, tmp_path: Path) -> None:
    parent = tmp_path / "parent.vhd"
    shutil.copyfile(images.base, parent)
    sub = tmp_path / "sub"
    sub.mkdir()
    child = sub / "child.vhd"
    write_differencing_vhd(parent, child, writes=_writes(14), locator="both")
    parent.rename(tmp_path / "moved.vhd")
    err = _expect_unreadable(child, "parent of differencing disk not found", "relative locator", "absolute locator")
    assert str(parent) in err.problem  # relative and absolute both resolve to it
    assert str(sub / "parent.vhd") in err.problem  # the header name next to the child
    assert err.path == child


def test_windows_absolute_locator_reported_when_unusable(images: Images, tmp_path: Path) -> None:
    child = tmp_path / "child.vhd"
    write_differencing_vhd(
        images.base,
        child,
        locator="absolute",
        absolute_path_override="C:\\VMs\\gone.vhd",
        header_parent_name="gone.vhd",
    )
    _expect_unreadable(child, "C:\\VMs\\gone.vhd", "not usable here", str(tmp_path / "gone.vhd"))


def test_cyclic_chain(images: Images, tmp_path: Path) -> None:
    a, b = tmp_path / "a.vhd", tmp_path / "b.vhd"
    write_differencing_vhd(images.base, a, writes=_writes(15))
    write_differencing_vhd(a, b, writes=_writes(16))
    write_differencing_vhd(b, a, writes=_writes(17))  # a's parent is now b: a → b → a
    _expect_unreadable(a, "cyclic differencing chain: a.vhd → b.vhd → a.vhd")
    _expect_unreadable(b, "cyclic differencing chain: b.vhd → a.vhd → b.vhd")
    selfref = tmp_path / "self.vhd"
    write_differencing_vhd(images.base, selfref)
    write_differencing_vhd(selfref, selfref)
    _expect_unreadable(selfref, "cyclic differencing chain: self.vhd → self.vhd")


def test_parent_uuid_mismatch_is_a_note(images: Images, tmp_path: Path) -> None:
    child = tmp_path / "child.vhd"
    writes = _writes(18)
    write_differencing_vhd(images.base, child, writes=writes, parent_uuid_override=uuid.UUID(int=7))
    with open_disk(child, parent_dirs=[images.root]) as d:
        assert any("parent UUID mismatch" in n and str(uuid.UUID(int=7)) in n for n in d.info.notes)
        assert d.read_at(0, d.size) == _expected(images.base_content, writes)


def test_two_level_chain_and_max_chain(images: Images, tmp_path: Path) -> None:
    mid, top = tmp_path / "mid.vhd", tmp_path / "top.vhd"
    w1, w2 = _writes(19), _writes(20)
    w2[3 * MIB] = random.Random(21).randbytes(4 * 512)
    write_differencing_vhd(images.base, mid, writes=w1)
    write_differencing_vhd(mid, top, writes=w2, block_size=512 * 1024)
    assert _read_all(top, parent_dirs=[images.root]) == _expected(images.base_content, w1, w2)
    with open_disk(top, parent_dirs=[images.root]) as d:
        assert d.info.parent_chain == (str(mid), str(images.base))
        assert d.info.block_size == 512 * 1024
    with pytest.raises(Unreadable, match="longer than 1 parents"):
        open_disk(top, max_chain=1, parent_dirs=[images.root])
    with open_disk(top, max_chain=2, parent_dirs=[images.root]) as d:
        assert len(d.info.parent_chain) == 2


# ---------------------------------------------------------------------------------------------
# Damaged files


def _dyn_layout(path: Path) -> tuple[int, int]:
    """(dynamic header offset, BAT offset) of a dynamic VHD."""
    raw = path.read_bytes()
    header_off = int.from_bytes(raw[-512 + 16 : -512 + 24], "big")
    return header_off, int.from_bytes(raw[header_off + 16 : header_off + 24], "big")


def _footer_with(path: Path, patch: dict[int, bytes]) -> bytes:
    footer = bytearray(path.read_bytes()[-512:])
    for off, data in patch.items():
        footer[off : off + len(data)] = data
    footer[64:68] = vhd_checksum(footer, 64).to_bytes(4, "big")
    return bytes(footer)


def test_truncated_fixed_vhd(images: Images, tmp_path: Path) -> None:
    bad = corrupt_copy(images.files["vhd-fixed"], tmp_path / "trunc.vhd", truncate=-512)
    _expect_unreadable(bad, "no VHD footer ('conectix') in the last 512 bytes")
    # The same bytes under a raw name are indistinguishable from a raw disk (a known pitfall).
    as_raw = corrupt_copy(images.files["vhd-fixed"], tmp_path / "trunc.img", truncate=-512)
    with open_disk(as_raw) as d:
        assert d.info.format == "raw"
    short = corrupt_copy(
        images.files["vhd-fixed"],
        tmp_path / "short.vhd",
        patch={-512: _footer_with(images.files["vhd-fixed"], {48: (CONTENT_SIZE + MIB).to_bytes(8, "big")})},
    )
    _expect_unreadable(short, "fixed VHD is truncated")


def test_bad_footer_checksum_is_not_fatal(images: Images, tmp_path: Path) -> None:
    fixed = corrupt_copy(images.files["vhd-fixed"], tmp_path / "f.vhd", patch={-512 + 64: b"\x00\x00\x00\x01"})
    with open_disk(fixed) as d:
        assert d.info.footer_cookie_ok is True and d.info.footer_checksum_ok is False
        assert any("checksum mismatch" in n for n in d.info.notes)
        assert _hash_disk(d) == images.raw_sha
    dyn = corrupt_copy(images.files["vhd-dynamic"], tmp_path / "d.vhd", patch={-512 + 64: b"\x00\x00\x00\x01"})
    with open_disk(dyn) as d:
        assert d.info.footer_checksum_ok is False and d.info.footer_copy_ok is False
        assert _hash_disk(d) == images.raw_sha


def test_dynamic_without_end_footer_uses_copy(images: Images, tmp_path: Path) -> None:
    bad = corrupt_copy(images.files["vhd-dynamic"], tmp_path / "d.vhd", patch={-512: b"XXXXXXXX"})
    with open_disk(bad) as d:
        assert d.info.footer_cookie_ok is False and d.info.footer_checksum_ok is False
        assert any("copy at offset 0 was used" in n for n in d.info.notes)
        assert _hash_disk(d) == images.raw_sha


def test_bad_dynamic_header(images: Images, tmp_path: Path) -> None:
    src = images.files["vhd-dynamic"]
    header_off, _ = _dyn_layout(src)
    bad = corrupt_copy(src, tmp_path / "h.vhd", patch={header_off + 40: b"\x99"})
    _expect_unreadable(bad, "dynamic disk header checksum mismatch", f"{header_off:#x}")
    bad = corrupt_copy(src, tmp_path / "c.vhd", patch={header_off: b"xxsparse"})
    _expect_unreadable(bad, "cxsparse")
    far = _footer_with(src, {16: (1 << 40).to_bytes(8, "big")})
    bad = corrupt_copy(src, tmp_path / "o.vhd", patch={-512: far, 0: far})
    _expect_unreadable(bad, "dynamic disk header offset 0x10000000000 lies past the end")


def test_bat_entry_past_end(images: Images, tmp_path: Path) -> None:
    src = images.files["vhd-dynamic"]
    _, bat_off = _dyn_layout(src)
    bad = corrupt_copy(src, tmp_path / "b.vhd", patch={bat_off + 4 * 5: (0x7FFFFFF0).to_bytes(4, "big")})
    err = _expect_unreadable(bad, "BAT entry 5 points past the end of the file", read=True)
    assert err.location == "BAT entry 5"
    # Blocks that are not referenced still read.
    with open_disk(bad) as d:
        assert d.read_at(0, 8192) == images.content[:8192]


def test_bat_too_small(images: Images, tmp_path: Path) -> None:
    src = images.files["vhd-dynamic"]
    header_off, _ = _dyn_layout(src)
    header = bytearray(src.read_bytes()[header_off : header_off + 1024])
    header[28:32] = (3).to_bytes(4, "big")
    header[36:40] = vhd_checksum(header, 36).to_bytes(4, "big")
    bad = corrupt_copy(src, tmp_path / "n.vhd", patch={header_off: bytes(header)})
    _expect_unreadable(bad, "BAT has 3 entries")
    header[28:32] = (0xFFFFFFF0).to_bytes(4, "big")
    header[36:40] = vhd_checksum(header, 36).to_bytes(4, "big")
    bad = corrupt_copy(src, tmp_path / "h.vhd", patch={header_off: bytes(header)})
    _expect_unreadable(bad, "runs past the end of the file")


def test_unsupported_vhd_type(images: Images, tmp_path: Path) -> None:
    src = images.files["vhd-fixed"]
    bad = corrupt_copy(src, tmp_path / "t.vhd", patch={-512: _footer_with(src, {60: (5).to_bytes(4, "big")})})
    _expect_unreadable(bad, "unsupported VHD disk type 5")


def _vhdx_fix_crc(block: bytearray) -> bytes:
    block[4:8] = b"\x00\x00\x00\x00"
    block[4:8] = crc32c(block).to_bytes(4, "little")
    return bytes(block)


def _vhdx_regions(path: Path) -> dict[str, tuple[int, int]]:
    raw = path.read_bytes()[0x30000:0x40000]
    out = {}
    for i in range(int.from_bytes(raw[8:12], "little")):
        e = raw[16 + 32 * i : 48 + 32 * i]
        name = {"2dc27766": "bat", "8b7ca206": "meta"}[str(uuid.UUID(bytes_le=e[:16]))[:8]]
        out[name] = (int.from_bytes(e[16:24], "little"), int.from_bytes(e[24:28], "little"))
    return out


def test_vhdx_headers(images: Images, tmp_path: Path) -> None:
    src = images.files["vhdx-1m"]
    one = corrupt_copy(src, tmp_path / "h1.vhdx", patch={0x10000 + 4: b"\xde\xad\xbe\xef"})
    with open_disk(one) as d:
        assert any(n.startswith("VHDX header 1 checksum mismatch") and "header 2 used" in n for n in d.info.notes)
        assert _hash_disk(d) == images.raw_sha
    both = corrupt_copy(src, tmp_path / "h2.vhdx", patch={0x10000 + 4: b"\xde\xad", 0x20000 + 4: b"\xbe\xef"})
    _expect_unreadable(both, "both VHDX headers are invalid", "header 1", "header 2", "checksum mismatch")
    raw = src.read_bytes()
    patch = {}
    for off in (0x10000, 0x20000):
        header = bytearray(raw[off : off + 4096])
        header[48:64] = uuid.UUID(int=42).bytes_le
        patch[off] = _vhdx_fix_crc(header)
    logged = corrupt_copy(src, tmp_path / "log.vhdx", patch=patch)
    with open_disk(logged) as d:
        assert any("VHDX log not replayed" in n for n in d.info.notes)


def test_vhdx_region_tables(images: Images, tmp_path: Path) -> None:
    src = images.files["vhdx-1m"]
    one = corrupt_copy(src, tmp_path / "r1.vhdx", patch={0x30000 + 20: b"\x01"})
    with open_disk(one) as d:
        assert any("region table 1" in n and "region table 2 used" in n for n in d.info.notes)
        assert _hash_disk(d) == images.raw_sha
    both = corrupt_copy(src, tmp_path / "r2.vhdx", patch={0x30000: b"XXXX", 0x40000 + 20: b"\x01"})
    _expect_unreadable(both, "both VHDX region tables are invalid", "signature", "checksum mismatch")
    raw = src.read_bytes()
    patch = {}
    for off in (0x30000, 0x40000):
        table = bytearray(raw[off : off + 0x10000])
        table[8:12] = (0xFFFFFFFF).to_bytes(4, "little")
        patch[off] = _vhdx_fix_crc(table)
    huge = corrupt_copy(src, tmp_path / "r3.vhdx", patch=patch)
    _expect_unreadable(huge, "entry count 4294967295 exceeds 2047", limit=0.5)
    patch = {}
    for off in (0x30000, 0x40000):
        table = bytearray(raw[off : off + 0x10000])
        table[16 + 16 : 16 + 24] = (1 << 40).to_bytes(8, "little")  # entry 0 offset far past the end
        patch[off] = _vhdx_fix_crc(table)
    outside = corrupt_copy(src, tmp_path / "r4.vhdx", patch=patch)
    _expect_unreadable(outside, "lies outside the file")


def test_vhdx_bat_and_metadata(images: Images, tmp_path: Path) -> None:
    src = images.files["vhdx-1m"]
    regions = _vhdx_regions(src)
    bat_off, _ = regions["bat"]
    raw = src.read_bytes()
    entry0 = int.from_bytes(raw[bat_off : bat_off + 8], "little")
    assert entry0 & 7 == 6  # block 0 holds data
    bad = corrupt_copy(src, tmp_path / "b.vhdx", patch={bat_off: ((0xFFFFF << 20) | 6).to_bytes(8, "little")})
    _expect_unreadable(bad, "BAT entry 0 (block 0) points past the end of the file", read=True)
    bad = corrupt_copy(src, tmp_path / "s.vhdx", patch={bat_off: (entry0 & ~7 | 4).to_bytes(8, "little")})
    _expect_unreadable(bad, "invalid state 4", read=True)
    meta_off, _ = regions["meta"]
    table = raw[meta_off : meta_off + 0x10000]
    params_entry = next(
        i
        for i in range(int.from_bytes(table[10:12], "little"))
        if uuid.UUID(bytes_le=table[32 + 32 * i : 48 + 32 * i]) == uuid.UUID("caa16737-fa36-4d43-b3b6-33f0aa44e76b")
    )
    item_off = meta_off + int.from_bytes(table[32 + 32 * params_entry + 16 : 32 + 32 * params_entry + 20], "little")
    flags = int.from_bytes(raw[item_off + 4 : item_off + 8], "little")
    diff = corrupt_copy(src, tmp_path / "p.vhdx", patch={item_off + 4: (flags | 2).to_bytes(4, "little")})
    _expect_unreadable(diff, "differencing VHDX (HasParent set) without a parent locator")
    bs = corrupt_copy(src, tmp_path / "bs.vhdx", patch={item_off: (3 * MIB).to_bytes(4, "little")})
    _expect_unreadable(bs, "invalid VHDX block size")
    nometa = corrupt_copy(src, tmp_path / "m.vhdx", patch={meta_off: b"metadatX"})
    _expect_unreadable(nometa, "no metadata table")


# ---------------------------------------------------------------------------------------------
# Fuzz: random damage to the structures only ever gives Unreadable


def _fuzz_targets(path: Path) -> list[tuple[int, int]]:
    """Byte ranges holding structures (not sector data) in a small VHD/VHDX."""
    size = path.stat().st_size
    if path.suffix == ".vhdx":
        regions = _vhdx_regions(path)
        meta, bat = regions["meta"][0], regions["bat"][0]
        return [(0, 0x200), (0x10000, 0x10100), (0x20000, 0x20100), (0x30000, 0x30100), (0x40000, 0x40100),
                (meta, meta + 0x200), (meta + 0x10000, meta + 0x10100), (bat, bat + 64)]  # fmt: skip
    header_off, bat_off = _dyn_layout(path)
    targets = [(0, 512), (header_off, header_off + 1024), (bat_off, bat_off + 64), (size - 512, size)]
    with open(path, "rb") as f:
        f.seek(bat_off)
        first = int.from_bytes(f.read(4), "big")
    if first != 0xFFFFFFFF:  # block 0's sector bitmap
        targets.append((first * 512, first * 512 + 512))
    return targets


def _refresh_checksums(data: bytearray, path: Path) -> None:
    """Recompute the checksums our corruption broke, so the fuzz reaches the parsers behind them."""
    if path.suffix == ".vhdx":
        for off, ln in ((0x10000, 4096), (0x20000, 4096), (0x30000, 0x10000), (0x40000, 0x10000)):
            data[off : off + ln] = _vhdx_fix_crc(bytearray(data[off : off + ln]))
        return
    footer_off = len(data) - 512
    for off, ln, field in ((0, 512, 64), (footer_off, 512, 64)):
        block = bytearray(data[off : off + ln])
        block[field : field + 4] = vhd_checksum(block, field).to_bytes(4, "big")
        data[off : off + ln] = block
    header_off = int.from_bytes(data[footer_off + 16 : footer_off + 24], "big")
    if header_off + 1024 <= len(data):
        block = bytearray(data[header_off : header_off + 1024])
        block[36:40] = vhd_checksum(block, 36).to_bytes(4, "big")
        data[header_off : header_off + 1024] = block


def test_fuzz_only_unreadable(images: Images, tmp_path: Path) -> None:
    child = tmp_path / "tinychild.vhd"
    write_differencing_vhd(images.tiny_vhd, child, writes={512 * 3: bytes(range(256)) * 6}, locator="both")
    started = time.monotonic()
    for seed_base, src in enumerate((images.tiny_vhd, images.tiny_vhdx, child)):
        pristine = src.read_bytes()
        targets = _fuzz_targets(src)
        work = tmp_path / f"fuzz{src.suffix}"
        if src == child:  # keep the child's parent reachable: relative and absolute locators both resolve
            work = tmp_path / "fuzzchild.vhd"
        for i in range(120):
            rnd = random.Random(seed_base * 1000 + i)
            data = bytearray(pristine)
            for _ in range(rnd.randint(1, 6)):
                lo, hi = rnd.choice(targets)
                pos = rnd.randrange(lo, hi)
                n = min(rnd.choice((1, 1, 2, 4, 8)), len(data) - pos)
                data[pos : pos + n] = rnd.choice((b"\xff" * 8, bytes(8), rnd.randbytes(8), b"\x00\x00\x00\x10" * 2))[:n]
            if rnd.random() < 0.1:  # sometimes also cut the file short
                del data[rnd.randrange(len(data) // 2, len(data)) :]
            if rnd.random() < 0.6:
                _refresh_checksums(data, src)
            work.write_bytes(data)
            t0 = time.monotonic()
            try:
                with open_disk(work, parent_dirs=[images.root]) as d:
                    d.read_at(0, min(d.size, 8 * MIB))
                    d.read_at(max(0, d.size - 5000), 10_000)
            except Unreadable:
                pass
            except Exception as exc:  # pragma: no cover - the failure we hunt
                pytest.fail(f"{src.name} seed {seed_base * 1000 + i}: {type(exc).__name__}: {exc}")
            assert time.monotonic() - t0 < 2.0, f"{src.name} seed {seed_base * 1000 + i} too slow"
    assert time.monotonic() - started < 40
