"""Azure's management error behaviour on a running fabric (the controller's lifecycle and certificates), through
the unmodified azure-servicemanagement-legacy client and raw ``ssl``: 403 ForbiddenError over a completed TLS
handshake for a certificate that is not the management certificate, 409 ConflictError naming the operation in
progress."""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import trustme
from azure.common import AzureConflictHttpError, AzureHttpError
from azure.servicemanagement import ServiceManagementService

from harness.fabric.client import Fabric, up
from harness.fabric.lifecycle import wait_until

pytestmark = pytest.mark.xdist_group("fabric")

AZURE_403 = (  # Azure's body as it came over the wire (Azure/migAz#47, #69)
    b'<Error xmlns="http://schemas.microsoft.com/windowsazure" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
    b"<Code>ForbiddenError</Code><Message>The server failed to authenticate the request. Verify that the "
    b"certificate is valid and is associated with this subscription.</Message></Error>"
)
CONFLICT = re.compile(
    r"<Code>ConflictError</Code><Message>Windows Azure is currently performing an operation with x-ms-requestid "
    r"([0-9a-f]{32}) on this deployment that requires exclusive access\.</Message>"
)


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fabric]:
    fab = up(tmp_path_factory.mktemp("fabric"), step_seconds=0.3)
    yield fab
    report = fab.down()
    assert report.ports_still_open == [] and report.killed == []


@pytest.fixture(scope="module")
def foreign_cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key and certificate of a CA the fabric never saw."""
    path = tmp_path_factory.mktemp("foreign") / "foreign.pem"
    trustme.CA().issue_cert("someone@elsewhere").private_key_and_cert_chain_pem.write_to_path(str(path))
    return path


def client(fabric: Fabric, cert: Path | None) -> ServiceManagementService:
    mgmt = fabric.data["management"]
    session = requests.Session()
    session.trust_env = False
    session.verify = mgmt["ca"]
    if cert is not None:
        session.cert = str(cert)
    return ServiceManagementService(
        fabric.data["subscription_id"], host=f"127.0.0.1:{mgmt['https_port']}", request_session=session
    )


def test_foreign_or_no_certificate_is_azures_403(fabric: Fabric, foreign_cert: Path) -> None:
    svc, dep = fabric.data["service_name"], fabric.data["deployment_name"]
    for cert in (foreign_cert, None):
        sms = client(fabric, cert)
        for call in (
            lambda s=sms: s.get_deployment_by_slot(svc, "production"),
            lambda s=sms: s.reboot_role_instance(svc, dep, "WebVM_IN_0"),
        ):
            with pytest.raises(AzureHttpError) as err:
                call()
            assert err.value.status_code == 403
            assert AZURE_403.decode() in str(err.value)
    # raw ssl: the handshake completes, the answer is the 403 body byte for byte
    mgmt = fabric.data["management"]
    ctx = ssl.create_default_context(cafile=mgmt["ca"])
    ctx.load_cert_chain(str(foreign_cert))
    with (
        socket.create_connection(("127.0.0.1", mgmt["https_port"]), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(
            f"GET /{fabric.data['subscription_id']}/services/hostedservices HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "x-ms-version: 2014-10-01\r\nConnection: close\r\n\r\n".encode()
        )
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 ") and body == AZURE_403
    assert re.search(rb"\r\nx-ms-request-id: [0-9a-f]{32}\r\n", head + b"\r\n")
    # the management certificate still works
    assert fabric.management_client().get_deployment_by_slot(svc, "production").name == dep


def test_second_operation_gets_azures_409_naming_the_first(fabric: Fabric) -> None:
    sms = fabric.management_client()
    svc, dep = fabric.data["service_name"], fabric.data["deployment_name"]
    first = sms.reboot_role_instance(svc, dep, "Indexer_IN_0").request_id
    started = time.monotonic()
    with pytest.raises(AzureConflictHttpError) as err:
        sms.reimage_role_instance(svc, dep, "Indexer_IN_1")
    assert time.monotonic() - started < 5  # answered while the reboot runs
    assert err.value.status_code == 409
    m = CONFLICT.search(str(err.value))
    assert m is not None, str(err.value)
    assert m.group(1) == first
    assert wait_until(lambda: sms.get_operation_status(first).status == "Succeeded", 60, 0.1)
