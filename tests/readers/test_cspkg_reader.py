"""The .cspkg reader on packages from the builder: layout, manifest, payloads, key sniffing, hostile zips."""

from __future__ import annotations

import struct
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.engine.artefact import CSPKG, Artefact
from harness.facts.servicemodel import Package
from harness.readers import keysniff
from harness.readers.cspkg import read_package, role_name_of
from harness.readers.errors import Unreadable
from harness.readers.zipsafe import Limits, name_problem
from harness.testing.cspkg import Member, build_cspkg, zip_members

from .conftest import snapshot
from .test_servicemodel_reader import CSDEF

MIB = 1024 * 1024

PFX = bytes.fromhex("30820a0002010330820a0006092a864886f70d010701a082") + b"\x00" * 40
KEYS = {
    "approot/site.pfx": (PFX, "pkcs12"),
    "approot/bin/key.pem": (
        b"Bag Attributes\n  localKeyID: 01\n-----BEGIN PRIVATE KEY-----\nMIIE\n",
        "pem-private-key",
    ),
    "approot/rsa.txt": (b"-----BEGIN RSA PRIVATE KEY-----\nMIIE\n", "pem-private-key"),
    "approot/enc.key": (b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF\n", "pem-private-key"),
    "approot/id_ed25519": (b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n", "openssh-private-key"),
    "approot/code.pvk": (struct.pack("<I", 0xB0B5F11E) + b"\x00" * 20, "pvk"),
    "approot/strong.snk": (b"\x07\x02\x00\x00\x00\x24\x00\x00RSA2\x00\x04\x00\x00", "snk-private-key"),
    "approot/putty.ppk": (b"PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\n", "putty-private-key"),
    "approot/store.jks": (b"\xfe\xed\xfe\xed\x00\x00\x00\x02", "jks"),
    "approot/azure.publishsettings": (
        b'<?xml version="1.0" encoding="utf-8"?>\r\n<PublishData><PublishProfile ManagementCertificate="MII"/>',
        "publishsettings",
    ),
    "approot/utf16.xml": ("\ufeff<PublishData>".encode("utf-16-le"), "publishsettings"),
    "approot/cert.pem": (b"-----BEGIN CERTIFICATE-----\nMIIC\n", None),
    "approot/site.dll": (b"MZ\x90\x00" + b"\x00" * 60, None),
}


@pytest.fixture
def no_disk_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point cwd and the temp folder into tmp_path, so that :func:`read_guarded` (which compares a
    listing of tmp_path before and after reading) would see anything the reader wrote."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    yield tmp_path


def read_guarded(artefact: Artefact, limits: Limits | None = None) -> Package:
    """read_package, asserting that the folder holding the package (cwd and temp folder live there
    under ``no_disk_writes``) is unchanged afterwards, whether it raised or not."""
    before = snapshot(artefact.path.parent)
    try:
        return read_package(artefact) if limits is None else read_package(artefact, limits)
    finally:
        assert snapshot(artefact.path.parent) == before, "the reader wrote to disk"


@pytest.fixture
def package(tmp_path: Path) -> Callable[..., Artefact]:
    """``package(data)`` or ``package(csdef, payloads, **options)`` → an Artefact for a written .cspkg."""
    counter = [0]

    def make(data: bytes | str = CSDEF, *args: object, **options: object) -> Artefact:
        counter[0] += 1
        if isinstance(data, str):
            data = build_cspkg(data, *args, **options).data  # type: ignore[arg-type]
        path = tmp_path / f"pkg{counter[0]}.cspkg"
        path.write_bytes(data)
        return Artefact.from_path(path, CSPKG, tmp_path)

    return make


# ---- a well-formed package -------------------------------------------------------------------------


def test_builder_package_round_trip(package: Callable[..., Artefact]) -> None:
    built = build_cspkg(CSDEF, seed=7)
    pkg = read_package(package(built.data))
    assert pkg.problems == ()
    assert pkg.hash_type == "1"
    assert pkg.encryption_keytype == "1"
    assert pkg.manifest_part == built.parts["manifest"]
    assert len(pkg.manifest_items) == 6  # three roles + csmx, csdx, csnsx
    assert all(item.matches for item in pkg.manifest_items)
    assert pkg.manifest_items[0].location.startswith(f"{built.parts['manifest']}!/PackageManifest/Contents/Item[")
    assert [(p.role_name, p.encrypted) for p in pkg.payloads] == [
        ("Web", False),
        ("Worker", False),
        ("MyVMRole", False),
    ]
    assert pkg.sdk_version == "2.9.7499.7"


def test_definition_parsed_with_part_prefix(package: Callable[..., Artefact]) -> None:
    built = build_cspkg(CSDEF)
    pkg = read_package(package(built.data))
    part = f"{built.parts['csdx']}!ServiceDefinition.build.csdef"
    assert pkg.definition is not None
    assert pkg.definition.part == part
    assert [r.name for r in pkg.definition.roles] == ["Web", "Worker", "MyVMRole"]
    assert pkg.definition.role("Web").location == f"{part}!/ServiceDefinition/WebRole[@name='Web']"


def test_older_csdef_name_inside_csdx(package: Callable[..., Artefact]) -> None:
    pkg = read_package(package(CSDEF, csdef_name="ServiceDefinition.csdef"))
    assert pkg.definition is not None
    assert pkg.definition.part.endswith("!ServiceDefinition.csdef")


def test_entries_cover_all_levels(package: Callable[..., Artefact]) -> None:
    built = build_cspkg(CSDEF)
    pkg = read_package(package(built.data))
    names = {e.name for e in pkg.entries}
    web = built.parts["Web"]
    assert {web, "_rels/.rels", "[Content_Types].xml", built.parts["manifest"]} <= names
    assert f"{web}!RoleModel.xml" in names
    assert f"{web}!approot/Web.dll" in names
    assert f"{built.parts['csdx']}!ServiceDefinition.build.csdef" in names
    assert f"{built.parts['csnsx']}!SupportData/Web/1.0" in names
    assert f"{built.parts['csmx']}!ServiceDefinition.rd" in names
    by_name = {e.name: e for e in pkg.entries}
    assert by_name[web].head.startswith(b"PK\x03\x04")
    assert by_name[web].sha256 == built.manifest_hashes[web].lower()
    assert all(len(e.head) <= 64 for e in pkg.entries)
    assert by_name[built.parts["manifest"]].compressed_size < by_name[built.parts["manifest"]].size


def test_encrypted_payloads(package: Callable[..., Artefact]) -> None:
    built = build_cspkg(CSDEF, encrypted=True)
    pkg = read_package(package(built.data))
    assert all(p.encrypted for p in pkg.payloads)
    assert not any(e.name.startswith(f"{built.parts['Web']}!") for e in pkg.entries)
    assert all(item.matches for item in pkg.manifest_items)
    assert pkg.problems == ()


def test_role_name_from_part() -> None:
    assert role_name_of("WorkerRole1_8378d33f-0f60-44f1-8cbc-dcedc941b8bb.cssx") == "WorkerRole1"
    assert role_name_of("My%20Web_8378d33f-0f60-44f1-8cbc-dcedc941b8bb.cssx") == "My Web"
    assert role_name_of("Under_score_8378d33f-0f60-44f1-8cbc-dcedc941b8bb.cssx") == "Under_score"
    assert role_name_of("payload.cssx") is None


def test_builder_is_deterministic() -> None:
    assert build_cspkg(CSDEF, seed=3).data == build_cspkg(CSDEF, seed=3).data
    assert build_cspkg(CSDEF, seed=3).data != build_cspkg(CSDEF, seed=4).data


def test_builder_layout_matches_real_packages() -> None:
    built = build_cspkg(CSDEF)
    with zipfile.ZipFile(__import__("io").BytesIO(built.data)) as zf:
        infos = {i.filename: i for i in zf.infolist()}
    assert infos[built.parts["Web"]].compress_type == zipfile.ZIP_STORED
    assert infos[built.parts["manifest"]].compress_type == zipfile.ZIP_DEFLATED
    assert {"_rels/.rels", "[Content_Types].xml"} <= set(infos)


# ---- manifest problems -------------------------------------------------------------------------------


def test_corrupted_hash(package: Callable[..., Artefact]) -> None:
    built = build_cspkg(CSDEF, corrupt_hash=["csdx", "Web"])
    pkg = read_package(package(built.data))
    bad = {i.name for i in pkg.manifest_items if not i.matches}
    assert bad == {built.parts["csdx"], built.parts["Web"]}
    assert all(i.actual_hash is not None for i in pkg.manifest_items)


def test_manifest_item_missing_from_package(package: Callable[..., Artefact]) -> None:
    built = build_cspkg(CSDEF, omit_parts=["Worker"])
    pkg = read_package(package(built.data))
    (missing,) = [i for i in pkg.manifest_items if i.actual_hash is None]
    assert missing.name == built.parts["Worker"]
    assert not missing.matches
    assert any("is not in the package" in message for _, message in pkg.problems)


def test_part_not_in_manifest(package: Callable[..., Artefact]) -> None:
    extra = build_cspkg(CSDEF).data
    pkg = read_package(
        package(CSDEF, extra_members=[Member("Sneaky_8378d33f-0f60-44f1-8cbc-dcedc941b8bb.cssx", extra)])
    )
    assert any("is not listed in the manifest" in message for _, message in pkg.problems)


def test_nested_part_not_a_zip(package: Callable[..., Artefact]) -> None:
    built = build_cspkg(CSDEF, replace_parts={"csdx": b"this is not a zip"})
    pkg = read_package(package(built.data))
    assert pkg.definition is None
    ((where, message),) = pkg.problems
    assert where == built.parts["csdx"]
    assert message.startswith(f"nested part {where!r} is not a zip archive (no end-of-archive record")
    assert all(i.matches for i in pkg.manifest_items)


def test_payload_starting_with_pk_but_broken(package: Callable[..., Artefact]) -> None:
    pkg = read_package(package(CSDEF, replace_parts={"Web": b"PK\x03\x04garbage"}))
    web = next(p for p in pkg.payloads if p.role_name == "Web")
    assert web.encrypted is False
    assert any("not a zip archive" in message for _, message in pkg.problems)


def test_malformed_packaged_csdef_is_a_problem(package: Callable[..., Artefact]) -> None:
    pkg = read_package(package("<ServiceDefinition><WebRole name='W'></ServiceDefinition>"))
    assert pkg.definition is None
    assert any("packaged service definition is unreadable" in m and "mismatched tag" in m for _, m in pkg.problems)


def test_duplicate_member_names_are_a_problem(package: Callable[..., Artefact]) -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        data = build_cspkg(CSDEF, extra_members=[Member("_rels/.rels", b"<x/>")]).data
    pkg = read_package(package(data))
    assert any("more than one member named '_rels/.rels'" in m for _, m in pkg.problems)


# ---- key material ---------------------------------------------------------------------------------


def test_key_material_in_payload(package: Callable[..., Artefact]) -> None:
    files = {name: data for name, (data, _label) in KEYS.items()}
    built = build_cspkg(CSDEF, {"Web": files})
    pkg = read_package(package(built.data))
    labels = {e.name: e.key_material for e in pkg.entries}
    for name, (_data, label) in KEYS.items():
        assert labels[f"{built.parts['Web']}!{name}"] == label, name


def test_key_material_at_top_level(package: Callable[..., Artefact]) -> None:
    pkg = read_package(package(CSDEF, extra_members={"leftover.pfx": PFX}))
    assert {e.name: e.key_material for e in pkg.entries}["leftover.pfx"] == "pkcs12"


def test_key_sniffing_reads_past_the_head(package: Callable[..., Artefact]) -> None:
    pem = b"# a long preamble\n" * 100 + b"-----BEGIN EC PRIVATE KEY-----\nMHc\n"
    pkg = read_package(package(CSDEF, {"Web": {"approot/notes": pem}}))
    (entry,) = [e for e in pkg.entries if e.name.endswith("!approot/notes")]
    assert entry.key_material == "pem-private-key"
    assert entry.head == pem[:64]


def test_large_non_candidate_not_sniffed(package: Callable[..., Artefact]) -> None:
    big = b"-----BEGIN PRIVATE KEY-----\n" + b"A" * (200 * 1024)
    pkg = read_package(package(CSDEF, {"Web": {"approot/big.dll": big, "approot/big.pem": big}}))
    labels = {e.name.rsplit("!", 1)[-1]: e.key_material for e in pkg.entries}
    assert labels["approot/big.dll"] is None
    assert labels["approot/big.pem"] == "pem-private-key"


@pytest.mark.parametrize(
    ("name", "size", "expected"), [("a.pfx", 10**8, True), ("a.dll", 10**6, False), ("a.dll", 100, True)]
)
def test_sniff_candidates(name: str, size: int, expected: bool) -> None:
    assert keysniff.is_candidate(name, size) is expected


def test_der_certificate_is_not_pkcs12() -> None:
    cert = bytes.fromhex("3082030a30820272a003020102020900")
    assert keysniff.sniff(cert) is None


# ---- hostile packages --------------------------------------------------------------------------------


def _assert_unreadable(artefact: Artefact, *fragments: str, limits: Limits | None = None) -> Unreadable:
    with pytest.raises(Unreadable) as info:
        read_guarded(artefact, limits)
    for fragment in fragments:
        assert fragment in info.value.problem
    assert info.value.path == artefact.path
    return info.value


def test_not_a_zip(package: Callable[..., Artefact], no_disk_writes: Path) -> None:
    _assert_unreadable(package(b"<ServiceDefinition/>"), "not a readable zip archive")


def test_empty_file(package: Callable[..., Artefact], no_disk_writes: Path) -> None:
    _assert_unreadable(package(b""), "not a readable zip archive")


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_zip(keep: float, package: Callable[..., Artefact], no_disk_writes: Path) -> None:
    data = build_cspkg(CSDEF).data
    _assert_unreadable(package(data[: int(len(data) * keep)]), "truncated")


def test_missing_file(package: Callable[..., Artefact], tmp_path: Path) -> None:
    artefact = Artefact.from_path(tmp_path / "absent.cspkg", CSPKG)
    _assert_unreadable(artefact, "cannot read the file")


def test_zip_bomb_top_level(package: Callable[..., Artefact], no_disk_writes: Path) -> None:
    bomb = Member("bomb.bin", b"\x00" * (20 * MIB))
    error = _assert_unreadable(package(CSDEF, extra_members=[bomb]), "'bomb.bin'", "zip bomb", "200:1")
    assert error.location == "package"


def test_zip_bomb_inside_payload(package: Callable[..., Artefact], no_disk_writes: Path) -> None:
    built = build_cspkg(CSDEF, {"Web": {"approot/zeros.log": b"\x00" * (20 * MIB)}})
    error = _assert_unreadable(package(built.data), "zip bomb", "approot/zeros.log")
    assert error.location == built.parts["Web"]


def test_lying_sizes_cannot_expand_past_declaration(package: Callable[..., Artefact], no_disk_writes: Path) -> None:
    """A member whose headers under-declare its size: zipfile stops at the declared size and the CRC fails."""
    data = bytearray(build_cspkg(CSDEF, extra_members=[Member("lies.bin", b"\x00" * (4 * MIB))]).data)
    name = b"lies.bin"
    for signature, size_at, len_at, name_at in ((b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46)):
        pos = 0
        while (pos := data.find(signature, pos)) >= 0:
            (n,) = struct.unpack_from("<H", data, pos + len_at)
            if bytes(data[pos + name_at : pos + name_at + n]) == name:
                struct.pack_into("<I", data, pos + size_at, 1000)
            pos += 4
    _assert_unreadable(package(bytes(data)), "'lies.bin'", "damaged")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("../evil.dll", "'..' segment"),
        ("approot/../../evil.dll", "'..' segment"),
        ("approot\\..\\evil.dll", "'..' segment"),
        ("/etc/cron.d/evil", "absolute path"),
        ("\\Windows\\evil.dll", "absolute path"),
        ("C:/Windows/evil.dll", "drive letter"),
        ("c:evil.dll", "drive letter"),
        ("evil.dll\x00.txt", "NUL byte"),
    ],
)
def test_hostile_names_top_level(
    name: str, fragment: str, package: Callable[..., Artefact], no_disk_writes: Path
) -> None:
    _assert_unreadable(package(CSDEF, extra_members={name: b"x"}), fragment, "member name")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("../evil.dll", "'..' segment"), ("/abs", "absolute path"), ("D:\\x", "drive letter"), ("a\x00b", "NUL byte")],
)
def test_hostile_names_inside_payload(
    name: str, fragment: str, package: Callable[..., Artefact], no_disk_writes: Path
) -> None:
    built = build_cspkg(CSDEF, {"Web": {name: b"x"}})
    error = _assert_unreadable(package(built.data), fragment, built.parts["Web"])
    assert error.location == built.parts["Web"]


def test_hostile_names_inside_csdx(package: Callable[..., Artefact], no_disk_writes: Path) -> None:
    csdx = zip_members([Member("ServiceDefinition.build.csdef", CSDEF.encode()), Member("../../x", b"x")])
    _assert_unreadable(package(CSDEF, replace_parts={"csdx": csdx}), "'..' segment")


def test_too_many_members(package: Callable[..., Artefact], no_disk_writes: Path) -> None:
    extras = [Member(f"junk/{i}", b"", deflate=False) for i in range(10_001)]
    _assert_unreadable(package(CSDEF, extra_members=extras), "members, over the 10000 limit")


def test_too_many_members_in_payload(package: Callable[..., Artefact], no_disk_writes: Path) -> None:
    files = {f"f{i}": b"" for i in range(60)}
    _assert_unreadable(package(CSDEF, {"Web": files}), "over the 50 limit", limits=Limits(max_members=50))


def test_member_size_cap(package: Callable[..., Artefact], no_disk_writes: Path) -> None:
    limits = Limits(max_member_size=1 * MIB)
    data = bytes(range(256)) * 8192  # 2 MiB, incompressible enough not to trip the ratio cap
    _assert_unreadable(package(CSDEF, extra_members={"big.bin": data}), "over the 1 MiB limit", limits=limits)


def test_total_size_cap(package: Callable[..., Artefact], no_disk_writes: Path) -> None:
    limits = Limits(max_total_size=64 * 1024)
    extras = {f"part{i}.bin": bytes(range(256)) * 128 for i in range(4)}
    _assert_unreadable(package(CSDEF, extra_members=extras), "uncompressed, over the 64 KiB limit", limits=limits)


def test_nested_zips_beyond_two_levels_not_opened(package: Callable[..., Artefact], no_disk_writes: Path) -> None:
    level4 = zip_members([Member("deepest.pfx", PFX)])
    level3 = zip_members([Member("level4.zip", level4)])
    built = build_cspkg(CSDEF, {"Web": {"approot/level3.zip": level3, "approot/app.war": level3}})
    pkg = read_guarded(package(built.data))
    names = [e.name for e in pkg.entries]
    assert f"{built.parts['Web']}!approot/level3.zip" in names
    assert not any(n.count("!") > 1 for n in names)
    assert not any("deepest" in n or "level4" in n for n in names)


def test_zip_encryption_flag_does_not_crash(package: Callable[..., Artefact], no_disk_writes: Path) -> None:
    built = build_cspkg(CSDEF, extra_members={"secret.bin": b"s" * 100}, encrypted_flag=["secret.bin"])
    pkg = read_guarded(package(built.data))
    entry = next(e for e in pkg.entries if e.name == "secret.bin")
    assert entry.head == b""
    assert any("encrypted with zip encryption" in m for _, m in pkg.problems)


def test_zip_encryption_flag_on_a_part(package: Callable[..., Artefact], no_disk_writes: Path) -> None:
    built = build_cspkg(CSDEF)
    rebuilt = build_cspkg(CSDEF, encrypted_flag=[built.parts["Web"]])
    pkg = read_guarded(package(rebuilt.data))
    web = next(i for i in pkg.manifest_items if i.name == built.parts["Web"])
    assert web.actual_hash is None and not web.matches
    assert next(p for p in pkg.payloads if p.role_name == "Web").encrypted is True
    assert any("encrypted with zip encryption" in m for _, m in pkg.problems)


def test_encryption_flag_inside_payload(package: Callable[..., Artefact], no_disk_writes: Path) -> None:
    built = build_cspkg(CSDEF, {"Web": {"a.bin": b"x" * 10}}, payload_zip_options={"encrypted_flag": ["a.bin"]})
    pkg = read_guarded(package(built.data))
    assert any(name.endswith("!a.bin") and "encrypted" in m for name, m in pkg.problems)


def test_zip64_headers(package: Callable[..., Artefact], no_disk_writes: Path) -> None:
    built = build_cspkg(CSDEF, force_zip64=True, payload_zip_options={"force_zip64": True})
    pkg = read_guarded(package(built.data))
    assert all(i.matches for i in pkg.manifest_items)
    assert pkg.definition is not None
    assert any("!RoleModel.xml" in e.name for e in pkg.entries)


def test_damaged_member_data(package: Callable[..., Artefact], no_disk_writes: Path) -> None:
    built = build_cspkg(CSDEF)
    data = bytearray(built.data)
    with zipfile.ZipFile(__import__("io").BytesIO(built.data)) as zf:
        info = zf.getinfo(built.parts["manifest"])
    data[info.header_offset + 30 + len(info.filename) + 8 + 10] ^= 0xFF  # inside the deflate stream
    _assert_unreadable(package(bytes(data)), "damaged")


@pytest.mark.parametrize(
    ("name", "problem"),
    [("ok/name.txt", None), ("a/./b", None), ("..foo/bar", None), ("a/..", "has a '..' segment (path traversal)")],
)
def test_name_problem(name: str, problem: str | None) -> None:
    assert name_problem(name) == problem


def test_compressed_nested_part_is_opened_in_memory(package: Callable[..., Artefact]) -> None:
    """cspack stores nested parts; a deflated one (other tools) is read through a bounded in-memory copy."""
    inner = zip_members([Member("SupportData/Extra/1.0", b"<SupportData><SDKVersion>9.9</SDKVersion></SupportData>")])
    name = "NamedStreamPackage_00000000-0000-4000-8000-000000000000.csnsx"
    pkg = read_package(package(CSDEF, extra_members=[Member(name, inner, deflate=True)]))
    assert f"{name}!SupportData/Extra/1.0" in {e.name for e in pkg.entries}
    assert any(where == name and "not listed in the manifest" in m for where, m in pkg.problems)
