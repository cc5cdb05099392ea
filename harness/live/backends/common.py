"""What every management back end shares: the target's csdef, the deployment's cscfg, naming the load-balanced
input endpoints (from the instances' endpoint lists, the csdef, or a well-known port)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.ascii import parse_ascii_int
from harness.engine.artefact import CSCFG, CSDEF, Artefact
from harness.facts.live.deployment import InputEndpointFacts, InstanceFacts
from harness.facts.servicemodel import INPUT, RoleDef, ServiceConfiguration, ServiceDefinition
from harness.readers.errors import Unreadable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.live.target import Target

CSCFG_NAME = "ServiceConfiguration.cscfg"
#: Without a csdef the load balancer only says tcp: the well-known local ports name the application protocol.
GUESSED_PROTOCOLS = {80: "http", 443: "https"}


def as_int(value: Any) -> int | None:
    return None if value is None else parse_ascii_int(str(value))


def as_text(value: Any) -> str:
    return "" if value is None else str(value)


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


def input_endpoints(
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
