"""Many images in one run: `vmrole lint --image ×8` serially (`-n 0`), with `-n 2` and by default (issue 13, item 2).

The images: eight distinct factory images (``harness.testing.images``: the Windows Server 2008 R2 VM-role skeleton
plus ``--files`` generated files, seeds 100-107, every other one with a private key and a PFX: findings), built once
and cached in bench/out/images/many/. Each run is ``vmrole lint --image A … --image H --no-allure --report-dir TMP
-q -q`` (the same command a user runs, reports included) with one of these variants, alternating within each round
so that all see the same machine load; ``--repeat`` rounds, medians:

  -n 0     serial: one image read at a time, when collection reaches it (nothing read ahead): the baseline
  -n 2     two images read at once, in two isolated reader processes (forked by the read-ahead process, each next
           one as soon as one ends), the rules in the one pytest process
  default  no -n: auto, one reader per core (VMROLE_IMAGE_READERS unset)
  xdist    ``-- -n 2`` (optional, ``--variants``): pytest-xdist forced, each image still read once

Besides wall time the table gives the CPU seconds of the whole process tree (the controller, its image readers and
any xdist workers: getrusage of the waited-for children), which a busy machine inflates less than wall time, and
the peak memory of the tree (bench.measure: /proc polled every 25 ms, VmRSS summed over every process: an upper
bound, the forked readers share pages with their parent) and of its largest process, from one more run of each
variant after the timed rounds (the polling takes CPU from the run it measures, so the timed runs go without).

Checked in every run, not only timed: each image is read exactly once (``VMR_IMAGE_READ_LOG``), and the JSON
report is that of the first serial run apart from its times. Results go to bench/out/many_images.json.
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

from bench.measure import children_cpu, run_measured

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
CACHE = OUT / "images" / "many"
VARIANTS = {
    "-n 0": ["-n", "0"],
    "-n 1": ["-n", "1"],
    "-n 2": ["-n", "2"],
    "default": [],
    "xdist": ["--", "-n", "2"],
}
#: what differs between two runs of the same lint apart from the findings: times
TIMING = ("started", "finished", "duration_seconds")


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


def comparable(report: dict) -> dict:
    """The JSON report without its times (run start, end, duration; each item's duration)."""
    data = {k: v for k, v in report.items() if k not in TIMING}
    data["items"] = sorted(({**i, "duration": None} for i in report["items"]), key=lambda i: i["nodeid"])
    data["findings"] = sorted(report["findings"], key=lambda f: (f["fingerprint"], f["artefact"], f["location"]))
    return data


def run_lint(images: list[Path], variant: str, tmp: Path, memory: bool = False) -> dict:
    """One `vmrole lint` of every image: wall and CPU seconds, reads per image, the report; with ``memory`` the
    peak memory too (polling /proc every 25 ms takes CPU from the run: timed runs do without)."""
    vmrole = Path(sys.executable).with_name("vmrole")
    name = variant.replace(" ", "")
    report = tmp / f"report{name}"
    log = tmp / f"reads{name}.log"
    log.unlink(missing_ok=True)
    cmd = [str(vmrole), "lint", *[a for p in images for a in ("--image", str(p))]]
    extra = VARIANTS[variant]
    cut = extra.index("--") if "--" in extra else len(extra)
    cmd += [*extra[:cut], "--no-allure", "--report-dir", str(report), "-q", "-q", *extra[cut:]]
    env = {**os.environ, "VMR_IMAGE_READ_LOG": str(log)}
    env.pop("VMROLE_IMAGE_READERS", None)
    cpu0 = children_cpu()
    if memory:
        run = run_measured(cmd, cwd=tmp, env=env, ok_exits=(0, 1))
        if not run.ok:
            raise SystemExit(f"vmrole lint {variant} failed: {run.error}")
        wall, peak, biggest, processes = run.wall_s, run.peak_tree_rss_mb, run.max_process_mb, run.processes
    else:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        wall, peak, biggest, processes = time.perf_counter() - t0, 0.0, 0.0, 0
        if proc.returncode not in (0, 1):
            raise SystemExit(
                f"vmrole lint {variant} failed ({proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )
    cpu = children_cpu() - cpu0
    reads = Counter(line.split(" ", 1)[1] for line in log.read_text().splitlines()) if log.exists() else Counter()
    data = json.loads((report / "vmrole.json").read_text())
    return {
        "wall": wall,
        "cpu": cpu,
        "peak_tree_mb": peak,
        "max_process_mb": biggest,
        "processes": processes,
        "reads": reads,
        "report": comparable(data),
    }


def main(
    repeat: int = 3, count: int = 8, files: int = 40_000, variants: tuple[str, ...] = ("-n 0", "-n 2", "default")
) -> int:
    t = time.perf_counter()
    images = build_images(count, files)
    print(f"{count} images of {files:,} generated files each (fixed VHD, {images[0].stat().st_size / 2**20:,.0f} MiB)")
    print(f"  built or found in {time.perf_counter() - t:.1f} s in {CACHE}")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        run_lint(images, variants[0], tmp)  # warm-up: page cache, bytecode
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for round_ in range(repeat):
            # alternate the order too: the first run of a round is not always the same variant
            for v in variants[round_ % len(variants) :] + variants[: round_ % len(variants)]:
                runs[v].append(run_lint(images, v, tmp))
                print(f"  round {round_ + 1} {v:8} {runs[v][-1]['wall']:6.2f} s  load {os.getloadavg()[0]:.2f}")
        memory = {v: run_lint(images, v, tmp, memory=True) for v in variants}  # one more run each, sampled
    baseline = variants[0]
    reference = runs[baseline][0]["report"]
    expected = {os.path.realpath(p): 1 for p in images}
    problems = []
    for v, results in runs.items():
        for r in [*results, memory[v]]:
            if r["report"] != reference:
                problems.append(f"{v}: the JSON report differs from the first {baseline} run (apart from times)")
            if dict(r["reads"]) != expected:
                problems.append(f"{v}: reads per image {sorted(r['reads'].values())}, expected one each")
    med = {key: {v: statistics.median(r[key] for r in rs) for v, rs in runs.items()} for key in ("wall", "cpu")}
    for key in ("peak_tree_mb", "max_process_mb"):
        med[key] = {v: memory[v][key] for v in variants}
    wall = med["wall"]
    print(f"started {started}, load average before {load_before[0]:.2f} and after {os.getloadavg()[0]:.2f}")
    print(f"{'run':8} {'wall s':>7} {'CPU s':>7} {'× ' + baseline:>8} {'tree MB':>8} {'max proc MB':>11}  reads/image")
    for v in runs:
        reads = sorted({n for r in runs[v] for n in r["reads"].values()})
        print(
            f"{v:8} {wall[v]:7.2f} {med['cpu'][v]:7.2f} {wall[v] / wall[baseline]:8.2f} {med['peak_tree_mb'][v]:8.0f}"
            f" {med['max_process_mb'][v]:11.0f}  {'/'.join(map(str, reads))}"
        )
    print(
        f"(medians of {repeat}, interleaved)  walls: "
        + "; ".join(f"{v} " + ", ".join(f"{r['wall']:.2f}" for r in rs) for v, rs in runs.items())
    )
    # Under a varying load, each round's own ratio (same minute, same load) says more than the ratio of medians.
    paired = {
        v: statistics.median(r["wall"] / b["wall"] for r, b in zip(runs[v], runs[baseline], strict=True)) for v in runs
    }
    print(f"median of each round's ratio to {baseline}: " + ", ".join(f"{v} {paired[v]:.2f}" for v in runs))
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
                "started": started,
                **{key: {v: [r[key] for r in rs] for v, rs in runs.items()} for key in ("wall", "cpu")},
                **{key: med[key] for key in ("peak_tree_mb", "max_process_mb")},
                "ratio_wall": {v: wall[v] / wall[baseline] for v in runs},
                "median_round_ratio": paired,
                "identical": not problems,
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
            },
            indent=2,
        )
    )
    return 1 if problems else 0


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench many-images", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="rounds of every variant (median)")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--files", type=int, default=40_000, help="generated files per image")
    p.add_argument(
        "--variants",
        default="-n 0,-n 2,default",
        help=f"comma-separated, the first is the baseline (of: {', '.join(VARIANTS)}; default: -n 0,-n 2,default)",
    )
    a = p.parse_args(argv)
    variants = tuple(v.strip() for v in a.variants.split(","))
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}: choose from {', '.join(VARIANTS)}")
    return main(a.repeat, a.images, a.files, variants)


if __name__ == "__main__":
    sys.exit(cli())
