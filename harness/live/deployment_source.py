"""Where the deployment's facts come from: Get Deployment of the classic Service Management API.

This module and :mod:`harness.live.management` are the only code that knows that API: ``fetch`` turns one
Get Deployment into :class:`DeploymentFacts` (the legacy client's ``models.Deployment`` is read here and
nowhere else); ``model`` gives the csdef (when the target names one) and the deployment's cscfg; ``wait_ready``
polls until the deployment is Running with every instance ReadyRole, the ``ready`` timeout passes, or an
instance reaches a failed status (no use waiting: the platform gave up on it), and records per-instance time
to ReadyRole and the status history. Another back end (ARM VM scale sets) would sit beside this module and
give :class:`LiveContext` the same three calls.
Only a management API that cannot be used at all (unreachable, refused, no such deployment) raises
:class:`StageError`; everything else is recorded for the rules.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.ascii import parse_ascii_int
from harness.engine.artefact import CSCFG, CSDEF, Artefact
from harness.facts.live.deployment import (
    DEPLOYMENT_STOPPED_STATUSES,
    FAILED,
    HEALTHY,
    READY,
    RUNNING,
    DeploymentFacts,
    InputEndpointFacts,
    InstanceEndpointFacts,
    InstanceFacts,
    InstanceReadiness,
    ModelFacts,
    ReadinessFacts,
    StatusChange,
    classify,
)
from harness.facts.servicemodel import INPUT, RoleDef, ServiceConfiguration, ServiceDefinition
from harness.live.errors import StageError, TargetError
from harness.live.health import MGMT
from harness.live.management import ManagementClient, ManagementError
from harness.live.masking import Masker
from harness.readers.errors import Unreadable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.live.context import LiveContext
    from harness.live.target import Target

POLL_INTERVAL = 0.5  # seconds between Get Deployment polls while waiting for readiness
CSCFG_NAME = "ServiceConfiguration.cscfg"
#: Without a csdef the load balancer only says tcp: the well-known local ports name the application protocol.
GUESSED_PROTOCOLS = {80: "http", 443: "https"}


# ---- the management client, bound to the context's log ----------------------------------------------
def management(ctx: LiveContext) -> ManagementClient:
    """``ctx.management`` with its retries logged through ``ctx.log``; StageError when it cannot be built."""
    try:
        client = ctx.management
    except (TargetError, OSError, ValueError) as exc:
        raise StageError(f"the management client cannot be set up: {exc}") from None
    client.log = ctx.log
    return client


# ---- Get Deployment → facts ---------------------------------------------------------------------------
def fetch(ctx: LiveContext) -> DeploymentFacts:
    """One Get Deployment, as facts. StageError when the management API cannot be used."""
    client = management(ctx)
    try:
        response = client.get_deployment()
    except ManagementError as exc:
        ctx.log("Get Deployment failed", status=exc.status, code=exc.code, attempts=exc.attempts)
        raise StageError(f"Get Deployment failed: {exc}") from None
    csdef, _ = definition(ctx.target)
    facts = deployment_facts(
        response.deployment,
        xml=response.xml,
        request_id=response.request_id,
        seconds=response.seconds,
        definition=csdef,
        masker=ctx.masker,
    )
    ctx.log(
        "Get Deployment",
        seconds=round(response.seconds, 3),
        status=facts.status,
        instances=len(facts.instances),
        request_id=facts.request_id,
    )
    return facts


def _int(value: Any) -> int | None:
    return None if value is None else parse_ascii_int(str(value))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def deployment_facts(
    dep: Any,  # the legacy client's models.Deployment (untyped)
    *,
    xml: str = "",
    request_id: str = "",
    seconds: float = 0.0,
    definition: ServiceDefinition | None = None,
    masker: Masker | None = None,
) -> DeploymentFacts:
    """Facts from the legacy client's ``models.Deployment`` (pure; the csdef names endpoint protocols)."""
    instances = []
    for ri in dep.role_instance_list or ():
        endpoints = tuple(
            InstanceEndpointFacts(
                name=_text(e.name),
                protocol=_text(e.protocol).lower(),
                public_port=_int(e.public_port),
                local_port=_int(e.local_port),
                vip=_text(e.vip),
            )
            for e in (ri.instance_endpoints or ())
        )
        instances.append(
            InstanceFacts(
                name=_text(ri.instance_name),
                role=_text(ri.role_name),
                status=_text(ri.instance_status),
                upgrade_domain=_int(ri.instance_upgrade_domain),
                fault_domain=_int(ri.instance_fault_domain),
                size=_text(ri.instance_size),
                ip=_text(ri.ip_address),
                power_state=_text(ri.power_state),
                endpoints=endpoints,
                state_details=_text(ri.instance_state_details),
                error_code=_text(ri.instance_error_code),
                host_name=_text(ri.host_name),
            )
        )
    vips = tuple(_text(v.address) for v in (dep.virtual_ips or ()) if _text(v.address))
    raw_inputs = [(_text(ie.role_name), _text(ie.vip), _int(ie.port)) for ie in (dep.input_endpoint_list or ())]
    configuration_xml = _text(dep.configuration)
    configuration, error = parse_deployment_configuration(configuration_xml, _text(dep.name))
    if error and masker is not None:
        error = masker(error)
    facts_instances = tuple(instances)
    return DeploymentFacts(
        service=_service_of(dep, configuration),
        name=_text(dep.name),
        slot=_text(dep.deployment_slot),
        status=_text(dep.status),
        private_id=_text(dep.private_id),
        url=_text(dep.url),
        vips=vips,
        instances=facts_instances,
        input_endpoints=_input_endpoints(raw_inputs, facts_instances, definition, vips[0] if vips else ""),
        locked=str(dep.locked).lower() == "true",
        label=_text(dep.label),
        sdk_version=_text(dep.sdk_version),
        upgrade_domain_count=_int(dep.upgrade_domain_count),
        configuration_xml=configuration_xml,
        configuration=configuration,
        configuration_error=error,
        xml=xml,
        request_id=request_id,
        fetch_seconds=seconds,
    )


def _service_of(dep: Any, configuration: ServiceConfiguration | None) -> str:
    if configuration is not None and configuration.service_name:
        return configuration.service_name
    return _text(dep.name)


def parse_deployment_configuration(text: str, deployment: str = "") -> tuple[ServiceConfiguration | None, str | None]:
    """The deployment's cscfg as facts (or None and why). The artefact is named after the deployment."""
    from harness.readers.servicemodel import parse_configuration

    if not text.strip():
        return None, "the deployment carries no Configuration"
    artefact = Artefact(
        kind=CSCFG,
        identity=f"deployment:{deployment}/{CSCFG_NAME}",
        path=Path(CSCFG_NAME),
        display=CSCFG_NAME,
    )
    try:
        return parse_configuration(text.encode("utf-8"), artefact), None
    except Unreadable as exc:
        return None, f"the deployment's Configuration is unreadable: {exc.problem}"


def _role_def(definition: ServiceDefinition | None, role: str) -> RoleDef | None:
    if definition is None:
        return None
    return next((r for r in definition.roles if r.name == role), None)


def _input_endpoints(
    raw: list[tuple[str, str, int | None]],
    instances: tuple[InstanceFacts, ...],
    definition: ServiceDefinition | None,
    default_vip: str,
) -> tuple[InputEndpointFacts, ...]:
    """Name the InputEndpointList entries (role, vip, port) from the instances' endpoint lists; without an
    InputEndpointList, an endpoint every instance of a role lists with the same public port is load-balanced."""
    if not raw:
        by_role: dict[str, dict[str, set[tuple[int | None, str]]]] = {}
        for inst in instances:
            for ep in inst.endpoints:
                by_role.setdefault(inst.role, {}).setdefault(ep.name, set()).add((ep.public_port, ep.vip))
        for role, names in by_role.items():
            count = sum(1 for i in instances if i.role == role)
            for name, ports in names.items():
                if len(ports) == 1 and (count > 1 or _declared_input(definition, role, name)):
                    port, vip = next(iter(ports))
                    raw.append((role, vip, port))
    out = []
    for role, vip, port in raw:
        if port is None:
            continue
        match = next(
            (
                ep
                for inst in instances
                if inst.role == role
                for ep in inst.endpoints
                if ep.public_port == port and (not vip or not ep.vip or ep.vip == vip)
            ),
            None,
        )
        name = match.name if match else f"port-{port}"
        protocol, source, certificate = (match.protocol if match else "tcp") or "tcp", "lb", None
        role_def = _role_def(definition, role)
        local_port = match.local_port if match else None
        if role_def is None and protocol == "tcp" and local_port in GUESSED_PROTOCOLS:
            protocol, source = GUESSED_PROTOCOLS[local_port], "guessed"
        if role_def is not None:
            declared = next((e for e in role_def.endpoints if e.kind == INPUT and e.name == name), None)
            if declared is not None and declared.protocol:
                protocol, source, certificate = declared.protocol.lower(), "csdef", declared.certificate
        out.append(
            InputEndpointFacts(
                role=role,
                name=name,
                protocol=protocol,
                port=port,
                local_port=local_port,
                vip=vip or (match.vip if match else "") or default_vip,
                protocol_source=source,
                certificate=certificate,
            )
        )
    return tuple(out)


def _declared_input(definition: ServiceDefinition | None, role: str, name: str) -> bool:
    role_def = _role_def(definition, role)
    return role_def is not None and any(e.kind == INPUT and e.name == name for e in role_def.endpoints)


# ---- the model --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _read_definition(path: str, mtime_ns: int) -> tuple[ServiceDefinition | None, str | None]:
    from harness.readers.servicemodel import read_definition

    try:
        return read_definition(Artefact.from_path(Path(path), CSDEF)), None
    except Unreadable as exc:
        return None, f"the target's csdef {path} is unreadable: {exc.problem}"


def definition(target: Target) -> tuple[ServiceDefinition | None, str | None]:
    """The csdef the target names (``model.csdef``) as facts, or None and why (cached per file version)."""
    csdef = target.model.csdef
    if csdef is None:
        return None, "the target names no csdef (model.csdef): endpoint protocols come from the load balancer"
    try:
        mtime = Path(csdef).stat().st_mtime_ns
    except OSError as exc:
        return None, f"the target's csdef {csdef} cannot be read ({exc.strerror})"
    return _read_definition(str(csdef), mtime)


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
        count = _int(role.instances)
        if count is not None:
            out.append((role.name, count))
    return tuple(out)


def _management_down(ctx: LiveContext) -> bool:
    client = ctx.management_if_built
    return client is not None and ctx.health.down(MGMT, client.base_url) is not None


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
            if _management_down(ctx):  # refused (or silent) for this run: polling on would only wait
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
        expected_counts=_expected_counts(facts.configuration),
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
    ctx.evidence("deployment.xml", facts.xml)
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
