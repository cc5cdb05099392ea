r"""The scale-set path in the default run (the full destructive runs are in the slow test_vmss_backend.py).

- ``vmrole probe`` (a subprocess, as a user runs it) on a 3-VM scale set the fabric serves over ARM: discovery
  through azure-identity / azure-mgmt-*, readiness, endpoints, in-guest checks and the rotation with every
  answer attributed to a VM by its computer name; exit 0.
- ``vmrole fabric fault`` takes a VM's computer name (what the busy hook passes).
- The reimage stage on a scale-set VM writes its data-disk marker on the volume the guest shows at the disk's
  LUN (F:, not the classic C:\Resources path), and its temporary-disk marker on the volume labelled Temporary
  Storage (D:): after the reimage the data disk kept it, the OS disk and the temporary disk did not.
- The live rules name a scale-set VM by computer name and instance id, a classic instance by its name, and a
  lost data-disk marker is red on a scale set (VMR707), amber (LocalStorage, VMR703) on a classic deployment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from harness.checks.live import reimage as reimage_rules
from harness.checks.live import rotation as rotation_rules

from harness.engine.artefact import DEPLOYMENT, Artefact
from harness.engine.severity import Severity
from harness.facts.live.deployment import DeploymentFacts, InstanceFacts
from harness.facts.live.reimage import DATA, LOCAL, OS, TEMP, Marker, OperationOutcome, ReimageFacts
from harness.facts.live.rotation import DrainFacts
from harness.live.target import target_for_fabric

TEMPLATE = Path(__file__).resolve().parents[1] / "data" / "arm" / "scaleset.azuredeploy.json"


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from harness.fabric.client import up

    fab = up(tmp_path_factory.mktemp("fabric-vmss-quick"), api="vmss", template=TEMPLATE, step_seconds=0.1)
    yield fab
    fab.down()


@pytest.mark.xdist_group("fabric-vmss-quick")
def test_vmrole_probe_on_the_scale_set_attributes_every_answer(fabric: Any, tmp_path: Path) -> None:
    # the target `fabric up --api vmss` writes (what a user passes to `vmrole probe`), the one the tests make
    written = fabric.layout.root / "target-vmss.vmrtarget.yml"
    doc = yaml.safe_load(written.read_text("utf-8"))
    assert doc["management"] == yaml.safe_load(target_for_fabric(fabric, api="vmss").path.read_text())["management"]
    doc["timeouts"].update(ready=6)
    path = tmp_path / "vmss.vmrtarget.yml"
    path.write_text(yaml.safe_dump(doc), "utf-8")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "probe", str(path), "--report-dir", str(out), "--no-allure"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    report = json.loads((out / "vmrole.json").read_text("utf-8"))
    outcomes = {i["rule_id"]: i["outcome"] for i in report["items"]}
    assert proc.returncode == 0, output[-4000:]
    for rule in ("VMR600", "VMR602", "VMR616", "VMR630", "VMR800", "VMR805"):
        assert outcomes.get(rule) == "passed", (rule, outcomes.get(rule), output[-3000:])
    secret = Path(fabric.data["arm"]["client_secret_file"]).read_text("utf-8").strip()
    assert secret not in output

    # the busy hook's command takes the computer name; the classic id names the same instance
    fault = fabric.inject("busy", "WEB000001", seconds=0.5)
    assert fault["target"] == "web_IN_1"
    with pytest.raises(Exception, match="no instance 'web000009'"):
        fabric.inject("busy", "web000009", seconds=0.5)
    fabric.clear_faults()


@pytest.mark.xdist_group("fabric-vmss-quick")
def test_reimage_markers_go_where_the_guest_shows_each_disk(fabric: Any) -> None:
    from harness.live.backends.vmss import VmssBackend
    from harness.live.context import LiveContext
    from harness.live.subject import LiveSubject

    target = target_for_fabric(fabric, api="vmss")
    ctx = LiveContext(target, destructive=True)
    assert isinstance(ctx.backend, VmssBackend)
    ctx.backend.polling_interval = 0.2
    try:
        art = Artefact(DEPLOYMENT, "vmss.vmrtarget.yml", target.path, "local-fabric-vmss")
        facts = LiveSubject(art, ctx).reimage
        assert facts is not None
        disks_evidence = ctx.evidence_texts.get("reimage-disks", "")
    finally:
        ctx.close()
    assert facts.operation is not None and facts.operation.succeeded and facts.operation.ready, facts
    (data,) = facts.of_kind(DATA)
    assert (data.lun, data.name) == (0, f"web_{facts.instance[-1]}_datadisk0")  # the VM model's data disk
    assert data.location.startswith("F:\\vmrole-probe\\marker-"), data  # the guest's volume at LUN 0
    assert (data.written, data.present_after) == (True, True)
    (temp,) = facts.of_kind(TEMP)
    assert temp.location.startswith("D:\\vmrole-probe\\"), temp
    assert (temp.written, temp.present_after) == (True, False)  # the fabric's reimage empties the temporary disk
    assert [m.present_after for m in facts.of_kind(OS)] == [False]
    assert not facts.of_kind(LOCAL)
    assert "Integrated : Adapter 3 : Port 0 : Target 0 : LUN 0" in disks_evidence, disks_evidence
    subj = subject("vmss", reimage=facts)
    assert list(reimage_rules.ReimageDataDiskLost().check(subj)) == []
    (told,) = reimage_rules.ReimageTempDiskOutcome().check(subj)
    assert told.severity == Severity.INFO and "lost its marker on the reimage" in told.message


# ---- how findings name a scale-set VM (no fabric) ----------------------------------------------------------


def deployment(api: str) -> DeploymentFacts:
    vmss = api == "vmss"
    instances = tuple(
        InstanceFacts(
            name=f"web00000{n}" if vmss else f"WebVM_IN_{n}",
            role="web" if vmss else "WebVM",
            status="ReadyRole",
            upgrade_domain=None,
            fault_domain=None,
            size="Small",
            ip=f"10.0.0.{n + 4}",
            power_state="Started",
            instance_id=str(n) if vmss else "",
            computer_name=f"web00000{n}" if vmss else "",
        )
        for n in range(3)
    )
    return DeploymentFacts(
        service="svc", name="web", slot="production", status="Running", private_id="id", url="http://svc/",
        vips=("127.0.0.1",), instances=instances, input_endpoints=(), api=api,
    )  # fmt: skip


def subject(api: str, **stages: Any) -> SimpleNamespace:
    art = Artefact(DEPLOYMENT, "t.vmrtarget.yml", Path("/nonexistent/t.vmrtarget.yml"), "t")
    return SimpleNamespace(artefact=art, target_name="t", deployment=deployment(api), notes={}, **stages)


def lost_data_disk(api: str, instance: str) -> ReimageFacts:
    op = OperationOutcome(kind="reimage", instance=instance, request_id="r1", status="Succeeded", ready=True)
    disk = (
        Marker(DATA, "datadisk0", "F:\\vmrole-probe\\m.txt", written=True, present_after=False, lun=0)
        if api == "vmss"
        else Marker(LOCAL, "datadisk0", "C:\\Resources\\Directory\\id.web.datadisk0\\m.txt", False, True, None, False)
    )
    markers = (Marker(OS, "C:", "C:\\vmrole-probe\\m.txt", None, True, None, False), disk)
    return ReimageFacts(instance=instance, role="web", operation=op, markers=markers)


RULES = reimage_rules
LOST = [
    ("vmss", "web000002", RULES.ReimageDataDiskLost, "data disk 'datadisk0' (LUN 0, F:\\) of web000002 (instance 2)"),
    ("asm", "WebVM_IN_2", RULES.ReimageLocalStorageLost, "'datadisk0' (cleanOnRoleRecycle=false) of WebVM_IN_2"),
]


@pytest.mark.parametrize(("api", "instance", "rule", "shown"), LOST, ids=["vmss", "asm"])
def test_a_lost_data_disk_is_red_on_a_scale_set_and_names_the_vm(
    api: str, instance: str, rule: Any, shown: str
) -> None:
    (finding,) = rule().check(subject(api, reimage=lost_data_disk(api, instance)))
    assert shown in finding.message, finding.message
    assert finding.severity == (Severity.HIGH if api == "vmss" else Severity.MEDIUM)


def test_drain_messages_name_the_vm_by_computer_name_and_instance_id() -> None:
    drain = DrainFacts(role="web", endpoint="HttpIn", instance="web000002", not_performed="the busy hook exited 1")
    (finding,) = rotation_rules.DrainNotPerformed().check(subject("vmss", drain=drain))
    assert "could not take web000002 (instance 2) of web/HttpIn out of rotation" in finding.message
