r"""The emulated Windows guest behind the fabric's WinRM server.

Commands act on **this instance's real state** (``instance.json``): files live in the instance's drive
folders, listening state is checked with a real connect (TCP) or bind (UDP), services come from
``instance["services"]`` (read live from the dict the server was started with, so an owner that mutates it in
place is seen at once), the role status from ``status_file``.  Nothing is canned except the OS identity.

Each WinRS Command runs like a fresh ``cmd.exe /c <line>`` process (so ``cd`` does not persist), cwd
``C:\Users\<user>`` when that folder exists on the OS drive, else ``C:\``.  Text output is encoded in the
shell's code page (``WINRS_CODEPAGE``: 437 by default, 65001 → UTF-8); ``type``/``Get-Content`` of a file emit
its bytes / decoded text.
The commands live in their own modules: :mod:`.paths` (Windows paths -> the instance's folders),
:mod:`.cmd` (the cmd.exe interpreter and its commands), :mod:`.powershell` (powershell.exe; tokenizer and
binder in :mod:`.pstokens`), :mod:`.netsh` (the runtime firewall), :mod:`.registry` (HKLM and reg.exe);
:class:`Guest` is the instance state they share and the entry point the WinRM server calls.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .cmd import CmdExe
from .common import OS_NAME, OS_VERSION, CommandIO, split_args, write_err
from .netsh import default_firewall, local_port_map
from .paths import Drives, GuestPath, PathError
from .powershell import run_powershell
from .registry import Registry

__all__ = [
    "OS_NAME",
    "OS_VERSION",
    "CommandIO",
    "Drives",
    "Guest",
    "GuestPath",
    "PathError",
    "default_firewall",
    "split_args",
]


class Guest:
    def __init__(self, instance: dict[str, Any], username: str) -> None:
        self.instance = instance
        self.id = str(instance.get("id") or "localhost")
        #: what the machine calls itself (hostname, %COMPUTERNAME%): a scale-set VM's computer name
        #: (``webvm000002``) when the fabric serves the deployment as a scale set, else the instance id
        self.computer = str(instance.get("name") or self.id)
        self.user = username
        self.host = str(instance.get("host") or "127.0.0.1")
        self.drives = Drives(instance)
        status = instance.get("status_file")
        self.instance_dir = Path(instance["dir"]) if instance.get("dir") else Path(status).parent if status else None
        self._local_ports: dict[tuple[str, int], int] | None = None

    @property
    def cwd(self) -> str:
        """``C:\\Users\\<user>`` when that folder exists on the OS drive, else ``C:\\``."""
        profile = f"C:\\Users\\{self.user}"
        try:
            return profile if self.drives.resolve(profile, "C:\\").path.is_dir() else "C:\\"
        except PathError:
            return "C:\\"

    # -- environment --------------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {
            "ComSpec": "C:\\Windows\\system32\\cmd.exe",
            "COMPUTERNAME": self.computer.upper(),
            "NUMBER_OF_PROCESSORS": str(os.cpu_count() or 1),
            "OS": "Windows_NT",
            "PROCESSOR_ARCHITECTURE": "AMD64",
            "SystemDrive": "C:",
            "SystemRoot": "C:\\Windows",
            "TEMP": f"C:\\Users\\{self.user}\\AppData\\Local\\Temp",
            "TMP": f"C:\\Users\\{self.user}\\AppData\\Local\\Temp",
            "USERDOMAIN": self.computer.upper(),
            "USERNAME": self.user,
            "USERPROFILE": f"C:\\Users\\{self.user}",
            "windir": "C:\\Windows",
        }

    def getenv(self, name: str, default: str = "") -> str:
        for k, v in self.env().items():
            if k.lower() == name.lower():
                return v
        return default

    def expand(self, text: str) -> str:
        return re.sub(r"%([^%\s]+)%", lambda m: self.getenv(m.group(1), m.group(0)), text)

    def services(self) -> list[dict[str, Any]]:
        return [s for s in self.instance.get("services") or [] if isinstance(s, dict) and s.get("name")]

    def service(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.services() if str(s["name"]).lower() == name.lower()), None)

    def listening_ports(self) -> list[tuple[str, int]]:
        ports: list[tuple[str, int]] = []
        for ep in self.instance.get("endpoints") or []:
            if isinstance(ep, dict) and isinstance(ep.get("port"), int):
                ports.append(("UDP" if ep.get("protocol") == "udp" else "TCP", ep["port"]))
        if isinstance(self.instance.get("agent_port"), int):
            ports.append(("TCP", self.instance["agent_port"]))
        winrm = self.instance.get("winrm") or {}
        for key in ("http_port", "https_port"):
            if isinstance(winrm.get(key), int):
                ports.append(("TCP", winrm[key]))
        return sorted(set(ports), key=lambda p: (p[0], p[1]))

    def status(self) -> str | None:
        path = self.instance.get("status_file")
        try:
            return Path(path).read_text("utf-8").strip() if path else None
        except OSError:
            return None

    def resolve(self, raw: str) -> GuestPath:
        return self.drives.resolve(raw, self.cwd)

    def registry(self) -> Registry:
        """HKLM as this instance's OS drive holds it (read again for every command)."""
        drives = self.instance.get("drives") or {}
        os_drive = Path(drives["C"]) if isinstance(drives.get("C"), str) else None
        return Registry(os_drive, self.services())

    # -- entry point --------------------------------------------------------------------------------------
    def run(self, command: str, args: list[str], io: CommandIO) -> int:
        line = " ".join([command.strip(), *(a for a in args if a)]).strip()
        try:
            return self.cmd(line, io)
        except Exception as exc:  # never let a guest bug kill the shell: report like a crashed process
            write_err(io, f"Internal error in the emulated guest: {type(exc).__name__}")
            return 1

    def cmd(self, line: str, io: CommandIO) -> int:
        """``line`` as ``cmd.exe /c`` runs it."""
        return CmdExe(self).run(line, io)

    def powershell(self, line: str, io: CommandIO) -> int:
        """``line`` (``powershell[.exe] …``) as cmd.exe starts it."""
        return run_powershell(self, line, io)

    # -- declared local ports and the runtime firewall ------------------------------------------------
    def local_port_map(self) -> dict[tuple[str, int], int]:
        """(proto, port this instance really listens on) -> the port the role declares (``localPort``).

        From ``endpoints[*].local_port`` when the controller writes it, else from the deployment's csdef
        (``STATE/ServiceDefinition.csdef``); WinRM listeners are 5986 (HTTPS) / 5985 (HTTP) as on Windows.
        """
        if self._local_ports is None:
            self._local_ports = local_port_map(self.instance, self.instance_dir)
        return self._local_ports

    def firewall(self) -> dict[str, Any]:
        """The instance's Windows Firewall: ``instance_dir/firewall.json`` (read on every command, so a test
        can change it at run time), else ``instance["firewall"]``, else :func:`default_firewall`."""
        if self.instance_dir is not None:
            path = self.instance_dir / "firewall.json"
            try:
                data = json.loads(path.read_text("utf-8"))
                if isinstance(data, dict):
                    return data
            except (OSError, ValueError):
                pass
        fw = self.instance.get("firewall")
        if isinstance(fw, dict):
            return fw
        return default_firewall(self.instance, self.local_port_map())
