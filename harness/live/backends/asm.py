"""The classic Service Management back end (``management.api: asm``, the default): Get Deployment as facts,
and operations on one role instance through :class:`harness.live.management.ManagementClient`.

This module and :mod:`harness.live.management` are the only code that knows that API: ``fetch`` turns one
Get Deployment into :class:`DeploymentFacts` (the legacy client's ``models.Deployment`` is read here and
nowhere else). Only a management API that cannot be used at all (unreachable, refused, no such deployment)
raises :class:`StageError`; everything else is recorded for the rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.facts.live.deployment import DeploymentFacts, InstanceEndpointFacts, InstanceFacts
from harness.facts.servicemodel import ServiceConfiguration, ServiceDefinition
from harness.live.backends.common import as_int, as_text, definition, input_endpoints, parse_deployment_configuration
from harness.live.errors import StageError, TargetError
from harness.live.health import MGMT
from harness.live.management import ManagementClient, ManagementError
from harness.live.masking import Masker

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.live.context import LiveContext

API = "asm"


class AsmBackend:
    """:class:`harness.live.backends.Backend` over the Service Management API (the context's client)."""

    api = API

    def __init__(self, ctx: LiveContext) -> None:
        self.ctx = ctx

    def fetch(self) -> DeploymentFacts:
        return fetch(self.ctx)

    def operations(self) -> ManagementClient:
        return self.ctx.management_client()

    def down(self) -> bool:
        client = self.ctx.management_if_built
        return client is not None and self.ctx.health.down(MGMT, client.base_url) is not None

    def data_disks(self, instance: str) -> None:
        return None  # a classic role's LocalStorage is mounted under C:\\Resources (the csdef names it)

    def close(self) -> None:
        pass  # the context's client lives as long as the context (as before back ends existed)


# ---- the management client, bound to the context's log ----------------------------------------------
def management(ctx: LiveContext) -> ManagementClient:
    """``ctx.management`` with its retries logged through ``ctx.log``; StageError when it cannot be built."""
    try:
        client = ctx.management_client()
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
                name=as_text(e.name),
                protocol=as_text(e.protocol).lower(),
                public_port=as_int(e.public_port),
                local_port=as_int(e.local_port),
                vip=as_text(e.vip),
            )
            for e in (ri.instance_endpoints or ())
        )
        instances.append(
            InstanceFacts(
                name=as_text(ri.instance_name),
                role=as_text(ri.role_name),
                status=as_text(ri.instance_status),
                upgrade_domain=as_int(ri.instance_upgrade_domain),
                fault_domain=as_int(ri.instance_fault_domain),
                size=as_text(ri.instance_size),
                ip=as_text(ri.ip_address),
                power_state=as_text(ri.power_state),
                endpoints=endpoints,
                state_details=as_text(ri.instance_state_details),
                error_code=as_text(ri.instance_error_code),
                host_name=as_text(ri.host_name),
            )
        )
    vips = tuple(as_text(v.address) for v in (dep.virtual_ips or ()) if as_text(v.address))
    raw_inputs = [(as_text(ie.role_name), as_text(ie.vip), as_int(ie.port)) for ie in (dep.input_endpoint_list or ())]
    configuration_xml = as_text(dep.configuration)
    configuration, error = parse_deployment_configuration(configuration_xml, as_text(dep.name))
    if error and masker is not None:
        error = masker(error)
    facts_instances = tuple(instances)
    return DeploymentFacts(
        service=_service_of(dep, configuration),
        name=as_text(dep.name),
        slot=as_text(dep.deployment_slot),
        status=as_text(dep.status),
        private_id=as_text(dep.private_id),
        url=as_text(dep.url),
        vips=vips,
        instances=facts_instances,
        input_endpoints=input_endpoints(raw_inputs, facts_instances, definition, vips[0] if vips else ""),
        locked=str(dep.locked).lower() == "true",
        label=as_text(dep.label),
        sdk_version=as_text(dep.sdk_version),
        upgrade_domain_count=as_int(dep.upgrade_domain_count),
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
    return as_text(dep.name)


__all__ = ["API", "AsmBackend", "deployment_facts", "fetch", "management"]
