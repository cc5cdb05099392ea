"""The management API emulator against the real, unmodified azure-servicemanagement-legacy client.

A fake Lifecycle walks an operation ReadyRole → StoppingRole → StoppedVM → StartingVM → BusyRole → ReadyRole on
a background thread and raises Conflict while one runs. The client talks mutual TLS (trustme PKI) and plain HTTP.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import trustme
from azure.common import AzureConflictHttpError, AzureHttpError, AzureMissingResourceHttpError
from azure.servicemanagement import ServiceManagementService

from harness.fabric.mgmt.faults import FaultState
from harness.fabric.mgmt.server import FORBIDDEN_MESSAGE, ManagementServer
from harness.fabric.views import (
    Conflict,
    DeploymentView,
    InputEndpointView,
    InstanceEndpointView,
    InstanceView,
    OperationView,
)
from harness.facts.live.platform import (
    BUSY,
    IN_PROGRESS,
    READY,
    STARTING_VM,
    STOPPED_VM,
    STOPPING,
    SUCCEEDED,
)
from harness.facts.live.platform import OPERATION_FAILED as FAILED

# Azure's 403 body, byte for byte, as it came over the wire (Azure/migAz#47, #69)
AZURE_403 = (
    b'<Error xmlns="http://schemas.microsoft.com/windowsazure" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
    b"<Code>ForbiddenError</Code><Message>The server failed to authenticate the request. Verify that the "
    b"certificate is valid and is associated with this subscription.</Message></Error>"
)
# Azure's 409 text, the request id of the operation holding the deployment in it
CONFLICT_TEXT = re.compile(
    r"Windows Azure is currently performing an operation with x-ms-requestid ([0-9a-f]{32}) on this deployment "
    r"that requires exclusive access\."
)
SUB = "00000000-0000-0000-0000-0000000000aa"
SERVICE = "ContosoVMRole"
DEPLOYMENT = "c0ffee00c0ffee00c0ffee00c0ffee00"
NS = {"a": "http://schemas.microsoft.com/windowsazure"}
CSCFG = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<ServiceConfiguration serviceName="ContosoVMRole" '
    'xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration">\n'
    '  <Role name="WebVM"><Instances count="2" /><ConfigurationSettings>'
    '<Setting name="Greeting" value="h&amp;llo &lt;ü&gt;" /></ConfigurationSettings></Role>\n'
    "</ServiceConfiguration>\n"
)
WALK = [STOPPING, STOPPED_VM, STARTING_VM, BUSY, READY]
POWER = {STOPPING: "Stopping", STOPPED_VM: "Stopped", STARTING_VM: "Starting"}

T = TypeVar("T")


def poll_until(fn: Callable[[], T | None], timeout: float, interval: float = 0.02) -> T:
    """``fn()`` until it returns something truthy, bounded by a deadline."""
    deadline = time.monotonic() + timeout
    waiter = threading.Event()
    while True:
        result = fn()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        waiter.wait(interval)


class FakeLifecycle:
    """Two WebVM instances; one operation at a time on the deployment, walked in ``step``-second steps."""

    def __init__(self, step: float = 0.05) -> None:
        self.step = step
        self.fail_next = False
        self.started: list[tuple[str, str, str]] = []  # (kind, instance, request id)
        self._lock = threading.Lock()
        self._statuses = {"WebVM_IN_0": READY, "WebVM_IN_1": READY}
        self._ops: dict[str, OperationView] = {}
        self._running: str | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def deployment(self) -> DeploymentView:
        with self._lock:
            statuses = dict(self._statuses)
        instances = tuple(
            InstanceView(
                role_name="WebVM",
                instance_name=name,
                status=status,
                upgrade_domain=n,
                fault_domain=n % 2,
                size="Small",
                ip_address=f"127.0.0.{10 + n}",
                power_state=POWER.get(status, "Started"),
                endpoints=(InstanceEndpointView("Direct", "tcp", 10000 + n, 5000, "127.0.0.1"),),
            )
            for n, (name, status) in enumerate(sorted(statuses.items()))
        )
        return DeploymentView(
            service_name=SERVICE,
            name=DEPLOYMENT,
            slot="Production",
            private_id="063a68e8c6204b5fb74f3ce60581fbc3",
            status="Running",
            label="Contoso <label> ü",
            url="http://contosovmrole.cloudapp.net/",
            configuration=CSCFG,
            sdk_version="1.7.30602.1703",
            vip="127.0.0.1",
            instances=instances,
            input_endpoints=(InputEndpointView("WebVM", "HttpIn", "http", 18080, 80, "127.0.0.1"),),
            roles=(("WebVM", "WA-GUEST-OS-2.40_201506-01"),),
        )

    def start_operation(self, kind: str, instance_id: str) -> str:
        with self._lock:
            if instance_id not in self._statuses:
                raise KeyError(instance_id)
            if self._running is not None:
                raise Conflict(self._running)
            rid = uuid.uuid4().hex
            self._running = rid
            self._ops[rid] = OperationView(rid, IN_PROGRESS, 0)
            self.started.append((kind, instance_id, rid))
            fail, self.fail_next = self.fail_next, False
        t = threading.Thread(target=self._walk, args=(rid, instance_id, fail), daemon=True)
        self._threads.append(t)
        t.start()
        return rid

    def _walk(self, rid: str, instance_id: str, fail: bool) -> None:
        for n, status in enumerate(WALK):
            if n and self._stop.wait(self.step):
                return
            with self._lock:
                self._statuses[instance_id] = status
        with self._lock:
            if fail:
                self._ops[rid] = OperationView(rid, FAILED, 500, "InternalError", "The reimage failed (fake).")
            else:
                self._ops[rid] = OperationView(rid, SUCCEEDED, 200)
            self._running = None

    def operation(self, request_id: str) -> OperationView | None:
        with self._lock:
            return self._ops.get(request_id)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)


# -- fixtures -----------------------------------------------------------------------------------------------


class Pki:
    def __init__(self, root: Path) -> None:
        ca = trustme.CA()
        self.ca = root / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca))
        server = ca.issue_cert("127.0.0.1")
        self.server_cert, self.server_key = root / "server.pem", root / "server.key"
        server.cert_chain_pems[0].write_to_path(str(self.server_cert))
        server.private_key_pem.write_to_path(str(self.server_key))
        mgmt = ca.issue_cert("mgmt-client@vmrole-harness")
        self.mgmt = root / "mgmt.pem"  # key + cert, as ServiceManagementService(cert_file=) takes it
        mgmt.private_key_and_cert_chain_pem.write_to_path(str(self.mgmt))
        self.mgmt_cert = root / "mgmt-cert.pem"  # the public part "uploaded to the subscription"
        mgmt.cert_chain_pems[0].write_to_path(str(self.mgmt_cert))
        intruder = ca.issue_cert("intruder@vmrole-harness")  # same CA, not the management certificate
        self.intruder = root / "intruder.pem"
        intruder.private_key_and_cert_chain_pem.write_to_path(str(self.intruder))
        foreign = trustme.CA().issue_cert("foreign@elsewhere")  # a CA the server does not trust
        self.foreign = root / "foreign.pem"
        foreign.private_key_and_cert_chain_pem.write_to_path(str(self.foreign))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("mgmt-pki"))


@pytest.fixture
def lifecycle() -> Iterator[FakeLifecycle]:
    lc = FakeLifecycle()
    yield lc
    lc.close()


@pytest.fixture
def faults() -> FaultState:
    return FaultState()


@pytest.fixture
def server(lifecycle: FakeLifecycle, faults: FaultState, pki: Pki) -> Iterator[ManagementServer]:
    srv = ManagementServer(
        lifecycle,
        subscription_id=SUB,
        http_port=0,
        https_port=0,
        server_cert=pki.server_cert,
        server_key=pki.server_key,
        ca_cert=pki.ca,
        require_client_cert=True,
        faults=faults,
        client_cert=pki.mgmt_cert,
    )
    srv.start()
    yield srv
    srv.shutdown()


@pytest.fixture
def sessions() -> Iterator[list[requests.Session]]:
    made: list[requests.Session] = []
    yield made
    for s in made:
        s.close()


@pytest.fixture
def https_client(
    server: ManagementServer, pki: Pki, sessions: list[requests.Session]
) -> Callable[..., ServiceManagementService]:
    def make(cert: Path | None = pki.mgmt, subscription: str = SUB) -> ServiceManagementService:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify= (requests lets the environment win)
        session.verify = str(pki.ca)
        if cert is not None:
            session.cert = str(cert)
        sessions.append(session)
        return ServiceManagementService(subscription, host=f"127.0.0.1:{server.https_port}", request_session=session)

    return make


@pytest.fixture
def sms(https_client: Callable[..., ServiceManagementService]) -> ServiceManagementService:
    return https_client()


@pytest.fixture
def sms_http(server: ManagementServer, sessions: list[requests.Session]) -> ServiceManagementService:
    session = requests.Session()
    session.trust_env = False
    sessions.append(session)
    session.headers["Authorization"] = f"Bearer {server.token}"  # the plain port's secret (issue 9)
    client = ServiceManagementService(SUB, host=f"127.0.0.1:{server.http_port}", request_session=session)
    client._httpclient.protocol = "http"
    return client


@pytest.fixture
def raw(server: ManagementServer, sessions: list[requests.Session]) -> requests.Session:
    """A plain ``requests`` session for the HTTP port (for what the client does not expose)."""
    s = requests.Session()
    s.trust_env = False
    s.headers["Authorization"] = f"Bearer {server.token}"
    sessions.append(s)
    return s


@pytest.fixture
def seen_request_ids(record_property: Callable[[str, Any], None]) -> Iterator[list[str]]:
    ids: list[str] = []
    yield ids
    record_property("request_ids", ",".join(ids))


def http_url(server: ManagementServer, path: str) -> str:
    return f"http://127.0.0.1:{server.http_port}/{SUB}{path}"


def error_code(body: bytes | str) -> str:
    root = ET.fromstring(body if isinstance(body, bytes) else body.encode())
    assert root.tag == "{http://schemas.microsoft.com/windowsazure}Error"
    code = root.find("a:Code", NS)
    assert code is not None
    return code.text or ""


def is_request_id(value: str | None) -> bool:
    return value is not None and len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def compress(statuses: list[str]) -> list[str]:
    out: list[str] = []
    for s in statuses:
        if not out or out[-1] != s:
            out.append(s)
    return out


# -- Get Deployment -----------------------------------------------------------------------------------------


def check_deployment(dep: Any) -> None:
    assert dep.name == DEPLOYMENT
    assert dep.deployment_slot == "Production"
    assert dep.private_id == "063a68e8c6204b5fb74f3ce60581fbc3"
    assert dep.status == "Running"
    assert dep.label == "Contoso <label> ü"
    assert dep.url == "http://contosovmrole.cloudapp.net/"
    assert dep.configuration == CSCFG
    assert dep.sdk_version == "1.7.30602.1703"
    assert dep.upgrade_domain_count == "2"
    assert dep.locked is False
    assert dep.created_time
    # client quirk: it looks for <Last-Modified-Time> (its 'last_modified' transform), Azure and we send
    # <LastModifiedTime> (checked in test_deployment_xml_shape)
    assert dep.last_modified_time == ""
    assert [(r.role_name, r.os_version) for r in dep.role_list] == [("WebVM", "WA-GUEST-OS-2.40_201506-01")]
    assert [(e.role_name, e.vip, e.port) for e in dep.input_endpoint_list] == [("WebVM", "127.0.0.1", "18080")]
    assert [v.address for v in dep.virtual_ips] == ["127.0.0.1"]
    instances = list(dep.role_instance_list)
    assert [i.instance_name for i in instances] == ["WebVM_IN_0", "WebVM_IN_1"]
    for n, inst in enumerate(instances):
        assert inst.role_name == "WebVM"
        assert inst.instance_status == READY
        assert inst.instance_upgrade_domain == n and inst.instance_fault_domain == n % 2
        assert inst.instance_size == "Small"
        assert inst.ip_address == f"127.0.0.{10 + n}"
        assert inst.power_state == "Started"
        assert inst.host_name == inst.instance_name
        endpoints = {e.name: (e.vip, e.public_port, e.local_port, e.protocol) for e in inst.instance_endpoints}
        assert endpoints == {
            "Direct": ("127.0.0.1", str(10000 + n), "5000", "tcp"),
            "HttpIn": ("127.0.0.1", "18080", "80", "tcp"),  # the role's LB endpoint, http → tcp at LB level
        }


def test_get_deployment_by_slot_and_by_name_over_mtls(sms: ServiceManagementService) -> None:
    check_deployment(sms.get_deployment_by_slot(SERVICE, "production"))
    check_deployment(sms.get_deployment_by_slot(SERVICE, "Production"))
    check_deployment(sms.get_deployment_by_name(SERVICE, DEPLOYMENT))


def test_get_deployment_over_http(sms_http: ServiceManagementService) -> None:
    check_deployment(sms_http.get_deployment_by_slot(SERVICE, "production"))
    check_deployment(sms_http.get_deployment_by_name(SERVICE, DEPLOYMENT))


def test_hosted_service_properties_and_list(sms: ServiceManagementService) -> None:
    props = sms.get_hosted_service_properties(SERVICE, embed_detail=True)
    assert props.service_name == SERVICE
    assert props.hosted_service_properties.label == SERVICE
    assert props.hosted_service_properties.status == "Created"
    assert len(props.deployments) == 1
    check_deployment(props.deployments[0])
    assert not sms.get_hosted_service_properties(SERVICE).deployments  # only with embed-detail=true
    assert [s.service_name for s in sms.list_hosted_services()] == [SERVICE]


def test_deployment_xml_shape(server: ManagementServer, raw: requests.Session) -> None:
    r = raw.get(
        http_url(server, f"/services/hostedservices/{SERVICE}/deploymentslots/production"),
        headers={"x-ms-version": "2014-10-01"},
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/xml")
    assert is_request_id(r.headers["x-ms-request-id"])
    root = ET.fromstring(r.content)
    assert root.tag == "{http://schemas.microsoft.com/windowsazure}Deployment"
    assert root.findtext("a:PrivateID", namespaces=NS) == "063a68e8c6204b5fb74f3ce60581fbc3"
    assert root.findtext("a:LastModifiedTime", namespaces=NS) == root.findtext("a:CreatedTime", namespaces=NS)
    inst = root.find("a:RoleInstanceList/a:RoleInstance", NS)
    assert inst is not None and inst.findtext("a:InstanceStatus", namespaces=NS) == READY


# -- operations ---------------------------------------------------------------------------------------------


def test_reimage_walks_statuses_until_operation_succeeds(
    sms: ServiceManagementService, lifecycle: FakeLifecycle, seen_request_ids: list[str]
) -> None:
    lifecycle.step = 0.25
    result = sms.reimage_role_instance(SERVICE, DEPLOYMENT, "WebVM_IN_0")
    rid = result.request_id
    seen_request_ids.append(rid)
    assert is_request_id(rid)
    assert lifecycle.started == [("reimage", "WebVM_IN_0", rid)]

    observed: list[str] = []
    op_statuses: list[str] = []
    locked_seen: list[bool] = []

    def finished() -> Any:
        op = sms.get_operation_status(rid)  # first: once it says Succeeded, the deployment read shows ReadyRole
        op_statuses.append(op.status)
        dep = sms.get_deployment_by_name(SERVICE, DEPLOYMENT)
        inst = {i.instance_name: i for i in dep.role_instance_list}
        observed.append(inst["WebVM_IN_0"].instance_status)
        assert inst["WebVM_IN_1"].instance_status == READY
        locked_seen.append(dep.locked)
        return op if op.status == SUCCEEDED else None

    op = poll_until(finished, timeout=15)
    assert op.http_status_code == "200"
    assert op.error is None
    assert op.id == ""  # the legacy client reads <Id>, Azure (and we) send <ID>: keep the x-ms-request-id yourself
    assert compress(op_statuses) == [IN_PROGRESS, SUCCEEDED]
    assert compress(observed)[-len(WALK) :] == WALK, observed
    assert True in locked_seen  # <Locked> while the operation runs
    assert sms.get_deployment_by_name(SERVICE, DEPLOYMENT).locked is False


def test_reboot_and_rebuild_over_http(
    sms_http: ServiceManagementService, lifecycle: FakeLifecycle, seen_request_ids: list[str]
) -> None:
    for kind, call in (("reboot", sms_http.reboot_role_instance), ("rebuild", sms_http.rebuild_role_instance)):
        rid = call(SERVICE, DEPLOYMENT, "WebVM_IN_1").request_id
        seen_request_ids.append(rid)
        assert is_request_id(rid)
        assert lifecycle.started[-1] == (kind, "WebVM_IN_1", rid)
        op = sms_http.wait_for_operation_status(
            rid, timeout=10, sleep_interval=0.05, progress_callback=None, success_callback=None
        )
        assert op.status == SUCCEEDED
    assert len(set(seen_request_ids)) == 2


def test_failed_operation_renders_error(
    sms: ServiceManagementService, lifecycle: FakeLifecycle, server: ManagementServer, raw: requests.Session
) -> None:
    lifecycle.fail_next = True
    rid = sms.reimage_role_instance(SERVICE, DEPLOYMENT, "WebVM_IN_0").request_id
    op = poll_until(lambda: (o := sms.get_operation_status(rid)).status != IN_PROGRESS and o, timeout=10)
    assert op.status == FAILED
    assert op.http_status_code == "500"
    assert (op.error.code, op.error.message) == ("InternalError", "The reimage failed (fake).")
    # <ID> echoes the dashed form; the dashed id is accepted too
    dashed = f"{rid[:8]}-{rid[8:12]}-{rid[12:16]}-{rid[16:20]}-{rid[20:]}"
    r = raw.get(http_url(server, f"/operations/{dashed.upper()}"), headers={"x-ms-version": "2014-10-01"})
    assert r.status_code == 200
    assert ET.fromstring(r.content).findtext("a:ID", namespaces=NS) == dashed


def test_post_on_the_slot_path(server: ManagementServer, raw: requests.Session, lifecycle: FakeLifecycle) -> None:
    base = f"/services/hostedservices/{SERVICE}/deploymentslots/production/roleinstances/WebVM_IN_1"
    headers = {"x-ms-version": "2014-10-01", "Content-Type": "application/xml"}
    r = raw.post(http_url(server, base + "?comp=reimage"), headers=headers)
    assert r.status_code == 202
    assert r.content == b""
    rid = r.headers["x-ms-request-id"]
    assert lifecycle.started == [("reimage", "WebVM_IN_1", rid)]
    poll_until(lambda: (op := lifecycle.operation(rid)) is not None and op.status == SUCCEEDED, timeout=10)
    r = raw.post(http_url(server, base + "?comp=rebuild&resources=allLocalDrives"), headers=headers)
    assert r.status_code == 202 and lifecycle.started[-1][:2] == ("rebuild", "WebVM_IN_1")
    r = raw.post(http_url(server, base + "?comp=rebuild"), headers=headers)  # resources= is required
    assert r.status_code == 400 and error_code(r.content) == "BadRequest"
    r = raw.post(http_url(server, base + "?comp=explode"), headers=headers)
    assert r.status_code == 400


def test_second_operation_during_the_first_is_a_conflict(
    sms: ServiceManagementService, lifecycle: FakeLifecycle, seen_request_ids: list[str]
) -> None:
    lifecycle.step = 0.2
    first = sms.reimage_role_instance(SERVICE, DEPLOYMENT, "WebVM_IN_0").request_id
    seen_request_ids.append(first)
    with pytest.raises(AzureConflictHttpError) as err:
        sms.reimage_role_instance(SERVICE, DEPLOYMENT, "WebVM_IN_1")
    assert err.value.status_code == 409
    assert "ConflictError" in str(err.value)
    assert f"x-ms-requestid {first}" in str(err.value)
    assert len(lifecycle.started) == 1
    poll_until(lambda: sms.get_operation_status(first).status == SUCCEEDED, timeout=10)
    second = sms.reimage_role_instance(SERVICE, DEPLOYMENT, "WebVM_IN_1").request_id
    seen_request_ids.append(second)
    assert second != first


# -- errors -------------------------------------------------------------------------------------------------


def test_not_found(
    sms: ServiceManagementService, https_client: Callable[..., ServiceManagementService], lifecycle: FakeLifecycle
) -> None:
    calls: list[Callable[[], Any]] = [
        lambda: sms.reimage_role_instance(SERVICE, DEPLOYMENT, "WebVM_IN_7"),
        lambda: sms.reboot_role_instance(SERVICE, "no-such-deployment", "WebVM_IN_0"),
        lambda: sms.get_deployment_by_slot(SERVICE, "staging"),
        lambda: sms.get_deployment_by_name(SERVICE, "no-such-deployment"),
        lambda: sms.get_deployment_by_slot("NoSuchService", "production"),
        lambda: sms.get_operation_status(uuid.uuid4().hex),
        lambda: https_client(subscription="11111111-1111-1111-1111-111111111111").get_deployment_by_slot(
            SERVICE, "production"
        ),
    ]
    for call in calls:
        with pytest.raises(AzureMissingResourceHttpError) as err:
            call()
        assert err.value.status_code == 404
        assert "<Code>ResourceNotFound</Code>" in str(err.value)
    assert lifecycle.started == []


def test_missing_version_header_is_400(server: ManagementServer, raw: requests.Session) -> None:
    for method, path in (
        ("GET", f"/services/hostedservices/{SERVICE}/deploymentslots/production"),
        ("POST", f"/services/hostedservices/{SERVICE}/deployments/{DEPLOYMENT}/roleinstances/WebVM_IN_0?comp=reboot"),
        ("GET", f"/operations/{uuid.uuid4().hex}"),
    ):
        r = raw.request(method, http_url(server, path))
        assert r.status_code == 400, (method, path)
        assert error_code(r.content) == "MissingOrIncorrectVersionHeader"
        assert is_request_id(r.headers.get("x-ms-request-id"))


def test_every_response_has_a_request_id(server: ManagementServer, raw: requests.Session) -> None:
    headers = {"x-ms-version": "2014-10-01"}
    for method, path in (
        ("GET", f"/services/hostedservices/{SERVICE}/deployments/{DEPLOYMENT}"),
        ("GET", "/nothing/here"),
        ("DELETE", f"/services/hostedservices/{SERVICE}/deployments/{DEPLOYMENT}"),
        ("GET", f"/services/hostedservices/{SERVICE}/deployments/{DEPLOYMENT}/roleinstances/WebVM_IN_0"),
    ):
        r = raw.request(method, http_url(server, path), headers=headers)
        assert is_request_id(r.headers.get("x-ms-request-id")), (method, path, r.status_code)
    r = raw.request("OPTIONS", http_url(server, "/"), headers=headers)  # was http.server's own 501
    assert r.status_code == 400 and error_code(r.content) == "InvalidHttpVerb"
    assert is_request_id(r.headers.get("x-ms-request-id"))
    r = raw.get(f"http://127.0.0.1:{server.http_port}/", headers=headers)
    assert r.status_code == 404 and error_code(r.content) == "ResourceNotFound"
    assert all(is_request_id(rec.request_id) for rec in server.request_log)


def test_client_certificate_must_be_the_management_certificate(
    https_client: Callable[..., ServiceManagementService], pki: Pki, lifecycle: FakeLifecycle
) -> None:
    # another certificate of the same CA; one of a CA the server does not know; no certificate at all
    for cert in (pki.intruder, pki.foreign, None):
        client = https_client(cert=cert)
        for call in (
            lambda c=client: c.get_deployment_by_slot(SERVICE, "production"),
            lambda c=client: c.reboot_role_instance(SERVICE, DEPLOYMENT, "WebVM_IN_0"),
            lambda c=client: c.get_operation_status(uuid.uuid4().hex),
        ):
            with pytest.raises(AzureHttpError) as err:
                call()
            assert err.value.status_code == 403, cert
            assert AZURE_403.decode() in str(err.value), cert
    assert lifecycle.started == []
    check_deployment(https_client().get_deployment_by_slot(SERVICE, "production"))  # the right one: 200


def test_http_port_answers_without_client_certificate_only_on_loopback(server: ManagementServer) -> None:
    assert server.urls == [f"http://127.0.0.1:{server.http_port}", f"https://127.0.0.1:{server.https_port}"]
    for s in server._servers:
        assert s.server_address[0] == "127.0.0.1"


def forbidden(r: requests.Response) -> bool:
    """Azure's 403 for a request it cannot authenticate, with its exact XML error body."""
    root = ET.fromstring(r.content)
    return (
        r.status_code == 403
        and error_code(r.content) == "ForbiddenError"
        and root.findtext("a:Message", namespaces=NS) == FORBIDDEN_MESSAGE
        and r.headers.get("Content-Type", "").startswith("application/xml")
        and is_request_id(r.headers.get("x-ms-request-id"))
    )


def test_http_port_refuses_unauthenticated_requests(server: ManagementServer, lifecycle: FakeLifecycle) -> None:
    """Issue 9: the plain-HTTP port took reboot/reimage from any local user without credentials."""
    instance = f"/services/hostedservices/{SERVICE}/deploymentslots/production/roleinstances/WebVM_IN_0"
    wrong = [None, "Bearer", "Bearer wrong", f"Bearer {server.token[:-1]}", "Basic dm1yYWRtaW46eA==", "Bearer \xfc\xe9"]
    with requests.Session() as s:
        s.trust_env = False
        for auth in wrong:
            headers = {"x-ms-version": "2014-10-01"}
            if auth is not None:
                headers["Authorization"] = auth
            for comp in ("reboot", "reimage"):
                assert forbidden(s.post(http_url(server, f"{instance}?comp={comp}"), headers=headers)), auth
            assert forbidden(s.get(http_url(server, "/services/hostedservices"), headers=headers)), auth
            assert forbidden(s.get(http_url(server, "/operations/x"), headers=headers)), auth
        # a raw header that is not even Latin-1 text (UTF-8 bytes) is a 403, not a dropped connection
        import socket

        with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as raw_sock:
            raw_sock.sendall(
                f"POST /{SUB}{instance}?comp=reimage HTTP/1.1\r\nHost: x\r\nx-ms-version: 2014-10-01\r\n".encode()
                + "Authorization: Bearer ünïcödé\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            reply = b""
            while chunk := raw_sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 403 "), reply[:100]
    assert lifecycle.started == []
    # the right secret works
    with requests.Session() as s:
        s.trust_env = False
        r = s.post(
            http_url(server, f"{instance}?comp=reboot"),
            headers={"x-ms-version": "2014-10-01", "Authorization": f"Bearer {server.token}"},
        )
        assert r.status_code == 202
    assert [kind for kind, _, _ in lifecycle.started] == ["reboot"]


def test_every_listener_is_authenticated(lifecycle: FakeLifecycle, pki: Pki) -> None:
    """A plain-HTTP listener always has a secret (generated when not given), never an open door."""
    srv = ManagementServer(lifecycle, subscription_id=SUB, http_port=0)
    assert len(srv.token) >= 32
    with srv, requests.Session() as s:
        s.trust_env = False
        url = f"http://127.0.0.1:{srv.http_port}/{SUB}/services/hostedservices"
        assert forbidden(s.get(url, headers={"x-ms-version": "2014-10-01"}))
        ok = s.get(url, headers={"x-ms-version": "2014-10-01", "Authorization": f"Bearer {srv.token}"})
        assert ok.status_code == 200
    with pytest.raises(ValueError):
        ManagementServer(lifecycle, subscription_id=SUB, http_port=0, token="")


def test_bad_content_length_is_400_not_500(server: ManagementServer) -> None:
    import socket

    for value in ("abc", "-5", "99999999999999999999"):
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as sock:
            sock.sendall(
                f"GET /{SUB}/services/hostedservices HTTP/1.1\r\nHost: x\r\nx-ms-version: 2014-10-01\r\n"
                f"Authorization: Bearer {server.token}\r\nContent-Length: {value}\r\nConnection: close\r\n\r\n".encode()
            )
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 400 "), (value, reply[:200])
        assert b"Traceback" not in reply


# -- faults -------------------------------------------------------------------------------------------------


def test_fault_500_then_rolled_back(sms: ServiceManagementService, faults: FaultState) -> None:
    faults.set("500", 0.6)
    started = time.monotonic()
    with pytest.raises(AzureHttpError) as err:
        sms.get_deployment_by_slot(SERVICE, "production")
    assert err.value.status_code == 500
    assert "<Code>InternalError</Code>" in str(err.value)
    with pytest.raises(AzureHttpError):
        sms.get_operation_status(uuid.uuid4().hex)  # every request, not only deployment reads

    def healthy() -> bool:
        try:
            sms.get_deployment_by_slot(SERVICE, "production")
        except AzureHttpError as e:
            assert e.status_code == 500
            return False
        return True

    poll_until(healthy, timeout=5)
    assert time.monotonic() - started >= 0.5
    assert faults.active() is None and faults.hits >= 2


def test_fault_409_on_posts_only_then_cleared(
    sms: ServiceManagementService, faults: FaultState, lifecycle: FakeLifecycle, seen_request_ids: list[str]
) -> None:
    faults.set("409", 30, scope="post")
    check_deployment(sms.get_deployment_by_slot(SERVICE, "production"))  # GETs are not affected
    with pytest.raises(AzureConflictHttpError) as err:
        sms.reboot_role_instance(SERVICE, DEPLOYMENT, "WebVM_IN_0")
    assert err.value.status_code == 409 and "ConflictError" in str(err.value)
    assert lifecycle.started == []
    faults.clear()
    rid = sms.reboot_role_instance(SERVICE, DEPLOYMENT, "WebVM_IN_0").request_id
    seen_request_ids.append(rid)
    assert lifecycle.started == [("reboot", "WebVM_IN_0", rid)]


def test_fault_timeout_then_rolled_back(sms: ServiceManagementService, faults: FaultState) -> None:
    sms.timeout = 0.4
    faults.set("timeout", 1.2)
    with pytest.raises(requests.exceptions.Timeout):
        sms.get_deployment_by_slot(SERVICE, "production")

    def healthy() -> bool:
        try:
            sms.get_deployment_by_slot(SERVICE, "production")
        except requests.exceptions.RequestException:
            return False
        return True

    poll_until(healthy, timeout=5)
    assert faults.active() is None


def test_fault_timeout_hold_is_bounded_and_never_answers(sms: ServiceManagementService, faults: FaultState) -> None:
    sms.timeout = 10
    faults.set("timeout", 5, hold_seconds=0.3)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ConnectionError):  # held 0.3 s, then dropped without an answer
        sms.get_deployment_by_slot(SERVICE, "production")
    held = time.monotonic() - started
    assert 0.25 <= held < 5
    faults.clear()
    check_deployment(sms.get_deployment_by_slot(SERVICE, "production"))


def test_shutdown_releases_held_requests(server: ManagementServer, faults: FaultState, raw: requests.Session) -> None:
    faults.set("timeout", 60)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            raw.get(http_url(server, "/operations/x"), headers={"x-ms-version": "2014-10-01"}, timeout=30)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=call)
    t.start()
    poll_until(lambda: faults.hits >= 1, timeout=5)
    started = time.monotonic()
    server.shutdown()
    t.join(timeout=10)
    assert not t.is_alive()
    assert time.monotonic() - started < 5
    assert errors and isinstance(errors[0], requests.exceptions.ConnectionError)


def test_fault_state_validation_and_expiry() -> None:
    f = FaultState()
    assert f.active() is None
    for bad in (("boom", 1, "all"), ("500", 0, "all"), ("500", 7200, "all"), ("500", 1, "gets")):
        with pytest.raises(ValueError):
            f.set(*bad)
    a = f.set("error", 0.2, "post")
    assert (a.kind, a.scope, a.status_code) == ("internal-error", "post", 500)
    assert f.for_request("GET") is None and f.for_request("post") is not None
    current = f.active()
    assert current is not None and current.as_dict()["kind"] == "internal-error"
    poll_until(lambda: f.active() is None, timeout=2)  # the deadline rolls it back on its own
    t = f.set("timeout", 1000, hold_seconds=10_000)
    assert t.hold_seconds == 120.0 and t.status_code is None
    f.clear()
    assert f.active() is None


# -- Azure's error behaviour (issue 11) ---------------------------------------------------------------------


def raw_https(
    server: ManagementServer, pki: Pki, cert: Path | None, request: bytes
) -> tuple[str, dict[str, str], bytes]:
    """One request over a TLS connection made with ``ssl`` directly; the handshake must complete."""
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert))
    assert server.https_port is not None
    with (
        socket.create_connection(("127.0.0.1", server.https_port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() is not None  # the handshake completed
        tls.sendall(request)
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


def get_request(path: str, version: str | None = "2014-10-01") -> bytes:
    extra = f"x-ms-version: {version}\r\n" if version is not None else ""
    return f"GET /{SUB}{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n".encode()


def test_wrong_or_no_certificate_is_azures_403_over_a_completed_handshake(
    server: ManagementServer, pki: Pki, lifecycle: FakeLifecycle
) -> None:
    """A certificate that is not the management certificate (of the same CA, of a foreign CA) or none at all:
    the TLS handshake completes and the answer is Azure's 403 body, byte for byte (before: a foreign
    certificate failed the handshake)."""
    path = f"/services/hostedservices/{SERVICE}/deploymentslots/production"
    post = (
        f"POST /{SUB}{path}/roleinstances/WebVM_IN_0?comp=reboot HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "x-ms-version: 2014-10-01\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode()
    for cert in (pki.foreign, pki.intruder, None):
        for request in (get_request(path), post, get_request(path, version=None)):  # auth comes before all
            status, headers, body = raw_https(server, pki, cert, request)
            assert status == "HTTP/1.1 403 Forbidden", (cert, status)
            assert body == AZURE_403
            assert headers["content-type"] == "application/xml; charset=utf-8"
            assert headers["content-length"] == str(len(AZURE_403))
            assert is_request_id(headers["x-ms-request-id"])
            assert headers["cache-control"] == "no-cache"
            assert headers["server"] == "Microsoft-HTTPAPI/2.0"
    assert lifecycle.started == []
    status, _, body = raw_https(server, pki, pki.mgmt, get_request(path))
    assert status == "HTTP/1.1 200 OK" and b"<Deployment" in body
    assert server.tls_accepts_any_certificate


def test_foreign_certificate_is_403_through_the_legacy_client(
    https_client: Callable[..., ServiceManagementService], pki: Pki
) -> None:
    with pytest.raises(AzureHttpError) as err:
        https_client(cert=pki.foreign).get_deployment_by_slot(SERVICE, "production")
    assert err.value.status_code == 403
    assert FORBIDDEN_MESSAGE in str(err.value) and "<Code>ForbiddenError</Code>" in str(err.value)


def test_without_a_pin_the_ca_still_decides_in_the_handshake(lifecycle: FakeLifecycle, pki: Pki) -> None:
    """No pinned certificate: any certificate ``ca_cert`` verifies is the management certificate, so the chain
    check stays in the handshake (a foreign certificate is refused there, never let through)."""
    srv = ManagementServer(
        lifecycle,
        subscription_id=SUB,
        http_port=None,
        https_port=0,
        server_cert=pki.server_cert,
        server_key=pki.server_key,
        ca_cert=pki.ca,
        require_client_cert=True,
    )
    assert not srv.tls_accepts_any_certificate
    with srv:
        path = f"/services/hostedservices/{SERVICE}/deploymentslots/production"
        assert raw_https(srv, pki, pki.intruder, get_request(path))[0] == "HTTP/1.1 200 OK"
        assert raw_https(srv, pki, None, get_request(path))[0] == "HTTP/1.1 403 Forbidden"
        with pytest.raises((ssl.SSLError, ConnectionError)):
            raw_https(srv, pki, pki.foreign, get_request(path))
    assert lifecycle.started == []


def conflict_holder(err: AzureHttpError) -> str:
    message = re.search(r"<Message>(.*?)</Message>", str(err))
    assert message is not None, str(err)
    m = CONFLICT_TEXT.fullmatch(message.group(1))
    assert m is not None, message.group(1)
    assert "<Code>ConflictError</Code>" in str(err)
    return m.group(1)


class LifecycleConflictText(FakeLifecycle):
    """Raises Conflict with the controller's text (harness/fabric/lifecycle.py), the request id inside it."""

    def start_operation(self, kind: str, instance_id: str) -> str:
        try:
            return super().start_operation(kind, instance_id)
        except Conflict as e:
            rid = e.args[0]
            raise Conflict(f"operation {rid} (reboot of WebVM_IN_0) is in progress on this deployment") from None


@pytest.mark.parametrize("conflict_text", ["request id", "controller text"])
def test_conflict_names_the_operation_in_progress(
    server: ManagementServer, raw: requests.Session, lifecycle: FakeLifecycle, conflict_text: str
) -> None:
    """Reboot, then a second operation while it runs: Azure's exact 409 text, whose request id is the reboot's
    x-ms-request-id (before: the controller's lifecycle gave its own text)."""
    if conflict_text == "controller text":
        lifecycle.__class__ = LifecycleConflictText
    lifecycle.step = 0.3
    client = ServiceManagementService(SUB, host=f"127.0.0.1:{server.http_port}", request_session=raw)
    client._httpclient.protocol = "http"
    base = f"/services/hostedservices/{SERVICE}/deployments/{DEPLOYMENT}/roleinstances"
    r = raw.post(http_url(server, f"{base}/WebVM_IN_0?comp=reboot"), headers={"x-ms-version": "2014-10-01"})
    assert r.status_code == 202
    first = r.headers["x-ms-request-id"]
    for call in (
        lambda: client.reimage_role_instance(SERVICE, DEPLOYMENT, "WebVM_IN_1"),
        lambda: client.reboot_role_instance(SERVICE, DEPLOYMENT, "WebVM_IN_0"),
    ):
        with pytest.raises(AzureConflictHttpError) as err:
            call()
        assert err.value.status_code == 409
        assert conflict_holder(err.value) == first
    assert [rid for _, _, rid in lifecycle.started] == [first]


def test_injected_409_has_azures_text(sms: ServiceManagementService, faults: FaultState) -> None:
    faults.set("409", 30, scope="post")
    with pytest.raises(AzureConflictHttpError) as err:
        sms.reboot_role_instance(SERVICE, DEPLOYMENT, "WebVM_IN_0")
    assert is_request_id(conflict_holder(err.value))


INVALID_VERB = (
    "<Code>InvalidHttpVerb</Code><Message>The HTTP verb specified was not recognized by the server or "
    "isn&apos;t valid for this resource.</Message>"
)


def error_message(body: bytes) -> str:
    return ET.fromstring(body).findtext("a:Message", namespaces=NS) or ""


def test_a_verb_the_resource_does_not_take_is_invalid_http_verb(
    server: ManagementServer, raw: requests.Session, lifecycle: FakeLifecycle
) -> None:
    """Azure's 400 InvalidHttpVerb (ee460801), not 405 MethodNotAllowed nor http.server's 501."""
    headers = {"x-ms-version": "2014-10-01"}
    deployment = f"/services/hostedservices/{SERVICE}/deployments/{DEPLOYMENT}"
    for method, path in (
        ("DELETE", deployment),
        ("POST", deployment),
        ("PUT", f"/services/hostedservices/{SERVICE}"),
        ("POST", "/services/hostedservices"),
        ("GET", f"{deployment}/roleinstances/WebVM_IN_0?comp=reboot"),
        ("DELETE", f"/operations/{uuid.uuid4().hex}"),
        ("OPTIONS", deployment),
        ("PATCH", deployment),
        ("BREW", deployment),
    ):
        r = raw.request(method, http_url(server, path), headers=headers)
        assert r.status_code == 400, (method, path, r.status_code)
        assert error_code(r.content) == "InvalidHttpVerb"
        assert error_message(r.content) == (
            "The HTTP verb specified was not recognized by the server or isn't valid for this resource."
        )
        assert is_request_id(r.headers.get("x-ms-request-id"))
    r = raw.head(http_url(server, deployment), headers=headers)
    assert r.status_code == 400 and r.content == b""  # HEAD: no body, the connection stays usable
    assert raw.get(http_url(server, deployment), headers=headers).status_code == 200
    assert lifecycle.started == []
    with requests.Session() as anonymous:  # authentication still comes first
        anonymous.trust_env = False
        r = anonymous.request("OPTIONS", http_url(server, deployment), headers=headers)
        assert forbidden(r)


def succeeded(lifecycle: FakeLifecycle, request_id: str) -> bool:
    op = lifecycle.operation(request_id)
    return op is not None and op.status == SUCCEEDED


def test_version_header_is_checked_against_the_operation(
    server: ManagementServer, raw: requests.Session, lifecycle: FakeLifecycle
) -> None:
    deployment = f"/services/hostedservices/{SERVICE}/deployments/{DEPLOYMENT}"
    instance = f"{deployment}/roleinstances/WebVM_IN_0"
    for version in (None, "", "2014-10-1", "latest", "2014/10/01"):
        headers = {} if version is None else {"x-ms-version": version}
        r = raw.get(http_url(server, deployment), headers=headers)
        assert r.status_code == 400, version
        assert error_code(r.content) == "MissingOrIncorrectVersionHeader"
        assert error_message(r.content) == "The versioning header is not specified or was specified incorrectly."

    def call(method: str, path: str, version: str) -> requests.Response:
        return raw.request(method, http_url(server, path), headers={"x-ms-version": version})

    too_old = [
        ("GET", deployment, "2009-09-19"),
        ("GET", f"/services/hostedservices/{SERVICE}", "2009-09-19"),
        ("GET", f"/operations/{uuid.uuid4().hex}", "2009-09-19"),
        ("POST", f"{instance}?comp=reboot", "2010-10-27"),
        ("POST", f"{instance}?comp=reimage", "2010-04-01"),
        ("POST", f"{instance}?comp=rebuild&resources=allLocalDrives", "2013-03-01"),
    ]
    for method, path, version in too_old:
        r = call(method, path, version)
        assert r.status_code == 400, (method, path, version, r.status_code)
        assert error_code(r.content) == "MissingOrIncorrectVersionHeader"
        assert error_message(r.content) == (
            f"The x-ms-version header value '{version}' is not one of the supported version headers."
        )
    assert lifecycle.started == []
    assert call("GET", deployment, "2009-10-01").status_code == 200
    for kind, version in (("reboot", "2010-10-28"), ("reimage", "2010-10-28"), ("rebuild", "2013-06-01")):
        extra = "&resources=allLocalDrives" if kind == "rebuild" else ""
        r = call("POST", f"{instance}?comp={kind}{extra}", version)
        assert r.status_code == 202, (kind, r.content)
        poll_until(partial(succeeded, lifecycle, r.headers["x-ms-request-id"]), timeout=10)
    # through the legacy client, with its version set too old for rebuild
    client = ServiceManagementService(SUB, host=f"127.0.0.1:{server.http_port}", request_session=raw)
    client._httpclient.protocol = "http"
    client.x_ms_version = "2012-03-01"
    with pytest.raises(AzureHttpError) as err:
        client.rebuild_role_instance(SERVICE, DEPLOYMENT, "WebVM_IN_0")
    assert err.value.status_code == 400 and "'2012-03-01' is not one of the supported version" in str(err.value)
    assert client.reboot_role_instance(SERVICE, DEPLOYMENT, "WebVM_IN_0").request_id
