"""Meters for a command line: wall time, exit status, peak memory of its process tree, bytes it reads from one
file (strace), and page-cache eviction of that file. No anchors, no images: bench/image_suite.py uses them, and
tests/test_bench_image.py checks them against known values.

  wall s   time from start to the end of the whole process tree (orphans included: the bench is a child subreaper).
  peak MB  memory of the whole process tree: /proc is polled every ``poll`` seconds for every descendant, summing
           VmRSS; the result is the larger of that sampled peak and the kernel's exact peak of the largest single
           process (``ru_maxrss``, reported by GNU ``time -f %M``, which starts the command: exec folds the pre-exec
           high-water mark into ru_maxrss, so a child started straight from the bench's Python process would report
           the bench's own size). The upper bound (sum of every process's VmHWM) is kept too.
  read MB  bytes returned by read-family system calls on file descriptors open on the file, counted under
           ``strace -f -Y -y --seccomp-bpf``; blind spots (mmap, Linux AIO, io_uring, copy_file_range, sendfile,
           splice) are reported when seen.
  cold     ``posix_fadvise(DONTNEED)`` on the file (checked with ``fincore``), or dropping the whole page cache.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MB = 1_000_000


def children_cpu() -> float:
    """User + system CPU seconds of the waited-for child processes (their whole trees) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
