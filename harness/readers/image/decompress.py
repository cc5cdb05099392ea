"""Decompressors for NTFS data as Windows stores it: LZNT1 (NTFS compression units) and the formats of WOF
system compression (XPRESS Huffman in 4/8/16 KiB chunks, LZX in 32 KiB chunks).

No pure-Python code decodes these: one C call per compression unit or chunk, so memory and time are bounded by
the unit or chunk size the caller asks for.

- LZNT1: libfwnt (PyPI ``libfwnt-python``, LGPL-3.0-or-later, fuzzed by OSS-Fuzz).
- XPRESS and LZX: wimlib's decompressors (``libwim``, Debian ``libwim15``, LGPL-3.0-or-later), called through
  ctypes: WOF's formats are the WIM ones, and wimlib's code is what ntfs-3g's system-compression plugin uses.
  libfwnt's LZX decoder was measured rejecting valid chunks wimlib writes ("unable to build lengths Huffman
  tree", tests/images/test_ntfs_compressed.py keeps such a chunk), so it is not used for WOF.

These functions never return more than ``size`` bytes and raise only :class:`CorruptData` (damaged input, or a
library missing), which the NTFS reader turns into ``Unreadable`` naming the file. Formats: [MS-XCA]
(https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-xca/) for LZNT1 and LZXPRESS Huffman;
https://github.com/ebiggers/ntfs-3g-system-compression for WOF's chunk layout.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable
from types import ModuleType

__all__ = ["CorruptData", "lznt1", "lzx", "xpress_huffman"]

_MAX_UNIT = 1 << 21  # an NTFS compression unit is at most 16 clusters of 64 KiB... allow up to 2 MiB
_MAX_CHUNK = 1 << 15  # WOF chunks: 4, 8, 16 or 32 KiB


class CorruptData(ValueError):
    """Compressed data that does not decompress (the message says why, in libfwnt's words when it spoke)."""


_fwnt: ModuleType | None = None


def _lib() -> ModuleType:
    global _fwnt
    if _fwnt is None:
        try:
            import pyfwnt
        except ImportError:  # pragma: no cover - a broken install; the dependency is required
            raise CorruptData("libfwnt-python is not installed: compressed NTFS data cannot be read") from None
        _fwnt = pyfwnt
    return _fwnt


def _why(exc: BaseException) -> str:
    """libfwnt's message without its function-name prefixes ("pyfwnt_lzx_decompress: unable to …")."""
    text = str(exc).strip()
    last = text.rstrip(".").split(". ")[-1] if text else type(exc).__name__
    return last.split(": ", 1)[-1] or text


def _run(name: str, call: Callable[[bytes, int], bytes], data: bytes, size: int) -> bytes:
    try:
        out = call(bytes(data), size)
    except (OSError, ValueError, TypeError, MemoryError, OverflowError) as exc:
        raise CorruptData(f"{name} data does not decompress ({_why(exc)})") from None
    if not isinstance(out, bytes) or len(out) > size:  # never trust an output bound we did not check
        raise CorruptData(f"{name} data decompresses to more than the {size} bytes expected")
    return out


def lznt1(data: bytes, size: int) -> bytes:
    """One NTFS compression unit (a run of LZNT1 chunks, ending at a zero chunk header or the data's end):
    at most ``size`` bytes. Fewer when the unit ends early; the caller pads with zeros, as NTFS does."""
    if not 0 < size <= _MAX_UNIT:
        raise CorruptData(f"compression unit of {size} bytes is outside 1..{_MAX_UNIT}")
    if not data:
        return b""
    return _run("LZNT1", _lib().lznt1_decompress, data, size)


class _Wimlib:
    """wimlib's decompressors through ctypes: one per (format, chunk size), reused, one call at a time."""

    XPRESS = 1
    LZX = 2

    def __init__(self) -> None:
        self.lib: ctypes.CDLL | None = None
        self.missing = ""
        self.decompressors: dict[tuple[int, int], ctypes.c_void_p] = {}
        self.lock = threading.Lock()

    def _load(self) -> ctypes.CDLL:
        if self.lib is None:
            if self.missing:
                raise CorruptData(self.missing)
            name = ctypes.util.find_library("wim") or "libwim.so.15"
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                self.missing = "wimlib (libwim, Debian package libwim15) is not installed: WOF files cannot be read"
                raise CorruptData(self.missing) from None
            lib.wimlib_create_decompressor.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p]
            lib.wimlib_create_decompressor.restype = ctypes.c_int
            lib.wimlib_decompress.argtypes = [
                ctypes.c_char_p,
                ctypes.c_size_t,
                ctypes.c_void_p,
                ctypes.c_size_t,
                ctypes.c_void_p,
            ]
            lib.wimlib_decompress.restype = ctypes.c_int
            self.lib = lib
        return self.lib

    def decompress(self, ctype: int, max_chunk: int, data: bytes, size: int) -> bytes:
        with self.lock:
            lib = self._load()
            handle = self.decompressors.get((ctype, max_chunk))
            if handle is None:
                handle = ctypes.c_void_p()
                if lib.wimlib_create_decompressor(ctype, max_chunk, ctypes.byref(handle)):
                    raise CorruptData(f"wimlib cannot make a decompressor for {max_chunk}-byte chunks")
                self.decompressors[(ctype, max_chunk)] = handle
            out = ctypes.create_string_buffer(size)
            if lib.wimlib_decompress(bytes(data), len(data), out, size, handle):
                raise CorruptData("data does not decompress (wimlib rejected it)")
            return out.raw


_WIMLIB = _Wimlib()


def xpress_huffman(data: bytes, size: int, chunk: int = 4096) -> bytes:
    """One WOF XPRESS chunk (LZXPRESS Huffman) of a file compressed in ``chunk``-byte chunks: exactly ``size``
    bytes (wimlib fails a chunk that does not fill them), else CorruptData."""
    if not 0 < size <= chunk or chunk not in (4096, 8192, 16384):
        raise CorruptData(f"XPRESS chunk of {size} bytes (of {chunk}) is outside the WOF formats")
    if not data:
        raise CorruptData("XPRESS chunk is empty")
    try:
        return _WIMLIB.decompress(_Wimlib.XPRESS, chunk, data, size)
    except CorruptData as exc:
        raise CorruptData(f"XPRESS Huffman {exc}") from None


def lzx(data: bytes, size: int) -> bytes:
    """One WOF LZX chunk (32 KiB window, WIM variant): exactly ``size`` bytes, else CorruptData."""
    if not 0 < size <= _MAX_CHUNK:
        raise CorruptData(f"LZX chunk of {size} bytes is outside 1..{_MAX_CHUNK}")
    if not data:
        raise CorruptData("LZX chunk is empty")
    try:
        return _WIMLIB.decompress(_Wimlib.LZX, _MAX_CHUNK, data, size)
    except CorruptData as exc:
        raise CorruptData(f"LZX {exc}") from None
