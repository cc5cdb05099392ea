"""The vmss back end END TO END: the local fabric's ARM face (``fabric up --api vmss``, a 3-instance scale set
from an ARM template) reached through the unmodified azure-identity / azure-mgmt-compute / azure-mgmt-network
clients the back end builds from a target file with ``management.api: vmss``.

Checked: discovery (instances named by computer name with their instance ids, ARM states mapped to the statuses
the rules know, the load balancer's frontend IP and rule, each instance's WinRM NAT port), the readiness wait,
one reimage of ONE instance through its poller with the instance back to ReadyRole, the live stages the 6xx
rules read, and the causes ARM's bad answers are reported with (bad client secret, wrong subscription, unknown
scale set, 409 from another operation, throttling) — in bounded time, never a token or the client secret.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.engine.artefact import DEPLOYMENT, Artefact
from harness.facts.live import platform
from harness.live import deployment_source
from harness.live.backends.vmss import ArmError, VmssBackend
from harness.live.context import LiveContext
from harness.live.errors import StageError
from harness.live.subject import LiveSubject
from harness.live.target import Target, load_target, target_for_fabric

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fabric")]

TEMPLATE = Path(__file__).resolve().parents[1] / "data" / "arm" / "scaleset.azuredeploy.json"
VMSS = "web"


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from harness.fabric.client import up

    fab = up(tmp_path_factory.mktemp("fabric-vmss"), api="vmss", template=TEMPLATE, image="web-2026.vhd")
    yield fab
    fab.down()


@pytest.fixture(scope="module")
def target(fabric: Any) -> Target:
    return target_for_fabric(fabric, api="vmss", scale_set=VMSS)


def context(target: Target, **timeouts: float) -> LiveContext:
    if timeouts:
        target = dataclasses.replace(target, timeouts=dataclasses.replace(target.timeouts, **timeouts))
    ctx = LiveContext(target)
    assert isinstance(ctx.backend, VmssBackend)
    ctx.backend.polling_interval = 0.5
    return ctx


def client_secret(fabric: Any) -> str:
    return Path(fabric.data["arm"]["client_secret_file"]).read_text("utf-8").strip()


def shown(ctx: LiveContext, *more: str) -> str:
    return json.dumps(ctx.events, default=str) + json.dumps(ctx.evidence_texts) + "\n".join(more)


def variant(target: Target, tmp_path: Path, **management: Any) -> Target:
    """The target file with some management keys changed (a real file, loaded as a user's would be)."""
    doc = yaml.safe_load(target.path.read_text("utf-8"))
    doc["management"].update(management)
    path = tmp_path / "variant.vmrtarget.yml"
    path.write_text(yaml.safe_dump(doc), "utf-8")
    return load_target(path)


def test_discovery_names_instances_by_computer_name_and_instance_id(fabric: Any, target: Target) -> None:
    ctx = context(target)
    try:
        facts = ctx.deployment()
        ready = deployment_source.wait_ready(ctx)
    finally:
        ctx.close()
    assert facts.api == "vmss" and facts.name == VMSS and facts.status == platform.RUNNING
    assert [i.instance_id for i in facts.instances] == ["0", "1", "2"]
    assert all(i.name == i.computer_name and i.name.startswith("web") for i in facts.instances)
    assert all(i.label == f"{i.name} (instance {i.instance_id})" for i in facts.instances)
    assert facts.vips and all(i.endpoint("WinRM") is not None for i in facts.instances)
    assert len({i.endpoint("WinRM").public_port for i in facts.instances}) == 3  # type: ignore[union-attr]
    assert [(e.name, e.port) for e in facts.input_endpoints] == [("HttpIn", 80)]
    assert facts.expected_counts == ((VMSS, 3),)
    assert ready.ready, ready.history_text()
    assert client_secret(fabric) not in shown(ctx)


def test_the_live_stages_run_on_the_scale_set(target: Target) -> None:
    ctx = context(target)
    try:
        artefact = Artefact(DEPLOYMENT, "vmss.vmrtarget.yml", ctx.target.path, "local-fabric-vmss")
        subject = LiveSubject(artefact, ctx)
        assert subject.deployment is not None, subject.notes.get("deployment")
        assert subject.readiness is not None and subject.readiness.ready, subject.notes.get("readiness")
        endpoints = subject.endpoints
        notes = dict(subject.notes)
    finally:
        ctx.close()
    assert endpoints is not None, notes.get("endpoints")


def test_one_reimage_of_one_instance_through_the_poller(fabric: Any, target: Target) -> None:
    ctx = context(target)
    try:
        before = {i.instance_id: i.status for i in ctx.deployment().instances}
        instance = ctx.deployment().instances[1].name
        started = time.monotonic()
        op = ctx.management.start_operation("reimage", instance)
        result = ctx.management.wait_operation(op, timeout=120, interval=0.5)
        assert result.succeeded, (result.status, result.error_code, result.error_message)
        ready = deployment_source.wait_ready(ctx)
        after = {i.instance_id: i.status for i in ctx.deployment(refresh=True).instances}
    finally:
        ctx.close()
    assert ready.ready and after == before == {"0": platform.READY, "1": platform.READY, "2": platform.READY}
    assert time.monotonic() - started < 180
    assert any(f"operation {op}" in e["event"] for e in ctx.events)


def test_a_wrong_client_secret_is_named_without_the_secret(fabric: Any, target: Target, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not-the-secret-" + client_secret(fabric)[::-1])
    bad = variant(
        target,
        tmp_path,
        credential={
            **yaml.safe_load(target.path.read_text())["management"]["credential"],
            "secret": {"file": str(wrong)},
        },
    )
    ctx = context(bad)
    started = time.monotonic()
    try:
        with pytest.raises(StageError) as info:
            ctx.deployment()
    finally:
        ctx.close()
    message = str(info.value)
    assert "could not get a token" in message and time.monotonic() - started < 30
    assert wrong.read_text() not in shown(ctx, message) and client_secret(fabric) not in message


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        ({"subscription_id": "00000000-0000-0000-0000-00000000dead"}, "not found: 404 SubscriptionNotFound"),
        ({"scale_set": "nosuch"}, "not found: 404"),
    ],
)
def test_wrong_subscription_and_unknown_scale_set(
    target: Target, tmp_path: Path, change: dict[str, str], cause: str
) -> None:
    ctx = context(variant(target, tmp_path, **change))
    try:
        with pytest.raises(StageError) as info:
            ctx.deployment()
    finally:
        ctx.close()
    assert cause in str(info.value) and "x-ms-request-id" in str(info.value)


def test_a_conflicting_operation_is_named_after_the_conflict_budget(fabric: Any, target: Target) -> None:
    ctx = context(target, conflict_retry=2.0)
    try:
        instance = ctx.deployment().instances[0].name
        fabric.inject("mgmt-409", seconds=30)
        started = time.monotonic()
        with pytest.raises(ArmError) as info:
            ctx.management.start_operation("reboot", instance)
        elapsed = time.monotonic() - started
    finally:
        fabric.clear_faults()
        ctx.close()
    assert "409" in str(info.value) and "x-ms-request-id" in str(info.value) and elapsed < 20


def test_rotation_attributes_answers_to_the_scale_set_instances(target: Target) -> None:
    from harness.checks.live.rotation import RotationUnidentifiedAnswers

    ctx = context(target)
    try:
        subject = LiveSubject(Artefact(DEPLOYMENT, "vmss.vmrtarget.yml", ctx.target.path, "local-fabric-vmss"), ctx)
        assert subject.rotation is not None, subject.notes.get("rotation")
        findings = list(RotationUnidentifiedAnswers().check(subject))
    finally:
        ctx.close()
    assert findings == []


def test_reimage_stage_resets_the_os_disk_and_leaves_blobs_alone(target: Target) -> None:
    """The reimage stage on a scale-set VM: the OS-drive marker is gone, both blob markers are still there (the
    platform's contract for a scale-set VM reimage; VMR702/VMR704 judge these facts)."""
    from harness.facts.live.reimage import BLOB, BLOB_FROM_INSTANCE, DATA, LOCAL, OS

    ctx = LiveContext(target, destructive=True)
    assert isinstance(ctx.backend, VmssBackend)
    ctx.backend.polling_interval = 0.5
    try:
        subject = LiveSubject(Artefact(DEPLOYMENT, "vmss.vmrtarget.yml", ctx.target.path, "local-fabric-vmss"), ctx)
        facts = subject.reimage
        assert facts is not None, subject.notes.get("reimage")
    finally:
        ctx.close()
    assert facts.operation is not None and facts.operation.succeeded and facts.operation.ready
    assert facts.instance is not None and facts.instance.startswith("web")
    assert [m.present_after for m in facts.of_kind(OS)] == [False]
    assert [m.present_after for m in facts.of_kind(BLOB) + facts.of_kind(BLOB_FROM_INSTANCE)] == [True, True]
    # the data disk (the fabric's LocalStorage stand-in) keeps its marker across the reimage: written on the
    # volume the guest shows at the VM model's LUN, not under C:\Resources (no LocalStorage on a scale set)
    data = facts.of_kind(DATA)
    assert data and [(m.written, m.present_after) for m in data] == [(True, True)] * len(data), data
    assert [m.location[:3] for m in data] == ["F:\\"] and not facts.of_kind(LOCAL)


def test_server_errors_and_a_silent_api_are_named_in_bounded_time(fabric: Any, target: Target) -> None:
    """500s are retried within the back end's budget, then named; an API that holds the request is one read
    timeout, then remembered as down (the next call is not tried)."""
    ctx = context(target, read=2.0)
    ctx._backend = VmssBackend(ctx, budget=4.0)  # a short retry budget: the persistent 500 gives up quickly
    try:
        fabric.inject("mgmt-500", seconds=30)
        started = time.monotonic()
        with pytest.raises(StageError) as internal:
            ctx.deployment()
        internal_seconds = time.monotonic() - started
        fabric.clear_faults()
        fabric.inject("mgmt-timeout", seconds=8)
        started = time.monotonic()
        with pytest.raises(StageError) as silent:
            ctx.deployment(refresh=True)
        silent_seconds = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(StageError) as again:
            ctx.deployment(refresh=True)
        again_seconds = time.monotonic() - started
    finally:
        fabric.clear_faults()
        ctx.close()
    assert "500 InternalExecutionError" in str(internal.value) and "attempts" in str(internal.value)
    assert "x-ms-request-id" in str(internal.value) and internal_seconds < 10
    assert "unreachable (no answer in time)" in str(silent.value) and silent_seconds < 12, str(silent.value)
    assert "not tried" in str(again.value) and again_seconds < 1


# ---- `vmrole probe --destructive` on the scale set, end to end (the done-when) ---------------------


def probe_target(target: Target, tmp_path: Path) -> Path:
    """The fabric's vmss target with short deadlines, so that a fault shows within seconds."""
    doc = yaml.safe_load(target.path.read_text("utf-8"))
    doc["timeouts"].update(ready=6, conflict_retry=2)
    path = tmp_path / "vmss-probe.vmrtarget.yml"
    path.write_text(yaml.safe_dump(doc), "utf-8")
    return path


def probe_cli(target: Path, out: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    """`vmrole probe` in a subprocess, as a user runs it; its JSON report and output."""
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "probe", str(target), "--report-dir", str(out), "--no-allure", *args],
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, json.loads((out / "vmrole.json").read_text("utf-8")), proc.stdout + proc.stderr


def ready_again(fabric: Any) -> bool:
    from harness.fabric.lifecycle import wait_until

    return wait_until(
        lambda: all(i["status"] == platform.READY for i in fabric.refresh()["instances"]), deadline_s=60, interval=0.2
    )


def test_probe_destructive_passes_on_the_healthy_scale_set(fabric: Any, target: Target, tmp_path: Path) -> None:
    assert ready_again(fabric)
    code, report, output = probe_cli(probe_target(target, tmp_path), tmp_path / "out", "--destructive")
    assert code == 0, output[-4000:]
    outcomes = {i["rule_id"]: i["outcome"] for i in report["items"]}
    assert not [i for i in report["items"] if i["outcome"] == "failed"], output[-4000:]
    # rotation attributed every answer, the drain took an instance out by its computer name, the reimage and
    # reboot wrote and judged their markers (data disk included)
    for rule in ("VMR800", "VMR805", "VMR810", "VMR811", "VMR706", "VMR707", "VMR708", "VMR712"):
        assert outcomes.get(rule) == "passed", (rule, outcomes.get(rule), output[-3000:])
    assert client_secret(fabric) not in output


SCALE_SET_FAULTS = [
    # (fault, rule that turns red, words its message holds besides the instance's label)
    ("busy", "VMR602", ("BusyRole",)),
    ("crash", "VMR631", ("HttpIn", "nothing listens")),
    ("lose-local-storage", "VMR707", ("data disk", "datadisk0", "(LUN 0, F:\\)")),
]


@pytest.mark.parametrize(("fault", "rule", "words"), SCALE_SET_FAULTS, ids=[f[0] for f in SCALE_SET_FAULTS])
def test_probe_destructive_turns_red_naming_the_scale_set_instance(
    fabric: Any, target: Target, tmp_path: Path, fault: str, rule: str | None, words: tuple[str, ...]
) -> None:
    """The fault is injected by the VM's computer name (as the busy hook does); the red finding names the VM by
    computer name AND instance id. The reimage picks the last Ready VM, instance 2: the faulted one."""
    assert ready_again(fabric)
    name = "web000002"
    fabric.inject(fault, name, seconds=120)
    try:
        code, report, output = probe_cli(probe_target(target, tmp_path), tmp_path / "out", "--destructive")
    finally:
        fabric.clear_faults()
    red = [f for f in report["findings"] if f["severity"] in ("high", "critical")]
    assert code == 1 and red, output[-4000:]
    named = [f for f in red if f"{name} (instance 2)" in f["message"]]
    assert named, [f["message"] for f in red]
    if rule is not None:
        hits = [f for f in named if f["rule_id"] == rule]
        assert hits, [(f["rule_id"], f["message"]) for f in red]
        assert all(word in hits[0]["message"] for word in words), hits[0]["message"]
    assert ready_again(fabric)
