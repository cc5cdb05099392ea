"""The target file: validation errors name the file and key; secrets only by reference; masking."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.live.errors import TargetError
from harness.live.target import load_target

PASSWORD = "S3cr3t-Passw0rd!x"


def write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "key.pem").write_text("KEY")
    (tmp_path / "cert.pem").write_text("CERT")
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    path = tmp_path / "prod.vmrtarget.yml"
    path.write_text(textwrap.dedent(body))
    return path


GOOD = """
management:
  url: https://127.0.0.1:8443
  subscription_id: sub
  service: Contoso
  slot: production
  certificate: cert.pem
  key: {file: key.pem}
winrm:
  username: ops
  password: {file: pw}
storage:
  connection_string: {env: VMR_TEST_STORAGE}
services: [W3SVC]
app_state_paths: ['C:\\\\AppState\\\\orders.db']
"""


def test_a_good_target_loads_with_defaults(tmp_path):
    target = load_target(write(tmp_path, GOOD))
    assert target.name == "prod"
    assert target.management.host == "127.0.0.1:8443" and target.management.slot == "production"
    assert target.winrm.transport == "ntlm" and target.rotation.confidence == 0.999
    assert target.secret(target.winrm.password) == PASSWORD
    assert target.services == ("W3SVC",)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("  slot: production\n", ""), "give exactly one of slot and deployment"),
        (("password: {file: pw}", f"password: {PASSWORD}"), "secrets are not written in the target file"),
        (("url: https://127.0.0.1:8443", "url: ftp://x"), "management.url"),
        (("key: {file: key.pem}", "key: {file: missing.pem}"), "does not exist"),
        (("services: [W3SVC]", "services: W3SVC"), "services: must be a list"),
        (("services: [W3SVC]", "colour: blue"), "unknown keys ['colour']"),
        (("management:", "management: [1]\nx:"), "unknown keys"),
    ],
)
def test_bad_targets_name_the_file_key_and_problem(tmp_path, change, problem):
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(TargetError) as exc:
        load_target(path)
    assert str(path.resolve()) in str(exc.value) or str(path) in str(exc.value)
    assert problem in str(exc.value)
    assert PASSWORD not in str(exc.value)


def test_not_yaml_is_a_clear_error(tmp_path):
    path = write(tmp_path, "management: [unclosed\n")
    with pytest.raises(TargetError, match="not valid YAML"):
        load_target(path)


def test_env_secret_missing_is_named_without_values(tmp_path, monkeypatch):
    target = load_target(write(tmp_path, GOOD))
    monkeypatch.delenv("VMR_TEST_STORAGE", raising=False)
    with pytest.raises(TargetError, match="VMR_TEST_STORAGE is not set"):
        target.secret(target.storage.connection_string)


def test_masker_hides_every_resolved_secret_and_its_encodings(tmp_path, monkeypatch):
    import base64
    import urllib.parse

    key = "q3F0bGlOa2V5Rm9yVGVzdHNPbmx5K0RvTm90VXNlSW5Qcm9kdWN0aW9u=="
    monkeypatch.setenv("VMR_TEST_STORAGE", f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={key}")
    masker = load_target(write(tmp_path, GOOD)).masker()
    text = (
        f"pw={PASSWORD} url={urllib.parse.quote(PASSWORD)} b64={base64.b64encode(PASSWORD.encode()).decode()} k={key}"
    )
    masked = masker(text)
    assert PASSWORD not in masked and key not in masked and urllib.parse.quote(PASSWORD) not in masked
    assert masked.count("***") == 4


# ---- credentials that would travel in clear --------------------------------------------------

HTTP_MGMT = GOOD.replace("url: https://127.0.0.1:8443", "url: http://127.0.0.1:8080").replace(
    "  certificate: cert.pem\n  key: {file: key.pem}\n", ""
)


def _winrm(scheme: str, transport: str) -> str:
    return GOOD.replace("winrm:\n", f"winrm:\n  scheme: {scheme}\n  transport: {transport}\n")


@pytest.mark.parametrize(
    ("body", "storage", "field"),
    [
        (_winrm("http", "basic"), None, "winrm.transport"),
        (_winrm("http", "ssl"), None, "winrm.transport"),
        (_winrm("HTTP", "Basic"), None, "winrm.transport"),
        (GOOD, "BlobEndpoint=http://store.example:10000/acct;SharedAccessSignature=sv=2020&sig=abc", "storage"),
        (GOOD, "DefaultEndpointsProtocol=http;AccountName=a;SharedAccessSignature=sv=2020&sig=abc", "storage"),
    ],
)
def test_a_credential_that_would_travel_in_clear_is_named_by_field(tmp_path, monkeypatch, body, storage, field):
    from harness.live.target import cleartext_credentials

    monkeypatch.setenv("VMR_TEST_STORAGE", storage or "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k")
    problems = cleartext_credentials(load_target(write(tmp_path, body)))
    assert len(problems) == 1 and problems[0].startswith(field)
    assert "in clear" in problems[0]
    text = " ".join(problems)
    assert PASSWORD not in text and "sig=abc" not in text  # the secret itself is never repeated


@pytest.mark.parametrize(
    ("body", "storage"),
    [
        (GOOD, "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k"),  # https everywhere
        (_winrm("https", "basic"), None),  # Basic over TLS
        (_winrm("https", "ssl"), None),
        (_winrm("http", "ntlm"), None),  # NTLM with message encryption
        (HTTP_MGMT, None),  # no management credential travels over http (mutual TLS needs https)
        (GOOD, "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=k"),  # Shared Key signs, never sends
        (GOOD, "UseDevelopmentStorage=true"),
    ],
)
def test_credentials_that_stay_protected_are_accepted(tmp_path, monkeypatch, body, storage):
    from harness.live.target import cleartext_credentials

    monkeypatch.setenv("VMR_TEST_STORAGE", storage or "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k")
    assert cleartext_credentials(load_target(write(tmp_path, body))) == []


def test_basic_over_http_without_a_password_is_still_refused(tmp_path):
    from harness.live.target import cleartext_credentials

    body = _winrm("http", "basic").replace("  password: {file: pw}\n", "")
    assert [p.split(":")[0] for p in cleartext_credentials(load_target(write(tmp_path, body)))] == ["winrm.transport"]


def test_the_fabric_target_sends_no_credential_in_clear(tmp_path):
    from harness.live.target import cleartext_credentials, fabric_target_document

    for name in ("client.pem", "client.key", "ca.pem"):
        (tmp_path / name).write_text("PEM")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "winrm-password").write_text(PASSWORD)
    (secrets / "storage-connection-string").write_text(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    )
    data = {
        "management": {
            "https_port": 1,
            "http_port": 2,
            "ca": str(tmp_path / "ca.pem"),
            "client_cert": str(tmp_path / "client.pem"),
            "client_key": str(tmp_path / "client.key"),
        },
        "subscription_id": "sub",
        "service_name": "svc",
        "slot": "Production",
        "winrm": {"username": "vmradmin"},
        "haproxy": {"probe": {"removal_window_s": 1}},
    }
    import yaml

    path = tmp_path / "t.vmrtarget.yml"
    path.write_text(yaml.safe_dump(fabric_target_document(data, tmp_path)))
    assert cleartext_credentials(load_target(path)) == []
