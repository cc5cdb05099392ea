"""Write VHD differencing disks and damaged image copies, for tests and for users reproducing a report.

Why this exists: qemu-img can create fixed and dynamic VHDs but not differencing ones, and differencing
chains (relative/absolute locators, missing or cyclic parents, UUID mismatches) are exactly what the image
reader must get right. The writer is deliberately independent of ``harness.readers.image.container``
(its own layout and checksum code), and the tests check its output with libvhdi, a reader we did not
write, so the two cannot share a misreading of the format.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

__all__ = ["corrupt_copy", "relative_locator", "sector_writes", "vhd_checksum", "write_differencing_vhd"]

SECTOR = 512
_VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z
_NO_WRITES: Mapping[int, bytes] = MappingProxyType({})
_LOCATORS = ("relative", "absolute", "both", "none")


def vhd_checksum(data: bytes | bytearray, field: int) -> int:
    """VHD checksum: one's complement of the byte sum with the 4-byte field at ``field`` counted as zero.
    Footers keep it at 64, dynamic headers at 36; tests use it to damage a field but keep the sum valid."""
    total = sum(data) - sum(data[field : field + 4])
    return (~total) & 0xFFFFFFFF


def _with_checksum(data: bytearray, field: int) -> bytes:
    data[field : field + 4] = b"\x00\x00\x00\x00"
    data[field : field + 4] = vhd_checksum(data, field).to_bytes(4, "big")
    return bytes(data)


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def sector_writes(writes: Mapping[int, bytes], sector: int, disk_size: int, aligned: str) -> dict[int, bytes]:
    """The sectors ``writes`` (disk offset -> data) puts on a disk, {sector number: its bytes}; later entries win.
    ValueError for a write that is not whole sectors (``aligned`` says what it must be) or lies outside the disk."""
    sectors: dict[int, bytes] = {}
    for offset, data in writes.items():
        if offset % sector or len(data) % sector:
            raise ValueError(f"write at {offset:#x} ({len(data)} bytes) is not {aligned}")
        if offset < 0 or offset + len(data) > disk_size:
            raise ValueError(f"write at {offset:#x} ({len(data)} bytes) lies outside the {disk_size}-byte disk")
        for i in range(0, len(data), sector):
            sectors[(offset + i) // sector] = bytes(data[i : i + sector])
    return sectors


def relative_locator(parent_abs: str, child: Path) -> str:
    """The parent's path relative to the child's directory, as Windows writes it (``.\\parent.vhd``)."""
    relative = os.path.relpath(parent_abs, os.path.dirname(os.path.abspath(child))).replace("/", "\\")
    return relative if relative.startswith("..") else ".\\" + relative


def write_differencing_vhd(
    parent: Path,
    child: Path,
    *,
    writes: Mapping[int, bytes] = _NO_WRITES,
    locator: str = "relative",
    block_size: int = 2 * 1024 * 1024,
    parent_uuid_override: uuid.UUID | bytes | None = None,
    absolute_path_override: str | None = None,
    header_parent_name: str | None = None,
    unique_id: uuid.UUID | None = None,
) -> Path:
    """Write ``child`` as a VHD differencing disk on top of the VHD ``parent`` and return its path.

    ``writes`` maps sector-aligned disk offsets to data (multiples of 512 bytes); later entries win where
    they overlap. Those sectors are stored in the child (bitmap bit set), every other sector reads through
    to the parent. ``locator`` chooses the parent locators: ``relative`` (W2ru, ``.\\parent.vhd``),
    ``absolute`` (W2ku, the parent's absolute path, or ``absolute_path_override``), ``both`` or ``none``
    (only the parent name in the header, ``header_parent_name`` or the parent's file name).
    ``parent_uuid_override`` records a different parent UUID (to test the mismatch note). The parent's
    footer is read before ``child`` is opened, so ``child`` may be the parent's own path (a self-cycle).
    """
    if locator not in _LOCATORS:
        raise ValueError(f"locator must be one of {_LOCATORS}, not {locator!r}")
    if block_size < SECTOR or block_size & (block_size - 1):
        raise ValueError(f"block size {block_size} is not a power of two >= 512")
    parent = Path(parent)
    child = Path(child)
    with open(parent, "rb") as f:
        f.seek(0, os.SEEK_END)
        psize = f.tell()
        if psize < SECTOR:
            raise ValueError(f"{parent} is too small to be a VHD")
        f.seek(psize - SECTOR)
        pfooter = f.read(SECTOR)
    if pfooter[:8] != b"conectix":
        raise ValueError(f"{parent} has no VHD footer")
    disk_size = int.from_bytes(pfooter[48:56], "big")
    geometry = pfooter[56:60]
    parent_uuid: bytes = pfooter[68:84]
    parent_time = pfooter[24:28]
    if parent_uuid_override is not None:
        parent_uuid = (
            parent_uuid_override.bytes if isinstance(parent_uuid_override, uuid.UUID) else bytes(parent_uuid_override)
        )
        if len(parent_uuid) != 16:
            raise ValueError("parent_uuid_override must be 16 bytes")

    # Sectors the child holds: {sector number: 512 bytes}.
    sectors = sector_writes(writes, SECTOR, disk_size, "sector-aligned")

    spb = block_size // SECTOR
    blocks = -(-disk_size // block_size)
    bitmap_size = _round_up(-(-spb // 8), SECTOR)
    bat_offset = 3 * SECTOR
    bat_size = _round_up(4 * blocks, SECTOR)

    # Parent locator payloads.
    parent_abs = os.path.abspath(parent)
    relative = relative_locator(parent_abs, child)
    absolute = absolute_path_override if absolute_path_override is not None else parent_abs
    payloads: list[tuple[bytes, bytes]] = []
    if locator in ("relative", "both"):
        payloads.append((b"W2ru", relative.encode("utf-16-le")))
    if locator in ("absolute", "both"):
        payloads.append((b"W2ku", absolute.encode("utf-16-le")))

    next_free = bat_offset + bat_size
    locator_entries = bytearray(8 * 24)
    locator_data: list[tuple[int, bytes]] = []
    for i, (code, payload) in enumerate(payloads):
        space = _round_up(len(payload), SECTOR)
        entry = code + space.to_bytes(4, "big") + len(payload).to_bytes(4, "big") + bytes(4)
        entry += next_free.to_bytes(8, "big")
        locator_entries[24 * i : 24 * (i + 1)] = entry
        locator_data.append((next_free, payload))
        next_free += space

    # Blocks the child allocates, in order, each as bitmap + data.
    used_blocks = sorted({s // spb for s in sectors})
    bat = [0xFFFFFFFF] * blocks
    block_layout: list[tuple[int, int]] = []
    for b in used_blocks:
        bat[b] = next_free // SECTOR
        block_layout.append((b, next_free))
        next_free += bitmap_size + block_size

    stamp = (int(time.time()) - _VHD_EPOCH).to_bytes(4, "big")
    footer = bytearray(SECTOR)
    footer[0:8] = b"conectix"
    footer[8:12] = (2).to_bytes(4, "big")
    footer[12:16] = (0x00010000).to_bytes(4, "big")
    footer[16:24] = SECTOR.to_bytes(8, "big")
    footer[24:28] = stamp
    footer[28:32] = b"vmrh"
    footer[32:36] = (0x00010000).to_bytes(4, "big")
    footer[36:40] = b"Wi2k"
    footer[40:48] = disk_size.to_bytes(8, "big")
    footer[48:56] = disk_size.to_bytes(8, "big")
    footer[56:60] = geometry
    footer[60:64] = (4).to_bytes(4, "big")
    footer[68:84] = (unique_id or uuid.uuid4()).bytes
    footer_bytes = _with_checksum(footer, 64)

    name = header_parent_name if header_parent_name is not None else os.path.basename(parent_abs)
    header = bytearray(1024)
    header[0:8] = b"cxsparse"
    header[8:16] = b"\xff" * 8
    header[16:24] = bat_offset.to_bytes(8, "big")
    header[24:28] = (0x00010000).to_bytes(4, "big")
    header[28:32] = blocks.to_bytes(4, "big")
    header[32:36] = block_size.to_bytes(4, "big")
    header[40:56] = parent_uuid
    header[56:60] = parent_time
    header[64:576] = name.encode("utf-16-be")[:512].ljust(512, b"\x00")
    header[576:768] = locator_entries
    header_bytes = _with_checksum(header, 36)

    tmp = child.with_name(child.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(footer_bytes)
        out.write(header_bytes)
        out.write(b"".join(e.to_bytes(4, "big") for e in bat).ljust(bat_size, b"\xff"))
        for offset, payload in locator_data:
            out.seek(offset)
            out.write(payload)
        for b, offset in block_layout:
            bitmap = bytearray(bitmap_size)
            block = bytearray(block_size)
            first = b * spb
            for s in range(first, min(first + spb, -(-disk_size // SECTOR))):
                content = sectors.get(s)
                if content is None:
                    continue
                i = s - first
                bitmap[i // 8] |= 0x80 >> (i % 8)
                block[i * SECTOR : (i + 1) * SECTOR] = content
            out.seek(offset)
            out.write(bitmap)
            out.write(block)
        out.seek(next_free)
        out.write(footer_bytes)
    os.replace(tmp, child)
    return child


def corrupt_copy(
    src: Path,
    dst: Path,
    *,
    patch: Mapping[int, bytes] = _NO_WRITES,
    truncate: int | None = None,
) -> Path:
    """Copy ``src`` to ``dst`` and overwrite bytes: ``patch`` maps offsets (negative = from the end of the
    file) to replacement bytes; ``truncate`` (negative = bytes to cut from the end) shortens the copy first.
    Returns ``dst``. The source is never modified."""
    src, dst = Path(src), Path(dst)
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if truncate is not None:
            size = size + truncate if truncate < 0 else truncate
            f.truncate(size)
        for offset, data in patch.items():
            pos = size + offset if offset < 0 else offset
            if pos < 0 or pos + len(data) > size:
                raise ValueError(f"patch at {offset} ({len(data)} bytes) lies outside the {size}-byte copy")
            f.seek(pos)
            f.write(data)
    return dst
