"""The ARM REST server of the local fabric (HTTPS, the fabric's CA; 127.0.0.1 only).

Served (``{rg}`` the resource group, names compared case-insensitively as ARM does):

| method | path | api-version |
|---|---|---|
| GET | ``/{tenant}/v2.0/.well-known/openid-configuration``, ``/{tenant}/discovery/v2.0/keys`` | — |
| POST | ``/{tenant}/oauth2/v2.0/token`` (client credentials) | — |
| GET | ``/subscriptions/{s}[/resourceGroups/{rg}]/providers/Microsoft.Compute/virtualMachineScaleSets`` | Compute |
| GET | ``…/virtualMachineScaleSets/{vmss}`` and ``…/{vmss}/instanceView`` | Compute |
| PUT, PATCH | ``…/virtualMachineScaleSets/{vmss}``: ``sku.capacity`` only (``scale.py``) → 200 + async | Compute |
| GET | ``…/{vmss}/virtualMachines`` (``$filter``, ``$select``, ``$expand``, paged: ``query.py``) | Compute |
| GET | ``…/virtualMachines/{id}`` (``$expand``), ``…/{id}/instanceView`` | Compute |
| POST | ``…/virtualMachines/{id}/reimage|restart|powerOff|start|deallocate`` → 202 + async headers | Compute |
| POST | ``…/{vmss}/reimage|reimageall|restart|powerOff|start|deallocate`` (``instanceIds``, else all) | Compute |
| POST | ``…/{vmss}/delete`` (``{"instanceIds": […]}``), DELETE ``…/virtualMachines/{id}`` → 202 + async | Compute |
| GET | ``/subscriptions/{s}/providers/Microsoft.Compute/locations/{loc}/operations/{op}[?monitor=true]`` | Compute |
| POST | ``…/virtualMachines/{id}/reimageall`` (the fabric's rebuild: local storage too) | Compute |
| GET | ``…/{id}/networkInterfaces``, ``…/{vmss}/networkInterfaces``, ``…/{vmss}/publicipaddresses`` | 2018-10-01 |
| GET | ``…/providers/Microsoft.Network/loadBalancers[/{lb}]``, ``…/publicIPAddresses[/{ip}]`` | Network |

Every ARM request needs a bearer token of the fabric's tenant (``tokens.py``; else 401 with
``WWW-Authenticate``), then: the subscription (404 ``SubscriptionNotFound``), the api-version (400
``MissingApiVersionParameter`` / ``InvalidApiVersionParameter`` / ``NoRegisteredProviderFound``), the throttle
(429, ``throttle.py``), the management faults the fabric injects (``mgmt-409`` → 409 ``Conflict`` on POSTs,
``mgmt-500`` → 500 ``InternalExecutionError``, ``mgmt-timeout`` → held, then dropped), the resource group and
resource (404). Every answer carries ``x-ms-request-id`` and ``x-ms-correlation-request-id``; the token
request's body and the ``Authorization`` header are never logged.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import threading
import uuid
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from harness.fabric import views
from harness.fabric.arm import errors, lro, scale
from harness.fabric.arm import query as vm_query
from harness.fabric.arm.errors import ArmError
from harness.fabric.arm.resources import LOCATION, Names, View
from harness.fabric.arm.throttle import Buckets
from harness.fabric.arm.tokens import Issuer, OAuthError
from harness.fabric.httpbase import LOOPBACK, LoopbackHandler, LoopbackServer
from harness.fabric.mgmt.faults import TIMEOUT, FaultState
from harness.net import BadBodyLength, request_body_length

log = logging.getLogger("harness.fabric.arm")

COMPUTE_VERSIONS = ("2026-04-01",)
NETWORK_VERSIONS = ("2026-03-01",)
VMSS_NIC_VERSIONS = ("2018-10-01",)
MAX_BODY = 64 * 1024
IDLE_TIMEOUT = 30.0
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")

_SUB = r"/subscriptions/(?P<sub>[^/]+)"
_RG = _SUB + r"/resourcegroups/(?P<rg>[^/]+)"
_VMSS = _RG + r"/providers/microsoft\.compute/virtualmachinescalesets"
_NET = _RG + r"/providers/microsoft\.network"
_ACTION_NAMES = ("reimage", "reimageall", "restart", "poweroff", "start", "deallocate")
_SET_ACTION_NAMES = (*_ACTION_NAMES, "delete")
# (method, pattern, handler name, api family)
ROUTES = [
    ("GET", _SUB + r"/providers/microsoft\.compute/virtualmachinescalesets", "vmss_list_all", "compute"),
    (
        "GET",
        _SUB + r"/providers/microsoft\.compute/locations/(?P<loc>[^/]+)/operations/(?P<op>[^/]+)",
        "operation",
        "compute",
    ),
    ("GET", _VMSS, "vmss_list", "compute"),
    ("GET", _VMSS + r"/(?P<vmss>[^/]+)", "vmss_get", "compute"),
    ("PUT", _VMSS + r"/(?P<vmss>[^/]+)", "vmss_update", "compute"),
    ("PATCH", _VMSS + r"/(?P<vmss>[^/]+)", "vmss_update", "compute"),
    (
        "POST",
        _VMSS + r"/(?P<vmss>[^/]+)/(?P<action>" + "|".join(_SET_ACTION_NAMES) + ")",
        "vmss_action",
        "compute",
    ),
    ("GET", _VMSS + r"/(?P<vmss>[^/]+)/instanceview", "vmss_instance_view", "compute"),
    ("GET", _VMSS + r"/(?P<vmss>[^/]+)/virtualmachines", "vm_list", "compute"),
    ("GET", _VMSS + r"/(?P<vmss>[^/]+)/virtualmachines/(?P<vm>[^/]+)", "vm_get", "compute"),
    ("DELETE", _VMSS + r"/(?P<vmss>[^/]+)/virtualmachines/(?P<vm>[^/]+)", "vm_delete", "compute"),
    ("GET", _VMSS + r"/(?P<vmss>[^/]+)/virtualmachines/(?P<vm>[^/]+)/instanceview", "vm_instance_view", "compute"),
    (
        "POST",
        _VMSS + r"/(?P<vmss>[^/]+)/virtualmachines/(?P<vm>[^/]+)/(?P<action>" + "|".join(_ACTION_NAMES) + ")",
        "vm_action",
        "compute",
    ),
    ("GET", _VMSS + r"/(?P<vmss>[^/]+)/virtualmachines/(?P<vm>[^/]+)/networkinterfaces", "vm_nics", "vmss-nic"),
    ("GET", _VMSS + r"/(?P<vmss>[^/]+)/networkinterfaces", "vmss_nics", "vmss-nic"),
    ("GET", _VMSS + r"/(?P<vmss>[^/]+)/publicipaddresses", "vmss_public_ips", "vmss-nic"),
    ("GET", _NET + r"/loadbalancers", "lb_list", "network"),
    ("GET", _NET + r"/loadbalancers/(?P<lb>[^/]+)", "lb_get", "network"),
    ("GET", _NET + r"/publicipaddresses", "pip_list", "network"),
    ("GET", _NET + r"/publicipaddresses/(?P<pip>[^/]+)", "pip_get", "network"),
]
#: handlers that read the request's method and body
_WITH_BODY = {"vmss_update", "vmss_action"}
_COMPILED = [(m, re.compile(p + r"/?$", re.IGNORECASE), h, fam) for m, p, h, fam in ROUTES]
_VERSIONS = {"compute": COMPUTE_VERSIONS, "network": NETWORK_VERSIONS, "vmss-nic": VMSS_NIC_VERSIONS}
_TYPES = {"compute": "virtualMachineScaleSets", "network": "loadBalancers", "vmss-nic": "virtualMachineScaleSets"}
_ACTIONS = {
    "reimage": "reimage",
    "reimageall": "reimageAll",
    "restart": "restart",
    "poweroff": "powerOff",
    "start": "start",
    "deallocate": "deallocate",
}
_IDENTITY = re.compile(
    r"^/(?P<tenant>[^/]+)/(?:(?P<oidc>v2\.0/\.well-known/openid-configuration)|(?P<jwks>discovery/v2\.0/keys)"
    r"|(?P<token>oauth2/v2\.0/token))/?$"
)


class Answer:
    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


class ArmServer:
    """``backend``: the controller (``spec``, ``instances``, ``winrm_user``)."""

    def __init__(
        self,
        backend: Any,
        *,
        names: Names,
        issuer: Issuer,
        cert: str,
        key: str,
        port: int,
        faults: FaultState | None = None,
        throttle: dict[str, tuple[float, float]] | None = None,
        retry_after: int = 1,
        created: float | None = None,
        page_size: int = vm_query.DEFAULT_PAGE_SIZE,
    ) -> None:
        import time

        from harness.fabric.arm import throttle as throttle_mod

        self.backend = backend
        self.names = names
        self.issuer = issuer
        self.port = port
        self.faults = faults or FaultState()
        self.buckets = Buckets(throttle or dict(throttle_mod.DEFAULTS))
        self.retry_after = retry_after
        self.view = View(backend, names, created or time.time())
        self.operations = lro.Operations(backend)
        self.scaler = scale.Scaler(backend)
        self.view.pending = self.scaler.pending_capacity
        self.page_size = page_size
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls.load_cert_chain(cert, key)
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self.issuer.authority = self.base_url
        self._server = _Server(self.port, self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="arm-api", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()

    def describe(self) -> dict[str, Any]:
        """What fabric.json says of the ARM face (no secret: the client secret stays in secrets/)."""
        return {
            "endpoint": self.base_url,
            "authority": self.base_url,
            "tenant_id": self.issuer.tenant,
            "client_id": self.issuer.client_id,
            "token_endpoint": f"{self.base_url}/{self.issuer.tenant}/oauth2/v2.0/token",
            "subscription_id": self.names.subscription,
            "resource_group": self.names.group,
            "location": LOCATION,
            "scale_sets": self.view.vmss_names(),
            "load_balancer": self.view.lb_name(),
            "public_ip": self.view.pip_name(),
            "api_versions": {"compute": COMPUTE_VERSIONS[0], "network": NETWORK_VERSIONS[0]},
        }

    # ---- dispatch ---------------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: Any, body: bytes) -> Answer:
        parts = urlsplit(target)
        path = parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        ident = _IDENTITY.match(path)
        if ident and not path.lower().startswith("/subscriptions/"):
            return self._identity(method, ident, body, headers)
        try:
            return self._arm(method, path, query, headers, body)
        except ArmError as exc:
            return Answer(exc.status, exc.body(), exc.headers)

    def _identity(self, method: str, m: re.Match[str], body: bytes, headers: Any) -> Answer:
        tenant = m.group("tenant")
        if m.group("token"):
            if method != "POST":
                return Answer(405, {"error": "invalid_request", "error_description": "Use POST."})
            ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/x-www-form-urlencoded":
                return Answer(
                    400,
                    OAuthError(
                        400,
                        "invalid_request",
                        "AADSTS900561: The endpoint only accepts POST requests with a form body.",
                    ).body(),
                )
            try:
                form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
                return Answer(200, self.issuer.token_response(tenant, form), {"Cache-Control": "no-store"})
            except UnicodeDecodeError:
                return Answer(400, OAuthError(400, "invalid_request", "AADSTS900144: malformed form body.").body())
            except OAuthError as exc:
                return Answer(exc.status, exc.body())
        if method != "GET":
            return Answer(405, {"error": "invalid_request", "error_description": "Use GET."})
        if tenant != self.issuer.tenant:
            return Answer(
                400, {"error": "invalid_tenant", "error_description": f"AADSTS90002: Tenant '{tenant}' not found."}
            )
        if m.group("oidc"):
            return Answer(200, self.issuer.openid_configuration(tenant))
        return Answer(200, self.issuer.jwks())

    def _arm(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes = b"") -> Answer:
        self.issuer.verify(headers.get("Authorization"))
        route = None
        path_matched = False
        for m, pattern, handler, family in _COMPILED:
            match = pattern.match(path)
            if match:
                path_matched = True
                if m == method:
                    route = (match, handler, family)
                    break
        sub_match = re.match(_SUB + r"(/|$)", path, re.IGNORECASE)
        if sub_match and sub_match.group("sub").lower() != self.names.subscription.lower():
            raise errors.subscription_not_found(sub_match.group("sub"))
        if route is None:
            if path_matched:
                raise errors.method_not_allowed(method)
            if sub_match:
                self._check_group(path)
            raise errors.ArmError(
                404,
                "InvalidResourceType",
                "The resource type could not be found in the namespace 'Microsoft.Compute' for api-version "
                f"'{_one(query, 'api-version') or ''}'.",
            )
        match, handler, family = route
        self._check_version(query, family)
        kind = "reads" if method == "GET" else "writes"
        allowed, value = self.buckets.take(kind)
        if not allowed:
            raise errors.throttled(kind[:-1], self.names.subscription, value)
        fault = self.faults.for_request(method)
        if fault is not None:
            if fault.kind == TIMEOUT:
                self.faults.hold(fault, self._stop)
                raise _Drop()
            raise errors.conflict() if fault.status_code == 409 else errors.internal_error()
        if "rg" in match.groupdict():
            self._check_group(path)
        extra = {"method": method, "body": body} if handler in _WITH_BODY else {}
        answer: Answer = getattr(self, handler)(query=query, **match.groupdict(), **extra)
        answer.headers[f"x-ms-ratelimit-remaining-subscription-{kind}"] = str(value)
        return answer

    def _check_group(self, path: str) -> None:
        m = re.match(_RG + r"(/|$)", path, re.IGNORECASE)
        if m and m.group("rg").lower() != self.names.group.lower():
            raise errors.resource_group_not_found(m.group("rg"))

    def _check_version(self, query: dict[str, list[str]], family: str) -> None:
        version = _one(query, "api-version")
        supported = _VERSIONS[family]
        if version is None:
            raise errors.missing_api_version()
        if not _VERSION.match(version):
            raise errors.invalid_api_version(version, supported)
        if version not in supported:
            raise errors.no_registered_provider(version, _TYPES[family], supported, LOCATION)

    # ---- Compute ------------------------------------------------------------------------------------
    def _vmss_name(self, vmss: str) -> str:
        for name in self.view.vmss_names():
            if name.lower() == vmss.lower():
                return name
        raise errors.resource_not_found("Microsoft.Compute/virtualMachineScaleSets", vmss, self.names.group)

    def _member(self, vmss: str, vm: str) -> Any:
        inst = self.view.member(self._vmss_name(vmss), vm)
        if inst is None:
            raise errors.not_found_entity()
        return inst

    def vmss_list_all(self, query: Any, sub: str) -> Answer:
        return Answer(200, {"value": [self.view.vmss(n) for n in self.view.vmss_names()]})

    def vmss_list(self, query: Any, sub: str, rg: str) -> Answer:
        return self.vmss_list_all(query, sub)

    def vmss_get(self, query: Any, sub: str, rg: str, vmss: str) -> Answer:
        return Answer(200, self.view.vmss(self._vmss_name(vmss)))

    def vmss_instance_view(self, query: Any, sub: str, rg: str, vmss: str) -> Answer:
        return Answer(200, self.view.vmss_instance_view(self._vmss_name(vmss)))

    def vm_list(self, query: Any, sub: str, rg: str, vmss: str) -> Answer:
        name = self._vmss_name(vmss)
        wanted = vm_query.vm_list_query(
            _one(query, "$filter"), _one(query, "$select"), _one(query, "$expand"), _one(query, "$skiptoken")
        )
        # every fabric VM runs its set's model: latestModelApplied is always true
        members = [] if wanted.latest_model is False else sorted(self.view.members(name), key=lambda i: i.index)
        page = members[wanted.skip : wanted.skip + self.page_size]
        vms = [self._listed_vm(i, wanted) for i in page]
        body: dict[str, Any] = {"value": vms}
        if wanted.skip + self.page_size < len(members):
            body["nextLink"] = self._next_link(rg, name, query, wanted.skip + self.page_size)
        return Answer(200, body)

    def _listed_vm(self, inst: Any, wanted: vm_query.VmListQuery) -> dict[str, Any]:
        vm = self.view.vm(inst, expand=wanted.instance_view)
        view = vm["properties"].get("instanceView")
        if view is not None and wanted.statuses_only:
            statuses = view["statuses"]
            if wanted.power_state_only:
                statuses = [s for s in statuses if s["code"].startswith("PowerState/")]
            vm["properties"]["instanceView"] = {"statuses": statuses}
        return vm

    def _next_link(self, rg: str, vmss: str, query: dict[str, list[str]], offset: int) -> str:
        params = {k: v[0] for k, v in query.items() if v and k.lower() != "$skiptoken"}
        params["$skiptoken"] = vm_query.skiptoken(offset)
        path = (
            f"/subscriptions/{self.names.subscription}/resourceGroups/{rg}/providers/Microsoft.Compute/"
            f"virtualMachineScaleSets/{vmss}/virtualMachines"
        )
        return f"{self.base_url}{path}?{urlencode(params, safe='$', quote_via=quote)}"

    def vm_get(self, query: Any, sub: str, rg: str, vmss: str, vm: str) -> Answer:
        return Answer(200, self.view.vm(self._member(vmss, vm), expand=_expand(query)))

    def vm_instance_view(self, query: Any, sub: str, rg: str, vmss: str, vm: str) -> Answer:
        return Answer(200, self.view.vm_instance_view(self._member(vmss, vm)))

    def vm_action(self, query: Any, sub: str, rg: str, vmss: str, vm: str, action: str) -> Answer:
        inst = self._member(vmss, vm)
        try:
            op = self.operations.begin(_ACTIONS[action.lower()], [inst.id])
        except views.Conflict:
            raise errors.conflict() from None
        return self._accepted(op)

    def vm_delete(self, query: Any, sub: str, rg: str, vmss: str, vm: str) -> Answer:
        name = self._vmss_name(vmss)
        inst = self.view.member(name, vm)
        if inst is None:  # ARM's DELETE of a resource that is not there (any more)
            return Answer(204, None)
        return self._accepted(self.operations.track("delete", self.scaler.delete(name, [inst.id])))

    def vmss_action(self, query: Any, sub: str, rg: str, vmss: str, action: str, method: str, body: bytes) -> Answer:
        """A scale-set-wide action on the VMs ``{"instanceIds": [...]}`` names (all of them without a body, but
        for ``delete``, which needs them)."""
        name = self._vmss_name(vmss)
        action = action.lower()
        payload = _json_body(body, required=action == "delete")
        members = {str(i.index): i for i in self.view.members(name)}
        ids = _instance_ids(payload, required=action == "delete")
        if ids is None:
            targets = [members[k] for k in sorted(members, key=int)]
        else:
            missing = [i for i in ids if i not in members]
            if missing:
                raise errors.inactive_instance(missing[0])
            targets = [members[i] for i in ids]
        if action == "delete":
            return self._accepted(self.operations.track("delete", self.scaler.delete(name, [i.id for i in targets])))
        try:
            op = self.operations.begin(_ACTIONS[action], [i.id for i in targets])
        except views.Conflict:
            raise errors.conflict() from None
        return self._accepted(op)

    def vmss_update(self, query: Any, sub: str, rg: str, vmss: str, method: str, body: bytes) -> Answer:
        """PUT/PATCH of a scale set: a new ``sku.capacity`` scales it (an LRO); any other change is refused."""
        try:
            name = self._vmss_name(vmss)
        except ArmError:
            if method != "PUT":
                raise
            raise errors.operation_not_allowed(
                f"The local fabric cannot create scale set '{vmss}': its scale sets are the deployment's roles "
                f"({', '.join(self.view.vmss_names())})."
            ) from None
        payload = _json_body(body, required=True)
        if not isinstance(payload, dict):
            raise errors.ArmError(400, "InvalidRequestContent", "The request content must be a JSON object.")
        current = self.view.vmss(name)
        changed = scale.changed_properties(current, payload)
        if changed:
            raise errors.property_change_not_allowed(
                changed[0], "The local fabric changes a scale set's 'sku.capacity' only."
            )
        members = len(self.view.members(name))
        target = scale.requested_capacity(payload, current["sku"]["capacity"])
        if target == members and self.scaler.pending_capacity(name) is None:
            return Answer(200, current)
        self.scaler.check(name, target)
        op = self.operations.track("scale", self.scaler.scale(name, target))
        headers = self._async_headers(op)
        del headers["Location"]  # Compute's PUT/PATCH answer 200 with Azure-AsyncOperation only
        return Answer(200, self.view.vmss(name), headers)

    def _async_headers(self, op: lro.ArmOperation) -> dict[str, str]:
        version = COMPUTE_VERSIONS[0]
        status_url = (
            f"{self.base_url}/subscriptions/{self.names.subscription}/providers/Microsoft.Compute/locations/"
            f"{LOCATION}/operations/{op.id}"
        )
        return {
            "Azure-AsyncOperation": f"{status_url}?p={op.id}&api-version={version}",
            "Location": f"{status_url}?p={op.id}&monitor=true&api-version={version}",
            "Retry-After": str(self.retry_after),
        }

    def _accepted(self, op: lro.ArmOperation) -> Answer:
        return Answer(202, None, self._async_headers(op))

    def operation(self, query: Any, sub: str, loc: str, op: str) -> Answer:
        found = self.operations.get(op)
        if found is None or loc.lower() != LOCATION:
            raise errors.not_found_entity()
        if _one(query, "monitor") == "true":
            if found.status == lro.IN_PROGRESS:
                return Answer(
                    202,
                    None,
                    {"Location": f"{self.base_url}{_path_of(found, self)}", "Retry-After": str(self.retry_after)},
                )
            if found.status == lro.FAILED and found.error is not None:
                raise ArmError(
                    500 if found.error[0] == "InternalExecutionError" else 400, found.error[0], found.error[1]
                )
            return Answer(200, None)
        from harness.fabric.arm.resources import _iso

        body: dict[str, Any] = {"startTime": _iso(found.started), "status": found.status, "name": found.id}
        headers = {}
        if found.status == lro.IN_PROGRESS:
            headers["Retry-After"] = str(self.retry_after)
        else:
            body["endTime"] = _iso(found.ended)
        if found.status == lro.FAILED and found.error is not None:
            body["error"] = {"code": found.error[0], "message": found.error[1]}
        return Answer(200, body, headers)

    # ---- Network ------------------------------------------------------------------------------------
    def vm_nics(self, query: Any, sub: str, rg: str, vmss: str, vm: str) -> Answer:
        return Answer(200, {"value": [self.view.network_interface(self._member(vmss, vm))]})

    def vmss_nics(self, query: Any, sub: str, rg: str, vmss: str) -> Answer:
        name = self._vmss_name(vmss)
        return Answer(200, {"value": [self.view.network_interface(i) for i in self.view.members(name)]})

    def vmss_public_ips(self, query: Any, sub: str, rg: str, vmss: str) -> Answer:
        """Instance-level public IPs: the fabric's scale sets have none (they are reached through the LB's NAT)."""
        self._vmss_name(vmss)
        return Answer(200, {"value": []})

    def lb_list(self, query: Any, sub: str, rg: str) -> Answer:
        return Answer(200, {"value": [self.view.load_balancer()]})

    def lb_get(self, query: Any, sub: str, rg: str, lb: str) -> Answer:
        if lb.lower() != self.view.lb_name().lower():
            raise errors.resource_not_found("Microsoft.Network/loadBalancers", lb, self.names.group)
        return Answer(200, self.view.load_balancer())

    def pip_list(self, query: Any, sub: str, rg: str) -> Answer:
        return Answer(200, {"value": [self.view.public_ip()]})

    def pip_get(self, query: Any, sub: str, rg: str, pip: str) -> Answer:
        if pip.lower() != self.view.pip_name().lower():
            raise errors.resource_not_found("Microsoft.Network/publicIPAddresses", pip, self.names.group)
        return Answer(200, self.view.public_ip())


def _path_of(op: lro.ArmOperation, server: ArmServer) -> str:
    return (
        f"/subscriptions/{server.names.subscription}/providers/Microsoft.Compute/locations/{LOCATION}/operations/"
        f"{op.id}?p={op.id}&monitor=true&api-version={COMPUTE_VERSIONS[0]}"
    )


def _one(query: dict[str, list[str]], name: str) -> str | None:
    for key, values in query.items():
        if key.lower() == name.lower() and values:
            return values[0]
    return None


def _json_body(body: bytes, *, required: bool) -> Any:
    """The request's JSON body (None when empty and not ``required``); ARM's 400 otherwise."""
    if not body.strip():
        if required:
            raise errors.ArmError(
                400, "InvalidRequestContent", "The request content was empty: a JSON body is required."
            )
        return None
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.ArmError(
            400, "InvalidRequestContent", f"The request content was invalid and could not be deserialized: {exc}."
        ) from None


def _instance_ids(payload: Any, *, required: bool) -> list[str] | None:
    """``instanceIds`` of an action's body, without repeats (None: not given, all VMs)."""
    value = payload.get("instanceIds") if isinstance(payload, dict) else None
    if value is None:
        if required:
            raise errors.missing_parameter("instanceIds")
        return None
    if not isinstance(value, list) or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
        raise errors.ArmError(
            400, "InvalidParameter", "'instanceIds' must be a list of instance ids.", target="instanceIds"
        )
    if not value and required:
        raise errors.missing_parameter("instanceIds")
    return list(dict.fromkeys(str(v) for v in value)) or None


def _expand(query: dict[str, list[str]]) -> bool:
    return (_one(query, "$expand") or "").lower() == "instanceview"


class _Drop(Exception):
    """A timeout fault: close the connection without an answer."""


class _Server(LoopbackServer):
    def __init__(self, port: int, api: ArmServer) -> None:
        self.api = api
        super().__init__(port, _Handler, api.tls)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("ARM connection from %s failed", client_address, exc_info=True)


class _Handler(LoopbackHandler):
    server: _Server
    timeout = IDLE_TIMEOUT

    def setup(self) -> None:
        # one small answer per request: without NODELAY Nagle + delayed ACK add ~40 ms to each keep-alive one
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # the request line only: never headers or bodies
        log.debug("%s %s", self.address_string(), format % args)

    def _any(self) -> None:
        request_id = str(uuid.uuid4())
        correlation = self.headers.get("x-ms-correlation-request-id") or str(uuid.uuid4())
        try:
            length = request_body_length(self.headers, MAX_BODY)
        except BadBodyLength as exc:
            self.close_connection = True
            answer = Answer(400, errors.bad_request(f"The request body is not valid ({exc}).").body())
        else:
            body = self.rfile.read(length) if length else b""
            try:
                answer = self.server.api.handle(self.command, self.path, self.headers, body)
            except _Drop:
                self.close_connection = True
                return
            except Exception:  # never a traceback on the wire
                log.exception("ARM request %s %s failed", self.command, urlsplit(self.path).path)
                answer = Answer(500, errors.internal_error().body())
        payload = b"" if answer.body is None else json.dumps(answer.body).encode("utf-8")
        self.send_response(answer.status)
        headers = {
            "Cache-Control": "no-cache",
            "Pragma": "no-cache",
            "x-ms-request-id": request_id,
            "x-ms-correlation-request-id": correlation,
            "x-ms-routing-request-id": f"LOCAL:{request_id}",
            "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
            "X-Content-Type-Options": "nosniff",
            **answer.headers,
        }
        if answer.body is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
        headers["Content-Length"] = str(len(payload))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _any
