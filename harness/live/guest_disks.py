r"""Which volume of a Windows guest is on which Azure disk: data disks by LUN, and the temporary disk.

Azure names a data disk by its LUN (the VM model's ``storageProfile.dataDisks[].lun``); the guest shows the
same LUN in the disk's ``Location`` (Get-Disk, MSFT_Disk), "How to map Azure Disks to Windows VM guest disks":
https://learn.microsoft.com/en-us/azure/virtual-machines/windows/azure-to-guest-disk-mapping. What guests show:

- Generation 1 VM: the OS disk and the temporary disk are IDE disks, ``PCI Slot 0 : Adapter 0 : Channel 0 :
  Device 0`` and ``PCI Slot 1 : Adapter 0 : Channel 1 : Device 0`` (no LUN); data disks are on a SCSI adapter,
  ``Integrated : Adapter 3 : Port 0 : Target 0 : LUN 0`` (newer builds insert ``Bus 0 : Device n : Function n``
  before ``Adapter``).
- Generation 2 VM: every disk is SCSI; the OS disk and the temporary disk share the boot disk's adapter (``…
  Adapter 0 … LUN 0`` and ``LUN 1``), data disks are on another adapter, LUN as in the VM model.

So a data disk is a disk whose ``Location`` names a LUN, that is neither the boot/system disk nor on the boot
disk's SCSI adapter, and that holds no volume labelled ``Temporary Storage`` (the label Azure gives the
temporary disk, usually ``D:``: https://learn.microsoft.com/en-us/azure/virtual-machines/managed-disks-overview#temporary-disk;
a VM size without a temporary disk has no such volume). Its marker goes on its volume (drive letter, else a
folder mount point). NVMe-attached disks (some newer VM sizes) show no ``LUN`` here: name their volumes in the
target file (``reimage.data_disks``).

One batched PowerShell run asks for all of it (:data:`QUERY`, Windows Server 2012 or later: the Storage
module); :func:`parse` turns its three JSON documents into :class:`GuestDisks` (pure: tested on recorded
output).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

TEMP_LABEL = "Temporary Storage"

#: the statements of one ``WinRMPool.batch`` (each piped to ``ConvertTo-Json -Compress`` by the pool)
QUERY = (
    "Get-Disk | Select-Object Number,Location,IsBoot,IsSystem,PartitionStyle,FriendlyName",
    "Get-Partition | Select-Object DiskNumber,PartitionNumber,DriveLetter,AccessPaths,Size",
    "Get-Volume | Select-Object DriveLetter,FileSystemLabel,Path",
)

_LUN = re.compile(r"\bLUN\s+(\d+)\b", re.IGNORECASE)
_ADAPTER = re.compile(r"\bAdapter\s+(\d+)\b", re.IGNORECASE)


@dataclass(frozen=True)
class GuestVolume:
    root: str  # "F:\" or a folder mount point "C:\mnt\data\"
    label: str

    @property
    def temporary(self) -> bool:
        return self.label.strip().lower() == TEMP_LABEL.lower()


@dataclass(frozen=True)
class GuestDisk:
    number: int
    location: str
    boot: bool
    style: str  # MBR | GPT | RAW
    volumes: tuple[GuestVolume, ...]  # largest partition first

    @property
    def lun(self) -> int | None:
        m = _LUN.search(self.location)
        return int(m.group(1)) if m else None

    @property
    def adapter(self) -> int | None:
        m = _ADAPTER.search(self.location)
        return int(m.group(1)) if m else None

    @property
    def temporary(self) -> bool:
        return any(v.temporary for v in self.volumes)


@dataclass(frozen=True)
class GuestDisks:
    disks: tuple[GuestDisk, ...]

    def _boot_scsi_adapter(self) -> int | None:
        """The SCSI adapter of the boot disk (Generation 2); None when it is IDE (no LUN: Generation 1)."""
        for d in self.disks:
            if d.boot and d.lun is not None:
                return d.adapter
        return None

    def data_disk(self, lun: int) -> tuple[str | None, str | None]:
        """(volume root, None) of the data disk at ``lun``, or (None, why not)."""
        boot_adapter = self._boot_scsi_adapter()
        found = [
            d
            for d in self.disks
            if d.lun == lun and not d.boot and not d.temporary and (boot_adapter is None or d.adapter != boot_adapter)
        ]
        if not found:
            seen = ", ".join(f"disk {d.number}: {d.location or 'no location'}" for d in self.disks) or "no disks"
            return None, f"no guest disk reports LUN {lun} in its Location ({seen})"
        if len(found) > 1:
            numbers = ", ".join(str(d.number) for d in found)
            return None, f"disks {numbers} all report LUN {lun}: name its volume in reimage.data_disks"
        disk = found[0]
        if not disk.volumes:
            state = "raw, not initialised" if disk.style.upper() == "RAW" else "no volume with a drive letter or mount"
            return None, f"guest disk {disk.number} at LUN {lun} has no volume ({state})"
        return disk.volumes[0].root, None

    def temporary_root(self) -> tuple[str | None, str | None]:
        """(root of the volume labelled Temporary Storage, None), or (None, why not)."""
        for d in self.disks:
            for v in d.volumes:
                if v.temporary:
                    return v.root, None
        return None, f"no volume is labelled {TEMP_LABEL!r} (a VM size without a temporary disk)"


def _rows(doc: Any) -> list[dict[str, Any]]:
    """ConvertTo-Json writes one object for one result, an array for more, nothing for none."""
    if isinstance(doc, dict):
        return [doc]
    if isinstance(doc, list):
        return [r for r in doc if isinstance(r, dict)]
    return []


def _letter(value: Any) -> str:
    """A DriveLetter as ConvertTo-Json writes it: "C", or "\u0000"/null/"" when there is none."""
    text = str(value or "").strip("\x00 ")
    return text[:1].upper() if text[:1].isalpha() else ""


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _style(value: Any) -> str:
    """MSFT_Disk.PartitionStyle: the Storage module shows RAW/MBR/GPT; the bare CIM value is 0/1/2."""
    number = _int(value)
    if number is not None:
        return {0: "RAW", 1: "MBR", 2: "GPT"}.get(number, str(number))
    return str(value or "").upper()


def _access_paths(value: Any) -> list[Any]:
    """AccessPaths as ConvertTo-Json writes it: an array, one string, or null."""
    return value if isinstance(value, list) else [value] if value else []


def _root(letter: str, access_paths: list[Any]) -> str:
    if letter:
        return f"{letter}:\\"
    for p in access_paths:
        text = str(p)
        if text and not text.startswith("\\\\?\\"):
            return text if text.endswith("\\") else text + "\\"
    return ""


def parse(disks_doc: Any, partitions_doc: Any, volumes_doc: Any) -> GuestDisks:
    """The guest's disks from the JSON of :data:`QUERY`'s three statements."""
    labels: dict[str, str] = {}  # drive letter or volume path (lower) -> label
    for v in _rows(volumes_doc):
        label = str(v.get("FileSystemLabel") or "")
        letter = _letter(v.get("DriveLetter"))
        if letter:
            labels[letter.lower()] = label
        if v.get("Path"):
            labels[str(v["Path"]).lower()] = label
    volumes: dict[int, list[tuple[int, GuestVolume]]] = {}
    for p in _rows(partitions_doc):
        number = _int(p.get("DiskNumber"))
        if number is None:
            continue
        letter = _letter(p.get("DriveLetter"))
        access = _access_paths(p.get("AccessPaths"))
        root = _root(letter, access)
        if not root:
            continue
        paths = [str(a).lower() for a in access]
        label = labels.get(letter.lower(), "") if letter else ""
        label = label or next((labels[a] for a in paths if a in labels), "")
        size = _int(p.get("Size")) or 0
        volumes.setdefault(number, []).append((size, GuestVolume(root, label)))
    disks = []
    for d in _rows(disks_doc):
        number = _int(d.get("Number"))
        if number is None:
            continue
        found = [v for _, v in sorted(volumes.get(number, []), key=lambda sv: -sv[0])]
        disks.append(
            GuestDisk(
                number=number,
                location=str(d.get("Location") or ""),
                boot=bool(d.get("IsBoot")) or bool(d.get("IsSystem")) or any(v.root.upper() == "C:\\" for v in found),
                style=_style(d.get("PartitionStyle")),
                volumes=tuple(found),
            )
        )
    return GuestDisks(tuple(sorted(disks, key=lambda x: x.number)))
