"""Service Management XML bodies, shaped as Azure sends them and as azure-servicemanagement-legacy parses them.

The legacy client matches elements by local name (any namespace), direct children only, case-sensitively, so
element names and nesting here follow the replies Azure sends (Get Deployment:
https://learn.microsoft.com/en-us/previous-versions/azure/reference/ee460804(v=azure.100)).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable
from xml.sax.saxutils import escape

from harness.fabric.views import DeploymentView, InstanceEndpointView, InstanceView, OperationView
from harness.facts.live.platform import OPERATION_FAILED as FAILED
from harness.facts.live.platform import SUCCEEDED

NS = "http://schemas.microsoft.com/windowsazure"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ROOT_ATTRS = f' xmlns="{NS}" xmlns:i="{XSI}"'

_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")

# Pieces are plain strings: a node is rendered as soon as it is built.
Node = str


def el(name: str, *content: object, attrs: str = "") -> Node:
    """``<name>content</name>``: ``content`` items are already-rendered nodes (from ``el``) or text (escaped).

    An element without content renders as ``<name />`` (the client reads it as empty).
    """
    parts: list[str] = []
    for item in content:
        if item is None:
            continue
        if isinstance(item, _Raw):
            parts.append(str(item))
        elif isinstance(item, bool):
            parts.append("true" if item else "false")
        else:
            parts.append(escape(str(item)))
    if not parts:
        return _Raw(f"<{name}{attrs} />")
    return _Raw(f"<{name}{attrs}>{''.join(parts)}</{name}>")


class _Raw(str):
    """Already-rendered XML (never escaped again)."""


def _children(items: Iterable[Node]) -> _Raw:
    return _Raw("".join(items))


def _root(name: str, *content: object) -> bytes:
    """A document root element, with the namespace declarations Azure sends."""
    return el(name, *content, attrs=ROOT_ATTRS).encode("utf-8")


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def dashed_request_id(request_id: str) -> str:
    """``3a115259b940b080a4b5911e831f3bd6`` → ``3a115259-b940-b080-a4b5-911e831f3bd6`` (Azure's ``<ID>`` form)."""
    if _HEX32.match(request_id):
        r = request_id.lower()
        return f"{r[:8]}-{r[8:12]}-{r[12:16]}-{r[16:20]}-{r[20:]}"
    return request_id


def normalize_request_id(request_id: str) -> str:
    """Accept a request id with or without dashes (and braces), any case: the 32-hex form."""
    compact = request_id.strip().strip("{}").replace("-", "")
    return compact.lower() if _HEX32.match(compact) else request_id


def error_body(code: str, message: str) -> bytes:
    return _root("Error", el("Code", code), el("Message", message))


def operation_body(op: OperationView) -> bytes:
    content: list[object] = [el("ID", dashed_request_id(op.request_id)), el("Status", op.status)]
    if op.status in (SUCCEEDED, FAILED):
        content.append(el("HttpStatusCode", op.http_status_code))
    if op.status == FAILED:
        content.append(
            el(
                "Error",
                el("Code", op.error_code or "InternalError"),
                el("Message", op.error_message or "The operation failed."),
            )
        )
    return _root("Operation", *content)


def _lb_protocol(protocol: str) -> str:
    # at load-balancer level http/https endpoints are tcp (Get Deployment reports InstanceEndpoint Protocol tcp|udp)
    return "udp" if protocol.lower() == "udp" else "tcp"


def _instance_endpoints(dep: DeploymentView, inst: InstanceView) -> list[InstanceEndpointView]:
    """The instance's endpoints as the view gives them, plus the role's load-balanced input endpoints the view
    did not already list (Azure lists both under every RoleInstance)."""
    endpoints = list(inst.endpoints)
    seen = {e.name for e in endpoints}
    for ie in dep.input_endpoints:
        if ie.role_name == inst.role_name and ie.name not in seen:
            endpoints.append(
                InstanceEndpointView(
                    name=ie.name, protocol=ie.protocol, public_port=ie.port, local_port=ie.local_port, vip=ie.vip
                )
            )
            seen.add(ie.name)
    return endpoints


def _role_instance(dep: DeploymentView, inst: InstanceView) -> Node:
    endpoints = [
        el(
            "InstanceEndpoint",
            el("Name", e.name),
            el("Vip", e.vip or dep.vip),
            el("PublicPort", e.public_port),
            el("LocalPort", e.local_port),
            el("Protocol", _lb_protocol(e.protocol)),
        )
        for e in _instance_endpoints(dep, inst)
    ]
    host_name = getattr(inst, "host_name", None) or inst.instance_name
    return el(
        "RoleInstance",
        el("RoleName", inst.role_name),
        el("InstanceName", inst.instance_name),
        el("InstanceStatus", inst.status),
        el("InstanceUpgradeDomain", inst.upgrade_domain),
        el("InstanceFaultDomain", inst.fault_domain),
        el("InstanceSize", inst.size),
        el("InstanceStateDetails", getattr(inst, "state_details", None)),
        el("InstanceErrorCode", getattr(inst, "error_code", None)),
        el("IpAddress", inst.ip_address),
        el("InstanceEndpoints", _children(endpoints)),
        el("PowerState", inst.power_state),
        el("HostName", host_name),
    )


def _roles(dep: DeploymentView) -> list[tuple[str, str]]:
    roles = list(dep.roles)
    named = {name for name, _ in roles}
    for inst in dep.instances:  # a role the view forgot in `roles` still appears in RoleList
        if inst.role_name not in named:
            roles.append((inst.role_name, ""))
            named.add(inst.role_name)
    return roles


def deployment_element(
    dep: DeploymentView,
    *,
    locked: bool,
    created: str,
    modified: str,
    attrs: str = "",
    upgrade: tuple[str, str, int] | None = None,
) -> Node:
    """``upgrade``: (type, current upgrade domain state, current upgrade domain) while an upgrade is under way."""
    upgrade_domains = max((i.upgrade_domain for i in dep.instances), default=0) + 1
    role_list = [
        el(
            "Role",
            el("RoleName", name),
            el("OsVersion", os_version),
            el(
                "ConfigurationSets",
                _Raw(
                    '<ConfigurationSet i:type="NetworkConfigurationSet">'
                    "<ConfigurationSetType>NetworkConfiguration</ConfigurationSetType>"
                    "<SubnetNames /></ConfigurationSet>"
                ),
            ),
        )
        for name, os_version in _roles(dep)
    ]
    input_endpoints = [
        el("InputEndpoint", el("RoleName", ie.role_name), el("Vip", ie.vip or dep.vip), el("Port", ie.port))
        for ie in dep.input_endpoints
    ]
    return el(
        "Deployment",
        el("Name", dep.name),
        el("DeploymentSlot", dep.slot),
        el("PrivateID", dep.private_id),
        el("Status", dep.status),
        el("Label", b64(dep.label)),
        el("Url", dep.url),
        el("Configuration", b64(dep.configuration)),
        el("RoleInstanceList", _children(_role_instance(dep, i) for i in dep.instances)),
        el(
            "UpgradeStatus",
            el("UpgradeType", upgrade[0]),
            el("CurrentUpgradeDomainState", upgrade[1]),
            el("CurrentUpgradeDomain", upgrade[2]),
        )
        if upgrade is not None
        else None,
        el("UpgradeDomainCount", upgrade_domains),
        el("RoleList", _children(role_list)),
        el("SdkVersion", dep.sdk_version),
        el("InputEndpointList", _children(input_endpoints)) if input_endpoints else None,
        el("Locked", locked),
        el("RollbackAllowed", False),
        el("CreatedTime", created),
        el("LastModifiedTime", modified),
        el("ExtendedProperties"),
        el(
            "VirtualIPs",
            el(
                "VirtualIP",
                el("Address", dep.vip),
                el("IsDnsProgrammed", True),
                el("Name", "__PseudoBackEndContractVip"),
            ),
        ),
        attrs=attrs,
    )


def deployment_body(
    dep: DeploymentView, *, locked: bool, created: str, modified: str, upgrade: tuple[str, str, int] | None = None
) -> bytes:
    return deployment_element(
        dep, locked=locked, created=created, modified=modified, attrs=ROOT_ATTRS, upgrade=upgrade
    ).encode()


def hosted_service_element(
    dep: DeploymentView,
    *,
    service_url: str,
    location: str,
    created: str,
    modified: str,
    deployments: list[Node] | None,
    attrs: str = "",
) -> Node:
    return service_element(
        dep.service_name,
        label=dep.service_name,
        description="",
        service_url=service_url,
        location=location,
        created=created,
        modified=modified,
        deployments=deployments,
        attrs=attrs,
    )


def service_element(
    name: str,
    *,
    label: str,
    description: str,
    service_url: str,
    location: str,
    created: str,
    modified: str,
    deployments: list[Node] | None,
    attrs: str = "",
) -> Node:
    props = el(
        "HostedServiceProperties",
        el("Description", description or None),
        el("Location", location),
        el("Label", b64(label)),
        el("Status", "Created"),
        el("DateCreated", created),
        el("DateLastModified", modified),
        el("ExtendedProperties"),
    )
    return el(
        "HostedService",
        el("Url", service_url),
        el("ServiceName", name),
        props,
        el("Deployments", _children(deployments)) if deployments is not None else None,
        attrs=attrs,
    )


def availability_body(available: bool, reason: str) -> bytes:
    """Check Cloud Service Name Availability: ``<AvailabilityResponse><Result/><Reason/>``."""
    return _root("AvailabilityResponse", el("Result", available), el("Reason", reason or None))


def hosted_services_body(nodes: list[Node]) -> bytes:
    return _root("HostedServices", _children(nodes))


def certificates_body(url: Callable[[str, str], str], service: str, held: list[tuple[str, bytes]]) -> bytes:
    """List Service Certificates: ``<Certificates><Certificate>`` with URL, thumbprint, algorithm and the
    base64 .cer."""
    return _root(
        "Certificates",
        _children(
            el(
                "Certificate",
                el("CertificateUrl", url(service, thumbprint)),
                el("Thumbprint", thumbprint),
                el("ThumbprintAlgorithm", "sha1"),
                el("Data", base64.b64encode(der).decode("ascii")),
            )
            for thumbprint, der in held
        ),
    )


def certificate_body(der: bytes) -> bytes:
    """Get Service Certificate: ``<Certificate><Data>`` (base64 .cer)."""
    return _root("Certificate", el("Data", base64.b64encode(der).decode("ascii")))


def subscription_certificate_element(der: bytes, public_key_der: bytes, thumbprint: str, created: str) -> Node:
    return el(
        "SubscriptionCertificate",
        el("SubscriptionCertificatePublicKey", base64.b64encode(public_key_der).decode("ascii")),
        el("SubscriptionCertificateThumbprint", thumbprint),
        el("SubscriptionCertificateData", base64.b64encode(der).decode("ascii")),
        el("Created", created),
    )


def subscription_certificates_body(nodes: list[Node]) -> bytes:
    return _root("SubscriptionCertificates", _children(nodes))


def subscription_certificate_body(node: Node) -> bytes:
    return (node[: len("<SubscriptionCertificate")] + ROOT_ATTRS + node[len("<SubscriptionCertificate") :]).encode()


def subscription_operations_body(operations: list[Node]) -> bytes:
    """List Subscription Operations: the operations in the window, no continuation."""
    return _root(
        "SubscriptionOperationCollection",
        el("SubscriptionOperations", _children(operations)),
        el("ContinuationToken"),
    )


def subscription_operation_element(
    *,
    request_id: str,
    object_id: str,
    name: str,
    caller_thumbprint: str,
    client_ip: str,
    status: str,
    http_status: int | None,
    started: str,
    completed: str | None,
) -> Node:
    return el(
        "SubscriptionOperation",
        el("OperationId", dashed_request_id(request_id)),
        el("OperationObjectId", object_id),
        el("OperationName", name),
        el("OperationParameters"),
        el(
            "OperationCaller",
            el("UsedServiceManagementApi", True),
            el("SubscriptionCertificateThumbprint", caller_thumbprint),
            el("ClientIP", client_ip),
        ),
        el(
            "OperationStatus",
            el("ID", dashed_request_id(request_id)),
            el("Status", status),
            el("HttpStatusCode", http_status),
        ),
        el("OperationStartedTime", started),
        el("OperationCompletedTime", completed),
    )
