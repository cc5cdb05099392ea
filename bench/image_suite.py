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

The image comes from the project's image factory (``harness.testing.images``) when it exists; until then a
stand-in is built here with the same real-tool pipeline (tree → wimlib capture → mkntfs → wimlib apply → sfdisk →
qemu-img convert), with a minimal PE32+ ``cmd.exe`` and SYSTEM/SOFTWARE hives from the project's hive writer so
that libguestfs and dissect both recognise Windows. Images are cached in bench/out/images/.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
ANCHORS_VENV = REPO / "bench" / ".anchors-venv"

FORMATS = ("raw", "vhd-fixed", "vhd-dynamic", "vhdx")
DEFAULT_OURS = "{vmrole} lint {image} --no-allure --report-dir {tmp} -q -q"
TARGET_QUERY_FUNCTIONS = "osinfo,users,services,applications,firewall.rules"
#: Exit codes that mean "the tool did its job" (the lint exits 1 when it has findings).
OK_EXITS = {"ours": (0, 1)}
#: Anchors too slow to repeat: timed once (no warm-up, no cold run, no strace run), and only when asked for.
ONE_SHOT = ("target-query+walkfs",)
TARGETS = {"seconds": 2.0, "peak_mb": 300.0, "speedup": 10.0}
MB = 1_000_000

# ---------------------------------------------------------------------------------------------------------------
# Process-tree peak memory and wall time
# ---------------------------------------------------------------------------------------------------------------

PR_SET_CHILD_SUBREAPER = 36
GNU_TIME = "/usr/bin/time"


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process (so they stay in the measured tree)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    return int(stat.rpartition(b")")[2].split()[1])


def _memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; (0, 0) for a process that is gone or a kernel thread."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, hwm


class TreeMemorySampler:
    """Polls /proc for every descendant of ``root`` and keeps the peak of their summed RSS.

    Parents are cached per pid (one /proc/PID/stat read per new process), so a poll costs one /proc listing plus
    one status read per process in the tree.
    """

    def __init__(self, root: int, interval: float = 0.025, exclude: Iterable[int] = ()) -> None:
        self.root = root
        self.interval = interval
        self.exclude = set(exclude)  # walked through, never counted
        self.peak_rss_kib = 0
        self.hwm_kib: dict[int, int] = {}
        self.samples = 0
        self._parents: dict[int, int] = {}
        self._lock = threading.Lock()  # the poll thread and the final reaping loop both sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-memory", daemon=True)

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def descendants(self) -> list[int]:
        live = {int(n) for n in os.listdir("/proc") if n.isdigit()}
        for pid in [p for p in self._parents if p not in live]:
            del self._parents[pid]
        for pid in live:
            # New process, or one whose parent died (it was re-parented): (re)read its parent.
            if pid not in self._parents or self._parents[pid] not in live:
                parent = _parent_of(pid)
                if parent is not None:
                    self._parents[pid] = parent
        children: dict[int, list[int]] = {}
        for pid, parent in self._parents.items():
            children.setdefault(parent, []).append(pid)
        found, todo = [], list(children.get(self.root, ()))
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, ()))
        return found

    def sample(self) -> list[int]:
        with self._lock:
            tree = self.descendants()
            total = 0
            for pid in tree:
                if pid in self.exclude:
                    continue
                rss, hwm = _memory_kib(pid)
                total += rss
                self.hwm_kib[pid] = max(self.hwm_kib.get(pid, 0), hwm)
            self.peak_rss_kib = max(self.peak_rss_kib, total)
            self.samples += 1
            return tree

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.sample()
            self._stop.wait(self.interval)


@dataclass
class Run:
    """One measured run of one command."""

    ok: bool
    exit_code: int | None
    wall_s: float
    peak_mb: float  # max(sampled tree RSS, largest single process's exact peak)
    peak_tree_rss_mb: float  # sampled sum of VmRSS over the tree
    max_process_mb: float  # wait4 ru_maxrss: the largest single process in the tree (kernel-exact)
    hwm_sum_mb: float  # upper bound: sum of every process's VmHWM
    processes: int
    error: str = ""


def _tail(path: Path, limit: int = 600) -> str:
    with contextlib.suppress(OSError):
        data = path.read_bytes()[-limit:]
        return data.decode("utf-8", "replace").strip()
    return ""


def run_measured(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 900.0,
    poll: float = 0.025,
    ok_exits: Iterable[int] = (0,),
    linger: float = 10.0,
) -> Run:
    """Run ``argv`` once: wall time to its exit, peak memory of its whole process tree, exit status.

    Output goes to files (a full pipe must never stall the tool); on failure the error is the tail of stderr
    (or stdout). A run past ``timeout`` has its process group killed and is reported as failed. Descendants still
    running after the command exits get ``linger`` seconds, then are killed (and reaped: we are their subreaper).
    """
    become_subreaper()
    with tempfile.TemporaryDirectory(prefix="vmr-bench-") as tmp:
        out, err, maxrss = Path(tmp) / "stdout", Path(tmp) / "stderr", Path(tmp) / "maxrss"
        # GNU time starts the command from a ~2 MB process: exec folds the pre-exec memory's high-water mark
        # into ru_maxrss, so a child started straight from this (big) Python process would report our size.
        wrapped = [GNU_TIME, "-q", "-f", "%M", "-o", str(maxrss), *argv] if os.access(GNU_TIME, os.X_OK) else argv
        with out.open("wb") as so, err.open("wb") as se:
            started = time.perf_counter()
            try:
                proc = subprocess.Popen(
                    list(wrapped),
                    cwd=cwd,
                    env=env,
                    stdout=so,
                    stderr=se,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as exc:
                return Run(False, None, 0.0, 0.0, 0.0, 0.0, 0.0, 0, f"cannot start: {exc}")
            # The wrapper itself is left out of the sums (it shares our memory until its exec).
            sampler = TreeMemorySampler(os.getpid(), poll, exclude={proc.pid})
            with sampler:
                timer = threading.Timer(timeout, _kill_group, (proc.pid,))
                timer.start()
                try:
                    _, status = os.waitpid(proc.pid, 0)
                finally:
                    timer.cancel()
                wall = time.perf_counter() - started
                proc.returncode = os.waitstatus_to_exitcode(status)
                # Without GNU time, ru_maxrss would be ours: fall back to the sampled per-process VmHWM.
                max_kib = _gnu_time_maxrss(maxrss) if wrapped is not argv else max(sampler.hwm_kib.values(), default=0)
                max_kib = max(max_kib, _reap_tree(sampler, proc.pid, linger))
        code = proc.returncode
        timed_out = wall >= timeout
        ok = code in tuple(ok_exits) and not timed_out
        error = ""
        if not ok:
            why = f"timed out after {timeout:.0f} s" if timed_out else f"exit {code}"
            error = f"{why}: {_tail(err) or _tail(out)}"
    peak_tree = sampler.peak_rss_kib * 1024 / MB
    biggest = max_kib * 1024 / MB
    return Run(
        ok=ok,
        exit_code=code,
        wall_s=wall,
        peak_mb=max(peak_tree, biggest),
        peak_tree_rss_mb=peak_tree,
        max_process_mb=biggest,
        hwm_sum_mb=max(sum(sampler.hwm_kib.values()) * 1024 / MB, biggest),
        processes=len(sampler.hwm_kib),
        error=error,
    )


def _gnu_time_maxrss(path: Path) -> int:
    """The ``%M`` (KiB) GNU time wrote last in ``path``; 0 when it wrote none (killed by the timeout)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(path.read_text().split()[-1])
    return 0


def _kill_group(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def _reap_tree(sampler: TreeMemorySampler, main_pid: int, linger: float) -> int:
    """Wait for (then kill) descendants that outlived the command; return the largest ru_maxrss reaped."""
    deadline = time.monotonic() + linger
    biggest = 0
    while True:
        tree = [p for p in sampler.sample() if p != main_pid]
        for pid in tree:
            # Only our own children can be waited for: orphans re-parented to us (we are a subreaper).
            with contextlib.suppress(ChildProcessError, OSError):
                done, _, usage = os.wait4(pid, os.WNOHANG)
                if done:
                    biggest = max(biggest, usage.ru_maxrss)
        if not tree:
            return biggest
        if time.monotonic() > deadline:
            for pid in tree:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------------------------
# Bytes read from the image: strace
# ---------------------------------------------------------------------------------------------------------------

READ_CALLS = ("read", "pread64", "readv", "preadv", "preadv2")
#: Traced only to name blind spots: reads that no read-family call shows.
BLIND_CALLS = ("mmap", "io_submit", "io_uring_setup", "copy_file_range", "sendfile", "splice")
#: ``strace -f -Y`` prefixes each line with the thread id and its command name: "1234<qemu-system-x86> ".
_PREFIX = r"^(?:\[pid\s+(?P<pid>\d+)(?:<(?P<comm>[^>]*)>)?\]|(?P<pid2>\d+)(?:<(?P<comm2>[^>]*)>)?)?\s*"
_CALL = re.compile(_PREFIX + r"(?P<name>\w+)\((?P<args>.*)$")
_RESUMED = re.compile(_PREFIX + r"<\.\.\. (?P<name>\w+) resumed>(?P<args>.*)$")
_RESULT = re.compile(r"\)\s+=\s+(?P<ret>-?\d+|0x[0-9a-f]+)")
_FIRST_FD = re.compile(r"^\d+<(?P<path>[^>]*)>")
_MMAP_FD = re.compile(r",\s*\d+<(?P<path>[^>]*)>,\s*(?:0x[0-9a-f]+|\d+)")


@dataclass
class ReadCount:
    """What one traced run read from one file."""

    bytes: int = 0
    calls: dict[str, int] = field(default_factory=dict)  # syscall -> calls on the image
    bytes_by_call: dict[str, int] = field(default_factory=dict)
    bytes_by_process: dict[str, int] = field(default_factory=dict)  # command name (thread name) -> bytes
    blind_spots: list[str] = field(default_factory=list)
    ok: bool = True
    exit_code: int | None = None
    error: str = ""


def _fd_path(name: str, args: str) -> str:
    """The file behind the call's descriptor as ``strace -y`` shows it ("" when it is not a file)."""
    found = (_MMAP_FD if name == "mmap" else _FIRST_FD).search(args)
    return found["path"] if found else ""


def parse_strace(lines: Iterable[str], image: str) -> ReadCount:
    """Add up the read-family results on file descriptors that ``strace -f -y [-Y]`` shows open on ``image``.

    ``<unfinished ...>`` / ``<... resumed>`` pairs are joined per thread id. Failed calls count nothing.
    io_uring and Linux AIO are named as blind spots (the process that set them up is given); what they read
    cannot be seen here.
    """
    count = ReadCount()
    pending: dict[str, tuple[str, str]] = {}
    for line in lines:
        line = line.rstrip("\n")
        match = _RESUMED.match(line)
        if match:
            tid = match["pid"] or match["pid2"] or ""
            name, path = pending.pop(tid, (match["name"], ""))
        else:
            match = _CALL.match(line)
            if not match:
                continue
            tid, name = match["pid"] or match["pid2"] or "", match["name"]
            path = _fd_path(name, match["args"])
            if match["args"].endswith("<unfinished ...>"):
                pending[tid] = (name, path)
                continue
        comm = match["comm"] or match["comm2"] or "?"
        result = _RESULT.search(match["args"])
        failed = result is None or result["ret"].startswith("-")
        if name in ("io_uring_setup", "io_submit") and not failed:
            note = f"{name} in {comm}: reads submitted through it are not counted"
            if note not in count.blind_spots:
                count.blind_spots.append(note)
            continue
        if path != image:
            continue
        count.calls[name] = count.calls.get(name, 0) + 1
        if name not in READ_CALLS:
            note = f"{name} of the image in {comm}: its bytes are not counted"
            if note not in count.blind_spots:
                count.blind_spots.append(note)
        elif not failed:
            n = int(result["ret"])  # type: ignore[index]
            count.bytes += n
            count.bytes_by_call[name] = count.bytes_by_call.get(name, 0) + n
            count.bytes_by_process[comm] = count.bytes_by_process.get(comm, 0) + n
    return count


def count_image_reads(
    argv: Sequence[str],
    image: Path,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 1800.0,
    ok_exits: Iterable[int] = (0,),
) -> ReadCount:
    """Run ``argv`` once under strace and count the bytes its whole process tree read from ``image``."""
    strace = shutil.which("strace")
    if not strace:
        return ReadCount(ok=False, error="strace is not installed (./dev bench image installs it)")
    with tempfile.TemporaryDirectory(prefix="vmr-strace-") as tmp:
        trace, err = Path(tmp) / "trace", Path(tmp) / "stderr"
        calls = ",".join(READ_CALLS + BLIND_CALLS)
        cmd = [strace, "-f", "-Y", "-y", "--seccomp-bpf", "-qq", "-s", "0", "-e", "signal=none", "-e", f"trace={calls}"]
        with err.open("wb") as se:
            try:
                proc = subprocess.run(
                    [*cmd, "-o", str(trace), *argv],
                    cwd=cwd,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=se,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                )
                code: int | None = proc.returncode
            except subprocess.TimeoutExpired:
                code = None
        with trace.open(errors="replace") as f:
            count = parse_strace(f, os.path.realpath(image))
        count.exit_code = code
        count.ok = code in tuple(ok_exits)
        if not count.ok:
            count.error = "timed out" if code is None else f"exit {code}: {_tail(err)}"
    return count


# ---------------------------------------------------------------------------------------------------------------
# Page cache
# ---------------------------------------------------------------------------------------------------------------


def cached_bytes(path: Path) -> int | None:
    """Bytes of ``path`` in the page cache (util-linux ``fincore``), or None when it cannot tell."""
    tool = shutil.which("fincore")
    if not tool:
        return None
    out = subprocess.run(
        [tool, "--bytes", "--noheadings", "--output", "RES", str(path)], capture_output=True, text=True
    )
    try:
        return int(out.stdout.split()[0])
    except (IndexError, ValueError):
        return None


def evict_from_page_cache(path: Path, drop_all: bool = False) -> str:
    """Make the next read of ``path`` come from the disk; return how (for the report)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if drop_all:
        try:
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("1\n")
            return "drop_caches=1 (whole page cache)"
        except OSError as exc:
            return f"posix_fadvise DONTNEED on the image (drop_caches refused: {exc.strerror})"
    return "posix_fadvise DONTNEED on the image"


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
# The image: the project's factory when present, else a stand-in built with the same real tools
# ---------------------------------------------------------------------------------------------------------------

STANDIN_VERSION = 2
SUFFIXES = {"raw": "disk.raw", "vhd-fixed": "disk-fixed.vhd", "vhd-dynamic": "disk-dynamic.vhd", "vhdx": "disk.vhdx"}
DISK_SIZE = 2 * 1024**3
PART_START = 1024**2
DISK_SIGNATURE = 0x564D5230  # "VMR0": pinned so the MBR (and MountedDevices) is reproducible


def factory_image(fmt: str, count: int, seed: int, cache: Path) -> Path | None:
    """The image from ``harness.testing.images`` when the factory exists, else None."""
    try:
        from harness.testing import images, windows
    except ImportError:
        return None
    many = getattr(images, "generate_many_files", None) or getattr(windows, "generate_many_files", None)
    if many is None:
        return None
    spec = many(windows.windows_server_2008r2_vmrole(), count, seed=seed)
    return Path(images.build_image(spec, fmt, cache_dir=cache))


def minimal_pe32plus(subsystem: int = 3) -> bytes:
    """A 1 KiB x86-64 PE32+ executable (``file``: "PE32+ executable (console) x86-64, for MS Windows")."""
    dos = bytearray(0x80)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x80)
    dos[0x40 : 0x40 + 39] = b"This program cannot be run in DOS mode.\r"[:39]
    coff = struct.pack("<4sHHIIIHH", b"PE\0\0", 0x8664, 1, 0x4A5BC60F, 0, 0, 0xF0, 0x0022)
    optional = struct.pack("<HBBIIIII", 0x20B, 9, 0, 0x200, 0, 0, 0x1000, 0x1000)
    optional += struct.pack(
        "<QIIHHHHHHIIIIHHQQQQII",
        0x140000000, 0x1000, 0x200, 6, 1, 6, 1, 6, 1, 0, 0x2000, 0x200, 0, subsystem, 0x8160,
        0x100000, 0x1000, 0x100000, 0x1000, 0, 16,
    )  # fmt: skip
    optional += bytes(16 * 8)
    section = struct.pack("<8sIIIIIIHHI", b".text", 0x200, 0x1000, 0x200, 0x200, 0, 0, 0, 0, 0x60000020)
    headers = bytes(dos) + coff + optional + section
    return headers.ljust(0x200, b"\0") + b"\xc3".ljust(0x200, b"\0")


def standin_hives() -> dict[str, bytes]:
    """SYSTEM and SOFTWARE hives of a generalized Windows Server 2008 R2 VM-role image, plus empty others."""
    from harness.testing.hivewriter import binary, build_hive, dword, expand_sz, sz

    cs = "ControlSet001"
    services = {
        f"{cs}\\Services\\{name}": {
            "DisplayName": sz(display),
            "ImagePath": expand_sz(path),
            "Start": dword(start),
            "Type": dword(16),
            "ObjectName": sz("LocalSystem"),
        }
        for name, display, path, start in [
            ("RdAgent", "Windows Azure Guest Agent (RdAgent)", r"C:\WindowsAzure\Packages\WaAppAgent.exe", 2),
            ("WaVmRoleAdapter", "Windows Azure VM Role Adapter", r"C:\Program Files\VmRoleAdapter\adapter.exe", 2),
            ("W3SVC", "World Wide Web Publishing Service", r"%windir%\system32\svchost.exe -k iissvcs", 2),
            (
                "WinRM",
                "Windows Remote Management (WS-Management)",
                r"%SystemRoot%\System32\svchost.exe -k NetworkService",
                2,
            ),
            ("TermService", "Remote Desktop Services", r"%SystemRoot%\System32\svchost.exe -k NetworkService", 3),
            ("MpsSvc", "Windows Firewall", r"%SystemRoot%\system32\svchost.exe -k LocalServiceNoNetwork", 2),
        ]
    }
    services.update(
        {
            f"{cs}\\Services\\Svc{i:03d}": {
                "DisplayName": sz(f"Generated service {i}"),
                "ImagePath": expand_sz(rf"%SystemRoot%\System32\svc{i:03d}.exe"),
                "Start": dword(3),
                "Type": dword(16),
            }
            for i in range(150)
        }
    )
    fw = f"{cs}\\Services\\SharedAccess\\Parameters\\FirewallPolicy"
    allow_in = "v2.10|Action=Allow|Active=TRUE|Dir=In|Protocol=6|"
    rules = {
        "WebIn": allow_in + "LPort=80|Name=Web (HTTP-In)|",
        "RemoteDesktop-In-TCP": allow_in + "LPort=3389|Name=@FirewallAPI.dll,-28775|",
        "WINRM-HTTP-In-TCP": allow_in + "LPort=5985|Name=WinRM (HTTP-In)|",
    }
    system = {
        "Select": {"Current": dword(1), "Default": dword(1), "Failed": dword(0), "LastKnownGood": dword(2)},
        f"{cs}\\Control\\ComputerName\\ComputerName": {"ComputerName": sz("VMROLE-BENCH")},
        f"{cs}\\Control\\ProductOptions": {"ProductType": sz("ServerNT")},
        f"{cs}\\Control\\TimeZoneInformation": {"TimeZoneKeyName": sz("UTC"), "Bias": dword(0)},
        f"{cs}\\Services\\Tcpip\\Parameters": {"Hostname": sz("vmrole-bench"), "Domain": sz("")},
        f"{fw}\\FirewallRules": {k: sz(v) for k, v in rules.items()},
        **{f"{fw}\\{p}": {"EnableFirewall": dword(1)} for p in ("DomainProfile", "StandardProfile", "PublicProfile")},
        "Setup": {
            "SystemSetupInProgress": dword(1),
            "OOBEInProgress": dword(1),
            "SetupType": dword(2),
            "CmdLine": sz("oobe\\windeploy.exe"),
        },
        "Setup\\Status\\SysprepStatus": {"GeneralizationState": dword(4), "CleanupState": dword(2)},
        "MountedDevices": {"\\DosDevices\\C:": binary(struct.pack("<IQ", DISK_SIGNATURE, PART_START))},
        **services,
    }
    nt = "Microsoft\\Windows NT\\CurrentVersion"
    uninstall = "Microsoft\\Windows\\CurrentVersion\\Uninstall"
    software = {
        nt: {
            "ProductName": sz("Windows Server 2008 R2 Datacenter"),
            "CurrentVersion": sz("6.1"),
            "CurrentBuild": sz("7601"),
            "CurrentBuildNumber": sz("7601"),
            "CSDVersion": sz("Service Pack 1"),
            "EditionID": sz("ServerDatacenter"),
            "InstallationType": sz("Server"),
            "SystemRoot": sz("C:\\Windows"),
            "InstallDate": dword(1322006400),
            "RegisteredOwner": sz("Windows User"),
        },
        f"{nt}\\ProfileList\\S-1-5-18": {"ProfileImagePath": expand_sz(r"%systemroot%\system32\config\systemprofile")},
        f"{nt}\\ProfileList\\S-1-5-21-1004336348-1177238915-682003330-500": {
            "ProfileImagePath": expand_sz(r"C:\Users\Administrator")
        },
        f"{nt}\\Winlogon": {"AutoAdminLogon": sz("0"), "DefaultUserName": sz("Administrator")},
        "Microsoft\\Windows\\CurrentVersion": {"ProgramFilesDir": sz(r"C:\Program Files")},
        "Microsoft\\Windows\\CurrentVersion\\Setup\\State": {"ImageState": sz("IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE")},
        f"{uninstall}\\{{5A3B0C1E-7D2F-4E61-9C1B-2E5B6F7A8C90}}": {
            "DisplayName": sz("Windows Azure VM Role Integration Components"),
            "Publisher": sz("Microsoft Corporation"),
            "DisplayVersion": sz("1.0.1234.0"),
            "InstallLocation": sz(r"C:\Program Files\Windows Azure Integration Components"),
        },
        f"{uninstall}\\VmRoleAdapter": {"DisplayName": sz("VM Role Adapter"), "Publisher": sz("Contoso")},
        "Microsoft\\SystemCertificates\\MY\\Certificates": {},
        "Microsoft\\SystemCertificates\\ROOT\\Certificates": {},
        "Policies\\Microsoft\\WindowsFirewall": {},
    }
    empty = build_hive({})
    return {
        "SYSTEM": build_hive(system, root_name="CMI-CreateHive{2A7FB991-7BBE-4F9D-B91E-7CB51D4737F5}"),
        "SOFTWARE": build_hive(software, root_name="CMI-CreateHive{199DAFC2-6F16-4946-BF90-5A3FC3A60902}"),
        "SAM": empty,
        "SECURITY": empty,
        "DEFAULT": empty,
    }


_WORDS = (
    "shell", "kernel", "base", "net", "web", "crypt", "print", "media", "search", "update", "input", "audio", "video",
    "font", "storage", "power", "security", "network", "remote", "desktop", "service", "setup", "install", "deploy",
    "sync", "mail", "store", "cache", "graphics", "direct", "core", "host", "agent",
)  # fmt: skip
_EXTS = (".dll", ".dll", ".dll", ".exe", ".mui", ".manifest", ".cat", ".inf", ".xml", ".txt", ".dat", ".sys")


def standin_tree(root: Path, count: int, seed: int) -> int:
    """Write a plausible Windows Server tree of exactly ``count`` files under ``root``; return the file count."""
    rng = random.Random(seed)
    blob = random.Random(seed + 1).randbytes(1 << 17)
    pe = minimal_pe32plus()
    fixed: dict[str, bytes] = {
        "Windows/System32/cmd.exe": pe,
        "Windows/System32/Sysprep/sysprep.exe": minimal_pe32plus(2),
        "Windows/System32/Sysprep/Sysprep_succeeded.tag": b"",
        "Windows/explorer.exe": minimal_pe32plus(2),
        "Windows/regedit.exe": minimal_pe32plus(2),
        "Windows/System32/drivers/etc/hosts": b"# Copyright (c) 1993-2009 Microsoft Corp.\r\n127.0.0.1 localhost\r\n",
        "Windows/Setup/State/State.ini": b"[State]\r\nImageState=IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE\r\n",
        "unattend.xml": b'<?xml version="1.0"?>\r\n<unattend xmlns="urn:schemas-microsoft-com:unattend">'
        b'<settings pass="oobeSystem"/></unattend>\r\n',
        "Program Files/Windows Azure Integration Components/WaAppAgent.exe": pe,
        "Program Files/VmRoleAdapter/adapter.exe": pe,
        "WindowsAzure/Packages/WaAppAgent.exe": pe,
    }
    hives = standin_hives()
    for name, data in hives.items():
        fixed[f"Windows/System32/config/{name}"] = data
    for user in ("Administrator", "Default"):
        fixed[f"Users/{user}/NTUSER.DAT"] = hives["DEFAULT"]
    machine_guid = "74659c6a-3c6e-4f0e-9d5f-0b2c1e0a1b2c"
    for prefix in ("76944fb33636aeddb9590521c2e8815a", "6de9cb26d2b98c01ec4e9e8b34824aa2"):
        fixed[f"ProgramData/Microsoft/Crypto/RSA/MachineKeys/{prefix}_{machine_guid}"] = blob[:2048]
    for rel, data in fixed.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    # The rest, in the proportions of a real server install: WinSxS dominates.
    areas = [
        (0.62, "Windows/WinSxS/{arch}_microsoft-windows-{w1}-{w2}_31bf3856ad364e35_6.1.7601.{rev}_none_{h}", 9),
        (0.06, "Windows/System32", 4000),
        (0.03, "Windows/System32/en-US", 2000),
        (0.05, "Windows/assembly/GAC_MSIL/Microsoft.{W1}.{W2}/6.1.0.0__31bf3856ad364e35", 3),
        (0.05, "Windows/Microsoft.NET/Framework64/v{ver}/{w1}", 40),
        (0.06, "Windows/servicing/Packages", 6000),
        (0.04, "Windows/inf/{w1}", 25),
        (0.05, "Program Files/{W1} {W2}/{w1}", 30),
        (0.02, "ProgramData/Microsoft/{W1}/{w2}", 20),
        (0.02, "Users/Administrator/AppData/Local/{W1}/{w2}", 15),
    ]
    remaining = count - len(fixed)
    written = 0
    for i, (share, pattern, per_dir) in enumerate(areas):
        n = remaining - written if i == len(areas) - 1 else int(remaining * share)
        done = 0
        while done < n:
            w1, w2 = rng.choice(_WORDS), rng.choice(_WORDS)
            folder = pattern.format(
                arch=rng.choice(("amd64", "amd64", "wow64", "x86", "msil")),
                w1=w1,
                w2=w2,
                W1=w1.capitalize(),
                W2=w2.capitalize(),
                rev=rng.randrange(16385, 23000),
                h=f"{rng.getrandbits(64):016x}",
                ver=rng.choice(("2.0.50727", "3.0", "3.5", "4.0.30319")),
            )
            directory = root / folder
            directory.mkdir(parents=True, exist_ok=True)
            for _ in range(min(per_dir, n - done)):
                name = f"{rng.choice(_WORDS)}{rng.randrange(1000)}{rng.choice(_EXTS)}"
                path = directory / name
                if path.exists():
                    continue
                roll = rng.random()
                size = rng.randrange(0, 600) if roll < 0.80 else rng.randrange(1024, 8192) if roll < 0.99 else 32768
                start = rng.randrange(0, len(blob) - size)
                path.write_bytes(blob[start : start + size])
                done += 1
        written += n
    return len(fixed) + written


def _run_tool(argv: Sequence[str], **kw) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-800:]}")


def build_standin(folder: Path, count: int, seed: int) -> None:
    """tree → wimlib capture → mkntfs → wimlib apply → sfdisk → dd → qemu-img convert, into ``folder``."""
    for tool in ("wimlib-imagex", "mkntfs", "sfdisk", "qemu-img"):
        if not shutil.which(tool):
            raise RuntimeError(f"{tool} is not installed (./dev setup installs the image tools)")
    work = folder / "work"
    shutil.rmtree(work, ignore_errors=True)
    (work / "tree").mkdir(parents=True)
    t = time.perf_counter()
    files = standin_tree(work / "tree", count, seed)
    print(f"  tree: {files} files in {time.perf_counter() - t:.0f} s", flush=True)
    wim, part, raw = work / "tree.wim", work / "part.ntfs", work / "disk.raw"
    _run_tool(["wimlib-imagex", "capture", str(work / "tree"), str(wim), "Windows", "--compress=none", "--no-acls"])
    shutil.rmtree(work / "tree")
    part_size = DISK_SIZE - PART_START
    with part.open("wb") as f:
        f.truncate(part_size)
    sectors = PART_START // 512
    geometry = ["-s", "512", "-c", "4096", "-p", str(sectors), "-H", "255", "-S", "63"]
    _run_tool(["mkntfs", "-F", "-Q", "-q", *geometry, "-L", "Windows", str(part)])
    _run_tool(["wimlib-imagex", "apply", str(wim), "1", str(part)])
    wim.unlink()
    with raw.open("wb") as f:
        f.truncate(DISK_SIZE)
    table = f"label: dos\nlabel-id: {DISK_SIGNATURE:#010x}\nunit: sectors\n\nstart={sectors}, type=7, bootable\n"
    _run_tool(["sfdisk", "-q", str(raw)], input=table)
    seek = f"seek={PART_START // 1024**2}"
    _run_tool(["dd", f"if={part}", f"of={raw}", "bs=1M", seek, "conv=notrunc,sparse", "status=none"])
    part.unlink()
    converts = {
        "vhd-fixed": ["-O", "vpc", "-o", "subformat=fixed,force_size=on"],
        "vhd-dynamic": ["-O", "vpc", "-o", "subformat=dynamic,force_size=on"],
        "vhdx": ["-O", "vhdx", "-o", "subformat=dynamic"],
    }
    for fmt, opts in converts.items():
        _run_tool(["qemu-img", "convert", "-f", "raw", *opts, str(raw), str(work / SUFFIXES[fmt])])
    for fmt in FORMATS:
        (work / SUFFIXES[fmt]).replace(folder / SUFFIXES[fmt])
    shutil.rmtree(work)
    (folder / "complete.json").write_text(json.dumps({"files": files, "seed": seed, "version": STANDIN_VERSION}))


def standin_image(fmt: str, count: int, seed: int, cache: Path) -> Path:
    key = hashlib.sha256(f"{STANDIN_VERSION}:{count}:{seed}".encode()).hexdigest()[:10]
    folder = cache / f"standin-{count}-{key}"
    if not (folder / "complete.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        print(f"bench: building the {count:,}-file stand-in image in {folder} (once; cached)", flush=True)
        t = time.perf_counter()
        build_standin(folder, count, seed)
        print(f"bench: stand-in built in {time.perf_counter() - t:.0f} s", flush=True)
    return folder / SUFFIXES[fmt]


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


def image_for(fmt: str, args_image: str | None, source: str, count: int, seed: int) -> tuple[Path, str]:
    if args_image:
        return Path(args_image).resolve(), "given"
    cache = OUT / "images"
    if source in ("auto", "factory"):
        try:
            path = factory_image(fmt, count, seed, cache / "factory")
        except Exception as exc:  # the factory is another team's work in progress: say why, then fall back
            if source == "factory":
                raise
            print(f"bench: image factory failed ({type(exc).__name__}: {exc}); using the stand-in", file=sys.stderr)
            path = None
        if path is not None:
            return path, "factory"
        if source == "factory":
            raise SystemExit("bench: harness.testing.images (the image factory) is not available yet")
    return standin_image(fmt, count, seed, cache), "stand-in"


def main(
    repeat: int = 3,
    formats: Sequence[str] = FORMATS,
    *,
    files: int = 200_000,
    seed: int = 2011,
    image: str | None = None,
    image_source: str = "auto",
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
        path, source = image_for(fmt, image, image_source, files, seed)
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
    p.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated subset of {','.join(FORMATS)}")
    p.add_argument("--files", type=int, default=200_000, help="files in the generated image")
    p.add_argument("--seed", type=int, default=2011)
    p.add_argument("--image", help="bench this image file instead of a generated one (one format)")
    p.add_argument("--image-source", choices=("auto", "factory", "standin"), default="auto")
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
    unknown = set(formats) - set(FORMATS)
    if unknown:
        p.error(f"unknown formats: {', '.join(sorted(unknown))}")
    return main(
        a.repeat,
        formats[:1] if a.image else formats,
        files=a.files,
        seed=a.seed,
        image=a.image,
        image_source=a.image_source,
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
