"""Fuzz targets: one ``TestOneInput(data: bytes)`` per parser, and the contract every target checks.

Each :class:`Target` names the parser's public entry point and the one error type it documents for bad input.
:class:`Contract` wraps a target for atheris (or for the smoke test's own mutator):

- only the documented error type escapes; anything else is re-raised, so atheris records the input as a crash;
- time is bounded: CPU time per input is recorded, and over :data:`HANG_SECONDS` for an input under 1 MiB is a
  hang (raised as :class:`Hang`; libFuzzer's own ``-timeout`` catches real infinite loops);
- memory is bounded: the runner gives libFuzzer ``-rss_limit_mb`` and caps the address space, so a huge
  allocation is a ``MemoryError`` (a crash, unless the parser documents turning it into its error type);
- determinism: every :data:`DETERMINISM_EVERY`-th input is parsed twice and the two summaries must be equal.

Nothing here touches the network, spawns processes or reads outside a sandbox: an audit hook
(:func:`_audit`) turns any socket, subprocess or out-of-sandbox ``open`` during a target into a crash
(``target``) or a refused open (``container``, whose parent locators may name any path).

Image targets take either raw bytes or a *sparse* input (``SPRS`` + name selector + size + chunks, see
:func:`sparse_decode`), so a 4 MiB VHDX or a 2 MiB NTFS volume fits in a seed of a few KB.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

MIB = 1 << 20
HANG_SECONDS = 1.0
DETERMINISM_EVERY = 64
#: Virtual size cap of a sparse input (the readers may allocate in proportion to the file size).
SPARSE_MAX_SIZE = 64 * MIB
SPARSE_MAGIC = b"SPRS"
SPARSE_NAMES = ("disk.img", "disk.vhd", "disk.vhdx", "disk.avhd")
FUZZ_DIR = Path(__file__).resolve().parent
DATA_DIR = FUZZ_DIR / "data"


class Hang(Exception):
    """An input took longer than the contract allows."""


class MemoryBlowup(Exception):
    """An input made the parser allocate far more than its size justifies."""


class Nondeterministic(Exception):
    """The same input gave two different results."""


class SandboxViolation(Exception):
    """A target touched the network, started a process or opened a file outside its sandbox."""


# ---- sandbox -------------------------------------------------------------------------------------------------

_PY_DIRS = tuple(
    {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path) if p and os.path.isdir(p)}
)


@dataclass
class _Guard:
    root: str  # the sandbox directory (realpath)
    deny: bool  # True: refuse the open (PermissionError); False: record a violation (crash)
    violations: list[str] = field(default_factory=list)


_GUARD: _Guard | None = None
_HOOKED = False


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


_FORBIDDEN_PREFIXES = ("socket.connect", "socket.bind", "socket.sendto", "subprocess.", "os.exec", "os.spawn")
_FORBIDDEN_EVENTS = ("os.system", "os.posix_spawn", "os.fork", "os.forkpty", "urllib.Request")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    guard = _GUARD
    if guard is None:
        return
    if event == "open":
        target = args[0]
        if not isinstance(target, (str, bytes, os.PathLike)):
            return  # an fd
        path = os.path.realpath(os.fsdecode(target))
        if _inside(path, guard.root):
            return
        if path.endswith((".py", ".pyc", ".so")) and any(_inside(path, d) for d in _PY_DIRS):
            return  # a lazy import inside a parser
        if guard.deny:
            raise PermissionError(13, "fuzz sandbox: open outside the sandbox refused", os.fsdecode(target))
        guard.violations.append(f"open {path!r}")
    elif event.startswith(_FORBIDDEN_PREFIXES) or event in _FORBIDDEN_EVENTS:
        guard.violations.append(f"{event} {args!r}"[:300])
        raise PermissionError(13, f"fuzz sandbox: {event} refused")


@contextlib.contextmanager
def sandboxed(root: Path, *, deny: bool) -> Iterator[_Guard]:
    global _GUARD, _HOOKED
    if not _HOOKED:
        sys.addaudithook(_audit)  # audit hooks cannot be removed: it is inert while _GUARD is None
        _HOOKED = True
    guard = _Guard(os.path.realpath(root), deny)
    previous, _GUARD = _GUARD, guard
    try:
        yield guard
    finally:
        _GUARD = previous
    if guard.violations:
        raise SandboxViolation("; ".join(guard.violations[:5]))


_SANDBOX: Path | None = None


def sandbox() -> Path:
    """A per-process scratch directory in tmpfs (``/dev/shm`` when there is one): input files are rewritten
    in place there, so a target costs one small write per input."""
    global _SANDBOX
    if _SANDBOX is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        _SANDBOX = Path(tempfile.mkdtemp(prefix="vmrole-fuzz-", dir=base))
    return _SANDBOX


def write_input(name: str, data: bytes) -> Path:
    path = sandbox() / name
    with open(path, "wb") as fh:
        fh.write(data)
    return path


# ---- sparse inputs -------------------------------------------------------------------------------------------


def sparse_encode(data: bytes, *, name: int = 0, granule: int = 512) -> bytes:
    """``SPRS`` + name selector (u8) + size (u32le) + chunks (offset u32le, length u16le, bytes): only the
    non-zero ``granule``-sized pieces of ``data``, adjacent ones joined."""
    out = bytearray(SPARSE_MAGIC + struct.pack("<BI", name, len(data)))
    zero = bytes(granule)
    start = None
    for off in range(0, len(data) + granule, granule):
        piece = data[off : off + granule]
        nonzero = bool(piece) and piece != zero[: len(piece)]
        if nonzero and start is None:
            start = off
        if start is not None and (not nonzero or off + granule - start > 0xFFFF - granule):
            end = off + granule if nonzero else off
            chunk = data[start:end]
            out += struct.pack("<IH", start, len(chunk)) + chunk
            start = None
    return bytes(out)


def sparse_decode(data: bytes) -> tuple[str, int, list[tuple[int, bytes]]] | None:
    """(file name, size, chunks) of a sparse input; None for a raw one. Chunks are clipped to the size."""
    if not data.startswith(SPARSE_MAGIC) or len(data) < 9:
        return None
    selector, size = struct.unpack_from("<BI", data, 4)
    size = min(size, SPARSE_MAX_SIZE)
    chunks = []
    pos = 9
    while pos + 6 <= len(data):
        off, length = struct.unpack_from("<IH", data, pos)
        pos += 6
        chunk = data[pos : pos + length]
        pos += length
        if off < size and chunk:
            chunks.append((off, chunk[: size - off]))
    return SPARSE_NAMES[selector % len(SPARSE_NAMES)], size, chunks


class MemorySource:
    """A :class:`~harness.readers.image.source.ByteSource` over bytes, or over a sparse input (pages)."""

    PAGE = 4096

    def __init__(self, data: bytes, label: str = "fuzz.img") -> None:
        self.label = label
        decoded = sparse_decode(data)
        self._flat: bytes | None = None
        self._pages: dict[int, bytearray] = {}
        if decoded is None:
            self._flat = data
            self.size = len(data)
            return
        _name, self.size, chunks = decoded
        page = self.PAGE
        for off, chunk in chunks:
            pos = 0
            while pos < len(chunk):
                index, inner = divmod(off + pos, page)
                n = min(page - inner, len(chunk) - pos)
                buf = self._pages.get(index)
                if buf is None:
                    buf = self._pages[index] = bytearray(page)
                buf[inner : inner + n] = chunk[pos : pos + n]
                pos += n

    def read_at(self, offset: int, length: int) -> bytes:
        from harness.readers.image.source import clip

        n = clip(self, offset, length)
        if n == 0:
            return b""
        if self._flat is not None:
            return self._flat[offset : offset + n]
        page = self.PAGE
        out = bytearray(n)
        pos = 0
        while pos < n:
            index, inner = divmod(offset + pos, page)
            take = min(page - inner, n - pos)
            buf = self._pages.get(index)
            if buf is not None:
                out[pos : pos + take] = buf[inner : inner + take]
            pos += take
        return bytes(out)


def write_disk_file(data: bytes) -> Path:
    """The input as a file in the sandbox: a raw input as ``disk.img``; a sparse one as a sparse file of its
    size under the name it selects."""
    decoded = sparse_decode(data)
    if decoded is None:
        for other in SPARSE_NAMES[1:]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sandbox() / other)
        return write_input("disk.img", data)
    name, size, chunks = decoded
    for other in SPARSE_NAMES:
        if other != name:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sandbox() / other)
    path = sandbox() / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
        for off, chunk in chunks:
            os.pwrite(fd, chunk, off)
    finally:
        os.close(fd)
    return path


# ---- summaries -------------------------------------------------------------------------------------------------


def digest(*parts: object) -> str:
    h = hashlib.sha1()
    for part in parts:
        h.update(part if isinstance(part, bytes) else repr(part).encode("utf-8", "backslashreplace"))
        h.update(b"\x00")
    return h.hexdigest()


def _error_summary(exc: BaseException) -> tuple[str, str]:
    return (type(exc).__name__, str(exc))


# ---- the targets -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    entry: str  # the public entry point fuzzed
    errors_doc: str  # the documented error type, in words
    run: Callable[[bytes], object]  # parses; returns a stable summary of the result
    errors: Callable[[], tuple[type[BaseException], ...]]  # what may escape (the documented error type), lazily:
    # the worker imports the parsers under atheris instrumentation first
    modules: tuple[str, ...]  # source files (relative to the repo) whose coverage is measured
    max_len: int = 64 * 1024  # libFuzzer -max_len
    #: Peak traced allocation allowed beyond 32 MiB + 8 × the input's (virtual) size: what the parser documents.
    memory_allowance: int = 0
    setup: Callable[[], None] | None = None


def _xml(data: bytes) -> object:
    from harness.readers.xmlsafe import parse_xml

    doc = parse_xml(data, Path("fuzz.xml"))
    walked = []
    stack = [doc.root]
    while stack:
        node = stack.pop()
        walked.append((node.tag, node.namespace, sorted(node.attrib.items()), node.text, node.line, node.location))
        stack.extend(node.children)
    return digest(doc.namespace, walked)


def _artefact(kind: str, path: Path) -> Any:
    from harness.engine.artefact import Artefact

    return Artefact.from_path(path, kind)


def _csdef(data: bytes) -> object:
    from harness.readers.servicemodel import parse_definition

    return digest(parse_definition(data, _artefact("csdef", Path("/fuzz/ServiceDefinition.csdef"))))


def _cscfg(data: bytes) -> object:
    from harness.readers.servicemodel import parse_configuration

    return digest(parse_configuration(data, _artefact("cscfg", Path("/fuzz/ServiceConfiguration.cscfg"))))


def _zip(data: bytes) -> object:
    from harness.readers.zipsafe import (
        DEFAULT_LIMITS,
        Skipped,
        check_listing,
        duplicates,
        open_zip,
        read_bounded,
        read_prefix,
        sha256_member,
        stored_window,
    )

    path = Path("fuzz.zip")
    base = io.BytesIO(data)
    out: list[object] = []
    with open_zip(base, path, "package") as zf:
        infos = zf.infolist()
        check_listing(infos, path, "package", DEFAULT_LIMITS)
        out.append(duplicates(infos))
        for info in infos[:64]:
            try:
                out.append(read_prefix(zf, info, 64))
                out.append(sha256_member(zf, info, 1 * MIB))
                out.append(read_bounded(zf, info, 64 * 1024))
                window = stored_window(base, info)
                if window is not None:
                    out.append(window.read(64))
            except Skipped as exc:
                out.append(("skipped", str(exc)))
    return digest(out)


def _zip_errors() -> tuple[type[BaseException], ...]:
    from harness.readers.errors import Unreadable
    from harness.readers.zipsafe import CORRUPT

    return (Unreadable, *CORRUPT)


def _cspkg(data: bytes) -> object:
    from harness.readers.cspkg import read_package

    path = write_input("fuzz.cspkg", data)
    package = read_package(_artefact("cspkg", path))
    return digest(
        package.entries,
        package.manifest_part,
        package.manifest_items,
        package.hash_type,
        package.payloads,
        package.definition,
        package.problems,
        package.sdk_version,
    )


_PARENT_READY = False


def _container_setup() -> None:
    """The sandbox holds ``parent.vhd`` (a small fixed VHD) and ``parent.vhdx`` (a small dynamic VHDX) so
    differencing seeds have a parent to find."""
    global _PARENT_READY
    if _PARENT_READY:
        return
    for name in ("parent.vhd", "parent.vhdx"):
        blob = DATA_DIR / f"{name}.sprs"
        if not blob.is_file():
            continue
        decoded = sparse_decode(blob.read_bytes())
        assert decoded is not None
        _name, size, chunks = decoded
        with open(sandbox() / name, "wb") as fh:
            fh.truncate(size)
            for off, chunk in chunks:
                fh.seek(off)
                fh.write(chunk)
    _PARENT_READY = True


def _container(data: bytes) -> object:
    from harness.readers.image.container import open_disk

    _container_setup()
    path = write_disk_file(data)
    with sandboxed(sandbox(), deny=True), open_disk(path) as disk:
        info = disk.info
        size = disk.size
        reads = [disk.read_at(0, 4096), disk.read_at(max(0, size - 4096), 4096)]
        if size > 0:  # a few sectors spread over the disk, and one read across a block boundary
            for k in range(1, 8):
                reads.append(disk.read_at(size * k // 8 // 512 * 512, 1024))
            if info.block_size:
                reads.append(disk.read_at(max(0, info.block_size - 512), 1024))
        return digest(
            info.format, info.disk_type, info.virtual_size, info.footer_cookie_ok, info.footer_checksum_ok,
            info.footer_copy_ok, info.block_size, info.logical_sector_size, info.unique_id,
            [os.path.basename(p) for p in info.parent_chain], info.notes, reads,
        )  # fmt: skip


def _partitions(data: bytes) -> object:
    from harness.readers.image.partitions import read_partitions

    disk = MemorySource(data)
    table = read_partitions(disk)
    heads = [table.source(disk, p).read_at(0, 512) for p in table.partitions[:16]]
    return digest(table, heads)


def _ntfs(data: bytes) -> object:
    from harness.readers.image.ntfs import NtfsVolume

    volume = NtfsVolume(MemorySource(data, "fuzz.img#p1"))
    inventory = volume.inventory()
    paths = []
    contents = []
    for n, (path, entry) in enumerate(inventory.walk()):
        if n >= 4096:
            break
        paths.append((path, entry))
        if not entry.is_dir and len(contents) < 16:
            from harness.readers.errors import Unreadable

            try:
                contents.append(volume.read_file(entry, 4096))
            except Unreadable as exc:  # a damaged or compressed file: the volume is still usable
                contents.append(_error_summary(exc))
    looked = [inventory.lookup(p) for p in ("Windows\\System32\\config\\SYSTEM", "Windows", "$MFT", "a/b/c")]
    root = inventory.root()
    kids = inventory.children(root)[:64]
    selected = list(inventory.select("windows\\*"))[:64]
    return digest(
        volume.cluster_size, volume.record_size, volume.serial, volume.label, inventory.file_count,
        inventory.dir_count, inventory.notes, paths, contents, looked, kids, selected,
    )  # fmt: skip


#: First input byte → (decompressor, output size): an NTFS compression unit (64 KiB, 4 KiB clusters), a WOF chunk
DECOMPRESS_FORMATS = (("lznt1", 65536), ("xpress", 4096), ("xpress", 8192), ("xpress", 16384), ("lzx", 32768))


def _decompress(data: bytes) -> object:
    """One unit or chunk: byte 0 picks the format, bytes 1-2 cut the output size (the last chunk of a file is
    short), the rest is the compressed data."""
    from harness.readers.image import decompress

    if len(data) < 3:
        return None
    name, chunk = DECOMPRESS_FORMATS[data[0] % len(DECOMPRESS_FORMATS)]
    size = chunk - int.from_bytes(data[1:3], "little") % chunk
    body = data[3:]
    if name == "lznt1":
        out = decompress.lznt1(body, size)
    elif name == "lzx":
        out = decompress.lzx(body, size)
    else:
        out = decompress.xpress_huffman(body, size, chunk)
    if len(out) > size or (name != "lznt1" and len(out) != size):
        raise AssertionError(f"{name}: {len(out)} bytes for a {size}-byte unit")
    return digest(name, size, out)


def _corrupt_data() -> tuple[type[BaseException], ...]:
    from harness.readers.image.decompress import CorruptData

    return (CorruptData,)


def _regf(data: bytes) -> object:
    from harness.readers.errors import Unreadable
    from harness.readers.image.regf import Hive, values_of

    hive = Hive(data, "fuzz.hive")
    out: list[object] = [hive.check_cells()]
    stack = [(hive.key(""), 0)]
    seen = 0
    while stack and seen < 2048:
        key, depth = stack.pop()
        if key is None:
            continue
        seen += 1
        try:
            out.append((key.path, key.name, key.last_written))
            for value in key.values()[:64]:
                out.append((value.name, value.type, value.data[:256], value.as_python()))
            out.append(values_of(key, lowercase=True))
            subkeys = key.subkeys()
            out.append(key.subkey(subkeys[0].name) is not None if subkeys else None)
            if depth < 32:
                stack.extend((sub, depth + 1) for sub in subkeys[:64])
        except Unreadable as exc:  # a damaged cell: lookups elsewhere still work (readers/image/CONTRACT.md)
            out.append(_error_summary(exc))
    for path in ("ControlSet001\\Services", "Select", "Microsoft\\Windows NT\\CurrentVersion"):
        try:
            out.append(hive.key(path) is not None)
        except Unreadable as exc:
            out.append(_error_summary(exc))
    return digest(out)


def _firewall(data: bytes) -> object:
    from harness.facts.image_firewall import (
        STORE_LOCAL,
        FirewallStoreValues,
        check_port,
        effective_policy,
        parse_legacy_open_port,
        parse_rule,
    )

    text = data.decode("utf-8", "surrogateescape")
    rule = parse_rule("{fuzz}", text, STORE_LOCAL)
    lines = text.split("\n")[:64]
    rules: dict[str, object] = {f"r{i}": line for i, line in enumerate(lines)}
    rules["dword"] = len(data)
    legacy = parse_legacy_open_port(STORE_LOCAL, "StandardProfile", "3389:TCP", lines[0])
    policy = effective_policy(
        FirewallStoreValues(
            profiles={"StandardProfile": {"EnableFirewall": 1, "DefaultInboundAction": 1}},
            rules=rules,
            globally_open_ports={"StandardProfile": {f"p{i}": line for i, line in enumerate(lines[:8])}},
            policy_version=len(data) & 0xFFFF,
        )
    )
    verdicts = [check_port(policy, proto, port, "private") for proto in (6, 17, None) for port in (80, 3389, 5986)]
    return digest(rule, legacy, policy, verdicts)


def _unattend(data: bytes) -> object:
    from harness.extraction.unattend import parse_answer_file

    return digest(parse_answer_file(data, "Windows/Panther/unattend.xml"))


_TARGET_ENV = {"VMR_FUZZ_SECRET": "fuzz-secret-value", "HOME": "/nonexistent"}


def _target_setup() -> None:
    (sandbox() / "secret.txt").write_text("fuzz-secret-file\n")
    (sandbox() / "mgmt.pem").write_text("not a real certificate\n")


def _target(data: bytes) -> object:
    from harness.live.target import cleartext_credentials, load_target

    _target_setup()
    path = write_input("fuzz.vmrtarget.yml", data)
    # {env:} and {file:} are resolved (masker, cleartext_credentials) with a fake environment and only the
    # sandbox readable; {env: VMR_FUZZ_CONN} is the input itself, so the fuzzer shapes that secret too.
    env = {**_TARGET_ENV, "VMR_FUZZ_CONN": data[:4096].decode("latin-1").replace("\x00", "")}
    # os.environ replaced by a plain dict, not patched: every os.environ write is a C setenv(), and glibc never
    # frees a replaced value (~the input's size leaked per execution, 380 MB over 700,000 executions).
    with mock.patch.object(os, "environ", env), sandboxed(sandbox(), deny=False) as guard:
        guard.deny = False
        target = load_target(path)
        guard.deny = True  # secret files outside the sandbox are refused, as an unreadable file
        masker = target.masker()
        cleartext = cleartext_credentials(target)
    return digest(
        target.name, target.management, target.winrm, target.storage, target.model, target.identify,
        target.rotation, target.reimage, target.app_state_paths, target.services, target.timeouts,
        target.direct_instance_addresses, len(masker._needles), cleartext,
    )  # fmt: skip


class _MgmtFake:
    """A stateless lifecycle (same answers every time, so results are deterministic)."""

    def deployment(self) -> Any:
        from harness.fabric.views import DeploymentView, InputEndpointView, InstanceEndpointView, InstanceView

        inst = InstanceView(
            "WebVM", "WebVM_IN_0", "ReadyRole", 0, 0, "Small", "127.0.0.10", "Started",
            (InstanceEndpointView("Direct", "tcp", 10000, 5000, "127.0.0.1"),),
        )  # fmt: skip
        return DeploymentView(
            service_name="ContosoVMRole",
            name="c0ffee00c0ffee00c0ffee00c0ffee00",
            slot="Production",
            private_id="063a68e8c6204b5fb74f3ce60581fbc3",
            status="Running",
            label="Contoso",
            url="http://contosovmrole.cloudapp.net/",
            configuration="<ServiceConfiguration />",
            sdk_version="1.7.30602.1703",
            vip="127.0.0.1",
            instances=(inst,),
            input_endpoints=(InputEndpointView("WebVM", "HttpIn", "http", 18080, 80, "127.0.0.1"),),
            roles=(("WebVM", "WA-GUEST-OS-2.40_201506-01"),),
        )

    def start_operation(self, kind: str, instance_id: str) -> str:
        if instance_id != "WebVM_IN_0":
            raise KeyError(instance_id)
        return "0123456789abcdef0123456789abcdef"

    def operation(self, request_id: str) -> Any:
        from harness.fabric.views import SUCCEEDED, OperationView

        if request_id == "0123456789abcdef0123456789abcdef":
            return OperationView(request_id, SUCCEEDED, 200)
        return None


MGMT_OPERATION = "0123456789abcdef0123456789abcdef"


class _MgmtDeployment:
    """The one deployment of :class:`_MgmtServices` (the surface the management router uses)."""

    name = "c0ffee00c0ffee00c0ffee00c0ffee00"
    slot = "Production"
    locked = False
    created = modified = "2026-01-01T00:00:00Z"
    upgrade = None

    def __init__(self) -> None:
        self.instances = _MgmtFake()

    def view(self) -> Any:
        return self.instances.deployment()


def _mgmt_services() -> Any:
    """The fabric's hosted services (harness.fabric.deployments.HostedServices) with one stateless deployment:
    the real routing, body parsing (defusedxml) and base64/cscfg checks run; nothing starts, sleeps or changes,
    so answers are deterministic."""
    import threading

    from harness.fabric.deployments import (
        HostedService,
        HostedServices,
        bad_request,
        certificate_der,
        conflict,
        decode_base64_text,
        not_found,
    )

    class Services(HostedServices):
        def __init__(self) -> None:  # no controller: nothing to start
            self.lock = threading.RLock()
            self.operations = {}
            self.retired = []
            self.dep = _MgmtDeployment()
            svc = HostedService("ContosoVMRole", "Contoso", created=self.dep.created, modified=self.dep.created)
            svc.slots["Production"] = self.dep  # type: ignore[assignment]
            self.services = {"contosovmrole": svc}

        def deployment(self) -> Any:
            return self.dep.view()

        def operation(self, request_id: str) -> Any:
            return self.dep.instances.operation(request_id.replace("-", "").lower())

        def find(self, service: str, *, slot: str | None = None, name: str | None = None) -> Any:
            self.service(service)
            if slot is not None and slot.lower() != "production":
                raise not_found("No deployments were found.")
            if slot is None and name != self.dep.name:
                raise not_found(f"The deployment name '{name}' does not exist.")
            return self.dep

        def create_service(self, name: str, label: str, description: str, location: str) -> None:
            if name.lower() in self.services:
                raise conflict("The specified DNS name is already taken.")

        def update_service(self, name: str, label: str | None, description: str | None) -> None:
            self.service(name)

        def delete_service(self, name: str) -> None:
            self.service(name)
            raise conflict("The hosted service has deployments: delete them first.")

        def update_status(self, service: str, name: str, status: str) -> str:
            self.find(service, name=name)
            if status.strip().lower() not in ("running", "suspended"):
                raise bad_request("bad status")
            return MGMT_OPERATION

        def change_configuration(self, service: str, *, slot: str | None, name: str | None, encoded: str) -> str:
            self.find(service, slot=slot, name=name)
            decode_base64_text(encoded, "configuration")
            return MGMT_OPERATION

        def delete_deployment(self, service: str, *, slot: str | None, name: str | None) -> str:
            self.find(service, slot=slot, name=name)
            return MGMT_OPERATION

        def swap(self, service: str, production: str | None, source: str) -> str:
            self.service(service)
            raise not_found(f"The deployment name '{source}' does not exist.")

        def create_deployment(self, service: str, slot: str, **kw: Any) -> str:
            self.service(service)
            if slot.lower() not in ("production", "staging"):
                raise bad_request("bad slot")
            decode_base64_text(kw["encoded_configuration"], "configuration")
            if slot.lower() == "production":
                raise conflict("There is already a deployment in the Production slot.")
            raise bad_request("The package URL is not a blob of this fabric's storage.")

        def upgrade_deployment(self, service: str, *, slot: str | None, name: str | None, **kw: Any) -> str:
            self.find(service, slot=slot, name=name)
            if str(kw["mode"]).lower() not in ("auto", "manual", "simultaneous"):
                raise bad_request("bad mode")
            decode_base64_text(kw["encoded_configuration"], "configuration")
            raise bad_request("The package URL is not a blob of this fabric's storage.")

        def walk_upgrade_domain(self, service: str, *, slot: str | None, name: str | None, domain: str) -> str:
            self.find(service, slot=slot, name=name)
            raise bad_request("no manual upgrade in progress")

        def delete_role_instances(self, service: str, *, slot: str | None, name: str | None, names: list[str]) -> str:
            self.find(service, slot=slot, name=name)
            if names != ["WebVM_IN_0"]:
                raise bad_request("not instances of the deployment")
            raise bad_request("A role must keep at least one instance.")

        def add_certificate(self, service: str, data_b64: str, certificate_format: str, password: str) -> str:
            self.service(service)
            certificate_der(data_b64, certificate_format, password)  # parsed, not kept: answers stay the same
            return MGMT_OPERATION

        def delete_certificate(self, service: str, algorithm: str, thumbprint: str) -> str:
            self.certificate(service, algorithm, thumbprint)
            return MGMT_OPERATION

    return Services()


MGMT_SUBSCRIPTION = "00000000-0000-0000-0000-0000000000aa"
MGMT_TOKEN = "fuzz-token-0123456789"  # plain HTTP needs ``Authorization: Bearer <token>`` (the seeds send it)
_MGMT: Any = None


class _Captured(Exception):
    pass


def _serve_raw(handler: Any, server: object, data: bytes, logger: str) -> tuple[bytes, bytes, bytes]:
    """One raw HTTP request through an http.server handler without a socket: (status line, head, body).

    An exception the server logged (and turned into a 500) is re-raised: a request parser bug, not a client
    error; so is any 500 answer."""
    import logging

    handler.server = server
    handler.client_address = ("127.0.0.1", 50000)
    handler.request = None
    handler.rfile = io.BytesIO(data)
    handler.wfile = io.BytesIO()
    handler.close_connection = True
    failures: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info:
                failures.append(record)

    keep = Keep()
    log = logging.getLogger(logger)
    log.addHandler(keep)
    try:
        with sandboxed(sandbox(), deny=False):
            handler.handle_one_request()
    finally:
        log.removeHandler(keep)
    if failures:
        exc_info = failures[0].exc_info
        assert exc_info is not None and exc_info[1] is not None
        raise exc_info[1]
    raw = handler.wfile.getvalue()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 500 " in status:
        raise AssertionError(f"the server answered {status!r} to a request")
    return status, head, body


def _header_names(head: bytes) -> list[bytes]:
    return sorted(line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")[1:])


def _mgmt(data: bytes) -> object:
    import threading

    from harness.fabric.mgmt.server import ManagementServer, _Handler

    global _MGMT
    if _MGMT is None:
        _MGMT = ManagementServer(_mgmt_services(), subscription_id=MGMT_SUBSCRIPTION, http_port=0, token=MGMT_TOKEN)
        _MGMT._created = "2026-01-01T00:00:00Z"
    server = _MGMT
    server.subscription_log.clear()  # List Subscription Operations answers the same whatever ran before

    class FakeServer:
        scheme = "http"
        api = server
        server_address = ("127.0.0.1", 8443)
        connections_lock = threading.Lock()
        connections: set[object] = set()

    status, head, body = _serve_raw(_Handler.__new__(_Handler), FakeServer(), data, "harness.fabric.mgmt")
    stable_body = body if b"RequestId" not in body else b"<operation>"
    return digest(status, _header_names(head), stable_body[:4096] if b"<Deployment" not in body else len(body))


CONTROL_TOKEN = "fuzz-control-token-0123"  # the seeds send ``X-Vmr-Token: <it>``
_CONTROL: Any = None


class _ControlFake:
    """The controller as the control API sees it: runtime, readiness, faults, stopping."""

    KINDS = ("busy", "crash", "kill-backend", "mgmt-409", "mgmt-500", "mgmt-timeout", "winrm-slow")

    def __init__(self) -> None:
        import threading

        self.runtime = {"state": "running", "instances": {"WebVM_IN_0": {"status": "ReadyRole"}}}
        self.stopping = threading.Event()
        self.faults = self

    def write_ready(self) -> None:
        return None

    def inject(self, kind: str, target: str | None, seconds: float, delay_ms: int) -> Any:
        from harness.fabric.faults import FaultError

        if kind not in self.KINDS:
            raise FaultError(f"unknown fault {kind!r}")
        if target is not None and target not in self.runtime["instances"]:
            raise FaultError(f"no instance {target!r}")
        described = {"id": "f1", "kind": kind, "target": target, "seconds": seconds, "delay_ms": delay_ms}

        class Fault:
            def describe(self) -> dict[str, Any]:
                return described

        return Fault()

    def clear(self) -> None:
        return None

    def remove(self, fault_id: str) -> bool:
        return fault_id == "f1"


def _control(data: bytes) -> object:
    from harness.fabric.control import ControlServer

    global _CONTROL
    if _CONTROL is None:  # the handler class without binding a socket: ControlServer._handler on a stand-in
        stand_in = type("Stand", (), {})()
        stand_in.c = _ControlFake()
        stand_in.token_bytes = CONTROL_TOKEN.encode()
        _CONTROL = ControlServer._handler(stand_in)
    handler_cls = _CONTROL

    class FakeServer:
        server_address = ("127.0.0.1", 8444)

    status, head, body = _serve_raw(handler_cls.__new__(handler_cls), FakeServer(), data, "vmrole.fabric.control")
    return digest(status, _header_names(head), body[:4096])


def _winrm(data: bytes) -> object:
    from harness.fabric.winrm.soap import SoapError, parse_request

    request = parse_request(data)
    out: list[object] = [
        request.action, request.message_id, request.resource_uri, request.shell_id, request.operation_timeout,
        sorted(request.options.items()),
    ]  # fmt: skip
    for accessor in (
        request.command_line,
        request.receive_command_id,
        request.desired_streams,
        request.signal,
        request.send_streams,
    ):
        try:
            out.append(accessor())
        except SoapError as exc:
            out.append((exc.status, exc.code, exc.subcode, exc.reason))
    return digest(out)


def _none() -> tuple[type[BaseException], ...]:
    return ()


def _unreadable() -> tuple[type[BaseException], ...]:
    from harness.readers.errors import Unreadable

    return (Unreadable,)


def _target_errors() -> tuple[type[BaseException], ...]:
    from harness.live.errors import TargetError

    return (TargetError,)


def _soap_errors() -> tuple[type[BaseException], ...]:
    from harness.fabric.winrm.soap import SoapError

    return (SoapError,)


READERS = "harness/readers/"
IMAGE = "harness/readers/image/"


def _targets() -> dict[str, Target]:
    unreadable = _unreadable
    items = [
        Target(
            "xml", "harness.readers.xmlsafe.parse_xml(data, path)", "harness.readers.errors.Unreadable",
            _xml, unreadable, (READERS + "xmlsafe.py",),
        ),
        Target(
            "csdef", "harness.readers.servicemodel.parse_definition(data, artefact)",
            "harness.readers.errors.Unreadable", _csdef, unreadable,
            (READERS + "xmlsafe.py", READERS + "servicemodel.py"),
        ),
        Target(
            "cscfg", "harness.readers.servicemodel.parse_configuration(data, artefact)",
            "harness.readers.errors.Unreadable", _cscfg, unreadable,
            (READERS + "xmlsafe.py", READERS + "servicemodel.py"),
        ),
        Target(
            "zip", "harness.readers.zipsafe: open_zip, check_listing, read_prefix, sha256_member, read_bounded, "
            "stored_window", "Unreadable (open_zip, check_listing); Skipped and zipsafe.CORRUPT (member reads, "
            "documented: callers turn CORRUPT into Unreadable)", _zip, _zip_errors, (READERS + "zipsafe.py",),
        ),
        Target(
            "cspkg", "harness.readers.cspkg.read_package(artefact)  (bytes written to a tmpfs file)",
            "harness.readers.errors.Unreadable", _cspkg, unreadable,
            (READERS + "cspkg.py", READERS + "zipsafe.py", READERS + "keysniff.py"), max_len=2 * MIB,
            memory_allowance=256 * MIB,  # cspkg.MAX_NESTED_IN_MEMORY: a compressed nested part is inflated
        ),
        Target(
            "container", "harness.readers.image.container.open_disk(path) + Disk.read_at  (tmpfs file; raw or "
            "sparse input; parent.vhd in the sandbox; opens outside the sandbox refused)",
            "harness.readers.errors.Unreadable", _container, unreadable,
            (IMAGE + "container.py", IMAGE + "source.py"), max_len=256 * 1024,
        ),
        Target(
            "partitions", "harness.readers.image.partitions.read_partitions(source)  (in-memory ByteSource)",
            "harness.readers.errors.Unreadable", _partitions, unreadable, (IMAGE + "partitions.py",),
        ),
        Target(
            "ntfs", "harness.readers.image.ntfs.NtfsVolume(source).inventory(), walk, lookup, read_file  "
            "(in-memory sparse ByteSource)", "harness.readers.errors.Unreadable", _ntfs, unreadable,
            (IMAGE + "ntfs.py",), max_len=256 * 1024,
        ),
        Target(
            "decompress", "harness.readers.image.decompress: lznt1 / xpress_huffman / lzx (libfwnt, wimlib) on one "
            "compression unit or WOF chunk (byte 0: format, bytes 1-2: output size cut)",
            "harness.readers.image.decompress.CorruptData", _decompress, _corrupt_data,
            (IMAGE + "decompress.py",), max_len=64 * 1024,
        ),
        Target(
            "regf", "harness.readers.image.regf.Hive(data, label): key, subkeys, values, as_python, check_cells",
            "harness.readers.errors.Unreadable", _regf, unreadable, (IMAGE + "regf.py",), max_len=128 * 1024,
        ),
        Target(
            "firewall", "harness.facts.image_firewall: parse_rule, parse_legacy_open_port, effective_policy, "
            "check_port", "none: documented never to raise on hostile data", _firewall, _none,
            ("harness/facts/image_firewall.py",),
        ),
        Target(
            "unattend", "harness.extraction.unattend.parse_answer_file(data, path)",
            "none: documented never to raise (AnswerFile.problem is set)", _unattend, _none,
            ("harness/extraction/unattend.py", READERS + "xmlsafe.py"),
        ),
        Target(
            "target",
            "harness.live.target.load_target(path) + Target.masker() + cleartext_credentials(target)  "
            "(tmpfs file; fake environment, {env: VMR_FUZZ_CONN} = the input; "
            "nothing outside the sandbox opened, no socket, no process)", "harness.live.errors.TargetError",
            _target, _target_errors, ("harness/live/target.py",), setup=_target_setup,
        ),
        Target(
            "mgmt", "harness.fabric.mgmt.server: _Handler.handle_one_request -> ManagementServer._handle/_route "
            "-> mgmt.operations.Router (raw HTTP request bytes: request line, headers, XML bodies through "
            "defusedxml, base64 configurations; a stateless stand-in for the fabric's hosted services)",
            "none escapes; client errors must be 4xx (an internal 500 with a logged exception is a crash)",
            _mgmt, _none,
            ("harness/fabric/mgmt/server.py", "harness/fabric/mgmt/xml.py", "harness/fabric/mgmt/operations.py"),
        ),
        Target(
            "control", "harness.fabric.control: the control API's handler (raw HTTP request bytes: token check, "
            "Content-Length, JSON bodies of POST /faults) on a stand-in controller",
            "none escapes; client errors must be 4xx (an internal 500 with a logged exception is a crash)",
            _control, _none, ("harness/fabric/control.py",),
        ),
        Target(
            "winrm", "harness.fabric.winrm.soap.parse_request(data) + Request accessors",
            "harness.fabric.winrm.soap.SoapError (answered as a 400 fault)", _winrm, _soap_errors,
            ("harness/fabric/winrm/soap.py",),
        ),
    ]  # fmt: skip
    return {t.name: t for t in items}


TARGETS = _targets()


# ---- the contract ----------------------------------------------------------------------------------------------


@dataclass
class Stats:
    execs: int = 0
    errors: int = 0  # inputs rejected with the documented error
    max_cpu: float = 0.0
    max_cpu_len: int = 0
    max_len: int = 0


class Contract:
    """``TestOneInput`` for one target, checking the contract (see the module docstring)."""

    def __init__(
        self,
        target: Target,
        *,
        determinism_every: int = DETERMINISM_EVERY,
        hang_seconds: float = HANG_SECONDS,
        track_memory: bool = False,
    ) -> None:
        self.target = target
        self.determinism_every = determinism_every
        self.hang_seconds = hang_seconds
        #: Trace allocations (tracemalloc: slow, for replays) and fail on a blow-up (see :class:`MemoryBlowup`).
        self.track_memory = track_memory
        self.stats = Stats()
        self.errors = target.errors()
        if target.setup is not None:
            target.setup()

    def _once(self, data: bytes) -> object:
        try:
            return self.target.run(data)
        except self.errors as exc:
            self.stats.errors += 1
            return ("error", *_error_summary(exc))

    def _traced(self, data: bytes) -> object:
        import tracemalloc

        decoded = sparse_decode(data)
        size = max(len(data), decoded[1] if decoded else 0)
        limit = 32 * MIB + 8 * size + self.target.memory_allowance
        tracemalloc.start()
        try:
            result = self._once(data)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        if peak > limit:
            raise MemoryBlowup(f"{self.target.name}: {peak / MIB:.0f} MiB allocated for a {size}-byte input")
        return result

    def __call__(self, data: bytes) -> None:
        stats = self.stats
        stats.execs += 1
        stats.max_len = max(stats.max_len, len(data))
        start = time.process_time()
        first = self._traced(data) if self.track_memory else self._once(data)
        spent = time.process_time() - start
        if spent > stats.max_cpu:
            stats.max_cpu, stats.max_cpu_len = spent, len(data)
        if spent > self.hang_seconds and len(data) < MIB:
            raise Hang(f"{self.target.name}: {spent:.2f} s of CPU for a {len(data)}-byte input")
        if self.determinism_every and stats.execs % self.determinism_every == 0:
            second = self._once(data)
            if second != first:
                raise Nondeterministic(f"{self.target.name}: {first!r} then {second!r}")


def corpus_dir(name: str) -> Path:
    return FUZZ_DIR / "corpus" / name


def regressions_dir(name: str) -> Path:
    return FUZZ_DIR / "regressions" / name


def inputs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
