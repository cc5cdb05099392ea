"""Stages guest / reimage / reboot against a real local fabric (pywinrm, Service Management, Azurite)."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from harness.checks.live import guest as guest_rules
from harness.checks.live import reimage as reimage_rules

from harness.engine.artefact import DEPLOYMENT, Artefact
from harness.engine.rule import NotApplicable, Rule
from harness.engine.severity import Severity
from harness.facts.live.reimage import BLOB, BLOB_FROM_INSTANCE, LOCAL, OS
from harness.live.context import LiveContext

pytestmark = pytest.mark.xdist_group("fabric-live-c")


@pytest.fixture(scope="module")
def fabric(tmp_path_factory):
    from harness.fabric.client import up

    fab = up(tmp_path_factory.mktemp("f"), step_seconds=0.1)
    try:
        yield fab
    finally:
        fab.down()


@pytest.fixture(scope="module")
def target(fabric):
    from harness.live.target import target_for_fabric

    return target_for_fabric(fabric)


@pytest.fixture(scope="module")
def ctx(target):
    context = LiveContext(target, destructive=True)
    yield context
    context.close()


class Subject:
    def __init__(self, target, **facts):
        self.artefact = Artefact(DEPLOYMENT, str(target.path), target.path, target.path.name)
        self.target_name = target.name
        self.__dict__.update(facts)


def run_rules(module, subject) -> list:
    out = []
    for rule in vars(module).values():
        if isinstance(rule, type) and issubclass(rule, Rule) and "id" in rule.__dict__:
            if any(getattr(subject, attr, None) is None for attr in rule.requires):
                continue
            with contextlib.suppress(NotApplicable):
                out += list(rule().check(subject))
    return out


def test_pool_reuses_one_shell_per_instance(ctx):
    pool = ctx.winrm
    names = [i.name for i in ctx.deployment().instances]
    first = names[0]
    shell = pool.shell_id(first)
    for _ in range(3):
        assert pool.run_cmd(first, "hostname").stdout.strip() == first
    assert pool.run_ps(first, "Write-Output 'x'").stdout.strip() == "x"
    assert pool.batch(first, ["Test-Path -Path 'C:\\'", "Get-Service -Name 'W3SVC' | Select-Object Name,Status"]) == [
        True,
        {"Name": "W3SVC", "Status": 4},
    ]
    assert pool.shell_id(first) == shell and pool.shell(first).commands >= 5
    assert pool.shell_id(names[1]) != shell
    assert "winrm-" + first in ctx.evidence_texts and "hostname" in ctx.evidence_texts["winrm-" + first]
    r = pool.run_ps(first, "Get-Content -Path 'C:\\nope.txt'")
    assert r.rc == 1 and r.stderr.startswith("Get-Content : Cannot find path") and "CLIXML" not in r.stderr


def test_a_dropped_first_handshake_is_retried_once_then_reported(target, monkeypatch):
    import requests
    from winrm.protocol import Protocol

    from harness.live import winrm_pool
    from harness.live.winrm_pool import WinRMError

    monkeypatch.setattr(winrm_pool, "OPEN_RETRY_PAUSE", 0.0)
    real = Protocol.open_shell
    failures = {"left": 1}

    def flaky(self, *args, **kwargs):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise requests.exceptions.SSLError("TLS/SSL connection has been closed (EOF)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Protocol, "open_shell", flaky)
    for left, works in ((1, True), (2, False)):
        failures["left"] = left
        other = LiveContext(target)
        try:
            name = other.deployment().instances[0].name
            if works:
                assert other.winrm.shell_id(name)
            else:
                with pytest.raises(WinRMError, match="could not open a shell"):
                    other.winrm.shell_id(name)
        finally:
            other.close()


def test_guest_checks_are_green_on_a_healthy_fabric(ctx, target):
    from harness.live.probes.guest import run

    facts = run(ctx)
    assert {i.instance for i in facts.instances} == {i.name for i in ctx.deployment().instances}
    web = next(i for i in facts.instances if i.role == "WebVM")
    assert {p.endpoint for p in web.ports} == {"HttpIn", "HttpsIn", "Direct", "WinRM"}
    assert all(p.listening and p.firewall_allowed for p in web.ports)
    assert [s.status for s in web.services] == ["Running"] * len(target.services)
    assert run_rules(guest_rules, Subject(target, guest=facts)) == []


def test_app_state_on_the_os_drive_is_flagged(ctx, target):
    from harness.live.probes.guest import run

    other = LiveContext(dataclasses.replace(target, app_state_paths=("C:\\AppState\\orders.db", "D:\\ok.db")))
    try:
        facts = run(other)
    finally:
        other.close()
    found = run_rules(guest_rules, Subject(target, guest=facts))
    assert [f.rule_id for f in found] == ["VMR634"] and "orders.db" in found[0].message


def last_web(ctx) -> str:
    return [i.name for i in ctx.deployment().instances if i.role == "WebVM"][-1]


def _by(facts, kind, name=None):
    return next(m for m in facts.markers if m.kind == kind and (name is None or m.name == name))


def test_reimage_resets_the_os_drive_and_keeps_durable_state(ctx, target):
    from harness.live.probes.reimage import run_reimage

    facts = run_reimage(ctx)
    assert facts.setup_error is None and facts.role == "WebVM" and facts.instance == last_web(ctx)
    assert facts.operation.succeeded and facts.operation.ready, facts.operation
    assert all(m.written for m in facts.markers), facts.markers
    assert _by(facts, OS).present_after is False
    assert _by(facts, LOCAL, "AppData").present_after is True
    assert _by(facts, LOCAL, "Scratch").present_after is False
    assert _by(facts, BLOB).present_after is True and _by(facts, BLOB_FROM_INSTANCE).present_after is True
    statuses = [s for _, s in facts.operation.timeline]
    assert {"StoppingRole", "StoppedVM", "StartingVM", "BusyRole"} & set(statuses) and statuses[-1] == "ReadyRole"
    assert ctx.charts["reimage-timeline"]["instance"] == facts.instance
    assert "reimage-operation" in ctx.evidence_texts
    assert run_rules(reimage_rules, Subject(target, reimage=facts)) == []


def test_lost_local_storage_is_an_amber_finding(fabric, ctx, target):
    from harness.live.probes.reimage import run_reimage

    fabric.inject("lose-local-storage", target=last_web(ctx), seconds=120)
    facts = run_reimage(ctx)
    assert _by(facts, LOCAL, "AppData").present_after is False
    found = run_rules(reimage_rules, Subject(target, reimage=facts))
    assert [f.rule_id for f in found] == ["VMR703"]
    assert "AppData" in found[0].message and found[0].severity < Severity.HIGH


def test_reboot_keeps_everything(ctx, target):
    from harness.live.probes.reimage import run_reboot

    facts = run_reboot(ctx)
    assert facts.operation.succeeded and facts.operation.ready
    assert all(m.written and m.present_after for m in facts.markers), facts.markers
    assert run_rules(reimage_rules, Subject(target, reboot=facts)) == []


def test_a_slow_guest_times_out_instead_of_hanging(fabric, ctx):
    import time

    from harness.live.winrm_pool import WinRMPool, WinRMTimeout

    name = next(i.name for i in ctx.deployment().instances if i.role != "WebVM")
    fault = fabric.inject("winrm-slow", target=name, seconds=30, delay_ms=4000)
    pool = WinRMPool(ctx, read_timeout=2, operation_timeout=1, command_timeout=5)
    started = time.monotonic()
    try:
        with pytest.raises(WinRMTimeout, match=name):
            pool.run_cmd(name, "hostname")
    finally:
        pool.close()
        fabric.clear_faults(fault.get("id"))
    assert time.monotonic() - started < 15
