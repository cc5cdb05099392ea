"""Damaged registry hives (issue 9): damage in one hive, key or store is one VMR002 for that part (naming the
hive and the offset), never VMR001 for the whole image, and every rule that does not need the damaged part still
runs.

The damaged hives are the lint-clean WS2008 R2 skeleton's own hives, written by the project's regf writer and then
patched at one cell; the images are built by the factory (cached). Each image also carries one planted problem
that only SOFTWARE reveals (a plain-text autologon password, VMR211), so "the rest is still checked" is seen as a
finding, not only as the absence of VMR001.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.engine.artefact import IMAGE, Artefact
from harness.engine.catalogue import all_rules
from harness.engine.evaluate import evaluate
from harness.extraction.extract import extract
from harness.facts.image import VMROLE, ImageFacts, ImageSubject
from harness.readers.image.regf import Hive, Key
from harness.testing.hivewriter import build_hive, sz
from harness.testing.images import ImageSpec, build_image, missing_tools
from harness.testing.windows import ADMIN_NTUSER, WINLOGON, windows_server_2008r2_vmrole

pytestmark = [
    pytest.mark.skipif(bool(missing_tools()), reason=f"image tools missing: {missing_tools()} (run ./dev setup)"),
    pytest.mark.xdist_group("image-lint"),
]

CONFIG = "Windows/System32/config"
SYSTEM_PATH = "\\Windows\\System32\\config\\SYSTEM"
#: Offset every patched pointer is sent to: outside any hive bin.
FAR = 0x7FFFFFF8
#: Rules judging the image's contents (the 01x format rules judge the container and are left out).
RULES = [r for r in all_rules() if IMAGE in r.applies_to and r.id != "VMR001" and not r.id.startswith("VMR01")]

BASE = windows_server_2008r2_vmrole().with_changes(hives={"SOFTWARE": {WINLOGON: {"DefaultPassword": sz("x")}}})
#: Rules that need only SOFTWARE or files: they must run (not skip) on every image here.
MUST_RUN = {"VMR016", "VMR211", "VMR310", "VMR313"}


# ---- hive surgery ----------------------------------------------------------------------------------------------


def _hive_bytes(spec: ImageSpec, name: str) -> bytearray:
    tree = spec.hive(name)
    assert tree is not None, name
    return bytearray(build_hive(tree))


def _key(data: bytearray, path: str) -> Key:
    key = Hive(bytes(data), "probe").key(path)
    assert key is not None, path
    return key


def _point_list_entry(data: bytearray, parent: str, child: str, target: int) -> None:
    """Make the ``lh`` entry of ``parent``'s subkey list that names ``child`` point at ``target``."""
    key = _key(data, parent)
    names = [k.name.lower() for k in key.subkeys()]
    pos = 4096 + key._sub_list
    assert data[pos + 4 : pos + 6] == b"lh"
    struct.pack_into("<I", data, pos + 8 + 8 * names.index(child.lower()), target)


def _with_hive(spec: ImageSpec, name: str, data: bytearray) -> ImageSpec:
    path = f"{CONFIG}/{name}" if "/" not in name else name
    return spec.with_changes(files={path: bytes(data)})


# ---- running the rules -----------------------------------------------------------------------------------------


def _lint(spec: ImageSpec, cache: Path) -> tuple[ImageFacts, list[tuple[str, str, str]], dict[str, str]]:
    """(facts, findings as (rule, location, message), skip reasons by rule) of every content rule."""
    path = build_image(spec, "vhd-fixed", cache_dir=cache)
    facts = extract(path)  # must not raise: a damaged hive is a part of the image, not the image
    subject = ImageSubject(Artefact.from_path(path, IMAGE), facts, VMROLE, "test")
    findings: list[tuple[str, str, str]] = []
    skipped: dict[str, str] = {}
    for rule in RULES:
        evaluation = evaluate(rule, subject)
        if evaluation.skip_reason is not None:
            skipped[rule.id] = evaluation.skip_reason
        findings.extend((f.rule_id, f.location, f.message) for f in evaluation.findings)
    return facts, findings, skipped


def _vmr002(findings: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [f for f in findings if f[0] == "VMR002"]


def _assert_rest_checked(findings: list[tuple[str, str, str]], skipped: dict[str, str]) -> None:
    assert not MUST_RUN & set(skipped), {r: skipped[r] for r in MUST_RUN & set(skipped)}
    assert [f[0] for f in findings if f[0] != "VMR002"] == ["VMR211"], findings


def test_undamaged_base_has_only_the_planted_finding(image_cache: Path) -> None:
    facts, findings, skipped = _lint(BASE, image_cache)
    assert not facts.problems
    _assert_rest_checked(findings, skipped)


# ---- the control-set lookup -------------------------------------------------------------------------------------


def test_bad_cell_in_system_root_subkey_list_is_one_vmr002_not_vmr001(image_cache: Path) -> None:
    """Root's list entry for ControlSet001 points outside the hive: Select reads, the control set does not."""
    data = _hive_bytes(BASE, "SYSTEM")
    _point_list_entry(data, "", "ControlSet001", FAR)
    facts, findings, skipped = _lint(_with_hive(BASE, "SYSTEM", data), image_cache)
    damage = _vmr002(findings)
    assert len(damage) == 1, damage
    _, location, message = damage[0]
    assert "SYSTEM" in location and f"{FAR:#x}" in location, location
    assert "ControlSet001" in location, location  # the key that could not be reached
    assert "SYSTEM hive" in message
    _assert_rest_checked(findings, skipped)
    # The rules that need the control set say why they did not run: the SYSTEM hive, not "missing".
    assert "SYSTEM hive" in skipped["VMR101"], skipped["VMR101"]
    assert "services" not in facts.parts_read and "firewall" not in facts.parts_read


def test_bad_root_subkey_list_cell_is_one_vmr002(image_cache: Path) -> None:
    """The root key's subkey list itself points outside the hive: nothing under the root can be reached."""
    data = _hive_bytes(BASE, "SYSTEM")
    root = _key(data, "")
    struct.pack_into("<I", data, 4096 + root.offset + 4 + 0x1C, FAR)  # nk: stable subkey list offset
    facts, findings, skipped = _lint(_with_hive(BASE, "SYSTEM", data), image_cache)
    damage = _vmr002(findings)
    assert len(damage) == 1, damage
    assert "SYSTEM" in damage[0][1] and f"{FAR:#x}" in damage[0][1], damage
    _assert_rest_checked(findings, skipped)
    assert facts.control_set is None
    # Which control set boots is unknown: its parts are not read, rather than read as empty (no services at all
    # would make VMR101 call the integration components missing).
    assert not {"services", "remote access", "firewall", "signatures"} & facts.parts_read
    assert "SYSTEM hive" in skipped["VMR101"], skipped["VMR101"]


def _cycle_under_select(data: bytearray) -> tuple[str, int]:
    _point_list_entry(data, "Select\\Loop", "Inner", _key(data, "Select").offset)
    return "Select", _key(data, "Select").offset


def _select_lists_itself(data: bytearray) -> tuple[str, int]:
    _point_list_entry(data, "Select", "Loop", _key(data, "Select").offset)
    return "Select", _key(data, "Select").offset


def _control_set_lists_root(data: bytearray) -> tuple[str, int]:
    _point_list_entry(data, "ControlSet001", "Hardware Profiles", _key(data, "").offset)
    return "ControlSet001", _key(data, "").offset


CYCLES: dict[str, Callable[[bytearray], tuple[str, int]]] = {
    "deep-under-select": _cycle_under_select,
    "select-lists-itself": _select_lists_itself,
    "control-set-lists-root": _control_set_lists_root,
}


@pytest.mark.parametrize("case", sorted(CYCLES))
def test_subkey_cycle_on_the_control_set_path_is_vmr002(case: str, image_cache: Path) -> None:
    spec = BASE.with_changes(hives={"SYSTEM": {"Select\\Loop\\Inner": {"x": sz("y")}}})
    data = _hive_bytes(spec, "SYSTEM")
    key_path, target = CYCLES[case](data)
    facts, findings, skipped = _lint(_with_hive(spec, "SYSTEM", data), image_cache)
    damage = _vmr002(findings)
    assert len(damage) == 1, damage
    _, location, message = damage[0]
    assert "SYSTEM" in location and key_path in location and f"{target:#x}" in location, location
    assert "cycle" in message, message
    # The cycle is reported, and the control set is still resolved and read: nothing else is lost.
    assert facts.control_set is not None and facts.control_set.key == "ControlSet001"
    assert {"services", "firewall", "remote access", "sysprep"} <= facts.parts_read
    _assert_rest_checked(findings, skipped)


# ---- the same pattern elsewhere: SOFTWARE, a firewall key, NTUSER.DAT ------------------------------------------


def test_damaged_firewall_key_is_vmr002_naming_system_and_the_key(image_cache: Path) -> None:
    fw = "ControlSet001\\Services\\SharedAccess\\Parameters"
    data = _hive_bytes(BASE, "SYSTEM")
    _point_list_entry(data, fw, "FirewallPolicy", FAR)
    facts, findings, skipped = _lint(_with_hive(BASE, "SYSTEM", data), image_cache)
    damage = _vmr002(findings)
    assert len(damage) == 1, damage
    _, location, _ = damage[0]
    assert "SYSTEM" in location and f"{FAR:#x}" in location and "FirewallPolicy" in location, location
    assert "firewall" not in facts.parts_read and "services" in facts.parts_read
    assert "SYSTEM" in skipped["VMR401"] or "service model" in skipped["VMR401"]
    _assert_rest_checked(findings, skipped)


def test_subkey_cycle_in_the_firewall_store_is_vmr002_and_the_firewall_is_not_judged(image_cache: Path) -> None:
    """The store's list names an ancestor instead of a profile: lookups by name step around it (the profile just
    looks absent), so the store is walked and the cycle reported; the firewall is not judged on what is left."""
    fw = "ControlSet001\\Services\\SharedAccess\\Parameters\\FirewallPolicy"
    data = _hive_bytes(BASE, "SYSTEM")
    target = _key(data, "ControlSet001\\Services\\SharedAccess").offset
    _point_list_entry(data, fw, "DomainProfile", target)
    facts, findings, skipped = _lint(_with_hive(BASE, "SYSTEM", data), image_cache)
    damage = _vmr002(findings)
    assert len(damage) == 1, damage
    _, location, message = damage[0]
    assert "SYSTEM" in location and f"{target:#x}" in location and "FirewallPolicy" in location, location
    assert "cycle" in message, message
    assert "firewall" not in facts.parts_read and {"services", "remote access"} <= facts.parts_read
    _assert_rest_checked(findings, skipped)


def test_damaged_software_key_is_vmr002_naming_software_and_the_key(image_cache: Path) -> None:
    """The Uninstall key's subkey list is unreadable: products are lost, the OS facts and Winlogon are not."""
    data = _hive_bytes(BASE, "SOFTWARE")
    _point_list_entry(data, "Microsoft\\Windows\\CurrentVersion", "Uninstall", FAR)
    facts, findings, skipped = _lint(_with_hive(BASE, "SOFTWARE", data), image_cache)
    damage = _vmr002(findings)
    assert len(damage) == 1, damage
    _, location, _ = damage[0]
    assert "SOFTWARE" in location and f"{FAR:#x}" in location and "Uninstall" in location, location
    assert {"os", "winlogon"} <= facts.parts_read and "products" not in facts.parts_read
    _assert_rest_checked(findings, skipped)


def test_damaged_user_hive_is_vmr002_for_that_hive_only(image_cache: Path) -> None:
    data = _hive_bytes(BASE, ADMIN_NTUSER)
    _point_list_entry(data, "Software\\Microsoft", "SystemCertificates", FAR)
    facts, findings, skipped = _lint(_with_hive(BASE, ADMIN_NTUSER, data), image_cache)
    damage = _vmr002(findings)
    assert len(damage) == 1, damage
    _, location, _ = damage[0]
    assert "NTUSER.DAT" in location and "Administrator" in location and f"{FAR:#x}" in location, location
    assert "SystemCertificates" in location, location
    assert "certificates" in facts.parts_read  # machine stores and the other users' stores were read
    _assert_rest_checked(findings, skipped)


def test_every_vmr002_location_names_the_part_and_the_offset(image_cache: Path) -> None:
    """The damaged hive bin found by the cell scan (test_image_lint's hive-bin case) says where, too."""
    data = _hive_bytes(BASE, "SYSTEM")
    second_bin = 4096 + int.from_bytes(data[4096 + 8 : 4096 + 12], "little")
    data[second_bin + 32 : second_bin + 36] = b"\0\0\0\0"
    _, findings, _ = _lint(_with_hive(BASE, "SYSTEM", data), image_cache)
    damage = _vmr002(findings)
    assert damage, findings
    for _, location, _ in damage:
        assert "SYSTEM" in location and "0x" in location, location


def test_an_mft_loop_vmr002_names_the_volume_and_the_record(image_cache: Path, tmp_path: Path) -> None:
    """Not only hives: damage a reader noted and read past (here an MFT loop) says where, too."""
    from tests.images.test_image_lint import _mft_loop

    facts = extract(_mft_loop(image_cache, tmp_path))
    (problem,) = facts.problems
    assert problem.part == "NTFS volume" and problem.offset.startswith("MFT record "), problem
    assert problem.location.startswith("NTFS volume partition 1 @ MFT record "), problem.location


@pytest.mark.parametrize(
    ("note", "where"),
    [
        ("3 MFT records with a bad signature were skipped (records 40, 41, 42)", "MFT record 40"),
        ("MBR entry 2 has an invalid status byte 0x13", "MBR entry 2"),
        ("EBR at LBA 2048 links with type 0x07 (expected an extended type)", "LBA 2048"),
        ("GPT entry 5 lies outside the usable LBA range", "GPT entry 5"),
        ("cell at offset 0x1020 has size 0 (corrupt hive bin)", "0x1020"),
        ("partitions 1 and 2 overlap", ""),
    ],
)
def test_where_a_reader_note_points(note: str, where: str) -> None:
    from harness.extraction.extract import where_in_note

    assert where_in_note(note) == where
