"""Byte sources: the one interface every image reader reads through.

A reader never holds a whole disk in memory and never trusts a length from the file: it asks a
``ByteSource`` for ``(offset, length)`` and gets at most what exists. Sources stack (file → container →
partition slice), each clipping to its own size, so a bad offset deep in NTFS can never reach past the
partition, the virtual disk or the file.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from harness.readers.errors import Unreadable


@runtime_checkable
class ByteSource(Protocol):
    """Random-access bytes. ``read_at`` returns exactly ``min(length, size - offset)`` bytes (``b""`` at or
    after the end); a negative offset or length raises Unreadable."""

    size: int
    label: str

    def read_at(self, offset: int, length: int) -> bytes: ...


def prefetch(source: object, ranges: Iterable[tuple[int, int]]) -> None:
    """Tell ``source`` which ``(offset, length)`` ranges a reader is about to read, in the order it will read
    them (the NTFS reader announces the ``$MFT``'s data runs). Advisory only: a source that fetches over a
    network (a blob) coalesces them into few requests; a local file ignores them; sources that stack (a slice,
    a virtual disk) translate them to their parent's offsets. Never raises for the hint itself (a bad range is
    reported by the read that follows) and fetches no data; a differencing disk may read the sector bitmaps it
    needs to map the ranges, as the reads would."""
    hint = getattr(source, "prefetch", None)
    if callable(hint):
        hint(ranges)


def clip_hints(size: int, ranges: Iterable[tuple[int, int]]) -> Iterable[tuple[int, int]]:
    """The hinted ``(offset, length)`` ranges (:func:`prefetch`) that overlap ``[0, size)``, clipped to it; the
    others (negative, empty, past the end) are left out, never an error."""
    for offset, length in ranges:
        n = min(length, size - offset) if offset >= 0 else 0
        if n > 0:
            yield offset, n


def clip(source: ByteSource, offset: int, length: int) -> int:
    """How many bytes a read may return; Unreadable for a negative offset or length (a reader bug or a
    corrupt structure, reported rather than wrapped around like a Python slice would)."""
    if offset < 0 or length < 0:
        raise Unreadable(source.label, f"invalid read (offset {offset}, length {length})")
    return max(0, min(length, source.size - offset))


class FileSource:
    """A file opened read-only, read with ``os.pread`` (no shared file position, no buffering surprises).

    Counts bytes returned per source (``bytes_read``) and per process (``FileSource.total_bytes_read``) so a
    benchmark can tell how much of an image a check really touched.
    """

    total_bytes_read: ClassVar[int] = 0

    def __init__(self, path: Path | str, label: str | None = None) -> None:
        self.path = Path(path)
        self.label = label if label is not None else self.path.name
        self.bytes_read = 0
        try:
            self._fd: int | None = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            raise Unreadable(self.path, f"cannot open: {exc.strerror or exc}") from None
        try:
            st = os.fstat(self._fd)
        except OSError as exc:  # pragma: no cover - fstat on an open fd does not fail in practice
            os.close(self._fd)
            raise Unreadable(self.path, f"cannot stat: {exc.strerror or exc}") from None
        if not _is_regular(st.st_mode):
            os.close(self._fd)
            self._fd = None
            raise Unreadable(self.path, "not a regular file")
        self.size: int = st.st_size
        #: (device, inode): the file's identity, for cycle checks that see through links and ``..``.
        self.identity: tuple[int, int] = (st.st_dev, st.st_ino)

    def read_at(self, offset: int, length: int) -> bytes:
        n = clip(self, offset, length)
        if n == 0:
            return b""
        fd = self._fd
        if fd is None:
            raise Unreadable(self.path, "read after close")
        try:
            data = os.pread(fd, n, offset)
            if len(data) < n:  # pread may return short on some filesystems: finish the read
                parts = [data]
                got = len(data)
                while got < n:
                    more = os.pread(fd, n - got, offset + got)
                    if not more:
                        raise Unreadable(
                            self.path, f"file shrank while reading (wanted {n} bytes at {offset:#x}, got {got})"
                        )
                    parts.append(more)
                    got += len(more)
                data = b"".join(parts)
        except OSError as exc:
            raise Unreadable(self.path, f"read error at offset {offset:#x}: {exc.strerror or exc}") from None
        self.bytes_read += n
        FileSource.total_bytes_read += n
        return data

    def prefetch(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Local reads need no hints (the page cache reads ahead): see :func:`prefetch`."""

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A forgotten close must not leak descriptors across thousands of test reads.
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __repr__(self) -> str:
        return f"FileSource({str(self.path)!r}, size={self.size})"


def open_file(path: Path | str) -> FileSource:
    """``FileSource(path)``, except for the placeholder of a blob image registered in this process
    (:mod:`harness.readers.image.blob`): then the blob's range-reading source. Nothing is decided by the file's
    content, so no file on disk makes the readers contact a URL."""
    from harness.readers.image import blob

    found = blob.open_registered(path)
    return found if found is not None else FileSource(path)


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


class SliceSource:
    """A window ``[start, start + size)`` of another source: a partition inside a disk, a file's bytes."""

    def __init__(self, parent: ByteSource, start: int, size: int, label: str) -> None:
        if start < 0 or size < 0 or start + size > parent.size:
            raise Unreadable(
                parent.label,
                f"{label}: range {start:#x}+{size:#x} lies outside {parent.label} (size {parent.size:#x})",
            )
        self.parent = parent
        self.start = start
        self.size = size
        self.label = label

    def read_at(self, offset: int, length: int) -> bytes:
        n = clip(self, offset, length)
        if n == 0:
            return b""
        data = self.parent.read_at(self.start + offset, n)
        if len(data) != n:
            raise Unreadable(self.label, f"short read from {self.parent.label} at {self.start + offset:#x}")
        return data

    def prefetch(self, ranges: Iterable[tuple[int, int]]) -> None:
        shifted = [(self.start + offset, n) for offset, n in clip_hints(self.size, ranges)]
        if shifted:
            prefetch(self.parent, shifted)

    def __repr__(self) -> str:
        return f"SliceSource({self.label!r}, start={self.start:#x}, size={self.size:#x})"


class ByteSourceIO(io.RawIOBase):
    """A ByteSource as a seekable, read-only binary file object (for libraries that want one, such as
    libfsntfs in the cross-check tests). Unreadable from the source propagates unchanged; a C library
    reading through this object will usually turn it into its own I/O error."""

    def __init__(self, source: ByteSource) -> None:
        super().__init__()
        self._source = source
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("I/O operation on closed file")
        view = memoryview(buffer).cast("B")
        data = self._source.read_at(self._pos, len(view))
        n = len(data)
        view[:n] = data
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._source.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def get_size(self) -> int:
        """libyal's Python file-object bridge asks for this when present."""
        return self._source.size

    @property
    def name(self) -> str:
        return self._source.label
