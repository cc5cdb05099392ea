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
