r"""The PowerShell interpreter of the emulated guest (``powershell.exe`` and its command line).

Switches: ``-EncodedCommand``/``-encodedcommand``/``-enc``/``-ec``/``-e`` ``<base64 UTF-16LE>`` (what pywinrm
``run_ps`` sends), ``-Command``/``-c`` ``<rest of line>`` (also testinfra's ``-command \"…\"`` quoting, so
``host.file(p).exists``/``.content_string`` work), ``-File path``; ignored:
``-NoProfile -NonInteractive -NoLogo -ExecutionPolicy X -InputFormat X -OutputFormat X -WindowStyle X -Sta
-Mta -Version X``.  Statements are separated by ``;`` or newlines, ``#`` starts a comment; a statement is a
pipeline ``cmdlet … [| Out-Null | Out-String | Select-Object -ExpandProperty P | ConvertTo-Json]``.
Strings: ``'single'`` (``''`` escape), ``"double"`` (``$env:NAME`` expanded, backtick escapes), bare words.
Cmdlet and parameter names are case-insensitive; parameters may be abbreviated when unambiguous; ``--``
ends parameters.

==============================================================  ==================================================
statement                                                       result
==============================================================  ==================================================
``$ProgressPreference='SilentlyContinue'`` (any ``$x = 'v'``)   accepted; ``$ErrorActionPreference='Stop'`` stops
                                                                at the first error
``Write-Output 'x'`` (``echo``, ``write``), ``Write-Host 'x'``  ``x``
``hostname``                                                    the instance id
``Test-Path [-Path] 'p' [-PathType Leaf|Container]``            ``True`` / ``False``
``Get-Content [-Path] 'p' [-Raw]`` (``gc``, ``cat``, ``type``)  the file's lines (``-Raw``: the text as is)
``Set-Content [-Path] 'p' [-Value] 'v'`` (``sc``)               writes ``v`` + CRLF (UTF-8, no BOM)
``Add-Content [-Path] 'p' [-Value] 'v'`` (``ac``)               appends ``v`` + CRLF
``New-Item [-ItemType Directory|File] [-Force] [-Path] 'p'``    creates it; prints the PowerShell item table
                                                                (``mkdir``/``md`` = ``New-Item -ItemType
                                                                Directory``); exists without ``-Force`` → error
``Remove-Item [-Recurse] [-Force] [-Path] 'p'`` (``rm``, ``del``,  deletes; missing → ``Cannot find path … because
``ri``, ``rmdir``, ``rd``)                                        it does not exist.``
``Get-ChildItem [-Path] 'p' [-Name]`` (``dir``, ``ls``, ``gci``)  item table (``-Name``: names only)
``Get-Service [-Name] X`` (``gsv``)                             Status/Name/DisplayName table from ``services``;
                                                                unknown → ``Cannot find any service with service
                                                                name 'X'.``
``Get-NetTCPConnection -State Listen -LocalPort N``             a LocalAddress/LocalPort/State table when N
                                                                listens (real connect), else the CIM "No matching
                                                                MSFT_NetTCPConnection objects" error.  (A 2012+
                                                                cmdlet, emulated although the OS claims 2008 R2;
                                                                ``Test-NetConnection`` is *not* emulated.)
``Start-Sleep -Seconds N`` / ``-Milliseconds N`` (``sleep``)     long-running (N ≤ 600 s), ends early on Signal
``Write-Error 'msg'``                                           CLIXML error record on stderr
``Invoke-VmrProbe -Json '<spec>'``                              harness probe, one round trip (below)
``exit N``                                                      rc N
anything else                                                   CLIXML ``The term 'X' is not recognized as the
                                                                name of a cmdlet, …`` error
==============================================================  ==================================================

Exit code: ``exit N``; else 1 when the last statement failed (its ``$?`` is false), else 0.  Errors are
written to stderr as one ``#< CLIXML`` document of ``<S S="Error">`` lines (what pywinrm cleans).  If the
file ``clixml-noise`` exists in the instance directory (the folder of ``status_file``), every PowerShell run
that does not set ``$ProgressPreference='SilentlyContinue'`` first also writes a progress record
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
import json
import os
import re
import shutil
import socket
import stat
from typing import TYPE_CHECKING, Any

from .common import CRLF, MAX_SLEEP, CommandIO, fmt_time, is_tcp_listening, is_udp_bound, write_err, write_out
from .paths import GuestPath, PathError
from .pstokens import PROGRESS, Item, PsError, PsExit, Spec, Tok, bind, clixml_text, fq, ps_split, ps_tokens

if TYPE_CHECKING:
    from .guest import Guest

_TCP_HEADER = (
    "LocalAddress                        LocalPort RemoteAddress                       RemotePort State       "
    "AppliedSetting\n------------                        --------- -------------                       "
    "---------- -----       --------------"
)

_TCP_PROBE = re.compile(r"BeginConnect\(\s*'(?P<host>[^']+)'\s*,\s*(?P<port>\d+)")


def run_powershell(g: Guest, line: str, io: CommandIO) -> int:
    """``powershell[.exe] <switches> …`` as cmd.exe starts it: the command line, then the script."""
    m = re.match(r"^\s*powershell(?:\.exe)?", line, re.IGNORECASE)
    rest = line[m.end() :] if m else line
    script: str | None = None
    takes_value = ("executionpolicy", "inputformat", "outputformat", "windowstyle", "version", "configurationname")
    pos = 0
    while True:
        mm = re.match(r'\s*("[^"]*"|\S+)', rest[pos:])
        if not mm:
            break
        tok = mm.group(1)
        end = pos + mm.end()
        if tok.startswith(("-", "/")) and len(tok) > 1:
            key = tok[1:].lower()
            if key in ("e", "ec", "enc") or ("encodedcommand".startswith(key) and len(key) >= 2 and key[0] == "e"):
                vm = re.match(r"\s*(\S+)", rest[end:])
                if not vm:
                    return _ps_fail(io, "Cannot process the command because of a missing parameter.")
                try:
                    script = base64.b64decode(vm.group(1), validate=True).decode("utf-16-le")
                except (binascii.Error, ValueError, UnicodeDecodeError):
                    return _ps_fail(
                        io,
                        "Cannot process the command because the value specified with -EncodedCommand is not "
                        "properly encoded. The value must be Base64 encoded.",
                    )
                break
            if key in ("c",) or ("command".startswith(key) and len(key) >= 2 and key[0] == "c"):
                script = rest[end:].strip()
                if len(script) >= 4 and script.startswith('\\"') and script.endswith('\\"'):
                    script = script[2:-2].replace('\\"', '"')  # testinfra: -command \"Test-Path '...'\"
                elif len(script) >= 2 and script[0] == '"' and script[-1] == '"':
                    script = script[1:-1]
                break
            if key in ("f",) or ("file".startswith(key) and key[0] == "f"):
                vm = re.match(r'\s*("[^"]*"|\S+)', rest[end:])
                try:
                    if vm is None:
                        raise PathError("")
                    script = g.resolve(vm.group(1).strip('"')).path.read_text("utf-8-sig")
                except (PathError, OSError):
                    return _ps_fail(io, "The argument to the -File parameter does not exist.")
                break
            if any(t.startswith(key) for t in takes_value):
                vm = re.match(r'\s*("[^"]*"|\S+)', rest[end:])
                pos = end + (vm.end() if vm else 0)
                continue
            pos = end
            continue
        script = rest[pos:].strip()  # no switch: the rest is the command
        break
    if script is None or not script.strip():
        return 0
    probe = _TCP_PROBE.search(script)
    if probe is not None and "System.Net.Sockets.TcpClient" in script:
        return _tcp_client_probe(g, io, probe.group("host"), int(probe.group("port")), script)
    return PowerShell(g, io).run(script)


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
        "get-nettcpconnection": Spec(
            "Get-NetTCPConnection",
            ("State", "LocalPort", "LocalAddress"),
            (),
            ("LocalAddress", "LocalPort"),
        ),
        "start-sleep": Spec("Start-Sleep", ("Seconds", "Milliseconds"), (), ("Seconds",)),
        "invoke-vmrprobe": Spec("Invoke-VmrProbe", ("Json",), (), ("Json",)),
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
        "curl": "invoke-webrequest", "wget": "invoke-webrequest",
    }  # fmt: skip

    def __init__(self, guest: Guest, io: CommandIO) -> None:
        self.g = guest
        self.io = io
        self.vars: dict[str, str] = {}
        self.errors: list[str] = []
        self.progress = False

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
        self.errors.extend(f'<S S="Error">{clixml_text(ln + CRLF)}</S>' for ln in lines)

    def _flush_stderr(self) -> None:
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
        stages = ps_split(stmt, "|")
        results = self._command(stages[0])
        for stage in stages[1:]:
            results = self._filter(stage, results)
        self._format(results)

    def _command(self, stage: str) -> list[Any]:
        toks = ps_tokens(stage, self.g.getenv)
        if not toks:
            return []
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
        return [self.g.id]

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
        return Item(
            "fsitem",
            {
                "Mode": ("d----" if stat.S_ISDIR(st.st_mode) else "-a---"),
                "LastWriteTime": fmt_time(st.st_mtime),
                "Length": "" if stat.S_ISDIR(st.st_mode) else str(st.st_size),
                "Name": gp.path.name or gp.display,
                "Directory": parent + ("\\" if parent.endswith(":") else ""),
                "FullName": gp.display,
            },
        )

    def _c_new_item(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        raw = args.get("Path")
        if args.get("Name"):
            raw = f"{raw}\\{args['Name']}" if raw else args["Name"]
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
                "StartType": {"auto": "Automatic"}.get(str(svc.get("start", "")).lower(), str(svc.get("start", ""))),
            },
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

    def _c_get_nettcpconnection(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        state = str(args.get("State", "Listen")).lower()
        ports = [p for proto, p in self.g.listening_ports() if proto == "TCP"]
        if "LocalPort" in args:
            try:
                ports = [int(str(args["LocalPort"]))]
            except ValueError:
                ports = []
        found = [p for p in ports if state == "listen" and is_tcp_listening(self.g.host, p)]
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
                    "LocalAddress": self.g.host,
                    "LocalPort": p,
                    "RemoteAddress": "0.0.0.0",
                    "RemotePort": 0,
                    "State": "Listen",
                    "AppliedSetting": "",
                },
            )
            for p in found
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
        facts: dict[str, Any] = {"hostname": self.g.id, "status": self.g.status()}
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
                    if isinstance(r, Item):
                        key = next((k for k in r.props if k.lower() == prop.lower()), None)
                        if key is not None:
                            out.append(r.props[key])
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
        items = [r for r in results if isinstance(r, Item)]
        for r in results:
            if isinstance(r, bool):
                lines.append("True" if r else "False")
            elif not isinstance(r, Item):
                lines.append(str(r))
        if items:
            lines.append(self._table(items))
        self._emit("\n".join(lines) + "\n")

    @staticmethod
    def _table(items: list[Item]) -> str:
        kind = items[0].kind
        if kind == "service":
            rows = ["", "Status   Name               DisplayName", "------   ----               -----------"]
            rows += [f"{i.props['Status']:<9}{i.props['Name']:<19}{i.props['DisplayName']}" for i in items]
            return "\n".join(rows) + "\n"
        if kind.startswith("selected:") or kind == "webresponse":
            names = list(items[0].props)
            widths = {n: max(len(n), *(len(str(i.props.get(n, ""))) for i in items)) for n in names}
            rows = ["", " ".join(f"{n:<{widths[n]}}" for n in names).rstrip()]
            rows.append(" ".join("-" * len(n) + " " * (widths[n] - len(n)) for n in names).rstrip())
            rows += [" ".join(f"{i.props.get(n, '')!s:<{widths[n]}}" for n in names).rstrip() for i in items]
            return "\n".join(rows) + "\n"
        if kind == "tcp":
            rows = ["", _TCP_HEADER]
            for i in items:
                rows.append(f"{i.props['LocalAddress']:<36}{i.props['LocalPort']:<10}{'0.0.0.0':<36}{0:<11}Listen")
            return "\n".join(rows) + "\n"
        rows = ["", "", f"    Directory: {items[0].props['Directory']}", "", ""]
        rows += ["Mode                LastWriteTime     Length Name"]
        rows += ["----                -------------     ------ ----"]
        for i in items:
            d, t = i.props["LastWriteTime"]
            rows.append(f"{i.props['Mode']:<12}{d:>10} {t:>8}{i.props['Length']:>11} {i.props['Name']}")
        return "\n".join(rows) + "\n"
