r"""The emulated guest's registry (``HKEY_LOCAL_MACHINE`` only) and ``reg.exe``.

Where it lives: like the real hives under ``C:\Windows\System32\config``, the registry is part of the
instance's OS drive: ``C:\Windows\System32\config\vmrole-registry.json`` (JSON: ``{"keys": {"HKEY_LOCAL_MACHINE\\
SOFTWARE\\…": {"ValueName": ["REG_SZ", "data"], …}}}``; ``""`` is the default value).  Until it exists the
registry is the base image's, taken from (first that applies):

1. that file, if the image brings one (an ``--image-dir`` may);
2. the image's real hives ``C:\Windows\System32\config\SOFTWARE`` and ``SYSTEM`` (an ``--image-dir`` holding
   a Windows OS drive): the subtrees in :data:`HIVE_IMPORT` are read with the project's regf reader
   (``harness.readers.image.regf``, ``CurrentControlSet`` resolved through ``SYSTEM\Select\Current``) and
   stored in the file at once, so the hives are parsed once per OS drive;
3. :data:`BASE_REGISTRY` below (the generated base image has no hives).

Writes go to the file, in the instance's OS drive: a reboot keeps them, a reimage or rebuild (which copy the
image's OS drive back, ``harness/fabric/lifecycle.py``) resets the registry to the image's.

:data:`BASE_REGISTRY` holds the values a Windows Server 2008 R2 SP1 Datacenter VM role image carries
(``CurrentVersion`` 6.1, build 7601, see https://learn.microsoft.com/windows/win32/sysinfo/operating-system-version),
a generalized image's setup state (``HKLM\SYSTEM\Setup``: setup finished, no OOBE pending; the sysprep status
``GeneralizationState`` 7 / ``CleanupState`` 2 that a sysprepped image has once it has booted), the Azure guest
agent's service key and one service key per entry of ``instance["services"]`` (``Start`` 2 automatic, 3 manual, 4
disabled, https://learn.microsoft.com/windows-hardware/drivers/install/hklm-system-currentcontrolset-services-registry-tree).

``reg.exe`` (cmd): ``reg query KEY [/v NAME | /ve] [/s]``, ``reg add KEY [/v NAME | /ve] [/t TYPE] [/d DATA] [/f]``,
``reg delete KEY [/v NAME | /ve | /va] /f``; keys as ``HKLM\…`` or ``HKEY_LOCAL_MACHINE\…``.  Output and errors as
reg.exe prints them (``ERROR: The system was unable to find the specified registry key or value.``, rc 1).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import CommandIO, split_args, write_err, write_out

if TYPE_CHECKING:
    from .guest import Guest

HKLM = "HKEY_LOCAL_MACHINE"
STORE = ("Windows", "System32", "config", "vmrole-registry.json")
TYPES = ("REG_SZ", "REG_EXPAND_SZ", "REG_MULTI_SZ", "REG_DWORD", "REG_QWORD", "REG_BINARY", "REG_NONE")
_START = {"boot": 0, "system": 1, "auto": 2, "automatic": 2, "manual": 3, "demand": 3, "disabled": 4}

_NT = HKLM + "\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion"
BASE_REGISTRY: dict[str, dict[str, list[Any]]] = {
    _NT: {
        "ProductName": ["REG_SZ", "Windows Server 2008 R2 Datacenter"],
        "EditionID": ["REG_SZ", "ServerDatacenter"],
        "InstallationType": ["REG_SZ", "Server"],
        "CurrentVersion": ["REG_SZ", "6.1"],
        "CurrentBuild": ["REG_SZ", "7601"],
        "CurrentBuildNumber": ["REG_SZ", "7601"],
        "CSDVersion": ["REG_SZ", "Service Pack 1"],
        "CSDBuildNumber": ["REG_SZ", "1130"],
        "BuildLab": ["REG_SZ", "7601.win7sp1_rtm.101119-1850"],
        "BuildLabEx": ["REG_SZ", "7601.17514.amd64fre.win7sp1_rtm.101119-1850"],
        "CurrentType": ["REG_SZ", "Multiprocessor Free"],
        "SoftwareType": ["REG_SZ", "System"],
        "SystemRoot": ["REG_SZ", "C:\\Windows"],
        "PathName": ["REG_SZ", "C:\\Windows"],
        "RegisteredOwner": ["REG_SZ", "Windows User"],
        "RegisteredOrganization": ["REG_SZ", ""],
    },
    HKLM + "\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion": {
        "ProgramFilesDir": ["REG_SZ", "C:\\Program Files"],
        "ProgramFilesDir (x86)": ["REG_SZ", "C:\\Program Files (x86)"],
        "CommonFilesDir": ["REG_SZ", "C:\\Program Files\\Common Files"],
        "ProgramFilesPath": ["REG_EXPAND_SZ", "%ProgramFiles%"],
        "DevicePath": ["REG_EXPAND_SZ", "%SystemRoot%\\inf"],
    },
    HKLM + "\\SYSTEM\\Setup": {
        "SystemSetupInProgress": ["REG_DWORD", 0],
        "OOBEInProgress": ["REG_DWORD", 0],
        "SetupType": ["REG_DWORD", 0],
        "CmdLine": ["REG_SZ", ""],
        "SystemPartition": ["REG_SZ", "\\Device\\HarddiskVolume1"],
        "OsLoaderPath": ["REG_SZ", "\\"],
    },
    HKLM + "\\SYSTEM\\Setup\\Status\\SysprepStatus": {
        "GeneralizationState": ["REG_DWORD", 7],
        "CleanupState": ["REG_DWORD", 2],
    },
    HKLM + "\\SYSTEM\\CurrentControlSet\\Services\\WindowsAzureGuestAgent": {
        "Type": ["REG_DWORD", 16],
        "Start": ["REG_DWORD", 2],
        "ErrorControl": ["REG_DWORD", 1],
        "ImagePath": ["REG_EXPAND_SZ", "C:\\WindowsAzure\\Packages\\GuestAgent\\WindowsAzureGuestAgent.exe"],
        "DisplayName": ["REG_SZ", "Windows Azure Guest Agent"],
        "ObjectName": ["REG_SZ", "LocalSystem"],
    },
    HKLM + "\\SOFTWARE\\Microsoft\\Windows Azure": {},
}


# (hive file, path in that hive, depth of subkeys kept) read from a real image; "CurrentControlSet" in a SYSTEM
# path is the control set SYSTEM\Select\Current names
HIVE_IMPORT: tuple[tuple[str, str, int], ...] = (
    ("SOFTWARE", "Microsoft\\Windows NT\\CurrentVersion", 0),
    ("SOFTWARE", "Microsoft\\Windows\\CurrentVersion", 0),
    ("SOFTWARE", "Microsoft\\Windows Azure", 3),
    ("SYSTEM", "Setup", 2),
    ("SYSTEM", "CurrentControlSet\\Services", 1),
    ("SYSTEM", "CurrentControlSet\\Control\\ComputerName", 1),
)
_REG_TYPE_NAMES = {0: "REG_NONE", 1: "REG_SZ", 2: "REG_EXPAND_SZ", 3: "REG_BINARY", 4: "REG_DWORD", 7: "REG_MULTI_SZ",
                   11: "REG_QWORD"}  # fmt: skip


def from_hives(config_dir: Path) -> dict[str, dict[str, list[Any]]] | None:
    """The :data:`HIVE_IMPORT` subtrees of the hives in ``config_dir``, or None when it holds no readable hive."""
    from harness.readers.errors import Unreadable
    from harness.readers.image.regf import Hive, Key

    keys: dict[str, dict[str, list[Any]]] = {}
    found = False
    for hive_name in ("SOFTWARE", "SYSTEM"):
        path = config_dir / hive_name
        try:
            hive = Hive(path.read_bytes(), f"C:\\Windows\\System32\\config\\{hive_name}")
        except (OSError, Unreadable):
            continue
        found = True
        control_set = "ControlSet001"
        if hive_name == "SYSTEM":
            try:
                select = hive.key("Select")
                current = select.value("Current") if select is not None else None
                number = current.as_python() if current is not None else None
                if isinstance(number, int):
                    control_set = f"ControlSet{number:03d}"
            except Unreadable:
                pass

        def walk(key: Key, shown: str, depth: int) -> None:
            values: dict[str, list[Any]] = {}
            for value in key.values():
                kind = _REG_TYPE_NAMES.get(value.type, "REG_BINARY")
                data = value.as_python()
                if kind == "REG_BINARY" or isinstance(data, bytes) or data is None:
                    kind, data = ("REG_BINARY", value.data.hex().upper())
                values[value.name] = [kind, data]
            keys[shown] = values
            if depth > 0:
                for sub in key.subkeys():
                    walk(sub, f"{shown}\\{sub.name}", depth - 1)

        for wanted_hive, inner, depth in HIVE_IMPORT:
            if wanted_hive != hive_name:
                continue
            real = inner.replace("CurrentControlSet", control_set, 1)
            try:
                key = hive.key(real)
                if key is not None:
                    walk(key, f"{HKLM}\\{hive_name}\\{inner}", depth)
            except Unreadable:  # a damaged subtree: the rest is still read
                continue
    return keys if found else None


class RegistryError(Exception):
    """A key or value that does not exist (``kind`` "key" or "value"), or a key that cannot be made."""

    def __init__(self, kind: str, key: str, name: str = "") -> None:
        super().__init__(f"{kind} {key} {name}".strip())
        self.kind = kind
        self.key = key
        self.name = name


def canonical(raw: str) -> str | None:
    r"""``HKLM:\x`` / ``HKLM\x`` / ``HKEY_LOCAL_MACHINE\x`` / ``Registry::HKEY_LOCAL_MACHINE\x`` ->
    ``HKEY_LOCAL_MACHINE\x`` (trailing separators dropped); None for another hive or no hive."""
    text = raw.strip().strip('"').replace("/", "\\")
    text = re.sub(r"^(Microsoft\.PowerShell\.Core\\)?Registry::", "", text, flags=re.IGNORECASE)
    m = re.match(r"^(HKLM:?|HKEY_LOCAL_MACHINE:?)(\\.*)?$", text, re.IGNORECASE)
    if not m:
        return None
    parts = [p for p in (m.group(2) or "").split("\\") if p]
    return "\\".join([HKLM, *parts])


def is_registry_path(raw: str) -> bool:
    return bool(re.match(r"^\s*\"?((Microsoft\.PowerShell\.Core\\)?Registry::|HK[A-Z_]*:)", raw, re.IGNORECASE))


def service_keys(services: list[dict[str, Any]]) -> dict[str, dict[str, list[Any]]]:
    out: dict[str, dict[str, list[Any]]] = {}
    for svc in services:
        name = str(svc["name"])
        out[f"{HKLM}\\SYSTEM\\CurrentControlSet\\Services\\{name}"] = {
            "Type": ["REG_DWORD", 32],
            "Start": ["REG_DWORD", _START.get(str(svc.get("start", "")).lower(), 3)],
            "ErrorControl": ["REG_DWORD", 1],
            "DisplayName": ["REG_SZ", str(svc.get("display_name", name))],
            "ObjectName": ["REG_SZ", "LocalSystem"],
        }
    return out


class Registry:
    """HKLM as a dict ``key -> {value name -> [type, data]}`` (keys and names case-insensitive, spelling kept)."""

    def __init__(self, os_drive: Path | None, services: list[dict[str, Any]]) -> None:
        self.path = os_drive.joinpath(*STORE) if os_drive is not None else None
        self.keys: dict[str, dict[str, list[Any]]] = {}
        stored = None
        if self.path is not None and self.path.is_file():  # the OS drive is a copy of the image: an image's
            try:  # own file is found here too
                stored = json.loads(self.path.read_text("utf-8")).get("keys")
            except (OSError, ValueError, AttributeError):
                stored = None
        imported = None
        if not isinstance(stored, dict) and self.path is not None:
            imported = from_hives(self.path.parent)
        if isinstance(stored, dict):
            self.keys = {str(k): dict(v) for k, v in stored.items() if isinstance(v, dict)}
        elif imported is not None:
            self.keys = imported
        else:
            self.keys = {k: {n: list(v) for n, v in vals.items()} for k, vals in BASE_REGISTRY.items()}
            self.keys.update(service_keys(services))
        for key in list(self.keys):  # every parent of a stored key exists
            parts = key.split("\\")
            for i in range(1, len(parts)):
                self.keys.setdefault("\\".join(parts[:i]), {})
        if imported is not None:
            self.save()  # parse the hives once per OS drive

    # -- lookups -----------------------------------------------------------------------------------------
    def find(self, key: str) -> str | None:
        """The stored spelling of ``key`` (canonical form), or None."""
        low = key.lower()
        return next((k for k in self.keys if k.lower() == low), None)

    def values(self, key: str) -> dict[str, list[Any]]:
        found = self.find(key)
        if found is None:
            raise RegistryError("key", key)
        return self.keys[found]

    def value(self, key: str, name: str) -> tuple[str, list[Any]]:
        vals = self.values(key)
        found = next((n for n in vals if n.lower() == name.lower()), None)
        if found is None:
            raise RegistryError("value", key, name)
        return found, vals[found]

    def subkeys(self, key: str) -> list[str]:
        found = self.find(key)
        if found is None:
            raise RegistryError("key", key)
        depth = found.count("\\") + 1
        prefix = found.lower() + "\\"
        return sorted((k for k in self.keys if k.lower().startswith(prefix) and k.count("\\") == depth), key=str.lower)

    # -- changes -----------------------------------------------------------------------------------------
    def create_key(self, key: str, force: bool = False) -> str:
        """Creates ``key`` (parents too when ``force``); an existing key is emptied when ``force`` (as New-Item
        -Force does), refused otherwise."""
        found = self.find(key)
        if found is not None and not force:
            raise RegistryError("exists", key)
        parent = key.rsplit("\\", 1)[0]
        if not force and self.find(parent) is None:
            raise RegistryError("key", parent)
        if found is not None:
            self.delete_key(found, recurse=True)
        parts = key.split("\\")
        for i in range(1, len(parts) + 1):
            sub = "\\".join(parts[:i])
            if self.find(sub) is None:
                self.keys[sub] = {}
        self.save()
        return self.find(key) or key

    def delete_key(self, key: str, recurse: bool) -> None:
        found = self.find(key)
        if found is None:
            raise RegistryError("key", key)
        doomed = [k for k in self.keys if k.lower() == found.lower() or k.lower().startswith(found.lower() + "\\")]
        if len(doomed) > 1 and not recurse:
            raise RegistryError("children", key)
        for k in doomed:
            del self.keys[k]
        self.save()

    def set_value(self, key: str, name: str, kind: str, data: Any) -> None:
        vals = self.values(key)
        existing = next((n for n in vals if n.lower() == name.lower()), name)
        vals[existing] = [kind, data]
        self.save()

    def delete_value(self, key: str, name: str) -> None:
        found, _ = self.value(key, name)
        del self.values(key)[found]
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"keys": self.keys}, indent=1, sort_keys=True), "utf-8")
        os.replace(tmp, self.path)


def convert(kind: str, raw: Any) -> Any:
    """Data of a value of type ``kind`` from text (reg add /d, PowerShell -Value); ValueError when it does not fit."""
    if kind in ("REG_DWORD", "REG_QWORD"):
        text = str(raw).strip()
        number = int(text, 16) if text.lower().startswith("0x") else int(text)
        limit = 0xFFFFFFFF if kind == "REG_DWORD" else 0xFFFFFFFFFFFFFFFF
        if number < 0:
            number &= limit
        if number > limit:
            raise ValueError(text)
        return number
    if kind == "REG_MULTI_SZ":
        return raw if isinstance(raw, list) else [str(raw)]
    if kind == "REG_BINARY":
        text = str(raw).replace(",", "").replace(" ", "")
        bytes.fromhex(text)
        return text.upper()
    return str(raw)


def reg_text(kind: str, data: Any) -> str:
    """A value's data as reg.exe prints it."""
    if kind in ("REG_DWORD", "REG_QWORD"):
        return f"0x{int(data):x}"
    if kind == "REG_MULTI_SZ":
        return "\\0".join(str(x) for x in data)
    return str(data)


_ERR = "ERROR: The system was unable to find the specified registry key or value."


def reg(g: Guest, rest: str, io: CommandIO) -> int:
    """``reg query|add|delete`` (see the module docstring)."""
    args = split_args(rest)
    if not args or args[0].lower() not in ("query", "add", "delete"):
        write_err(io, 'ERROR: Invalid syntax.\nType "REG /?" for usage.')
        return 1
    op = args[0].lower()
    if len(args) < 2:
        write_err(io, f'ERROR: Invalid syntax.\nType "REG {op.upper()} /?" for usage.')
        return 1
    key = canonical(args[1])
    if key is None:
        write_err(io, 'ERROR: Invalid key name.\nType "REG ' + op.upper() + ' /?" for usage.')
        return 1
    opts: dict[str, str | None] = {}
    i = 2
    while i < len(args):
        low = args[i].lower()
        if low in ("/v", "/t", "/d", "/se") and i + 1 < len(args):
            opts[low] = args[i + 1]
            i += 2
            continue
        opts[low] = None
        i += 1
    reg_ = g.registry()
    try:
        if op == "query":
            return _query(reg_, key, opts, io)
        if op == "add":
            if reg_.find(key) is None:
                reg_.create_key(key, force=True)
            if "/v" in opts or "/ve" in opts:
                kind = str(opts.get("/t") or "REG_SZ").upper()
                if kind not in TYPES:
                    write_err(io, 'ERROR: Invalid syntax.\nType "REG ADD /?" for usage.')
                    return 1
                try:
                    data = convert(kind, opts.get("/d") or ("0" if kind in ("REG_DWORD", "REG_QWORD") else ""))
                except ValueError:
                    write_err(io, 'ERROR: Invalid syntax.\nType "REG ADD /?" for usage.')
                    return 1
                reg_.set_value(key, "" if "/ve" in opts else str(opts["/v"]), kind, data)
            write_out(io, "The operation completed successfully.\n")
            return 0
        # delete (always as if /f were given: there is no console to confirm on)
        if "/v" in opts:
            reg_.delete_value(key, str(opts["/v"]))
        elif "/ve" in opts:
            reg_.delete_value(key, "")
        elif "/va" in opts:
            for name in list(reg_.values(key)):
                reg_.delete_value(key, name)
        else:
            reg_.delete_key(key, recurse=True)
        write_out(io, "The operation completed successfully.\n")
        return 0
    except RegistryError:
        write_err(io, _ERR)
        return 1


def _query(reg_: Registry, key: str, opts: dict[str, str | None], io: CommandIO) -> int:
    found = reg_.find(key)
    if found is None:
        write_err(io, _ERR)
        return 1

    def rows(k: str, only: str | None) -> list[str]:
        out = []
        for name, (kind, data) in reg_.keys[k].items():
            if only is not None and name.lower() != only.lower():
                continue
            out.append(f"    {name or '(Default)'}    {kind}    {reg_text(kind, data)}")
        return out

    if "/v" in opts or "/ve" in opts:
        only = "" if "/ve" in opts else str(opts["/v"])
        lines: list[str] = []
        targets = [found] + (
            [k for k in reg_.keys if k.lower().startswith(found.lower() + "\\")] if "/s" in opts else []
        )
        hits = 0
        for k in sorted(targets, key=str.lower):
            r = rows(k, only)
            if r:
                hits += len(r)
                lines += [k, *r, ""]
        if not hits:
            write_err(io, _ERR)
            return 1
        write_out(
            io, "\n" + "\n".join(lines) + (f"\nEnd of search: {hits} match(es) found.\n" if "/s" in opts else "\n")
        )
        return 0
    if "/s" in opts:
        lines = []
        for k in sorted([found] + [k for k in reg_.keys if k.lower().startswith(found.lower() + "\\")], key=str.lower):
            lines += [k, *rows(k, None), ""]
        write_out(io, "\n" + "\n".join(lines))
        return 0
    lines = [found, *rows(found, None), ""]
    lines += reg_.subkeys(found)
    write_out(io, "\n" + "\n".join(lines) + "\n")
    return 0
