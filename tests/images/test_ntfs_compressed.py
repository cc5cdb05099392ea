"""NTFS data as Windows stores it: LZNT1 compression units, WOF system compression (XPRESS4K/8K/16K, LZX) and
EFS-encrypted files.

Volumes: ntfs-3g's compressor writes the LZNT1 volume, wimlib's compressors the WOF chunks
(harness/testing/ntfs_compressed.py says how); a public volume made by Windows 10 with compression enabled
(msuhanov/ntfs-samples, CC0; not stored in this repository: set ``VMR_NTFS_SAMPLES`` to a checkout of it) checks
the reader against Windows' own bytes. Every file
must read back identical to what was written, and libfsntfs (an independent reader) must agree. Damaged
compressed data, chunk tables and reparse points give Unreadable naming the file, never another exception."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import random
import struct
from pathlib import Path

import pytest

from harness.readers.errors import Unreadable
from harness.readers.image import decompress, ntfs
from harness.readers.image.ntfs import EncryptedFile, NtfsVolume
from harness.readers.image.source import ByteSource, FileSource, SliceSource
from harness.testing.ntfs_compressed import (
    WOF_FORMATS,
    build_efs_volume,
    build_lznt1_volume,
    build_wof_stream_volume,
    build_wof_volume,
    unavailable,
    wof_stream,
)
from tests.images.ntfs_build import BytesSource, RawVolume

# https://github.com/msuhanov/ntfs-samples (CC0 1.0, the repository's License.txt), file ntfs-ramslack.raw.gz at
# commit b9b3d64: a 1 GiB MBR disk, one NTFS partition formatted by Windows 10 (14393) "with the compression
# feature enabled for the new volume". Public test data is read where the user keeps it, never copied in here.
SAMPLES_ENV = "VMR_NTFS_SAMPLES"
WINDOWS_GZ_SHA256 = "f0e1ef474eeef634ff60351ebefbef61d3cd5755b002e4e0ea0658aef7a88f07"
WINDOWS_DISK_SHA256 = "af91939c8fb3dc98efa2d40b509be823bd33a1358d3fa169b95706658c8ba710"
MIB = 1 << 20

TRIALS = 5  # damaged copies per WOF format (each re-reads a 32 MiB volume)

needs_fuse = pytest.mark.skipif(unavailable() is not None, reason=f"cannot build volumes: {unavailable()}")


def _files() -> dict[str, bytes]:
    """Contents that exercise every path: compressible and not, zeros (sparse units), sizes on and around
    the unit and chunk boundaries, a partial last unit or chunk, a resident file, an empty one."""
    rng = random.Random(11)
    text = b"".join(b"line %d of a compressible Windows text file\r\n" % i for i in range(4000))
    return {
        "Windows/System32/config/SYSTEM": b"regf" + text[:300_000] + rng.randbytes(50_000),
        "Windows/System32/drivers/etc/hosts": b"127.0.0.1 localhost\r\n",  # resident
        "random.bin": rng.randbytes(100_000),  # stored as is: nothing to gain
        "zeros-then-text.bin": bytes(200_000) + text[:70_001],  # sparse units / all-zero chunks
        "exact-64k.bin": text[:65_536],
        "exact-32k.bin": text[:32_768],
        "one-more.bin": text[:65_537],
        "one.bin": b"x",
        "empty.txt": b"",
        "nested/deeper/mixed.bin": (text[:30_000] + rng.randbytes(30_000)) * 3,
    }


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return _files()


@pytest.fixture(scope="module")
def lznt1_volume(tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes]) -> Path:
    return build_lznt1_volume(files, tmp_path_factory.mktemp("lznt1") / "lznt1.ntfs", 16 * MIB)


@pytest.fixture(scope="module")
def wof_volume(tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes]) -> Path:
    """One volume, every file in every WOF format (``xpress4k/…``, ``lzx/…``)."""
    every = {f"{fmt}/{rel}": data for fmt in WOF_FORMATS for rel, data in files.items()}
    fmts = {path: path.split("/", 1)[0] for path in every}
    return build_wof_volume(every, tmp_path_factory.mktemp("wof") / "wof.ntfs", 32 * MIB, fmt=fmts)


def _read_all(volume: NtfsVolume) -> dict[str, bytes]:
    inventory = volume.inventory()
    return {
        path.lstrip("\\").replace("\\", "/"): volume.read_file(entry, 1 << 30)
        for path, entry in inventory.walk()
        if not entry.is_dir and not path.startswith("\\$")
    }


def _libfsntfs(source: Path | ByteSource, names: list[str], offset: int = 0) -> dict[str, bytes]:
    """The files as libfsntfs reads them, from a volume file or a ByteSource (``offset``: the partition's)."""
    pyfsntfs = pytest.importorskip("pyfsntfs")
    src = FileSource(source) if isinstance(source, Path) else source

    class Window:
        def __init__(self) -> None:
            self.pos = 0
            self.size = src.size - offset

        def read(self, n: int = -1) -> bytes:
            n = self.size - self.pos if n < 0 else min(n, self.size - self.pos)
            data = src.read_at(offset + self.pos, n)
            self.pos += len(data)
            return data

        def seek(self, pos: int, whence: int = 0) -> None:
            self.pos = pos if whence == 0 else self.pos + pos if whence == 1 else self.size + pos

        def tell(self) -> int:
            return self.pos

        def get_size(self) -> int:
            return self.size

    volume = pyfsntfs.volume()
    volume.open_file_object(Window())
    try:
        return {name: volume.get_file_entry_by_path("\\" + name.replace("/", "\\")).read() for name in names}
    finally:
        volume.close()


# ---- LZNT1, written by ntfs-3g ----------------------------------------------------------------------------------


@needs_fuse
def test_lznt1_volume_reads_the_files_written(lznt1_volume: Path, files: dict[str, bytes]) -> None:
    volume = NtfsVolume(FileSource(lznt1_volume))
    got = _read_all(volume)
    assert {k: hashlib.sha256(v).hexdigest() for k, v in got.items()} == {
        k: hashlib.sha256(v).hexdigest() for k, v in files.items()
    }
    # the files really are compressed: ntfs-3g set the compressed flag on every non-empty $DATA
    raw = RawVolume(bytearray(lznt1_volume.read_bytes()))
    inventory = volume.inventory()
    entry = inventory.lookup("zeros-then-text.bin")
    assert entry is not None
    data_at = raw.attribute(entry.record, 0x80)
    flags = struct.unpack_from("<H", raw.fixed_record(entry.record), data_at + 12)[0]
    assert flags & 0x00FF, "ntfs-3g did not compress the file: the test would prove nothing"


@needs_fuse
def test_lznt1_agrees_with_libfsntfs(lznt1_volume: Path, files: dict[str, bytes]) -> None:
    names = [n for n in files if files[n]]
    assert _libfsntfs(lznt1_volume, names) == {n: files[n] for n in names}


@needs_fuse
@pytest.mark.parametrize("limit", [0, 1, 4095, 4096, 65_535, 65_536, 65_537, 200_001, 10 * MIB])
def test_lznt1_prefix_reads(lznt1_volume: Path, files: dict[str, bytes], limit: int) -> None:
    volume = NtfsVolume(FileSource(lznt1_volume))
    inventory = volume.inventory()
    for name in ("zeros-then-text.bin", "Windows/System32/config/SYSTEM", "random.bin", "one-more.bin"):
        entry = inventory.lookup(name)
        assert entry is not None
        assert volume.read_file(entry, limit) == files[name][:limit], (name, limit)


@needs_fuse
def test_lznt1_reads_only_the_units_it_needs(lznt1_volume: Path) -> None:
    source = FileSource(lznt1_volume)
    volume = NtfsVolume(source)
    entry = volume.inventory().lookup("Windows/System32/config/SYSTEM")
    assert entry is not None
    before = source.bytes_read
    volume.read_file(entry, 4096)
    small = source.bytes_read - before
    before = source.bytes_read
    volume.read_file(entry, 1 << 30)
    assert small < (source.bytes_read - before) / 2


# ---- WOF, chunks by wimlib's compressors -------------------------------------------------------------------------


@needs_fuse
def test_wof_volume_reads_the_files_written(wof_volume: Path, files: dict[str, bytes]) -> None:
    got = _read_all(NtfsVolume(FileSource(wof_volume)))
    want = {f"{fmt}/{rel}": data for fmt in WOF_FORMATS for rel, data in files.items()}
    assert {k: hashlib.sha256(v).hexdigest() for k, v in got.items()} == {
        k: hashlib.sha256(v).hexdigest() for k, v in want.items()
    }


@needs_fuse
def test_wof_agrees_with_libfsntfs(wof_volume: Path, files: dict[str, bytes]) -> None:
    """libfsntfs must agree wherever it reads the file. It cannot read some: libfwnt's LZX decoder rejects
    valid wimlib chunks ("unable to build lengths Huffman tree") and libfsntfs fails a 1-byte file whose
    WofCompressedData is resident; every XPRESS file over one byte must be among those it reads."""
    ours = _read_all(NtfsVolume(FileSource(wof_volume)))
    read = 0
    for fmt in WOF_FORMATS:
        for rel, data in files.items():
            if not data:
                continue
            name = f"{fmt}/{rel}"
            try:
                theirs = _libfsntfs(wof_volume, [name])[name]
            except OSError:
                assert fmt == "lzx" or len(data) == 1, f"libfsntfs cannot read {name}"
                continue
            assert theirs == ours[name] == data, name
            read += 1
    assert read >= 3 * (len([d for d in files.values() if len(d) > 1]))


@needs_fuse
@pytest.mark.parametrize("fmt", sorted(WOF_FORMATS))
@pytest.mark.parametrize("limit", [1, 4096, 8193, 32_768, 100_000])
def test_wof_prefix_reads(wof_volume: Path, files: dict[str, bytes], fmt: str, limit: int) -> None:
    volume = NtfsVolume(FileSource(wof_volume))
    inventory = volume.inventory()
    for name in ("Windows/System32/config/SYSTEM", "zeros-then-text.bin", "random.bin"):
        entry = inventory.lookup(f"{fmt}/{name}")
        assert entry is not None
        assert entry.size == len(files[name])  # the sparse unnamed $DATA carries the real size
        assert volume.read_file(entry, limit) == files[name][:limit]


def _record_with(raw: RawVolume, volume: NtfsVolume, path: str) -> int:
    entry = volume.inventory().lookup(path)
    assert entry is not None
    return entry.record


def _stream_offset(volume: NtfsVolume, record: int, name: str) -> int:
    """Byte offset in the volume of the named $DATA stream's first cluster."""
    attrs = ntfs._attributes(volume._record(record, "test"), "test", "test")
    attr = next(a for a in attrs if a.type == 0x80 and a.name == name)
    runs = ntfs.decode_runs(attr.value, volume.total_clusters, "test", "test")
    return next(r.lcn for r in runs if r.lcn >= 0) * volume.cluster_size


@needs_fuse
@pytest.mark.parametrize("fmt", sorted(WOF_FORMATS))
def test_wof_damaged_chunks_are_unreadable(wof_volume: Path, fmt: str) -> None:
    image = bytearray(wof_volume.read_bytes())
    volume = NtfsVolume(BytesSource(image))
    record = _record_with(RawVolume(image), volume, f"{fmt}/Windows/System32/config/SYSTEM")
    at = _stream_offset(volume, record, "WofCompressedData")
    rng = random.Random(5)
    for trial in range(TRIALS):
        bad = bytearray(image)
        if trial == 0:  # the first table entry points past the stream
            bad[at : at + 4] = struct.pack("<I", 0x7FFFFFF0)
        else:
            for _ in range(16):
                bad[at + 64 + rng.randrange(8000)] = rng.randrange(256)
        damaged = NtfsVolume(BytesSource(bad))
        entry = damaged.inventory().lookup(f"{fmt}/Windows/System32/config/SYSTEM")
        assert entry is not None
        try:
            damaged.read_file(entry, 1 << 30)
        except Unreadable as exc:
            assert "SYSTEM" in exc.problem and f"MFT record {record}" in exc.problem
        # no Unreadable is fine too: a flipped literal byte may still decode (to different bytes)


@needs_fuse
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (struct.pack("<IIII", 1, 2, 1, 9), "unknown WOF compression format 9"),
        (struct.pack("<IIII", 1, 1, 1, 0), "WIMBoot"),
        (struct.pack("<II", 1, 2), "unknown WOF reparse point"),
        (struct.pack("<I", 1), "cut short"),
    ],
)
def test_wof_reparse_point_problems(wof_volume: Path, body: bytes, problem: str) -> None:
    image = bytearray(wof_volume.read_bytes())
    volume = NtfsVolume(BytesSource(image))
    raw = RawVolume(image)
    record = _record_with(raw, volume, "lzx/random.bin")
    at = raw.attribute(record, 0xC0)
    rec = raw.fixed_record(record)
    value_at = at + struct.unpack_from("<H", rec, at + 20)[0]
    # same value length: patch the data length field and the first bytes of the body
    raw.patch(record, value_at + 4, struct.pack("<H", len(body)))
    raw.patch(record, value_at + 8, body)
    damaged = NtfsVolume(BytesSource(image))
    entry = damaged.inventory().lookup("lzx/random.bin")
    assert entry is not None
    with pytest.raises(Unreadable, match=problem):
        damaged.read_file(entry, 100)


@pytest.mark.parametrize("fmt", sorted(WOF_FORMATS))
def test_wof_stream_round_trip_through_the_decompressors(fmt: str) -> None:
    """The builder's chunk table and wimlib's chunks decode with the reader's decompressors (no volume)."""
    if unavailable() == "libwim (wimlib) is not installed":
        pytest.skip("libwim is not installed")
    data = _files()["Windows/System32/config/SYSTEM"]
    stream = wof_stream(data, fmt)
    _n, chunk = WOF_FORMATS[fmt]
    count = -(-len(data) // chunk)
    table = struct.unpack_from(f"<{count - 1}I", stream, 0)
    starts = [0, *table, len(stream) - 4 * (count - 1)]
    body = stream[4 * (count - 1) :]
    out = b""
    for i in range(count):
        piece = body[starts[i] : starts[i + 1]]
        size = min(chunk, len(data) - i * chunk)
        if len(piece) == size:
            out += piece
        else:
            out += decompress.lzx(piece, size) if fmt == "lzx" else decompress.xpress_huffman(piece, size, chunk)
    assert out == data


@needs_fuse
def test_wof_file_over_4_gib_uses_8_byte_chunk_offsets(tmp_path: Path) -> None:
    """Over 4 GiB the chunk table's entries are 8 bytes: a sparse 4 GiB + 96 KiB LZX file whose first chunks
    differ, the rest zeros, read through its first chunks only."""
    chunk = 32768
    size = (1 << 32) + 3 * chunk
    count = size // chunk
    first = [b"".join(b"chunk %d line %d\r\n" % (c, i) for i in range(2000))[:chunk] for c in range(3)]
    pieces = [wof_stream(data, "lzx") for data in first] + [wof_stream(bytes(chunk), "lzx")] * (count - 3)
    offsets = list(itertools.accumulate(len(p) for p in pieces))[:-1]
    stream = struct.pack(f"<{count - 1}Q", *offsets) + b"".join(pieces)
    volume = build_wof_stream_volume(tmp_path / "big.ntfs", 64 * MIB, "big.bin", size, stream, "lzx")
    ntfs_volume = NtfsVolume(FileSource(volume))
    entry = ntfs_volume.inventory().lookup("big.bin")
    assert entry is not None and entry.size == size
    want = b"".join(first) + bytes(chunk)
    assert ntfs_volume.read_file(entry, len(want)) == want
    assert ntfs_volume.read_file(entry, 40_000) == want[:40_000]


# ---- decompressors: garbage in, CorruptData out ------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_decompressors_reject_garbage_cleanly(seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(rng.randrange(0, 3000))
    for call, size in ((decompress.lznt1, 65_536), (decompress.xpress_huffman, 4096), (decompress.lzx, 32_768)):
        try:
            out = call(data, size)
        except decompress.CorruptData as exc:
            assert str(exc)
        else:
            assert len(out) <= size


def test_decompressors_check_sizes() -> None:
    for call in (decompress.lznt1, decompress.xpress_huffman, decompress.lzx):
        with pytest.raises(decompress.CorruptData):
            call(b"\0" * 10, 0)
        with pytest.raises(decompress.CorruptData):
            call(b"\0" * 10, 1 << 30)


# ---- EFS ----------------------------------------------------------------------------------------------------


@needs_fuse
@pytest.mark.parametrize("how", ["data flag", "file attribute"])
def test_encrypted_files_are_reported_as_encrypted(lznt1_volume: Path, how: str) -> None:
    image = bytearray(lznt1_volume.read_bytes())
    volume = NtfsVolume(BytesSource(image))
    raw = RawVolume(image)
    record = _record_with(raw, volume, "random.bin")
    rec = raw.fixed_record(record)
    if how == "data flag":
        at = raw.attribute(record, 0x80) + 12
        raw.patch(record, at, struct.pack("<H", struct.unpack_from("<H", rec, at)[0] | 0x4000))
    else:
        si = raw.attribute(record, 0x10)
        at = si + struct.unpack_from("<H", rec, si + 20)[0] + 0x20
        raw.patch(record, at, struct.pack("<I", struct.unpack_from("<I", rec, at)[0] | 0x4000))
    damaged = NtfsVolume(BytesSource(image))
    entry = damaged.inventory().lookup("random.bin")
    assert entry is not None
    with pytest.raises(EncryptedFile, match="EFS-encrypted") as caught:
        damaged.read_file(entry, 10)
    assert isinstance(caught.value, Unreadable)
    assert "not damage" in caught.value.problem


@needs_fuse
def test_efs_stream_written_by_ntfs_3g_is_reported_as_encrypted(tmp_path: Path) -> None:
    files = {"Users/Administrator/secret.txt": b"s" * 5000, "plain.txt": b"p" * 5000}
    path = build_efs_volume(files, tmp_path / "efs.ntfs", 8 * MIB, encrypted={"Users/Administrator/secret.txt"})
    volume = NtfsVolume(FileSource(path))
    inventory = volume.inventory()
    secret = inventory.lookup("Users/Administrator/secret.txt")
    plain = inventory.lookup("plain.txt")
    assert secret is not None and plain is not None
    attrs = ntfs._attributes(volume._record(secret.record, "t"), "t", "t")
    assert any(a.type == 0x100 and a.name == "$EFS" for a in attrs), "ntfs-3g wrote no $EFS stream"
    with pytest.raises(EncryptedFile, match=r"secret\.txt.*EFS-encrypted"):
        volume.read_file(secret, 100)
    assert volume.read_file(plain, 100) == b"p" * 100


# ---- a volume Windows made -----------------------------------------------------------------------------------


class BlockSource:
    """A ByteSource over a disk kept as 4 KiB blocks deduplicated in memory (the 1 GiB sample has ~120 distinct
    blocks), built while the gzip stream is read: the disk is never unpacked to a file."""

    def __init__(self, packed_gz: Path, label: str, block: int = 4096) -> None:
        self.block, self.label = block, label
        unique: dict[bytes, int] = {}
        index: list[int] = []
        disk = hashlib.sha256()
        with gzip.open(packed_gz, "rb") as stream:
            while chunk := stream.read(block * 256):
                disk.update(chunk)
                for at in range(0, len(chunk), block):
                    index.append(unique.setdefault(chunk[at : at + block].ljust(block, b"\0"), len(unique)))
        self.index = tuple(index)
        self.blocks = list(unique)
        self.size = len(index) * block
        self.sha256 = disk.hexdigest()

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(self.size, offset + max(0, length))
        parts = []
        while offset < end:
            i, within = divmod(offset, self.block)
            piece = self.blocks[self.index[i]][within : within + end - offset]
            parts.append(piece)
            offset += len(piece)
        return b"".join(parts)


@pytest.fixture(scope="module")
def windows_disk() -> BlockSource:
    """ntfs-ramslack.raw (Windows 10 14393, compression enabled for the new volume), read from the upstream
    ntfs-ramslack.raw.gz in ``$VMR_NTFS_SAMPLES``; skipped, saying so, when it is not there."""
    where = os.environ.get(SAMPLES_ENV)
    if not where:
        pytest.skip(f"{SAMPLES_ENV} is not set (a checkout of https://github.com/msuhanov/ntfs-samples)")
    packed = Path(where) / "ntfs-ramslack.raw.gz"
    if not packed.is_file():
        pytest.skip(f"{packed} not found ({SAMPLES_ENV} should name a checkout of msuhanov/ntfs-samples)")
    assert hashlib.sha256(packed.read_bytes()).hexdigest() == WINDOWS_GZ_SHA256, f"{packed} is not the published file"
    disk = BlockSource(packed, "ntfs-ramslack.raw")
    assert disk.sha256 == WINDOWS_DISK_SHA256
    return disk


WINDOWS_PARTITION = 128 * 512  # sfdisk: one NTFS partition (type 7) from sector 128


def test_windows_made_compressed_volume(windows_disk: BlockSource) -> None:
    volume = NtfsVolume(SliceSource(windows_disk, WINDOWS_PARTITION, windows_disk.size - WINDOWS_PARTITION, "p1"))
    inventory = volume.inventory()
    got = {}
    for name in ("1.txt", "os_version.txt"):
        entry = inventory.lookup(name)
        assert entry is not None
        got[name] = volume.read_file(entry, 1 << 20)
        attrs = ntfs._attributes(volume._record(entry.record, "t"), "t", "t")
        data = next(a for a in attrs if a.type == 0x80 and not a.name)
        assert data.flags & 0x00FF, f"{name} is not compressed on this volume"
        assert data.resident == (name == "os_version.txt")
    # 1.txt: non-resident, one LZNT1 compression unit of 16 clusters; os_version.txt: resident
    assert len(got["1.txt"]) == 6460
    assert got["os_version.txt"] == b"\r\nMicrosoft Windows [Version 10.0.14393]\r\n"
    assert hashlib.sha1(got["1.txt"]).hexdigest() == "478349a1b51b2780d858d8ca88e20d616199d253"
    assert _libfsntfs(windows_disk, list(got), WINDOWS_PARTITION) == got


# ---- the extractor: an encrypted file is a fact, not damage -------------------------------------------------------


def test_extraction_lists_encrypted_files_and_reports_no_damage(image_cache: Path, tmp_path: Path) -> None:
    from harness.extraction.extract import extract
    from harness.testing.images import build_image, missing_tools, volume_extent
    from harness.testing.windows import windows_server_2008r2_vmrole

    if missing_tools():
        pytest.skip(f"image tools missing: {missing_tools()}")
    spec = windows_server_2008r2_vmrole()
    image = tmp_path / "efs.raw"
    image.write_bytes(build_image(spec, "raw", cache_dir=image_cache).read_bytes())
    before = extract(image)
    assert "\\unattend.xml" not in before.encrypted_files
    start, size = volume_extent(spec)
    disk = bytearray(image.read_bytes())
    volume_bytes = bytearray(disk[start : start + size])
    raw = RawVolume(volume_bytes)
    record = _record_with(raw, NtfsVolume(BytesSource(volume_bytes)), "unattend.xml")
    at = raw.attribute(record, 0x80) + 12
    flags = struct.unpack_from("<H", raw.fixed_record(record), at)[0]
    raw.patch(record, at, struct.pack("<H", flags | 0x4000))
    disk[start : start + size] = volume_bytes
    image.write_bytes(disk)
    facts = extract(image)
    assert facts.encrypted_files == ("\\unattend.xml",)
    assert [p for p in facts.problems if "unattend" in p.path.lower()] == []
    assert len(facts.problems) == len(before.problems)
