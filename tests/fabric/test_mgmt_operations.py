"""The classic management emulator's cloud-service operations on a real fabric, through the unmodified
azure-servicemanagement-legacy client: Create Deployment from a package blob in the fabric's Azurite and a base64
configuration, Update Deployment Status (suspend/start), Change Deployment Configuration, Swap Deployment, reboot
and reimage of the new deployment's instances, Delete Deployment; hosted services; Azure's 400/403/404/409.

Each long operation answers 202 with an x-ms-request-id that Get Operation Status follows InProgress → Succeeded;
the deployment's Status is polled through Get Deployment while it runs. The two full walks (create → change →
suspend/start → swap → reboot/reimage → delete; upgrade/walk/delete role instances) are marked slow: run them
with ``-m slow``.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme
from azure.common import AzureConflictHttpError, AzureHttpError, AzureMissingResourceHttpError
from azure.servicemanagement import ServiceManagementService

from harness.fabric.azurite import blob_client
from harness.fabric.client import Fabric, up
from harness.fabric.procs import pid_alive
from harness.testing.cspkg import build_cspkg

pytestmark = pytest.mark.xdist_group("fabric")

SERVICE = "OpsDemo"
USER_THUMBPRINT = "4CF78D149A067F24FC77BF1F0665077285027C98"  # the user's certificate: the fabric has no key for it
CSDEF = """<?xml version="1.0" encoding="utf-8"?>
<ServiceDefinition name="OpsDemo" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition">
  <VirtualMachineRole name="WebVM" vmsize="Small">
    <Certificates><Certificate name="Demo" storeLocation="LocalMachine" storeName="My" /></Certificates>
    <ConfigurationSettings><Setting name="StorageConnectionString" /><Setting name="Greeting" /></ConfigurationSettings>
    <Endpoints>
      <InputEndpoint name="HttpIn" protocol="http" port="8080" localPort="80" />
      <InstanceInputEndpoint name="WinRM" localPort="5986" protocol="tcp">
        <AllocatePublicPortFrom><FixedPortRange min="10100" max="10109" /></AllocatePublicPortFrom>
      </InstanceInputEndpoint>
    </Endpoints>
  </VirtualMachineRole>
</ServiceDefinition>
"""


def cscfg(count: int, greeting: str) -> str:
    return (
        '\ufeff<?xml version="1.0" encoding="utf-8"?>\r\n'
        '<ServiceConfiguration serviceName="OpsDemo" osFamily="2" osVersion="*" '
        'xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration">\r\n'
        f'  <Role name="WebVM">\r\n    <Instances count="{count}" />\r\n    <ConfigurationSettings>\r\n'
        '      <Setting name="StorageConnectionString" value="DefaultEndpointsProtocol=https;AccountName=ops;'
        'AccountKey=$(Key)" />\r\n'
        f'      <Setting name="Greeting" value="{greeting}" />\r\n'
        "    </ConfigurationSettings>\r\n"
        f'    <Certificates><Certificate name="Demo" thumbprint="{USER_THUMBPRINT}" thumbprintAlgorithm="sha1" />'
        "</Certificates>\r\n  </Role>\r\n</ServiceConfiguration>\r\n"
    )


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("model")
    (folder / "ServiceDefinition.csdef").write_text(CSDEF, "utf-8")
    (folder / "ServiceConfiguration.cscfg").write_bytes(cscfg(2, "first").encode("utf-8"))
    return folder / "ServiceDefinition.csdef", folder / "ServiceConfiguration.cscfg"


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory, model: tuple[Path, Path]) -> Iterator[Fabric]:
    fab = up(tmp_path_factory.mktemp("fabric"), csdef=model[0], cscfg=model[1], step_seconds=0.15)
    yield fab
    report = fab.down()
    assert report.ports_still_open == [] and report.killed == []


@pytest.fixture(scope="module")
def sms(fabric: Fabric) -> ServiceManagementService:
    return client(fabric, (fabric.data["management"]["client_cert"], fabric.data["management"]["client_key"]))


def client(fabric: Fabric, cert: Any) -> ServiceManagementService:
    mgmt = fabric.data["management"]
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
    session.verify = mgmt["ca"]
    session.cert = cert
    return ServiceManagementService(
        fabric.data["subscription_id"], host=f"127.0.0.1:{mgmt['https_port']}", request_session=session
    )


@pytest.fixture(scope="module")
def package_url(fabric: Fabric) -> str:
    """The service package, uploaded to the fabric's Azurite as a user would."""
    service = blob_client(fabric.data["azurite"]["connection_string"])
    container = service.create_container("packages")
    container.upload_blob("OpsDemo.cspkg", build_cspkg(CSDEF).data)
    container.upload_blob("broken.cspkg", b"PK\x03\x04 this is not a service package")
    return f"{container.url}/OpsDemo.cspkg"


def wait_operation(sms: ServiceManagementService, request_id: str, timeout: float = 60) -> Any:
    """Get Operation Status until it is no longer InProgress; returns the final operation."""
    end = time.monotonic() + timeout
    while True:
        op = sms.get_operation_status(request_id)
        if op.status != "InProgress":
            return op
        assert time.monotonic() < end, f"operation {request_id} still InProgress after {timeout}s"
        time.sleep(0.05)


def watch(sms: ServiceManagementService, request_id: str, poll: Callable[[], Any]) -> tuple[Any, list[Any]]:
    """Poll ``poll()`` (a status) until the operation ends; returns the operation and the statuses seen."""
    seen: list[Any] = []
    end = time.monotonic() + 60
    while True:
        status = poll()
        if not seen or seen[-1] != status:
            seen.append(status)
        op = sms.get_operation_status(request_id)
        if op.status != "InProgress":
            status = poll()
            if seen[-1] != status:
                seen.append(status)
            return op, seen
        assert time.monotonic() < end
        time.sleep(0.03)


def served_by(host: str, port: int, n: int) -> Counter:
    seen: Counter = Counter()
    for _ in range(n):
        with requests.Session() as s:
            s.trust_env = False
            try:
                r = s.get(f"http://{host}:{port}/", timeout=5)
            except requests.RequestException:
                seen["error"] += 1
                continue
            seen[r.headers.get("X-Served-By")] += 1
    return seen


def http_in(dep: Any) -> tuple[str, int]:
    (endpoint,) = dep.input_endpoint_list
    return endpoint.vip, int(endpoint.port)


def test_get_deployment_echoes_the_configuration_as_uploaded(
    fabric: Fabric, sms: ServiceManagementService, model: tuple[Path, Path]
) -> None:
    dep = sms.get_deployment_by_slot(SERVICE, "production")
    uploaded = model[1].read_bytes().decode("utf-8")
    # the client decodes Azure's base64 (UTF-8): the BOM, CRLFs and the storage setting as given; only the
    # thumbprint is the fabric's certificate (made in place of the user's, whose key it cannot have)
    stand_in = fabric.data["certificates"]["Demo"]
    assert stand_in != USER_THUMBPRINT
    assert dep.configuration == uploaded.replace(USER_THUMBPRINT, stand_in)
    effective = fabric.layout.cscfg.read_text("utf-8")
    assert "AccountName=ops;" not in effective and "127.0.0.1" in effective  # the rewritten copy stays inside
    assert dep.status == "Running"


@pytest.mark.slow  # about 20 s of status walks: the default run keeps the quick checks
def test_create_change_suspend_start_swap_reboot_reimage_delete(
    fabric: Fabric, sms: ServiceManagementService, package_url: str
) -> None:
    production = sms.get_deployment_by_slot(SERVICE, "production")
    prod_vip = http_in(production)
    staged_cfg = cscfg(3, "second")

    # Create Deployment in Staging, not started: 202 + request id, Deploying → Suspended, instances StoppedVM
    result = sms.create_deployment(SERVICE, "staging", "staged", package_url, "Staged build", b64(staged_cfg))
    assert result.request_id
    op, statuses = watch(sms, result.request_id, lambda: sms.get_deployment_by_slot(SERVICE, "staging").status)
    assert op.status == "Succeeded", (op.error.code, op.error.message) if op.error else op
    assert statuses[-1] == "Suspended" and statuses[0] in ("Deploying", "Suspended")
    staged = sms.get_deployment_by_name(SERVICE, "staged")
    assert staged.deployment_slot == "Staging" and staged.label == "Staged build"
    assert staged.configuration == staged_cfg.replace(USER_THUMBPRINT, fabric.data["certificates"]["Demo"])
    assert {i.instance_status for i in staged.role_instance_list} == {"StoppedVM"}
    assert {i.power_state for i in staged.role_instance_list} == {"Stopped"}
    assert len(staged.role_instance_list) == 3

    # start it: RunningTransitioning → Running, every instance ReadyRole and serving on the staging VIP
    op, statuses = watch(
        sms,
        sms.update_deployment_status(SERVICE, "staged", "Running").request_id,
        lambda: sms.get_deployment_by_name(SERVICE, "staged").status,
    )
    assert op.status == "Succeeded" and "RunningTransitioning" in statuses and statuses[-1] == "Running"
    staged = sms.get_deployment_by_name(SERVICE, "staged")
    assert {i.instance_status for i in staged.role_instance_list} == {"ReadyRole"}
    stage_vip = http_in(staged)
    assert stage_vip != prod_vip
    assert set(served_by(*stage_vip, 30)) == {"WebVM_IN_0", "WebVM_IN_1", "WebVM_IN_2"}

    # one operation at a time on a deployment: a reboot during a configuration change is Azure's 409
    new_cfg = cscfg(3, "third &amp; last")
    change = sms.change_deployment_configuration(SERVICE, "staged", b64(new_cfg))
    with pytest.raises(AzureConflictHttpError) as err:
        sms.reboot_role_instance(SERVICE, "staged", "WebVM_IN_0")
    assert change.request_id.replace("-", "") in str(err.value)
    op, statuses = watch(sms, change.request_id, lambda: sms.get_deployment_by_name(SERVICE, "staged").status)
    assert op.status == "Succeeded" and "RunningTransitioning" in statuses and statuses[-1] == "Running"
    now = sms.get_deployment_by_name(SERVICE, "staged").configuration
    assert now == new_cfg.replace(USER_THUMBPRINT, fabric.data["certificates"]["Demo"])

    # swap: the staged deployment takes the production slot and its VIP
    op = wait_operation(sms, sms.swap_deployment(SERVICE, production.name, "staged").request_id)
    assert op.status == "Succeeded"
    now_prod = sms.get_deployment_by_slot(SERVICE, "production")
    now_stage = sms.get_deployment_by_slot(SERVICE, "staging")
    assert (now_prod.name, now_stage.name) == ("staged", production.name)
    assert (http_in(now_prod), http_in(now_stage)) == (prod_vip, stage_vip)
    assert set(served_by(*prod_vip, 30)) == {"WebVM_IN_0", "WebVM_IN_1", "WebVM_IN_2"}  # 3 instances: staged's
    assert set(served_by(*stage_vip, 20)) == {"WebVM_IN_0", "WebVM_IN_1"}
    # the fabric's state follows the production deployment: WinRM on an instance only the new one has
    fabric.refresh()
    assert fabric.data["deployment_name"] == "staged"
    assert fabric.winrm_session("WebVM_IN_2", "ssl").run_cmd("hostname").status_code == 0

    # reboot and reimage an instance of the new deployment
    for call in (sms.reboot_role_instance, sms.reimage_role_instance):
        op = wait_operation(sms, call(SERVICE, "staged", "WebVM_IN_1").request_id)
        assert op.status == "Succeeded"
        inst = {i.instance_name: i for i in sms.get_deployment_by_name(SERVICE, "staged").role_instance_list}
        assert inst["WebVM_IN_1"].instance_status == "ReadyRole"

    # suspend and start: SuspendedTransitioning → Suspended (instances StoppedVM, nothing served), and back
    op, statuses = watch(
        sms,
        sms.update_deployment_status(SERVICE, "staged", "Suspended").request_id,
        lambda: sms.get_deployment_by_name(SERVICE, "staged").status,
    )
    assert op.status == "Succeeded" and "SuspendedTransitioning" in statuses and statuses[-1] == "Suspended"
    suspended = sms.get_deployment_by_name(SERVICE, "staged")
    assert {(i.instance_status, i.power_state) for i in suspended.role_instance_list} == {("StoppedVM", "Stopped")}
    assert set(served_by(*prod_vip, 5)) == {"error"}
    op = wait_operation(sms, sms.update_deployment_status(SERVICE, "staged", "Running").request_id)
    assert op.status == "Succeeded"
    assert set(served_by(*prod_vip, 30)) == {"WebVM_IN_0", "WebVM_IN_1", "WebVM_IN_2"}

    # delete both deployments: their processes end, Get Deployment answers 404
    fabric_pids = set(fabric.refresh()["pids"])
    for name in (production.name, "staged"):
        op = wait_operation(sms, sms.delete_deployment(SERVICE, name).request_id)
        assert op.status == "Succeeded"
        with pytest.raises(AzureMissingResourceHttpError):
            sms.get_deployment_by_name(SERVICE, name)
    with pytest.raises(AzureMissingResourceHttpError):
        sms.get_deployment_by_slot(SERVICE, "production")
    controller = fabric.data["controller"]["pid"]
    assert not [p for p in fabric_pids - {controller, fabric.data["azurite"]["pid"]} if pid_alive(p)]
    assert sms.get_hosted_service_properties(SERVICE, embed_detail=True).deployments.deployments == []

    # a new Production deployment, started at once: the fabric's state follows it
    result = sms.create_deployment(
        SERVICE, "production", "reborn", package_url, "again", b64(cscfg(1, "again")), start_deployment=True
    )
    assert wait_operation(sms, result.request_id).status == "Succeeded"
    assert sms.get_deployment_by_slot(SERVICE, "production").status == "Running"
    state = fabric.refresh()
    assert state["deployment_name"] == "reborn" and [i["id"] for i in state["instances"]] == ["WebVM_IN_0"]
    assert set(served_by(*http_in(sms.get_deployment_by_slot(SERVICE, "production")), 5)) == {"WebVM_IN_0"}
    assert wait_operation(sms, sms.delete_deployment(SERVICE, "reborn").request_id).status == "Succeeded"


def test_bad_create_deployment_requests_are_azures_400s(
    fabric: Fabric, sms: ServiceManagementService, package_url: str
) -> None:
    good = b64(cscfg(1, "x"))
    container = package_url.rsplit("/", 1)[0]
    cases = [
        (f"{container}/broken.cspkg", good, "BadRequest", "not a valid service package"),
        (f"{container}/missing.cspkg", good, "BadRequest", "does not exist"),
        ("https://example.invalid/pkg/OpsDemo.cspkg?sig=SeCrEt", good, "BadRequest", "not a blob of this fabric"),
        (package_url, "not base64!", "BadRequest", "not valid base64"),
        (package_url, b64("<ServiceConfiguration"), "BadRequest", "configuration"),
    ]
    for url, config, code, words in cases:
        with pytest.raises(AzureHttpError) as err:
            sms.create_deployment(SERVICE, "staging", "bad", url, "bad", config)
        assert err.value.status_code == 400, (url, config)
        assert f"<Code>{code}</Code>" in str(err.value) and words in str(err.value), str(err.value)
        assert "SeCrEt" not in str(err.value)  # a SAS signature is never echoed
    # a body that is not XML
    mgmt = fabric.data["management"]
    answer = requests.post(
        f"https://127.0.0.1:{mgmt['https_port']}/{fabric.data['subscription_id']}/services/hostedservices/"
        f"{SERVICE}/deploymentslots/staging",
        data=b"<CreateDeployment><Name>x</Name",
        headers={"x-ms-version": "2014-10-01", "Content-Type": "application/xml"},
        cert=(mgmt["client_cert"], mgmt["client_key"]),
        verify=mgmt["ca"],
        timeout=10,
    )
    assert answer.status_code == 400 and b"<Code>InvalidXmlRequest</Code>" in answer.content
    with pytest.raises(AzureMissingResourceHttpError):
        sms.get_deployment_by_slot(SERVICE, "staging")  # nothing was left behind


def test_hosted_services_create_check_update_delete(sms: ServiceManagementService) -> None:
    assert sms.check_hosted_service_name_availability(SERVICE).result is False
    assert sms.check_hosted_service_name_availability("opsdemo-two").result is True
    sms.create_hosted_service("opsdemo-two", "Second service", description="made by a test", location="West US")
    assert sms.check_hosted_service_name_availability("opsdemo-two").result is False
    with pytest.raises(AzureConflictHttpError):
        sms.create_hosted_service("opsdemo-two", "again", location="West US")
    sms.update_hosted_service("opsdemo-two", label="Renamed", description="changed")
    props = sms.get_hosted_service_properties("opsdemo-two").hosted_service_properties
    assert (props.label, props.description) == ("Renamed", "changed")
    assert "opsdemo-two" in [s.service_name for s in sms.list_hosted_services()]
    sms.delete_hosted_service("opsdemo-two")
    with pytest.raises(AzureMissingResourceHttpError):
        sms.get_hosted_service_properties("opsdemo-two")


def test_unknown_management_certificate_is_403_on_every_new_operation(
    fabric: Fabric, tmp_path: Path, package_url: str
) -> None:
    foreign = tmp_path / "foreign.pem"
    trustme.CA().issue_cert("someone@elsewhere").private_key_and_cert_chain_pem.write_to_path(str(foreign))
    sms = client(fabric, str(foreign))
    calls = [
        lambda: sms.create_deployment(SERVICE, "staging", "x", package_url, "x", b64(cscfg(1, "x"))),
        lambda: sms.update_deployment_status(SERVICE, "x", "Suspended"),
        lambda: sms.swap_deployment(SERVICE, "a", "b"),
        lambda: sms.delete_deployment(SERVICE, "x"),
        lambda: sms.create_hosted_service("evil", "evil", location="West US"),
    ]
    for call in calls:
        with pytest.raises(AzureHttpError) as err:
            call()
        assert err.value.status_code == 403 and "<Code>ForbiddenError</Code>" in str(err.value)


def test_concurrent_creates_for_one_slot_leave_one_deployment(
    fabric: Fabric, sms: ServiceManagementService, package_url: str
) -> None:
    results: list[Any] = []

    def create(name: str) -> None:
        try:
            results.append(sms.create_deployment(SERVICE, "staging", name, package_url, name, b64(cscfg(1, name))))
        except AzureHttpError as exc:
            results.append(exc)

    threads = [threading.Thread(target=create, args=(f"race{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, AzureHttpError)]
    assert len(ok) == 1 and len(refused) == 1 and refused[0].status_code == 409
    assert wait_operation(sms, ok[0].request_id).status == "Succeeded"
    name = sms.get_deployment_by_slot(SERVICE, "staging").name
    assert wait_operation(sms, sms.delete_deployment(SERVICE, name).request_id).status == "Succeeded"


def _pfx(password: bytes) -> tuple[bytes, bytes]:
    """A PKCS#12 (certificate and key) and the certificate's DER."""
    from cryptography.hazmat.primitives.serialization import (
        BestAvailableEncryption,
        Encoding,
        load_pem_private_key,
        pkcs12,
    )
    from cryptography.x509 import load_pem_x509_certificate

    issued = trustme.CA().issue_cert("svc.opsdemo.example")
    cert = load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    key = load_pem_private_key(issued.private_key_pem.bytes(), None)
    data = pkcs12.serialize_key_and_certificates(b"svc", key, cert, None, BestAvailableEncryption(password))  # type: ignore[arg-type]
    return data, cert.public_bytes(Encoding.DER)


def test_service_certificates_add_list_get_delete(fabric: Fabric, sms: ServiceManagementService) -> None:
    import hashlib

    listed = {c.thumbprint: c for c in sms.list_service_certificates(SERVICE)}
    assert fabric.data["certificates"]["Demo"] in listed  # the fabric's own, as if uploaded before deploying
    pfx, der = _pfx(b"s3cret")
    thumbprint = hashlib.sha1(der).hexdigest().upper()
    result = sms.add_service_certificate(SERVICE, base64.b64encode(pfx).decode(), "pfx", "s3cret")
    assert wait_operation(sms, result.request_id).status == "Succeeded"
    listed = {c.thumbprint: c for c in sms.list_service_certificates(SERVICE)}
    assert base64.b64decode(listed[thumbprint].data) == der and listed[thumbprint].thumbprint_algorithm == "sha1"
    assert base64.b64decode(sms.get_service_certificate(SERVICE, "sha1", thumbprint).data) == der
    with pytest.raises(AzureHttpError) as err:  # a wrong password: Azure's 400, nothing added
        sms.add_service_certificate(SERVICE, base64.b64encode(pfx).decode(), "pfx", "wrong")
    assert err.value.status_code == 400 and "<Code>BadRequest</Code>" in str(err.value)
    assert wait_operation(sms, sms.delete_service_certificate(SERVICE, "sha1", thumbprint).request_id).status == (
        "Succeeded"
    )
    with pytest.raises(AzureMissingResourceHttpError):
        sms.get_service_certificate(SERVICE, "sha1", thumbprint)


def test_management_certificates_decide_who_gets_in(
    fabric: Fabric, sms: ServiceManagementService, tmp_path: Path
) -> None:
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    issued = trustme.CA().issue_cert("ops@elsewhere")
    pem = tmp_path / "other.pem"
    issued.private_key_and_cert_chain_pem.write_to_path(str(pem))
    cert = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    der = cert.public_bytes(Encoding.DER)
    thumbprint = hashlib.sha1(der).hexdigest().upper()
    other = client(fabric, str(pem))
    with pytest.raises(AzureHttpError) as err:
        other.list_hosted_services()
    assert err.value.status_code == 403
    public = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    sms.add_management_certificate(base64.b64encode(public).decode(), thumbprint, base64.b64encode(der).decode())
    assert thumbprint in [c.subscription_certificate_thumbprint for c in sms.list_management_certificates()]
    assert SERVICE in [s.service_name for s in other.list_hosted_services()]  # its holder is let in now
    got = sms.get_management_certificate(thumbprint)
    assert base64.b64decode(got.subscription_certificate_data) == der
    sms.delete_management_certificate(thumbprint)
    with pytest.raises(AzureHttpError) as err:
        other.list_hosted_services()
    assert err.value.status_code == 403 and "<Code>ForbiddenError</Code>" in str(err.value)


def test_subscription_operations_list_the_changes_made(sms: ServiceManagementService) -> None:
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    sms.create_hosted_service("opsdemo-log", "log", location="West US")
    sms.delete_hosted_service("opsdemo-log")
    listed = sms.list_subscription_operations(start, end)
    names = [(o.operation_name, o.operation_status.status) for o in listed.subscription_operations]
    assert ("CreateHostedService", "Succeeded") in names and ("DeleteHostedService", "Succeeded") in names
    objects = {o.operation_object_id for o in listed.subscription_operations if o.operation_name.endswith("Service")}
    assert any(o.endswith("/services/hostedservices/opsdemo-log") for o in objects)
    assert all(o.operation_caller.subscription_certificate_thumbprint for o in listed.subscription_operations)
    past = sms.list_subscription_operations("2001-01-01T00:00:00Z", "2001-01-02T00:00:00Z")
    assert list(past.subscription_operations) == []


@pytest.mark.slow  # about 20 s of status walks: the default run keeps the quick checks
def test_upgrade_walk_upgrade_domains_and_delete_role_instances(
    fabric: Fabric, sms: ServiceManagementService, package_url: str
) -> None:
    def deployment() -> Any:
        return sms.get_deployment_by_name(SERVICE, "upgraded")

    result = sms.create_deployment(
        SERVICE, "staging", "upgraded", package_url, "v1", b64(cscfg(2, "v1")), start_deployment=True
    )
    assert wait_operation(sms, result.request_id).status == "Succeeded"
    assert deployment().status == "Running" and deployment().upgrade_status is None

    # Manual: nothing happens until each upgrade domain is walked, in order
    manual = sms.upgrade_deployment(SERVICE, "upgraded", "Manual", package_url, b64(cscfg(2, "v2")), "v2", False)
    assert wait_operation(sms, manual.request_id).status == "Succeeded"
    status = deployment().upgrade_status
    assert (status.upgrade_type, status.current_upgrade_domain_state, status.current_upgrade_domain) == (
        "Manual",
        "Before",
        "0",
    )
    assert deployment().label == "v2" and "v2" in deployment().configuration
    with pytest.raises(AzureHttpError) as err:
        sms.walk_upgrade_domain(SERVICE, "upgraded", 1)
    assert err.value.status_code == 400
    op, snapshots = watch(sms, sms.walk_upgrade_domain(SERVICE, "upgraded", 0).request_id, lambda: _state(deployment()))
    seen = _flat(snapshots)
    assert op.status == "Succeeded"
    walked = {status for dep_status, name, status in seen if name == "WebVM_IN_0" and dep_status != "Running"}
    assert len(walked & RECYCLING) >= 2, seen  # domain 0 recycled (polls may miss a short step), domain 1 not
    assert not any(name == "WebVM_IN_1" and status != "ReadyRole" for _, name, status in seen)
    assert deployment().upgrade_status.current_upgrade_domain == "1"
    assert wait_operation(sms, sms.walk_upgrade_domain(SERVICE, "upgraded", 1).request_id).status == "Succeeded"
    assert deployment().upgrade_status is None  # done

    # Auto: every domain in turn; a package with another topology is refused
    auto = sms.upgrade_deployment(SERVICE, "upgraded", "Auto", package_url, b64(cscfg(2, "v3")), "v3", False)
    op, snapshots = watch(sms, auto.request_id, lambda: _state(deployment()))
    assert op.status == "Succeeded" and deployment().configuration.count("v3") == 1
    recycled = {name for _, name, status in _flat(snapshots) if status in RECYCLING}
    assert recycled == {"WebVM_IN_0", "WebVM_IN_1"}
    other = blob_client(fabric.data["azurite"]["connection_string"]).get_blob_client("packages", "other.cspkg")
    other.upload_blob(build_cspkg(CSDEF.replace("HttpIn", "WebIn")).data)
    with pytest.raises(AzureHttpError) as err:
        sms.upgrade_deployment(SERVICE, "upgraded", "Auto", other.url, b64(cscfg(2, "v4")), "v4", False)
    assert err.value.status_code == 400 and "topology" in str(err.value)

    # Delete Role Instances: the instance stops and leaves the deployment and its load balancer
    op = wait_operation(sms, sms.delete_role_instances(SERVICE, "upgraded", ["WebVM_IN_1"]).request_id)
    assert op.status == "Succeeded"
    assert [i.instance_name for i in deployment().role_instance_list] == ["WebVM_IN_0"]
    assert set(served_by(*http_in(deployment()), 10)) == {"WebVM_IN_0"}
    with pytest.raises(AzureHttpError) as err:
        sms.delete_role_instances(SERVICE, "upgraded", ["WebVM_IN_0"])  # a role keeps one instance
    assert err.value.status_code == 400
    assert wait_operation(sms, sms.delete_deployment(SERVICE, "upgraded").request_id).status == "Succeeded"


RECYCLING = {"StoppingRole", "StoppedVM", "StartingVM", "BusyRole"}


def _state(dep: Any) -> Any:
    """A snapshot for :func:`watch`: (deployment status, instance, instance status) for every instance."""
    return tuple((dep.status, i.instance_name, i.instance_status) for i in dep.role_instance_list)


def _flat(snapshots: list[Any]) -> set[tuple[str, str, str]]:
    return {entry for snapshot in snapshots for entry in snapshot}


CSDEF_TLS = """<?xml version="1.0" encoding="utf-8"?>
<ServiceDefinition name="OpsDemo" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition">
  <VirtualMachineRole name="WebVM" vmsize="Small">
    <Certificates><Certificate name="Demo" storeLocation="LocalMachine" storeName="My" /></Certificates>
    <Endpoints>
      <InputEndpoint name="HttpsIn" protocol="https" port="8443" localPort="443" certificate="Demo" />
    </Endpoints>
  </VirtualMachineRole>
</ServiceDefinition>
"""


def test_a_deployment_serves_the_service_certificate_its_configuration_names(
    fabric: Fabric, sms: ServiceManagementService, package_url: str
) -> None:
    import hashlib
    import socket
    import ssl

    pfx, der = _pfx(b"pw")
    thumbprint = hashlib.sha1(der).hexdigest().upper()
    assert (
        wait_operation(
            sms, sms.add_service_certificate(SERVICE, base64.b64encode(pfx).decode(), "pfx", "pw").request_id
        ).status
        == "Succeeded"
    )
    blob = blob_client(fabric.data["azurite"]["connection_string"]).get_blob_client("packages", "tls.cspkg")
    blob.upload_blob(build_cspkg(CSDEF_TLS).data, overwrite=True)
    config = cscfg(1, "tls").replace(USER_THUMBPRINT, thumbprint)
    result = sms.create_deployment(SERVICE, "staging", "tls", blob.url, "tls", b64(config), start_deployment=True)
    assert wait_operation(sms, result.request_id).status == "Succeeded"
    dep = sms.get_deployment_by_name(SERVICE, "tls")
    assert dep.configuration == config  # the hosted service holds the certificate: nothing replaced
    vip, port = http_in(dep)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((vip, port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        served = tls.getpeercert(binary_form=True)
    assert served is not None and hashlib.sha1(served).hexdigest().upper() == thumbprint
    assert wait_operation(sms, sms.delete_deployment(SERVICE, "tls").request_id).status == "Succeeded"
    assert wait_operation(sms, sms.delete_service_certificate(SERVICE, "sha1", thumbprint).request_id).status == (
        "Succeeded"
    )
