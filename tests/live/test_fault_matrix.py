"""Issue 9 item 4 (first half): a fabric part dies before or during a probe.

For each part (the load balancer, blob storage, the management API, one instance) a fresh fabric is brought
up, the part is SIGKILLed (or, for the management API, made to hold every request: ``mgmt-timeout``) — just
before the probe, or right before a given item runs (the plugin ``tests.live.fault_plugin`` does it inside the
probe process, so "during" is deterministic) — and the probe must

- end within a wall-clock bound (it used to wait out every timeout again: 207-216 s with HAProxy dead, 351-357 s
  with Azurite dead; now 3-14 s on an idle 2-core machine);
- name the cause in the failing items' messages (the killed part, where it was first seen);
- show no traceback in any item (a stage that breaks is a finding or a short failure);

and `vmrole fabric down` must leave no process and no listening port of that fabric behind.

A second test: the management API answering 500 after readiness (the fault injected mid-probe) turns the
reimage/reboot rules into findings naming the status, the operation and the request id, with no traceback
(it used to end three items in ~2,000 lines of pytest traceback).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.fabric.client import Fabric, up
from harness.fabric.procs import pid_alive
from harness.live.target import fabric_target_document

pytestmark = pytest.mark.xdist_group("fabric-probe-e2e")

REPO = Path(__file__).resolve().parents[2]
#: pytest's own traceback shapes: "Traceback (most recent call last)", "E   SomeError: …", "file.py:12: Error"
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^E\s{3}|^\S+\.py:\d+: \w+", re.MULTILINE)


@dataclass(frozen=True)
class Case:
    id: str
    action: str  # kill:<haproxy | azurite | controller (the management API lives in it) | an instance id>,
    # or fault:<kind>:<seconds> (a fabric fault through the control API)
    at: str | None  # None: killed before the probe; else the rule id before whose first item it dies
    args: tuple[str, ...]
    bound: float  # wall-clock seconds the probe must end within (measured ~7-20 s on an idle 2-core machine)
    failed: dict[str, str] = field(default_factory=dict)  # rule id -> regex a failing finding must match
    skipped: dict[str, str] = field(default_factory=dict)  # rule id -> regex its skip reason must match


LB = r"the load balancer at 127(?:\.\d+){3}[:\d]* refused connections"  # the deployment's own loopback VIP
CASES = [
    Case(
        "lb-killed-before",
        "kill:haproxy",
        None,
        ("--destructive",),
        60,
        failed={"VMR610": r"connection refused .*the load balancer refused", "VMR630": r"over WinRM: .*" + LB},
        skipped={"VMR800": LB + r".*\(first seen in stage endpoints\)", "VMR810": LB + r".*first seen in stage"},
    ),
    Case(
        "lb-killed-during",
        "kill:haproxy",
        "VMR800",  # endpoints answered; then the load balancer dies before rotation
        ("--destructive", "--select", "VMR61,VMR80,VMR81"),
        60,
        failed={"VMR804": r"refused.*the load balancer is down or not listening"},
        skipped={"VMR810": LB + r" \(first seen in stage rotation\)"},
    ),
    Case(
        "blob-killed-before",
        "kill:azurite",
        None,
        ("--destructive", "--select", "VMR60,VMR70,VMR71"),
        60,
        failed={"VMR706": r"blob storage at http://127\.0\.0\.1:\d+/\S+ refused connections"},
    ),
    Case(
        "mgmt-killed-before",
        "kill:controller",
        None,
        (),
        60,
        failed={"VMR600": r"management API at https://127\.0\.0\.1:\d+ is unreachable \(connection refused\)"},
        skipped={"VMR610": r"the management API at https://127\.0\.0\.1:\d+ refused connections"},
    ),
    Case(
        "mgmt-killed-during",
        "kill:controller",
        "VMR700",  # the deployment was read; the API dies before the reimage is requested
        ("--destructive", "--select", "VMR60,VMR70,VMR71"),
        60,
        failed={
            "VMR700": r"Reimage Role Instance \S+: .*the management API at \S+ (is unreachable \(connection "
            r"refused\)|refused connections \(first seen in stage reimage\))",
            "VMR710": r"not tried: the management API at \S+ refused connections \(first seen in stage reimage\)",
        },
    ),
    Case(
        "mgmt-silent-during",
        "fault:mgmt-timeout:120",  # it holds every request: one read timeout, then remembered
        "VMR700",
        ("--destructive", "--select", "VMR60,VMR70,VMR71"),
        60,
        failed={
            "VMR700": r"Reimage Role Instance \S+: .*the management API at \S+ did not answer",
            "VMR710": r"not tried: the management API at \S+ did not answer .*\(first seen in stage reimage\)",
        },
    ),
    Case(
        "instance-killed-during",
        "kill:WebVM_IN_1",
        "VMR610",  # ready when read; its process dies before the endpoints are probed
        ("--select", "VMR60,VMR61,VMR63,VMR80"),
        60,
        failed={"VMR616": r"WebVM_IN_1", "VMR800": r"WebVM_IN_1"},
    ),
]


def write_target(fabric: Fabric, tmp_path: Path) -> Path:
    document = fabric_target_document(fabric.data, fabric.layout.root)
    document["timeouts"].update(ready=4, conflict_retry=2)
    path = tmp_path / "local.vmrtarget.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def run_probe(target: Path, out: Path, args: tuple[str, ...], env: dict[str, str]) -> dict[str, Any]:
    """`vmrole probe` in a subprocess with the fault plugin; the report, the item reports, the output, the time."""
    reports = out.parent / "items.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), "VMR_FAULT_REPORTS": str(reports), **env}
    argv = [sys.executable, "-m", "harness.cli", "probe", str(target), "--report-dir", str(out), "--no-allure", *args]
    started = time.monotonic()
    proc = subprocess.run(
        [*argv, "--", "-p", "no:xdist", "-p", "tests.live.fault_plugin"],
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    seconds = time.monotonic() - started
    output = proc.stdout + proc.stderr
    assert (out / "vmrole.json").is_file(), output[-4000:]
    items = [json.loads(line) for line in reports.read_text().splitlines()] if reports.is_file() else []
    return {
        "code": proc.returncode,
        "report": json.loads((out / "vmrole.json").read_text()),
        "items": items,
        "output": output,
        "seconds": seconds,
    }


def cli_down(state: Path) -> subprocess.CompletedProcess[str]:
    """`vmrole fabric down --state STATE`, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "fabric", "down", "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def fabric_pids_and_ports(fabric: Fabric) -> tuple[set[int], set[int]]:
    data = fabric.data
    pids = {p for p in data.get("pids", []) if isinstance(p, int)}
    pids.add(int(data["controller"]["pid"]))
    for part in ("haproxy", "azurite"):
        pids.add(int(data[part]["pid"]))
    pids |= {int(i["pid"]) for i in data["instances"]}
    ports: set[int] = set()

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, int) and not isinstance(node, bool) and "port" in key and node > 0:
            ports.add(node)

    walk(data)
    for inst in data["instances"]:  # {"HttpIn": 41001, ...}: ports keyed by endpoint name
        ports |= {p for p in (inst.get("endpoints") or {}).values() if isinstance(p, int)}
        ports |= {p for p in (inst.get("instance_endpoints") or {}).values() if isinstance(p, int)}
    return pids, ports


def listening_ports(addresses: set[str]) -> set[int]:
    """Local TCP ports in LISTEN state on one of ``addresses`` (or the wildcard), from /proc/net/tcp (state 0A).

    By address, not by port alone: every deployment has its own loopback VIP with the declared ports (80, 443 …),
    so another fabric running at the same time listens on the same port numbers on another address."""
    wanted = {socket.inet_aton(a)[::-1].hex().upper() for a in addresses | {"0.0.0.0"}}  # /proc is little-endian
    found: set[int] = set()
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A":
            addr, port = fields[1].rsplit(":", 1)
            if addr in wanted:
                found.add(int(port, 16))
    return found


def assert_no_traceback(items: list[dict[str, Any]], output: str) -> None:
    for item in items:
        text = item["longrepr"] or ""
        assert not TRACEBACK.search(text), f"{item['nodeid']} ({item['when']}) has a traceback:\n{text[:3000]}"
        assert len(text.splitlines()) < 200, f"{item['nodeid']}: {len(text.splitlines())} lines"
        assert item["when"] == "call" or item["outcome"] != "failed", f"{item['nodeid']}: {item['when']} error"
    assert "Traceback (most recent call last)" not in output, output[-4000:]


def messages(report: dict[str, Any], rule: str) -> str:
    return "\n".join(f["message"] for f in report["findings"] if f["rule_id"] == rule)


def skip_reasons(report: dict[str, Any], rule: str) -> str:
    return "\n".join(i.get("skip_reason") or "" for i in report["items"] if i["rule_id"] == rule)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_dead_part_fails_fast_names_the_cause_and_down_cleans_up(case: Case, tmp_path: Path) -> None:
    from tests.live.fault_plugin import break_part

    t0 = time.monotonic()
    fabric = up(tmp_path / "fabric", step_seconds=0.1)
    t_up = time.monotonic() - t0
    try:
        pids, ports = fabric_pids_and_ports(fabric)
        addresses = {"127.0.0.1", fabric.vip}
        target = write_target(fabric, tmp_path)
        env = {"VMR_FAULT_STATE": str(fabric.layout.root), "VMR_FAULT_DO": case.action}
        if case.at is None:
            break_part(fabric.layout.root, case.action)
        else:
            env["VMR_FAULT_AT"] = case.at
        result = run_probe(target, tmp_path / "out", case.args, env)
    finally:
        t0 = time.monotonic()
        down = cli_down(fabric.layout.root)
        t_down = time.monotonic() - t0
        if down.returncode != 0:
            fabric.down()  # leave nothing behind even when the command failed (asserted below)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "Traceback" not in down.stdout + down.stderr
    report, output = result["report"], result["output"]
    print(f"{case.id}: up {t_up:.1f} s, probe {result['seconds']:.1f} s, down {t_down:.1f} s, exit {result['code']}")

    assert result["seconds"] < case.bound, f"{case.id}: {result['seconds']:.0f} s\n{output[-3000:]}"
    assert result["code"] == 1, output[-4000:]  # findings, not an internal error or a usage error
    assert_no_traceback(result["items"], output)
    for rule, pattern in case.failed.items():
        text = messages(report, rule)
        assert re.search(pattern, text), f"{rule}: {pattern!r} not in:\n{text or skip_reasons(report, rule)}"
    for rule, pattern in case.skipped.items():
        text = skip_reasons(report, rule)
        assert re.search(pattern, text), f"{rule}: {pattern!r} not in the skip reason:\n{text}"

    # nothing of that fabric is left: no process, no listening port
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        [p for p in pids if pid_alive(p)] or ports & listening_ports(addresses)
    ):  # down() waits itself; this only absorbs a loaded machine's delay in reaping
        time.sleep(0.1)
    assert [p for p in pids if pid_alive(p)] == []
    assert sorted(ports & listening_ports(addresses)) == []


def test_management_500_mid_probe_is_a_finding_with_status_operation_and_request_id(tmp_path: Path) -> None:
    """mgmt-500 from the reimage on: the reimage and reboot cannot start; their rules say why (status 500,
    the operation, the request id) and the drain after them still ends with findings, not tracebacks."""
    fabric = up(tmp_path / "fabric", step_seconds=0.1)
    try:
        target = write_target(fabric, tmp_path)
        env = {
            "VMR_FAULT_STATE": str(fabric.layout.root),
            "VMR_FAULT_DO": "fault:mgmt-500:120",
            "VMR_FAULT_AT": "VMR700",
        }
        result = run_probe(target, tmp_path / "out", ("--destructive", "--select", "VMR60,VMR70,VMR71,VMR81"), env)
    finally:
        fabric.down()
    report = result["report"]
    print(f"mgmt-500: probe {result['seconds']:.1f} s, exit {result['code']}")
    assert_no_traceback(result["items"], result["output"])
    for rule, operation in (("VMR700", "Reimage"), ("VMR710", "Reboot")):
        text = messages(report, rule)
        pattern = (
            rf"{operation} Role Instance \S+: the management API answered 500 InternalError.*\(request id \w{{32}}\)"
        )
        assert re.search(pattern, text), f"{rule}:\n{text}"
    outcomes = {i["rule_id"]: i["outcome"] for i in report["items"]}
    assert all(outcomes[r] in ("passed", "failed", "skipped") for r in ("VMR810", "VMR811", "VMR812", "VMR813"))
