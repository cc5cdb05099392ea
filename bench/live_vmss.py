"""The live suite with one reimage on 3 instances: classic Service Management API vs VM scale set over ARM.

One model for both: the 3-VM scale set of ``tests/data/arm/scaleset.azuredeploy.json`` (one data disk), as the
fabric turns it into a csdef/cscfg. First the fabric's start, ``--starts`` rounds, each alternating a classic
fabric from that csdef/cscfg and a ``--api vmss`` fabric from the template, first in a new state folder
("new": every key made), then again in that folder ("again": the RSA keys kept), each brought down before the
next starts. For each start: wall time until ``up()`` returns (``fabric.json`` says ready), the CPU seconds of
the whole fabric at that moment (controller with the children it has waited for, Azurite, HAProxy, every
instance; from /proc) and the controller's own stage times (its ``start: <stage> at <s>`` log lines, seconds
since the controller process began). Then one fabric of each kind again, and ``vmrole probe TARGET
--destructive`` (readiness, endpoints, in-guest checks over WinRM, rotation, drain, one reimage, one reboot,
reports) alternating between the classic target and the vmss target (``management.api: vmss``:
azure-identity + azure-mgmt-compute/-network), ``--repeat`` times each. Prints medians; the machine's load
average is printed before and after, as other jobs on it move every wall time.

    python -m bench.live_vmss [--starts 5] [--repeat 3] [--starts-only]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "tests" / "data" / "arm" / "scaleset.azuredeploy.json"
KINDS = ("classic", "vmss")
LABELS = {"classic": "classic (Service Management API)", "vmss": "vmss (ARM, azure-mgmt-*)"}
STAGE_RE = re.compile(r"start: (\w+) at ([0-9.]+) s")
STAGES = ("prepared", "instances", "haproxy", "management", "azurite", "rotation", "ready")
FOLDERS = ("new", "again")  # a new state folder, then the same folder again


def _probe(target: Path) -> tuple[float, int, dict]:
    vmrole = Path(sys.executable).with_name("vmrole")
    with tempfile.TemporaryDirectory() as out:
        args = [str(vmrole), "probe", str(target), "--report-dir", out, "--no-allure", "-q", "--destructive"]
        started = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, text=True, cwd=out)
        elapsed = time.perf_counter() - started
        path = Path(out) / "vmrole.json"
        report = json.loads(path.read_text()) if path.exists() else {}
    return elapsed, proc.returncode, report


def _cpu_seconds(pid: int, *, waited_children: bool = False) -> float:
    """utime + stime of ``pid`` (+ cutime + cstime: the children it has waited for), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # fields 14, 15
    if waited_children:
        ticks += int(fields[13]) + int(fields[14])  # fields 16, 17
    return ticks / os.sysconf("SC_CLK_TCK")


def _fabric_cpu(data: dict[str, Any]) -> float:
    controller = int(data["controller"]["pid"])
    others = {int(p) for p in data.get("pids", [])} - {controller}
    return _cpu_seconds(controller, waited_children=True) + sum(_cpu_seconds(p) for p in others)


def _stages(log: Path) -> dict[str, float]:
    try:
        text = log.read_text("utf-8", errors="replace")
    except OSError:
        return {}
    return {m[1]: float(m[2]) for m in STAGE_RE.finditer(text)}


def _up(kind: str, state: Path, csdef: Path, cscfg: Path) -> Any:
    from harness.fabric.client import up

    if kind == "classic":
        return up(state, csdef=csdef, cscfg=cscfg, step_seconds=0.3)
    return up(state, api="vmss", template=TEMPLATE, step_seconds=0.3)


def _timed_start(kind: str, state: Path, csdef: Path, cscfg: Path) -> tuple[float, float, dict[str, float]]:
    started = time.perf_counter()
    fabric = _up(kind, state, csdef, cscfg)
    wall = time.perf_counter() - started
    try:
        cpu = _fabric_cpu(fabric.data)
        stages = _stages(fabric.layout.controller_log)
    finally:
        fabric.down()
    return wall, cpu, stages


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    from harness.fabric.arm.template import service_model
    from harness.live.target import target_for_fabric

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5, help="fabric starts per path (alternating)")
    parser.add_argument("--repeat", type=int, default=3, help="probe runs per path (alternating)")
    parser.add_argument("--starts-only", action="store_true", help="measure the fabric starts only")
    ns = parser.parse_args(argv)
    print(f"load average before: {_load()}  ({os.cpu_count()} CPUs)", flush=True)
    starts: dict[tuple[str, str], list[tuple[float, float, dict[str, float]]]] = {
        (kind, folder): [] for folder in FOLDERS for kind in KINDS
    }
    runs: dict[str, list[tuple[float, int, dict]]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        csdef, cscfg = (Path(p) for p in service_model(TEMPLATE, Path(tmp) / "model"))
        for n in range(ns.starts):  # alternating: a load change hits every variant alike
            for folder in FOLDERS:
                for kind in KINDS:
                    sample = _timed_start(kind, Path(tmp) / f"{kind}-{n}", csdef, cscfg)
                    starts[kind, folder].append(sample)
                    wall, cpu = sample[0], sample[1]
                    print(f"  start {n + 1} {kind:7} {folder:5} {wall:6.2f} s wall {cpu:6.2f} CPU s", flush=True)
        if not ns.starts_only:
            fabrics = []
            try:
                for kind in KINDS:
                    fabrics.append(_up(kind, Path(tmp) / f"{kind}-probe", csdef, cscfg))
                classic, vmss = fabrics
                targets = {
                    "classic": target_for_fabric(classic).path,
                    "vmss": target_for_fabric(vmss, api="vmss", scale_set="web").path,
                }
                for _ in range(ns.repeat):
                    for kind, target in targets.items():
                        runs[kind].append(_probe(target))
            finally:
                for fabric in fabrics:
                    fabric.down()
    print(f"load average after: {_load()}")
    print(f"\nfabric up, 3 instances, {ns.starts} alternating starts each (CPU: the whole fabric at ready;")
    print("stages: seconds since the controller process began, medians)")
    header = f"{'':34} {'folder':6} {'median s':>8} {'min s':>6} {'max s':>6} {'CPU s':>6}"
    print(header + "".join(f" {s[:9]:>9}" for s in STAGES))
    for (kind, folder), samples in starts.items():
        if not samples:
            continue
        walls = [s[0] for s in samples]
        cpu = statistics.median(s[1] for s in samples)
        line = f"{LABELS[kind]:34} {folder:6} {statistics.median(walls):8.2f} {min(walls):6.2f} {max(walls):6.2f}"
        line += f" {cpu:6.2f}"
        for stage in STAGES:
            values = [s[2][stage] for s in samples if stage in s[2]]
            line += f" {statistics.median(values):9.2f}" if values else f" {'-':>9}"
        print(line)
    if any(runs.values()):
        print(
            f"\n{'probe --destructive (1 reimage, 1 reboot)':42} {'median s':>9} {'min s':>7} {'items':>6} {'exit':>5}"
        )
        for kind, rows in runs.items():
            times = [r[0] for r in rows]
            items = len(rows[-1][2].get("items", []))
            exits = ",".join(str(r[1]) for r in rows)
            print(f"{LABELS[kind]:42} {statistics.median(times):9.2f} {min(times):7.2f} {items:6} {exits:>5}")
    return 0 if all(r[1] == 0 for rows in runs.values() for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
