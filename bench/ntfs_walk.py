"""Full name walk of a 200,000-file NTFS volume: this reader vs libfsntfs, wall time and peak memory.

Named baseline: ``libfsntfs-walk`` = pyfsntfs (C, libyal) opening the volume and listing every name from
the root, building each path string (what any inventory must at least do). Stages of ours:
  inventory   NtfsVolume(...) + inventory(): the one MFT pass (names, sizes, flags kept compactly)
  walk        the same + walk(): every (path, FileEntry), once per hard-link name

Each measurement runs in a fresh process (so the page cache is warm but no Python state is shared, and
peak RSS belongs to that stage alone); the median of --repeat runs is reported with the ratio to the
baseline. The volume is built once into bench/out/ntfs-walk/ (git-ignored) from a generated tree with
wimlib + mkntfs (about a minute), or given with --volume.

    python bench/ntfs_walk.py [--files 200000] [--volume PATH] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"


def build(files: int, folder: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from tests.images.ntfs_build import build_volume, make_many_files

    volume = folder / f"volume-{files}.ntfs"
    if volume.exists():
        return volume
    folder.mkdir(parents=True, exist_ok=True)
    tree = folder / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    t = time.perf_counter()
    make_many_files(tree, files)
    print(f"tree of {files} files made in {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    size = max(256 * 1024 * 1024, files * 16 * 1024)
    build_volume(tree, folder / "building.ntfs", size).rename(volume)
    print(f"volume built in {time.perf_counter() - t:.1f} s: {volume}", flush=True)
    shutil.rmtree(tree)
    return volume


# ---- stages (run in a child process) ---------------------------------------------------------------------


def stage_inventory(volume: Path) -> int:
    from harness.readers.image.ntfs import NtfsVolume
    from harness.readers.image.source import FileSource

    inv = NtfsVolume(FileSource(volume)).inventory()
    return inv.file_count + inv.dir_count


def stage_walk(volume: Path) -> int:
    from harness.readers.image.ntfs import NtfsVolume
    from harness.readers.image.source import FileSource

    n = 0
    for _path, _entry in NtfsVolume(FileSource(volume)).inventory().walk():
        n += 1
    return n


def stage_libfsntfs(volume: Path) -> int:
    import pyfsntfs

    vol = pyfsntfs.volume()
    with volume.open("rb") as fh:
        vol.open_file_object(fh)
        n = 0
        stack = [(vol.get_root_directory(), "")]
        while stack:
            entry, prefix = stack.pop()
            for sub in entry.sub_file_entries:
                path = prefix + "\\" + sub.name
                n += 1
                if sub.has_directory_entries_index():
                    stack.append((sub, path))
        vol.close()
    return n


STAGES = {
    "libfsntfs-walk (baseline)": stage_libfsntfs,
    "ours: inventory": stage_inventory,
    "ours: inventory + walk": stage_walk,
}


def child(stage: str, volume: Path) -> None:
    if "ours" in stage:  # imports are not part of the measurement
        import harness.readers.image.ntfs
        import harness.readers.image.source  # noqa: F401
    else:
        import pyfsntfs  # noqa: F401
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    c = time.process_time()
    n = STAGES[stage](volume)
    out = {
        "seconds": time.perf_counter() - t,
        "cpu": time.process_time() - c,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "start_rss_mib": base_rss / 1024,
        "count": n,
    }
    print(json.dumps(out))


def run_child(stage: str, volume: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", stage, "--volume", str(volume)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--volume", type=Path, help="an existing raw NTFS volume (skips the build)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.volume)
        return 0
    volume = args.volume or build(args.files, OUT / "ntfs-walk")
    load = os.getloadavg()[0]
    print(f"volume: {volume} ({volume.stat().st_size / 2**30:.1f} GiB); {args.repeat} runs each, median")
    print(f"machine: {platform.node()}, {os.cpu_count()} cpus, Python {platform.python_version()}, load {load:.2f}")
    run_child("ours: inventory", volume)  # warm the page cache
    results: dict[str, dict[str, float]] = {}
    head = ("stage", "wall s", "cpu s", "peak RSS MiB", "(at start)", "names", "x baseline")
    print("{:28} {:>8} {:>8} {:>13} {:>10} {:>9} {:>11}".format(*head))
    base = 0.0
    for stage in STAGES:
        runs = [run_child(stage, volume) for _ in range(args.repeat)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        med["best_seconds"] = min(r["seconds"] for r in runs)
        results[stage] = med
        base = base or med["seconds"]
        print(
            f"{stage:28} {med['seconds']:8.3f} {med['cpu']:8.3f} {med['peak_rss_mib']:13.1f} "
            f"{med['start_rss_mib']:10.1f} {int(med['count']):9d} {med['seconds'] / base:11.2f}"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"volume": str(volume), "load_average": load, "median": results}
    (OUT / "ntfs_walk.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
