"""The fabric's ARM face (``fabric up --api vmss``) through the unmodified azure-identity, azure-mgmt-compute
and azure-mgmt-network clients: a 3-instance scale set from an ARM template, its VMs with instance views, a
reimage whose poller reaches Succeeded with the instance's OS drive really reset, the load balancer, public IP
and NICs, and ARM's answers to bad input (tokens, subscription, names, api-version, 409, 429, 500, timeout)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceResponseError,
)

from harness.fabric.client import Fabric, up
from tests.fabric import arm_openapi
from tests.fabric.arm_examples import common_paths, example, shape_mismatches, strip_nulls, unread_by_model
from tests.fabric.arm_helpers import TEMPLATE, StaticToken, arm, compute, credential, forged, network, secret

pytestmark = pytest.mark.xdist_group("fabric")

VMSS = "web"
COMPUTE_VERSION = "2026-04-01"
NETWORK_VERSION = "2026-03-01"
VMSS_NIC_VERSION = "2018-10-01"  # the scale-set NIC and public-IP operations keep their own api-version


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fabric]:
    mp = pytest.MonkeyPatch()
    # small read bucket (60, refilled 10/s) so the 429 test can empty it even on a loaded machine
    mp.setenv("VMR_FABRIC_ARM_THROTTLE", "reads=60/10")
    try:
        fab = up(tmp_path_factory.mktemp("fabric"), api="vmss", template=TEMPLATE, image="web-2026.vhd")
    finally:
        mp.undo()
    yield fab
    from harness.fabric.ports import is_listening

    port = int(arm(fab)["endpoint"].rsplit(":", 1)[1])
    report = fab.down()
    assert report.ports_still_open == [] and report.killed == []
    assert not is_listening(port), "the ARM server outlived the fabric"


@pytest.fixture(scope="module")
def client(fabric: Fabric) -> Any:
    return compute(fabric)


def group(fabric: Fabric) -> str:
    return str(arm(fabric)["resource_group"])


def raw(fabric: Fabric, path: str, method: str = "GET", token: str | None = None, **params: str) -> requests.Response:
    a = arm(fabric)
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return session.request(method, a["endpoint"] + path, params=params, headers=headers, verify=a["ca"], timeout=10)


def token(fabric: Fabric) -> str:
    return str(credential(fabric).get_token("https://management.azure.com/.default").token)


def vm_path(fabric: Fabric, tail: str = "") -> str:
    a = arm(fabric)
    return (
        f"/subscriptions/{a['subscription_id']}/resourceGroups/{a['resource_group']}/providers/"
        f"Microsoft.Compute/virtualMachineScaleSets/{VMSS}{tail}"
    )


def test_lists_the_three_vms_with_instance_views(fabric: Fabric, client: Any) -> None:
    vms = list(client.virtual_machine_scale_set_vms.list(group(fabric), VMSS, expand="instanceView"))
    assert [vm.instance_id for vm in vms] == ["0", "1", "2"]
    for vm in vms:
        codes = [s.code for s in vm.instance_view.statuses]
        assert codes == ["ProvisioningState/succeeded", "PowerState/running"], vm.name
        assert vm.instance_view.vm_health.status.code == "HealthState/healthy"
        assert vm.provisioning_state == "Succeeded"
        assert vm.storage_profile.image_reference.id.endswith("/providers/Microsoft.Compute/images/web-2026")
    scale_set = client.virtual_machine_scale_sets.get(group(fabric), VMSS)
    assert (scale_set.sku.name, scale_set.sku.capacity) == ("Standard_A1", 3)
    summary = client.virtual_machine_scale_sets.get_instance_view(group(fabric), VMSS).virtual_machine
    assert [(s.code, s.count) for s in summary.statuses_summary] == [("ProvisioningState/succeeded", 3)]
    assert [s.name for s in client.virtual_machine_scale_sets.list(group(fabric))] == [VMSS]


def test_load_balancer_public_ip_and_nics_are_the_fabric(fabric: Fabric) -> None:
    net = network(fabric)
    a = arm(fabric)
    lb = net.load_balancers.get(a["resource_group"], a["load_balancer"])
    (rule,) = lb.load_balancing_rules
    endpoint = fabric.endpoint("HttpIn")
    assert (rule.frontend_port, rule.backend_port, rule.protocol) == (endpoint["public_port"], 80, "Tcp")
    assert rule.probe.id == lb.probes[0].id and lb.probes[0].protocol == "Http"
    assert sorted(r.frontend_port for r in lb.inbound_nat_rules) == sorted(
        i["instance_endpoints"]["WinRM"] for i in fabric.instances
    )
    ip = net.public_ip_addresses.get(a["resource_group"], a["public_ip"])
    assert ip.ip_address == fabric.vip
    # the VIP answers on the rule's frontend port: the LB is the fabric's HAProxy
    assert requests.get(f"http://{ip.ip_address}:{rule.frontend_port}/", timeout=5).status_code == 200
    for inst in fabric.instances:
        index = inst["id"].rsplit("_", 1)[1]
        (nic,) = net.network_interfaces.list_virtual_machine_scale_set_vm_network_interfaces(
            a["resource_group"], VMSS, index
        )
        assert nic.ip_configurations[0].private_ip_address == inst["internal_ip"]
    nics = net.network_interfaces.list_virtual_machine_scale_set_network_interfaces(a["resource_group"], VMSS)
    assert sorted(n.ip_configurations[0].private_ip_address for n in nics) == sorted(
        i["internal_ip"] for i in fabric.instances
    )
    # instances are reached through the load balancer's NAT rules, not public IPs of their own
    assert (
        list(net.public_ip_addresses.list_virtual_machine_scale_set_public_ip_addresses(a["resource_group"], VMSS))
        == []
    )


def test_reimage_one_instance_poller_succeeds_and_os_drive_is_reset(fabric: Fabric, client: Any) -> None:
    drives = {i["id"]: Path(i["dir"]) / "drives" / "os" for i in fabric.instances}
    for drive in drives.values():
        (drive / "marker.txt").write_text("written after deployment")
    data_disk = Path(fabric.instance("web_IN_1")["dir"]) / "drives" / "local" / "datadisk0"
    (data_disk / "data.txt").write_text("on the data disk")
    poller = client.virtual_machine_scale_set_vms.begin_reimage(group(fabric), VMSS, "1", polling_interval=0.2)
    # a poller whose operation has not finished: result(timeout) returns, the status says InProgress
    poller.result(timeout=0.2)
    assert not poller.done() and poller.status() == "InProgress"
    # one operation at a time on the deployment: a second one is ARM's 409 Conflict
    with pytest.raises(ResourceExistsError) as conflict:
        client.virtual_machine_scale_set_vms.begin_restart(group(fabric), VMSS, "2")
    assert conflict.value.error.code == "Conflict"
    seen = set()
    while not poller.done():
        view = client.virtual_machine_scale_set_vms.get_instance_view(group(fabric), VMSS, "1")
        seen.add(tuple(s.code for s in view.statuses))
        time.sleep(0.1)
    assert poller.result() is None and poller.status() == "Succeeded"
    assert ("ProvisioningState/updating", "PowerState/stopped") in seen
    assert not (drives["web_IN_1"] / "marker.txt").exists(), "reimage must reset the OS drive"
    assert (data_disk / "data.txt").exists(), "reimage keeps the data disks"
    assert (drives["web_IN_0"] / "marker.txt").exists() and (drives["web_IN_2"] / "marker.txt").exists()
    view = client.virtual_machine_scale_set_vms.get_instance_view(group(fabric), VMSS, "1")
    assert [s.code for s in view.statuses] == ["ProvisioningState/succeeded", "PowerState/running"]


@pytest.mark.slow  # a reimage
def test_lost_data_disk_fault_then_reimage_loses_it(fabric: Fabric, client: Any) -> None:
    vm = client.virtual_machine_scale_set_vms.get(group(fabric), VMSS, "1")
    (disk,) = vm.storage_profile.data_disks
    assert (disk.lun, disk.disk_size_gb, disk.create_option) == (0, 4, "Empty")
    data_disk = Path(fabric.instance("web_IN_1")["dir"]) / "drives" / "local" / "datadisk0"
    (data_disk / "data.txt").write_text("on the data disk")
    fabric.inject("lose-local-storage", "web_IN_1", seconds=60)
    try:
        client.virtual_machine_scale_set_vms.begin_reimage(group(fabric), VMSS, "1", polling_interval=0.2).result(
            timeout=30
        )
    finally:
        fabric.clear_faults()
    assert not (data_disk / "data.txt").exists(), "the fault's reimage lands on new hardware: the data disk is lost"


def test_busy_instance_fails_its_health_probe(fabric: Fabric, client: Any) -> None:
    fabric.inject("busy", "web_IN_2", seconds=30)
    try:
        view = client.virtual_machine_scale_set_vms.get_instance_view(group(fabric), VMSS, "2")
        assert view.vm_health.status.code == "HealthState/unhealthy"
    finally:
        fabric.clear_faults()
    from harness.fabric.lifecycle import wait_until

    def healthy() -> bool:
        view = client.virtual_machine_scale_set_vms.get_instance_view(group(fabric), VMSS, "2")
        return bool(view.vm_health.status.code == "HealthState/healthy")

    # back once the agent check puts it into HAProxy's rotation again
    assert wait_until(healthy, float(fabric.data["haproxy"]["probe"]["removal_window_s"]) + 15, 0.2)


@pytest.mark.slow  # the probe's removal window, then the instance's restart
def test_crashed_instance_drops_out_of_the_probe_and_comes_back(fabric: Fabric, client: Any) -> None:
    from harness.fabric.lifecycle import wait_until

    def health() -> str:
        return str(
            client.virtual_machine_scale_set_vms.get_instance_view(group(fabric), VMSS, "2").vm_health.status.code
        )

    window = float(fabric.data["haproxy"]["probe"]["removal_window_s"]) + 5
    fabric.inject("crash", "web_IN_2", seconds=60)
    try:
        assert wait_until(lambda: health() == "HealthState/unhealthy", window, 0.2)
    finally:
        fabric.clear_faults()
    assert wait_until(lambda: health() == "HealthState/healthy", window + 30, 0.2)


def test_missing_expired_foreign_and_garbage_tokens_are_401(fabric: Fabric) -> None:
    answer = raw(fabric, vm_path(fabric), **{"api-version": COMPUTE_VERSION})
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "AuthenticationFailed"
    assert answer.headers["WWW-Authenticate"].startswith('Bearer authorization_uri="https://127.0.0.1:')
    cases = {
        "ExpiredAuthenticationToken": forged(fabric, lifetime=-60),
        "InvalidAuthenticationTokenTenant": forged(fabric, tenant="11111111-2222-3333-4444-555555555555"),
        "InvalidAuthenticationToken": forged(fabric)[:-8] + "AAAAAAAA",  # signature broken
    }
    for code, bad in cases.items():
        with pytest.raises(ClientAuthenticationError) as caught:
            compute(fabric, StaticToken(bad)).virtual_machine_scale_sets.get(group(fabric), VMSS)
        assert caught.value.status_code == 401 and caught.value.error.code == code
        assert bad not in str(caught.value)
    with pytest.raises(ClientAuthenticationError):  # the token endpoint refuses a wrong client secret
        credential(fabric, client_secret="not-the-secret").get_token("https://management.azure.com/.default")


def test_unknown_subscription_group_resource_and_instance_are_404(fabric: Fabric) -> None:
    from azure.mgmt.compute import ComputeManagementClient

    a = arm(fabric)
    other = ComputeManagementClient(
        credential(fabric), "99999999-0000-0000-0000-000000000000", base_url=a["endpoint"], connection_verify=a["ca"]
    )
    cases = [
        (lambda: other.virtual_machine_scale_sets.get(group(fabric), VMSS), "SubscriptionNotFound"),
        (lambda: compute(fabric).virtual_machine_scale_sets.get("no-such-group", VMSS), "ResourceGroupNotFound"),
        (lambda: compute(fabric).virtual_machine_scale_sets.get(group(fabric), "nope"), "ResourceNotFound"),
        (lambda: compute(fabric).virtual_machine_scale_set_vms.get(group(fabric), VMSS, "7"), "NotFound"),
        (lambda: network(fabric).load_balancers.get(group(fabric), "nope"), "ResourceNotFound"),
    ]
    for call, code in cases:
        with pytest.raises(ResourceNotFoundError) as caught:
            call()
        assert caught.value.error.code == code


def test_api_version_missing_malformed_or_unsupported_is_400(fabric: Fabric) -> None:
    import jsonschema
    from azure.mgmt.compute import models as cm

    from tests.fabric.arm_sdk_schema import schema

    cloud_error = schema(cm.CloudError)  # Compute's published error body
    bearer = token(fabric)
    for params, code in (
        ({}, "MissingApiVersionParameter"),
        ({"api-version": "latest"}, "InvalidApiVersionParameter"),
        ({"api-version": "2015-06-15"}, "NoRegisteredProviderFound"),
    ):
        answer = raw(fabric, vm_path(fabric), token=bearer, **params)
        assert answer.status_code == 400, answer.text
        assert set(answer.json()) == {"error"} and answer.json()["error"]["code"] == code
        assert list(jsonschema.Draft7Validator(cloud_error).iter_errors(answer.json())) == []
        assert answer.headers["x-ms-request-id"] and answer.headers["x-ms-correlation-request-id"]
    with pytest.raises(HttpResponseError) as caught:
        compute(fabric).virtual_machine_scale_sets.get(group(fabric), VMSS, api_version="2015-06-15")
    assert caught.value.status_code == 400 and caught.value.error.code == "NoRegisteredProviderFound"


@pytest.mark.slow  # empties the read bucket, then waits for it to refill: ~5 s
def test_read_throttling_is_429_with_retry_after(fabric: Fabric) -> None:
    bearer = token(fabric)
    session = requests.Session()
    session.trust_env = False
    a = arm(fabric)
    url = a["endpoint"] + vm_path(fabric)
    throttled = None
    for _ in range(2000):
        answer = session.get(
            url,
            params={"api-version": COMPUTE_VERSION},
            headers={"Authorization": f"Bearer {bearer}"},
            verify=a["ca"],
            timeout=10,
        )
        if answer.status_code == 429:
            throttled = answer
            break
        assert int(answer.headers["x-ms-ratelimit-remaining-subscription-reads"]) >= 0
    assert throttled is not None, "the read bucket never emptied"
    assert throttled.json()["error"]["code"] == "SubscriptionRequestsThrottled"
    assert int(throttled.headers["Retry-After"]) >= 1
    time.sleep(int(throttled.headers["Retry-After"]) + 3)  # 30+ tokens back for the tests that follow


def test_management_faults_409_500_and_timeout(fabric: Fabric) -> None:
    fast = compute(fabric, retry_total=0, read_timeout=1.0)
    fabric.inject("mgmt-409", seconds=30)
    try:
        with pytest.raises(ResourceExistsError) as conflict:
            fast.virtual_machine_scale_set_vms.begin_restart(group(fabric), VMSS, "0")
        assert conflict.value.status_code == 409 and conflict.value.error.code == "Conflict"
        assert fast.virtual_machine_scale_sets.get(group(fabric), VMSS).name == VMSS  # reads still work
        fabric.inject("mgmt-500", seconds=30)
        with pytest.raises(HttpResponseError) as internal:
            fast.virtual_machine_scale_sets.get(group(fabric), VMSS)
        assert internal.value.status_code == 500 and internal.value.error.code == "InternalExecutionError"
        fabric.inject("mgmt-timeout", seconds=5)
        started = time.monotonic()
        with pytest.raises(ServiceResponseError):
            fast.virtual_machine_scale_sets.get(group(fabric), VMSS)
        assert time.monotonic() - started < 4
    finally:
        fabric.clear_faults()
    assert fast.virtual_machine_scale_sets.get(group(fabric), VMSS).name == VMSS


def test_no_secret_or_token_in_state_logs_or_status(fabric: Fabric) -> None:
    issued = token(fabric)
    status = subprocess.run(
        [sys.executable, "-m", "harness.cli", "fabric", "status", "--state", str(fabric.layout.root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert "ARM endpoint" in status.stdout and "token endpoint" in status.stdout
    texts = [status.stdout, status.stderr, fabric.layout.fabric_json.read_text()]
    texts.append(fabric.layout.controller_log.read_text(errors="replace"))
    for text in texts:
        assert secret(fabric) not in text
        assert issued not in text and issued.split(".")[2] not in text


def _served(fabric: Fabric) -> list[tuple[str, dict[str, str], Any]]:
    """Every GET the fabric serves, with the model its answer must match."""
    from azure.mgmt.compute import models as cm
    from azure.mgmt.network import models as nm

    from tests.fabric.arm_sdk_schema import list_schema, schema

    a = arm(fabric)
    net = f"/subscriptions/{a['subscription_id']}/resourceGroups/{a['resource_group']}/providers/Microsoft.Network"
    compute_v = {"api-version": COMPUTE_VERSION}
    network_v = {"api-version": NETWORK_VERSION}
    expand = {**compute_v, "$expand": "instanceView"}
    sub_vmss = f"/subscriptions/{a['subscription_id']}/providers/Microsoft.Compute/virtualMachineScaleSets"
    return [
        (vm_path(fabric), compute_v, schema(cm.VirtualMachineScaleSet)),
        (vm_path(fabric, "/instanceView"), compute_v, schema(cm.VirtualMachineScaleSetInstanceView)),
        (vm_path(fabric).rsplit("/", 1)[0], compute_v, list_schema(cm.VirtualMachineScaleSet)),
        (sub_vmss, compute_v, list_schema(cm.VirtualMachineScaleSet)),
        (vm_path(fabric, "/virtualMachines"), compute_v, list_schema(cm.VirtualMachineScaleSetVM)),
        (vm_path(fabric, "/virtualMachines"), expand, list_schema(cm.VirtualMachineScaleSetVM)),
        (vm_path(fabric, "/virtualMachines/0"), expand, schema(cm.VirtualMachineScaleSetVM)),
        (
            vm_path(fabric, "/virtualMachines/0/instanceView"),
            compute_v,
            schema(cm.VirtualMachineScaleSetVMInstanceView),
        ),
        (
            vm_path(fabric, "/virtualMachines/0/networkInterfaces"),
            {"api-version": VMSS_NIC_VERSION},
            list_schema(nm.NetworkInterface),
        ),
        (vm_path(fabric, "/networkInterfaces"), {"api-version": VMSS_NIC_VERSION}, list_schema(nm.NetworkInterface)),
        (vm_path(fabric, "/publicipaddresses"), {"api-version": VMSS_NIC_VERSION}, list_schema(nm.PublicIPAddress)),
        (f"{net}/loadBalancers/{a['load_balancer']}", network_v, schema(nm.LoadBalancer)),
        (f"{net}/loadBalancers", network_v, list_schema(nm.LoadBalancer)),
        (f"{net}/publicIPAddresses/{a['public_ip']}", network_v, schema(nm.PublicIPAddress)),
        (f"{net}/publicIPAddresses", network_v, list_schema(nm.PublicIPAddress)),
    ]


def test_every_served_response_matches_the_published_models(fabric: Fabric) -> None:
    import jsonschema

    bearer = token(fabric)
    problems = []
    for path, params, model_schema in _served(fabric):
        answer = raw(fabric, path, token=bearer, **params)
        assert answer.status_code == 200, (path, answer.text)
        validator = jsonschema.Draft7Validator(model_schema)
        for error in validator.iter_errors(answer.json()):
            problems.append(f"{path}?{params}: /{'/'.join(map(str, error.absolute_path))}: {error.message}")
    assert not problems, "\n".join(problems[:40])
    # the schemas do reject what the published models do not define
    path, params, vmss_schema = _served(fabric)[0]
    body = raw(fabric, path, token=bearer, **params).json()
    body["properties"]["virtualMachineProfile"]["storageProfile"]["osDisk"]["caching"] = "Sometimes"
    body["sku"]["capacity"] = "3"
    body["properties"]["instanceCount"] = 3
    messages = sorted(e.message for e in jsonschema.Draft7Validator(vmss_schema).iter_errors(body))
    assert len(messages) == 3, messages


# where a published example does not pass the schema derived from the SDK's models, and why: (JSON path, keyword)
EXPECTED_SDK_DIFFERENCES = {
    # lifecycleHookState is in the 2026-04-01 description, not yet in azure-mgmt-compute 39.0.0's models
    "compute-2026-04-01/VirtualMachineScaleSetVM_Get_InstanceView_WithLifecycleHookState": {
        ("/", "additionalProperties")
    },
    # vmSize is an extensible enum (x-ms-enum modelAsString: true); the SDK's list of sizes, which the derived
    # schemas close, has no Standard_D2ls_v5
    "compute-2026-04-01/VirtualMachineScaleSetVM_List_WithResiliencyView": {
        (f"/value/{i}/properties/hardwareProfile/vmSize", "enum") for i in (0, 1)
    },
}


@dataclass(frozen=True)
class Replay:
    """A published example's GET, on the fabric's own resources, with what the answer is held to."""

    example: str
    path: str
    served: str  # the api-version the fabric serves for it (the example's may be older)
    model: Any  # the SDK model of the answer (of one item for a list)
    listed: bool
    read: Callable[[], Any]  # the same request through the real client
    common: int  # at least this many property paths shared with the example: a real comparison


def _replays(fabric: Fabric, client: Any) -> list[Replay]:
    from azure.mgmt.compute import models as cm
    from azure.mgmt.network import models as nm

    a, rg, net = arm(fabric), group(fabric), network(fabric)
    nets = f"/subscriptions/{a['subscription_id']}/resourceGroups/{rg}/providers/Microsoft.Network"
    vms, sets = client.virtual_machine_scale_set_vms, client.virtual_machine_scale_sets
    c26, c25 = "compute-2026-04-01/", "compute-2025-04-01/"
    return [
        Replay(
            c26 + "VirtualMachineScaleSetVM_Get_WithVMSizeProperties",
            vm_path(fabric, "/virtualMachines/0"),
            COMPUTE_VERSION,
            cm.VirtualMachineScaleSetVM,
            False,
            lambda: vms.get(rg, VMSS, "0", expand="UserData"),
            10,
        ),
        Replay(
            c26 + "VirtualMachineScaleSetVM_Get_InstanceView_WithLifecycleHookState",
            vm_path(fabric, "/virtualMachines/0/instanceView"),
            COMPUTE_VERSION,
            cm.VirtualMachineScaleSetVMInstanceView,
            False,
            lambda: vms.get_instance_view(rg, VMSS, "0"),
            10,
        ),
        Replay(
            c26 + "VirtualMachineScaleSetVM_List_WithResiliencyView",
            vm_path(fabric, "/virtualMachines"),
            COMPUTE_VERSION,
            cm.VirtualMachineScaleSetVM,
            True,
            lambda: list(vms.list(rg, VMSS)),
            40,
        ),
        Replay(
            c25 + "VirtualMachineScaleSet_Get_WithDiskControllerType",
            vm_path(fabric),
            COMPUTE_VERSION,
            cm.VirtualMachineScaleSet,
            False,
            lambda: sets.get(rg, VMSS, expand="userData"),
            30,
        ),
        Replay(
            c25 + "VirtualMachineScaleSet_GetInstanceView_MaximumSet_Gen",
            vm_path(fabric, "/instanceView"),
            COMPUTE_VERSION,
            cm.VirtualMachineScaleSetInstanceView,
            False,
            lambda: sets.get_instance_view(rg, VMSS),
            8,
        ),
        Replay(
            c26 + "VirtualMachineScaleSet_List_MinimumSet_Gen",
            vm_path(fabric).rsplit("/", 1)[0],
            COMPUTE_VERSION,
            cm.VirtualMachineScaleSet,
            True,
            lambda: list(sets.list(rg)),
            3,
        ),
        Replay(
            "network-2026-03-01/LoadBalancerGet",
            f"{nets}/loadBalancers/{a['load_balancer']}",
            NETWORK_VERSION,
            nm.LoadBalancer,
            False,
            lambda: net.load_balancers.get(rg, a["load_balancer"]),
            60,
        ),
        Replay(
            "network-2026-01-01/PublicIpAddressGet",
            f"{nets}/publicIPAddresses/{a['public_ip']}",
            NETWORK_VERSION,
            nm.PublicIPAddress,
            False,
            lambda: net.public_ip_addresses.get(rg, a["public_ip"]),
            10,
        ),
        Replay(
            "network-2025-07-01/VmssVmNetworkInterfaceList",
            vm_path(fabric, "/virtualMachines/1/networkInterfaces"),
            VMSS_NIC_VERSION,
            nm.NetworkInterface,
            True,
            lambda: list(net.network_interfaces.list_virtual_machine_scale_set_vm_network_interfaces(rg, VMSS, "1")),
            20,
        ),
    ]


def test_published_get_examples_replayed_through_the_client_match_in_shape(fabric: Fabric, client: Any) -> None:
    """Each example's request on the fabric's scale set, load balancer, public IP and NICs, at the api-version the
    fabric serves (the example's own, or an older one where the index of published examples has no newer copy):
    the raw answer matches the example's response in shape, the example passes the schema the fabric's answers are
    held to, and the real client reads every property the two share through its model's attributes."""
    import jsonschema
    from azure.mgmt.network import models as nm

    from tests.fabric.arm_sdk_schema import list_schema, schema

    bearer = token(fabric)
    problems = []
    for case in _replays(fabric, client):
        published = example(case.example)
        params = published["parameters"]
        assert params["api-version"] <= case.served, case.example
        query = {"api-version": case.served}
        if "$expand" in params or "expand" in params:
            query["$expand"] = params.get("$expand") or params["expand"]
        answer = raw(fabric, case.path, token=bearer, **query)
        assert answer.status_code == 200, (case.example, answer.text)
        body = published["responses"]["200"]["body"]
        problems += [f"{case.example}: {m}" for m in shape_mismatches(answer.json(), body)]
        assert common_paths(answer.json(), body) >= case.common, case.example
        # the published example itself passes the schema the fabric's answers are held to, but where known
        sdk = list_schema(case.model) if case.listed else schema(case.model)
        errors = jsonschema.Draft7Validator(sdk).iter_errors(strip_nulls(body))
        found = {("/" + "/".join(map(str, e.absolute_path)), str(e.validator)) for e in errors}
        assert found == EXPECTED_SDK_DIFFERENCES.get(case.example, set()), case.example
        # the real client: the same request, read into its model
        read = case.read()
        models, items = (read, body["value"]) if case.listed else ([read], [body])
        assert models and all(isinstance(m, case.model) for m in models), case.example
        for index, model in enumerate(models):
            problems += [f"{case.example}: {m}" for m in unread_by_model(model, items[min(index, len(items) - 1)])]
    assert not problems, "\n".join(problems)
    # the model check does see a property the client cannot read
    lb = example("network-2026-03-01/LoadBalancerGet")["responses"]["200"]["body"]
    unknown = {**lb, "properties": {**lb["properties"], "frontendPorts": [80]}}
    assert unread_by_model(nm.LoadBalancer(unknown), unknown) == [
        "/properties/frontendPorts: the client's LoadBalancerPropertiesFormat has no attribute for it"
    ]
    # the comparison does see a property whose JSON type differs from the example's
    vm = raw(fabric, vm_path(fabric, "/virtualMachines/0"), token=bearer, **{"api-version": COMPUTE_VERSION}).json()
    vm["properties"]["hardwareProfile"] = "Standard_A1"
    published = example("compute-2026-04-01/VirtualMachineScaleSetVM_Get_WithVMSizeProperties")
    assert shape_mismatches(vm, published["responses"]["200"]["body"]) == [
        "/properties/hardwareProfile: ours is str, the example's is dict"
    ]


def _post_example(fabric: Fabric, bearer: str, name: str, tail: str) -> requests.Response:
    """A published long-running action's request on one of the fabric's VMs: ARM's 202 with an empty body and the
    ``Location`` the example shows (plus Azure-AsyncOperation and Retry-After), at the served api-version."""
    published = example(name)
    assert set(published["responses"]) == {"200", "202"} and "location" in published["responses"]["202"]["headers"]
    assert published["parameters"]["api-version"] <= COMPUTE_VERSION
    answer = raw(fabric, vm_path(fabric, tail), method="POST", token=bearer, **{"api-version": COMPUTE_VERSION})
    assert answer.status_code == 202 and answer.content == b"", (name, answer.text)
    assert answer.headers["Location"].startswith(arm(fabric)["endpoint"]) and int(answer.headers["Retry-After"]) >= 1
    return answer


def _monitor(fabric: Fabric, bearer: str, accepted: requests.Response) -> None:
    """The 202's monitors until done: Location 202 -> 200, Azure-AsyncOperation InProgress -> Succeeded."""
    a = arm(fabric)
    location, status_url = accepted.headers["Location"], accepted.headers["Azure-AsyncOperation"]
    session = requests.Session()
    session.trust_env = False
    auth = {"Authorization": f"Bearer {bearer}"}
    codes, statuses = [], []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        statuses.append(session.get(status_url, headers=auth, verify=a["ca"], timeout=10).json()["status"])
        monitor = session.get(location, headers=auth, verify=a["ca"], timeout=10)
        codes.append(monitor.status_code)
        if monitor.status_code == 200:
            break
        time.sleep(0.2)
    assert codes[0] == 202 and codes[-1] == 200 and set(codes) == {200, 202}
    statuses.append(session.get(status_url, headers=auth, verify=a["ca"], timeout=10).json()["status"])
    assert statuses[0] == "InProgress" and statuses[-1] == "Succeeded"


@pytest.mark.slow  # a reimage, a power-off, a start and a restart: ~10 s
def test_published_lro_examples_202_with_location_then_200(fabric: Fabric, client: Any) -> None:
    bearer = token(fabric)
    c26 = "compute-2026-04-01/"
    _monitor(
        fabric,
        bearer,
        _post_example(
            fabric, bearer, c26 + "VirtualMachineScaleSetVM_Reimage_MinimumSet_Gen", "/virtualMachines/2/reimage"
        ),
    )
    accepted = _post_example(
        fabric, bearer, c26 + "VirtualMachineScaleSetVM_PowerOff_MinimumSet_Gen", "/virtualMachines/0/poweroff"
    )
    # a power action holds the deployment as the lifecycle's operations do: another action is a 409
    with pytest.raises(ResourceExistsError):
        client.virtual_machine_scale_set_vms.begin_restart(group(fabric), VMSS, "1")
    _monitor(fabric, bearer, accepted)
    view = client.virtual_machine_scale_set_vms.get_instance_view(group(fabric), VMSS, "0")
    assert [s.code for s in view.statuses] == ["ProvisioningState/succeeded", "PowerState/stopped"]
    _monitor(
        fabric,
        bearer,
        _post_example(
            fabric, bearer, c26 + "VirtualMachineScaleSetVM_Start_MaximumSet_Gen", "/virtualMachines/0/start"
        ),
    )
    view = client.virtual_machine_scale_set_vms.get_instance_view(group(fabric), VMSS, "0")
    assert [s.code for s in view.statuses] == ["ProvisioningState/succeeded", "PowerState/running"]
    restart = "compute-2025-04-01/VirtualMachineScaleSetVM_Restart_MinimumSet_Gen"
    _monitor(fabric, bearer, _post_example(fabric, bearer, restart, "/virtualMachines/0/restart"))
    view = client.virtual_machine_scale_set_vms.get_instance_view(group(fabric), VMSS, "0")
    assert [s.code for s in view.statuses] == ["ProvisioningState/succeeded", "PowerState/running"]
    client.virtual_machine_scale_set_vms.begin_deallocate(group(fabric), VMSS, "0", polling_interval=0.2).result(
        timeout=30
    )
    view = client.virtual_machine_scale_set_vms.get_instance_view(group(fabric), VMSS, "0")
    assert [s.code for s in view.statuses] == ["ProvisioningState/succeeded", "PowerState/deallocated"]
    client.virtual_machine_scale_set_vms.begin_start(group(fabric), VMSS, "0", polling_interval=0.2).result(timeout=30)
    # reimage all disks is the fabric's rebuild: C:, E: and every local storage are reset
    app = Path(fabric.instance("web_IN_0")["dir"]) / "drives" / "app"
    (app / "data.txt").write_text("written after deployment")
    client.virtual_machine_scale_set_vms.begin_reimage_all(group(fabric), VMSS, "0", polling_interval=0.2).result(
        timeout=30
    )
    assert not (app / "data.txt").exists()


@pytest.mark.slow  # a second fabric, through the command line
def test_cli_up_status_down_with_the_arm_face(tmp_path: Path) -> None:
    state = tmp_path / "state"

    def vmrole(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harness.cli", "fabric", *args, "--state", str(state)],
            capture_output=True,
            text=True,
            timeout=180,
        )

    started = vmrole("up", "--api", "vmss", "--template", str(TEMPLATE), "--image", "web-2026.vhd")
    try:
        assert started.returncode == 0, started.stderr
        assert "ARM endpoint    https://127.0.0.1:" in started.stdout
        assert "scale sets web" in started.stdout and "token endpoint" in started.stdout
        fab = Fabric(state)
        vms = list(compute(fab).virtual_machine_scale_set_vms.list(group(fab), VMSS))
        assert len(vms) == 3
    finally:
        stopped = vmrole("down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def _described_by(path: str) -> str:
    """The provider whose description has the operation: a scale set's NICs and public IPs are Network's."""
    lower = path.lower()
    network = "/providers/microsoft.network/" in lower or lower.endswith(("/networkinterfaces", "/publicipaddresses"))
    return "network" if network else "compute"


@pytest.mark.skipif(
    arm_openapi.checkout() is None,
    reason=f"set {arm_openapi.ENV} to a checkout of github.com/Azure/azure-rest-api-specs",
)
def test_served_responses_validate_against_the_openapi_operations_of_a_local_specs_checkout(fabric: Fabric) -> None:
    """Each served GET against the 200-response schema of the operation that describes it, in the newest stable
    description not newer than the api-version served (an older one where the checkout has no newer: then only the
    properties that description knows are checked, newer ones pass as additional properties)."""
    root = arm_openapi.checkout()
    assert root is not None
    bearer = token(fabric)
    problems, used, operations = [], set(), []
    for path, params, _model in _served(fabric):
        op = arm_openapi.operation(root, _described_by(path), path, "GET", params["api-version"])
        assert op is not None, f"no operation describes GET {path} at or before {params['api-version']} in {root}"
        operations.append(op)
        used.add(f"{op.file.relative_to(root)} @ {op.api_version}: {op.spec.get('operationId')}")
        body = raw(fabric, path, token=bearer, **params).json()
        for error in arm_openapi.validator(op).iter_errors(body):
            where = "/".join(map(str, error.absolute_path))
            problems.append(f"{path} vs {op.api_version} {op.spec.get('operationId')}: /{where}: {error.message}")
    print("validated against:", *sorted(used), sep="\n  ")
    files = arm_openapi.closure(operations)
    print(f"$ref closure: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes")
    assert not problems, "\n".join(problems[:40])
    # the operation's schema does reject a body the description does not allow
    path, params, _model = _served(fabric)[0]
    op = arm_openapi.operation(root, "compute", path, "GET", params["api-version"])
    assert op is not None
    body = raw(fabric, path, token=bearer, **params).json()
    body["sku"]["capacity"] = "3"
    body["properties"]["virtualMachineProfile"]["storageProfile"]["osDisk"]["createOption"] = "Sometimes"
    assert len(list(arm_openapi.validator(op).iter_errors(body))) == 2
