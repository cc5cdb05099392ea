"""Read-ahead (harness.extraction.readahead): ``vmrole lint --image ×50`` must not fork 50 readers at once (each
holds a big volume's inventory, and each read's time limit counts from its reader's start), and a core must not
stand idle while the pytest process is busy: at most N images are read at once, in the order asked, each next one
started the moment one ends (not when collection takes the facts); one wanted before its turn starts at once. Its
outcomes are a read on demand's (crash, hang, time limit, bug), and the read-ahead process ends with its asker.

The readers here read no disk: ``extract`` is replaced by one that reports a stage and waits for a file ("go") to
appear, so that the test decides when each read ends. The read-ahead process is forked at the first prefetch, after
the replacement, and notes each reader it starts (and how many were running then) in a file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.extraction import readahead, worker
from harness.extraction.extract import ExtractOptions
from harness.readers.errors import Unreadable

pytestmark = pytest.mark.skipif(
    "fork" not in __import__("multiprocessing").get_all_start_methods(), reason="the readers are forked"
)


def _gated(path: Path, options: object, progress: Callable[[str], None]) -> None:
    progress("waiting for its go")
    deadline = time.monotonic() + 60
    while not Path(f"{path}.go").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    raise Unreadable(path, "released")


def _crash(path: Path, options: object, progress: Callable[[str], None]) -> None:
    progress("reading the SYSTEM hive (\\Windows\\System32\\config\\SYSTEM)")
    os.kill(os.getpid(), signal.SIGSEGV)


def _hang(path: Path, options: object, progress: Callable[[str], None]) -> None:
    progress("reading the NTFS volume in partition 1")
    time.sleep(60)


def _bug(path: Path, options: object, progress: Callable[[str], None]) -> None:
    progress("reading services")
    raise KeyError("boom")


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    out = []
    for i in range(5):
        path = tmp_path / f"img{i}.vhd"
        path.write_bytes(bytes([i]) * 4096)
        out.append(path)
    return out


class Started:
    """(image, readers already running in the process that started it) for every reader started, in order: noted in
    a file, since the readers read ahead are forked by the read-ahead process, which inherits the patch."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, log: Path) -> None:
        worker.stop_read_ahead()  # the next prefetch forks a read-ahead process that has the patch below
        self.log = log
        start = worker._start

        def noting(path: Path, options, memory_limit: int):  # type: ignore[no-untyped-def]
            with open(log, "a") as fh:
                fh.write(f"{Path(os.path.realpath(path)).name} {len(readahead.RUNNING)}\n")
            return start(path, options, memory_limit)

        monkeypatch.setattr(worker, "_start", noting)

    def __call__(self) -> list[tuple[str, int]]:
        text = self.log.read_text() if self.log.exists() else ""
        return [(name, int(n)) for name, n in (line.split() for line in text.splitlines())]

    def clear(self) -> None:
        self.log.unlink(missing_ok=True)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Started]:
    """Readers started by a read-ahead process whose readers wait for their go (``_gated``)."""
    noted = Started(monkeypatch, tmp_path / "started.log")
    monkeypatch.setattr(worker, "extract", _gated)
    monkeypatch.setenv("VMROLE_IMAGE_READERS", "2")
    yield noted
    worker.stop_read_ahead()


def _until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.005)


def _go(path: Path) -> None:
    Path(f"{path}.go").touch()


def test_at_most_the_bound_at_once_the_next_as_soon_as_one_ends(images: list[Path], started) -> None:  # type: ignore[no-untyped-def]
    options = ExtractOptions()
    for path in images:
        worker.prefetch(path, options)
    _until(lambda: len(started()) == 2, "two readers started")
    time.sleep(0.3)
    assert started() == [("img0.vhd", 0), ("img1.vhd", 1)]  # two at once, the rest wait

    _go(images[0])  # img0 ends; nobody collects it: img2 starts all the same
    _until(lambda: len(started()) == 3, "the third reader started when the first ended")
    assert started()[2] == ("img2.vhd", 1)

    _go(images[4])  # wanted before its turn (img1 and img2 still read): started at once, beyond the bound
    with pytest.raises(Unreadable, match="released"):
        worker.read_image_isolated(images[4], options, timeout=30)
    assert started()[3] == ("img4.vhd", 2)

    for path in images:
        _go(path)
    for path in (images[0], *images[1:4]):
        with pytest.raises(Unreadable, match="released"):
            worker.read_image_isolated(path, options, timeout=30)
    assert sorted(name for name, _ in started()) == [p.name for p in images]  # each read once
    assert max(n for _, n in started()) == 2 and not worker._PENDING


def test_outcomes_are_those_of_a_read_on_demand(images: list[Path], started, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    for extract, timeout, words in (
        (_crash, 30, r"crashed \(SIGSEGV\) while reading the SYSTEM hive"),
        (_hang, 1, r"did not finish within 1 s \(stopped while reading the NTFS volume in partition 1\)"),
        (_bug, 30, r"failed while reading services: KeyError"),
    ):
        worker.stop_read_ahead()
        monkeypatch.setattr(worker, "extract", extract)
        worker.prefetch(images[0])
        began = time.monotonic()
        with pytest.raises(Unreadable, match=words):
            worker.read_image_isolated(images[0], timeout=timeout)
        assert time.monotonic() - began < 10


def test_a_different_memory_limit_or_a_dead_read_ahead_reads_here(images: list[Path], started) -> None:  # type: ignore[no-untyped-def]
    for path in images[:2]:
        _go(path)
        worker.prefetch(path)
    with pytest.raises(Unreadable, match="released"):  # asked ahead with the default limit: read again, here
        worker.read_image_isolated(images[0], memory_limit=2**30, timeout=30)
    os.kill(readahead._PROCESSES[-1].pid, signal.SIGKILL)
    with pytest.raises(Unreadable, match="released"):  # its read-ahead process is gone: read here
        worker.read_image_isolated(images[1], timeout=30)
    assert not worker._PENDING


ORPHAN = """
import os, sys, time
from pathlib import Path
from harness.extraction import readahead, worker

def gated(path, options, progress):
    Path(sys.argv[2]).write_text(str(os.getpid()))
    time.sleep(120)

worker.extract = gated
worker.prefetch(Path(sys.argv[1]))
while not Path(sys.argv[2]).exists():
    time.sleep(0.01)
print(readahead._PROCESSES[-1].pid, readahead._PROCESSES[-1].directory, flush=True)
os._exit(0)  # no clean-up at exit: the read-ahead process must notice on its own
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_the_read_ahead_process_its_readers_and_folder_end_with_the_asker(images: list[Path], tmp_path: Path) -> None:
    marker = tmp_path / "reader.pid"
    proc = subprocess.run(
        [sys.executable, "-c", ORPHAN, str(images[0]), str(marker)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    pool, folder = int(proc.stdout.split()[0]), Path(proc.stdout.split()[1])
    reader = int(marker.read_text())
    _until(lambda: _gone(pool) and _gone(reader), "the read-ahead process and its reader ended", timeout=15)
    _until(lambda: not folder.exists(), "the outcomes' folder removed", timeout=5)


def test_the_bound_defaults_to_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VMROLE_IMAGE_READERS", raising=False)
    assert worker._max_ahead() == max(1, os.cpu_count() or 1)
    for bad in ("0", "-1", "two", "٣"):
        monkeypatch.setenv("VMROLE_IMAGE_READERS", bad)
        assert worker._max_ahead() == max(1, os.cpu_count() or 1)
