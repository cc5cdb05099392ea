"""Every VMR002 for a damaged hive names the hive (its part and volume path) and where in it (issue 11, item 5).

Each case damages the lint-clean skeleton's SYSTEM or SOFTWARE hive in one way the regf reader distinguishes
(the base block, the hive bins, a cell, a key node, a subkey list, a value list, value data), lints the image with
every content rule and checks each VMR002 location: ``<NAME> hive \\Windows\\System32\\config\\<NAME> ... @ <where>``,
where is a hive-bins offset (``0x1a20``) or a base-block offset (``base block offset 0x14``), never absent and
never an offset without the hive.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.testing.images import missing_tools
from tests.images.test_hive_damage import BASE, FAR, _hive_bytes, _key, _lint, _point_list_entry, _vmr002, _with_hive

pytestmark = [
    pytest.mark.skipif(bool(missing_tools()), reason=f"image tools missing: {missing_tools()} (run ./dev setup)"),
    pytest.mark.xdist_group("image-lint"),
]

BINS = 4096  # file offset of the hive bins data: cell offsets are relative to it


def _fix_checksum(data: bytearray) -> None:
    checksum = 0
    for (word,) in struct.iter_unpack("<I", bytes(data[:508])):
        checksum ^= word
    struct.pack_into("<I", data, 508, checksum)


def _base_field(offset: int, value: int) -> Callable[[bytearray], bytearray]:
    def damage(data: bytearray) -> bytearray:
        struct.pack_into("<I", data, offset, value)
        _fix_checksum(data)
        return data

    return damage


def _signature(data: bytearray) -> bytearray:
    data[0:4] = b"rege"
    return data


def _too_small(data: bytearray) -> bytearray:
    return data[:100]


def _checksum(data: bytearray) -> bytearray:
    data[508] ^= 0xFF
    return data


def _truncated(data: bytearray) -> bytearray:
    return data[: BINS + 4096]  # the first hive bin only; the base block still declares them all


def _no_hive_bin(data: bytearray) -> bytearray:
    data[BINS : BINS + 4] = b"xxxx"  # every bin is then unreadable from the first
    return data


def _second_bin_header(data: bytearray) -> bytearray:
    second = BINS + int.from_bytes(data[BINS + 8 : BINS + 12], "little")
    data[second : second + 4] = b"xxxx"
    return data


def _zero_cell(data: bytearray) -> bytearray:
    second = BINS + int.from_bytes(data[BINS + 8 : BINS + 12], "little")
    data[second + 32 : second + 36] = b"\0\0\0\0"
    return data


def _root_far(data: bytearray) -> bytearray:
    return _base_field(0x24, FAR)(data)


def _select_list_far(data: bytearray) -> bytearray:
    _point_list_entry(data, "", "Select", FAR)
    return data


def _select_values_far(data: bytearray) -> bytearray:
    select = _key(data, "Select")
    struct.pack_into("<I", data, BINS + select.offset + 4 + 0x28, FAR)  # nk: value list offset
    return data


def _subkey_name_too_long(data: bytearray) -> bytearray:
    """The ControlSet001 key node claims a name longer than its cell (met while listing the root's subkeys)."""
    key = _key(data, "ControlSet001")
    struct.pack_into("<H", data, BINS + key.offset + 4 + 72, 0xFFF0)
    return data


def _list_signature(data: bytearray) -> bytearray:
    services = _key(data, "ControlSet001\\Services")
    data[BINS + services._sub_list + 4 : BINS + services._sub_list + 6] = b"zz"
    return data


def _value_data_far(data: bytearray) -> bytearray:
    """The data cell of CurrentVersion's ProductName (SOFTWARE) points outside the hive."""
    key = _key(data, "Microsoft\\Windows NT\\CurrentVersion")
    list_cell = BINS + key._value_list + 4
    for index in range(key._n_values):
        vk = int.from_bytes(data[list_cell + 4 * index : list_cell + 4 * index + 4], "little")
        start = BINS + vk + 4
        name_len = int.from_bytes(data[start + 2 : start + 4], "little")
        if data[start + 20 : start + 20 + name_len].lower() == b"productname":
            struct.pack_into("<I", data, start + 8, FAR)  # vk: data offset
            return data
    raise AssertionError("no ProductName value")


CASES: dict[str, tuple[str, Callable[[bytearray], bytearray]]] = {
    "base-signature": ("SYSTEM", _signature),
    "base-too-small": ("SYSTEM", _too_small),
    "base-major-version": ("SOFTWARE", _base_field(0x14, 0)),
    "base-minor-version": ("SYSTEM", _base_field(0x18, 9)),
    "base-transaction-log": ("SYSTEM", _base_field(0x1C, 1)),
    "base-file-type": ("SYSTEM", _base_field(0x1C, 7)),
    "base-file-format": ("SYSTEM", _base_field(0x20, 2)),
    "base-bins-size": ("SYSTEM", _base_field(0x28, 0x1234)),
    "base-checksum": ("SYSTEM", _checksum),
    "truncated": ("SYSTEM", _truncated),
    "no-hive-bin": ("SYSTEM", _no_hive_bin),
    "bad-hive-bin-header": ("SYSTEM", _second_bin_header),
    "zero-size-cell": ("SYSTEM", _zero_cell),
    "root-key-outside": ("SYSTEM", _root_far),
    "subkey-list-entry-outside": ("SYSTEM", _select_list_far),
    "value-list-outside": ("SYSTEM", _select_values_far),
    "key-name-past-its-cell": ("SYSTEM", _subkey_name_too_long),
    "subkey-list-signature": ("SYSTEM", _list_signature),
    "value-data-outside": ("SOFTWARE", _value_data_far),
}

_WHERE = re.compile(r" @ (base block offset 0x[0-9a-f]+|0x[0-9a-f]+)$")


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_vmr002_names_the_hive_and_where(case: str, image_cache: Path) -> None:
    hive, damage = CASES[case]
    data = damage(_hive_bytes(BASE, hive))
    _, findings, _ = _lint(_with_hive(BASE, hive, data), image_cache)
    found = _vmr002(findings)
    assert found, findings
    for _, location, message in found:
        assert location.startswith(f"{hive} hive \\Windows\\System32\\config\\{hive}"), location
        assert _WHERE.search(location), (location, message)


# ---- other parts: a file the extractor parses says where, too -------------------------------------------------


@pytest.mark.parametrize(("text", "line"), [(b"ImageState=IMAGE_STATE_COMPLETE\r\n", 1), (b"[State]\r\nnoise\r\n", 2)])
def test_a_malformed_state_ini_vmr002_names_the_file_and_the_line(text: bytes, line: int, image_cache: Path) -> None:
    spec = BASE.with_changes(files={"Windows/Setup/State/State.ini": text})
    _, findings, _ = _lint(spec, image_cache)
    (found,) = _vmr002(findings)
    assert found[1] == f"State.ini \\Windows\\Setup\\State\\State.ini @ line {line}", found
