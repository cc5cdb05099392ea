"""Bounded, extraction-free access to untrusted zip archives (the .cspkg and its nested parts).

Nothing here writes to disk. Listings are checked before any member is read (member count, hostile
names, declared sizes, compression ratio), and every read is bounded: ``read(cap + 1)`` and a length
check, never an unbounded ``read()``. zipfile itself stops a member's output at its declared size (and
fails its CRC if the data lies), so checking declared sizes bounds what decompression can produce.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from harness.readers.errors import Unreadable
from harness.readers.xmlsafe import MIB, size_text

GIB = 1024 * MIB


@dataclass(frozen=True)
class Limits:
    """Caps for one zip level. Defaults are far above any real package (the biggest real .cspkg files
    are a few hundred MiB with a few thousand files) and far below what would hurt the host."""

    max_members: int = 10_000
    max_member_size: int = 2 * GIB
    max_total_size: int = 8 * GIB
    #: A member over ``ratio_floor`` bytes that expands more than this is treated as a zip bomb.
    max_ratio: int = 200
    ratio_floor: int = 1 * MIB
    #: Bytes the reader may inflate over a whole package (every level, every read: hashing each part to
    #: its end, opening compressed nested parts, reading XML parts). The per-member ratio check does not
    #: see many members just under its floor (7,000 deflated members of exactly 1 MiB took 26 s of CPU).
    #: Azure refuses packages over 600 MB and real parts are mostly stored zips, so a real package
    #: inflates about its own size; 1 GiB is far above that and costs at most a few seconds.
    max_package_inflated: int = 1 * GIB


DEFAULT_LIMITS = Limits()

# General-purpose flag bits: 0 = traditional encryption, 6 = strong encryption.
_ENCRYPTED_FLAGS = 0x1 | 0x40
_EOCD_SIZE = 22
_DRIVE = re.compile(r"^[A-Za-z]:")
#: Errors zipfile and zlib raise for damaged data.
CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error)


class Skipped(Exception):
    """A member that cannot be read for a reason that is not damage (zip encryption, unknown method)."""


def is_encrypted(info: zipfile.ZipInfo) -> bool:
    return bool(info.flag_bits & _ENCRYPTED_FLAGS)


def name_problem(raw_name: str) -> str | None:
    """Why a member name is hostile, or None. Checked on the name as stored (``orig_filename``) because
    zipfile silently truncates names at a NUL byte."""
    if not raw_name:  # zipfile's is_dir() would raise IndexError (found by fuzzing)
        return "is empty"
    if "\x00" in raw_name:
        return "contains a NUL byte"
    if raw_name.startswith(("/", "\\")):
        return "is an absolute path"
    if _DRIVE.match(raw_name):
        return "has a drive letter"
    if any(segment == ".." for segment in re.split(r"[/\\]", raw_name)):
        return "has a '..' segment (path traversal)"
    return None


def check_listing(infos: list[zipfile.ZipInfo], path: Path, where: str, limits: Limits) -> None:
    """Refuse an archive whose listing alone shows it is hostile. ``where`` names the archive."""
    if len(infos) > limits.max_members:
        raise Unreadable(path, f"{where} has {len(infos)} members, over the {limits.max_members} limit", location=where)
    total = 0
    for info in infos:
        problem = name_problem(info.orig_filename)
        if problem is not None:
            raise Unreadable(path, f"{where}: member name {info.orig_filename!r} {problem}", location=where)
        if info.file_size > limits.max_member_size:
            raise Unreadable(
                path,
                f"{where}: member {info.filename!r} is {size_text(info.file_size)} uncompressed, "
                f"over the {size_text(limits.max_member_size)} limit",
                location=where,
            )
        if info.file_size > limits.ratio_floor and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            ratio = info.file_size // max(info.compress_size, 1)
            raise Unreadable(
                path,
                f"{where}: member {info.filename!r} expands {ratio}:1 "
                f"({size_text(info.compress_size)} to {size_text(info.file_size)}), "
                f"over the {limits.max_ratio}:1 limit: looks like a zip bomb",
                location=where,
            )
        total += info.file_size
    if total > limits.max_total_size:
        raise Unreadable(
            path,
            f"{where} holds {size_text(total)} uncompressed, over the {size_text(limits.max_total_size)} limit",
            location=where,
        )


def end_record_problem(fileobj: IO[bytes]) -> str | None:
    """Why the archive's end-of-central-directory record is not where it must be, or None.

    zipfile takes the *last* end record in the final 64 KiB, wherever it is. A truncated package
    usually still ends inside a stored nested part (a .cssx is a zip), so zipfile would silently read
    that inner zip as if it were the package. The record (plus its comment) must end the file."""
    end = fileobj.seek(0, io.SEEK_END)
    start = max(0, end - (_EOCD_SIZE + 0xFFFF))
    fileobj.seek(start)
    tail = fileobj.read(end - start)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or len(tail) - pos < _EOCD_SIZE:
        return "no end-of-archive record (truncated or not a zip)"
    (comment_len,) = struct.unpack_from("<H", tail, pos + 20)
    if pos + _EOCD_SIZE + comment_len != len(tail):
        return "the end-of-archive record is not at the end of the file (truncated, or data appended)"
    return None


def open_zip(fileobj: IO[bytes], path: Path, where: str) -> zipfile.ZipFile:
    """A ZipFile over ``fileobj`` or Unreadable naming why it is not one."""
    try:
        problem = end_record_problem(fileobj)
        if problem is not None:
            raise Unreadable(path, f"{where} is not a readable zip archive: {problem}", location=where)
        return zipfile.ZipFile(fileobj)
    except zipfile.BadZipFile as exc:
        raise Unreadable(path, f"{where} is not a readable zip archive (truncated or not a zip): {exc}") from None
    except (*CORRUPT, NotImplementedError, RuntimeError) as exc:
        raise Unreadable(path, f"{where} is not a readable zip archive: {type(exc).__name__}: {exc}") from None


def duplicates(infos: Iterable[zipfile.ZipInfo]) -> list[str]:
    seen: set[str] = set()
    dupes: list[str] = []
    for info in infos:
        if info.filename in seen and info.filename not in dupes:
            dupes.append(info.filename)
        seen.add(info.filename)
    return dupes


def read_prefix(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes:
    """At most ``cap`` bytes from the start of a member (no CRC check: the member is not read to its end).
    Raises Skipped for members that cannot be read without a password or unknown codec, and lets the
    CORRUPT errors through for the caller to word."""
    if is_encrypted(info):
        raise Skipped("encrypted with zip encryption")
    try:
        with zf.open(info) as handle:
            return handle.read(cap)
    except NotImplementedError as exc:
        raise Skipped(f"uses an unsupported compression method ({exc})") from None
    except RuntimeError as exc:  # zipfile's "password required" and similar
        raise Skipped(str(exc)) from None


def read_bounded(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes | None:
    """The whole member when it fits in ``cap`` bytes, else None. CRC is checked when read to the end."""
    data = read_prefix(zf, info, cap + 1)
    if len(data) > cap:
        return None
    return data


def sha256_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> str:
    """SHA-256 of a member, streamed in chunks and never more than ``cap`` bytes in all."""
    if is_encrypted(info):
        raise Skipped("encrypted with zip encryption")
    digest = hashlib.sha256()
    left = cap
    try:
        with zf.open(info) as handle:
            while left > 0:
                chunk = handle.read(min(1 * MIB, left))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
    except NotImplementedError as exc:
        raise Skipped(f"uses an unsupported compression method ({exc})") from None
    except RuntimeError as exc:
        raise Skipped(str(exc)) from None
    return digest.hexdigest()


class Window(io.RawIOBase):
    """A read-only view of ``length`` bytes at ``start`` of a seekable file, so a *stored* nested zip
    (every real .cssx) is opened in place instead of being copied into memory or onto disk."""

    def __init__(self, base: IO[bytes], start: int, length: int) -> None:
        super().__init__()
        self._base = base
        self._start = start
        self._length = length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._length + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise OSError("seek before the start of the window")
        self._pos = pos
        return pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._length - self._pos)
        if want <= 0:
            return 0
        # The base file is shared with the outer ZipFile, which also seeks before every read.
        self._base.seek(self._start + self._pos)
        data = self._base.read(want)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def stored_window(base: IO[bytes], info: zipfile.ZipInfo) -> Window | None:
    """A Window over a stored, unencrypted member's bytes, or None when the member is compressed or its
    local header does not add up (then the caller falls back to a bounded in-memory read)."""
    if info.compress_type != zipfile.ZIP_STORED or is_encrypted(info):
        return None
    base.seek(info.header_offset)
    header = base.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    return Window(base, start, info.compress_size)
