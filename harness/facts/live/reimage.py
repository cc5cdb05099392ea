"""Persistence facts (stages ``reimage`` and ``reboot``): markers written before, looked for after."""

from __future__ import annotations

from dataclasses import dataclass

from harness.facts.live.platform import SUCCEEDED

OS = "os"  # C:\vmrole-probe\marker-<uuid>.txt
LOCAL = "local"  # <LocalStorage root>\marker-<uuid>.txt
BLOB = "blob"  # written directly with the storage SDK
BLOB_FROM_INSTANCE = "blob-from-instance"  # written from inside the instance (PUT to a SAS URL)


@dataclass(frozen=True)
class Marker:
    kind: str  # OS | LOCAL | BLOB | BLOB_FROM_INSTANCE
    name: str  # "C:", the LocalStorage name, or the blob name
    location: str  # the Windows path, or container/blob (never a SAS URL)
    clean_on_role_recycle: bool | None = None  # LocalStorage only
    written: bool = False
    write_error: str | None = None
    present_after: bool | None = None  # None: not checked (not written, or the check failed)
    check_error: str | None = None


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
