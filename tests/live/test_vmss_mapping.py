"""MAPPING tests of the vmss back end (not the end-to-end proof: that is tests/live/test_vmss_backend.py against
the fabric's ARM side).

A small HTTPS server on 127.0.0.1 answers with ARM JSON: scale-set VMs built from Azure's published examples
(tests/data/vmss-examples/, copied from Azure/azure-rest-api-specs), a scale set and load balancer shaped as the
Compute/Network definitions describe them, an OpenID configuration and token endpoint for the client-secret
credential. Everything between runs for real: azure-identity (MSAL), azure-mgmt-compute / azure-mgmt-network,
azure-core's pipeline, retry policy and LRO pollers, over a requests transport. What is checked: the facts the
rules read (names, instance ids, statuses, endpoints), one reimage through the poller, and the named causes of
bad answers (expired token, wrong subscription, unknown resource, 409, 429, 500, a poller that never ends) in
bounded time with the request ids, never the token or the client secret.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness.facts.live import platform
from harness.facts.live.deployment import FAILED, HEALTHY, TRANSITIONAL, classify
from harness.live import deployment_source
from harness.live.backends.vmss import ArmError, VmssBackend, instance_status, nat_endpoint_name
from harness.live.context import LiveContext
from harness.live.errors import StageError, TargetError
from harness.live.target import load_target

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "vmss-examples"
SUB = "5a2c6bd2-1b7e-4a0a-9f4c-3d0c7c3b9e11"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
RG, VMSS, LB, PIP = "rg-web", "web", "web-lb", "web-pip"
ACCESS_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.vmr-test-access-token-do-not-show"
CLIENT_SECRET = "vmr-client-secret-do-not-show-7Qx"
VIP = "203.0.113.10"


def _example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((EXAMPLES / name).read_text("utf-8"))["responses"]["200"]["body"]
    return body


def vm_document(instance_id: int, *, power: str = "running", provisioning: str = "succeeded", health: str = "") -> Any:
    """A scale-set VM: Azure's published VM example, renamed into our scale set, with the published instance
    view (its statuses adjusted to the state wanted)."""
    vm = _example("VirtualMachineScaleSetVM_Get_WithVMSizeProperties.json")
    vm = json.loads(
        json.dumps(vm).replace("{subscription-id}", SUB).replace("myResourceGroup", RG).replace("{vmss-name}", VMSS)
    )
    vm["name"] = f"{VMSS}_{instance_id}"
    vm["instanceId"] = str(instance_id)
    vm["id"] = vm["id"].rsplit("/", 1)[0] + f"/{instance_id}"
    vm["sku"] = {"name": "Standard_D2s_v3", "tier": "Standard"}
    vm["properties"]["osProfile"]["computerName"] = f"{VMSS}{instance_id:06d}"
    view = _example("VirtualMachineScaleSetVM_Get_InstanceViewAutoPlacedOnDedicatedHostGroup.json")
    view["platformUpdateDomain"] = view["platformFaultDomain"] = instance_id % 2
    for status in view["statuses"]:
        if status["code"].startswith("PowerState/"):
            status["code"] = f"PowerState/{power}"
        if status["code"].startswith("ProvisioningState/"):
            status["code"] = f"ProvisioningState/{provisioning}"
    if health:
        view["vmHealth"] = {"status": {"code": f"HealthState/{health}", "level": "Info"}}
    vm["properties"]["instanceView"] = view
    return vm


def _ipconfig(instance_id: int) -> str:
    return (
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/{VMSS}"
        f"/virtualMachines/{instance_id}/networkInterfaces/nic/ipConfigurations/ipconfig"
    )


def world(count: int = 3) -> dict[str, Any]:
    lb_id = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/loadBalancers/{LB}"
    pip_id = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/publicIPAddresses/{PIP}"
    fe = {"id": f"{lb_id}/frontendIPConfigurations/fe"}
    scale_set = {
        "name": VMSS,
        "id": f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/{VMSS}",
        "type": "Microsoft.Compute/virtualMachineScaleSets",
        "location": "westus",
        "sku": {"name": "Standard_D2s_v3", "tier": "Standard", "capacity": count},
        "properties": {
            "provisioningState": "Succeeded",
            "uniqueId": "b9e4c1d7-6a51-4f0e-8d2a-7f3c9e0a1b22",
            "upgradePolicy": {"mode": "Manual"},
            "virtualMachineProfile": {
                "networkProfile": {
                    "networkInterfaceConfigurations": [
                        {
                            "name": "nic",
                            "properties": {
                                "primary": True,
                                "ipConfigurations": [
                                    {
                                        "name": "ipconfig",
                                        "properties": {
                                            "loadBalancerBackendAddressPools": [
                                                {"id": f"{lb_id}/backendAddressPools/pool"}
                                            ],
                                            "loadBalancerInboundNatPools": [{"id": f"{lb_id}/inboundNatPools/winrm"}],
                                        },
                                    }
                                ],
                            },
                        }
                    ]
                }
            },
        },
    }
    load_balancer = {
        "name": LB,
        "id": lb_id,
        "type": "Microsoft.Network/loadBalancers",
        "location": "westus",
        "properties": {
            "provisioningState": "Succeeded",
            "frontendIPConfigurations": [
                {"name": "fe", "id": fe["id"], "properties": {"publicIPAddress": {"id": pip_id}}}
            ],
            "backendAddressPools": [{"name": "pool", "id": f"{lb_id}/backendAddressPools/pool"}],
            "probes": [
                {
                    "name": "http-probe",
                    "id": f"{lb_id}/probes/http-probe",
                    "properties": {
                        "protocol": "Http",
                        "port": 80,
                        "requestPath": "/health",
                        "intervalInSeconds": 5,
                        "numberOfProbes": 2,
                    },
                }
            ],
            "loadBalancingRules": [
                {
                    "name": "HttpIn",
                    "id": f"{lb_id}/loadBalancingRules/HttpIn",
                    "properties": {
                        "frontendIPConfiguration": fe,
                        "backendAddressPool": {"id": f"{lb_id}/backendAddressPools/pool"},
                        "probe": {"id": f"{lb_id}/probes/http-probe"},
                        "protocol": "Tcp",
                        "frontendPort": 80,
                        "backendPort": 80,
                    },
                }
            ],
            "inboundNatRules": [
                {
                    "name": f"WinRM.{i}",
                    "id": f"{lb_id}/inboundNatRules/WinRM.{i}",
                    "properties": {
                        "frontendIPConfiguration": fe,
                        "backendIPConfiguration": {"id": _ipconfig(i)},
                        "protocol": "Tcp",
                        "frontendPort": 50000 + i,
                        "backendPort": 5986,
                    },
                }
                for i in range(count)
            ],
        },
    }
    public_ip = {
        "name": PIP,
        "id": pip_id,
        "properties": {"ipAddress": VIP, "dnsSettings": {"fqdn": "web.westus.cloudapp.azure.com"}},
    }
    return {"vmss": scale_set, "vms": [vm_document(i) for i in range(count)], "lb": load_balancer, "pip": public_ip}


class Arm(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.world = world()
        self.lock = threading.Lock()
        #: path fragment -> list of (status, body, headers) answered before the normal answer (consumed)
        self.queued: dict[str, list[tuple[int, dict[str, Any], dict[str, str]]]] = {}
        #: path fragment -> (status, body, headers) answered every time
        self.always: dict[str, tuple[int, dict[str, Any], dict[str, str]]] = {}
        self.operations: dict[str, int] = {}  # operation id -> polls left before Succeeded (-1: never)
        self.polls_needed = 2
        self.requests: list[tuple[str, str, str]] = []  # (method, path, Authorization header)
        self.reimaged: list[str] = []

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Arm

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", f"req-{len(self.server.requests):04d}")
        self.send_header("x-ms-correlation-request-id", "corr-5f1d2c3b")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._route("POST")

    def _route(self, method: str) -> None:
        srv = self.server
        path = urllib.parse.urlsplit(self.path).path
        srv.requests.append((method, path, self.headers.get("Authorization", "")))
        base = srv.url
        if path.endswith("/.well-known/openid-configuration"):
            tenant = path.split("/")[1]
            return self._send(
                200,
                {
                    "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
                    "issuer": f"{base}/{tenant}/v2.0",
                },
            )
        if path.endswith("/oauth2/v2.0/token"):
            return self._send(200, {"token_type": "Bearer", "expires_in": 3600, "access_token": ACCESS_TOKEN})
        with srv.lock:
            for fragment, answers in srv.queued.items():
                if fragment in path and answers:
                    status, body, headers = answers.pop(0)
                    return self._send(status, body, headers)
            for fragment, (status, body, headers) in srv.always.items():
                if fragment in path:
                    return self._send(status, body, headers)
        if self.headers.get("Authorization") != f"Bearer {ACCESS_TOKEN}":
            return self._send(401, {"error": {"code": "AuthenticationFailed", "message": "no token"}})
        prefix = f"/subscriptions/{SUB}"
        if not path.startswith(prefix):
            return self._send(
                404, {"error": {"code": "SubscriptionNotFound", "message": "The subscription could not be found."}}
            )
        compute = f"{prefix}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/{VMSS}"
        network = f"{prefix}/resourceGroups/{RG}/providers/Microsoft.Network"
        w = srv.world
        if method == "GET" and path == compute:
            return self._send(200, w["vmss"])
        if method == "GET" and path == f"{compute}/virtualMachines":
            return self._send(200, {"value": w["vms"]})
        if method == "GET" and path == f"{network}/loadBalancers/{LB}":
            return self._send(200, w["lb"])
        if method == "GET" and path == f"{network}/publicIPAddresses/{PIP}":
            return self._send(200, w["pip"])
        if (
            method == "POST"
            and path.startswith(f"{compute}/virtualMachines/")
            and path.endswith(("/reimage", "/restart"))
        ):
            op = f"op-{len(srv.operations) + 1}"
            srv.operations[op] = srv.polls_needed
            srv.reimaged.append(path.split("/")[-2] + ":" + path.split("/")[-1])
            status_url = (
                f"{base}{prefix}/providers/Microsoft.Compute/locations/westus/operations/{op}?api-version=2026-04-01"
            )
            return self._send(
                202,
                None,
                {"Azure-AsyncOperation": status_url, "Location": status_url + "&monitor=true", "Retry-After": "0"},
            )
        if method == "GET" and "/operations/" in path:
            op = path.rsplit("/", 1)[1]
            left = srv.operations.get(op)
            if left is None:
                return self._send(404, {"error": {"code": "NotFound", "message": "no such operation"}})
            if left != 0:
                srv.operations[op] = left - 1 if left > 0 else -1
                return self._send(200, {"name": op, "status": "InProgress"}, {"Retry-After": "0"})
            return self._send(200, {"name": op, "status": "Succeeded"})
        return self._send(
            404,
            {
                "error": {
                    "code": "ResourceNotFound",
                    "message": f"The Resource '{path.rsplit('/', 1)[-1]}' was not found.",
                }
            },
        )


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file = tmp_path_factory.mktemp("arm-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return cert, ca_file


@pytest.fixture
def arm(tls: tuple[Any, Path]) -> Iterator[Arm]:
    cert, _ = tls
    server = Arm()
    context = __import__("ssl").SSLContext(__import__("ssl").PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def write_target(tmp_path: Path, arm: Arm, ca: Path, **management: Any) -> Path:
    secret = tmp_path / "client-secret"
    secret.write_text(CLIENT_SECRET)
    doc: dict[str, Any] = {
        "name": "vmss-stub",
        "management": {
            "api": "vmss",
            "url": arm.url,
            "authority": arm.url,
            "subscription_id": SUB,
            "resource_group": RG,
            "scale_set": VMSS,
            "ca": str(ca),
            "credential": {
                "kind": "client_secret",
                "tenant_id": TENANT,
                "client_id": "app-1",
                "secret": {"file": str(secret)},
            },
            **management,
        },
        "winrm": {"endpoint": "WinRM", "scheme": "https", "transport": "ntlm", "username": "vmradmin"},
        "timeouts": {"connect": 2, "read": 5, "ready": 10, "conflict_retry": 1.5},
    }
    path = tmp_path / "stub.vmrtarget.yml"
    import yaml

    path.write_text(yaml.safe_dump(doc), "utf-8")
    return path


@pytest.fixture
def ctx(tmp_path: Path, arm: Arm, tls: tuple[Any, Path]) -> Iterator[LiveContext]:
    context = LiveContext(load_target(write_target(tmp_path, arm, tls[1])))
    assert isinstance(context.backend, VmssBackend)
    context.backend.polling_interval = 0.05  # the stub sends Retry-After: 0 (azure-core then uses this)
    yield context
    context.close()


def shown(ctx: LiveContext, *more: str) -> str:
    """Every text the run would show: log entries, evidence, and the messages given."""
    return json.dumps(ctx.events, default=str) + json.dumps(ctx.evidence_texts) + "\n".join(more)


# ---- the mapping ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provisioning", "power", "health", "status", "classification"),
    [
        ("succeeded", "running", "", platform.READY, HEALTHY),
        ("succeeded", "running", "healthy", platform.READY, HEALTHY),
        ("succeeded", "running", "unhealthy", platform.BUSY, TRANSITIONAL),
        ("succeeded", "running", "initializing", platform.STARTING_ROLE, TRANSITIONAL),
        ("updating", "running", "", platform.RESTARTING, TRANSITIONAL),
        ("updating", "starting", "", platform.STARTING_VM, TRANSITIONAL),
        ("succeeded", "stopping", "", platform.STOPPING_VM, TRANSITIONAL),
        ("succeeded", "stopped", "", platform.STOPPED_VM, FAILED),
        ("succeeded", "deallocated", "", platform.STOPPED_DEALLOCATED, FAILED),
        ("creating", "", "", platform.CREATING_VM, TRANSITIONAL),
        ("failed/InternalOperationError", "running", "", platform.PROVISIONING_FAILED, FAILED),
        ("deleting", "running", "", platform.DELETING_VM, FAILED),
        ("succeeded", "", "", platform.UNKNOWN_STATUS, TRANSITIONAL),
    ],
)
def test_arm_states_map_to_the_platform_statuses_the_rules_know(
    provisioning: str, power: str, health: str, status: str, classification: str
) -> None:
    got, _, _ = instance_status(provisioning, power, health)
    assert got == status
    assert classify(got) == classification


def test_nat_pool_rule_names_give_the_endpoint() -> None:
    assert nat_endpoint_name("WinRM.3", "web") == "WinRM"
    assert nat_endpoint_name("web-WinRM.12", "web") == "WinRM"  # a pool named <scale set>-<endpoint>
    assert nat_endpoint_name("rdp", "web") == "rdp"
    assert nat_endpoint_name("web-", "web") == "web-"


def test_discovery_through_the_real_clients_gives_the_facts_the_rules_read(ctx: LiveContext, arm: Arm) -> None:
    facts = ctx.deployment()
    assert facts.api == "vmss" and facts.status == platform.RUNNING and not facts.locked
    assert facts.name == VMSS and facts.vips == (VIP,) and facts.host_name == "web.westus.cloudapp.azure.com"
    assert [(i.name, i.instance_id, i.computer_name, i.status) for i in facts.instances] == [
        (f"web{n:06d}", str(n), f"web{n:06d}", platform.READY) for n in range(3)
    ]
    first = facts.instances[0]
    assert first.label == "web000000 (instance 0)" and first.role == VMSS and first.size == "Standard_D2s_v3"
    assert first.power_state == platform.STARTED and (first.upgrade_domain, first.fault_domain) == (0, 0)
    # the published instance view's agent warning is not an instance status: the instance is ReadyRole
    winrm = first.endpoint("WinRM")
    assert winrm is not None and (winrm.public_port, winrm.local_port, winrm.vip) == (50000, 5986, VIP)
    assert [(e.name, e.protocol, e.port, e.local_port, e.vip, e.protocol_source) for e in facts.input_endpoints] == [
        ("HttpIn", "http", 80, 80, VIP, "guessed")
    ]
    assert facts.expected_counts == ((VMSS, 3),) and facts.configuration is None and facts.configuration_error
    assert facts.request_id.startswith("req-")
    # the evidence: what was read, without the OS profile or user data, and no token anywhere
    assert '"computerName": "web000001"' in facts.xml and "RXhhbXBsZSBVc2VyRGF0YQ==" not in facts.xml
    assert all(auth in ("", f"Bearer {ACCESS_TOKEN}") for _, _, auth in arm.requests)
    assert ACCESS_TOKEN not in shown(ctx) and CLIENT_SECRET not in shown(ctx)
    assert ctx.masker(f"Authorization: Bearer {ACCESS_TOKEN}") == "Authorization: Bearer ***"  # the token is known


def test_readiness_waits_on_the_mapped_statuses(ctx: LiveContext, arm: Arm) -> None:
    arm.world["vms"][1] = vm_document(1, health="unhealthy")  # the LB probe's view: out of rotation, BusyRole
    arm.world["vms"][2] = vm_document(2, power="deallocated")

    ready = deployment_source.wait_ready(ctx)
    assert not ready.ready and ready.failed_fast  # deallocated: nothing will start it
    by_name = {i.name: i for i in ready.instances}
    assert by_name["web000001"].status == platform.BUSY and by_name["web000001"].instance_id == "1"
    assert by_name["web000002"].status == platform.STOPPED_DEALLOCATED and by_name["web000002"].classification == FAILED
    assert ready.expected_counts == ((VMSS, 3),)
    assert "deployment.json" in ctx.evidence_texts


def test_one_reimage_through_the_poller(ctx: LiveContext, arm: Arm) -> None:
    op = ctx.management.start_operation("reimage", "web000001")
    seen: list[str] = []
    result = ctx.management.wait_operation(op, timeout=10, interval=0.1, on_poll=lambda s: seen.append(s.status))
    assert result.succeeded and not result.timed_out and op.startswith("req-")
    assert arm.reimaged == ["1:reimage"]  # ONE instance, by its instance id; never the scale set
    assert seen[-1] == platform.SUCCEEDED and [s for _, s in result.history][-1] == platform.SUCCEEDED
    reboot = ctx.management.start_operation("reboot", "2")  # by instance id too
    assert ctx.management.wait_operation(reboot, timeout=10, interval=0.1).succeeded
    assert arm.reimaged == ["1:reimage", "2:restart"]


def test_unknown_instance_and_operation_are_named(ctx: LiveContext) -> None:
    with pytest.raises(ArmError, match="'web000009' is not a VM of scale set web"):
        ctx.management.start_operation("reimage", "web000009")
    with pytest.raises(ValueError, match="unknown operation 'format'"):
        ctx.management.start_operation("format", "web000001")


# ---- bad answers: a named cause in bounded time, the request ids, never a token ------------------------------


def _fetch_error(ctx: LiveContext) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(StageError) as info:
        ctx.deployment()
    return str(info.value), time.monotonic() - started


def test_expired_token_is_named(ctx: LiveContext, arm: Arm, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    arm.always["/virtualMachineScaleSets/"] = (
        401,
        {
            "error": {
                "code": "ExpiredAuthenticationToken",
                "message": "The access token expiry UTC time is earlier than current UTC time.",
            }
        },
        {
            "WWW-Authenticate": 'Bearer authorization_uri="https://login.windows.net/", error="invalid_token", '
            'error_description="The access token is expired."'
        },
    )
    message, seconds = _fetch_error(ctx)
    assert "authentication or authorization failed: 401 ExpiredAuthenticationToken" in message
    assert "x-ms-request-id req-" in message and "x-ms-correlation-request-id corr-5f1d2c3b" in message
    assert seconds < 10
    assert ACCESS_TOKEN not in shown(ctx, message, caplog.text) and CLIENT_SECRET not in shown(
        ctx, message, caplog.text
    )


def test_wrong_subscription_is_named(tmp_path: Path, arm: Arm, tls: tuple[Any, Path]) -> None:
    ctx = LiveContext(
        load_target(write_target(tmp_path, arm, tls[1], subscription_id="00000000-0000-0000-0000-00000000dead"))
    )
    try:
        message, _ = _fetch_error(ctx)
    finally:
        ctx.close()
    assert "not found: 404 SubscriptionNotFound: The subscription could not be found." in message
    assert "x-ms-request-id" in message


def test_unknown_scale_set_is_named(tmp_path: Path, arm: Arm, tls: tuple[Any, Path]) -> None:
    ctx = LiveContext(load_target(write_target(tmp_path, arm, tls[1], scale_set="nosuch")))
    try:
        message, _ = _fetch_error(ctx)
    finally:
        ctx.close()
    assert "Get scale set rg-web/nosuch: not found: 404 ResourceNotFound" in message


def test_throttling_is_retried_after_retry_after_then_succeeds(ctx: LiveContext, arm: Arm) -> None:
    throttled = (429, {"error": {"code": "TooManyRequests", "message": "slow down"}}, {"Retry-After": "1"})
    arm.queued[f"/virtualMachineScaleSets/{VMSS}/virtualMachines"] = [throttled]
    started = time.monotonic()
    facts = ctx.deployment()
    assert len(facts.instances) == 3 and 1.0 <= time.monotonic() - started < 8
    assert sum("429, retrying in 1.00 s" in e["event"] for e in ctx.events) == 1


def test_throttling_past_the_budget_is_not_waited_for(ctx: LiveContext, arm: Arm) -> None:
    arm.always[f"/virtualMachineScaleSets/{VMSS}"] = (
        429,
        {"error": {"code": "TooManyRequests", "message": "slow down"}},
        {"Retry-After": "3600"},
    )
    message, seconds = _fetch_error(ctx)
    assert "throttled: 429 TooManyRequests, Retry-After 3600 s" in message and "x-ms-request-id req-" in message
    assert seconds < 5


def test_a_transient_500_is_retried(ctx: LiveContext, arm: Arm) -> None:
    arm.queued[f"/loadBalancers/{LB}"] = [(500, {"error": {"code": "InternalServerError", "message": "oops"}}, {})]
    assert ctx.deployment().vips == (VIP,)
    assert any("500, retrying" in e["event"] for e in ctx.events)


def test_conflict_at_the_start_of_an_operation_is_retried_then_named(ctx: LiveContext, arm: Arm) -> None:
    conflict = (
        409,
        {
            "error": {
                "code": "Conflict",
                "message": "Operation 'reimage' is not allowed since another operation is in progress.",
            }
        },
        {},
    )
    arm.queued["/virtualMachines/1/reimage"] = [conflict]
    op = ctx.management.start_operation("reimage", "web000001")  # one 409, then started
    assert ctx.management.wait_operation(op, timeout=10, interval=0.1).succeeded
    arm.always["/virtualMachines/2/reimage"] = conflict
    started = time.monotonic()
    with pytest.raises(ArmError) as info:
        ctx.management.start_operation("reimage", "web000002")
    assert time.monotonic() - started < 6  # timeouts.conflict_retry is 1.5 s
    assert "409 Conflict: Operation 'reimage' is not allowed" in str(info.value) and "x-ms-request-id" in str(
        info.value
    )


def test_a_poller_that_never_finishes_ends_at_the_deadline(ctx: LiveContext, arm: Arm) -> None:
    arm.polls_needed = -1
    op = ctx.management.start_operation("reimage", "web000000")
    started = time.monotonic()
    result = ctx.management.wait_operation(op, timeout=0.8, interval=0.2)
    assert result.timed_out and result.status == platform.IN_PROGRESS and not result.succeeded
    assert time.monotonic() - started < 3
    assert "had not finished when the" in (result.error_message or "")


def test_unreachable_management_api_is_named_and_remembered(tmp_path: Path, arm: Arm, tls: tuple[Any, Path]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = load_target(write_target(tmp_path, arm, tls[1], url=f"https://127.0.0.1:{port}"))
    ctx = LiveContext(target)
    try:
        message, seconds = _fetch_error(ctx)
        again, seconds_again = _fetch_error(ctx)
    finally:
        ctx.close()
    assert "unreachable (connection refused)" in message and seconds < 10
    assert "not tried" in again and seconds_again < 0.5


# ---- the target file ---------------------------------------------------------------------------------------------


def _target_error(tmp_path: Path, arm: Arm, ca: Path, **management: Any) -> str:
    with pytest.raises(TargetError) as info:
        load_target(write_target(tmp_path, arm, ca, **management))
    return str(info.value)


def test_target_file_vmss_schema(tmp_path: Path, arm: Arm, tls: tuple[Any, Path]) -> None:
    target = load_target(write_target(tmp_path, arm, tls[1], load_balancer="web-lb"))
    mgmt = target.management
    assert (mgmt.api, mgmt.resource_group, mgmt.scale_set, mgmt.load_balancer) == ("vmss", RG, VMSS, "web-lb")
    assert mgmt.credential.kind == "client_secret" and mgmt.credential.secret is not None
    assert target.masker()(f"x {CLIENT_SECRET} y") == "x *** y"
    ca = tls[1]
    assert "management.api: must be one of asm, vmss" in _target_error(tmp_path, arm, ca, api="arm")
    assert "keys ['slot'] do not apply to api: vmss" in _target_error(tmp_path, arm, ca, slot="production")
    assert "management.resource_group: is required" in _target_error(tmp_path, arm, ca, resource_group=None)
    assert "https only" in _target_error(tmp_path, arm, ca, url="http://127.0.0.1:1")
    bad_kind = {"kind": "password"}
    assert "management.credential.kind: must be one of" in _target_error(tmp_path, arm, ca, credential=bad_kind)
    inline = {"kind": "client_secret", "tenant_id": "t", "client_id": "c", "secret": "hunter2"}
    assert "secrets are not written in the target file" in _target_error(tmp_path, arm, ca, credential=inline)
    no_tenant = {"kind": "client_secret", "client_id": "c", "secret": {"env": "X"}}
    assert "client_secret needs tenant_id and client_id" in _target_error(tmp_path, arm, ca, credential=no_tenant)
    assert "applies to kind client_secret only" in _target_error(
        tmp_path, arm, ca, credential={"kind": "cli", "secret": {"env": "X"}}
    )


def test_default_credential_and_public_cloud(tmp_path: Path, arm: Arm, tls: tuple[Any, Path]) -> None:
    path = write_target(tmp_path, arm, tls[1])
    import yaml

    doc = yaml.safe_load(path.read_text())
    for key in ("url", "authority", "ca", "credential"):
        doc["management"].pop(key)
    path.write_text(yaml.safe_dump(doc))
    mgmt = load_target(path).management
    assert mgmt.url == "https://management.azure.com" and mgmt.credential.kind == "default" and mgmt.authority is None


def test_vmss_backend_is_chosen_by_the_target(ctx: LiveContext) -> None:
    assert isinstance(ctx.backend, VmssBackend) and ctx.management is ctx.backend


def test_example_documents_are_unchanged() -> None:
    """The published examples as copied (the tests build on them)."""
    vm = _example("VirtualMachineScaleSetVM_Get_WithVMSizeProperties.json")
    view = _example("VirtualMachineScaleSetVM_Get_InstanceViewAutoPlacedOnDedicatedHostGroup.json")
    assert vm["properties"]["osProfile"]["computerName"] == "test000000"
    assert [s["code"] for s in view["statuses"]] == ["ProvisioningState/succeeded", "PowerState/running"]
    assert copy.deepcopy(vm) == vm


def test_later_discoveries_read_the_states_only(ctx: LiveContext, arm: Arm) -> None:
    """Readiness polls re-read the scale set and its VMs; the load balancer and addresses are read once a run."""
    ctx.deployment()
    first = len(arm.requests)
    arm.world["vms"][0] = vm_document(0, power="stopped")
    facts = ctx.deployment(refresh=True)
    paths = [p for _, p, _ in arm.requests[first:]]
    assert [p.rsplit("/", 1)[-1] for p in paths] == [VMSS, "virtualMachines"]
    assert facts.instances[0].status == platform.STOPPED_VM and facts.vips == (VIP,)
    assert facts.request_id == f"req-{len(arm.requests):04d}"  # the VM list's (the last request)


@pytest.mark.parametrize(
    ("credential", "kind"),
    [
        ({"kind": "default"}, "DefaultAzureCredential"),
        ({"kind": "cli", "tenant_id": TENANT}, "AzureCliCredential"),
        ({"kind": "managed_identity", "client_id": "app-1"}, "ManagedIdentityCredential"),
        (
            {"kind": "workload_identity", "tenant_id": TENANT, "client_id": "app-1", "token_file": "TOKEN"},
            "WorkloadIdentityCredential",
        ),
    ],
)
def test_each_credential_kind_builds_its_azure_identity_credential(
    tmp_path: Path, arm: Arm, tls: tuple[Any, Path], credential: dict[str, str], kind: str
) -> None:
    from harness.live.backends.vmss import credential_for

    if credential.get("token_file"):
        token_file = tmp_path / "federated-token"
        token_file.write_text("eyJmZWRlcmF0ZWQ")
        credential = {**credential, "token_file": str(token_file)}
    target = load_target(write_target(tmp_path, arm, tls[1], credential=credential))
    built = credential_for(target)  # constructing asks for no token
    assert type(built).__name__ == kind
    getattr(built, "close", lambda: None)()


def test_winrm_address_from_the_target_file(tmp_path: Path, arm: Arm, tls: tuple[Any, Path]) -> None:
    import yaml

    path = write_target(tmp_path, arm, tls[1])
    doc = yaml.safe_load(path.read_text())
    doc["winrm"]["addresses"] = {"1": "192.0.2.7:5986", "web000002": "[2001:db8::2]:15986"}
    path.write_text(yaml.safe_dump(doc))
    ctx = LiveContext(load_target(path))
    try:
        facts = ctx.deployment()
    finally:
        ctx.close()
    got = {i.instance_id: (e.vip, e.public_port) for i in facts.instances if (e := i.endpoint("WinRM")) is not None}
    assert got == {"0": (VIP, 50000), "1": ("192.0.2.7", 5986), "2": ("2001:db8::2", 15986)}
    doc["winrm"]["addresses"] = {"1": "192.0.2.7"}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(TargetError, match=r"winrm.addresses.1: expected host:port"):
        load_target(path)
