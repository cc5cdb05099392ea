"""harness.testing.hivewriter: hives it writes read back identically in hivex, hivexregedit and libregf."""

from __future__ import annotations

import lzma
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.testing.hivewriter import (
    BIG_DATA_SEGMENT,
    DEFAULT_TIMESTAMP,
    REG_BINARY,
    REG_DWORD,
    REG_EXPAND_SZ,
    REG_MULTI_SZ,
    REG_QWORD,
    REG_SZ,
    HiveSpec,
    RegValue,
    binary,
    build_hive,
    dword,
    expand_sz,
    lh_hash,
    multi_sz,
    qword,
    sz,
)

hivex = pytest.importorskip(
    "hivex", reason="Debian's python3-hivex is not importable (venv needs system site-packages)"
)

REAL_HIVES = Path("/work/shared/samples/hives/real")

# key path (tuple of names, root = ()) -> {value name: (type, data)}
Tree = dict[tuple[str, ...], dict[str, tuple[int, bytes]]]


def expected_tree(spec: HiveSpec) -> Tree:
    tree: Tree = {(): {}}
    for path, values in spec.items():
        parts = tuple(path.split("\\")) if path else ()
        for depth in range(1, len(parts) + 1):
            tree.setdefault(parts[:depth], {})
        tree[parts].update({name: (v.type, v.data) for name, v in values.items()})
    return tree


def sort_key(name: str) -> bytes:
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in name).encode("utf-16-be")


BIG = bytes(range(256)) * 160  # 40,960 bytes: stored as db big data
FULL_SPEC: dict[str, dict[str, RegValue]] = {
    "": {"": sz("root default"), "RootDword": dword(7)},
    "ControlSet001\\Services\\Tcpip\\Parameters": {
        "Hostname": sz("vm-01"),
        "DataBasePath": expand_sz("%SystemRoot%\\System32\\drivers\\etc"),
        "SearchList": multi_sz(["contoso.com", "fabrikam.com"]),
        "EmptyMulti": multi_sz([]),
        "Dword": dword(0xFFFFFFFF),
        "NegativeDword": dword(-1),
        "Qword": qword(2**40 + 3),
        "Binary2": binary(b"\x01\x02"),
        "Binary4": binary(b"\x01\x02\x03\x04"),
        "Binary5": binary(b"\x01\x02\x03\x04\x05"),
        "Empty": binary(b""),
        "None": RegValue(0, b""),
        "DevProp": RegValue(0xFFFF0012, b"\x01\x02\x03\x04\x05\x06"),
        "Big": binary(BIG),
        "AtSegment": binary(b"\xab" * BIG_DATA_SEGMENT),
        "JustOver": binary(b"\xcd" * (BIG_DATA_SEGMENT + 1)),
        "": sz("default of Parameters"),
    },
    "ControlSet001\\Services\\Tcpip\\Linkage": {},
    "ControlSet001\\Control\\Ünïcødé\\键": {"名前": sz("値"), "Ünï": dword(1), "": expand_sz("%x%")},
    "Select": {"Current": dword(1), "Default": dword(1)},
    "Empty\\Deeper\\Deepest": {},
    "Sorting\\b": {},
    "Sorting\\A": {},
    "Sorting\\_under": {},
    "Sorting\\Zed": {},
    "Sorting\\zz": {},
    "Sorting\\éa": {},
    **{f"Many\\Sub{i:04d}": {"Index": dword(i)} for i in range(1000)},
}


@pytest.fixture(scope="module")
def full_hive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hive") / "FULL"
    path.write_bytes(build_hive(FULL_SPEC))
    return path


def hivex_tree(path: Path) -> tuple[Tree, dict[tuple[str, ...], list[str]]]:
    """Every key (path) -> values, and every key -> child names in stored order, as hivex reads them."""
    h = hivex.Hivex(str(path))
    tree: Tree = {}
    order: dict[tuple[str, ...], list[str]] = {}
    stack: list[tuple[tuple[str, ...], Any]] = [((), h.root())]
    while stack:
        parts, node = stack.pop()
        assert parts not in tree, f"key read twice: {parts}"
        tree[parts] = {h.value_key(v): h.value_value(v) for v in h.node_values(node)}
        children = h.node_children(node)
        order[parts] = [h.node_name(c) for c in children]
        stack.extend(((*parts, h.node_name(c)), c) for c in children)
    return tree, order


# --- hivex -------------------------------------------------------------------------------------------------


def test_hivex_reads_every_key_and_value(full_hive: Path) -> None:
    tree, _ = hivex_tree(full_hive)
    assert tree == expected_tree(FULL_SPEC)


def test_subkeys_are_sorted_by_upper_cased_name(full_hive: Path) -> None:
    _, order = hivex_tree(full_hive)
    for parts, names in order.items():
        assert names == sorted(names, key=sort_key), parts
    assert order[("Sorting",)] == ["A", "b", "Zed", "zz", "_under", "éa"]  # "_" (0x5F) sorts after "Z"


def test_root_name_timestamp_and_helpers_in_hivex(full_hive: Path) -> None:
    h = hivex.Hivex(str(full_hive))
    root = h.root()
    assert h.node_name(root) == "ROOT"
    assert h.node_timestamp(root) == DEFAULT_TIMESTAMP
    assert h.last_modified() == DEFAULT_TIMESTAMP
    params = root
    for name in ("controlset001", "SERVICES", "Tcpip", "Parameters"):  # hivex looks up case-insensitively
        params = h.node_get_child(params, name)
        assert params is not None
    value = {h.value_key(v): v for v in h.node_values(params)}
    assert h.value_string(value["Hostname"]) == "vm-01"
    assert h.value_string(value["DataBasePath"]) == "%SystemRoot%\\System32\\drivers\\etc"
    assert h.value_multiple_strings(value["SearchList"])[:2] == ["contoso.com", "fabrikam.com"]  # hivex adds ""
    assert h.value_dword(value["Dword"]) == -1  # hivex returns a signed int32
    assert h.value_qword(value["Qword"]) == 2**40 + 3
    assert h.value_value(value["Big"]) == (REG_BINARY, BIG)
    many = h.node_get_child(root, "Many")
    assert h.node_nr_children(many) == 1000
    assert h.node_name(h.node_get_child(many, "sub0999")) == "Sub0999"


def test_non_default_root_name_and_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "h"
    path.write_bytes(build_hive({"A": {}}, root_name="CMI-CreateHive{2A7FB991}", timestamp=131000000000000000))
    h = hivex.Hivex(str(path))
    assert h.node_name(h.root()) == "CMI-CreateHive{2A7FB991}"
    assert h.node_timestamp(h.node_get_child(h.root(), "A")) == 131000000000000000


def test_empty_spec_is_a_root_key_only(tmp_path: Path) -> None:
    path = tmp_path / "h"
    path.write_bytes(build_hive({}))
    tree, _ = hivex_tree(path)
    assert tree == {(): {}}


# --- hivexregedit --export -----------------------------------------------------------------------------------

_REG_VALUE = re.compile(r'^(@|"(?P<name>(?:[^"\\]|\\.)*)")=(?P<data>.*)$')


def _perl_line(raw: bytes) -> str:
    # hivexregedit prints without an encoding layer: a line with a character above U+00FF comes out as UTF-8,
    # any other line as Latin-1.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_reg_export(output: bytes) -> Tree:
    tree: Tree = {}
    current: tuple[str, ...] | None = None
    for line in map(_perl_line, output.splitlines()):
        if not line or line.startswith("Windows Registry Editor"):
            continue
        if line.startswith("[") and line.endswith("]"):
            inner = line[1:-1].lstrip("\\")
            current = tuple(inner.split("\\")) if inner else ()
            tree[current] = {}
            continue
        match = _REG_VALUE.match(line)
        assert match and current is not None, f"unparsed line: {line[:80]!r}"
        name = "" if match.group(1) == "@" else re.sub(r"\\(.)", r"\1", match.group("name"))
        data = match.group("data")
        if data.startswith("dword:"):
            tree[current][name] = (REG_DWORD, struct.pack("<I", int(data[6:], 16)))
        elif data.startswith('"'):
            text_value = re.sub(r"\\(.)", r"\1", data[1:-1])
            tree[current][name] = (REG_SZ, (text_value + "\0").encode("utf-16-le"))
        else:
            kind, _, hexdata = data.partition(":")
            value_type = REG_BINARY if kind == "hex" else int(kind[4:-1], 16)
            tree[current][name] = (value_type, bytes.fromhex(hexdata.replace(",", "")))
    return tree


def test_hivexregedit_export_matches_spec(full_hive: Path) -> None:
    exe = shutil.which("hivexregedit")
    if exe is None:
        pytest.skip("hivexregedit is not installed (Debian package libwin-hivex-perl)")
    out = subprocess.run([exe, "--export", str(full_hive), "\\"], capture_output=True, check=True, timeout=120)
    assert parse_reg_export(out.stdout) == expected_tree(FULL_SPEC)


# --- libregf (pyregf) ------------------------------------------------------------------------------------------


def test_libregf_reads_every_key_and_value(full_hive: Path) -> None:
    pyregf = pytest.importorskip("pyregf", reason="libregf-python is not installed")
    f = pyregf.file()
    f.open(str(full_hive))
    try:
        assert not f.is_corrupted()
        assert f.get_format_version() == "1.5"
        tree: Tree = {}
        stack: list[tuple[tuple[str, ...], Any]] = [((), f.get_root_key())]
        while stack:
            parts, key = stack.pop()
            values = {}
            for value in key.values:
                data = value.data or b""
                # libregf returns wrong bytes for inline data of 1 to 3 bytes (see reader-pitfalls.md): hivex and
                # hivexregedit check those; here only their presence and type are compared.
                values[value.name or ""] = (value.type, data)
            tree[parts] = values
            subkeys = list(key.sub_keys)
            assert [k.name for k in subkeys] == sorted((k.name for k in subkeys), key=sort_key)
            stack.extend(((*parts, k.name), k) for k in subkeys)
    finally:
        f.close()
    expected = expected_tree(FULL_SPEC)
    assert tree.keys() == expected.keys()
    for parts, values in expected.items():
        assert tree[parts].keys() == values.keys(), parts
        for name, (value_type, data) in values.items():
            got_type, got_data = tree[parts][name]
            assert got_type == value_type, (parts, name)
            if not 1 <= len(data) <= 3:
                assert got_data == data, (parts, name)


# --- structure ----------------------------------------------------------------------------------------------


def _cell(data: bytes, offset: int) -> bytes:
    start = 0x1000 + offset
    (size,) = struct.unpack_from("<i", data, start)
    assert size < 0, f"cell 0x{offset:x} is not allocated"
    return data[start + 4 : start - size]


def _subkey_list(data: bytes, nk_offset: int) -> bytes:
    nk = _cell(data, nk_offset)
    (list_offset,) = struct.unpack_from("<I", nk, 28)
    return _cell(data, list_offset)


def test_base_block_and_bins(full_hive: Path) -> None:
    data = full_hive.read_bytes()
    sig, seq1, seq2, stamp, major, minor, ftype, fmt, root, bins_len, cluster = struct.unpack_from(
        "<4sIIQIIIIIII", data, 0
    )
    assert (sig, seq1 == seq2, stamp, major, minor, ftype, fmt, cluster) == (
        b"regf",
        True,
        DEFAULT_TIMESTAMP,
        1,
        5,
        0,
        1,
        1,
    )
    assert data[48:56] == "ROOT".encode("utf-16-le")
    checksum = 0
    for (word,) in struct.iter_unpack("<I", data[:508]):
        checksum ^= word
    assert struct.unpack_from("<I", data, 508)[0] == checksum
    assert len(data) == 0x1000 + bins_len
    offset = 0
    while offset < bins_len:
        magic, own_offset, size = struct.unpack_from("<4sII", data, 0x1000 + offset)
        assert (magic, own_offset) == (b"hbin", offset)
        assert size % 4096 == 0 and size > 0
        # cells tile the bin exactly
        cell = offset + 32
        while cell < offset + size:
            (cell_size,) = struct.unpack_from("<i", data, 0x1000 + cell)
            assert cell_size != 0 and abs(cell_size) % 8 == 0
            cell += abs(cell_size)
        assert cell == offset + size
        offset += size
    assert offset == bins_len
    assert _cell(data, root)[:2] == b"nk"
    (flags,) = struct.unpack_from("<H", _cell(data, root), 2)
    assert flags & 0x2C == 0x2C  # hive entry, no delete, compressed name


def test_thousand_subkeys_use_an_ri_index_of_lh_lists(full_hive: Path) -> None:
    data = full_hive.read_bytes()
    root = struct.unpack_from("<I", data, 36)[0]
    lh = _subkey_list(data, root)
    assert lh[:2] == b"lh"
    entries = [struct.unpack_from("<II", lh, 4 + 8 * i) for i in range(struct.unpack_from("<H", lh, 2)[0])]
    many = next(off for off, _ in entries if _cell(data, off)[76:80] == b"Many")
    ri = _subkey_list(data, many)
    assert ri[:2] == b"ri"
    (count,) = struct.unpack_from("<H", ri, 2)
    lists = [_cell(data, struct.unpack_from("<I", ri, 4 + 4 * i)[0]) for i in range(count)]
    assert count == 2 and all(lst[:2] == b"lh" for lst in lists)
    assert sum(struct.unpack_from("<H", lst, 2)[0] for lst in lists) == 1000


def test_big_value_is_stored_as_db_segments(full_hive: Path) -> None:
    data = full_hive.read_bytes()
    count = data.count(b"db")  # every db cell has a two-segment or three-segment list
    assert count >= 2
    # Find every db cell by walking all cells.
    found = []
    offset = 0
    bins_len = struct.unpack_from("<I", data, 40)[0]
    while offset < bins_len:
        size = struct.unpack_from("<I", data, 0x1000 + offset + 8)[0]
        cell = offset + 32
        while cell < offset + size:
            (cell_size,) = struct.unpack_from("<i", data, 0x1000 + cell)
            if cell_size < 0 and data[0x1000 + cell + 4 : 0x1000 + cell + 6] == b"db":
                found.append(struct.unpack_from("<H", data, 0x1000 + cell + 6)[0])
            cell += abs(cell_size)
        offset += size
    assert sorted(found) == [2, 3]  # JustOver (16,345 bytes) and Big (40,960 bytes); AtSegment is one cell


def test_lh_hash_matches_windows_hives() -> None:
    """The lh hashes Windows wrote in a real SYSTEM hive are what lh_hash computes (and the order is ours)."""
    sample = REAL_HIVES / "SYSTEM.xz"
    if not sample.exists():
        pytest.skip(f"sample hive not present: {sample}")
    data = lzma.decompress(sample.read_bytes())
    root = struct.unpack_from("<I", data, 36)[0]
    checked = 0
    for nk_offset in _walk_nk(data, root, depth=3):
        lst = _subkey_list(data, nk_offset) if struct.unpack_from("<I", _cell(data, nk_offset), 20)[0] else b""
        if lst[:2] != b"lh":
            continue
        names = []
        for i in range(struct.unpack_from("<H", lst, 2)[0]):
            child, stored_hash = struct.unpack_from("<II", lst, 4 + 8 * i)
            name = _nk_name(_cell(data, child))
            assert lh_hash(name) == stored_hash, name
            names.append(name)
            checked += 1
        assert names == sorted(names, key=sort_key)
    assert checked > 100


def _nk_name(nk: bytes) -> str:
    (flags,) = struct.unpack_from("<H", nk, 2)
    (length,) = struct.unpack_from("<H", nk, 72)
    raw = nk[76 : 76 + length]
    return raw.decode("latin-1") if flags & 0x20 else raw.decode("utf-16-le")


def _walk_nk(data: bytes, root: int, depth: int) -> Iterator[int]:
    stack = [(root, 0)]
    while stack:
        offset, level = stack.pop()
        yield offset
        nk = _cell(data, offset)
        if level >= depth or not struct.unpack_from("<I", nk, 20)[0]:
            continue
        lst = _subkey_list(data, offset)
        lists = [lst]
        if lst[:2] == b"ri":
            lists = [_cell(data, struct.unpack_from("<I", lst, 4 + 4 * i)[0]) for i in range(lst[2])]
        for sub in lists:
            step = 4 if sub[:2] == b"li" else 8
            for i in range(struct.unpack_from("<H", sub, 2)[0]):
                stack.append((struct.unpack_from("<I", sub, 4 + step * i)[0], level + 1))


# --- API ------------------------------------------------------------------------------------------------------


def test_deterministic_output() -> None:
    assert build_hive(FULL_SPEC) == build_hive(FULL_SPEC)
    assert build_hive({"A": {}}, timestamp=1) != build_hive({"A": {}}, timestamp=2)


def test_helpers_encode_as_windows_does() -> None:
    assert sz("ab") == RegValue(REG_SZ, b"a\0b\0\0\0")
    assert expand_sz("%a%") == RegValue(REG_EXPAND_SZ, "%a%\0".encode("utf-16-le"))
    assert dword(1) == RegValue(REG_DWORD, b"\1\0\0\0")
    assert dword(-1).data == b"\xff\xff\xff\xff"
    assert qword(1) == RegValue(REG_QWORD, b"\1" + b"\0" * 7)
    assert multi_sz(["a", "b"]) == RegValue(REG_MULTI_SZ, "a\0b\0\0".encode("utf-16-le"))
    assert multi_sz([]).data == b"\0\0"
    assert binary(bytearray(b"x")) == RegValue(REG_BINARY, b"x")


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: dword(2**32), ValueError),
        (lambda: qword(-(2**63) - 1), ValueError),
        (lambda: multi_sz(["ok", ""]), ValueError),
        (lambda: multi_sz(["a\0b"]), ValueError),
        (lambda: multi_sz("abc"), TypeError),
        (lambda: build_hive({"A\\\\B": {}}), ValueError),
        (lambda: build_hive({"\\A": {}}), ValueError),
        (lambda: build_hive({"A": {"Name": dword(1), "NAME": dword(2)}}), ValueError),
        (lambda: build_hive({"A": {"x": 1}}), TypeError),  # type: ignore[dict-item]
        (lambda: build_hive({}, timestamp=-1), ValueError),
    ],
)
def test_bad_input_is_rejected(call: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        call()


def test_key_paths_merge_case_insensitively(tmp_path: Path) -> None:
    path = tmp_path / "h"
    path.write_bytes(build_hive({"Software\\Foo": {"a": dword(1)}, "SOFTWARE\\foo\\Bar": {}, "software": {}}))
    tree, _ = hivex_tree(path)
    assert tree == {(): {}, ("Software",): {}, ("Software", "Foo"): {"a": (REG_DWORD, b"\1\0\0\0")},
                    ("Software", "Foo", "Bar"): {}}  # fmt: skip


# --- property: any spec round-trips through hivex ------------------------------------------------------------

_names = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\\\0"), min_size=1, max_size=12)
_values = st.builds(RegValue, st.integers(0, 0xFFFFFFFF), st.binary(max_size=80))
_specs = st.dictionaries(
    st.lists(_names, min_size=0, max_size=3).map("\\".join),
    st.dictionaries(st.text(max_size=8).filter(lambda s: "\0" not in s), _values, max_size=4),
    max_size=6,
)


def _fold_spec(spec: dict[str, dict[str, RegValue]]) -> dict[str, dict[str, RegValue]] | None:
    """The spec the registry would hold (keys merged case-insensitively), or None when two value names clash."""
    out: dict[tuple[str, ...], dict[str, RegValue]] = {}
    canonical: dict[tuple[bytes, ...], tuple[str, ...]] = {}  # first spelling of each key wins
    for path, values in spec.items():
        parts = tuple(path.split("\\")) if path else ()
        real: tuple[str, ...] = ()
        for depth in range(1, len(parts) + 1):
            folded = tuple(sort_key(p) for p in parts[:depth])
            real = canonical.setdefault(folded, (*real, parts[depth - 1]))
        target = out.setdefault(real, {})
        for name, value in values.items():
            if any(sort_key(n) == sort_key(name) and n != name for n in target):
                return None
            target[name] = value
    return {"\\".join(k): v for k, v in out.items()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=_specs)
def test_any_spec_round_trips_through_hivex(spec: dict[str, dict[str, RegValue]], tmp_path: Path) -> None:
    folded = _fold_spec(spec)
    if folded is None:
        with pytest.raises(ValueError):
            build_hive(spec)
        return
    path = tmp_path / "h"
    path.write_bytes(build_hive(spec))
    tree, _ = hivex_tree(path)
    assert tree == expected_tree(folded)
