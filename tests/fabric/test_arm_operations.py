"""The fabric's ARM face beyond reads and one-VM actions, through the unmodified azure-mgmt-compute client (raw
HTTP where the client hides the detail): scaling a scale set by ``sku.capacity`` (PATCH and PUT, real instance
processes added and removed, the load balancer's pool following), scale-set-wide actions with ``instanceIds``,
deleting VMs, the VM list's paging, ``$filter``/``$select``/``$expand``, and ARM's answers to what the fabric
refuses. One fabric for the module, 3 VMs, two VMs per page (``VMR_FABRIC_ARM_PAGE_SIZE=2``)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError

from harness.fabric.arm import query
from harness.fabric.arm.errors import ArmError
from harness.fabric.arm.scale import changed_properties, requested_capacity
from harness.fabric.client import Fabric, up
from tests.fabric.arm_helpers import TEMPLATE, arm, compute, credential, network

pytestmark = pytest.mark.xdist_group("fabric")

VMSS = "web"
POLL = 0.2


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fabric]:
    mp = pytest.MonkeyPatch()
    mp.setenv(query.PAGE_SIZE_ENV, "2")
    try:
        fab = up(tmp_path_factory.mktemp("fabric"), api="vmss", template=TEMPLATE, image="web-2026.vhd")
    finally:
        mp.undo()
    yield fab
    report = fab.down()
    assert report.ports_still_open == [] and report.killed == []


@pytest.fixture(scope="module")
def client(fabric: Fabric) -> Any:
    return compute(fabric)


def rg(fabric: Fabric) -> str:
    return str(arm(fabric)["resource_group"])


def raw(fabric: Fabric, tail: str, method: str = "GET", json: Any = None, **params: str) -> requests.Response:
    a = arm(fabric)
    path = (
        f"/subscriptions/{a['subscription_id']}/resourceGroups/{a['resource_group']}/providers/"
        f"Microsoft.Compute/virtualMachineScaleSets/{VMSS}{tail}"
    )
    bearer = credential(fabric).get_token("https://management.azure.com/.default").token
    with requests.Session() as session:
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
        return session.request(
            method,
            a["endpoint"] + path,
            params={"api-version": "2026-04-01", **params},
            json=json,
            headers={"Authorization": f"Bearer {bearer}"},
            verify=a["ca"],
            timeout=15,
        )


def ids(client: Any, fabric: Fabric) -> list[str]:
    return [vm.instance_id for vm in client.virtual_machine_scale_set_vms.list(rg(fabric), VMSS)]


def pids(fabric: Fabric) -> dict[str, int]:
    fabric.refresh()
    return {i["id"]: i["pid"] for i in fabric.instances}


def conforms(body: Any, model: str, *, page: bool = False) -> list[str]:
    """What in ``body`` the published model (azure-mgmt-compute's, ``tests/fabric/arm_sdk_schema.py``) does not
    allow: an empty list when it conforms."""
    import jsonschema
    from azure.mgmt.compute import models as cm

    from tests.fabric.arm_sdk_schema import list_schema, schema

    shape = (list_schema if page else schema)(getattr(cm, model))
    return [f"{list(e.absolute_path)}: {e.message}" for e in jsonschema.Draft7Validator(shape).iter_errors(body)]


def served_by(fabric: Fabric, n: int = 30) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        with requests.Session() as s:
            s.trust_env = False
            try:
                seen[s.get(fabric.vip_url("HttpIn"), timeout=5).headers.get("X-Served-By", "?")] += 1
            except requests.RequestException:
                seen["error"] += 1
    return seen


# ---- units: the query options and the update's property comparison ----------------------------------------
@pytest.mark.parametrize(
    ("filter_", "select", "expand", "expected"),
    [
        (None, None, None, query.VmListQuery()),
        (
            "startswith(instanceView/statuses/code, 'PowerState') eq true",
            None,
            None,
            query.VmListQuery(power_state_only=True, instance_view=True, statuses_only=True),
        ),
        ("properties/latestModelApplied eq false", None, None, query.VmListQuery(latest_model=False)),
        ("Properties/LatestModelApplied  eq  TRUE", None, None, query.VmListQuery(latest_model=True)),
        (None, "instanceView/statuses", None, query.VmListQuery(instance_view=True, statuses_only=True)),
        (None, "instanceView", "instanceView", query.VmListQuery(instance_view=True)),
        (None, None, "instanceView", query.VmListQuery(instance_view=True)),
    ],
)
def test_vm_list_query_options_parse(filter_: Any, select: Any, expand: Any, expected: Any) -> None:
    assert query.vm_list_query(filter_, select, expand, None) == expected


@pytest.mark.parametrize(
    ("filter_", "select", "expand", "token", "target"),
    [
        ("name eq 'web_0'", None, None, None, "$filter"),
        ("startswith(instanceView/statuses/code, 'PowerState')", None, None, None, "$filter"),
        ("properties/latestModelApplied eq maybe", None, None, None, "$filter"),
        (None, "properties", None, None, "$select"),
        (None, None, "userData", None, "$expand"),
        (None, None, None, "not-a-token", "$skiptoken"),
    ],
)
def test_vm_list_query_refuses_what_the_reference_does_not_allow(
    filter_: Any, select: Any, expand: Any, token: Any, target: str
) -> None:
    with pytest.raises(ArmError) as refused:
        query.vm_list_query(filter_, select, expand, token)
    assert (refused.value.status, refused.value.code, refused.value.target) == (400, "InvalidParameter", target)
    assert refused.value.body()["error"]["target"] == target


def test_skiptoken_round_trips_and_page_size_is_checked() -> None:
    assert query.parse_skiptoken(query.skiptoken(42)) == 42
    assert query.page_size(None) == query.DEFAULT_PAGE_SIZE and query.page_size("2") == 2
    for bad in ("0", "-1", "two"):
        with pytest.raises(ValueError, match=query.PAGE_SIZE_ENV):
            query.page_size(bad)


def test_update_comparison_names_the_changed_property() -> None:
    current = {
        "id": "/x",
        "location": "local",
        "sku": {"name": "Standard_A1", "tier": "Standard", "capacity": 3},
        "properties": {
            "provisioningState": "Succeeded",
            "overprovision": False,
            "upgradePolicy": {"mode": "Manual"},
            "virtualMachineProfile": {"osProfile": {"adminUsername": "vmradmin", "secrets": []}},
        },
    }
    same = {"location": "Local", "sku": {"name": "standard_a1", "capacity": 4}, "properties": {"overprovision": None}}
    assert changed_properties(current, same) == []
    assert changed_properties(current, {"sku": {"name": "Standard_A2"}}) == ["sku.name"]
    assert changed_properties(current, {"tags": {"a": "b"}}) == ["tags"]
    assert changed_properties(current, {"properties": {"overprovision": True}}) == ["overprovision"]
    deep = {"properties": {"virtualMachineProfile": {"osProfile": {"adminUsername": "root"}}}}
    assert changed_properties(current, deep) == ["virtualMachineProfile.osProfile.adminUsername"]
    assert changed_properties(current, {"properties": {"virtualMachineProfile": {"osProfile": {"secrets": [1]}}}}) == [
        "virtualMachineProfile.osProfile.secrets"
    ]
    assert requested_capacity({"sku": {"capacity": 4}}, 3) == 4 and requested_capacity({}, 3) == 3
    for bad in (-1, "4", True, 2.5):
        with pytest.raises(ArmError) as refused:
            requested_capacity({"sku": {"capacity": bad}}, 3)
        assert refused.value.target == "sku.capacity"


# ---- through the client ---------------------------------------------------------------------------------
def test_vm_list_is_paged_and_the_client_follows_next_link(fabric: Fabric, client: Any) -> None:
    first = raw(fabric, "/virtualMachines", **{"$expand": "instanceView"})
    assert first.status_code == 200
    page = first.json()
    assert [vm["instanceId"] for vm in page["value"]] == ["0", "1"]
    assert "$skiptoken=" in page["nextLink"] and "instanceView" in page["nextLink"]
    assert all("instanceView" in vm["properties"] for vm in page["value"])
    assert conforms(page, "VirtualMachineScaleSetVM", page=True) == []
    for options in (
        {"$filter": "startswith(instanceView/statuses/code, 'PowerState') eq true"},
        {"$select": "instanceView/statuses"},
    ):
        assert conforms(raw(fabric, "/virtualMachines", **options).json(), "VirtualMachineScaleSetVM", page=True) == []
    refused = raw(fabric, "/virtualMachines", **{"$select": "nothing"})
    assert refused.status_code == 400 and refused.json()["error"]["target"] == "$select"
    assert conforms(refused.json(), "CloudError") == []
    vms = list(client.virtual_machine_scale_set_vms.list(rg(fabric), VMSS, expand="instanceView"))
    assert [vm.instance_id for vm in vms] == ["0", "1", "2"]
    assert all(vm.instance_view.statuses[-1].code == "PowerState/running" for vm in vms)


def test_vm_list_filter_and_select(fabric: Fabric, client: Any) -> None:
    vms = client.virtual_machine_scale_set_vms
    power = list(vms.list(rg(fabric), VMSS, filter="startswith(instanceView/statuses/code, 'PowerState') eq true"))
    assert [[s.code for s in vm.instance_view.statuses] for vm in power] == [["PowerState/running"]] * 3
    assert power[0].instance_view.computer_name is None  # the statuses only
    selected = list(vms.list(rg(fabric), VMSS, select="instanceView/statuses"))
    assert [len(vm.instance_view.statuses) for vm in selected] == [2, 2, 2]
    assert [vm.instance_view for vm in vms.list(rg(fabric), VMSS)] == [None] * 3
    assert list(vms.list(rg(fabric), VMSS, filter="properties/latestModelApplied eq false")) == []
    assert len(list(vms.list(rg(fabric), VMSS, filter="properties/latestModelApplied eq true"))) == 3
    with pytest.raises(HttpResponseError) as refused:
        list(vms.list(rg(fabric), VMSS, filter="name eq 'web_0'"))
    assert refused.value.status_code == 400 and refused.value.error.code == "InvalidParameter"
    assert "$filter" in refused.value.error.message


def test_updates_the_fabric_cannot_honour_are_refused_naming_the_property(fabric: Fabric, client: Any) -> None:
    sets = client.virtual_machine_scale_sets
    for body, named in (
        ({"sku": {"name": "Standard_A4"}}, "sku.name"),
        ({"tags": {"owner": "me"}}, "tags"),
        ({"properties": {"overprovision": True}}, "overprovision"),
    ):
        with pytest.raises(HttpResponseError) as refused:
            sets.begin_update(rg(fabric), VMSS, body)
        assert refused.value.status_code == 409, named
        assert refused.value.error.code == "PropertyChangeNotAllowed"
        assert f"'{named}'" in refused.value.error.message
    model = sets.get(rg(fabric), VMSS)
    model.virtual_machine_profile.os_profile.admin_username = "someoneelse"
    with pytest.raises(HttpResponseError) as refused:
        sets.begin_create_or_update(rg(fabric), VMSS, model)
    assert "virtualMachineProfile.osProfile.adminUsername" in refused.value.error.message
    # a new scale set, capacity 0 or more VMs than the fabric runs: the fabric says it cannot
    with pytest.raises(HttpResponseError) as refused:
        sets.begin_create_or_update(rg(fabric), "other", sets.get(rg(fabric), VMSS))
    assert refused.value.status_code == 409 and refused.value.error.code == "OperationNotAllowed"
    for capacity in (0, 500):
        with pytest.raises(HttpResponseError) as refused:
            sets.begin_update(rg(fabric), VMSS, {"sku": {"capacity": capacity}})
        assert refused.value.error.code == "OperationNotAllowed" and "sku.capacity" in refused.value.error.message
    assert sets.get(rg(fabric), VMSS).sku.capacity == 3 and ids(client, fabric) == ["0", "1", "2"]


def test_scale_set_wide_restart_of_the_named_instances(fabric: Fabric, client: Any) -> None:
    before = pids(fabric)
    poller = client.virtual_machine_scale_sets.begin_restart(
        rg(fabric), VMSS, vm_instance_i_ds={"instanceIds": ["0", "2"]}, polling_interval=POLL
    )
    # the set's operation holds the deployment: a scale meanwhile is a 409
    with pytest.raises(ResourceExistsError):
        client.virtual_machine_scale_sets.begin_update(rg(fabric), VMSS, {"sku": {"capacity": 4}})
    poller.result(timeout=60)
    assert poller.status() == "Succeeded"
    after = pids(fabric)
    assert after["web_IN_0"] != before["web_IN_0"] and after["web_IN_2"] != before["web_IN_2"]
    assert after["web_IN_1"] == before["web_IN_1"], "an instance not named must not restart"
    # ids the set does not have: Compute's 400 naming the first, nothing started
    with pytest.raises(HttpResponseError) as refused:
        client.virtual_machine_scale_sets.begin_restart(rg(fabric), VMSS, vm_instance_i_ds={"instanceIds": ["1", "7"]})
    assert refused.value.status_code == 400 and refused.value.error.code == "InvalidParameter"
    assert (
        refused.value.error.message
        == "The provided instanceId 7 is not an active Virtual Machine Scale Set VM instanceId."
    )
    assert pids(fabric)["web_IN_1"] == before["web_IN_1"]
    # a delete needs its instanceIds
    missing = raw(fabric, "/delete", method="POST", json={})
    assert missing.status_code == 400 and missing.json()["error"]["target"] == "instanceIds"
    assert conforms(missing.json(), "CloudError") == []
    assert raw(fabric, "/delete", method="POST", json={"instanceIds": ["9"]}).json()["error"]["code"] == (
        "InvalidParameter"
    )


def test_scale_out_and_in_by_one_through_patch_and_put(fabric: Fabric, client: Any) -> None:
    sets = client.virtual_machine_scale_sets
    poller = sets.begin_update(rg(fabric), VMSS, {"sku": {"capacity": 4}}, polling_interval=POLL)
    during = sets.get(rg(fabric), VMSS)
    assert (during.sku.capacity, during.provisioning_state) == (4, "Updating")
    scaled = poller.result(timeout=60)
    assert poller.status() == "Succeeded"
    assert (scaled.sku.capacity, scaled.provisioning_state) == (4, "Succeeded")
    assert ids(client, fabric) == ["0", "1", "2", "3"]
    view = client.virtual_machine_scale_set_vms.get_instance_view(rg(fabric), VMSS, "3")
    assert [s.code for s in view.statuses] == ["ProvisioningState/succeeded", "PowerState/running"]
    assert view.computer_name == "web000003"
    assert pids(fabric)["web_IN_3"], "the new VM is a running instance process"
    # the load balancer's backend pool follows, and the VIP really sends requests to the new VM
    a = arm(fabric)
    lb = network(fabric).load_balancers.get(a["resource_group"], a["load_balancer"])
    assert len(lb.backend_address_pools[0].backend_ip_configurations) == 4
    assert served_by(fabric)["web000003"] > 0
    # PUT of the model read back, one VM fewer: the highest id goes
    model = sets.get(rg(fabric), VMSS)
    model.sku.capacity = 3
    poller = sets.begin_create_or_update(rg(fabric), VMSS, model, polling_interval=POLL)
    assert poller.result(timeout=60).sku.capacity == 3 and poller.status() == "Succeeded"
    assert ids(client, fabric) == ["0", "1", "2"]
    assert "web_IN_3" not in pids(fabric)
    lb = network(fabric).load_balancers.get(a["resource_group"], a["load_balancer"])
    assert len(lb.backend_address_pools[0].backend_ip_configurations) == 3
    assert "web000003" not in served_by(fabric, 15)


@pytest.mark.slow  # two deletes and a scale-out
def test_deleted_vms_leave_and_ids_are_never_reused(fabric: Fabric, client: Any) -> None:
    vms = client.virtual_machine_scale_set_vms
    sets = client.virtual_machine_scale_sets
    seen = set(ids(client, fabric))
    if len(seen) < 3:
        pytest.skip("needs three VMs")
    first, second, *_ = sorted(seen, key=int)
    sets.begin_delete_instances(rg(fabric), VMSS, {"instanceIds": [first]}, polling_interval=POLL).result(timeout=60)
    assert first not in ids(client, fabric)
    poller = vms.begin_delete(rg(fabric), VMSS, second, polling_interval=POLL)
    poller.result(timeout=60)
    assert poller.status() == "Succeeded" and second not in ids(client, fabric)
    # the last VM stays: the fabric keeps one per set
    left = ids(client, fabric)
    with pytest.raises(HttpResponseError) as refused:
        sets.begin_delete_instances(rg(fabric), VMSS, {"instanceIds": left})
    assert refused.value.status_code == 409 and refused.value.error.code == "OperationNotAllowed"
    # a new VM gets an id above every one the set ever had (this module scaled to 4 VMs before: ids 0-3)
    sets.begin_update(rg(fabric), VMSS, {"sku": {"capacity": len(left) + 1}}, polling_interval=POLL).result(timeout=60)
    now = ids(client, fabric)
    (new,) = set(now) - set(left)
    assert int(new) > max(int(i) for i in seen | {"3"})
    # a DELETE of a VM that is not there (any more) is ARM's 204
    assert raw(fabric, f"/virtualMachines/{first}", method="DELETE").status_code == 204


@pytest.mark.slow  # two scale operations
def test_vm_list_during_a_scale_shows_the_new_vm_creating(fabric: Fabric, client: Any) -> None:
    """The status resource walks InProgress → Succeeded and the VM list shows the new VM updating meanwhile."""
    count = len(ids(client, fabric))
    answer = raw(fabric, "", method="PATCH", json={"sku": {"capacity": count + 1}})
    assert answer.status_code == 200 and "Location" not in answer.headers
    assert answer.json()["properties"]["provisioningState"] == "Updating"
    assert answer.json()["sku"]["capacity"] == count + 1
    assert conforms(answer.json(), "VirtualMachineScaleSet") == []
    status_url = answer.headers["Azure-AsyncOperation"]
    bearer = credential(fabric).get_token("https://management.azure.com/.default").token
    statuses, states = [], set()
    deadline = time.monotonic() + 60
    with requests.Session() as session:
        session.trust_env = False
        while time.monotonic() < deadline:
            statuses.append(
                session.get(
                    status_url, headers={"Authorization": f"Bearer {bearer}"}, verify=arm(fabric)["ca"], timeout=10
                ).json()["status"]
            )
            if statuses[-1] != "InProgress":
                break
            states |= {vm.provisioning_state for vm in client.virtual_machine_scale_set_vms.list(rg(fabric), VMSS)}
            time.sleep(POLL)
    assert statuses[0] == "InProgress" and statuses[-1] == "Succeeded"
    assert "Updating" in states
    client.virtual_machine_scale_sets.begin_update(
        rg(fabric), VMSS, {"sku": {"capacity": count}}, polling_interval=POLL
    ).result(timeout=60)
    assert len(ids(client, fabric)) == count


# ---- units: a scale-out's new VM, and one that cannot start ----------------------------------------------
def _spec() -> Any:
    from harness.fabric.spec import DeploymentSpec, EndpointSpec, InstanceSpec, RoleSpec

    endpoints = (
        EndpointSpec("web", "HttpIn", "InputEndpoint", "http", 80, 80, public_port=18080),
        EndpointSpec("web", "WinRM", "InstanceInputEndpoint", "tcp", None, 5986, serves="winrm-https"),
    )
    role = RoleSpec("web", "VirtualMachineRole", "Small", 1, endpoints, (), ())
    inst = InstanceSpec(
        id="web_IN_0",
        role="web",
        index=0,
        upgrade_domain=0,
        fault_domain=0,
        endpoint_ports={"HttpIn": 20001, "WinRM": 20003},
        instance_public_ports={"WinRM": 50000},
        instance_declared_ports={"WinRM": None},
        agent_port=20002,
        winrm_https_port=20003,
        winrm_http_port=20004,
        internal_ip="127.0.1.4",
    )
    return DeploymentSpec("svc", "svc-local", "d" * 32, (role,), (inst,), "", "", vip="127.0.0.1")


def test_a_new_vm_gets_its_own_ports_domains_and_address() -> None:
    from harness.fabric.arm.scale import new_instance

    spec = _spec()
    inst = new_instance(spec, "web", 7, "127.0.1.9")
    assert (inst.id, inst.index, inst.upgrade_domain, inst.fault_domain) == ("web_IN_7", 7, 2, 1)
    assert inst.internal_ip == "127.0.1.9"
    assert inst.endpoint_ports["WinRM"] == inst.winrm_https_port  # the WinRM endpoint is the VM's own listener
    old = spec.instances[0]
    mine = {inst.agent_port, inst.winrm_https_port, inst.winrm_http_port, inst.endpoint_ports["HttpIn"]}
    assert len(mine) == 4 and not mine & {old.agent_port, old.winrm_https_port, old.winrm_http_port, 20001}
    assert inst.instance_public_ports["WinRM"] not in (50000, spec.input_endpoints[0].public_port)


def test_a_scale_out_whose_vm_cannot_start_fails_and_leaves_the_set_as_it_was() -> None:
    import threading
    from types import SimpleNamespace

    from harness.fabric.arm.scale import Scaler

    class Instances:
        def __init__(self, spec: Any) -> None:
            self.spec, self.lock, self.phase, self.configs, self.power = spec, threading.RLock(), {}, {}, {}
            self.step_seconds, self.prepared, self.stopped = 0.0, [], []

        def prepare(self, inst: Any) -> None:
            self.prepared.append(inst.id)

        def start(self, instance_id: str) -> None:
            raise RuntimeError(f"instance {instance_id} did not open its ports")

        def stop(self, instance_id: str) -> None:
            self.stopped.append(instance_id)

    spec = _spec()
    ins = Instances(spec)
    dep = SimpleNamespace(spec=spec, instances=ins, haproxy=None, layout=None)
    changed: list[Any] = []
    backend = SimpleNamespace(
        instances=ins,
        hosted=SimpleNamespace(lock=threading.RLock()),
        instance_config=lambda inst, spec, layout: {"id": inst.id},
        production_changed=lambda d: changed.append(d.spec),
    )
    scaler = Scaler(backend)
    slots = scaler._reserve(spec, "web", 1)
    assert slots == [(1, "127.0.1.5")]
    with pytest.raises(RuntimeError, match="did not open its ports"):
        scaler._add(dep, "web", slots)
    assert ins.prepared == ["web_IN_1"] and ins.stopped == ["web_IN_1"]
    assert dep.spec is spec and ins.spec is spec and ins.configs == {} and ins.phase == {}
    assert [len(s.instances) for s in changed] == [2, 1]  # shown while it started, withdrawn after
    # its id stays used: the next VM gets the one after it
    assert scaler._reserve(spec, "web", 1) == [(2, "127.0.1.6")]


@pytest.mark.slow  # a deallocate and a start
def test_scale_set_wide_deallocate_then_start_of_every_vm(fabric: Fabric, client: Any) -> None:
    sets, vms = client.virtual_machine_scale_sets, client.virtual_machine_scale_set_vms
    first, *rest = ids(client, fabric)
    sets.begin_deallocate(rg(fabric), VMSS, vm_instance_i_ds={"instanceIds": [first]}, polling_interval=POLL).result(
        timeout=60
    )
    power = {
        vm.instance_id: vm.instance_view.statuses[-1].code for vm in vms.list(rg(fabric), VMSS, expand="instanceView")
    }
    assert power[first] == "PowerState/deallocated" and {power[i] for i in rest} == {"PowerState/running"}
    running = {i: p for i, p in pids(fabric).items() if p}
    # no body: every VM; the running ones stay as they are
    poller = sets.begin_start(rg(fabric), VMSS, polling_interval=POLL)
    poller.result(timeout=60)
    assert poller.status() == "Succeeded"
    power = {
        vm.instance_id: vm.instance_view.statuses[-1].code for vm in vms.list(rg(fabric), VMSS, expand="instanceView")
    }
    assert set(power.values()) == {"PowerState/running"}
    now = pids(fabric)
    assert all(now[i] == p for i, p in running.items()) and all(now.values())
