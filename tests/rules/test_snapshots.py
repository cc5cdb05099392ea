"""The finding snapshots themselves: they fail on any change, stay machine-independent, and none is stale."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from finding_snapshots import SNAPSHOT_DIR, Snapshot, SnapshotError, file_name, finding_record

from harness.engine.finding import Finding
from harness.engine.severity import Severity

RULE_TESTS = Path(__file__).resolve().parent
REPO = RULE_TESTS.parents[1]


def finding(**changes) -> Finding:
    base = Finding(
        rule_id="VMR501",
        rule_name="unmatched-role",
        severity=Severity.HIGH,
        artefact="svc/ServiceConfiguration.Cloud.cscfg",
        location="/ServiceConfiguration/Role[@name='Worker']",
        message="The ServiceDefinition has WorkerRole 'Worker' but the configuration has no such role: add it.",
        evidence={"role": "Worker", "kind": "WorkerRole"},
        line=3,
    )
    return dataclasses.replace(base, **changes)


def snap(tmp_path: Path, *, update: bool = False, **kw) -> Snapshot:
    return Snapshot(tmp_path / "snapshots" / "test_x" / "test_y.json", "test_x.py::test_y", update=update, **kw)


def stored(tmp_path: Path, findings) -> Snapshot:
    snap(tmp_path, update=True).assert_match(findings)
    return snap(tmp_path)


# ---- the facility -----------------------------------------------------------------------------------


def test_a_snapshot_records_every_field_of_a_finding():
    record = finding_record(finding())
    assert list(record) == [f.name for f in dataclasses.fields(Finding)] + ["fingerprint"]
    assert record["severity"] == "high" and record["evidence"] == {"kind": "WorkerRole", "role": "Worker"}


def test_a_missing_snapshot_fails_and_shows_what_to_write(tmp_path):
    with pytest.raises(SnapshotError, match=r"(?s)no snapshot .*--snapshot-update") as exc:
        snap(tmp_path).assert_match([finding()])
    assert "add it." in str(exc.value)
    assert not (tmp_path / "snapshots").exists()


def test_update_writes_and_the_next_run_matches(tmp_path):
    snap(tmp_path, update=True).assert_match([finding()])
    path = tmp_path / "snapshots" / "test_x" / "test_y.json"
    assert json.loads(path.read_text("utf-8"))[0]["message"].endswith("add it.")
    snap(tmp_path).assert_match([finding()])


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        pytest.param({"message": "something else"}, '+    "message": "something else"', id="message"),
        pytest.param({"severity": Severity.MEDIUM}, '+    "severity": "medium"', id="severity"),
        pytest.param({"location": "/ServiceConfiguration"}, '+    "location": "/ServiceConfiguration"', id="location"),
        pytest.param({"evidence": {"role": "W"}}, '+      "role": "W"', id="evidence"),
        pytest.param({"line": 4}, '+    "line": 4', id="line"),
        pytest.param({"artefact": "svc/x.cscfg"}, '+    "artefact": "svc/x.cscfg"', id="artefact"),
    ],
)
def test_any_changed_field_fails_with_a_diff(tmp_path, change, shown):
    snapshot = stored(tmp_path, [finding()])
    with pytest.raises(SnapshotError) as exc:
        snapshot.assert_match([finding(**change)])
    assert "differ from the reviewed snapshot" in str(exc.value)
    assert shown in str(exc.value)


def test_an_extra_or_a_missing_finding_fails(tmp_path):
    with pytest.raises(SnapshotError, match="differ"):
        stored(tmp_path, [finding()]).assert_match([finding(), finding(location="/x")])
    with pytest.raises(SnapshotError, match="differ"):
        stored(tmp_path, [finding()]).assert_match([])


def test_the_order_a_rule_yields_in_does_not_matter(tmp_path):
    a, b = finding(), finding(location="/ServiceConfiguration/Role[@name='A']")
    stored(tmp_path, [a, b]).assert_match([b, a])


def test_labelled_groups_share_one_file(tmp_path):
    stored(tmp_path, {"enabled": [finding()], "disabled": []}).assert_match({"enabled": [finding()], "disabled": []})
    with pytest.raises(SnapshotError):
        stored(tmp_path, {"enabled": [finding()]}).assert_match({"disabled": [finding()]})


def test_one_snapshot_per_test(tmp_path):
    snapshot = stored(tmp_path, [finding()])
    snapshot.assert_match([finding()])
    with pytest.raises(SnapshotError, match="called twice"):
        snapshot.assert_match([finding()])


def test_machine_paths_become_placeholders_or_are_refused(tmp_path):
    work = tmp_path / "work"
    here = finding(artefact=f"{work}/disk.vhd", message=f"cannot read {work}/disk.vhd")
    text = snap(tmp_path, replacements=[(work, "<work>")], machine_dirs=[tmp_path]).serialise([here])
    assert "<work>/disk.vhd" in text and str(tmp_path) not in text
    with pytest.raises(SnapshotError, match="machine-specific path"):
        snap(tmp_path, machine_dirs=[tmp_path]).serialise([here])
    assert "<w>/disk.vhd" in snap(tmp_path, machine_dirs=[tmp_path]).serialise([here], paths={"w": work})


def test_the_fingerprint_is_the_one_of_the_neutral_artefact(tmp_path):
    """An absolute artefact path (an image outside the run's root) enters the fingerprint: it must not
    make the snapshot differ between machines and runs."""
    texts = set()
    for root in (tmp_path / "a", tmp_path / "bb"):
        here = finding(artefact=f"{root}/disk.vhd")
        texts.add(snap(tmp_path, replacements=[(root, "<image_cache>")]).serialise([here]))
    (text,) = texts
    assert json.loads(text)[0]["fingerprint"] == finding(artefact="<image_cache>/disk.vhd").fingerprint


def test_a_secret_never_reaches_a_snapshot(tmp_path):
    leaky = finding(evidence={"value": "xx-Sup3rS3cretValue"})
    with pytest.raises(SnapshotError, match="secret"):
        snap(tmp_path, update=True).assert_match([leaky], secrets=["Sup3rS3cretValue"])
    with pytest.raises(SnapshotError, match="secret"):  # a prefix is a leak too
        snap(tmp_path, update=True).assert_match([leaky], secrets=["Sup3rS-other"])
    assert not (tmp_path / "snapshots").exists()


def test_invisible_characters_are_escaped(tmp_path):
    text = snap(tmp_path).serialise([finding(message="thumbprint '\u200eA9' … starts with U+200E")])
    assert "\\u200e" in text and "\u200e" not in text and "…" in text
    assert json.loads(text)[0]["message"].startswith("thumbprint '\u200eA9'")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("test_a", "test_a.json"),
        ("test_a[VMR501-csdef]", "test_a[VMR501-csdef].json"),
        ("test_a[x/y z]", "test_a[x_y_z]~"),
        ("test_a[\u200eA9]", "test_a[_A9]~"),
        ("test_" + "a" * 200, "test_" + "a" * 115 + "~"),
    ],
)
def test_file_names_are_portable_and_unique(name, expected):
    assert file_name(name).startswith(expected) and file_name(name).endswith(".json")
    assert file_name(name) != file_name(name + "_")


# ---- the stored snapshots -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collected() -> dict[str, set[str]]:
    return _collected_node_names()


def _collected_node_names() -> dict[str, set[str]]:
    """module stem -> node names (``test_x[param]``) of every test pytest collects under tests/rules."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:xdist",
            "-p",
            "no:cacheprovider",
            str(RULE_TESTS),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    names: dict[str, set[str]] = {}
    for line in result.stdout.splitlines():
        path, sep, name = line.strip().partition("::")
        if sep and path.startswith("tests/rules/test_"):
            names.setdefault(Path(path).stem, set()).add(name)
    assert names, result.stdout[-2000:] + result.stderr[-2000:]
    return names


def test_every_snapshot_file_belongs_to_a_collected_test(collected):
    """A renamed test or parameter leaves its old file behind: fail on it (delete it, re-run the update)."""
    stale = []
    for folder in sorted(p for p in SNAPSHOT_DIR.iterdir() if p.is_dir()) if SNAPSHOT_DIR.is_dir() else []:
        if folder.name not in collected and (RULE_TESTS / f"{folder.name}.py").is_file():
            continue  # that module did not collect at all: its collection error fails the run already
        expected = {file_name(n) for n in collected.get(folder.name, ())}
        stale += [p.relative_to(REPO).as_posix() for p in sorted(folder.iterdir()) if p.name not in expected]
    stray = [p.relative_to(REPO).as_posix() for p in SNAPSHOT_DIR.glob("*") if p.is_file()]
    assert stale + stray == [], "snapshot files no test writes (delete them): " + ", ".join(stale + stray)


def test_snapshot_files_are_canonical():
    """Every stored file is what the serialiser writes (no hand edits that a run would rewrite)."""
    from finding_snapshots import render

    bad = []
    for path in sorted(SNAPSHOT_DIR.rglob("*.json")):
        text = path.read_text("utf-8")
        if render(json.loads(text)) != text:
            bad.append(path.relative_to(REPO).as_posix())
    assert bad == []


def test_snapshot_file_names_do_not_collide_on_case_insensitive_file_systems(collected):
    """``[Password]`` and ``[password]`` would be one file on Windows and macOS: give such cases other ids."""
    clashes = []
    for module, names in sorted(collected.items()):
        seen: dict[str, str] = {}
        for name in sorted(names):
            key = file_name(name).casefold()
            if key in seen:
                clashes.append(f"{module}: {seen[key]} / {name}")
            seen[key] = name
    assert clashes == []
