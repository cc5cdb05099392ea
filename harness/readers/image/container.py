"""Disk containers: raw, VHD and VHDX (fixed, dynamic, differencing), read-only, in pure Python.

``open_disk`` turns an image file into a ``Disk``: a ByteSource of the *virtual* disk bytes plus a
``ContainerInfo`` describing the container, so rules can report a bad footer or a differencing chain while
the partition and NTFS readers see plain sectors.

Why our own reader: the image under test is untrusted input, and the lint must never hang, balloon or
crash on it. Every offset taken from the file is checked against the file size before it is used, every
table is bounded by the file size, every parent chain is tracked for cycles, and every problem is one
``Unreadable`` that names the file, the structure and the offset. Reads are coalesced per run of blocks
(one ``pread`` per contiguous run), so a sequential NTFS scan is not slowed by per-sector Python loops.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import uuid
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from harness.readers.errors import Unreadable
from harness.readers.image import blob
from harness.readers.image.detect import (
    Detected,
    conversion_command,
    detect,
    detect_volume,
    footer_offset,
    not_an_image,
    volume_extent,
)
from harness.readers.image.source import FileSource, SliceSource, clip, clip_hints, open_file, prefetch

__all__ = ["ContainerInfo", "Disk", "ForeignImage", "crc32c", "open_disk"]

SECTOR = 512
KIB = 1024
MIB = 1024 * 1024
_VHD_COOKIE = b"conectix"
_VHD_SPARSE_COOKIE = b"cxsparse"
_VHDX_SIGNATURE = b"vhdxfile"
_UNALLOCATED = 0xFFFFFFFF
_VHD_TYPES = {2: "fixed", 3: "dynamic", 4: "differencing"}
#: Longest parent locator we read (a 32,767-character UTF-16 path plus slack).
_MAX_LOCATOR = 64 * KIB + SECTOR
#: Block sizes outside this range are not produced by any known tool; refusing them bounds bitmap sizes.
_VHD_MIN_BLOCK = SECTOR
_VHD_MAX_BLOCK = 256 * MIB
_VHDX_MAX_SIZE = 64 * 1024**4
_VHDX_MAX_ENTRIES = 2047

# Segment kinds produced by the sparse readers.
_FILE, _ZERO, _PARENT = 0, 1, 2


# --------------------------------------------------------------------------------------------------
# CRC-32C (Castagnoli), for VHDX headers and region tables. Table-driven over the non-zero prefix; the
# trailing zeros that fill most of a 64 KiB region table are applied in O(log n) with GF(2) operators
# (the same linear-algebra trick zlib's crc32_combine uses), so checking a table costs microseconds.


def _crc_table(poly: int) -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C_TABLE = _crc_table(0x82F63B78)
_ZERO_OPS: list[list[int]] = []  # _ZERO_OPS[k] = the register map for 2**k zero bytes, as 32 column images


def _apply(op: Sequence[int], value: int) -> int:
    out = 0
    i = 0
    while value:
        if value & 1:
            out ^= op[i]
        value >>= 1
        i += 1
    return out


def _zero_op(k: int) -> list[int]:
    if not _ZERO_OPS:
        t = _CRC32C_TABLE
        _ZERO_OPS.append([t[(1 << i) & 0xFF] ^ ((1 << i) >> 8) for i in range(32)])
    while len(_ZERO_OPS) <= k:
        prev = _ZERO_OPS[-1]
        _ZERO_OPS.append([_apply(prev, col) for col in prev])
    return _ZERO_OPS[k]


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C of ``data`` (continuing from ``crc``), as VHDX stores it: ``crc32c(b"123456789") == 0xE3069283``."""
    raw = bytes(data)
    body = raw.rstrip(b"\x00")
    zeros = len(raw) - len(body)
    c = crc ^ 0xFFFFFFFF
    t = _CRC32C_TABLE
    for byte in body:
        c = t[(c ^ byte) & 0xFF] ^ (c >> 8)
    k = 0
    while zeros:
        if zeros & 1:
            c = _apply(_zero_op(k), c)
        zeros >>= 1
        k += 1
    return c ^ 0xFFFFFFFF


# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerInfo:
    """What the container says about itself. Rules read this (format, type, alignment, footer state)."""

    path: str
    format: str  # "raw" | "vhd" | "vhdx"
    disk_type: str | None  # "fixed" | "dynamic" | "differencing" | None (raw)
    virtual_size: int
    file_size: int
    footer_cookie_ok: bool | None
    footer_checksum_ok: bool | None
    footer_copy_ok: bool | None
    creator_application: str | None
    block_size: int | None
    logical_sector_size: int | None
    unique_id: str | None
    parent_chain: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    #: What content detection found when the format alone does not say it, in words: "a bare NTFS volume with
    #: a stray VHD footer at its end (...)", "an ext4 file system". None for an ordinary raw, VHD or VHDX disk.
    detected: str | None = None


class ForeignImage(Unreadable):
    """The file is another hypervisor's container (QCOW2, VMDK, VDI): recognised, not read. ``detected`` says
    which; ``problem`` names it and gives the conversion command."""

    def __init__(self, path: Path | str, detected: Detected) -> None:
        self.detected = detected
        name = Path(path).name
        super().__init__(
            path,
            f"{detected.name} ({detected.evidence}), not a VHD, VHDX or raw disk: its contents are not read; "
            f"convert it to a fixed VHD with `{conversion_command(detected.kind, name)}` and lint that",
        )


class Disk:
    """Virtual disk bytes (a ByteSource) plus the container's ``info``. Close it, or use ``with``."""

    info: ContainerInfo
    size: int
    label: str

    def __init__(self, file: FileSource, info: ContainerInfo, parent: Disk | None = None) -> None:
        self._file = file
        self._parent = parent
        self.info = info
        self.size = info.virtual_size
        self.label = file.label

    def read_at(self, offset: int, length: int) -> bytes:
        raise NotImplementedError  # abstract: _FlatDisk and _SparseDisk implement it

    def prefetch(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Hints (:func:`harness.readers.image.source.prefetch`) in virtual offsets, passed on in file offsets."""

    def close(self) -> None:
        self._file.close()
        if self._parent is not None:
            self._parent.close()

    def __enter__(self) -> Disk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.info.format}/{self.info.disk_type} {self.label} size={self.size:#x}>"


class _FlatDisk(Disk):
    """Raw images and fixed VHDs: virtual byte N is file byte N."""

    def read_at(self, offset: int, length: int) -> bytes:
        n = clip(self, offset, length)
        if n == 0:
            return b""
        data = self._file.read_at(offset, n)
        if len(data) != n:
            raise Unreadable(self._file.path, f"short read at offset {offset:#x}")
        return data

    def prefetch(self, ranges: Iterable[tuple[int, int]]) -> None:
        prefetch(self._file, list(clip_hints(self.size, ranges)))


class _SparseDisk(Disk):
    """Block-mapped disks (dynamic/differencing VHD, VHDX). Subclasses map one block range to segments;
    this class merges neighbouring segments across blocks (contiguous file runs, zero runs, parent runs)
    and serves each merged run with a single read."""

    _block_size: int

    def _segments(self, block: int, start: int, end: int) -> Iterable[tuple[int, int, int]]:
        """(kind, file offset or -1, length) covering bytes [start, end) of ``block``, in order."""
        raise NotImplementedError  # abstract: the VHD and VHDX disks implement it

    def read_at(self, offset: int, length: int) -> bytes:
        n = clip(self, offset, length)
        if n == 0:
            return b""
        parts: list[bytes] = []
        for kind, foff, vpos, ln in self._map(offset, n):
            if kind == _FILE:
                data = self._file.read_at(foff, ln)
                if len(data) != ln:
                    raise Unreadable(self._file.path, f"short read at offset {foff:#x} (file truncated?)")
            elif kind == _ZERO:
                data = bytes(ln)
            else:
                assert self._parent is not None
                data = self._parent.read_at(vpos, ln)
                if len(data) < ln:  # parent smaller than the child: the rest reads as zeros
                    data += bytes(ln - len(data))
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def prefetch(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Each virtual range mapped as :meth:`read_at` maps it (the same file runs a read will ask for). A
        range the mapping refuses (a bad BAT entry) is left out: the read reports it."""
        mine: list[tuple[int, int]] = []
        theirs: list[tuple[int, int]] = []
        for offset, n in clip_hints(self.size, ranges):
            try:
                runs = self._map(offset, n)
            except Unreadable:
                continue
            for kind, foff, vpos, ln in runs:
                if kind == _FILE:
                    mine.append((foff, ln))
                elif kind == _PARENT:
                    theirs.append((vpos, ln))
        if mine:
            prefetch(self._file, mine)
        if theirs and self._parent is not None:
            prefetch(self._parent, theirs)

    def _map(self, offset: int, n: int) -> list[list[int]]:
        """``[kind, file offset, virtual offset, length]`` runs covering virtual bytes [offset, offset + n),
        neighbouring segments merged (contiguous file runs, zero runs, parent runs)."""
        bs = self._block_size
        end = offset + n
        runs: list[list[int]] = []  # [kind, file offset, virtual offset, length]
        pos = offset
        while pos < end:
            block, start = divmod(pos, bs)
            stop = min(end - block * bs, bs)
            for kind, foff, ln in self._segments(block, start, stop):
                if runs:
                    last = runs[-1]
                    if last[0] == kind and (kind != _FILE or last[1] + last[3] == foff):
                        last[3] += ln
                        pos += ln
                        continue
                runs.append([kind, foff, pos, ln])
                pos += ln
        return runs


_RUN_RE = re.compile(rb"\x00+|\xff+|[\x01-\xfe]")


def bitmap_runs(bitmap: bytes, nbits: int, *, msb_first: bool) -> list[tuple[int, int, bool]]:
    """Runs ``(first, end, is_set)`` of a sector bitmap, covering bits [0, nbits). Whole 0x00/0xFF byte runs
    are found by a regex (C speed); only mixed bytes are split bit by bit. VHD numbers bits from the most
    significant bit of each byte, VHDX from the least."""
    runs: list[tuple[int, int, bool]] = []

    def add(first: int, stop: int, value: bool) -> None:
        if first >= nbits:
            return
        stop = min(stop, nbits)
        if runs and runs[-1][2] == value and runs[-1][1] == first:
            runs[-1] = (runs[-1][0], stop, value)
        else:
            runs.append((first, stop, value))

    for m in _RUN_RE.finditer(bitmap):
        first = m.start() * 8
        if first >= nbits:
            break
        byte = bitmap[m.start()]
        if byte in (0x00, 0xFF):
            add(first, m.end() * 8, byte == 0xFF)
        else:
            for bit in range(8):
                value = bool(byte & (0x80 >> bit if msb_first else 1 << bit))
                add(first + bit, first + bit + 1, value)
    if not runs or runs[-1][1] < nbits:  # bitmap shorter than the block: the rest is "not here"
        add(runs[-1][1] if runs else 0, nbits, False)
    return runs


class _LazyTable:
    """A block allocation table read on demand, a 64 KiB page of entries at a time, keeping at most
    ``_MAX_PAGES`` pages (4 MiB). Memory does not grow with the table: a sparse 16 TiB VHDX with 1 MiB blocks
    has a 128 MiB BAT that is mostly a hole in the file, and loading it whole cost 300 MB of RAM. Only the
    entries a read touches are fetched (a partition-table read touches two pages)."""

    _PAGE_BYTES = 64 * KIB
    _MAX_PAGES = 64

    def __init__(self, file: FileSource, offset: int, count: int, typecode: str, *, big_endian: bool) -> None:
        self._file = file
        self._offset = offset
        self._count = count
        self._typecode = typecode
        self._width = array(typecode).itemsize
        self._per_page = self._PAGE_BYTES // self._width
        self._swap = big_endian != (sys.byteorder == "big")
        self._pages: dict[int, array[int]] = {}

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> int:
        page, slot = divmod(index, self._per_page)
        entries = self._pages.get(page)
        if entries is None:
            entries = self._load(page, index)
        return entries[slot]

    def _load(self, page: int, index: int) -> array[int]:
        if not 0 <= index < self._count:
            raise Unreadable(self._file.path, f"BAT entry {index} is outside the table ({self._count} entries)")
        first = page * self._per_page
        n = min(self._per_page, self._count - first)
        raw = self._file.read_at(self._offset + first * self._width, n * self._width)
        if len(raw) != n * self._width:
            raise Unreadable(
                self._file.path,
                f"BAT truncated: entries {first}-{first + n - 1} at offset {self._offset + first * self._width:#x} "
                f"lie past the end of the file (size {self._file.size:#x})",
            )
        entries = array(self._typecode, raw)
        if self._swap:
            entries.byteswap()
        if len(self._pages) >= self._MAX_PAGES:
            self._pages.clear()
        self._pages[page] = entries
        return entries


class _RunCache:
    """Bounded per-block cache of bitmap runs (a 2 TiB disk has a million blocks; we keep a few thousand)."""

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._data: dict[int, tuple[list[int], list[tuple[int, int, bool]]]] = {}

    def get(self, key: int) -> tuple[list[int], list[tuple[int, int, bool]]] | None:
        return self._data.get(key)

    def put(self, key: int, runs: list[tuple[int, int, bool]]) -> tuple[list[int], list[tuple[int, int, bool]]]:
        if len(self._data) >= self._limit:
            self._data.clear()
        value = ([r[0] for r in runs], runs)
        self._data[key] = value
        return value


def _bitmap_segments(
    starts: list[int],
    runs: list[tuple[int, int, bool]],
    data_offset: int,
    sector: int,
    start: int,
    end: int,
) -> list[tuple[int, int, int]]:
    """Segments for bytes [start, end) of a block whose sectors are split by ``runs`` into present in this
    file (read at ``data_offset``) and absent (read from the parent)."""
    out: list[tuple[int, int, int]] = []
    i = max(0, bisect_right(starts, start // sector) - 1)
    pos = start
    while pos < end and i < len(runs):
        _first, stop, present = runs[i]
        seg_end = min(end, stop * sector)
        if seg_end > pos:
            if present:
                out.append((_FILE, data_offset + pos, seg_end - pos))
            else:
                out.append((_PARENT, -1, seg_end - pos))
            pos = seg_end
        i += 1
    if pos < end:
        out.append((_PARENT, -1, end - pos))
    return out


# --------------------------------------------------------------------------------------------------
# VHD


def _u32(data: bytes, off: int) -> int:
    return int.from_bytes(data[off : off + 4], "big")


def _u64(data: bytes, off: int) -> int:
    return int.from_bytes(data[off : off + 8], "big")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _round_up(a: int, b: int) -> int:
    return _ceil_div(a, b) * b


def _vhd_checksum(data: bytes, field: int) -> int:
    """One's complement of the byte sum, with the 4-byte checksum field at ``field`` counted as zero."""
    total = sum(data) - sum(data[field : field + 4])
    return (~total) & 0xFFFFFFFF


class _VhdSparseDisk(_SparseDisk):
    """Dynamic and differencing VHD."""

    def __init__(
        self,
        file: FileSource,
        info: ContainerInfo,
        bat: _LazyTable,
        block_size: int,
        data_end: int,
        parent: Disk | None,
    ) -> None:
        super().__init__(file, info, parent)
        self._bat = bat
        self._block_size = block_size
        spb = block_size // SECTOR
        self._bitmap_size = _round_up(_ceil_div(spb, 8), SECTOR)
        self._data_end = data_end
        self._differencing = parent is not None
        self._runs = _RunCache()

    def _block_base(self, block: int) -> int:
        """File offset of the block's bitmap, checked so the whole block fits before the footer."""
        entry = self._bat[block]
        base = entry * SECTOR
        needed = min(self._block_size, self.size - block * self._block_size)
        needed = _round_up(needed, SECTOR)
        stop = base + self._bitmap_size + needed
        if stop > self._data_end:
            raise Unreadable(
                self._file.path,
                f"BAT entry {block} points past the end of the file (block at offset {base:#x} ends at "
                f"{stop:#x} > {self._data_end:#x}, file size {self._file.size:#x})",
                location=f"BAT entry {block}",
            )
        return base

    def _segments(self, block: int, start: int, end: int) -> Iterable[tuple[int, int, int]]:
        if self._bat[block] == _UNALLOCATED:
            return ((_PARENT if self._differencing else _ZERO, -1, end - start),)
        base = self._block_base(block)
        data = base + self._bitmap_size
        if not self._differencing:
            return ((_FILE, data + start, end - start),)
        cached = self._runs.get(block)
        if cached is None:
            bitmap = self._file.read_at(base, self._bitmap_size)
            cached = self._runs.put(block, bitmap_runs(bitmap, self._block_size // SECTOR, msb_first=True))
        return _bitmap_segments(cached[0], cached[1], data, SECTOR, start, end)


def _vhd_uuid(raw: bytes) -> str:
    return str(uuid.UUID(bytes=raw))


@dataclass(frozen=True)
class _ChainLink:
    key: tuple[int, int]
    name: str


def _open_vhd(
    path: Path, file: FileSource, head: bytes, max_chain: int, chain: tuple[_ChainLink, ...], allowed: _Allowed
) -> Disk:
    fs = file.size
    if fs < SECTOR:
        raise Unreadable(path, f"file is {fs} bytes: too short for a VHD (its footer alone is {SECTOR} bytes)")
    footer_at = footer_offset(file)
    footer_end = footer_at if footer_at is not None else fs
    # A 511-byte footer (Virtual PC before 2004) is read as 512 bytes with a zero reserved byte at the end.
    tail = file.read_at(footer_at, SECTOR).ljust(SECTOR, b"\x00") if footer_at is not None else b""
    end_footer = tail if tail[:8] == _VHD_COOKIE else None
    copy = file.read_at(0, SECTOR) if head[:8] == _VHD_COOKIE else None
    notes: list[str] = []
    footer = end_footer if end_footer is not None else copy
    assert footer is not None
    if end_footer is None:
        notes.append("no VHD footer at the end of the file (truncated?); the copy at offset 0 was used")
    stored = _u32(footer, 64)
    computed = _vhd_checksum(footer, 64)
    checksum_ok = end_footer is not None and stored == computed
    if end_footer is not None and not checksum_ok:
        notes.append(f"VHD footer checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")
    version = _u32(footer, 12)
    if version != 0x00010000:
        notes.append(f"VHD footer format version {version:#010x} (expected 0x00010000)")
    if footer[84]:
        notes.append("VHD footer saved-state flag is set")
    type_code = _u32(footer, 60)
    disk_type = _VHD_TYPES.get(type_code)
    footer_loc = f"footer at {footer_end:#x}" if end_footer is not None else "footer copy at 0x0"
    if disk_type is None:
        raise Unreadable(path, f"unsupported VHD disk type {type_code}", location=footer_loc)
    current_size = _u64(footer, 48)
    creator = footer[28:32].decode("latin-1").rstrip("\x00")
    unique_id = _vhd_uuid(footer[68:84])

    def info(**kw: object) -> ContainerInfo:
        base: dict[str, object] = dict(
            path=os.path.abspath(path),
            format="vhd",
            disk_type=disk_type,
            virtual_size=current_size,
            file_size=fs,
            footer_cookie_ok=end_footer is not None,
            footer_checksum_ok=checksum_ok,
            footer_copy_ok=None,
            creator_application=creator,
            block_size=None,
            logical_sector_size=SECTOR,
            unique_id=unique_id,
            parent_chain=(),
            notes=tuple(notes),
        )
        base.update(kw)
        return ContainerInfo(**base)  # type: ignore[arg-type]

    if disk_type == "fixed":
        if end_footer is None:
            raise Unreadable(path, "fixed VHD without a footer at the end of the file", location=footer_loc)
        data_len = footer_end
        if current_size > data_len:
            raise Unreadable(
                path,
                f"fixed VHD is truncated: the footer gives a disk size of {current_size:#x} bytes but the file "
                f"holds {data_len:#x} bytes before the footer",
                location=footer_loc,
            )
        if current_size < data_len:
            notes.append(f"{data_len - current_size} bytes between the disk data and the footer")
        return _FlatDisk(file, info(notes=tuple(notes)))

    # dynamic / differencing
    data_end = footer_end
    header_off = _u64(footer, 16)
    if header_off + 1024 > fs:
        raise Unreadable(
            path,
            f"dynamic disk header offset {header_off:#x} lies past the end of the file (size {fs:#x})",
            location=footer_loc,
        )
    header = file.read_at(header_off, 1024)
    hloc = f"dynamic disk header at {header_off:#x}"
    if header[:8] != _VHD_SPARSE_COOKIE:
        raise Unreadable(path, f"no dynamic disk header ('cxsparse') at offset {header_off:#x}", location=hloc)
    h_stored, h_computed = _u32(header, 36), _vhd_checksum(header, 36)
    if h_stored != h_computed:
        raise Unreadable(
            path,
            f"dynamic disk header checksum mismatch at offset {header_off:#x} "
            f"(stored {h_stored:#010x}, computed {h_computed:#010x})",
            location=hloc,
        )
    table_off = _u64(header, 16)
    max_entries = _u32(header, 28)
    block_size = _u32(header, 32)
    if block_size < _VHD_MIN_BLOCK or block_size > _VHD_MAX_BLOCK or block_size & (block_size - 1):
        raise Unreadable(path, f"invalid VHD block size {block_size:#x}", location=hloc)
    needed = _ceil_div(current_size, block_size)
    if max_entries < needed:
        raise Unreadable(
            path,
            f"BAT has {max_entries} entries but a disk of {current_size:#x} bytes with {block_size:#x}-byte "
            f"blocks needs {needed}",
            location=hloc,
        )
    if table_off + 4 * max_entries > fs:
        raise Unreadable(
            path,
            f"BAT at offset {table_off:#x} ({max_entries} entries) runs past the end of the file (size {fs:#x})",
            location=hloc,
        )
    bat = _LazyTable(file, table_off, needed, "I", big_endian=True)
    footer_len = fs - footer_end
    footer_copy_ok = copy is not None and end_footer is not None and copy[:footer_len] == end_footer[:footer_len]
    if copy is None:
        notes.append("no footer copy at offset 0")
    elif end_footer is not None and not footer_copy_ok:
        notes.append("the footer copy at offset 0 differs from the footer at the end")

    parent: Disk | None = None
    parent_chain: tuple[str, ...] = ()
    if disk_type == "differencing":
        parent, parent_path = _open_vhd_parent(path, file, header, max_chain, chain, allowed)
        parent_chain = (_where(parent_path), *parent.info.parent_chain)
        expected = _vhd_uuid(header[40:56])
        if parent.info.unique_id != expected:
            notes.append(
                f"parent UUID mismatch: the header expects {expected}, {parent_path.name} has {parent.info.unique_id}"
            )
        if parent.size != current_size:
            notes.append(f"parent {parent_path.name} is {parent.size:#x} bytes, this disk {current_size:#x}")
        notes.extend(f"parent {parent_path.name}: {n}" for n in parent.info.notes)
    try:
        return _VhdSparseDisk(
            file,
            info(
                block_size=block_size,
                footer_copy_ok=footer_copy_ok,
                parent_chain=parent_chain,
                notes=tuple(notes),
            ),
            bat,
            block_size,
            data_end,
            parent,
        )
    except BaseException:
        if parent is not None:
            parent.close()
        raise


_LOCATOR_CODES = {b"W2ru": "relative", b"Wi2r": "relative", b"W2ku": "absolute", b"Wi2k": "absolute", b"MacX": "url"}
_WINDOWS_ABS = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")


def _parent_candidates(path: Path, file: FileSource, header: bytes) -> tuple[list[Path], list[str], list[str]]:
    """Candidate parent paths in the contract's order (relative locators, absolute locators, the header's
    parent name next to the child, the absolute locator's file name next to the child), the strings shown
    for them, and notes about locators that could not be used."""
    relative: list[str] = []
    absolute: list[str] = []
    notes: list[str] = []
    for i in range(8):
        entry = header[576 + 24 * i : 600 + 24 * i]
        code = entry[:4]
        if code == b"\x00\x00\x00\x00":
            continue
        kind = _LOCATOR_CODES.get(code)
        if kind is None:
            notes.append(f"parent locator {i} has unknown platform code {code!r}")
            continue
        length = _u32(entry, 8)
        offset = _u64(entry, 16)
        if length == 0:
            continue
        if length > _MAX_LOCATOR or offset + length > file.size:
            notes.append(
                f"parent locator {i} ({code.decode('latin-1')}) at offset {offset:#x}, {length} bytes, lies outside "
                f"the file (size {file.size:#x}) or is too long"
            )
            continue
        raw = file.read_at(offset, length)
        text = raw.decode("utf-16-le", "replace") if code in (b"W2ru", b"W2ku") else raw.decode("utf-8", "replace")
        text = text.split("\x00", 1)[0].strip()
        if not text:
            continue
        if kind == "url":
            try:
                parsed = urlparse(text)
            except ValueError:  # "Invalid IPv6 URL" and similar: a damaged locator, not a crash
                notes.append(f"parent locator {i} (MacX) is not a usable URL")
                continue
            text = unquote(parsed.path) if parsed.scheme in ("file", "") else ""
            if text:
                absolute.append(text)
        elif kind == "relative":
            relative.append(text)
        else:
            absolute.append(text)
    name = header[64:576].decode("utf-16-be", "replace").split("\x00", 1)[0].strip()
    candidates, shown = _candidate_paths(path, relative, absolute, [name] if name else [])
    return candidates, shown, notes


def _candidate_paths(
    path: Path, relative: list[str], absolute: list[str], names: list[str]
) -> tuple[list[Path], list[str]]:
    """Parent candidates in the contract's order: relative locators (from the child's directory), absolute
    locators, the recorded parent names next to the child, the absolute locators' file names next to the
    child; and the strings shown for them (Windows absolute paths are shown as not usable here)."""
    if blob.registered_label(path) is not None:
        return _blob_candidates(path, relative, absolute, names)
    child_dir = path.absolute().parent
    sources: dict[Path, list[str]] = {}
    unusable: list[str] = []

    def add(p: Path, source: str) -> None:
        p = Path(os.path.normpath(p))
        if source not in sources.setdefault(p, []):
            sources[p].append(source)

    for rel in relative:
        add(child_dir / rel.replace("\\", "/"), "relative locator")
    for ab in absolute:
        if os.sep == "/" and _WINDOWS_ABS.match(ab):
            unusable.append(f"{ab} (absolute Windows locator, not usable here)")
        else:
            add(Path(ab), "absolute locator")
    for name in names:
        base = re.split(r"[\\/]", name)[-1]
        if base:
            add(child_dir / base, "parent name in the header")
    for ab in absolute:
        base = re.split(r"[\\/]", ab)[-1]
        if base:
            add(child_dir / base, "absolute locator's file name next to the child")
    shown = [f"{p} ({', '.join(src)})" for p, src in sources.items()] + unusable
    return list(sources), shown


def _where(path: Path) -> str:
    """A parent as shown (``ContainerInfo.parent_chain``, messages): its absolute path, or its URL without query."""
    return blob.registered_label(path) or os.path.abspath(path)


def _blob_candidates(
    path: Path, relative: list[str], absolute: list[str], names: list[str]
) -> tuple[list[Path], list[str]]:
    """:func:`_candidate_paths` for a child in blob storage: the same order, each name a blob in the child's own
    container (relative to the child's folder there), read with the child's SAS or credential. Absolute locators
    are not blob names: only their file name next to the child is tried. Names leading out of the container
    are shown, never requested."""
    sources: dict[Path, list[str]] = {}
    labels: dict[Path, str] = {}
    unusable: list[str] = []

    def add(name: str, source: str) -> None:
        found = blob.sibling(path, name)
        if isinstance(found, str):
            unusable.append(f"{name} ({source}) [not opened: {found}]")
            return
        placeholder, label = found
        labels[placeholder] = label
        if source not in sources.setdefault(placeholder, []):
            sources[placeholder].append(source)

    for rel in relative:
        add(rel, "relative locator")
    for name in names:
        base = re.split(r"[\\/]", name)[-1]
        if base:
            add(base, "parent name in the header")
    for ab in absolute:
        base = re.split(r"[\\/]", ab)[-1]
        if base:
            add(base, "absolute locator's file name next to the child")
    shown = [f"{labels[p]} ({', '.join(src)})" for p, src in sources.items()] + unusable
    return list(sources), shown


def _probe_blob_parent(candidate: Path) -> tuple[FileSource | None, str | None]:
    """(the blob, open, None) when the candidate blob exists, is readable and holds VHD/VHDX bytes; else
    (None, why not). Its name must end .vhd/.vhdx like a local parent's. The open blob is the one the parent is
    then read from (its properties, page list and first blocks are not fetched twice)."""
    if candidate.suffix.lower() not in _PARENT_SUFFIXES:
        return None, "not opened: not a .vhd or .vhdx file name"
    try:
        probe = open_file(candidate)
    except Unreadable as exc:
        label = blob.registered_label(candidate) or ""
        problem = exc.problem.removeprefix(f"{label}: ")
        return None, problem
    try:
        if _has_vhd_bytes(probe):
            return probe, None
        refusal = "not opened: not a VHD or VHDX file (no 'conectix' footer, no 'vhdxfile' identifier)"
    except Unreadable as exc:
        refusal = exc.problem.removeprefix(f"{probe.label}: ")
    except BaseException:
        probe.close()
        raise
    probe.close()
    return None, refusal


def _stat_regular(candidate: Path) -> tuple[os.stat_result | None, str | None]:
    """The candidate's stat when it is a regular file, else (None, why not when it was not plain absence).
    Names come from the untrusted file: every OSError (ENAMETOOLONG, ELOOP, EACCES, EIO...) and ValueError
    (an embedded NUL) is an answer here, never an exception."""
    try:
        st = os.stat(candidate)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot be checked: {exc.strerror or type(exc).__name__}"
    except ValueError:
        return None, "cannot be checked: not a valid path"
    if not stat.S_ISREG(st.st_mode):
        return None, None
    return st, None


#: File names a parent may have: a differencing disk's parent is a (Hyper-V "a") VHD or VHDX, nothing else.
_PARENT_SUFFIXES = (".vhd", ".avhd", ".vhdx", ".avhdx")
_OUTSIDE = "not opened: outside the allowed directories"


@dataclass(frozen=True)
class _Allowed:
    """Where parents may be opened from: the child's own directory (that directory only) and the directories
    the user allows (``parent_dirs``, with everything under them). Each as written and with links resolved."""

    trees: tuple[str, ...] = ()

    @classmethod
    def of(cls, parent_dirs: Iterable[str | os.PathLike[str]]) -> _Allowed:
        trees: list[str] = []
        for d in parent_dirs:
            for form in (os.path.normpath(os.path.abspath(d)), os.path.realpath(d)):
                if form not in trees:
                    trees.append(form)
        return cls(tuple(trees))

    def admits(self, candidate: str, child_dirs: tuple[str, ...]) -> bool:
        if os.path.dirname(candidate) in child_dirs:
            return True
        return any(candidate.startswith(tree.rstrip(os.sep) + os.sep) for tree in self.trees)


def _parent_refusal(candidate: Path, child: Path, allowed: _Allowed) -> str | None:
    """Why a parent candidate is not opened, or None. Decided on the name first and on the file system
    only for names inside the allowed directories, so a locator naming any other host file (``/etc/passwd``,
    another user's disk) learns nothing about it: it is never stat'ed, opened or described."""
    lexical_dir = os.path.normpath(os.path.abspath(child.parent))
    try:
        child_dirs = (lexical_dir, os.path.realpath(lexical_dir))
        if not allowed.admits(os.path.normpath(os.path.abspath(candidate)), child_dirs):
            return _OUTSIDE
        if candidate.suffix.lower() not in _PARENT_SUFFIXES:
            return "not opened: not a .vhd or .vhdx file name"
        if not allowed.admits(os.path.realpath(candidate), child_dirs):  # a link out of the allowed directories
            return _OUTSIDE
    except (OSError, ValueError):
        return "not opened: cannot be checked"
    return None


def _looks_like_vhd(candidate: Path) -> bool:
    """The candidate's bytes say VHD ('conectix' at the end, or at 0 for a truncated dynamic disk) or VHDX
    ('vhdxfile' at 0). Only called for candidates inside the allowed directories."""
    try:
        probe = FileSource(candidate)
    except Unreadable:
        return False
    try:
        return _has_vhd_bytes(probe)
    finally:
        probe.close()


def _has_vhd_bytes(probe: FileSource) -> bool:
    """'conectix' at the end (or at 0 for a truncated dynamic disk) or 'vhdxfile' at 0."""
    head = probe.read_at(0, 8)
    tail = probe.read_at(probe.size - SECTOR, 8) if probe.size >= SECTOR else b""
    return head in (_VHD_COOKIE, _VHDX_SIGNATURE) or tail == _VHD_COOKIE


def _open_vhd_parent(
    path: Path, file: FileSource, header: bytes, max_chain: int, chain: tuple[_ChainLink, ...], allowed: _Allowed
) -> tuple[Disk, Path]:
    candidates, shown, notes = _parent_candidates(path, file, header)

    def accept(parent: Disk, found: Path) -> str | None:
        if parent.info.format != "vhd":
            raise Unreadable(path, f"parent {_where(found)} is a {parent.info.format} image, not a VHD")
        return None

    return _open_parent(path, candidates, shown, notes, max_chain, chain, allowed, accept)


def _open_parent(
    path: Path,
    candidates: list[Path],
    shown: list[str],
    notes: list[str],
    max_chain: int,
    chain: tuple[_ChainLink, ...],
    allowed: _Allowed,
    accept: Callable[[Disk, Path], str | None],
) -> tuple[Disk, Path]:
    """Open the first candidate that is allowed, a regular file with VHD/VHDX bytes, and that ``accept``
    takes (it returns why not, or None; a VHDX parent whose DataWriteGuid is not the child's parent_linkage
    is not the parent, and the search goes on). Unreadable naming every path tried when none is, and on a
    cycle or a chain deeper than ``max_chain``."""
    outside = False
    # A child in blob storage has blobs of its container as candidates (harness.readers.image.blob.sibling). Asked
    # of the child only: a candidate from a locator is never looked up on the file system before it is allowed.
    child_url = blob.registered_label(path)
    for n, cand in enumerate(candidates):
        key: tuple[int, int] | None = None
        probe: FileSource | None = None  # a parent blob, opened once: by the probe, then read by _open
        if child_url is not None:
            probe, refusal = _probe_blob_parent(cand)
            key = probe.identity if probe is not None else None
        else:
            refusal = _parent_refusal(cand, path, allowed)
            st: os.stat_result | None = None
            if refusal is None:
                st, refusal = _stat_regular(cand)
                if st is not None and not _looks_like_vhd(cand):
                    st, refusal = (
                        None,
                        "not opened: not a VHD or VHDX file (no 'conectix' footer, no 'vhdxfile' identifier)",
                    )
            if st is not None:
                key = (st.st_dev, st.st_ino)
        if key is not None:
            names = [link.name for link in chain]
            problem = None
            if any(link.key == key for link in chain):
                problem = "cyclic differencing chain: " + " → ".join([*names, cand.name])
            elif len(chain) > max_chain:
                problem = f"differencing chain longer than {max_chain} parents: " + " → ".join([*names, cand.name, "…"])
            if problem is not None:
                if probe is not None:
                    probe.close()
                raise Unreadable(path, problem)
            parent = _open(cand, max_chain=max_chain, chain=chain, allowed=allowed, file=probe)
            try:
                refusal = accept(parent, cand)
            except BaseException:
                parent.close()
                raise
            if refusal is None:
                return parent, cand
            parent.close()
        outside = outside or refusal == _OUTSIDE
        if refusal:
            shown[n] += f" [{refusal}]"
    detail = "; ".join(shown) if shown else "no parent locator or parent name in the header"
    extra = f" ({'; '.join(notes)})" if notes else ""
    if child_url is not None:  # a child in blob storage: named by its URL (without query), as its other errors are
        raise Unreadable(
            path, f"{child_url}: parent of differencing disk not found in its container; tried: {detail}{extra}"
        )
    hint = (
        "; a parent is opened only from the child's own directory or a directory allowed with --vmr-image-parent-dir"
        if outside
        else ""
    )
    raise Unreadable(path, f"parent of differencing disk not found; tried: {detail}{extra}{hint}")


# --------------------------------------------------------------------------------------------------
# VHDX

_REGION_BAT = uuid.UUID("2dc27766-f623-4200-9d64-115e9bfd4a08")
_REGION_METADATA = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e")
_META_FILE_PARAMETERS = uuid.UUID("caa16737-fa36-4d43-b3b6-33f0aa44e76b")
_META_VIRTUAL_DISK_SIZE = uuid.UUID("2fa54224-cd1b-4876-b211-5dbed83bf4b8")
_META_PAGE83 = uuid.UUID("beca12ab-b2e6-4523-93ef-c309e000c746")
_META_LOGICAL_SECTOR = uuid.UUID("8141bf1d-a96f-4709-ba47-f233a8faab5f")
_META_PHYSICAL_SECTOR = uuid.UUID("cda348c7-445d-4471-9cc9-e9885251c556")
_META_PARENT_LOCATOR = uuid.UUID("a8d35f2d-b30b-454d-abf7-d3d84834ab0c")
_VHDX_PARENT_LOCATOR_TYPE = uuid.UUID("b04aefb7-d19e-4a81-b789-25b8e9445913")
_META_NAMES = {
    _META_FILE_PARAMETERS: "file parameters",
    _META_VIRTUAL_DISK_SIZE: "virtual disk size",
    _META_PAGE83: "page 83 data",
    _META_LOGICAL_SECTOR: "logical sector size",
    _META_PHYSICAL_SECTOR: "physical sector size",
    _META_PARENT_LOCATOR: "parent locator",
}
_VHDX_HEADERS = ((1, 64 * KIB), (2, 128 * KIB))
_VHDX_REGION_TABLES = ((1, 192 * KIB), (2, 256 * KIB))


def _le32(data: bytes, off: int) -> int:
    return int.from_bytes(data[off : off + 4], "little")


def _le64(data: bytes, off: int) -> int:
    return int.from_bytes(data[off : off + 8], "little")


def _with_zero_checksum(data: bytes) -> bytes:
    return data[:4] + b"\x00\x00\x00\x00" + data[8:]


class _VhdxDisk(_SparseDisk):
    """Fixed, dynamic and differencing VHDX. Payload block N's BAT entry is at N + N // chunk_ratio: a sector
    bitmap entry follows every ``chunk_ratio`` payload entries. In a differencing disk, blocks not in the file
    read through to the parent, and a partially present block's sector bitmap (one bit per logical sector,
    least significant bit first) says sector by sector whether the child or the parent holds the data."""

    def __init__(
        self,
        file: FileSource,
        info: ContainerInfo,
        bat: _LazyTable,
        block_size: int,
        chunk_ratio: int,
        parent: Disk | None = None,
    ) -> None:
        super().__init__(file, info, parent)
        self._bat = bat
        self._block_size = block_size
        self._chunk_ratio = chunk_ratio
        self._sector = info.logical_sector_size or SECTOR
        self._runs = _RunCache()

    def _block_offset(self, index: int, block: int, what: str, needed: int) -> int:
        entry = self._bat[index]
        base = (entry >> 20) * MIB
        if base < MIB:
            raise Unreadable(
                self._file.path,
                f"BAT entry {index} ({what}) points into the VHDX header area (offset {base:#x})",
                location=f"BAT entry {index}",
            )
        if base + needed > self._file.size:
            raise Unreadable(
                self._file.path,
                f"BAT entry {index} ({what}) points past the end of the file (block at offset {base:#x} "
                f"ends at {base + needed:#x} > file size {self._file.size:#x})",
                location=f"BAT entry {index}",
            )
        return base

    def _segments(self, block: int, start: int, end: int) -> Iterable[tuple[int, int, int]]:
        cr = self._chunk_ratio
        index = block + block // cr
        state = self._bat[index] & 7
        if state == 2:  # PAYLOAD_BLOCK_ZERO: zeros, in a differencing disk too
            return ((_ZERO, -1, end - start),)
        if state in (0, 1, 3):  # not present, undefined, unmapped: the parent's data, or zeros without one
            return ((_ZERO if self._parent is None else _PARENT, -1, end - start),)
        if state not in (6, 7):
            raise Unreadable(
                self._file.path,
                f"BAT entry {index} (block {block}) has invalid state {state}",
                location=f"BAT entry {index}",
            )
        if state == 7 and self._parent is None:
            raise Unreadable(
                self._file.path,
                f"BAT entry {index} (block {block}) is partially present in a VHDX without a parent",
                location=f"BAT entry {index}",
            )
        needed = min(self._block_size, self.size - block * self._block_size)
        base = self._block_offset(index, block, f"block {block}", needed)
        if state == 6:
            return ((_FILE, base + start, end - start),)
        cached = self._runs.get(block)
        if cached is None:
            chunk = block // cr
            sb_index = chunk * (cr + 1) + cr
            sb_state = self._bat[sb_index] & 7
            if sb_state != 6:
                raise Unreadable(
                    self._file.path,
                    f"BAT entry {index} (block {block}) is partially present but the sector bitmap entry of its "
                    f"chunk (BAT entry {sb_index}) is in state {sb_state}, not present",
                    location=f"BAT entry {sb_index}",
                )
            sb_base = self._block_offset(sb_index, block, f"sector bitmap of chunk {chunk}", MIB)
            per_block = self._block_size // self._sector // 8
            bitmap = self._file.read_at(sb_base + (block % cr) * per_block, per_block)
            cached = self._runs.put(block, bitmap_runs(bitmap, _ceil_div(needed, self._sector), msb_first=False))
        return _bitmap_segments(cached[0], cached[1], base, self._sector, start, end)


def _vhdx_header_problem(raw: bytes) -> str | None:
    if raw[:4] != b"head":
        return "signature ('head') missing"
    stored, computed = _le32(raw, 4), crc32c(_with_zero_checksum(raw))
    if stored != computed:
        return f"checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
    version = int.from_bytes(raw[66:68], "little")
    if version != 1:
        return f"unsupported version {version}"
    return None


def _vhdx_region_table(raw: bytes, fs: int) -> tuple[dict[uuid.UUID, tuple[int, int]], str | None]:
    """Parse a region table; ({guid: (offset, length)}, problem or None)."""
    if raw[:4] != b"regi":
        return {}, "signature ('regi') missing"
    stored, computed = _le32(raw, 4), crc32c(_with_zero_checksum(raw))
    if stored != computed:
        return {}, f"checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
    count = _le32(raw, 8)
    if count > _VHDX_MAX_ENTRIES:
        return {}, f"entry count {count} exceeds {_VHDX_MAX_ENTRIES}"
    regions: dict[uuid.UUID, tuple[int, int]] = {}
    for i in range(count):
        e = raw[16 + 32 * i : 48 + 32 * i]
        guid = uuid.UUID(bytes_le=e[:16])
        offset, length, required = _le64(e, 16), _le32(e, 24), _le32(e, 28) & 1
        if guid not in (_REGION_BAT, _REGION_METADATA):
            if required:
                return {}, f"entry {i} is an unknown required region {guid}"
            continue
        if guid in regions:
            return {}, f"entry {i} repeats region {guid}"
        if length == 0 or offset < 320 * KIB or offset + length > fs:
            return (
                {},
                f"entry {i} ({guid}) at offset {offset:#x}, {length:#x} bytes, lies outside the file (size {fs:#x})",
            )
        regions[guid] = (offset, length)
    for guid, name in ((_REGION_BAT, "BAT"), (_REGION_METADATA, "metadata")):
        if guid not in regions:
            return {}, f"no {name} region"
    return regions, None


def _open_vhdx(path: Path, file: FileSource, max_chain: int, chain: tuple[_ChainLink, ...], allowed: _Allowed) -> Disk:
    fs = file.size
    if fs < 320 * KIB:
        raise Unreadable(path, f"file too small for a VHDX ({fs:#x} bytes; headers and region tables need 0x50000)")
    notes: list[str] = []
    creator = file.read_at(8, 512).decode("utf-16-le", "replace").split("\x00", 1)[0]

    headers: list[tuple[int, int, bytes]] = []
    problems: dict[int, str] = {}
    for n, off in _VHDX_HEADERS:
        raw = file.read_at(off, 4 * KIB)
        problem = _vhdx_header_problem(raw)
        if problem is None:
            headers.append((_le64(raw, 8), n, raw))
        else:
            problems[n] = problem
    if not headers:
        raise Unreadable(
            path,
            f"both VHDX headers are invalid: header 1 (at 0x10000) {problems[1]}; header 2 (at 0x20000) {problems[2]}",
            location="VHDX headers",
        )
    _, used, header = max(headers)
    for n, problem in problems.items():
        notes.append(f"VHDX header {n} {problem}, header {used} used")
    if any(header[48:64]):
        notes.append(
            "VHDX log not replayed (log GUID set: the file was not closed cleanly; recent writes may be missing)"
        )
    data_write_guid = str(uuid.UUID(bytes_le=header[32:48]))

    regions: dict[uuid.UUID, tuple[int, int]] | None = None
    table_problems: list[str] = []
    for n, off in _VHDX_REGION_TABLES:
        found, problem = _vhdx_region_table(file.read_at(off, 64 * KIB), fs)
        if problem is None:
            regions = found
            if table_problems:
                notes.append(f"VHDX {table_problems[0]}, region table {n} used")
            break
        table_problems.append(f"region table {n} (at {off:#x}) {problem}")
    if regions is None:
        raise Unreadable(
            path, "both VHDX region tables are invalid: " + "; ".join(table_problems), location="region table"
        )

    meta_off, meta_len = regions[_REGION_METADATA]
    mloc = f"metadata region at {meta_off:#x}"
    table = file.read_at(meta_off, min(meta_len, 64 * KIB))
    if table[:8] != b"metadata":
        raise Unreadable(path, f"no metadata table ('metadata') at offset {meta_off:#x}", location=mloc)
    count = int.from_bytes(table[10:12], "little")
    if count > _VHDX_MAX_ENTRIES or 32 + 32 * count > len(table):
        raise Unreadable(path, f"metadata table entry count {count} is too large", location=mloc)
    items: dict[uuid.UUID, bytes] = {}
    for i in range(count):
        e = table[32 + 32 * i : 64 + 32 * i]
        guid = uuid.UUID(bytes_le=e[:16])
        offset, length, flags = _le32(e, 16), _le32(e, 20), _le32(e, 24)
        if guid not in _META_NAMES:
            if flags & 4:
                raise Unreadable(path, f"unknown required metadata item {guid}", location=mloc)
            continue
        if length > 64 * KIB or offset + length > meta_len or (length and offset < 32):
            raise Unreadable(
                path,
                f"metadata item '{_META_NAMES[guid]}' (offset {offset:#x}, {length} bytes) lies outside the metadata "
                f"region ({meta_len:#x} bytes at {meta_off:#x})",
                location=mloc,
            )
        items[guid] = file.read_at(meta_off + offset, length)

    def item(guid: uuid.UUID, size: int) -> bytes:
        data = items.get(guid)
        if data is None:
            raise Unreadable(path, f"metadata item '{_META_NAMES[guid]}' missing", location=mloc)
        if len(data) < size:
            raise Unreadable(
                path, f"metadata item '{_META_NAMES[guid]}' is {len(data)} bytes, expected {size}", location=mloc
            )
        return data

    params = item(_META_FILE_PARAMETERS, 8)
    block_size, flags = _le32(params, 0), _le32(params, 4)
    differencing = bool(flags & 2)
    if differencing and _META_PARENT_LOCATOR not in items:
        raise Unreadable(path, "differencing VHDX (HasParent set) without a parent locator", location=mloc)
    if not differencing and _META_PARENT_LOCATOR in items:
        notes.append("VHDX parent locator present but HasParent not set: read as a disk without a parent")
    if block_size < MIB or block_size > 256 * MIB or block_size & (block_size - 1):
        raise Unreadable(
            path, f"invalid VHDX block size {block_size:#x} (must be a power of two, 1–256 MiB)", location=mloc
        )
    virtual_size = _le64(item(_META_VIRTUAL_DISK_SIZE, 8), 0)
    lss = _le32(item(_META_LOGICAL_SECTOR, 4), 0)
    if lss not in (512, 4096):
        raise Unreadable(path, f"invalid VHDX logical sector size {lss}", location=mloc)
    if _META_PHYSICAL_SECTOR in items:
        pss = _le32(item(_META_PHYSICAL_SECTOR, 4), 0)
        if pss not in (512, 4096):
            notes.append(f"VHDX physical sector size {pss} (expected 512 or 4096)")
    if virtual_size > _VHDX_MAX_SIZE:
        raise Unreadable(path, f"VHDX virtual disk size {virtual_size:#x} exceeds 64 TiB", location=mloc)
    if virtual_size % lss:
        notes.append(f"VHDX virtual size {virtual_size} is not a multiple of the logical sector size {lss}")

    chunk_ratio = (1 << 23) * lss // block_size
    data_blocks = _ceil_div(virtual_size, block_size)
    if differencing:  # the last entry is the sector bitmap of the last chunk (MS-VHDX 2.5)
        total = _ceil_div(data_blocks, chunk_ratio) * (chunk_ratio + 1)
    else:
        total = data_blocks + (data_blocks - 1) // chunk_ratio if data_blocks else 0
    bat_off, bat_len = regions[_REGION_BAT]
    if 8 * total > bat_len:
        raise Unreadable(
            path,
            f"BAT region ({bat_len:#x} bytes at {bat_off:#x}) holds {bat_len // 8} entries but the disk needs {total}",
            location=f"BAT region at {bat_off:#x}",
        )
    bat = _LazyTable(file, bat_off, total, "Q", big_endian=False)
    disk_type = "differencing" if differencing else "fixed" if flags & 1 else "dynamic"
    parent: Disk | None = None
    parent_chain: tuple[str, ...] = ()
    if differencing:
        links = _vhdx_parent_locator(path, items[_META_PARENT_LOCATOR], mloc)
        parent, parent_path = _open_vhdx_parent(path, links, max_chain, chain, allowed)
        parent_chain = (_where(parent_path), *parent.info.parent_chain)
        if parent.size != virtual_size:
            notes.append(f"parent {parent_path.name} is {parent.size:#x} bytes, this disk {virtual_size:#x}")
        if parent.info.logical_sector_size != lss:
            notes.append(
                f"parent {parent_path.name} has {parent.info.logical_sector_size}-byte logical sectors, this disk {lss}"
            )
        notes.extend(f"parent {parent_path.name}: {n}" for n in parent.info.notes)
    info = ContainerInfo(
        path=os.path.abspath(path),
        format="vhdx",
        disk_type=disk_type,
        virtual_size=virtual_size,
        file_size=fs,
        footer_cookie_ok=None,
        footer_checksum_ok=None,
        footer_copy_ok=None,
        creator_application=creator or None,
        block_size=block_size,
        logical_sector_size=lss,
        unique_id=data_write_guid,
        parent_chain=parent_chain,
        notes=tuple(notes),
    )
    return _VhdxDisk(file, info, bat, block_size, chunk_ratio, parent)


@dataclass(frozen=True)
class _VhdxParentLinks:
    """What a VHDX parent locator says: the DataWriteGuids the parent may have, and where to look."""

    linkage: tuple[uuid.UUID, ...]
    relative: list[str]
    absolute: list[str]


def _vhdx_parent_locator(path: Path, item: bytes, mloc: str) -> _VhdxParentLinks:
    """Parse the parent locator metadata item (MS-VHDX 2.6.2.6): a 20-byte header (LocatorType, reserved,
    KeyValueCount), ``KeyValueCount`` 12-byte entries (key offset, value offset, key length, value length;
    offsets from the start of the item), then UTF-16LE keys and values. Everything is checked against the
    item's own length (at most 64 KiB, so at most ~5,000 entries)."""
    loc = f"{mloc}, parent locator"
    if len(item) < 20:
        raise Unreadable(
            path, f"VHDX parent locator is {len(item)} bytes, shorter than its 20-byte header", location=loc
        )
    kind = uuid.UUID(bytes_le=item[:16])
    if kind != _VHDX_PARENT_LOCATOR_TYPE:
        raise Unreadable(path, f"VHDX parent locator has unknown type {kind} (expected the VHDX type)", location=loc)
    count = int.from_bytes(item[18:20], "little")
    if 20 + 12 * count > len(item):
        raise Unreadable(
            path,
            f"VHDX parent locator claims {count} key-value entries but its {len(item)} bytes hold at most "
            f"{(len(item) - 20) // 12}",
            location=loc,
        )
    values: dict[str, str] = {}

    def text(i: int, what: str, off: int, length: int) -> str:
        if length == 0 or length % 2 or off < 20 + 12 * count or off + length > len(item):
            raise Unreadable(
                path,
                f"VHDX parent locator entry {i}: {what} at offset {off}, {length} bytes, lies outside the locator "
                f"({len(item)} bytes) or is not whole UTF-16 characters",
                location=loc,
            )
        try:
            return item[off : off + length].decode("utf-16-le")
        except UnicodeDecodeError:
            raise Unreadable(path, f"VHDX parent locator entry {i}: {what} is not valid UTF-16", location=loc) from None

    for i in range(count):
        e = item[20 + 12 * i : 32 + 12 * i]
        key = text(i, "key", _le32(e, 0), int.from_bytes(e[8:10], "little"))
        value = text(i, f"value of {key!r}", _le32(e, 4), int.from_bytes(e[10:12], "little"))
        if key in values:
            raise Unreadable(path, f"VHDX parent locator entry {i} repeats the key {key!r}", location=loc)
        values[key] = value
    linkage: list[uuid.UUID] = []
    for key in ("parent_linkage", "parent_linkage2"):
        if key in values:
            try:
                linkage.append(uuid.UUID(values[key].strip()))
            except ValueError:
                raise Unreadable(
                    path, f"VHDX parent locator {key} {values[key][:80]!r} is not a GUID", location=loc
                ) from None
    if not linkage or "parent_linkage" not in values:
        raise Unreadable(path, "VHDX parent locator has no parent_linkage", location=loc)
    relative = [values["relative_path"]] if values.get("relative_path") else []
    absolute = [values[k] for k in ("absolute_win32_path", "volume_path") if values.get(k)]
    return _VhdxParentLinks(tuple(linkage), relative, absolute)


def _open_vhdx_parent(
    path: Path, links: _VhdxParentLinks, max_chain: int, chain: tuple[_ChainLink, ...], allowed: _Allowed
) -> tuple[Disk, Path]:
    """The parent named by the locator whose DataWriteGuid is the child's parent_linkage (or parent_linkage2):
    a candidate with another DataWriteGuid is not the parent (changed since the child was made, or another
    disk of the same name) and the search goes on."""
    candidates, shown = _candidate_paths(path, links.relative, links.absolute, [])
    expected = " or ".join(str(g) for g in links.linkage)

    def accept(parent: Disk, found: Path) -> str | None:
        if parent.info.format != "vhdx":
            return f"not the parent: a {parent.info.format} image, a VHDX's parent must be a VHDX"
        if parent.info.unique_id is None or uuid.UUID(parent.info.unique_id) not in links.linkage:
            return f"not the parent: its DataWriteGuid {parent.info.unique_id} is not the parent_linkage {expected}"
        return None

    return _open_parent(path, candidates, shown, [], max_chain, chain, allowed, accept)


# --------------------------------------------------------------------------------------------------


def open_disk(path: Path | str, *, max_chain: int = 16, parent_dirs: Iterable[str | os.PathLike[str]] = ()) -> Disk:
    """Open an image read-only, choosing the container by content (not by name). Differencing VHD/VHDX open
    their parents (at most ``max_chain`` of them), and only parents named .vhd/.vhdx, with VHD/VHDX bytes,
    in the child's own directory or under one of ``parent_dirs``; a differencing VHDX's parent must also carry the
    DataWriteGuid its parent_linkage names. Unreadable on anything malformed."""
    return _open(Path(path), max_chain=max_chain, chain=(), allowed=_Allowed.of(parent_dirs))


def _open(
    path: Path, *, max_chain: int, chain: tuple[_ChainLink, ...], allowed: _Allowed, file: FileSource | None = None
) -> Disk:
    """:func:`open_disk` of ``path``, read from ``file`` when it is already open (the disk then owns it)."""
    if file is None:
        file = open_file(path)  # a registered blob image's placeholder opens the blob
    try:
        link = _ChainLink(file.identity, path.name)
        fs = file.size
        head = file.read_at(0, 8)
        found = detect(file)
        if found.kind == "vhdx":
            return _open_vhdx(path, file, max_chain, (*chain, link), allowed)
        if found.kind == "vhd":
            stray = None if head == _VHD_COOKIE else _stray_footer(path, file)
            if stray is None:
                return _open_vhd(path, file, head, max_chain, (*chain, link), allowed)
            return _raw(path, file, stray[0], stray[1])
        if found.foreign:
            raise ForeignImage(path, found)
        suffix = path.suffix.lower()
        verdict = not_an_image(found, fs)
        seen = f" ({verdict})" if verdict else f" (the data is {found.name})"
        if suffix in (".vhd", ".avhd") and not found.non_windows:
            # The name breaks the tie: a partitioned disk or NTFS volume without a footer is a truncated VHD.
            raise Unreadable(path, "no VHD footer ('conectix') in the last 512 bytes: truncated or not a VHD" + seen)
        if suffix in (".vhdx", ".avhdx") and not found.non_windows:
            raise Unreadable(path, "no VHDX file identifier ('vhdxfile') at offset 0: not a VHDX" + seen)
        if found.kind == "empty":
            raise Unreadable(path, verdict or "empty file")
        if fs % SECTOR:
            raise Unreadable(path, f"raw image size {fs} is not a multiple of 512 bytes ({found.name})")
        # Zeros or unknown bytes still open as a raw disk (the partition reader then says what is missing and
        # the extractor names the verdict with not_an_image): the disk bytes themselves are readable.
        return _raw(path, file, fs, found.name if found.non_windows else None)
    except BaseException:
        file.close()
        raise


def _stray_footer(path: Path, file: FileSource) -> tuple[int, str] | None:
    """A VHD footer at the end of a file that is otherwise a bare NTFS volume or a raw disk: (the data length,
    what was found in words), or None when the footer belongs to the data (a VHD, possibly truncated).

    Stray when the footer's disk size disagrees with the data before it while the volume or partition table
    at offset 0 fits that data: an NTFS volume (or a partition table) copied out of a fixed VHD together with
    the footer, or a footer appended to the wrong file. A partitioned disk whose footer claims more than is
    there and whose name is ``.vhd`` stays a truncated fixed VHD (the name breaks that tie)."""
    end = footer_offset(file)
    if end is None or end < SECTOR:
        return None
    footer = file.read_at(end, SECTOR)
    data = SliceSource(file, 0, end, file.label)
    content = detect_volume(data)
    if content is None or content.kind not in ("ntfs", "partitioned"):
        return None
    extent = volume_extent(data)
    if extent is None or extent > end:
        return None  # the volume does not fit the data: a truncated VHD, as the footer says
    current = _u64(footer, 48)
    type_code = _u32(footer, 60)
    if type_code == 2:
        if current == end or (current < end and extent <= current):
            return None
        if current > end and content.kind != "ntfs" and path.suffix.lower() in (".vhd", ".avhd"):
            return None
    elif type_code in (3, 4):
        header_off = _u64(footer, 16)
        if header_off + 8 <= file.size and file.read_at(header_off, 8) == _VHD_SPARSE_COOKIE:
            return None
    what = "a bare NTFS volume" if content.kind == "ntfs" else content.name
    kind = _VHD_TYPES.get(type_code, f"type {type_code}")
    spans = "the volume spans" if content.kind == "ntfs" else "its partitions end at"
    return end, (
        f"{what} with a stray {kind} VHD footer at its end (the footer gives a disk of {current:,} bytes; the file "
        f"holds {end:,} bytes before it and {spans} {extent:,})"
    )


def _raw(path: Path, file: FileSource, size: int, detected: str | None) -> Disk:
    """A raw disk: the file's first ``size`` bytes (all of it, or the data before a stray footer)."""
    info = ContainerInfo(
        path=os.path.abspath(path),
        format="raw",
        disk_type=None,
        virtual_size=size,
        file_size=file.size,
        footer_cookie_ok=None,
        footer_checksum_ok=None,
        footer_copy_ok=None,
        creator_application=None,
        block_size=None,
        logical_sector_size=SECTOR,
        unique_id=None,
        detected=detected,
    )
    return _FlatDisk(file, info)
