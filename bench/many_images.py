"""Many images in one run: `vmrole lint --image ×8` serially and with `-n 2` (issue 13, item 2).

The images: eight distinct factory images (``harness.testing.images``: the Windows Server 2008 R2 VM-role skeleton
plus ``--files`` generated files, seeds 100-107, every other one with a private key and a PFX: findings), built once
and cached in bench/out/images/many/. Each run is ``vmrole lint --image A … --image H --no-allure --report-dir TMP
-q -q`` (the same command a user runs, reports included), serial and ``-n 2`` alternating so that both see the same
machine load; ``--repeat`` pairs, medians. Besides wall time the table gives the CPU seconds of the whole process
tree (the controller, its xdist workers and the image readers: getrusage of the waited-for children), which a busy
machine inflates less than wall time.

Checked in every run, not only timed: each image is read exactly once (``VMR_IMAGE_READ_LOG``), and the JSON
report's findings (fingerprint, disposition) and items (node id, outcome) are identical serial and parallel.
Results go to bench/out/many_images.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.measure import children_cpu

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
CACHE = OUT / "images" / "many"


def build_images(count: int, files: int) -> list[Path]:
    """Every other image also holds a private key and a PFX (findings to compare between the runs)."""
    from harness.testing import images, windows
    from harness.testing import keymaterial as km

    base = windows.windows_server_2008r2_vmrole()
    paths = []
    for i in range(count):
        spec = images.generate_many_files(base, files, seed=100 + i)
        if i % 2:
            spec = spec.with_changes(
                files={
                    f"inetpub/site{i}/site.pfx": km.pfx_bytes(),
                    f"Users/app{i}/.ssh/id_rsa": km.pem_private_key_bytes(),
                }
            )
        paths.append(Path(images.build_image(spec, "vhd-fixed", cache_dir=CACHE)))
    return paths


def run_lint(images: list[Path], workers: int, tmp: Path) -> dict:
    """One `vmrole lint` of every image; wall and CPU seconds, reads per image, and the report's essentials."""
    vmrole = Path(sys.executable).with_name("vmrole")
    report = tmp / f"report-{workers}"
    log = tmp / f"reads-{workers}.log"
    log.unlink(missing_ok=True)
    cmd = [str(vmrole), "lint", *[a for p in images for a in ("--image", str(p))]]
    cmd += ["--no-allure", "--report-dir", str(report), "-q", "-q"] + (["-n", str(workers)] if workers else [])
    env = {**os.environ, "VMR_IMAGE_READ_LOG": str(log)}
    cpu0, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"vmrole lint failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    reads = Counter(line.split(" ", 1)[1] for line in log.read_text().splitlines()) if log.exists() else Counter()
    data = json.loads((report / "vmrole.json").read_text())
    findings = sorted((f["fingerprint"], f["disposition"]) for f in data["findings"])
    items = sorted((i["nodeid"], i["outcome"]) for i in data["items"])
    return {"wall": wall, "cpu": cpu, "reads": reads, "findings": findings, "items": items}


def main(repeat: int = 3, count: int = 8, files: int = 40_000, workers: int = 2) -> int:
    t = time.perf_counter()
    images = build_images(count, files)
    print(f"{count} images of {files:,} generated files each (fixed VHD, {images[0].stat().st_size / 2**20:,.0f} MiB)")
    print(f"  built or found in {time.perf_counter() - t:.1f} s in {CACHE}")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        run_lint(images, 0, tmp)  # warm-up: page cache, bytecode
        runs: dict[int, list[dict]] = {0: [], workers: []}
        for _ in range(repeat):
            for n in (0, workers):
                runs[n].append(run_lint(images, n, tmp))
    reference = runs[0][0]
    problems = []
    for n, results in runs.items():
        for r in results:
            if r["findings"] != reference["findings"] or r["items"] != reference["items"]:
                problems.append(f"-n {n}: findings or items differ from the first serial run")
            expected = {os.path.realpath(p): 1 for p in images}
            if dict(r["reads"]) != expected:
                problems.append(f"-n {n}: reads per image {sorted(r['reads'].values())}, expected one each")
    wall = {n: statistics.median(r["wall"] for r in rs) for n, rs in runs.items()}
    cpu = {n: statistics.median(r["cpu"] for r in rs) for n, rs in runs.items()}
    print(f"{'run':12} {'wall s':>8} {'CPU s':>8} {'× serial wall':>14}   (median of {repeat}, interleaved)")
    for n in runs:
        label = "serial" if n == 0 else f"-n {n}"
        print(f"{label:12} {wall[n]:8.2f} {cpu[n]:8.2f} {wall[n] / wall[0]:14.2f}")
    print(f"items {len(reference['items'])}, findings {len(reference['findings'])}, identical: {not problems}")
    for p in dict.fromkeys(problems):
        print(f"PROBLEM: {p}")
    OUT.mkdir(exist_ok=True)
    (OUT / "many_images.json").write_text(
        json.dumps(
            {
                "images": count,
                "files_per_image": files,
                "repeat": repeat,
                "wall_s": {str(n): [r["wall"] for r in rs] for n, rs in runs.items()},
                "cpu_s": {str(n): [r["cpu"] for r in rs] for n, rs in runs.items()},
                "ratio_wall": wall[workers] / wall[0],
                "identical": not problems,
                "load_average": os.getloadavg(),
            },
            indent=2,
        )
    )
    return 1 if problems else 0


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench many-images", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="serial/parallel pairs (median)")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--files", type=int, default=40_000, help="generated files per image")
    p.add_argument("-n", "--workers", type=int, default=2)
    a = p.parse_args(argv)
    return main(a.repeat, a.images, a.files, a.workers)


if __name__ == "__main__":
    sys.exit(cli())
