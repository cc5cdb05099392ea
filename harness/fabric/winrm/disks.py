r"""The emulated guest's disks, as ``Get-Disk`` / ``Get-Partition`` / ``Get-Volume`` show them on an Azure VM.

A scale-set VM (the instance config names a computer name: ``instance["name"]``) is shown as a Generation 1
Azure VM (the layout public Get-Disk output of such VMs shows; see "How to map Azure Disks to Windows VM guest
disks", https://learn.microsoft.com/en-us/azure/virtual-machines/windows/azure-to-guest-disk-mapping):

======  ===============================================================  =================  ======================
disk    Location                                                         volume             host folder
======  ===============================================================  =================  ======================
0       ``PCI Slot 0 : Adapter 0 : Channel 0 : Device 0`` (IDE, boot)    System Reserved,   the OS drive
                                                                         ``C:`` Windows
1       ``PCI Slot 1 : Adapter 0 : Channel 1 : Device 0`` (IDE)          ``D:`` Temporary   ``drives/temp``
                                                                         Storage            (emptied by a reimage)
2 + n   ``Integrated : Adapter 3 : Port 0 : Target 0 : LUN n`` (SCSI)    ``F:``, ``G:`` …   the LocalStorage
                                                                         (label: its name)  folder of LUN n
======  ===============================================================  =================  ======================

LUN ``n`` is the n-th LocalStorage of the role in csdef order (``STATE/ServiceDefinition.csdef``; else name
order), as the fabric's ARM face numbers its data disks. A data disk whose folder is missing is RAW (not
initialised: no partition). Letters start at ``F:`` (``E:`` is the fabric's app drive). A classic instance shows
its OS disk only (its LocalStorage stays under ``C:\Resources\Directory``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.fabric.layout import InstanceLayout, Layout

GIB = 1024**3
OS_DISK_BYTES = 127 * GIB
TEMP_DISK_BYTES = 16 * GIB
SYSTEM_RESERVED = 500 * 1024**2
MSR = 16 * 1024**2  # the Microsoft reserved partition of a GPT disk


@dataclass(frozen=True)
class Partition:
    number: int
    letter: str  # "" when none
    size: int
    label: str  # "" for a partition without a volume (MSR)
    volume: bool


@dataclass(frozen=True)
class Disk:
    number: int
    friendly: str
    location: str
    size: int
    style: str  # MBR | GPT | RAW
    boot: bool
    partitions: tuple[Partition, ...]


def instance_dir(instance: dict[str, Any]) -> Path | None:
    if instance.get("dir"):
        return Path(instance["dir"])
    status = instance.get("status_file")
    return Path(status).parent if status else None


def is_scale_set_vm(instance: dict[str, Any]) -> bool:
    return bool(instance.get("name"))


def data_disks(instance: dict[str, Any]) -> list[tuple[str, Path, int]]:
    """(LocalStorage name, host folder, size in bytes) by LUN."""
    local = (instance.get("drives") or {}).get("local") or {}
    sizes: dict[str, int] = {}
    order = sorted(local)
    folder = instance_dir(instance)
    csdef = Layout(folder.parent.parent).csdef if folder is not None else None
    if csdef is not None and csdef.is_file():
        try:
            from harness.engine.artefact import CSDEF, Artefact
            from harness.readers.servicemodel import read_definition

            definition = read_definition(Artefact.from_path(csdef, CSDEF))
            role = next((r for r in definition.roles if r.name == instance.get("role")), None)
            if role is not None:
                declared = [s.name for s in role.local_storage if s.name in local]
                order = declared + [n for n in order if n not in declared]
                sizes = {s.name: (s.size_mb_value or 100) * 1024**2 for s in role.local_storage}
        except Exception:  # an unreadable csdef: name order
            pass
    return [(name, Path(local[name]), sizes.get(name, 4 * GIB)) for name in order if isinstance(local[name], str)]


def temp_root(instance: dict[str, Any]) -> Path | None:
    folder = instance_dir(instance)
    return InstanceLayout(folder).temp_drive if folder is not None and is_scale_set_vm(instance) else None


def letter_mounts(instance: dict[str, Any]) -> dict[str, Path]:
    """Drive letters a scale-set VM has beyond ``instance["drives"]``: ``D`` (temporary disk), ``F``… (data)."""
    return _letter_mounts(instance, data_disks(instance)) if is_scale_set_vm(instance) else {}


def _letter_mounts(instance: dict[str, Any], data: list[tuple[str, Path, int]]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    temp = temp_root(instance)
    if temp is not None:
        out["D"] = temp
    taken = {k.upper() for k in (instance.get("drives") or {}) if len(k) == 1} | set(out)
    letters = [c for c in "FGHIJKLMNOPQRSTUVWXYZ" if c not in taken]
    for (_name, folder, _size), letter in zip(data, letters, strict=False):
        if folder.is_dir():
            out[letter] = folder
    return out


def disks(instance: dict[str, Any]) -> list[Disk]:
    os_parts = (Partition(1, "", SYSTEM_RESERVED, "System Reserved", True),
                Partition(2, "C", OS_DISK_BYTES - SYSTEM_RESERVED, "Windows", True))  # fmt: skip
    out = [Disk(0, "Virtual HD", "PCI Slot 0 : Adapter 0 : Channel 0 : Device 0", OS_DISK_BYTES, "MBR", True, os_parts)]
    if not is_scale_set_vm(instance):
        return out
    data = data_disks(instance)  # reads the csdef: once per call
    mounts = _letter_mounts(instance, data)
    if "D" in mounts:
        temp = Partition(1, "D", TEMP_DISK_BYTES, "Temporary Storage", True)
        out.append(Disk(1, "Virtual HD", "PCI Slot 1 : Adapter 0 : Channel 1 : Device 0", TEMP_DISK_BYTES, "MBR",
                        False, (temp,)))  # fmt: skip
    by_folder = {str(folder): letter for letter, folder in mounts.items() if letter != "D"}
    for lun, (name, folder, size) in enumerate(data):
        letter = by_folder.get(str(folder), "")
        parts: tuple[Partition, ...] = ()
        if letter:
            parts = (Partition(1, "", MSR, "", False), Partition(2, letter, size - MSR, name, True))
        out.append(
            Disk(len(out), "Msft Virtual Disk", f"Integrated : Adapter 3 : Port 0 : Target 0 : LUN {lun}", size,
                 "GPT" if letter else "RAW", False, parts)
        )  # fmt: skip
    return out


def volume_path(instance: dict[str, Any], disk: int, partition: int) -> str:
    r"""``\\?\Volume{guid}\`` of a partition's volume (stable per instance)."""
    seed = f"{instance.get('id')}/{disk}/{partition}"
    return f"\\\\?\\Volume{{{uuid.uuid5(uuid.NAMESPACE_URL, seed)}}}\\"
