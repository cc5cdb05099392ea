"""Issue 10 item 6: a deployment that is not ready is reported within the readiness deadline, not after every
destructive probe has waited out a deadline of its own.

One instance is held BusyRole (the fabric's ``busy`` fault) for longer than the readiness deadline. The probe
run (``--destructive``) waits for readiness once; the drain, reimage and reboot probes then do not run: their
rules are skipped with the reason, naming the busy instance. It used to take about four times the deadline
(the readiness wait, then one more wait per destructive probe).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from harness.fabric.client import Fabric, up
from harness.live.target import fabric_target_document
from tests.live.test_fault_matrix import assert_no_traceback, messages, run_probe, skip_reasons

pytestmark = pytest.mark.xdist_group("fabric-probe-e2e")

READY_DEADLINE = 12.0  # seconds; the instance stays Busy far longer (the old behaviour took ~4x this)
SLACK = 20.0  # seconds beyond the deadline (start-up, the other probes, the reports; generous for a loaded CI machine)
BUSY = "WebVM_IN_1"


def write_target(fabric: Fabric, tmp_path: Path) -> Path:
    document = fabric_target_document(fabric.data, fabric.layout.root)
    document["timeouts"].update(ready=READY_DEADLINE, conflict_retry=2)
    path = tmp_path / "local.vmrtarget.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_an_instance_busy_past_the_readiness_deadline_is_reported_within_the_deadline(tmp_path: Path) -> None:
    fabric = up(tmp_path / "fabric", step_seconds=0.1)
    try:
        target = write_target(fabric, tmp_path)
        fabric.inject("busy", BUSY, seconds=300)
        started = time.monotonic()
        result = run_probe(target, tmp_path / "out", ("--destructive",), {})
        seconds = time.monotonic() - started
    finally:
        fabric.down()
    report, output = result["report"], result["output"]
    print(f"busy past the deadline: probe {seconds:.1f} s, exit {result['code']}")
    assert seconds < READY_DEADLINE + SLACK, f"{seconds:.1f} s\n{output[-3000:]}"
    assert result["code"] == 1, output[-4000:]
    assert_no_traceback(result["items"], output)
    # the readiness rule names the instance that was not ready
    assert BUSY in messages(report, "VMR602") and "BusyRole" in messages(report, "VMR602"), messages(report, "VMR602")
    # every destructive rule is skipped with the reason, naming the instance; none of them ran
    outcomes = {i["rule_id"]: i["outcome"] for i in report["items"]}
    destructive = [r for r in outcomes if r.startswith(("VMR70", "VMR71", "VMR81"))]
    assert destructive, sorted(outcomes)
    for rule in destructive:
        assert outcomes[rule] == "skipped", (rule, outcomes[rule])
        reason = skip_reasons(report, rule)
        assert "not run: the deployment is not ready" in reason and f"{BUSY} is BusyRole" in reason, (rule, reason)
