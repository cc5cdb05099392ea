"""The image benchmark's meters (bench/measure.py) and tables (bench/image_suite.py) against known values: no
anchors, no big image."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from bench import image_suite, measure

PY = sys.executable
needs_gnu_time = pytest.mark.skipif(
    not os.access(measure.GNU_TIME, os.X_OK), reason="GNU time is not installed (./dev bench image installs it)"
)


def _python(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


# --- process tree: wall time, exit status, peak memory -----------------------------------------------------------


def test_peak_memory_covers_the_whole_tree() -> None:
    # A parent holding 60 MB starts a child holding 120 MB; both hold for a while, so the sampled sum sees both.
    child = "import time; b = b'x' * 120_000_000; time.sleep(1.0)"
    parent = f"""
        import subprocess, sys, time
        b = b'y' * 60_000_000
        subprocess.run([sys.executable, '-c', {child!r}])
    """
    run = measure.run_measured(_python(parent), poll=0.02)
    assert run.ok and run.exit_code == 0
    assert run.processes >= 2
    assert 120 <= run.max_process_mb < 170  # the child is the biggest single process (kernel-exact)
    assert 180 <= run.peak_tree_rss_mb < 300  # 60 + 120 MB + two interpreters
    assert run.peak_mb == max(run.peak_tree_rss_mb, run.max_process_mb)
    assert run.hwm_sum_mb >= run.peak_tree_rss_mb


@needs_gnu_time
def test_a_short_spike_is_still_caught_by_the_kernel_peak() -> None:
    # 150 MB for a moment, far shorter than the poll interval: ru_maxrss still has it.
    run = measure.run_measured(_python("b = b'x' * 150_000_000; del b"), poll=5.0)
    assert run.ok and run.max_process_mb >= 150 and run.peak_mb >= 150


def test_wall_time_exit_status_and_error_tail() -> None:
    run = measure.run_measured(_python("import sys, time; time.sleep(0.3); sys.exit('boom: no image')"))
    assert not run.ok and run.exit_code == 1
    assert run.wall_s >= 0.3
    assert "exit 1" in run.error and "boom: no image" in run.error
    assert measure.run_measured(_python("import sys; sys.exit(1)"), ok_exits=(0, 1)).ok


def test_a_command_that_cannot_start_is_a_failed_run() -> None:
    run = measure.run_measured(["/nonexistent/tool", "x"])
    assert not run.ok and "/nonexistent/tool" in run.error


@needs_gnu_time
def test_the_bench_process_own_memory_is_not_charged_to_the_tool() -> None:
    # exec folds the pre-exec high-water mark into ru_maxrss: a tiny tool started straight from a big process
    # would report the big process's size. 300 MB here must not show up as the tool's peak.
    ballast = b"m" * 300_000_000
    run = measure.run_measured(_python("pass"))
    assert len(ballast) and run.ok
    assert run.peak_mb < 100, run


def test_timeout_kills_the_whole_group() -> None:
    code = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    run = measure.run_measured(_python(code), timeout=1.0, linger=1.0)
    assert not run.ok and "timed out" in run.error
    assert run.wall_s < 10
    assert not [p for p in _children() if _comm(p) == "sleep"]


def test_orphans_stay_in_the_tree_and_are_reaped() -> None:
    # The shell exits at once; its background child is re-parented to us (subreaper) and measured until it ends.
    code = "import time; b = b'z' * 80_000_000; time.sleep(0.6)"
    run = measure.run_measured(["sh", "-c", f"{PY} -c {code!r} & exit 0"], poll=0.02, linger=20)
    assert run.ok
    assert run.peak_mb >= 80
    assert not [p for p in _children() if _comm(p) in ("python3", "python", "sh")]


def _children() -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and measure._parent_of(int(name)) == os.getpid():
            found.append(int(name))
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# --- bytes read: strace ------------------------------------------------------------------------------------------


def test_parse_strace_counts_only_the_image_and_pairs_unfinished_calls() -> None:
    lines = [
        'read(3</img/disk.vhd>, ""..., 4096) = 4096',
        '77 pread64(3</img/disk.vhd>, ""..., 512, 1024) = 512',
        '77 read(4</usr/lib/libc.so.6>, ""..., 832) = 832',
        "1234<qemu-system-x86> preadv(5</img/disk.vhd>, <unfinished ...>",
        "1235<worker> read(6</img/disk.vhd>, <unfinished ...>",
        '1234<qemu-system-x86> <... preadv resumed>[{iov_base=""..., iov_len=65536}], 1, 0) = 65536',
        '1235<worker> <... read resumed>""..., 100) = 100',
        "77 pread64(3</img/disk.vhd>, 0x7f0000000000, 512, 99) = -1 EINTR (Interrupted system call)",
        "[pid 78] read(3</img/disk.vhd>, <unfinished ...>) = ?",
        "1234<qemu-system-x86> io_uring_setup(256, 0x7ffc0) = 9<anon_inode:[io_uring]>",
        "88<python3> mmap(NULL, 8192, PROT_READ, MAP_PRIVATE, 3</img/disk.vhd>, 0) = 0x7f1234000000",
        "88<python3> mmap(NULL, 8192, PROT_READ, MAP_PRIVATE, 7</usr/lib/x.so>, 0) = 0x7f1234000000",
        "+++ exited with 0 +++",
    ]
    count = measure.parse_strace(lines, "/img/disk.vhd")
    assert count.bytes == 4096 + 512 + 65536 + 100
    assert count.calls == {"read": 3, "pread64": 2, "preadv": 1, "mmap": 1}
    assert count.bytes_by_call == {"read": 4196, "pread64": 512, "preadv": 65536}
    assert count.bytes_by_process == {"?": 4608, "qemu-system-x86": 65536, "worker": 100}
    assert count.blind_spots == [
        "io_uring_setup in qemu-system-x86: reads submitted through it are not counted",
        "mmap of the image in python3: its bytes are not counted",
    ]


@pytest.mark.skipif(not shutil.which("strace"), reason="strace is not installed (./dev bench image installs it)")
def test_strace_counts_every_read_of_the_process_tree(tmp_path: Path) -> None:
    image, other = tmp_path / "image.bin", tmp_path / "other.bin"
    image.write_bytes(os.urandom(200_000))
    other.write_bytes(os.urandom(50_000))
    grandchild = f"import os; fd = os.open({str(image)!r}, os.O_RDONLY); os.read(fd, 7000)"
    code = f"""
        import os, subprocess, sys, threading
        with open({str(image)!r}, 'rb', buffering=0) as f:
            f.read(1000)                                        # read: 1,000
        fd = os.open({str(image)!r}, os.O_RDONLY)
        os.pread(fd, 5000, 10)                                  # pread64: 5,000
        os.preadv(fd, [bytearray(300), bytearray(200)], 0)      # preadv(2): 500
        os.pread(fd, 4096, 199_000)                             # short read at the end: 1,000
        t = threading.Thread(target=os.pread, args=(fd, 2500, 0)); t.start(); t.join()   # a thread: 2,500
        with open({str(other)!r}, 'rb') as f:
            f.read()                                            # another file: not counted
        subprocess.run([sys.executable, '-c', {grandchild!r}])  # a child process: 7,000
    """
    count = measure.count_image_reads(_python(code), image)
    assert count.ok, count.error
    assert count.bytes == 1000 + 5000 + 500 + 1000 + 2500 + 7000
    assert not count.blind_spots


@pytest.mark.skipif(not shutil.which("strace"), reason="strace is not installed (./dev bench image installs it)")
def test_strace_names_mmap_as_a_blind_spot(tmp_path: Path) -> None:
    image = tmp_path / "image.bin"
    image.write_bytes(bytes(8192))
    code = f"import mmap; f = open({str(image)!r}, 'rb'); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); m[:10]"
    count = measure.count_image_reads(_python(code), image)
    assert count.ok and count.bytes == 0
    assert len(count.blind_spots) == 1 and count.blind_spots[0].startswith("mmap of the image in ")


# --- page cache ----------------------------------------------------------------------------------------------------


def test_eviction_empties_the_page_cache_for_the_image(tmp_path: Path) -> None:
    image = tmp_path / "image.bin"
    image.write_bytes(os.urandom(4 * 1024 * 1024))
    image.read_bytes()
    before = measure.cached_bytes(image)
    if not before:
        pytest.skip("fincore cannot tell page-cache residency here (tmpfs or no util-linux fincore)")
    assert measure.evict_from_page_cache(image) == "posix_fadvise DONTNEED on the image"
    assert measure.cached_bytes(image) == 0


# --- table ---------------------------------------------------------------------------------------------------------


def _row(tool: str, warm: float | None, peak: float | None, read: int | None, **kw) -> image_suite.ToolResult:
    return image_suite.ToolResult(tool=tool, command=[tool], warm_s=warm, peak_mb=peak, read_bytes=read, **kw)


def test_table_ratios_are_anchor_over_ours() -> None:
    rows = [
        _row("ours", 0.5, 100.0, 50_000_000, cold_s=0.8),
        _row("virt-inspector", 30.0, 1500.0, 200_000_000, cold_s=31.0),
        _row("target-query", None, None, None, status="failed", error="exit 1: Traceback\n  boom"),
    ]
    table = image_suite.format_table("vhdx: disk.vhdx", rows).splitlines()
    assert table[0] == "vhdx: disk.vhdx"
    for column in ("tool", "warm s", "cold s", "peak MB", "read MB", "× time", "× mem", "× read", "status"):
        assert column in table[1]
    assert table[2].split() == ["ours", "0.50", "0.80", "100", "50.0", "1.0", "1.0", "1.0", "ok"]
    assert table[3].split() == ["virt-inspector", "30.00", "31.00", "1500", "200.0", "60.0", "15.0", "4.0", "ok"]
    assert table[4].split()[:8] == ["target-query", "–", "–", "–", "–", "–", "–", "–"]
    status_column = table[1].index("status")
    assert [line.index(" ok") + 1 for line in table[2:4]] + [table[4].index(" failed") + 1] == [status_column] * 3
    assert table[4].endswith("failed: exit 1: Traceback boom")


def test_table_without_a_working_ours_prints_no_ratios() -> None:
    rows = [_row("ours", None, None, None, status="failed"), _row("virt-inspector", 30.0, 1500.0, 10)]
    assert image_suite.format_table("raw", rows).splitlines()[3].split()[5:8] == ["–", "–", "–"]


def test_target_verdict() -> None:
    rows = [_row("ours", 1.5, 250.0, 1), _row("virt-inspector", 30.0, 1500.0, 1), _row("target-query", 9.0, 90.0, 1)]
    assert image_suite.target_verdict(rows) == (
        "targets: 1.50 s < 2 s; 250 MB < 300 MB; 20.0× faster than virt-inspector (≥ 10×); "
        "6.0× faster than target-query (< 10×)"
    )
    assert image_suite.target_verdict([_row("ours", None, None, None, status="failed")]) == (
        "targets: not measured (ours: failed)"
    )


def test_summary_is_the_worst_case_over_formats() -> None:
    per_format = {
        "raw": [
            _row("ours", 1.0, 200.0, 1),
            _row("virt-inspector", 40.0, 800.0, 1),
            _row("target-query", 12.0, 90.0, 1),
        ],
        "vhdx": [
            _row("ours", 1.5, 150.0, 1),
            _row("virt-inspector", 30.0, 800.0, 1),
            _row("target-query", 30.0, 9.0, 1),
        ],
    }
    assert image_suite.summary(per_format) == (
        "summary (every format): ours worst 1.50 s, 200 MB; ≥ 20.0× faster than virt-inspector; "
        "≥ 12.0× faster than target-query"
    )
    per_format["vhd-fixed"] = [_row("ours", None, None, None, status="failed")]
    assert image_suite.summary(per_format) == "summary: ours did not run on every format"


def test_one_shot_rows_say_how_they_were_timed() -> None:
    rows = [
        _row("ours", 1.0, 100.0, 1),
        _row("target-query+walkfs", 1800.0, 400.0, None, note="timed once, no warm-up"),
    ]
    assert image_suite.format_table("raw", rows).splitlines()[3].endswith("ok (timed once, no warm-up)")
