"""Read ServiceDefinition (.csdef) and ServiceConfiguration (.cscfg) files into typed facts.

Tolerant of what real files contain (BOMs, UTF-16, CRLF, 2009-era wrappers, unknown elements) and
strict only where a rule could not make sense of the file at all (not XML, wrong root element).
Attribute values stay raw strings: judging them is the rules' job. Setting values may be secrets, so
no message built here ever contains one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from harness.engine.artefact import Artefact
from harness.facts.servicemodel import (
    INPUT,
    INSTANCE_INPUT,
    INTERNAL,
    ROLE_KINDS,
    CertificateDecl,
    CertificateRef,
    Endpoint,
    EnvironmentVariable,
    Import,
    LoadBalancerProbe,
    LocalStorage,
    PortRange,
    RoleConfig,
    RoleDef,
    ServiceConfiguration,
    ServiceDefinition,
    SettingDecl,
    SettingValue,
)
from harness.readers.errors import Unreadable
from harness.readers.xmlsafe import DEFAULT_MAX_BYTES, Node, check_size, parse_xml

WHAT = "service-model file"
ENDPOINT_KINDS = (INPUT, INTERNAL, INSTANCE_INPUT)
#: 2009 CTP wrappers that later became the single <Endpoints> element.
LEGACY_ENDPOINT_WRAPPERS = {"InputEndpoints": INPUT, "InternalEndpoints": INTERNAL}


class _Named(TypedDict):
    location: str
    line: int | None
    name: str


def _named(node: Node) -> _Named:
    """The fields every fact about a named element starts with: where it is and its ``name``."""
    return {"location": node.location, "line": node.line, "name": node.get("name") or ""}


def read_bounded(path: Path, limit: int = DEFAULT_MAX_BYTES, what: str = WHAT) -> bytes:
    """The file's bytes, refusing (before reading it all) anything over ``limit``."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
            if len(data) > limit:
                size = path.stat().st_size
                check_size(max(size, len(data)), limit, what, path)
    except OSError as exc:
        raise Unreadable(path, f"cannot read the file: {exc.strerror or type(exc).__name__}") from None
    return data


# ---- ServiceDefinition ---------------------------------------------------------------------------


def read_definition(artefact: Artefact) -> ServiceDefinition:
    return parse_definition(read_bounded(artefact.path), artefact)


def parse_definition(data: bytes, artefact: Artefact, part: str | None = None) -> ServiceDefinition:
    """Facts from csdef bytes. ``part`` names the package member the bytes came from; every location
    is then prefixed ``"{part}!"``."""
    prefix = f"{part}!" if part else ""
    doc = parse_xml(data, artefact.path, what=WHAT, location_prefix=prefix, location=part)
    root = doc.root
    _expect_root(root, "ServiceDefinition", artefact.path, part)
    legacy = [False]
    roles = tuple(_role(child, legacy) for child in root.children if child.tag in ROLE_KINDS)
    probes = tuple(
        LoadBalancerProbe(**_named(p), protocol=p.get("protocol"), port=p.get("port"), path=p.get("path"))
        for p in _grandchildren(root, "LoadBalancerProbes", "LoadBalancerProbe")
    )
    return ServiceDefinition(
        artefact=artefact,
        name=root.get("name"),
        roles=roles,
        load_balancer_probes=probes,
        schema_version=root.get("schemaVersion"),
        namespace=doc.namespace,
        legacy_shapes=legacy[0],
        part=part,
    )


def _expect_root(root: Node, expected: str, path: Path, part: str | None) -> None:
    if root.tag != expected:
        raise Unreadable(path, f"root element is <{root.tag}>, expected <{expected}>", location=part)


def _grandchildren(node: Node, wrapper: str, tag: str) -> list[Node]:
    return [item for w in node.findall(wrapper) for item in w.findall(tag)]


def _role(node: Node, legacy: list[bool]) -> RoleDef:
    endpoints: list[Endpoint] = []
    for child in node.children:
        if child.tag == "Endpoints":
            endpoints.extend(_endpoint(e) for e in child.children if e.tag in ENDPOINT_KINDS)
        elif child.tag in LEGACY_ENDPOINT_WRAPPERS:
            legacy[0] = True
            kind = LEGACY_ENDPOINT_WRAPPERS[child.tag]
            endpoints.extend(_endpoint(e) for e in child.children if e.tag == kind)
        elif child.tag in ENDPOINT_KINDS:
            # Pre-SDK-1.0 drafts put endpoints straight under the role.
            legacy[0] = True
            endpoints.append(_endpoint(child))

    storage_nodes = _grandchildren(node, "LocalResources", "LocalStorage")
    bare_storage = node.findall("LocalStorage")  # July 2009 CTP: no <LocalResources> wrapper
    if bare_storage:
        legacy[0] = True
    storage = tuple(
        LocalStorage(**_named(s), size_mb=s.get("sizeInMB"), clean_on_role_recycle=s.get("cleanOnRoleRecycle"))
        for s in storage_nodes + bare_storage
    )

    children: list[str] = []
    child_locations: list[tuple[str, str]] = []
    for child in node.children:
        if child.tag not in children:
            children.append(child.tag)
            child_locations.append((child.tag, child.location))

    return RoleDef(
        **_named(node),
        kind=node.tag,
        vmsize=node.get("vmsize"),
        endpoints=tuple(endpoints),
        certificates=tuple(
            CertificateDecl(
                **_named(c),
                store_location=c.get("storeLocation"),
                store_name=c.get("storeName"),
                permission_level=c.get("permissionLevel"),
            )
            for c in _grandchildren(node, "Certificates", "Certificate")
        ),
        settings=tuple(SettingDecl(**_named(s)) for s in _grandchildren(node, "ConfigurationSettings", "Setting")),
        imports=tuple(
            Import(location=i.location, line=i.line, module_name=i.get("moduleName") or "")
            for i in _grandchildren(node, "Imports", "Import")
        ),
        local_storage=storage,
        children=tuple(children),
        child_locations=tuple(child_locations),
        environment=_environment(node),
    )


def _environment(role: Node) -> tuple[EnvironmentVariable, ...]:
    """Variables of Startup/Task/Environment and Runtime/Environment. ``value`` stays None when the
    variable is computed (a RoleInstanceValue child) rather than written in the file."""
    environments = [
        ("Startup", env) for task in _grandchildren(role, "Startup", "Task") for env in task.findall("Environment")
    ]
    environments += [("Runtime", env) for env in _grandchildren(role, "Runtime", "Environment")]
    return tuple(
        EnvironmentVariable(**_named(variable), value=variable.get("value"), source=source)
        for source, env in environments
        for variable in env.findall("Variable")
    )


def _port_range(node: Node) -> PortRange:
    if node.tag == "FixedPort":
        port = node.get("port")
        return PortRange(location=node.location, line=node.line, min=port, max=port)
    return PortRange(location=node.location, line=node.line, min=node.get("min"), max=node.get("max"))


def _endpoint(node: Node) -> Endpoint:
    fixed: tuple[PortRange, ...] = ()
    public: PortRange | None = None
    if node.tag == INTERNAL:
        fixed = tuple(_port_range(c) for c in node.children if c.tag in ("FixedPort", "FixedPortRange"))
    elif node.tag == INSTANCE_INPUT:
        ranges = [
            _port_range(r)
            for a in node.findall("AllocatePublicPortFrom")
            for r in a.children
            if r.tag in ("FixedPortRange", "FixedPort")
        ]
        public = ranges[0] if ranges else None
    return Endpoint(
        **_named(node),
        kind=node.tag,
        protocol=node.get("protocol"),
        port=node.get("port"),
        local_port=node.get("localPort"),
        certificate=node.get("certificate"),
        load_balancer_probe=node.get("loadBalancerProbe"),
        ignore_role_instance_status=node.get("ignoreRoleInstanceStatus"),
        fixed_ports=fixed,
        public_port_range=public,
    )


# ---- ServiceConfiguration ------------------------------------------------------------------------


def read_configuration(artefact: Artefact) -> ServiceConfiguration:
    return parse_configuration(read_bounded(artefact.path), artefact)


def parse_configuration(data: bytes, artefact: Artefact) -> ServiceConfiguration:
    doc = parse_xml(data, artefact.path, what=WHAT)
    root = doc.root
    _expect_root(root, "ServiceConfiguration", artefact.path, None)
    return ServiceConfiguration(
        artefact=artefact,
        service_name=root.get("serviceName"),
        roles=tuple(_role_config(r) for r in root.findall("Role")),
        os_family=root.get("osFamily"),
        os_version=root.get("osVersion"),
        schema_version=root.get("schemaVersion"),
        namespace=doc.namespace,
        has_network_configuration=root.find("NetworkConfiguration") is not None,
    )


def _attr_ci(node: Node, name: str) -> str | None:
    """An attribute matched case-insensitively: OsImage's exact spelling survives in no public page."""
    wanted = name.lower()
    for key, value in node.attrib.items():
        if key.lower() == wanted:
            return value
    return None


def _role_config(node: Node) -> RoleConfig:
    instances = node.find("Instances")
    os_image = next((c for c in node.children if c.tag.lower() == "osimage"), None)
    return RoleConfig(
        **_named(node),
        instances=instances.get("count") if instances is not None else None,
        instances_location=instances.location if instances is not None else None,
        settings=tuple(
            SettingValue(**_named(s), value=s.get("value"))
            for s in _grandchildren(node, "ConfigurationSettings", "Setting")
        ),
        certificates=tuple(
            CertificateRef(
                **_named(c), thumbprint=c.get("thumbprint"), thumbprint_algorithm=c.get("thumbprintAlgorithm")
            )
            for c in _grandchildren(node, "Certificates", "Certificate")
        ),
        os_image_href=_attr_ci(os_image, "href") if os_image is not None else None,
        has_os_image=os_image is not None,
        os_image_location=os_image.location if os_image is not None else None,
    )
