"""Probe ``drain`` (destructive): a Ready instance taken out of Ready must get no new connections, then return.

1. Pick a load-balanced endpoint whose role has at least two Ready instances, and one of them (the last by
   name). Sample through the VIP until every Ready instance is seen (phase ``before``).
2. Take it out: the target's ``rotation.busy_hook`` (``{instance}`` / ``{seconds}`` substituted in the
   ``shlex.split`` arguments, run without a shell), or — without a hook — **reboot** it through the
   management API (it is out while not ReadyRole).
3. Keep sampling through the probe grace period (``draining``: hits here are allowed, the load balancer's
   probe has not noticed yet), then sample ``k`` answers (``drained``) with k the smallest count where
   ``(1 − 1/n)^k ≤ 1 − confidence``: zero hits on it, while the others answer, state with that confidence
   that it left rotation.
4. Bring it back (the hook's hold expires / the reboot completes), wait for the deployment to be ready
   (``ctx.wait_ready()``), and sample (``after``) until it answers again or the return window (30 s, at
   least 4 × the grace period) passes.
"""

from __future__ import annotations

import contextlib
import math
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.facts.live import stats
from harness.facts.live.deployment import READY, DeploymentFacts
from harness.facts.live.rotation import DrainFacts, DrainPhase, ErrorCounts
from harness.live.context import LiveContext
from harness.live.health import DependencyDown
from harness.live.sampling import (
    LB_PROTOCOLS,
    InputEndpoint,
    Sampler,
    detect_protocol,
    input_endpoints_of,
    lb_down,
    note_lb,
    ready_instances,
    settings_of,
)
from harness.live.target import Target

DRAINING_PACE = 0.02  # seconds between requests while waiting out the grace period
RETURN_PACE = 0.05  # … while waiting for the instance to come back
STATUS_EVERY = 0.5  # seconds between Get Deployment polls while sampling
HOOK_TIMEOUT = 60.0
HOLD_SLACK = 2.0  # seconds the hook's hold outlasts the grace period + the drained sampling
EXPIRY_MARGIN = 0.3  # stop counting drained samples this long before the hold can expire
OUTPUT_LIMIT = 4000
RETURN_WINDOW = 30.0  # seconds (at least 4 × the grace) for it to answer again once released and Ready


def grace_of(target: Target) -> tuple[float, str]:
    """The probe grace period and where it comes from: the target's ``rotation.probe_grace_seconds``; the
    fabric's ``haproxy.probe.removal_window_s`` when the target sits in a fabric state dir and says 0 (or
    carries exactly that value, as ``target_for_fabric`` writes it)."""
    grace = float(target.rotation.probe_grace_seconds)
    window = _fabric_removal_window(target)
    if window is not None and (grace <= 0 or math.isclose(grace, window)):
        return window, "fabric.json haproxy.probe.removal_window_s"
    return grace, "target rotation.probe_grace_seconds"


def _fabric_removal_window(target: Target) -> float | None:
    fabric_json = Path(target.path).parent / "fabric.json"
    try:
        import json

        data = json.loads(fabric_json.read_text("utf-8"))
        return float(data["haproxy"]["probe"]["removal_window_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def hook_argv(template: str, instance: str, seconds: float) -> list[str]:
    """The hook's argv: ``shlex.split`` first, then ``{instance}``/``{seconds}`` in each argument (an
    instance name can never add arguments). A leading ``vmrole`` not on PATH runs this interpreter's CLI."""
    argv = [arg.replace("{instance}", instance).replace("{seconds}", f"{seconds:g}") for arg in shlex.split(template)]
    if argv and argv[0] == "vmrole" and shutil.which("vmrole") is None:
        argv[:1] = [sys.executable, "-m", "harness.cli"]
    return argv


class _Clock:
    def __init__(self) -> None:
        self.out_at: float | None = None

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def since_out(self) -> float:
        return 0.0 if self.out_at is None else time.monotonic() - self.out_at


def _status(ctx: LiveContext, instance: str) -> str | None:
    try:
        deployment = ctx.deployment(refresh=True)
    except Exception as exc:  # a status poll is informative only: the LB samples decide
        ctx.log("drain: Get Deployment failed", error=str(exc))
        return None
    inst = deployment.instance(instance)
    return inst.status if inst is not None else None


def _pick(deployment: DeploymentFacts) -> tuple[InputEndpoint, tuple[str, ...]] | None:
    candidates = []
    for ep in input_endpoints_of(deployment):
        if ep.protocol not in LB_PROTOCOLS:
            continue
        ready = ready_instances(deployment, ep.role)
        if len(ready) >= 2 and ep.vip:
            candidates.append((LB_PROTOCOLS.index(ep.protocol), ep, ready))
    if not candidates:
        return None
    candidates.sort(key=lambda c: c[0])  # http first: the cheapest request
    return candidates[0][1], candidates[0][2]


def run(ctx: LiveContext) -> DrainFacts:
    started = time.monotonic()
    settings = settings_of(ctx.target)
    deployment = ctx.deployment()
    picked = _pick(deployment)
    grace, grace_source = grace_of(ctx.target)
    if picked is None:
        return DrainFacts(
            grace_seconds=grace,
            grace_source=grace_source,
            confidence=settings.confidence,
            notes=("no load-balanced endpoint has at least two Ready instances: nothing to drain",),
            seconds=round(time.monotonic() - started, 3),
        )
    ep, expected = picked
    down = lb_down(ctx.health, ep.vip or "", ep.port)
    if down is not None:  # nothing to sample through: its rules are skipped with the cause
        raise DependencyDown(down)
    if ep.detect:
        ep = InputEndpoint(ep.role, ep.name, detect_protocol(ep.vip or "", ep.port, settings), ep.port, ep.vip)
    instance, others = expected[-1], expected[:-1]
    n = len(expected)
    k = stats.samples_to_reject(1.0 / n, settings.confidence)
    bound = stats.samples_for_all(n, settings.confidence)
    known = [i.name for i in deployment.instances]
    sampler = Sampler(ep.vip or "", ep.port, ep.protocol, settings, instances=[*expected, *known])
    notes: list[str] = []
    phases: list[DrainPhase] = []
    clock = _Clock()
    base = DrainFacts(
        role=ep.role,
        endpoint=ep.name,
        vip=ep.vip or "",
        port=ep.port,
        instance=instance,
        others=others,
        grace_seconds=grace,
        grace_source=grace_source,
        confidence=settings.confidence,
        required_samples=k,
    )

    def phase(name: str, body: Callable[[], Any]) -> None:
        mark, t0 = len(sampler.samples), time.monotonic()
        sampler.phase = name
        body()
        phases.append(
            DrainPhase(
                name=name,
                requests=len(sampler.samples) - mark,
                counts=sampler.counts_since(mark),
                errors=sampler.errors_since(mark),
                seconds=time.monotonic() - t0,
                started_s=(t0 - clock.out_at) if clock.out_at is not None else -(time.monotonic() - t0),
            )
        )

    # 1. before
    phase(
        "before",
        lambda: sampler.run(
            until=lambda: all(x in sampler.counts for x in expected), answers=bound, requests=2 * bound + 10
        ),
    )
    if sampler.answered == 0:  # nothing answers through the VIP: taking one out could show nothing
        down = note_lb(ctx.health, sampler)
        why = (
            down.reason
            if down is not None
            else f"{sampler.errors_since(0)} requests, errors: "
            + (", ".join(f"{n} {kind}" for kind, n in sorted(sampler.errors.items())) or "none")
        )
        return _finish(
            ctx, sampler, phases, started,
            replace(base, not_performed=ctx.masker(
                f"no instance answered through {ep.role}/{ep.name} at {ep.vip}:{ep.port} before: {why}"
            )),
        )  # fmt: skip
    latencies = [s.ms for s in sampler.samples if s.answered]
    per_request = (sum(latencies) / len(latencies) / 1000.0) if latencies else settings.connect_timeout
    hold = math.ceil(grace + max(1.0, 3 * k * (per_request + 0.02)) + HOLD_SLACK)

    # 2. take it out
    busy_hook = ctx.target.rotation.busy_hook
    method = "hook" if busy_hook else "reboot"
    command = hook_rc = operation_id = None
    hook_output = ""
    release_at: float | None = None
    safe_until: float | None = None
    clock.out_at = time.monotonic()
    if method == "hook":
        assert busy_hook is not None
        argv = hook_argv(busy_hook, instance, hold)
        command = ctx.masker(shlex.join(argv))
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=HOOK_TIMEOUT, check=False)
            hook_rc = proc.returncode
            hook_output = ctx.masker((proc.stdout + proc.stderr).strip())[-OUTPUT_LIMIT:]
        except (OSError, subprocess.SubprocessError) as exc:
            hook_rc, hook_output = -1, ctx.masker(f"{type(exc).__name__}: {exc}")
        ctx.log("drain: busy hook", rc=hook_rc, seconds=round(clock.since_out(), 3), hold=hold)
        ctx.evidence("lb-drain-hook", f"$ {command}\nexit {hook_rc}\n{hook_output}\n")
        if hook_rc != 0:
            failed = f"the busy hook exited {hook_rc}: {_last_line(hook_output)}"
            return _finish(
                ctx, sampler, phases, started,
                replace(base, method=method, command=command, hook_rc=hook_rc, hook_output=hook_output,
                           hold_seconds=hold, not_performed=failed),
            )  # fmt: skip
        safe_until = clock.out_at + hold - EXPIRY_MARGIN  # the hold began after out_at: it cannot end sooner
        release_at = time.monotonic() + hold  # … and it ends by then at the latest
    else:
        command = f"reboot {instance}"
        try:
            operation_id = ctx.management.start_operation("reboot", instance)
        except Exception as exc:  # the management API refused: recorded, the rules say so
            return _finish(
                ctx, sampler, phases, started,
                replace(base, method=method, command=command,
                           not_performed=ctx.masker(f"Reboot Role Instance {instance} failed: {exc}")),
            )  # fmt: skip
        ctx.log("drain: reboot started", request_id=operation_id)

    # 3a. draining: the grace period (hits allowed), watching the status
    grace_end = clock.out_at + grace
    status_left: list[str] = []
    last_poll = [0.0]
    back_ready = [False]

    out_seen = [clock.out_at]  # the last time Get Deployment still showed it out of Ready (reboot)

    def poll_status(force: bool = False) -> None:
        if not force and time.monotonic() - last_poll[0] < STATUS_EVERY:
            return
        asked = last_poll[0] = time.monotonic()
        status = _status(ctx, instance)
        if status is None:
            return
        if status != READY:
            out_seen[0] = asked
            if status not in status_left:
                status_left.append(status)
        elif method == "reboot" and status_left:
            back_ready[0] = True

    def draining() -> None:
        while time.monotonic() < grace_end and not back_ready[0]:
            sampler.run(requests=5, deadline=grace_end, pause=DRAINING_PACE)
            poll_status()

    phase("draining", draining)
    hits_during_grace = sum(p.counts.get(instance, 0) for p in phases if p.name == "draining")
    last_hit = max((s.t for s in sampler.samples if s.phase == "draining" and s.instance == instance), default=None)
    left_after = max(0.0, last_hit + sampler.started - clock.out_at) if last_hit is not None else 0.0

    # 3b. drained: k answers after the grace period
    drained_mark = len(sampler.samples)

    def drained_answers() -> int:
        return sum(1 for s in sampler.samples[drained_mark:] if s.answered)

    def drained_done() -> bool:
        seen = {s.instance for s in sampler.samples[drained_mark:] if s.answered}
        return drained_answers() >= k and all(o in seen for o in others)

    def drained() -> None:
        cap = time.monotonic() + max(10.0, 6 * k * (per_request + 0.05))
        deadline = min(cap, safe_until) if safe_until is not None else cap
        while not drained_done() and time.monotonic() < deadline and not back_ready[0]:
            sampler.run(until=drained_done, requests=k, deadline=deadline)
            if method == "reboot":
                poll_status()
            if len(sampler.samples) - drained_mark > 3 * k + 10:
                break

    if not back_ready[0]:
        phase("drained", drained)
    else:
        notes.append("the rebooted instance was ReadyRole again before the grace period ended: nothing to sample")
    if method == "reboot" and not back_ready[0]:
        poll_status(force=True)
    drained_samples = sampler.samples[drained_mark:]
    if method == "reboot":  # count only what was sent while Get Deployment still showed it out
        drained_samples = [s for s in drained_samples if s.t + sampler.started <= out_seen[0]]
    window = [s for s in drained_samples if s.answered]
    hits_after = sum(1 for s in window if s.instance == instance)
    others_seen = tuple(o for o in others if any(s.instance == o for s in window))
    errors_after = sum(1 for s in drained_samples if not s.answered)
    stated = stats.confidence_of_zero_hits(1.0 / n, len(window)) if hits_after == 0 and window else 0.0
    if method == "hook" and status_left == []:
        poll_status(force=True)

    # 4. back: the hold runs out / the reboot completes → the deployment is ready → it answers again
    ready_timeout = float(ctx.target.timeouts.ready or 120.0)
    if method == "reboot":
        assert operation_id is not None
        result = None
        with contextlib.suppress(Exception):
            result = ctx.management.wait_operation(operation_id, ready_timeout)
        if result is not None and not result.succeeded:
            notes.append(f"the reboot operation ended {result.status}")
        release_at = time.monotonic()
    assert release_at is not None
    ready_again = None
    try:
        ready_again = ctx.wait_ready().ready  # BusyRole is transitional: waits it out
    except Exception as exc:  # recorded; the samples below still say whether it came back
        notes.append(ctx.masker(f"waiting for the deployment to be ready failed: {exc}"))
    if ready_again is None:
        status = _status(ctx, instance)
        ready_again = None if status is None else status == READY
    return_window = max(RETURN_WINDOW, 4 * grace)
    return_deadline = max(time.monotonic(), release_at) + return_window
    first_back: list[float | None] = [None]

    def back() -> None:
        back_mark = len(sampler.samples)

        def seen_again() -> bool:
            hit = next((s for s in sampler.samples[back_mark:] if s.instance == instance), None)
            if hit is not None:
                first_back[0] = hit.t + sampler.started
            return hit is not None

        while time.monotonic() < return_deadline and not seen_again():
            sampler.consecutive_errors = 0  # errors while it restarts do not end the wait
            sampler.run(until=seen_again, deadline=return_deadline, pause=RETURN_PACE)

    phase("after", back)
    returned = first_back[0] is not None
    return_seconds = max(0.0, first_back[0] - release_at) if first_back[0] is not None else None
    facts = replace(
        base,
        method=method,
        command=command,
        hook_rc=hook_rc,
        hook_output=hook_output,
        operation_id=operation_id,
        hold_seconds=float(hold) if method == "hook" else None,
        samples_after_grace=len(window),
        hits_after_grace=hits_after,
        others_seen_after_grace=others_seen,
        errors_after_grace=errors_after,
        stated_confidence=stated,
        hits_during_grace=hits_during_grace,
        left_after_s=round(left_after, 3),
        status_left=status_left[0] if status_left else None,
        returned=returned,
        return_seconds=None if return_seconds is None else round(return_seconds, 3),
        return_deadline_s=return_window,
        ready_again=ready_again,
        notes=tuple(notes),
    )
    return _finish(ctx, sampler, phases, started, facts)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def _finish(
    ctx: LiveContext, sampler: Sampler, phases: list[DrainPhase], started: float, facts: DrainFacts
) -> DrainFacts:
    facts = replace(
        facts,
        phases=tuple(phases),
        errors=ErrorCounts.of(dict(sampler.errors)),
        seconds=round(time.monotonic() - started, 3),
    )
    ctx.log(
        "drain",
        instance=facts.instance,
        method=facts.method,
        grace=facts.grace_seconds,
        samples_after_grace=facts.samples_after_grace,
        hits_after_grace=facts.hits_after_grace,
        returned=facts.returned,
        return_seconds=facts.return_seconds,
        seconds=facts.seconds,
    )
    data: dict[str, Any] = dict(ctx.charts.get("lb-spread", {}))
    data.setdefault("endpoint", facts.label)
    data["drain"] = {
        "endpoint": facts.label,
        "instance": facts.instance,
        "method": facts.method,
        "grace_seconds": facts.grace_seconds,
        "required_samples": facts.required_samples,
        "hits_after_grace": facts.hits_after_grace,
        "returned": facts.returned,
    }
    data["phases"] = [p.to_json() for p in phases]
    ctx.chart("lb-spread", data)
    head = (
        f"drain {facts.instance} of {facts.label} via {facts.method}: grace {facts.grace_seconds:g} s "
        f"({facts.grace_source}); {facts.samples_after_grace} answers after the grace (k = {facts.required_samples}), "
        f"{facts.hits_after_grace} on {facts.instance}; returned: {facts.returned} after {facts.return_seconds} s\n"
        + "".join(f"  phase {p.name}: {p.requests} requests, {p.errors} errors, {p.counts}\n" for p in phases)
    )
    ctx.evidence("lb-drain-samples", sampler.evidence(head))
    return facts


__all__ = ["grace_of", "hook_argv", "run"]
