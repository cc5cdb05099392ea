"""Live in-guest (VMR630-VMR634) and persistence (VMR700-VMR712) rules on hand-built facts."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from harness.checks.live import guest as g
from harness.checks.live import reimage as r

from harness.engine.artefact import DEPLOYMENT, Artefact
from harness.engine.rule import NotApplicable
from harness.engine.severity import Severity
from harness.facts.live.guest import GuestFacts, InstanceGuest, PortCheck, ServiceCheck
from harness.facts.live.reimage import (
    BLOB,
    BLOB_FROM_INSTANCE,
    LOCAL,
    OS,
    Marker,
    OperationOutcome,
    RebootFacts,
    ReimageFacts,
)
from harness.live.probes.guest import app_state_path

ART = Artefact(kind=DEPLOYMENT, identity="local.vmrtarget.yml", path=Path("local.vmrtarget.yml"), display="local")


def subject(**stages):
    return SimpleNamespace(artefact=ART, target_name="local", **stages)


def findings(rule, subj):
    return list(rule().check(subj))


def port(listening=True, allowed=True, blocked=(), block_rule=None):
    return PortCheck("HttpIn", "InputEndpoint", "tcp", 80, listening, allowed, blocked, block_rule)


def inst(**kw):
    base = dict(
        instance="WebVM_IN_0",
        role="WebVM",
        reachable=True,
        ports=(port(),),
        services=(ServiceCheck("W3SVC", True, "Running"),),
    )
    base.update(kw)
    return InstanceGuest(**base)


def guest(*instances, paths=()):
    return GuestFacts(instances=instances, app_state_paths=tuple(app_state_path(p) for p in paths))


# ---- guest ------------------------------------------------------------------------------------


def test_vmr630_guest_unreachable():
    assert findings(g.GuestUnreachable, subject(guest=guest(inst()))) == []
    bad = guest(
        inst(reachable=False, error="ConnectionRefused", ports=(), services=()),
        inst(instance="WebVM_IN_1", check_errors=("netsh failed",)),
    )
    found = findings(g.GuestUnreachable, subject(guest=bad))
    assert [f.rule_id for f in found] == ["VMR630", "VMR630"]
    assert "WebVM_IN_0" in found[0].message and "ConnectionRefused" in found[0].message
    assert found[0].severity == Severity.HIGH and found[1].severity == Severity.MEDIUM


def test_vmr631_endpoint_not_listening():
    assert findings(g.EndpointNotListening, subject(guest=guest(inst()))) == []
    assert findings(g.EndpointNotListening, subject(guest=guest(inst(ports=(port(listening=None),))))) == []
    (f,) = findings(g.EndpointNotListening, subject(guest=guest(inst(ports=(port(listening=False),)))))
    assert f.rule_id == "VMR631" and "HttpIn" in f.message and "80" in f.message and "WebVM_IN_0" in f.message


def test_vmr632_firewall_blocks_endpoint():
    assert findings(g.FirewallBlocksEndpoint, subject(guest=guest(inst()))) == []
    (f,) = findings(
        g.FirewallBlocksEndpoint, subject(guest=guest(inst(ports=(port(allowed=False, blocked=("Public",)),))))
    )
    assert f.rule_id == "VMR632" and "Public" in f.message and "80" in f.message
    (f,) = findings(
        g.FirewallBlocksEndpoint,
        subject(guest=guest(inst(ports=(port(allowed=False, blocked=("Public",), block_rule="Deny80"),)))),
    )
    assert "Deny80" in f.message


def test_vmr633_service_not_running():
    assert findings(g.ServiceNotRunning, subject(guest=guest(inst()))) == []
    bad = inst(
        services=(
            ServiceCheck("W3SVC", True, "Stopped"),
            ServiceCheck("Nope", False, None),
            ServiceCheck("X", None, None),
        )
    )
    found = findings(g.ServiceNotRunning, subject(guest=guest(bad)))
    assert [f.rule_id for f in found] == ["VMR633", "VMR633"]
    assert "Stopped" in found[0].message and "not installed" in found[1].message


def test_vmr634_app_state_on_os_drive():
    ok = guest(paths=["D:\\data\\x.db", "C:\\Resources\\Directory\\abc.WebVM.AppData\\x.db", "\\\\share\\x"])
    assert findings(g.AppStateOnOsDrive, subject(guest=ok)) == []
    (f,) = findings(g.AppStateOnOsDrive, subject(guest=guest(paths=["C:\\AppState\\orders.db"])))
    assert f.rule_id == "VMR634" and "orders.db" in f.message and f.severity == Severity.MEDIUM


# ---- reimage / reboot -------------------------------------------------------------------------


def op(kind="reimage", **kw):
    base = dict(
        kind=kind,
        instance="WebVM_IN_1",
        request_id="abc",
        status="Succeeded",
        ready=True,
        deadline_seconds=60.0,
        last_status="ReadyRole",
    )
    base.update(kw)
    return OperationOutcome(**base)


def markers(os_after=False, appdata_after=True, scratch_after=False, blob_after=True, guest_blob_after=True):
    return (
        Marker(OS, "C:", "C:\\vmrole-probe\\marker-1.txt", None, True, None, os_after),
        Marker(
            LOCAL,
            "AppData",
            "C:\\Resources\\Directory\\d.WebVM.AppData\\marker-1.txt",
            False,
            True,
            None,
            appdata_after,
        ),
        Marker(
            LOCAL, "Scratch", "C:\\Resources\\Directory\\d.WebVM.Scratch\\marker-1.txt", True, True, None, scratch_after
        ),
        Marker(BLOB, "b-direct", "vmrole-probe/b-direct", None, True, None, blob_after),
        Marker(BLOB_FROM_INSTANCE, "b-guest", "vmrole-probe/b-guest", None, True, None, guest_blob_after),
    )


def reimage(**kw):
    base = dict(instance="WebVM_IN_1", role="WebVM", operation=op(), markers=markers())
    base.update(kw)
    return ReimageFacts(**base)


HEALTHY = reimage()
REIMAGE_RULES = (
    r.ReimageOperationFailed,
    r.ReimageInstanceNotReady,
    r.ReimageOsMarkerSurvived,
    r.ReimageLocalStorageLost,
    r.ReimageBlobMarkerLost,
    r.ReimageCleanStorageKept,
    r.ReimageProbeIncomplete,
)


@pytest.mark.parametrize("rule", REIMAGE_RULES, ids=lambda c: c.id)
def test_reimage_rules_pass_on_a_healthy_reimage(rule):
    assert findings(rule, subject(reimage=HEALTHY)) == []


def test_vmr700_reimage_operation_failed():
    (f,) = findings(
        r.ReimageOperationFailed,
        subject(reimage=reimage(operation=op(status="Failed", error="InternalError boom", ready=False))),
    )
    assert f.rule_id == "VMR700" and "Failed" in f.message and "boom" in f.message
    (f,) = findings(
        r.ReimageOperationFailed,
        subject(reimage=reimage(operation=op(status="InProgress", timed_out=True, ready=False))),
    )
    assert "60 s" in f.message
    (f,) = findings(
        r.ReimageOperationFailed,
        subject(reimage=reimage(operation=op(status=None, start_error="409 ConflictError", ready=False))),
    )
    assert "could not be started" in f.message and "409" in f.message


def test_vmr701_reimage_instance_not_ready():
    (f,) = findings(
        r.ReimageInstanceNotReady, subject(reimage=reimage(operation=op(ready=False, last_status="BusyRole")))
    )
    assert f.rule_id == "VMR701" and "BusyRole" in f.message and "WebVM_IN_1" in f.message
    assert findings(r.ReimageOperationFailed, subject(reimage=reimage(operation=op(ready=False)))) == []


def test_vmr702_os_marker_survived():
    (f,) = findings(r.ReimageOsMarkerSurvived, subject(reimage=reimage(markers=markers(os_after=True))))
    assert f.rule_id == "VMR702" and "did not happen" in f.message


def test_vmr703_local_storage_lost_is_amber():
    (f,) = findings(r.ReimageLocalStorageLost, subject(reimage=reimage(markers=markers(appdata_after=False))))
    assert f.rule_id == "VMR703" and "AppData" in f.message and "moved the VM" in f.message
    assert f.severity < Severity.HIGH


def test_vmr704_blob_marker_lost():
    found = findings(
        r.ReimageBlobMarkerLost, subject(reimage=reimage(markers=markers(blob_after=False, guest_blob_after=False)))
    )
    assert [f.rule_id for f in found] == ["VMR704", "VMR704"]
    assert "inside the instance" in found[1].message


def test_vmr705_clean_storage_kept_is_info():
    (f,) = findings(r.ReimageCleanStorageKept, subject(reimage=reimage(markers=markers(scratch_after=True))))
    assert f.rule_id == "VMR705" and f.severity == Severity.INFO and "Scratch" in f.message


def test_vmr706_probe_incomplete():
    (f,) = findings(
        r.ReimageProbeIncomplete, subject(reimage=ReimageFacts(None, None, setup_error="no instance is ReadyRole"))
    )
    assert f.rule_id == "VMR706" and "ReadyRole" in f.message
    bad = (
        *markers()[:4],
        Marker(BLOB_FROM_INSTANCE, "b", "vmrole-probe/b", None, False, "PUT from the instance failed: (403)"),
    )
    (f,) = findings(r.ReimageProbeIncomplete, subject(reimage=reimage(markers=bad)))
    assert "403" in f.message


def test_reimage_marker_rules_skip_when_the_operation_did_not_complete():
    for rule in (
        r.ReimageOsMarkerSurvived,
        r.ReimageLocalStorageLost,
        r.ReimageBlobMarkerLost,
        r.ReimageCleanStorageKept,
    ):
        with pytest.raises(NotApplicable):
            findings(rule, subject(reimage=reimage(operation=op(status="Failed", ready=False))))


def reboot(**kw):
    base = dict(
        instance="WebVM_IN_1", role="WebVM", operation=op("reboot"), markers=markers(os_after=True, scratch_after=True)
    )
    base.update(kw)
    return RebootFacts(**base)


def test_vmr710_reboot_operation_failed():
    assert findings(r.RebootOperationFailed, subject(reboot=reboot())) == []
    (f,) = findings(
        r.RebootOperationFailed, subject(reboot=reboot(operation=op("reboot", ready=False, last_status="StoppedVM")))
    )
    assert f.rule_id == "VMR710" and "StoppedVM" in f.message


def test_vmr711_reboot_lost_state():
    assert findings(r.RebootLostState, subject(reboot=reboot())) == []
    # cleanOnRoleRecycle=true storage may be cleaned on a recycle: not judged
    assert (
        findings(r.RebootLostState, subject(reboot=reboot(markers=markers(os_after=True, scratch_after=False)))) == []
    )
    (f,) = findings(r.RebootLostState, subject(reboot=reboot(markers=markers(os_after=False))))
    assert f.rule_id == "VMR711" and "OS-drive" in f.message and f.severity == Severity.HIGH


def test_vmr712_reboot_probe_incomplete():
    assert findings(r.RebootProbeIncomplete, subject(reboot=reboot())) == []
    (f,) = findings(
        r.RebootProbeIncomplete, subject(reboot=RebootFacts("WebVM_IN_1", "WebVM", setup_error="markers not written"))
    )
    assert f.rule_id == "VMR712" and "reboot probe" in f.message
