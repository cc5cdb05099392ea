"""Issue 9, findings 2-4 for the container reader: only Unreadable escapes (short VHD footers, hostile parent
locator names), parents only from allowed directories without disclosing other host files, and memory
bounded on sparse images whose block allocation tables describe terabytes."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.readers.errors import Unreadable
from harness.readers.image.container import open_disk
from harness.testing.vhdwriter import write_differencing_vhd

MIB = 1024 * 1024


@pytest.fixture
def base_vhd(tmp_path: Path) -> Path:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    base = tmp_path / "base.vhd"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed,force_size=on", str(base), "4M"],
        check=True,
        capture_output=True,
    )
    return base


def _unreadable(path: Path, *words: str, **kw: object) -> Unreadable:
    try:
        with open_disk(path, **kw):  # type: ignore[arg-type]
            pass
    except Unreadable as exc:
        for word in words:
            assert word in exc.problem, (word, exc.problem)
        return exc
    except Exception as exc:  # the failure under test: anything but Unreadable escaping
        pytest.fail(f"{type(exc).__name__} escaped the container reader: {exc}")
    pytest.fail(f"{path.name} opened")


# ---------------------------------------------------------------------------------------------
# Finding 2: exceptions outside the contract


@pytest.mark.parametrize("size", [8, 9, 100, 511])
@pytest.mark.parametrize("suffix", [".vhd", ".img"])
def test_file_shorter_than_a_vhd_footer_starting_with_conectix(tmp_path: Path, size: int, suffix: str) -> None:
    path = tmp_path / f"short{suffix}"
    path.write_bytes((b"conectix" + b"\x00\x00\x00\x02" * 200)[:size])
    _unreadable(path, "too short", "512")


def _child_with_locator(base: Path, child: Path, target: str) -> Path:
    write_differencing_vhd(
        base, child, locator="absolute", absolute_path_override=target, header_parent_name=Path(target).name[:200]
    )
    return child


@pytest.mark.parametrize(
    "make_target",
    [
        pytest.param(lambda d: str(d / ("a" * 300 + ".vhd")), id="ENAMETOOLONG-component"),
        pytest.param(lambda d: str(d / "/".join(["b" * 200] * 25)) + ".vhd", id="ENAMETOOLONG-path"),
        pytest.param(lambda d: str(d / "loop.vhd"), id="ELOOP"),
        pytest.param(lambda d: str(d / "dir.vhd"), id="EISDIR"),
        pytest.param(lambda d: str(d / "file.vhd" / "x.vhd"), id="ENOTDIR"),
        pytest.param(lambda d: "/dev/zero", id="device"),
        pytest.param(lambda d: str(d / "fifo.vhd"), id="fifo"),
    ],
)
def test_hostile_parent_locator_names_give_unreadable(base_vhd: Path, tmp_path: Path, make_target) -> None:
    os.symlink("loop.vhd", tmp_path / "loop.vhd")
    (tmp_path / "dir.vhd").mkdir()
    (tmp_path / "file.vhd").write_bytes(b"x")
    os.mkfifo(tmp_path / "fifo.vhd")
    target = make_target(tmp_path)
    child = _child_with_locator(base_vhd, tmp_path / "child.vhd", target)
    _unreadable(child, "parent")


def test_parent_candidate_raising_oserror_is_unreadable(base_vhd: Path, tmp_path: Path, monkeypatch) -> None:
    """Errors from path operations the reader cannot provoke portably (EACCES as root, EIO): injected."""
    child = _child_with_locator(base_vhd, tmp_path / "child.vhd", str(tmp_path / "p.vhd"))
    real_stat = os.stat

    def failing_stat(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).endswith("p.vhd"):
            raise OSError(errno.EACCES, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", failing_stat)
    _unreadable(child, "parent")


def _set_locator(child: Path, index: int, code: bytes, payload: bytes) -> None:
    """Rewrite parent locator ``index`` of ``child`` in place (code and payload), keeping checksums valid."""
    from harness.testing.vhdwriter import vhd_checksum

    data = bytearray(child.read_bytes())
    header_off = int.from_bytes(data[-512 + 16 : -512 + 24], "big")
    entry = header_off + 576 + 24 * index
    offset = int.from_bytes(data[entry + 16 : entry + 24], "big")
    space = int.from_bytes(data[entry + 4 : entry + 8], "big")
    assert len(payload) <= max(space, 512)
    data[offset : offset + len(payload)] = payload
    data[entry : entry + 4] = code
    data[entry + 8 : entry + 12] = len(payload).to_bytes(4, "big")
    header = bytearray(data[header_off : header_off + 1024])
    header[36:40] = b"\x00" * 4
    header[36:40] = vhd_checksum(header, 36).to_bytes(4, "big")
    data[header_off : header_off + 1024] = header
    child.write_bytes(data)


@pytest.mark.parametrize("url", [b"file://[x/p.vhd", b"http://[::1/p.vhd", b"file://h:99999999999/p.vhd"])
def test_macx_locator_that_urlparse_rejects_is_a_note_not_a_crash(base_vhd: Path, tmp_path: Path, url) -> None:
    child = _child_with_locator(base_vhd, tmp_path / "child.vhd", str(tmp_path / "gone.vhd"))
    _set_locator(child, 0, b"MacX", url)
    _unreadable(child, "parent")


# ---------------------------------------------------------------------------------------------
# Finding 4: memory bounded on sparse images with huge block allocation tables

#: Peak RSS allowed for opening the container and reading the partition table. The interpreter and the
#: readers take ~25 MB; loading a 128 MiB BAT whole (the old reader) took > 270 MB.
RSS_BOUND_MB = 100

_MEASURE = """
import resource, sys
from harness.readers.errors import Unreadable
from harness.readers.image.container import open_disk
from harness.readers.image.partitions import read_partitions
try:
    with open_disk(sys.argv[1]) as disk:
        assert disk.size == int(sys.argv[2]), disk.size
        try:
            read_partitions(disk)
        except Unreadable:
            pass
        disk.read_at(disk.size - 3 * 1024 * 1024, 2 * 1024 * 1024)  # a block near the end
except Unreadable as exc:
    print("UNREADABLE", exc)
# VmHWM: the peak of this process image only. ru_maxrss would also count the pytest process this child was
# forked from (Linux keeps the high-water mark across exec).
try:
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("MAXRSS_KB", peak)
"""


def _peak_rss_mb(path: Path, virtual_size: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), str(virtual_size)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    assert "UNREADABLE" not in out, out
    return int(out.split("MAXRSS_KB", 1)[1]) / 1024


def _sparse_vhdx(tmp_path: Path, virtual_size: int) -> Path:
    """A dynamic VHDX made by qemu-img (1 MiB blocks), then grown to ``virtual_size``: the BAT region is
    moved to the end of the file and made as long as the disk needs, as a hole (entries 0: not present)."""
    import uuid

    from harness.readers.image.container import crc32c

    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    path = tmp_path / "sparse.vhdx"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M", str(path), "1G"],
        check=True,
        capture_output=True,
    )
    data = bytearray(path.read_bytes())
    bat_guid = uuid.UUID("2dc27766-f623-4200-9d64-115e9bfd4a08").bytes_le
    size_guid = uuid.UUID("2fa54224-cd1b-4876-b211-5dbed83bf4b8").bytes_le
    blocks = virtual_size // MIB
    chunk_ratio = (1 << 23) * 512 // MIB
    bat_len = -(-8 * (blocks + blocks // chunk_ratio + 1) // MIB) * MIB
    bat_off = -(-len(data) // MIB) * MIB
    meta_off = None
    for table in (192 * 1024, 256 * 1024):
        count = int.from_bytes(data[table + 8 : table + 12], "little")
        for i in range(count):
            e = table + 16 + 32 * i
            if data[e : e + 16] == bat_guid:
                data[e + 16 : e + 24] = bat_off.to_bytes(8, "little")
                data[e + 24 : e + 28] = bat_len.to_bytes(4, "little")
            elif meta_off is None:
                meta_off = int.from_bytes(data[e + 16 : e + 24], "little")
        data[table + 4 : table + 8] = b"\x00" * 4
        data[table + 4 : table + 8] = crc32c(bytes(data[table : table + 64 * 1024])).to_bytes(4, "little")
    assert meta_off is not None
    count = int.from_bytes(data[meta_off + 10 : meta_off + 12], "little")
    for i in range(count):
        e = meta_off + 32 + 32 * i
        if data[e : e + 16] == size_guid:
            item = meta_off + int.from_bytes(data[e + 16 : e + 20], "little")
            data[item : item + 8] = virtual_size.to_bytes(8, "little")
    with open(path, "wb") as f:
        f.write(data)
        f.truncate(bat_off + bat_len)
    return path


def _sparse_dynamic_vhd(tmp_path: Path, virtual_size: int, block_size: int) -> Path:
    """A dynamic VHD whose BAT (one entry per ``block_size``) is a hole in a sparse file."""
    from harness.testing.vhdwriter import vhd_checksum

    entries = -(-virtual_size // block_size)
    table_off = 1536
    bat_len = -(-4 * entries // 512) * 512
    footer = bytearray(512)
    footer[0:8] = b"conectix"
    footer[8:12] = (2).to_bytes(4, "big")
    footer[12:16] = (0x00010000).to_bytes(4, "big")
    footer[16:24] = (512).to_bytes(8, "big")
    footer[28:32] = b"test"
    footer[40:48] = virtual_size.to_bytes(8, "big")
    footer[48:56] = virtual_size.to_bytes(8, "big")
    footer[60:64] = (3).to_bytes(4, "big")
    footer[64:68] = vhd_checksum(footer, 64).to_bytes(4, "big")
    header = bytearray(1024)
    header[0:8] = b"cxsparse"
    header[8:16] = b"\xff" * 8
    header[16:24] = table_off.to_bytes(8, "big")
    header[24:28] = (0x00010000).to_bytes(4, "big")
    header[28:32] = entries.to_bytes(4, "big")
    header[32:36] = block_size.to_bytes(4, "big")
    header[36:40] = vhd_checksum(header, 36).to_bytes(4, "big")
    path = tmp_path / "sparse.vhd"
    with open(path, "wb") as f:
        f.write(footer + header)
        f.seek(table_off + bat_len)
        f.write(footer)
    return path


def test_sparse_vhdx_with_a_huge_bat_reads_in_bounded_memory(tmp_path: Path) -> None:
    size = 16 * 1024**4  # 16 TiB of 1 MiB blocks: a 128 MiB BAT in a sparse file of ~2 MB on disk
    path = _sparse_vhdx(tmp_path, size)
    assert os.stat(path).st_blocks * 512 < 16 * MIB
    with open_disk(path) as disk:
        assert disk.info.format == "vhdx" and disk.size == size
        assert disk.read_at(size - 4096, 4096) == bytes(4096)
    rss = _peak_rss_mb(path, size)
    assert rss < RSS_BOUND_MB, f"peak RSS {rss:.0f} MB reading a sparse 16 TiB VHDX"


def test_sparse_dynamic_vhd_with_a_huge_bat_reads_in_bounded_memory(tmp_path: Path) -> None:
    size = 2 * 1024**4 - 8 * 1024**3  # 2040 GiB, the VHD maximum, in 64 KiB blocks: a 128 MiB BAT
    path = _sparse_dynamic_vhd(tmp_path, size, 64 * 1024)
    assert os.stat(path).st_blocks * 512 < 16 * MIB
    with open_disk(path) as disk:
        assert disk.info.disk_type == "dynamic" and disk.size == size
    rss = _peak_rss_mb(path, size)
    assert rss < RSS_BOUND_MB, f"peak RSS {rss:.0f} MB reading a sparse 2 TiB dynamic VHD"


# ---------------------------------------------------------------------------------------------
# Finding 3: parents only from the child's own directory or an allowed one, never disclosing other files

OUTSIDE = "not opened: outside the allowed directories"


def _tried(err: Unreadable, path: Path | str, source: str, refusal: str) -> None:
    """The problem lists ``path`` as tried (from ``source``, perhaps among other sources) with ``refusal``."""
    pattern = re.escape(str(path)) + r" \([^)]*" + re.escape(source) + r"[^)]*\) \[" + re.escape(refusal)
    assert re.search(pattern, err.problem), err.problem


@pytest.fixture
def layout(base_vhd: Path, tmp_path: Path) -> dict[str, Path]:
    """child/ holds the children; elsewhere/ a valid parent VHD outside the child's directory."""
    child_dir, elsewhere = tmp_path / "child", tmp_path / "elsewhere"
    child_dir.mkdir()
    elsewhere.mkdir()
    parent = elsewhere / "parent.vhd"
    shutil.copyfile(base_vhd, parent)
    return {"child_dir": child_dir, "elsewhere": elsewhere, "parent": parent}


@pytest.fixture
def opened_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path the process stats, lstats or opens while the test runs."""
    seen: list[str] = []
    for name in ("open", "stat", "lstat"):
        real = getattr(os, name)

        def spy(path, *args, _real=real, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path))
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(os, name, spy)
    return seen


@pytest.mark.parametrize("target", ["/etc/passwd", "/etc/no-such-file-here", "/etc/shadow.vhd", "/etc"])
def test_locator_naming_a_host_file_is_refused_unopened_and_undisclosed(
    base_vhd: Path, tmp_path: Path, opened_paths: list[str], target: str
) -> None:
    child = tmp_path / "child.vhd"
    write_differencing_vhd(base_vhd, child, locator="absolute", absolute_path_override=target, header_parent_name="x")
    opened_paths.clear()
    err = _unreadable(child, "parent")
    _tried(err, target, "absolute locator", OUTSIDE)
    assert not [p for p in opened_paths if p.startswith("/etc")], opened_paths
    # The same sentence whatever the host file is (present, absent, a directory): no size, existence or type.
    other = target.replace("/etc", "/no-such-dir-zz", 1)
    assert err.problem.replace(target, "T") == _problem_for(base_vhd, tmp_path, other).replace(other, "T")


def _problem_for(base_vhd: Path, tmp_path: Path, target: str) -> str:
    other = tmp_path / "other.vhd"
    write_differencing_vhd(base_vhd, other, locator="absolute", absolute_path_override=target, header_parent_name="x")
    problem = _unreadable(other).problem
    return problem.replace(str(tmp_path / "other.vhd"), str(tmp_path / "child.vhd"))


def test_absolute_locator_to_a_vhd_elsewhere_needs_an_allowed_directory(layout: dict[str, Path]) -> None:
    child = write_differencing_vhd(layout["parent"], layout["child_dir"] / "child.vhd", locator="absolute")
    _tried(_unreadable(child, "--vmr-image-parent-dir"), layout["parent"], "absolute locator", OUTSIDE)
    with open_disk(child, parent_dirs=[layout["elsewhere"]]) as disk:
        assert disk.info.parent_chain == (str(layout["parent"]),)
    with open_disk(child, parent_dirs=[str(layout["elsewhere"].parent)]) as disk:  # a directory above it
        assert disk.info.parent_chain == (str(layout["parent"]),)


def test_relative_locator_climbing_out_of_the_child_directory_is_refused(layout: dict[str, Path]) -> None:
    child = write_differencing_vhd(layout["parent"], layout["child_dir"] / "child.vhd", locator="relative")
    _tried(_unreadable(child), layout["parent"], "relative locator", OUTSIDE)
    with open_disk(child, parent_dirs=[layout["elsewhere"]]) as disk:
        assert disk.info.disk_type == "differencing"


def test_parent_next_to_the_child_is_opened(layout: dict[str, Path]) -> None:
    parent = layout["child_dir"] / "base.vhd"
    shutil.copyfile(layout["parent"], parent)
    child = write_differencing_vhd(parent, layout["child_dir"] / "child.vhd", locator="both")
    with open_disk(child) as disk:
        assert disk.info.parent_chain == (str(parent),)


def test_symlink_next_to_the_child_pointing_outside_is_refused(layout: dict[str, Path]) -> None:
    link = layout["child_dir"] / "base.vhd"
    os.symlink(layout["parent"], link)
    child = write_differencing_vhd(link, layout["child_dir"] / "child.vhd", locator="relative")
    _tried(_unreadable(child), link, "relative locator", OUTSIDE)
    with open_disk(child, parent_dirs=[layout["elsewhere"]]) as disk:
        assert disk.info.disk_type == "differencing"


def test_parent_must_be_named_like_a_vhd(layout: dict[str, Path]) -> None:
    parent = layout["child_dir"] / "base.img"
    shutil.copyfile(layout["parent"], parent)
    child = write_differencing_vhd(parent, layout["child_dir"] / "child.vhd", locator="relative")
    _tried(_unreadable(child), parent, "relative locator", "not opened: not a .vhd or .vhdx file name")


def test_parent_must_be_a_vhd_by_its_bytes(layout: dict[str, Path]) -> None:
    parent = layout["child_dir"] / "base.vhd"
    shutil.copyfile(layout["parent"], parent)
    child = write_differencing_vhd(parent, layout["child_dir"] / "child.vhd", locator="relative")
    parent.write_bytes(b"\x00" * 8192)  # now raw bytes under a .vhd name
    _tried(_unreadable(child), parent, "relative locator", "not opened: not a VHD or VHDX file")
