"""One read per image in a run of several processes (pytest-xdist): the first to claim an image reads it.

Every xdist worker collects every artefact, and collecting an image needs its facts. Without this, each worker
read each image (and `vmrole lint` had started a third read in the controller, which never collects). With it,
the processes of one run share a private directory (:data:`DIRECTORY`, made by the controller with mode 0700 and
handed to the workers with the xdist worker input). For each image (real path, size, modification time and
reading options) the first process to claim it - an ``O_EXCL`` claim file - reads it in the isolated image
worker and publishes the outcome there: the pickled :class:`~harness.facts.image.ImageFacts` (tens of KiB,
not the image's bytes) or the words of its :class:`~harness.readers.errors.Unreadable`. The others wait for
that file. Only processes of this run and user write the directory, so loading its pickles trusts nothing
from outside the run.

No deadlock: a process that claimed an image publishes it when its collection reaches it (or, for the
controller, from a thread as soon as the read ends), and every process collects in the same order, so the
first unpublished image in that order is always being read by its claimer.

``VMR_IMAGE_READ_LOG=FILE`` appends one line per image read started (pid and path): a diagnostic the tests
use to prove each image was read once in a run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.readers.errors import Unreadable

#: The run's shared directory, or None (a single-process run: nothing to share).
DIRECTORY: Path | None = None
#: Images this process claimed ahead of its collection (read and published when collection reaches them).
_MINE: set[str] = set()
#: How long past the image timeout a process waits for another's read before calling the image unreadable.
GRACE_S = 30.0
READ_LOG_ENV = "VMR_IMAGE_READ_LOG"


def use(directory: Path | None) -> None:
    global DIRECTORY
    DIRECTORY = directory
    _MINE.clear()


def stamped(path: Path) -> tuple[str, str]:
    """The file's real path and its ``size:mtime_ns`` (``missing`` when it cannot be stat-ed): a read started
    before the file changed is never taken for the file's facts."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return real, "missing"
    return real, f"{st.st_size}:{st.st_mtime_ns}"


def key_of(path: Path, options: Any) -> str:
    """The image's name in the directory: its real path, size and modification time, and the reading options."""
    real, stamp = stamped(path)
    return hashlib.sha256(f"{real}\0{stamp}\0{options!r}".encode()).hexdigest()[:32]


def claim(name: str) -> bool:
    """True when this process is the first to claim image ``name`` (it must then read and publish it)."""
    assert DIRECTORY is not None
    try:
        fd = os.open(DIRECTORY / f"{name}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def claim_ahead(name: str) -> bool:
    """Claim an image before collection reaches it (its read is started now, in the background)."""
    if claim(name):
        _MINE.add(name)
        return True
    return False


#: How a read ended: ``("ok", facts)`` or ``("unreadable", problem, location)``.
Outcome = tuple[Any, ...]


def outcome_of(read: Callable[[], Any]) -> Outcome:
    """What :func:`publish` writes for a read: ``("ok", read())``, or ``("unreadable", problem, location)``."""
    try:
        return ("ok", read())
    except Unreadable as exc:
        return ("unreadable", exc.problem, exc.location)


def publish(name: str, outcome: Outcome) -> None:
    """Write ``("ok", facts)`` or ``("unreadable", problem, location)`` for the waiting processes (atomically)."""
    assert DIRECTORY is not None
    write_outcome(DIRECTORY / f"{name}.facts", outcome)


def write_outcome(path: Path, outcome: Outcome) -> None:
    """Pickle an outcome to ``path`` atomically (a reader of the file sees all of it or nothing), in a directory
    of the run's own."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(outcome, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def read_outcome(path: Path) -> Outcome | None:
    """What :func:`write_outcome` wrote there, or None when nothing (yet)."""
    try:
        with open(path, "rb") as fh:
            outcome: Outcome = pickle.load(fh)
    except FileNotFoundError:
        return None
    return outcome


def _published(name: str) -> Outcome | None:
    assert DIRECTORY is not None
    return read_outcome(DIRECTORY / f"{name}.facts")


def read_once(path: Path, options: Any, timeout: float, read: Any) -> Any:
    """The image's facts: published by another process of the run, or read here with ``read()`` and published."""
    name = key_of(path, options)
    outcome = _published(name)
    if outcome is None and (name in _MINE or claim(name)):
        _MINE.discard(name)
        outcome = outcome_of(read)
        publish(name, outcome)
    elif outcome is None:
        outcome = _wait(name, path, timeout)
    return facts_of(path, outcome)


def facts_of(path: Path, outcome: Outcome) -> Any:
    """The facts of an outcome (:func:`outcome_of`), or its Unreadable raised."""
    if outcome[0] == "ok":
        return outcome[1]
    raise Unreadable(path, outcome[1], location=outcome[2])


def _wait(name: str, path: Path, timeout: float) -> tuple[Any, ...]:
    deadline = time.monotonic() + timeout + GRACE_S
    pause = 0.005
    while True:
        outcome = _published(name)
        if outcome is not None:
            return outcome
        if time.monotonic() > deadline:
            raise Unreadable(
                path,
                f"another process of this run claimed the image but did not finish reading it within {timeout:g} s",
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def log_read(path: Path) -> None:
    """``VMR_IMAGE_READ_LOG``: note that a read of ``path`` starts (one line, appended atomically)."""
    log = os.environ.get(READ_LOG_ENV)
    if log:
        with contextlib.suppress(OSError):
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, f"{os.getpid()} {os.path.realpath(path)}\n".encode())
            finally:
                os.close(fd)
