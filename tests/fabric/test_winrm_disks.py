"""Which volume is on which Azure disk: the probe's parser (harness/live/guest_disks.py) on output recorded from
real Azure guests, and the emulated guest's Get-Disk / Get-Partition / Get-Volume (harness/fabric/winrm/disks.py)
answering the same batched query — driven directly, without a WinRM server."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from harness.fabric.winrm.guest import Guest
from harness.live import guest_disks
from harness.live.winrm_pool import BATCH_MARK, clean_clixml, parse_batch
from tests.fabric.test_winrm_guest_extra import IO  # the guest's in-memory console

# ---- the parser on recorded output --------------------------------------------------------------------------

# A Generation 1 Azure VM (Windows Server, a size with a 16 GiB temporary disk, one new data disk at LUN 0), from
# a public `az vm run-command invoke … RunPowerShellScript` transcript of `Get-Volume`, `Get-Disk | Select
# Number,FriendlyName,Size,PartitionStyle,Location` and `Get-Partition | Select DiskNumber,PartitionNumber,
# DriveLetter,Size` (format-list output, here as the JSON ConvertTo-Json writes for the same objects; the
# partition's missing letter is the NUL char, as run-command showed it: "\u0000"). The data disk is RAW.
# The data disk's Location format ("Integrated : Adapter 3 : Port 0 : Target 0 : LUN n") is also the one Kubernetes'
# Azure disk attacher parsed on Windows nodes (kubernetes/kubernetes, pkg/volume/azure_dd/azure_common_windows.go).
# Added here (the transcript did not select them): IsBoot/IsSystem, AccessPaths, the volumes' Paths (made-up GUIDs).
GEN1_DISKS = [
    {"Number": 0, "FriendlyName": "Virtual HD", "PartitionStyle": "MBR", "IsBoot": True, "IsSystem": True,
     "Location": "PCI Slot 0 : Adapter 0 : Channel 0 : Device 0"},
    {"Number": 1, "FriendlyName": "Virtual HD", "PartitionStyle": "MBR", "IsBoot": False, "IsSystem": False,
     "Location": "PCI Slot 1 : Adapter 0 : Channel 1 : Device 0"},
    {"Number": 2, "FriendlyName": "Msft Virtual Disk", "PartitionStyle": "RAW", "IsBoot": False, "IsSystem": False,
     "Location": "Integrated : Bus 0 : Device 63667 : Function 30747 : Adapter 3 : Port 0 : Target 0 : LUN 0"},
]  # fmt: skip
GEN1_PARTITIONS = [
    {"DiskNumber": 0, "PartitionNumber": 1, "DriveLetter": "\u0000", "Size": 524288000,
     "AccessPaths": ["\\\\?\\Volume{1b2c7d0e-0000-0000-0000-100000000000}\\"]},
    {"DiskNumber": 0, "PartitionNumber": 2, "DriveLetter": "C", "Size": 135839875072,
     "AccessPaths": ["C:\\", "\\\\?\\Volume{1b2c7d0e-0000-0000-0000-501f00000000}\\"]},
    {"DiskNumber": 1, "PartitionNumber": 1, "DriveLetter": "D", "Size": 17177772032,
     "AccessPaths": ["D:\\", "\\\\?\\Volume{6a0f5c1e-0000-0000-0000-010000000000}\\"]},
]  # fmt: skip
GEN1_VOLUMES = [
    {"DriveLetter": None, "FileSystemLabel": "System Reserved",
     "Path": "\\\\?\\Volume{1b2c7d0e-0000-0000-0000-100000000000}\\"},
    {"DriveLetter": "C", "FileSystemLabel": "Windows", "Path": "\\\\?\\Volume{1b2c7d0e-0000-0000-0000-501f00000000}\\"},
    {"DriveLetter": "D", "FileSystemLabel": "Temporary Storage",
     "Path": "\\\\?\\Volume{6a0f5c1e-0000-0000-0000-010000000000}\\"},
]  # fmt: skip

# A Generation 2 Azure VM: every disk is SCSI. The OS disk (GPT, 127 GiB) and the temporary disk (MBR, 32 GiB)
# share adapter 0 as LUN 0 and LUN 1 — the Get-Disk `location` values of a public Windows VM inventory
# (disk 0 "Integrated : Adapter 0 : Port 0 : Target 0 : LUN 0", disk 1 "… LUN 1", both "Msft Virtual Disk").
# The two data disks are added here on adapter 1 at LUN 0 and LUN 1 (initialised: GPT, F: and a folder mount),
# the way "How to map Azure Disks to Windows VM guest disks" describes: the LUN in the disk's Location.
GEN2_DISKS = [
    {"Number": 0, "PartitionStyle": "GPT", "IsBoot": True, "IsSystem": True,
     "Location": "Integrated : Adapter 0 : Port 0 : Target 0 : LUN 0"},
    {"Number": 1, "PartitionStyle": "MBR", "IsBoot": False, "IsSystem": False,
     "Location": "Integrated : Adapter 0 : Port 0 : Target 0 : LUN 1"},
    {"Number": 2, "PartitionStyle": "GPT", "IsBoot": False, "IsSystem": False,
     "Location": "Integrated : Adapter 1 : Port 0 : Target 0 : LUN 1"},
    {"Number": 3, "PartitionStyle": 2, "IsBoot": False, "IsSystem": False,
     "Location": "Integrated : Adapter 1 : Port 0 : Target 0 : LUN 0"},
]  # fmt: skip
GEN2_PARTITIONS = [
    {"DiskNumber": 0, "PartitionNumber": 4, "DriveLetter": "C", "Size": 136000000000, "AccessPaths": ["C:\\"]},
    {"DiskNumber": 1, "PartitionNumber": 1, "DriveLetter": "D", "Size": 34000000000,
     "AccessPaths": ["D:\\", "\\\\?\\Volume{aa}\\"]},
    {"DiskNumber": 2, "PartitionNumber": 1, "DriveLetter": "\u0000", "Size": 16777216, "AccessPaths": None},
    {"DiskNumber": 2, "PartitionNumber": 2, "DriveLetter": "\u0000", "Size": 100000000000,
     "AccessPaths": ["C:\\mnt\\logs\\", "\\\\?\\Volume{bb}\\"]},
    {"DiskNumber": 3, "PartitionNumber": 2, "DriveLetter": "F", "Size": 200000000000,
     "AccessPaths": ["F:\\", "\\\\?\\Volume{cc}\\"]},
]  # fmt: skip
GEN2_VOLUMES = [
    {"DriveLetter": "C", "FileSystemLabel": "Windows", "Path": "\\\\?\\Volume{00}\\"},
    {"DriveLetter": "D", "FileSystemLabel": "Temporary Storage", "Path": "\\\\?\\Volume{aa}\\"},
    {"DriveLetter": None, "FileSystemLabel": "logs", "Path": "\\\\?\\Volume{bb}\\"},
    {"DriveLetter": "F", "FileSystemLabel": "data", "Path": "\\\\?\\Volume{cc}\\"},
]  # fmt: skip


def test_gen1_the_raw_data_disk_is_named_and_the_temporary_disk_found() -> None:
    layout = guest_disks.parse(GEN1_DISKS, GEN1_PARTITIONS, GEN1_VOLUMES)
    assert layout.temporary_root() == ("D:\\", None)
    root, why = layout.data_disk(0)
    assert root is None and why == "guest disk 2 at LUN 0 has no volume (raw, not initialised)"
    root, why = layout.data_disk(1)
    assert root is None and why is not None and why.startswith("no guest disk reports LUN 1")


def test_gen2_data_disks_are_told_apart_from_the_os_and_temporary_disks_on_the_boot_adapter() -> None:
    layout = guest_disks.parse(GEN2_DISKS, GEN2_PARTITIONS, GEN2_VOLUMES)
    # LUN 0 and LUN 1 also name the OS and temporary disks (adapter 0): the data disks are those on adapter 1
    assert layout.data_disk(0) == ("F:\\", None)
    assert layout.data_disk(1) == ("C:\\mnt\\logs\\", None)  # a folder mount point; the MSR partition is ignored
    assert layout.temporary_root() == ("D:\\", None)
    # a temporary disk relabelled by the image: still not the data disk at LUN 1 (it is on the boot adapter)
    relabelled = [dict(v, FileSystemLabel="scratch") if v["DriveLetter"] == "D" else v for v in GEN2_VOLUMES]
    layout = guest_disks.parse(GEN2_DISKS, GEN2_PARTITIONS, relabelled)
    assert layout.data_disk(1) == ("C:\\mnt\\logs\\", None)
    assert layout.temporary_root()[0] is None


def test_one_result_is_an_object_and_no_temporary_disk_is_said() -> None:
    disk = {"Number": 0, "Location": "Integrated : Adapter 0 : Port 0 : Target 0 : LUN 0", "IsBoot": True}
    part = {"DiskNumber": 0, "PartitionNumber": 1, "DriveLetter": "C", "AccessPaths": ["C:\\"]}
    layout = guest_disks.parse(disk, part, {"DriveLetter": "C", "FileSystemLabel": "Windows"})
    assert [d.number for d in layout.disks] == [0]
    root, why = layout.temporary_root()
    assert root is None and why is not None and "a VM size without a temporary disk" in why
    assert guest_disks.parse(None, None, None).disks == ()


# ---- the emulated guest -------------------------------------------------------------------------------------


CSDEF = """<ServiceDefinition name="s" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition">
  <WorkerRole name="web"><LocalResources>
    <LocalStorage name="zeta" sizeInMB="2048" cleanOnRoleRecycle="false" />
    <LocalStorage name="alpha" sizeInMB="1024" cleanOnRoleRecycle="false" />
  </LocalResources></WorkerRole>
</ServiceDefinition>
"""


def make_guest(tmp_path: Path, *, scale_set: bool = True) -> Guest:
    state = tmp_path / "state"
    inst_dir = state / "instances" / "web_IN_2"
    (inst_dir / "drives" / "temp").mkdir(parents=True)
    (state / "ServiceDefinition.csdef").write_text(CSDEF, "utf-8")
    local = {}
    for name in ("alpha", "zeta"):
        (inst_dir / "drives" / "local" / name).mkdir(parents=True)
        local[name] = str(inst_dir / "drives" / "local" / name)
    (inst_dir / "drives" / "os").mkdir(parents=True)
    instance = {
        "id": "web_IN_2",
        "role": "web",
        "deployment_id": "u" * 32,
        "drives": {"C": str(inst_dir / "drives" / "os"), "local": local},
        "status_file": str(inst_dir / "status"),
    }
    if scale_set:
        instance["name"] = "web000002"
    return Guest(instance, "vmradmin")


def ps(g: Guest, script: str) -> tuple[int, str, str]:
    io = IO()
    enc = base64.b64encode(script.encode("utf-16-le")).decode()
    rc = g.powershell(f"powershell -NoProfile -NonInteractive -EncodedCommand {enc}", io)
    return rc, io.out.decode(), io.err.decode()


def batch(g: Guest, statements: tuple[str, ...]) -> list[object]:
    script = "\n".join(
        f"Write-Output '{BATCH_MARK}{i}'\n{s} | ConvertTo-Json -Compress" for i, s in enumerate(statements)
    )
    rc, out, err = ps(g, script)
    assert rc == 0, err
    return parse_batch(out, len(statements))


def test_a_scale_set_vm_shows_its_data_disks_by_lun_and_its_temporary_disk(tmp_path: Path) -> None:
    g = make_guest(tmp_path)
    layout = guest_disks.parse(*batch(g, guest_disks.QUERY))
    # csdef order, not name order: zeta is LUN 0 (F:), alpha LUN 1 (G:)
    assert layout.data_disk(0) == ("F:\\", None) and layout.data_disk(1) == ("G:\\", None)
    assert layout.temporary_root() == ("D:\\", None)
    # the letters are the data disks' folders and the temporary-disk folder
    rc, _, err = ps(g, "Set-Content -Path 'F:\\m.txt' -Value z\nSet-Content -Path 'D:\\t.txt' -Value t")
    assert rc == 0, err
    inst_dir = tmp_path / "state" / "instances" / "web_IN_2"
    assert (inst_dir / "drives" / "local" / "zeta" / "m.txt").read_text().strip() == "z"
    assert (inst_dir / "drives" / "temp" / "t.txt").is_file()


def test_a_missing_data_disk_folder_is_a_raw_disk(tmp_path: Path) -> None:
    g = make_guest(tmp_path)
    (tmp_path / "state" / "instances" / "web_IN_2" / "drives" / "local" / "alpha").rmdir()
    layout = guest_disks.parse(*batch(g, guest_disks.QUERY))
    assert layout.data_disk(1) == (None, "guest disk 3 at LUN 1 has no volume (raw, not initialised)")


def test_storage_cmdlets_print_tables_and_name_what_they_do_not_find(tmp_path: Path) -> None:
    g = make_guest(tmp_path)
    rc, out, _ = ps(g, "Get-Disk")
    assert rc == 0 and "Partition Style" in out and "127 GB" in out and "Msft Virtual Disk" in out
    rc, out, _ = ps(g, "Get-Volume -DriveLetter D | Select-Object -ExpandProperty FileSystemLabel")
    assert rc == 0 and out.strip() == "Temporary Storage"
    rc, _, err = ps(g, "Get-Disk -Number 9")
    assert rc == 1 and "No MSFT_Disk objects found with property 'Number' equal to '9'." in clean_clixml(err)


def test_a_classic_instance_shows_its_os_disk_only(tmp_path: Path) -> None:
    g = make_guest(tmp_path, scale_set=False)
    disks = batch(g, ("Get-Disk | Select-Object Number,Location",))[0]
    assert disks == {"Number": 0, "Location": "PCI Slot 0 : Adapter 0 : Channel 0 : Device 0"}


@pytest.mark.parametrize("letter", ["D", "F"])
def test_no_extra_letters_on_a_classic_instance(tmp_path: Path, letter: str) -> None:
    g = make_guest(tmp_path, scale_set=False)
    _, out, _ = ps(g, f"Test-Path -Path '{letter}:\\'")
    assert out.strip() == "False", json.dumps(out)
