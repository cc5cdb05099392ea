"""Load-balancer rules (VMR800-VMR806 rotation, VMR810-VMR813 drain) on hand-built facts."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from harness.checks.live import rotation as r

from harness.engine.artefact import DEPLOYMENT, Artefact
from harness.engine.rule import NotApplicable
from harness.facts.live.rotation import (
    AFFINITY_SOURCE_IP,
    DrainFacts,
    DrainPhase,
    EndpointRotation,
    ErrorCounts,
    PinProbe,
    RotationFacts,
)

ART = Artefact(kind=DEPLOYMENT, identity="local.vmrtarget.yml", path=Path("local.vmrtarget.yml"), display="local")
THREE = ("WebVM_IN_0", "WebVM_IN_1", "WebVM_IN_2")
IDENTIFY = {"header": "X-Served-By", "body_regex": r"served-by (\S+)", "banner_regex": None}


def subject(**stages):
    return SimpleNamespace(artefact=ART, target_name="local", **stages)


def findings(rule, subj):
    return list(rule().check(subj))


def endpoint(**kw) -> EndpointRotation:
    """A healthy http endpoint: 60 answers spread 21/19/20, all seen by the 4th, keep-alive pinned."""
    base = dict(
        role="WebVM",
        endpoint="HttpIn",
        protocol="http",
        vip="127.0.0.1",
        port=8080,
        requests=60,
        answered=60,
        bound=20,
        confidence=0.999,
        expected=THREE,
        counts={"WebVM_IN_0": 21, "WebVM_IN_1": 19, "WebVM_IN_2": 20},
        first_seen={"WebVM_IN_0": 1, "WebVM_IN_1": 2, "WebVM_IN_2": 4},
        identification={"header": 60},
        http_statuses={"200": 60},
        requests_to_all=4,
        source_ports=60,
        spread={"total": 60},
        keep_alive=PinProbe("keep-alive", 5, 5, ("WebVM_IN_0",)),
        fixed_port=PinProbe("fixed-source-port", 5, 5, ("WebVM_IN_1",)),
    )
    base.update(kw)
    return EndpointRotation(**base)


def rotation(*endpoints: EndpointRotation) -> RotationFacts:
    return RotationFacts(endpoints=endpoints or (endpoint(),), confidence=0.999, identify=IDENTIFY)


def udp() -> EndpointRotation:
    return EndpointRotation(
        role="WebVM",
        endpoint="Dns",
        protocol="udp",
        vip="127.0.0.1",
        port=53,
        probeable=False,
        note="UDP: no connection",
    )


def drain(**kw) -> DrainFacts:
    base = dict(
        role="WebVM",
        endpoint="HttpIn",
        vip="127.0.0.1",
        port=8080,
        instance="WebVM_IN_2",
        others=("WebVM_IN_0", "WebVM_IN_1"),
        method="hook",
        command="vmrole fabric fault busy --target WebVM_IN_2 --seconds 5",
        hook_rc=0,
        hold_seconds=5.0,
        grace_seconds=1.75,
        grace_source="fabric.json haproxy.probe.removal_window_s",
        confidence=0.999,
        required_samples=18,
        samples_after_grace=18,
        hits_after_grace=0,
        others_seen_after_grace=("WebVM_IN_0", "WebVM_IN_1"),
        stated_confidence=1 - (2 / 3) ** 18,
        status_left="BusyRole",
        returned=True,
        return_seconds=0.3,
        return_deadline_s=60.0,
        ready_again=True,
        phases=(
            DrainPhase("before", 5, {"WebVM_IN_0": 2, "WebVM_IN_1": 2, "WebVM_IN_2": 1}, 0, 0.01),
            DrainPhase("drained", 18, {"WebVM_IN_0": 9, "WebVM_IN_1": 9}, 0, 0.02, 1.75),
            DrainPhase("after", 6, {"WebVM_IN_0": 3, "WebVM_IN_2": 3}, 0, 0.3, 5.0),
        ),
    )
    base.update(kw)
    return DrainFacts(**base)


# ---- VMR800 -------------------------------------------------------------------------------------


def test_vmr800_passes_when_every_ready_instance_answers_within_the_bound():
    assert findings(r.RotationInstanceUnseen, subject(rotation=rotation())) == []


def test_vmr800_names_the_instance_that_never_answered(snapshot):
    ep = endpoint(
        requests=78,
        counts={"WebVM_IN_0": 35, "WebVM_IN_2": 25},
        first_seen={"WebVM_IN_0": 1, "WebVM_IN_2": 2},
        unseen=("WebVM_IN_1",),
        errors=ErrorCounts(reset=18),
        status_now={"WebVM_IN_1": "UnresponsiveRole"},
    )
    snapshot.assert_match(findings(r.RotationInstanceUnseen, subject(rotation=rotation(ep))))


def test_vmr800_reports_an_instance_first_seen_after_the_bound(snapshot):
    ep = endpoint(first_seen={"WebVM_IN_0": 1, "WebVM_IN_1": 2, "WebVM_IN_2": 31}, late={"WebVM_IN_2": 31})
    snapshot.assert_match(findings(r.RotationInstanceUnseen, subject(rotation=rotation(ep))))


def test_vmr800_leaves_affinity_and_unidentified_answers_to_their_rules():
    affinity = endpoint(counts={"WebVM_IN_1": 60}, first_seen={"WebVM_IN_1": 1}, affinity=AFFINITY_SOURCE_IP)
    blind = endpoint(counts={}, first_seen={}, unidentified=60, identification={})
    assert findings(r.RotationInstanceUnseen, subject(rotation=rotation(affinity, blind))) == []


def test_rotation_rules_are_not_applicable_without_probed_endpoints():
    subj = subject(rotation=RotationFacts(endpoints=(udp(),)))
    with pytest.raises(NotApplicable):
        findings(r.RotationInstanceUnseen, subj)


# ---- VMR801 -------------------------------------------------------------------------------------


def test_vmr801_passes_on_an_even_spread():
    assert findings(r.RotationSpreadSkewed, subject(rotation=rotation())) == []


def test_vmr801_reports_a_badly_skewed_spread_with_the_requests_it_would_take(snapshot):
    ep = endpoint(counts={"WebVM_IN_0": 50, "WebVM_IN_1": 5, "WebVM_IN_2": 5})
    snapshot.assert_match(findings(r.RotationSpreadSkewed, subject(rotation=rotation(ep))))


def test_vmr801_does_not_judge_a_few_samples_or_an_unseen_instance():
    few = endpoint(answered=9, counts={"WebVM_IN_0": 7, "WebVM_IN_1": 1, "WebVM_IN_2": 1})
    unseen = endpoint(counts={"WebVM_IN_0": 50, "WebVM_IN_1": 10}, unseen=("WebVM_IN_2",))
    assert findings(r.RotationSpreadSkewed, subject(rotation=rotation(few, unseen))) == []


# ---- VMR802 / VMR803 ----------------------------------------------------------------------------


def test_vmr802_reports_suspected_source_ip_affinity_as_low(snapshot):
    ep = endpoint(counts={"WebVM_IN_1": 60}, first_seen={"WebVM_IN_1": 1}, affinity=AFFINITY_SOURCE_IP)
    snapshot.assert_match(findings(r.RotationSourceIpAffinity, subject(rotation=rotation(ep))))


def test_vmr802_passes_without_affinity():
    assert findings(r.RotationSourceIpAffinity, subject(rotation=rotation())) == []


def test_vmr803_notes_a_pinned_keep_alive_connection_as_expected(snapshot):
    snapshot.assert_match(findings(r.RotationKeepAlivePinned, subject(rotation=rotation())))


def test_vmr803_silent_when_keep_alive_moves_or_was_not_probed():
    moving = endpoint(keep_alive=PinProbe("keep-alive", 5, 5, ("WebVM_IN_0", "WebVM_IN_1")))
    tcp = endpoint(protocol="tcp", keep_alive=None)
    assert findings(r.RotationKeepAlivePinned, subject(rotation=rotation(moving, tcp))) == []


# ---- VMR804 -------------------------------------------------------------------------------------


def test_vmr804_passes_without_connection_errors():
    assert findings(r.RotationConnectionErrors, subject(rotation=rotation())) == []


def test_vmr804_is_red_for_many_errors_and_amber_for_a_few(snapshot):
    many = endpoint(requests=78, errors=ErrorCounts(reset=18), error_examples=("closed",), unseen=("WebVM_IN_1",))
    few = endpoint(endpoint="HttpsIn", requests=62, errors=ErrorCounts(timeout=1, refused=1))
    snapshot.assert_match(findings(r.RotationConnectionErrors, subject(rotation=rotation(many, few))))


# ---- VMR805 -------------------------------------------------------------------------------------


def test_vmr805_passes_when_every_answer_names_an_instance():
    assert findings(r.RotationUnidentifiedAnswers, subject(rotation=rotation())) == []


def test_vmr805_reports_unattributed_answers(snapshot):
    blind = endpoint(counts={}, first_seen={}, unidentified=60)
    partly = endpoint(endpoint="HttpsIn", unknown={"web-01": 3})
    snapshot.assert_match(findings(r.RotationUnidentifiedAnswers, subject(rotation=rotation(blind, partly))))


# ---- VMR806 -------------------------------------------------------------------------------------


def test_vmr806_notes_udp_endpoints_and_endpoints_without_a_vip(snapshot):
    novip = endpoint(endpoint="Raw", protocol="tcp", vip="", probeable=False, note="no VIP or DNS name", requests=0)
    snapshot.assert_match(findings(r.RotationEndpointNotProbed, subject(rotation=rotation(endpoint(), udp(), novip))))


def test_vmr806_silent_without_udp_endpoints():
    assert findings(r.RotationEndpointNotProbed, subject(rotation=rotation())) == []


# ---- VMR810 -------------------------------------------------------------------------------------


def test_vmr810_passes_when_the_drained_instance_got_nothing():
    assert findings(r.DrainedInstanceStillServed, subject(drain=drain())) == []


def test_vmr810_reports_hits_after_the_grace_period_with_counts_and_confidence(snapshot):
    still_served = subject(drain=drain(hits_after_grace=6, stated_confidence=0.0))
    snapshot.assert_match(findings(r.DrainedInstanceStillServed, still_served))


def test_drain_rules_are_not_applicable_without_an_instance_or_when_not_performed():
    nothing = subject(drain=DrainFacts(notes=("no load-balanced endpoint has at least two Ready instances",)))
    with pytest.raises(NotApplicable, match="two Ready"):
        findings(r.DrainedInstanceStillServed, nothing)
    failed = subject(drain=drain(not_performed="the busy hook exited 2: bad option", returned=None))
    with pytest.raises(NotApplicable, match="VMR813"):
        findings(r.DrainedInstanceNotReturned, failed)


# ---- VMR811 -------------------------------------------------------------------------------------


def test_vmr811_passes_when_the_instance_returned():
    assert findings(r.DrainedInstanceNotReturned, subject(drain=drain())) == []


def test_vmr811_reports_an_instance_that_did_not_return(snapshot):
    before, drained, _ = drain().phases
    after = DrainPhase("after", 6, {"WebVM_IN_0": 3, "WebVM_IN_1": 3}, 0, 60.0, 5.0)  # WebVM_IN_2 never came back
    facts = drain(returned=False, return_seconds=None, ready_again=True, phases=(before, drained, after))
    snapshot.assert_match(findings(r.DrainedInstanceNotReturned, subject(drain=facts)))


# ---- VMR812 -------------------------------------------------------------------------------------


def test_vmr812_passes_with_enough_samples_and_every_other_instance_seen():
    assert findings(r.DrainInconclusive, subject(drain=drain())) == []


def test_vmr812_reports_too_few_samples_after_the_grace(snapshot):
    facts = drain(samples_after_grace=5, stated_confidence=1 - (2 / 3) ** 5, others_seen_after_grace=("WebVM_IN_0",))
    snapshot.assert_match(findings(r.DrainInconclusive, subject(drain=facts)))


# ---- VMR813 -------------------------------------------------------------------------------------


def test_vmr813_passes_when_the_drain_ran():
    assert findings(r.DrainNotPerformed, subject(drain=drain())) == []


def test_vmr813_reports_a_failed_hook(snapshot):
    facts = drain(not_performed="the busy hook exited 2: unknown option", hook_rc=2, returned=None)
    snapshot.assert_match(findings(r.DrainNotPerformed, subject(drain=facts)))


def test_every_rule_of_the_module_has_valid_metadata():
    rules = [
        r.RotationInstanceUnseen,
        r.RotationSpreadSkewed,
        r.RotationSourceIpAffinity,
        r.RotationKeepAlivePinned,
        r.RotationConnectionErrors,
        r.RotationUnidentifiedAnswers,
        r.RotationEndpointNotProbed,
        r.DrainedInstanceStillServed,
        r.DrainedInstanceNotReturned,
        r.DrainInconclusive,
        r.DrainNotPerformed,
    ]
    for rule in rules:
        assert list(rule.validate_metadata()) == [], rule.id
        assert rule.applies_to == frozenset({DEPLOYMENT})
    assert {rule.requires for rule in rules} == {("rotation",), ("drain",)}
