"""A scale-set VM's data disks survive its reimage, whatever the role's LocalStorage says.

The fabric serves each LocalStorage of the VM role as a data disk of the scale-set VM (harness/fabric/arm/
resources.py). A classic reimage wipes a LocalStorage with ``cleanOnRoleRecycle="true"`` (tests/fabric/test_fabric.py);
a scale-set VM reimage keeps every data disk and reimageAll resets them too
(https://learn.microsoft.com/rest/api/compute/virtual-machine-scale-set-vms/reimage,
https://learn.microsoft.com/rest/api/compute/virtual-machine-scale-set-vms/reimage-all). The bundled sample model
(used by ``./dev demo``) has one of each kind: AppData (false) and Scratch (true).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from harness.fabric.client import Fabric, up
from tests.fabric.arm_helpers import arm, compute

pytestmark = pytest.mark.xdist_group("fabric-arm-data-disks")

STORAGES = ("AppData", "Scratch")  # cleanOnRoleRecycle false, true


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fabric]:
    fab = up(tmp_path_factory.mktemp("fabric"), api="vmss", step_seconds=0.05)  # the bundled sample model
    yield fab
    fab.down()


def _write(fabric: Fabric, instance: str) -> None:
    root = fabric.layout.instance(instance)
    for name in STORAGES:
        (root.local_storage(name) / "marker.txt").write_text(uuid.uuid4().hex)
    (root.os_drive / "marker.txt").write_text("os")


def _kept(fabric: Fabric, instance: str) -> dict[str, bool]:
    root = fabric.layout.instance(instance)
    kept = {name: (root.local_storage(name) / "marker.txt").exists() for name in STORAGES}
    return {"os": (root.os_drive / "marker.txt").exists(), **kept}


def test_reimage_keeps_every_data_disk_and_reimage_all_resets_them(fabric: Fabric) -> None:
    client = compute(fabric)
    group = str(arm(fabric)["resource_group"])
    vmss = "WebVM"  # the VM role's scale set (one per role)
    assert vmss in [s.name for s in client.virtual_machine_scale_sets.list(group)]
    vms = {vm.instance_id: vm for vm in client.virtual_machine_scale_set_vms.list(group, vmss)}
    assert {d.lun for d in vms["0"].storage_profile.data_disks} == {0, 1}  # AppData, Scratch
    name = "WebVM_IN_0"

    _write(fabric, name)
    assert (
        client.virtual_machine_scale_set_vms.begin_reimage(group, vmss, "0", polling_interval=0.1).result(timeout=60)
        is None
    )
    assert _kept(fabric, name) == {"os": False, "AppData": True, "Scratch": True}

    client.virtual_machine_scale_set_vms.begin_reimage_all(group, vmss, "0", polling_interval=0.1).result(timeout=60)
    assert _kept(fabric, name) == {"os": False, "AppData": False, "Scratch": False}
