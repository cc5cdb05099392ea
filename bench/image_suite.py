"""The whole offline image suite on a 200,000-file Windows image, in every container format, against two anchors.

For each format (raw, fixed VHD, dynamic VHD, VHDX) of one generated image, three tools run on the same file:

  ours            the project's suite command (default ``vmrole lint IMAGE``; ``--ours`` takes any command line)
  virt-inspector  libguestfs (Debian ``libguestfs-tools``): boots a TCG appliance, inspects the OS, lists apps
  target-query    dissect.target, in its own venv (AGPL: never a project dependency), with the functions closest
                  to the image lint's facts: ``osinfo`` (OS name, version, hostname), ``users``, ``services``,
                  ``applications`` (uninstall entries: the integration-component check) and ``firewall.rules``.
                  Certificate stores and sysprep state have no dissect plugin short of dumping the whole registry
                  (``regf``). So this anchor does less than ours: it never lists the volume.
  target-query+walkfs  the same plus ``walkfs`` (every file-system entry: the lint's full-volume key-file scan).
                  Only with ``--tools ...,target-query+walkfs``, and timed once (no warm-up, cold or strace run):
                  it costs milliseconds per entry here, tens of minutes per format at 200,000 files.

Measurements, per tool and format (``./dev bench image`` installs the anchors; nothing here is in the tests' path):

  warm s   median wall time of N runs (``--repeat``, default 3) after one unmeasured warm-up run: the image and the
           tool are in the page cache.
  cold s   one run after evicting the image file from the page cache (``posix_fadvise(DONTNEED)`` on the image
           only, checked with ``fincore``; ``--drop-caches`` drops the whole page cache instead, which also slows
           whoever else is on the machine). The tool's own files stay cached. Inside a VM the host may still cache
           the disk, so "cold" means "not in this kernel's page cache".
  peak MB  memory of the whole process tree: /proc is polled every ``--poll`` seconds (default 0.025) for every
           descendant of the bench (it is made a child subreaper, so orphans stay in view), summing VmRSS; the
           result is the larger of that sampled peak and the kernel's exact peak of the largest single process
           (``ru_maxrss``, reported by GNU ``time -f %M``, which starts the command: exec folds the pre-exec
           high-water mark into ru_maxrss, so a child started straight from the bench's Python process would
           report the bench's own size). A lower bound that is exact for one-process tools; the JSON also keeps
           the upper bound (sum of every process's VmHWM). cgroups are not used: this machine has cgroup v1 memory
           owned by the sandbox and cgroup v2 without the memory controller.
  read MB  bytes returned by read-family system calls on file descriptors open on the image (its real path),
           counted in a separate run under ``strace -f -Y -y --seccomp-bpf`` (read, pread64, readv, preadv,
           preadv2), so tracing never distorts the timed runs; the JSON splits the bytes by process. Blind spots,
           reported when seen: ``mmap`` of the image, Linux AIO (``io_submit``) and io_uring, and
           copy_file_range/sendfile/splice from the image. libguestfs's qemu sets up io_uring for its event loop
           only: its drive has no ``aio=`` option, so block reads go to ``preadv`` in worker threads (counted).

Ratios are anchor / ours for time, memory and bytes: 10.0 means the anchor needs ten times what ours needs.
Results go to bench/out/image_suite.json. Targets (issue): ours under 2 s and 300 MB on every format and at least
10× faster than both anchors.

The image comes from the project's image factory (``harness.testing.images``): ``generate_many_files`` on the
Windows Server 2008 R2 VM-role skeleton, cached in bench/out/images/. The meters are in bench/measure.py.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.measure import MB, Run, cached_bytes, count_image_reads, evict_from_page_cache, run_measured

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
ANCHORS_VENV = REPO / "bench" / ".anchors-venv"

FORMATS = ("raw", "vhd-fixed", "vhd-dynamic", "vhdx")
#: Cases run only when named in ``--formats``: a format's image after a transformation. ``raw-fragmented-mft``:
#: the raw image with its $MFT cut into thousands of scattered runs held in extension records, as on a long-lived
#: server (``harness.testing.ntfs_fragment``: runs of 6-18 clusters, extension records 16, 20, 27 and the free
#: records after them).
#: ``raw-compressed``: the same files on a fresh volume where every non-empty file is stored compressed as Windows
#: stores it (harness.testing.ntfs_compressed, written through ntfs-3g): the hives (System32\config) in LZNT1
#: compression units, every other file WOF-compressed, cycling XPRESS4K, XPRESS8K, XPRESS16K and LZX.
VARIANTS = {"raw-fragmented-mft": "raw", "raw-compressed": "raw"}
FRAGMENT_RUN_LENGTHS = (6, 18)
DEFAULT_OURS = "{vmrole} lint {image} --no-allure --report-dir {tmp} -q -q"
TARGET_QUERY_FUNCTIONS = "osinfo,users,services,applications,firewall.rules"
#: Exit codes that mean "the tool did its job" (the lint exits 1 when it has findings).
OK_EXITS = {"ours": (0, 1)}
#: Anchors too slow to repeat: timed once (no warm-up, no cold run, no strace run), and only when asked for.
ONE_SHOT = ("target-query+walkfs",)
TARGETS = {"seconds": 2.0, "peak_mb": 300.0, "speedup": 10.0}

# ---------------------------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ToolResult:
    """Everything measured for one tool on one image."""

    tool: str
    command: list[str]
    status: str = "ok"  # ok | failed | unsupported | not installed
    error: str = ""
    note: str = ""  # how it was measured, when not the usual way
    warm_runs: list[float] = field(default_factory=list)
    peak_runs: list[float] = field(default_factory=list)
    warm_s: float | None = None
    cold_s: float | None = None
    cold_cached_before: int | None = None  # bytes of the image still in the page cache after eviction
    cold_eviction: str = ""
    peak_mb: float | None = None
    peak_detail: dict[str, float] = field(default_factory=dict)
    read_bytes: int | None = None
    read_detail: dict = field(default_factory=dict)


def _ratio(anchor: float | None, ours: float | None) -> str:
    if anchor is None or ours is None or ours <= 0:
        return "–"
    return f"{anchor / ours:.1f}"


def summary(per_format: Mapping[str, Sequence[ToolResult]], ours: str = "ours") -> str:
    """Worst case over formats: ours's slowest and biggest run, the smallest speed-up against each anchor."""
    ours_rows = [r for rows in per_format.values() for r in rows if r.tool == ours and r.status == "ok" and r.warm_s]
    if len(ours_rows) != len(per_format) or not ours_rows:
        return f"summary: {ours} did not run on every format"
    parts = [
        f"{ours} worst {max(r.warm_s or 0 for r in ours_rows):.2f} s, {max(r.peak_mb or 0 for r in ours_rows):.0f} MB"
    ]
    speedups: dict[str, list[float]] = {}
    for rows in per_format.values():
        base = next(r for r in rows if r.tool == ours)
        for r in rows:
            if r.tool != ours and r.status == "ok" and r.warm_s and base.warm_s:
                speedups.setdefault(r.tool, []).append(r.warm_s / base.warm_s)
    parts += [f"≥ {min(v):.1f}× faster than {tool}" for tool, v in speedups.items()]
    return "summary (every format): " + "; ".join(parts)


def _num(value: float | None, fmt: str) -> str:
    """``value`` formatted, or a dash as wide as the format's field."""
    if value is None:
        width = re.match(r"\d*", fmt)
        return "–".rjust(int(width[0]) if width and width[0] else 0)
    return format(value, fmt)


def format_table(title: str, rows: Sequence[ToolResult], ours: str = "ours") -> str:
    """One format's table: a row per tool, ratios anchor / ours for warm time, peak memory and bytes read."""
    base = next((r for r in rows if r.tool == ours and r.status == "ok"), None)
    header = (
        f"{'tool':20} {'warm s':>8} {'cold s':>8} {'peak MB':>8} {'read MB':>9} "
        f"{'× time':>7} {'× mem':>6} {'× read':>7}  status"
    )
    lines = [title, header]
    for r in rows:
        read_mb = None if r.read_bytes is None else r.read_bytes / MB
        ratios = ["–", "–", "–"]
        if base is not None:
            ratios = [
                _ratio(r.warm_s, base.warm_s),
                _ratio(r.peak_mb, base.peak_mb),
                _ratio(r.read_bytes, base.read_bytes),
            ]
        status = r.status + (f" ({r.note})" if r.note else "")
        if r.error:
            status += f": {' '.join(r.error.split())[:110]}"
        lines.append(
            f"{r.tool:20} {_num(r.warm_s, '8.2f')} {_num(r.cold_s, '8.2f')} {_num(r.peak_mb, '8.0f')} "
            f"{_num(read_mb, '9.1f')} {ratios[0]:>7} {ratios[1]:>6} {ratios[2]:>7}  {status}"
        )
    return "\n".join(lines)


def target_verdict(rows: Sequence[ToolResult], ours: str = "ours") -> str:
    """The issue's targets for one format, as one line."""
    base = next((r for r in rows if r.tool == ours), None)
    if base is None or base.status != "ok" or base.warm_s is None:
        return f"targets: not measured ({ours}: {base.status if base else 'absent'})"
    parts = [
        f"{base.warm_s:.2f} s {'<' if base.warm_s < TARGETS['seconds'] else '≥'} {TARGETS['seconds']:.0f} s",
        f"{_num(base.peak_mb, '.0f')} MB {'<' if (base.peak_mb or 0) < TARGETS['peak_mb'] else '≥'} "
        f"{TARGETS['peak_mb']:.0f} MB",
    ]
    for r in rows:
        if r.tool != ours and r.status == "ok" and r.warm_s:
            speedup = r.warm_s / base.warm_s
            parts.append(f"{speedup:.1f}× faster than {r.tool} ({'≥' if speedup >= TARGETS['speedup'] else '<'} 10×)")
    return "targets: " + "; ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# The image: the project's image factory
# ---------------------------------------------------------------------------------------------------------------


def factory_image(fmt: str, count: int, seed: int, cache: Path) -> Path:
    """The Windows Server 2008 R2 VM-role skeleton plus ``count`` generated files, in ``fmt`` (built once, cached)."""
    from harness.testing import images, windows

    spec = images.generate_many_files(windows.windows_server_2008r2_vmrole(), count, seed=seed)
    if fmt == "raw-compressed":
        return compressed_image(Path(images.build_image(spec, VARIANTS[fmt], cache_dir=cache)), spec)
    if fmt in VARIANTS:
        return fragmented_mft_image(Path(images.build_image(spec, VARIANTS[fmt], cache_dir=cache)), spec)
    return Path(images.build_image(spec, fmt, cache_dir=cache))


def fragmented_mft_image(raw: Path, spec: object) -> Path:
    """A sparse copy of the raw factory image whose $MFT is fragmented into extension records (built once)."""
    from harness.testing import images
    from harness.testing.ntfs_fragment import fragment_mft

    out = raw.with_name(f"{raw.stem}-fragmented-mft{raw.suffix}")
    done = out.with_name(out.name + ".json")
    if out.exists() and done.exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    subprocess.run(["cp", "--sparse=always", str(raw), str(tmp)], check=True)
    offset, _size = images.volume_extent(spec)  # type: ignore[arg-type]
    info = fragment_mft(tmp, offset=offset, run_lengths=FRAGMENT_RUN_LENGTHS, chain=(16, 20, 27), seed=1)
    tmp.rename(out)
    done.write_text(json.dumps(asdict(info)))
    print(f"  {out.name}: $MFT in {info.runs} runs, {len(info.extension_records)} extension records", flush=True)
    return out


def compressed_image(raw: Path, spec: object) -> Path:
    """A sparse copy of the raw factory image whose volume is rebuilt with every file compressed (built once)."""
    from harness.testing import images
    from harness.testing.ntfs_compressed import build_tree_volume

    out = raw.with_name(f"{raw.stem}-compressed{raw.suffix}")
    done = out.with_name(out.name + ".json")
    if out.exists() and done.exists():
        return out
    offset, size = images.volume_extent(spec)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="vmr-compressed-", dir=raw.parent) as work:
        tree = Path(work, "tree")
        tree.mkdir()
        images.write_tree(spec, tree)  # type: ignore[arg-type]
        part = Path(work, "volume.ntfs")
        label = getattr(spec, "volume_label", "")
        counts = build_tree_volume(
            tree,
            part,
            size,
            lznt1_dirs=lambda rel: rel.lower() == "windows/system32/config",
            mkntfs_args=("-p", str(offset // 512), "-H", "255", "-S", "63", *(("-L", label) if label else ())),
        )
        tmp = out.with_name(out.name + ".tmp")
        subprocess.run(["cp", "--sparse=always", str(raw), str(tmp)], check=True)
        subprocess.run(
            ["dd", f"if={part}", f"of={tmp}", "bs=1M", f"seek={offset}", "oflag=seek_bytes", "conv=notrunc,sparse"],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        tmp.rename(out)
    done.write_text(json.dumps(counts))
    print(f"  {out.name}: {counts}", flush=True)
    return out


# ---------------------------------------------------------------------------------------------------------------
# The tools
# ---------------------------------------------------------------------------------------------------------------


def anchor_env() -> dict[str, str]:
    env = dict(os.environ)
    # KVM does not work on this machine kind; TCG does (libguestfs-test-tool passes with these two).
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    env.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    return env


def tool_commands(image: Path, tmp: Path, ours: str, target_query: str, functions: str) -> dict[str, list[str] | str]:
    """argv per tool, or a string saying why the tool cannot run."""
    vmrole = Path(sys.executable).with_name("vmrole")
    fields = {"image": str(image), "tmp": str(tmp), "vmrole": str(vmrole), "python": sys.executable}
    commands: dict[str, list[str] | str] = {"ours": [part.format(**fields) for part in shlex.split(ours)]}
    commands["virt-inspector"] = (
        ["virt-inspector", "-a", str(image)] if shutil.which("virt-inspector") else "not installed"
    )
    for name, funcs in (("target-query", functions), ("target-query+walkfs", f"{functions},walkfs")):
        commands[name] = (
            [target_query, "-q", "-f", funcs, str(image)] if Path(target_query).exists() else "not installed"
        )
    return commands


_UNSUPPORTED = re.compile(r"unknown file format|not supported|unsupported|no loader|could not determine", re.I)


def measure_tool(
    name: str,
    argv: list[str],
    image: Path,
    *,
    repeat: int,
    cold: bool,
    drop_all: bool,
    count_reads: bool,
    env: dict[str, str],
    cwd: Path,
    poll: float,
    timeout: float,
) -> ToolResult:
    result = ToolResult(tool=name, command=argv)
    ok_exits = OK_EXITS.get(name, (0,))

    def once() -> Run:
        return run_measured(argv, cwd=cwd, env=env, timeout=timeout, poll=poll, ok_exits=ok_exits)

    if name in ONE_SHOT:
        repeat, cold, count_reads = 1, False, False
        result.note = "timed once, no warm-up"
    warmup = once() if name not in ONE_SHOT else Run(True, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
    if not warmup.ok:
        result.status = "unsupported" if _UNSUPPORTED.search(warmup.error) else "failed"
        result.error = warmup.error
        return result
    runs = [once() for _ in range(repeat)]
    failed = next((r for r in runs if not r.ok), None)
    if failed:
        result.status, result.error = "failed", failed.error
        return result
    result.warm_runs = [r.wall_s for r in runs]
    result.peak_runs = [r.peak_mb for r in runs]
    result.warm_s = statistics.median(result.warm_runs)
    biggest = max(runs, key=lambda r: r.peak_mb)
    result.peak_mb = biggest.peak_mb
    result.peak_detail = {
        "peak_tree_rss_mb": biggest.peak_tree_rss_mb,
        "max_process_mb": biggest.max_process_mb,
        "hwm_sum_mb": biggest.hwm_sum_mb,
        "processes": biggest.processes,
    }
    if cold:
        how = evict_from_page_cache(image, drop_all)
        result.cold_cached_before = cached_bytes(image)
        run = once()
        result.cold_s = run.wall_s if run.ok else None
        result.cold_eviction = how
        if not run.ok:
            result.error = f"cold run: {run.error}"
    if count_reads:
        reads = count_image_reads(argv, image, cwd=cwd, env=env, timeout=timeout * 4, ok_exits=ok_exits)
        result.read_bytes = reads.bytes if reads.ok else None
        result.read_detail = asdict(reads)
        if not reads.ok:
            result.error = f"strace run: {reads.error}"
    return result


def image_for(fmt: str, args_image: str | None, count: int, seed: int) -> tuple[Path, str]:
    if args_image:
        return Path(args_image).resolve(), "given"
    return factory_image(fmt, count, seed, OUT / "images" / "factory"), "factory"


def main(
    repeat: int = 3,
    formats: Sequence[str] = FORMATS,
    *,
    files: int = 200_000,
    seed: int = 2011,
    image: str | None = None,
    ours: str = DEFAULT_OURS,
    tools: Sequence[str] = ("ours", "virt-inspector", "target-query"),
    target_query: str | None = None,
    functions: str = TARGET_QUERY_FUNCTIONS,
    cold: bool = True,
    drop_caches: bool = False,
    count_reads: bool = True,
    poll: float = 0.025,
    timeout: float = 900.0,
    json_path: Path | None = None,
) -> int:
    target_query = target_query or str(ANCHORS_VENV / "bin" / "target-query")
    OUT.mkdir(parents=True, exist_ok=True)
    env = anchor_env()
    report: dict = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
        "kernel": platform.release(),
        "files": files,
        "seed": seed,
        "repeat": repeat,
        "poll_s": poll,
        "target_query_functions": functions,
        "ours_command": ours,
        "targets": TARGETS,
        "formats": {},
    }
    what = f"image {image}" if image else f"{files:,}-file image"
    print(f"image suite: {what}; warm = median of {repeat} after a warm-up; ratios = anchor / ours")
    print(f"machine: {report['machine']}")
    status = 0
    per_format: dict[str, list[ToolResult]] = {}
    for fmt in formats:
        path, source = image_for(fmt, image, files, seed)
        rows: list[ToolResult] = []
        with tempfile.TemporaryDirectory(prefix="vmr-bench-image-") as tmp:
            commands = tool_commands(path, Path(tmp), ours, target_query, functions)
            for name in tools:
                argv = commands[name]
                if isinstance(argv, str):
                    rows.append(ToolResult(tool=name, command=[], status=argv))
                    continue
                print(f"  {fmt}: {name} …", flush=True)
                rows.append(
                    measure_tool(
                        name,
                        argv,
                        path,
                        repeat=repeat,
                        cold=cold,
                        drop_all=drop_caches,
                        count_reads=count_reads,
                        env=env,
                        cwd=Path(tmp),
                        poll=poll,
                        timeout=timeout,
                    )
                )
        size = path.stat().st_size
        title = f"\n{fmt}: {path.name} ({source}; {size / MB:,.0f} MB file, {_allocated(path) / MB:,.0f} MB allocated)"
        print(format_table(title, rows))
        print(target_verdict(rows))
        for r in rows:
            for spot in r.read_detail.get("blind_spots", []):
                if spot.startswith("io_uring_setup in qemu"):
                    spot += " (checked: its event loop; the drive has no aio= option, so reads are counted preadv)"
                print(f"  note: {r.tool}: {spot}")
        per_format[fmt] = rows
        report["formats"][fmt] = {
            "image": str(path),
            "source": source,
            "bytes": size,
            "tools": [asdict(r) for r in rows],
        }
        if any(r.tool == "ours" and r.status != "ok" for r in rows):
            status = 1
    line = summary(per_format)
    print(f"\n{line}")
    report["summary"] = line
    json_path = json_path or OUT / "image_suite.json"
    json_path.write_text(json.dumps(report, indent=2))
    print(f"\nresults: {json_path}")
    return status


def _allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def cli(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.image_suite", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="timed warm runs per tool and format (median reported)")
    p.add_argument(
        "--formats", default=",".join(FORMATS), help=f"comma-separated subset of {','.join((*FORMATS, *VARIANTS))}"
    )
    p.add_argument("--files", type=int, default=200_000, help="files in the generated image")
    p.add_argument("--seed", type=int, default=2011)
    p.add_argument("--image", help="bench this image file instead of a generated one (one format)")
    p.add_argument("--ours", default=DEFAULT_OURS, help="our suite's command; {image} {tmp} {vmrole} {python} expand")
    p.add_argument(
        "--tools",
        default="ours,virt-inspector,target-query",
        help="comma-separated: ours, virt-inspector, target-query, target-query+walkfs (slow; timed once)",
    )
    p.add_argument("--target-query", help="target-query executable (default bench/.anchors-venv/bin/target-query)")
    p.add_argument("--functions", default=TARGET_QUERY_FUNCTIONS, help="target-query -f functions (+walkfs adds one)")
    p.add_argument("--no-cold", action="store_true", help="skip the cold-cache run")
    p.add_argument("--drop-caches", action="store_true", help="cold run after dropping the whole page cache (root)")
    p.add_argument("--no-reads", action="store_true", help="skip the strace run that counts bytes read")
    p.add_argument("--poll", type=float, default=0.025, help="seconds between /proc memory samples")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before a run is killed")
    p.add_argument("--json", type=Path, help="where to write the results (default bench/out/image_suite.json)")
    a = p.parse_args(argv)
    tools = [t for t in a.tools.split(",") if t]
    unknown_tools = set(tools) - {"ours", "virt-inspector", "target-query", *ONE_SHOT}
    if unknown_tools:
        p.error(f"unknown tools: {', '.join(sorted(unknown_tools))}")
    formats = [f for f in a.formats.split(",") if f]
    unknown = set(formats) - set(FORMATS) - set(VARIANTS)
    if unknown:
        p.error(f"unknown formats: {', '.join(sorted(unknown))}")
    return main(
        a.repeat,
        formats[:1] if a.image else formats,
        files=a.files,
        seed=a.seed,
        image=a.image,
        ours=a.ours,
        tools=tools,
        target_query=a.target_query,
        functions=a.functions,
        cold=not a.no_cold,
        drop_caches=a.drop_caches,
        count_reads=not a.no_reads,
        poll=a.poll,
        timeout=a.timeout,
        json_path=a.json,
    )


if __name__ == "__main__":
    sys.exit(cli())
