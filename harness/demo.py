"""The main job on the built-in default: build the sample VM-role package and a sample VM-role image (a
generalized Windows Server 2008 R2 disk built with real tools), lint both together, deploy the package to
the local fabric, run the live suites against it, run the example test suites (``suites/smoke`` and
``suites/persistence``, your own tests' starting point) against it too, and write one set of reports.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
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


IMAGE_NAME = "WebVM.vhd"


def build_sample_image(work_dir: Path) -> Path | None:
    """The sample role's OS disk: a generalized WS2008 R2 VM-role image as a fixed VHD (None without the tools)."""
    from harness.testing.images import build_image, missing_tools
    from harness.testing.windows import windows_server_2008r2_vmrole

    missing = missing_tools()
    if missing:
        print(f"vmrole demo: no sample image: {', '.join(missing)} not installed (./dev setup installs them)")
        return None
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / IMAGE_NAME
    shutil.copyfile(build_image(windows_server_2008r2_vmrole(), "vhd-fixed", cache_dir=work_dir / "cache"), target)
    return target


#: the example suites, in a checkout (they are test files, not part of the installed package)
SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
SUITES = ("smoke", "persistence")


def run_suites(target: Path, report_dir: Path) -> int:
    """Run the example suites against the deployment in ``target`` (pytest in a subprocess, as a user would):
    only the user tests (the probe step ran the built-in rules), destructive ones included; reports in
    ``report_dir`` (vmrole.html/.json/.sarif and junit.xml)."""
    suites = [SUITES_DIR / name for name in SUITES if (SUITES_DIR / name).is_dir()]
    if not suites:
        print(f"  no example suites at {SUITES_DIR} (they come with a checkout of the repository)")
        return 0
    report_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pytest", *map(str, suites), "--vmr-target", str(target), "--vmr-destructive",
        "-m", "not vmrole", "-p", "no:cacheprovider", "-q", "--no-header",
        "--vmr-report-dir", str(report_dir), "--junitxml", str(report_dir / "junit.xml"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=SUITES_DIR.parent, capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    tail = lines[-1] if lines else proc.stderr.strip()[-300:]
    print(f"  {tail}")
    if proc.returncode != 0:
        print(proc.stdout[-4000:] + proc.stderr[-2000:])
    return proc.returncode


def run_demo(work_dir: Path, report_dir: Path, *, live: bool = True) -> int:
    from harness.cli import main as vmrole
    from harness.fabric.client import FabricError, up

    print(f"vmrole demo: 1/6 building the sample VM-role service model and package in {work_dir}")
    model_dir = work_dir / "model"
    for path in build_sample(model_dir):
        print(f"  {path} ({path.stat().st_size:,} bytes)")
    print("vmrole demo: 2/6 building the sample VM-role image (wimlib, mkntfs, sfdisk, qemu-img; no mounts)")
    started = time.monotonic()
    image = build_sample_image(work_dir / "image")
    args = ["lint", str(model_dir), "--report-dir", str(report_dir)]
    if image is not None:
        print(f"  {image} ({image.stat().st_size:,} bytes, fixed VHD) in {time.monotonic() - started:.1f} s")
        args += ["--image", str(image), "--package", str(model_dir / PACKAGE_NAME)]
    fabric = None
    try:
        if live:
            print("vmrole demo: 3/6 deploying the package to the local fabric (instances, HAProxy, APIs)")
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
                # Linting never probes (issue 9): `vmrole probe` lints the same files, named, and probes.
                target = fabric.layout.root / "target.vmrtarget.yml"
                named = ["--csdef", str(model_dir / SAMPLE_FILES[0]), "--cscfg", str(model_dir / SAMPLE_FILES[1])]
                if image is None:
                    named += ["--package", str(model_dir / PACKAGE_NAME)]
                args = ["probe", str(target), "--destructive", *named, *args[2:]]
        linted = "the image and the model" if image is not None else "the model"
        step = f"4/6 linting {linted} and probing the deployment" if fabric else f"4/6 linting {linted}"
        print(f"vmrole demo: {step} (reimage, reboot and drain included)" if fabric else f"vmrole demo: {step}")
        status = vmrole(args)
        if fabric is not None:
            print("vmrole demo: 5/6 running the example suites (suites/smoke, suites/persistence) against it")
            suites_status = run_suites(fabric.layout.root / "target.vmrtarget.yml", report_dir / "suites")
            status = status or suites_status
    finally:
        if fabric is not None:
            report = fabric.down()
            print(f"vmrole demo: 6/6 fabric stopped ({len(report.stopped)} processes, none left behind)")
    if fabric is not None:  # the same model as VM scale sets behind ARM (harness/demo_vmss.py)
        from harness.demo_vmss import run_vmss

        status = run_vmss(work_dir, report_dir, model_dir / SAMPLE_FILES[0], model_dir / SAMPLE_FILES[1]) or status
    html = report_dir / "vmrole.html"
    if html.exists():
        print(f"vmrole demo: open {html} in a browser; SARIF, JSON, JUnit and allure results are beside it")
    if (report_dir / "suites" / "vmrole.html").exists():
        print(f"vmrole demo: the example suites' reports (HTML, JSON, SARIF, JUnit) are in {report_dir / 'suites'}")
    return status
