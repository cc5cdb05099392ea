"""Wall time of the full live suite (with one reimage) against the local fabric.

Brings up the bundled sample (3 VM-role + 2 worker instances), then times `vmrole probe TARGET
--destructive` end to end (pytest start-up, readiness, endpoints, in-guest checks over WinRM, rotation,
drain, reimage + reboot, reports). Named baseline: the same probe without --destructive, so the ratio
shows what the reimage/reboot/drain cost on top of the read-only suite.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _probe(target: Path, destructive: bool) -> tuple[float, int, dict]:
    vmrole = Path(sys.executable).with_name("vmrole")
    with tempfile.TemporaryDirectory() as out:
        args = [str(vmrole), "probe", str(target), "--report-dir", out, "--no-allure", "-q"]
        if destructive:
            args.append("--destructive")
        started = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, text=True, cwd=out)
        elapsed = time.perf_counter() - started
        report = json.loads((Path(out) / "vmrole.json").read_text()) if (Path(out) / "vmrole.json").exists() else {}
    return elapsed, proc.returncode, report


def main(repeat: int = 3) -> int:
    from harness.fabric.client import up

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        fabric = up(Path(tmp) / "fabric", step_seconds=0.3)
        up_seconds = time.perf_counter() - started
        try:
            target = Path(tmp) / "fabric" / "target.vmrtarget.yml"
            rows = {}
            for destructive in (False, True):
                runs = [_probe(target, destructive) for _ in range(repeat)]
                rows[destructive] = runs
        finally:
            started = time.perf_counter()
            report = fabric.down()
            down_seconds = time.perf_counter() - started
    base = statistics.median(r[0] for r in rows[False])
    left = report.ports_still_open
    print(f"fabric up (3+2 instances): {up_seconds:.2f} s; down: {down_seconds:.2f} s; ports left open: {left}")
    print(f"{'live suite':38} {'median s':>9} {'x baseline':>11} {'items':>6} {'exit':>5}")
    for destructive, runs in rows.items():
        med = statistics.median(r[0] for r in runs)
        items = len(runs[-1][2].get("items", []))
        name = "probe --destructive (1 reimage, 1 reboot)" if destructive else "probe, read-only (baseline)"
        print(f"{name:38} {med:9.2f} {med / base:11.2f} {items:6} {runs[-1][1]:5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
