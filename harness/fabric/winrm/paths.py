r"""Windows paths of the emulated guest -> this instance's folders.

``X:\a\b`` / ``X:/a/b`` / ``\a`` (root of the current drive) / relative (to the cwd).  Drive letters map to
``instance["drives"]`` (``C`` → os folder, ``E`` → app folder, any other single letter given there); local
storage ``drives.local.<Name>`` is mounted where Azure puts it,
``C:\Resources\Directory\<deployment_id>.<Role>.<Name>``.  Resolution is case-insensitive like NTFS
(existing entries keep their on-disk spelling); ``..`` that would leave a drive, wildcards, ``<>:"|?*``,
unknown drives and symlinks pointing outside a drive are refused ("The system cannot find the path
specified.").  A scale-set VM also has its temporary disk ``D:`` and its data disks ``F:``, ``G:`` … (the
LocalStorage folders by LUN; :mod:`.disks`).  Other drives (UNC too) do not exist.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .disks import letter_mounts

_INVALID = re.compile(r'[<>:"|?*\x00-\x1f]')


class PathError(Exception):
    pass


@dataclass
class GuestPath:
    path: Path  # host path
    display: str  # Windows spelling, e.g. C:\Users\vmradmin
    root: Path  # host root of the mount it lives in


class Drives:
    """Windows paths → this instance's folders (see the module docstring)."""

    def __init__(self, instance: dict[str, Any]) -> None:
        self.mounts: list[tuple[str, tuple[str, ...], Path]] = []  # (drive, prefix parts lower, host root)
        self.spelling: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
        drives = instance.get("drives") or {}
        for letter, root in drives.items():
            if isinstance(root, str) and len(letter) == 1 and letter.isalpha():
                self._mount(letter.upper(), (), Path(root))
        dep = str(instance.get("deployment_id") or "")
        role = str(instance.get("role") or "")
        for name, root in (drives.get("local") or {}).items():
            parts = ("Resources", "Directory", f"{dep}.{role}.{name}")
            self._mount("C", parts, Path(root))
        for letter, folder in letter_mounts(instance).items():
            self._mount(letter, (), folder)
        self.mounts.sort(key=lambda m: len(m[1]), reverse=True)

    def _mount(self, drive: str, parts: tuple[str, ...], root: Path) -> None:
        lower = tuple(p.lower() for p in parts)
        self.mounts.append((drive, lower, root))
        self.spelling[(drive, lower)] = parts

    def resolve(self, raw: str, cwd: str) -> GuestPath:
        text = raw.strip().strip('"').replace("/", "\\")
        if not text or text.startswith("\\\\"):
            raise PathError(raw)
        m = re.match(r"^([A-Za-z]):(.*)$", text)
        if m:
            drive, rest = m.group(1).upper(), m.group(2)
            base: list[str] = []
            if not rest.startswith("\\"):  # "C:foo" is relative to C:'s cwd; ours is the root unless on C:
                base = self._split(cwd)[1] if cwd[0].upper() == drive else []
        else:
            drive, rest = cwd[0].upper(), text
            base = [] if text.startswith("\\") else self._split(cwd)[1]
        parts = list(base)
        for comp in rest.split("\\"):
            if comp in ("", "."):
                continue
            if comp == "..":
                if not parts:
                    raise PathError(raw)
                parts.pop()
                continue
            comp = comp.rstrip(" .") or comp
            if _INVALID.search(comp):
                raise PathError(raw)
            parts.append(comp)
        lower = tuple(p.lower() for p in parts)
        for mdrive, prefix, root in self.mounts:
            if mdrive == drive and lower[: len(prefix)] == prefix:
                shown = list(self.spelling[(mdrive, prefix)])
                host = root
                for comp in parts[len(prefix) :]:
                    actual = comp
                    if not (host / comp).exists() and host.is_dir():
                        try:
                            for entry in os.listdir(host):
                                if entry.lower() == comp.lower():
                                    actual = entry
                                    break
                        except OSError:
                            pass
                    host = host / actual
                    shown.append(actual)
                real_root = os.path.realpath(root)
                real = os.path.realpath(host)
                if real != real_root and not real.startswith(real_root + os.sep):
                    raise PathError(raw)
                return GuestPath(host, f"{drive}:\\" + "\\".join(shown), root)
        raise PathError(raw)

    @staticmethod
    def _split(winpath: str) -> tuple[str, list[str]]:
        return winpath[0].upper(), [p for p in winpath[2:].split("\\") if p]
