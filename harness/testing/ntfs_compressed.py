"""NTFS volumes whose files are stored compressed as Windows stores them, written by real tools.

- **LZNT1** (NTFS compression): ntfs-3g's own compressor. The volume (``mkntfs``) is mounted with ntfs-3g's
  ``compression`` option, the target folder gets FILE_ATTRIBUTE_COMPRESSED (``system.ntfs_attrib_be``) and every
  file copied into it is written in LZNT1 compression units (units that do not shrink are stored as is, runs of
  zeros stay sparse), exactly what ntfs-3g does on a Windows volume.
- **WOF** (system compression, ``compact /exe:…``): wimlib 1.13 refuses ``apply --compact`` outside Windows
  ("Compact-mode extraction … is only supported on Windows"), so the WOF layout is written through ntfs-3g's
  Windows interfaces instead: the ``WofCompressedData`` named stream (``streams_interface=windows``) holds the
  chunk offset table and the chunks compressed by wimlib's own XPRESS / LZX compressors (libwim, the code
  wimlib uses for WIM resources, whose formats WOF shares), the unnamed stream is made sparse with the file's
  size, and the reparse point (IO_REPARSE_TAG_WOF, WOF_PROVIDER_FILE, the format) is set with
  ``system.ntfs_reparse_data``.

Both need a FUSE mount (root and ``/dev/fuse``): :func:`unavailable` says why when they cannot run here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

__all__ = [
    "WOF_FORMATS",
    "build_efs_volume",
    "build_lznt1_volume",
    "build_tree_volume",
    "build_wof_stream_volume",
    "build_wof_volume",
    "unavailable",
    "wof_stream",
]

#: WOF compression format number → (name, chunk size): FILE_PROVIDER_EXTERNAL_INFO_V1.Algorithm
WOF_FORMATS = {"xpress4k": (0, 4096), "lzx": (1, 32768), "xpress8k": (2, 8192), "xpress16k": (3, 16384)}
_WIMLIB_XPRESS = 1
_WIMLIB_LZX = 2
_IO_REPARSE_TAG_WOF = 0x80000017
_FILE_ATTRIBUTE_COMPRESSED = 0x800


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/sbin", "/usr/bin"):
        if Path(folder, name).exists():
            return str(Path(folder, name))
    return None


def unavailable() -> str | None:
    """Why these volumes cannot be built here, or None."""
    for tool in ("mkntfs", "ntfs-3g", "fusermount"):
        if _tool(tool) is None and not (tool == "fusermount" and _tool("umount")):
            return f"{tool} is not installed"
    if os.geteuid() != 0:
        return "ntfs-3g FUSE mounts need root here"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (no FUSE)"
    if _libwim() is None:
        return "libwim (wimlib) is not installed"
    return None


_LIBWIM: ctypes.CDLL | None = None


def _libwim() -> ctypes.CDLL | None:
    global _LIBWIM
    if _LIBWIM is None:
        name = ctypes.util.find_library("wim") or "libwim.so.15"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            return None
        lib.wimlib_compress.restype = ctypes.c_size_t
        lib.wimlib_compress.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
        ]
        lib.wimlib_create_compressor.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_uint, ctypes.c_void_p]
        lib.wimlib_free_compressor.argtypes = [ctypes.c_void_p]
        _LIBWIM = lib
    return _LIBWIM


def wof_stream(data: bytes, fmt: str) -> bytes:
    """The ``WofCompressedData`` stream of ``data`` in WOF format ``fmt``: chunk offset table (4-byte entries,
    8-byte over 4 GiB, relative to the table's end, none for the first chunk) then the chunks, each compressed
    by wimlib or stored as is when compression does not make it smaller."""
    lib = _libwim()
    if lib is None:
        raise RuntimeError("libwim (wimlib) is not installed")
    _number, chunk = WOF_FORMATS[fmt]
    ctype = _WIMLIB_LZX if fmt == "lzx" else _WIMLIB_XPRESS
    compressor = ctypes.c_void_p()
    if lib.wimlib_create_compressor(ctype, chunk, 0, ctypes.byref(compressor)):
        raise RuntimeError(f"wimlib_create_compressor({fmt}) failed")
    try:
        chunks = []
        out = ctypes.create_string_buffer(chunk)
        for start in range(0, len(data), chunk):
            piece = data[start : start + chunk]
            n = lib.wimlib_compress(piece, len(piece), out, len(piece) - 1, compressor) if len(piece) > 1 else 0
            chunks.append(out.raw[:n] if n else piece)
    finally:
        lib.wimlib_free_compressor(compressor)
    entry = "<Q" if len(data) > 0xFFFFFFFF else "<I"
    table = b""
    offset = 0
    for piece in chunks[:-1]:
        offset += len(piece)
        table += struct.pack(entry, offset)
    return table + b"".join(chunks)


def _wof_reparse(fmt: str) -> bytes:
    number, _chunk = WOF_FORMATS[fmt]
    body = struct.pack("<IIII", 1, 2, 1, number)  # WOF_EXTERNAL_INFO (v1, file provider), FILE_PROVIDER v1
    return struct.pack("<IHH", _IO_REPARSE_TAG_WOF, len(body), 0) + body


def _run(*args: str | Path) -> None:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")


def _mkntfs(volume: Path, size: int, cluster: int, *extra: str) -> None:
    volume.unlink(missing_ok=True)
    with volume.open("wb") as fh:
        fh.truncate(size)
    _run(_tool("mkntfs") or "mkntfs", "-F", "-Q", "-q", "-s", "512", "-c", str(cluster), *extra, volume)


@contextmanager
def _mounted(volume: Path, *options: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vmr-ntfs-") as tmp:
        point = Path(tmp)
        opts = ",".join(("streams_interface=windows", *options))
        _run(_tool("ntfs-3g") or "ntfs-3g", "-o", opts, volume, point)
        try:
            yield point
        finally:
            fusermount = _tool("fusermount")
            if fusermount:
                _run(fusermount, "-u", point)
            else:
                _run(_tool("umount") or "umount", point)


def _write_wof(target: Path, data: bytes, fmt: str) -> None:
    """``target`` as ``compact /exe:FMT`` leaves it: WofCompressedData, sparse unnamed stream, reparse point."""
    _write_wof_stream(target, len(data), wof_stream(data, fmt), fmt)


def _write_wof_stream(target: Path, size: int, stream: bytes, fmt: str) -> None:
    target.write_bytes(b"")
    Path(f"{target}:WofCompressedData").write_bytes(stream)
    os.truncate(target, size)  # sparse: ntfs-3g allocates nothing for the extension
    os.setxattr(target, "system.ntfs_reparse_data", _wof_reparse(fmt))


def build_wof_stream_volume(volume: Path, size: int, name: str, file_size: int, stream: bytes, fmt: str) -> Path:
    """A raw NTFS volume holding one WOF file ``name`` of ``file_size`` bytes whose ``WofCompressedData`` is
    ``stream`` as given (a caller-built chunk table: files over 4 GiB, hand-made damage)."""
    _mkntfs(volume, size, 4096)
    with _mounted(volume) as root:
        _write_wof_stream(root / name, file_size, stream, fmt)
    return volume


def _mark_compressed(path: Path) -> None:
    (attrs,) = struct.unpack(">I", os.getxattr(path, "system.ntfs_attrib_be"))
    os.setxattr(path, "system.ntfs_attrib_be", struct.pack(">I", attrs | _FILE_ATTRIBUTE_COMPRESSED))


def build_lznt1_volume(files: Mapping[str, bytes], volume: Path, size: int, *, cluster: int = 4096) -> Path:
    """A raw NTFS volume whose files (relative ``/`` paths → contents) are all LZNT1-compressed by ntfs-3g:
    every folder, the root included, carries the compressed attribute, so new files inherit it."""
    _mkntfs(volume, size, cluster)
    with _mounted(volume, "compression") as root:
        _mark_compressed(root)
        for rel, data in sorted(files.items()):
            target = root / rel
            for parent in reversed(target.relative_to(root).parents):
                folder = root / parent
                if not folder.exists():
                    folder.mkdir()
                    _mark_compressed(folder)
            target.write_bytes(data)
    return volume


def build_wof_volume(
    files: Mapping[str, bytes], volume: Path, size: int, *, fmt: str | Mapping[str, str] = "xpress4k"
) -> Path:
    """A raw NTFS volume whose files are WOF-compressed (``fmt``: one format, or per file path) the way
    ``compact /exe:FORMAT`` leaves them: sparse unnamed stream of the real size, ``WofCompressedData``,
    reparse point. A file of 0 bytes is written plain (Windows does not compact empty files)."""
    _mkntfs(volume, size, 4096)
    with _mounted(volume) as root:
        for rel, data in sorted(files.items()):
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"")
            if not data:
                continue
            _write_wof(target, data, fmt if isinstance(fmt, str) else fmt[rel])
    return volume


def build_tree_volume(
    tree: Path,
    volume: Path,
    size: int,
    *,
    lznt1_dirs: Callable[[str], bool],
    wof_formats: tuple[str, ...] = ("xpress4k", "xpress8k", "xpress16k", "lzx"),
    mkntfs_args: tuple[str, ...] = (),
) -> dict[str, int]:
    """A raw NTFS volume holding ``tree`` with every non-empty file compressed: files in the folders
    ``lznt1_dirs`` picks (relative ``/`` paths, "" for the root) in LZNT1 compression units, every other file
    WOF-compressed, cycling through ``wof_formats``. Hard links become copies; empty files stay plain. Returns
    counts by kind (``lznt1``, and one per WOF format, ``empty``, ``folders``)."""
    _mkntfs(volume, size, 4096, *mkntfs_args)
    counts = {"lznt1": 0, "empty": 0, "folders": 0, **dict.fromkeys(wof_formats, 0)}
    n = 0
    with _mounted(volume, "compression") as root:
        for folder, subdirs, names in os.walk(tree):
            subdirs.sort()
            rel_dir = Path(folder).relative_to(tree).as_posix()
            rel_dir = "" if rel_dir == "." else rel_dir
            dest = root / rel_dir
            if rel_dir:
                dest.mkdir()
                counts["folders"] += 1
            lznt1 = lznt1_dirs(rel_dir)
            if lznt1:
                _mark_compressed(dest)
            for name in sorted(names):
                data = Path(folder, name).read_bytes()
                target = dest / name
                if not data:
                    target.write_bytes(b"")
                    counts["empty"] += 1
                elif lznt1:
                    target.write_bytes(data)
                    counts["lznt1"] += 1
                else:
                    fmt = wof_formats[n % len(wof_formats)]
                    n += 1
                    _write_wof(target, data, fmt)
                    counts[fmt] += 1
    return counts


def build_efs_volume(files: Mapping[str, bytes], volume: Path, size: int, *, encrypted: set[str]) -> Path:
    """A raw NTFS volume whose ``encrypted`` files carry an EFS ``$LOGGED_UTILITY_STREAM`` named ``$EFS``,
    written by ntfs-3g (``efs_raw`` mount, ``system.ntfs_efsinfo``: the backup/restore interface for EFS
    metadata). The header given is a bare one: ntfs-3g stores it, then reports ENOENT when it goes on to
    mark the file encrypted, which is ignored; callers check the attribute is there."""
    _mkntfs(volume, size, 4096)
    with _mounted(volume, "efs_raw") as root:
        for rel, data in sorted(files.items()):
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            if rel in encrypted:
                header = bytearray(0x60)
                struct.pack_into("<II", header, 0, len(header), 0)
                struct.pack_into("<I", header, 8, 2)  # EFS metadata version 2
                with suppress(OSError):
                    os.setxattr(target, "system.ntfs_efsinfo", bytes(header))
    return volume
