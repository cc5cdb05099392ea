"""The whole fabric, driven with the real clients: ASM, pywinrm, testinfra, azure-storage-blob, requests."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest
import requests

from harness.fabric.client import Fabric, FabricError, down, up
from harness.fabric.lifecycle import wait_until
from harness.fabric.ports import is_listening

pytestmark = pytest.mark.xdist_group("fabric")

START_BOUND_S = 60.0  # a hang guard only: the start-time target (< 10 s) is measured in bench/ (live_suite), not here


def served_by(url: str, n: int, **kw) -> Counter:
    """Which instance served each of ``n`` requests, each on a new TCP connection (new source port).

    A connection the load balancer sent to a dead instance before its probe noticed fails, as on
    Azure (no retries): it counts as "error".
    """
    seen: Counter = Counter()
    for _ in range(n):
        with requests.Session() as s:
            s.trust_env = False
            try:
                r = s.get(url, timeout=5, **kw)
            except requests.RequestException:
                seen["error"] += 1
                continue
            seen[r.headers.get("X-Served-By")] += 1
    return seen


@pytest.fixture(scope="module")
def fabric(tmp_path_factory) -> Fabric:
    state = tmp_path_factory.mktemp("fabric")
    started = time.monotonic()
    fab = up(state, step_seconds=0.2)
    fab.start_seconds = time.monotonic() - started  # type: ignore[attr-defined]
    yield fab
    report = fab.down()
    assert report.ports_still_open == [] and report.killed == []


def test_up_finishes_and_describes_every_instance(fabric):
    assert fabric.start_seconds < START_BOUND_S
    ids = [i["id"] for i in fabric.instances]
    assert ids == ["WebVM_IN_0", "WebVM_IN_1", "WebVM_IN_2", "Indexer_IN_0", "Indexer_IN_1"]
    assert all(i["status"] == "ReadyRole" for i in fabric.refresh()["instances"])
    assert fabric.data["certificates"]["SSL"]  # generated, and written back into the effective cscfg
    assert fabric.data["certificates"]["SSL"] in fabric.layout.cscfg.read_text()


def test_load_balancer_rotates_over_all_ready_instances(fabric):
    seen = served_by(fabric.vip_url("HttpIn"), 40)
    assert set(seen) == {"WebVM_IN_0", "WebVM_IN_1", "WebVM_IN_2"}


def test_https_vip_serves_the_cscfg_certificate(fabric):
    import hashlib
    import socket
    import ssl

    ep = fabric.endpoint("HttpsIn")
    ctx = ssl.create_default_context(cafile=fabric.ca_file)
    ctx.check_hostname = False
    with socket.create_connection((fabric.vip, ep["public_port"])) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert hashlib.sha1(der).hexdigest().upper() == fabric.data["certificates"]["SSL"]


def test_busy_instance_leaves_rotation_within_the_probe_window_and_returns(fabric):
    url = fabric.vip_url("HttpIn")
    window = fabric.data["haproxy"]["probe"]["removal_window_s"]  # from the configured probe timings
    fault = fabric.inject("busy", "WebVM_IN_1", seconds=30)
    started = time.monotonic()
    try:
        # A sample must be large enough that "IN_1 absent" is not luck while it is still in rotation: with
        # three instances, 12 requests miss it 0.8 % of the time, and polling every 50 ms tries many samples.
        # 30 requests miss it with p = 5e-6. The sampling itself takes time: allow 1.5 s for it.
        assert wait_until(lambda: "WebVM_IN_1" not in served_by(url, 30), deadline_s=window + 1.5, interval=0.05)
        assert time.monotonic() - started < window + 1.5
        assert "WebVM_IN_1" not in served_by(url, 30)
        status = {i["id"]: i["status"] for i in fabric.refresh()["instances"]}
        assert status["WebVM_IN_1"] == "BusyRole"
    finally:
        fabric.clear_faults(fault["id"])
    assert wait_until(lambda: "WebVM_IN_1" in served_by(url, 15), deadline_s=8.0, interval=0.1)


def test_management_api_with_the_real_client(fabric):
    sms = fabric.management_client()
    dep = sms.get_deployment_by_slot(fabric.data["service_name"], "production")
    assert dep.name == fabric.data["deployment_name"]
    names = sorted(ri.instance_name for ri in dep.role_instance_list)
    assert names == sorted(i["id"] for i in fabric.instances)
    assert all(ri.instance_status == "ReadyRole" for ri in dep.role_instance_list)
    by_name = sms.get_deployment_by_name(fabric.data["service_name"], fabric.data["deployment_name"])
    assert by_name.private_id == fabric.data["deployment_id"]


def test_management_api_has_no_unauthenticated_listener(fabric):
    """Issue 9: the fabric's plain-HTTP management port took reboot/reimage from any local user. The fabric
    serves the API on HTTPS only, with the management certificate (as Azure does)."""
    mgmt = fabric.data["management"]
    assert mgmt["http_port"] is None and mgmt["require_client_cert"] is True
    with pytest.raises(FabricError):
        fabric.management_client(https=False)
    instance = fabric.instances[0]["id"]
    url = (
        f"https://127.0.0.1:{mgmt['https_port']}/{fabric.data['subscription_id']}/services/hostedservices/"
        f"{fabric.data['service_name']}/deploymentslots/production/roleinstances/{instance}?comp=reboot"
    )
    with requests.Session() as s:
        s.trust_env = False
        r = s.post(url, headers={"x-ms-version": "2014-10-01", "Authorization": "Bearer x"}, verify=fabric.ca_file)
    assert r.status_code == 403 and b"<Code>ForbiddenError</Code>" in r.content
    assert fabric.refresh()["instances"][0]["status"] == "ReadyRole"


def _reimage_and_wait(fabric: Fabric, kind: str, instance: str) -> list[str]:
    sms = fabric.management_client()
    svc, dep = fabric.data["service_name"], fabric.data["deployment_name"]
    call = {"reimage": sms.reimage_role_instance, "reboot": sms.reboot_role_instance}.get(kind)
    result = call(svc, dep, instance) if call else sms.rebuild_role_instance(svc, dep, instance)
    request_id = result.request_id
    assert request_id
    statuses: list[str] = []

    def done() -> bool:
        d = sms.get_deployment_by_name(svc, dep)
        status = next(ri.instance_status for ri in d.role_instance_list if ri.instance_name == instance)
        if not statuses or statuses[-1] != status:
            statuses.append(status)
        return sms.get_operation_status(request_id).status == "Succeeded" and status == "ReadyRole"

    assert wait_until(done, deadline_s=30, interval=0.05), statuses
    return statuses


def _write_markers(fabric: Fabric, instance: str) -> dict[str, str]:
    inst = fabric.instance(instance)
    root = fabric.layout.instance(instance)
    marker = uuid.uuid4().hex
    (root.os_drive / "marker.txt").write_text(marker)
    (root.app_drive / "marker.txt").write_text(marker)
    for name in ("AppData", "Scratch"):
        (root.local_storage(name) / "marker.txt").write_text(marker)
    assert inst
    return {"os": marker}


def _markers(fabric: Fabric, instance: str) -> dict[str, bool]:
    root = fabric.layout.instance(instance)
    return {
        "os": (root.os_drive / "marker.txt").exists(),
        "app": (root.app_drive / "marker.txt").exists(),
        "AppData": (root.local_storage("AppData") / "marker.txt").exists(),  # cleanOnRoleRecycle=false
        "Scratch": (root.local_storage("Scratch") / "marker.txt").exists(),  # cleanOnRoleRecycle=true
    }


def test_reimage_resets_os_and_app_drives_and_keeps_local_storage(fabric):
    _write_markers(fabric, "WebVM_IN_2")
    statuses = _reimage_and_wait(fabric, "reimage", "WebVM_IN_2")
    for expected in ("StoppingRole", "StoppedVM", "StartingVM", "BusyRole", "ReadyRole"):
        assert expected in statuses
    assert _markers(fabric, "WebVM_IN_2") == {"os": False, "app": False, "AppData": True, "Scratch": False}
    assert (fabric.layout.instance("WebVM_IN_2").os_drive / "vmrole-image.txt").exists()  # back to the image


def test_reboot_keeps_every_folder(fabric):
    _write_markers(fabric, "WebVM_IN_0")
    _reimage_and_wait(fabric, "reboot", "WebVM_IN_0")
    assert _markers(fabric, "WebVM_IN_0") == {"os": True, "app": True, "AppData": True, "Scratch": True}


def test_rebuild_wipes_local_storage_too(fabric):
    _write_markers(fabric, "WebVM_IN_1")
    _reimage_and_wait(fabric, "rebuild", "WebVM_IN_1")
    assert _markers(fabric, "WebVM_IN_1") == {"os": False, "app": False, "AppData": False, "Scratch": False}


def test_registry_is_os_drive_state_kept_by_reboot_and_reset_by_reimage(fabric):
    """The guest's HKLM lives in the OS drive: a value a test writes survives a reboot, a reimage resets the
    registry to the image's (the OS identity is still there)."""
    session = fabric.winrm_session("WebVM_IN_2", "ssl")
    key = "HKLM:\\SOFTWARE\\Contoso"
    query = 'reg query "HKLM\\SOFTWARE\\Contoso" /v Marker'

    def run(line: str):  # right after ReadyRole too: WinRM is up before the instance reports started
        return session.run_cmd(line)

    script = f"New-Item -Path '{key}' -Force; Set-ItemProperty -Path '{key}' -Name 'Marker' -Value 'before'"
    assert run(f'powershell -NoProfile -Command "{script}"').status_code == 0
    assert b"REG_SZ    before" in run(query).std_out
    _reimage_and_wait(fabric, "reboot", "WebVM_IN_2")
    assert b"REG_SZ    before" in run(query).std_out
    _reimage_and_wait(fabric, "reimage", "WebVM_IN_2")
    gone = run(query)
    assert gone.status_code == 1 and b"unable to find the specified registry key" in gone.std_err
    product = "(Get-ItemProperty -Path 'HKLM:\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion').ProductName"
    assert run(f'powershell -NoProfile -Command "{product}"').std_out == b"Windows Server 2008 R2 Datacenter\r\n"


def test_lose_local_storage_fault_loses_it_on_the_next_reimage(fabric):
    _write_markers(fabric, "WebVM_IN_0")
    fabric.inject("lose-local-storage", "WebVM_IN_0", seconds=60)
    _reimage_and_wait(fabric, "reimage", "WebVM_IN_0")
    assert _markers(fabric, "WebVM_IN_0")["AppData"] is False
    fabric.clear_faults()


def test_conflict_while_an_operation_runs(fabric):
    from azure.common import AzureConflictHttpError

    sms = fabric.management_client()
    svc, dep = fabric.data["service_name"], fabric.data["deployment_name"]
    first = sms.reboot_role_instance(svc, dep, "Indexer_IN_0")
    with pytest.raises(AzureConflictHttpError):
        sms.reboot_role_instance(svc, dep, "Indexer_IN_1")
    assert wait_until(lambda: sms.get_operation_status(first.request_id).status == "Succeeded", 30, 0.05)


@pytest.mark.parametrize("kind", ["mgmt-500", "mgmt-409"])
def test_management_faults_are_rolled_back(fabric, kind):
    from azure.common import AzureHttpError

    sms = fabric.management_client()
    svc, dep = fabric.data["service_name"], fabric.data["deployment_name"]
    # 500 hits every request; 409 hits operations only (reads keep working, as on Azure)
    call = (
        (lambda: sms.get_deployment_by_slot(svc, "production"))
        if kind == "mgmt-500"
        else (lambda: sms.reboot_role_instance(svc, dep, "Indexer_IN_1"))
    )
    fabric.inject(kind, seconds=3.0)  # rolled back by its own expiry (a loaded CI machine needs the margin)
    with pytest.raises(AzureHttpError) as exc:
        call()
    assert exc.value.status_code == int(kind[-3:])
    if kind == "mgmt-409":
        sms.get_deployment_by_slot(svc, "production")  # reads are not affected

    def healthy() -> bool:
        try:
            sms.get_deployment_by_slot(svc, "production")
            return True
        except AzureHttpError:
            return False

    assert wait_until(healthy, deadline_s=10, interval=0.1)
    if kind == "mgmt-409":  # after the rollback an operation goes through again
        assert wait_until(lambda: fabric.refresh()["faults"] == [], deadline_s=10, interval=0.1)
        request = sms.reboot_role_instance(svc, dep, "Indexer_IN_1").request_id
        assert wait_until(lambda: sms.get_operation_status(request).status == "Succeeded", 30, 0.1)


def test_crash_and_kill_backend_faults_take_an_instance_out_and_back(fabric):
    url = fabric.vip_url("HttpIn")
    for kind in ("crash", "kill-backend"):
        fault = fabric.inject(kind, "WebVM_IN_2", seconds=30)
        assert wait_until(lambda: "WebVM_IN_2" not in served_by(url, 12), deadline_s=6, interval=0.1), kind
        fabric.clear_faults(fault["id"])
        assert wait_until(lambda: "WebVM_IN_2" in served_by(url, 15), deadline_s=10, interval=0.1), kind


def test_winrm_with_pywinrm_ntlm_and_basic(fabric):
    ntlm = fabric.winrm_session("WebVM_IN_0", "ntlm", https=False)
    out = ntlm.run_cmd("hostname")
    assert out.status_code == 0 and out.std_out.decode().strip() == "WebVM_IN_0"
    basic = fabric.winrm_session("WebVM_IN_0", "ssl")
    r = basic.run_ps("Set-Content -Path 'C:\\probe.txt' -Value 'hello'; Get-Content 'C:\\probe.txt'")
    assert r.status_code == 0 and r.std_out.decode().strip() == "hello"
    assert (fabric.layout.instance("WebVM_IN_0").os_drive / "probe.txt").exists()  # acts on the instance's state


def test_winrm_with_testinfra(fabric):
    import urllib.parse

    import testinfra

    inst = fabric.instance("WebVM_IN_1")
    user = fabric.data["winrm"]["username"]
    password = urllib.parse.quote(fabric.winrm_password(), safe="")
    host = testinfra.get_host(
        f"winrm://{user}:{password}@127.0.0.1:{inst['winrm']['https_port']}"
        "?no_verify_ssl=true&read_timeout_sec=10&operation_timeout_sec=5"
    )
    assert host.run("dir C:\\").rc == 0
    assert host.check_output("hostname") == "WebVM_IN_1"


def test_blob_storage_is_azurite(fabric):
    service = fabric.blob_service()
    container = service.get_container_client(f"c{uuid.uuid4().hex[:8]}")
    container.create_container()
    container.upload_blob("state.txt", b"kept")
    assert container.download_blob("state.txt").readall() == b"kept"
    assert "AccountName=devstoreaccount1" in fabric.layout.cscfg.read_text()


def test_second_up_on_the_same_state_is_refused(fabric):
    with pytest.raises(FabricError, match="already running"):
        up(fabric.layout.root)


def test_down_leaves_nothing_behind(tmp_path):
    fab = up(tmp_path / "f", step_seconds=0.1)
    pids = fab.data["pids"]
    vip = fab.vip  # public endpoints listen on the deployment's VIP, the rest on 127.0.0.1
    ports = [(vip, e["public_port"]) for e in fab.data["input_endpoints"]]
    ports += [("127.0.0.1", i["agent_port"]) for i in fab.data["instances"]]
    report = down(tmp_path / "f")
    assert report.killed == [] and report.ports_still_open == []
    import os

    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not any(is_listening(p, host) for host, p in ports)


def test_management_timeout_fault_holds_requests_until_rolled_back(fabric):
    sms = fabric.management_client()
    sms.timeout = 1  # the client's own request timeout
    sms._httpclient.request_session.trust_env = False
    fabric.inject("mgmt-timeout", seconds=2.0)
    with pytest.raises(Exception) as exc:
        sms.get_deployment_by_slot(fabric.data["service_name"], "production")
    assert "timed out" in str(exc.value).lower() or "timeout" in type(exc.value).__name__.lower() or exc.value

    def healthy() -> bool:
        try:
            fabric.management_client().get_deployment_by_slot(fabric.data["service_name"], "production")
            return True
        except Exception:
            return False

    assert wait_until(healthy, deadline_s=6, interval=0.1)


def test_slow_winrm_fault_delays_and_rolls_back(fabric):
    session = fabric.winrm_session("Indexer_IN_1", "ntlm", https=False)
    started = time.monotonic()
    assert session.run_cmd("hostname").status_code == 0
    normal = time.monotonic() - started
    fault = fabric.inject("winrm-slow", "Indexer_IN_1", seconds=20, delay_ms=400)
    started = time.monotonic()
    assert session.run_cmd("hostname").status_code == 0
    slow = time.monotonic() - started
    assert slow >= normal + 4 * 0.4  # run_cmd is at least 5 round trips, each delayed
    fabric.clear_faults(fault["id"])
    assert not fabric.layout.instance("Indexer_IN_1").winrm_delay.exists()


def test_fixture_brings_a_fabric_up_and_down(vmrole_fabric):
    fab = vmrole_fabric(step_seconds=0.1)
    seen = served_by(fab.vip_url("HttpIn"), 30)
    assert {"WebVM_IN_0", "WebVM_IN_1", "WebVM_IN_2"} <= set(seen)


def test_ctrl_c_on_a_foreground_fabric_stops_everything(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    state = tmp_path / "fg"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "fabric", "up", "--foreground", "--state", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in proc.stdout:  # type: ignore[union-attr]  # ends at EOF if the process dies
            if "Ctrl-C stops the deployment" in line:
                break
        data = Fabric(state).data
        assert data["state"] == "ready"
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stdout.read() if proc.stdout else ""
    for pid in data["pids"]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not is_listening(data["input_endpoints"][0]["public_port"], data["vip"])


def test_cert_mismatch_fault_serves_another_certificate_on_one_instance(fabric):
    import hashlib
    import socket
    import ssl

    def thumbprint(port: int) -> str:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw) as tls:
            return hashlib.sha1(tls.getpeercert(binary_form=True)).hexdigest().upper()

    expected = fabric.data["certificates"]["SSL"]
    port = fabric.instance("WebVM_IN_0")["endpoints"]["HttpsIn"]
    assert thumbprint(port) == expected
    fault = fabric.inject("cert-mismatch", "WebVM_IN_0", seconds=30)
    assert thumbprint(fabric.instance("WebVM_IN_0")["endpoints"]["HttpsIn"]) != expected
    fabric.clear_faults(fault["id"])
    assert thumbprint(port) == expected


def test_a_tied_fabric_stops_when_its_starter_is_killed(tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys

    state = tmp_path / "tied"
    starter = subprocess.Popen(
        [sys.executable, "-c", f"from harness.fabric.client import up; up({str(state)!r}, step_seconds=0.1); "
         "import time; time.sleep(600)"],
    )  # fmt: skip
    try:
        assert wait_until(
            lambda: (
                (state / "fabric.json").exists() and json.loads((state / "fabric.json").read_text())["state"] == "ready"
            ),
            deadline_s=30,
            interval=0.1,
        )
        pids = json.loads((state / "fabric.json").read_text())["pids"]
        starter.send_signal(signal.SIGKILL)  # no teardown, no atexit: the controller must notice by itself
        starter.wait(10)

        def all_gone() -> bool:
            for pid in pids:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    continue
                return False
            return True

        assert wait_until(all_gone, deadline_s=20, interval=0.2)
    finally:
        if starter.poll() is None:
            starter.kill()
        down(state)


def test_ports_are_allocated_outside_the_ephemeral_range():
    """Outgoing connections take ephemeral ports: a server port from there could be stolen before it binds."""
    from harness.fabric.ports import _ephemeral_range, allocate

    low, _ = _ephemeral_range()
    ports = allocate(30, udp=True)
    assert len(set(ports)) == 30
    if low - 10_000 >= 2_000:  # a machine whose ephemeral range leaves room below it
        assert all(10_000 <= p < low for p in ports)
