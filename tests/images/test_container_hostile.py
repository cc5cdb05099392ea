"""Issue 9, findings 2-4 for the container reader: only Unreadable escapes (short VHD footers, hostile parent
locator names), parents only from allowed directories without disclosing other host files, and memory
bounded on sparse images whose block allocation tables describe terabytes."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
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
