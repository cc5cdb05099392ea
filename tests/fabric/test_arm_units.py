"""The ARM face's parts without a fabric: template reading (errors name the file and JSON path), the
throttle's token bucket and its setting, the token endpoint's OAuth2 answers and ARM's token checks."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.fabric.arm import errors, throttle
from harness.fabric.arm.template import service_model
from harness.fabric.arm.tokens import Issuer, OAuthError
from harness.fabric.spec import SpecError, build_spec
from tests.fabric.arm_helpers import TEMPLATE


def test_template_becomes_a_service_model_the_fabric_deploys(tmp_path: Path) -> None:
    csdef, cscfg = service_model(TEMPLATE, tmp_path)
    spec = build_spec(csdef=Path(csdef), cscfg=Path(cscfg), vip="127.0.0.1", port_check=lambda *a, **k: None)
    (role,) = spec.roles
    assert (role.name, role.vmsize, role.instances) == ("web", "Small", 3)
    kinds = {(e.name, e.kind, e.protocol, e.declared_port, e.local_port) for e in role.endpoints}
    assert ("HttpIn", "InputEndpoint", "http", 80, 80) in kinds
    assert ("WinRM", "InstanceInputEndpoint", "tcp", None, 5986) in kinds
    assert [(s.name, s.size_mb, s.clean_on_role_recycle) for s in role.local_storage] == [("datadisk0", 4096, False)]


def _template(tmp_path: Path, **changes: object) -> Path:
    doc = json.loads(TEMPLATE.read_text())
    vmss = doc["resources"][1]
    lb = doc["resources"][0]
    for key, value in changes.items():
        if key == "capacity":
            vmss["sku"]["capacity"] = value
        elif key == "frontendPort":
            lb["properties"]["loadBalancingRules"][0]["properties"]["frontendPort"] = value
        elif key == "no_vmss":
            doc["resources"] = [lb]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"capacity": 0}, "resources[1].sku.capacity: 0 is not a whole number from 1 to 20"),
        ({"capacity": 500}, "resources[1].sku.capacity: 500 is not a whole number"),
        ({"capacity": "[parameters('nope')]"}, "parameter 'nope' is not declared"),
        ({"capacity": "[add(1, 2)]"}, "is not resolved by the fabric"),
        ({"frontendPort": 70000}, "loadBalancingRules[0].properties.frontendPort: 70000"),
        ({"no_vmss": True}, "no Microsoft.Compute/virtualMachineScaleSets resource"),
    ],
)
def test_bad_templates_are_named_errors(tmp_path: Path, changes: dict, expected: str) -> None:
    path = _template(tmp_path, **changes)
    before = path.read_bytes()
    with pytest.raises(SpecError) as caught:
        service_model(path, tmp_path / "out")
    assert str(caught.value).startswith(f"{path}: ") and expected in str(caught.value)
    assert path.read_bytes() == before


def test_unreadable_or_oversized_templates(tmp_path: Path) -> None:
    for content, expected in ((b"{not json", "not a JSON template"), (b"[]", "no 'resources' array")):
        path = tmp_path / "t.json"
        path.write_bytes(content)
        with pytest.raises(SpecError, match=expected):
            service_model(path, tmp_path / "out")
    big = tmp_path / "big.json"
    with big.open("wb") as f:
        f.truncate(4 * 1024 * 1024 + 1)
    with pytest.raises(SpecError, match="at most 4194304"):
        service_model(big, tmp_path / "out")
    with pytest.raises(SpecError, match="cannot read"):
        service_model(tmp_path / "missing.json", tmp_path / "out")


def test_throttle_bucket_empties_and_refills() -> None:
    now = [0.0]
    buckets = throttle.Buckets({"reads": (3.0, 1.0), "writes": (1.0, 0.5)}, clock=lambda: now[0])
    assert [buckets.take("reads") for _ in range(3)] == [(True, 2), (True, 1), (True, 0)]
    assert buckets.take("reads") == (False, 1)
    assert buckets.take("writes") == (True, 0) and buckets.take("writes") == (False, 2)
    now[0] = 1.0
    assert buckets.take("reads") == (True, 0)


def test_throttle_setting_is_checked() -> None:
    assert throttle.parse("reads=10/5")["reads"] == (10.0, 5.0)
    assert throttle.parse(None) == throttle.DEFAULTS
    for bad in ("reads=ten/5", "deletes=1/1", "reads=0/1", "reads"):
        with pytest.raises(ValueError, match=throttle.ENV):
            throttle.parse(bad)


def _form(**values: str) -> dict[str, list[str]]:
    return parse_qs("&".join(f"{k}={v}" for k, v in values.items()))


@pytest.fixture(scope="module")
def keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


def test_token_endpoint_answers_as_entra_does(keys: list[rsa.RSAPrivateKey]) -> None:
    issuer = Issuer("tenant-1", "app-1", "s3cret", keys[0])
    ok = _form(
        grant_type="client_credentials",
        client_id="app-1",
        client_secret="s3cret",
        scope="https://management.azure.com/.default",
    )
    answer = issuer.token_response("tenant-1", ok)
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 3599
    assert issuer.verify(f"Bearer {answer['access_token']}").app_id == "app-1"
    cases = [
        ({**ok, "client_secret": ["wrong"]}, "tenant-1", 401, "invalid_client", "AADSTS7000215"),
        ({**ok, "client_id": ["other"]}, "tenant-1", 400, "unauthorized_client", "AADSTS700016"),
        ({**ok, "grant_type": ["password"]}, "tenant-1", 400, "unsupported_grant_type", "AADSTS70003"),
        ({**ok, "scope": ["https://graph.microsoft.com/.default"]}, "tenant-1", 400, "invalid_scope", "AADSTS1002012"),
        (ok, "tenant-2", 400, "invalid_request", "AADSTS90002"),
    ]
    for form, tenant, status, error, code in cases:
        with pytest.raises(OAuthError) as caught:
            issuer.token_response(tenant, form)
        assert (caught.value.status, caught.value.error) == (status, error)
        assert caught.value.description.startswith(code) and "s3cret" not in caught.value.description


def test_arm_token_checks(keys: list[rsa.RSAPrivateKey]) -> None:
    issuer = Issuer("tenant-1", "app-1", "s3cret", keys[0])
    issuer.authority = "https://127.0.0.1:1"
    other = Issuer("tenant-1", "app-1", "s3cret", keys[1])  # another key
    cases = {
        None: "AuthenticationFailed",
        "Basic abc": "AuthenticationFailed",
        f"Bearer {issuer.issue(lifetime=-1)}": "ExpiredAuthenticationToken",
        f"Bearer {issuer.issue(tenant='tenant-2')}": "InvalidAuthenticationTokenTenant",
        f"Bearer {other.issue()}": "InvalidAuthenticationToken",
        "Bearer not.a.jwt": "InvalidAuthenticationToken",
    }
    for header, code in cases.items():
        with pytest.raises(errors.ArmError) as caught:
            issuer.verify(header)
        assert (caught.value.status, caught.value.code) == (401, code)
        challenge = caught.value.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer authorization_uri="https://127.0.0.1:1/tenant-1", error="invalid_token"')
    assert issuer.verify(f"Bearer {issuer.issue(now=time.time() - 10)}").tenant == "tenant-1"


def test_cli_up_with_a_bad_template_names_the_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "azuredeploy.json"
    bad.write_text(
        '{"resources": [{"type": "Microsoft.Compute/virtualMachineScaleSets", "name": "web", "sku": {"capacity": 99}}]}'
    )
    run = subprocess.run(
        [sys.executable, "-m", "harness.cli", "fabric", "up", "--api", "vmss", "--template", str(bad),
         "--state", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert f"{bad}: resources[0].sku.capacity: 99 is not a whole number from 1 to 20" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout
