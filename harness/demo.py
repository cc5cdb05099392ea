"""The main job on the built-in default: build the sample VM-role package, lint it, deploy it to the local
fabric, run the live suites against it, and write one set of reports.

Later stages (a sample image) join here as they land.
"""

from __future__ import annotations

import shutil
import time
from importlib import resources
from pathlib import Path

SAMPLE_FILES = ("ServiceDefinition.csdef", "ServiceConfiguration.Cloud.cscfg")
PACKAGE_NAME = "ContosoVMRole.cspkg"


def build_sample(work_dir: Path) -> list[Path]:
    """Copy the bundled service model into ``work_dir`` and package it like cspack would."""
    from harness.testing.cspkg import write_cspkg

    work_dir.mkdir(parents=True, exist_ok=True)
    sample = resources.files("harness") / "samples" / "vmrole"
    written = []
    for name in SAMPLE_FILES:
        target = work_dir / name
        with resources.as_file(sample / name) as src:
            shutil.copyfile(src, target)
        written.append(target)
    csdef = (work_dir / SAMPLE_FILES[0]).read_text("utf-8")
    written.append(write_cspkg(work_dir / PACKAGE_NAME, csdef, seed=2012))
    return written


def run_demo(work_dir: Path, report_dir: Path, *, live: bool = True) -> int:
    from harness.cli import main as vmrole
    from harness.fabric.client import FabricError, up

    print(f"vmrole demo: 1/4 building the sample VM-role service model and package in {work_dir}")
    model_dir = work_dir / "model"
    for path in build_sample(model_dir):
        print(f"  {path} ({path.stat().st_size:,} bytes)")
    args = ["lint", str(model_dir), "--report-dir", str(report_dir)]
    fabric = None
    try:
        if live:
            print("vmrole demo: 2/4 deploying the package to the local fabric (instances, HAProxy, APIs)")
            started = time.monotonic()
            try:
                fabric = up(
                    work_dir / "fabric",
                    package=model_dir / PACKAGE_NAME,
                    cscfg=model_dir / SAMPLE_FILES[1],
                    step_seconds=0.3,
                )
            except FabricError as exc:
                print(f"vmrole demo: the local fabric could not start, so only the lint runs: {exc}")
            else:
                print(f"  ready in {time.monotonic() - started:.1f} s: {len(fabric.instances)} instances")
                target = fabric.layout.root / "target.vmrtarget.yml"
                args += ["--", str(target), "--vmr-destructive"]
        step = "3/4 linting the model and probing the deployment" if fabric else "3/4 linting the model"
        print(f"vmrole demo: {step} (reimage, reboot and drain included)" if fabric else f"vmrole demo: {step}")
        status = vmrole(args)
    finally:
        if fabric is not None:
            report = fabric.down()
            print(f"vmrole demo: 4/4 fabric stopped ({len(report.stopped)} processes, none left behind)")
    html = report_dir / "vmrole.html"
    if html.exists():
        print(f"vmrole demo: open {html} in a browser; SARIF, JSON, JUnit and allure results are beside it")
    return status
