"""What makes the fabric start fast, and must stay right (issue 12): EC keys where nothing constrains them,
RSA keys kept for the next start of a state folder, Azurite launched early (and moved off a port taken
meanwhile), and the instance's WinRM server loading NTLM and the guest on first use."""

from __future__ import annotations

import os
import secrets
import socket
import ssl
import stat
import subprocess
import sys
import threading

import pytest
import winrm
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from harness.fabric import azurite as azurite_mod
from harness.fabric import certs
from harness.fabric.azurite import Azurite
from harness.fabric.ports import allocate
from harness.fabric.winrm.server import start_winrm
from tests.fabric.test_azurite import _have_azurite


def _load(pem) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.read_bytes())


def _handshake(server_pem, server_key, ca_pem) -> str:
    """A real TLS handshake on loopback: the client verifies the chain to ``ca_pem`` and the name 127.0.0.1."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(server_pem), str(server_key))
    client_ctx = ssl.create_default_context(cafile=str(ca_pem))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
        except BaseException as exc:  # reported by the client side's assertion
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.recv(2) == b"ok"
            return tls.version() or ""
    finally:
        thread.join(5)
        listener.close()
        assert not errors, errors


def test_an_ec_ca_issues_ec_and_rsa_certificates_that_verify(tmp_path):
    ca = certs.make_ca(tmp_path, key_type="ec")
    mgmt = certs.issue_server_cert(ca, ["localhost", "127.0.0.1"], tmp_path / "mgmt-server", key_type="ec")
    svc = certs.service_certificate(ca, "SSL", tmp_path / "svc-SSL", names=["127.0.0.1"])
    assert isinstance(_load(ca.pem).public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(_load(mgmt.pem).public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(_load(svc.pem).public_key(), rsa.RSAPublicKey)  # a cscfg's certificate stays RSA 2048
    assert _load(svc.pem).public_key().key_size == certs.KEY_SIZE
    usage = _load(mgmt.pem).extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment  # an EC key signs, it cannot encipher
    assert _load(svc.pem).extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    for pair in (ca, mgmt, svc):
        assert stat.S_IMODE(os.stat(pair.key).st_mode) == 0o600
    assert _handshake(mgmt.pem, mgmt.key, ca.pem).startswith("TLS")
    assert _handshake(svc.pem, svc.key, ca.pem).startswith("TLS")
    with pytest.raises(ValueError, match="key_type"):
        certs.make_ca(tmp_path / "other", key_type="dsa")


def test_reuse_key_keeps_a_matching_key_and_renews_the_certificate(tmp_path):
    ca = certs.make_ca(tmp_path, key_type="ec")
    first = certs.issue_server_cert(ca, ["127.0.0.1"], tmp_path / "winrm", reuse_key=True)
    a, thumb = _load(first.pem), certs.thumbprint(first.pem)
    second = certs.issue_server_cert(ca, ["127.0.0.1", "127.64.0.9"], tmp_path / "winrm", reuse_key=True)
    b = _load(second.pem)
    assert a.public_key().public_numbers() == b.public_key().public_numbers()
    assert a.serial_number != b.serial_number and certs.thumbprint(second.pem) != thumb  # a new certificate
    assert "127.64.0.9" in str(b.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    fresh = certs.issue_server_cert(ca, ["127.0.0.1"], tmp_path / "winrm")  # no reuse: a new key
    assert _load(fresh.pem).public_key().public_numbers() != b.public_key().public_numbers()

    # a key of another type (or garbage) at the path is replaced, never used; the new one is private again
    certs.make_ca(tmp_path, name="svc-SSL", key_type="ec")  # an EC key where the RSA one should be
    (tmp_path / "svc-SSL.key").write_bytes((tmp_path / "svc-SSL-key.pem").read_bytes())
    os.chmod(tmp_path / "svc-SSL.key", 0o644)
    svc = certs.service_certificate(ca, "SSL", tmp_path / "svc-SSL", reuse_key=True)
    assert isinstance(_load(svc.pem).public_key(), rsa.RSAPublicKey)
    assert stat.S_IMODE(os.stat(svc.key).st_mode) == 0o600
    client_key = tmp_path / "secrets" / "mgmt-client.key"
    client_key.parent.mkdir()
    client_key.write_text("not a key")
    client = certs.issue_client_cert(ca, "mgmt", tmp_path / "mgmt-client", key_out=client_key, reuse_key=True)
    assert client.key == client_key and isinstance(_load(client.pem).public_key(), rsa.RSAPublicKey)


def test_an_instance_starts_winrm_without_loading_pyspnego_or_the_guest(tmp_path):
    (tmp_path / "pw").write_text("Secret-1234\n")
    (tmp_path / "c").mkdir()
    (http_port,) = allocate(1)
    code = f"""
import sys
import harness.fabric.instance, harness.fabric.agent, harness.fabric.app
from harness.fabric.winrm.server import start_winrm
servers = start_winrm({{"http_port": {http_port}, "password_file": {str(tmp_path / "pw")!r}}},
                      {{"id": "WebVM_IN_0", "drives": {{"C": {str(tmp_path / "c")!r}}}}})
lazy = ("spnego", "harness.fabric.winrm.guest", "harness.fabric.winrm.powershell")
print(sorted(m for m in lazy if m in sys.modules))
for server in servers:
    server.shutdown()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_the_first_commands_load_what_they_need(tmp_path):
    password = f"Pw{secrets.token_hex(8)}!"
    (tmp_path / "pw").write_text(password + "\n")
    (tmp_path / "c").mkdir()
    (http_port,) = allocate(1)
    cfg = {"http_port": http_port, "username": "vmradmin", "password_file": str(tmp_path / "pw")}
    servers = start_winrm(cfg, {"id": "WebVM_IN_3", "drives": {"C": str(tmp_path / "c")}})
    try:
        url = f"http://127.0.0.1:{http_port}/wsman"
        session = winrm.Session(url, auth=("vmradmin", password), transport="ntlm")
        assert session.run_cmd("hostname").std_out == b"WebVM_IN_3\r\n"
        assert session.run_ps("hostname").std_out.strip() == b"WebVM_IN_3"
        with pytest.raises(winrm.exceptions.InvalidCredentialsError):
            winrm.Session(url, auth=("vmradmin", "wrong"), transport="ntlm").run_cmd("hostname")
    finally:
        for server in servers:
            server.shutdown()


@pytest.mark.skipif(not _have_azurite(), reason="azurite-blob not installed (./dev setup)")
def test_azurite_launched_on_a_port_taken_meanwhile_moves_to_another(tmp_path, monkeypatch):
    taken = socket.create_server(("127.0.0.1", 0))
    free = allocate(1)
    ports = iter([[taken.getsockname()[1]], free])
    monkeypatch.setattr(azurite_mod, "allocate", lambda n=1: next(ports))
    az = Azurite()
    try:
        az.launch(tmp_path / "az")  # returns at once: node is still loading
        assert az.port == taken.getsockname()[1] and az.running
        az.wait_ready(timeout=30)
        assert az.port == free[0] and az.running
        assert f":{free[0]}/" in az.connection_string
        assert "EADDRINUSE" in (tmp_path / "az" / "log").read_text()
    finally:
        az.stop()
        taken.close()
