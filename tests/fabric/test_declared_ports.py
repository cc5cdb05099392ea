"""Issue 11 item 6: each deployment on its own loopback VIP, its endpoints on the ports the csdef declares.

A real fabric (controller, instances, HAProxy, management API) from a csdef declaring HTTP 80 (bound for real
when the tests run as root, a fallback otherwise), 8080, HTTPS 8443, a port another program holds (fallback,
shown in `fabric status` and in Get Deployment) and InstanceInputEndpoint ranges; a second fabric with the same
declared ports at the same time, on another VIP.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from harness.fabric import ports
from harness.fabric.cli import describe
from harness.fabric.client import Fabric, up
from harness.fabric.spec import SpecError, build_spec

pytestmark = pytest.mark.xdist_group("fabric")

ROOT = os.geteuid() == 0

CSDEF = """<?xml version="1.0" encoding="utf-8"?>
<ServiceDefinition name="PortsSvc" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition">
  <WorkerRole name="Web" vmsize="Small">
    <Certificates>
      <Certificate name="SSL" storeLocation="LocalMachine" storeName="My" />
    </Certificates>
    <Endpoints>
      <InputEndpoint name="Http80" protocol="http" port="80" localPort="80" />
      <InputEndpoint name="Alt" protocol="http" port="8080" localPort="8080" />
      <InputEndpoint name="Secure" protocol="https" port="8443" localPort="443" certificate="SSL" />
      <InputEndpoint name="Taken" protocol="tcp" port="{taken}" localPort="9000" />
      <InstanceInputEndpoint name="Direct" localPort="7000" protocol="tcp">
        <AllocatePublicPortFrom>
          <FixedPortRange min="9100" max="9109" />
        </AllocatePublicPortFrom>
      </InstanceInputEndpoint>
      <InstanceInputEndpoint name="Solo" localPort="7001" protocol="tcp">
        <AllocatePublicPortFrom>
          <FixedPortRange min="9200" max="9200" />
        </AllocatePublicPortFrom>
      </InstanceInputEndpoint>
    </Endpoints>
  </WorkerRole>
</ServiceDefinition>
"""

CSCFG = """<?xml version="1.0" encoding="utf-8"?>
<ServiceConfiguration serviceName="PortsSvc" osFamily="2" osVersion="*"
    xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration">
  <Role name="Web">
    <Instances count="2" />
    <Certificates>
      <Certificate name="SSL" thumbprint="4CF78D149A067F24FC77BF1F0665077285027C98" thumbprintAlgorithm="sha1" />
    </Certificates>
  </Role>
</ServiceConfiguration>
"""


def _model(folder: Path, taken: int) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    csdef, cscfg = folder / "ServiceDefinition.csdef", folder / "ServiceConfiguration.cscfg"
    csdef.write_text(CSDEF.format(taken=taken), "utf-8")
    cscfg.write_text(CSCFG, "utf-8")
    return csdef, cscfg


def _banner(host: str, port: int) -> str:
    """The default app's tcp banner: ``VMROLE <instance> <endpoint>``."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.settimeout(5)
        return sock.recv(200).decode().strip()


def _get(url: str, **kw) -> requests.Response:
    with requests.Session() as s:
        s.trust_env = False
        return s.get(url, timeout=5, **kw)


@pytest.fixture(scope="module")
def holder() -> socket.socket:
    """Another program's listener on 0.0.0.0:<port>: no loopback address can bind that port any more."""
    (port,) = ports.allocate(1)
    sock = socket.socket()
    sock.bind(("0.0.0.0", port))
    sock.listen()
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def fabric(tmp_path_factory, holder) -> Fabric:
    folder = tmp_path_factory.mktemp("declared")
    csdef, cscfg = _model(folder / "model", holder.getsockname()[1])
    fab = up(folder / "state", csdef=csdef, cscfg=cscfg, step_seconds=0.1)
    yield fab
    report = fab.down()
    assert report.ports_still_open == [] and report.killed == []


def _fallbacks(fab: Fabric) -> dict[str, dict]:
    return {f["where"]: f for f in fab.data["port_fallbacks"]}


# ---- the VIP -------------------------------------------------------------------------------------------


def test_the_deployment_has_its_own_loopback_vip(fabric):
    vip = ipaddress.ip_address(fabric.vip)
    assert vip in ports.VIP_NETWORK and vip != ipaddress.ip_address("127.0.0.1")
    assert ports.vip_holder(fabric.vip)  # claimed by the controller for as long as it runs
    # deterministic: the state folder is the seed, and the first candidate was free
    assert fabric.vip == next(ports.vip_candidates(str(fabric.layout.root)))


def test_vip_claims_never_collide_across_processes(tmp_path):
    seed = f"seed-{tmp_path}"
    first = ports.claim_vip(seed)
    try:
        assert first.address == next(ports.vip_candidates(seed))
        code = f"from harness.fabric import ports; print(ports.claim_vip({seed!r}).address)"
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert other.stdout.strip() == list(ports.vip_candidates(seed))[1]  # the first one is held here
    finally:
        first.release()
    assert not ports.vip_holder(first.address)
    again = ports.claim_vip(seed)
    assert again.address == first.address  # released: the seed gets its first choice back
    again.release()


def test_an_address_some_other_program_uses_is_skipped(tmp_path):
    seed = f"seed-{tmp_path}"
    first, second = list(ports.vip_candidates(seed))[:2]
    with socket.socket() as squatter:
        squatter.bind((first, 0))  # not a fabric: no claim, but a listener on the address
        squatter.listen()
        claim = ports.claim_vip(seed)
        try:
            assert claim.address == second
        finally:
            claim.release()


# ---- declared ports --------------------------------------------------------------------------------------


def test_input_endpoints_answer_on_their_declared_ports(fabric):
    vip = fabric.vip
    by_name = {e["name"]: e for e in fabric.data["input_endpoints"]}
    assert by_name["Alt"]["public_port"] == 8080
    assert by_name["Secure"]["public_port"] == 8443
    assert _get(f"http://{vip}:8080/").headers["X-Served-By"] in {"Web_IN_0", "Web_IN_1"}
    if ROOT:  # a port below 1024 is bound for real when we may
        assert by_name["Http80"]["public_port"] == 80 and "Web/Http80" not in _fallbacks(fabric)
        assert _get(f"http://{vip}/").headers["X-Served-By"] in {"Web_IN_0", "Web_IN_1"}
    else:
        fb = _fallbacks(fabric)["Web/Http80"]
        assert fb["declared"] == 80 and "permission denied" in fb["reason"]


def test_https_endpoint_validates_for_the_vip(fabric):
    """The certificate the fabric issues for the cscfg's SSL certificate names the VIP: full validation,
    host name included, succeeds at VIP:8443."""
    ctx = ssl.create_default_context(cafile=fabric.ca_file)
    with (
        socket.create_connection((fabric.vip, 8443), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=fabric.vip) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert hashlib.sha1(der).hexdigest().upper() == fabric.data["certificates"]["SSL"]


def test_instance_input_endpoints_take_the_declared_range(fabric):
    for index in (0, 1):
        inst = fabric.instance(f"Web_IN_{index}")
        assert inst["instance_endpoints"]["Direct"] == 9100 + index
        assert inst["instance_declared_ports"]["Direct"] == 9100 + index
        # 1:1 to that instance only (its default app's banner names it)
        assert _banner(fabric.vip, 9100 + index) == f"VMROLE Web_IN_{index} Direct"
    assert fabric.instance("Web_IN_0")["instance_endpoints"]["Solo"] == 9200


def test_a_declared_port_that_cannot_be_bound_falls_back_and_says_so(fabric, holder):
    taken = holder.getsockname()[1]
    fb = _fallbacks(fabric)
    tk = fb["Web/Taken"]
    assert tk["declared"] == taken and tk["actual"] != taken and "in use" in tk["reason"]
    assert fabric.endpoint("Taken")["public_port"] == tk["actual"]
    assert _banner(fabric.vip, tk["actual"]).startswith("VMROLE Web_IN_")  # answers where the fabric says
    solo = fb["Web_IN_1/Solo"]  # the range 9200-9200 has no port for a second instance
    assert solo["declared"] is None and "9200-9200" in solo["reason"]
    assert fabric.instance("Web_IN_1")["instance_endpoints"]["Solo"] == solo["actual"]

    text = describe(fabric.refresh())
    assert f"port fallback   Web/Taken: declared {taken} -> {fabric.vip}:{tk['actual']} (" in text
    assert "port in use by another program" in text
    assert f"http://{fabric.vip}:8080  (declared port 8080)" in text
    assert f"FALLBACK from declared port {taken}" in text


def test_get_deployment_reports_the_vip_and_where_each_endpoint_answers(fabric):
    sms = fabric.management_client()
    dep = sms.get_deployment_by_slot(fabric.data["service_name"], "production")
    assert [v.address for v in dep.virtual_ips] == [fabric.vip]
    listed = {(e.vip, int(e.port)) for e in dep.input_endpoint_list}
    expected = {(fabric.vip, e["public_port"]) for e in fabric.data["input_endpoints"]}
    assert listed == expected  # the fallback port, not the declared one: where it really answers
    assert (fabric.vip, 8080) in listed
    inst = next(ri for ri in dep.role_instance_list if ri.instance_name == "Web_IN_1")
    direct = next(e for e in inst.instance_endpoints if e.name == "Direct")
    assert (direct.vip, int(direct.public_port)) == (fabric.vip, 9101)


def test_two_fabrics_bind_the_same_declared_ports_on_their_own_vips(fabric, holder, tmp_path):
    csdef, cscfg = _model(tmp_path / "model", holder.getsockname()[1])
    second = up(tmp_path / "state", csdef=csdef, cscfg=cscfg, step_seconds=0.1)
    try:
        assert second.vip != fabric.vip
        assert second.endpoint("Alt")["public_port"] == 8080 == fabric.endpoint("Alt")["public_port"]
        assert "Web/Alt" not in _fallbacks(second) and "Web_IN_0/Direct" not in _fallbacks(second)
        assert _get(f"http://{second.vip}:8080/").status_code == 200
        assert _get(f"http://{fabric.vip}:8080/").status_code == 200
        assert _banner(second.vip, 9100) == "VMROLE Web_IN_0 Direct"
    finally:
        report = second.down()
    assert report.ports_still_open == [] and report.killed == []
    assert not ports.is_listening(8080, second.vip)
    assert ports.is_listening(8080, fabric.vip)  # the first one is untouched


# ---- the pieces, without a fabric ---------------------------------------------------------------------


def test_bind_problem_names_the_reason(tmp_path):
    claim = ports.claim_vip(f"seed-{tmp_path}")
    try:
        with socket.socket() as sock:
            sock.bind((claim.address, 0))
            sock.listen()
            port = sock.getsockname()[1]
            assert ports.bind_problem(claim.address, port) == "port in use by another program"
        assert ports.bind_problem(claim.address, port) is None
    finally:
        claim.release()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_privileged_port_without_the_privilege_is_permission_denied():
    """Run the probe as an unprivileged user (a forked child that drops to nobody when we are root)."""
    if ports.unprivileged_port_start() <= 80:
        pytest.skip("this machine lets anyone bind port 80 (net.ipv4.ip_unprivileged_port_start)")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, probe, report, exit without running pytest's teardown
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            os.write(write, (ports.bind_problem("127.0.0.1", 80) or "None").encode())
        finally:
            os._exit(0)
    os.close(write)
    reason = os.read(read, 4096).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert reason.startswith("permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"), reason


def test_spec_falls_back_with_an_injected_check(tmp_path):
    csdef, cscfg = _model(tmp_path, 8081)

    def check(host: str, port: int, *, udp: bool = False) -> str | None:
        assert host == "127.99.0.7"
        return "marked unbindable by the test" if port in (8443, 9101) else None

    spec = build_spec(csdef=csdef, cscfg=cscfg, vip="127.99.0.7", port_check=check)
    assert spec.vip == "127.99.0.7"
    fb = {f.where: f for f in spec.port_fallbacks}
    assert set(fb) == {"Web/Secure", "Web_IN_1/Direct", "Web_IN_1/Solo"}
    assert fb["Web/Secure"].declared == 8443 and fb["Web/Secure"].reason == "marked unbindable by the test"
    assert fb["Web/Secure"].actual not in (80, 8080, 8081, 8443)
    assert {e.name: e.public_port for e in spec.input_endpoints}["Taken"] == 8081
    assert spec.instance("Web_IN_0").instance_public_ports == {"Direct": 9100, "Solo": 9200}


def test_the_same_declared_port_twice_falls_back_for_the_second(tmp_path):
    csdef, cscfg = _model(tmp_path, 8080)  # "Taken" now declares 8080, as "Alt" does
    spec = build_spec(csdef=csdef, cscfg=cscfg, vip="127.99.0.8", port_check=lambda *a, **k: None)
    (fb,) = [f for f in spec.port_fallbacks if f.where == "Web/Taken"]
    assert fb.declared == 8080 and "already used by another endpoint" in fb.reason


def test_no_vip_left_is_a_clear_spec_error(tmp_path, monkeypatch):
    csdef, cscfg = _model(tmp_path, 8080)
    monkeypatch.setattr(ports, "VIP_ATTEMPTS", 2)
    held = [ports.claim_vip(f"seed-{tmp_path}") for _ in range(2)]
    try:
        with pytest.raises(SpecError, match="no free VIP address after 2 tries"):
            build_spec(csdef=csdef, cscfg=cscfg, vip_seed=f"seed-{tmp_path}")
    finally:
        for claim in held:
            claim.release()
