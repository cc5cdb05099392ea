"""Persistence facts (stages ``reimage`` and ``reboot``): markers written before, looked for after."""

from __future__ import annotations

from dataclasses import dataclass

from harness.facts.live.platform import SUCCEEDED

OS = "os"  # C:\vmrole-probe\marker-<uuid>.txt
LOCAL = "local"  # <LocalStorage root>\marker-<uuid>.txt
BLOB = "blob"  # written directly with the storage SDK
BLOB_FROM_INSTANCE = "blob-from-instance"  # written from inside the instance (PUT to a SAS URL)
DATA = "data-disk"  # a scale-set VM's data disk: <its volume>\vmrole-probe\marker-<uuid>.txt (found by LUN)
TEMP = "temp-disk"  # a scale-set VM's temporary disk (the volume labelled "Temporary Storage", usually D:)
FILE_KINDS = (OS, LOCAL, DATA, TEMP)  # markers written as files inside the instance


@dataclass(frozen=True)
class DataDisk:
    """A data disk the platform attaches to a VM (a scale-set VM model's ``storageProfile.dataDisks[]``)."""

    lun: int
    name: str


@dataclass(frozen=True)
class Marker:
    kind: str  # OS | LOCAL | DATA | TEMP | BLOB | BLOB_FROM_INSTANCE
    name: str  # "C:", the LocalStorage or data disk name, "temporary disk", or the blob name
    location: str  # the Windows path, or container/blob (never a SAS URL)
    clean_on_role_recycle: bool | None = None  # LocalStorage only
    written: bool = False
    write_error: str | None = None
    present_after: bool | None = None  # None: not checked (not written, or the check failed)
    check_error: str | None = None
    lun: int | None = None  # DATA only: the disk's LUN
    #: why this marker was not written although nothing failed (a data disk without a volume, a VM size
    #: without a temporary disk): the expectation does not apply, it is not a probe failure
    skipped: str | None = None


@dataclass(frozen=True)
class OperationOutcome:
    kind: str  # reimage | reboot
    instance: str
    request_id: str | None = None
    start_error: str | None = None  # the operation could not be started
    status: str | None = None  # Succeeded | Failed | InProgress (timed out) | Unknown
    error: str | None = None  # the operation's error code/message when Failed
    timed_out: bool = False
    seconds: float = 0.0
    ready: bool = False  # the instance was ReadyRole again within the deadline
    ready_seconds: float | None = None
    last_status: str | None = None  # the instance's last status seen
    deadline_seconds: float = 0.0
    timeline: tuple[tuple[float, str], ...] = ()  # (seconds since the start, instance/operation status)

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED


@dataclass(frozen=True)
class PersistenceFacts:
    instance: str | None
    role: str | None
    operation: OperationOutcome | None = None
    markers: tuple[Marker, ...] = ()
    setup_error: str | None = None  # the probe could not start (no instance, WinRM unreachable …)

    def of_kind(self, kind: str) -> list[Marker]:
        return [m for m in self.markers if m.kind == kind]


@dataclass(frozen=True)
class ReimageFacts(PersistenceFacts):
    pass


@dataclass(frozen=True)
class RebootFacts(PersistenceFacts):
    pass
