"""Partition tables: MBR (with the extended/logical chain), GPT (behind a protective MBR) and bare volumes.

Why our own parser: no maintained pure-Python MBR reader exists (libvsmbr has no wheel), and the table is
untrusted input. The EBR chain is walked with a visited set and a hard cap, GPT entry arrays are bounded
before they are read, CRCs are verified (a bad primary GPT falls back to the backup and says so), and every
partition must lie inside the disk. Anything else is one ``Unreadable``.
"""

from __future__ import annotations

import itertools
import uuid
import zlib
from dataclasses import dataclass

from harness.readers.errors import Unreadable
from harness.readers.image.source import ByteSource, SliceSource

__all__ = ["Partition", "PartitionTable", "container_sector_size", "read_partitions"]

_MBR_SIGNATURE = b"\x55\xaa"
_EXTENDED_TYPES = (0x05, 0x0F, 0x85)
_PROTECTIVE = 0xEE
_GPT_SIGNATURE = b"EFI PART"
#: More logical partitions than this is not a real disk (Windows stops far earlier).
_MAX_LOGICAL = 256
#: Entry arrays bigger than this are refused before they are read (real ones are 16 KiB).
_MAX_GPT_ARRAY = 4 * 1024 * 1024
_MAX_GPT_ENTRIES = 16384


@dataclass(frozen=True)
class Partition:
    """One partition. ``index``: MBR slot 1–4, logical partitions 5…; GPT entry number (1-based); 0 for a
    bare volume. ``type_id``: MBR type byte as ``"0x07"`` (a bare volume is typed ``"0x07"`` too), GPT
    type GUID in lower case. ``bootable``: MBR active flag; GPT attribute bit 2 (legacy BIOS bootable)."""

    index: int
    start: int
    size: int
    type_id: str
    name: str | None
    bootable: bool


@dataclass(frozen=True)
class PartitionTable:
    """The disk's partitions. ``disk_guid``: GPT disk GUID, or the MBR disk signature as ``"0x1234abcd"``
    (what sfdisk calls the label-id), or None for a bare volume."""

    style: str  # "mbr" | "gpt" | "none"
    partitions: tuple[Partition, ...]
    disk_guid: str | None
    notes: tuple[str, ...] = ()

    def source(self, disk: ByteSource, p: Partition) -> SliceSource:
        """The partition's bytes, labelled ``disk.vhd#p2`` for error messages."""
        return SliceSource(disk, p.start, p.size, f"{disk.label}#p{p.index}")


def _u32(b: bytes, o: int) -> int:
    return int.from_bytes(b[o : o + 4], "little")


def _u64(b: bytes, o: int) -> int:
    return int.from_bytes(b[o : o + 8], "little")


def _is_ntfs_boot(sector: bytes) -> bool:
    return sector[3:11] == b"NTFS    "


def container_sector_size(disk: ByteSource) -> int | None:
    """The logical sector size the disk's container declares: a VHDX's LogicalSectorSize metadata (512 or
    4096), 512 for a VHD (the format has no other); None for a raw image or a plain byte source, whose sector
    size only the partition table itself can tell."""
    info = getattr(disk, "info", None)
    fmt = getattr(info, "format", None)
    if fmt == "vhd":
        return 512
    if fmt == "vhdx":
        size = getattr(info, "logical_sector_size", None)
        return size if size in (512, 4096) else None
    return None


def read_partitions(disk: ByteSource, *, sector_size: int | None = None) -> PartitionTable:
    """Read the disk's partition table. Unreadable if there is none (and no NTFS volume at offset 0), if it
    is damaged beyond its backup, or if a partition reaches past the end of the disk.

    LBAs (MBR, EBR and GPT alike) count logical sectors of ``sector_size`` bytes: by default what the
    container declares (:func:`container_sector_size`: a 4Kn VHDX puts its GPT header at byte 4096); for a raw
    image, where the GPT header is found (LBA 1 at 512, else at 4096), and 512 for an MBR."""
    if sector_size is None:
        sector_size = container_sector_size(disk)
    if sector_size not in (None, 512, 4096):
        raise ValueError(f"sector size must be 512 or 4096, not {sector_size}")
    if disk.size < 512:
        raise Unreadable(disk.label, f"disk too small for a partition table ({disk.size} bytes)")
    mbr = disk.read_at(0, 512)
    if _is_ntfs_boot(mbr):
        return PartitionTable(
            style="none",
            partitions=(Partition(0, 0, disk.size, "0x07", None, False),),
            disk_guid=None,
            notes=("no partition table: the disk is one NTFS volume",),
        )
    has_signature = mbr[510:512] == _MBR_SIGNATURE
    entries = [_mbr_entry(mbr, i) for i in range(4)] if has_signature else []
    if any(e[1] == _PROTECTIVE for e in entries):
        notes = []
        if any(e[1] not in (0, _PROTECTIVE) for e in entries):
            notes.append("hybrid MBR: MBR partitions besides the protective entry are ignored")
        return _read_gpt(disk, notes, sector_size)
    if not has_signature:
        for ss in (512, 4096) if sector_size is None else (sector_size,):
            if disk.size >= 2 * ss and disk.read_at(ss, 8) == _GPT_SIGNATURE:
                return _read_gpt(disk, ["no protective MBR (no 0x55AA signature)"], ss)
        raise Unreadable(
            disk.label,
            "no partition table (no 0x55AA boot signature at offset 0x1fe) and no NTFS boot sector at offset 0",
            location="sector 0",
        )
    return _read_mbr(disk, mbr, entries, sector_size or 512)


def _mbr_entry(sector: bytes, slot: int) -> tuple[int, int, int, int]:
    """(status, type, first LBA, sector count) of entry ``slot`` (0-based)."""
    e = sector[446 + 16 * slot : 462 + 16 * slot]
    return e[0], e[4], _u32(e, 8), _u32(e, 12)


def _check_bounds(disk: ByteSource, index: int, start: int, size: int, where: str) -> None:
    if start + size > disk.size:
        raise Unreadable(
            disk.label,
            f"partition {index} ends past the end of the disk (offset {start:#x} + {size:#x} = {start + size:#x} > "
            f"disk size {disk.size:#x})",
            location=where,
        )


def _read_mbr(disk: ByteSource, mbr: bytes, entries: list[tuple[int, int, int, int]], ss: int) -> PartitionTable:
    notes: list[str] = []
    parts: list[Partition] = []
    extended: tuple[int, int] | None = None
    for slot, (status, ptype, lba, count) in enumerate(entries, start=1):
        if ptype == 0 or count == 0:
            continue
        if status not in (0x00, 0x80):
            notes.append(f"MBR entry {slot} has an invalid status byte {status:#04x}")
        start, size = lba * ss, count * ss
        _check_bounds(disk, slot, start, size, f"MBR entry {slot}")
        if lba == 0:
            raise Unreadable(disk.label, f"MBR entry {slot} starts at LBA 0 (over the MBR itself)", location="MBR")
        if ptype in _EXTENDED_TYPES:
            if extended is not None:
                notes.append(f"MBR entry {slot} is a second extended partition; ignored")
                continue
            extended = (lba, count)
            continue
        parts.append(Partition(slot, start, size, f"0x{ptype:02x}", None, status == 0x80))
    if extended is not None:
        parts.extend(_read_logical(disk, extended, notes, ss))
    _note_overlaps(parts, notes)
    if not parts:
        notes.append("MBR has no partitions")
    disk_sig = _u32(mbr, 440)
    return PartitionTable("mbr", tuple(parts), f"0x{disk_sig:08x}", tuple(notes))


def _read_logical(disk: ByteSource, extended: tuple[int, int], notes: list[str], ss: int) -> list[Partition]:
    """Walk the EBR chain inside the extended partition: entry 0 of each EBR is a logical partition (relative
    to that EBR), entry 1 links to the next EBR (relative to the extended partition's start)."""
    ext_lba, ext_count = extended
    out: list[Partition] = []
    visited: list[int] = []
    ebr_lba = ext_lba
    index = 5
    while True:
        if ebr_lba in visited:
            chain = " → ".join(f"LBA {x}" for x in [*visited, ebr_lba])
            raise Unreadable(disk.label, f"extended partition chain loops: {chain}", location=f"EBR at LBA {ebr_lba}")
        if len(visited) >= _MAX_LOGICAL:
            raise Unreadable(disk.label, f"more than {_MAX_LOGICAL} logical partitions", location="extended partition")
        visited.append(ebr_lba)
        if not ext_lba <= ebr_lba < ext_lba + ext_count:
            raise Unreadable(
                disk.label,
                f"EBR at LBA {ebr_lba} lies outside the extended partition (LBA {ext_lba}–{ext_lba + ext_count - 1})",
                location=f"EBR at LBA {ebr_lba}",
            )
        ebr = disk.read_at(ebr_lba * ss, 512)
        if len(ebr) < 512 or ebr[510:512] != _MBR_SIGNATURE:
            raise Unreadable(
                disk.label, f"EBR at LBA {ebr_lba} has no 0x55AA signature", location=f"EBR at LBA {ebr_lba}"
            )
        status, ptype, rel, count = _mbr_entry(ebr, 0)
        if ptype != 0 and count != 0:
            start = (ebr_lba + rel) * ss
            size = count * ss
            _check_bounds(disk, index, start, size, f"EBR at LBA {ebr_lba}")
            if start + size > (ext_lba + ext_count) * ss or rel == 0:
                notes.append(f"logical partition {index} is not inside its extended partition")
            out.append(Partition(index, start, size, f"0x{ptype:02x}", None, status == 0x80))
            index += 1
        _, ntype, nrel, ncount = _mbr_entry(ebr, 1)
        if ntype == 0 or ncount == 0:
            return out
        if ntype not in _EXTENDED_TYPES:
            notes.append(f"EBR at LBA {ebr_lba} links with type {ntype:#04x} (expected an extended type)")
        ebr_lba = ext_lba + nrel


def _note_overlaps(parts: list[Partition], notes: list[str]) -> None:
    ordered = sorted(parts, key=lambda p: p.start)
    for a, b in itertools.pairwise(ordered):
        if b.start < a.start + a.size:
            notes.append(f"partitions {a.index} and {b.index} overlap")


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw))


def _gpt_at(disk: ByteSource, ss: int, lba: int) -> tuple[dict[str, int | str], bytes] | str:
    """Header fields and entry array at ``lba``, or the problem that makes this copy unusable."""
    if (lba + 1) * ss > disk.size:
        return f"LBA {lba} lies past the end of the disk"
    raw = disk.read_at(lba * ss, ss)
    if raw[:8] != _GPT_SIGNATURE:
        return "signature ('EFI PART') missing"
    hsize = _u32(raw, 12)
    if not 92 <= hsize <= ss:
        return f"header size {hsize} out of range"
    stored = _u32(raw, 16)
    computed = zlib.crc32(raw[:16] + b"\x00\x00\x00\x00" + raw[20:hsize]) & 0xFFFFFFFF
    if stored != computed:
        return f"header CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
    entries_lba, count, esize, ecrc = _u64(raw, 72), _u32(raw, 80), _u32(raw, 84), _u32(raw, 88)
    if esize < 128 or esize % 8 or esize > 4096:
        return f"partition entry size {esize} invalid"
    if count > _MAX_GPT_ENTRIES or count * esize > _MAX_GPT_ARRAY:
        return f"partition entry array too large ({count} entries of {esize} bytes)"
    array_len = count * esize
    if entries_lba * ss + array_len > disk.size:
        return f"partition entry array at LBA {entries_lba} runs past the end of the disk"
    array = disk.read_at(entries_lba * ss, array_len)
    acrc = zlib.crc32(array) & 0xFFFFFFFF
    if acrc != ecrc:
        return f"partition entry array CRC mismatch (stored {ecrc:#010x}, computed {acrc:#010x})"
    fields: dict[str, int | str] = {
        "count": count,
        "esize": esize,
        "first_usable": _u64(raw, 40),
        "last_usable": _u64(raw, 48),
        "disk_guid": _guid(raw[56:72]),
    }
    return fields, array


def _read_gpt(disk: ByteSource, notes: list[str], declared: int | None) -> PartitionTable:
    # A container's sector size is the one (a 4Kn VHDX's header is at byte 4096, its LBAs count 4096 bytes);
    # a raw image's is where the header is found: 512 first, then 4096.
    if declared is not None:
        ss = declared
    else:
        ss = 512
        if disk.read_at(512, 8) != _GPT_SIGNATURE and disk.size >= 8192 and disk.read_at(4096, 8) == _GPT_SIGNATURE:
            ss = 4096
    last_lba = disk.size // ss - 1
    primary = _gpt_at(disk, ss, 1)
    if isinstance(primary, str):
        backup = _gpt_at(disk, ss, last_lba)
        if isinstance(backup, str):
            other = 4096 if ss == 512 else 512
            hint = ""
            if declared is not None and disk.size >= 2 * other and disk.read_at(other, 8) == _GPT_SIGNATURE:
                hint = (
                    f" (a GPT header is at byte {other}: the table was written for {other}-byte sectors but the "
                    f"container declares {ss}-byte logical sectors)"
                )
            raise Unreadable(
                disk.label,
                f"GPT unreadable: primary header at LBA 1: {primary}; backup header at LBA {last_lba}: {backup}{hint}",
                location="GPT header",
            )
        notes.append(f"GPT primary header at LBA 1 is invalid ({primary}); backup header at LBA {last_lba} used")
        fields, array = backup
    else:
        fields, array = primary
    parts: list[Partition] = []
    count, esize = int(fields["count"]), int(fields["esize"])
    for i in range(count):
        e = array[i * esize : (i + 1) * esize]
        if not any(e[:16]):
            continue
        first, last, attrs = _u64(e, 32), _u64(e, 40), _u64(e, 48)
        index = i + 1
        if last < first:
            raise Unreadable(
                disk.label,
                f"GPT entry {index} ends (LBA {last}) before it starts (LBA {first})",
                location=f"GPT entry {index}",
            )
        start, size = first * ss, (last - first + 1) * ss
        _check_bounds(disk, index, start, size, f"GPT entry {index}")
        name = e[56:128].decode("utf-16-le", "replace").split("\x00", 1)[0]
        parts.append(Partition(index, start, size, _guid(e[:16]), name, bool(attrs & 4)))
        if first < int(fields["first_usable"]) or last > int(fields["last_usable"]):
            notes.append(f"GPT entry {index} lies outside the usable LBA range")
    _note_overlaps(parts, notes)
    return PartitionTable("gpt", tuple(parts), str(fields["disk_guid"]), tuple(notes))
