"""Fabric certificates: CA, server/client/service certificates, thumbprints and the effective cscfg."""

from __future__ import annotations

import difflib
import shutil
import socket
import ssl
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from harness.fabric.certs import (
    issue_client_cert,
    issue_server_cert,
    make_ca,
    rewrite_thumbprints,
    service_certificate,
    thumbprint,
)

SAMPLE_CSCFG = (
    Path(__file__).resolve().parents[2] / "harness" / "samples" / "vmrole" / "ServiceConfiguration.Cloud.cscfg"
)
OLD_SSL = "4CF78D149A067F24FC77BF1F0665077285027C98"
OLD_PWD = "2D57F5A0CE7F281C879958DA3C4A8D2BBC589180"
PWD_CERT = "Microsoft.WindowsAzure.Plugins.RemoteAccess.PasswordEncryption"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("certs")
    ca = make_ca(d)
    return {
        "dir": d,
        "ca": ca,
        "server": issue_server_cert(ca, out=d / "mgmt-server.pem"),
        "client": issue_client_cert(ca, "vmrole-management", d / "mgmt-client.pem", key_out=d / "secrets" / "mc.key"),
        "svc": service_certificate(ca, "SSL", d / "svc-SSL"),
        "self": service_certificate(None, PWD_CERT, d / "svc-pwd.pem"),
    }


def test_layout_and_key_modes(pki):
    d = pki["dir"]
    assert pki["ca"] == (d / "ca.pem", d / "ca-key.pem")
    assert pki["server"] == (d / "mgmt-server.pem", d / "mgmt-server.key")
    assert pki["client"] == (d / "mgmt-client.pem", d / "secrets" / "mc.key")
    assert pki["svc"].pem == d / "svc-SSL.pem" and pki["svc"].key == d / "svc-SSL.key"
    for key in (pki["ca"].key, pki["server"].key, pki["client"].key, pki["svc"].key, pki["self"].key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_rewriting_a_key_resets_its_mode(tmp_path):
    key = tmp_path / "ca-key.pem"
    key.write_text("old")
    key.chmod(0o644)
    make_ca(tmp_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI missing")
@pytest.mark.parametrize("which", ["ca", "server", "client", "svc", "self"])
def test_thumbprint_matches_openssl(pki, which):
    pem = pki[which][0]
    out = subprocess.run(
        ["openssl", "x509", "-in", str(pem), "-noout", "-fingerprint", "-sha1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    expected = out.strip().split("=", 1)[1].replace(":", "").upper()
    assert thumbprint(pem) == expected
    assert thumbprint(pem.read_text()) == expected == thumbprint(pem.read_bytes())
    assert len(expected) == 40
    if which in ("svc", "self"):
        assert pki[which].thumbprint == expected


def test_certificate_contents(pki):
    srv = x509.load_pem_x509_certificate(pki["server"].pem.read_bytes())
    san = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    self_signed = x509.load_pem_x509_certificate(pki["self"].pem.read_bytes())
    assert self_signed.issuer == self_signed.subject
    ca = x509.load_pem_x509_certificate(pki["ca"].pem.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def _tls_server(ctx: ssl.SSLContext) -> tuple[socket.socket, dict[str, object], threading.Thread]:
    listener = socket.create_server(("127.0.0.1", 0))
    result: dict[str, object] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                result["peer"] = tls.getpeercert()
                tls.sendall(b"hello\n")
        except (ssl.SSLError, OSError) as exc:
            result["error"] = exc
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return listener, result, t


@pytest.fixture
def tls_server(pki) -> Iterator[object]:
    servers: list[socket.socket] = []

    def start(require_client: bool = False):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki["server"].pem, pki["server"].key)
        if require_client:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(pki["ca"].pem)
        listener, result, thread = _tls_server(ctx)
        servers.append(listener)
        return listener.getsockname()[1], result, thread

    yield start
    for s in servers:
        s.close()


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_server_cert_validates_against_the_ca(pki, tls_server, hostname):
    port, _, thread = tls_server()
    ctx = ssl.create_default_context(cafile=str(pki["ca"].pem))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        assert tls.recv(16) == b"hello\n"
    thread.join(5)


def test_server_cert_is_rejected_without_the_ca(tls_server):
    port, _, thread = tls_server()
    ctx = ssl.create_default_context(cafile=None)
    ctx.load_default_certs()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, pytest.raises(ssl.SSLCertVerificationError):
        ctx.wrap_socket(raw, server_hostname="localhost")
    thread.join(5)


def test_client_certificate_mutual_tls(pki, tls_server):
    port, result, thread = tls_server(require_client=True)
    ctx = ssl.create_default_context(cafile=str(pki["ca"].pem))
    ctx.load_cert_chain(pki["client"].pem, pki["client"].key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.recv(16) == b"hello\n"
    thread.join(5)
    subject = dict(x[0] for x in result["peer"]["subject"])
    assert subject["commonName"] == "vmrole-management"

    # without the client certificate the server refuses the handshake
    port, result, thread = tls_server(require_client=True)
    bare = ssl.create_default_context(cafile=str(pki["ca"].pem))
    data: bytes | None
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with bare.wrap_socket(raw, server_hostname="localhost") as tls:  # TLS 1.3: fails on first read
                data = tls.recv(16)
        except (ssl.SSLError, OSError):
            data = None
    thread.join(5)
    assert not data
    assert "error" in result


def test_service_certificate_serves_https(pki, tmp_path):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["svc"].pem, pki["svc"].key)
    listener, _, thread = _tls_server(ctx)
    try:
        client = ssl.create_default_context(cafile=str(pki["ca"].pem))
        with (
            socket.create_connection(listener.getsockname(), timeout=5) as raw,
            client.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert thumbprint(ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True))) == pki["svc"].thumbprint
    finally:
        thread.join(5)
        listener.close()


# -- cscfg ---------------------------------------------------------------------------------------------


def test_rewrite_thumbprints_on_the_sample_changes_only_thumbprints(pki):
    text = SAMPLE_CSCFG.read_text("utf-8")
    new_ssl, new_pwd = pki["svc"].thumbprint, pki["self"].thumbprint
    out = rewrite_thumbprints(text, {"SSL": new_ssl, PWD_CERT: new_pwd.lower()}, strict=True)
    assert out.count(new_ssl) == 1 and out.count(new_pwd) == 2  # WebVM + Indexer share the cert name
    assert OLD_SSL not in out and OLD_PWD not in out
    # byte for byte otherwise: swapping the old values back gives the original
    assert out.replace(new_ssl, OLD_SSL).replace(new_pwd, OLD_PWD) == text
    changed = [
        ln for ln in difflib.unified_diff(text.splitlines(), out.splitlines(), lineterm="", n=0) if ln[:1] in "+-"
    ]
    assert all("<Certificate name=" in ln for ln in changed[2:]) and len(changed) == 2 + 6


def test_rewrite_is_per_role_and_namespace_agnostic():
    text = (
        "<?xml version='1.0'?>\n"
        "<sc:ServiceConfiguration xmlns:sc='http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration'>\n"
        "  <sc:Role name='A'><sc:Certificates>\n"
        "    <sc:Certificate thumbprintAlgorithm='sha1' name='C' thumbprint='old' />\n"
        "    <sc:Certificate name='Other' thumbprint='keep' />\n"
        "  </sc:Certificates></sc:Role>\n"
        "  <sc:Role name='B'/>\n"
        "  <sc:Role name='B2'><sc:Certificates><sc:Certificate name='C' /></sc:Certificates></sc:Role>\n"
        "</sc:ServiceConfiguration>\n"
    )
    a, b = "A" * 40, "B" * 40
    out = rewrite_thumbprints(text, {"C": a, ("B2", "C"): b})
    assert "<sc:Certificate thumbprintAlgorithm='sha1' name='C' thumbprint='" + a + "' />" in out
    assert "thumbprint='keep'" in out
    assert f"<sc:Certificate name='C' thumbprint=\"{b}\" />" in out  # inserted when missing
    with pytest.raises(KeyError, match="Nope"):
        rewrite_thumbprints(text, {"Nope": a}, strict=True)
    assert rewrite_thumbprints(text, {"Nope": a}) == text
    with pytest.raises(ValueError, match="thumbprint"):
        rewrite_thumbprints(text, {"C": "xyz"})
