"""Image reading in a child process: a crash, a hang or a memory blow-up becomes a finding, not a dead run.

The parent forks a worker (``fork`` where the platform has it: no re-import, ~5 ms), which reads the
image and sends back the pickled ImageFacts. The worker reports each stage it enters ("reading the
SYSTEM hive (\\Windows\\System32\\config\\SYSTEM)") so that when it dies or overruns, the message
says where: "image parser crashed (SIGSEGV) while reading the SYSTEM hive ...".

Limits: wall time (``timeout``), address space (``memory_limit``, via RLIMIT_AS in the child). The
image file is opened read-only by the readers; nothing is written anywhere.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import resource
import signal
import time
import traceback
from pathlib import Path
from typing import Any

from harness.facts.image import ImageFacts
from harness.images.extract import ExtractOptions, extract
from harness.readers.errors import Unreadable

DEFAULT_TIMEOUT = 300.0
DEFAULT_MEMORY_LIMIT = 4 * 1024 * 1024 * 1024


def _child(conn: multiprocessing.connection.Connection, path: str, options: ExtractOptions, memory: int) -> None:
    if memory > 0:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    def progress(stage: str) -> None:
        conn.send(("stage", stage))

    try:
        facts = extract(Path(path), options, progress)
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


def read_image_isolated(
    path: Path,
    options: ExtractOptions | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
) -> ImageFacts:
    """ImageFacts for ``path``, read in a worker process. Raises Unreadable for any failure."""
    options = options or ExtractOptions()
    ctx = _context()
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, str(path), options, memory_limit), daemon=True)
    proc.start()
    child.close()
    stage = "starting"
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unreadable(path, f"image reading did not finish within {timeout:g} s (stopped while {stage})")
            if parent.poll(min(remaining, 0.5)):
                try:
                    message = parent.recv()
                except EOFError:
                    break
                kind = message[0]
                if kind == "stage":
                    stage = message[1]
                    continue
                if kind == "ok":
                    facts: ImageFacts = message[1]
                    return facts
                if kind == "unreadable":
                    raise Unreadable(path, message[1], location=message[2])
                if kind == "memory":
                    raise Unreadable(
                        path, f"image reading needed more than {memory_limit // 2**20:,} MiB (while {stage})"
                    )
                raise Unreadable(path, f"image reader failed while {stage}: {message[1]}")
            elif not proc.is_alive():
                break
        proc.join(5)
        code = proc.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            raise Unreadable(path, f"image parser crashed ({name}) while {stage}")
        raise Unreadable(path, f"image reader exited (status {code}) while {stage}")
    finally:
        parent.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)
