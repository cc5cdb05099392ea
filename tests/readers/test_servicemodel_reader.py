"""The csdef/cscfg readers: every element shape rules rely on, encodings, legacy shapes, locations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.engine.artefact import Artefact
from harness.facts.servicemodel import INPUT, INSTANCE_INPUT, INTERNAL, VM_ROLE, WEB_ROLE, WORKER_ROLE
from harness.readers.errors import Unreadable
from harness.readers.servicemodel import (
    parse_configuration,
    parse_definition,
    read_configuration,
    read_definition,
)

CSDEF = """<?xml version="1.0" encoding="utf-8"?>
<ServiceDefinition name="Svc" schemaVersion="2012-05.1.7"
    xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition">
  <WebRole name="Web" vmsize="Medium">
    <Sites>
      <Site name="Web"><Bindings><Binding name="b" endpointName="HttpIn" /></Bindings></Site>
    </Sites>
    <Startup>
      <Task commandLine="setup.cmd" executionContext="elevated">
        <Environment>
          <Variable name="EMULATED"><RoleInstanceValue xpath="/RoleEnvironment/Deployment/@emulated" /></Variable>
          <Variable name="TOKEN" value="SECRETTOKEN" />
        </Environment>
      </Task>
    </Startup>
    <Runtime executionContext="elevated">
      <Environment><Variable name="MODE" value="prod" /></Environment>
    </Runtime>
    <Endpoints>
      <InputEndpoint name="HttpIn" protocol="http" port="80" />
      <InputEndpoint name="HttpsIn" protocol="https" port="443" localPort="8443" certificate="SSL"
          loadBalancerProbe="Probe1" ignoreRoleInstanceStatus="true" />
      <InternalEndpoint name="Fixed" protocol="tcp">
        <FixedPort port="9000" />
      </InternalEndpoint>
      <InternalEndpoint name="Range" protocol="any">
        <FixedPortRange min="9100" max="9110" />
      </InternalEndpoint>
      <InternalEndpoint name="Dynamic" protocol="tcp" />
      <InstanceInputEndpoint name="Direct" localPort="3390" protocol="tcp">
        <AllocatePublicPortFrom><FixedPortRange min="10000" max="10010" /></AllocatePublicPortFrom>
      </InstanceInputEndpoint>
    </Endpoints>
    <Certificates>
      <Certificate name="SSL" storeLocation="LocalMachine" storeName="My" permissionLevel="elevated" />
    </Certificates>
    <ConfigurationSettings>
      <Setting name="Conn" />
      <Setting name="Other" />
    </ConfigurationSettings>
    <Imports>
      <Import moduleName="Diagnostics" />
      <Import moduleName="RemoteAccess" />
    </Imports>
    <LocalResources>
      <LocalStorage name="Scratch" sizeInMB="1024" cleanOnRoleRecycle="false" />
      <LocalStorage name="Defaulted" />
    </LocalResources>
  </WebRole>
  <WorkerRole name="Worker">
    <Endpoints><InputEndpoint name="Tcp" protocol="tcp" port="8080" localPort="*" /></Endpoints>
  </WorkerRole>
  <VirtualMachineRole name="MyVMRole" vmsize="Small">
    <Endpoints><InputEndpoint name="Rdp" protocol="tcp" port="3389" /></Endpoints>
    <OsImage href="image.vhd" />
  </VirtualMachineRole>
  <LoadBalancerProbes>
    <LoadBalancerProbe name="Probe1" protocol="http" port="80" path="/health" />
  </LoadBalancerProbes>
</ServiceDefinition>
"""

CSCFG = """<?xml version="1.0" encoding="utf-8"?>
<ServiceConfiguration serviceName="Svc" osFamily="2" osVersion="*" schemaVersion="2012-05.1.7"
    xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration">
  <Role name="Web">
    <Instances count="2" />
    <ConfigurationSettings>
      <Setting name="Conn" value="DefaultEndpointsProtocol=https;AccountName=a;AccountKey=SECRETVALUE" />
    </ConfigurationSettings>
    <Certificates>
      <Certificate name="SSL" thumbprint="0123456789ABCDEF0123456789ABCDEF01234567" thumbprintAlgorithm="sha1" />
    </Certificates>
  </Role>
  <Role name="MyVMRole">
    <OsImage href="myimage.vhd" />
    <Instances count="x" />
  </Role>
  <NetworkConfiguration><Dns /></NetworkConfiguration>
</ServiceConfiguration>
"""

LEGACY_CSDEF = """<?xml version="1.0" encoding="utf-8"?>
<ServiceDefinition name="Old" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition">
  <WebRole name="WebRole" enableNativeCodeExecution="false">
    <InputEndpoints>
      <!-- Must use port 80 for http and port 443 for https when running in the cloud -->
      <InputEndpoint name="HttpIn" protocol="http" port="80" />
    </InputEndpoints>
    <ConfigurationSettings><Setting name="Conn" /></ConfigurationSettings>
    <LocalStorage name="Tmp" sizeInMB="10" />
  </WebRole>
  <WorkerRole name="Worker">
    <InternalEndpoints><InternalEndpoint name="Int" protocol="tcp" port="5000" /></InternalEndpoints>
  </WorkerRole>
</ServiceDefinition>
"""

ROOT = "/ServiceDefinition"
WEB = f"{ROOT}/WebRole[@name='Web']"

Make = Callable[..., Artefact]


@pytest.fixture
def defn(artefact: Make):
    return parse_definition(CSDEF.encode(), artefact("ServiceDefinition.csdef"))


def test_service_attributes(defn) -> None:
    assert defn.name == "Svc"
    assert defn.schema_version == "2012-05.1.7"
    assert defn.namespace == "http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition"
    assert defn.legacy_shapes is False
    assert defn.part is None
    assert [(r.kind, r.name, r.vmsize) for r in defn.roles] == [
        (WEB_ROLE, "Web", "Medium"),
        (WORKER_ROLE, "Worker", None),
        (VM_ROLE, "MyVMRole", "Small"),
    ]


def test_role_location_and_line(defn) -> None:
    web = defn.role("Web")
    assert web is not None
    assert web.location == WEB
    assert web.line == 4


def test_input_endpoints(defn) -> None:
    web = defn.role("Web")
    http, https = (e for e in web.endpoints if e.kind == INPUT)
    assert (http.name, http.protocol, http.port, http.local_port) == ("HttpIn", "http", "80", None)
    assert http.location == f"{WEB}/Endpoints/InputEndpoint[@name='HttpIn']"
    assert https.local_port == "8443"
    assert https.certificate == "SSL"
    assert https.load_balancer_probe == "Probe1"
    assert https.ignore_role_instance_status == "true"


def test_internal_endpoints_fixed_ports(defn) -> None:
    internal = {e.name: e for e in defn.role("Web").endpoints if e.kind == INTERNAL}
    fixed = internal["Fixed"].fixed_ports
    assert [(p.min, p.max) for p in fixed] == [("9000", "9000")]
    assert fixed[0].location == f"{WEB}/Endpoints/InternalEndpoint[@name='Fixed']/FixedPort"
    assert [(p.min, p.max) for p in internal["Range"].fixed_ports] == [("9100", "9110")]
    assert internal["Dynamic"].fixed_ports == ()
    assert internal["Dynamic"].port is None


def test_instance_input_endpoint(defn) -> None:
    (direct,) = (e for e in defn.role("Web").endpoints if e.kind == INSTANCE_INPUT)
    assert direct.local_port == "3390"
    assert direct.public_port_range is not None
    assert (direct.public_port_range.min, direct.public_port_range.max) == ("10000", "10010")
    assert direct.public_port_range.location.endswith("/AllocatePublicPortFrom/FixedPortRange")


def test_certificates_settings_imports_storage(defn) -> None:
    web = defn.role("Web")
    (cert,) = web.certificates
    assert (cert.name, cert.store_location, cert.store_name, cert.permission_level) == (
        "SSL",
        "LocalMachine",
        "My",
        "elevated",
    )
    assert cert.location == f"{WEB}/Certificates/Certificate[@name='SSL']"
    assert [s.name for s in web.settings] == ["Conn", "Other"]
    assert web.imports_module("remoteaccess")
    scratch, defaulted = web.local_storage
    assert (scratch.size_mb_value, scratch.cleaned_on_recycle) == (1024, False)
    assert (defaulted.size_mb, defaulted.size_mb_value, defaulted.cleaned_on_recycle) == (None, 100, True)
    assert scratch.location == f"{WEB}/LocalResources/LocalStorage[@name='Scratch']"


def test_children_and_child_locations(defn) -> None:
    web = defn.role("Web")
    assert web.children[:4] == ("Sites", "Startup", "Runtime", "Endpoints")
    assert web.child_location("Startup") == f"{WEB}/Startup"
    vm = defn.role("MyVMRole")
    assert "OsImage" in vm.children
    assert vm.child_location("OsImage") == f"{ROOT}/VirtualMachineRole[@name='MyVMRole']/OsImage"


def test_environment_variables(defn) -> None:
    env = defn.role("Web").environment
    assert [(v.source, v.name, v.value) for v in env] == [
        ("Startup", "EMULATED", None),
        ("Startup", "TOKEN", "SECRETTOKEN"),
        ("Runtime", "MODE", "prod"),
    ]
    assert env[1].location == f"{WEB}/Startup/Task/Environment/Variable[@name='TOKEN']"
    assert env[2].location == f"{WEB}/Runtime/Environment/Variable[@name='MODE']"
    assert defn.role("Worker").environment == ()


def test_load_balancer_probes(defn) -> None:
    (probe,) = defn.load_balancer_probes
    assert (probe.name, probe.protocol, probe.port, probe.path) == ("Probe1", "http", "80", "/health")
    assert probe.location == f"{ROOT}/LoadBalancerProbes/LoadBalancerProbe[@name='Probe1']"


def test_part_prefixes_every_location(artefact: Make) -> None:
    part = "SDPackage_x.csdx!ServiceDefinition.build.csdef"
    d = parse_definition(CSDEF.encode(), artefact("p.cspkg"), part=part)
    assert d.part == part
    web = d.role("Web")
    assert web.location == f"{part}!{WEB}"
    locations = [web.location, *(e.location for e in web.endpoints), *(c for _, c in web.child_locations)]
    locations += [p.location for e in web.endpoints for p in e.fixed_ports]
    assert all(loc.startswith(f"{part}!/ServiceDefinition/") for loc in locations)


def test_legacy_wrappers_give_same_endpoint_facts(artefact: Make) -> None:
    d = parse_definition(LEGACY_CSDEF.encode(), artefact("old.csdef"))
    assert d.legacy_shapes is True
    (http,) = d.role("WebRole").endpoints
    assert (http.kind, http.name, http.protocol, http.port) == (INPUT, "HttpIn", "http", "80")
    assert http.location == "/ServiceDefinition/WebRole[@name='WebRole']/InputEndpoints/InputEndpoint[@name='HttpIn']"
    (internal,) = d.role("Worker").endpoints
    assert (internal.kind, internal.port) == (INTERNAL, "5000")
    assert [s.name for s in d.role("WebRole").local_storage] == ["Tmp"]


def test_modern_file_is_not_legacy(artefact: Make) -> None:
    assert not parse_definition(CSDEF.encode(), artefact("a.csdef")).legacy_shapes


def test_no_namespace_and_unnamed_siblings(artefact: Make) -> None:
    xml = b"<ServiceDefinition><WorkerRole name='W'><Startup><Task/><Task/></Startup></WorkerRole></ServiceDefinition>"
    d = parse_definition(xml, artefact("a.csdef"))
    assert d.namespace is None
    assert d.roles[0].children == ("Startup",)


def test_duplicate_roles_kept_in_order(artefact: Make) -> None:
    xml = b"<ServiceDefinition><WebRole name='A'/><WebRole name='A'/><WorkerRole/></ServiceDefinition>"
    d = parse_definition(xml, artefact("a.csdef"))
    assert [r.name for r in d.roles] == ["A", "A", ""]
    assert d.roles[2].location == "/ServiceDefinition/WorkerRole"


def test_wrong_root_is_unreadable(artefact: Make) -> None:
    with pytest.raises(Unreadable, match=r"root element is <ServiceConfiguration>, expected <ServiceDefinition>"):
        parse_definition(CSCFG.encode(), artefact("a.csdef"))
    with pytest.raises(Unreadable, match=r"root element is <ServiceDefinition>, expected <ServiceConfiguration>"):
        parse_configuration(CSDEF.encode(), artefact("a.cscfg"))


# ---- configuration -------------------------------------------------------------------------------


@pytest.fixture
def cfg(artefact: Make):
    return parse_configuration(CSCFG.encode(), artefact("ServiceConfiguration.Cloud.cscfg"))


def test_configuration_attributes(cfg) -> None:
    assert (cfg.service_name, cfg.os_family, cfg.os_version, cfg.schema_version) == ("Svc", "2", "*", "2012-05.1.7")
    assert cfg.namespace.endswith("/ServiceConfiguration")
    assert cfg.has_network_configuration
    assert [r.name for r in cfg.roles] == ["Web", "MyVMRole"]


def test_configuration_role(cfg) -> None:
    web = cfg.role("Web")
    assert web.location == "/ServiceConfiguration/Role[@name='Web']"
    assert (web.instances, web.instance_count) == ("2", 2)
    assert web.instances_location == "/ServiceConfiguration/Role[@name='Web']/Instances"
    conn = web.setting("Conn")
    assert conn is not None and conn.value.endswith("SECRETVALUE")
    assert conn.location == "/ServiceConfiguration/Role[@name='Web']/ConfigurationSettings/Setting[@name='Conn']"
    (cert,) = web.certificates
    assert (cert.thumbprint_algorithm, len(cert.thumbprint)) == ("sha1", 40)
    assert not web.has_os_image and web.os_image_href is None


def test_configuration_vm_role_os_image(cfg) -> None:
    vm = cfg.role("MyVMRole")
    assert vm.has_os_image
    assert vm.os_image_href == "myimage.vhd"
    assert vm.os_image_location == "/ServiceConfiguration/Role[@name='MyVMRole']/OsImage"
    assert (vm.instances, vm.instance_count) == ("x", None)


def test_os_image_tolerant_spelling(artefact: Make) -> None:
    xml = b"<ServiceConfiguration><Role name='V'><OSImage HREF='img' /></Role></ServiceConfiguration>"
    vm = parse_configuration(xml, artefact("c.cscfg")).roles[0]
    assert (vm.has_os_image, vm.os_image_href) == (True, "img")


def test_os_image_without_href(artefact: Make) -> None:
    xml = b"<ServiceConfiguration><Role name='V'><OsImage /></Role></ServiceConfiguration>"
    vm = parse_configuration(xml, artefact("c.cscfg")).roles[0]
    assert (vm.has_os_image, vm.os_image_href) == (True, None)


def test_secret_values_never_in_error_messages(artefact: Make) -> None:
    broken = CSCFG.replace("</Role>", "</Rolle>", 1).encode()
    with pytest.raises(Unreadable) as info:
        parse_configuration(broken, artefact("c.cscfg"))
    assert "SECRETVALUE" not in str(info.value)
    assert "mismatched tag" in info.value.problem


# ---- encodings and reading from disk ---------------------------------------------------------------


def _variants(text: str) -> dict[str, bytes]:
    crlf = text.replace("\n", "\r\n")
    utf16_decl = crlf.replace('encoding="utf-8"', 'encoding="utf-16"')
    return {
        "utf8": text.encode(),
        "utf8-bom": b"\xef\xbb\xbf" + text.encode(),
        "utf8-crlf": crlf.encode(),
        "utf16le-bom": b"\xff\xfe" + utf16_decl.encode("utf-16-le"),
        "utf16be-bom": b"\xfe\xff" + utf16_decl.encode("utf-16-be"),
        "utf16-python": utf16_decl.encode("utf-16"),
        "utf16le-nobom": utf16_decl.encode("utf-16-le"),
        "utf8-declared-utf16": utf16_decl.encode(),  # .NET StringWriter output saved as UTF-8
    }


@pytest.mark.parametrize("variant", list(_variants(CSDEF)))
def test_definition_encodings(variant: str, artefact: Make, tmp_path: Path) -> None:
    a = artefact(f"{variant}.csdef")
    a.path.write_bytes(_variants(CSDEF)[variant])
    d = read_definition(a)
    assert [r.name for r in d.roles] == ["Web", "Worker", "MyVMRole"]
    assert d.role("Web").line == 4
    assert len(d.role("Web").endpoints) == 6


@pytest.mark.parametrize("variant", list(_variants(CSCFG)))
def test_configuration_encodings(variant: str, artefact: Make) -> None:
    a = artefact(f"{variant}.cscfg")
    a.path.write_bytes(_variants(CSCFG)[variant])
    c = read_configuration(a)
    assert c.role("Web").instance_count == 2
    assert c.role("MyVMRole").os_image_href == "myimage.vhd"


def test_declared_single_byte_encoding(artefact: Make) -> None:
    xml = '<?xml version="1.0" encoding="windows-1252"?><ServiceConfiguration serviceName="Caf\xe9"/>'
    c = parse_configuration(xml.encode("cp1252"), artefact("c.cscfg"))
    assert c.service_name == "Caf\xe9"


def test_undeclared_non_utf8_is_unreadable(artefact: Make) -> None:
    with pytest.raises(Unreadable, match="not valid UTF-8"):
        parse_configuration(b'<ServiceConfiguration serviceName="Caf\xe9"/>', artefact("c.cscfg"))


def test_missing_file_is_unreadable(artefact: Make) -> None:
    with pytest.raises(Unreadable, match="cannot read the file"):
        read_definition(artefact("absent.csdef"))


def test_oversized_file_refused_before_parsing(artefact: Make) -> None:
    a = artefact("huge.csdef")
    with a.path.open("wb") as handle:
        handle.write(b"<ServiceDefinition>")
        handle.truncate(30 * 1024 * 1024)
    with pytest.raises(Unreadable, match=r"file is 30 MiB, over the 8 MiB limit for a service-model file"):
        read_definition(a)


def test_parse_int_refuses_non_ascii_digits() -> None:
    from harness.facts.servicemodel import parse_int

    assert parse_int("²") is None and parse_int("٣") is None and parse_int(" 80 ") == 80
