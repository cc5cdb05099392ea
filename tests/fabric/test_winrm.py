"""The fabric's WinRM server + emulated guest, driven by the real clients (pywinrm 0.5.0, pytest-testinfra)."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import stat
import time
from urllib.parse import quote

import pytest
import requests
import trustme

from harness.fabric.ports import allocate
from harness.fabric.winrm.server import start_winrm

winrm = pytest.importorskip("winrm")
testinfra = pytest.importorskip("testinfra")

from winrm.exceptions import InvalidCredentialsError, WinRMOperationTimeoutError, WSManFaultError  # noqa: E402
from winrm.protocol import Protocol  # noqa: E402

USER = "vmradmin"
INSTANCE_ID = "WebVM_IN_0"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("winrm")
    inst_dir = root / "instances" / INSTANCE_ID
    drives = {"C": inst_dir / "drives/os", "E": inst_dir / "drives/app"}
    local = inst_dir / "drives/local/AppData"
    for path in [*drives.values(), local]:
        path.mkdir(parents=True)
    (drives["C"] / "Windows").mkdir()
    (drives["C"] / "Windows" / "win.ini").write_text("; for 16-bit app support\r\n")
    (drives["E"] / "approot").mkdir()
    status = inst_dir / "status"
    status.write_text("ready\n")

    password = f"Pw{secrets.token_hex(8)}@x!"
    secrets_dir = root / "secrets"
    secrets_dir.mkdir(mode=0o700)
    (secrets_dir / "winrm-password").write_text(password + "\n")

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    certs = root / "certs"
    certs.mkdir()
    leaf.private_key_pem.write_to_path(str(certs / "winrm.key"))
    leaf.cert_chain_pems[0].write_to_path(str(certs / "winrm.pem"))
    ca.cert_pem.write_to_path(str(certs / "ca.pem"))

    https_port, http_port, open_port, closed_port, udp_port = allocate(5)
    listener = socket.socket()
    listener.bind(("127.0.0.1", open_port))
    listener.listen(8)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", udp_port))

    winrm_cfg = {
        "https_port": https_port,
        "http_port": http_port,
        "cert": str(certs / "winrm.pem"),
        "key": str(certs / "winrm.key"),
        "username": USER,
        "password_file": str(secrets_dir / "winrm-password"),
        "delay_ms_file": str(inst_dir / "winrm-delay"),
    }
    instance = {
        "id": INSTANCE_ID,
        "role": "WebVM",
        "index": 0,
        "deployment_id": "0123456789abcdef0123456789abcdef",
        "host": "127.0.0.1",
        "endpoints": [
            {"name": "HttpIn", "protocol": "http", "port": open_port},
            {"name": "Raw", "protocol": "tcp", "port": closed_port},
            {"name": "Dns", "protocol": "udp", "port": udp_port},
        ],
        "agent_port": None,
        "winrm": winrm_cfg,
        "drives": {"C": str(drives["C"]), "E": str(drives["E"]), "local": {"AppData": str(local)}},
        "status_file": str(status),
        "app_command": None,
        "services": [
            {"name": "W3SVC", "display_name": "World Wide Web Publishing Service", "state": "Running", "start": "Auto"}
        ],
    }

    collect = _Collect()
    logger = logging.getLogger("harness.fabric.winrm")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(collect)
    servers = start_winrm(winrm_cfg, instance)
    try:
        yield {
            "password": password,
            "https": f"https://127.0.0.1:{https_port}/wsman",
            "http": f"http://127.0.0.1:{http_port}/wsman",
            "https_port": https_port,
            "http_port": http_port,
            "open_port": open_port,
            "closed_port": closed_port,
            "udp_port": udp_port,
            "drives": drives,
            "local": local,
            "dir": inst_dir,
            "ca": str(certs / "ca.pem"),
            "servers": servers,
            "log": collect,
        }
    finally:
        for server in servers:
            server.shutdown()
        logger.removeHandler(collect)
        logger.setLevel(old_level)
        listener.close()
        udp.close()


def _https(fabric, transport: str = "ssl", **kw) -> winrm.Session:
    kw.setdefault("server_cert_validation", "ignore")
    return winrm.Session(fabric["https"], auth=(USER, fabric["password"]), transport=transport, **kw)


def _http_ntlm(fabric, password: str | None = None, url: str | None = None) -> winrm.Session:
    return winrm.Session(
        url or fabric["http"], auth=(USER, password or fabric["password"]), transport="ntlm", ca_trust_path=fabric["ca"]
    )


# -- transports and auth ---------------------------------------------------------------------------------


def test_basic_over_https_without_validation(fabric):
    r = _https(fabric).run_cmd("echo", ["hello", "world"])
    assert (r.status_code, r.std_out, r.std_err) == (0, b"hello world\r\n", b"")


def test_basic_over_https_with_pinned_ca(fabric):
    # REQUESTS_CA_BUNDLE (set on this machine) must not override the pinned CA: pywinrm sends prepared requests.
    assert "REQUESTS_CA_BUNDLE" not in os.environ or os.environ["REQUESTS_CA_BUNDLE"] != fabric["ca"]
    s = _https(fabric, server_cert_validation="validate", ca_trust_path=fabric["ca"])
    r = s.run_cmd("hostname")
    assert r.std_out == f"{INSTANCE_ID}\r\n".encode()


def test_ntlm_over_https_with_channel_binding(fabric):
    s = _https(fabric, transport="ntlm")
    r = s.run_cmd("whoami")
    assert r.std_out == f"{INSTANCE_ID.lower()}\\{USER}\r\n".encode()
    assert s.protocol.transport.encryption is None


def test_ntlm_over_http_uses_message_encryption(fabric):
    s = _http_ntlm(fabric)
    r = s.run_cmd("echo %PROCESSOR_ARCHITECTURE%")
    assert r.std_out == b"AMD64\r\n"
    assert s.protocol.transport.encryption is not None


@pytest.mark.parametrize("kind", ["basic-https", "ntlm-https", "ntlm-http"])
def test_wrong_password_is_invalid_credentials(fabric, kind):
    bad = "wrong-" + secrets.token_hex(4)
    if kind == "basic-https":
        s = winrm.Session(fabric["https"], auth=(USER, bad), transport="ssl", server_cert_validation="ignore")
    elif kind == "ntlm-https":
        s = winrm.Session(fabric["https"], auth=(USER, bad), transport="ntlm", server_cert_validation="ignore")
    else:
        s = _http_ntlm(fabric, password=bad)
    with pytest.raises(InvalidCredentialsError):
        s.run_cmd("hostname")


def test_basic_over_http_is_refused(fabric):
    s = winrm.Session(fabric["http"], auth=(USER, fabric["password"]), transport="basic", ca_trust_path=fabric["ca"])
    with pytest.raises(InvalidCredentialsError):
        s.run_cmd("hostname")


def test_unencrypted_ntlm_over_http_is_refused(fabric):
    s = winrm.Session(
        fabric["http"],
        auth=(USER, fabric["password"]),
        transport="ntlm",
        message_encryption="never",
        ca_trust_path=fabric["ca"],
    )
    with pytest.raises(InvalidCredentialsError):
        s.run_cmd("hostname")


def test_channel_binding_is_verified(fabric):
    from spnego.channel_bindings import GssChannelBindings

    service = fabric["servers"][0]._listener.service
    good = service.bindings
    assert good is not None
    service.bindings = GssChannelBindings(application_data=b"tls-server-end-point:" + b"\0" * 32)
    try:
        with pytest.raises(InvalidCredentialsError):
            _https(fabric, transport="ntlm").run_cmd("hostname")
    finally:
        service.bindings = good
    assert _https(fabric, transport="ntlm").run_cmd("hostname").status_code == 0


def test_two_servers_in_one_process_keep_their_own_credentials(fabric, tmp_path):
    other_password = f"Other{secrets.token_hex(6)}"
    (tmp_path / "pw").write_text(other_password)
    (tmp_path / "c").mkdir()
    (http_port,) = allocate(1)
    cfg = {"http_port": http_port, "username": USER, "password_file": str(tmp_path / "pw")}
    servers = start_winrm(cfg, {"id": "WebVM_IN_1", "drives": {"C": str(tmp_path / "c")}})
    try:
        url = f"http://127.0.0.1:{http_port}/wsman"
        assert _http_ntlm(fabric, other_password, url).run_cmd("hostname").std_out == b"WebVM_IN_1\r\n"
        assert _http_ntlm(fabric).run_cmd("hostname").std_out == f"{INSTANCE_ID}\r\n".encode()
        with pytest.raises(InvalidCredentialsError):
            _http_ntlm(fabric, fabric["password"], url).run_cmd("hostname")
        with pytest.raises(InvalidCredentialsError):
            _http_ntlm(fabric, other_password).run_cmd("hostname")
    finally:
        for server in servers:
            server.shutdown()


def test_only_wsman_path_is_served(fabric):
    r = requests.post(
        fabric["http"].replace("/wsman", "/other"), data=b"x", timeout=5, headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 404
    r = requests.post(fabric["http"], data=b"<x/>", timeout=5)
    assert r.status_code == 401
    assert "Negotiate" in r.headers["WWW-Authenticate"] and "Basic" not in r.headers["WWW-Authenticate"]


def test_ntlm_user_file_is_private(fabric):
    service = fabric["servers"][0]._listener.service
    mode = stat.S_IMODE(os.stat(service.credentials.path).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(service.credentials.path)).st_mode) == 0o700


# -- cmd ------------------------------------------------------------------------------------------------


def test_cmd_dir_and_type_after_set_content(fabric):
    s = _https(fabric)
    r = s.run_ps("$ProgressPreference='SilentlyContinue'; Set-Content -Path 'E:\\approot\\Hello.txt' -Value 'hi there'")
    assert r.status_code == 0, r.std_err
    assert (fabric["drives"]["E"] / "approot" / "Hello.txt").read_bytes() == b"hi there\r\n"
    r = s.run_cmd("type", ["e:\\APPROOT\\hello.TXT"])  # case-insensitive like NTFS
    assert (r.status_code, r.std_out) == (0, b"hi there\r\n")
    r = s.run_cmd("dir E:\\approot")
    assert r.status_code == 0
    assert b" Directory of E:\\approot" in r.std_out and b"Hello.txt" in r.std_out
    r = s.run_cmd("dir E:\\nothing-here")
    assert r.status_code == 1 and b"File Not Found" in r.std_err


def test_cmd_mkdir_del_exit_and_unknown(fabric):
    s = _https(fabric)
    assert s.run_cmd("mkdir C:\\Temp\\a\\b").status_code == 0
    assert (fabric["drives"]["C"] / "Temp" / "a" / "b").is_dir()
    r = s.run_cmd("mkdir C:\\Temp\\a\\b")
    assert r.status_code == 1 and b"already exists" in r.std_err
    (fabric["drives"]["C"] / "Temp" / "x.txt").write_text("x")
    assert s.run_cmd("del C:\\Temp\\x.txt").status_code == 0
    assert not (fabric["drives"]["C"] / "Temp" / "x.txt").exists()
    assert s.run_cmd("exit /b 3").status_code == 3
    r = s.run_cmd("uname -s")
    assert r.status_code == 1
    assert r.std_err.startswith(b"'uname' is not recognized as an internal or external command")


def test_cmd_refuses_escapes_out_of_a_drive(fabric):
    s = _https(fabric)
    r = s.run_cmd("type C:\\..\\..\\..\\etc\\passwd")
    assert r.status_code == 1 and r.std_out == b""
    os.symlink("/etc", fabric["drives"]["C"] / "link")
    r = s.run_cmd("type C:\\link\\passwd")
    assert r.status_code == 1 and r.std_out == b""


def test_cmd_netstat_sc_and_local_storage(fabric):
    s = _https(fabric)
    out = s.run_cmd("netstat -an").std_out.decode()
    assert f"127.0.0.1:{fabric['open_port']}" in out
    assert f"127.0.0.1:{fabric['closed_port']}" not in out
    assert f"UDP    127.0.0.1:{fabric['udp_port']}" in out
    r = s.run_cmd("sc query w3svc")
    assert r.status_code == 0 and b"4  RUNNING" in r.std_out
    assert s.run_cmd("sc query NoSuchSvc").status_code == 1060
    (fabric["local"] / "data.txt").write_text("local")
    r = s.run_cmd("type C:\\Resources\\Directory\\0123456789abcdef0123456789abcdef.WebVM.AppData\\data.txt")
    assert r.std_out == b"local"


# -- PowerShell -----------------------------------------------------------------------------------------


def test_ps_test_path_and_contents(fabric):
    s = _https(fabric)
    assert s.run_ps("Test-Path 'C:\\Windows'").std_out == b"True\r\n"
    assert s.run_ps("Test-Path 'C:\\Nope'").std_out == b"False\r\n"
    r = s.run_ps("New-Item -ItemType Directory -Force -Path 'C:\\Data'\nSet-Content 'C:\\Data\\v.txt' -Value 'v1'")
    assert r.status_code == 0 and b"Data" in r.std_out
    assert s.run_ps("Get-Content 'c:\\data\\V.TXT'").std_out == b"v1\r\n"
    assert s.run_ps("Remove-Item -Recurse -Force 'C:\\Data'").status_code == 0
    assert not (fabric["drives"]["C"] / "Data").exists()


def test_ps_write_error_and_exit_code(fabric):
    s = _https(fabric)
    r = s.run_ps("Write-Error 'boom'")
    assert r.status_code == 1
    assert b"boom" in r.std_err and b"CategoryInfo" in r.std_err and not r.std_err.startswith(b"#< CLIXML")
    assert s.run_ps("Write-Output 'a'; exit 7").status_code == 7
    r = s.run_ps("Get-Content 'C:\\missing.txt'")
    assert r.status_code == 1 and b"Cannot find path" in r.std_err
    r = s.run_ps("Get-Service -Name W3SVC")
    assert r.status_code == 0 and b"Running" in r.std_out


def test_ps_progress_noise_when_armed(fabric):
    s = _https(fabric)
    flag = fabric["dir"] / "clixml-noise"
    flag.write_text("")
    try:
        r = s.run_ps("Write-Output 'x'")
        assert r.status_code == 0 and r.std_out == b"x\r\n"
        assert r.std_err.startswith(b"#< CLIXML") and b'S="progress"' in r.std_err  # passed through raw
        quiet = s.run_ps("$ProgressPreference='SilentlyContinue'; Write-Output 'x'")
        assert quiet.std_err == b""
    finally:
        flag.unlink()


def test_invoke_vmr_probe(fabric):
    spec = {
        "ports": [fabric["open_port"], fabric["closed_port"]],
        "udp_ports": [fabric["udp_port"]],
        "paths": ["C:\\Windows\\win.ini", "E:\\approot", "C:\\nope"],
        "services": ["W3SVC", "Nope"],
    }
    r = _http_ntlm(fabric).run_ps(f"Invoke-VmrProbe -Json '{json.dumps(spec)}'")
    assert r.status_code == 0, r.std_err
    facts = json.loads(r.std_out)
    assert facts["hostname"] == INSTANCE_ID and facts["status"] == "ready"
    assert facts["ports"] == {
        str(fabric["open_port"]): {"listening": True},
        str(fabric["closed_port"]): {"listening": False},
    }
    assert facts["udp_ports"] == {str(fabric["udp_port"]): {"listening": True}}
    assert facts["paths"]["C:\\Windows\\win.ini"] == {"exists": True, "type": "file"}
    assert facts["paths"]["E:\\approot"] == {"exists": True, "type": "directory"}
    assert facts["paths"]["C:\\nope"] == {"exists": False, "type": None}
    assert facts["services"]["W3SVC"] == {"exists": True, "state": "Running", "start": "Auto"}
    assert facts["services"]["Nope"]["exists"] is False


# -- protocol details -----------------------------------------------------------------------------------


def test_long_running_command_survives_timed_out_long_polls(fabric):
    p = Protocol(
        fabric["https"],
        transport="ssl",
        username=USER,
        password=fabric["password"],
        server_cert_validation="ignore",
        operation_timeout_sec=1,
        read_timeout_sec=3,
    )
    timeouts = 0
    raw = p.get_command_output_raw

    def counting(shell_id, command_id):
        nonlocal timeouts
        try:
            return raw(shell_id, command_id)
        except WinRMOperationTimeoutError:
            timeouts += 1
            raise

    p.get_command_output_raw = counting  # type: ignore[method-assign]
    shell = p.open_shell()
    started = time.monotonic()
    script = "Start-Sleep -Seconds 3; Write-Output 'done'"
    cid = p.run_command(shell, f'powershell -NoProfile -NonInteractive -Command "{script}"')
    out, err, rc = p.get_command_output(shell, cid)
    elapsed = time.monotonic() - started
    p.cleanup_command(shell, cid)
    p.close_shell(shell)
    assert (out, rc) == (b"done\r\n", 0), err
    assert timeouts >= 2
    assert 2.9 <= elapsed < 10


def test_unknown_shell_is_invalid_selectors(fabric):
    p = Protocol(
        fabric["https"], transport="ssl", username=USER, password=fabric["password"], server_cert_validation="ignore"
    )
    shell = p.open_shell()
    p.close_shell(shell, close_session=False)
    with pytest.raises(WSManFaultError) as exc:
        p.close_shell(shell)
    assert exc.value.wsman_fault_code == 2150858843


def test_slow_winrm_delay_file_is_honoured(fabric):
    delay = fabric["dir"] / "winrm-delay"
    s = _https(fabric)
    delay.write_text("300")
    try:
        started = time.monotonic()
        assert s.run_cmd("hostname").status_code == 0  # Create, Command, Receive, Signal, Delete: 5 responses
        slow = time.monotonic() - started
    finally:
        delay.unlink()
    started = time.monotonic()
    assert s.run_cmd("hostname").status_code == 0
    fast = time.monotonic() - started
    assert slow >= 5 * 0.3
    assert fast < slow - 1.0


# -- pytest-testinfra -----------------------------------------------------------------------------------


# testinfra cannot pass ca_trust_path, so pywinrm warns about REQUESTS_CA_BUNDLE (set on this machine)
@pytest.mark.filterwarnings("ignore:'pywinrm' will use an environment variable defined CA Trust:DeprecationWarning")
@pytest.mark.parametrize("no_ssl", [False, True], ids=["https-ntlm", "http-ntlm-encrypted"])
def test_testinfra_winrm_backend(fabric, no_ssl):
    port = fabric["http_port"] if no_ssl else fabric["https_port"]
    params = "no_ssl=true" if no_ssl else "no_verify_ssl=true"
    url = (
        f"winrm://{USER}:{quote(fabric['password'], safe='')}@127.0.0.1:{port}"
        f"?{params}&read_timeout_sec=10&operation_timeout_sec=5"
    )
    host = testinfra.get_host(url)
    assert host.run("dir C:\\").rc == 0
    assert host.check_output("hostname") == INSTANCE_ID
    # testinfra's WindowsFile sends `powershell -command \"Test-Path '…'\"`: powershell.exe gets the script
    # "Test-Path '…'" (a string, printed), as on a real guest (tests/fabric/test_winrm_testinfra_commands.py)
    assert host.file("C:\\Windows\\win.ini").exists is False
    assert host.check_output("powershell -Command \"Test-Path 'C:\\Windows\\win.ini'\"") == "True"
    assert host.check_output("powershell -Command \"Test-Path 'C:\\Windows\\nope.ini'\"") == "False"
    assert (
        host.run("powershell -Command \"Get-Content 'C:\\Windows\\win.ini'\"").stdout == "; for 16-bit app support\r\n"
    )
    if not no_ssl:
        assert host.system_info.type == "windows"
        assert host.system_info.distribution == "Microsoft Windows Server 2008 R2 Datacenter"
        assert host.system_info.arch == "AMD64"


# -- last: nothing secret was logged -------------------------------------------------------------------


def test_password_never_logged(fabric):
    lines = fabric["log"].lines
    assert lines, "the server logs something (at least its listeners)"
    assert not any(fabric["password"] in line for line in lines)
    assert not any(quote(fabric["password"], safe="") in line for line in lines)


# -- failed-login throttling (issue 9 finding 3) -----------------------------------------------------------


def test_wrong_passwords_are_throttled_and_the_right_one_works_after_the_lockout(fabric, tmp_path):
    """~950 wrong passwords a second were accepted for checking. Now each failure is answered after a delay
    and, after ``lockout_threshold`` failures, the client is locked out (401 without checking) for a short,
    configurable, growing window; a correct login afterwards is fast."""
    password = f"Pw{secrets.token_hex(8)}@x!"
    (tmp_path / "pw").write_text(password)
    (tmp_path / "c").mkdir()
    https_port, http_port = allocate(2)
    cfg = {
        "https_port": https_port,
        "http_port": http_port,
        "cert": str(fabric["dir"].parents[1] / "certs" / "winrm.pem"),
        "key": str(fabric["dir"].parents[1] / "certs" / "winrm.key"),
        "username": USER,
        "password_file": str(tmp_path / "pw"),
        "lockout_threshold": 3,
        "lockout_seconds": 0.5,
        "max_lockout_seconds": 1.0,
        "failure_delay_ms": 100,
    }
    servers = start_winrm(cfg, {"id": "WebVM_IN_7", "drives": {"C": str(tmp_path / "c")}})
    try:
        url = f"https://127.0.0.1:{https_port}/wsman"
        attempts = 0
        with requests.Session() as s:
            s.trust_env = False
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                r = s.post(url, data=b"<x/>", auth=(USER, f"guess{attempts}"), verify=fabric["ca"], timeout=10)
                assert r.status_code == 401
                attempts += 1
        assert attempts <= 20, attempts
        # NTLM failures count too (and are refused while locked out)
        with pytest.raises(InvalidCredentialsError):
            _http_ntlm(fabric, "wrong", f"http://127.0.0.1:{http_port}/wsman").run_cmd("hostname")
        # the right password is refused during the lockout, and works (fast) once it is over
        deadline = time.monotonic() + 5.0
        while True:
            try:
                r = winrm.Session(url, auth=(USER, password), transport="ssl", server_cert_validation="ignore")
                assert r.run_cmd("hostname").std_out == b"WebVM_IN_7\r\n"
                break
            except InvalidCredentialsError:
                assert time.monotonic() < deadline, "still locked out after the configured window"
                time.sleep(0.2)
        started = time.monotonic()
        s2 = _http_ntlm(fabric, password, f"http://127.0.0.1:{http_port}/wsman")
        assert s2.run_cmd("hostname").std_out == b"WebVM_IN_7\r\n"
        assert time.monotonic() - started < 1.0
    finally:
        for server in servers:
            server.shutdown()


def test_correct_logins_are_not_delayed(fabric):
    for _ in range(3):  # a whole run_cmd (TLS, shell, command, receive, delete) takes ~0.4 s here
        started = time.monotonic()
        assert _https(fabric).run_cmd("hostname").status_code == 0
        assert time.monotonic() - started < 1.5


def test_lockout_window_grows_and_success_clears_it():
    from harness.fabric.winrm.server import AuthThrottle

    now = [100.0]
    t = AuthThrottle(threshold=2, lockout_seconds=1.0, max_lockout_seconds=3.0, failure_delay=0, clock=lambda: now[0])
    t.failed("a")
    assert t.locked("a") == 0
    t.failed("a")
    assert t.locked("a") == 1.0 and t.locked("b") == 0
    t.failed("a")  # while locked: not counted, not extended
    assert t.locked("a") == 1.0
    now[0] += 1.0
    t.failed("a")
    t.failed("a")
    assert t.locked("a") == 2.0
    now[0] += 2.0
    t.failed("a")
    t.failed("a")
    assert t.locked("a") == 3.0  # capped
    now[0] += 3.0
    t.succeeded("a")
    t.failed("a")
    assert t.locked("a") == 0


def test_an_unexpected_error_is_a_soap_fault_without_details(fabric, monkeypatch):
    """Issue 9 (same kind): an exception in the emulated guest dropped the connection (an empty reply)."""
    service = fabric["servers"][0]._listener.service

    def boom(*args, **kwargs):
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(service, "_create", boom)
    with pytest.raises(WSManFaultError) as err:
        _https(fabric).run_cmd("hostname")
    assert err.value.code == 500
    assert "secret internals" not in str(err.value) and "Traceback" not in str(err.value)
    monkeypatch.undo()
    assert _https(fabric).run_cmd("hostname").status_code == 0
