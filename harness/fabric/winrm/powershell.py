r"""The PowerShell interpreter of the emulated guest (``powershell.exe`` and its command line).

The command line is split into arguments as the C runtime splits it (:func:`argv`: ``\"`` is a literal quote).
Switches: ``-EncodedCommand``/``-encodedcommand``/``-enc``/``-ec``/``-e`` ``<base64 UTF-16LE>`` (what pywinrm
``run_ps`` sends), ``-Command``/``-c`` (every argument after it, joined with spaces, is the script: testinfra's
``-command \"Test-Path 'p'\"`` is the script ``"Test-Path 'p'"``, a string that is printed, as on a real
guest), ``-File path``; ignored:
``-NoProfile -NonInteractive -NoLogo -ExecutionPolicy X -InputFormat X -OutputFormat X -WindowStyle X -Sta
-Mta -Version X``.  Statements are separated by ``;`` or newlines, ``#`` starts a comment; a statement is a
pipeline ``head [| Out-Null | Out-String | Select-Object -ExpandProperty P | Select-Object -Property A,B |
ConvertTo-Json]`` whose head is a cmdlet, a string literal (printed) or ``(pipeline)`` followed by any
``.Member`` and optionally ``-is``/``-isnot [Type]`` (e.g. ``(Get-Item 'p') -is [System.IO.FileInfo]``,
``(Get-Service -Name 'W3SVC').Status``); a failing command inside ``(…)`` is a non-terminating error (the value
is ``$null``).  ``-ErrorAction SilentlyContinue|Ignore`` drops a cmdlet's error.
Strings: ``'single'`` (``''`` escape), ``"double"`` (``$env:NAME`` expanded, backtick escapes), bare words.
Cmdlet and parameter names are case-insensitive; parameters may be abbreviated when unambiguous; ``--``
ends parameters.

==============================================================  ==================================================
statement                                                       result
==============================================================  ==================================================
``$ProgressPreference='SilentlyContinue'`` (any ``$x = 'v'``)   accepted; ``$ErrorActionPreference='Stop'`` stops
                                                                at the first error
``Write-Output 'x'`` (``echo``, ``write``), ``Write-Host 'x'``  ``x``
``hostname``                                                    the computer name (instance id, or scale-set VM name)
``Test-Path [-Path] 'p' [-PathType Leaf|Container]``            ``True`` / ``False``
``Get-Content [-Path] 'p' [-Raw]`` (``gc``, ``cat``, ``type``)  the file's lines (``-Raw``: the text as is)
``Set-Content [-Path] 'p' [-Value] 'v'`` (``sc``)               writes ``v`` + CRLF (UTF-8, no BOM)
``Add-Content [-Path] 'p' [-Value] 'v'`` (``ac``)               appends ``v`` + CRLF
``New-Item [-ItemType Directory|File] [-Force] [-Path] 'p'``    creates it; prints the PowerShell item table
                                                                (``mkdir``/``md`` = ``New-Item -ItemType
                                                                Directory``); exists without ``-Force`` → error
``Remove-Item [-Recurse] [-Force] [-Path] 'p'`` (``rm``, ``del``,  deletes; missing → ``Cannot find path … because
``ri``, ``rmdir``, ``rd``)                                        it does not exist.``
``Get-ChildItem [-Path] 'p' [-Name]`` (``dir``, ``ls``, ``gci``)  item table (``-Name``: names only); items have
                                                                Name, FullName, Length (files), LastWriteTime
                                                                (printed ``Monday, December 7, 2026 7:32:44 PM``)
``Get-Item [-Path] 'p'`` (``gi``)                                the file/directory item (FileInfo/DirectoryInfo)
``Select-String [-Path] 'p' [-Pattern] 're' [-SimpleMatch]``     ``path:line:text`` per matching line (case-
                                                                insensitive unless ``-CaseSensitive``)
``Get-Service [-Name] X`` (``gsv``)                             Status/Name/DisplayName table from ``services``
                                                                (StartType Automatic/Manual/Disabled); unknown →
                                                                ``Cannot find any service with service name 'X'.``
``Get-ItemProperty -Path 'HKLM:\…' [-Name N]`` (``gp``)         the key's values (list format); ``(…).N`` the value
``Set-ItemProperty -Path k -Name N -Value v [-Type T]``         sets it (a new value is a String unless ``-Type``)
``New-ItemProperty -Path k -Name N -Value v [-PropertyType T]`` creates it; exists without ``-Force`` → error
``Remove-ItemProperty -Path k -Name N``                         deletes the value
``New-Item``/``Get-Item``/``Get-ChildItem``/``Test-Path``/      the same on ``HKLM:\…`` keys (see ``registry.py``;
``Remove-Item`` on ``HKLM:\…``                                  ``New-Item -Force`` on an existing key empties it)
``Get-NetTCPConnection -State Listen -LocalPort N``             a LocalAddress/LocalPort/State table when N
                                                                listens (real connect; a role's declared
                                                                ``localPort`` is shown on 0.0.0.0 while the
                                                                endpoint listens), else the CIM "No matching
                                                                MSFT_NetTCPConnection objects" error.  (A 2012+
                                                                cmdlet, emulated although the OS claims 2008 R2;
                                                                ``Test-NetConnection`` is *not* emulated.)
``Get-Disk [-Number N]``, ``Get-Partition [-DiskNumber N]        the instance's disks as an Azure VM shows them
[-DriveLetter X]``, ``Get-Volume [-DriveLetter X]``              (``disks.py``: a scale-set VM's OS, temporary and
                                                                data disks by LUN; a classic instance's OS disk);
                                                                default table views trimmed; not found → the CIM
                                                                ``No MSFT_Disk objects found …`` error
``Start-Sleep -Seconds N`` / ``-Milliseconds N`` (``sleep``)     long-running (N ≤ 600 s), ends early on Signal
``Write-Error 'msg'``                                           CLIXML error record on stderr
``Invoke-VmrProbe -Json '<spec>'``                              harness probe, one round trip (below)
``exit N``                                                      rc N
anything else                                                   CLIXML ``The term 'X' is not recognized as the
                                                                name of a cmdlet, …`` error
==============================================================  ==================================================

Exit code: ``exit N``; else 1 when the last statement failed (its ``$?`` is false), else 0.  Errors go to
stderr as the console shows them (``Cmdlet : message``, ``At line:…``, ``+ CategoryInfo …``,
``+ FullyQualifiedErrorId …``), except for ``-EncodedCommand`` (or ``-OutputFormat XML``): then, as
powershell.exe does for a redirected stderr, as one ``#< CLIXML`` document of ``<S S="Error">`` lines (what
pywinrm's ``run_ps`` cleans).  If the file ``clixml-noise`` exists in the instance directory (the folder of
``status_file``), every such CLIXML run that does not set ``$ProgressPreference='SilentlyContinue'`` first also
writes a progress record
(``Preparing modules for first use.``) into that CLIXML document — with no errors, pywinrm passes it through
raw with rc 0 (diyan/pywinrm#245).

``Invoke-VmrProbe -Json '{"ports": [41001], "udp_ports": [41004], "paths": ["C:\\x"], "services": ["W3SVC"]}'``
prints one line of JSON (every key optional in the spec)::

    {"hostname": "WebVM_IN_0", "status": "ready",
     "ports": {"41001": {"listening": true}}, "udp_ports": {"41004": {"listening": true}},
     "paths": {"C:\\x": {"exists": true, "type": "directory"}},          # type: file|directory|null
     "services": {"W3SVC": {"exists": true, "state": "Running", "start": "Auto"}}}

Ports are checked on ``instance["host"]`` (127.0.0.1).  A malformed spec is a CLIXML error, rc 1.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import os
import re
import shutil
import socket
import stat
from typing import TYPE_CHECKING, Any

from . import disks
from .common import CRLF, MAX_SLEEP, CommandIO, fmt_time, is_tcp_listening, is_udp_bound, write_err, write_out
from .paths import GuestPath, PathError
from .pstokens import PROGRESS, Item, PsError, PsExit, Spec, Tok, bind, clixml_text, fq, ps_split, ps_tokens
from .registry import HKLM, Registry, RegistryError, canonical, convert, is_registry_path

if TYPE_CHECKING:
    from .guest import Guest

_TCP_HEADER = (
    "LocalAddress                        LocalPort RemoteAddress                       RemotePort State       "
    "AppliedSetting\n------------                        --------- -------------                       "
    "---------- -----       --------------"
)

_TCP_PROBE = re.compile(r"BeginConnect\(\s*'(?P<host>[^']+)'\s*,\s*(?P<port>\d+)")


def argv(text: str) -> list[str]:
    r"""A Windows command line split as the C runtime does it (``CommandLineToArgvW``, what powershell.exe gets):
    whitespace separates outside quotes; ``"`` toggles quoting; ``2n`` backslashes before a ``"`` are ``n``
    backslashes (the quote toggles), ``2n+1`` are ``n`` and a literal ``"``; other backslashes are literal;
    ``""`` inside quotes is a literal ``"``."""
    args: list[str] = []
    cur: list[str] = []
    have = in_quote = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            j = i
            while j < n and text[j] == "\\":
                j += 1
            count = j - i
            if j < n and text[j] == '"':
                cur.append("\\" * (count // 2))
                if count % 2:
                    cur.append('"')
                    i = j + 1
                else:
                    i = j
                have = True
                continue
            cur.append("\\" * count)
            have = True
            i = j
            continue
        if ch == '"':
            if in_quote and i + 1 < n and text[i + 1] == '"':
                cur.append('"')
                i += 2
                have = True
                continue
            in_quote = not in_quote
            have = True
        elif ch in " \t" and not in_quote:
            if have:
                args.append("".join(cur))
                cur, have = [], False
        else:
            cur.append(ch)
            have = True
        i += 1
    if have:
        args.append("".join(cur))
    return args


def run_powershell(g: Guest, line: str, io: CommandIO) -> int:
    """``powershell[.exe] <switches> …`` as cmd.exe starts it: the command line is split into arguments as the C
    runtime does (:func:`argv`), then read as powershell.exe reads them: ``-Command`` takes every argument
    after it, joined with spaces, as the script (so testinfra's ``-command \\"Test-Path 'C:/x'\\"`` is the
    script ``"Test-Path 'C:/x'"``: a string, which PowerShell prints)."""
    args = argv(line)
    if args and re.match(r"^powershell(\.exe)?$", args[0], re.IGNORECASE):
        args = args[1:]
    script: str | None = None
    takes_value = ("executionpolicy", "inputformat", "outputformat", "windowstyle", "version", "configurationname")
    encoded = False
    output_format: str | None = None
    i = 0
    while i < len(args):
        tok = args[i]
        if tok.startswith(("-", "/")) and len(tok) > 1:
            key = tok[1:].lower()
            if key in ("e", "ec", "enc") or ("encodedcommand".startswith(key) and len(key) >= 2 and key[0] == "e"):
                if i + 1 >= len(args):
                    return _ps_fail(io, "Cannot process the command because of a missing parameter.")
                encoded = True
                try:
                    script = base64.b64decode(args[i + 1], validate=True).decode("utf-16-le")
                except (binascii.Error, ValueError, UnicodeDecodeError):
                    return _ps_fail(
                        io,
                        "Cannot process the command because the value specified with -EncodedCommand is not "
                        "properly encoded. The value must be Base64 encoded.",
                    )
                break
            if key in ("c",) or ("command".startswith(key) and len(key) >= 2 and key[0] == "c"):
                script = " ".join(args[i + 1 :])
                break
            if key in ("f",) or ("file".startswith(key) and key[0] == "f"):
                try:
                    if i + 1 >= len(args):
                        raise PathError("")
                    script = g.resolve(args[i + 1]).path.read_text("utf-8-sig")
                except (PathError, OSError):
                    return _ps_fail(io, "The argument to the -File parameter does not exist.")
                break
            if any(t.startswith(key) for t in takes_value):
                if "outputformat".startswith(key) and len(key) >= 2 and key[0] == "o" and i + 1 < len(args):
                    output_format = args[i + 1].lower()
                i += 2
                continue
            i += 1
            continue
        script = " ".join(args[i:])  # no switch: the rest is the command
        break
    if script is None or not script.strip():
        return 0
    probe = _TCP_PROBE.search(script)
    if probe is not None and "System.Net.Sockets.TcpClient" in script:
        return _tcp_client_probe(g, io, probe.group("host"), int(probe.group("port")), script)
    # powershell.exe writes errors (and progress) to a redirected stderr as CLIXML only when the command was
    # -EncodedCommand (it assumes a PowerShell caller) or -OutputFormat XML; otherwise as the console shows them
    xml = output_format.startswith("x") if output_format else encoded
    return PowerShell(g, io, xml_errors=xml).run(script)


def _tcp_client_probe(g: Guest, io: CommandIO, host: str, port: int, script: str) -> int:
    """The .NET TcpClient connect probe (``New-Object System.Net.Sockets.TcpClient`` … ``BeginConnect(host,
    port, …)`` … ``WaitOne(ms)``), performed for real. ``host:port`` on the deployment's internal network
    (``instance["internal_network"]``) is routed to the listener of the instance that owns it."""
    wait = re.search(r"WaitOne\(\s*(\d+)", script)
    timeout = min(int(wait.group(1)) if wait else 3000, 30000) / 1000.0
    mark = re.search(r"'(\S+) ok'", script)
    tag = mark.group(1) if mark else "TcpClient"
    route = (g.instance.get("internal_network") or {}).get(f"{host}:{port}")
    target = (str(route[0]), int(route[1])) if route else (host, port)
    try:
        with socket.create_connection(target, timeout=timeout):
            write_out(io, f"{tag} ok\n")
    except TimeoutError:
        write_out(io, f"{tag} timeout\n")
    except OSError as exc:
        if isinstance(exc, ConnectionRefusedError):
            why = "No connection could be made because the target machine actively refused it"
        else:
            why = "A connection attempt failed because the connected party did not properly respond"
        write_out(io, f"{tag} error {why} {host}:{port}\n")
    return 0


def _ps_fail(io: CommandIO, message: str) -> int:
    write_err(io, message)
    return 1


class PsDate:
    """A DateTime: printed as PowerShell prints one (en-US long date and long time, what testinfra's
    ``mtime`` parses with ``%A, %B %d, %Y %I:%M:%S %p``), shown as date and time columns in item tables."""

    def __init__(self, ts: float) -> None:
        self.ts = ts

    def __str__(self) -> str:
        t = _dt.datetime.fromtimestamp(self.ts)
        return f"{t:%A}, {t:%B} {t.day}, {t.year} {t.hour % 12 or 12}:{t:%M:%S} {t:%p}"

    def table(self) -> tuple[str, str]:
        return fmt_time(self.ts)


# .NET type names ``-is`` knows (without the ``System.`` prefix, lower case); anything else is TypeNotFound
_KNOWN_TYPES = {
    "object", "string", "boolean", "bool", "int32", "int", "int64", "long", "array", "datetime",
    "io.fileinfo", "io.directoryinfo", "io.filesysteminfo", "serviceprocess.servicecontroller",
    "microsoft.win32.registrykey", "management.automation.pscustomobject", "management.automation.psobject",
}  # fmt: skip
# PowerShell's registry value kinds (-Type / -PropertyType) -> reg types
_PS_REG_TYPES = {
    "string": "REG_SZ", "expandstring": "REG_EXPAND_SZ", "binary": "REG_BINARY", "dword": "REG_DWORD",
    "multistring": "REG_MULTI_SZ", "qword": "REG_QWORD", "unknown": "REG_NONE", "none": "REG_NONE",
}  # fmt: skip


_STORAGE_COLUMNS = {
    "disk": (("Number", "Number"), ("Friendly Name", "FriendlyName"), ("HealthStatus", "HealthStatus"),
             ("OperationalStatus", "OperationalStatus"), ("Total Size", "Size"), ("Partition Style", "PartitionStyle")),
    "partition": (("DiskNumber", "DiskNumber"), ("PartitionNumber", "PartitionNumber"), ("DriveLetter", "DriveLetter"),
                  ("Size", "Size"), ("Type", "Type")),
    "volume": (("DriveLetter", "DriveLetter"), ("FileSystemLabel", "FileSystemLabel"), ("FileSystem", "FileSystem"),
               ("DriveType", "DriveType"), ("HealthStatus", "HealthStatus"), ("SizeRemaining", "SizeRemaining"),
               ("Size", "Size")),
}  # fmt: skip


def _storage_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):  # sizes as the Storage module prints them: 127 GB
        for unit, size in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
            if value >= size:
                return f"{value / size:.4g} {unit}"
        return f"{value} B"
    return str(value).strip("\x00")


def _grid(titles: list[str], grid: list[list[str]], *, strip_rule: bool = True) -> str:
    """A default table view: titles, a dashed rule, one row per item (columns as wide as their widest cell)."""
    sizes = [max(len(t), *(len(row[n]) for row in grid)) for n, t in enumerate(titles)]
    rule = " ".join("-" * len(t) + " " * (w - len(t)) for t, w in zip(titles, sizes, strict=True))
    lines = ["", " ".join(f"{t:<{w}}" for t, w in zip(titles, sizes, strict=True)).rstrip()]
    lines.append(rule.rstrip() if strip_rule else rule)
    lines += [" ".join(f"{c:<{w}}" for c, w in zip(row, sizes, strict=True)).rstrip() for row in grid]
    return "\n".join(lines) + "\n"


def _drive_letter(args: dict[str, Any]) -> str:
    """``-DriveLetter`` as given (``F``, ``f:``), upper case; "" when not given."""
    return str(args.get("DriveLetter") or "").strip().rstrip(":").upper()


def _type_key(name: str) -> str:
    low = name.strip().lower()
    return low[len("system.") :] if low.startswith("system.") else low


def _flat(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if isinstance(v, list):
            out.extend(v)
        elif v is not None:
            out.append(v)
    return out


# Windows PowerShell 5.1's ConvertTo-Json writes enums as numbers: ServiceControllerStatus values.
_SERVICE_STATUS = {"stopped": 1, "startpending": 2, "stoppending": 3, "running": 4, "continuepending": 5,
                   "pausepending": 6, "paused": 7}  # fmt: skip


def _json_value(r: Any) -> Any:
    if not isinstance(r, Item):
        return r
    props = dict(r.props)
    if r.kind in ("service", "selected:service"):
        for key in [k for k in props if k.lower() == "status"]:
            props[key] = _SERVICE_STATUS.get(str(props[key]).lower(), props[key])
        for key in [k for k in props if k.lower() == "starttype"]:
            props[key] = {"boot": 0, "system": 1, "automatic": 2, "manual": 3, "disabled": 4}.get(
                str(props[key]).lower(), props[key]
            )
    return props


class PowerShell:
    """One ``powershell.exe`` run of a script (see the module docstring for the surface)."""

    SPECS = {
        "write-output": Spec("Write-Output", ("InputObject",), ("NoEnumerate",), ("InputObject",)),
        "write-host": Spec(
            "Write-Host",
            ("Object", "ForegroundColor", "BackgroundColor"),
            ("NoNewline",),
            ("Object",),
        ),
        "write-error": Spec("Write-Error", ("Message", "Category", "ErrorId"), (), ("Message",)),
        "hostname": Spec("hostname"),
        "test-path": Spec("Test-Path", ("Path", "LiteralPath", "PathType"), ("IsValid",), ("Path",)),
        "get-content": Spec("Get-Content", ("Path", "LiteralPath", "Encoding", "TotalCount"), ("Raw",), ("Path",)),
        "set-content": Spec(
            "Set-Content",
            ("Path", "LiteralPath", "Value", "Encoding"),
            ("Force", "NoNewline"),
            ("Path", "Value"),
        ),
        "add-content": Spec(
            "Add-Content",
            ("Path", "LiteralPath", "Value", "Encoding"),
            ("Force", "NoNewline"),
            ("Path", "Value"),
        ),
        "new-item": Spec("New-Item", ("Path", "ItemType", "Name", "Value"), ("Force",), ("Path",)),
        "remove-item": Spec("Remove-Item", ("Path", "LiteralPath"), ("Recurse", "Force"), ("Path",)),
        "get-childitem": Spec(
            "Get-ChildItem",
            ("Path", "LiteralPath", "Filter"),
            ("Name", "Force", "Recurse"),
            ("Path",),
        ),
        "get-service": Spec("Get-Service", ("Name", "DisplayName"), (), ("Name",)),
        "get-item": Spec("Get-Item", ("Path", "LiteralPath"), ("Force",), ("Path",)),
        "select-string": Spec(
            "Select-String",
            ("Pattern", "Path", "LiteralPath", "Encoding"),
            ("SimpleMatch", "CaseSensitive", "Quiet", "NotMatch", "List"),
            ("Pattern", "Path"),
        ),
        "get-itemproperty": Spec("Get-ItemProperty", ("Path", "LiteralPath", "Name"), (), ("Path", "Name")),
        "set-itemproperty": Spec(
            "Set-ItemProperty",
            ("Path", "LiteralPath", "Name", "Value", "Type"),
            ("Force", "PassThru"),
            ("Path", "Name", "Value"),
        ),
        "new-itemproperty": Spec(
            "New-ItemProperty",
            ("Path", "LiteralPath", "Name", "Value", "PropertyType", "Type"),
            ("Force",),
            ("Path", "Name", "Value"),
        ),
        "remove-itemproperty": Spec(
            "Remove-ItemProperty", ("Path", "LiteralPath", "Name"), ("Force",), ("Path", "Name")
        ),
        "get-nettcpconnection": Spec(
            "Get-NetTCPConnection",
            ("State", "LocalPort", "LocalAddress"),
            (),
            ("LocalAddress", "LocalPort"),
        ),
        "start-sleep": Spec("Start-Sleep", ("Seconds", "Milliseconds"), (), ("Seconds",)),
        "invoke-vmrprobe": Spec("Invoke-VmrProbe", ("Json",), (), ("Json",)),
        "get-disk": Spec("Get-Disk", ("Number", "FriendlyName"), (), ("Number",)),
        "get-partition": Spec("Get-Partition", ("DiskNumber", "PartitionNumber", "DriveLetter"), (), ()),
        "get-volume": Spec("Get-Volume", ("DriveLetter", "FileSystemLabel"), (), ("DriveLetter",)),
        "invoke-webrequest": Spec(
            "Invoke-WebRequest",
            ("Uri", "Method", "Headers", "Body", "ContentType", "TimeoutSec", "OutFile"),
            ("UseBasicParsing",),
            ("Uri",),
        ),
        "exit": Spec("exit", ("Code",), (), ("Code",)),
    }
    ALIASES = {
        "echo": "write-output", "write": "write-output", "gc": "get-content", "cat": "get-content",
        "type": "get-content", "sc": "set-content", "ac": "add-content", "ni": "new-item", "rm": "remove-item",
        "del": "remove-item", "erase": "remove-item", "ri": "remove-item", "rd": "remove-item",
        "rmdir": "remove-item", "dir": "get-childitem", "ls": "get-childitem", "gci": "get-childitem",
        "gsv": "get-service", "sleep": "start-sleep", "hostname.exe": "hostname", "iwr": "invoke-webrequest",
        "curl": "invoke-webrequest", "wget": "invoke-webrequest", "gi": "get-item", "gp": "get-itemproperty",
        "sp": "set-itemproperty", "rp": "remove-itemproperty", "sls": "select-string",
    }  # fmt: skip

    def __init__(self, guest: Guest, io: CommandIO, *, xml_errors: bool = True) -> None:
        self.g = guest
        self.io = io
        self.xml_errors = xml_errors
        self.error_lines: list[str] = []
        self.vars: dict[str, str] = {}
        self.errors: list[str] = []
        self.progress = False
        self.deferred: list[PsError] = []  # non-terminating errors of the running statement

    # -- output -------------------------------------------------------------------------------------------
    def _emit(self, text: str) -> None:
        self.io.stdout(text.replace("\r\n", "\n").replace("\n", CRLF).encode(self.io.encoding, "replace"))

    def _record(self, err: PsError, stmt: str, line_no: int) -> None:
        if err.command:
            head = f"{err.command} : {err.message}"
            underline = "~" * max(1, len(stmt))
            lines = [head, f"At line:{line_no} char:1", f"+ {stmt}", f"+ {underline}"]
        else:
            lines = [f"{stmt} : {err.message}"]
        lines.append(f"    + CategoryInfo          : {err.category}")
        lines.append(f"    + FullyQualifiedErrorId : {err.fqid}")
        lines.append(" ")
        self.error_lines.extend(lines)
        self.errors.extend(f'<S S="Error">{clixml_text(ln + CRLF)}</S>' for ln in lines)

    def _flush_stderr(self) -> None:
        if not self.xml_errors:
            if self.error_lines:
                self.io.stderr("".join(ln + CRLF for ln in self.error_lines).encode(self.io.encoding, "replace"))
            return
        if not self.errors and not self.progress:
            return
        body = (PROGRESS if self.progress else "") + "".join(self.errors)
        doc = f'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">{body}</Objs>'
        self.io.stderr(doc.encode(self.io.encoding, "replace"))

    # -- run ----------------------------------------------------------------------------------------------
    def run(self, script: str) -> int:
        noise = self.g.instance_dir is not None and (self.g.instance_dir / "clixml-noise").exists()
        statements = []
        for line_no, line in enumerate(script.replace("\r\n", "\n").split("\n"), start=1):
            statements += [(s, line_no) for s in ps_split(line, ";\n")]
        if noise:
            first = statements[0][0] if statements else ""
            self.progress = not re.match(r"^\$ProgressPreference\s*=\s*['\"]?SilentlyContinue", first, re.I)
        last_ok = True
        rc: int | None = None
        try:
            for stmt, line_no in statements:
                try:
                    self._statement(stmt)
                    last_ok = True
                except PsError as err:
                    self._record(err, stmt, line_no)
                    last_ok = False
                    if self.vars.get("erroractionpreference", "").lower() == "stop":
                        break
        except PsExit as ex:
            rc = ex.code
        self._flush_stderr()
        if rc is not None:
            return rc
        return 0 if last_ok else 1

    def _statement(self, stmt: str) -> None:
        m = re.match(r"^\$(\w+)\s*=\s*(.*)$", stmt, re.DOTALL)
        if m:
            toks = ps_tokens(m.group(2), self.g.getenv)
            self.vars[m.group(1).lower()] = toks[0].text if toks else ""
            return
        self.deferred = []
        self._format(self._pipeline(stmt))
        if self.deferred:  # written after the output: the statement failed ($? false)
            raise self.deferred[0]

    def _pipeline(self, text: str) -> list[Any]:
        stages = ps_split(text, "|")
        if not stages:
            return []
        results = self._head(stages[0])
        for stage in stages[1:]:
            results = self._filter(stage, results)
        return results

    def _head(self, stage: str) -> list[Any]:
        """The first element of a pipeline: a ``(…)`` expression, a string literal (printed) or a command."""
        text = stage.strip()
        if text.startswith("("):
            return self._expression(text)
        if text[:1] in ("'", '"'):
            toks = ps_tokens(text, self.g.getenv)
            if len(toks) > 1:
                raise PsError(
                    f"Unexpected token '{toks[1].text}' in expression or statement.",
                    "ParserError: (:) [], ParentContainsErrorRecordException",
                    "ParentContainsErrorRecordException",
                    "UnexpectedToken",
                )
            return [toks[0].text] if toks else []
        return self._command(text)

    def _expression(self, text: str) -> list[Any]:
        """``(pipeline)`` then any ``.Member`` accesses, then optionally ``-is``/``-isnot [Type]``."""
        depth, quote, end = 0, "", -1
        for i, ch in enumerate(text):
            if quote:
                quote = "" if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    end = i
                    break
        if end < 0:
            raise PsError(
                "Missing closing ')' in expression.",
                "ParserError: (:) [], ParentContainsErrorRecordException",
                "ParentContainsErrorRecordException",
                "MissingEndParenthesisInExpression",
            )
        m = re.match(r"^((?:\.\w+)*)\s*(?:-(is|isnot)\s*\[([\w.]+)\])?\s*$", text[end + 1 :], re.IGNORECASE)
        if m is None:
            bad = text[end + 1 :].split()[0]
            raise PsError(
                f"Unexpected token '{bad}' in expression or statement.",
                "ParserError: (:) [], ParentContainsErrorRecordException",
                "ParentContainsErrorRecordException",
                "UnexpectedToken",
            )
        try:
            values = self._pipeline(text[1:end])
        except PsError as err:  # a failing command inside (…) is a non-terminating error: the value is $null
            self.deferred.append(err)
            values = []
        for member in (p for p in m.group(1).split(".") if p):
            values = _flat([self._member(v, member) for v in values])
        if m.group(2):
            if _type_key(m.group(3)) not in _KNOWN_TYPES:
                raise PsError(
                    f"Unable to find type [{m.group(3)}]. Make sure that the assembly that contains this type is "
                    "loaded.",
                    f"InvalidOperation: ({m.group(3)}:TypeName) [], RuntimeException",
                    "RuntimeException",
                    "TypeNotFound",
                )
            hit = len(values) == 1 and self._is(values[0], _type_key(m.group(3)))
            return [hit if m.group(2).lower() == "is" else not hit]
        return values

    @staticmethod
    def _member(value: Any, name: str) -> Any:
        if isinstance(value, Item):
            key = next((k for k in value.props if k.lower() == name.lower()), None)
            return value.props[key] if key is not None else None
        if isinstance(value, str) and name.lower() == "length":
            return len(value)
        return None

    @staticmethod
    def _is(value: Any, tkey: str) -> bool:
        if tkey in ("object", "management.automation.psobject"):
            return True
        if isinstance(value, Item):
            return any(_type_key(t) == tkey for t in value.types)
        if isinstance(value, bool):
            return tkey in ("boolean", "bool")
        if isinstance(value, int):
            return tkey in ("int32", "int", "int64", "long")
        if isinstance(value, str):
            return tkey == "string"
        if isinstance(value, PsDate):
            return tkey == "datetime"
        return False

    def _command(self, stage: str) -> list[Any]:
        toks = ps_tokens(stage, self.g.getenv)
        if not toks:
            return []
        silent = False  # -ErrorAction SilentlyContinue|Ignore (a common parameter of every cmdlet)
        kept = [toks[0]]
        i = 1
        while i < len(toks):
            low = toks[i].text.lower()
            if not toks[i].quoted and re.match(r"^-(erroraction|ea)(:|$)", low):
                value = low.split(":", 1)[1] if ":" in low else (toks[i + 1].text.lower() if i + 1 < len(toks) else "")
                silent = value in ("silentlycontinue", "ignore")
                i += 1 if ":" in low else 2
                continue
            kept.append(toks[i])
            i += 1
        toks = kept
        if silent:
            try:
                return self._invoke(toks)
            except PsError:
                return []
        return self._invoke(toks)

    def _invoke(self, toks: list[Tok]) -> list[Any]:
        raw_name = toks[0].text
        name = raw_name.lower()
        if name == "mkdir" or name == "md":
            name = "new-item"
            toks = [toks[0], Tok("-ItemType", False), Tok("Directory", True), *toks[1:]]
        name = self.ALIASES.get(name, name)
        spec = self.SPECS.get(name)
        if spec is None:
            raise PsError(
                f"The term '{raw_name}' is not recognized as the name of a cmdlet, function, script file, or "
                "operable program. Check the spelling of the name, or if a path was included, verify that the path "
                "is correct and try again.",
                f"ObjectNotFound: ({raw_name}:String) [], CommandNotFoundException",
                "CommandNotFoundException",
                "CommandNotFoundException",
                raw_name,
            )
        args = bind(spec, toks[1:])
        return getattr(self, "_c_" + name.replace("-", "_"))(args, spec.name)

    # -- cmdlets ------------------------------------------------------------------------------------------
    def _path(self, args: dict[str, Any], cmdlet: str, required: bool = True) -> GuestPath | None:
        raw = args.get("Path") or args.get("LiteralPath")
        if raw is None:
            if not required:
                return self.g.resolve(self.g.cwd)
            raise PsError(
                "Cannot bind argument to parameter 'Path' because it is null.",
                f"InvalidData: (:) [{cmdlet}], ParameterBindingValidationException",
                "ParameterBindingValidationException",
                f"ParameterArgumentValidationErrorNullNotAllowed,{fq(cmdlet)}",
                cmdlet,
            )
        try:
            return self.g.resolve(raw)
        except PathError:
            raise self._not_found(raw, cmdlet) from None

    @staticmethod
    def _not_found(raw: str, cmdlet: str) -> PsError:
        raw = raw.replace("/", "\\")  # PowerShell names the path as its provider spells it
        return PsError(
            f"Cannot find path '{raw}' because it does not exist.",
            f"ObjectNotFound: ({raw}:String) [{cmdlet}], ItemNotFoundException",
            "ItemNotFoundException",
            f"PathNotFound,{fq(cmdlet)}",
            cmdlet,
            raw,
        )

    def _c_write_output(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        return [args["InputObject"]] if "InputObject" in args else []

    def _c_write_host(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        self._emit(str(args.get("Object", "")) + ("" if args.get("NoNewline") else "\n"))
        return []

    def _c_write_error(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        raise PsError(
            str(args.get("Message", "")),
            "NotSpecified: (:) [Write-Error], WriteErrorException",
            "WriteErrorException",
            "Microsoft.PowerShell.Commands.WriteErrorException",
        )

    def _c_hostname(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        return [self.g.computer]

    def _c_exit(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        try:
            code = int(str(args.get("Code", "0")))
        except ValueError:
            code = 1
        raise PsExit(code)

    def _c_test_path(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        raw = args.get("Path") or args.get("LiteralPath")
        if not raw:
            return [False]
        if is_registry_path(raw):
            key = canonical(raw)
            exists = key is not None and self.g.registry().find(key) is not None
            return [exists and str(args.get("PathType", "Any")).lower() != "leaf"]
        try:
            gp = self.g.resolve(raw)
        except PathError:
            return [False]
        kind = str(args.get("PathType", "Any")).lower()
        if kind == "leaf":
            return [gp.path.is_file()]
        if kind == "container":
            return [gp.path.is_dir()]
        return [gp.path.exists()]

    def _c_get_content(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        gp = self._path(args, cmdlet)
        assert gp is not None
        if gp.path.is_dir():
            raise PsError(
                f"Access to the path '{gp.display}' is denied.",
                f"PermissionDenied: ({gp.display}:String) [Get-Content], UnauthorizedAccessException",
                "UnauthorizedAccessException",
                "GetContentReaderUnauthorizedAccessError,Microsoft.PowerShell.Commands.GetContentCommand",
                cmdlet,
            )
        if not gp.path.is_file():
            raise self._not_found(args.get("Path") or args.get("LiteralPath") or "", cmdlet)
        data = gp.path.read_bytes()
        text = data.decode("utf-8-sig", "replace") if not data.startswith(b"\xff\xfe") else data.decode("utf-16")
        if args.get("Raw"):
            return [text]
        lines = text.replace("\r\n", "\n").split("\n")
        return lines[:-1] if text.endswith("\n") else lines

    def _write(self, args: dict[str, Any], cmdlet: str, mode: str) -> list[Any]:
        gp = self._path(args, cmdlet)
        assert gp is not None
        value = str(args.get("Value", ""))
        data = (value if args.get("NoNewline") else value + "\r\n").encode("utf-8")
        if not gp.path.parent.is_dir():
            raise PsError(
                f"Could not find a part of the path '{gp.display}'.",
                f"ObjectNotFound: ({gp.display}:String) [{cmdlet}], DirectoryNotFoundException",
                "DirectoryNotFoundException",
                f"GetContentWriterDirectoryNotFoundError,{fq(cmdlet)}",
                cmdlet,
            )
        if gp.path.is_dir():
            raise PsError(
                f"Access to the path '{gp.display}' is denied.",
                f"PermissionDenied: ({gp.display}:String) [{cmdlet}], UnauthorizedAccessException",
                "UnauthorizedAccessException",
                f"GetContentWriterUnauthorizedAccessError,{fq(cmdlet)}",
                cmdlet,
            )
        with open(gp.path, mode) as fh:
            fh.write(data)
        return []

    def _c_set_content(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        return self._write(args, cmdlet, "wb")

    def _c_add_content(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        return self._write(args, cmdlet, "ab")

    def _item(self, gp: GuestPath) -> Item:
        st = gp.path.stat()
        parent = gp.display.rsplit("\\", 1)[0]
        is_dir = stat.S_ISDIR(st.st_mode)
        props: dict[str, Any] = {
            "Mode": ("d----" if is_dir else "-a---"),
            "LastWriteTime": PsDate(st.st_mtime),
            "Length": st.st_size,
            "Name": gp.path.name or gp.display,
            "Directory": parent + ("\\" if parent.endswith(":") else ""),
            "FullName": gp.display,
            "PSIsContainer": is_dir,
        }
        if is_dir:  # a DirectoryInfo has no Length
            del props["Length"]
        types = ("System.IO.DirectoryInfo" if is_dir else "System.IO.FileInfo", "System.IO.FileSystemInfo")
        return Item("fsitem", props, types)

    def _c_get_item(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        raw = str(args.get("Path") or args.get("LiteralPath") or "")
        if is_registry_path(raw):
            reg, key = self._regkey(raw, cmdlet)
            return [self._regkey_item(reg, key)]
        gp = self._path(args, cmdlet)
        assert gp is not None
        if not gp.path.exists():
            raise self._not_found(raw, cmdlet)
        return [self._item(gp)]

    def _c_select_string(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        gp = self._path(args, cmdlet)
        assert gp is not None
        raw = str(args.get("Path") or args.get("LiteralPath") or "")
        if not gp.path.exists():
            raise self._not_found(raw, cmdlet)
        pattern = str(args.get("Pattern", ""))
        flags = 0 if args.get("CaseSensitive") else re.IGNORECASE
        try:
            rx = re.compile(re.escape(pattern) if args.get("SimpleMatch") else pattern, flags)
        except re.error:
            raise PsError(
                f"The string {pattern} is not a valid regular expression.",
                f"InvalidArgument: (:) [{cmdlet}], ArgumentException",
                "ArgumentException",
                f"InvalidRegex,{fq(cmdlet)}",
                cmdlet,
            ) from None
        if gp.path.is_dir():
            return []
        data = gp.path.read_bytes()
        text = data.decode("utf-16") if data.startswith(b"\xff\xfe") else data.decode("utf-8-sig", "replace")
        hits = []
        for n, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
            if bool(rx.search(line)) != bool(args.get("NotMatch")):
                props = {
                    "Path": gp.display,
                    "LineNumber": n,
                    "Line": line,
                    "Filename": gp.path.name,
                    "Pattern": pattern,
                }
                hits.append(Item("matchinfo", props, ("Microsoft.PowerShell.Commands.MatchInfo",)))
                if args.get("List"):
                    break
        if args.get("Quiet"):
            return [bool(hits)]
        return hits

    def _c_new_item(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        raw = args.get("Path")
        if args.get("Name"):
            raw = f"{raw}\\{args['Name']}" if raw else args["Name"]
        if raw and is_registry_path(raw):
            return self._new_regkey(str(raw), args, cmdlet)
        gp = self._path({"Path": raw} if raw else {}, cmdlet)
        assert gp is not None
        kind = str(args.get("ItemType", "File")).lower()
        force = bool(args.get("Force"))
        reusable = force and kind == "directory" and gp.path.is_dir()
        if gp.path.exists() and not reusable and (not force or gp.path.is_dir() != (kind == "directory")):
            raise PsError(
                f"An item with the specified name {gp.display} already exists.",
                f"ResourceExists: ({gp.display}:String) [New-Item], IOException",
                "IOException",
                "DirectoryExist,Microsoft.PowerShell.Commands.NewItemCommand",
                cmdlet,
            )
        try:
            if kind == "directory":
                gp.path.mkdir(parents=force, exist_ok=force)
            elif kind == "file":
                if force:
                    gp.path.parent.mkdir(parents=True, exist_ok=True)
                gp.path.write_text(str(args.get("Value", "")), "utf-8")
            else:
                raise PsError(
                    'The type is not a known type for the file system. Only "file" and "directory" can be created.',
                    f"InvalidArgument: ({gp.display}:String) [New-Item], PSArgumentException",
                    "PSArgumentException",
                    "Argument,Microsoft.PowerShell.Commands.NewItemCommand",
                    cmdlet,
                )
        except FileNotFoundError:
            raise PsError(
                f"Could not find a part of the path '{gp.display}'.",
                f"WriteError: ({gp.display}:String) [New-Item], DirectoryNotFoundException",
                "DirectoryNotFoundException",
                "NewItemIOError,Microsoft.PowerShell.Commands.NewItemCommand",
                cmdlet,
            ) from None
        return [self._item(self.g.resolve(gp.display))]

    def _c_remove_item(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        if is_registry_path(str(args.get("Path") or args.get("LiteralPath") or "")):
            raw = str(args.get("Path") or args.get("LiteralPath"))
            reg, key = self._regkey(raw, cmdlet)
            try:
                reg.delete_key(key, recurse=bool(args.get("Recurse")))
            except RegistryError:
                raise PsError(
                    f"The item at {raw} has children and the Recurse parameter was not specified.",
                    f"WriteError: ({key}:String) [Remove-Item], IOException",
                    "IOException",
                    "RemoveItemIOError,Microsoft.PowerShell.Commands.RemoveItemCommand",
                    cmdlet,
                ) from None
            return []
        gp = self._path(args, cmdlet)
        assert gp is not None
        raw = args.get("Path") or args.get("LiteralPath") or ""
        if not gp.path.exists() and not gp.path.is_symlink():
            raise self._not_found(raw, cmdlet)
        if gp.path == gp.root:
            raise PsError(
                f"Cannot remove the drive root '{gp.display}'.",
                f"PermissionDenied: ({gp.display}:String) [Remove-Item], IOException",
                "IOException",
                "RemoveItemIOError,Microsoft.PowerShell.Commands.RemoveItemCommand",
                cmdlet,
            )
        if gp.path.is_dir() and not gp.path.is_symlink():
            if any(gp.path.iterdir()) and not args.get("Recurse"):
                raise PsError(
                    f"The item at {gp.display} has children and the Recurse parameter was not specified.",
                    f"WriteError: ({gp.display}:DirectoryInfo) [Remove-Item], IOException",
                    "IOException",
                    "DirectoryNotEmpty,Microsoft.PowerShell.Commands.RemoveItemCommand",
                    cmdlet,
                )
            shutil.rmtree(gp.path)
        else:
            gp.path.unlink()
        return []

    def _c_get_childitem(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        if is_registry_path(str(args.get("Path") or args.get("LiteralPath") or "")):
            reg, key = self._regkey(str(args.get("Path") or args.get("LiteralPath")), cmdlet)
            subs = reg.subkeys(key)
            if args.get("Name"):
                return [k.rsplit("\\", 1)[1] for k in subs]
            return [self._regkey_item(reg, k) for k in subs]
        gp = self._path(args, cmdlet, required=False)
        assert gp is not None
        if not gp.path.exists():
            raise self._not_found(args.get("Path") or args.get("LiteralPath") or "", cmdlet)
        if gp.path.is_file():
            items = [self._item(gp)]
        else:
            items = [
                self._item(GuestPath(gp.path / n, gp.display.rstrip("\\") + "\\" + n, gp.root))
                for n in sorted(os.listdir(gp.path), key=str.lower)
            ]
        if args.get("Name"):
            return [i.props["Name"] for i in items]
        return items

    def _service_item(self, svc: dict[str, Any]) -> Item:
        return Item(
            "service",
            {
                "Status": str(svc.get("state", "Stopped")),
                "Name": str(svc["name"]),
                "DisplayName": str(svc.get("display_name", svc["name"])),
                "StartType": {
                    "auto": "Automatic",
                    "automatic": "Automatic",
                    "manual": "Manual",
                    "demand": "Manual",
                    "disabled": "Disabled",
                }.get(str(svc.get("start", "")).lower(), str(svc.get("start", ""))),
            },
            ("System.ServiceProcess.ServiceController",),
        )

    def _c_get_service(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        name = args.get("Name")
        if name is None:
            return [self._service_item(s) for s in self.g.services()]
        svc = self.g.service(str(name))
        if svc is None:
            raise PsError(
                f"Cannot find any service with service name '{name}'.",
                f"ObjectNotFound: ({name}:String) [Get-Service], ServiceCommandException",
                "ServiceCommandException",
                "NoServiceFoundForGivenName,Microsoft.PowerShell.Commands.GetServiceCommand",
                cmdlet,
            )
        return [self._service_item(svc)]

    # -- the registry (HKLM:) --------------------------------------------------------------------------------
    def _regkey(self, raw: str, cmdlet: str) -> tuple[Registry, str]:
        key = canonical(raw)
        reg = self.g.registry()
        found = reg.find(key) if key is not None else None
        if found is None:
            raise self._not_found(raw, cmdlet)
        return reg, found

    def _property_key(self, args: dict[str, Any], cmdlet: str) -> tuple[Registry, str]:
        """The registry key an *-ItemProperty cmdlet names (-Path/-LiteralPath); only the registry provider has
        item properties here."""
        raw = str(args.get("Path") or args.get("LiteralPath") or "")
        if not is_registry_path(raw):
            raise self._provider_only(cmdlet)
        return self._regkey(raw, cmdlet)

    def _reg_data(self, kind: str, data: Any) -> Any:
        if kind == "REG_EXPAND_SZ":  # the registry provider expands %VAR%
            return self.g.expand(str(data))
        if kind == "REG_MULTI_SZ":
            return [str(x) for x in data]
        if kind == "REG_BINARY":
            return list(bytes.fromhex(str(data)))
        return data

    def _regprops(self, key: str, values: dict[str, list[Any]]) -> Item:
        parent, _, child = key.rpartition("\\")
        props: dict[str, Any] = {(n or "(default)"): self._reg_data(v[0], v[1]) for n, v in values.items()}
        props.update(
            {
                "PSPath": f"Microsoft.PowerShell.Core\\Registry::{key}",
                "PSParentPath": f"Microsoft.PowerShell.Core\\Registry::{parent}",
                "PSChildName": child,
                "PSDrive": "HKLM",
                "PSProvider": "Microsoft.PowerShell.Core\\Registry",
            }
        )
        return Item("regprops", props, ("System.Management.Automation.PSCustomObject",))

    def _regkey_item(self, reg: Registry, key: str) -> Item:
        parent, _, child = key.rpartition("\\")
        values = reg.keys[key]
        props = {
            "Name": key,
            "PSChildName": child,
            "Hive": parent,
            "Property": [n or "(default)" for n in values],
            "Values": {(n or "(default)"): self._reg_data(v[0], v[1]) for n, v in values.items()},
            "SubKeyCount": len(reg.subkeys(key)),
            "ValueCount": len(values),
            "PSPath": f"Microsoft.PowerShell.Core\\Registry::{key}",
        }
        return Item("regkey", props, ("Microsoft.Win32.RegistryKey",))

    def _no_property(self, name: str, key: str, cmdlet: str) -> PsError:
        return PsError(
            f"Property {name} does not exist at path {key}.",
            f"InvalidArgument: ({name}:String) [{cmdlet}], PSArgumentException",
            "PSArgumentException",
            f"System.Management.Automation.PSArgumentException,{fq(cmdlet)}",
            cmdlet,
        )

    def _provider_only(self, cmdlet: str) -> PsError:
        return PsError(
            "Cannot use interface. The IPropertyCmdletProvider interface is not supported by this provider.",
            f"NotImplemented: (:) [{cmdlet}], PSNotSupportedException",
            "PSNotSupportedException",
            f"NotSupported,{fq(cmdlet)}",
            cmdlet,
        )

    def _c_get_itemproperty(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        reg, key = self._property_key(args, cmdlet)
        values = reg.keys[key]
        if args.get("Name") is not None:
            try:
                found, value = reg.value(key, str(args["Name"]))
            except RegistryError:
                raise self._no_property(str(args["Name"]), key, cmdlet) from None
            return [self._regprops(key, {found: value})]
        return [self._regprops(key, values)] if values else []

    def _value_args(self, args: dict[str, Any], cmdlet: str, kind: str) -> tuple[str, Any]:
        given = args.get("PropertyType") or args.get("Type")
        if given is not None:
            if str(given).lower() not in _PS_REG_TYPES:
                raise PsError(
                    f"Cannot bind parameter 'Type'. Cannot convert value \"{given}\" to type "
                    '"Microsoft.Win32.RegistryValueKind".',
                    f"InvalidArgument: (:) [{cmdlet}], ParameterBindingException",
                    "ParameterBindingException",
                    f"CannotConvertArgumentNoMessage,{fq(cmdlet)}",
                    cmdlet,
                )
            kind = _PS_REG_TYPES[str(given).lower()]
        raw = args.get("Value", "")
        try:
            return kind, convert(kind, raw if raw is not None else "")
        except ValueError:
            raise PsError(
                f'Cannot convert value "{raw}" to type "System.Int32".',
                f"InvalidArgument: (:) [{cmdlet}], PSInvalidCastException",
                "PSInvalidCastException",
                f"InvalidCastFromStringToInteger,{fq(cmdlet)}",
                cmdlet,
            ) from None

    def _c_set_itemproperty(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        reg, key = self._property_key(args, cmdlet)
        name = str(args.get("Name") or "")
        try:
            _, (kind, _) = reg.value(key, name)
        except RegistryError:
            kind = "REG_SZ"  # a new value is a string unless -Type says otherwise
        kind, data = self._value_args(args, cmdlet, kind)
        reg.set_value(key, name, kind, data)
        return [self._regprops(key, {name: [kind, data]})] if args.get("PassThru") else []

    def _c_new_itemproperty(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        reg, key = self._property_key(args, cmdlet)
        name = str(args.get("Name") or "")
        try:
            reg.value(key, name)
            exists = True
        except RegistryError:
            exists = False
        if exists and not args.get("Force"):
            raise PsError(
                "The property already exists.",
                f"ResourceExists: ({key}:String) [New-ItemProperty], IOException",
                "IOException",
                "System.IO.IOException,Microsoft.PowerShell.Commands.NewItemPropertyCommand",
                cmdlet,
            )
        kind, data = self._value_args(args, cmdlet, "REG_SZ")
        reg.set_value(key, name, kind, data)
        return [self._regprops(key, {name: [kind, data]})]

    def _c_remove_itemproperty(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        reg, key = self._property_key(args, cmdlet)
        name = str(args.get("Name") or "")
        try:
            reg.delete_value(key, name)
        except RegistryError:
            raise self._no_property(name, key, cmdlet) from None
        return []

    def _new_regkey(self, raw: str, args: dict[str, Any], cmdlet: str) -> list[Any]:
        key = canonical(raw)
        if key is None or key == HKLM:
            raise self._not_found(raw, cmdlet)
        reg = self.g.registry()
        force = bool(args.get("Force"))
        if reg.find(key) is not None and not force:
            raise PsError(
                "A key at this path already exists.",
                f"ResourceExists: ({key}:String) [New-Item], IOException",
                "IOException",
                "System.IO.IOException,Microsoft.PowerShell.Commands.NewItemCommand",
                cmdlet,
            )
        parent = key.rsplit("\\", 1)[0]
        if reg.find(parent) is None and not force:
            shown = raw.replace("/", "\\").rstrip("\\").rsplit("\\", 1)[0]
            raise self._not_found(shown, cmdlet)
        found = reg.create_key(key, force=True)  # -Force on an existing key recreates it empty, as PowerShell does
        if args.get("Value") is not None:
            reg.set_value(found, "", "REG_SZ", str(args["Value"]))
        return [self._regkey_item(reg, found)]

    def _c_get_nettcpconnection(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        state = str(args.get("State", "Listen")).lower()
        declared = {local: real for (proto, real), local in self.g.local_port_map().items() if proto == "TCP"}
        rows: list[tuple[str, int]] = []  # (LocalAddress, LocalPort) of the sockets that really listen
        for proto, real in self.g.listening_ports():
            if proto != "TCP" or state != "listen" or not is_tcp_listening(self.g.host, real):
                continue
            rows.append((self.g.host, real))
            local = self.g.local_port_map().get(("TCP", real))
            if local is not None:  # the role's declared port (netstat shows it as 0.0.0.0:<localPort>)
                rows.append(("0.0.0.0", local))
        if "LocalPort" in args:
            try:
                wanted = int(str(args["LocalPort"]))
            except ValueError:
                wanted = -1
            rows = [r for r in rows if r[1] == wanted]
            if not rows and wanted not in declared and state == "listen" and is_tcp_listening(self.g.host, wanted):
                rows = [(self.g.host, wanted)]
        found = sorted(set(rows), key=lambda r: (r[1], r[0]))
        if not found:
            raise PsError(
                "No matching MSFT_NetTCPConnection objects found by CIM query for instances of the "
                "ROOT/StandardCimv2/MSFT_NetTCPConnection class on the  CIM server: SELECT * FROM "
                "MSFT_NetTCPConnection  WHERE ((LocalPort = "
                f"{args.get('LocalPort', '*')})) AND ((State = 2)). Verify query parameters and retry.",
                "ObjectNotFound: (MSFT_NetTCPConnection:String) [Get-NetTCPConnection], CimJobException",
                "CimJobException",
                "CmdletizationQuery_NotFound,Get-NetTCPConnection",
                cmdlet,
            )
        return [
            Item(
                "tcp",
                {
                    "LocalAddress": addr,
                    "LocalPort": p,
                    "RemoteAddress": "0.0.0.0",
                    "RemotePort": 0,
                    "State": "Listen",
                    "AppliedSetting": "",
                },
            )
            for addr, p in found
        ]

    def _c_start_sleep(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        try:
            if "Milliseconds" in args:
                seconds = float(str(args["Milliseconds"])) / 1000.0
            else:
                seconds = float(str(args.get("Seconds", "0")))
        except ValueError:
            seconds = 0.0
        self.io.sleep(max(0.0, min(seconds, MAX_SLEEP)))
        return []

    def _c_invoke_vmrprobe(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        try:
            spec = json.loads(str(args.get("Json", "{}")))
            if not isinstance(spec, dict):
                raise ValueError("the spec must be a JSON object")
            ports = [int(p) for p in spec.get("ports") or []]
            udp_ports = [int(p) for p in spec.get("udp_ports") or []]
            paths = [str(p) for p in spec.get("paths") or []]
            services = [str(s) for s in spec.get("services") or []]
            if len(ports) + len(udp_ports) + len(paths) + len(services) > 1024:
                raise ValueError("too many probes")
        except (ValueError, TypeError) as exc:
            raise PsError(
                f"Invalid probe spec: {exc}",
                "InvalidArgument: (:) [Invoke-VmrProbe], ArgumentException",
                "ArgumentException",
                "InvalidSpec,Invoke-VmrProbe",
                cmdlet,
            ) from None
        facts: dict[str, Any] = {"hostname": self.g.computer, "status": self.g.status()}
        facts["ports"] = {str(p): {"listening": is_tcp_listening(self.g.host, p)} for p in ports}
        facts["udp_ports"] = {str(p): {"listening": is_udp_bound(self.g.host, p)} for p in udp_ports}
        path_facts: dict[str, Any] = {}
        for raw in paths:
            try:
                gp = self.g.resolve(raw)
                kind = "directory" if gp.path.is_dir() else "file" if gp.path.is_file() else None
            except PathError:
                kind = None
            path_facts[raw] = {"exists": kind is not None, "type": kind}
        facts["paths"] = path_facts
        svc_facts: dict[str, Any] = {}
        for name in services:
            svc = self.g.service(name)
            svc_facts[name] = (
                {"exists": True, "state": svc.get("state"), "start": svc.get("start")}
                if svc
                else {"exists": False, "state": None, "start": None}
            )
        facts["services"] = svc_facts
        return [json.dumps(facts, sort_keys=True)]

    # -- storage (Get-Disk, Get-Partition, Get-Volume: the Storage module's CIM cmdlets; disks.py) --------
    @staticmethod
    def _cim_not_found(cls: str, prop: str, value: str, kind: str, cmdlet: str) -> PsError:
        return PsError(
            f"No {cls} objects found with property '{prop}' equal to '{value}'.  Verify the value of the property "
            "and retry.",
            f"ObjectNotFound: ({value}:{kind}) [{cmdlet}], CimJobException",
            "CimJobException",
            f"CmdletizationQuery_NotFound_{prop},{cmdlet}",
            cmdlet,
        )

    def _c_get_disk(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        out = []
        for d in disks.disks(self.g.instance):
            if "Number" in args and str(d.number) != str(args["Number"]).strip():
                continue
            if "FriendlyName" in args and d.friendly.lower() != str(args["FriendlyName"]).lower():
                continue
            props = {
                "Number": d.number, "FriendlyName": d.friendly, "SerialNumber": "", "HealthStatus": "Healthy",
                "OperationalStatus": "Online", "Size": d.size, "PartitionStyle": d.style, "Location": d.location,
                "IsBoot": d.boot, "IsSystem": d.boot, "IsOffline": False, "NumberOfPartitions": len(d.partitions),
            }  # fmt: skip
            out.append(Item("disk", props, ("Microsoft.Management.Infrastructure.CimInstance",)))
        if not out and "Number" in args:
            raise self._cim_not_found("MSFT_Disk", "Number", str(args["Number"]), "UInt32", cmdlet)
        return out

    def _c_get_partition(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        out = []
        letter = _drive_letter(args)
        for d in disks.disks(self.g.instance):
            if "DiskNumber" in args and str(d.number) != str(args["DiskNumber"]).strip():
                continue
            for part in d.partitions:
                if "PartitionNumber" in args and str(part.number) != str(args["PartitionNumber"]).strip():
                    continue
                if letter and part.letter != letter:
                    continue
                access = None
                if part.volume:
                    access = [f"{part.letter}:\\"] if part.letter else []
                    access.append(disks.volume_path(self.g.instance, d.number, part.number))
                kind = "IFS" if d.style == "MBR" else "Basic" if part.volume else "Reserved"
                props = {
                    "DiskNumber": d.number, "PartitionNumber": part.number, "DriveLetter": part.letter or "\x00",
                    "Size": part.size, "Type": kind, "AccessPaths": access, "IsBoot": d.boot and part.letter == "C",
                }  # fmt: skip
                out.append(Item("partition", props, ("Microsoft.Management.Infrastructure.CimInstance",)))
        if not out and ("DiskNumber" in args or letter):
            prop, value = ("DriveLetter", letter) if letter else ("DiskNumber", str(args["DiskNumber"]))
            raise self._cim_not_found("MSFT_Partition", prop, value, "Char" if letter else "UInt32", cmdlet)
        return out

    def _c_get_volume(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        out = []
        letter = _drive_letter(args)
        label = args.get("FileSystemLabel")
        for d in disks.disks(self.g.instance):
            for part in d.partitions:
                if not part.volume or (letter and part.letter != letter):
                    continue
                if label is not None and part.label.lower() != str(label).lower():
                    continue
                free = part.size // 2
                props = {
                    "DriveLetter": part.letter or None, "FileSystemLabel": part.label, "FileSystem": "NTFS",
                    "DriveType": "Fixed", "HealthStatus": "Healthy", "OperationalStatus": "OK",
                    "SizeRemaining": free, "Size": part.size,
                    "Path": disks.volume_path(self.g.instance, d.number, part.number),
                }  # fmt: skip
                out.append(Item("volume", props, ("Microsoft.Management.Infrastructure.CimInstance",)))
        if not out and letter:
            raise self._cim_not_found("MSFT_Volume", "DriveLetter", letter, "Char", cmdlet)
        return out

    def _c_invoke_webrequest(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        """A real HTTP request from inside the instance (``-Headers @{'k'='v'}`` with one or more entries
        separated by ``;`` inside the braces is not supported: give one entry per hashtable)."""
        import urllib.error
        import urllib.request

        uri = str(args.get("Uri") or "")
        method = str(args.get("Method") or "GET").upper()
        headers: dict[str, str] = {}
        raw_headers = str(args.get("Headers") or "")
        if raw_headers:
            for k, v in re.findall(r"""['"]?([\w-]+)['"]?\s*=\s*['"]([^'"]*)['"]""", raw_headers):
                headers[k] = v
        body = args.get("Body")
        data = str(body).encode("utf-8") if body is not None else None
        if args.get("ContentType"):
            headers["Content-Type"] = str(args["ContentType"])
        if not re.match(r"^https?://", uri, re.IGNORECASE):
            raise PsError(
                f"Invalid URI: {uri!s}",
                "NotSpecified: (:) [Invoke-WebRequest], UriFormatException",
                "UriFormatException",
                "System.UriFormatException,Microsoft.PowerShell.Commands.InvokeWebRequestCommand",
                cmdlet,
            )
        try:
            timeout = float(str(args.get("TimeoutSec") or 100))
        except ValueError:
            timeout = 100.0
        req = urllib.request.Request(uri, data=data, method=method, headers=headers)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=min(timeout, MAX_SLEEP)) as resp:
                content = resp.read().decode("utf-8", "replace")
                code, reason = resp.status, resp.reason
        except urllib.error.HTTPError as exc:
            raise PsError(
                f"The remote server returned an error: ({exc.code}) {exc.reason}.",
                "InvalidOperation: (System.Net.HttpWebRequest:HttpWebRequest) [Invoke-WebRequest], WebException",
                "WebException",
                "WebCmdletWebResponseException,Microsoft.PowerShell.Commands.InvokeWebRequestCommand",
                cmdlet,
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise PsError(
                f"Unable to connect to the remote server ({exc})",
                "InvalidOperation: (System.Net.HttpWebRequest:HttpWebRequest) [Invoke-WebRequest], WebException",
                "WebException",
                "WebCmdletWebResponseException,Microsoft.PowerShell.Commands.InvokeWebRequestCommand",
                cmdlet,
            ) from None
        return [Item("webresponse", {"StatusCode": code, "StatusDescription": reason, "Content": content})]

    # -- pipeline filters and formatting -----------------------------------------------------------------
    def _filter(self, stage: str, results: list[Any]) -> list[Any]:
        toks = ps_tokens(stage, self.g.getenv)
        name = toks[0].text.lower() if toks else ""
        if name == "out-null":
            return []
        if name in ("out-string", "write-output", "echo"):
            return results
        if name in ("select-object", "select"):
            args = bind(Spec("Select-Object", ("ExpandProperty", "Property", "First"), (), ("Property",)), toks[1:])
            out = list(results)
            if args.get("ExpandProperty"):
                prop = str(args["ExpandProperty"])
                out = []
                for r in results:
                    key = next((k for k in r.props if k.lower() == prop.lower()), None) if isinstance(r, Item) else None
                    if key is not None:
                        value = r.props[key]
                        out.extend(value if isinstance(value, list) else [value])
                    elif not (isinstance(r, str) and prop.lower() == "length"):
                        self.deferred.append(
                            PsError(
                                f'Property "{prop}" cannot be found.',
                                "InvalidArgument: (:PSObject) [Select-Object], PSArgumentException",
                                "PSArgumentException",
                                "ExpandPropertyNotFound,Microsoft.PowerShell.Commands.SelectObjectCommand",
                                "Select-Object",
                            )
                        )
                    else:
                        out.append(len(r))
            elif args.get("Property"):  # -Property A,B: objects with just those properties (in that order)
                names = [n.strip() for n in str(args["Property"]).split(",") if n.strip()]
                out = []
                for r in results:
                    props = r.props if isinstance(r, Item) else {}
                    picked: dict[str, Any] = {}
                    for n in names:
                        key = next((k for k in props if k.lower() == n.lower()), n)
                        picked[key] = props.get(key)
                    out.append(Item("selected:" + (r.kind if isinstance(r, Item) else ""), picked))
            if "First" in args:
                out = out[: int(str(args["First"]))]
            return out
        if name == "convertto-json":
            args = bind(Spec("ConvertTo-Json", ("Depth",), ("Compress",), ("Depth",)), toks[1:])
            plain = [_json_value(r) for r in results]
            if not plain:
                return []
            value = plain[0] if len(plain) == 1 else plain
            if args.get("Compress"):
                return [json.dumps(value, separators=(",", ":"), default=str)]
            return [json.dumps(value, indent=4, default=str)]
        raw = toks[0].text if toks else stage
        raise PsError(
            f"The term '{raw}' is not recognized as the name of a cmdlet, function, script file, or operable "
            "program. Check the spelling of the name, or if a path was included, verify that the path is correct "
            "and try again.",
            f"ObjectNotFound: ({raw}:String) [], CommandNotFoundException",
            "CommandNotFoundException",
            "CommandNotFoundException",
            raw,
        )

    def _format(self, results: list[Any]) -> None:
        if not results:
            return
        lines: list[str] = []
        results = _flat(results)
        items = [r for r in results if isinstance(r, Item)]
        for r in results:
            if isinstance(r, bool):
                lines.append("True" if r else "False")
            elif not isinstance(r, Item):
                lines.append(str(r))
        if items:
            lines.append(self._table(items))
        if lines:
            self._emit("\n".join(lines) + "\n")

    @staticmethod
    def _table(items: list[Item]) -> str:
        kind = items[0].kind
        if kind == "matchinfo":  # MatchInfo prints as path:line:text between blank lines
            return (
                "\n" + "\n".join(f"{i.props['Path']}:{i.props['LineNumber']}:{i.props['Line']}" for i in items) + "\n\n"
            )
        if kind == "regprops":  # a PSCustomObject with more than four properties: list format
            out = []
            for i in items:
                width = max(len(k) for k in i.props)
                out.append("")
                for k, v in i.props.items():
                    shown = "{" + ", ".join(str(x) for x in v) + "}" if isinstance(v, list) else str(v)
                    out.append(f"{k:<{width}} : {shown}")
            return "\n".join(out) + "\n\n"
        if kind == "regkey":
            rows = [
                "",
                "",
                f"    Hive: {items[0].props['Hive']}",
                "",
                "",
                f"{'Name':<31}Property",
                f"{'----':<31}--------",
            ]
            for i in items:
                values = i.props["Values"]
                width = max((len(k) for k in values), default=0)
                cells = [f"{k:<{width}} : {v}" for k, v in values.items()] or [""]
                rows.append(f"{i.props['PSChildName']:<31}{cells[0]}".rstrip())
                rows += [" " * 31 + c for c in cells[1:]]
            return "\n".join(rows) + "\n"
        if kind == "service":
            rows = ["", "Status   Name               DisplayName", "------   ----               -----------"]
            rows += [f"{i.props['Status']:<9}{i.props['Name']:<19}{i.props['DisplayName']}" for i in items]
            return "\n".join(rows) + "\n"
        if kind.startswith("selected:") or kind == "webresponse":
            names = list(items[0].props)
            return _grid(names, [[str(i.props.get(n, "")) for n in names] for i in items])
        if kind in _STORAGE_COLUMNS:  # the Storage module's default table views (columns trimmed)
            columns = _STORAGE_COLUMNS[kind]
            grid = [[_storage_cell(i.props.get(key)) for _, key in columns] for i in items]
            return _grid([title for title, _ in columns], grid, strip_rule=False)
        if kind == "tcp":
            rows = ["", _TCP_HEADER]
            for i in items:
                rows.append(f"{i.props['LocalAddress']:<36}{i.props['LocalPort']:<10}{'0.0.0.0':<36}{0:<11}Listen")
            return "\n".join(rows) + "\n"
        rows = ["", "", f"    Directory: {items[0].props['Directory']}", "", ""]
        rows += ["Mode                LastWriteTime     Length Name"]
        rows += ["----                -------------     ------ ----"]
        for i in items:
            d, t = i.props["LastWriteTime"].table()
            rows.append(f"{i.props['Mode']:<12}{d:>10} {t:>8}{i.props.get('Length', '')!s:>11} {i.props['Name']}")
        return "\n".join(rows) + "\n"
