"""Readiness (VMR600-VMR607) and endpoint (VMR610-VMR619) rules on hand-built live facts: pure, no network."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from harness.checks.live import endpoints as ep_rules
from harness.checks.live import readiness as rd_rules

from harness.engine.artefact import DEPLOYMENT, Artefact
from harness.engine.evaluate import evaluate
from harness.facts.live.deployment import InstanceReadiness, ReadinessFacts, classify
from harness.facts.live.endpoints import (
    CLOSED,
    FAILED,
    HTTP_ERROR,
    INPUT,
    INSTANCE,
    INTERNAL,
    OK,
    REFUSED,
    TIMEOUT,
    TLS_ERROR,
    UNSUPPORTED,
    EndpointCheck,
    EndpointFacts,
    TlsFacts,
)

ARTEFACT = Artefact(DEPLOYMENT, "live/fabric.vmrtarget.yml", Path("/nonexistent/fabric.vmrtarget.yml"), "fabric")
GOOD_TP = "4CF78D149A067F24FC77BF1F0665077285027C98"
OTHER_TP = "1B2C3D4E5F60718293A4B5C6D7E8F90112233445"


def subject(**attrs: Any) -> SimpleNamespace:
    base: dict[str, Any] = {"artefact": ARTEFACT, "deployment": object(), "readiness": None, "endpoints": None}
    base.update(attrs)
    base.setdefault("notes", {})
    return SimpleNamespace(**base)


def run(rule: type, subj: Any) -> list:
    return list(rule().check(subj))


# ---- readiness facts ----------------------------------------------------------------------------------
def inst(name: str, status: str = "ReadyRole", *, ud: int = 0, fd: int = 0, ready_after: float | None = 1.0,
         role: str = "WebVM", locked: bool = False) -> InstanceReadiness:  # fmt: skip
    return InstanceReadiness(
        name=name,
        role=role,
        status=status,
        classification=classify(status, locked=locked),
        ready_after=ready_after if status == "ReadyRole" else None,
        upgrade_domain=ud,
        fault_domain=fd,
    )


def readiness(*instances: InstanceReadiness, **kw: Any) -> ReadinessFacts:
    fields: dict[str, Any] = {
        "deadline": 60.0,
        "elapsed": 3.0,
        "deployment_status": "Running",
        "instances": instances,
        "deadline_passed": False,
        "failed_fast": False,
        "expected_counts": (("WebVM", 2),),
        "polls": 4,
    }
    fields.update(kw)
    return ReadinessFacts(**fields)


HEALTHY = readiness(inst("WebVM_IN_0", ud=0, fd=0), inst("WebVM_IN_1", ud=1, fd=1))


def test_classification_follows_the_reference():
    assert classify("ReadyRole") == "healthy"
    assert classify("BusyRole") == "transitional"
    assert classify("CyclingRole") == "failed"
    assert classify("StoppedVM") == "failed"
    assert classify("StoppedVM", locked=True) == "transitional"  # a reboot/reimage walks through it
    assert classify("SomethingNew") == "transitional"


def test_vmr600_reports_why_the_deployment_stage_could_not_run(snapshot):
    bad = subject(deployment=None, notes={"deployment": "Get Deployment failed: 500 InternalError after 3 attempts"})
    assert run(rd_rules.ManagementApiUnreachable, subject()) == []
    snapshot.assert_match(run(rd_rules.ManagementApiUnreachable, bad))


def test_vmr601_deployment_not_running(snapshot):
    assert run(rd_rules.DeploymentNotRunning, subject(readiness=HEALTHY)) == []
    suspended = subject(readiness=replace(HEALTHY, deployment_status="Suspended"))
    snapshot.assert_match(run(rd_rules.DeploymentNotRunning, suspended))


def test_vmr602_instance_not_ready_by_deadline_names_the_status(snapshot):
    assert run(rd_rules.InstanceNotReadyByDeadline, subject(readiness=HEALTHY)) == []
    late = readiness(inst("WebVM_IN_0"), inst("WebVM_IN_1", "BusyRole", ud=1, fd=1), deadline_passed=True)
    snapshot.assert_match(run(rd_rules.InstanceNotReadyByDeadline, subject(readiness=late)))


def test_vmr603_failed_status_fails_fast_and_is_named(snapshot):
    assert run(rd_rules.InstanceFailedStatus, subject(readiness=HEALTHY)) == []
    failed = readiness(inst("WebVM_IN_0"), inst("WebVM_IN_1", "CyclingRole", ud=1, fd=1), failed_fast=True)
    snapshot.assert_match(run(rd_rules.InstanceFailedStatus, subject(readiness=failed)))
    # a failed instance is not also reported as "not ready by the deadline"
    assert run(rd_rules.InstanceNotReadyByDeadline, subject(readiness=replace(failed, deadline_passed=True))) == []


def test_vmr604_vmr605_domain_spread(snapshot):
    assert run(rd_rules.UpgradeDomainSpread, subject(readiness=HEALTHY)) == []
    assert run(rd_rules.FaultDomainSpread, subject(readiness=HEALTHY)) == []
    lumped = readiness(inst("WebVM_IN_0", ud=0, fd=1), inst("WebVM_IN_1", ud=0, fd=1))
    snapshot.assert_match(
        run(rd_rules.UpgradeDomainSpread, subject(readiness=lumped))
        + run(rd_rules.FaultDomainSpread, subject(readiness=lumped))
    )
    single = readiness(inst("WebVM_IN_0"), expected_counts=())
    assert run(rd_rules.UpgradeDomainSpread, subject(readiness=single)) == []  # one instance: nothing to spread


def test_vmr606_instance_count_mismatch(snapshot):
    assert run(rd_rules.InstanceCountMismatch, subject(readiness=HEALTHY)) == []
    short = replace(HEALTHY, expected_counts=(("WebVM", 3),))
    snapshot.assert_match(run(rd_rules.InstanceCountMismatch, subject(readiness=short)))


def test_vmr607_management_api_flaky(snapshot):
    assert run(rd_rules.ManagementApiFlaky, subject(readiness=HEALTHY)) == []
    flaky = replace(HEALTHY, poll_errors=("Get Deployment failed: 503 ServerBusy after 3 attempts",))
    snapshot.assert_match(run(rd_rules.ManagementApiFlaky, subject(readiness=flaky)))


def test_readiness_rules_are_skipped_without_readiness_facts():
    result = evaluate(rd_rules.InstanceFailedStatus, subject(notes={"readiness": "unreachable"}), {"readiness": "x"})
    assert result.skip_reason == "x"


# ---- endpoint facts -----------------------------------------------------------------------------------
def tls(thumbprint: str = GOOD_TP, **kw: Any) -> TlsFacts:
    fields: dict[str, Any] = {
        "handshake_ok": True,
        "thumbprint": thumbprint,
        "expected_thumbprints": (GOOD_TP,),
        "certificate_name": "SSL",
        "expected_source": "csdef",
        "subject": "CN=www.contoso.com",
        "not_after": "2030-01-01T00:00:00+00:00",
        "days_left": 400.0,
        "names": ("contoso.cloudapp.net",),
        "host_name": "contoso.cloudapp.net",
        "hostname_matches": True,
    }
    fields.update(kw)
    return TlsFacts(**fields)


def check(kind: str = INPUT, name: str = "HttpIn", protocol: str = "http", **kw: Any) -> EndpointCheck:
    fields: dict[str, Any] = {
        "kind": kind,
        "role": "WebVM",
        "endpoint": name,
        "protocol": protocol,
        "host": "52.170.10.7",
        "port": 443 if protocol == "https" else 80,
        "status": OK,
        "connected": True,
        "http_status": 200 if protocol in ("http", "https") else None,
        "total_seconds": 0.01,
    }
    fields.update(kw)
    return EndpointCheck(**fields)


def endpoints(*checks: EndpointCheck) -> EndpointFacts:
    return EndpointFacts(host_name="contoso.cloudapp.net", vip="52.170.10.7", checks=checks)


GOOD = endpoints(
    check(),
    check(name="HttpsIn", protocol="https", port=443, tls=tls()),
    check(INSTANCE, "Direct", "tcp", port=10001, instance="WebVM_IN_1", served_by="WebVM_IN_1", http_status=None),
    check(INTERNAL, "Control", "tcp", host="10.0.0.5", port=8080, instance="WebVM_IN_1", from_instance="WebVM_IN_0"),
)
ENDPOINT_RULES = [
    ep_rules.VipEndpointRefusesTcp,
    ep_rules.HttpEndpointError,
    ep_rules.TlsThumbprintMismatch,
    ep_rules.TlsCertificateExpiry,
    ep_rules.TlsHostnameMismatch,
    ep_rules.TlsHandshakeFailed,
    ep_rules.InstanceEndpointUnreachable,
    ep_rules.InternalEndpointUnreachable,
    ep_rules.InstanceEndpointWrongInstance,
    ep_rules.TlsThumbprintUnverifiable,
]


@pytest.mark.parametrize("rule", ENDPOINT_RULES, ids=lambda r: r.id)
def test_endpoint_rules_pass_on_healthy_endpoints(rule: type):
    assert run(rule, subject(endpoints=GOOD)) == []


def test_vmr610_vip_endpoint_refuses_tcp(snapshot):
    refused = check(status=FAILED, connected=False, error_kind=REFUSED, http_status=None, attempts=3,
                    error="TCP connect to 52.170.10.7:80: connection refused (3 attempts)")  # fmt: skip
    closed = check(name="Raw", protocol="tcp", status=FAILED, error_kind=CLOSED, error="closed without a byte")
    snapshot.assert_match(
        {
            "refused": run(ep_rules.VipEndpointRefusesTcp, subject(endpoints=endpoints(refused))),
            "closed": run(ep_rules.VipEndpointRefusesTcp, subject(endpoints=endpoints(closed))),
        }
    )


def test_vmr611_http_endpoint_error(snapshot):
    err = check(
        status=FAILED,
        http_status=503,
        error_kind=HTTP_ERROR,
        error="HTTP GET / answered 503 Service Unavailable",
        served_by="WebVM_IN_0",
    )
    timeout = check(status=FAILED, http_status=None, error_kind=TIMEOUT, error="no answer within 10 s")
    snapshot.assert_match(
        {
            "http-503": run(ep_rules.HttpEndpointError, subject(endpoints=endpoints(err))),
            "timeout": run(ep_rules.HttpEndpointError, subject(endpoints=endpoints(timeout))),
        }
    )


def test_vmr612_thumbprint_mismatch_shows_both_thumbprints(snapshot):
    wrong = check(name="HttpsIn", protocol="https", port=443, tls=tls(OTHER_TP))
    no_csdef = check(name="HttpsIn", protocol="https", tls=tls(OTHER_TP, expected_source="role-certificates"))
    snapshot.assert_match(
        {
            "expected-from-csdef": run(ep_rules.TlsThumbprintMismatch, subject(endpoints=endpoints(wrong))),
            "expected-from-role-certificates": run(
                ep_rules.TlsThumbprintMismatch, subject(endpoints=endpoints(no_csdef))
            ),
        }
    )


def test_vmr613_certificate_expiry_amber_then_red(snapshot):
    soon = check(name="HttpsIn", protocol="https", tls=tls(days_left=12.0, not_after="2024-03-01T00:00:00+00:00"))
    gone = check(name="HttpsIn", protocol="https", tls=tls(days_left=-3.0, not_after="2024-02-15T00:00:00+00:00"))
    snapshot.assert_match(
        {
            "expires-in-12-days": run(ep_rules.TlsCertificateExpiry, subject(endpoints=endpoints(soon))),
            "expired-3-days-ago": run(ep_rules.TlsCertificateExpiry, subject(endpoints=endpoints(gone))),
        }
    )


def test_vmr614_hostname_mismatch_is_low_and_info_on_local_vips(snapshot):
    public = check(name="HttpsIn", protocol="https", tls=tls(names=("www.fabrikam.com",), hostname_matches=False))
    local = replace(public, host="127.0.0.1")
    snapshot.assert_match(
        {
            "public-vip": run(ep_rules.TlsHostnameMismatch, subject(endpoints=endpoints(public))),
            "local-vip": run(ep_rules.TlsHostnameMismatch, subject(endpoints=endpoints(local))),
        }
    )


def test_vmr615_tls_handshake_failed(snapshot):
    bad = check(name="HttpsIn", protocol="https", status=FAILED, error_kind=TLS_ERROR, http_status=None,
                error="TLS handshake with 52.170.10.7:443 failed: WRONG_VERSION_NUMBER")  # fmt: skip
    snapshot.assert_match(run(ep_rules.TlsHandshakeFailed, subject(endpoints=endpoints(bad))))


def test_vmr616_instance_endpoint_unreachable_names_the_instance(snapshot):
    dead = check(INSTANCE, "Direct", "tcp", port=10002, instance="WebVM_IN_2", status=FAILED, error_kind=CLOSED,
                 http_status=None, error="TCP 52.170.10.7:10002: connected, then closed without a byte")  # fmt: skip
    snapshot.assert_match(run(ep_rules.InstanceEndpointUnreachable, subject(endpoints=endpoints(dead))))


def test_vmr617_internal_endpoint_unreachable_but_unsupported_is_not_judged(snapshot):
    refused = check(INTERNAL, "Control", "tcp", host="10.0.0.5", port=8080, instance="WebVM_IN_1", status=FAILED,
                    from_instance="WebVM_IN_0", error_kind=REFUSED, http_status=None,
                    error="TCP connect from WebVM_IN_0 to 10.0.0.5:8080: connection refused")  # fmt: skip
    snapshot.assert_match(run(ep_rules.InternalEndpointUnreachable, subject(endpoints=endpoints(refused))))
    unsupported = replace(refused, status=UNSUPPORTED, error=None, note="the guest cannot run the probe")
    assert run(ep_rules.InternalEndpointUnreachable, subject(endpoints=endpoints(unsupported))) == []


def test_vmr618_instance_endpoint_answered_by_another_instance(snapshot):
    crossed = check(INSTANCE, "Direct", "tcp", instance="WebVM_IN_1", served_by="WebVM_IN_0", http_status=None)
    snapshot.assert_match(run(ep_rules.InstanceEndpointWrongInstance, subject(endpoints=endpoints(crossed))))


def test_vmr619_thumbprint_unverifiable_says_why(snapshot):
    unknown = check(name="HttpsIn", protocol="https", tls=tls(expected_thumbprints=(), expected_source="none"),
                    note="certificate 'SSL' has no thumbprint in role 'WebVM' of the cscfg")  # fmt: skip
    snapshot.assert_match(run(ep_rules.TlsThumbprintUnverifiable, subject(endpoints=endpoints(unknown))))


def test_every_live_rule_in_this_range_is_exercised_here():
    """Each readiness and endpoint rule has a reviewed finding in this module's snapshots."""
    from finding_snapshots import SNAPSHOT_DIR, stored_findings

    from harness.engine.catalogue import all_rules

    ids = {r.id for r in all_rules() if r.__module__ in (rd_rules.__name__, ep_rules.__name__)}
    shown = {f["rule_id"] for f in stored_findings(SNAPSHOT_DIR / Path(__file__).stem)}
    assert ids and sorted(ids - shown) == []


def test_vmr612_catches_one_instance_behind_the_vip_and_same_certificates_are_judged_once(snapshot):
    vip = check(name="HttpsIn", protocol="https", port=443, tls=tls(), served_by="WebVM_IN_0")
    same = replace(vip, instance="WebVM_IN_0")
    wrong = replace(vip, instance="WebVM_IN_1", served_by="WebVM_IN_1", tls=tls(OTHER_TP))
    soon = tls(days_left=12.0, not_after="2024-03-01T00:00:00+00:00")
    expiring = endpoints(replace(vip, tls=soon), replace(same, tls=soon), replace(vip, instance="WebVM_IN_2", tls=soon))
    snapshot.assert_match(
        {
            "one-instance-differs": run(ep_rules.TlsThumbprintMismatch, subject(endpoints=endpoints(vip, same, wrong))),
            "one-certificate-one-finding": run(ep_rules.TlsCertificateExpiry, subject(endpoints=expiring)),
        }
    )
