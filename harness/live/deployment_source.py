"""Where the deployment's facts come from: the target's management back end (:mod:`harness.live.backends`).

``management.api`` in the target file names the back end: ``asm`` (the default; the classic Service Management
API, :mod:`harness.live.backends.asm` + :mod:`harness.live.management`) or ``vmss`` (an Azure Resource Manager
VM scale set, :mod:`harness.live.backends.vmss`). This module gives :class:`LiveContext` the same three calls
whatever the back end: ``fetch`` (the deployment as :class:`DeploymentFacts`), ``model`` (the csdef when the
target names one, and the deployment's cscfg when it has one) and ``wait_ready``, which polls until the
deployment is Running with every instance ReadyRole, the ``ready`` timeout passes, or an instance reaches a
failed status (no use waiting: the platform gave up on it), and records per-instance time to ReadyRole and the
status history. A back end maps its own states onto those statuses (the rules judge the same facts).
Only a management API that cannot be used at all (unreachable, refused, no such deployment) raises
:class:`StageError`; everything else is recorded for the rules.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from harness.facts.live.deployment import (
    DEPLOYMENT_STOPPED_STATUSES,
    FAILED,
    HEALTHY,
    READY,
    RUNNING,
    DeploymentFacts,
    InstanceReadiness,
    ModelFacts,
    ReadinessFacts,
    StatusChange,
    classify,
)
from harness.facts.servicemodel import ServiceConfiguration
from harness.live.backends.asm import deployment_facts, management
from harness.live.backends.common import as_int, definition, parse_deployment_configuration
from harness.live.errors import StageError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.live.context import LiveContext

POLL_INTERVAL = 0.5  # seconds between Get Deployment polls while waiting for readiness


def fetch(ctx: LiveContext) -> DeploymentFacts:
    """The deployment as facts, through the target's back end. StageError when its API cannot be used."""
    return ctx.backend.fetch()


# ---- the model --------------------------------------------------------------------------------------------
def model(ctx: LiveContext) -> ModelFacts:
    """The csdef (when the target names one) and the cscfg from the deployment's Configuration."""
    csdef, note = definition(ctx.target)
    deployment = ctx.deployment()
    notes = [n for n in (note, deployment.configuration_error) if n]
    return ModelFacts(definition=csdef, configuration=deployment.configuration, notes=tuple(notes))


# ---- readiness -----------------------------------------------------------------------------------------
def _expected_counts(configuration: ServiceConfiguration | None) -> tuple[tuple[str, int], ...]:
    if configuration is None:
        return ()
    out = []
    for role in configuration.roles:
        count = as_int(role.instances)
        if count is not None:
            out.append((role.name, count))
    return tuple(out)


def wait_ready(ctx: LiveContext, *, interval: float = POLL_INTERVAL) -> ReadinessFacts:
    """Poll Get Deployment until Running with every instance ReadyRole, a failed status, or the deadline.

    StageError only when the very first Get Deployment fails (the API cannot be used at all); a poll that
    fails later is recorded in ``poll_errors`` and polling goes on until the deadline."""
    deadline_s = float(ctx.target.timeouts.ready)
    start = time.monotonic()
    deadline = start + deadline_s
    facts = fetch(ctx)  # StageError propagates: nothing to wait for
    history: list[StatusChange] = []
    last_status: dict[str, str] = {}
    ready_after: dict[str, float] = {}
    poll_errors: list[str] = []
    polls = 1
    failed_fast = False
    deadline_passed = False
    while True:
        now = time.monotonic()
        t = round(now - start, 3)
        if last_status.get("deployment") != facts.status:
            history.append(StatusChange(t, "deployment", facts.status))
            last_status["deployment"] = facts.status
        for inst in facts.instances:
            if last_status.get(inst.name) != inst.status:
                history.append(StatusChange(t, inst.name, inst.status))
                last_status[inst.name] = inst.status
            if inst.status == READY and inst.name not in ready_after:
                ready_after[inst.name] = t
                ctx.log(f"instance {inst.name} ReadyRole", seconds=t)
        classes = {i.name: classify(i.status, locked=facts.locked) for i in facts.instances}
        if facts.status == RUNNING and facts.instances and all(c == HEALTHY for c in classes.values()):
            break
        if any(c == FAILED for c in classes.values()) or facts.status in DEPLOYMENT_STOPPED_STATUSES:
            failed_fast = True
            bad = [f"{n}={last_status[n]}" for n, c in classes.items() if c == FAILED]
            ctx.log("readiness: failed status, not waiting", statuses=", ".join(bad), deployment=facts.status)
            break
        if now >= deadline:
            deadline_passed = True
            break
        time.sleep(min(interval, max(0.0, deadline - now)))
        polls += 1
        try:
            facts = fetch(ctx)
        except StageError as exc:
            poll_errors.append(str(exc))
            if time.monotonic() >= deadline:
                deadline_passed = True
                break
            if ctx.backend.down():  # refused (or silent) for this run: polling on would only wait
                break
    elapsed = time.monotonic() - start
    instances = tuple(
        InstanceReadiness(
            name=i.name,
            role=i.role,
            status=i.status,
            classification=classify(i.status, locked=facts.locked),
            ready_after=ready_after.get(i.name),
            upgrade_domain=i.upgrade_domain,
            fault_domain=i.fault_domain,
            power_state=i.power_state,
            state_details=i.state_details,
            error_code=i.error_code,
            instance_id=i.instance_id,
        )
        for i in facts.instances
    )
    readiness = ReadinessFacts(
        deadline=deadline_s,
        elapsed=elapsed,
        deployment_status=facts.status,
        instances=instances,
        deadline_passed=deadline_passed,
        failed_fast=failed_fast,
        history=tuple(history),
        polls=polls,
        poll_errors=tuple(poll_errors),
        expected_counts=facts.expected_counts or _expected_counts(facts.configuration),
        locked=facts.locked,
    )
    ctx.log(
        "readiness",
        seconds=round(elapsed, 3),
        ready=readiness.ready,
        deadline_passed=deadline_passed,
        failed_fast=failed_fast,
        polls=polls,
    )
    ctx.evidence("deployment.json" if facts.api != "asm" else "deployment.xml", facts.xml)
    ctx.evidence("readiness-history", readiness.history_text())
    ctx.remember_deployment(facts)  # later stages see the deployment as readiness left it
    return readiness


__all__ = [
    "definition",
    "deployment_facts",
    "fetch",
    "management",
    "model",
    "parse_deployment_configuration",
    "wait_ready",
]
