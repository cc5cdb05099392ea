"""A read-only reader for Windows registry hive files (``regf``), in pure Python, safe on hostile input.

::

    hive = Hive(data, "disk.vhd#p2:\\\\Windows\\\\System32\\\\config\\\\SYSTEM")
    tcpip = hive.key("ControlSet001\\\\Services\\\\Tcpip\\\\Parameters")     # case-insensitive; "" = root
    if tcpip is not None:
        hostname = tcpip.value("Hostname")                                 # "" = the default value
        print(hostname.as_python() if hostname else None)

Every problem raises :class:`~harness.readers.errors.Unreadable` naming the hive label and the cell offset
(offsets are relative to the start of the hive bins data, as stored in the hive: file offset - 0x1000).
The base block is checked when the hive is opened; a corrupted cell raises only when something reaches it,
so lookups elsewhere still work. Non-fatal anomalies (dirty hive, checksum mismatch, truncation, invalid
hive bins) are listed in :attr:`Hive.notes`.

Bounds: every cell is checked to lie inside one valid hive bin; lists, names and data are bounded by their
cell; ``ri`` index entries must point to ``li``/``lf``/``lh`` lists (no nesting, no repeats); a key must be
listed by the key its parent field names, at most once, and never by its own descendant — so a full walk
visits each key cell at most once and a subkey cycle raises instead of hanging. Nesting is capped at
:data:`MAX_DEPTH` levels (Windows' own limit). Transaction logs are never replayed.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from harness.readers.errors import Unreadable

__all__ = [
    "BIG_DATA_SEGMENT",
    "DIRTY_NOTE",
    "MAX_DEPTH",
    "REG_BINARY",
    "REG_DWORD",
    "REG_DWORD_BIG_ENDIAN",
    "REG_EXPAND_SZ",
    "REG_LINK",
    "REG_MULTI_SZ",
    "REG_NONE",
    "REG_QWORD",
    "REG_SZ",
    "Hive",
    "Key",
    "Value",
]

REG_NONE = 0
REG_SZ = 1
REG_EXPAND_SZ = 2
REG_BINARY = 3
REG_DWORD = 4
REG_DWORD_BIG_ENDIAN = 5
REG_LINK = 6
REG_MULTI_SZ = 7
REG_QWORD = 11

#: Bytes of value data in one big-data (``db``) segment.
BIG_DATA_SEGMENT = 16344
#: The note a dirty hive (primary and secondary sequence numbers differ) gets in :attr:`Hive.notes`.
DIRTY_NOTE = "hive is dirty (transaction logs not replayed)"
#: Deepest key nesting read (Windows refuses to create keys deeper than 512 levels).
MAX_DEPTH = 512

_BASE = 4096  # base block size; cell offsets count from here
_NIL = 0xFFFFFFFF
_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)

_BASE_BLOCK = struct.Struct("<4sIIQIIIIIII")
_NK = struct.Struct("<2sHQIIIIIIIIIIIIIIIHH")  # 76 bytes before the name
_VK = struct.Struct("<2sHIIIHH")  # 20 bytes before the name
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_HBIN = struct.Struct("<4sII")

_KEY_COMP_NAME = 0x0020
_VALUE_COMP_NAME = 0x0001


def _upcase(name: str) -> str:
    """Windows-style case folding: upper-case one code point at a time, never changing the length."""
    if name.isascii():
        return name.upper()
    return "".join(up if len(up := ch.upper()) == 1 else ch for ch in name)


def _filetime(value: int) -> datetime | None:
    if value == 0:
        return None
    try:
        return _FILETIME_EPOCH + timedelta(microseconds=value // 10)
    except OverflowError:
        return None


@dataclass(frozen=True)
class Value:
    """One registry value: name ("" = the default value), type (REG_* or any 32-bit number) and raw data."""

    name: str
    type: int
    data: bytes

    def as_python(self) -> str | int | bytes | list[str] | None:
        """SZ/EXPAND_SZ -> str (up to the first NUL; odd lengths and missing terminators tolerated),
        DWORD/DWORD_BIG_ENDIAN/QWORD -> int (None when the data is too short), MULTI_SZ -> list of str (up to
        the first empty string), any other type (BINARY, NONE, LINK, DEVPROP 0xffff00xx, ...) -> the bytes."""
        kind, data = self.type, self.data
        if kind in (REG_SZ, REG_EXPAND_SZ):
            text = _utf16(data)
            nul = text.find("\0")
            return text if nul < 0 else text[:nul]
        if kind == REG_DWORD:
            return int.from_bytes(data[:4], "little") if len(data) >= 4 else None
        if kind == REG_DWORD_BIG_ENDIAN:
            return int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        if kind == REG_QWORD:
            return int.from_bytes(data[:8], "little") if len(data) >= 8 else None
        if kind == REG_MULTI_SZ:
            items = []
            for item in _utf16(data).split("\0"):
                if not item:
                    break
                items.append(item)
            return items
        return data


def _utf16(data: bytes) -> str:
    return data[: len(data) & ~1].decode("utf-16-le", "replace")


class Hive:
    """A registry hive held in memory. ``label`` names it in error messages."""

    def __init__(self, data: bytes, label: str) -> None:
        self.label = label
        self._data = data = bytes(data)
        notes: list[str] = []
        if len(data) < _BASE:
            self._fail_base(f"file is {len(data)} bytes, too small for a hive base block (4096 bytes)", 0)
        if data[:4] != b"regf":
            self._fail_base(f"not a registry hive: no 'regf' signature at file offset 0 (found {data[:4]!r})", 0)
        _, seq1, seq2, stamp, major, minor, file_type, file_format, root, bins_size, _ = _BASE_BLOCK.unpack_from(data)
        if major != 1:
            self._fail_base(f"unsupported hive format version {major}.{minor}", 0x14)
        if file_type in (1, 2, 6):
            self._fail_base(f"this is a transaction log (file type {file_type}), not a primary hive file", 0x1C)
        if file_type != 0:
            notes.append(f"unknown hive file type {file_type} (base block offset 0x1c)")
        if file_format != 1:
            notes.append(
                f"unknown hive file format {file_format} (expected 1, direct memory load; base block offset 0x20)"
            )
        if not 2 <= minor <= 6:
            notes.append(f"unusual hive format version 1.{minor} (base block offset 0x18)")
        checksum = 0
        for (word,) in struct.iter_unpack("<I", data[:508]):
            checksum ^= word
        (stored,) = _U32.unpack_from(data, 508)
        if stored not in (checksum, {0xFFFFFFFF: 0xFFFFFFFE, 0: 1}.get(checksum, checksum)):
            notes.append(
                f"base block checksum mismatch (stored 0x{stored:08x}, computed 0x{checksum:08x}; "
                "base block offset 0x1fc)"
            )
        if seq1 != seq2:
            notes.append(DIRTY_NOTE)
        available = len(data) - _BASE
        if bins_size == 0 or bins_size % 4096:
            notes.append(
                f"base block hive bins size 0x{bins_size:x} (base block offset 0x28) is not a multiple of 4096; "
                "the file size is used"
            )
            bins_size = available // 4096 * 4096
        if bins_size > available:
            notes.append(
                f"hive is truncated at offset 0x{available:x}: the base block declares 0x{bins_size:x} bytes of "
                f"hive bins, the file holds 0x{available:x}"
            )
            bins_size = available
        self._bins_size = bins_size
        self._bin_starts: list[int] = []
        self._bin_ends: list[int] = []
        self._scan_bins(notes)
        self.version = (major, minor)
        self.sequence_numbers = (seq1, seq2)  # differ when the hive is dirty
        self.last_written = _filetime(stamp)
        self.notes: tuple[str, ...] = tuple(notes)
        # nk offset -> (upcased child name -> child offset, first error met while reading the children's names)
        self._name_maps: dict[int, tuple[dict[str, int], Unreadable | None]] = {}
        self._root = self._key_at(root, None, "root key")

    # --- structure --------------------------------------------------------------------------------------

    def _fail(self, problem: str, offset: int | None = None) -> NoReturn:
        raise Unreadable(self.label, problem, location=None if offset is None else f"0x{offset:x}")

    def _fail_base(self, problem: str, field: int) -> NoReturn:
        """Damage in the base block: located by the offset of the field in it (the file's first 4096 bytes)."""
        raise Unreadable(self.label, problem, location=f"base block offset 0x{field:x}")

    def _scan_bins(self, notes: list[str]) -> None:
        data, limit = self._data, self._bins_size
        offset = 0
        bad_pages = 0
        first_bad: int | None = None
        while offset + 32 <= limit:
            pos = _BASE + offset
            magic, own, size = _HBIN.unpack_from(data, pos)
            if magic == b"hbin" and own == offset and size >= 4096 and size % 4096 == 0:
                self._bin_starts.append(offset)
                self._bin_ends.append(min(offset + size, limit))
                offset += size
                continue
            if first_bad is None:
                first_bad = offset
            bad_pages += 1
            offset += 4096
        if first_bad is not None:
            notes.append(
                f"{bad_pages} page(s) of hive bins data are not valid hive bins (first at offset 0x{first_bad:x}); "
                "cells there are unreadable"
            )
        if not self._bin_starts:
            self._fail("no valid hive bin in the file ('hbin' signature missing at file offset 0x1000)", 0)

    def check_cells(self, max_problems: int = 5) -> list[str]:
        """Walk every cell of every valid hive bin once (linear, bounded): damage lookups might never reach.

        A cell whose size is 0, not a multiple of 8, or runs past its bin ends that bin's walk. Returns the
        problems in words ("cell at offset 0x2340 has size 0 (corrupt hive bin)"), at most ``max_problems``.
        """
        data = self._data
        unpack = struct.Struct("<i").unpack_from
        problems: list[str] = []
        for start, end in zip(self._bin_starts, self._bin_ends, strict=True):
            offset = start + 32
            while offset + 4 <= end:
                (size,) = unpack(data, _BASE + offset)
                length = -size if size < 0 else size
                if length == 0 or length % 8 or offset + length > end:
                    what = "has size 0" if length == 0 else f"has size {length:#x}, which does not fit its hive bin"
                    problems.append(f"cell at offset 0x{offset:x} {what} (corrupt hive bin)")
                    break
                offset += length
            if len(problems) >= max_problems:
                break
        return problems

    def _cell(self, offset: int, what: str, owner: Key | None = None) -> tuple[int, int]:
        """[start, end) of the payload of the allocated cell at ``offset`` (relative to the hive bins data).

        ``what`` (and ``owner``, the key it belongs to) describe the cell in error messages."""
        if offset >= self._bins_size:
            self._cell_fail(offset, what, owner, f"is outside the hive bins data (0x{self._bins_size:x} bytes)")
        if offset & 7:
            self._cell_fail(offset, what, owner, "is not 8-byte aligned")
        index = bisect_right(self._bin_starts, offset) - 1
        if index < 0 or offset + 8 > self._bin_ends[index] or offset < self._bin_starts[index] + 32:
            self._cell_fail(offset, what, owner, "is not inside a valid hive bin")
        pos = _BASE + offset
        (size,) = _I32.unpack_from(self._data, pos)
        if size == 0:
            self._fail(f"cell at offset 0x{offset:x} has size 0 (corrupt hive bin)", offset)
        if size > 0:
            self._cell_fail(offset, what, owner, "is a free cell, not an allocated one")
        size = -size
        if size < 8 or offset + size > self._bin_ends[index]:
            self._fail(
                f"cell at offset 0x{offset:x} has size 0x{size:x}, past the end of its hive bin "
                f"(0x{self._bin_ends[index]:x})",
                offset,
            )
        return pos + 4, pos + size

    def _cell_fail(self, offset: int, what: str, owner: Key | None, problem: str) -> NoReturn:
        of = "" if owner is None else f" of {owner._describe()}"
        self._fail(f"{what}{of} at offset 0x{offset:x} {problem}", offset)

    def _key_at(self, offset: int, parent: Key | None, what: str) -> Key:
        start, end = self._cell(offset, what, parent)
        data = self._data
        if end - start < 76 or data[start : start + 2] != b"nk":
            self._fail(
                f"{what} at offset 0x{offset:x} is not a key node (signature {data[start : start + 2]!r})", offset
            )
        (_, flags, stamp, _, parent_offset, n_sub, _, sub_list, _, n_values, value_list, _, _, _, _, _, _, _,
         name_len, _) = _NK.unpack_from(data, start)  # fmt: skip
        if 76 + name_len > end - start:
            self._fail(f"key node at offset 0x{offset:x} has a {name_len}-byte name but its cell is too small", offset)
        raw = data[start + 76 : start + 76 + name_len]
        name = raw.decode("latin-1") if flags & _KEY_COMP_NAME else raw.decode("utf-16-le", "replace")
        if parent is not None:
            if parent_offset != parent.offset:
                self._fail(
                    f"key node at offset 0x{offset:x} ({name!r}) is listed under {parent._describe()} "
                    f"but names 0x{parent_offset:x} as its parent",
                    offset,
                )
            if parent._depth + 1 > MAX_DEPTH:
                self._fail(f"keys nested deeper than {MAX_DEPTH} levels at offset 0x{offset:x}", offset)
        return Key(self, offset, name, stamp, n_sub, sub_list, n_values, value_list, parent)

    def _subkey_offsets(self, key: Key) -> list[int]:
        if key._n_sub == 0:
            return []
        data = self._data
        start, end = self._cell(key._sub_list, "subkey list", key)
        sig = data[start : start + 2]
        if sig == b"ri":
            (count,) = _U16.unpack_from(data, start + 2)
            if 4 + 4 * count > end - start:
                self._fail(f"subkey index at offset 0x{key._sub_list:x} is too small for {count} entries")
            lists = struct.unpack_from(f"<{count}I", data, start + 4)
            if len(set(lists)) != len(lists):
                self._fail(f"subkey index at offset 0x{key._sub_list:x} lists the same subkey list twice")
            offsets: list[int] = []
            for sub in lists:
                offsets.extend(self._leaf_list(sub, nested=True))
        else:
            offsets = self._leaf_list(key._sub_list, nested=False)
        if len(set(offsets)) != len(offsets):
            self._fail(f"subkey list of {key._describe()} lists the same key twice", key._sub_list)
        return offsets

    def _leaf_list(self, offset: int, *, nested: bool) -> list[int]:
        data = self._data
        start, end = self._cell(offset, "subkey list")
        sig = data[start : start + 2]
        (count,) = _U16.unpack_from(data, start + 2) if end - start >= 4 else (0,)
        if sig in (b"lf", b"lh"):
            if 4 + 8 * count > end - start:
                self._fail(f"subkey list at offset 0x{offset:x} is too small for {count} entries", offset)
            return list(struct.unpack_from(f"<{2 * count}I", data, start + 4)[::2])
        if sig == b"li":
            if 4 + 4 * count > end - start:
                self._fail(f"subkey list at offset 0x{offset:x} is too small for {count} entries", offset)
            return list(struct.unpack_from(f"<{count}I", data, start + 4))
        if sig == b"ri" and nested:
            self._fail(f"subkey index at offset 0x{offset:x} is nested inside another index", offset)
        self._fail(f"subkey list at offset 0x{offset:x} has an unknown signature {sig!r}", offset)

    def _name_map(self, key: Key) -> tuple[dict[str, int], Unreadable | None]:
        cached = self._name_maps.get(key.offset)
        if cached is not None:
            return cached
        names: dict[str, int] = {}
        error: Unreadable | None = None
        data = self._data
        for child in self._subkey_offsets(key):
            try:
                start, end = self._cell(child, "subkey", key)
                if end - start < 76 or data[start : start + 2] != b"nk":
                    self._fail(f"subkey of {key._describe()} at offset 0x{child:x} is not a key node", child)
                (flags,) = _U16.unpack_from(data, start + 2)
                (name_len,) = _U16.unpack_from(data, start + 72)
                if 76 + name_len > end - start:
                    self._fail(f"key node at offset 0x{child:x} has a {name_len}-byte name but its cell is too small")
            except Unreadable as exc:
                error = error or exc
                continue
            raw = data[start + 76 : start + 76 + name_len]
            name = raw.decode("latin-1") if flags & _KEY_COMP_NAME else raw.decode("utf-16-le", "replace")
            names.setdefault(_upcase(name), child)
        self._name_maps[key.offset] = (names, error)
        return names, error

    def _value_offsets(self, key: Key) -> tuple[int, ...]:
        if key._n_values == 0:
            return ()
        start, end = self._cell(key._value_list, "value list", key)
        if 4 * key._n_values > end - start:
            self._fail(
                f"value list at offset 0x{key._value_list:x} of {key._describe()} holds {key._n_values} entries "
                f"but its cell has room for {(end - start) // 4}",
                key._value_list,
            )
        return struct.unpack_from(f"<{key._n_values}I", self._data, start)

    def _value_header(self, offset: int) -> tuple[str, int, int, int]:
        """(name, type, size field, data offset field) of the vk cell at ``offset``."""
        start, end = self._cell(offset, "value")
        data = self._data
        if end - start < 20 or data[start : start + 2] != b"vk":
            self._fail(
                f"value at offset 0x{offset:x} is not a value cell (signature {data[start : start + 2]!r})", offset
            )
        _, name_len, size, data_offset, kind, flags, _ = _VK.unpack_from(data, start)
        if 20 + name_len > end - start:
            self._fail(f"value at offset 0x{offset:x} has a {name_len}-byte name but its cell is too small", offset)
        raw = data[start + 20 : start + 20 + name_len]
        name = raw.decode("latin-1") if flags & _VALUE_COMP_NAME else raw.decode("utf-16-le", "replace")
        return name, kind, size, data_offset

    def _value_data(self, vk: int, size: int, data_offset: int) -> bytes:
        if size & 0x80000000:
            length = size & 0x7FFFFFFF
            if length > 4:
                self._fail(f"value at offset 0x{vk:x} claims {length} bytes of inline data (at most 4 fit)", vk)
            return _U32.pack(data_offset)[:length]
        if size == 0:
            return b""
        if size > self._bins_size:
            self._fail(f"value at offset 0x{vk:x} claims {size} bytes of data, more than the whole hive", vk)
        start, end = self._cell(data_offset, f"data of the value at 0x{vk:x}")
        data = self._data
        if size > BIG_DATA_SEGMENT and self.version[1] >= 4 and data[start : start + 2] == b"db":
            return self._big_data(vk, data_offset, start, end, size)
        if size > end - start:
            self._fail(
                f"data of the value at 0x{vk:x} is {size} bytes but its cell at 0x{data_offset:x} holds {end - start}",
                data_offset,
            )
        return data[start : start + size]

    def _big_data(self, vk: int, offset: int, start: int, end: int, size: int) -> bytes:
        data = self._data
        if end - start < 8:
            self._fail(f"big data record at offset 0x{offset:x} is too small", offset)
        (count,) = _U16.unpack_from(data, start + 2)
        (list_offset,) = _U32.unpack_from(data, start + 4)
        needed = -(-size // BIG_DATA_SEGMENT)
        if count < needed:
            self._fail(
                f"big data record at offset 0x{offset:x} has {count} segments; {size} bytes need {needed}", offset
            )
        list_start, list_end = self._cell(list_offset, f"segment list of the big data at 0x{offset:x}")
        if 4 * count > list_end - list_start:
            self._fail(f"big data segment list at offset 0x{list_offset:x} is too small for {count} entries")
        parts = []
        remaining = size
        for segment in struct.unpack_from(f"<{needed}I", data, list_start):
            seg_start, seg_end = self._cell(segment, f"big data segment of the value at 0x{vk:x}")
            take = min(remaining, BIG_DATA_SEGMENT)
            if take > seg_end - seg_start:
                self._fail(
                    f"big data segment at offset 0x{segment:x} holds {seg_end - seg_start} bytes, {take} needed",
                    segment,
                )
            parts.append(data[seg_start : seg_start + take])
            remaining -= take
        return b"".join(parts)

    # --- public -------------------------------------------------------------------------------------------

    @property
    def root(self) -> Key:
        return self._root

    def key(self, path: str) -> Key | None:
        """The key at ``path`` ("ControlSet001\\\\Services", case-insensitive, "" = root), or None if absent.

        Raises Unreadable only when a cell on the way is corrupt and the key could be behind it."""
        key = self._root
        for part in path.strip("\\").split("\\") if path.strip("\\") else ():
            child = key.subkey(part)
            if child is None:
                return None
            key = child
        return key


class Key:
    """One registry key (``nk`` cell). Subkeys and values are read when asked for."""

    __slots__ = (
        "_depth",
        "_hive",
        "_lineage",
        "_n_sub",
        "_n_values",
        "_parent",
        "_stamp",
        "_sub_list",
        "_value_list",
        "name",
        "offset",
    )

    def __init__(
        self,
        hive: Hive,
        offset: int,
        name: str,
        stamp: int,
        n_sub: int,
        sub_list: int,
        n_values: int,
        value_list: int,
        parent: Key | None,
    ) -> None:
        self._hive = hive
        self.offset = offset
        self.name = name
        self._stamp = stamp
        self._n_sub = n_sub
        self._sub_list = sub_list
        self._n_values = n_values
        self._value_list = value_list
        self._parent = parent
        self._depth: int = 0 if parent is None else parent._depth + 1
        self._lineage: frozenset[int] | None = None

    def __repr__(self) -> str:
        return f"<Key {self.path or '(root)'!r} at 0x{self.offset:x}>"

    @property
    def last_written(self) -> datetime | None:
        return _filetime(self._stamp)

    @property
    def path(self) -> str:
        """Path from the root key ("" for the root), with the names as stored."""
        parts = []
        key: Key | None = self
        while key is not None and key._parent is not None:
            parts.append(key.name)
            key = key._parent
        return "\\".join(reversed(parts))

    def _describe(self) -> str:
        return f"key '{self.path}' (0x{self.offset:x})" if self._parent is not None else f"root key (0x{self.offset:x})"

    def _ancestry(self) -> frozenset[int]:
        if self._lineage is None:
            above = self._parent._ancestry() if self._parent is not None else frozenset()
            self._lineage = above | {self.offset}
        return self._lineage

    def _child(self, offset: int) -> Key:
        if offset in self._ancestry():
            self._hive._fail(
                f"subkey cycle: {self._describe()} lists the key at 0x{offset:x}, its own ancestor, as a subkey",
                offset,
            )
        return self._hive._key_at(offset, self, "subkey")

    def subkeys(self) -> list[Key]:
        """Every subkey, in stored order (sorted by upper-cased name in a hive written by Windows)."""
        return [self._child(offset) for offset in self._hive._subkey_offsets(self)]

    def subkey(self, name: str) -> Key | None:
        """The subkey called ``name`` (case-insensitive), or None."""
        if self._n_sub == 0 or "\\" in name:
            return None
        names, error = self._hive._name_map(self)
        offset = names.get(_upcase(name))
        if offset is None:
            if error is not None:
                raise error
            return None
        return self._child(offset)

    def values(self) -> list[Value]:
        """Every value, in stored order."""
        hive = self._hive
        out = []
        for vk in hive._value_offsets(self):
            name, kind, size, data_offset = hive._value_header(vk)
            out.append(Value(name, kind, hive._value_data(vk, size, data_offset)))
        return out

    def value(self, name: str) -> Value | None:
        """The value called ``name`` (case-insensitive; "" = the default value), or None."""
        hive = self._hive
        wanted = _upcase(name)
        error: Unreadable | None = None
        for vk in hive._value_offsets(self):
            try:
                vname, kind, size, data_offset = hive._value_header(vk)
            except Unreadable as exc:
                error = error or exc
                continue
            if _upcase(vname) == wanted:
                return Value(vname, kind, hive._value_data(vk, size, data_offset))
        if error is not None:
            raise error
        return None


def values_of(key: Key | None, *, lowercase: bool = False) -> dict[str, str | int | bytes | list[str] | None]:
    """A key's values as Python values by name ({} for a missing key); ``lowercase`` folds the names."""
    if key is None:
        return {}
    return {(v.name.lower() if lowercase else v.name): v.as_python() for v in key.values()}
