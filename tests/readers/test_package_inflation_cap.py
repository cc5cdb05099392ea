"""Issue 9, finding 4 for packages: the bytes a package makes the reader inflate are capped over the whole
package, not only per member (7,000 members of exactly 1 MiB each stay under the per-member ratio floor
and cost 26 s of CPU). The refusal is quick and names the package and the cap."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import pytest

from harness.engine.artefact import CSPKG, Artefact
from harness.readers.cspkg import read_package
from harness.readers.errors import Unreadable
from harness.readers.zipsafe import DEFAULT_LIMITS, GIB, MIB, Limits
from harness.testing.cspkg import build_cspkg

from .test_servicemodel_reader import CSDEF


def same_member_zip(count: int, member: bytes, prefix: str = "part") -> bytes:
    """A zip of ``count`` deflated copies of ``member``, written by hand: deflating once and repeating the
    bytes makes a 7,000-member archive in milliseconds."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = comp.compress(member) + comp.flush()
    crc = zlib.crc32(member)
    local, central = bytearray(), bytearray()
    for i in range(count):
        name = f"{prefix}{i}.bin".encode()
        offset = len(local)
        fields = (20, 0, 8, 0, 0x21, crc, len(deflated), len(member), len(name), 0)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields) + name + deflated
        central += struct.pack("<IH", 0x02014B50, 20) + struct.pack("<HHHHHIIIHH", *fields)
        central += struct.pack("<HHHII", 0, 0, 0, 0, offset) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), len(local), 0)
    return bytes(local + central + end)


def _artefact(tmp_path: Path, data: bytes, name: str = "Bomb.cspkg") -> Artefact:
    path = tmp_path / name
    path.write_bytes(data)
    return Artefact.from_path(path, CSPKG)


def test_default_cap_is_far_above_real_packages() -> None:
    # Azure refuses packages over 600 MB; the real samples are 1.5 MB. Parts are mostly stored zips, so what a
    # real package inflates is about its own size.
    assert 600 * 1000 * 1000 < DEFAULT_LIMITS.max_package_inflated <= 2 * GIB


def test_seven_thousand_one_mib_members_refused_quickly(tmp_path: Path) -> None:
    artefact = _artefact(tmp_path, same_member_zip(7_000, bytes(MIB)))
    assert artefact.path.stat().st_size < 16 * MIB
    started = time.process_time()
    with pytest.raises(Unreadable) as info:
        read_package(artefact)
    assert time.process_time() - started < 3.0
    assert info.value.path == artefact.path
    assert "package" in info.value.problem and "1 GiB" in info.value.problem, info.value.problem
    assert "6.8 GiB" in info.value.problem or "7000" in info.value.problem or "7,000" in info.value.problem


def test_real_package_with_many_one_mib_extras_refused(tmp_path: Path) -> None:
    """The same attack appended to a well-formed package (extras are top-level parts, hashed in full)."""
    limits = Limits(max_package_inflated=16 * MIB)
    built = build_cspkg(CSDEF, extra_members={f"extra{i}.bin": bytes(MIB) for i in range(20)})
    with pytest.raises(Unreadable, match=r"over the 16 MiB limit"):
        read_package(_artefact(tmp_path, built.data, "App.cspkg"), limits)
    # and a well-formed package stays well under the cap
    pkg = read_package(_artefact(tmp_path, build_cspkg(CSDEF).data, "Ok.cspkg"), limits)
    assert pkg.definition is not None


def test_real_sample_packages_stay_under_the_cap() -> None:
    samples = sorted(Path(__file__).resolve().parents[3].joinpath("shared", "samples", "cspkg").glob("*.cspkg"))
    if not samples:
        pytest.skip("../shared/samples/cspkg is absent")
    for sample in samples:
        assert read_package(Artefact.from_path(sample, CSPKG), Limits(max_package_inflated=8 * MIB)).definition
