"""CI shards (``vmrole lint --shard I/N``) and ``vmrole report merge``, on the shared real-world corpus.

The corpus (../shared/samples: 417 service-model files from public repositories, 2 packages, plus hives the
lint does not collect) and the bundled sample harness/samples/vmrole are copied into a temporary tree, and
``vmrole`` runs in subprocesses from that tree's root (the run's root, as in CI). A shard run of the corpus
takes ~5 s, the unsharded one ~17 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from harness.shards import Shard, shard_of
from harness.subjects import sibling_definition
from tests.reports import sarif_validation

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "harness" / "samples" / "vmrole"
N = 3
#: the tree's top folders, in the order the runs name them
PARTS = ("service-models", "cspkg", "vmrole")


def vmrole(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VMR_", "PYTEST_"))}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _copy_tree(shared: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for part in PARTS[:2]:
        shutil.copytree(shared / part, dest / part)
    shutil.copytree(SAMPLE, dest / "vmrole")
    # strays beside the checkout: pytest offers an argument's ancestor folders' files to the plugin too, and
    # they once counted as artefacts in the shard note
    (dest.parent / "stray.img").write_bytes(b"\0" * 4096)
    (dest.parent / "Stray.cscfg").write_text("<ServiceConfiguration/>")
    return dest


def lintable(root: Path) -> list[Path]:
    """The files a lint of the tree collects: every csdef, cscfg and cspkg (the corpus may grow)."""
    return [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".csdef", ".cscfg", ".cspkg")]


@pytest.fixture(scope="module")
def tree(shared_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_tree(shared_samples, tmp_path_factory.mktemp("ci") / "checkout")


def collected(cwd: Path, paths: Sequence[str], *options: str) -> list[str]:
    """The artefacts (paths relative to ``cwd``) a lint run collects, in collection order."""
    proc = vmrole(cwd, "lint", *paths, *options, "--no-allure", "--no-junit", "--", "--collect-only", "-q")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = [line.split("::", 1)[0] for line in proc.stdout.splitlines() if "::" in line]
    return list(dict.fromkeys(files))


@pytest.fixture(scope="module")
def everything(tree: Path) -> list[str]:
    return collected(tree, PARTS)


@pytest.fixture(scope="module")
def shards(tree: Path) -> dict[int, list[str]]:
    return {i: collected(tree, PARTS, "--shard", f"{i}/{N}") for i in range(1, N + 1)}


def sets_of(files: Sequence[str], root: Path) -> list[set[str]]:
    """Each .cscfg with the sibling csdef it pairs with (the subjects' rule): the sets a shard must not split."""
    out = []
    for name in files:
        if name.lower().endswith(".cscfg"):
            sibling = sibling_definition(root / name)
            if sibling is not None:
                out.append({name, sibling.relative_to(root).as_posix()})
    return out


def check_shards(shards: dict[int, list[str]], everything: Sequence[str], root: Path) -> None:
    """Every artefact in exactly one shard, no set split, no shard empty."""
    seen: dict[str, int] = {}
    for i, files in shards.items():
        assert files, f"shard {i}/{N} is empty"
        for name in files:
            assert name not in seen, f"{name} in shards {seen[name]} and {i}"
            seen[name] = i
    assert sorted(seen) == sorted(everything)
    for group in sets_of(everything, root):
        assert len({seen[name] for name in group}) == 1, f"set split across shards: {sorted(group)}"


def test_every_artefact_lands_in_exactly_one_shard_and_sets_stay_together(
    tree: Path, everything: list[str], shards: dict[int, list[str]]
) -> None:
    # every service model and package in the tree (417 + 2 + the sample's csdef and cscfg when written)
    assert len(everything) == len(lintable(tree)) > 400
    assert sum(name.startswith(("vmrole/", "cspkg/")) for name in everything) == 4
    assert len(sets_of(everything, tree)) > 150  # the check below is not vacuous
    check_shards(shards, everything, tree)


def test_the_split_does_not_depend_on_the_machine_the_location_or_the_order(
    shared_samples: Path, tmp_path: Path, shards: dict[int, list[str]]
) -> None:
    elsewhere = _copy_tree(shared_samples, tmp_path / "another" / "runner" / "work")
    for i in range(1, N + 1):
        # another absolute location, the paths named in reverse order, and absolutely
        reverse = collected(elsewhere, PARTS[::-1], "--shard", f"{i}/{N}")
        assert sorted(reverse) == sorted(shards[i])
    absolute = collected(elsewhere, [str(elsewhere / p) for p in PARTS], "--shard", f"2/{N}")
    relative = [Path(p).relative_to(elsewhere).as_posix() if Path(p).is_absolute() else p for p in absolute]
    assert sorted(relative) == sorted(shards[2])


def by_collection_order(order: Sequence[str], index: int, total: int) -> list[str]:
    """A split that would be wrong: the k-th collected artefact goes to shard k mod N."""
    return [name for k, name in enumerate(order) if k % total == index - 1]


def test_a_split_by_collection_order_would_fail_these_checks(tree: Path, everything: list[str]) -> None:
    """The checks above catch a split by collection order: naming the paths in another order (as two CI
    runners given different globs would) moves artefacts between shards, and sets get split."""
    reverse = collected(tree, PARTS[::-1])
    assert sorted(reverse) == sorted(everything) and reverse != everything

    def runner_split(runner_order: Callable[[int], Sequence[str]]) -> dict[int, list[str]]:
        return {i: by_collection_order(runner_order(i), i, N) for i in range(1, N + 1)}

    mixed = runner_split(lambda i: everything if i % 2 else reverse)  # runners collected in different orders
    with pytest.raises(AssertionError):
        check_shards(mixed, everything, tree)
    with pytest.raises(AssertionError, match="set split"):
        check_shards(runner_split(lambda i: everything), everything, tree)


def test_shard_values_are_a_usage_error_naming_the_option(tree: Path) -> None:
    for bad in ("0/3", "4/3", "x/y", "3", "1/0"):
        proc = vmrole(tree, "lint", "vmrole", "--shard", bad)
        assert proc.returncode == 4, (bad, proc.stderr)
        assert "--shard" in proc.stderr and repr(bad) in proc.stderr
        proc = vmrole(tree, "lint", "vmrole", "--", "--vmr-shard", bad)
        assert proc.returncode == 4 and "--vmr-shard" in proc.stderr, (bad, proc.stderr)
    with pytest.raises(ValueError):
        Shard.parse("2/1")


def test_the_shard_is_a_stable_hash() -> None:
    # sha256, not the salted hash(): these values hold in every process and on every machine
    assert [shard_of(key, 3) for key in ("vmrole/ServiceDefinition.csdef", "a", "")] == [
        shard_of(key, 3) for key in ("vmrole/ServiceDefinition.csdef", "a", "")
    ]
    assert (
        shard_of("vmrole/ServiceDefinition.csdef", 3) == Shard(shard_of("vmrole/ServiceDefinition.csdef", 3), 3).index
    )
    code = "from harness.shards import shard_of; print([shard_of(str(k), 7) for k in range(50)])"
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(runs) == 1


def fingerprints(report: dict) -> list[tuple[str, str]]:
    return sorted((f["fingerprint"], f["disposition"]) for f in report["findings"])


@pytest.fixture(scope="module")
def shard_reports(tree: Path) -> list[Path]:
    reports = []
    for i in range(1, N + 1):
        proc = vmrole(tree, "lint", *PARTS, "--shard", f"{i}/{N}", "--report-dir", f"shard{i}", "--no-allure", "-q")
        assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]  # the corpus has high findings
        total = len(lintable(tree))
        assert re.search(rf"shard {i}/{N}: \d+ of {total} artefacts", proc.stdout), proc.stdout[-2000:]
        reports.append(tree / f"shard{i}" / "vmrole.json")
    return reports


def test_merged_shards_equal_one_unsharded_run(tree: Path, shard_reports: list[Path]) -> None:
    whole = vmrole(tree, "lint", *PARTS, "--report-dir", "whole", "--no-allure", "-q")
    merged = vmrole(tree, "report", "merge", *map(str, shard_reports), "--report-dir", "merged")
    assert merged.returncode == whole.returncode == 1, merged.stderr
    one = json.loads((tree / "whole" / "vmrole.json").read_text("utf-8"))
    both = json.loads((tree / "merged" / "vmrole.json").read_text("utf-8"))
    assert fingerprints(both) == fingerprints(one) and len(one["findings"]) > 500
    assert both["verdict"] == one["verdict"] == "fail"
    assert both["exit_status"] == 1
    assert both["summary"] == one["summary"]
    assert [a["identity"] for a in both["artefacts"]] == [a["identity"] for a in one["artefacts"]]
    assert [(i["nodeid"], i["outcome"]) for i in both["items"]] == [(i["nodeid"], i["outcome"]) for i in one["items"]]
    assert both["rules"] == one["rules"]
    for name in ("vmrole.sarif", "vmrole.html", "junit.xml"):
        assert (tree / "merged" / name).stat().st_size > 0
    junit = (tree / "merged" / "junit.xml").read_text("utf-8")
    whole_junit = (tree / "whole" / "junit.xml").read_text("utf-8")
    assert junit.count("<testcase ") == whole_junit.count("<testcase ") == len(one["items"])
    assert junit.count("<failure ") == whole_junit.count("<failure ")
    sarif = json.loads((tree / "merged" / "vmrole.sarif").read_text("utf-8"))
    one_sarif = json.loads((tree / "whole" / "vmrole.sarif").read_text("utf-8"))
    assert sarif["runs"][0]["results"] == one_sarif["runs"][0]["results"]
    assert sarif["runs"][0]["tool"]["driver"]["rules"] == one_sarif["runs"][0]["tool"]["driver"]["rules"]


def test_the_merged_sarif_validates(tree: Path, shard_reports: list[Path], tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema_path = sarif_validation.sarif_sdk_schema() or sarif_validation.oasis_schema()
    if schema_path is None:
        pytest.skip(f"SARIF 2.1.0 schema not installed; install it with: {sarif_validation.PYPI_INSTALL}")
    proc = vmrole(tree, "report", "merge", *map(str, shard_reports), "--report-dir", str(tmp_path))
    assert proc.returncode == 1, proc.stderr
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    document = json.loads((tmp_path / "vmrole.sarif").read_text("utf-8"))
    assert [e.message for e in validator.iter_errors(document)] == []
    assert document["runs"][0]["results"]


def test_a_passing_merge_exits_0_and_an_empty_shard_passes(tree: Path, tmp_path: Path) -> None:
    """The bundled sample is clean at fail-on critical; with 5 shards of 2 artefacts some shard is empty."""
    reports = []
    for i in range(1, 6):
        out = tmp_path / f"s{i}"
        proc = vmrole(tree, "lint", "vmrole", "--shard", f"{i}/5", "--fail-on", "critical", "--report-dir", str(out))
        assert proc.returncode == 0, proc.stdout[-2000:]
        reports.append(out / "vmrole.json")
    missing = [r for r in reports if not r.exists()]
    assert len(missing) < 5
    proc = vmrole(
        tree, "report", "merge", *(str(r) for r in reports if r.exists()), "--report-dir", str(tmp_path / "m")
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "m" / "vmrole.json").read_text("utf-8"))["verdict"] == "pass"


@pytest.mark.parametrize("damage", ["truncated", "not-a-report", "schema", "fail-on", "version", "rule", "twice"])
def test_a_bad_report_is_named_and_nothing_is_written(
    damage: str, shard_reports: list[Path], tmp_path: Path, tree: Path
) -> None:
    first = json.loads(shard_reports[0].read_text("utf-8"))
    bad = tmp_path / "bad.json"
    inputs = [str(shard_reports[0]), str(bad)]
    second = json.loads(shard_reports[1].read_text("utf-8"))
    if damage == "truncated":
        bad.write_text(shard_reports[1].read_text("utf-8")[:5000], "utf-8")
    elif damage == "not-a-report":
        bad.write_text("[1, 2, 3]\n", "utf-8")
    elif damage == "schema":
        del second["items"][0]["outcome"]
        bad.write_text(json.dumps(second), "utf-8")
    elif damage == "fail-on":
        second["fail_on"] = "medium"
        bad.write_text(json.dumps(second), "utf-8")
    elif damage == "version":
        second["tool"]["version"] = "0.0.1"
        bad.write_text(json.dumps(second), "utf-8")
    elif damage == "rule":
        shared = {r["id"] for r in first["rules"]}
        rule = next(r for r in second["rules"] if r["id"] in shared)
        rule["severity"] = "info" if rule["severity"] != "info" else "low"
        bad.write_text(json.dumps(second), "utf-8")
    else:
        bad.write_text(shard_reports[0].read_text("utf-8"), "utf-8")
    out = tmp_path / "out"
    proc = vmrole(tree, "report", "merge", *inputs, "--report-dir", str(out))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert str(bad) in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_the_merge_schema_check_accepts_the_golden_report_and_rejects_breakages() -> None:
    from harness.reports.merge import validation_errors

    golden = json.loads((REPO / "tests" / "reports" / "golden" / "vmrole.json").read_text("utf-8"))
    golden.update(started="2026-12-07T21:00:00Z", finished="2026-12-07T21:00:01Z")  # the golden's placeholders
    assert validation_errors(golden) == []
    breakages: list[Callable[[dict], object]] = [
        lambda d: d.pop("items"),
        lambda d: d.update(fail_on="severe"),
        lambda d: d.update(schema_version=2),
        lambda d: d["findings"][0].update(severity=3),
        lambda d: d["findings"][0].pop("fingerprint"),
        lambda d: d["rules"][0].update(extra=1),
        lambda d: d["items"][0].update(outcome="maybe"),
        lambda d: d["artefacts"].append("x"),
    ]
    for breaking in breakages:
        broken = json.loads(json.dumps(golden))
        breaking(broken)
        assert validation_errors(broken), broken
