"""A scale-set VM's disks across a reimage (VMR707 data disk lost, VMR708 temporary disk outcome) and what the
other persistence rules make of disk markers (VMR706 ignores skipped ones, VMR711 does not judge the temporary
disk), on hand-built facts."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
from harness.checks.live import reimage as r

from harness.engine.artefact import DEPLOYMENT, Artefact
from harness.engine.rule import NotApplicable
from harness.engine.severity import Severity
from harness.facts.live.deployment import DeploymentFacts, InstanceFacts
from harness.facts.live.reimage import BLOB, DATA, OS, TEMP, Marker, OperationOutcome, RebootFacts, ReimageFacts

ART = Artefact(kind=DEPLOYMENT, identity="vmss.vmrtarget.yml", path=Path("vmss.vmrtarget.yml"), display="vmss")
VM = "web000002"


def deployment() -> DeploymentFacts:
    inst = InstanceFacts(
        name=VM, role="web", status="ReadyRole", upgrade_domain=None, fault_domain=None, size="Standard_A1",
        ip="10.0.0.6", power_state="Started", instance_id="2", computer_name=VM,
    )  # fmt: skip
    return DeploymentFacts(
        service="rg", name="web", slot="production", status="Running", private_id="id", url="", vips=(),
        instances=(inst,), input_endpoints=(), api="vmss",
    )  # fmt: skip


def subject(**stages):
    return SimpleNamespace(artefact=ART, target_name="vmss", deployment=deployment(), notes={}, **stages)


def op(kind="reimage", **kw):
    base = dict(kind=kind, instance=VM, request_id="abc", status="Succeeded", ready=True)
    return OperationOutcome(**{**base, **kw})


def data(lun, after, skipped=None):
    letter = "FG"[lun]
    return Marker(
        DATA, f"web_2_datadisk{lun}", f"{letter}:\\vmrole-probe\\marker-1.txt", written=skipped is None,
        present_after=after if skipped is None else None, lun=lun, skipped=skipped,
    )  # fmt: skip


def temp(after=False, skipped=None):
    if skipped:
        return Marker(TEMP, "temporary disk", "Temporary Storage", skipped=skipped)
    return Marker(TEMP, "temporary disk", "D:\\vmrole-probe\\marker-1.txt", written=True, present_after=after)


def facts(*disks, cls=ReimageFacts, kind="reimage"):
    base = (
        Marker(OS, "C:", "C:\\vmrole-probe\\marker-1.txt", written=True, present_after=kind == "reboot"),
        Marker(BLOB, "b", "vmrole-probe/b", written=True, present_after=True),
    )
    return cls(instance=VM, role="web", operation=op(kind), markers=base + disks)


def findings(rule, subj):
    return list(rule().check(subj))


RAW = "data disk web_2_datadisk1 (LUN 1): guest disk 3 at LUN 1 has no volume (raw, not initialised)"


def test_kept_data_disks_pass_and_the_temporary_disk_is_reported():
    healthy = subject(reimage=facts(data(0, True), data(1, True), temp(after=False)))
    assert findings(r.ReimageDataDiskLost, healthy) == []
    assert findings(r.ReimageProbeIncomplete, healthy) == []
    (report,) = findings(r.ReimageTempDiskOutcome, healthy)
    assert report.severity == Severity.INFO
    assert "the temporary disk (D:\\) of web000002 (instance 2) lost its marker on the reimage" in report.message


def test_vmr707_data_disk_lost(snapshot):
    lost = subject(reimage=facts(data(0, False), data(1, True), temp()))
    mixed = subject(reimage=facts(data(0, False), data(1, None, skipped=RAW), temp()))
    snapshot.assert_match(
        {"lost": findings(r.ReimageDataDiskLost, lost), "lost-beside-raw": findings(r.ReimageDataDiskLost, mixed)}
    )
    (red,) = findings(r.ReimageDataDiskLost, lost)
    assert red.severity == Severity.HIGH and "web000002 (instance 2)" in red.message and "LUN 0, F:\\" in red.message


def test_vmr707_does_not_apply_without_a_disk_it_can_judge():
    with pytest.raises(NotApplicable, match=r"LUN 1\): guest disk 3 at LUN 1 has no volume"):
        findings(r.ReimageDataDiskLost, subject(reimage=facts(data(1, None, skipped=RAW))))
    with pytest.raises(NotApplicable, match="no data disks"):
        findings(r.ReimageDataDiskLost, subject(reimage=facts()))
    # a skipped disk is not a probe failure either
    assert findings(r.ReimageProbeIncomplete, subject(reimage=facts(data(1, None, skipped=RAW)))) == []


def test_vmr708_temp_disk_outcome(snapshot):
    snapshot.assert_match(
        {
            "kept": findings(r.ReimageTempDiskOutcome, subject(reimage=facts(temp(after=True)))),
            "lost": findings(r.ReimageTempDiskOutcome, subject(reimage=facts(temp(after=False)))),
        }
    )
    no_temp = "temporary disk: no volume is labelled 'Temporary Storage' (a VM size without a temporary disk)"
    with pytest.raises(NotApplicable, match="a VM size without a temporary disk"):
        findings(r.ReimageTempDiskOutcome, subject(reimage=facts(temp(skipped=no_temp))))
    with pytest.raises(NotApplicable, match=r"reimage\.temp_disk is none"):
        findings(r.ReimageTempDiskOutcome, subject(reimage=facts()))


def test_a_temporary_disk_marker_that_could_not_be_written_is_never_red():
    unwritable = Marker(TEMP, "temporary disk", "D:\\vmrole-probe\\m.txt", write_error="Access is denied.")
    lost_data = Marker(DATA, "d0", "F:\\vmrole-probe\\m.txt", lun=0, write_error="Access is denied.")
    temp_finding, data_finding = sorted(
        findings(r.ReimageProbeIncomplete, subject(reimage=facts(unwritable, lost_data))), key=lambda f: f.location
    )
    assert temp_finding.severity == Severity.INFO and "D:\\vmrole-probe" in temp_finding.location
    assert data_finding.severity == Severity.HIGH and "F:\\vmrole-probe" in data_finding.location


def test_disk_rules_skip_when_the_reimage_did_not_complete():
    failed = dataclasses.replace(facts(data(0, False), temp()), operation=op(status="Failed", ready=False))
    for rule in (r.ReimageDataDiskLost, r.ReimageTempDiskOutcome):
        with pytest.raises(NotApplicable):
            findings(rule, subject(reimage=failed))


def test_a_reboot_keeps_data_disks_and_does_not_judge_the_temporary_disk():
    rebooted = facts(data(0, False), temp(after=False), cls=RebootFacts, kind="reboot")
    (lost,) = findings(r.RebootLostState, subject(reboot=rebooted))
    assert "data disk 'web_2_datadisk0' (LUN 0) marker" in lost.message and "a reboot keeps it" in lost.message
