"""VMR540-VMR545: .cspkg integrity, on virtual Package facts (see package_facts.package)."""

from __future__ import annotations

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
from harness.engine.severity import Severity

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


def test_540_reports_a_hash_mismatch_with_both_hashes(sm):
    pkg = package(items=[item(PAYLOAD, declared="AB" * 32), item(SD_PART)])
    finding = sm.only(sm.run(PackageManifestHashMismatch, sm.subject_for(package=pkg)))
    assert finding.severity is Severity.HIGH
    assert finding.evidence["declared_sha256"] == "ab" * 32
    assert finding.location.startswith(MANIFEST)


def test_540_reports_an_item_without_hash_at_medium(sm):
    pkg = package(items=[item(PAYLOAD, declared=None), item(SD_PART)])
    finding = sm.only(sm.run(PackageManifestHashMismatch, sm.subject_for(package=pkg)))
    assert finding.severity is Severity.MEDIUM


def test_540_does_not_apply_to_another_hash_type(sm):
    pkg = package(items=[item(PAYLOAD, declared="AB" * 32)], hash_type="2")
    with pytest.raises(NotApplicable):
        sm.run(PackageManifestHashMismatch, sm.subject_for(package=pkg))


# ---- VMR541 ------------------------------------------------------------------------------------


def test_541_reports_a_manifest_item_missing_from_the_package(sm):
    gone = f"WorkerRole1_{'1' * 8}-1111-1111-1111-{'1' * 12}.cssx"
    pkg = package(items=[item(PAYLOAD), item(SD_PART), item(gone, actual=None)])
    finding = sm.only(sm.run(PackageManifestItemMissing, sm.subject_for(package=pkg)))
    assert finding.evidence["item"] == gone
    # the hash rule leaves it to VMR541
    assert sm.run(PackageManifestHashMismatch, sm.subject_for(package=pkg)) == []


# ---- VMR542 ------------------------------------------------------------------------------------


def test_542_reports_an_unlisted_payload_and_a_stray_file(sm):
    extra = [entry("notes.txt"), entry(f"Other_{'2' * 8}-2222-2222-2222-{'2' * 12}.cssx")]
    findings = sm.run(PackagePartNotInManifest, sm.subject_for(package=package(extra_entries=extra)))
    assert sorted(f.location for f in findings) == sorted(e.name for e in extra)


def test_542_matches_url_encoded_uris_case_insensitively(sm):
    part = f"Web%20Site_{'3' * 8}-3333-3333-3333-{'3' * 12}.cssx"
    listed = replace(item("x"), name="web site.cssx", uri="/" + part.upper())
    pkg = package(extra_entries=[entry(part)], items=[item(PAYLOAD), item(SD_PART), listed])
    assert sm.run(PackagePartNotInManifest, sm.subject_for(package=pkg)) == []


def test_542_demands_nested_parts_only_of_kinds_the_manifest_lists(sm):
    unlisted_kind = package(extra_entries=[entry(NS_PART)], items=[item(PAYLOAD), item(SD_PART)])
    assert sm.run(PackagePartNotInManifest, sm.subject_for(package=unlisted_kind)) == []
    other_csdx = package(extra_entries=[entry(f"SDPackage_{'4' * 8}-4444-4444-4444-{'4' * 12}.csdx")])
    assert len(sm.run(PackagePartNotInManifest, sm.subject_for(package=other_csdx))) == 1


# ---- VMR543 ------------------------------------------------------------------------------------


def test_543_reports_an_encrypted_payload_as_info(sm):
    finding = sm.only(sm.run(EncryptedRolePayload, sm.subject_for(package=package(encrypted=True))))
    assert finding.severity is Severity.INFO
    assert "encrypted - contents not scannable" in finding.message
    assert finding.location == PAYLOAD


# ---- VMR544 ------------------------------------------------------------------------------------


def test_544_reports_missing_opc_parts(sm):
    pkg = package(entries=[entry(MANIFEST), entry(SD_PART)], items=[item(SD_PART)], payloads=[], manifest_part=MANIFEST)
    findings = sm.run(PackageStructureProblem, sm.subject_for(package=pkg))
    assert sorted(f.location for f in findings) == ["*.cssx", "[Content_Types].xml"]


def test_544_reports_a_missing_manifest_once(sm):
    pkg = package(manifest_part=None, items=[], problems=[("package", "package has no .csman manifest")])
    finding = sm.only(sm.run(PackageStructureProblem, sm.subject_for(package=pkg)))
    assert finding.location == "package"
    with pytest.raises(NotApplicable):
        sm.run(PackageManifestItemMissing, sm.subject_for(package=pkg))


def test_544_reports_reader_problems_but_not_those_of_dedicated_rules(sm):
    missing = item("Gone.cssx", actual=None)
    problems = [
        (f"{SD_PART}!x.bin", "x.bin is damaged: bad CRC"),
        (f"{SD_PART}!y.bin", "y.bin is damaged: bad CRC"),
        (f"{SD_PART}!y.bin", "cannot read y.bin"),
        (missing.location, "manifest item 'Gone.cssx' is not in the package"),
        ("Stray.cssx", "part 'Stray.cssx' is not listed in the manifest"),
    ]
    pkg = package(items=[item(PAYLOAD), item(SD_PART), missing], extra_entries=[entry("Stray.cssx")], problems=problems)
    findings = sm.run(PackageStructureProblem, sm.subject_for(package=pkg))
    assert sorted(f.location for f in findings) == [f"{SD_PART}!x.bin", f"{SD_PART}!y.bin"]
    y = next(f for f in findings if f.location.endswith("y.bin"))
    assert y.evidence["problem"] == "y.bin is damaged: bad CRC; cannot read y.bin"


# ---- VMR545 ------------------------------------------------------------------------------------


def test_545_reports_a_package_without_build_csdef_with_the_reader_problem(sm):
    problem = (f"{SD_PART}!ServiceDefinition.build.csdef", "the packaged service definition is unreadable: bad XML")
    pkg = package(definition=None, problems=[problem])
    finding = sm.only(sm.run(PackageBuildDefinitionMissing, sm.subject_for(package=pkg)))
    assert finding.location == f"{SD_PART}!ServiceDefinition.build.csdef"
    assert "bad XML" in finding.evidence["problem"]
    # reported once: the structure rule leaves the definition problem to VMR545
    assert sm.run(PackageStructureProblem, sm.subject_for(package=pkg)) == []


def test_545_reports_a_package_without_sdpackage_part(sm):
    pkg = package(definition=None, entries=[entry("[Content_Types].xml"), entry(MANIFEST), entry(PAYLOAD)])
    finding = sm.only(sm.run(PackageBuildDefinitionMissing, sm.subject_for(package=pkg)))
    assert finding.location == "SDPackage_*.csdx"


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


def findings_by_rule(sm, subject) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rule in ALL:
        try:
            found = sm.run(rule, subject)
        except NotApplicable:
            continue
        if found:
            counts[rule.id] = len(found)
    return counts


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {}),
        ({"encrypted": True}, {"VMR543": 1}),
        ({"corrupt_hash": ["Web"]}, {"VMR540": 1}),
        ({"corrupt_hash": ["csdx"]}, {"VMR540": 1}),
        ({"extra_members": {"notes.txt": b"x"}}, {"VMR542": 1}),
        ({"omit_parts": ["csnsx"]}, {"VMR541": 1}),
    ],
    ids=["clean", "encrypted", "payload-hash", "csdx-hash", "stray-part", "missing-part"],
)
def test_package_rules_on_built_packages(tmp_path, sm, options, expected):
    assert findings_by_rule(sm, read_built(tmp_path, sm, **options)) == expected
