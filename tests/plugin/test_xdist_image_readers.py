"""`vmrole lint -n`: how many images are read at once (issue 13, item 2).

`-n 0` is a serial run: no image is read ahead, each is read when collection reaches it, one reader at a time.
`-n N` reads N images at once (isolated reader processes; the rule items run in the one pytest process), also the
images pytest finds in a named folder; no -n is `auto`, one reader per core. Counted here: every reader started
notes how many other readers were running at that moment in the process that forked it (the read-ahead process, or
for `-n 0` the pytest process).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cli
from harness.extraction import worker
from harness.testing.images import missing_tools
from tests.images.test_read_ahead_bound import Started
from tests.plugin.test_xdist_images import three_images

needs_tools = pytest.mark.skipif(bool(missing_tools()), reason=f"image tools missing: {missing_tools()}")


@pytest.fixture(scope="module")
def images(image_cache: Path) -> list[Path]:
    return three_images(image_cache)


@pytest.fixture
def others_running(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Started]:
    noted = Started(monkeypatch, tmp_path / "started.log")
    monkeypatch.delenv("VMROLE_IMAGE_READERS", raising=False)
    yield noted
    worker.stop_read_ahead()


def _lint(tmp_path: Path, *args: str) -> int:
    return cli.main(["lint", *args, "--no-allure", "--no-junit", "--report-dir", str(tmp_path / "r"), "-q", "-q"])


def _linked(images: list[Path], folder: Path) -> list[Path]:
    """The images under new names (facts are cached per process and path: these are read afresh)."""
    folder.mkdir()
    links = [folder / f"{i}-{image.name}" for i, image in enumerate(images)]  # pytest finds them in this order
    for link, image in zip(links, images, strict=True):
        link.symlink_to(image)
    return links


@needs_tools
def test_serial_reads_one_image_at_a_time(
    images: list[Path], others_running: Started, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    named = [a for link in _linked(images, tmp_path / "named") for a in ("--image", str(link))]
    assert _lint(tmp_path, *named, "-n", "0") == 1
    assert others_running() == [(p.name, 0) for p in images]
    assert worker._READERS is None  # the run's setting does not outlive it


@needs_tools
def test_two_readers_at_once_also_for_a_folders_images(
    images: list[Path], others_running: Started, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _linked(images, tmp_path / "two")
    assert _lint(tmp_path, "two", "-n", "2") == 1
    assert sorted(name for name, _ in others_running()) == sorted(p.name for p in images)  # each read once
    assert max(n for _, n in others_running()) == 1, others_running()  # two at once, never three

    others_running.clear()
    _linked(images, tmp_path / "serial")
    assert _lint(tmp_path, "serial", "-n", "0") == 1
    assert others_running() == [(p.name, 0) for p in images]


@needs_tools
def test_an_images_neighbours_are_not_read(
    images: list[Path], others_running: Started, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest offers every file of a named file's folder to the plugin, then drops it: nothing of it is read."""
    monkeypatch.chdir(tmp_path)
    links = _linked(images, tmp_path / "named")
    assert _lint(tmp_path, "--image", str(links[0]), "--image", str(links[1]), "-n", "2") == 1
    assert sorted(name for name, _ in others_running()) == sorted(p.name for p in images[:2])


def test_the_default_is_one_reader_per_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VMROLE_IMAGE_READERS", raising=False)
    assert cli._readers(None) is None and cli._readers("auto") is None and cli._readers("3") == 3
    assert worker._max_ahead() == max(1, os.cpu_count() or 1)
    monkeypatch.setenv("VMROLE_IMAGE_READERS", "5")
    assert worker._max_ahead() == 5
    worker.set_readers(0)
    try:
        assert worker._max_ahead() == 0  # -n beats the environment
    finally:
        worker.set_readers(None)
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["lint"].format_help()  # type: ignore[union-attr]
    assert "auto (the default: one per core" in " ".join(help_text.split())


@pytest.mark.parametrize("bad", ["two", "-1", "1.5", "logical"])
def test_a_bad_count_is_a_usage_error(bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.vhd").write_bytes(b"\0" * 512)
    assert cli.main(["lint", str(tmp_path / "x.vhd"), "-n", bad]) == 4
    err = capsys.readouterr().err
    assert f"-n: expected auto, 0 (serial) or a number of readers, got {bad!r}" in err


PROBE = """
import sys
from harness import cli
from harness.extraction import worker

start = worker._start
def noting(*args, **kwargs):
    print("reader started; pytest imported:", "pytest" in sys.modules, file=sys.stderr)
    return start(*args, **kwargs)
worker._start = noting
sys.exit(cli.main(sys.argv[1:]))
"""


@needs_tools
def test_readers_start_before_pytest_is_imported(images: list[Path], tmp_path: Path) -> None:
    """pytest's imports take about 0.2 s: `vmrole lint` has its first readers going before it pays them."""
    args = ["lint", "--image", str(images[0]), "--image", str(images[1]), "-n", "2", "--no-allure", "--no-junit"]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args, "--report-dir", str(tmp_path / "r"), "-q", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    started = [line for line in proc.stderr.splitlines() if line.startswith("reader started")]
    assert started == ["reader started; pytest imported: False"] * 2, proc.stderr[-2000:]
    assert cli.USAGE_ERROR == pytest.ExitCode.USAGE_ERROR


def test_the_readers_lazy_imports_are_warmed_in_the_parent() -> None:
    """Every module extract() imports inside a function is imported once by the process that forks the readers
    (worker.READER_IMPORTS), so that the readers forked later do not each import it again (~0.2 s a reader)."""
    import ast

    from harness.extraction import extract

    tree = ast.parse(Path(extract.__file__).read_text("utf-8"))
    lazy = {
        node.module
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef)
        for node in ast.walk(fn)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness.")
    }
    assert lazy and lazy <= set(worker.READER_IMPORTS), sorted(lazy - set(worker.READER_IMPORTS))


FROZEN_AT_EXIT = """
import atexit, gc, sys
from harness import cli
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0, file=sys.stderr))
sys.exit(cli.run())
"""


@needs_tools
def test_a_lint_freezes_what_collection_built_and_a_long_lived_process_gets_it_back(
    images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After collection a lint only runs its items and ends: `vmrole` keeps the collector off what collection built
    (gc.freeze) to the end of the process; cli.main in a process that goes on unfreezes it when the lint ends."""
    import gc

    args = ["lint", "--image", str(images[0]), "-n", "0", "--no-allure", "--no-junit", "-q", "-q"]
    proc = subprocess.run(
        [sys.executable, "-c", FROZEN_AT_EXIT, *args, "--report-dir", str(tmp_path / "r")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "frozen at exit: True" in proc.stderr

    monkeypatch.chdir(tmp_path)
    frozen: list[int] = []

    class Spy:
        @staticmethod
        def pytest_runtestloop(session: object) -> None:
            frozen.append(gc.get_freeze_count())

    main = pytest.main
    monkeypatch.setattr(pytest, "main", lambda args, plugins=(): main(args, plugins=[*plugins, Spy()]))
    assert _lint(tmp_path, "--image", str(images[0]), "-n", "0") == 0
    assert frozen and frozen[0] > 0  # frozen while the items ran
    assert gc.get_freeze_count() == 0  # and given back
