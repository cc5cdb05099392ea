r"""What pytest-testinfra's WinRM backend and Windows modules send, answered as a Windows Server 2008 R2 guest
answers over WinRM (the cmd shell, the whole line in one WinRS Command), driven through real pywinrm
(``Protocol.run_command(shell, line)``) and real testinfra against an instance's WinRM endpoint.

testinfra's ``WindowsFile`` sends ``powershell -command \"Test-Path 'C:/x'\"`` (backslash-escaped quotes on the
wire).  cmd.exe passes the line as is; powershell.exe splits it like the C runtime (``\"`` is a literal quote) and
joins what follows ``-Command`` into the script ``"Test-Path 'C:/x'"``: a string expression, which PowerShell
prints.  So on a real guest (and here) ``host.file(p).exists`` is False for every path and ``content_string`` is
that text; the tests below pin this, and show the command forms that do work.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import socket

import pytest
import trustme

from harness.fabric.ports import allocate
from harness.fabric.winrm.server import start_winrm

winrm = pytest.importorskip("winrm")
testinfra = pytest.importorskip("testinfra")

from testinfra.backend.winrm import WinRMBackend  # noqa: E402
from testinfra.host import Host  # noqa: E402
from winrm.protocol import Protocol  # noqa: E402

USER = "vmradmin"
INSTANCE_ID = "WebVM_IN_0"
NT = r"HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion"
NOT_RECOGNIZED = b"'uname' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("winrm-testinfra")
    inst_dir = root / "instances" / INSTANCE_ID
    os_drive = inst_dir / "drives" / "os"
    (os_drive / "Users" / USER).mkdir(parents=True)
    (os_drive / "Data").mkdir()
    (os_drive / "Data" / "app.conf").write_bytes(b"mode=blue\r\nport=80\r\n")
    (os_drive / "Data" / "sub").mkdir()
    status = inst_dir / "status"
    status.write_text("ready\n")
    password = secrets.token_urlsafe(18) + "!A1"  # as the fabric makes them (no @ or :)
    (root / "pw").write_text(password)
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.private_key_pem.write_to_path(str(root / "winrm.key"))
    leaf.cert_chain_pems[0].write_to_path(str(root / "winrm.pem"))
    https_port, http_port, app_port = allocate(3)
    app = socket.socket()
    app.bind(("127.0.0.1", app_port))
    app.listen(8)
    cfg = {
        "https_port": https_port,
        "http_port": http_port,
        "cert": str(root / "winrm.pem"),
        "key": str(root / "winrm.key"),
        "username": USER,
        "password_file": str(root / "pw"),
    }
    instance = {
        "id": INSTANCE_ID,
        "role": "WebVM",
        "deployment_id": "0123456789abcdef0123456789abcdef",
        "host": "127.0.0.1",
        "endpoints": [{"name": "HttpIn", "protocol": "http", "port": app_port, "local_port": 80}],
        "winrm": cfg,
        "drives": {"C": str(os_drive)},
        "status_file": str(status),
        "services": [
            {"name": "W3SVC", "display_name": "World Wide Web Publishing Service", "state": "Running", "start": "Auto"},
            {"name": "Spooler", "display_name": "Print Spooler", "state": "Stopped", "start": "Manual"},
            {"name": "RemoteRegistry", "display_name": "Remote Registry", "state": "Stopped", "start": "Disabled"},
        ],
    }
    servers = start_winrm(cfg, instance)
    try:
        yield {"password": password, "https_port": https_port, "http_port": http_port, "os": os_drive, "app": app_port}
    finally:
        for server in servers:
            server.shutdown()
        app.close()


@pytest.fixture(scope="module")
def shell(guest):
    """One WinRS cmd shell; ``run(line)`` sends the whole line as testinfra's backend does."""
    p = Protocol(
        f"https://127.0.0.1:{guest['https_port']}/wsman",
        transport="ntlm",
        username=USER,
        password=guest["password"],
        server_cert_validation="ignore",
    )
    shell_id = p.open_shell()

    def run(line: str) -> tuple[int, bytes, bytes]:
        command_id = p.run_command(shell_id, line)
        out, err, rc = p.get_command_output(shell_id, command_id)
        p.cleanup_command(shell_id, command_id)
        return rc, out, err

    yield run
    p.close_shell(shell_id)


def _ps(script: str) -> str:
    """A correctly quoted -Command line (no double quotes inside ``script``)."""
    return f'powershell -NoProfile -Command "{script}"'


# -- OS detection (testinfra SystemInfo) ----------------------------------------------------------------


def test_uname_is_not_recognized_and_exits_1(shell):
    assert shell("uname -s") == (1, b"", NOT_RECOGNIZED)


def test_systeminfo_os_lines_and_architecture(shell):
    rc, out, _ = shell('systeminfo | findstr /B /C:"OS"')
    lines = out.decode().splitlines()
    assert rc == 0
    assert lines[0] == "OS Name:                   Microsoft Windows Server 2008 R2 Datacenter"
    assert lines[1] == "OS Version:                6.1.7601 Service Pack 1 Build 7601"
    assert all(line.startswith("OS") for line in lines)
    assert lines[0].split(":", 1)[1].strip().split(" ")[1].lower() == "windows"  # what testinfra takes
    assert shell("echo %PROCESSOR_ARCHITECTURE%") == (0, b"AMD64\r\n", b"")


# -- files ------------------------------------------------------------------------------------------------


def test_testinfra_escaped_quotes_reach_powershell_as_a_string(shell):
    """The exact line testinfra's WindowsFile.exists sends: powershell.exe prints the string."""
    line = WinRMBackend.quote(r"powershell -command \"Test-Path '%s'\"", "C:/Data/app.conf")
    assert line == "powershell -command \\\"Test-Path 'C:/Data/app.conf'\\\""
    assert shell(line) == (0, b"Test-Path 'C:/Data/app.conf'\r\n", b"")
    # a backslash path is double-quoted by testinfra's _quote: the C runtime removes those quotes
    line = WinRMBackend.quote(r"powershell -command \"Test-Path '%s'\"", "C:\\Data\\app.conf")
    assert shell(line) == (0, b"Test-Path 'C:\\Data\\app.conf'\r\n", b"")


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("Test-Path 'C:/Data/app.conf'", b"True\r\n"),
        ("Test-Path 'C:\\Data\\nope.txt'", b"False\r\n"),
        ("(Get-Item 'C:/Data/app.conf') -is [System.IO.FileInfo]", b"True\r\n"),
        ("(Get-Item 'C:/Data') -is [System.IO.FileInfo]", b"False\r\n"),
        ("(Get-Item 'C:/Data') -is [System.IO.DirectoryInfo]", b"True\r\n"),
        ("cat -- 'C:/Data/app.conf'", b"mode=blue\r\nport=80\r\n"),
        ("Get-Content -Path 'c:\\data\\APP.CONF'", b"mode=blue\r\nport=80\r\n"),
        (
            "Select-String -Path 'C:/Data/app.conf' -Pattern 'port=\\d+'",
            b"\r\nC:\\Data\\app.conf:2:port=80\r\n\r\n\r\n",
        ),
        ("Select-String -Path 'C:/Data/app.conf' -Pattern 'absent'", b""),
        ("Get-Item -Path 'C:/Data/app.conf' | Select-Object -ExpandProperty Length", b"20\r\n"),
        ("Get-ChildItem -Path 'C:/Data' | Select-Object -ExpandProperty Name", b"app.conf\r\nsub\r\n"),
    ],
)
def test_windows_file_commands_correctly_quoted(shell, script, expected):
    rc, out, err = shell(_ps(script))
    assert (rc, out) == (0, expected), err


def test_last_write_time_in_the_format_testinfra_parses(shell, guest):
    rc, out, _ = shell(_ps("Get-ChildItem -Path 'C:/Data/app.conf' | Select-Object -ExpandProperty LastWriteTime"))
    assert rc == 0
    parsed = dt.datetime.strptime(out.decode().strip(), "%A, %B %d, %Y %I:%M:%S %p")
    mtime = dt.datetime.fromtimestamp((guest["os"] / "Data" / "app.conf").stat().st_mtime).replace(microsecond=0)
    assert parsed == mtime


def test_get_item_of_a_missing_path_is_an_error_and_false(shell):
    rc, out, err = shell(_ps("(Get-Item 'C:/Data/nope') -is [System.IO.FileInfo]"))
    assert (rc, out) == (1, b"False\r\n")
    assert b"Cannot find path" in err


# -- services ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("(Get-Service -Name 'W3SVC').Status", b"Running\r\n"),
        ("(Get-Service -Name 'w3svc').StartType", b"Automatic\r\n"),
        ("Get-Service -Name W3SVC | Select-Object -ExpandProperty Status", b"Running\r\n"),
        ("Get-Service -Name 'Spooler' | Select-Object -ExpandProperty Status", b"Stopped\r\n"),
        ("Get-Service -Name 'Spooler' | Select-Object -ExpandProperty StartType", b"Manual\r\n"),
        ("Get-Service -Name 'RemoteRegistry' | Select-Object -ExpandProperty StartType", b"Disabled\r\n"),
    ],
)
def test_service_status_and_start_type(shell, script, expected):
    rc, out, err = shell(_ps(script))
    assert (rc, out) == (0, expected), err


def test_unknown_service_is_a_powershell_error(shell):
    rc, out, err = shell(_ps("(Get-Service -Name 'NoSuchSvc').Status"))
    assert rc == 1 and out == b""
    assert b"Cannot find any service with service name 'NoSuchSvc'." in err
    assert b"NoServiceFoundForGivenName" in err
    rc, out, _ = shell(_ps("Get-Service -Name NoSuchSvc -ErrorAction SilentlyContinue"))
    assert (rc, out) == (0, b"")


def test_testinfra_windows_service_commands_are_not_cmd_commands(shell):
    """testinfra's WindowsService sends bare PowerShell to the cmd shell: cmd does not know Get-Service."""
    rc, _, err = shell("Get-Service 'W3SVC' | Select -ExpandProperty Status")
    assert rc == 1 and err.startswith(b"'Get-Service' is not recognized")


# -- registry ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("ProductName", "Windows Server 2008 R2 Datacenter"), ("CurrentVersion", "6.1"), ("CurrentBuildNumber", "7601")],
)
def test_registry_os_identity(shell, name, expected):
    rc, out, err = shell(_ps(f"(Get-ItemProperty -Path '{NT}' -Name '{name}').{name}"))
    assert (rc, out) == (0, f"{expected}\r\n".encode()), err
    rc, out, _ = shell(_ps(f"Get-ItemProperty -Path '{NT}' -Name '{name}' | Select-Object -ExpandProperty {name}"))
    assert (rc, out) == (0, f"{expected}\r\n".encode())
    rc, out, _ = shell(f'reg query "{NT.replace(":", "")}" /v {name}')
    assert rc == 0
    key = "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion"
    assert out == f"\r\n{key}\r\n    {name}    REG_SZ    {expected}\r\n\r\n".encode()


def test_registry_setup_state_and_guest_agent(shell):
    rc, out, _ = shell('reg query "HKLM\\SYSTEM\\Setup" /v SystemSetupInProgress')
    assert rc == 0 and b"    SystemSetupInProgress    REG_DWORD    0x0\r\n" in out
    agent = "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\WindowsAzureGuestAgent"
    assert shell(_ps(f"Test-Path '{agent}'"))[1] == b"True\r\n"
    assert shell(_ps(f"(Get-ItemProperty -Path '{agent}' -Name 'Start').Start"))[1] == b"2\r\n"
    rc, out, _ = shell("reg query HKLM\\SYSTEM\\CurrentControlSet\\Services\\W3SVC /v Start")
    assert rc == 0 and b"    Start    REG_DWORD    0x2\r\n" in out


def test_registry_missing_key_or_value(shell):
    err = b"ERROR: The system was unable to find the specified registry key or value.\r\n"
    assert shell('reg query "HKLM\\SOFTWARE\\NoSuchVendor" /v X') == (1, b"", err)
    assert shell(f'reg query "{NT.replace(":", "")}" /v NoSuchValue') == (1, b"", err)
    assert shell(_ps("Test-Path 'HKLM:\\SOFTWARE\\NoSuchVendor'"))[1] == b"False\r\n"
    rc, out, stderr = shell(_ps(f"(Get-ItemProperty -Path '{NT}' -Name 'NoSuchValue').NoSuchValue"))
    assert rc == 1 and out == b"" and b"Property NoSuchValue does not exist at path" in stderr


def test_registry_writes_persist_on_the_os_drive(shell, guest):
    key = "HKLM:\\SOFTWARE\\Contoso\\WebVM"
    assert shell(_ps(f"Test-Path '{key}'"))[1] == b"False\r\n"
    rc, _, err = shell(_ps(f"New-Item -Path '{key}'"))
    assert rc == 1 and b"Cannot find path" in err  # the parent does not exist, no -Force
    rc, out, err = shell(_ps(f"New-Item -Path '{key}' -Force"))
    assert rc == 0 and b"Hive: HKEY_LOCAL_MACHINE\\SOFTWARE\\Contoso" in out, err
    rc, _, err = shell(_ps(f"New-ItemProperty -Path '{key}' -Name 'Build' -Value 42 -PropertyType DWord"))
    assert rc == 0, err
    rc, _, err = shell(_ps(f"New-ItemProperty -Path '{key}' -Name 'Build' -Value 43 -PropertyType DWord"))
    assert rc == 1 and b"The property already exists." in err
    assert shell(_ps(f"Set-ItemProperty -Path '{key}' -Name 'Colour' -Value 'blue'"))[0] == 0
    assert shell(_ps(f"(Get-ItemProperty -Path '{key}' -Name 'Build').Build"))[1] == b"42\r\n"
    rc, out, _ = shell('reg query "HKLM\\SOFTWARE\\Contoso\\WebVM"')
    assert rc == 0
    assert b"    Build    REG_DWORD    0x2a\r\n" in out and b"    Colour    REG_SZ    blue\r\n" in out
    assert shell('reg add "HKLM\\SOFTWARE\\Contoso\\WebVM" /v Tier /t REG_SZ /d gold /f')[0] == 0
    assert (
        shell(_ps(f"Get-ItemProperty -Path '{key}' -Name Tier | Select-Object -ExpandProperty Tier"))[1] == b"gold\r\n"
    )
    stored = json.loads((guest["os"] / "Windows" / "System32" / "config" / "vmrole-registry.json").read_text())
    assert stored["keys"]["HKEY_LOCAL_MACHINE\\SOFTWARE\\Contoso\\WebVM"]["Build"] == ["REG_DWORD", 42]


# -- listening ports ---------------------------------------------------------------------------------------


def test_get_nettcpconnection_sees_the_declared_and_the_real_port(shell, guest):
    rc, out, err = shell(_ps("Get-NetTCPConnection -State Listen -LocalPort 80"))
    assert rc == 0, err
    assert b"0.0.0.0" in out and b" 80 " in out and b"Listen" in out
    rc, out, _ = shell(_ps(f"Get-NetTCPConnection -State Listen -LocalPort {guest['app']}"))
    assert rc == 0 and str(guest["app"]).encode() in out
    rc, out, err = shell(_ps("Get-NetTCPConnection -State Listen -LocalPort 81"))
    assert rc == 1 and b"No matching MSFT_NetTCPConnection objects" in err
    rc, out, _ = shell("netstat -an")
    assert rc == 0 and b"0.0.0.0:80 " in out


# -- real testinfra ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:'pywinrm' will use an environment variable defined CA Trust:DeprecationWarning")
@pytest.mark.parametrize("no_ssl", [False, True], ids=["https-ntlm", "http-ntlm-encrypted"])
def test_real_testinfra_host(guest, no_ssl):
    port = guest["http_port"] if no_ssl else guest["https_port"]
    hostspec = f"{USER}:{guest['password']}@127.0.0.1:{port}"
    backend = WinRMBackend(
        hostspec, no_ssl=no_ssl, no_verify_ssl=not no_ssl, read_timeout_sec=10, operation_timeout_sec=5
    )
    host = Host(backend)
    assert host.system_info.type == "windows"
    assert host.system_info.distribution == "Microsoft Windows Server 2008 R2 Datacenter"
    assert host.system_info.release == "6.1.7601 Service Pack 1 Build 7601"
    assert host.system_info.arch == "AMD64"

    created = host.run(_ps("Set-Content -Path 'C:/Data/made.txt' -Value 'made by the test'"))
    assert created.rc == 0, created.stderr
    assert (guest["os"] / "Data" / "made.txt").read_bytes() == b"made by the test\r\n"
    f = host.file("C:/Data/made.txt")
    # What a real guest answers to testinfra's WindowsFile (see the module docstring): the script is a string.
    assert f.exists is False
    assert f.is_file is False and f.is_directory is False
    assert f.content_string == "cat -- 'C:/Data/made.txt'\r\n"
    assert f.contains("anything-at-all") is True  # Select-String is never run: the echoed string is not empty
    assert host.file("C:/Data").listdir() == ["Get-ChildItem -Path 'C:/Data' | Select-Object -ExpandProperty Name"]
    # The same questions, quoted so that powershell.exe runs them:
    assert host.check_output(_ps("Test-Path 'C:/Data/made.txt'")) == "True"
    assert host.check_output(_ps("(Get-Item 'C:/Data/made.txt') -is [System.IO.FileInfo]")) == "True"
    assert host.check_output(_ps("cat -- 'C:/Data/made.txt'")) == "made by the test"
    assert host.run(_ps("Select-String -Path 'C:/Data/made.txt' -Pattern 'by the'")).stdout.strip() == (
        "C:\\Data\\made.txt:1:made by the test"
    )
    assert host.check_output(_ps("Get-ChildItem -Path 'C:/Data' | Select-Object -ExpandProperty Name")).split() == [
        "app.conf",
        "made.txt",
        "sub",
    ]
    assert host.check_output(_ps("(Get-Service -Name 'W3SVC').Status")) == "Running"


def test_errors_are_text_for_command_and_clixml_for_encodedcommand(shell):
    """powershell.exe writes CLIXML to a redirected stderr only for -EncodedCommand (or -OutputFormat XML)."""
    rc, _, err = shell(_ps("Get-Content 'C:/Data/nope.txt'"))
    assert rc == 1 and err.startswith(
        b"Get-Content : Cannot find path 'C:\\Data\\nope.txt' because it does not exist.\r\n"
    )
    assert b"    + FullyQualifiedErrorId : PathNotFound,Microsoft.PowerShell.Commands.GetContentCommand\r\n" in err
    import base64

    encoded = base64.b64encode("Get-Content 'C:/Data/nope.txt'".encode("utf-16-le")).decode()
    rc, _, err = shell(f"powershell -NoProfile -NonInteractive -EncodedCommand {encoded}")
    assert rc == 1 and err.startswith(b"#< CLIXML\r\n") and b'<S S="Error">Get-Content : Cannot find path' in err
