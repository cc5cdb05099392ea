"""A small, correct writer for Windows registry hive files (``regf``, format 1.5), for tests.

hivex cannot create a hive from nothing and stores big values without ``db`` records (which libregf then
rejects), so tests that need a hive build one here from a plain mapping::

    data = build_hive({
        "ControlSet001\\\\Services\\\\Tcpip\\\\Parameters": {"Hostname": sz("vm"), "": sz("default")},
        "Select": {"Current": dword(1)},
    })

Every ancestor key is implied. Key paths and value names are case-insensitive, as in the registry (two
spellings of one key are merged, the first spelling wins; two value names differing only in case are an error).

What is written: a base block (equal sequence numbers, checksum, hive bins length, root cell offset,
version 1.5), hive bins in multiples of 4 KiB, one ``nk`` cell per key (no class name, the subkey list sorted
by upper-cased name as Windows does: an ``lh`` list with name hashes, or an ``ri`` index of ``lh`` lists
above :data:`LH_MAX` subkeys), a value list and ``vk`` cells per value (data of 4 bytes or less inline, with
the high bit of the size set; data over :data:`BIG_DATA_SEGMENT` bytes split into ``db`` big-data segments,
each segment cell with 4 bytes of slack as hivex expects), and one ``sk`` security cell shared by every key.
Names are stored as compressed (Latin-1) names when they can be, else UTF-16LE. Each key's cells (key, values,
subkey list) come before its subtree. The root key's parent field is 0xFFFFFFFF. The output is deterministic:
same spec, same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "BIG_DATA_SEGMENT",
    "DEFAULT_TIMESTAMP",
    "LH_MAX",
    "REG_BINARY",
    "REG_DWORD",
    "REG_EXPAND_SZ",
    "REG_MULTI_SZ",
    "REG_NONE",
    "REG_QWORD",
    "REG_SZ",
    "HiveSpec",
    "RegValue",
    "binary",
    "build_hive",
    "dword",
    "expand_sz",
    "lh_hash",
    "multi_sz",
    "qword",
    "sz",
]

REG_NONE = 0
REG_SZ = 1
REG_EXPAND_SZ = 2
REG_BINARY = 3
REG_DWORD = 4
REG_MULTI_SZ = 7
REG_QWORD = 11

#: 2020-01-01T00:00:00Z as a FILETIME (100 ns ticks since 1601-01-01): fixed so output is reproducible.
DEFAULT_TIMESTAMP = 132223104000000000
#: Values longer than this are stored as ``db`` big data (Windows' limit for one data cell: 16,344 bytes).
BIG_DATA_SEGMENT = 16344
#: Most subkeys in one ``lh`` list; more go into an ``ri`` index of several ``lh`` lists.
LH_MAX = 500

_HBIN_HEADER = 32
_PAGE = 4096
_NIL = 0xFFFFFFFF


@dataclass(frozen=True)
class RegValue:
    """One registry value's type (``REG_*`` or any 32-bit int) and raw data bytes."""

    type: int
    data: bytes


HiveSpec = Mapping[str, Mapping[str, RegValue]]


def sz(text: str) -> RegValue:
    """REG_SZ: UTF-16LE with a NUL terminator."""
    return RegValue(REG_SZ, (text + "\0").encode("utf-16-le"))


def expand_sz(text: str) -> RegValue:
    """REG_EXPAND_SZ: UTF-16LE with a NUL terminator."""
    return RegValue(REG_EXPAND_SZ, (text + "\0").encode("utf-16-le"))


def dword(n: int) -> RegValue:
    """REG_DWORD, little-endian; negative numbers down to -2**31 are stored as two's complement."""
    if not -(2**31) <= n < 2**32:
        raise ValueError(f"dword out of range: {n}")
    return RegValue(REG_DWORD, struct.pack("<I", n & 0xFFFFFFFF))


def qword(n: int) -> RegValue:
    """REG_QWORD, little-endian; negative numbers down to -2**63 are stored as two's complement."""
    if not -(2**63) <= n < 2**64:
        raise ValueError(f"qword out of range: {n}")
    return RegValue(REG_QWORD, struct.pack("<Q", n & 0xFFFFFFFFFFFFFFFF))


def multi_sz(items: Sequence[str]) -> RegValue:
    """REG_MULTI_SZ: each string NUL-terminated, then one more NUL (an empty list is a single NUL)."""
    if isinstance(items, str):
        raise TypeError("multi_sz takes a sequence of strings, not one string")
    for item in items:
        if not item or "\0" in item:
            raise ValueError(f"REG_MULTI_SZ items must be non-empty and contain no NUL: {item!r}")
    return RegValue(REG_MULTI_SZ, "".join(item + "\0" for item in items).encode("utf-16-le") + b"\0\0")


def binary(data: bytes | bytearray | memoryview) -> RegValue:
    """REG_BINARY: the bytes as given."""
    return RegValue(REG_BINARY, bytes(data))


def _upcase(name: str) -> str:
    # Windows upcases one UTF-16 code unit at a time (RtlUpcaseUnicodeChar): no "ß" -> "SS" expansion.
    out = []
    for ch in name:
        up = ch.upper()
        out.append(up if len(up) == 1 else ch)
    return "".join(out)


def lh_hash(name: str) -> int:
    """The ``lh`` subkey-list hash: h = h * 37 + upcase(code unit), over the UTF-16 code units of the name."""
    units = _upcase(name).encode("utf-16-le")
    h = 0
    for (unit,) in struct.iter_unpack("<H", units):
        h = (h * 37 + unit) & 0xFFFFFFFF
    return h


def _sort_key(name: str) -> bytes:
    # Case-insensitive order of upper-cased UTF-16 code units, as the kernel compares key names.
    return _upcase(name).encode("utf-16-be")


def _encode_name(name: str) -> tuple[bytes, bool]:
    """(stored bytes, compressed?) — Latin-1 "compressed" names when possible, else UTF-16LE."""
    try:
        return name.encode("latin-1"), True
    except UnicodeEncodeError:
        return name.encode("utf-16-le"), False


@dataclass
class _Key:
    name: str
    values: dict[str, RegValue] = field(default_factory=dict)
    children: dict[str, _Key] = field(default_factory=dict)  # upcased name -> key


def _tree(spec: HiveSpec, root_name: str) -> _Key:
    root = _Key(root_name)
    for path, values in spec.items():
        node = root
        if path:
            for part in path.split("\\"):
                if not part:
                    raise ValueError(f"empty key name in path {path!r}")
                if len(_encode_name(part)[0]) > 0xFFFF:
                    raise ValueError(f"key name too long in path {path!r}")
                fold = _upcase(part)
                child = node.children.get(fold)
                if child is None:
                    child = node.children[fold] = _Key(part)
                node = child
        for name, value in values.items():
            if not isinstance(value, RegValue):
                raise TypeError(f"{path!r}: value {name!r} is not a RegValue: {value!r}")
            if not 0 <= value.type <= 0xFFFFFFFF:
                raise ValueError(f"{path!r}: value {name!r} type out of range: {value.type}")
            if len(_encode_name(name)[0]) > 0xFFFF:
                raise ValueError(f"{path!r}: value name too long")
            clash = next((n for n in node.values if _upcase(n) == _upcase(name) and n != name), None)
            if clash is not None:
                raise ValueError(f"{path!r}: value names {clash!r} and {name!r} differ only in case")
            node.values[name] = value
    return root


def _security_descriptor() -> bytes:
    """A self-relative security descriptor: owner Administrators, group SYSTEM, DACL SYSTEM/Administrators full
    control, Users read — inherited by subkeys."""

    def sid(*subs: int) -> bytes:
        return struct.pack("<BB", 1, len(subs)) + (5).to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *subs)

    system, admins, users = sid(18), sid(32, 544), sid(32, 545)
    aces = b""
    for mask, who in ((0x000F003F, system), (0x000F003F, admins), (0x00020019, users)):
        aces += struct.pack("<BBHI", 0, 0x02, 8 + len(who), mask) + who  # ACCESS_ALLOWED, CONTAINER_INHERIT
    dacl = struct.pack("<BBHHH", 2, 0, 8 + len(aces), 3, 0) + aces
    owner_off = 20
    group_off = owner_off + len(admins)
    dacl_off = group_off + len(system)
    header = struct.pack("<BBHIIII", 1, 0, 0x8004, owner_off, group_off, 0, dacl_off)  # SELF_RELATIVE|DACL_PRESENT
    return header + admins + system + dacl


class _Cells:
    """Cell allocator: cells are laid out in order into hive bins of 4 KiB multiples; no cell spans two bins."""

    def __init__(self) -> None:
        self.bins: list[tuple[int, int]] = []  # (offset, size)
        self.cells: dict[int, bytes] = {}  # offset -> payload (without the size field)
        self.sizes: dict[int, int] = {}  # offset -> cell size (with the size field, 8-aligned)
        self.pos = 0
        self.end = 0

    def alloc(self, payload_len: int) -> int:
        size = (payload_len + 4 + 7) & ~7
        if self.pos + size > self.end:
            start = self.end
            bin_size = (_HBIN_HEADER + size + _PAGE - 1) // _PAGE * _PAGE
            self.bins.append((start, bin_size))
            self.pos = start + _HBIN_HEADER
            self.end = start + bin_size
        offset = self.pos
        self.pos += size
        self.sizes[offset] = size
        return offset

    def put(self, offset: int, payload: bytes) -> None:
        if len(payload) + 4 > self.sizes[offset]:
            raise AssertionError(f"cell 0x{offset:x} overflows")
        self.cells[offset] = payload

    def add(self, payload: bytes) -> int:
        offset = self.alloc(len(payload))
        self.put(offset, payload)
        return offset

    def image(self, timestamp: int) -> bytes:
        out = bytearray(self.end)
        for index, (start, size) in enumerate(self.bins):
            stamp = timestamp if index == 0 else 0
            out[start : start + _HBIN_HEADER] = struct.pack("<4sIIQQI", b"hbin", start, size, 0, stamp, 0)
        for offset, payload in self.cells.items():
            size = self.sizes[offset]
            out[offset : offset + 4] = struct.pack("<i", -size)
            out[offset + 4 : offset + 4 + len(payload)] = payload
        # Unused space at the end of each bin is one free cell (positive size).
        for start, size in self.bins:
            last = start + _HBIN_HEADER
            while last in self.sizes:
                last += self.sizes[last]
            if last < start + size:
                out[last : last + 4] = struct.pack("<i", start + size - last)
        return bytes(out)


def build_hive(spec: HiveSpec, *, root_name: str = "ROOT", timestamp: int = DEFAULT_TIMESTAMP) -> bytes:
    """Serialise ``spec`` (key path -> {value name -> RegValue}, "" = root key / default value) as a regf hive."""
    if not 0 <= timestamp < 2**64:
        raise ValueError(f"timestamp is not a FILETIME: {timestamp}")
    root = _tree(spec, root_name)
    cells = _Cells()
    key_count = _count(root)

    def write_key(key: _Key, parent: int | None, sk_holder: list[int]) -> int:
        name, compressed = _encode_name(key.name)
        nk = cells.alloc(76 + len(name))
        if not sk_holder:  # the shared sk cell sits right after the root key, as in Windows hives
            sd = _security_descriptor()
            sk = cells.alloc(20 + len(sd))
            cells.put(sk, struct.pack("<2sHIIII", b"sk", 0, sk, sk, key_count, len(sd)) + sd)
            sk_holder.append(sk)
        # Values.
        value_list = _NIL
        max_value_name = max_value_data = 0
        if key.values:
            vks = []
            for vname, value in key.values.items():
                vk_name, vk_compressed = _encode_name(vname)
                data = value.data
                if len(data) <= 4:
                    size_field, data_field = len(data) | 0x80000000, int.from_bytes(data.ljust(4, b"\0"), "little")
                elif len(data) <= BIG_DATA_SEGMENT:
                    size_field, data_field = len(data), cells.add(data)
                else:
                    size_field, data_field = len(data), _big_data(cells, data)
                flags = 0x0001 if vk_compressed else 0
                vks.append(
                    cells.add(
                        struct.pack("<2sHIIIHH", b"vk", len(vk_name), size_field, data_field, value.type, flags, 0)
                        + vk_name
                    )
                )
                max_value_name = max(max_value_name, len(vname.encode("utf-16-le")))
                max_value_data = max(max_value_data, len(data))
            value_list = cells.add(struct.pack(f"<{len(vks)}I", *vks))
        # Subkeys, sorted the way Windows keeps them.
        children = sorted(key.children.values(), key=lambda k: _sort_key(k.name))
        subkey_list = _NIL
        max_subkey_name = 0
        if children:
            # The list cells come right after the key's own cells and before its subtree (locality, as in
            # Windows hives); their contents are filled in once the children's offsets are known.
            chunks = [range(i, min(i + LH_MAX, len(children))) for i in range(0, len(children), LH_MAX)]
            lists = [cells.alloc(4 + 8 * len(chunk)) for chunk in chunks]
            if len(lists) == 1:
                subkey_list = lists[0]
            else:
                subkey_list = cells.add(struct.pack(f"<2sH{len(lists)}I", b"ri", len(lists), *lists))
            offsets = [write_key(child, nk, sk_holder) for child in children]
            for list_offset, chunk in zip(lists, chunks, strict=True):
                entries = b"".join(struct.pack("<II", offsets[i], lh_hash(children[i].name)) for i in chunk)
                cells.put(list_offset, struct.pack("<2sH", b"lh", len(chunk)) + entries)
            max_subkey_name = max(len(c.name.encode("utf-16-le")) for c in children)
        flags = 0x0020 if compressed else 0
        if parent is None:
            flags |= 0x0004 | 0x0008  # KEY_HIVE_ENTRY | KEY_NO_DELETE
        cells.put(
            nk,
            struct.pack(
                "<2sHQIIIIIIIIIIIIIIIHH",
                b"nk",
                flags,
                timestamp,
                0,  # access bits
                _NIL if parent is None else parent,
                len(children),
                0,  # volatile subkeys
                subkey_list,
                _NIL,
                len(key.values),
                value_list,
                sk_holder[0],
                _NIL,  # class name
                max_subkey_name,
                0,  # largest class name
                max_value_name,
                max_value_data,
                0,  # work var
                len(name),
                0,  # class name length
            )
            + name,
        )
        return nk

    root_offset = write_key(root, None, [])
    bins = cells.image(timestamp)

    base = bytearray(_PAGE)
    file_name = root_name.encode("utf-16-le")[:62]
    struct.pack_into("<4sIIQIIIIIII", base, 0, b"regf", 1, 1, timestamp, 1, 5, 0, 1, root_offset, len(bins), 1)
    base[48 : 48 + len(file_name)] = file_name
    checksum = 0
    for (word,) in struct.iter_unpack("<I", bytes(base[:508])):
        checksum ^= word
    if checksum == 0xFFFFFFFF:
        checksum = 0xFFFFFFFE
    elif checksum == 0:
        checksum = 1
    struct.pack_into("<I", base, 508, checksum)
    return bytes(base) + bins


def _count(key: _Key) -> int:
    total, stack = 0, [key]
    while stack:
        node = stack.pop()
        total += 1
        stack.extend(node.children.values())
    return total


def _big_data(cells: _Cells, data: bytes) -> int:
    # Each segment cell gets at least 4 bytes of slack after its data, as in Windows hives (a full segment is a
    # 16,352-byte cell): hivex reads (cell size - 8) bytes per segment and would cut a short last segment.
    segments = [cells.add(data[i : i + BIG_DATA_SEGMENT] + b"\0" * 4) for i in range(0, len(data), BIG_DATA_SEGMENT)]
    if len(segments) > 0xFFFF:
        raise ValueError(f"value too big for a hive: {len(data)} bytes")
    segment_list = cells.add(struct.pack(f"<{len(segments)}I", *segments))
    return cells.add(struct.pack("<2sHI", b"db", len(segments), segment_list))
