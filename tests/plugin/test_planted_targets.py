"""Issue 9: linting never contacts anything. A target file (*.vmrtarget.yml) planted in a linted folder, or
named to `vmrole lint`, is never probed; only `--vmr-target T` / `vmrole probe T` probe, and a target that
would send a credential in clear is refused unless the user opts in on the command line (or ini / env).

pytest runs in a subprocess here: in-process runs re-import requests, whose cookie classes then disagree.
"""

from __future__ import annotations

import base64
import http.server
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

CANARY = "canary-Secret-7f3a9c"
BASIC_CANARY = base64.b64encode(f"admin:{CANARY}".encode()).decode()  # what HTTP Basic would carry

# Get Deployment as the management API answers it: one Ready instance whose WinRM is the listener itself.
DEPLOYMENT_XML = """<?xml version="1.0" encoding="utf-8"?>
<Deployment xmlns="http://schemas.microsoft.com/windowsazure">
  <Name>evil</Name><DeploymentSlot>Production</DeploymentSlot><PrivateID>p</PrivateID><Status>Running</Status>
  <RoleInstanceList><RoleInstance>
    <RoleName>WebVM</RoleName><InstanceName>WebVM_IN_0</InstanceName><InstanceStatus>ReadyRole</InstanceStatus>
    <InstanceUpgradeDomain>0</InstanceUpgradeDomain><InstanceFaultDomain>0</InstanceFaultDomain>
    <IpAddress>127.0.0.1</IpAddress>
    <InstanceEndpoints><InstanceEndpoint><Name>WinRM</Name><Vip>127.0.0.1</Vip><PublicPort>{port}</PublicPort>
      <LocalPort>5985</LocalPort><Protocol>tcp</Protocol></InstanceEndpoint></InstanceEndpoints>
  </RoleInstance></RoleInstanceList>
  <RoleList><Role><RoleName>WebVM</RoleName></Role></RoleList>
</Deployment>
"""


class Listener(http.server.ThreadingHTTPServer):
    """A loopback HTTP server that records every connection and request it gets. It answers Get Deployment
    with one Ready instance whose WinRM endpoint is this same server (so a probe would go on to WinRM and
    send its credentials here), and 404 to anything else."""

    daemon_threads = True

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_any(handler) -> None:
                length = int(handler.headers.get("Content-Length") or 0)
                body = handler.rfile.read(length).decode("latin-1") if length else ""
                self.requests.append(f"{handler.command} {handler.path}\n{handler.headers}\n{body}")
                answer = b""
                if handler.command == "GET" and "/deploymentslots/" in handler.path:
                    answer = DEPLOYMENT_XML.format(port=self.server_address[1]).encode()
                handler.send_response(200 if answer else 404)
                handler.send_header("Content-Type", "application/xml")
                handler.send_header("Content-Length", str(len(answer)))
                handler.end_headers()
                handler.wfile.write(answer)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_any

            def log_message(handler, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def verify_request(self, request: object, client_address: object) -> bool:
        self.connections += 1
        return True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def heard(self) -> str:
        return "\n".join(self.requests)


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CANARY", CANARY)
    return CANARY


def target_text(url: str, *, winrm_scheme: str = "https", winrm_transport: str = "ntlm") -> str:
    """A target whose every address is the listener, with an environment secret as the WinRM password."""
    return textwrap.dedent(
        f"""\
        name: evil
        management:
          url: {url}
          subscription_id: sub
          service: svc
          slot: production
        winrm:
          scheme: {winrm_scheme}
          transport: {winrm_transport}
          username: admin
          password: {{env: CANARY}}
        timeouts: {{connect: 0.5, read: 1, ready: 1, conflict_retry: 0}}
        """
    )


def plant(directory: Path, url: str, name: str = "evil.vmrtarget.yml", **kwargs: str) -> Path:
    path = directory / name
    path.write_text(target_text(url, **kwargs), "utf-8")
    return path


def vmrole(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CANARY": CANARY}
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args, "--no-allure", "--report-dir", "reports"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def deployment_ids(output: str) -> list[str]:
    return [line for line in output.splitlines() if "[evil" in line or "VMR6" in line or "VMR8" in line]


# ---- discovery and `vmrole lint` never probe -------------------------------------------------------------


def test_vmrole_lint_of_a_directory_never_contacts_a_planted_target(pytester, model, listener):
    pytester.mkdir("deploy")
    for name in ("ServiceDefinition.csdef", "ServiceConfiguration.Cloud.cscfg"):
        (pytester.path / name).rename(pytester.path / "deploy" / name)
    clean = vmrole(pytester.path, "lint", "deploy", "-v")
    plant(pytester.path / "deploy", listener.url, winrm_scheme="http", winrm_transport="basic")
    planted = vmrole(pytester.path, "lint", "deploy", "-v")
    output = planted.stdout + planted.stderr
    assert BASIC_CANARY not in listener.heard()  # the finding of issue 9: a secret sent in clear HTTP Basic
    assert listener.connections == 0 and listener.requests == [], listener.heard()
    assert deployment_ids(output) == [], output
    assert planted.returncode == clean.returncode, output
    assert CANARY not in output


def test_pytest_discover_never_contacts_a_planted_target(pytester, model, listener, canary):
    clean = pytester.runpytest_subprocess(".", "--vmr-discover", "-p", "no:xdist", "-v")
    plant(pytester.path, listener.url, winrm_scheme="http", winrm_transport="basic")
    planted = pytester.runpytest_subprocess(".", "--vmr-discover", "-p", "no:xdist", "-v")
    output = planted.stdout.str() + planted.stderr.str()
    assert listener.connections == 0, listener.heard()
    assert deployment_ids(output) == [], output
    assert planted.ret == clean.ret
    assert planted.parseoutcomes() == clean.parseoutcomes()
    assert canary not in output


def test_a_target_named_to_vmrole_lint_is_not_probed_and_the_user_is_told_how(pytester, model, listener):
    plant(pytester.path, listener.url)
    result = vmrole(pytester.path, "lint", "evil.vmrtarget.yml", "ServiceConfiguration.Cloud.cscfg")
    output = result.stdout + result.stderr
    assert listener.connections == 0, listener.heard()
    assert deployment_ids(output) == [], output
    assert "not probed" in output and "vmrole probe evil.vmrtarget.yml" in output, output
    assert "--vmr-target" in output
    assert CANARY not in output


def test_a_target_named_as_a_plain_pytest_argument_is_not_probed(pytester, model, listener, canary):
    plant(pytester.path, listener.url)
    result = pytester.runpytest_subprocess("evil.vmrtarget.yml", "-p", "no:xdist")
    output = result.stdout.str() + result.stderr.str()
    assert listener.connections == 0, listener.heard()
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert "not probed" in output and "--vmr-target" in output, output


# ---- explicit targets still probe ------------------------------------------------------------------------


def test_vmr_target_still_probes(pytester, listener, canary):
    plant(pytester.path, listener.url)
    result = pytester.runpytest_subprocess("--vmr-target", "evil.vmrtarget.yml", "-p", "no:xdist", "-k", "VMR600", "-v")
    assert listener.requests, "the explicit target was not probed"
    assert "VMR600[evil]" in result.stdout.str()
    assert canary not in listener.heard()  # the WinRM password goes only to WinRM, over https


def test_vmrole_probe_still_probes(pytester, listener):
    plant(pytester.path, listener.url)
    result = vmrole(pytester.path, "probe", "evil.vmrtarget.yml", "--select", "VMR600", "-v")
    output = result.stdout + result.stderr
    assert listener.requests, output
    assert "VMR600[evil]" in output
    assert CANARY not in output and CANARY not in listener.heard()


# ---- credentials in clear are refused unless the user opts in --------------------------------------------


def test_an_explicit_target_with_basic_over_http_is_refused_naming_file_and_field(pytester, listener, canary):
    plant(pytester.path, listener.url, winrm_scheme="http", winrm_transport="basic")
    result = pytester.runpytest_subprocess("--vmr-target", "evil.vmrtarget.yml", "-p", "no:xdist", "-rf")
    output = result.stdout.str() + result.stderr.str()
    assert listener.connections == 0, listener.heard()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "VMR001[evil.vmrtarget.yml]" in output, output
    assert "winrm.transport" in output and "in clear" in output
    assert "--vmr-allow-cleartext-credentials" in output
    assert "Traceback" not in output and canary not in output


def test_vmrole_probe_refuses_basic_over_http_and_accepts_it_with_the_opt_in(pytester, listener):
    plant(pytester.path, listener.url, winrm_scheme="http", winrm_transport="basic")
    refused = vmrole(pytester.path, "probe", "evil.vmrtarget.yml", "-v")
    output = refused.stdout + refused.stderr
    assert listener.connections == 0, listener.heard()
    assert refused.returncode == int(pytest.ExitCode.TESTS_FAILED)
    assert "winrm.transport" in output and "--allow-cleartext-credentials" in output
    assert CANARY not in output
    allowed = vmrole(
        pytester.path, "probe", "evil.vmrtarget.yml", "--allow-cleartext-credentials", "--select", "VMR600", "-v"
    )
    assert listener.requests, allowed.stdout + allowed.stderr
    assert CANARY not in allowed.stdout + allowed.stderr


@pytest.mark.parametrize("how", ["option", "env", "ini"])
def test_the_opt_in_comes_from_the_user_not_the_target_file(pytester, listener, canary, monkeypatch, how):
    plant(pytester.path, listener.url, winrm_scheme="http", winrm_transport="basic")
    args = ["--vmr-target", "evil.vmrtarget.yml", "-p", "no:xdist", "-k", "VMR600"]
    if how == "option":
        args.append("--vmr-allow-cleartext-credentials")
    elif how == "env":
        monkeypatch.setenv("VMR_ALLOW_CLEARTEXT_CREDENTIALS", "1")
    else:
        pytester.makeini("[pytest]\nvmr_allow_cleartext_credentials = true\n")
    pytester.runpytest_subprocess(*args)
    assert listener.requests


def test_an_opt_in_written_into_the_target_file_is_not_an_opt_in(pytester, listener, canary):
    path = plant(pytester.path, listener.url, winrm_scheme="http", winrm_transport="basic")
    path.write_text(path.read_text() + "allow_cleartext_credentials: true\n")
    result = pytester.runpytest_subprocess("--vmr-target", "evil.vmrtarget.yml", "-p", "no:xdist", "-rf")
    assert listener.connections == 0, listener.heard()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "VMR001[evil.vmrtarget.yml]" in result.stdout.str()
    assert "allow_cleartext_credentials" in result.stdout.str()  # an unknown key of the target file


def test_vmrole_lint_takes_no_target_from_pass_through_arguments_or_the_environment(pytester, model, listener):
    plant(pytester.path, listener.url)
    smuggled = vmrole(
        pytester.path, "lint", "ServiceConfiguration.Cloud.cscfg", "--", "--vmr-target", "evil.vmrtarget.yml"
    )
    assert smuggled.returncode == int(pytest.ExitCode.USAGE_ERROR)
    assert "vmrole probe" in smuggled.stderr
    env = {**os.environ, "CANARY": CANARY, "VMR_TARGET": "evil.vmrtarget.yml"}
    from_env = subprocess.run(
        [sys.executable, "-m", "harness.cli", "lint", "ServiceConfiguration.Cloud.cscfg", "--no-allure", "-v"],
        cwd=pytester.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert listener.connections == 0, listener.heard()
    assert deployment_ids(from_env.stdout) == [], from_env.stdout
