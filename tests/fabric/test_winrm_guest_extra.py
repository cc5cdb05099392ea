"""Guest extensions: netsh advfirewall, declared local ports in netstat, Select-Object -Property,
ConvertTo-Json -Compress, Invoke-WebRequest (a real HTTP PUT) — driven directly, without a WinRM server."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path

import pytest

from harness.fabric.winrm.guest import Guest, default_firewall
from harness.live.probes.guest import firewall_allows, parse_netstat, parse_profiles, parse_rules, service_status
from harness.live.winrm_pool import parse_batch


class IO:
    encoding = "utf-8"

    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()

    def stdout(self, data: bytes) -> None:
        self.out += data

    def stderr(self, data: bytes) -> None:
        self.err += data

    def sleep(self, seconds: float) -> bool:
        return True


@pytest.fixture
def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def guest(tmp_path: Path, listener: int) -> Guest:
    inst_dir = tmp_path / "instances" / "WebVM_IN_0"
    (tmp_path / "os").mkdir()
    inst_dir.mkdir(parents=True)
    instance = {
        "id": "WebVM_IN_0",
        "role": "WebVM",
        "deployment_id": "d" * 32,
        "host": "127.0.0.1",
        "endpoints": [
            {"name": "HttpIn", "protocol": "http", "port": listener, "local_port": 80},
            {"name": "Raw", "protocol": "tcp", "port": 1, "local_port": 8443},
        ],
        "winrm": {"https_port": 2, "http_port": 3},
        "drives": {"C": str(tmp_path / "os")},
        "status_file": str(inst_dir / "status"),
        "services": [
            {"name": "W3SVC", "display_name": "World Wide Web Publishing Service", "state": "Running", "start": "Auto"},
            {"name": "Spooler", "display_name": "Print Spooler", "state": "Stopped", "start": "Manual"},
        ],
    }
    return Guest(instance, "vmradmin")


def run(g: Guest, line: str) -> tuple[int, str, str]:
    io = IO()
    rc = g.run(line, [], io)
    return rc, io.out.decode(), io.err.decode()


def ps(g: Guest, script: str) -> tuple[int, str, str]:
    from harness.live.winrm_pool import ps_command

    return run(g, ps_command(script))


def test_netstat_shows_the_declared_local_port_of_a_real_listener(guest, listener):
    rc, out, _ = run(guest, "netstat -an")
    assert rc == 0
    assert f"127.0.0.1:{listener}" in out
    assert ("tcp", 80) in parse_netstat(out)
    assert ("tcp", 8443) not in parse_netstat(out)  # port 1 does not listen: its local port neither


def test_netsh_default_firewall_allows_every_endpoint_and_winrm(guest):
    rc, out, _ = run(guest, "netsh advfirewall show allprofiles state")
    assert rc == 0 and out.rstrip().endswith("Ok.")
    assert parse_profiles(out) == {"Domain": True, "Private": True, "Public": True}
    rc, out, _ = run(guest, "netsh advfirewall firewall show rule name=all dir=in")
    assert rc == 0 and "Rule Name:" in out and "Windows Remote Management (HTTPS-In)" in out
    rules = parse_rules(out)
    profiles = parse_profiles(run(guest, "netsh advfirewall show allprofiles state")[1])
    for port in (80, 8443, 5985, 5986):
        assert firewall_allows(profiles, rules, "tcp", port)[0], port
    assert firewall_allows(profiles, rules, "tcp", 9999) == (False, ("Domain", "Private", "Public"), None)
    assert run(guest, "netsh advfirewall firewall show rule name=all dir=out")[0] == 1  # no outbound rules
    assert run(guest, "netsh advfirewall show currentprofile")[1].count("Profile Settings") == 1
    assert run(guest, "netsh bogus")[0] == 1


def test_firewall_state_from_instance_and_firewall_json(guest, tmp_path):
    guest.instance["firewall"] = {
        "profiles": {"Domain": "ON", "Private": "OFF", "Public": True},
        "rules": [
            {"name": "Web", "direction": "In", "protocol": "TCP", "local_port": "80-90", "profiles": ["Public"]},
            {"name": "Deny", "direction": "In", "protocol": "TCP", "local_port": "85", "action": "Block"},
        ],
    }
    out = run(guest, "netsh advfirewall show allprofiles state")[1]
    profiles = parse_profiles(out)
    assert profiles == {"Domain": True, "Private": False, "Public": True}
    rules = parse_rules(run(guest, "netsh advfirewall firewall show rule name=all dir=in")[1])
    assert firewall_allows(profiles, rules, "tcp", 80) == (False, ("Domain",), None)
    assert firewall_allows(profiles, rules, "tcp", 85)[2] == "Deny"
    assert firewall_allows({"Domain": False, "Private": False, "Public": False}, rules, "tcp", 1)[0]
    (guest.instance_dir / "firewall.json").write_text(json.dumps({"profiles": {}, "rules": []}))
    assert "No rules match" in run(guest, "netsh advfirewall firewall show rule name=all dir=in")[1]


def test_default_firewall_builder_is_json():
    fw = default_firewall({"role": "R", "endpoints": [{"name": "A", "protocol": "udp", "port": 5}], "winrm": {}})
    json.dumps(fw)
    assert fw["profiles"] == {"Domain": True, "Private": True, "Public": True}
    assert fw["rules"][0]["protocol"] == "UDP" and fw["rules"][0]["local_port"] == "5"


def test_select_object_property_and_compressed_json(guest):
    rc, out, _ = ps(guest, "Get-Service -Name 'W3SVC' | Select-Object Name,Status | ConvertTo-Json -Compress")
    assert rc == 0 and out.strip() == '{"Name":"W3SVC","Status":4}'  # an enum is a number in Windows PowerShell
    assert service_status(json.loads(out)) == "Running"
    rc, out, _ = ps(guest, "Get-Service -Name 'Spooler' | Select-Object Name,Status")
    assert "Name" in out and "Spooler" in out and "Stopped" in out


def test_batch_script_shape_parses_per_statement(guest):
    from harness.live.winrm_pool import BATCH_MARK

    stmts = [
        "Get-Service -Name 'W3SVC' | Select-Object Name,Status",
        "Get-Service -Name 'Nope'",
        "Test-Path -Path 'C:\\'",
    ]
    lines = []
    for i, s in enumerate(stmts):
        lines += [f"Write-Output '{BATCH_MARK}{i}'", f"{s} | ConvertTo-Json -Compress"]
    _, out, err = ps(guest, "\n".join(lines))
    assert parse_batch(out, 3) == [{"Name": "W3SVC", "Status": 4}, None, True]
    assert "Cannot find any service" in err


def test_invoke_webrequest_makes_a_real_put(guest):
    got: dict = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            got["blob_type"] = self.headers.get("x-ms-blob-type")
            got["body"] = self.rfile.read(int(self.headers["Content-Length"]))
            got["path"] = self.path
            self.send_response(201 if "sig=ok" in self.path else 403)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/acct/c/b.txt?sv=1&sig=ok"
        script = (
            f"Invoke-WebRequest -Uri '{url}' -Method Put -Headers @{{'x-ms-blob-type'='BlockBlob'}} -Body 'hello' "
            "-UseBasicParsing | Select-Object -ExpandProperty StatusCode"
        )
        rc, out, _ = ps(guest, script)
        assert rc == 0 and out.strip() == "201"
        assert got["body"] == b"hello" and got["blob_type"] == "BlockBlob"
        assert got["path"] == "/acct/c/b.txt?sv=1&sig=ok"
        rc, out, err = ps(guest, script.replace("sig=ok", "sig=no"))
        assert rc == 1 and "(403)" in err
    finally:
        server.shutdown()
        server.server_close()


def test_tcp_client_probe_routes_the_internal_network(tmp_path):
    """The .NET TcpClient probe really connects, through the deployment's internal-network routes."""
    import socket as _socket

    from harness.fabric.winrm.guest import Guest

    listener = _socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    closed = _socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    instance = {
        "id": "WebVM_IN_0",
        "drives": {"C": str(tmp_path)},
        "internal_network": {"127.0.1.9:9000": ["127.0.0.1", port], "127.0.1.9:9001": ["127.0.0.1", closed_port]},
    }
    guest = Guest(instance, "vmradmin")

    def probe(target_port: int) -> str:
        script = (
            "$c = New-Object System.Net.Sockets.TcpClient\n"
            f"$a = $c.BeginConnect('127.0.1.9', {target_port}, $null, $null)\n"
            "if ($a.AsyncWaitHandle.WaitOne(2000, $false)) { $c.EndConnect($a); 'VMRTCP ok' }"
        )
        out: list[bytes] = []

        class IO:
            encoding = "utf-8"

            def stdout(self, data: bytes) -> None:
                out.append(data)

            def stderr(self, data: bytes) -> None:
                out.append(data)

            def sleep(self, seconds: float) -> bool:
                return True

        guest.powershell("powershell -Command " + script.replace("\n", "; "), IO())
        return b"".join(out).decode()

    try:
        assert probe(9000).strip() == "VMRTCP ok"
        assert "actively refused" in probe(9001) and "127.0.1.9:9001" in probe(9001)
    finally:
        listener.close()


def test_registry_is_seeded_from_the_images_real_hives(tmp_path):
    """An OS drive that holds real hives (an --image-dir with a Windows OS drive): the guest registry is read
    from them (CurrentControlSet through SYSTEM\\Select\\Current), once, then kept in the OS drive's file."""
    from harness.testing.hivewriter import build_hive, dword, expand_sz, sz

    config = tmp_path / "os" / "Windows" / "System32" / "config"
    config.mkdir(parents=True)
    nt = "Microsoft\\Windows NT\\CurrentVersion"
    (config / "SOFTWARE").write_bytes(
        build_hive({nt: {"ProductName": sz("Windows Server 2012 R2 Datacenter"), "CurrentBuildNumber": sz("9600")}})
    )
    (config / "SYSTEM").write_bytes(
        build_hive(
            {
                "Select": {"Current": dword(2)},
                "ControlSet001\\Services\\W3SVC": {"Start": dword(4)},
                "ControlSet002\\Services\\W3SVC": {"Start": dword(2), "ImagePath": expand_sz("%windir%\\x.exe")},
                "Setup": {"SystemSetupInProgress": dword(0)},
            }
        )
    )
    g = Guest({"id": "WebVM_IN_0", "drives": {"C": str(tmp_path / "os")}, "services": []}, "vmradmin")
    product = "(Get-ItemProperty -Path 'HKLM:\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion').ProductName"
    assert run(g, f'powershell -NoProfile -Command "{product}"')[:2] == (0, "Windows Server 2012 R2 Datacenter\r\n")
    rc, out, _ = run(g, "reg query HKLM\\SYSTEM\\CurrentControlSet\\Services\\W3SVC")
    assert rc == 0 and "    Start    REG_DWORD    0x2\r\n" in out  # ControlSet002, the current one
    assert "    ImagePath    REG_EXPAND_SZ    %windir%\\x.exe\r\n" in out
    assert run(g, 'reg query "HKLM\\SOFTWARE\\Microsoft\\Windows Azure"')[0] == 1  # not in this image
    assert (config / "vmrole-registry.json").is_file()  # parsed once
    (config / "SOFTWARE").write_bytes(b"not a hive any more")
    assert run(g, f'powershell -NoProfile -Command "{product}"')[1] == "Windows Server 2012 R2 Datacenter\r\n"


def test_registry_without_hives_is_the_documented_2008_r2_table(tmp_path):
    (tmp_path / "os").mkdir()
    g = Guest({"id": "WebVM_IN_0", "drives": {"C": str(tmp_path / "os")}, "services": []}, "vmradmin")
    rc, out, _ = run(g, 'reg query "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion" /v CurrentBuildNumber')
    assert rc == 0 and out.endswith("    CurrentBuildNumber    REG_SZ    7601\r\n\r\n")
    assert not (tmp_path / "os" / "Windows").exists()  # reading writes nothing


@pytest.mark.parametrize(
    ("instance", "expected"),
    [
        ({"id": "WebVM_IN_2"}, "WebVM_IN_2"),  # classic: the machine is known by its role instance id
        ({"id": "WebVM_IN_2", "name": "webvm000002"}, "webvm000002"),  # a scale-set VM: its computer name
    ],
)
def test_the_machine_calls_itself_by_its_computer_name(tmp_path, instance, expected):
    (tmp_path / "os").mkdir()
    g = Guest({**instance, "drives": {"C": str(tmp_path / "os")}, "services": []}, "vmradmin")
    assert run(g, "hostname")[:2] == (0, f"{expected}\r\n")
    assert run(g, "echo %COMPUTERNAME%")[:2] == (0, f"{expected.upper()}\r\n")
    assert run(g, 'powershell -NoProfile -Command "hostname"')[:2] == (0, f"{expected}\r\n")
