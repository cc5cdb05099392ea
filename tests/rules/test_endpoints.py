"""VMR510-VMR519: endpoint protocols, ports, certificates, probes and limits."""

from __future__ import annotations

import pytest
from harness.checks.servicemodel.endpoints import (
    DuplicateInternalPort,
    DuplicatePublicPort,
    HttpsEndpointWithoutCertificate,
    InstancePortRangeTooSmall,
    InvalidPort,
    TooManyInputEndpoints,
    TooManyInternalEndpoints,
    UndefinedLoadBalancerProbe,
    UnsupportedEndpointProtocol,
    VmRoleUdpWithoutConnect,
)

ROLE = "/ServiceDefinition/WebRole[@name='Web']"
GOOD = """
<LoadBalancerProbes>
  <LoadBalancerProbe name="Health" protocol="http" port="80" path="/health" />
</LoadBalancerProbes>
<WebRole name="Web">
  <Certificates><Certificate name="SSL" storeLocation="LocalMachine" storeName="My" /></Certificates>
  <Endpoints>
    <InputEndpoint name="Http" protocol="http" port="80" localPort="8080" loadBalancerProbe="Health" />
    <InputEndpoint name="Https" protocol="https" port="443" certificate="SSL" />
    <InputEndpoint name="Dns" protocol="udp" port="53" localPort="*" />
    <InputEndpoint name="DnsTcp" protocol="tcp" port="53" />
    <InternalEndpoint name="Cache" protocol="tcp" port="8081" />
    <InternalEndpoint name="Dynamic" protocol="http" />
    <InternalEndpoint name="Range" protocol="any"><FixedPortRange min="9000" max="9010" /></InternalEndpoint>
    <InstanceInputEndpoint name="Direct" protocol="tcp" localPort="3390">
      <AllocatePublicPortFrom><FixedPortRange min="10000" max="10009" /></AllocatePublicPortFrom>
    </InstanceInputEndpoint>
  </Endpoints>
</WebRole>
<WorkerRole name="Worker">
  <Endpoints>
    <InputEndpoint name="Api" protocol="tcp" port="8080" />
    <InternalEndpoint name="Cache" protocol="tcp" port="8081" />
    <InstanceInputEndpoint name="Direct" protocol="udp" localPort="3390">
      <AllocatePublicPortFrom><FixedPortRange min="10000" max="10009" /></AllocatePublicPortFrom>
    </InstanceInputEndpoint>
  </Endpoints>
</WorkerRole>
"""
GOOD_CONFIG = """
<Role name="Web"><Instances count="10" /></Role>
<Role name="Worker"><Instances count="2" /></Role>
"""

CSDEF_RULES = [
    HttpsEndpointWithoutCertificate,
    DuplicatePublicPort,
    InvalidPort,
    DuplicateInternalPort,
    UnsupportedEndpointProtocol,
    TooManyInputEndpoints,
    TooManyInternalEndpoints,
    UndefinedLoadBalancerProbe,
]


def web_role(endpoints: str, certificates: str = "") -> str:
    return f'<WebRole name="Web">{certificates}<Endpoints>{endpoints}</Endpoints></WebRole>'


@pytest.mark.parametrize("kind", ["csdef", "cspkg"])
@pytest.mark.parametrize("rule", CSDEF_RULES, ids=lambda r: r.id)
def test_good_definition_passes(sm, rule, kind):
    assert sm.run(rule, sm.subject_for(sm.csdef(GOOD, kind=kind))) == []


def test_good_pair_passes_range_check(sm):
    subject = sm.subject_for(sm.csdef(GOOD), sm.cscfg(GOOD_CONFIG), kind=sm.CSCFG)
    assert sm.run(InstancePortRangeTooSmall, subject) == []


# ---- VMR510 ----------------------------------------------------------------------------------------


def test_vmr510_https_without_certificate(sm, snapshot):
    definition = sm.csdef(web_role('<InputEndpoint name="Https" protocol="HTTPS" port="443" />'))
    snapshot.assert_match(sm.run(HttpsEndpointWithoutCertificate, sm.subject_for(definition)))


def test_vmr510_https_with_undeclared_certificate_in_package(sm, snapshot):
    definition = sm.csdef(
        web_role('<InputEndpoint name="Https" protocol="https" port="443" certificate="Missing" />'), kind=sm.CSPKG
    )
    snapshot.assert_match(sm.run(HttpsEndpointWithoutCertificate, sm.subject_for(definition)))


def test_vmr510_plugin_certificate_counts_as_declared(sm):
    body = web_role(
        '<InputEndpoint name="Https" protocol="https" port="443" '
        'certificate="Microsoft.WindowsAzure.Plugins.RemoteAccess.PasswordEncryption" />'
    ).replace("</WebRole>", '<Imports><Import moduleName="RemoteAccess" /></Imports></WebRole>')
    assert sm.run(HttpsEndpointWithoutCertificate, sm.subject_for(sm.csdef(body))) == []


# ---- VMR511 ----------------------------------------------------------------------------------------


def test_vmr511_same_public_port_across_roles(sm, snapshot):
    body = web_role('<InputEndpoint name="Http" protocol="http" port="80" />') + (
        '<WorkerRole name="Api"><Endpoints><InputEndpoint name="Api" protocol="tcp" port="80" />'
        "</Endpoints></WorkerRole>"
    )
    snapshot.assert_match(sm.run(DuplicatePublicPort, sm.subject_for(sm.csdef(body))))


def test_vmr511_instance_range_overlapping_input_port(sm, snapshot):
    body = web_role(
        '<InputEndpoint name="Rdp" protocol="tcp" port="10005" />'
        '<InstanceInputEndpoint name="Direct" protocol="tcp" localPort="3390">'
        '<AllocatePublicPortFrom><FixedPortRange min="10000" max="10009" /></AllocatePublicPortFrom>'
        "</InstanceInputEndpoint>"
    )
    snapshot.assert_match(sm.run(DuplicatePublicPort, sm.subject_for(sm.csdef(body))))


def test_vmr511_udp_and_tcp_may_share_a_port(sm):
    body = web_role(
        '<InputEndpoint name="DnsU" protocol="udp" port="53" /><InputEndpoint name="DnsT" protocol="tcp" port="53" />'
    )
    assert sm.run(DuplicatePublicPort, sm.subject_for(sm.csdef(body))) == []


def test_vmr511_two_udp_on_one_port(sm, snapshot):
    body = web_role(
        '<InputEndpoint name="A" protocol="udp" port="53" /><InputEndpoint name="B" protocol="udp" port="53" />'
    )
    snapshot.assert_match(sm.run(DuplicatePublicPort, sm.subject_for(sm.csdef(body))))


# ---- VMR512 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoints",
    [
        pytest.param('<InputEndpoint name="E" protocol="tcp" port="0" />', id="input-port-0"),
        pytest.param('<InputEndpoint name="E" protocol="tcp" />', id="input-no-port"),
        pytest.param('<InputEndpoint name="E" protocol="tcp" port="80" localPort="80800" />', id="local-port-too-big"),
        pytest.param('<InternalEndpoint name="I" protocol="tcp" port="http" />', id="internal-port-word"),
        pytest.param(
            '<InternalEndpoint name="I" protocol="any"><FixedPortRange min="20000" max="10000" /></InternalEndpoint>',
            id="reversed-range",
        ),
        pytest.param(
            '<InternalEndpoint name="I" protocol="tcp"><FixedPort port="70000" /></InternalEndpoint>',
            id="fixed-port-too-big",
        ),
        pytest.param(
            '<InstanceInputEndpoint name="D" protocol="tcp" localPort="3390">'
            '<AllocatePublicPortFrom><FixedPortRange min="10000" max="x" /></AllocatePublicPortFrom>'
            "</InstanceInputEndpoint>",
            id="instance-range-max-word",
        ),
        pytest.param(
            '<InstanceInputEndpoint name="D" protocol="tcp" localPort="3390" />', id="instance-no-public-range"
        ),
        pytest.param(
            '<InstanceInputEndpoint name="D" protocol="tcp" localPort="*">'
            '<AllocatePublicPortFrom><FixedPortRange min="10000" max="10001" /></AllocatePublicPortFrom>'
            "</InstanceInputEndpoint>",
            id="instance-local-port-star",
        ),
    ],
)
def test_vmr512_invalid_port(sm, snapshot, endpoints):
    snapshot.assert_match(sm.run(InvalidPort, sm.subject_for(sm.csdef(web_role(endpoints)))))


def test_vmr512_probe_port(sm, snapshot):
    body = '<LoadBalancerProbes><LoadBalancerProbe name="P" protocol="tcp" /></LoadBalancerProbes>'
    snapshot.assert_match(sm.run(InvalidPort, sm.subject_for(sm.csdef(body + web_role("")))))


# ---- VMR513 ----------------------------------------------------------------------------------------


def test_vmr513_internal_port_reused_in_role(sm, snapshot):
    body = web_role(
        '<InternalEndpoint name="A" protocol="tcp" port="8080" />'
        '<InternalEndpoint name="B" protocol="any"><FixedPortRange min="8000" max="8100" /></InternalEndpoint>'
    )
    snapshot.assert_match(sm.run(DuplicateInternalPort, sm.subject_for(sm.csdef(body))))


def test_vmr513_udp_and_tcp_internal_may_share(sm):
    body = web_role(
        '<InternalEndpoint name="A" protocol="tcp" port="8080" />'
        '<InternalEndpoint name="B" protocol="udp" port="8080" />'
    )
    assert sm.run(DuplicateInternalPort, sm.subject_for(sm.csdef(body))) == []


# ---- VMR514 ----------------------------------------------------------------------------------------


def test_vmr514_range_smaller_than_instance_count(sm, snapshot):
    config = GOOD_CONFIG.replace('<Instances count="10" />', '<Instances count="11" />')
    subject = sm.subject_for(sm.csdef(GOOD), sm.cscfg(config), kind=sm.CSCFG)
    snapshot.assert_match(sm.run(InstancePortRangeTooSmall, subject))


def test_vmr514_needs_the_configuration(sm):
    assert "does not apply to csdef" in sm.skip_reason(InstancePortRangeTooSmall, sm.subject_for(sm.csdef(GOOD)))


# ---- VMR515 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoints",
    [
        pytest.param(
            '<InstanceInputEndpoint name="D" protocol="https" localPort="443">'
            '<AllocatePublicPortFrom><FixedPortRange min="10000" max="10001" /></AllocatePublicPortFrom>'
            "</InstanceInputEndpoint>",
            id="instance-https",
        ),
        pytest.param('<InputEndpoint name="E" protocol="any" port="80" />', id="input-any"),
        pytest.param('<InternalEndpoint name="I" protocol="https" port="80" />', id="internal-https"),
        pytest.param('<InputEndpoint name="E" port="80" />', id="input-no-protocol"),
    ],
)
def test_vmr515_protocol_not_allowed(sm, snapshot, endpoints):
    snapshot.assert_match(sm.run(UnsupportedEndpointProtocol, sm.subject_for(sm.csdef(web_role(endpoints)))))


def test_vmr515_probe_protocol(sm, snapshot):
    body = '<LoadBalancerProbes><LoadBalancerProbe name="P" protocol="udp" port="53" /></LoadBalancerProbes>'
    snapshot.assert_match(sm.run(UnsupportedEndpointProtocol, sm.subject_for(sm.csdef(body + web_role("")))))


# ---- VMR516 / VMR517 -------------------------------------------------------------------------------


def test_vmr516_too_many_input_endpoints(sm, snapshot):
    endpoints = "".join(f'<InputEndpoint name="E{i}" protocol="tcp" port="{1000 + i}" />' for i in range(26))
    snapshot.assert_match(sm.run(TooManyInputEndpoints, sm.subject_for(sm.csdef(web_role(endpoints)))))


def test_vmr516_twenty_five_is_fine(sm):
    endpoints = "".join(f'<InputEndpoint name="E{i}" protocol="tcp" port="{1000 + i}" />' for i in range(25))
    assert sm.run(TooManyInputEndpoints, sm.subject_for(sm.csdef(web_role(endpoints)))) == []


def test_vmr517_vm_role_service_limits_internal_endpoints_per_role(sm, snapshot):
    endpoints = "".join(f'<InternalEndpoint name="I{i}" protocol="tcp" port="{2000 + i}" />' for i in range(6))
    body = f'<VirtualMachineRole name="Vm"><Endpoints>{endpoints}</Endpoints></VirtualMachineRole>'
    snapshot.assert_match(sm.run(TooManyInternalEndpoints, sm.subject_for(sm.csdef(body))))


def test_vmr517_later_platform_allows_six_per_role(sm):
    endpoints = "".join(f'<InternalEndpoint name="I{i}" protocol="tcp" port="{2000 + i}" />' for i in range(6))
    assert sm.run(TooManyInternalEndpoints, sm.subject_for(sm.csdef(web_role(endpoints)))) == []


def test_vmr517_more_than_25_per_service(sm, snapshot):
    roles = "".join(
        f'<WorkerRole name="W{r}"><Endpoints>'
        + "".join(f'<InternalEndpoint name="I{i}" protocol="tcp" port="{2000 + i}" />' for i in range(9))
        + "</Endpoints></WorkerRole>"
        for r in range(3)
    )
    snapshot.assert_match(sm.run(TooManyInternalEndpoints, sm.subject_for(sm.csdef(roles))))


# ---- VMR518 ----------------------------------------------------------------------------------------


def test_vmr518_undefined_probe(sm, snapshot):
    body = web_role('<InputEndpoint name="Http" protocol="http" port="80" loadBalancerProbe="health" />')
    body = GOOD.split("<WebRole")[0] + body
    snapshot.assert_match(sm.run(UndefinedLoadBalancerProbe, sm.subject_for(sm.csdef(body))))


# ---- VMR519 vm-role-udp-without-connect -----------------------------------------------------------

VM_UDP = """
<VirtualMachineRole name="Game" vmsize="Small">
  <Endpoints>
    <InputEndpoint name="Voice" protocol="udp" port="3478" />
    <InputEndpoint name="Web" protocol="tcp" port="80" />
  </Endpoints>
  {imports}
</VirtualMachineRole>
<WorkerRole name="Relay"><Endpoints><InputEndpoint name="Dns" protocol="udp" port="53" /></Endpoints></WorkerRole>
"""


def test_vmr519_flags_udp_on_a_vm_role_without_connect(sm, snapshot):
    snapshot.assert_match(sm.run(VmRoleUdpWithoutConnect, sm.subject_for(sm.csdef(VM_UDP.format(imports="")))))


def test_vmr519_passes_with_connect_and_ignores_other_role_kinds(sm):
    body = VM_UDP.format(imports='<Imports><Import moduleName="Connect" /></Imports>')
    assert sm.run(VmRoleUdpWithoutConnect, sm.subject_for(sm.csdef(body))) == []
    packaged = sm.csdef(body, kind="cspkg")
    assert sm.run(VmRoleUdpWithoutConnect, sm.subject_for(packaged)) == []
