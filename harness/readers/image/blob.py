"""Images in Azure blob storage, read in place: a ByteSource over ranged ``Get Blob`` requests.

Linting an image reads a small part of it (the partition table, the NTFS ``$MFT``, the hives, the first bytes of
some files: about 250 MB of an 888 MiB image with 200,000 files). ``BlobSource`` fetches just those parts:

- **aligned, coalesced ranges**: a read is widened to whole blocks (:data:`BLOCK`, 128 KiB); the blocks not cached
  are fetched in as few requests as the read needs (one per run of adjacent missing blocks);
- **read-ahead**: a read that continues the previous one (the ``$MFT`` pass, which NTFS reads in 1 MiB pieces, in
  as many extents as the volume gave it) grows a read-ahead window up to :data:`MAX_READ_AHEAD` (1 MiB);
- **a bounded cache**: least recently used blocks, at most ``cache_bytes`` (default 64 MiB);
- **retries**: connection errors, timeouts, 408, 429 and 5xx answers are retried (:data:`ATTEMPTS` attempts,
  exponential backoff, ``Retry-After`` honoured up to :data:`MAX_BACKOFF`); every request has a connect and a
  read timeout, so a stalled server is an Unreadable in bounded time;
- **one version of the blob**: ``Get Blob Properties`` gives the size, type and ETag; every ``Get Blob`` carries
  ``If-Match: <that ETag>``, so a blob rewritten while it is read is reported (412), never mixed.
- **access hints**: a reader may announce the ranges it is about to read (:meth:`BlobSource.prefetch`; the NTFS
  reader announces the ``$MFT``'s runs): those are fetched exactly, a window at a time, in parallel requests, so
  a ``$MFT`` in thousands of scattered runs costs its own bytes, not a block per run;
- **page lists**: a page blob's ``Get Page Ranges`` is read once; ranges without pages read as zeros, unrequested;
- **parents in the container**: :func:`sibling` names a differencing disk's parent blob next to it, read with the
  same SAS or credential (the container reader checks it as it checks a parent file).

The sizes are measured, not guessed: replaying the reads of a local lint of the 200,000-file benchmark image
(2,657 reads, 242.7 MB; the ``$MFT`` in ten extents of 13-65 MB, then ~2,400 reads under 4 KiB), 128 KiB blocks
with 1 MiB of read-ahead fetch 1.08x those bytes in about 235 requests; 1 MiB blocks with 32 MiB of read-ahead
fetched 2.2x (read-ahead running past the end of each ``$MFT`` extent, small reads pulling whole megabytes).

REST reference: https://learn.microsoft.com/rest/api/storageservices/get-blob, .../get-blob-properties and
.../get-page-ranges (``x-ms-range``, ``If-Match``, ``x-ms-version``, ``comp=pagelist``); SAS: https://learn.microsoft.com/azure/storage/common/storage-sas-overview.

Where an image is: ``https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB`` (or ``http://`` for the Azurite
emulator), with a SAS token as the query (``?{env:NAME}``, ``?{file:PATH}``, a literal token, or none: then
:data:`SAS_ENV` if set, else anonymous), or ``azure://ACCOUNT/CONTAINER/BLOB``, read with azure-storage-blob and
azure-identity's ``DefaultAzureCredential`` (or :data:`KEY_ENV`, or a SAS as above). The SAS is resolved above the
readers (the plugin, which owns secret references) and handed to :func:`register`; readers never see a reference.
Everything shown (labels, messages) is the URL without its query; no message quotes a token.

The image pipeline is file-based (pytest collects files; the extraction worker opens a path), so a blob image is
collected as a small *placeholder file* :func:`register` writes: :func:`open_registered` turns a registered
placeholder's path into its ``BlobSource``. Only placeholders registered in this process are opened this way
(fork-inherited by the extraction worker); a file on disk never makes the harness contact a URL by its content.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
import posixpath
import re
import stat
import tempfile
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from harness.readers.errors import Unreadable
from harness.readers.image.source import FileSource, clip, clip_hints

__all__ = [
    "ATTEMPTS",
    "BLOCK",
    "KEY_ENV",
    "SAS_ENV",
    "BlobRef",
    "BlobSource",
    "is_blob_url",
    "open_registered",
    "parse_blob_url",
    "register",
    "registered_label",
    "registered_secrets",
    "sibling",
]

#: Environment variables (documented in README "Lint an image in blob storage").
SAS_ENV = "VMROLE_BLOB_SAS"
KEY_ENV = "VMROLE_BLOB_ACCOUNT_KEY"
#: ``azure://ACCOUNT/...`` is read from ``https://ACCOUNT.blob.core.windows.net`` unless this names another
#: endpoint (``{account}`` is replaced): ``http://127.0.0.1:10000/{account}`` for Azurite.
ENDPOINT_ENV = "VMROLE_BLOB_ENDPOINT"
#: Seconds one request may wait for the server (connect, then each read); default :data:`TIMEOUT`.
TIMEOUT_ENV = "VMROLE_BLOB_TIMEOUT"

#: The REST API version sent (the newest the Azurite emulator accepts; Azure accepts it too).
API_VERSION = "2025-11-05"
BLOCK = 128 * 1024
MAX_READ_AHEAD = 1024 * 1024
MAX_REQUEST = 64 * 1024 * 1024
CACHE_BYTES = 64 * 1024 * 1024
TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
ATTEMPTS = 4
BACKOFF = 0.5
MAX_BACKOFF = 8.0
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: Access hints (:meth:`BlobSource.prefetch`): hinted ranges up to this long are fetched exactly (longer ones are
#: served by blocks and read-ahead, which fetch them within a block of their size); up to :data:`HINT_WINDOW` bytes
#: of the next hinted ranges at a time, ranges at most :data:`HINT_GAP` apart in one request, also those the reader
#: wants later (12 KiB: on the benchmark's scattered $MFT, 16 KiB saved 3% more requests but fetched 4% more bytes,
#: ranges fetched early overflowing the hinted ranges' share of the cache and fetched again).
HINT_MAX_RANGE = MAX_READ_AHEAD
HINT_WINDOW = 8 * 1024 * 1024
HINT_MAX_COUNT = 100_000
HINT_GAP = 12 * 1024
#: Requests of one hinted window sent at once (threads; requests' connection pool keeps 10 per host, the SDK's
#: clients are thread-safe).
HINT_PARALLEL = 8
#: A page list larger than this (about a million ranges) is not used: every block is then fetched.
MAX_PAGE_LIST = 64 * 1024 * 1024
_SCHEMES = ("https://", "http://", "azure://")
_PLACEHOLDER_MAGIC = "vmrole blob image placeholder"


@dataclass(frozen=True)
class BlobRef:
    """Where a blob image is. ``label`` is what is shown: the URL without its query."""

    scheme: str  # "https" | "http" | "azure"
    account: str
    container: str
    blob: str
    label: str
    #: The query as given: a SAS token, a ``{env:NAME}``/``{file:PATH}`` reference, or "" (none given).
    query: str = ""

    @property
    def name(self) -> str:
        """The blob's own name (its last path segment): what test ids and summaries show."""
        return self.blob.rsplit("/", 1)[-1]

    @property
    def http_url(self) -> str:
        """The blob's URL without query (https/http only)."""
        return self.label


def is_blob_url(text: str | os.PathLike[str]) -> bool:
    return isinstance(text, str) and text.lower().startswith(_SCHEMES)


def parse_blob_url(text: str) -> BlobRef:
    """A blob image location; ValueError naming the problem (never quoting the query)."""
    lower = text.lower()
    if not lower.startswith(_SCHEMES):
        raise ValueError("not a blob URL (https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB or azure://...)")
    base, _, query = text.partition("?")
    parts = urllib.parse.urlsplit(base)
    scheme = parts.scheme.lower()
    segments = [urllib.parse.unquote(s) for s in parts.path.split("/") if s]
    if not parts.netloc:
        raise ValueError(f"{base}: no host")
    if scheme == "azure":
        account = parts.netloc
        label = f"azure://{account}/{'/'.join(segments)}"
    else:
        host = parts.hostname or ""
        if host.endswith(".blob.core.windows.net") or ("." in host and not _is_ip(host)):
            account = host.split(".", 1)[0]
        else:  # path-style (Azurite, an IP endpoint): /ACCOUNT/CONTAINER/BLOB
            if not segments:
                raise ValueError(f"{base}: no account in the path")
            account, segments = segments[0], segments[1:]
        label = base
    if len(segments) < 2:
        raise ValueError(f"{label}: expected .../CONTAINER/BLOB")
    return BlobRef(scheme, account, segments[0], "/".join(segments[1:]), label, query)


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host == "localhost"
    return True


# ---- the range reader -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Properties:
    size: int
    etag: str
    blob_type: str  # "PageBlob" | "BlockBlob" | "AppendBlob" | ""


class _Refused(Exception):
    """An answer not worth retrying (a 4xx): the message says what it means, without the token."""


class _Transient(Exception):
    """A timeout, a dropped connection or a 5xx: retried."""

    def __init__(self, text: str, retry_after: float | None = None) -> None:
        super().__init__(text)
        self.retry_after = retry_after


#: has properties() -> Properties, get(offset, length, etag) -> bytes, close(); and optionally
#: page_ranges(etag) -> [(start, end)] (end exclusive) or None when the list is unusable.
Transport = Any


class BlobSource(FileSource):
    """A blob as a ByteSource (see the module docstring). A FileSource to the container readers: ``path`` is the
    placeholder the pipeline collected, ``label`` the URL without query, ``identity`` a hash of that URL.

    Counts ``bytes_read`` (returned to readers, as FileSource does) and ``bytes_fetched`` / ``requests`` (on the
    wire), per source and per process (the class totals the extractor's stats read)."""

    total_bytes_fetched: ClassVar[int] = 0
    total_requests: ClassVar[int] = 0

    def __init__(
        self,
        ref: BlobRef,
        transport: Transport,
        *,
        path: Path | None = None,
        cache_bytes: int = CACHE_BYTES,
        block: int = BLOCK,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ref = ref
        self.label = ref.label
        self.path = path if path is not None else Path(ref.name)
        # the blob's identity (cycle checks): account, container and name, however the URL spelled them
        where = f"{ref.account}/{ref.container}/{ref.blob}"
        self.identity = (0, int.from_bytes(hashlib.sha256(where.encode()).digest()[:8], "big"))
        self.bytes_read = 0
        self.bytes_fetched = 0
        self.requests = 0
        self._fd = None
        self._transport = transport
        self._block = block
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_limit = max(cache_bytes // block, 1)
        self._sleep = sleep
        self._next = -1  # where the last read ended
        self._read_ahead = 0
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        props = self._retrying("Get Blob Properties", transport.properties)
        self.size = props.size
        self.etag = props.etag
        self.blob_type = props.blob_type
        # access hints: merged ranges sorted by start, the order they will be read in, and the bytes fetched
        self._h_start: list[int] = []
        self._h_end: list[int] = []
        self._h_rank: list[int] = []  # position of each range in reading order
        self._h_by_order: list[int] = []  # range indices in reading order
        self._h_data: dict[int, bytes] = {}
        self._h_bytes = 0
        self._h_front = 0  # the furthest range (in reading order) read so far
        self._h_limit = max(cache_bytes // 2, HINT_WINDOW)
        self._h_plan: list[tuple[int, int, int]] = []  # (start, end, order) as hinted
        # page blobs: the ranges holding pages (Get Page Ranges, once); reads elsewhere are zeros, not requests
        self._pages: tuple[list[int], list[int]] | None = None
        if self.blob_type == "PageBlob" and hasattr(transport, "page_ranges") and self.size:
            found = self._retrying("Get Page Ranges", lambda: transport.page_ranges(self.etag))
            if found is not None:
                self._pages = _merged(found, self.size)

    # -- reading --

    def read_at(self, offset: int, length: int) -> bytes:
        n = clip(self, offset, length)
        if n == 0:
            return b""
        bs = self._block
        first, last = offset // bs, (offset + n - 1) // bs
        with self._lock:
            hinted = self._hinted(offset, offset + n) if self._h_start else None
            if hinted is not None:
                self.bytes_read += n
                FileSource.total_bytes_read += n
                return hinted
            self._fill(offset, offset + n)
            if first == last:
                data = self._cache[first][offset - first * bs : offset - first * bs + n]
            else:
                parts = [self._cache[b] for b in range(first, last + 1)]
                start = offset - first * bs
                data = b"".join(parts)[start : start + n]
            for b in range(first, last + 1):
                self._cache.move_to_end(b)
            self._evict()
        self.bytes_read += n
        FileSource.total_bytes_read += n
        return data

    def _fill(self, offset: int, end: int) -> None:
        bs = self._block
        first, last = offset // bs, (end - 1) // bs
        nblocks = (self.size + bs - 1) // bs
        # Sequential: this read starts where the last one ended, or a little after (a dynamic VHD's block bitmap
        # sits between its data blocks). Anything else (a hive cell, a file's first bytes) resets the window.
        sequential = 0 <= self._next <= offset <= self._next + bs
        self._next = end
        missing = [b for b in range(first, last + 1) if b not in self._cache]
        if not sequential:
            self._read_ahead = 0
        elif missing:  # the scan went past what was read ahead: read further ahead next time
            self._read_ahead = min(max(self._read_ahead * 2, 1), MAX_READ_AHEAD // bs)
        if self._read_ahead and missing and missing[-1] == last:
            stop = min(last + self._read_ahead, nblocks - 1)
            b = last + 1
            while b <= stop and b not in self._cache:
                missing.append(b)
                b += 1
        if self._pages is not None and missing:  # blocks without pages are zeros: no request
            fetch = []
            for b in missing:
                start, stop_at = b * bs, min((b + 1) * bs, self.size)
                if self._has_pages(start, stop_at):
                    fetch.append(b)
                else:
                    self._cache[b] = _zero_block(stop_at - start)
            missing = fetch
        runs: list[list[int]] = []
        for b in missing:
            if runs and runs[-1][1] == b - 1 and (b - runs[-1][0] + 1) * bs <= MAX_REQUEST:
                runs[-1][1] = b
            else:
                runs.append([b, b])
        for a, z in runs:
            data = self._get_exact(a * bs, min((z + 1) * bs, self.size))
            for b in range(a, z + 1):
                self._cache[b] = data[(b - a) * bs : (b - a + 1) * bs]

    # -- access hints --

    def prefetch(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Ranges a reader announces it will read, in that order (the NTFS reader's ``$MFT`` runs): when a read
        falls in one, it and the next hinted ranges (up to :data:`HINT_WINDOW` bytes) are fetched exactly, in as
        few requests as their offsets allow (:data:`HINT_GAP`), and kept until read. Ranges longer than
        :data:`HINT_MAX_RANGE` are left to the blocks and read-ahead. Nothing is fetched here."""
        with self._lock:
            order = len(self._h_plan)
            for offset, n in clip_hints(self.size, ranges):
                if order >= HINT_MAX_COUNT:  # bounded memory, whatever a reader announces
                    break
                if n <= HINT_MAX_RANGE:
                    self._h_plan.append((offset, offset + n, order))
                    order += 1
            merged: list[list[int]] = []
            for start, end, rank in sorted(self._h_plan):
                if merged and start <= merged[-1][1]:  # overlapping or touching: one range, read when either is
                    merged[-1][1] = max(merged[-1][1], end)
                    merged[-1][2] = min(merged[-1][2], rank)
                else:
                    merged.append([start, end, rank])
            self._h_start = [m[0] for m in merged]
            self._h_end = [m[1] for m in merged]
            self._h_by_order = sorted(range(len(merged)), key=lambda i: merged[i][2])
            self._h_rank = [0] * len(merged)
            for pos, i in enumerate(self._h_by_order):
                self._h_rank[i] = pos
            self._h_data.clear()  # indices changed; bytes already read are in no one's way
            self._h_bytes = 0
            self._h_front = 0

    def _hinted(self, offset: int, end: int) -> bytes | None:
        """The bytes of [offset, end) when a hinted range holds them all (fetching it and the next ones), else
        None (the blocks serve the read)."""
        k = bisect.bisect_right(self._h_start, offset) - 1
        if k < 0 or self._h_end[k] < end:
            return None
        data = self._h_data.get(k)
        rank = self._h_rank[k]
        if data is None:
            if rank < self._h_front or self._in_blocks(offset, end):
                return None  # a range read earlier, read again (a record looked up after the pass); or cached
            self._fetch_hinted(k)
            data = self._h_data[k]
        self._h_front = max(self._h_front, rank)
        start = self._h_start[k]
        return data[offset - start : end - start]

    def _fetch_hinted(self, k: int) -> None:
        """Fetch range ``k`` and the next ones in reading order; drop the ranges the reader has passed."""
        rank = self._h_rank[k]
        for i in [i for i in self._h_data if self._h_rank[i] < rank]:
            self._h_bytes -= len(self._h_data.pop(i))
        picked: set[int] = set()
        total = 0
        for i in self._h_by_order[rank:]:
            if i in picked or i in self._h_data or (i != k and self._in_blocks(self._h_start[i], self._h_end[i])):
                continue
            for j in self._neighbours(i, rank):
                if j not in picked:
                    picked.add(j)
                    total += self._h_end[j] - self._h_start[j]
            if total >= HINT_WINDOW:
                break
        chosen = sorted(picked)
        groups: list[list[int]] = []
        for i in chosen:
            last = groups[-1] if groups else None
            if (
                last is not None
                and self._h_start[i] - self._h_end[last[-1]] <= HINT_GAP
                and self._h_end[i] - self._h_start[last[0]] <= MAX_REQUEST
            ):
                last.append(i)
            else:
                groups.append([i])
        spans = [(self._h_start[g[0]], self._h_end[g[-1]]) for g in groups]
        wanted = [(a, z) for a, z in spans if self._has_pages(a, z)]
        fetched: dict[int, bytes] = {}
        if len(wanted) > 1 and HINT_PARALLEL > 1:
            # The ranges are known in advance: fetch them side by side (a scattered $MFT is thousands of small
            # requests, each mostly waiting for the server). One answer's error is raised, as a serial read would.
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(HINT_PARALLEL, len(wanted)), thread_name_prefix="blob-hint") as pool:
                for (a, _z), got in zip(wanted, pool.map(lambda span: self._get_exact(*span), wanted), strict=True):
                    fetched[a] = got
        else:
            for a, z in wanted:
                fetched[a] = self._get_exact(a, z)
        for group, (start, end) in zip(groups, spans, strict=True):
            data = fetched.get(start)
            if data is None:  # no page of a page blob there: zeros
                data = bytes(end - start)
            for i in group:
                piece = data[self._h_start[i] - start : self._h_end[i] - start]
                self._h_data[i] = piece
                self._h_bytes += len(piece)
        if self._h_bytes > self._h_limit:  # ranges fetched for later than the cache can keep: the farthest go
            for i in sorted(self._h_data, key=lambda i: self._h_rank[i], reverse=True):
                if self._h_bytes <= self._h_limit or i == k:
                    break
                self._h_bytes -= len(self._h_data.pop(i))

    def _neighbours(self, i: int, rank: int) -> list[int]:
        """Range ``i`` and the hinted ranges around it by offset, each less than :data:`HINT_GAP` from the next,
        within :data:`HINT_MAX_RANGE` of bytes, not fetched yet and not passed: one request fetches them all, even
        when the reader wants them much later (a scattered ``$MFT`` puts runs read far apart next to each other)."""
        starts, ends, ranks, have = self._h_start, self._h_end, self._h_rank, self._h_data
        lo = hi = i
        while (
            lo > 0
            and starts[lo] - ends[lo - 1] <= HINT_GAP
            and ends[hi] - starts[lo - 1] <= HINT_MAX_RANGE
            and lo - 1 not in have
            and ranks[lo - 1] >= rank
        ):
            lo -= 1
        while (
            hi + 1 < len(starts)
            and starts[hi + 1] - ends[hi] <= HINT_GAP
            and ends[hi + 1] - starts[lo] <= HINT_MAX_RANGE
            and hi + 1 not in have
            and ranks[hi + 1] >= rank
        ):
            hi += 1
        return list(range(lo, hi + 1))

    def _get_exact(self, start: int, end: int) -> bytes:
        """Bytes [start, end) from the server, counted (thread-safe: the hinted windows fetch in parallel)."""
        data: bytes = self._retrying(f"Get Blob bytes {start}-{end - 1}", self._getter(start, end - start))
        if len(data) != end - start:
            raise Unreadable(
                self.path, f"{self.label}: the server sent {len(data):,} bytes for a {end - start:,}-byte range"
            )
        with self._count_lock:
            self.bytes_fetched += len(data)
            BlobSource.total_bytes_fetched += len(data)
        return data

    def _in_blocks(self, start: int, end: int) -> bool:
        bs = self._block
        return all(b in self._cache for b in range(start // bs, (end - 1) // bs + 1))

    def _has_pages(self, start: int, end: int) -> bool:
        """Whether [start, end) holds any page of a page blob (always True when the page list is unknown)."""
        if self._pages is None:
            return True
        starts, ends = self._pages
        i = bisect.bisect_right(starts, start) - 1
        if i >= 0 and ends[i] > start:
            return True
        return i + 1 < len(starts) and starts[i + 1] < end

    def _getter(self, start: int, length: int) -> Callable[[], bytes]:
        transport, etag = self._transport, self.etag
        if transport is None:
            raise Unreadable(self.path, f"{self.label}: read after close")

        def get() -> bytes:
            data: bytes = transport.get(start, length, etag)
            return data

        return get

    def _evict(self) -> None:
        while len(self._cache) > self._cache_limit:
            self._cache.popitem(last=False)

    def _retrying(self, what: str, call: Callable[[], Any]) -> Any:
        delay = BACKOFF
        problem = ""
        for attempt in range(ATTEMPTS):
            with self._count_lock:
                self.requests += 1
                BlobSource.total_requests += 1
            try:
                return call()
            except _Refused as exc:
                raise Unreadable(self.path, f"{self.label}: {what}: {exc}") from None
            except _Transient as exc:
                problem = str(exc)
                if attempt + 1 < ATTEMPTS:
                    wait = min(exc.retry_after if exc.retry_after is not None else delay, MAX_BACKOFF)
                    self._sleep(wait)
                    delay *= 2
        raise Unreadable(self.path, f"{self.label}: {what}: {problem} ({ATTEMPTS} attempts)")

    # -- FileSource's other duties --

    def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        self._cache.clear()
        self._h_data.clear()

    def __del__(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"BlobSource({self.label!r}, size={self.size})"


_ZERO_BLOCK = bytes(BLOCK)


def _zero_block(size: int) -> bytes:
    """A block of zeros: one shared object for the usual size (a mostly empty page blob caches many)."""
    return _ZERO_BLOCK if size == BLOCK else bytes(size)


def _merged(ranges: Iterable[tuple[int, int]], size: int) -> tuple[list[int], list[int]]:
    """Page ranges (end exclusive) clipped to the blob, sorted and merged: (starts, ends)."""
    starts: list[int] = []
    ends: list[int] = []
    for start, end in sorted((max(0, a), min(b, size)) for a, b in ranges):
        if start >= end:
            continue
        if ends and start <= ends[-1]:
            ends[-1] = max(ends[-1], end)
        else:
            starts.append(start)
            ends.append(end)
    return starts, ends


def _page_list(xml: bytes) -> tuple[list[tuple[int, int]], str] | None:
    """The ``<PageRange><Start/><End/>`` entries (End inclusive in the answer, exclusive here) and the
    ``NextMarker`` of one Get Page Ranges answer; None when the answer is not a page list."""
    import defusedxml.ElementTree as SafeET

    try:
        root = SafeET.fromstring(xml)
    except Exception:  # ParseError, defusedxml's refusals of entities and DTDs: not a usable list
        return None
    if root.tag != "PageList":
        return None
    found: list[tuple[int, int]] = []
    try:
        for node in root:
            if node.tag == "PageRange":  # ClearRange (differential lists) holds no data
                start, end = int(node.findtext("Start", "")), int(node.findtext("End", ""))
                if start < 0 or end < start:
                    return None
                found.append((start, end + 1))
    except ValueError:
        return None
    return found, (root.findtext("NextMarker") or "").strip()


# ---- transports ---------------------------------------------------------------------------------------------------


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else TIMEOUT
    except ValueError:
        value = TIMEOUT
    return value if 0 < value <= 3600 else TIMEOUT


def _status_problem(status: int, code: str, etag: str) -> str:
    named = f"{status} {code}".strip()
    if status == 404:
        return f"{named}: no such blob or container"
    if status == 403:
        return (
            f"{named}: access denied (the SAS token is expired, not yet valid, lacks read permission or does not "
            "match; or no credential was given for a private container)"
        )
    if status == 401:
        return f"{named}: not authenticated (no valid credential for this account)"
    if status == 412:
        return (
            f"{named}: the blob changed while it was being read (its ETag is no longer {etag}); nothing read from "
            "the new version was used: lint it again once it is no longer being written"
        )
    if status == 416:
        return f"{named}: range not satisfiable (the blob is smaller than its properties said: it changed)"
    return f"{named}: unexpected answer"


class HttpTransport:
    """Azure Blob REST over ``requests`` (no SDK between us and the bytes): HEAD for the properties, GET with
    ``x-ms-range`` and ``If-Match``. ``requests``' exceptions quote the URL with its query, so only their type is
    ever shown."""

    def __init__(self, ref: BlobRef, sas: str = "", *, timeout: float | None = None) -> None:
        import requests

        self._requests = requests
        self._url = ref.http_url + (f"?{sas.lstrip('?')}" if sas else "")
        self._timeout = (min(CONNECT_TIMEOUT, timeout or _timeout()), timeout or _timeout())
        self._session: Any = None
        self._session_lock = threading.Lock()
        self._pid = -1

    def _http(self) -> Any:
        with self._session_lock:  # hinted windows fetch from several threads: one session (its pool) for all
            if self._session is None or self._pid != os.getpid():  # a forked worker opens its own connections
                session = self._requests.Session()
                session.trust_env = False  # REQUESTS_CA_BUNDLE, proxies from the environment: not for blobs
                self._session = session
                self._pid = os.getpid()
            return self._session

    def _send(self, method: str, headers: dict[str, str], etag: str = "", *, url: str = "") -> Any:
        headers = {"x-ms-version": API_VERSION, **headers}
        try:
            # stream: the body is read below, bounded by the range asked for (never a whole blob by mistake)
            response = self._http().request(
                method, url or self._url, headers=headers, timeout=self._timeout, stream=True
            )
        except self._requests.Timeout:
            raise _Transient(f"no answer within {self._timeout[1]:g} s") from None
        except self._requests.ConnectionError as exc:
            raise _Transient(f"connection failed ({_reason(exc)})") from None
        except self._requests.RequestException as exc:
            raise _Refused(f"request failed ({type(exc).__name__})") from None
        status = response.status_code
        if status in (200, 206):
            return response
        response.close()  # an error's body (XML naming the cause) is not read: the error code header says it
        code = response.headers.get("x-ms-error-code", "")
        if status in RETRY_STATUS:
            raise _Transient(f"{status} {code}".strip(), _retry_after(response.headers.get("Retry-After")))
        raise _Refused(_status_problem(status, code, etag))

    def properties(self) -> Properties:
        response = self._send("HEAD", {})
        response.close()
        try:
            size = int(response.headers.get("Content-Length", ""))
        except ValueError:
            raise _Refused("Get Blob Properties gave no Content-Length") from None
        etag = response.headers.get("ETag", "")
        if not etag:
            raise _Refused("Get Blob Properties gave no ETag: the blob cannot be pinned to one version")
        return Properties(size, etag, response.headers.get("x-ms-blob-type", ""))

    def get(self, offset: int, length: int, etag: str) -> bytes:
        response = self._send("GET", {"x-ms-range": f"bytes={offset}-{offset + length - 1}", "If-Match": etag}, etag)
        if response.headers.get("ETag", etag) != etag:
            response.close()
            raise _Refused(_status_problem(412, "ETagChanged", etag))
        try:
            data: bytes = response.raw.read(length + 1, decode_content=True)
        except self._requests.exceptions.RequestException as exc:
            raise _Transient(f"the answer broke off ({_reason(exc)})") from None
        except Exception as exc:  # urllib3's ReadTimeoutError / ProtocolError while reading the body
            if "timeout" in type(exc).__name__.lower() or "timed out" in str(exc).lower():
                raise _Transient(f"no answer within {self._timeout[1]:g} s") from None
            raise _Transient(f"the answer broke off ({type(exc).__name__})") from None
        finally:
            response.close()
        if len(data) > length:  # a server that ignores x-ms-range would send the whole blob: not read further
            raise _Refused(
                f"the server ignored the range (sent more than {length:,} bytes for a {length:,}-byte range)"
            )
        return data

    def page_ranges(self, etag: str) -> list[tuple[int, int]] | None:
        """Get Page Ranges (``comp=pagelist``) of this version of the blob, following ``NextMarker``; None when the
        answer is not a page list or is too large to be worth it (then every block is fetched)."""
        found: list[tuple[int, int]] = []
        marker = ""
        received = 0
        for _ in range(1000):
            query = "comp=pagelist" + (f"&marker={urllib.parse.quote(marker, safe='')}" if marker else "")
            url = self._url + ("&" if "?" in self._url else "?") + query
            response = self._send("GET", {"If-Match": etag}, etag, url=url)
            try:
                body: bytes = response.raw.read(MAX_PAGE_LIST - received + 1, decode_content=True)
            except Exception as exc:  # the body broke off: a transient failure, retried by the caller
                raise _Transient(f"the answer broke off ({type(exc).__name__})") from None
            finally:
                response.close()
            received += len(body)
            if received > MAX_PAGE_LIST:
                return None
            page = _page_list(body)
            if page is None:
                return None
            found += page[0]
            marker = page[1]
            if not marker:
                return found
        return None

    def close(self) -> None:
        if self._session is not None and self._pid == os.getpid():
            self._session.close()
        self._session = None


def _reason(exc: Exception) -> str:
    """A connection error in words without the URL: the innermost cause's type (ConnectionRefusedError, ...)."""
    inner: BaseException = exc
    for _ in range(10):
        nxt = getattr(inner, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = inner.__context__
        if nxt is None:
            break
        inner = nxt
    return type(inner).__name__


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


class SdkTransport:
    """``azure://`` blobs through azure-storage-blob's BlobClient (its own retries off: ours count and bound them),
    with a SAS, an account key or azure-identity's DefaultAzureCredential."""

    def __init__(self, ref: BlobRef, credential: Any, *, timeout: float | None = None) -> None:
        try:
            from azure.storage.blob import BlobClient
        except ImportError:  # pragma: no cover - a runtime dependency
            raise _Refused("azure-storage-blob is not installed") from None
        endpoint = os.environ.get(ENDPOINT_ENV) or "https://{account}.blob.core.windows.net"
        t = timeout or _timeout()
        try:
            self._client = BlobClient(
                endpoint.replace("{account}", ref.account),
                ref.container,
                ref.blob,
                credential=credential,
                api_version=API_VERSION,
                retry_total=0,
                connection_timeout=min(CONNECT_TIMEOUT, t),
                read_timeout=t,
                max_single_get_size=MAX_REQUEST,
                max_chunk_get_size=MAX_REQUEST,
            )
        except (ValueError, TypeError) as exc:  # e.g. a token credential over http://
            raise _Refused(f"cannot set up the blob client: {exc}") from None

    def _call(self, call: Callable[[], Any], etag: str = "") -> Any:
        from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

        try:
            return call()
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise _Transient(f"connection failed or timed out ({type(exc).__name__})") from None
        except HttpResponseError as exc:
            status = exc.status_code or 0
            code = str(getattr(exc, "error_code", None) or "")
            if not status:  # no answer at all: azure-identity found no credential (CredentialUnavailableError)
                raise _Refused(
                    f"{type(exc).__name__}: no usable credential (az login, a managed identity, a SAS or {KEY_ENV})"
                ) from None
            if status in RETRY_STATUS:
                raise _Transient(f"{status} {code}".strip()) from None
            raise _Refused(_status_problem(status, code, etag)) from None
        except Exception as exc:  # credential errors (azure-identity) and the like: their type, no text
            raise _Refused(f"{type(exc).__name__} (no usable credential? see {KEY_ENV} / az login)") from None

    def properties(self) -> Properties:
        props = self._call(self._client.get_blob_properties)
        kind = getattr(props.blob_type, "value", props.blob_type)  # BlobType.PAGEBLOB's value is "PageBlob"
        return Properties(int(props.size), str(props.etag), str(kind or "").split(".")[-1])

    def get(self, offset: int, length: int, etag: str) -> bytes:
        from azure.core import MatchConditions

        def download() -> bytes:
            stream = self._client.download_blob(
                offset=offset, length=length, etag=etag, match_condition=MatchConditions.IfNotModified
            )
            return bytes(stream.readall())

        data: bytes = self._call(download, etag)
        return data

    def page_ranges(self, etag: str) -> list[tuple[int, int]] | None:
        from azure.core import MatchConditions

        def ranges() -> list[tuple[int, int]]:
            pages = self._client.list_page_ranges(etag=etag, match_condition=MatchConditions.IfNotModified)
            return [(int(r.start or 0), int(r.end or 0) + 1) for r in pages if not getattr(r, "cleared", False)]

        found: list[tuple[int, int]] = self._call(ranges, etag)
        return found

    def close(self) -> None:
        self._client.close()


# ---- placeholders: how a blob image travels through the file-based pipeline ---------------------------------------

_REGISTERED: dict[str, tuple[BlobRef, str, str]] = {}  # placeholder realpath -> (ref, sas, account key)


def register(ref: BlobRef, sas: str = "", account_key: str = "", *, directory: Path | None = None) -> Path:
    """A placeholder file for ``ref`` (same path for the same URL in every process of the run: pytest node ids
    and xdist workers agree), registered with the resolved secret so that :func:`open_registered` (in this
    process or a forked worker) reads the blob. The file holds the label only; the secret stays in memory."""
    path = _placeholder_path(ref, directory)
    folder, name = path.parent, path.name
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = json.dumps({_PLACEHOLDER_MAGIC: ref.label})
    if not path.is_file() or path.read_text("utf-8", errors="replace") != text:
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(text, "utf-8")
        os.replace(tmp, path)
    _REGISTERED[os.path.realpath(path)] = (ref, sas, account_key)
    return path


def _placeholder_path(ref: BlobRef, directory: Path | None = None) -> Path:
    digest = hashlib.sha256(ref.label.encode()).hexdigest()[:16]
    name = ref.name if ref.name not in ("", ".", "..") else "blob"
    return (directory or _placeholder_base()) / digest / name


_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:|/)")  # a drive, a UNC or rooted path, once backslashes are slashes


def sibling(path: Path | str, name: str) -> tuple[Path, str] | str:
    """The blob ``name`` (a differencing disk's parent locator, relative to the blob's own folder) in the same
    container as the registered blob image ``path``, read with the same SAS, account key or credential: its
    placeholder (registered in this process, no file written) and its URL without query; or why it cannot be
    (an absolute path, or a name leading out of the container). Nothing is requested here."""
    entry = _REGISTERED.get(os.path.realpath(path))
    if entry is None:
        return "not a blob image"
    ref, sas, key = entry
    relative = name.replace("\\", "/")
    if _ABSOLUTE.match(relative):
        return "an absolute path: not a blob in this container"
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(ref.blob), relative))
    if joined in (".", "") or joined == ".." or joined.startswith("../") or "\0" in joined:
        return "outside the container"
    if ref.scheme == "azure":
        label = f"azure://{ref.account}/{ref.container}/{joined}"
    else:
        parts = urllib.parse.urlsplit(ref.label)
        segments = [seg for seg in parts.path.split("/") if seg]
        kept = segments[: len(segments) - len([seg for seg in ref.blob.split("/") if seg])]
        encoded = [urllib.parse.quote(seg, safe="") for seg in joined.split("/")]
        label = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/" + "/".join(kept + encoded), "", ""))
    found = BlobRef(ref.scheme, ref.account, ref.container, joined, label, ref.query)
    placeholder = _placeholder_path(found)
    _REGISTERED[os.path.realpath(placeholder)] = (found, sas, key)
    return placeholder, label


def _placeholder_base() -> Path:
    """``$TMPDIR/vmrole-blob-UID``, when it is this user's own private directory (not a link another user planted);
    else a fresh private one (then xdist workers each have their own placeholder paths)."""
    global _FALLBACK_BASE
    uid = os.getuid() if hasattr(os, "getuid") else 0
    base = Path(tempfile.gettempdir()) / f"vmrole-blob-{uid}"
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o700)
    st = os.lstat(base)
    if stat.S_ISDIR(st.st_mode) and st.st_uid == uid:  # lstat: a symbolic link is not a directory here
        if st.st_mode & 0o077:
            os.chmod(base, 0o700)
        return base
    if _FALLBACK_BASE is None:  # one per process: the CLI and the plugin it runs agree
        _FALLBACK_BASE = Path(tempfile.mkdtemp(prefix="vmrole-blob-"))
    return _FALLBACK_BASE


_FALLBACK_BASE: Path | None = None


def registered_label(path: Path | str) -> str | None:
    """The URL (without query) a placeholder stands for, or None for any other path."""
    entry = _REGISTERED.get(os.path.realpath(path))
    return entry[0].label if entry else None


def registered_secrets() -> list[str]:
    """Every SAS and key registered in this process (for the run's maskers)."""
    return [s for _, sas, key in _REGISTERED.values() for s in (sas, key) if s]


def open_registered(path: Path | str) -> BlobSource | None:
    """The BlobSource a registered placeholder stands for, or None when ``path`` is not one."""
    entry = _REGISTERED.get(os.path.realpath(path))
    if entry is None:
        return None
    ref, sas, key = entry
    return open_blob(ref, sas, key, path=Path(path))


def open_blob(ref: BlobRef, sas: str = "", account_key: str = "", *, path: Path | None = None) -> BlobSource:
    """A BlobSource for ``ref`` with an already resolved SAS or account key (Unreadable when it cannot be read)."""
    where = path if path is not None else Path(ref.name)
    try:
        if ref.scheme == "azure":
            credential: Any
            if sas:
                from azure.core.credentials import AzureSasCredential

                credential = AzureSasCredential(sas.lstrip("?"))
            elif account_key:
                credential = {"account_name": ref.account, "account_key": account_key}
            else:
                try:
                    from azure.identity import DefaultAzureCredential
                except ImportError:
                    raise Unreadable(
                        where,
                        f"{ref.label}: azure:// without a SAS or {KEY_ENV} signs in with azure-identity, which is "
                        "not installed (pip install azure-identity)",
                    ) from None
                credential = DefaultAzureCredential()
            transport: Any = SdkTransport(ref, credential)
        else:
            transport = HttpTransport(ref, sas)
        return BlobSource(ref, transport, path=where)
    except _Refused as exc:
        raise Unreadable(where, f"{ref.label}: {exc}") from None
