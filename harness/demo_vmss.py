"""The demo's scale-set path (after the classic one): the same sample model served by the fabric as VM scale
sets behind Azure Resource Manager (``vmrole fabric up --api vmss``), its 3-VM ``WebVM`` scale set probed
through the ARM clients (azure-identity, azure-mgmt-compute, azure-mgmt-network) with the destructive probes
(one reimage, one reboot, one drain), reports in ``REPORT_DIR/vmss``.
"""

from __future__ import annotations

import time
from pathlib import Path

SCALE_SET = "WebVM"


def run_vmss(work_dir: Path, report_dir: Path, csdef: Path, cscfg: Path) -> int:
    from harness.cli import main as vmrole
    from harness.fabric.client import FabricError, up
    from harness.live.target import target_for_fabric

    print("vmrole demo: scale set 1/3 serving the sample model as VM scale sets over ARM (fabric up --api vmss)")
    started = time.monotonic()
    try:
        fabric = up(work_dir / "fabric-vmss", csdef=csdef, cscfg=cscfg, step_seconds=0.3, api="vmss")
    except FabricError as exc:
        print(f"vmrole demo: the scale-set fabric could not start, so that path is skipped: {exc}")
        return 0
    try:
        arm = fabric.data.get("arm") or {}
        members = [i for i in fabric.data["instances"] if i.get("role") == SCALE_SET]
        print(
            f"  ready in {time.monotonic() - started:.1f} s: ARM endpoint {arm.get('endpoint')}, scale set "
            f"{SCALE_SET} with {len(members)} VMs"
        )
        target = target_for_fabric(fabric, api="vmss", scale_set=SCALE_SET)
        out = report_dir / "vmss"
        print(
            f"vmrole demo: scale set 2/3 probing {SCALE_SET} (reimage, reboot and drain of one VM each), "
            f"reports in {out}"
        )
        status = vmrole(["probe", str(target.path), "--destructive", "--report-dir", str(out)])
    finally:
        report = fabric.down()
        print(f"vmrole demo: scale set 3/3 fabric stopped ({len(report.stopped)} processes, none left behind)")
    return status
