"""Write VHDX files (fixed, dynamic and differencing; 512-byte or 4 KiB logical sectors), for tests.

Why this exists: qemu-img writes fixed and dynamic VHDX with 512-byte sectors only and cannot create a
differencing VHDX (what Hyper-V checkpoints produce, ``.avhdx``), yet parent chains, partially present blocks
and 4 KiB logical sectors are what the image reader must get right. The layout follows the published
specification, [MS-VHDX] (https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-vhdx/): file type
identifier, two headers, two region tables, a 1 MiB log (empty), the metadata region (file parameters, virtual
disk size, page 83 data, logical and physical sector size, and for a differencing disk the parent locator with
``parent_linkage``, ``relative_path`` and ``absolute_win32_path``), the BAT with a sector bitmap entry after every
``chunk_ratio`` payload entries, then the payload and sector bitmap blocks. It is deliberately independent of
``harness.readers.image.container`` (its own CRC-32C and layout code), and the tests check its output with
libvhdi and qemu-img, readers we did not write.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from harness.testing.vhdwriter import relative_locator, sector_writes

__all__ = [
    "crc32c",
    "parent_locator",
    "read_data_write_guid",
    "write_base_vhdx",
    "write_differencing_vhdx",
    "write_vhdx",
]

KIB = 1024
MIB = 1024 * 1024
_NO_WRITES: Mapping[int, bytes] = MappingProxyType({})

REGION_BAT = uuid.UUID("2dc27766-f623-4200-9d64-115e9bfd4a08")
REGION_METADATA = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e")
META_FILE_PARAMETERS = uuid.UUID("caa16737-fa36-4d43-b3b6-33f0aa44e76b")
META_VIRTUAL_DISK_SIZE = uuid.UUID("2fa54224-cd1b-4876-b211-5dbed83bf4b8")
META_PAGE83 = uuid.UUID("beca12ab-b2e6-4523-93ef-c309e000c746")
META_LOGICAL_SECTOR = uuid.UUID("8141bf1d-a96f-4709-ba47-f233a8faab5f")
META_PHYSICAL_SECTOR = uuid.UUID("cda348c7-445d-4471-9cc9-e9885251c556")
META_PARENT_LOCATOR = uuid.UUID("a8d35f2d-b30b-454d-abf7-d3d84834ab0c")
#: LocatorType of the VHDX parent locator (MS-VHDX 2.6.2.6).
VHDX_PARENT_LOCATOR_TYPE = uuid.UUID("b04aefb7-d19e-4a81-b789-25b8e9445913")

# Payload BAT entry states (MS-VHDX 2.5.1.1) and the sector bitmap one (2.5.1.2).
NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED, FULLY_PRESENT, PARTIALLY_PRESENT = 0, 1, 2, 3, 6, 7
SB_BLOCK_PRESENT = 6

_LOG_OFFSET = 1 * MIB
_LOG_LENGTH = 1 * MIB
_METADATA_OFFSET = 2 * MIB
_METADATA_LENGTH = 1 * MIB
_BAT_OFFSET = 3 * MIB
#: Bytes of the child block left where a partially present block's sectors are not present: a reader that
#: ignores the sector bitmap returns these instead of the parent's bytes.
_ABSENT_FILL = 0xEE


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes | bytearray) -> int:
    """CRC-32C (Castagnoli), the checksum of VHDX headers, region tables and log entries."""
    c = 0xFFFFFFFF
    t = _TABLE
    for byte in data:
        c = t[(c ^ byte) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _sealed(block: bytearray) -> bytes:
    """``block`` with its CRC-32C stored at offset 4 (computed with that field zero)."""
    block[4:8] = bytes(4)
    block[4:8] = crc32c(block).to_bytes(4, "little")
    return bytes(block)


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def read_data_write_guid(path: Path | str) -> uuid.UUID:
    """The DataWriteGuid of a VHDX's current header (the valid one with the higher sequence number): what a
    child's ``parent_linkage`` must name."""
    best: tuple[int, uuid.UUID] | None = None
    with open(path, "rb") as f:
        if f.read(8) != b"vhdxfile":
            raise ValueError(f"{path} is not a VHDX (no 'vhdxfile' at offset 0)")
        for off in (64 * KIB, 128 * KIB):
            f.seek(off)
            raw = bytearray(f.read(4 * KIB))
            if raw[:4] != b"head":
                continue
            stored = int.from_bytes(raw[4:8], "little")
            if _sealed(bytearray(raw))[4:8] != stored.to_bytes(4, "little"):
                continue
            seq = int.from_bytes(raw[8:16], "little")
            if best is None or seq > best[0]:
                best = (seq, uuid.UUID(bytes_le=bytes(raw[32:48])))
    if best is None:
        raise ValueError(f"{path} has no valid VHDX header")
    return best[1]


def _read_virtual_size_and_sector(path: Path) -> tuple[int, int]:
    """(virtual size, logical sector size) of a VHDX written by this module or by another tool."""
    with open(path, "rb") as f:
        f.seek(192 * KIB)
        table = f.read(64 * KIB)
        meta_off = None
        for i in range(int.from_bytes(table[8:12], "little")):
            e = table[16 + 32 * i : 48 + 32 * i]
            if uuid.UUID(bytes_le=e[:16]) == REGION_METADATA:
                meta_off = int.from_bytes(e[16:24], "little")
        if meta_off is None:
            raise ValueError(f"{path}: no metadata region")
        f.seek(meta_off)
        meta = f.read(64 * KIB)
        found: dict[uuid.UUID, int] = {}
        for i in range(int.from_bytes(meta[10:12], "little")):
            e = meta[32 + 32 * i : 64 + 32 * i]
            found[uuid.UUID(bytes_le=e[:16])] = int.from_bytes(e[16:20], "little")
        f.seek(meta_off + found[META_VIRTUAL_DISK_SIZE])
        size = int.from_bytes(f.read(8), "little")
        f.seek(meta_off + found[META_LOGICAL_SECTOR])
        lss = int.from_bytes(f.read(4), "little")
    return size, lss


def parent_locator(entries: Sequence[tuple[str, str]]) -> bytes:
    """A VHDX parent locator item (MS-VHDX 2.6.2.6): header, key-value entries, then the UTF-16LE keys and
    values. ``entries`` are written in order, duplicates included (tests use that for hostile input)."""
    head = VHDX_PARENT_LOCATOR_TYPE.bytes_le + bytes(2) + len(entries).to_bytes(2, "little")
    table = bytearray()
    strings = bytearray()
    base = 20 + 12 * len(entries)
    for key, value in entries:
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        key_off = base + len(strings)
        strings += k
        value_off = base + len(strings)
        strings += v
        table += key_off.to_bytes(4, "little") + value_off.to_bytes(4, "little")
        table += len(k).to_bytes(2, "little") + len(v).to_bytes(2, "little")
    return head + bytes(table) + bytes(strings)


def write_vhdx(
    path: Path | str,
    *,
    virtual_size: int,
    blocks: Mapping[int, tuple[int, bytes | None, bytes | None]],
    block_size: int = 1 * MIB,
    logical_sector_size: int = 512,
    physical_sector_size: int = 4096,
    fixed: bool = False,
    parent_locator_item: bytes | None = None,
    data_write_guid: uuid.UUID | None = None,
    creator: str = "vmrole-harness vhdxwriter",
) -> Path:
    """Write a VHDX from explicit payload blocks: ``blocks`` maps a payload block number to ``(state,
    data, sector bitmap)``; ``data`` is the block's bytes (FULLY/PARTIALLY_PRESENT), the bitmap one bit per
    logical sector of the block, bit 0 of byte 0 first (PARTIALLY_PRESENT). Blocks not named are
    NOT_PRESENT. With ``parent_locator_item`` the file is a differencing disk (HasParent set)."""
    lss = logical_sector_size
    if lss not in (512, 4096):
        raise ValueError(f"logical sector size must be 512 or 4096, not {lss}")
    if block_size < MIB or block_size > 256 * MIB or block_size & (block_size - 1):
        raise ValueError(f"block size {block_size} is not a power of two in 1–256 MiB")
    if virtual_size <= 0 or virtual_size % lss:
        raise ValueError(f"virtual size {virtual_size} is not a positive multiple of {lss}")
    differencing = parent_locator_item is not None
    # A given DataWriteGuid makes the file reproducible: the other identifiers are derived from it.
    dwg = data_write_guid or uuid.uuid4()
    fwg = uuid.uuid5(dwg, "FileWriteGuid") if data_write_guid else uuid.uuid4()
    page83 = uuid.uuid5(dwg, "page 83") if data_write_guid else uuid.uuid4()
    chunk_ratio = (1 << 23) * lss // block_size
    data_blocks = -(-virtual_size // block_size)
    bitmap_blocks = -(-data_blocks // chunk_ratio)
    # A differencing disk's BAT ends with the sector bitmap entry of its last chunk (MS-VHDX 2.5).
    total = bitmap_blocks * (chunk_ratio + 1) if differencing else data_blocks + (data_blocks - 1) // chunk_ratio
    bat_length = _round_up(8 * total, MIB)
    bitmap_bytes_per_block = block_size // lss // 8

    bat = [0] * total
    next_free = _BAT_OFFSET + bat_length
    placed: list[tuple[int, bytes]] = []
    chunk_bitmaps: dict[int, bytearray] = {}
    for n in range(data_blocks):
        state, data, bitmap = blocks.get(n, (FULLY_PRESENT if fixed else NOT_PRESENT, None, None))
        index = n + n // chunk_ratio
        if state in (FULLY_PRESENT, PARTIALLY_PRESENT):
            payload = bytes(data or b"").ljust(block_size, b"\x00")[:block_size]
            bat[index] = (next_free >> 20) << 20 | state
            placed.append((next_free, payload))
            next_free += block_size
            if state == PARTIALLY_PRESENT:
                if bitmap is None or len(bitmap) != bitmap_bytes_per_block:
                    raise ValueError(
                        f"block {n}: a partially present block needs a {bitmap_bytes_per_block}-byte bitmap"
                    )
                bits = chunk_bitmaps.setdefault(n // chunk_ratio, bytearray(MIB))
                at = (n % chunk_ratio) * bitmap_bytes_per_block
                bits[at : at + bitmap_bytes_per_block] = bitmap
        else:
            bat[index] = state
    for chunk, chunk_bits in sorted(chunk_bitmaps.items()):
        bat[chunk * (chunk_ratio + 1) + chunk_ratio] = (next_free >> 20) << 20 | SB_BLOCK_PRESENT
        placed.append((next_free, bytes(chunk_bits)))
        next_free += MIB

    # Metadata region: the table, then the items from 64 KiB on.
    items: list[tuple[uuid.UUID, bytes, int]] = [
        (
            META_FILE_PARAMETERS,
            (block_size.to_bytes(4, "little") + (2 if differencing else int(fixed)).to_bytes(4, "little")),
            4,
        ),
        (META_VIRTUAL_DISK_SIZE, virtual_size.to_bytes(8, "little"), 6),
        (META_PAGE83, page83.bytes_le, 6),
        (META_LOGICAL_SECTOR, lss.to_bytes(4, "little"), 6),
        (META_PHYSICAL_SECTOR, physical_sector_size.to_bytes(4, "little"), 6),
    ]
    if parent_locator_item is not None:
        items.append((META_PARENT_LOCATOR, parent_locator_item, 6))
    meta = bytearray(_METADATA_LENGTH)
    meta[0:8] = b"metadata"
    meta[10:12] = len(items).to_bytes(2, "little")
    item_off = 64 * KIB
    for i, (guid, value, flags) in enumerate(items):
        e = guid.bytes_le + item_off.to_bytes(4, "little") + len(value).to_bytes(4, "little")
        e += flags.to_bytes(4, "little") + bytes(4)
        meta[32 + 32 * i : 64 + 32 * i] = e
        meta[item_off : item_off + len(value)] = value
        item_off += _round_up(max(len(value), 1), 8)

    ident = bytearray(64 * KIB)
    ident[0:8] = b"vhdxfile"
    name = creator.encode("utf-16-le")[:510]
    ident[8 : 8 + len(name)] = name

    def header(seq: int) -> bytes:
        h = bytearray(4 * KIB)
        h[0:4] = b"head"
        h[8:16] = seq.to_bytes(8, "little")
        h[16:32] = fwg.bytes_le
        h[32:48] = dwg.bytes_le
        h[66:68] = (1).to_bytes(2, "little")  # Version
        h[68:72] = _LOG_LENGTH.to_bytes(4, "little")
        h[72:80] = _LOG_OFFSET.to_bytes(8, "little")
        return _sealed(h)

    region = bytearray(64 * KIB)
    region[0:4] = b"regi"
    region[8:12] = (2).to_bytes(4, "little")
    for i, (guid, off, length) in enumerate(
        ((REGION_BAT, _BAT_OFFSET, bat_length), (REGION_METADATA, _METADATA_OFFSET, _METADATA_LENGTH))
    ):
        region[16 + 32 * i : 48 + 32 * i] = (
            guid.bytes_le + off.to_bytes(8, "little") + length.to_bytes(4, "little") + (1).to_bytes(4, "little")
        )
    region_bytes = _sealed(region)

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(ident)
        out.write(header(1).ljust(64 * KIB, b"\x00"))
        out.write(header(2).ljust(64 * KIB, b"\x00"))
        out.write(region_bytes)
        out.write(region_bytes)
        out.seek(_METADATA_OFFSET)
        out.write(meta)
        out.write(b"".join(e.to_bytes(8, "little") for e in bat).ljust(bat_length, b"\x00"))
        for offset, payload in placed:
            out.seek(offset)
            out.write(payload)
        out.truncate(next_free)
    os.replace(tmp, path)
    return path


def write_base_vhdx(
    path: Path | str,
    source: Path | str,
    *,
    block_size: int = 1 * MIB,
    logical_sector_size: int = 512,
    fixed: bool = False,
    data_write_guid: uuid.UUID | None = None,
) -> Path:
    """A fixed or dynamic VHDX holding the raw disk ``source`` (dynamic: all-zero blocks left NOT_PRESENT)."""
    size = os.path.getsize(source)
    blocks: dict[int, tuple[int, bytes | None, bytes | None]] = {}
    with open(source, "rb") as f:
        for n in range(-(-size // block_size)):
            data = f.read(block_size)
            if fixed or data.count(0) != len(data):
                blocks[n] = (FULLY_PRESENT, data, None)
    return write_vhdx(
        path,
        virtual_size=size,
        blocks=blocks,
        block_size=block_size,
        logical_sector_size=logical_sector_size,
        fixed=fixed,
        data_write_guid=data_write_guid,
    )


def write_differencing_vhdx(
    parent: Path | str,
    child: Path | str,
    *,
    writes: Mapping[int, bytes] = _NO_WRITES,
    zero_blocks: Sequence[int] = (),
    block_size: int = 1 * MIB,
    locator: Sequence[tuple[str, str]] | None = None,
    parent_linkage: uuid.UUID | None = None,
    absolute_path: str | None = None,
    data_write_guid: uuid.UUID | None = None,
    absent_fill: int = _ABSENT_FILL,
) -> Path:
    """Write ``child`` as a differencing VHDX on top of the VHDX ``parent`` and return its path.

    ``writes`` maps disk offsets to data, both multiples of the parent's logical sector size; later entries
    win. A block all of whose sectors are written is FULLY_PRESENT, one with some sectors written is
    PARTIALLY_PRESENT (its sector bitmap says which; the other sectors hold ``absent_fill`` bytes, 0xEE by
    default, that must never be read), blocks in ``zero_blocks`` are PAYLOAD_BLOCK_ZERO (or, with writes, fully
    present over zeros), every other block reads through to the parent.
    ``locator`` replaces the parent locator's key-value entries (default: ``parent_linkage`` = the parent's
    DataWriteGuid or ``parent_linkage``, ``relative_path`` from the child's directory and
    ``absolute_win32_path`` = ``absolute_path`` or the parent's absolute path). The parent is read before
    ``child`` is written, so ``child`` may be the parent's own path (a self-cycle)."""
    parent = Path(parent)
    child = Path(child)
    virtual_size, lss = _read_virtual_size_and_sector(parent)
    if locator is None:
        linkage = parent_linkage or read_data_write_guid(parent)
        parent_abs = os.path.abspath(parent)
        locator = [
            ("parent_linkage", "{" + str(linkage) + "}"),
            ("relative_path", relative_locator(parent_abs, child)),
            ("absolute_win32_path", absolute_path if absolute_path is not None else parent_abs),
        ]
    sectors = sector_writes(writes, lss, virtual_size, f"aligned to {lss}-byte sectors")
    spb = block_size // lss
    blocks: dict[int, tuple[int, bytes | None, bytes | None]] = {n: (ZERO, None, None) for n in zero_blocks}
    for n in sorted({s // spb for s in sectors}):
        zeroed = n in zero_blocks  # written sectors over zeros: the whole block is in the file
        data = bytearray(block_size) if zeroed else bytearray([absent_fill]) * block_size
        bitmap = bytearray(spb // 8)
        present = 0
        last_sector = min(spb, -(-(virtual_size - n * block_size) // lss))
        for i in range(last_sector):
            written = sectors.get(n * spb + i)
            if written is None:
                if zeroed:
                    present += 1
                continue
            data[i * lss : (i + 1) * lss] = written
            bitmap[i // 8] |= 1 << (i % 8)
            present += 1
        if present == last_sector:
            blocks[n] = (FULLY_PRESENT, bytes(data), None)
        else:
            blocks[n] = (PARTIALLY_PRESENT, bytes(data), bytes(bitmap))
    return write_vhdx(
        child,
        virtual_size=virtual_size,
        blocks=blocks,
        block_size=block_size,
        logical_sector_size=lss,
        parent_locator_item=parent_locator(locator),
        data_write_guid=data_write_guid,
    )
