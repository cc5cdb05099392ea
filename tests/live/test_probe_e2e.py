"""The live suites end to end, through the plugin and `vmrole probe`, against a real local fabric.

A healthy 3-instance deployment passes every suite (destructive probes included); each injected fault
turns the matching rule red or amber with a message naming the cause; secrets reach no output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.fabric.client import Fabric, up
from harness.live.target import fabric_target_document

pytestmark = pytest.mark.xdist_group("fabric-probe-e2e")


@pytest.fixture(scope="module")
def fabric(tmp_path_factory) -> Fabric:
    fab = up(tmp_path_factory.mktemp("fabric"), step_seconds=0.1)
    yield fab
    report = fab.down()
    assert report.ports_still_open == []


def write_target(fabric: Fabric, tmp_path: Path, **changes) -> Path:
    """The fabric's own target, with short deadlines so a fault shows within seconds."""
    document = fabric_target_document(fabric.data, fabric.layout.root)
    document["timeouts"].update(ready=4, conflict_retry=2)
    for key, value in changes.items():
        document[key] = value
    path = tmp_path / "local.vmrtarget.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def probe(target: Path, out: Path, *args: str) -> tuple[int, dict, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "probe", str(target), "--report-dir", str(out), "--no-allure", *args],
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads((out / "vmrole.json").read_text())
    return proc.returncode, report, proc.stdout + proc.stderr


def findings(report: dict, rule_id: str) -> list[dict]:
    return [f for f in report["findings"] if f["rule_id"] == rule_id]


def test_healthy_deployment_passes_every_suite_and_leaks_no_secret(fabric, tmp_path):
    code, report, output = probe(write_target(fabric, tmp_path), tmp_path / "out", "--destructive")
    assert code == 0, output[-3000:]
    outcomes = {i["rule_id"]: i["outcome"] for i in report["items"]}
    for area in ("VMR60", "VMR61", "VMR63", "VMR70", "VMR71", "VMR80", "VMR81"):
        assert any(r.startswith(area) and o == "passed" for r, o in outcomes.items()), area
    assert not [i for i in report["items"] if i["outcome"] == "failed"]
    assert {c["key"] for c in report["charts"]} == {"lb-spread", "reimage-timeline"}
    secrets = [
        (fabric.layout.secrets / "winrm-password").read_text().strip(),
        (fabric.layout.secrets / "mgmt-client.key").read_text().splitlines()[1],
    ]
    written = [p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*") if p.is_file()]
    for secret in secrets:
        assert not any(secret in text for text in [output, *written])


FAULTS = [
    # (fault, target instance, extra target keys, probe args, rule, words the message must contain)
    ("busy", "WebVM_IN_1", {}, (), "VMR602", ("WebVM_IN_1", "BusyRole")),
    ("crash", "WebVM_IN_2", {}, (), "VMR616", ("WebVM_IN_2",)),
    # an internal endpoint, probed from inside another instance over WinRM
    ("crash", "Indexer_IN_0", {}, ("--select", "VMR617"), "VMR617", ("Indexer_IN_0", "Feed")),
    ("kill-backend", "WebVM_IN_0", {}, (), "VMR603", ("WebVM_IN_0",)),
    ("cert-mismatch", "WebVM_IN_1", {}, (), "VMR612", ("WebVM_IN_1",)),
    (None, None, {"app_state_paths": ["C:\\AppState\\orders.db"]}, (), "VMR634", ("C:\\AppState\\orders.db",)),
    ("lose-local-storage", "WebVM_IN_2", {}, ("--destructive",), "VMR703", ("AppData",)),
    ("mgmt-500", None, {}, (), "VMR600", ("500",)),
    ("mgmt-409", None, {}, ("--destructive",), "VMR700", ("409",)),
]


@pytest.mark.parametrize(
    ("fault", "instance", "keys", "args", "rule", "words"), FAULTS, ids=[f[4] + "-" + str(f[0]) for f in FAULTS]
)
def test_each_fault_turns_the_matching_check_red_or_amber(fabric, tmp_path, fault, instance, keys, args, rule, words):
    target = write_target(fabric, tmp_path, **keys)
    if fault == "lose-local-storage":
        fabric.inject(fault, instance, seconds=120)
        args = (*args, "--select", "VMR70")
    elif fault == "mgmt-409":
        args = (*args, "--select", "VMR70")
    try:
        if fault in ("mgmt-500", "mgmt-409"):
            fabric.inject(fault, None, seconds=25)
        elif fault and fault != "lose-local-storage":
            fabric.inject(fault, instance, seconds=60)
        code, report, output = probe(target, tmp_path / "out", *args)
    finally:
        fabric.clear_faults()
        fabric.refresh()
    hits = findings(report, rule)
    assert hits, f"{rule} did not fire for {fault}:\n{output[-4000:]}"
    message = " ".join(h["message"] for h in hits)
    for word in words:
        assert word in message, message
    red = any(h["severity"] in ("high", "critical") for h in hits)
    amber = any(h["severity"] in ("medium", "low") for h in hits)
    assert red or amber
    if red:
        assert code == 1
    # the deployment is healthy again for the next case
    from harness.fabric.lifecycle import wait_until

    assert wait_until(
        lambda: all(i["status"] == "ReadyRole" for i in fabric.refresh()["instances"]), deadline_s=30, interval=0.2
    )
