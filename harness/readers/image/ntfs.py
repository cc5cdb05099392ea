"""A read-only NTFS reader in pure Python, built for one fast pass over the MFT.

``NtfsVolume(source)`` checks the boot sector and locates ``$MFT`` (record 0, or its ``$MFTMirr`` copy when record 0
is damaged) with all its extents: a fragmented ``$MFT`` lists its later ``$DATA`` extents in record 0's
``$ATTRIBUTE_LIST``, and each extension record is read through the runs known before it. ``inventory()`` then reads
the whole MFT once, sequentially, in 1 MiB chunks, and keeps only compact data: arrays indexed by record number
(sequence number and flags, size, link count) and one slot per name (record, name) grouped by parent reference.
``FileEntry`` objects and path strings are made lazily, when asked for; the folder tree (paths of folders only) is
built once, on first use. ``read_file`` re-reads the one record it needs (and its extension records) instead of
keeping run lists for every file.

Speed (about 2.5 µs of CPU per record in CPython 3.11): the update sequence of every record of a chunk is
verified and applied at once with strided ``memoryview`` slices; one ``struct.iter_unpack`` gives each
record's header; one precompiled unpack reads ``$STANDARD_INFORMATION``'s header, ``$FILE_NAME``'s header and
the name's fields together; the attribute walk stops after ``$DATA`` (attributes are sorted by type); names
are decoded once per chunk. Records the fast path does not expect (extension records, another update
sequence layout, damage) go through the general path, which checks everything.

Names: ``$FILE_NAME`` attributes; the DOS (8.3) name space is skipped, every Win32 / POSIX / Win32&DOS name is
one link (``FileEntry.links`` counts those). Names are decoded with ``surrogatepass`` (NTFS names are UTF-16
code units and may hold unpaired surrogates). Lookups compare ``str.casefold()`` forms, not the volume's
``$UpCase`` table: the two agree for the names Windows images hold; when two names of one folder differ only
in case (POSIX name space), the first wins. Sizes come from the unnamed ``$DATA`` (``$FILE_NAME``'s copy is
often stale).

Data: ``read_file`` returns a file's contents as Windows would: LZNT1 compression units (NTFS compression) and
WOF system compression (``compact /exe:…``: a reparse point, a sparse unnamed ``$DATA`` with the real size, the
chunks in ``WofCompressedData``) are decompressed by ``decompress.py``, only as far as the caller's limit
reaches; an EFS-encrypted file raises :class:`EncryptedFile` (not damage: the bytes need the owner's key).

Damage: a record whose update sequence does not verify, whose signature is wrong or whose attributes do not
fit is skipped and counted in ``Inventory.notes``; a parent loop, an orphan (its parent record missing or
reused) and a path deeper than 255 levels or longer than 32,767 characters are noted and left out of paths.
A corrupt boot sector or ``$MFT`` raises ``Unreadable``; a file's corrupt run list raises it from
``read_file``, naming the record. Attributes the inventory does not use are not checked there.
"""

from __future__ import annotations

import re
import struct
from array import array
from bisect import bisect_right
from codecs import utf_16_le_decode
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import NamedTuple

from harness.readers.errors import Unreadable
from harness.readers.image import decompress
from harness.readers.image.source import ByteSource, prefetch

__all__ = [
    "BootSector",
    "EncryptedFile",
    "FileEntry",
    "Inventory",
    "NtfsVolume",
    "decode_runs",
    "parse_boot_sector",
]

ROOT = 5  # MFT record of the root folder
_REF_MASK = (1 << 48) - 1
_CHUNK = 1024 * 1024  # MFT bytes read per call: large enough for few calls, small enough for the CPU cache
_FIXUP_STRIDE = 512  # NTFS applies the update sequence per 512 bytes, whatever the sector size
_MAX_DEPTH = 255
_MAX_PATH = 32_767
_MAX_CLUSTER = 2 * 1024 * 1024
_EXAMPLES = 5  # record numbers quoted per kind of note

# attribute types
_STANDARD_INFORMATION = 0x10
_ATTRIBUTE_LIST = 0x20
_FILE_NAME = 0x30
_VOLUME_NAME = 0x60
_DATA = 0x80
_REPARSE_POINT = 0xC0
_LOGGED_UTILITY_STREAM = 0x100
_END = 0xFFFFFFFF

# record header flags, attribute flags, name spaces
_IS_DIR = 0x02
_COMPRESSED = 0x00FF
_ENCRYPTED = 0x4000
_FILE_ATTRIBUTE_ENCRYPTED = 0x4000  # in $STANDARD_INFORMATION's file attributes
_DOS = 2

# WOF (Windows Overlay Filter) system compression: a reparse point names the format, the data is in a named stream
_IO_REPARSE_TAG_WOF = 0x80000017
_WOF_PROVIDER_WIM = 1
_WOF_PROVIDER_FILE = 2
_WOF_STREAM = "WofCompressedData"
_WOF_FORMATS = {0: ("XPRESS4K", 12), 1: ("LZX", 15), 2: ("XPRESS8K", 13), 3: ("XPRESS16K", 14)}  # name, log2 chunk

# per-record flag bits kept in the inventory
_F_USED = 1
_F_DIR = 2
_F_ADS = 4

_BOOT = struct.Struct("<3x8sHBH")  # OEM id, bytes per sector, sectors per cluster, reserved sectors
_BOOT_GEOMETRY = struct.Struct("<QQQb3xb3xQ")  # at 0x28: total sectors, $MFT LCN, $MFTMirr LCN, record/index, serial
_HEADER = struct.Struct("<4sHH8xHHHHI4xQ")  # signature, USA offset/count, seq, links, attr offset, flags, used, base
_ATTR = struct.Struct("<IIBBHHHIH")  # type, length, non-resident, name length/offset, flags, id, value length/offset
_NONRES = struct.Struct("<qqH6xqqq")  # at +16: lowest/highest VCN, runs offset, allocated/real/initialized size
_FNAME = struct.Struct("<Q40xQ8xBB")  # parent ref, real size (stale for files), name length, name space
_U16 = struct.Struct("<H")
# $STANDARD_INFORMATION (NTFS 1.2 or 3.x length: type, length) + $FILE_NAME header (type, length, non-resident,
# value length, value offset) + its value's parent ref, name length and name space
_SI_FN = {si: struct.Struct(f"<II{si - 8}xIIB7xIH2xQ56xBB") for si in (0x48, 0x60)}
_USA_OFFSET = 0x30  # the update sequence array's place in NTFS 3.1 records (the fast path's assumption)
_ATTR_LIST_ENTRY = struct.Struct("<IHBBqQH")  # type, length, name length/offset, lowest VCN, record ref, id


#: At most this many ``$MFT`` runs are announced to the source (a real ``$MFT`` has thousands; a hostile run list
#: of millions of one-cluster runs is read as before, its first runs announced).
_MAX_HINTS = 100_000


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One name of a file or folder. A file with hard links has one entry per name (``links`` of them)."""

    record: int  # MFT record number
    parent: int  # MFT record number of the folder holding this name
    name: str
    is_dir: bool
    size: int  # unnamed $DATA size in bytes; 0 for folders
    links: int  # Win32/POSIX names of this record (DOS 8.3 names not counted)
    has_ads: bool  # a named $DATA stream exists (alternate data streams are never read)


class EncryptedFile(Unreadable):
    """The file's contents are EFS-encrypted: not damage, but its bytes cannot be read without the user's key."""


class _Run(NamedTuple):
    vcn: int
    lcn: int  # -1: sparse (reads as zeros)
    length: int  # clusters


class _Attr(NamedTuple):
    """One attribute, decoded by the general (slow) path."""

    type: int
    name: str
    flags: int
    resident: bool
    value: bytes  # resident value, or the raw mapping pairs of a non-resident attribute
    lowest_vcn: int
    highest_vcn: int
    real_size: int
    initialized_size: int
    allocated_size: int
    compression_unit: int = 0  # log2 of clusters per compression unit (non-resident only)


_Parts = tuple[list[tuple[int, str]], int | None, bool]  # names (parent ref, name), $DATA size, has ADS


class _Corrupt(Exception):
    """An attribute of the record being scanned does not fit: the record is skipped and noted."""


class _Notes:
    """Non-fatal anomalies, counted per kind, with a few record numbers each: bounded whatever the damage."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[int]] = {}

    def add(self, kind: str, record: int) -> None:
        n = self.counts.get(kind, 0)
        self.counts[kind] = n + 1
        if n < _EXAMPLES:
            self.examples.setdefault(kind, []).append(record)

    def render(self) -> tuple[str, ...]:
        out = []
        for kind, n in self.counts.items():
            shown = ", ".join(str(r) for r in self.examples.get(kind, ()))
            more = ", …" if n > _EXAMPLES else ""
            out.append(f"{n} MFT record{'s' if n != 1 else ''} {kind} (records {shown}{more})")
        return tuple(out)


class _Scan:
    """What the MFT pass keeps: arrays indexed by record number, and one slot per name."""

    def __init__(self, n_records: int) -> None:
        self.meta = array("I", bytes(4 * n_records))  # sequence number << 8 | _F_* flags; 0 = not in use
        self.sizes = array("q", bytes(8 * n_records))
        self.links = array("H", bytes(2 * n_records))
        self.n_rec = array("q")  # name → record
        self.n_name: list[str] = []
        self.raw_names: list[bytearray] = []  # UTF-16 names of the current chunk, decoded in one go by flush()
        self.kids: dict[int, list[int]] = {}  # parent file reference → name indices
        self.dir_names: list[tuple[int, int]] = []  # (name index, parent ref) of folders' names
        self.notes = _Notes()
        # extension records, parsed: (record, base ref, (names, $DATA size or None, has ADS))
        self.extensions: list[tuple[int, int, _Parts]] = []

    def flush(self) -> None:
        """Decode the pending names: one decode call per chunk instead of one per name. NTFS names hold no
        U+0000, so it separates them; a damaged name that does hold one is caught by the count."""
        raws = self.raw_names
        if not raws:
            return
        names = utf_16_le_decode(b"\0\0".join(raws), "surrogatepass")[0].split("\0")
        if len(names) != len(raws):
            names = [utf_16_le_decode(raw, "surrogatepass")[0] for raw in raws]
        self.n_name += names
        raws.clear()

    def add_names(self, record: int, names: list[tuple[int, str]]) -> None:
        is_dir = self.meta[record] & _F_DIR
        for pref, name in names:
            i = len(self.n_name)
            self.kids.setdefault(pref, []).append(i)
            if is_dir:
                self.dir_names.append((i, pref))
            self.n_rec.append(record)
            self.n_name.append(name)
        self.links[record] = min(self.links[record] + len(names), 0xFFFF)

    def drop_names(self, count: int) -> None:
        """Take back the last ``count`` names (their record turned out corrupt)."""
        if not count:
            return
        first = len(self.n_name) - count
        for group in self.kids.values():
            while group and group[-1] >= first:
                group.pop()
        while self.dir_names and self.dir_names[-1][0] >= first:
            self.dir_names.pop()
        del self.n_rec[first:]
        del self.n_name[first:]


def _fixup(record: bytes, record_size: int) -> bytes | str:
    """The record with its update sequence applied, or why it cannot be (general path: any USA offset)."""
    if len(record) < record_size:
        return "is cut short"
    if record[:4] != b"FILE":
        return "has no FILE signature"
    usa_offset, usa_count = struct.unpack_from("<HH", record, 4)
    strides = record_size // _FIXUP_STRIDE
    if usa_count != strides + 1 or usa_offset < 0x28 or usa_offset + 2 * usa_count > record_size or usa_offset & 1:
        return f"has a bad update sequence array (offset {usa_offset:#x}, count {usa_count})"
    usn = record[usa_offset : usa_offset + 2]
    fixed = bytearray(record[:record_size])
    for k in range(1, strides + 1):
        end = k * _FIXUP_STRIDE
        if fixed[end - 2 : end] != usn:
            return f"fails its update sequence check (sector {k - 1}): torn write or damage"
        fixed[end - 2 : end] = record[usa_offset + 2 * k : usa_offset + 2 * k + 2]
    return bytes(fixed)


def _attributes(record: bytes, label: str, where: str) -> list[_Attr]:
    """Every attribute of a fixed-up record (general path; the inventory pass has its own inline walk)."""
    _sig, _uo, _uc, _seq, _links, offset, _flags, used, _base = _HEADER.unpack_from(record, 0)
    limit = min(used, len(record))
    out: list[_Attr] = []
    p = offset
    while p + 4 <= limit:
        (atype,) = struct.unpack_from("<I", record, p)
        if atype == _END:
            break
        if p + 24 > limit:
            raise Unreadable(label, f"{where}: attribute at {p:#x} is cut short", location=where)
        atype, alen, nonres, nlen, noff, aflags, _aid, vlen, voff = _ATTR.unpack_from(record, p)
        if alen < 24 or p + alen > limit or (nlen and noff + 2 * nlen > alen):
            raise Unreadable(label, f"{where}: attribute {atype:#x} at {p:#x} has a bad length {alen}", location=where)
        name = record[p + noff : p + noff + 2 * nlen].decode("utf-16-le", "surrogatepass") if nlen else ""
        if nonres:
            if alen < 64:
                raise Unreadable(label, f"{where}: non-resident attribute {atype:#x} is cut short", location=where)
            low, high, runs_off, alloc, real, init = _NONRES.unpack_from(record, p + 16)
            if not 64 <= runs_off <= alen or low < 0 or high < low - 1 or real < 0 or init < 0 or alloc < 0:
                raise Unreadable(label, f"{where}: attribute {atype:#x} has a bad non-resident header", location=where)
            value = record[p + runs_off : p + alen]
            unit = record[p + 34]
            out.append(_Attr(atype, name, aflags, False, value, low, high, real, init, alloc, unit))
        else:
            if voff + vlen > alen:
                raise Unreadable(label, f"{where}: attribute {atype:#x} value overruns it", location=where)
            value = record[p + voff : p + voff + vlen]
            out.append(_Attr(atype, name, aflags, True, value, 0, -1, vlen, vlen, vlen))
        p += alen
    return out


def decode_runs(mapping: bytes, total_clusters: int, label: str, where: str, first_vcn: int = 0) -> list[_Run]:
    """Mapping pairs → runs. Each run must have a positive length and lie inside the volume."""
    runs: list[_Run] = []
    p = 0
    lcn = 0
    vcn = first_vcn
    n = len(mapping)
    while p < n:
        head = mapping[p]
        if head == 0:
            break
        len_size = head & 0x0F
        off_size = head >> 4
        if not 1 <= len_size <= 8 or off_size > 8 or p + 1 + len_size + off_size > n:
            raise Unreadable(label, f"{where}: corrupt run list (header byte {head:#04x} at {p})", location=where)
        length = int.from_bytes(mapping[p + 1 : p + 1 + len_size], "little", signed=True)
        if length <= 0:
            raise Unreadable(
                label, f"{where}: corrupt run list (run of {length} clusters at VCN {vcn})", location=where
            )
        if off_size:
            lcn += int.from_bytes(mapping[p + 1 + len_size : p + 1 + len_size + off_size], "little", signed=True)
            if lcn < 0 or lcn + length > total_clusters:
                raise Unreadable(
                    label,
                    f"{where}: run at VCN {vcn} points past the volume (clusters {lcn}..{lcn + length - 1}, "
                    f"volume has {total_clusters})",
                    location=where,
                )
            runs.append(_Run(vcn, lcn, length))
        else:
            runs.append(_Run(vcn, -1, length))
        vcn += length
        p += 1 + len_size + off_size
    return runs


@dataclass(frozen=True)
class BootSector:
    """The geometry an NTFS boot sector declares, checked against itself and the bytes present."""

    bytes_per_sector: int
    cluster_size: int
    record_size: int  # bytes per MFT record
    total_clusters: int
    volume_size: int  # bytes
    serial: str  # 16 hex digits
    mft_lcn: int
    mirror_lcn: int
    notes: tuple[str, ...]


def parse_boot_sector(boot: bytes, available: int, label: str) -> BootSector:
    """Check an NTFS boot sector (``available``: bytes the source really holds). Unreadable if not NTFS,
    inconsistent, or larger than the source (a truncated volume)."""

    def fail(problem: str) -> Unreadable:
        return Unreadable(label, problem, location="boot sector")

    if len(boot) < 512:
        raise fail(f"too small for an NTFS volume ({available} bytes)")
    oem, bps, spc_code, reserved = _BOOT.unpack_from(boot, 0)
    if oem != b"NTFS    ":
        raise fail(f"not an NTFS volume (OEM id {oem!r}, expected b'NTFS    ')")
    if bps not in (256, 512, 1024, 2048, 4096):
        raise fail(f"bad bytes per sector {bps} (expected a power of two, 256..4096)")
    if spc_code == 0 or (spc_code <= 0x80 and spc_code & (spc_code - 1)):
        raise fail(f"bad sectors per cluster code {spc_code:#04x}")
    spc = spc_code if spc_code <= 0x80 else 1 << (256 - spc_code)  # over 0x80: 2^-n, for clusters over 64 KiB
    cluster = bps * spc
    if cluster > _MAX_CLUSTER:
        raise fail(f"cluster size {cluster} (sectors per cluster code {spc_code:#04x}) is over NTFS's 2 MiB")
    total_sectors, mft_lcn, mirr_lcn, rec_code, _idx_code, serial = _BOOT_GEOMETRY.unpack_from(boot, 0x28)
    if rec_code > 0:
        record_size = rec_code * cluster
    elif -16 <= rec_code < 0:
        record_size = 1 << -rec_code  # negative: 2^-n bytes
    else:
        raise fail(f"bad clusters-per-MFT-record code {rec_code}")
    if record_size & (record_size - 1) or not 512 <= record_size <= 65536:
        raise fail(f"bad MFT record size {record_size} (expected a power of two, 512..65536)")
    if total_sectors == 0:
        raise fail("boot sector gives a volume of 0 sectors")
    volume_bytes = total_sectors * bps
    if volume_bytes > available:
        raise fail(
            f"volume is truncated: the boot sector says {volume_bytes} bytes ({total_sectors} sectors of {bps}), "
            f"only {available} are present"
        )
    clusters = total_sectors // spc
    for what, lcn in (("$MFT", mft_lcn), ("$MFTMirr", mirr_lcn)):
        if lcn <= 0 or lcn * cluster + record_size > clusters * cluster:
            raise fail(f"{what} cluster {lcn} lies outside the volume ({clusters} clusters)")
    notes = (f"boot sector: reserved sectors field is {reserved}, expected 0",) if reserved else ()
    return BootSector(bps, cluster, record_size, clusters, volume_bytes, f"{serial:016X}", mft_lcn, mirr_lcn, notes)


class NtfsVolume:
    """An NTFS volume on a ByteSource (a partition slice or a raw volume file)."""

    def __init__(self, source: ByteSource) -> None:
        self.source = source
        self.label_text = source.label
        self.notes: list[str] = []
        self._read_boot()
        self._mft_runs = self._locate_mft()
        self.label: str | None = self._volume_label()

    # ---- boot sector ------------------------------------------------------------------------------------

    def _fail(self, problem: str, location: str | None = None) -> Unreadable:
        return Unreadable(self.label_text, problem, location=location)

    def _read_boot(self) -> None:
        boot = parse_boot_sector(self.source.read_at(0, 512), self.source.size, self.label_text)
        self.boot = boot
        self.notes += boot.notes
        self.bytes_per_sector = boot.bytes_per_sector
        self.cluster_size = boot.cluster_size
        self.record_size = boot.record_size
        self.total_clusters = boot.total_clusters
        self.volume_size = boot.volume_size
        self.serial = boot.serial
        self._mft_lcn = boot.mft_lcn
        self._mirr_lcn = boot.mirror_lcn

    # ---- $MFT -------------------------------------------------------------------------------------------

    def _locate_mft(self) -> list[_Run]:
        """The whole run list of ``$MFT``'s unnamed ``$DATA``, however many extents it has.

        Record 0 holds the first extent (VCN 0). A fragmented ``$MFT`` has an ``$ATTRIBUTE_LIST`` whose
        ``$DATA`` entries name the extension records holding the later extents. No document promises that all
        of those records lie in the first extent: libfsntfs, ntfs-3g (``ntfs_mft_load``) and the Linux driver
        (``ntfs_read_inode_mount``) all read them as this does, in order of lowest VCN, each through the runs
        known so far. So an extension record must lie before the part of the ``$MFT`` it describes; one that
        does not, a gap or overlap between extents, a run outside the volume or more extents than the
        ``$MFT``'s clusters are Unreadable, naming the record. Every extent adds at least one cluster and no
        extent may reach past the allocated size, so the loop and the run list are bounded by the volume."""
        rs = self.record_size
        cs = self.cluster_size
        fixed = _fixup(self.source.read_at(self._mft_lcn * cs, rs), rs)
        if isinstance(fixed, str):
            mirror = _fixup(self.source.read_at(self._mirr_lcn * cs, rs), rs)
            if isinstance(mirror, str):
                raise self._fail(f"$MFT record 0 {fixed}, and its $MFTMirr copy {mirror}", "MFT record 0")
            self.notes.append(f"$MFT record 0 {fixed}: its $MFTMirr copy was used")
            fixed = mirror
        where = "MFT record 0"
        attrs = _attributes(fixed, self.label_text, where)
        extents = [a for a in attrs if a.type == _DATA and not a.name]
        first = next((a for a in extents if a.lowest_vcn == 0), None)
        if first is None or first.resident:
            if any(not a.resident for a in extents):
                raise self._fail("$MFT $DATA does not start at VCN 0", where)
            raise self._fail("$MFT has no non-resident $DATA attribute", where)
        if first.flags & (_COMPRESSED | _ENCRYPTED):
            raise self._fail(f"$MFT $DATA is compressed or encrypted (flags {first.flags:#06x})", where)
        self._mft_size = min(first.real_size, first.initialized_size)
        if self._mft_size > self.volume_size or self._mft_size < 16 * rs:
            raise self._fail(f"$MFT size {first.real_size} is impossible for this volume", where)
        if first.allocated_size > self.volume_size or first.allocated_size < self._mft_size:
            raise self._fail(f"$MFT allocated size {first.allocated_size} is impossible for this volume", where)
        limit = -(-first.allocated_size // cs)  # clusters the extents may describe
        runs = decode_runs(first.value, self.total_clusters, self.label_text, where)
        self._mft_runs = runs
        self._mft_starts = [r.vcn for r in runs]
        next_vcn = self._extent_end(first, runs, 0, limit, where)
        listed = next((a for a in attrs if a.type == _ATTRIBUTE_LIST), None)
        if listed is not None:
            entries = sorted(
                (low, ref)
                for atype, name, low, ref in self._attribute_list(listed, where)
                if atype == _DATA and not name and low != 0
            )
            if len(entries) > limit:
                raise self._fail(
                    f"$ATTRIBUTE_LIST names {len(entries)} $DATA extents, more than the $MFT's {limit} clusters", where
                )
            base_seq = _HEADER.unpack_from(fixed, 0)[3]
            for low, ref in entries:
                ext_no = ref & _REF_MASK
                ext_where = f"MFT record {ext_no} ($MFT extent at VCN {low})"
                if low != next_vcn:
                    gap = "overlaps the previous one" if low < next_vcn else f"leaves a gap after VCN {next_vcn - 1}"
                    raise self._fail(f"{ext_where}: the extent {gap}", ext_where)
                if (ext_no + 1) * rs > next_vcn * cs:
                    raise self._fail(
                        f"{ext_where}: the record lies in the part of the $MFT it or a later extent describes "
                        f"(byte {ext_no * rs:#x}, only the first {next_vcn * cs:#x} bytes are known so far)",
                        ext_where,
                    )
                ext = self._record(ext_no, ext_where)
                _s, _uo, _uc, seq, _l, _ao, flags, _used, ext_base = _HEADER.unpack_from(ext, 0)
                if not flags & 1 or ext_base & _REF_MASK != 0 or (ext_base >> 48 and ext_base >> 48 != base_seq):
                    raise self._fail(f"{ext_where}: not an extension record of $MFT (base {ext_base:#x})", ext_where)
                if ref >> 48 and ref >> 48 != seq:
                    raise self._fail(
                        f"{ext_where}: sequence number {seq}, the list says {ref >> 48} (stale)", ext_where
                    )
                part = next(
                    (
                        a
                        for a in _attributes(ext, self.label_text, ext_where)
                        if a.type == _DATA and not a.name and a.lowest_vcn == low
                    ),
                    None,
                )
                if part is None or part.resident:
                    raise self._fail(f"{ext_where}: the record holds no $DATA extent at VCN {low}", ext_where)
                if part.flags & (_COMPRESSED | _ENCRYPTED):
                    raise self._fail(f"{ext_where}: the extent is compressed or encrypted", ext_where)
                added = decode_runs(part.value, self.total_clusters, self.label_text, ext_where, low)
                next_vcn = self._extent_end(part, added, low, limit, ext_where)
                self._mft_runs += added  # in place: linear in the runs, however many extents
                self._mft_starts += [r.vcn for r in added]
        runs = self._mft_runs
        covered = next_vcn * cs
        if any(r.lcn < 0 for r in runs):
            raise self._fail("$MFT $DATA has a sparse run", where)
        if covered < self._mft_size:
            raise self._fail(f"$MFT run list covers {covered} bytes, less than its size {self._mft_size}", where)
        return runs

    def _extent_end(self, part: _Attr, runs: list[_Run], low: int, limit: int, where: str) -> int:
        """The VCN after one ``$MFT`` extent: at least one cluster, as its header says, within the allocation."""
        end = runs[-1].vcn + runs[-1].length if runs else low
        if end == low:
            raise self._fail(f"{where}: $MFT extent at VCN {low} has no runs", where)
        if part.highest_vcn >= 0 and end != part.highest_vcn + 1:
            raise self._fail(
                f"{where}: $MFT extent runs end at VCN {end - 1}, its header says {part.highest_vcn}", where
            )
        if end > limit:
            raise self._fail(f"{where}: $MFT extent reaches VCN {end - 1}, past its {limit} allocated clusters", where)
        return end

    def _mft_bytes(self, offset: int, length: int, where: str) -> bytes:
        """Bytes of the $MFT stream, through its run list (found by bisection: thousands of runs are fine)."""
        cs = self.cluster_size
        runs = self._mft_runs
        parts: list[bytes] = []
        end = offset + length
        i = max(0, bisect_right(self._mft_starts, offset // cs) - 1)
        while i < len(runs):
            run = runs[i]
            i += 1
            start = run.vcn * cs
            stop = start + run.length * cs
            if start >= end:
                break
            if stop <= offset:
                continue
            a = max(offset, start)
            b = min(end, stop)
            parts.append(self.source.read_at(run.lcn * cs + (a - start), b - a))
        data = b"".join(parts)
        if len(data) != length:
            raise self._fail(f"{where} lies outside the $MFT or the volume", where)
        return data

    def _record(self, number: int, where: str) -> bytes:
        rs = self.record_size
        if not 0 <= number < self._mft_size // rs:
            raise self._fail(f"{where}: record number {number} is outside the $MFT", where)
        fixed = _fixup(self._mft_bytes(number * rs, rs, where), rs)
        if isinstance(fixed, str):
            raise self._fail(f"{where} {fixed}", where)
        return fixed

    def _attribute_list(self, attr: _Attr, where: str) -> list[tuple[int, str, int, int]]:
        """$ATTRIBUTE_LIST entries: (type, name, lowest VCN, record reference)."""
        if attr.resident:
            data = attr.value
        else:
            if attr.real_size > min(16 * 1024 * 1024, self.volume_size):
                raise self._fail(f"{where}: $ATTRIBUTE_LIST of {attr.real_size} bytes", where)
            runs = decode_runs(attr.value, self.total_clusters, self.label_text, where)
            data = self._read_runs(runs, attr.real_size, attr.initialized_size, attr.real_size)
        out: list[tuple[int, str, int, int]] = []
        p = 0
        while p + 26 <= len(data):
            atype, elen, nlen, noff, low, ref, _aid = _ATTR_LIST_ENTRY.unpack_from(data, p)
            if elen < 26 or p + elen > len(data) or (nlen and noff + 2 * nlen > elen):
                raise self._fail(f"{where}: corrupt $ATTRIBUTE_LIST entry at {p}", where)
            name = data[p + noff : p + noff + 2 * nlen].decode("utf-16-le", "surrogatepass") if nlen else ""
            out.append((atype, name, low, ref))
            p += elen
        return out

    def _volume_label(self) -> str | None:
        try:
            attrs = _attributes(self._record(3, "MFT record 3 ($Volume)"), self.label_text, "MFT record 3")
        except Unreadable as exc:
            self.notes.append(f"volume label not read: {exc.problem}")
            return None
        for a in attrs:
            if a.type == _VOLUME_NAME and a.resident:
                return a.value.decode("utf-16-le", "replace") or None
        return None

    # ---- the inventory pass ------------------------------------------------------------------------------

    def _chunks(self) -> Iterator[tuple[int, bytearray]]:
        """(first record number, buffer of whole records): the $MFT, one large read at a time."""
        rs = self.record_size
        cs = self.cluster_size
        remaining = self._mft_size - self._mft_size % rs
        # Announce the runs about to be read, in order: a source over the network (a blob) fetches a fragmented
        # $MFT's thousands of scattered runs as exact, merged ranges instead of guessing run by run.
        planned: list[tuple[int, int]] = []
        left_to_plan = remaining
        for run in self._mft_runs[:_MAX_HINTS]:
            if left_to_plan <= 0:
                break
            planned.append((run.lcn * cs, min(run.length * cs, left_to_plan)))
            left_to_plan -= run.length * cs
        prefetch(self.source, planned)
        pending = bytearray()
        first = 0
        for run in self._mft_runs:
            offset = run.lcn * cs
            left = min(run.length * cs, remaining)
            while left > 0:
                n = min(_CHUNK, left)
                data = self.source.read_at(offset, n)
                if len(data) != n:
                    raise self._fail(f"$MFT data at {offset:#x} lies past the end of the volume", "MFT")
                offset += n
                left -= n
                remaining -= n
                if pending:
                    pending += data
                else:
                    pending = bytearray(data)
                whole = len(pending) // rs
                if whole == 0:
                    continue
                if len(pending) == whole * rs:
                    chunk, pending = pending, bytearray()
                else:  # a record split between two runs (records larger than clusters)
                    chunk, pending = pending[: whole * rs], pending[whole * rs :]
                yield first, chunk
                first += whole
            if remaining <= 0:
                break

    def _apply_fixups(self, first: int, buf: bytearray) -> tuple[set[int], list[int]]:
        """Verify and apply the update sequence of every record of a chunk at once, in C-speed slices,
        assuming the NTFS 3.1 layout (array at 0x30); records with another layout are redone by the general
        path from the original sector ends, returned here. Returns (records failing the check, sector ends)."""
        rs = self.record_size
        strides = rs // _FIXUP_STRIDE
        half = rs // 2
        words = memoryview(buf).cast("H")
        usns = words[_USA_OFFSET // 2 :: half].tolist()
        ends = words[_FIXUP_STRIDE // 2 - 1 :: _FIXUP_STRIDE // 2].tolist()
        expected = ends[:]
        for k in range(strides):
            expected[k::strides] = usns
        bad: set[int] = set()
        if ends != expected:
            bad = {first + j // strides for j, (a, b) in enumerate(zip(ends, expected, strict=True)) if a != b}
        for k in range(1, strides + 1):
            words[k * _FIXUP_STRIDE // 2 - 1 :: half] = words[_USA_OFFSET // 2 + k :: half]
        words.release()
        return bad, ends

    def inventory(self) -> Inventory:
        """Every in-use record's names and sizes, from one sequential pass over the $MFT."""
        rs = self.record_size
        n_records = self._mft_size // rs
        usa_count = rs // _FIXUP_STRIDE + 1
        min_attr = _USA_OFFSET + 2 * usa_count
        # signature, USA offset and USA count as one 8-byte field: one comparison for the common layout
        header = struct.Struct(f"<8s8xHHHHI4xQ{rs - _HEADER.size}x")
        common = b"FILE" + struct.pack("<HH", _USA_OFFSET, usa_count)
        attr_unpack = _ATTR.unpack_from
        nonres_unpack = _NONRES.unpack_from
        fname_unpack = _FNAME.unpack_from
        scan = _Scan(n_records)
        meta = scan.meta
        sizes = scan.sizes
        links = scan.links
        add_rec = scan.n_rec.append
        add_raw = scan.raw_names.append
        add_dir = scan.dir_names.append
        kids = scan.kids
        kids_get = kids.get
        ni = 0  # index of the next name
        si_len = 0x60
        si_fn_unpack = _SI_FN[si_len].unpack_from
        si_fn_size = _SI_FN[si_len].size

        for first, buf in self._chunks():
            bad, ends = self._apply_fixups(first, buf)
            recno = first - 1
            for head, seq, _nlinks, aofs, flags, used, base in header.iter_unpack(buf):
                recno += 1
                if not flags & 1:  # not in use
                    continue
                if head != common or base or not min_attr <= aofs < used <= rs or (bad and recno in bad):
                    scan.flush()
                    self._uncommon_record(scan, recno, buf, first, ends, bad)
                    ni = len(scan.n_name)
                    continue
                pos = (recno - first) * rs
                lim = pos + used
                p = pos + aofs
                nn = 0
                ads = 0
                size = 0
                try:
                    # most records start $STANDARD_INFORMATION (of the length seen last), then a resident
                    # $FILE_NAME with its value at 0x18: both headers and the name's fields in one unpack
                    if p + si_fn_size <= lim:
                        t1, l1, t2, l2, nonres, vlen, voff, pref, fnlen, space = si_fn_unpack(buf, p)
                        if t1 == 0x10 and t2 == 0x30 and l1 == si_len and voff == 24 and not nonres:
                            if vlen < 66 or 24 + vlen > l2 or p + l1 + l2 > lim:
                                raise _Corrupt
                            if space != 2:
                                v = p + l1 + 90
                                e = v + 2 * fnlen
                                if e > p + l1 + 24 + vlen:
                                    raise _Corrupt
                                add_raw(buf[v:e])
                                add_rec(recno)
                                group = kids_get(pref)
                                if group is None:
                                    kids[pref] = [ni]
                                else:
                                    group.append(ni)
                                if flags & 2:
                                    add_dir((ni, pref))
                                ni += 1
                                nn += 1
                            p += l1 + l2
                        elif t1 == 0x10 and l1 in _SI_FN:
                            si_len = l1
                            si_fn_unpack = _SI_FN[l1].unpack_from
                            si_fn_size = _SI_FN[l1].size
                    # attributes are sorted by type: stop after $DATA (0x80); the end marker is 0xFFFFFFFF
                    while p + 24 <= lim:
                        atype, alen, nonres, nlen, _noff, _aflags, _aid, vlen, voff = attr_unpack(buf, p)
                        if atype > 0x80:
                            break
                        if alen < 24 or p + alen > lim:
                            raise _Corrupt
                        if atype == 0x30:  # $FILE_NAME
                            if nonres or vlen < 66 or voff + vlen > alen:
                                raise _Corrupt
                            v = p + voff
                            pref, _fsize, fnlen, space = fname_unpack(buf, v)
                            if space != 2:  # 2 = the DOS 8.3 alias of a Win32 name
                                v += 66
                                e = v + 2 * fnlen
                                if e > p + alen:
                                    raise _Corrupt
                                add_raw(buf[v:e])
                                add_rec(recno)
                                group = kids_get(pref)
                                if group is None:
                                    kids[pref] = [ni]
                                else:
                                    group.append(ni)
                                if flags & 2:
                                    add_dir((ni, pref))
                                ni += 1
                                nn += 1
                        elif atype == 0x80:  # $DATA
                            if nlen:
                                ads = _F_ADS
                            elif nonres:
                                if alen < 64:
                                    raise _Corrupt
                                low, _high, _roff, _alloc, real, _init = nonres_unpack(buf, p + 16)
                                if low == 0:
                                    if real < 0:
                                        raise _Corrupt
                                    size = real
                            else:
                                size = vlen
                            p += alen
                            if p + 24 > lim or buf[p] != 0x80:  # no further (named) $DATA
                                break
                            continue
                        p += alen
                except _Corrupt:
                    scan.notes.add("with a corrupt attribute were skipped", recno)
                    scan.flush()
                    scan.drop_names(nn)
                    ni -= nn
                    continue
                meta[recno] = seq << 8 | _F_USED | (flags & _IS_DIR) | ads
                if size:
                    sizes[recno] = size
                if nn:
                    links[recno] = nn
            scan.flush()

        for recno, base, parts in scan.extensions:
            self._merge_extension(scan, recno, base, parts)
        if n_records <= ROOT or not meta[ROOT] & _F_DIR:
            raise self._fail("the root folder (MFT record 5) is missing or not a folder", "MFT record 5")
        return Inventory(self, scan)

    def _uncommon_record(
        self, scan: _Scan, recno: int, buf: bytearray, first: int, ends: list[int], bad: set[int]
    ) -> None:
        """An in-use record the fast path does not take: wrong signature, another update sequence layout,
        an extension record, a bad header or a failed update sequence check."""
        rs = self.record_size
        pos = (recno - first) * rs
        sig = bytes(buf[pos : pos + 4])
        if sig != b"FILE":
            if sig != b"\0\0\0\0":
                scan.notes.add("with a bad signature were skipped", recno)
            return
        # the chunk was fixed up for the 0x30 layout: put the original sector ends back, then redo it
        strides = rs // _FIXUP_STRIDE
        raw = bytearray(buf[pos : pos + rs])
        j = (recno - first) * strides
        for k in range(1, strides + 1):
            raw[k * _FIXUP_STRIDE - 2 : k * _FIXUP_STRIDE] = _U16.pack(ends[j + k - 1])
        fixed = _fixup(bytes(raw), rs)
        if isinstance(fixed, str):
            if fixed.startswith("fails"):
                scan.notes.add("failing the update sequence check were skipped", recno)
            else:
                scan.notes.add("with a bad update sequence array were skipped", recno)
            return
        _sig, _uo, _uc, seq, _links, aofs, flags, used, base = _HEADER.unpack_from(fixed, 0)
        if used > rs or aofs >= used or aofs < 0x18:
            scan.notes.add("with a bad header were skipped", recno)
            return
        if base:
            ext_parts = self._record_parts(recno, fixed, scan.notes)
            if ext_parts is not None:
                scan.extensions.append((recno, base, ext_parts))
            return
        parts = self._record_parts(recno, fixed, scan.notes)
        if parts is None:
            return
        names, size, ads = parts
        scan.meta[recno] = seq << 8 | _F_USED | (flags & _IS_DIR) | (_F_ADS if ads else 0)
        scan.sizes[recno] = size or 0
        scan.add_names(recno, names)

    def _record_parts(self, recno: int, fixed: bytes, notes: _Notes) -> _Parts | None:
        """Names (parent ref, name), unnamed $DATA size (None: not in this record) and the ADS flag of one
        fixed-up record, by the general path; None when an attribute is corrupt (noted)."""
        try:
            attrs = _attributes(fixed, self.label_text, f"MFT record {recno}")
        except Unreadable:
            notes.add("with a corrupt attribute were skipped", recno)
            return None
        names: list[tuple[int, str]] = []
        size: int | None = None
        ads = False
        for a in attrs:
            if a.type == _FILE_NAME:
                if not a.resident or len(a.value) < 66:
                    notes.add("with a corrupt attribute were skipped", recno)
                    return None
                pref, _fsize, fnlen, space = _FNAME.unpack_from(a.value, 0)
                if space == _DOS:
                    continue
                if 66 + 2 * fnlen > len(a.value):
                    notes.add("with a corrupt attribute were skipped", recno)
                    return None
                names.append((pref, a.value[66 : 66 + 2 * fnlen].decode("utf-16-le", "surrogatepass")))
            elif a.type == _DATA:
                if a.name:
                    ads = True
                elif a.resident or a.lowest_vcn == 0:
                    size = a.real_size
        return names, size, ads

    @staticmethod
    def _merge_extension(scan: _Scan, recno: int, base_ref: int, parts: _Parts) -> None:
        """Attributes of an extension record belong to its base record (listed in the base's
        $ATTRIBUTE_LIST); the base must be in use with the same sequence number, else the extension is stale."""
        base = base_ref & _REF_MASK
        base_seq = base_ref >> 48
        meta = scan.meta
        if base >= len(meta) or not meta[base] & _F_USED or (base_seq and meta[base] >> 8 != base_seq):
            scan.notes.add("extending a base record that is not in use (stale) were ignored", recno)
            return
        names, size, ads = parts
        if ads:
            meta[base] |= _F_ADS
        if size is not None:
            scan.sizes[base] = size
        scan.add_names(base, names)

    # ---- file data --------------------------------------------------------------------------------------

    def _read_runs(self, runs: list[_Run], size: int, initialized: int, limit: int) -> bytes:
        """The first min(size, limit) bytes of a non-resident stream: sparse runs and bytes past the
        initialized size read as zeros."""
        want = max(0, min(size, limit))
        valid = min(initialized, want)
        cs = self.cluster_size
        parts: list[bytes] = []
        got = 0
        for run in runs:
            if got >= valid:
                break
            start = run.vcn * cs
            if start != got:
                raise self._fail(f"run list has a gap at VCN {run.vcn}", None)
            n = min(run.length * cs, valid - got)
            parts.append(self._cluster_bytes(run.lcn, n))
            got += n
        if got < valid:
            raise self._fail(f"run list covers {got} bytes of a {size}-byte stream", None)
        if want > valid:
            parts.append(bytes(want - valid))
        return b"".join(parts)

    def read_file(self, entry: FileEntry, limit: int) -> bytes:
        """The first ``limit`` bytes of the file's unnamed $DATA (its contents), as Windows would return them:
        NTFS-compressed (LZNT1) and WOF-compressed (XPRESS4K/8K/16K, LZX) files are decompressed, only the
        compression units or chunks ``limit`` reaches. Raises :class:`EncryptedFile` (an Unreadable) for an
        EFS-encrypted file and Unreadable for folders, damaged records, run lists or compressed data."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        where = f"MFT record {entry.record}"
        what = f"{entry.name!r} ({where})"
        if entry.is_dir:
            raise self._fail(f"{what} is a folder; not read", where)
        fixed = self._record(entry.record, where)
        attrs = _attributes(fixed, self.label_text, where)
        listed = next((a for a in attrs if a.type == _ATTRIBUTE_LIST), None)
        if listed is not None:
            seen = {entry.record}
            wanted = (_DATA, _REPARSE_POINT, _LOGGED_UTILITY_STREAM)
            for atype, _name, _low, ref in self._attribute_list(listed, where):
                ext_no = ref & _REF_MASK
                if atype not in wanted or ext_no in seen:
                    continue
                seen.add(ext_no)
                ext_where = f"MFT record {ext_no} (extension of {entry.record})"
                ext = self._record(ext_no, ext_where)
                ext_base = _HEADER.unpack_from(ext, 0)[8] & _REF_MASK
                if ext_base != entry.record:
                    raise self._fail(f"{ext_where} belongs to record {ext_base}", ext_where)
                attrs += [a for a in _attributes(ext, self.label_text, ext_where) if a.type in wanted]
        extents = sorted((a for a in attrs if a.type == _DATA and not a.name), key=lambda a: a.lowest_vcn)
        if self._encrypted(attrs, extents):
            raise EncryptedFile(
                self.label_text,
                f"{what} is EFS-encrypted: its contents cannot be read without the owner's key (not damage)",
                location=where,
            )
        wof = self._wof_format(attrs, what, where)
        if wof is not None:
            return self._read_wof(attrs, extents, wof, limit, what, where)
        if not extents:
            return b""
        head = extents[0]
        if head.resident:
            return head.value[:limit]  # resident data is stored as is, even with the compressed flag
        runs = self._stream_runs(extents, what, where)
        try:
            if head.flags & _COMPRESSED:
                return self._read_lznt1(runs, head, limit, what)
            return self._read_runs(runs, head.real_size, head.initialized_size, limit)
        except Unreadable as exc:
            raise self._fail(f"{what}: {exc.problem}", where) from None

    @staticmethod
    def _encrypted(attrs: list[_Attr], extents: list[_Attr]) -> bool:
        """EFS: the $DATA's encrypted flag, an ``$EFS`` logged utility stream, or the file attribute says so."""
        if extents and extents[0].flags & _ENCRYPTED:
            return True
        for a in attrs:
            if a.type == _LOGGED_UTILITY_STREAM and a.name == "$EFS":
                return True
            if (
                a.type == _STANDARD_INFORMATION
                and a.resident
                and len(a.value) >= 0x24
                and struct.unpack_from("<I", a.value, 0x20)[0] & _FILE_ATTRIBUTE_ENCRYPTED
            ):
                return True
        return False

    def _stream_runs(self, extents: list[_Attr], what: str, where: str) -> list[_Run]:
        """The joined run list of a non-resident stream's extents (sorted by lowest VCN), checked."""
        head = extents[0]
        if head.lowest_vcn != 0:
            raise self._fail(f"{what}: $DATA does not start at VCN 0", where)
        runs: list[_Run] = []
        next_vcn = 0
        for part in extents:
            if part.resident or part.lowest_vcn != next_vcn:
                raise self._fail(f"{what}: $DATA extents do not join up at VCN {part.lowest_vcn}", where)
            decoded = decode_runs(part.value, self.total_clusters, self.label_text, where, part.lowest_vcn)
            runs += decoded
            next_vcn = decoded[-1].vcn + decoded[-1].length if decoded else next_vcn
            if part.highest_vcn >= 0 and next_vcn != part.highest_vcn + 1:
                raise self._fail(f"{what}: run list ends at VCN {next_vcn - 1}, not {part.highest_vcn}", where)
        if head.real_size > next_vcn * self.cluster_size:
            raise self._fail(f"{what}: size {head.real_size} is larger than its run list ({next_vcn} clusters)", where)
        return runs

    # ---- NTFS compression (LZNT1) -------------------------------------------------------------------------

    def _read_lznt1(self, runs: list[_Run], head: _Attr, limit: int, what: str) -> bytes:
        """An NTFS-compressed stream: compression units of 2^unit clusters, each stored as is (all clusters
        allocated), sparse (zeros), or LZNT1-compressed in its first clusters with the rest sparse. Only the
        units ``limit`` reaches are read; bytes past the initialized size read as zeros."""
        cs = self.cluster_size
        if not 1 <= head.compression_unit <= 16 or (cs << head.compression_unit) > 1 << 21:
            raise self._fail(f"bad compression unit {head.compression_unit} for {cs}-byte clusters", None)
        unit_clusters = 1 << head.compression_unit
        unit_bytes = unit_clusters * cs
        want = max(0, min(head.real_size, limit))
        valid = min(head.initialized_size, want)
        starts = [r.vcn for r in runs]
        end_vcn = runs[-1].vcn + runs[-1].length if runs else 0
        out: list[bytes] = []
        for u in range(-(-valid // unit_bytes)):
            first = u * unit_clusters
            pieces = self._pieces(runs, starts, first, min(unit_clusters, max(0, end_vcn - first)))
            allocated = sum(n for lcn, n in pieces if lcn >= 0)
            left = valid - u * unit_bytes  # bytes of the stream still wanted from here
            if allocated == 0:
                out.append(bytes(unit_bytes))
            elif allocated == unit_clusters or (
                all(lcn >= 0 for lcn, _n in pieces) and allocated * cs >= min(left, unit_bytes)
            ):
                out.append(self._clusters(pieces, unit_bytes))  # stored as is (a last unit may be short)
            else:
                stored = self._clusters([p for p in pieces if p[0] >= 0], allocated * cs)
                try:
                    data = decompress.lznt1(stored, unit_bytes)
                except decompress.CorruptData as exc:
                    raise self._fail(f"compression unit at VCN {first}: {exc}", None) from None
                out.append(data + bytes(unit_bytes - len(data)) if len(data) < unit_bytes else data)
        data = b"".join(out)
        return data[:valid] + bytes(want - valid) if want > valid else data[:valid]

    @staticmethod
    def _pieces(runs: list[_Run], starts: list[int], vcn: int, count: int) -> list[tuple[int, int]]:
        """(LCN or -1 for sparse, clusters) covering ``count`` clusters from ``vcn`` through the runs."""
        pieces: list[tuple[int, int]] = []
        i = max(0, bisect_right(starts, vcn) - 1)
        end = vcn + count
        while vcn < end and i < len(runs):
            run = runs[i]
            i += 1
            if run.vcn + run.length <= vcn:
                continue
            n = min(end, run.vcn + run.length) - vcn
            pieces.append((run.lcn + (vcn - run.vcn) if run.lcn >= 0 else -1, n))
            vcn += n
        return pieces

    def _clusters(self, pieces: list[tuple[int, int]], length: int) -> bytes:
        """``length`` bytes from the pieces' clusters (sparse pieces read as zeros); short if they hold less."""
        cs = self.cluster_size
        parts: list[bytes] = []
        got = 0
        for lcn, n in pieces:
            if got >= length:
                break
            size = min(n * cs, length - got)
            parts.append(self._cluster_bytes(lcn, size))
            got += size
        return b"".join(parts)

    def _cluster_bytes(self, lcn: int, size: int) -> bytes:
        """``size`` bytes from cluster ``lcn`` on (-1: sparse, zeros); Unreadable when the source ends first."""
        if lcn < 0:
            return bytes(size)
        data = self.source.read_at(lcn * self.cluster_size, size)
        if len(data) != size:
            raise self._fail(f"data at cluster {lcn} lies past the end of the source", None)
        return data

    # ---- WOF system compression ---------------------------------------------------------------------------

    def _wof_format(self, attrs: list[_Attr], what: str, where: str) -> tuple[str, int] | None:
        """(format name, log2 chunk size) when the file is WOF-compressed (reparse tag IO_REPARSE_TAG_WOF with
        the file provider), else None. A WOF file the reader cannot decode is Unreadable, saying why."""
        point = next((a for a in attrs if a.type == _REPARSE_POINT), None)
        if point is None or not point.resident or len(point.value) < 8:
            return None
        tag, length = struct.unpack_from("<IH", point.value, 0)
        if tag != _IO_REPARSE_TAG_WOF:
            return None
        body = point.value[8 : 8 + length]
        if len(body) < 8:
            raise self._fail(f"{what}: WOF reparse point of {len(body)} bytes is cut short", where)
        version, provider = struct.unpack_from("<II", body, 0)
        if provider == _WOF_PROVIDER_WIM:
            raise self._fail(f"{what} is backed by a WIM file outside the volume (WIMBoot); not read", where)
        if version != 1 or provider != _WOF_PROVIDER_FILE or len(body) < 16:
            raise self._fail(f"{what}: unknown WOF reparse point (version {version}, provider {provider})", where)
        file_version, fmt = struct.unpack_from("<II", body, 8)
        if file_version != 1 or fmt not in _WOF_FORMATS:
            raise self._fail(
                f"{what}: unknown WOF compression format {fmt} (file provider version {file_version})", where
            )
        return _WOF_FORMATS[fmt]

    def _read_wof(
        self, attrs: list[_Attr], extents: list[_Attr], wof: tuple[str, int], limit: int, what: str, where: str
    ) -> bytes:
        """A WOF-compressed file: the unnamed $DATA (sparse) gives the size; ``WofCompressedData`` holds a
        table of chunk offsets (4 bytes each, 8 over 4 GiB; relative to the table's end; none for the first
        chunk) then the chunks, each compressed or, when that saved nothing, stored as is. Only the chunks
        ``limit`` reaches are read and decompressed."""
        name, order = wof
        size = extents[0].real_size if extents and extents[0].lowest_vcn == 0 else 0
        want = max(0, min(size, limit))
        if want == 0:
            return b""
        parts = sorted((a for a in attrs if a.type == _DATA and a.name == _WOF_STREAM), key=lambda a: a.lowest_vcn)
        if not parts:
            raise self._fail(f"{what} is WOF-compressed ({name}) but has no {_WOF_STREAM} stream", where)
        if parts[0].flags & (_COMPRESSED | _ENCRYPTED):
            raise self._fail(f"{what}: its {_WOF_STREAM} stream is itself compressed or encrypted", where)
        stored_size = parts[0].real_size
        chunk = 1 << order
        n_chunks = -(-size // chunk)
        need = -(-want // chunk)
        entry = 4 if size <= 0xFFFFFFFF else 8
        table = (n_chunks - 1) * entry
        if table > stored_size:
            raise self._fail(
                f"{what}: {_WOF_STREAM} of {stored_size} bytes cannot hold the chunk table of a {size}-byte file",
                where,
            )

        def stream(length: int) -> bytes:
            if parts[0].resident:
                return parts[0].value[:length]
            runs = self._stream_runs(parts, what, where)
            try:
                return self._read_runs(runs, stored_size, parts[0].initialized_size, length)
            except Unreadable as exc:
                raise self._fail(f"{what}: {_WOF_STREAM}: {exc.problem}", where) from None

        entries = min(need, n_chunks - 1)
        raw_table = stream(table if need == n_chunks else entries * entry)
        offsets = [0, *struct.unpack_from(f"<{entries}{'I' if entry == 4 else 'Q'}", raw_table, 0)]
        if need == n_chunks:
            offsets.append(stored_size - table)
        for i in range(need):
            if not offsets[i] <= offsets[i + 1] <= stored_size - table:
                raise self._fail(
                    f"{what}: {_WOF_STREAM} chunk {i} has a bad offset table entry "
                    f"({offsets[i]}..{offsets[i + 1]} of {stored_size - table} bytes)",
                    where,
                )
            if offsets[i + 1] - offsets[i] > min(chunk, size - i * chunk):
                raise self._fail(
                    f"{what}: {_WOF_STREAM} chunk {i} is stored in {offsets[i + 1] - offsets[i]} bytes, "
                    f"more than its {min(chunk, size - i * chunk)} uncompressed",
                    where,
                )
        data = stream(table + offsets[need])
        if len(data) != table + offsets[need]:
            raise self._fail(f"{what}: {_WOF_STREAM} is shorter than its chunk table says", where)
        out: list[bytes] = []
        for i in range(need):
            expected = min(chunk, size - i * chunk)
            piece = data[table + offsets[i] : table + offsets[i + 1]]
            if len(piece) == expected:
                out.append(piece)  # stored as is: compression saved nothing
                continue
            try:
                out.append(
                    decompress.lzx(piece, expected)
                    if name == "LZX"
                    else decompress.xpress_huffman(piece, expected, chunk)
                )
            except decompress.CorruptData as exc:
                raise self._fail(f"{what}: {name} chunk {i} of {_WOF_STREAM}: {exc}", where) from None
        return b"".join(out)[:want]


class Inventory:
    """The names of one volume, from one MFT pass. Paths and FileEntry objects are made on demand."""

    def __init__(self, volume: NtfsVolume, scan: _Scan) -> None:
        self.volume = volume
        self._meta = scan.meta
        self._sizes = scan.sizes
        self._links = scan.links
        self._rec = scan.n_rec
        self._name = scan.n_name
        self._kids = scan.kids
        self._dir_names = scan.dir_names
        self._scan_notes = scan.notes
        self._dirs: dict[int, str] | None = None  # reachable folder record → path ("" for the root)
        self._tree_notes: tuple[str, ...] = ()
        self._counts = (0, 0)
        self._index: dict[int, dict[str, int]] = {}
        self._joined_names: tuple[str, list[int] | None] | None = None
        # a parent reference with sequence number 0 means "any": file such names under the folder's real reference
        for bare in [k for k in self._kids if k >> 48 == 0 and k < len(self._meta) and self._meta[k]]:
            self._kids.setdefault(self._key(bare), []).extend(self._kids.pop(bare))

    # ---- the tree (built once, on first use, from the folders only) ---------------------------------------

    def _key(self, record: int) -> int:
        """The file reference (sequence << 48 | record) children use to name this folder."""
        return (self._meta[record] >> 8) << 48 | record

    def _kids_of(self, record: int) -> list[int]:
        return self._kids.get(self._key(record), [])

    def _tree(self) -> dict[int, str]:
        if self._dirs is not None:
            return self._dirs
        meta = self._meta
        rec = self._rec
        names = self._name
        subdirs: dict[int, list[int]] = {}  # parent ref → name indices of folders
        for i, pref in self._dir_names:
            if pref >> 48 == 0 and pref < len(meta):
                pref = self._key(pref)
            subdirs.setdefault(pref, []).append(i)
        dirs: dict[int, str] = {ROOT: ""}
        notes = _Notes()
        dir_names = 0  # names of folders in reachable folders
        cut = 0  # of those, names whose path is too long
        stack: list[tuple[int, str, int]] = [(ROOT, "", 0)]
        while stack:
            d, prefix, depth = stack.pop()
            for i in subdirs.get(self._key(d), ()):
                r = rec[i]
                if r == d:
                    continue  # the root's "." name
                dir_names += 1
                path = prefix + "\\" + names[i]
                if len(path) > _MAX_PATH:
                    notes.add(f"with a path over {_MAX_PATH} characters were left out", r)
                    cut += 1
                elif r in dirs:
                    continue  # a second name of a folder: listed, walked once
                elif depth + 1 >= _MAX_DEPTH:
                    notes.add(f"deeper than {_MAX_DEPTH} levels had their contents left out", r)
                else:
                    dirs[r] = path
                    stack.append((r, path, depth + 1))
        reached = 0
        cut_files = 0
        for d, prefix in dirs.items():
            group = self._kids_of(d)
            reached += len(group)
            if len(prefix) + 257 > _MAX_PATH:  # only here can a file's name push its path over the limit
                for i in group:
                    if len(prefix) + 1 + len(names[i]) > _MAX_PATH and not meta[rec[i]] & _F_DIR:
                        notes.add(f"with a path over {_MAX_PATH} characters were left out", rec[i])
                        cut_files += 1
        reached -= 1  # the root's own "." name
        self._dirs = dirs
        self._counts = (reached - dir_names - cut_files, dir_names - cut)
        if reached + 1 < len(names):
            self._explain_unreached(dirs, notes)
        self._tree_notes = notes.render()
        return dirs

    def _explain_unreached(self, dirs: dict[int, str], notes: _Notes) -> None:
        """Names no walk from the root reaches: below a parent loop, orphans, or below a cut folder."""
        meta = self._meta
        reachable = {self._key(d) for d in dirs}
        parent_of: dict[int, int] = {}  # folder record → the parent ref of its first name
        for i, pref in self._dir_names:
            parent_of.setdefault(self._rec[i], pref)
        verdict: dict[int, str] = {}
        for pref, group in self._kids.items():
            if pref in reachable:
                continue
            chain: list[int] = []
            seen: set[int] = set()
            ref = pref
            while True:
                p = ref & _REF_MASK
                if p in verdict:
                    kind = verdict[p]
                    break
                if p >= len(meta) or not meta[p] & _F_DIR or (ref >> 48 and meta[p] >> 8 != ref >> 48):
                    kind = "orphan"
                    break
                if p in dirs:
                    kind = "cut"  # below a folder cut for depth or length: noted there
                    break
                if p in seen:
                    kind = "loop"
                    break
                seen.add(p)
                chain.append(p)
                if p not in parent_of:
                    kind = "orphan"
                    break
                ref = parent_of[p]
            for p in chain:
                verdict.setdefault(p, kind)
            for i in group:
                r = self._rec[i]
                if kind == "loop":
                    notes.add("inside or below a parent loop (MFT loop) were left out of paths", r)
                elif kind == "orphan":
                    notes.add("whose parent folder is missing or reused (orphans) were left out of paths", r)

    # ---- public API ---------------------------------------------------------------------------------------

    @property
    def notes(self) -> tuple[str, ...]:
        self._tree()
        return tuple(self.volume.notes) + self._scan_notes.render() + self._tree_notes

    @property
    def file_count(self) -> int:
        """Files ``walk()`` yields (a file with hard links counts once per name)."""
        self._tree()
        return self._counts[0]

    @property
    def dir_count(self) -> int:
        """Folders ``walk()`` yields (the root is not one)."""
        self._tree()
        return self._counts[1]

    def _entry(self, i: int, parent: int) -> FileEntry:
        r = self._rec[i]
        m = self._meta[r]
        return FileEntry(
            r, parent, self._name[i], m & _F_DIR == _F_DIR, self._sizes[r], self._links[r], m & _F_ADS == _F_ADS
        )

    def root(self) -> FileEntry:
        return FileEntry(ROOT, ROOT, "", True, 0, self._links[ROOT], self._meta[ROOT] & _F_ADS == _F_ADS)

    def walk(self) -> Iterator[tuple[str, FileEntry]]:
        """Every (path, entry) reachable from the root, once per name (hard links appear under each name).
        Paths look like ``\\Windows\\System32``; the root itself is not yielded."""
        dirs = self._tree()
        rec = self._rec
        names = self._name
        meta = self._meta
        sizes = self._sizes
        links = self._links
        kids = self._kids
        for d, prefix in list(dirs.items()):
            long_prefix = len(prefix) + 257 > _MAX_PATH
            prefix += "\\"
            for i in kids.get((meta[d] >> 8) << 48 | d, ()):
                r = rec[i]
                if r == d:
                    continue
                name = names[i]
                path = prefix + name
                if long_prefix and len(path) > _MAX_PATH:
                    continue
                m = meta[r]
                yield path, FileEntry(r, d, name, m & 2 == 2, sizes[r], links[r], m & 4 == 4)

    def path_of(self, entry: FileEntry) -> str:
        """``\\Windows\\System32\\…`` for this name. Unreadable for a name left out of paths (see notes)."""
        dirs = self._tree()
        if entry.record == ROOT and entry.parent == ROOT:
            return "\\"
        prefix = dirs.get(entry.parent)
        if prefix is None or len(prefix) + 1 + len(entry.name) > _MAX_PATH:
            raise Unreadable(
                self.volume.label_text,
                f"{entry.name!r} (MFT record {entry.record}) is not reachable from the root folder "
                "(parent loop, orphan, or a path too deep or long): see the inventory notes",
                location=f"MFT record {entry.record}",
            )
        return prefix + "\\" + entry.name

    def _child_index(self, record: int) -> dict[str, int]:
        index = self._index.get(record)
        if index is None:
            index = {}
            for i in self._kids_of(record):
                if self._rec[i] != record:
                    index.setdefault(self._name[i].casefold(), i)
            self._index[record] = index
        return index

    def lookup(self, path: str) -> FileEntry | None:
        """The entry at ``path`` (``Windows\\System32\\config\\SYSTEM``, ``/`` or ``\\``, an optional leading
        separator or drive letter), compared case-insensitively; None when absent or left out of paths."""
        dirs = self._tree()
        parts = [p for p in path.replace("/", "\\").split("\\") if p]
        if parts and len(parts[0]) == 2 and parts[0][1] == ":":
            parts = parts[1:]
        if not parts:
            return self.root()
        record = ROOT
        found = -1
        for part in parts:
            if record not in dirs:
                return None
            found = self._child_index(record).get(part.casefold(), -1)
            if found < 0:
                return None
            parent, record = record, self._rec[found]
        entry = self._entry(found, parent)
        return entry if len(dirs[parent]) + 1 + len(entry.name) <= _MAX_PATH else None

    def select(self, *patterns: str) -> Iterator[tuple[str, FileEntry]]:
        """(path, entry) of every reachable name in which one of the regular expressions is found, without
        building the other paths. Names are matched lower-cased (NTFS names are case-insensitive), all joined
        by newlines and searched at C speed (MULTILINE: ``^`` and ``$`` are a name's start and end), then the
        folders are walked once. Much cheaper than ``walk()`` when few names match (the key-material scan
        asks for a handful of extensions on a 200,000-name volume). Patterns must not match a newline; keep
        each simple (one literal prefix each searches fastest)."""
        joined, starts = self._joined()
        hits: set[int] = set()
        for pattern in patterns:
            regex = re.compile(pattern, re.MULTILINE)
            if starts is None:  # a name holds a newline, or lower-casing changed a length: name by name
                hits.update(i for i, name in enumerate(self._name) if regex.search(name.lower()))
            else:
                hits.update(bisect_right(starts, m.start()) - 1 for m in regex.finditer(joined))
        if not hits:
            return
        dirs = self._tree()
        rec, meta, sizes, links, names = self._rec, self._meta, self._sizes, self._links, self._name
        for d, prefix in dirs.items():
            group = self._kids.get((meta[d] >> 8) << 48 | d, ())
            if hits.isdisjoint(group):
                continue
            for i in group:
                r = rec[i]
                if i in hits and r != d and len(prefix) + 1 + len(names[i]) <= _MAX_PATH:
                    m = meta[r]
                    yield (
                        prefix + "\\" + names[i],
                        FileEntry(r, d, names[i], m & 2 == 2, sizes[r], links[r], m & 4 == 4),
                    )

    def _joined(self) -> tuple[str, list[int] | None]:
        if self._joined_names is None:
            joined = "\n".join(self._name)
            lowered = joined.lower()
            if joined.count("\n") != len(self._name) - 1 or len(lowered) != len(joined):
                self._joined_names = ("", None)
            else:
                starts = [0, *accumulate(len(name) + 1 for name in self._name)][:-1] if self._name else []
                self._joined_names = (lowered, starts)
        return self._joined_names

    def walk_under(self, path: str, *, max_depth: int = _MAX_DEPTH) -> Iterator[tuple[str, FileEntry]]:
        """(path, entry) of everything below the folder at ``path`` (nothing for a file or an unknown path)."""
        start = self.lookup(path)
        if start is None or not start.is_dir:
            return
        base = "" if start.record == ROOT else self.path_of(start)
        stack = [(start.record, base, 0)]
        seen = {start.record}
        while stack:
            record, prefix, depth = stack.pop()
            for i in self._kids_of(record):
                r = self._rec[i]
                if r == record:
                    continue
                entry = self._entry(i, record)
                child = prefix + "\\" + entry.name
                yield child, entry
                if entry.is_dir and r not in seen and depth + 1 < max_depth:
                    seen.add(r)
                    stack.append((r, child, depth + 1))

    def children(self, entry_or_path: FileEntry | str) -> list[FileEntry]:
        """The entries of a folder (by entry or path); [] for a file or an unknown path."""
        entry = self.lookup(entry_or_path) if isinstance(entry_or_path, str) else entry_or_path
        if entry is None or not entry.is_dir:
            return []
        return [self._entry(i, entry.record) for i in self._kids_of(entry.record) if self._rec[i] != entry.record]
