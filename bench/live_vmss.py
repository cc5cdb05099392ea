"""The live suite with one reimage on 3 instances: classic Service Management API vs VM scale set over ARM.

One model for both: the 3-VM scale set of ``tests/data/arm/scaleset.azuredeploy.json`` (one data disk), as the
fabric turns it into a csdef/cscfg. Brings up a classic fabric from that csdef/cscfg and a ``--api vmss``
fabric from the template (timing each start), then alternates ``vmrole probe TARGET --destructive`` (readiness,
endpoints, in-guest checks over WinRM, rotation, drain, one reimage, one reboot, reports) on the classic target
and on the vmss target (``management.api: vmss``: azure-identity + azure-mgmt-compute/-network), ``--repeat``
times each. Prints the fabric start times and the median probe wall times.

    python -m bench.live_vmss [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "tests" / "data" / "arm" / "scaleset.azuredeploy.json"


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


def main(argv: list[str] | None = None) -> int:
    from harness.fabric.arm.template import service_model
    from harness.fabric.client import up
    from harness.live.target import target_for_fabric

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    ns = parser.parse_args(argv)
    fabrics = []
    with tempfile.TemporaryDirectory() as tmp:
        csdef, cscfg = (Path(p) for p in service_model(TEMPLATE, Path(tmp) / "model"))
        try:
            started = time.perf_counter()
            classic = up(Path(tmp) / "classic", csdef=csdef, cscfg=cscfg, step_seconds=0.3)
            fabrics.append(classic)
            classic_up = time.perf_counter() - started
            started = time.perf_counter()
            vmss = up(Path(tmp) / "vmss", api="vmss", template=TEMPLATE, step_seconds=0.3)
            fabrics.append(vmss)
            vmss_up = time.perf_counter() - started
            targets = {
                "classic (Service Management API)": target_for_fabric(classic).path,
                "vmss (ARM, azure-mgmt-*)": target_for_fabric(vmss, api="vmss", scale_set="web").path,
            }
            runs: dict[str, list[tuple[float, int, dict]]] = {name: [] for name in targets}
            for _ in range(ns.repeat):  # alternating: a load change hits both alike
                for name, target in targets.items():
                    runs[name].append(_probe(target))
        finally:
            for fabric in fabrics:
                fabric.down()
    print(f"fabric up, 3 instances: classic {classic_up:.2f} s; vmss (+ ARM face, signing key) {vmss_up:.2f} s")
    print(f"{'probe --destructive (1 reimage, 1 reboot)':42} {'median s':>9} {'min s':>7} {'items':>6} {'exit':>5}")
    for name, rows in runs.items():
        times = [r[0] for r in rows]
        items = len(rows[-1][2].get("items", []))
        exits = ",".join(str(r[1]) for r in rows)
        print(f"{name:42} {statistics.median(times):9.2f} {min(times):7.2f} {items:6} {exits:>5}")
    return 0 if all(r[1] == 0 for rows in runs.values() for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
