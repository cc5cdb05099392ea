"""harness.lint.lint(): the engine's one entry point, checked against `vmrole lint` on real files.

Each comparison lints the same files both ways, the API in-process and `vmrole lint` (pytest, the plugin, the
JSON report) in a subprocess, and requires the same items (rule × artefact, run or skipped and why) and the
same findings (rule id, artefact, location, line, message, fingerprint), so the two paths cannot drift.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.engine.artefact import CSDEF, Artefact
from harness.engine.severity import Severity
from harness.lint import LintOptions, LintResult, lint

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "harness" / "samples" / "vmrole"
VMROLE = Path(sys.executable).with_name("vmrole")
TODAY = dt.date(2026, 12, 1)  # both paths judge expiry against the same day, whenever the test runs


def run_vmrole_lint(cwd: Path, report_dir: Path, *args: str) -> tuple[int, dict]:
    """`vmrole lint ARGS` in ``cwd`` (the run's root); its exit status and JSON report."""
    outputs = ["--no-allure", "--no-junit", "--format", "json", "--report-dir", str(report_dir), "-q", "-q"]
    proc = subprocess.run(
        [str(VMROLE), "lint", *args, *outputs, "--", f"--vmr-today={TODAY.isoformat()}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode in (0, 1), f"vmrole lint exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr}"
    return proc.returncode, json.loads((report_dir / "vmrole.json").read_text(encoding="utf-8"))


def cli_view(report: dict) -> tuple[list[tuple], list[tuple]]:
    items = sorted(
        (i["rule_id"], i["artefact"], i["skip_reason"] if i["outcome"] == "skipped" else None) for i in report["items"]
    )
    findings = sorted(
        (f["rule_id"], f["artefact"], f["location"], f["line"] or 0, f["message"], f["fingerprint"])
        for f in report["findings"]
    )
    return items, findings


def api_view(result: LintResult) -> tuple[list[tuple], list[tuple]]:
    items = sorted((o.rule_id, a.artefact.identity, o.skip_reason) for a in result.artefacts for o in a.outcomes)
    findings = sorted(
        (f.rule_id, f.artefact, f.location, f.line or 0, f.message, f.fingerprint) for f in result.findings
    )
    return items, findings


def assert_same(cwd: Path, tmp_path: Path, paths: list[str], options: LintOptions, *cli_options: str) -> LintResult:
    """Lint ``paths`` (relative to ``cwd``) both ways; returns the API's result after comparing."""
    status, report = run_vmrole_lint(cwd, tmp_path / "reports", *paths, *cli_options)
    options = dataclasses.replace(  # relative paths in the options are relative to the working directory
        options,
        csdef=cwd / options.csdef if options.csdef else None,
        packages=tuple(cwd / p for p in options.packages),
        cscfgs=tuple(cwd / p for p in options.cscfgs),
        root=cwd,
        today=TODAY,
    )
    named = [*(cwd / p for p in paths), *options.packages, *options.cscfgs]  # the CLI lints what it pairs with
    if options.csdef is not None:
        named.append(options.csdef)
    result = lint(named, options)
    cli_items, cli_findings = cli_view(report)
    api_items, api_findings = api_view(result)
    assert api_items, "nothing was linted"
    assert api_items == cli_items
    assert api_findings == cli_findings
    assert status == (1 if result.failed else 0)
    return result


# ---- the bundled sample ---------------------------------------------------------------------------------------


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    shutil.copytree(SAMPLE, folder / "vmrole")
    return folder


def test_bundled_sample_as_vmrole_lint_reports_it(sample: Path, tmp_path: Path) -> None:
    result = assert_same(sample, tmp_path, ["vmrole"], LintOptions())
    assert [a.artefact.identity for a in result.artefacts] == [
        "vmrole/ServiceConfiguration.Cloud.cscfg",
        "vmrole/ServiceDefinition.csdef",
    ]
    cscfg = result.artefacts[0]
    assert cscfg.unreadable is None and not cscfg.notes  # paired with its sibling csdef
    assert len(cscfg.outcomes) > 10


def test_bundled_sample_with_an_explicit_csdef_and_a_severity_threshold(sample: Path, tmp_path: Path) -> None:
    options = LintOptions(csdef=Path("vmrole/ServiceDefinition.csdef"), siblings=False, fail_on=Severity.INFO)
    assert_same(
        sample,
        tmp_path,
        ["vmrole/ServiceConfiguration.Cloud.cscfg"],
        options,
        "--csdef",
        "vmrole/ServiceDefinition.csdef",
        "--fail-on",
        "info",
    )


def test_a_broken_copy_of_the_sample_is_vmr001_both_ways(sample: Path, tmp_path: Path) -> None:
    cscfg = sample / "vmrole" / "ServiceConfiguration.Cloud.cscfg"
    cscfg.write_text(cscfg.read_text(encoding="utf-8")[:-40], encoding="utf-8")  # unclosed elements
    result = assert_same(sample, tmp_path, ["vmrole"], LintOptions())
    broken = result.result_for(cscfg)
    assert broken is not None and broken.unreadable
    assert [o.rule_id for o in broken.outcomes] == ["VMR001"]
    assert [f.rule_id for f in broken.outcomes[0].findings] == ["VMR001"]


def test_a_hostile_package_is_vmr001_at_its_location_both_ways(sample: Path, tmp_path: Path) -> None:
    from harness.testing.cspkg import write_cspkg

    csdef = (sample / "vmrole" / "ServiceDefinition.csdef").read_text(encoding="utf-8-sig")
    package = write_cspkg(sample / "vmrole" / "Hostile.cspkg", csdef, extra_members={"../evil": b"x"})
    result = assert_same(sample, tmp_path, ["vmrole"], LintOptions())
    hostile = result.result_for(package)
    assert hostile is not None and hostile.unreadable and "path traversal" in hostile.unreadable
    assert [(f.rule_id, f.location) for f in hostile.outcomes[0].findings] == [("VMR001", "package")]


# ---- the shared real-world samples ----------------------------------------------------------------------------

SUBSET = [
    "service-models/dtPaTh__Dynatrace-Azure-CloudServices",  # a malformed cscfg (VMR001)
    "service-models/ImaginaryDevelopment__azure.net",  # name-prefixed siblings, a build csdef
    "service-models/NathanielRose__eventhub-to-AzureSQLdb",  # literal storage keys
    "service-models/Blackmist__rubyrole",
    "cspkg",
]


def test_shared_samples_as_vmrole_lint_reports_them(shared_samples: Path, tmp_path: Path) -> None:
    result = assert_same(shared_samples, tmp_path, SUBSET, LintOptions())
    rule_ids = {f.rule_id for f in result.findings}
    assert {"VMR001", "VMR301"} <= rule_ids
    assert len(result.artefacts) > 15


def test_shared_package_paired_with_its_configuration(shared_samples: Path, tmp_path: Path) -> None:
    pkg = "cspkg/nshraddha__CMHelloWorld_onAzure_Win__deploy__WindowsAzurePackage.cspkg"
    cscfgs = sorted((shared_samples / "service-models" / "nshraddha__CMHelloWorld_onAzure_Win").glob("*.cscfg"))
    assert cscfgs
    cscfg = str(cscfgs[0].relative_to(shared_samples))
    options = LintOptions(packages=(Path(pkg),), cscfgs=(Path(cscfg),))
    result = assert_same(shared_samples, tmp_path, [], options, "--package", pkg, "--cscfg", cscfg)
    package = result.result_for(shared_samples / pkg)
    assert package is not None and package.unreadable is None and "configuration" not in package.notes


@pytest.mark.slow
def test_whole_shared_corpus_as_vmrole_lint_reports_it(shared_samples: Path, tmp_path: Path) -> None:
    result = assert_same(shared_samples, tmp_path, ["."], LintOptions())
    assert len(result.artefacts) > 400


# ---- the API's own contract -----------------------------------------------------------------------------------


def test_paths_artefacts_and_directories(sample: Path) -> None:
    csdef = sample / "vmrole" / "ServiceDefinition.csdef"
    hidden = sample / ".hidden"
    hidden.mkdir()
    shutil.copy(csdef, hidden / "ServiceDefinition.csdef")  # pytest (and so vmrole lint) skips dot-folders
    target = sample / "x.vmrtarget.yml"
    target.write_text("name: x\n", encoding="utf-8")
    result = lint([sample, Artefact.from_path(csdef, CSDEF, sample), str(csdef)], LintOptions(root=sample))
    assert [a.artefact.identity for a in result.artefacts] == [
        "vmrole/ServiceConfiguration.Cloud.cscfg",
        "vmrole/ServiceDefinition.csdef",
    ]
    assert result.notes == ()  # a target file found in a directory is never probed, and not mentioned
    named = lint([target, csdef], LintOptions(root=sample))
    assert [a.artefact.identity for a in named.artefacts] == ["vmrole/ServiceDefinition.csdef"]
    assert [n for n in named.notes if "x.vmrtarget.yml is a target file and was not probed" in n]
    with pytest.raises(ValueError, match="no such file"):
        lint([sample / "missing.cscfg"])
    with pytest.raises(ValueError, match="not an artefact"):
        lint([Path(__file__)])


def test_select_ignore_and_unknown_selectors(sample: Path) -> None:
    csdef = sample / "vmrole" / "ServiceDefinition.csdef"
    only = lint([csdef], LintOptions(select=("VMR001",)))
    assert [o.rule_id for o in only.artefacts[0].outcomes] == ["VMR001"]
    without = lint([csdef], LintOptions(ignore=("VMR001",)))
    assert "VMR001" not in {o.rule_id for o in without.artefacts[0].outcomes}
    with pytest.raises(ValueError, match="matches no rule"):
        lint([csdef], LintOptions(select=("VMR999999",)))


def test_an_unreadable_file_is_vmr001_even_when_not_selected(tmp_path: Path) -> None:
    bad = tmp_path / "ServiceDefinition.csdef"
    bad.write_text("<ServiceDefinition", encoding="utf-8")
    result = lint([bad], LintOptions(root=tmp_path, ignore=("VMR001",)))
    (only,) = result.artefacts
    assert only.unreadable and [o.rule_id for o in only.outcomes] == ["VMR001"]
    assert [(f.rule_id, f.artefact) for f in result.findings] == [("VMR001", "ServiceDefinition.csdef")]
    assert result.failed == result.findings  # VMR001 is at or above the default threshold


def test_the_bench_lints_through_the_api(shared_samples: Path) -> None:
    from bench import lint_corpus

    files = lint_corpus.corpus_files(shared_samples)[:40]
    assert lint_corpus.stage_lint(files, shared_samples) == len(lint(files, LintOptions(root=shared_samples)).findings)
