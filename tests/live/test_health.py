"""The per-run dependency record, and what becomes of a stage that raises (no fabric needed)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from harness.engine.artefact import DEPLOYMENT, Artefact
from harness.facts.live.deployment import InstanceReadiness, ReadinessFacts
from harness.facts.live.reimage import ReimageFacts
from harness.live.errors import StageError
from harness.live.health import BLOB, LB, MGMT, WINRM, DependencyDown, Health
from harness.live.masking import Masker
from harness.live.subject import LiveSubject


def test_a_refusal_is_remembered_with_the_stage_it_was_first_seen_in() -> None:
    stage = ["endpoints"]
    health = Health(lambda: stage[0])
    assert health.down(LB, "127.0.0.1:8080") is None
    health.mark_down(LB, "127.0.0.1:8080", "refused connections")
    stage[0] = "rotation"
    health.mark_down(LB, "127.0.0.1:8080", "refused connections")  # the first record is kept
    down = health.down(LB, "127.0.0.1:8080")
    assert down is not None
    assert down.reason == "the load balancer at 127.0.0.1:8080 refused connections (first seen in stage endpoints)"
    with pytest.raises(DependencyDown, match="first seen in stage endpoints"):
        health.check(LB, "127.0.0.1:8080")
    health.mark_up(LB, "127.0.0.1:8080")  # it answered again
    assert health.down(LB, "127.0.0.1:8080") is None


def test_the_whole_vip_is_down_after_two_refusing_ports_and_no_answer() -> None:
    health = Health(lambda: "endpoints")
    health.mark_down(LB, "127.0.0.1:1001", "refused connections")
    assert health.down(LB, "127.0.0.1:1003") is None  # one port may simply not be served
    health.mark_down(LB, "127.0.0.1:1002", "refused connections")
    down = health.down(LB, "127.0.0.1:1003")
    assert down is not None and "every port tried (1001, 1002)" in down.reason
    health.mark_up(LB, "127.0.0.1:1004")  # something answers on that address: only the ports are down
    assert health.down(LB, "127.0.0.1:1003") is None
    # other kinds never borrow the load balancer's record
    assert health.down(MGMT, "127.0.0.1:1003") is None and health.down(BLOB, "127.0.0.1:1001") is None


def test_a_timeout_is_remembered_as_uncertain_with_its_own_wording() -> None:
    health = Health()
    health.mark_down(WINRM, "WebVM_IN_0", "did not answer within 10 s", certain=False, what="WinRM of WebVM_IN_0")
    down = health.down(WINRM, "WebVM_IN_0")
    assert down is not None and not down.certain
    assert down.reason == "WinRM of WebVM_IN_0 did not answer within 10 s"


READY = ReadinessFacts(
    deadline=4.0,
    elapsed=0.1,
    deployment_status="Running",
    instances=(InstanceReadiness("WebVM_IN_0", "WebVM", "ReadyRole", "healthy", 0.1),),
    deadline_passed=False,
    failed_fast=False,
)
FACTS = ReimageFacts(instance="WebVM_IN_0", role="WebVM")


class _Ctx:
    def __init__(self) -> None:
        self.masker = Masker()
        self.destructive = True
        self.stage: str | None = None
        self.health = Health(lambda: self.stage)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.target = types.SimpleNamespace(name="t")
        self.refreshes = 0

    def log(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    def deployment(self, refresh: bool = False) -> Any:
        self.refreshes += 1
        raise StageError("Get Deployment failed: 500 InternalError")


@pytest.fixture
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """harness.live.probes.{deployment,reimage,drain} replaced by stubs the test programs."""
    modules = {}
    for name in ("deployment", "reimage", "drain"):
        module = types.ModuleType(f"harness.live.probes.{name}")
        monkeypatch.setitem(sys.modules, f"harness.live.probes.{name}", module)
        modules[name] = module
    modules["deployment"].run_readiness = lambda ctx: READY  # type: ignore[attr-defined]
    return types.SimpleNamespace(**modules)  # type: ignore[return-value]


def subject(ctx: _Ctx) -> LiveSubject:
    artefact = Artefact(DEPLOYMENT, "t", Path("t.vmrtarget.yml"), "t")
    return LiveSubject(artefact, ctx)  # type: ignore[arg-type]


def test_a_stage_that_breaks_fails_its_rules_with_a_short_cause(fake_stages: Any) -> None:
    def broken(ctx: Any) -> Any:
        return {}["no such key"]

    fake_stages.reimage.run_reimage = broken
    live = subject(_Ctx())
    with pytest.raises(pytest.fail.Exception) as info:
        _ = live.reimage
    message = str(info.value)
    assert message.startswith("the reimage probe could not finish: KeyError: 'no such key' (raised at ")
    assert "test_health.py" in message and "\n" not in message
    assert not info.value.pytrace  # pytest prints the message only, no traceback
    assert live.records["reimage"].failed


def test_after_a_destructive_stage_a_failing_refresh_does_not_break_its_facts(fake_stages: Any) -> None:
    """mgmt-500 after the reimage: the facts stand (the rules report the 500), no exception escapes."""
    fake_stages.reimage.run_reimage = lambda ctx: FACTS
    ctx = _Ctx()
    live = subject(ctx)
    assert live.reimage is FACTS
    assert ctx.refreshes == 1
    assert any("Get Deployment afterwards failed" in event for event, _ in ctx.events)


def test_a_dependency_known_down_skips_the_stage_with_the_cause(fake_stages: Any) -> None:
    ctx = _Ctx()

    def drain(ctx: Any) -> Any:
        ctx.health.mark_down(LB, "127.0.0.1:80", "refused connections")
        ctx.health.check(LB, "127.0.0.1:80")

    fake_stages.drain.run = drain
    live = subject(ctx)
    assert live.drain is None
    assert live.notes.get("drain") == (
        "the load balancer at 127.0.0.1:80 refused connections (first seen in stage drain)"
    )
    assert not live.records["drain"].failed


def test_a_destructive_stage_on_a_deployment_that_is_not_ready_is_skipped_at_once_naming_the_instance(
    fake_stages: Any,
) -> None:
    """Issue 10 item 6: the readiness wait runs once; destructive probes never wait for it again."""
    busy = ReadinessFacts(
        deadline=4.0,
        elapsed=4.0,
        deployment_status="Running",
        instances=(
            InstanceReadiness("WebVM_IN_0", "WebVM", "ReadyRole", "healthy", 0.1),
            InstanceReadiness("WebVM_IN_1", "WebVM", "BusyRole", "transitional", None),
        ),
        deadline_passed=True,
        failed_fast=False,
    )
    waits: list[int] = []

    def readiness(ctx: Any) -> ReadinessFacts:
        waits.append(1)
        return busy

    def must_not_run(ctx: Any) -> Any:
        raise AssertionError("a destructive probe ran on a deployment that is not ready")

    fake_stages.deployment.run_readiness = readiness
    fake_stages.drain.run = must_not_run
    fake_stages.reimage.run_reimage = must_not_run
    fake_stages.reimage.run_reboot = must_not_run
    live = subject(_Ctx())
    assert live.readiness is busy
    for stage in ("drain", "reimage", "reboot"):
        assert getattr(live, stage) is None
        assert live.notes.get(stage) == (
            f"destructive probe '{stage}' not run: the deployment is not ready (it was not ready within the 4 s "
            "readiness deadline): WebVM_IN_1 is BusyRole"
        )
    assert waits == [1]  # one wait for the whole run
