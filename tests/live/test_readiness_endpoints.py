"""Stages ``deployment``/``readiness``/``endpoints`` and the management client against a real local fabric.

One fabric for the module; every test leaves it healthy (faults cleared, every instance ReadyRole and every
instance endpoint answering) for the next one. Waits are polls with deadlines, never bare sleeps.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness.checks.live import endpoints as ep_rules
from harness.checks.live import readiness as rd_rules

from harness.engine.artefact import DEPLOYMENT, Artefact
from harness.engine.severity import Severity
from harness.facts.live.endpoints import FAILED, INPUT, INSTANCE, INTERNAL, OK
from harness.live import deployment_source
from harness.live.context import LiveContext
from harness.live.errors import StageError
from harness.live.management import ManagementClient, ManagementError, RetryPolicy
from harness.live.probes import endpoints as endpoints_stage
from harness.live.subject import LiveSubject, StageRecord

pytestmark = pytest.mark.xdist_group("fabric-live-a")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from harness.fabric.client import up

    fab = up(tmp_path_factory.mktemp("f"), step_seconds=0.1)
    try:
        yield fab
    finally:
        report = fab.down()
        assert report.ports_still_open == []


@pytest.fixture(scope="module")
def target(fabric: Any) -> Any:
    from harness.live.target import target_for_fabric

    return target_for_fabric(fabric)


def context(target: Any, **timeouts: float) -> LiveContext:
    if timeouts:
        target = dataclasses.replace(target, timeouts=dataclasses.replace(target.timeouts, **timeouts))
    return LiveContext(target)


def healthy(target: Any) -> bool:
    ctx = context(target)
    try:
        ready = deployment_source.wait_ready(ctx)
        if not ready.ready:
            return False
        facts = endpoints_stage.run(ctx)
        return all(c.status == OK for c in facts.of_kind(INSTANCE) + facts.of_kind(INPUT))
    except StageError:
        return False
    finally:
        ctx.close()


@pytest.fixture
def clean(fabric: Any, target: Any) -> Iterator[None]:
    """Leave the fabric as found: faults cleared and everything answering."""
    yield
    fabric.clear_faults()
    wait_until(lambda: healthy(target), 45, "the fabric to be healthy again", interval=0.3)


def live_subject(ctx: LiveContext) -> LiveSubject:
    artefact = Artefact(DEPLOYMENT, "local-fabric.vmrtarget.yml", ctx.target.path, "local-fabric")
    return LiveSubject(artefact, ctx)


def findings(rules: list[type], subject: Any) -> list[Any]:
    return [f for rule in rules for f in rule().check(subject)]


READINESS_RULES = [
    rd_rules.DeploymentNotRunning,
    rd_rules.InstanceNotReadyByDeadline,
    rd_rules.InstanceFailedStatus,
    rd_rules.UpgradeDomainSpread,
    rd_rules.FaultDomainSpread,
    rd_rules.InstanceCountMismatch,
    rd_rules.ManagementApiFlaky,
]
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


def test_healthy_deployment_reads_ready_and_every_endpoint_answers(fabric: Any, target: Any):
    ctx = context(target)
    try:
        subject = live_subject(ctx)
        deployment = subject.deployment
        assert deployment is not None, subject.notes.get("deployment")
        assert deployment.status == "Running" and len(deployment.instances) == 5
        assert deployment.configuration is not None and deployment.name == fabric.data["deployment_name"]
        assert "omitted: it may contain secrets" in deployment.xml and "<Configuration>PD" not in deployment.xml
        assert {(e.name, e.protocol, e.protocol_source) for e in deployment.input_endpoints} == {
            ("HttpIn", "http", "csdef"),
            ("HttpsIn", "https", "csdef"),
        }

        ready = subject.readiness
        assert ready.ready and not ready.deadline_passed and not ready.failed_fast
        assert {i.classification for i in ready.instances} == {"healthy"}
        assert all(i.ready_after is not None for i in ready.instances)
        assert "readiness-history" in ctx.evidence_texts and "deployment.xml" in ctx.evidence_texts
        assert [f for f in findings(READINESS_RULES, subject) if f.severity >= Severity.HIGH] == []

        facts = subject.endpoints
        assert facts is not None, subject.notes.get("endpoints")
        by_name = {c.endpoint: c for c in facts.of_kind(INPUT) if c.instance is None}  # the VIP checks
        sweep = {c.instance: c for c in facts.of_kind(INPUT) if c.instance is not None and c.endpoint == "HttpsIn"}
        assert set(sweep) == {"WebVM_IN_0", "WebVM_IN_1", "WebVM_IN_2"}  # every instance's certificate seen
        assert all(c.tls is not None and c.tls.thumbprint_matches for c in sweep.values())
        assert by_name["HttpIn"].status == OK and by_name["HttpIn"].http_status == 200
        https = by_name["HttpsIn"]
        assert https.status == OK and https.tls is not None
        assert https.tls.thumbprint == fabric.data["certificates"]["SSL"] and https.tls.thumbprint_matches is True
        assert https.tls.expected_source == "csdef" and https.tls.days_left > 30
        assert by_name["HttpIn"].served_by in {i["id"] for i in fabric.instances}
        instance_checks = facts.of_kind(INSTANCE)
        assert len(instance_checks) == 3 * 2 + 2 * 1  # Direct + WinRM on WebVM, WinRM on Indexer
        assert all(c.status == OK for c in instance_checks)
        direct = [c for c in instance_checks if c.endpoint == "Direct"]
        assert all(c.served_by == c.instance for c in direct)
        # internal endpoints, probed from inside another instance over the fabric's internal network
        internal = facts.of_kind(INTERNAL)
        assert {(c.endpoint, c.instance) for c in internal} == {
            ("Control", "WebVM_IN_0"),
            ("Control", "WebVM_IN_1"),
            ("Control", "WebVM_IN_2"),
            ("Feed", "Indexer_IN_0"),
            ("Feed", "Indexer_IN_1"),
        }
        assert all(c.status == OK and c.from_instance and c.from_instance != c.instance for c in internal)

        found = findings(ENDPOINT_RULES, subject)
        assert [f for f in found if f.severity >= Severity.LOW] == [], [f.message for f in found]
        # the loopback VIP cannot match contosovmrole.cloudapp.net: reported, but only as information
        assert {f.rule_id for f in found} == {"VMR614"}
        assert "contosovmrole.cloudapp.net" in found[0].message
    finally:
        ctx.close()


def test_busy_instance_is_reported_with_its_status_at_the_deadline(fabric: Any, target: Any, clean: None):
    fabric.inject("busy", "WebVM_IN_1", seconds=30)
    ctx = context(target, ready=2.0)
    try:
        ready = deployment_source.wait_ready(ctx)
        assert not ready.ready and ready.deadline_passed and not ready.failed_fast
        busy = next(i for i in ready.instances if i.name == "WebVM_IN_1")
        assert busy.status == "BusyRole" and busy.classification == "transitional" and busy.ready_after is None
        assert any(c.subject == "WebVM_IN_1" and c.status == "BusyRole" for c in ready.history)
        subject = live_subject(ctx)
        subject.records["readiness"] = StageRecord(facts=ready, ran=True)
        (finding,) = list(rd_rules.InstanceNotReadyByDeadline().check(subject))
        assert "WebVM_IN_1" in finding.message and "BusyRole" in finding.message and "2 s" in finding.message
    finally:
        ctx.close()


def test_crashed_instance_fails_its_own_endpoint_while_the_vip_still_answers(fabric: Any, target: Any, clean: None):
    fabric.inject("crash", "WebVM_IN_2", seconds=60)
    ctx = context(target)
    try:

        def crashed_view() -> Any:
            facts = endpoints_stage.run(ctx)
            vip_ok = all(c.status == OK for c in facts.of_kind(INPUT))
            direct = next(c for c in facts.of_kind(INSTANCE) if c.instance == "WebVM_IN_2" and c.endpoint == "Direct")
            return facts if vip_ok and direct.status == FAILED else None

        facts = wait_until(crashed_view, 20, "the VIP to route around the crashed instance", interval=0.3)
        assert all(c.served_by != "WebVM_IN_2" for c in facts.of_kind(INPUT))
        others = [c for c in facts.of_kind(INSTANCE) if c.endpoint == "Direct" and c.instance != "WebVM_IN_2"]
        assert others and all(c.status == OK for c in others)

        subject = live_subject(ctx)
        subject.records["endpoints"] = StageRecord(facts=facts, ran=True)
        found = list(ep_rules.InstanceEndpointUnreachable().check(subject))
        assert [f.evidence["instance"] for f in found] == ["WebVM_IN_2"]
        assert "WebVM_IN_2" in found[0].message and "closed without a byte" in found[0].message
        assert list(ep_rules.VipEndpointRefusesTcp().check(subject)) == []
        assert list(ep_rules.HttpEndpointError().check(subject)) == []
    finally:
        ctx.close()


def test_management_500_is_retried_then_reported(fabric: Any, target: Any, clean: None):
    events: list[str] = []
    client = ManagementClient(target, target.masker(), log=lambda event, **_: events.append(event))
    try:
        fabric.inject("mgmt-500", seconds=0.6)  # shorter than the retries: the call recovers
        response = client.get_deployment()
        assert response.attempts >= 2 and response.deployment.status == "Running"
        assert any("500 InternalError, retrying" in e for e in events)

        fabric.inject("mgmt-500", seconds=30)  # outlasts every retry
        with pytest.raises(ManagementError) as info:
            client.get_deployment()
        assert info.value.status == 500 and info.value.code == "InternalError" and info.value.attempts == 3
        ctx = context(target)
        try:
            with pytest.raises(StageError, match="500 InternalError"):
                deployment_source.fetch(ctx)
            subject = live_subject(ctx)
            (finding,) = list(rd_rules.ManagementApiUnreachable().check(subject))
            assert "500 InternalError" in finding.message and "after 3 attempts" in finding.message
            assert subject.readiness is None and "500" in (subject.notes.get("readiness") or "")
        finally:
            ctx.close()
    finally:
        fabric.clear_faults()
        client.close()


def test_management_409_on_an_operation_is_retried_with_backoff(fabric: Any, target: Any, clean: None):
    events: list[tuple[str, dict[str, Any]]] = []
    policy = RetryPolicy(conflict_initial=0.2, conflict_attempts=10, conflict_deadline=30)
    client = ManagementClient(target, target.masker(), log=lambda e, **kw: events.append((e, kw)), policy=policy)
    try:
        client.deployment_name()  # learnt before the fault: the POST is what meets the 409
        fabric.inject("mgmt-409", seconds=2.5)  # margin for a loaded machine
        started = time.monotonic()
        request_id = client.start_operation("reboot", "Indexer_IN_1")
        assert len(request_id) == 32 and time.monotonic() - started >= 0.5
        delays = [kw["delay"] for e, kw in events if "409 ConflictError, retrying" in e]
        assert len(delays) >= 2 and all(b > a for a, b in itertools.pairwise(delays))  # backoff grows
        result = client.wait_operation(request_id, 30, interval=0.1)
        assert result.succeeded and not result.timed_out and result.history[-1][1] == "Succeeded"
        assert result.request_id == request_id
    finally:
        fabric.clear_faults()
        client.close()


def test_conflict_that_never_ends_is_bounded(fabric: Any, target: Any, clean: None):
    policy = RetryPolicy(conflict_initial=0.1, conflict_attempts=3, conflict_deadline=5)
    client = ManagementClient(target, target.masker(), policy=policy)
    try:
        client.deployment_name()
        fabric.inject("mgmt-409", seconds=20)
        started = time.monotonic()
        with pytest.raises(ManagementError) as info:
            client.start_operation("reboot", "Indexer_IN_0")
        assert info.value.status == 409 and info.value.code == "ConflictError" and info.value.attempts == 3
        assert "still conflicting after 3 attempts" in str(info.value) and time.monotonic() - started < 5
    finally:
        fabric.clear_faults()
        client.close()


def test_without_a_csdef_https_is_compared_with_every_role_certificate(fabric: Any, target: Any):
    from harness.live.target import Model

    ctx = LiveContext(dataclasses.replace(target, model=Model(csdef=None)))
    try:
        facts = endpoints_stage.run(ctx)
        https = [c for c in facts.of_kind(INPUT) if c.tls is not None and c.instance is None]
        assert len(https) == 1, facts.table()  # the fabric's HttpsIn, found by its TLS handshake
        check = https[0]
        assert check.tls.expected_source == "role-certificates" and check.tls.thumbprint_matches is True
        assert "no csdef given" in (check.note or "") and "local port is 443" in (check.note or "")
        assert len(check.tls.expected_thumbprints) == 2
        assert any("internal endpoints not checked" in n for n in facts.notes)
    finally:
        ctx.close()
