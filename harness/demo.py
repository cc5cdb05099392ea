"""The main job on the built-in default: build the sample VM-role package, lint it, write the reports.

Later stages (a sample image, the local fabric, live probes) join here as they land.
"""

from __future__ import annotations

import shutil
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


def run_demo(work_dir: Path, report_dir: Path) -> int:
    from harness.cli import main as vmrole

    print(f"vmrole demo: building the sample VM-role service model in {work_dir}")
    for path in build_sample(work_dir):
        print(f"  {path} ({path.stat().st_size:,} bytes)")
    print("vmrole demo: linting it (csdef, cscfg and cspkg)")
    status = vmrole(["lint", str(work_dir), "--report-dir", str(report_dir)])
    html = report_dir / "vmrole.html"
    if html.exists():
        print(f"vmrole demo: open {html} in a browser; SARIF, JSON, JUnit and allure results are beside it")
    return status
