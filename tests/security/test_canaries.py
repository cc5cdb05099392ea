"""Canary secrets never appear in any output (issue 9, item 4).

Unique canaries (``CANARY-<kind>-<hex>``) are planted in every input kind — cscfg settings (storage key,
SQL password, Service Bus key, SAS signature, an API token with encoder-changing characters, a plain-text
RDP password), csdef environment variables and a startup task, a malformed cscfg (VMR001), a package with
the model, a web.config and a private key inside, a disk image (answer-file passwords plain and base64, the
Winlogon autologon password, a private key, publish settings), target-file secret references (``{env:}``,
``{file:}``: WinRM passwords right and wrong, the management key, the storage connection string) and the
local fabric's own generated secrets. The real commands run end to end (`vmrole lint`, `vmrole probe`, with
failing items so messages and evidence are rendered, with ``-vv --tb=long -l``, and with a rule or live
stage that crashes with a secret in its locals), and every output is scanned for the canaries and their
encodings (:mod:`tests.security.canaries`): stdout/stderr, pytest's log file, JUnit XML, allure results,
SARIF, JSON, HTML, the collected item ids, and the fabric's logs and files in its state folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from harness.testing.images import build_image, missing_tools
from tests.security.canaries import Canaries, make, report, scan
from tests.security.inputs import image_spec, plant_model

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(bool(missing_tools()), reason=f"image tools missing: {missing_tools()} (run ./dev setup)"),
    pytest.mark.xdist_group("security-canaries"),
]


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`vmrole ...` in a fresh process; returns the exit code and stdout + stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    return proc.returncode, proc.stdout + "\n--- stderr ---\n" + proc.stderr


def assert_clean(canaries: Canaries, outputs: dict[str, str | bytes | Path], *, public: tuple[str, ...] = ()) -> None:
    """No canary in any output; ``public`` names canary kinds (prefixes) these outputs may hold by design."""
    if public:
        canaries = Canaries(
            {k: v for k, v in canaries.values.items() if not k.startswith(public)},
            {k: v for k, v in canaries.users.items() if not k.startswith(public)},
        )
    hits = scan(outputs, canaries)
    assert not hits, report(hits)


def report_files(out: Path) -> dict[str, Path]:
    """Every report the run wrote (the scan reads them all; this checks that they exist)."""
    files = {p.name: p for p in out.rglob("*") if p.is_file()}
    for name in ("vmrole.sarif", "vmrole.json", "vmrole.html", "junit.xml", "pytest.log"):
        assert name in files, f"{name} missing from {out}: {sorted(files)}"
    assert any(p.parent.name == "allure-results" and p.name.endswith("-result.json") for p in files.values())
    return {str(out): out}


def junit_ids(junit: Path) -> list[str]:
    return [f"{c.get('classname')}::{c.get('name')}" for c in ET.parse(junit).iter("testcase")]


VERBOSE = ["-vv", "--tb=long", "-l", "-rA", "--log-level=DEBUG", "--log-file-level=DEBUG"]


# ---- offline: the service model, the package and the image ------------------------------------------


@pytest.fixture(scope="module")
def canaries() -> Canaries:
    return Canaries()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, canaries: Canaries) -> dict[str, Path]:
    return plant_model(tmp_path_factory.mktemp("model") / "deploy", canaries)


@pytest.fixture(scope="module")
def image(image_cache: Path, canaries: Canaries) -> Path:
    return build_image(image_spec(canaries), cache_dir=image_cache)


def lint(model: dict[str, Path], image: Path, out: Path, *extra: str, profile: str = "auto") -> tuple[int, str]:
    args = ["lint", str(model["csdef"].parent), "--image", str(image), "--package", str(model["cspkg"])]
    return run([*args, "--profile", profile, "--report-dir", str(out), "--", *extra], cwd=out.parent)


def test_lint_with_every_report_and_failing_items_leaks_no_canary(model, image, canaries, tmp_path):
    out = tmp_path / "reports"
    code, output = lint(model, image, out, *VERBOSE, "--log-file", str(out / "pytest.log"))
    assert code == 1, output[-3000:]
    report = json.loads((out / "vmrole.json").read_text())
    failed = {i["rule_id"] for i in report["items"] if i["outcome"] == "failed"}
    # every planted secret was found, so its message and evidence were rendered in every format
    expected = {"VMR001", "VMR209", "VMR210", "VMR211", "VMR301", "VMR302", "VMR303", "VMR304", "VMR310", "VMR311"}
    expected |= {"VMR534"}
    assert expected <= failed, sorted(failed)
    assert any(i["rule_id"].startswith("VMR3") and i["artefact"].endswith(".cspkg") for i in report["items"])
    ids = junit_ids(out / "junit.xml")
    assert len(ids) == len(report["items"])
    assert_clean(canaries, {"terminal": output, "junit ids": "\n".join(ids), **report_files(out)})


def test_collected_item_ids_carry_no_canary(model, image, canaries, tmp_path):
    code, output = lint(model, image, tmp_path / "reports", "--collect-only", "-q")
    assert code == 0, output[-3000:]
    assert "VMR534[ServiceConfiguration.Cloud.cscfg]" in output
    assert_clean(canaries, {"collect-only": output})


def test_a_crashing_rule_shows_no_secret_from_its_frames(model, image, canaries, tmp_path):
    """A rule that raises (here: int() of a setting value, message included) fails its item, and a reader
    that raises fails collection (the image is linted with the azure profile here); with -l / --tb=long
    pytest would print the frames' locals and arguments (setting values, the file's text): the harness
    renders both without them and masks the message."""
    out = tmp_path / "reports"
    code, output = lint(
        model,
        image,
        out,
        *VERBOSE,
        "--log-file",
        str(out / "pytest.log"),
        "-p",
        "tests.security.crash_plugin",
        "--continue-on-collection-errors",
        profile="azure",  # the image judged by the other profile's rules too (the first lint run used vmrole)
    )
    assert code == 1, output[-3000:]
    report = json.loads((out / "vmrole.json").read_text())
    crashed = [i for i in report["items"] if i["rule_id"] == "VMR304" and i["outcome"] == "failed"]
    assert crashed, output[-3000:]
    assert {"VMR208", "VMR209", "VMR211"} <= {i["rule_id"] for i in report["items"] if i["outcome"] == "failed"}
    assert "ValueError" in output and "crash_plugin.py" in output, output[-3000:]
    assert "internal error while reading" in output and "reader bug after" in output, output[-3000:]
    assert_clean(canaries, {"terminal": output, **report_files(out)})


# ---- live: `vmrole probe` against the local fabric ---------------------------------------------------


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory, model: dict[str, Path], canaries: Canaries):
    """One fabric for every probe, deployed from the canary model; its generated secrets become canaries."""
    from harness.fabric.client import up

    fab = up(tmp_path_factory.mktemp("fabric"), csdef=model["csdef"], cscfg=model["cscfg"], step_seconds=0.1)
    try:
        secrets = fab.layout.secrets
        user = fab.data["winrm"]["username"]
        canaries.add("fabric-winrm-password", fab.winrm_password(), user=user)
        canaries.add("fabric-control-token", (secrets / "control-token").read_text().strip())
        key_lines = (secrets / "mgmt-client.key").read_text().splitlines()
        for n in (1, len(key_lines) // 2, len(key_lines) - 2):
            canaries.add(f"fabric-mgmt-key-line-{n}", key_lines[n])
        connection = (secrets / "storage-connection-string").read_text().strip()
        canaries.add("fabric-storage-connection-string", connection)
        account_key = next(p.split("=", 1)[1] for p in connection.split(";") if p.startswith("AccountKey="))
        canaries.add("fabric-storage-account-key", account_key)
        yield fab
    finally:
        report = fab.down()
    assert report.ports_still_open == []


def write_targets(fabric, folder: Path, canaries: Canaries) -> tuple[list[Path], dict[str, str]]:
    """Targets: the fabric reached with its secrets by reference (``{env:}`` for the WinRM password and
    the storage connection string, ``{file:}`` for a copy of the management key), and one with a wrong
    WinRM password and a wrong storage key (canaries with encoder-changing characters) so that in-guest
    checks fail and their evidence is rendered; the first again, named ``canary-crash`` (its guest stage
    crashes under crash_plugin), and with a password in its management URL."""
    from harness.live.target import fabric_target_document

    folder.mkdir(parents=True, exist_ok=True)
    key_copy = folder / "secrets" / "management.key"
    key_copy.parent.mkdir()
    shutil.copy(fabric.layout.secrets / "mgmt-client.key", key_copy)
    env = {
        "CANARY_WINRM_PASSWORD": fabric.winrm_password(),
        "CANARY_STORAGE": canaries.values["fabric-storage-connection-string"],
        "CANARY_WRONG_WINRM_PASSWORD": canaries.add(
            "target-wrong-winrm-password", make("wrongwinrm", specials=True), user=fabric.data["winrm"]["username"]
        ),
        "CANARY_WRONG_STORAGE": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
        + canaries.add("target-wrong-storage-key", make("wrongstoragekey", specials=True)).replace(";", "")
        + ";BlobEndpoint="
        + canaries.values["fabric-storage-connection-string"].split("BlobEndpoint=", 1)[1].split(";")[0],
    }
    targets = []
    for name, password, storage in (
        ("good", "CANARY_WINRM_PASSWORD", "CANARY_STORAGE"),
        ("wrong", "CANARY_WRONG_WINRM_PASSWORD", "CANARY_WRONG_STORAGE"),
        ("crash", "CANARY_WINRM_PASSWORD", "CANARY_STORAGE"),  # its guest stage crashes (crash_plugin)
    ):
        document = fabric_target_document(fabric.data, fabric.layout.root)
        document["name"] = f"canary-{name}"
        document["management"]["key"] = {"file": str(key_copy)}
        document["winrm"]["password"] = {"env": password}
        document["storage"]["connection_string"] = {"env": storage}
        document["timeouts"].update(ready=4, conflict_retry=2)
        path = folder / f"{name}.vmrtarget.yml"
        path.write_text(yaml.safe_dump(document), "utf-8")
        targets.append(path)
    # A password written into the management URL (user:password@host): refused, never echoed.
    document = yaml.safe_load(targets[0].read_text("utf-8"))
    password = canaries.add("target-url-password", make("urlpwd"))
    document["name"] = "canary-urlcreds"
    document["management"]["url"] = document["management"]["url"].replace("://", f"://vmradmin:{password}@")
    targets.append(folder / "urlcreds.vmrtarget.yml")
    targets[-1].write_text(yaml.safe_dump(document), "utf-8")
    return targets, env


def fabric_outputs(fabric) -> dict[str, Path]:
    """The fabric's logs and the files it writes about itself (not its secret store, certificates, the
    deployed model or the instances' emulated drives, which hold secrets by design)."""
    root = fabric.layout.root
    keep: dict[str, Path] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if not path.is_file() or rel.parts[0] in ("secrets", "certs", "image", "azurite"):
            continue
        if path.name.endswith((".log", ".json", ".yml", ".cfg", ".txt")) and "drives" not in rel.parts:
            keep[f"fabric state {rel}"] = path
    assert any(k.endswith(".log") for k in keep), sorted(keep)
    return keep


def test_probe_with_faults_and_wrong_credentials_leaks_no_canary(fabric, canaries, tmp_path):
    targets, env = write_targets(fabric, tmp_path / "targets", canaries)
    out = tmp_path / "reports"
    fabric.inject("crash", "WebVM_IN_2", seconds=60)
    try:
        more = [a for t in targets[1:] for a in ("--vmr-target", str(t))]
        # destructive: the reimage probe signs a SAS for its blob marker (good target only, to keep it short)
        only = "not VMR71 and not VMR81 and not (crash and VMR70)"
        pytest_args = [*more, "-p", "tests.security.crash_plugin", *VERBOSE, "--vmr-destructive", "-k", only]
        code, output = run(
            [
                "probe",
                str(targets[0]),
                "--report-dir",
                str(out),
                "--",
                *pytest_args,
                "--log-file",
                str(out / "pytest.log"),
            ],
            cwd=tmp_path,
            env=env,
        )
    finally:
        fabric.clear_faults()
    assert code == 1, output[-3000:]
    report = json.loads((out / "vmrole.json").read_text())
    failed = {(Path(i["artefact"]).name, i["rule_id"]) for i in report["items"] if i["outcome"] == "failed"}
    assert ("good.vmrtarget.yml", "VMR616") in failed, sorted(failed)  # the crashed instance, with evidence
    assert ("wrong.vmrtarget.yml", "VMR630") in failed, sorted(failed)  # WinRM refused the wrong password
    assert ("crash.vmrtarget.yml", "VMR630") in failed, sorted(failed)  # its guest stage raised
    assert ("urlcreds.vmrtarget.yml", "VMR001") in failed, sorted(failed)  # a password in the URL: refused
    passed = {(Path(i["artefact"]).name, i["rule_id"]) for i in report["items"] if i["outcome"] == "passed"}
    assert ("good.vmrtarget.yml", "VMR704") in passed, sorted(passed)  # blob marker written with a SAS
    for shown in ("evidence: deployment.xml", "evidence: winrm-", "evidence: timings", "guest stage broke"):
        assert shown in output, shown
    written = {f"target file {p.name}": p for p in targets[:3]}  # the fourth holds its URL password on purpose
    assert_clean(canaries, {"terminal": output, **report_files(out), **written})
    # The fabric's own description (fabric.json) carries Azurite's connection string: its key is the published
    # development key (harness/fabric/CONTRACT.md), public by design; every other fabric secret stays out.
    status = {}
    for extra in ((), ("--json",)):
        code, text = run(["fabric", "status", "--state", str(fabric.layout.root), *extra], cwd=tmp_path)
        assert code == 0 and "WebVM_IN_0" in text, text[-2000:]
        status[f"vmrole fabric status {' '.join(extra)}"] = text
    assert_clean(canaries, {**fabric_outputs(fabric), **status}, public=("fabric-storage-",))


# ---- the scanner itself --------------------------------------------------------------------------------


def test_the_scanner_finds_every_encoding_and_never_prints_the_secret():
    import base64
    import html
    import urllib.parse

    c = Canaries()
    secret = c.add("k", make("selftest", specials=True), user="vmradmin")
    samples = {
        "plain": f"x {secret} y",
        "html": f"<td>{html.escape(secret)}</td>",
        "url": "https://h/?p=" + urllib.parse.quote(secret, safe=""),
        "json": json.dumps({"v": secret}),
        "base64 inside a document": base64.b64encode(b"<Setting value='" + secret.encode() + b"'/>").decode(),
        "utf-16le": b"\xff\xfe" + f"v={secret}".encode("utf-16-le"),
        "hex": secret.encode().hex(),
        "basic auth": "Authorization: Basic " + base64.b64encode(f"vmradmin:{secret}".encode()).decode(),
        "sas": "https://a.blob.core.windows.net/c/b?sv=2021&sig=abcdefABCDEF0123456789%2B%3D",
        "pem": json.dumps("-----BEGIN PRIVATE KEY-----\n" + "A" * 64),
        "ntlm": "NTLM step output: " + base64.b64encode(b"NTLMSSP\0\3\0\0\0" + bytes(range(40))).decode(),
    }
    hits = scan(samples, c)
    assert {h.where for h in hits} == set(samples), report(hits)
    assert not scan({"masked": "Password=***; https://a/b?sv=1&sig=***; starting with -----BEGIN PRIVATE KEY-----"}, c)
    for hit in hits:
        assert secret not in str(hit) and "abcdefABCDEF0123456789" not in str(hit), str(hit)
