"""VMR540-VMR545: .cspkg integrity, on virtual Package facts (see package_facts.package)."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace

import pytest
from harness.checks.servicemodel.package import (
    EncryptedRolePayload,
    PackageBuildDefinitionMissing,
    PackageManifestHashMismatch,
    PackageManifestItemMissing,
    PackagePartNotInManifest,
    PackageStructureProblem,
)
from package_facts import MANIFEST, NS_PART, PAYLOAD, SD_PART, entry, item, package

from harness.engine.rule import NotApplicable

ALL = (
    PackageManifestHashMismatch,
    PackageManifestItemMissing,
    PackagePartNotInManifest,
    EncryptedRolePayload,
    PackageStructureProblem,
    PackageBuildDefinitionMissing,
)


@pytest.mark.parametrize("rule", ALL, ids=lambda r: r.id)
def test_a_well_formed_package_passes(sm, rule):
    assert sm.run(rule, sm.subject_for(package=package())) == []


# ---- VMR540 ------------------------------------------------------------------------------------


def test_540_reports_a_hash_mismatch_with_both_hashes(sm, snapshot):
    pkg = package(items=[item(PAYLOAD, declared="AB" * 32), item(SD_PART)])
    snapshot.assert_match(sm.run(PackageManifestHashMismatch, sm.subject_for(package=pkg)))


def test_540_reports_an_item_without_hash_at_medium(sm, snapshot):
    pkg = package(items=[item(PAYLOAD, declared=None), item(SD_PART)])
    snapshot.assert_match(sm.run(PackageManifestHashMismatch, sm.subject_for(package=pkg)))


def test_540_does_not_apply_to_another_hash_type(sm):
    pkg = package(items=[item(PAYLOAD, declared="AB" * 32)], hash_type="2")
    with pytest.raises(NotApplicable):
        sm.run(PackageManifestHashMismatch, sm.subject_for(package=pkg))


# ---- VMR541 ------------------------------------------------------------------------------------


def test_541_reports_a_manifest_item_missing_from_the_package(sm, snapshot):
    gone = f"WorkerRole1_{'1' * 8}-1111-1111-1111-{'1' * 12}.cssx"
    pkg = package(items=[item(PAYLOAD), item(SD_PART), item(gone, actual=None)])
    snapshot.assert_match(sm.run(PackageManifestItemMissing, sm.subject_for(package=pkg)))
    # the hash rule leaves it to VMR541
    assert sm.run(PackageManifestHashMismatch, sm.subject_for(package=pkg)) == []


# ---- VMR542 ------------------------------------------------------------------------------------


def test_542_reports_an_unlisted_payload_and_a_stray_file(sm, snapshot):
    extra = [entry("notes.txt"), entry(f"Other_{'2' * 8}-2222-2222-2222-{'2' * 12}.cssx")]
    snapshot.assert_match(sm.run(PackagePartNotInManifest, sm.subject_for(package=package(extra_entries=extra))))


def test_542_matches_url_encoded_uris_case_insensitively(sm):
    part = f"Web%20Site_{'3' * 8}-3333-3333-3333-{'3' * 12}.cssx"
    listed = replace(item("x"), name="web site.cssx", uri="/" + part.upper())
    pkg = package(extra_entries=[entry(part)], items=[item(PAYLOAD), item(SD_PART), listed])
    assert sm.run(PackagePartNotInManifest, sm.subject_for(package=pkg)) == []


def test_542_demands_nested_parts_only_of_kinds_the_manifest_lists(sm, snapshot):
    unlisted_kind = package(extra_entries=[entry(NS_PART)], items=[item(PAYLOAD), item(SD_PART)])
    assert sm.run(PackagePartNotInManifest, sm.subject_for(package=unlisted_kind)) == []
    other_csdx = package(extra_entries=[entry(f"SDPackage_{'4' * 8}-4444-4444-4444-{'4' * 12}.csdx")])
    snapshot.assert_match(sm.run(PackagePartNotInManifest, sm.subject_for(package=other_csdx)))


# ---- VMR543 ------------------------------------------------------------------------------------


def test_543_reports_an_encrypted_payload_as_info(sm, snapshot):
    snapshot.assert_match(sm.run(EncryptedRolePayload, sm.subject_for(package=package(encrypted=True))))


# ---- VMR544 ------------------------------------------------------------------------------------


def test_544_reports_missing_opc_parts(sm, snapshot):
    pkg = package(entries=[entry(MANIFEST), entry(SD_PART)], items=[item(SD_PART)], payloads=[], manifest_part=MANIFEST)
    snapshot.assert_match(sm.run(PackageStructureProblem, sm.subject_for(package=pkg)))


def test_544_reports_a_missing_manifest_once(sm, snapshot):
    pkg = package(manifest_part=None, items=[], problems=[("package", "package has no .csman manifest")])
    snapshot.assert_match(sm.run(PackageStructureProblem, sm.subject_for(package=pkg)))
    with pytest.raises(NotApplicable):
        sm.run(PackageManifestItemMissing, sm.subject_for(package=pkg))


def test_544_reports_reader_problems_but_not_those_of_dedicated_rules(sm, snapshot):
    missing = item("Gone.cssx", actual=None)
    problems = [
        (f"{SD_PART}!x.bin", "x.bin is damaged: bad CRC"),
        (f"{SD_PART}!y.bin", "y.bin is damaged: bad CRC"),
        (f"{SD_PART}!y.bin", "cannot read y.bin"),
        (missing.location, "manifest item 'Gone.cssx' is not in the package"),
        ("Stray.cssx", "part 'Stray.cssx' is not listed in the manifest"),
    ]
    pkg = package(items=[item(PAYLOAD), item(SD_PART), missing], extra_entries=[entry("Stray.cssx")], problems=problems)
    snapshot.assert_match(sm.run(PackageStructureProblem, sm.subject_for(package=pkg)))  # x.bin once, y.bin joined


# ---- VMR545 ------------------------------------------------------------------------------------


def test_545_reports_a_package_without_build_csdef_with_the_reader_problem(sm, snapshot):
    problem = (f"{SD_PART}!ServiceDefinition.build.csdef", "the packaged service definition is unreadable: bad XML")
    pkg = package(definition=None, problems=[problem])
    snapshot.assert_match(sm.run(PackageBuildDefinitionMissing, sm.subject_for(package=pkg)))
    # reported once: the structure rule leaves the definition problem to VMR545
    assert sm.run(PackageStructureProblem, sm.subject_for(package=pkg)) == []


def test_545_reports_a_package_without_sdpackage_part(sm, snapshot):
    pkg = package(definition=None, entries=[entry("[Content_Types].xml"), entry(MANIFEST), entry(PAYLOAD)])
    snapshot.assert_match(sm.run(PackageBuildDefinitionMissing, sm.subject_for(package=pkg)))


# ---- through the real builder and reader ---------------------------------------------------------------

CSDEF = (
    '<ServiceDefinition name="S" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition">'
    '<WebRole name="Web" /></ServiceDefinition>'
)


def read_built(tmp_path, sm, **options):
    from harness.engine.artefact import CSPKG, Artefact
    from harness.readers.cspkg import read_package
    from harness.testing.cspkg import write_cspkg

    path = write_cspkg(tmp_path / "svc.cspkg", CSDEF, **options)
    pkg = read_package(Artefact.from_path(path, CSPKG, tmp_path))
    return sm.subject_for(pkg.definition, package=pkg)


def all_findings(sm, subject) -> list:
    found = []
    for rule in ALL:
        try:
            found += sm.run(rule, subject)
        except NotApplicable:
            continue
    return found


@pytest.mark.parametrize(
    "options",
    [
        {"encrypted": True},
        {"corrupt_hash": ["Web"]},
        {"corrupt_hash": ["csdx"]},
        {"extra_members": {"notes.txt": b"x"}},
        {"omit_parts": ["csnsx"]},
    ],
    ids=["encrypted", "payload-hash", "csdx-hash", "stray-part", "missing-part"],
)
def test_package_rules_on_built_packages(tmp_path, sm, snapshot, options):
    """Every package rule on a package cspack would write, with one defect: one finding of the right rule."""
    subject = read_built(tmp_path, sm, **options)
    snapshot.assert_match(part_hashes_named(all_findings(sm, subject), subject.package.artefact.path))


def part_hashes_named(findings: list, cspkg) -> list:
    """SHA-256 evidence that is the hash of a part (or of the builder's "corrupted:" variant) as
    ``<sha256 of PART>``: deflated members make the bytes depend on the zlib that built them."""
    with zipfile.ZipFile(cspkg) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    names = {}
    for name, data in parts.items():
        names[hashlib.sha256(data).hexdigest()] = f"<sha256 of {name}>"
        names[hashlib.sha256(b"corrupted:" + data).hexdigest()] = f"<sha256 of 'corrupted:' + {name}>"
    return [replace(f, evidence={k: names.get(v, v) for k, v in f.evidence.items()}) for f in findings]


def test_package_rules_pass_a_clean_built_package(tmp_path, sm):
    assert all_findings(sm, read_built(tmp_path, sm)) == []
