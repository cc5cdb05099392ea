"""Images read ahead by a process of their own, each next read starting the moment one ends.

`vmrole lint` starts reading images before pytest is imported, and pytest takes their facts as collection reaches
them. When the process that collects also forked the readers, a reader that had finished was followed by the next
one only when collection came to take its facts: while pytest imported, configured and collected, a core stood
idle. So the readers are forked by a small process of their own, forked from the asking process at its first
read-ahead (for `vmrole lint`: before pytest and the readers are imported). It

- imports the readers and what they import lazily (worker.READER_IMPORTS) once, before its first reader, while
  the asking process goes on with its own start-up: every reader starts warm (a reader forked cold spent ~0.3 s
  importing);

- runs at most N readers at once (`vmrole lint -n N`), in the order asked, and starts the next as soon as one ends.
  Each reader is still a fresh fork reading one image (:mod:`harness.extraction.worker`): a crash, a hang or a
  memory blow-up stays that image's finding, with the same limits and words as a read started on demand;
- writes each outcome (the pickled ImageFacts, tens of KiB, or the words of the Unreadable) into a private
  directory (mode 0700, made by the asking process, removed when it stops the read-ahead) and says so on a pipe;
- starts an image wanted before its turn at once, applies the collector's time limit once it is wanted (counted
  from the reader's start, as for any read: a read nobody has wanted yet runs on, as a read started ahead always
  did) and ends, stopping its readers, when the asking process goes (the request pipe closes).

Only the asking process and its read-ahead process write the directory, so loading its pickles trusts nothing
from outside the run. Memory stays bounded by the readers running, not by the images read: finished outcomes wait
on disk until collection takes them.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.extraction import shared_reads, worker
from harness.extraction.options import ExtractOptions

#: How long past an image's time limit the collector waits for the read-ahead process before giving up on it.
GRACE_S = 30.0
#: The readers running in this process, when it is a read-ahead process (request number -> reader).
RUNNING: dict[int, worker._Job] = {}


class _Process:
    """The asking side: the read-ahead process, its two pipes, and the outcomes it has announced."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.environ = dict(os.environ)  # what its readers see
        self.stopped = False
        self.directory = Path(tempfile.mkdtemp(prefix="vmrole-ahead-"))
        requests_r, requests_w = multiprocessing.Pipe(duplex=False)
        notices_r, notices_w = multiprocessing.Pipe(duplex=False)
        for stream in (sys.stdout, sys.stderr):  # what is buffered is written once, by this process
            with contextlib.suppress(Exception):
                stream.flush()
        pid = os.fork()
        if pid == 0:  # the read-ahead process: never returns into the caller's code
            code = 1
            try:
                requests_w.close()
                notices_r.close()
                _serve(requests_r, notices_w, self.directory)
                code = 0
            finally:
                os._exit(code)
        requests_r.close()
        notices_w.close()
        self.pid = pid
        self.requests, self.notices = requests_w, notices_r
        self.done: set[int] = set()
        self.sending, self.waiting = threading.Lock(), threading.Lock()
        self.fds = (requests_w.fileno(), notices_r.fileno())
        worker.CLOSE_IN_READERS.extend(self.fds)  # a reader forked here does not keep the pipes open

    def send(self, message: tuple[Any, ...]) -> bool:
        with self.sending:
            try:
                self.requests.send(message)
            except (OSError, ValueError):  # the read-ahead process is gone (or stopped)
                return False
            return True

    def outcome(self, number: int, timeout: float) -> shared_reads.Outcome | None:
        """The outcome of read ``number``, started now if it had not yet; None when the read-ahead process is gone."""
        if self.stopped or not self.send(("want", number, timeout)):
            return None
        with self.waiting:
            deadline = time.monotonic() + timeout + GRACE_S
            while number not in self.done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:  # it should have stopped the reader at the time limit: read it here instead
                    self.send(("drop", number))
                    return None
                try:
                    if not self.notices.poll(min(remaining, 1.0)):
                        continue
                    self.done.add(self.notices.recv()[1])
                except (EOFError, OSError, ValueError):
                    return None
            self.done.discard(number)
        path = self.directory / f"{number}.outcome"
        try:
            outcome = shared_reads.read_outcome(path)
        except (OSError, EOFError, pickle.UnpicklingError):
            return None
        with contextlib.suppress(OSError):
            path.unlink()
        return outcome

    def stop(self) -> None:
        self.stopped = True
        for fd in self.fds:
            with contextlib.suppress(ValueError):
                worker.CLOSE_IN_READERS.remove(fd)
        self.requests.close()  # the read-ahead process stops its readers and ends
        deadline = time.monotonic() + 5
        while True:
            try:
                pid, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, 0)
                break
            time.sleep(0.002)
        self.notices.close()
        shutil.rmtree(self.directory, ignore_errors=True)


#: This process's read-ahead processes, the newest last (another starts when the environment changed: a long-lived
#: process running pytest several times; the older ones still serve what was asked of them).
_PROCESSES: list[_Process] = []
_NUMBERS = itertools.count()


@dataclass
class Ahead:
    """A read asked of a read-ahead process."""

    process: _Process
    number: int
    options: ExtractOptions
    memory_limit: int

    def outcome(self, timeout: float, memory_limit: int) -> shared_reads.Outcome | None:
        """Its outcome; None when it cannot come from the read-ahead (gone, or asked with another memory limit):
        the caller then reads the image itself."""
        if memory_limit != self.memory_limit:
            self.drop()
            return None
        return self.process.outcome(self.number, timeout)

    def drop(self) -> None:
        """Not wanted after all: not started, or stopped."""
        if not self.process.stopped:
            self.process.send(("drop", self.number))


def ask(path: Path, options: ExtractOptions, memory_limit: int, readers: int) -> Ahead:
    """Have ``path`` read ahead, at most ``readers`` images at once (the read-ahead process starts now if it has not,
    or anew if the environment its readers would see has changed)."""
    mine = [p for p in _PROCESSES if p.owner == os.getpid()]
    _PROCESSES[:] = mine  # a forked child never uses its parent's
    if not mine or mine[-1].environ != os.environ:
        _PROCESSES.append(_Process())
    process = _PROCESSES[-1]
    number = next(_NUMBERS)
    process.send(("read", number, str(path), options, memory_limit, readers))
    return Ahead(process, number, options, memory_limit)


def stop() -> None:
    """End the read-ahead processes (their readers stopped, their directories removed); a later :func:`ask` starts
    another."""
    processes = [p for p in _PROCESSES if p.owner == os.getpid()]
    _PROCESSES.clear()
    for process in processes:
        process.stop()


# ---- the read-ahead process ------------------------------------------------------------------------------------


def _serve(
    requests: multiprocessing.connection.Connection, notices: multiprocessing.connection.Connection, directory: Path
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C ends the run, whose end closes the request pipe
    gc.freeze()  # the heap inherited from the asking process is never collected here
    worker.CLOSE_IN_READERS[:] = [requests.fileno(), notices.fileno()]
    RUNNING.clear()
    queue: dict[int, tuple[str, ExtractOptions, int]] = {}
    limits: dict[int, float] = {}
    bound, warm = 1, False

    def begin(number: int) -> None:
        path, options, memory_limit = queue.pop(number)
        try:
            RUNNING[number] = worker._start(Path(path), options, memory_limit)
        except OSError as exc:
            publish(number, ("unreadable", f"no image reader could be started: {exc.strerror or exc}", None))

    def publish(number: int, outcome: shared_reads.Outcome) -> None:
        job = RUNNING.pop(number, None)
        if job is not None:
            job.stop()
        shared_reads.write_outcome(directory / f"{number}.outcome", outcome)
        notices.send(("done", number))

    try:
        while True:
            if queue and not warm:  # every reader starts from a warm process
                worker._warm()
                warm = True
            while queue and len(RUNNING) < bound:
                begin(next(iter(queue)))
            now = time.monotonic()
            deadlines = [job.started + limits[n] for n, job in RUNNING.items() if n in limits]
            pause = max(0.0, min(deadlines) - now) if deadlines else None
            readers = {job.conn: n for n, job in RUNNING.items()}
            ends = {job.proc.sentinel: n for n, job in RUNNING.items()}
            ready = multiprocessing.connection.wait([requests, *readers, *ends], pause)
            heard: set[int] = set()
            for source in ready:
                if source is requests:
                    try:
                        message: tuple[Any, ...] = requests.recv()
                    except (EOFError, OSError):
                        return  # the asking process is done (or gone)
                    kind, number = message[0], message[1]
                    if kind == "read":
                        queue[number] = (message[2], message[3], message[4])
                        bound = max(1, message[5])
                    elif kind == "want":
                        limits[number] = message[2]
                        if number in queue:  # wanted before its turn: started now
                            begin(number)
                        heard.add(number)  # its time limit may have passed already
                    elif kind == "drop":
                        queue.pop(number, None)
                        job = RUNNING.pop(number, None)
                        if job is not None:
                            job.stop()
                elif source in readers:
                    heard.add(readers[source])
                else:
                    heard.add(ends[source])
            for number in heard:
                job = RUNNING.get(number)
                outcome = job.drain() if job is not None else None
                if outcome is not None:
                    publish(number, outcome)
            now = time.monotonic()
            for number, job in list(RUNNING.items()):
                limit = limits.get(number)
                if limit is not None and now >= job.started + limit:
                    publish(number, job.overran(limit))
    finally:
        for job in RUNNING.values():
            job.stop()
        RUNNING.clear()
        shutil.rmtree(directory, ignore_errors=True)  # also when the asking process was killed
