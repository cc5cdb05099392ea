"""Probe ``rotation``: does every Ready instance answer through the VIP of each load-balanced endpoint?

For each load-balanced input endpoint (http, https, tcp; UDP is noted, not probed) the probe opens a **new
TCP connection per request** (the OS picks a new source port each time, so an ideal 5-tuple hash spreads
them), identifies the instance that answered (a response header, a body regex, or a TCP banner, from the
target's ``identify``) and samples until every Ready instance has answered or the bound of
``harness.facts.live.stats.samples_for_all`` is reached; then it keeps sampling up to ``20 × n`` answers to
judge the spread. Two small probes tell affinity from a broken rotation: a few requests over **one keep-alive
connection** (pinned: expected) and from **one fixed source port** (pinned under any hash). New
connections from distinct source ports that all land on one instance while several are Ready, without
errors, mean source-IP (2-/3-tuple) affinity: reported as such, not as "rotation broken".

The socket helpers (:class:`~harness.live.sampling.Sampler`, ``probe_once``) are in :mod:`harness.live.sampling`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from harness.facts.live import stats
from harness.facts.live.rotation import AFFINITY_SOURCE_IP, EndpointRotation, ErrorCounts, RotationFacts
from harness.live.context import LiveContext
from harness.live.health import DependencyDown, Down
from harness.live.sampling import (
    LB_PROTOCOLS,
    InputEndpoint,
    ProbeSettings,
    Sampler,
    detect_protocol,
    fixed_port_probe,
    input_endpoints_of,
    keep_alive_probe,
    lb_down,
    note_lb,
    ready_instances,
    settings_of,
)

SPREAD_PER_INSTANCE = 20  # answers per instance for the spread: at least 20 × the Ready instances
SPREAD_CAP = 400
ENDPOINT_DEADLINE = 60.0  # wall-clock seconds per endpoint


# ---- the stage --------------------------------------------------------------------------------------


def sample_endpoint(
    ep: InputEndpoint,
    expected: tuple[str, ...],
    settings: ProbeSettings,
    *,
    known: Iterable[str] = (),
    spread_per_instance: int = SPREAD_PER_INSTANCE,
    deadline_s: float = ENDPOINT_DEADLINE,
) -> tuple[EndpointRotation, Sampler]:
    """Sample one load-balanced endpoint (see the module docstring). Pure of deployment calls."""
    started = time.monotonic()
    host = ep.vip or ""
    detected = None
    if ep.detect:
        detected = detect_protocol(host, ep.port, settings)
        ep = InputEndpoint(ep.role, ep.name, detected, ep.port, ep.vip)
    sampler = Sampler(host, ep.port, ep.protocol, settings, instances=[*expected, *known])
    n = len(expected)
    bound = stats.samples_for_all(n, settings.confidence) if n else 0
    deadline = started + deadline_s
    all_seen = lambda: all(name in sampler.counts for name in expected)  # noqa: E731
    requests_to_all = None
    if n:
        sampler.phase = "rotation"
        sampler.run(until=all_seen, answers=bound, requests=2 * bound + 10, deadline=deadline)
        if all_seen():
            requests_to_all = max(sampler.first_seen[name] for name in expected)
        target = min(max(bound, spread_per_instance * n), SPREAD_CAP)
        sampler.phase = "spread"
        more = max(0, target - sampler.answered)
        sampler.run(answers=more, requests=2 * more + 10, deadline=deadline)
        if requests_to_all is None and all_seen():
            requests_to_all = max(sampler.first_seen[name] for name in expected)
    else:
        sampler.phase = "rotation"
        sampler.run(answers=5, requests=5, deadline=deadline)
    seen_expected = [name for name in expected if sampler.counts.get(name)]
    unseen = tuple(name for name in expected if name not in sampler.counts)
    late = {name: sampler.first_seen[name] for name in seen_expected if sampler.first_seen[name] > bound}
    keep_alive = fixed = None
    if ep.protocol in ("http", "https"):
        keep_alive = keep_alive_probe(host, ep.port, ep.protocol, settings, sampler.resolve)
    if n >= 2 or ep.protocol == "tcp":
        fixed = fixed_port_probe(host, ep.port, ep.protocol, settings, sampler.resolve)
    errors = ErrorCounts.of(dict(sampler.errors))
    affinity = None
    if (
        n >= 2
        and len(seen_expected) == 1
        and sampler.answered >= bound
        and errors.total <= 0.05 * max(sampler.answered, 1)
        and len(sampler.ports) >= min(sampler.answered, bound)
    ):
        affinity = AFFINITY_SOURCE_IP
    spread = stats.spread(dict(sampler.counts), expected).to_json() if n else None
    notes = [] if n else [f"no instance of role {ep.role} is ReadyRole: nothing to expect"]
    if detected is not None:
        notes.append(f"the load balancer calls it tcp; the app answered as {detected} (no csdef in the target)")
    note = "; ".join(notes) or None
    facts = EndpointRotation(
        role=ep.role,
        endpoint=ep.name,
        protocol=ep.protocol,
        vip=host,
        port=ep.port,
        note=note,
        requests=len(sampler.samples),
        answered=sampler.answered,
        bound=bound,
        confidence=settings.confidence,
        expected=expected,
        counts=dict(sampler.counts),
        first_seen=dict(sampler.first_seen),
        unseen=unseen,
        late=late,
        unknown=dict(sampler.unknown),
        unidentified=sampler.unidentified,
        errors=errors,
        error_examples=tuple(sampler.error_examples),
        identification=dict(sampler.methods),
        http_statuses=dict(sampler.statuses),
        requests_to_all=requests_to_all,
        source_ports=len(sampler.ports),
        spread=spread,
        keep_alive=keep_alive,
        fixed_port=fixed,
        affinity=affinity,
        seconds=round(time.monotonic() - started, 3),
    )
    return facts, sampler


def _status_now(ctx: LiveContext, names: Iterable[str]) -> dict[str, str]:
    names = list(names)
    if not names:
        return {}
    try:
        fresh = ctx.deployment(refresh=True)
    except Exception as exc:  # a status refresh is a courtesy for the message; never fail the stage on it
        ctx.log("rotation: could not refresh the deployment", error=str(exc))
        return {}
    return {i.name: i.status for i in fresh.instances if i.name in names}


def run(ctx: LiveContext) -> RotationFacts:
    started = time.monotonic()
    settings = settings_of(ctx.target)
    deployment = ctx.deployment()
    known = [i.name for i in deployment.instances]
    results: list[EndpointRotation] = []
    samplers: list[tuple[EndpointRotation, Sampler]] = []
    downs: list[Down] = []
    for ep in input_endpoints_of(deployment):
        if ep.protocol == "udp" or ep.protocol not in LB_PROTOCOLS:
            results.append(
                EndpointRotation(
                    role=ep.role,
                    endpoint=ep.name,
                    protocol=ep.protocol,
                    vip=ep.vip or "",
                    port=ep.port,
                    probeable=False,
                    note=(
                        "UDP: no connection to attribute an answer to, and the local fabric's load balancer "
                        "cannot proxy UDP; check each instance's own port instead"
                        if ep.protocol == "udp"
                        else f"protocol {ep.protocol!r} is not probed"
                    ),
                    confidence=settings.confidence,
                    expected=ready_instances(deployment, ep.role),
                )
            )
            continue
        expected = ready_instances(deployment, ep.role)
        if not ep.vip:
            results.append(
                EndpointRotation(
                    role=ep.role,
                    endpoint=ep.name,
                    protocol=ep.protocol,
                    vip="",
                    port=ep.port,
                    probeable=False,
                    note="Get Deployment gives no VIP or DNS name for this endpoint: nothing to connect to",
                    confidence=settings.confidence,
                    expected=expected,
                )
            )
            continue
        down = lb_down(ctx.health, ep.vip, ep.port)
        if down is not None:  # found refusing (or silent) earlier in this run: not waited for again
            downs.append(down)
            results.append(
                EndpointRotation(
                    role=ep.role,
                    endpoint=ep.name,
                    protocol=ep.protocol,
                    vip=ep.vip,
                    port=ep.port,
                    probeable=False,
                    note=f"not sampled: {down.reason}",
                    confidence=settings.confidence,
                    expected=expected,
                )
            )
            continue
        facts, sampler = sample_endpoint(ep, expected, settings, known=known)
        note_lb(ctx.health, sampler)
        ctx.log(
            f"rotation {facts.label}",
            requests=facts.requests,
            answered=facts.answered,
            bound=facts.bound,
            seen=len(facts.seen),
            expected=len(expected),
            errors=facts.errors.total,
            seconds=facts.seconds,
        )
        results.append(facts)
        samplers.append((facts, sampler))
    if downs and not samplers:  # every load-balanced endpoint is behind a load balancer known down
        raise DependencyDown(downs[0])
    unseen = {name for facts in results for name in facts.unseen}
    status_now = _status_now(ctx, sorted(unseen))
    if status_now:
        results = [_with_status(f, status_now) for f in results]
    rotation = RotationFacts(
        endpoints=tuple(results),
        confidence=settings.confidence,
        identify=settings.describe(),
        note=None if results else "the deployment has no load-balanced input endpoints",
        seconds=round(time.monotonic() - started, 3),
    )
    _record(ctx, rotation, samplers)
    return rotation


def _with_status(facts: EndpointRotation, status_now: dict[str, str]) -> EndpointRotation:
    mine = {name: status_now[name] for name in facts.unseen if name in status_now}
    return replace(facts, status_now=mine) if mine else facts


def chart_entry(facts: EndpointRotation) -> dict[str, Any]:
    return {
        "endpoint": facts.label,
        "instances": {name: facts.counts.get(name, 0) for name in facts.expected}
        | {k: v for k, v in facts.counts.items() if k not in facts.expected},
        "requests": facts.requests,
        "answered": facts.answered,
        "bound": facts.bound,
        "confidence": facts.confidence,
        "requests_to_all": facts.requests_to_all,
        "errors": facts.errors.as_dict(),
    }


def _record(ctx: LiveContext, rotation: RotationFacts, samplers: list[tuple[EndpointRotation, Sampler]]) -> None:
    if samplers:
        first = samplers[0][0]
        data: dict[str, Any] = dict(ctx.charts.get("lb-spread", {}))
        data.update(chart_entry(first))
        data["endpoints"] = {facts.label: chart_entry(facts) for facts, _ in samplers}
        data.setdefault("phases", [])
        ctx.chart("lb-spread", data)
    texts = []
    for facts, sampler in samplers:
        summary = (
            f"{facts.label} at {facts.where}: {facts.requests} requests, {facts.answered} answered, bound "
            f"{facts.bound} for {facts.confidence:.4g} confidence over {len(facts.expected)} Ready instances; "
            f"counts {dict(sorted(facts.counts.items()))}; errors {facts.errors.describe()}"
        )
        pins = [p for p in (facts.keep_alive, facts.fixed_port) if p is not None]
        for pin in pins:
            summary += f"\n  {pin.kind}: {pin.answered}/{pin.requests} answered by {list(pin.instances)}"
            if pin.error:
                summary += f" ({pin.error})"
        texts.append(sampler.evidence(summary))
    for facts in rotation.unprobed:
        texts.append(f"{facts.label} ({facts.protocol}, port {facts.port}): not probed: {facts.note}\n")
    if texts:
        ctx.evidence("lb-samples", "\n".join(texts))


__all__ = ["chart_entry", "run", "sample_endpoint"]
