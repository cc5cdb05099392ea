"""Where the reimage probe puts a scale-set VM's disk markers (no fabric): the VM model's data disks by LUN, the
volume the guest shows there or the target file's ``reimage.data_disks``, the temporary disk (auto, a path,
none), and every reason a disk cannot be judged named with its LUN instead of a probe failure."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from harness.facts.live.reimage import DATA, TEMP, DataDisk, Marker
from harness.live.backends.vmss import ArmError, data_disks_of
from harness.live.probes import reimage as probe
from harness.live.winrm_pool import WinRMError

# Get-Disk / Get-Partition / Get-Volume as a Gen1 VM answers (disk 2 at LUN 0 with F:, disk 3 at LUN 1 raw)
DISKS = [
    {"Number": 0, "Location": "PCI Slot 0 : Adapter 0 : Channel 0 : Device 0", "IsBoot": True, "PartitionStyle": "MBR"},
    {"Number": 1, "Location": "PCI Slot 1 : Adapter 0 : Channel 1 : Device 0", "PartitionStyle": "MBR"},
    {"Number": 2, "Location": "Integrated : Adapter 3 : Port 0 : Target 0 : LUN 0", "PartitionStyle": "GPT"},
    {"Number": 3, "Location": "Integrated : Adapter 3 : Port 0 : Target 0 : LUN 1", "PartitionStyle": "RAW"},
]  # fmt: skip
PARTITIONS = [
    {"DiskNumber": 0, "PartitionNumber": 2, "DriveLetter": "C", "AccessPaths": ["C:\\"]},
    {"DiskNumber": 1, "PartitionNumber": 1, "DriveLetter": "D", "AccessPaths": ["D:\\"]},
    {"DiskNumber": 2, "PartitionNumber": 2, "DriveLetter": "F", "AccessPaths": ["F:\\"]},
]
VOLUMES = [
    {"DriveLetter": "C", "FileSystemLabel": "Windows"},
    {"DriveLetter": "D", "FileSystemLabel": "Temporary Storage"},
    {"DriveLetter": "F", "FileSystemLabel": "data"},
]


class Pool:
    def __init__(self, answers: Any) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def batch(self, instance: str, statements: list[str]) -> list[Any]:
        self.calls.append(statements)
        if isinstance(self.answers, Exception):
            raise self.answers
        return list(self.answers)


class Backend:
    def __init__(self, disks: Any) -> None:
        self.disks = disks

    def data_disks(self, instance: str) -> Any:
        if isinstance(self.disks, Exception):
            raise self.disks
        return self.disks


def ctx(disks: Any, answers: Any = (DISKS, PARTITIONS, VOLUMES), **reimage: Any) -> SimpleNamespace:
    settings = SimpleNamespace(data_disks=(), temp_disk="auto")
    settings.__dict__.update(reimage)
    evidence: dict[str, str] = {}
    return SimpleNamespace(
        target=SimpleNamespace(reimage=settings),
        backend=Backend(disks),
        winrm=Pool(answers),
        masker=lambda text: text.replace("s3cret", "***"),
        evidence=evidence.__setitem__,
        evidence_texts=evidence,
    )


TWO = (DataDisk(0, "web_2_data0"), DataDisk(1, "web_2_data1"))


def plan(c: SimpleNamespace) -> list[Marker] | None:
    return probe._disk_markers(c, "reimage", "web000002", "t")  # type: ignore[arg-type]


def test_markers_go_on_the_volume_at_each_lun_and_a_raw_disk_is_skipped_by_name() -> None:
    c = ctx(TWO)
    data0, data1, temp = plan(c) or []
    assert (data0.kind, data0.lun, data0.location) == (DATA, 0, "F:\\vmrole-probe\\marker-t.txt")
    assert data0.skipped is None and data0.write_error is None
    assert data1.skipped == "data disk web_2_data1 (LUN 1): guest disk 3 at LUN 1 has no volume (raw, not initialised)"
    assert (temp.kind, temp.location) == (TEMP, "D:\\vmrole-probe\\marker-t.txt")
    assert len(c.winrm.calls) == 1  # one batched PowerShell run
    assert (
        "guest disk 3: Integrated : Adapter 3 : Port 0 : Target 0 : LUN 1 (RAW): no volume"
        in c.evidence_texts["reimage-disks"]
    )


def test_the_target_file_names_volumes_and_the_guest_is_not_asked() -> None:
    c = ctx(TWO, data_disks=((0, "G:\\"), (1, "C:\\mnt\\logs")), temp_disk="none")
    markers = plan(c) or []
    assert [m.location for m in markers] == [
        "G:\\vmrole-probe\\marker-t.txt",
        "C:\\mnt\\logs\\vmrole-probe\\marker-t.txt",
    ]
    assert c.winrm.calls == []
    c = ctx((), temp_disk="E:\\scratch\\")
    assert [(m.kind, m.location) for m in plan(c) or []] == [(TEMP, "E:\\scratch\\vmrole-probe\\marker-t.txt")]


def test_no_temporary_disk_and_an_unreadable_guest_are_skips_not_failures() -> None:
    no_temp = (DISKS[:1] + DISKS[2:], PARTITIONS[:1] + PARTITIONS[2:], [VOLUMES[0], VOLUMES[2]])
    *_, temp = plan(ctx(TWO, no_temp)) or []
    assert temp.skipped is not None and "a VM size without a temporary disk" in temp.skipped
    markers = plan(ctx(TWO, WinRMError("WinRM to web000002: connection refused"))) or []
    assert [m.skipped for m in markers] == [
        "data disk web_2_data0 (LUN 0): the guest's disks could not be read: WinRM to web000002: connection refused",
        "data disk web_2_data1 (LUN 1): the guest's disks could not be read: WinRM to web000002: connection refused",
        "temporary disk: the guest's disks could not be read: WinRM to web000002: connection refused",
    ]
    old_os = plan(ctx(TWO[:1], (None, None, None))) or []
    assert all("Get-Disk gave no disks" in (m.skipped or "") for m in old_os)


def test_a_classic_back_end_keeps_local_storage_and_an_arm_failure_is_named() -> None:
    assert plan(ctx(None)) is None
    (failed,) = plan(ctx(ArmError("Get scale-set VM: 403 AuthorizationFailed, secret s3cret", status=403))) or []
    assert failed.write_error is not None and failed.skipped is None
    assert "data disks could not be read" in failed.write_error and "s3cret" not in failed.write_error


@pytest.mark.parametrize(
    "vm",
    [
        {"storage_profile": {"data_disks": [{"lun": 1, "name": "b"}, {"lun": 0, "name": "a"}]}},  # SDK as_dict()
        {"properties": {"storageProfile": {"dataDisks": [{"lun": 1, "name": "b"}, {"lun": "0", "name": "a"}]}}},
    ],
)
def test_data_disks_of_a_vm_model(vm: dict[str, Any]) -> None:
    assert data_disks_of(vm) == (DataDisk(0, "a"), DataDisk(1, "b"))
    assert data_disks_of({"storage_profile": {}}) == ()
