"""Live in-guest (VMR630-VMR634) and persistence (VMR700-VMR712) rules on hand-built facts."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from harness.checks.live import guest as g
from harness.checks.live import reimage as r

from harness.engine.artefact import DEPLOYMENT, Artefact
from harness.engine.rule import NotApplicable
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


def test_vmr630_guest_unreachable(snapshot):
    assert findings(g.GuestUnreachable, subject(guest=guest(inst()))) == []
    bad = guest(
        inst(reachable=False, error="ConnectionRefused", ports=(), services=()),
        inst(instance="WebVM_IN_1", check_errors=("netsh failed",)),
    )
    snapshot.assert_match(findings(g.GuestUnreachable, subject(guest=bad)))  # unreachable high, a failed check medium


def test_vmr631_endpoint_not_listening(snapshot):
    assert findings(g.EndpointNotListening, subject(guest=guest(inst()))) == []
    assert findings(g.EndpointNotListening, subject(guest=guest(inst(ports=(port(listening=None),))))) == []
    snapshot.assert_match(findings(g.EndpointNotListening, subject(guest=guest(inst(ports=(port(listening=False),))))))


def test_vmr632_firewall_blocks_endpoint(snapshot):
    assert findings(g.FirewallBlocksEndpoint, subject(guest=guest(inst()))) == []
    blocked = port(allowed=False, blocked=("Public",))
    by_rule = port(allowed=False, blocked=("Public",), block_rule="Deny80")
    snapshot.assert_match(
        {
            "no-allow-rule": findings(g.FirewallBlocksEndpoint, subject(guest=guest(inst(ports=(blocked,))))),
            "block-rule": findings(g.FirewallBlocksEndpoint, subject(guest=guest(inst(ports=(by_rule,))))),
        }
    )


def test_vmr633_service_not_running(snapshot):
    assert findings(g.ServiceNotRunning, subject(guest=guest(inst()))) == []
    bad = inst(
        services=(
            ServiceCheck("W3SVC", True, "Stopped"),
            ServiceCheck("Nope", False, None),
            ServiceCheck("X", None, None),
        )
    )
    snapshot.assert_match(findings(g.ServiceNotRunning, subject(guest=guest(bad))))  # not X: its state is unknown


def test_vmr634_app_state_on_os_drive(snapshot):
    ok = guest(paths=["D:\\data\\x.db", "C:\\Resources\\Directory\\abc.WebVM.AppData\\x.db", "\\\\share\\x"])
    assert findings(g.AppStateOnOsDrive, subject(guest=ok)) == []
    snapshot.assert_match(findings(g.AppStateOnOsDrive, subject(guest=guest(paths=["C:\\AppState\\orders.db"]))))


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


def test_vmr700_reimage_operation_failed(snapshot):
    failed = op(status="Failed", error="InternalError boom", ready=False)
    timed_out = op(status="InProgress", timed_out=True, ready=False)
    not_started = op(status=None, start_error="409 ConflictError", ready=False)
    snapshot.assert_match(
        {
            label: findings(r.ReimageOperationFailed, subject(reimage=reimage(operation=operation)))
            for label, operation in (("failed", failed), ("timed-out", timed_out), ("not-started", not_started))
        }
    )


def test_vmr701_reimage_instance_not_ready(snapshot):
    not_ready = subject(reimage=reimage(operation=op(ready=False, last_status="BusyRole")))
    snapshot.assert_match(findings(r.ReimageInstanceNotReady, not_ready))
    assert findings(r.ReimageOperationFailed, subject(reimage=reimage(operation=op(ready=False)))) == []


def test_vmr702_os_marker_survived(snapshot):
    snapshot.assert_match(findings(r.ReimageOsMarkerSurvived, subject(reimage=reimage(markers=markers(os_after=True)))))


def test_vmr703_local_storage_lost_is_amber(snapshot):
    snapshot.assert_match(
        findings(r.ReimageLocalStorageLost, subject(reimage=reimage(markers=markers(appdata_after=False))))
    )


def test_vmr704_blob_marker_lost(snapshot):
    lost = subject(reimage=reimage(markers=markers(blob_after=False, guest_blob_after=False)))
    snapshot.assert_match(findings(r.ReimageBlobMarkerLost, lost))  # the direct blob and the one PUT from inside


def test_vmr705_clean_storage_kept_is_info(snapshot):
    snapshot.assert_match(
        findings(r.ReimageCleanStorageKept, subject(reimage=reimage(markers=markers(scratch_after=True))))
    )


def test_vmr706_probe_incomplete(snapshot):
    bad = (
        *markers()[:4],
        Marker(BLOB_FROM_INSTANCE, "b", "vmrole-probe/b", None, False, "PUT from the instance failed: (403)"),
    )
    no_instance = ReimageFacts(None, None, setup_error="no instance is ReadyRole")
    snapshot.assert_match(
        {
            "setup-failed": findings(r.ReimageProbeIncomplete, subject(reimage=no_instance)),
            "marker-not-written": findings(r.ReimageProbeIncomplete, subject(reimage=reimage(markers=bad))),
        }
    )


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


def test_vmr710_reboot_operation_failed(snapshot):
    assert findings(r.RebootOperationFailed, subject(reboot=reboot())) == []
    stopped = subject(reboot=reboot(operation=op("reboot", ready=False, last_status="StoppedVM")))
    snapshot.assert_match(findings(r.RebootOperationFailed, stopped))


def test_vmr711_reboot_lost_state(snapshot):
    assert findings(r.RebootLostState, subject(reboot=reboot())) == []
    # cleanOnRoleRecycle=true storage may be cleaned on a recycle: not judged
    assert (
        findings(r.RebootLostState, subject(reboot=reboot(markers=markers(os_after=True, scratch_after=False)))) == []
    )
    snapshot.assert_match(findings(r.RebootLostState, subject(reboot=reboot(markers=markers(os_after=False)))))


def test_vmr712_reboot_probe_incomplete(snapshot):
    assert findings(r.RebootProbeIncomplete, subject(reboot=reboot())) == []
    incomplete = subject(reboot=RebootFacts("WebVM_IN_1", "WebVM", setup_error="markers not written"))
    snapshot.assert_match(findings(r.RebootProbeIncomplete, incomplete))
