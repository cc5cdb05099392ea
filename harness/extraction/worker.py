"""Image reading in a child process: a crash, a hang or a memory blow-up becomes a finding, not a dead run.

The parent forks a worker (``fork`` where the platform has it: no re-import, ~5 ms), which reads the
image and sends back the pickled ImageFacts. The worker reports each stage it enters ("reading the
SYSTEM hive (\\Windows\\System32\\config\\SYSTEM)") so that when it dies or overruns, the message
says where: "image parser crashed (SIGSEGV) while reading the SYSTEM hive ...".

Limits: wall time (``timeout``), address space (``memory_limit``, via RLIMIT_AS in the child). The
image file is opened read-only by the readers; nothing is written anywhere.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import functools
import gc
import importlib
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.extraction import shared_reads
from harness.extraction.options import ExtractOptions
from harness.readers.errors import Unreadable

if TYPE_CHECKING:
    from harness.extraction.readahead import Ahead
    from harness.facts.image import ImageFacts

DEFAULT_TIMEOUT = 300.0
DEFAULT_MEMORY_LIMIT = 4 * 1024 * 1024 * 1024


#: File descriptors a reader closes first: the read-ahead pipes its parent holds (:mod:`.readahead`), so that
#: a reader never keeps the other end of a pipe open for a process it does not belong to.
CLOSE_IN_READERS: list[int] = []


def _child(conn: multiprocessing.connection.Connection, path: str, options: ExtractOptions, memory: int) -> None:
    for fd in CLOSE_IN_READERS:
        with contextlib.suppress(OSError):
            os.close(fd)
    faulthandler.disable()  # a crash is the image's finding ("image parser crashed (SIGSEGV) while ..."), no dump
    # The forked child inherits the parent's whole heap (pytest, plugins): keep the cyclic collector away from
    # it (freeze) and off while the readers allocate millions of small objects that hold no cycles worth
    # collecting; the process is short-lived and bounded by RLIMIT_AS below.
    gc.freeze()
    gc.disable()
    if memory > 0:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    def progress(stage: str) -> None:
        conn.send(("stage", stage))

    try:
        facts = load_readers()(Path(path), options, progress)
        conn.send(("ok", facts))
    except Unreadable as exc:
        conn.send(("unreadable", exc.problem, exc.location))
    except MemoryError:
        conn.send(("memory", None, None))
    except RecursionError:
        conn.send(("bug", "recursion too deep (a structure nested beyond the reader's bounds)", None))
    except Exception as exc:  # a reader bug: report it as such, with the exception type (no bytes)
        where = traceback.extract_tb(exc.__traceback__)[-1]
        conn.send(("bug", f"{type(exc).__name__} in {Path(where.filename).name}:{where.lineno}", None))
    finally:
        conn.close()


def _context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def load_readers() -> Any:
    """:func:`harness.extraction.extract.extract`, imported now if it was not (about 0.1 s with the readers): the
    process that forks the readers imports it first, so that they inherit it; `vmrole lint` forks its read-ahead
    process before, so that its own start-up does not wait for the readers' imports. ``worker.extract`` is the
    same function (a test may replace it)."""
    read = globals().get("extract")
    if read is None:
        from harness.extraction.extract import extract as read

        globals()["extract"] = read
    return read


def __getattr__(name: str) -> Any:
    if name == "extract":
        return load_readers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class _Job:
    """A worker reading one image, and the last stage it reported."""

    proc: Any
    conn: Any
    started: float
    memory_limit: int
    stage: str = "starting"

    def answer(self, message: tuple[Any, ...]) -> shared_reads.Outcome | None:
        """The outcome a message from the reader gives, or None for a stage report (noted)."""
        kind = message[0]
        if kind == "stage":
            self.stage = message[1]
            return None
        if kind == "ok":
            return ("ok", message[1])
        if kind == "unreadable":
            return ("unreadable", message[1], message[2])
        if kind == "memory":
            return (
                "unreadable",
                f"image reading needed more than {self.memory_limit // 2**20:,} MiB (while {self.stage})",
                None,
            )
        return ("unreadable", f"image reader failed while {self.stage}: {message[1]}", None)

    def ended(self) -> shared_reads.Outcome:
        """The outcome of a reader gone without an answer: crashed (a signal) or exited."""
        self.proc.join(5)
        code = self.proc.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            return ("unreadable", f"image parser crashed ({name}) while {self.stage}", None)
        return ("unreadable", f"image reader exited (status {code}) while {self.stage}", None)

    def drain(self) -> shared_reads.Outcome | None:
        """Take what the reader has sent, without waiting: its outcome if it has one (or has ended without one),
        else None (stage reports noted, or nothing yet)."""
        while True:
            try:
                if not self.conn.poll(0):
                    return None if self.proc.is_alive() else self.ended()
                message = self.conn.recv()
            except (EOFError, OSError):
                return self.ended()
            outcome = self.answer(message)
            if outcome is not None:
                return outcome

    def overran(self, timeout: float) -> shared_reads.Outcome:
        return ("unreadable", f"image reading did not finish within {timeout:g} s (stopped while {self.stage})", None)

    def stop(self) -> None:
        self.conn.close()
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)


#: Reads started ahead of need (``vmrole lint`` starts reading images while pytest starts up): each one a request
#: to the read-ahead process (:mod:`harness.extraction.readahead`), which runs the readers.
_PENDING: dict[tuple[str, ExtractOptions, str], Ahead] = {}


#: How many images are read at once, set for the run (``vmrole lint -n N``); None: :func:`default_readers`.
_READERS: int | None = None


def set_readers(count: int | None) -> None:
    """Read at most ``count`` images at once from now on; 0 reads none ahead (each image is read when it is
    wanted, one at a time: a serial run); None restores the default (:func:`default_readers`)."""
    global _READERS
    _READERS = None if count is None else max(0, count)


def default_readers() -> int:
    """One reader per core (``VMROLE_IMAGE_READERS`` sets another default)."""
    value = os.environ.get("VMROLE_IMAGE_READERS", "")
    if value.isascii() and value.isdigit() and int(value) > 0:
        return int(value)
    return max(1, os.cpu_count() or 1)


def _max_ahead() -> int:
    """How many images are read ahead at once: :func:`set_readers`'s count, else :func:`default_readers`. Reading
    50 images at once would hold 50 readers' memory (~150 MB each for a big volume) and stretch every read past
    its time limit, which counts from the reader's start."""
    return default_readers() if _READERS is None else _READERS


#: What :func:`~harness.extraction.extract.extract` imports only when it runs (cryptography, yaml, defusedxml
#: behind them): about 0.2 s that every forked reader paid again. The process that forks the readers imports them
#: once and the readers forked later inherit them: the read-ahead process before its first reader (its asker goes
#: on meanwhile), a serial run (``-n 0``) right after forking its first reader (whose reading overlaps it).
READER_IMPORTS = (
    "harness.extraction.certstores",
    "harness.extraction.firewall_input",
    "harness.extraction.sigmatch",
    "harness.extraction.unattend",
    "harness.facts.image_signatures",
)


def _warm() -> None:
    load_readers()
    for name in READER_IMPORTS:
        if name not in sys.modules:
            importlib.import_module(name)


def _start(path: Path, options: ExtractOptions, memory_limit: int) -> _Job:
    load_readers()  # once, here: not again in every reader
    shared_reads.log_read(path)
    ctx = _context()
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, str(path), options, memory_limit), daemon=True)
    proc.start()
    child.close()
    return _Job(proc, parent, time.monotonic(), memory_limit)


def _key(path: Path, options: ExtractOptions) -> tuple[str, ExtractOptions, str]:
    """The real path, the options, and the file's size and modification time: a read started before the file
    changed (a long-lived process running pytest several times) is never taken for the file's facts."""
    real, stamp = shared_reads.stamped(path)
    return (real, options, stamp)


def prefetch(path: Path, options: ExtractOptions | None = None, *, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> None:
    """Start reading ``path`` now; a later :func:`read_image_isolated` with the same options takes the result.

    Reading overlaps whatever the caller does meanwhile (pytest's start-up and collection). The reads run in a
    process of their own (:mod:`harness.extraction.readahead`, forked at the first call), at most
    :func:`_max_ahead` at once, in the order asked, each next one as soon as one ends. A prefetch nobody collects
    is stopped at exit.
    """
    if not _max_ahead():
        return  # a serial run (`-n 0`): nothing read ahead, so no path resolved nor stat taken
    key = _key(path, options or ExtractOptions())
    if key not in _PENDING and Path(path).is_file():
        from harness.extraction import readahead

        with contextlib.suppress(OSError):  # no process to be had (EAGAIN): the image is read when wanted
            _PENDING[key] = readahead.ask(Path(key[0]), key[1], memory_limit, _max_ahead())


@atexit.register
def stop_read_ahead() -> None:
    """Stop the reads started ahead that nobody collected, and the process running them (at a run's end)."""
    _PENDING.clear()
    readahead = sys.modules.get("harness.extraction.readahead")
    if readahead is not None:
        readahead.stop()


_stop_pending = stop_read_ahead  # the name earlier tests use


def read_image_isolated(
    path: Path,
    options: ExtractOptions | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
) -> ImageFacts:
    """ImageFacts for ``path``, read in a worker process. Raises Unreadable for any failure.

    ``timeout`` counts from the moment the worker started (a prefetched worker has had a head start). In a
    run of several processes (:mod:`harness.extraction.shared_reads`) the image is read by one of them only.
    """
    options = options or ExtractOptions()
    if shared_reads.DIRECTORY is not None:
        return shared_reads.read_once(path, options, timeout, lambda: _read_here(path, options, timeout, memory_limit))
    return _read_here(path, options, timeout, memory_limit)


def _read_here(path: Path, options: ExtractOptions, timeout: float, memory_limit: int) -> ImageFacts:
    ahead = _PENDING.pop(_key(path, options), None)
    if ahead is not None:
        outcome = ahead.outcome(timeout, memory_limit)
        if outcome is not None:
            return shared_reads.facts_of(path, outcome)
        # the read-ahead process is gone (or the read was asked with another memory limit): read it here
    job = _start(path, options, memory_limit)
    _warm()
    return _collect(job, path, timeout)


def claim_ahead(paths: list[Path], options: ExtractOptions, *, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> int:
    """In a run of several processes: claim these images and start reading them now (each published when this
    process's collection reaches it). Images another process claimed first are left to it. Returns how many."""
    started = 0
    for path in paths:
        if Path(path).is_file() and shared_reads.claim_ahead(shared_reads.key_of(path, options)):
            prefetch(path, options, memory_limit=memory_limit)
            started += 1
    return started


def publish_prefetched(timeout: float) -> int:
    """In a run of several processes, from the process that started reading images but does not collect (the
    xdist controller behind `vmrole lint -- -n N`): claim what :func:`prefetch` started and publish each outcome
    from a thread as its read ends, for the collecting processes. Returns how many reads it hands over."""
    reads = []
    for key in list(_PENDING):
        path, options = Path(key[0]), key[1]
        name = shared_reads.key_of(path, options)
        if shared_reads.claim(name):
            reads.append((path, name, _PENDING.pop(key)))
        else:  # another process claimed it first: not read here
            _PENDING.pop(key).drop()

    def hand_over() -> None:
        for path, name, ahead in reads:
            outcome = ahead.outcome(timeout, ahead.memory_limit)
            if outcome is None:  # the read-ahead process is gone: read it here
                outcome = shared_reads.outcome_of(
                    functools.partial(_collect, _start(path, ahead.options, ahead.memory_limit), path, timeout)
                )
            with contextlib.suppress(OSError):  # the run ended first and removed its directory
                shared_reads.publish(name, outcome)

    if reads:  # the thread only waits on a pipe (a fallback read forks from it: only if the read-ahead died)
        threading.Thread(target=hand_over, name="vmrole-image-hand-over", daemon=True).start()
    return len(reads)


def _collect(job: _Job, path: Path, timeout: float) -> ImageFacts:
    return shared_reads.facts_of(path, wait_for(job, timeout))


def wait_for(job: _Job, timeout: float) -> shared_reads.Outcome:
    """Wait for one reader's outcome (at most ``timeout`` from its start), then stop it."""
    deadline = job.started + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return job.overran(timeout)
            job.conn.poll(min(remaining, 0.5))
            outcome = job.drain()
            if outcome is not None:
                return outcome
    finally:
        job.stop()
