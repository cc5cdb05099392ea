"""The fixtures for your own tests (vmrole_host & co.) against a real local fabric, through pytest in a subprocess.

The example suites (suites/smoke, suites/persistence) pass with one item per instance; a failing assertion names
the instance in the item id; the user tests are in the JUnit XML and the project's JSON/HTML reports beside the
built-in rules; no secret reaches any output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from harness.fabric.client import Fabric, up
from harness.live.target import fabric_target_document

pytestmark = pytest.mark.xdist_group("fabric-probe-e2e")

REPO = Path(__file__).resolve().parents[2]
HOST_TESTS_EVERY_INSTANCE = (
    "test_winrm_service_runs_and_starts_automatically",
    "test_winrm_https_port_listens",
    "test_hosts_file_is_present",
    "test_the_image_is_windows_server",
)


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Fabric:
    fab = up(tmp_path_factory.mktemp("fabric"), step_seconds=0.1)
    yield fab
    report = fab.down()
    assert report.ports_still_open == []


@pytest.fixture(scope="module")
def target(fabric: Fabric, tmp_path_factory: pytest.TempPathFactory) -> Path:
    document = fabric_target_document(fabric.data, fabric.layout.root)
    document["timeouts"].update(ready=30, conflict_retry=5)
    path = tmp_path_factory.mktemp("target") / "local.vmrtarget.yml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="module")
def secrets(fabric: Fabric) -> list[str]:
    return [
        (fabric.layout.secrets / "winrm-password").read_text().strip(),
        (fabric.layout.secrets / "mgmt-client.key").read_text().splitlines()[1],
    ]


def instances(fabric: Fabric, role: str | None = None) -> list[str]:
    return [i["id"] for i in fabric.data["instances"] if role is None or i["role"] == role]


def pytest_run(*args: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def junit_cases(path: Path) -> dict[str, str]:
    """``name`` → outcome (passed, failed, skipped, error) of every test case."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
        out[f"{case.get('classname')}::{case.get('name')}"] = outcome
    return out


def leaks(secrets: list[str], *texts: str) -> list[str]:
    return [s[:4] + "…" for s in secrets if any(s in t for t in texts)]


def written(folder: Path) -> list[str]:
    return [p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def smoke(target: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("smoke-out")
    proc = pytest_run(
        "suites/smoke", "--vmr-target", str(target), "--vmr-report-dir", str(out), "--junitxml", str(out / "junit.xml"),
        "--alluredir", str(out / "allure"), "-v",
    )  # fmt: skip
    return proc, out


def test_smoke_suite_passes_with_one_item_per_instance(smoke, fabric):
    proc, out = smoke
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    cases = junit_cases(out / "junit.xml")
    user = {name: outcome for name, outcome in cases.items() if name.startswith("suites.smoke.test_smoke::")}
    expected = {f"suites.smoke.test_smoke::{t}[{i}]" for t in HOST_TESTS_EVERY_INSTANCE for i in instances(fabric)}
    expected |= {f"suites.smoke.test_smoke::test_iis_runs_and_listens_on_http[{i}]" for i in instances(fabric, "WebVM")}
    expected.add("suites.smoke.test_smoke::test_the_site_answers_through_the_vip")
    assert set(user) == expected
    assert set(user.values()) == {"passed"}
    assert len(instances(fabric)) == 5  # the sample: 3 WebVM + 2 Indexer instances


def test_user_tests_are_in_the_json_report_beside_the_built_in_rules(smoke, fabric, secrets):
    proc, out = smoke
    report = json.loads((out / "vmrole.json").read_text())
    tests = [i for i in report["items"] if i.get("kind") == "test"]
    rules = [i for i in report["items"] if "kind" not in i]
    assert len(tests) == len(HOST_TESTS_EVERY_INSTANCE) * 5 + 3 + 1
    assert {t["outcome"] for t in tests} == {"passed"}
    assert all(t["artefact"] == "local-fabric" and t["rule_id"] == "" for t in tests)
    assert any(t["nodeid"].endswith("test_hosts_file_is_present[Indexer_IN_1]") for t in tests)
    assert any(r["rule_id"].startswith("VMR6") for r in rules)  # the built-in live rules ran too
    assert report["summary"]["items"]["failed"] == 0
    html = (out / "vmrole.html").read_text()
    assert 'id="tests"' in html and "test_winrm_https_port_listens[WebVM_IN_2]" in html
    assert not leaks(secrets, proc.stdout, proc.stderr, *written(out))


FAILING = """
import pytest


def test_w3svc_is_stopped(vmrole_host):
    assert vmrole_host.vmrole.service("W3SVC").status == "Stopped"


def test_echoed_password_comes_back_masked(vmrole_host, vmrole_target):
    password = vmrole_target.secret(vmrole_target.winrm.password)
    out = vmrole_host.run("echo " + password)
    assert out.stdout.strip() == "***"
    assert password not in out.stdout


def test_a_message_quoting_the_password_is_masked(vmrole_target):
    password = vmrole_target.secret(vmrole_target.winrm.password)  # a local: shown with -l
    pytest.fail("the WinRM password is " + password)


@pytest.mark.vmrole_one_instance
def test_one_instance(vmrole_host):
    assert vmrole_host.vmrole.facts.status == "ReadyRole"


@pytest.mark.vmrole_destructive
def test_destructive_without_the_flag(vmrole_host):
    raise AssertionError("must not run")


@pytest.mark.vmrole_one_instance
def test_a_second_registry_value_keeps_the_first(vmrole_host):
    key = r"HKLM:\\SOFTWARE\\VmroleTests\\TwoValues"
    vmrole_host.vmrole.set_registry_value(key, "First", "1")
    vmrole_host.vmrole.set_registry_value(key, "Second", "2")
    assert vmrole_host.vmrole.registry_value(key, "First") == "1"
    assert vmrole_host.vmrole.registry_value(key, "Second") == "2"


def test_vip(vmrole_vip, vmrole_http):
    assert vmrole_http.base_url == vmrole_vip.url("HttpIn")
    assert vmrole_http.get("/health").status_code in (200, 204)
"""


def test_a_failing_assertion_names_the_instance_and_no_secret_leaks(target, fabric, secrets, tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers\n")  # a project of your own
    (tmp_path / "test_mine.py").write_text(FAILING)
    out = tmp_path / "out"
    proc = pytest_run(
        "test_mine.py", "--vmr-target", str(target), "--vmr-report-dir", str(out), "--junitxml", str(out / "junit.xml"),
        "--alluredir", str(out / "allure"), "-m", "not vmrole", "-v", "-rs", "--tb=long", "-l", cwd=tmp_path,
    )  # fmt: skip
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text[-4000:]
    for inst in instances(fabric):
        assert f"test_w3svc_is_stopped[{inst}] FAILED" in text
        assert f"test_echoed_password_comes_back_masked[{inst}] PASSED" in text
        assert f"test_destructive_without_the_flag[{inst}] SKIPPED" in text
    assert "test_one_instance[WebVM_IN_0] PASSED" in text
    assert text.count("test_one_instance[") == 1
    assert (
        "destructive test 'test_destructive_without_the_flag[WebVM_IN_0]' not requested (run with --vmr-destructive)"
        in text
    )
    assert "test_vip PASSED" in text
    assert "test_a_second_registry_value_keeps_the_first[WebVM_IN_0] PASSED" in text
    assert "the WinRM password is ***" in text
    # a failed host test carries the instance's WinRM transcript (masked: the echo above shows ***)
    assert "evidence: winrm-Indexer_IN_0" in text and '$ powershell -NoProfile -Command "(Get-Service' in text

    report = json.loads((out / "vmrole.json").read_text())
    by_id = {i["nodeid"]: i for i in report["items"]}
    failed = by_id["test_mine.py::test_w3svc_is_stopped[Indexer_IN_1]"]
    assert failed["outcome"] == "failed" and "Running" in failed["message"]
    assert by_id["test_mine.py::test_a_message_quoting_the_password_is_masked"]["message"].endswith("is ***")
    skipped = by_id["test_mine.py::test_destructive_without_the_flag[WebVM_IN_1]"]
    assert skipped["outcome"] == "skipped" and "--vmr-destructive" in skipped["skip_reason"]
    cases = junit_cases(out / "junit.xml")
    assert cases["test_mine::test_w3svc_is_stopped[WebVM_IN_2]"] == "failed"
    assert not leaks(secrets, text, *written(out))


def test_persistence_suite_reimages_and_checks_what_survived(target, secrets, tmp_path):
    out = tmp_path / "out"
    args = ("suites/persistence", "--vmr-target", str(target), "-m", "not vmrole", "-v", "-rs")
    refused = pytest_run(*args)
    assert refused.returncode == 0, refused.stdout[-3000:]
    assert "SKIPPED" in refused.stdout and "not requested (run with --vmr-destructive)" in refused.stdout

    proc = pytest_run(*args, "--vmr-destructive", "--vmr-report-dir", str(out))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    assert "test_reimage_resets_the_os_drive_and_keeps_local_storage[WebVM_IN_0] PASSED" in text
    assert text.count("PASSED") == 1
    assert not leaks(secrets, text, *written(out))


def test_no_target_skips_with_the_reason():
    proc = pytest_run("suites/smoke", "-rs", "-m", "not vmrole", timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "passed" not in proc.stdout.splitlines()[-1]
    assert "no deployment target: run with --vmr-target FILE" in proc.stdout


def test_an_unreachable_management_api_is_a_clean_collection_error(fabric, tmp_path):
    from harness.fabric.ports import allocate

    document = fabric_target_document(fabric.data, fabric.layout.root)
    (closed,) = allocate(1)  # nothing listens there
    document["management"]["url"] = f"https://127.0.0.1:{closed}"
    document["timeouts"].update(connect=1, read=2, conflict_retry=1)
    bad = tmp_path / "down.vmrtarget.yml"
    bad.write_text(yaml.safe_dump(document))
    proc = pytest_run("suites/smoke", "--vmr-target", str(bad), "-m", "not vmrole", timeout=180)
    text = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, text[-3000:]
    assert "ERROR collecting suites/smoke/test_smoke.py" in text
    assert f"vmrole_host: target local-fabric ({bad}): cannot list the deployment's instances" in text
    assert f"127.0.0.1:{closed}" in text
    assert "Traceback" not in text


def test_the_projects_own_tests_do_not_collect_the_suites():
    config = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["pytest"]["ini_options"]
    assert config["testpaths"] == ["tests"]
    assert not any(p.name == "__init__.py" for p in (REPO / "suites").rglob("*.py"))  # test files only
