"""Build Windows-like disk images from a declarative spec with real tools only (no loop mounts, no FUSE).

Pipeline (each step a real tool, see the readers' CONTRACT.md):

1. write the spec's tree into a temporary directory (hives serialised with :func:`build_hive`), every
   file and directory stamped with ``spec.timestamp``;
2. ``wimlib-imagex capture DIR out.wim Windows --compress=none --no-acls`` (hard links are captured as
   hard links);
3. ``truncate`` a partition file, ``mkntfs -F -Q -q -T -s 512 -c 4096 -p START -H 255 -S 63 -L LABEL``;
4. ``wimlib-imagex apply out.wim 1 part`` writes the unmounted NTFS volume directly;
5. ntfs-3g stamps every file's "MFT changed" time with the wall clock: those fields are reset to the
   file's modification time and the volume serial is derived from the spec, so the same spec gives the
   same raw disk, byte for byte;
6. a sparse disk file, ``sfdisk`` (MBR or GPT, disk signature / GUIDs derived from the spec key), and the
   partition copied in (holes stay holes); ``partition_style="none"`` keeps the bare volume as the disk;
7. ``qemu-img convert`` to fixed/dynamic VHD (``force_size=on``: the virtual size stays exactly
   ``disk_size``) or dynamic VHDX.

Images are cached by :meth:`ImageSpec.key` and format under ``cache_dir`` (default: ``$VMR_IMAGE_CACHE`` or
``~/.cache/vmrole-harness/extraction``). A build holds an ``flock`` on a per-image lock file and renames the
finished file into place, so parallel builders (pytest-xdist workers) of one image wait for the first one
and reuse its file. **A returned path is a shared cache file: copy it before changing it.**
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import struct
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from harness.testing.hivewriter import HiveSpec, RegValue, build_hive

__all__ = [
    "DEFAULT_TIMESTAMP",
    "FACTORY_VERSION",
    "FORMATS",
    "MIB",
    "PARTITION_STYLES",
    "TOOLS",
    "ImageBuildError",
    "ImageSpec",
    "build_image",
    "default_cache_dir",
    "filetime",
    "generate_many_files",
    "missing_tools",
    "volume_extent",
    "write_tree",
]

#: Bump when the pipeline changes what it writes: every cached image is then rebuilt.
FACTORY_VERSION = 1
FORMATS = ("raw", "vhd-fixed", "vhd-dynamic", "vhdx")
PARTITION_STYLES = ("mbr", "gpt", "none")
TOOLS = ("wimlib-imagex", "mkntfs", "sfdisk", "qemu-img")
MIB = 1024 * 1024
SECTOR = 512
#: 2013-02-01T12:00:00Z: when the fixture images were "sysprepped".
DEFAULT_TIMESTAMP = 1359720000

_SUFFIX = {"raw": "raw", "vhd-fixed": "fixed.vhd", "vhd-dynamic": "dynamic.vhd", "vhdx": "vhdx"}
_QEMU_ARGS = {
    "vhd-fixed": ("-O", "vpc", "-o", "subformat=fixed,force_size=on"),
    "vhd-dynamic": ("-O", "vpc", "-o", "subformat=dynamic,force_size=on"),
    "vhdx": ("-O", "vhdx", "-o", "subformat=dynamic"),
}
_GPT_BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
_GPT_TAIL = 33 * SECTOR  # backup entry array (32 sectors) + backup header
_BAD_NAME = re.compile(r'[<>:"|?*\x00-\x1f]')

Content = bytes | str
#: In :meth:`ImageSpec.with_changes`: key path -> {value name -> RegValue, or None to delete it}, or None to
#: delete the key and every subkey.
HiveChanges = Mapping[str, Mapping[str, RegValue | None] | None]


class ImageBuildError(RuntimeError):
    """A tool of the pipeline failed (or is missing): names the tool and carries its stderr."""

    def __init__(self, tool: str, message: str, *, returncode: int | None = None, stderr: str = "") -> None:
        self.tool = tool
        self.returncode = returncode
        self.stderr = stderr
        detail = f"\n{stderr.strip()[-4000:]}" if stderr.strip() else ""
        super().__init__(f"{tool}: {message}{detail}")


# --------------------------------------------------------------------------------------------- the spec


def _norm_path(path: str, what: str) -> str:
    if not isinstance(path, str):
        raise TypeError(f"{what} path must be a str, not {type(path).__name__}: {path!r}")
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    if not parts:
        raise ValueError(f"{what} path is empty: {path!r}")
    norm = "/".join(parts)
    bad = _BAD_NAME.search(norm)
    if bad:
        raise ValueError(f"{what} path {path!r} holds a character Windows forbids: {bad.group()!r}")
    if "/." in f"/{norm}" or " /" in f"{norm}/" or norm.endswith((" ", ".")):
        for part in parts:
            if part in (".", "..") or part.endswith((" ", ".")):
                raise ValueError(f"{what} path {path!r}: {part!r} is not a valid Windows name")
    return norm


def _fold(path: str) -> str:
    return path.casefold()


def _freeze_hive(hive: Mapping[str, Mapping[str, RegValue]], where: str) -> Mapping[str, Mapping[str, RegValue]]:
    out: dict[str, Mapping[str, RegValue]] = {}
    spelling: dict[str, str] = {}  # folded key path -> first spelling
    for key, values in hive.items():
        if not isinstance(key, str):
            raise TypeError(f"hive {where}: key path must be a str: {key!r}")
        norm = "\\".join(p for p in key.split("\\") if p)
        vals: dict[str, RegValue] = {}
        for name, value in values.items():
            if not isinstance(value, RegValue):
                raise TypeError(f"hive {where}, key {key!r}: value {name!r} is not a RegValue: {value!r}")
            vals[name] = value
        existing = spelling.setdefault(_fold(norm), norm)
        if existing in out:
            merged = dict(out[existing])
            merged.update(vals)
            out[existing] = MappingProxyType(merged)
        else:
            out[norm] = MappingProxyType(vals)
    return MappingProxyType(out)


@dataclass(frozen=True, eq=True)
class ImageSpec:
    """A disk image: NTFS volume contents plus the container layout.

    Paths are volume paths with "/" (a "\\" is accepted and converted), relative to the volume root.
    Directory components are matched case-insensitively when the tree is written (the first spelling in
    sorted order wins), as on Windows; two files whose paths differ only in case are an error.
    """

    files: Mapping[str, Content] = field(default_factory=dict)
    dirs: tuple[str, ...] = ()
    hives: Mapping[str, HiveSpec] = field(default_factory=dict)
    hardlinks: Mapping[str, str] = field(default_factory=dict)
    partition_style: str = "mbr"
    disk_size: int = 64 * MIB
    partition_start: int = MIB
    volume_label: str = "Windows"
    #: Every file's and directory's times (Unix seconds), and the hives' key timestamps.
    timestamp: int = DEFAULT_TIMESTAMP

    def __post_init__(self) -> None:
        files: dict[str, bytes] = {}
        seen: dict[str, str] = {}
        for path, content in self.files.items():
            norm = _norm_path(path, "file")
            if isinstance(content, str):
                content = content.encode("utf-8")
            elif isinstance(content, bytearray | memoryview):
                content = bytes(content)
            if not isinstance(content, bytes):
                raise TypeError(f"file {path!r}: content must be bytes or str, not {type(content).__name__}")
            if _fold(norm) in seen:
                raise ValueError(f"files {seen[_fold(norm)]!r} and {norm!r} differ only in case")
            seen[_fold(norm)] = norm
            files[norm] = content
        hives: dict[str, HiveSpec] = {}
        for path, hive in self.hives.items():
            norm = _norm_path(path, "hive")
            if _fold(norm) in seen:
                raise ValueError(f"hive {norm!r} clashes with {seen[_fold(norm)]!r}")
            seen[_fold(norm)] = norm
            hives[norm] = _freeze_hive(hive, norm)
        hardlinks: dict[str, str] = {}
        for name, target in self.hardlinks.items():
            norm, tnorm = _norm_path(name, "hard link"), _norm_path(target, "hard link target")
            if _fold(norm) in seen:
                raise ValueError(f"hard link {norm!r} clashes with {seen[_fold(norm)]!r}")
            if _fold(tnorm) not in seen or _fold(tnorm) in {_fold(h) for h in hardlinks}:
                raise ValueError(f"hard link {norm!r}: target {tnorm!r} is not a file or hive of the spec")
            seen[_fold(norm)] = norm
            hardlinks[norm] = seen[_fold(tnorm)]
        dirs = tuple(dict.fromkeys(_norm_path(d, "dir") for d in self.dirs))
        for d in dirs:
            if _fold(d) in seen:
                raise ValueError(f"directory {d!r} is also a file")
        # A file may not be the ancestor directory of another entry.
        checked: set[str] = set()
        for path in [*seen.values(), *dirs]:
            ancestor = _fold(path).rpartition("/")[0]
            while ancestor and ancestor not in checked:
                if ancestor in seen:
                    raise ValueError(f"{seen[ancestor]!r} is a file but {path!r} needs it to be a directory")
                checked.add(ancestor)
                ancestor = ancestor.rpartition("/")[0]
        if self.partition_style not in PARTITION_STYLES:
            raise ValueError(f"partition_style must be one of {PARTITION_STYLES}, not {self.partition_style!r}")
        if self.disk_size <= 0 or self.disk_size % SECTOR:
            raise ValueError(f"disk_size must be a positive multiple of {SECTOR}: {self.disk_size}")
        if self.partition_style != "none":
            minimum = 34 * SECTOR if self.partition_style == "gpt" else SECTOR
            if self.partition_start % SECTOR or self.partition_start < minimum:
                raise ValueError(f"partition_start must be a multiple of {SECTOR} and >= {minimum}")
        if not 1 <= len(self.volume_label) <= 32:
            raise ValueError(f"volume_label must be 1..32 characters: {self.volume_label!r}")
        object.__setattr__(self, "files", MappingProxyType(files))
        object.__setattr__(self, "hives", MappingProxyType(hives))
        object.__setattr__(self, "hardlinks", MappingProxyType(hardlinks))
        object.__setattr__(self, "dirs", dirs)

    def __hash__(self) -> int:
        return hash(self.key())

    # ------------------------------------------------------------------ lookups (case-insensitive)
    def file(self, path: str) -> bytes | None:
        """The content of a file of the spec (path matched case-insensitively), or None."""
        found = _find(self.files, _norm_path(path, "file"))
        return None if found is None else self.files[found]  # type: ignore[return-value]

    def hive(self, path: str) -> HiveSpec | None:
        """A hive of the spec by volume path or by short name ("SYSTEM", "SOFTWARE", "NTUSER.DAT" of ...)."""
        found = self._hive_path(path)
        return None if found is None else self.hives[found]

    def value(self, hive: str, key: str, name: str) -> RegValue | None:
        """One registry value of a hive of the spec (key and value names matched case-insensitively)."""
        spec = self.hive(hive)
        if spec is None:
            return None
        kfound = _find(spec, "\\".join(p for p in key.split("\\") if p))
        if kfound is None:
            return None
        vfound = _find(spec[kfound], name)
        return None if vfound is None else spec[kfound][vfound]

    def _hive_path(self, path: str) -> str | None:
        try:
            found = _resolve_hive(self.hives, path)
        except KeyError:
            return None
        return found if found in self.hives else None

    # ------------------------------------------------------------------ changes
    def with_changes(
        self,
        *,
        files: Mapping[str, Content | None] | None = None,
        remove: Iterable[str] | str = (),
        hives: Mapping[str, HiveChanges | None] | None = None,
        dirs: Iterable[str] = (),
        hardlinks: Mapping[str, str | None] | None = None,
        **settings: Any,
    ) -> ImageSpec:
        """A modified copy.

        - ``files``: add or replace files (a path matching an existing file case-insensitively replaces it;
          a path of a hive replaces the hive with these raw bytes); ``None`` as content removes the file.
        - ``remove``: volume paths to take out: a file, a hive, a hard link, or a directory with everything
          under it (case-insensitive).
        - ``hives``: per hive (volume path, or a short name such as ``"SYSTEM"``/``"SOFTWARE"`` when unique):
          ``{key path: {value name: RegValue | None}}`` merges values into the key (None deletes the value),
          ``{key path: None}`` deletes the key and its subkeys; ``{hive: None}`` deletes the hive file.
          A hive path not in the spec creates a new hive (replacing a plain file of that path).
        - ``dirs`` adds empty directories, ``hardlinks`` adds (or with None removes) hard links.
        - any other keyword (``partition_style``, ``disk_size``, ``volume_label``, ...) replaces that field.
        """
        if isinstance(remove, str):
            remove = (remove,)
        new_files: dict[str, Content] = dict(self.files)
        new_hives: dict[str, HiveSpec] = dict(self.hives)
        new_links: dict[str, str] = dict(self.hardlinks)
        new_dirs = list(self.dirs)
        for path in remove:
            norm = _fold(_norm_path(path, "remove"))
            before = len(new_files) + len(new_hives) + len(new_links) + len(new_dirs)
            for table in (new_files, new_hives, new_links):
                for p in [p for p in table if _fold(p) == norm or _fold(p).startswith(norm + "/")]:
                    del table[p]
            new_dirs = [d for d in new_dirs if not (_fold(d) == norm or _fold(d).startswith(norm + "/"))]
            if len(new_files) + len(new_hives) + len(new_links) + len(new_dirs) == before:
                raise KeyError(f"remove: {path!r} is not in the spec")
        for path, content in (files or {}).items():
            norm = _norm_path(path, "file")
            shadowed = _find(new_hives, norm)
            if shadowed is not None and content is not None:  # raw bytes replace a hive (corruption tests)
                del new_hives[shadowed]
            existing = _find(new_files, norm)
            if existing is not None:
                del new_files[existing]
            if content is not None:
                new_files[existing or norm] = content
            elif existing is None:
                raise KeyError(f"files: {path!r} is not in the spec, cannot remove it")
        for path, changes in (hives or {}).items():
            target = _resolve_hive(new_hives, path)
            if changes is None:
                if target not in new_hives:
                    raise KeyError(f"hives: {path!r} is not in the spec, cannot remove it")
                del new_hives[target]
                continue
            shadowed = _find(new_files, target)
            if shadowed is not None:  # a hive replaces a plain file of the same path
                del new_files[shadowed]
            new_hives[target] = _apply_hive_changes(new_hives.get(target, {}), changes, target)
        for name, link_target in (hardlinks or {}).items():
            norm = _norm_path(name, "hard link")
            existing = _find(new_links, norm)
            if existing is not None:
                del new_links[existing]
            if link_target is not None:
                new_links[existing or norm] = link_target
        new_dirs.extend(dirs)
        unknown = set(settings) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"with_changes: unknown fields {sorted(unknown)!r}")
        return replace(self, files=new_files, hives=new_hives, hardlinks=new_links, dirs=tuple(new_dirs), **settings)

    def _all_paths(self) -> Iterator[str]:
        yield from self.files
        yield from self.hives
        yield from self.hardlinks
        yield from self.dirs

    # ------------------------------------------------------------------ identity
    def canonical(self) -> dict[str, Any]:
        """Everything that reaches the image, in a JSON-able canonical form (file contents as sha256)."""
        digests: dict[int, str] = {}  # generated specs share content objects: hash each once

        def digest(content: bytes) -> str:
            found = digests.get(id(content))
            if found is None:
                found = digests[id(content)] = hashlib.sha256(content).hexdigest()
            return found

        return {
            "factory": FACTORY_VERSION,
            "files": sorted((p, digest(c)) for p, c in self.files.items()),  # type: ignore[arg-type]
            "dirs": sorted(self.dirs),
            "hives": sorted(
                (p, [(k, [(n, v.type, v.data.hex()) for n, v in vals.items()]) for k, vals in hive.items()])
                for p, hive in self.hives.items()
            ),
            "hardlinks": sorted(self.hardlinks.items()),
            "partition_style": self.partition_style,
            "disk_size": self.disk_size,
            "partition_start": self.partition_start,
            "volume_label": self.volume_label,
            "timestamp": self.timestamp,
        }

    def key(self) -> str:
        """A stable sha256 (hex) over :meth:`canonical`: the cache key (computed once per instance)."""
        cached = self.__dict__.get("_key")
        if cached is None:
            blob = json.dumps(self.canonical(), separators=(",", ":"), ensure_ascii=True).encode("ascii")
            cached = hashlib.sha256(blob).hexdigest()
            object.__setattr__(self, "_key", cached)
        return cached


def _find(table: Mapping[str, Any], path: str) -> str | None:
    if path in table:
        return path
    folded = _fold(path)
    return next((p for p in table if _fold(p) == folded), None)


def _resolve_hive(hives: Mapping[str, Any], path: str) -> str:
    """The hive path in ``hives`` for a volume path or a unique short name; a volume path not there is
    returned normalised (a new hive); an unknown short name is a KeyError."""
    norm = _norm_path(path, "hive")
    found = _find(hives, norm)
    if found is not None:
        return found
    if "/" in norm:
        return norm
    matches = [p for p in hives if _fold(p.rsplit("/", 1)[-1]) == _fold(norm)]
    if len(matches) > 1:
        raise ValueError(f"hive name {path!r} is ambiguous: {matches!r}; give the volume path")
    if not matches:
        raise KeyError(f"no hive named {path!r} in the spec (give a volume path to add one)")
    return matches[0]


def _apply_hive_changes(hive: HiveSpec, changes: HiveChanges, where: str) -> dict[str, Mapping[str, RegValue]]:
    out: dict[str, dict[str, RegValue]] = {k: dict(v) for k, v in hive.items()}
    for key, values in changes.items():
        norm = "\\".join(p for p in key.split("\\") if p)
        folded = _fold(norm)
        if values is None:
            doomed = [k for k in out if _fold(k) == folded or _fold(k).startswith(folded + "\\")]
            if not doomed:
                raise KeyError(f"hive {where}: key {key!r} is not in the spec, cannot remove it")
            for k in doomed:
                del out[k]
            continue
        existing = _find(out, norm)
        target = out.setdefault(existing or norm, {})
        for name, value in values.items():
            vname = _find(target, name)
            if value is None:
                if vname is None:
                    raise KeyError(f"hive {where}: value {key}\\{name} is not in the spec, cannot remove it")
                del target[vname]
            else:
                if vname is not None:
                    del target[vname]
                target[vname or name] = value
    return dict(out.items())


# --------------------------------------------------------------------------------------------- tools


def missing_tools() -> list[str]:
    """The pipeline tools not found on this machine (tests skip on a non-empty list)."""
    return [t for t in TOOLS if _which(t) is None]


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        candidate = Path(folder, name)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _run(tool: str, *args: str | Path, stdin: str | None = None) -> str:
    exe = _which(tool)
    if exe is None:
        raise ImageBuildError(tool, "not found (Debian: wimtools, ntfs-3g, fdisk, qemu-utils)")
    try:
        done = subprocess.run(
            [exe, *map(str, args)],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except OSError as exc:
        raise ImageBuildError(tool, f"could not run: {exc}") from exc
    if done.returncode != 0:
        raise ImageBuildError(
            tool,
            f"failed with exit code {done.returncode}: {' '.join(map(str, args))}",
            returncode=done.returncode,
            stderr=_tool_output(done.stderr, done.stdout),
        )
    return done.stdout


def _tool_output(stderr: str | None, stdout: str | None) -> str:
    """A tool's error text: stderr, else the end of stdout without progress lines."""
    if stderr and stderr.strip():
        return stderr
    lines = [line for line in (stdout or "").replace("\r", "\n").splitlines() if line.strip() and "% done" not in line]
    return "\n".join(lines[-20:])


# --------------------------------------------------------------------------------------------- the tree


def filetime(unix_seconds: int) -> int:
    """Unix seconds -> Windows FILETIME (100 ns ticks since 1601-01-01)."""
    return (unix_seconds + 11644473600) * 10_000_000


def write_tree(spec: ImageSpec, root: Path) -> None:
    """Write the spec's volume contents under ``root`` (an existing empty directory)."""
    base = os.fspath(root)
    created: dict[str, str] = {"": base}  # folded volume path of a directory -> its path on disk

    def ensure_dir(path: str) -> str:
        folded = _fold(path)
        found = created.get(folded)
        if found is not None:
            return found
        parent, _, leaf = path.rpartition("/")
        target = f"{ensure_dir(parent)}/{leaf}"
        os.mkdir(target)
        created[folded] = target
        return target

    def place(path: str) -> str:
        parent, _, leaf = path.rpartition("/")
        return f"{ensure_dir(parent)}/{leaf}"

    stamp = (spec.timestamp, spec.timestamp)
    for d in sorted(spec.dirs):
        ensure_dir(d)
    entries: list[tuple[str, bytes]] = sorted(spec.files.items())  # type: ignore[arg-type]
    hive_time = filetime(spec.timestamp)
    entries += [(p, build_hive(h, timestamp=hive_time)) for p, h in sorted(spec.hives.items())]
    written: dict[str, str] = {}
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for path, content in entries:
        target = place(path)
        fd = os.open(target, flags, 0o644)
        try:
            if content:
                os.write(fd, content)
            os.utime(fd, stamp)
        finally:
            os.close(fd)
        written[_fold(path)] = target
    for name, link_target in sorted(spec.hardlinks.items()):
        os.link(written[_fold(link_target)], place(name))
    for folder in sorted(created.values(), key=lambda p: -p.count("/")):
        os.utime(folder, stamp)


# --------------------------------------------------------------------------------------------- layout


def volume_extent(spec: ImageSpec) -> tuple[int, int]:
    """(offset, size) in bytes of the NTFS volume inside the raw disk built from ``spec``."""
    if spec.partition_style == "none":
        return 0, spec.disk_size
    end = spec.disk_size - (_GPT_TAIL if spec.partition_style == "gpt" else 0)
    size = end - spec.partition_start
    if spec.partition_style == "gpt" or (spec.disk_size % MIB == 0 and spec.partition_start % MIB == 0):
        size -= size % MIB  # whole MiB, as Windows' disk management aligns partitions
    if size < 2 * MIB:
        raise ValueError(f"disk_size {spec.disk_size} leaves no room for a volume after {spec.partition_start}")
    return spec.partition_start, size


def _derived(key: str, purpose: str, nbytes: int) -> bytes:
    return hashlib.sha256(f"{key}:{purpose}".encode()).digest()[:nbytes]


def _derived_guid(key: str, purpose: str) -> str:
    return str(uuid.UUID(bytes=_derived(key, purpose, 16), version=4)).upper()


def _sfdisk_script(spec: ImageSpec, key: str) -> str:
    start, size = volume_extent(spec)
    if spec.partition_style == "mbr":
        signature = int.from_bytes(_derived(key, "mbr-signature", 4), "little") or 1
        return (
            f"label: dos\nlabel-id: 0x{signature:08x}\nunit: sectors\nsector-size: {SECTOR}\n\n"
            f"start={start // SECTOR}, size={size // SECTOR}, type=7, bootable\n"
        )
    return (
        f"label: gpt\nlabel-id: {_derived_guid(key, 'gpt-disk')}\nunit: sectors\nsector-size: {SECTOR}\n"
        f"first-lba: 34\nlast-lba: {spec.disk_size // SECTOR - 34}\n\n"
        f"start={start // SECTOR}, size={size // SECTOR}, type={_GPT_BASIC_DATA}, "
        f'uuid={_derived_guid(key, "gpt-partition-1")}, name="Basic data partition"\n'
    )


def _copy_sparse(src: Path, dst: Path, offset: int) -> None:
    """Copy ``src`` into ``dst`` at ``offset``, skipping holes and all-zero blocks (``dst`` stays sparse)."""
    chunk = 4 * MIB
    zero = bytes(chunk)
    with open(src, "rb") as fin, open(dst, "r+b") as fout:
        fdi, fdo = fin.fileno(), fout.fileno()
        size = os.fstat(fdi).st_size
        pos = 0
        while pos < size:
            try:
                data_start = os.lseek(fdi, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains
                break
            try:
                data_end = os.lseek(fdi, data_start, os.SEEK_HOLE)
            except OSError:
                data_end = size
            cur = data_start
            while cur < data_end:
                block = os.pread(fdi, min(chunk, data_end - cur), cur)
                if not block:
                    break
                if block != zero[: len(block)]:
                    os.pwrite(fdo, block, offset + cur)
                cur += len(block)
            pos = data_end


# --------------------------------------------------------------------------------------------- NTFS fix-up


class _Ntfs:
    """Just enough NTFS to rewrite timestamps in place (MFT records, $I30 index entries)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        boot = os.pread(fd, SECTOR, 0)
        if boot[3:11] != b"NTFS    ":
            raise ImageBuildError("ntfs-fixup", "mkntfs did not produce an NTFS boot sector")
        self.boot = bytearray(boot)
        bps, spc = struct.unpack_from("<HB", boot, 11)
        self.sector = bps
        self.cluster = bps * spc
        self.total_sectors, self.mft_lcn, self.mirr_lcn = struct.unpack_from("<QQQ", boot, 0x28)
        self.record_size = self._unit(struct.unpack_from("<b", boot, 0x40)[0])
        self.index_size = self._unit(struct.unpack_from("<b", boot, 0x44)[0])

    def _unit(self, raw: int) -> int:
        return self.cluster * raw if raw > 0 else 1 << -raw

    def set_serial(self, serial: int) -> None:
        backup_at = self.total_sectors * self.sector
        backup = os.pread(self.fd, SECTOR, backup_at)
        struct.pack_into("<Q", self.boot, 0x48, serial)
        os.pwrite(self.fd, bytes(self.boot), 0)
        if backup[3:11] == b"NTFS    ":
            os.pwrite(self.fd, bytes(self.boot), backup_at)

    # -- fixups
    def _unfix(self, buf: bytearray, off: int, size: int) -> bytes | None:
        usa_ofs, usa_count = struct.unpack_from("<HH", buf, off + 4)
        if usa_count < 2 or (usa_count - 1) * self.sector != size or usa_ofs + 2 * usa_count > size:
            return None
        usn = bytes(buf[off + usa_ofs : off + usa_ofs + 2])
        for i in range(1, usa_count):
            end = off + i * self.sector - 2
            if buf[end : end + 2] != usn:
                return None
        for i in range(1, usa_count):
            end = off + i * self.sector - 2
            buf[end : end + 2] = buf[off + usa_ofs + 2 * i : off + usa_ofs + 2 * i + 2]
        return usn

    def _refix(self, buf: bytearray, off: int, size: int, usn: bytes) -> None:
        usa_ofs, usa_count = struct.unpack_from("<HH", buf, off + 4)
        for i in range(1, usa_count):
            end = off + i * self.sector - 2
            buf[off + usa_ofs + 2 * i : off + usa_ofs + 2 * i + 2] = buf[end : end + 2]
            buf[end : end + 2] = usn

    # -- runs
    @staticmethod
    def _runs(buf: bytes | bytearray, pos: int, limit: int) -> list[tuple[int | None, int]]:
        runs: list[tuple[int | None, int]] = []
        lcn = 0
        while pos < limit:
            header = buf[pos]
            if header == 0:
                break
            len_size, off_size = header & 0x0F, header >> 4
            pos += 1
            length = int.from_bytes(buf[pos : pos + len_size], "little")
            pos += len_size
            if off_size:
                lcn += int.from_bytes(buf[pos : pos + off_size], "little", signed=True)
                runs.append((lcn, length))
            else:
                runs.append((None, length))  # sparse
            pos += off_size
        return runs

    def _extents(self, runs: list[tuple[int | None, int]], nbytes: int) -> list[tuple[int, int]]:
        """(disk offset, length) pieces covering the first ``nbytes`` of the attribute."""
        out = []
        for lcn, length in runs:
            if nbytes <= 0:
                break
            take = min(length * self.cluster, nbytes)
            if lcn is not None:
                out.append((lcn * self.cluster, take))
            nbytes -= length * self.cluster
        return out

    # -- the pass
    def normalise_change_times(self) -> None:
        """Set every "MFT changed" time to the modification time beside it, in every MFT record and every
        $I30 index entry. Keeps $MFTMirr in step with the first records of $MFT."""
        rs = self.record_size
        rec0 = bytearray(os.pread(self.fd, rs, self.mft_lcn * self.cluster))
        if rec0[:4] != b"FILE" or self._unfix(rec0, 0, rs) is None:
            raise ImageBuildError("ntfs-fixup", "MFT record 0 is not readable")
        mft_runs: list[tuple[int | None, int]] = []
        mft_size = 0
        for atype, attr, _name in self._attributes(rec0, 0, rs):
            if atype == 0x80 and rec0[attr + 8]:
                mft_size = struct.unpack_from("<Q", rec0, attr + 0x30)[0]
                mft_runs = self._runs(rec0, attr + struct.unpack_from("<H", rec0, attr + 0x20)[0], attr + rs)
                break
        mirror_head = os.pread(self.fd, self.cluster, self.mft_lcn * self.cluster)
        mirror_in_sync = os.pread(self.fd, len(mirror_head), self.mirr_lcn * self.cluster) == mirror_head
        index_allocs: dict[tuple[int, str], list[tuple[int, list[tuple[int | None, int]], int]]] = {}
        record_no = 0
        for disk_off, length in self._extents(mft_runs, mft_size):
            chunk_size = max(rs, (4 * MIB // rs) * rs)
            for start in range(0, length, chunk_size):
                buf = bytearray(os.pread(self.fd, min(chunk_size, length - start), disk_off + start))
                dirty = False
                for off in range(0, len(buf) - rs + 1, rs):
                    if self._fix_record(buf, off, record_no, index_allocs):
                        dirty = True
                    record_no += 1
                if dirty:
                    os.pwrite(self.fd, bytes(buf), disk_off + start)
        for pieces in index_allocs.values():
            self._fix_index_allocation(pieces)
        if mirror_in_sync:
            head = os.pread(self.fd, self.cluster, self.mft_lcn * self.cluster)
            if head != mirror_head:
                os.pwrite(self.fd, head, self.mirr_lcn * self.cluster)

    def _attributes(self, buf: bytearray, off: int, rs: int) -> Iterator[tuple[int, int, str]]:
        attr = off + struct.unpack_from("<H", buf, off + 0x14)[0]
        end = off + rs
        while attr + 16 <= end:
            atype, alen = struct.unpack_from("<II", buf, attr)
            if atype == 0xFFFFFFFF or alen < 16 or attr + alen > end:
                return
            name_len, name_off = buf[attr + 9], struct.unpack_from("<H", buf, attr + 10)[0]
            name = bytes(buf[attr + name_off : attr + name_off + 2 * name_len]).decode("utf-16-le", "replace")
            yield atype, attr, name
            attr += alen

    def _fix_record(
        self,
        buf: bytearray,
        off: int,
        record_no: int,
        index_allocs: dict[tuple[int, str], list[tuple[int, list[tuple[int | None, int]], int]]],
    ) -> bool:
        rs = self.record_size
        if buf[off : off + 4] != b"FILE":
            return False
        before = bytes(buf[off : off + rs])
        usn = self._unfix(buf, off, rs)
        if usn is None:
            return False
        if not struct.unpack_from("<H", buf, off + 0x16)[0] & 1:  # not in use
            self._refix(buf, off, rs, usn)
            return False
        in_use = struct.unpack_from("<I", buf, off + 0x18)[0]
        if 0x30 <= in_use < rs:  # stale bytes past the end marker (a shrunk attribute) vary between builds
            buf[off + in_use : off + rs] = bytes(rs - in_use)
        base = struct.unpack_from("<Q", buf, off + 0x20)[0] & 0xFFFFFFFFFFFF
        owner = base or record_no
        for atype, attr, name in self._attributes(buf, off, rs):
            if buf[attr + 8] == 0:  # resident
                vlen, voff = struct.unpack_from("<IH", buf, attr + 0x10)
                v = attr + voff
                if atype == 0x10 and vlen >= 32:
                    buf[v + 16 : v + 24] = buf[v + 8 : v + 16]
                elif atype == 0x30 and vlen >= 66:
                    buf[v + 24 : v + 32] = buf[v + 16 : v + 24]
                elif atype == 0x90 and name == "$I30" and vlen >= 32:
                    first, total = struct.unpack_from("<II", buf, v + 16)
                    self._fix_entries(buf, v + 16 + first, min(v + 16 + total, v + vlen))
            elif atype == 0xA0 and name == "$I30":
                start_vcn = struct.unpack_from("<Q", buf, attr + 0x10)[0]
                runs = self._runs(buf, attr + struct.unpack_from("<H", buf, attr + 0x20)[0], attr + rs)
                data_size = struct.unpack_from("<Q", buf, attr + 0x30)[0] if start_vcn == 0 else -1
                index_allocs.setdefault((owner, name), []).append((start_vcn, runs, data_size))
        self._refix(buf, off, rs, usn)
        return bytes(buf[off : off + rs]) != before

    @staticmethod
    def _fix_entries(buf: bytearray, pos: int, end: int) -> None:
        while pos + 16 <= end:
            elen, klen, eflags = struct.unpack_from("<HHI", buf, pos + 8)
            if eflags & 2 or elen < 16:
                return
            if klen >= 66:
                k = pos + 16
                buf[k + 24 : k + 32] = buf[k + 16 : k + 24]
            pos += elen

    def _fix_index_allocation(self, pieces: list[tuple[int, list[tuple[int | None, int]], int]]) -> None:
        pieces.sort(key=lambda p: p[0])
        runs = [r for _, piece_runs, _ in pieces for r in piece_runs]
        data_size = next((size for vcn, _, size in pieces if vcn == 0 and size >= 0), 0)
        # Map the attribute's bytes to disk, then visit each index block.
        extents = self._extents(runs, data_size)
        mapped: list[tuple[int, int, int]] = []  # (attribute offset, disk offset, length)
        pos = 0
        for disk_off, length in extents:
            mapped.append((pos, disk_off, length))
            pos += length
        size = self.index_size
        for block_start in range(0, data_size - size + 1, size):
            parts = _slices(mapped, block_start, size)
            if parts is None:
                continue
            buf = bytearray(b"".join(os.pread(self.fd, n, d) for d, n in parts))
            if buf[:4] != b"INDX":
                continue
            before = bytes(buf)
            usn = self._unfix(buf, 0, size)
            if usn is None:
                continue
            first, total = struct.unpack_from("<II", buf, 0x18)
            used = min(0x18 + total, size)
            self._fix_entries(buf, 0x18 + first, used)
            buf[used:] = bytes(size - used)  # entries left behind by a node split: stale, build-dependent
            self._refix(buf, 0, size, usn)
            if bytes(buf) != before:
                at = 0
                for d, n in parts:
                    os.pwrite(self.fd, bytes(buf[at : at + n]), d)
                    at += n


def _slices(mapped: list[tuple[int, int, int]], start: int, size: int) -> list[tuple[int, int]] | None:
    out = []
    want_end = start + size
    for apos, dpos, length in mapped:
        lo, hi = max(start, apos), min(want_end, apos + length)
        if lo < hi:
            out.append((dpos + lo - apos, hi - lo))
    return out if sum(n for _, n in out) == size else None


# --------------------------------------------------------------------------------------------- building


def default_cache_dir() -> Path:
    env = os.environ.get("VMR_IMAGE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vmrole-harness" / "images"


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _scratch_dir(spec: ImageSpec) -> str | None:
    """Where the tree and the WIM go: ``$VMR_IMAGE_SCRATCH``, else /dev/shm when it is a roomy tmpfs (creating
    many small files there is about ten times faster than on a virtual disk), else None (the cache folder)."""
    env = os.environ.get("VMR_IMAGE_SCRATCH")
    if env:
        return env
    shm = "/dev/shm"
    entries = len(spec.files) + len(spec.hives)
    if entries < 2000 or not os.path.isdir(shm) or not os.access(shm, os.W_OK):
        return None
    need = 3 * (entries * 4096 + sum(len(c) for c in spec.files.values())) + 64 * MIB
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    return shm if st.f_bavail * st.f_frsize > need else None


def _build_raw(spec: ImageSpec, key: str, work: Path, out: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix=f"vmr-tree-{key[:12]}-", dir=_scratch_dir(spec) or work))
    try:
        tree = scratch / "tree"
        tree.mkdir()
        write_tree(spec, tree)
        wim = scratch / "image.wim"
        _run("wimlib-imagex", "capture", tree, wim, "Windows", "--compress=none", "--no-acls")
        shutil.rmtree(tree)
        _build_volume(spec, key, wim, work, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _build_volume(spec: ImageSpec, key: str, wim: Path, work: Path, out: Path) -> None:
    start, size = volume_extent(spec)
    part = work / "volume.ntfs"
    with open(part, "wb") as fh:
        fh.truncate(size)
    _run(
        "mkntfs", "-F", "-Q", "-q", "-T", "-s", str(SECTOR), "-c", "4096", "-p", str(start // SECTOR),
        "-H", "255", "-S", "63", "-L", spec.volume_label, part,
    )  # fmt: skip
    _run("wimlib-imagex", "apply", wim, "1", part)
    wim.unlink()
    fd = os.open(part, os.O_RDWR)
    try:
        ntfs = _Ntfs(fd)
        ntfs.normalise_change_times()
        ntfs.set_serial(int.from_bytes(_derived(key, "ntfs-serial", 8), "little"))
    finally:
        os.close(fd)
    if spec.partition_style == "none":
        os.replace(part, out)
        return
    with open(out, "wb") as fh:
        fh.truncate(spec.disk_size)
    _run("sfdisk", "--no-reread", "--no-tell-kernel", "-q", "--wipe", "never", out, stdin=_sfdisk_script(spec, key))
    _copy_sparse(part, out, start)
    part.unlink()


def build_image(spec: ImageSpec, fmt: str = "vhd-fixed", *, cache_dir: Path | None = None) -> Path:
    """The image for ``spec`` in format ``fmt`` (one of :data:`FORMATS`), built once and cached.

    The raw disk is built once per spec; each other format is converted from it. Safe to call from
    several processes at once. The returned file is shared: copy it before modifying it.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    key = spec.key()
    final = cache / f"{key}.{_SUFFIX[fmt]}"
    if final.exists():
        return final
    with _locked(cache / f"{key}.{fmt}.lock"):
        if final.exists():  # another process finished it while we waited
            return final
        if fmt == "raw":
            work = Path(tempfile.mkdtemp(prefix=f".build-{key[:12]}-", dir=cache))
            try:
                _build_raw(spec, key, work, work / "disk.raw")
                os.replace(work / "disk.raw", final)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        else:
            raw = build_image(spec, "raw", cache_dir=cache)
            tmp = cache / f".{key}.{os.getpid()}.{_SUFFIX[fmt]}"
            try:
                _run("qemu-img", "convert", "-f", "raw", *_QEMU_ARGS[fmt], raw, tmp)
                os.replace(tmp, final)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
    return final


# --------------------------------------------------------------------------------------------- scale


_COMPONENTS = (
    "microsoft-windows-commandprompt", "microsoft-windows-shell32", "microsoft-windows-kernel32",
    "microsoft-windows-ie-htmlrendering", "microsoft-windows-tcpip", "microsoft-windows-netfx-core",
    "microsoft-windows-servicingstack", "microsoft-windows-gdi32", "microsoft-windows-advapi32",
    "microsoft-windows-iis-webserver", "microsoft-windows-winhttp", "microsoft-windows-crypt32",
    "microsoft-windows-firewallapi", "microsoft-windows-usbstor", "microsoft-windows-msxml60",
    "microsoft-windows-powershell-exe", "microsoft-windows-terminalservices-rdp-winstation",
)  # fmt: skip
_WORDS = (
    "core", "shell", "net", "web", "data", "client", "host", "service", "config", "update", "setup",
    "common", "runtime", "driver", "storage", "crypto", "policy", "agent", "media", "print", "search",
)  # fmt: skip
_EXTS = (".dll", ".dll", ".dll", ".exe", ".sys", ".mui", ".manifest", ".cat", ".xml", ".txt", ".ini", ".log")
_VENDORS = ("Microsoft", "Contoso", "Fabrikam", "Common Files", "Windows Azure", "Internet Explorer", "Litware")
_USERS = ("Administrator", "Default", "Public", "svc-web", "deploy")


def _dir_pools(rng: random.Random, count: int) -> list[tuple[float, list[str]]]:
    """(share of the files, directories) per area of a Windows volume, about eight files per directory."""
    w = rng.choice

    def pool(n: int, make: Callable[[], str]) -> list[str]:
        out: dict[str, None] = {}
        for _ in range(max(1, n) * 4):
            out[make()] = None
            if len(out) >= max(1, n):
                break
        return list(out)

    def winsxs() -> str:
        version = f"6.1.7601.{w((17514, 18015, 21986, 22616, 23403))}"
        return f"Windows/WinSxS/amd64_{w(_COMPONENTS)}_31bf3856ad364e35_{version}_none_{rng.getrandbits(64):016x}"

    def system32() -> str:
        sub = w(("", "drivers", "en-US", "wbem", "WindowsPowerShell/v1.0/Modules", "inetsrv", "catroot2"))
        if rng.random() < 0.3:
            sub = f"DriverStore/FileRepository/{w(_WORDS)}{w(_WORDS)}.inf_amd64_neutral_{rng.getrandbits(64):016x}"
        return f"Windows/System32/{sub}".rstrip("/")

    def gac() -> str:
        asm = f"{w(_WORDS).title()}.{w(_WORDS).title()}.{w(_WORDS).title()}"
        return f"Windows/assembly/GAC_MSIL/{asm}/{rng.randint(1, 4)}.0.0.0__31bf3856ad364e35"

    def program_files() -> str:
        sub = "/".join(w(_WORDS) for _ in range(rng.randint(0, 3)))
        product = f"{w(_WORDS).title()} {w(_WORDS).title()}"
        return f"Program Files/{w(_VENDORS)}/{product}/{sub}".rstrip("/")

    def users() -> str:
        sub = "/".join(w(_WORDS).title() for _ in range(rng.randint(0, 4)))
        area = w(("AppData/Local", "AppData/Roaming", "Documents", "AppData/LocalLow", "Desktop"))
        return f"Users/{w(_USERS)}/{area}/{sub}".rstrip("/")

    def program_data() -> str:
        return f"ProgramData/{w(_VENDORS)}/{w(_WORDS)}"

    per_dir = 8
    areas = ((0.45, winsxs), (0.10, system32), (0.05, gac), (0.25, program_files), (0.12, users), (0.03, program_data))
    return [(share, pool(int(count * share / per_dir), make)) for share, make in areas]


def generate_many_files(spec: ImageSpec, count: int, *, seed: int = 0, max_size: int = 600) -> ImageSpec:
    """``spec`` plus ``count`` generated files with realistic path shapes (WinSxS component folders,
    System32 and the driver store, the GAC, Program Files, user profiles, ProgramData), about eight files per
    folder, deterministic for a seed. Contents are small (<= ``max_size`` bytes, so they stay resident in their
    MFT records), drawn from a shared pool. ``disk_size`` grows to fit the MFT and the indexes."""
    rng = random.Random(f"vmrole-harness many files {seed}")
    content_pool = [rng.randbytes(rng.randint(0, max_size)) for _ in range(64)]
    pools = _dir_pools(rng, count)
    cumulative: list[float] = []
    total = 0.0
    for share, _ in pools:
        total += share
        cumulative.append(total)
    taken = {_fold(p) for p in spec._all_paths()}
    files: dict[str, Content] = dict(spec.files)
    dirs: set[str] = set()
    n = 0
    while n < count:
        area = pools[min(bisect.bisect(cumulative, rng.random() * total), len(pools) - 1)][1]
        folder = area[rng.randrange(len(area))]
        path = f"{folder}/{rng.choice(_WORDS)}{rng.choice(_WORDS)}{n}{rng.choice(_EXTS)}"
        folded = _fold(path)
        if folded in taken:
            continue
        taken.add(folded)
        dirs.add(folder)
        files[path] = content_pool[n % len(content_pool)]
        n += 1
    folders = {f[:i] for f in dirs for i in range(len(f)) if f[i] == "/"} | dirs
    entries = len(files) + len(spec.hives) + len(folders)
    need = 2 * (entries * 1100 + len(folders) * 4096) + 64 * MIB + spec.disk_size
    return replace(spec, files=files, disk_size=max(spec.disk_size, -(-need // MIB) * MIB))
