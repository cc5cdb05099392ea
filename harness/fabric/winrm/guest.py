r"""The emulated Windows guest behind the fabric's WinRM server.

Commands act on **this instance's real state** (``instance.json``): files live in the instance's drive
folders, listening state is checked with a real connect (TCP) or bind (UDP), services come from
``instance["services"]`` (read live from the dict the server was started with, so an owner that mutates it in
place is seen at once), the role status from ``status_file``.  Nothing is canned except the OS identity.

Each WinRS Command runs like a fresh ``cmd.exe /c <line>`` process (so ``cd`` does not persist), cwd
``C:\Users\<user>`` when that folder exists on the OS drive, else ``C:\``.  Text output is encoded in the
shell's code page (``WINRS_CODEPAGE``: 437 by default, 65001 → UTF-8); ``type``/``Get-Content`` of a file emit
its bytes / decoded text.

Paths
-----
``X:\a\b`` / ``X:/a/b`` / ``\a`` (root of the current drive) / relative (to the cwd).  Drive letters map to
``instance["drives"]`` (``C`` → os folder, ``E`` → app folder, any other single letter given there); local
storage ``drives.local.<Name>`` is mounted where Azure puts it,
``C:\Resources\Directory\<deployment_id>.<Role>.<Name>``.  Resolution is case-insensitive like NTFS
(existing entries keep their on-disk spelling); ``..`` that would leave a drive, wildcards, ``<>:"|?*``,
unknown drives and symlinks pointing outside a drive are refused ("The system cannot find the path
specified.").  Other drives (``D:`` temp disk, UNC) do not exist.

cmd.exe command surface (the first word is case-insensitive, ``.exe`` optional)
------------------------------------------------------------------------------
=========================================  ========================================================================
form                                       result
=========================================  ========================================================================
``echo text`` / ``echo.``                  text (``%VAR%`` expanded: PROCESSOR_ARCHITECTURE=AMD64, COMPUTERNAME,
                                           USERNAME, USERDOMAIN, USERPROFILE, OS, SystemDrive, SystemRoot, windir,
                                           TEMP, TMP, ComSpec, NUMBER_OF_PROCESSORS); bare ``echo`` → ``ECHO is on.``
``hostname``                               the instance id
``whoami``                                 ``<id>\<user>`` lower-case
``ver``                                    ``Microsoft Windows [Version 6.1.7601]``
``set [PREFIX]``                           the environment above (rc 1 + message when nothing matches)
``cd`` / ``chdir`` ``[path]``              prints the cwd; with a path: rc 0 if it is a directory, else rc 1
``dir [path] [/b] [/other-switches]``      real listing (``<DIR>``/sizes/mtimes, free bytes); missing → ``File Not
                                           Found`` rc 1; bad parent → ``The system cannot find the path
                                           specified.`` rc 1
``type path``                              the file's bytes; missing rc 1; a directory → ``Access is denied.`` rc 1
``mkdir`` / ``md path``                    creates (with parents); exists → ``A subdirectory or file … already
                                           exists.`` rc 1
``del`` / ``erase path [/f /q /s]``        deletes a file (a directory: its files); missing → ``Could Not Find …``
                                           on stderr, rc 0 (as real cmd)
``rmdir`` / ``rd path [/s] [/q]``          removes a directory (``/s``: the tree); not empty → rc 145
``exit [/b] [N]``                          rc N (default 0)
``systeminfo``                             Windows Server 2008 R2 Datacenter identity lines (Host Name = id)
``… | findstr [/B /E /I /V] [/C:"s"|w…]``  filters the left side's stdout (testinfra:
                                           ``systeminfo | findstr /B /C:"OS"``); rc 1 when nothing matches
``net user [name]``                        accounts Administrator, Guest, <user>; unknown name → rc 2
``netstat -an[o]``                         this instance's endpoint, agent and WinRM ports that really listen
                                           (TCP: connect; UDP: bind refused) as ``LISTENING`` rows
``sc query [NAME]``                        ``instance["services"]``; unknown → ``FAILED 1060`` rc 1060
``ping -n N host``                         long-running: one reply line per second (N ≤ 600) for 127.0.0.1,
                                           localhost or the id; other hosts rc 1
``cmd /c line``                            runs ``line``
``powershell …``                           see below
``> file`` / ``>> file`` / ``>nul`` /      redirections of stdout (to a guest file or nowhere) and stderr
``2>nul`` / ``2>&1``
anything else (``uname``, ``python3`` …)   stderr ``'x' is not recognized as an internal or external command,
                                           operable program or batch file.`` rc 1
=========================================  ========================================================================

No chaining (``&``, ``&&``, ``||``), no wildcards, no ``if``/``for``.

PowerShell (``powershell[.exe]``)
---------------------------------
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
import datetime as _dt
import json
import os
import re
import shutil
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from xml.sax.saxutils import escape

OS_NAME = "Microsoft Windows Server 2008 R2 Datacenter"
OS_VERSION = "6.1.7601 Service Pack 1 Build 7601"
MAX_SLEEP = 600.0
_CRLF = "\r\n"
_SC_USAGE = (
    "DESCRIPTION:\n        SC is a command line program used for communicating with the\n"
    "        Service Control Manager and services.\nUSAGE:\n        sc <server> [command] [service name]"
)
_TCP_HEADER = (
    "LocalAddress                        LocalPort RemoteAddress                       RemotePort State       "
    "AppliedSetting\n------------                        --------- -------------                       "
    "---------- -----       --------------"
)
_INVALID = re.compile(r'[<>:"|?*\x00-\x1f]')


class CommandIO(Protocol):
    """Where a running command writes; ``sleep`` returns False when the command was signalled."""

    @property
    def encoding(self) -> str: ...

    def stdout(self, data: bytes) -> None: ...

    def stderr(self, data: bytes) -> None: ...

    def sleep(self, seconds: float) -> bool: ...


class PathError(Exception):
    pass


@dataclass
class GuestPath:
    path: Path  # host path
    display: str  # Windows spelling, e.g. C:\Users\vmradmin
    root: Path  # host root of the mount it lives in


@dataclass
class _Capture:
    """A CommandIO that captures stdout (pipes, redirections) and forwards the rest."""

    inner: CommandIO
    keep_stderr: bool = True
    stderr_to_stdout: bool = False
    buf: bytearray = field(default_factory=bytearray)

    @property
    def encoding(self) -> str:
        return self.inner.encoding

    def stdout(self, data: bytes) -> None:
        self.buf += data

    def stderr(self, data: bytes) -> None:
        if self.stderr_to_stdout:
            self.buf += data
        elif self.keep_stderr:
            self.inner.stderr(data)

    def sleep(self, seconds: float) -> bool:
        return self.inner.sleep(seconds)


def split_args(text: str) -> list[str]:
    """cmd/MSVCRT-style argument splitting: whitespace separates, double quotes group and are removed."""
    args: list[str] = []
    cur: list[str] = []
    in_quote = have = False
    for ch in text:
        if ch == '"':
            in_quote = not in_quote
            have = True
        elif ch in " \t" and not in_quote:
            if have:
                args.append("".join(cur))
                cur, have = [], False
        else:
            cur.append(ch)
            have = True
    if have:
        args.append("".join(cur))
    return args


def is_tcp_listening(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_udp_bound(host: str, port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((host, port))
    except OSError:
        return True
    finally:
        s.close()
    return False


def _fmt_time(ts: float) -> tuple[str, str]:
    t = _dt.datetime.fromtimestamp(ts)
    return t.strftime("%m/%d/%Y"), t.strftime("%I:%M %p")


class Drives:
    """Windows paths → this instance's folders (see the module docstring)."""

    def __init__(self, instance: dict[str, Any]) -> None:
        self.mounts: list[tuple[str, tuple[str, ...], Path]] = []  # (drive, prefix parts lower, host root)
        self.spelling: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
        drives = instance.get("drives") or {}
        for letter, root in drives.items():
            if isinstance(root, str) and len(letter) == 1 and letter.isalpha():
                self._mount(letter.upper(), (), Path(root))
        dep = str(instance.get("deployment_id") or "")
        role = str(instance.get("role") or "")
        for name, root in (drives.get("local") or {}).items():
            parts = ("Resources", "Directory", f"{dep}.{role}.{name}")
            self._mount("C", parts, Path(root))
        self.mounts.sort(key=lambda m: len(m[1]), reverse=True)

    def _mount(self, drive: str, parts: tuple[str, ...], root: Path) -> None:
        lower = tuple(p.lower() for p in parts)
        self.mounts.append((drive, lower, root))
        self.spelling[(drive, lower)] = parts

    def resolve(self, raw: str, cwd: str) -> GuestPath:
        text = raw.strip().strip('"').replace("/", "\\")
        if not text or text.startswith("\\\\"):
            raise PathError(raw)
        m = re.match(r"^([A-Za-z]):(.*)$", text)
        if m:
            drive, rest = m.group(1).upper(), m.group(2)
            base: list[str] = []
            if not rest.startswith("\\"):  # "C:foo" is relative to C:'s cwd; ours is the root unless on C:
                base = self._split(cwd)[1] if cwd[0].upper() == drive else []
        else:
            drive, rest = cwd[0].upper(), text
            base = [] if text.startswith("\\") else self._split(cwd)[1]
        parts = list(base)
        for comp in rest.split("\\"):
            if comp in ("", "."):
                continue
            if comp == "..":
                if not parts:
                    raise PathError(raw)
                parts.pop()
                continue
            comp = comp.rstrip(" .") or comp
            if _INVALID.search(comp):
                raise PathError(raw)
            parts.append(comp)
        lower = tuple(p.lower() for p in parts)
        for mdrive, prefix, root in self.mounts:
            if mdrive == drive and lower[: len(prefix)] == prefix:
                shown = list(self.spelling[(mdrive, prefix)])
                host = root
                for comp in parts[len(prefix) :]:
                    actual = comp
                    if not (host / comp).exists() and host.is_dir():
                        try:
                            for entry in os.listdir(host):
                                if entry.lower() == comp.lower():
                                    actual = entry
                                    break
                        except OSError:
                            pass
                    host = host / actual
                    shown.append(actual)
                real_root = os.path.realpath(root)
                real = os.path.realpath(host)
                if real != real_root and not real.startswith(real_root + os.sep):
                    raise PathError(raw)
                return GuestPath(host, f"{drive}:\\" + "\\".join(shown), root)
        raise PathError(raw)

    @staticmethod
    def _split(winpath: str) -> tuple[str, list[str]]:
        return winpath[0].upper(), [p for p in winpath[2:].split("\\") if p]


# ---------------------------------------------------------------------------------------------------------
# PowerShell helpers
# ---------------------------------------------------------------------------------------------------------


class PsError(Exception):
    def __init__(
        self, message: str, category: str, exception: str, fqid: str, command: str = "", target: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.category = category
        self.exception = exception
        self.fqid = fqid
        self.command = command
        self.target = target


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _fq(cmdlet: str) -> str:
    return f"Microsoft.PowerShell.Commands.{cmdlet.replace('-', '')}Command"


def _clixml_text(text: str) -> str:
    return escape(text.replace("_x", "_x005F_x")).replace("\r\n", "_x000D__x000A_").replace("\n", "_x000A_")


_PROGRESS = (
    '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T>'
    '<T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for first '
    "use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj>"
)


def _ps_split(script: str, seps: str) -> list[str]:
    """Splits on any char in ``seps`` outside quotes; ``#`` comments are dropped when splitting statements."""
    out: list[str] = []
    cur: list[str] = []
    quote = ""
    i = 0
    while i < len(script):
        ch = script[i]
        if quote:
            cur.append(ch)
            if ch == "`" and quote == '"' and i + 1 < len(script):
                cur.append(script[i + 1])
                i += 1
            elif ch == quote:
                if i + 1 < len(script) and script[i + 1] == quote:
                    cur.append(script[i + 1])
                    i += 1
                else:
                    quote = ""
        elif ch in "'\"":
            quote = ch
            cur.append(ch)
        elif ch == "#" and "\n" in seps:
            while i < len(script) and script[i] != "\n":
                i += 1
            continue
        elif ch in seps:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


_BACKTICK = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "`": "`", '"': '"', "$": "$", "'": "'"}


@dataclass
class _Tok:
    text: str
    quoted: bool


def _ps_tokens(stmt: str, env: Callable[[str], str]) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(stmt)
    while i < n:
        ch = stmt[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "'":
            j, buf = i + 1, []
            while j < n:
                if stmt[j] == "'":
                    if j + 1 < n and stmt[j + 1] == "'":
                        buf.append("'")
                        j += 2
                        continue
                    break
                buf.append(stmt[j])
                j += 1
            toks.append(_Tok("".join(buf), True))
            i = j + 1
        elif ch == '"':
            j, buf = i + 1, []
            while j < n and stmt[j] != '"':
                if stmt[j] == "`" and j + 1 < n:
                    buf.append(_BACKTICK.get(stmt[j + 1], stmt[j + 1]))
                    j += 2
                    continue
                m = re.match(r"\$env:(\w+)", stmt[j:], re.IGNORECASE)
                if m:
                    buf.append(env(m.group(1)))
                    j += m.end()
                    continue
                buf.append(stmt[j])
                j += 1
            toks.append(_Tok("".join(buf), True))
            i = j + 1
        else:
            j = i
            while j < n and not stmt[j].isspace():
                j += 1
            toks.append(_Tok(stmt[i:j], False))
            i = j
    return toks


@dataclass
class _Spec:
    name: str
    params: tuple[str, ...] = ()
    switches: tuple[str, ...] = ()
    positional: tuple[str, ...] = ()


def _bind(spec: _Spec, toks: list[_Tok]) -> dict[str, Any]:
    bound: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    names = spec.params + spec.switches
    while i < len(toks):
        tok = toks[i]
        if not tok.quoted and tok.text == "--":  # end of parameters
            positional += [t.text for t in toks[i + 1 :]]
            break
        if not tok.quoted and tok.text.startswith("-") and len(tok.text) > 1 and not tok.text[1].isdigit():
            raw, _, inline = tok.text[1:].partition(":")
            key = raw.lower()
            matches = [p for p in names if p.lower() == key] or [p for p in names if p.lower().startswith(key)]
            if len(matches) != 1:
                raise PsError(
                    f"A parameter cannot be found that matches parameter name '{raw}'.",
                    f"InvalidArgument: (:) [{spec.name}], ParameterBindingException",
                    "ParameterBindingException",
                    f"NamedParameterNotFound,{spec.name}",
                    spec.name,
                )
            name = matches[0]
            if name in spec.switches:
                bound[name] = inline.lower() not in ("$false", "false", "0") if inline else True
            elif inline:
                bound[name] = inline
            else:
                if i + 1 >= len(toks):
                    raise PsError(
                        f"Missing an argument for parameter '{name}'. Specify a parameter of type 'System.String' "
                        "and try again.",
                        f"InvalidArgument: (:) [{spec.name}], ParameterBindingException",
                        "ParameterBindingException",
                        f"MissingArgument,{spec.name}",
                        spec.name,
                    )
                bound[name] = toks[i + 1].text
                i += 1
        else:
            positional.append(tok.text)
        i += 1
    free = [p for p in spec.positional if p not in bound]
    for value in positional:
        if not free:
            raise PsError(
                f"A positional parameter cannot be found that accepts argument '{value}'.",
                f"InvalidArgument: (:) [{spec.name}], ParameterBindingException",
                "ParameterBindingException",
                f"PositionalParameterNotFound,{spec.name}",
                spec.name,
            )
        bound[free.pop(0)] = value
    return bound


@dataclass
class _Item:
    """A PowerShell object: ``kind`` selects the table it is formatted with; ``props`` its properties."""

    kind: str
    props: dict[str, Any]


# ---------------------------------------------------------------------------------------------------------
# Windows Firewall (netsh advfirewall) state
# ---------------------------------------------------------------------------------------------------------

_PROFILE_NAMES = ("Domain", "Private", "Public")
_NETSH_PROFILES: dict[str, Any] = {
    "allprofiles": list(_PROFILE_NAMES),
    "currentprofile": "current",
    "domainprofile": ["Domain"],
    "privateprofile": ["Private"],
    "publicprofile": ["Public"],
}


def _declared_local_ports(instance: dict[str, Any], instance_dir: Path | None) -> dict[str, int]:
    """Endpoint name -> declared local port (``endpoints[*].local_port``, else the deployment's csdef)."""
    out: dict[str, int] = {}
    for ep in instance.get("endpoints") or []:
        if isinstance(ep, dict) and isinstance(ep.get("local_port"), int):
            out[str(ep.get("name"))] = ep["local_port"]
    if out or instance_dir is None:
        return out
    csdef = instance_dir.parent.parent / "ServiceDefinition.csdef"
    if not csdef.is_file():
        return out
    try:
        from harness.engine.artefact import CSDEF, Artefact
        from harness.facts.servicemodel import INPUT, INSTANCE_INPUT, parse_int
        from harness.readers.servicemodel import read_definition

        definition = read_definition(Artefact.from_path(csdef, CSDEF))
    except Exception:  # an unreadable csdef: no declared ports, netstat shows the real ones only
        return out
    for role in definition.roles:
        if role.name != instance.get("role"):
            continue
        for ep in role.endpoints:
            if ep.kind not in (INPUT, INSTANCE_INPUT):
                continue
            local = parse_int(ep.local_port) if ep.local_port else None
            if local is None and ep.kind == INPUT:
                local = parse_int(ep.port) if ep.port else None
            if isinstance(local, int):
                out[ep.name] = local
    return out


def default_firewall(instance: dict[str, Any], local_ports: dict[tuple[str, int], int] | None = None) -> dict[str, Any]:
    """The firewall an instance has unless ``instance.json`` says otherwise: every profile on, one inbound
    allow rule per endpoint (its declared local port and the port it really listens on) and the two
    standard WinRM rules.  The controller may call this to write ``instance["firewall"]`` explicitly."""
    if local_ports is None:
        local_ports = Guest(instance, "").local_port_map()
    rules: list[dict[str, Any]] = []
    for ep in instance.get("endpoints") or []:
        if not isinstance(ep, dict) or not isinstance(ep.get("port"), int):
            continue
        proto = "UDP" if ep.get("protocol") == "udp" else "TCP"
        ports = [ep["port"]]
        if (proto, ep["port"]) in local_ports:
            ports.insert(0, local_ports[(proto, ep["port"])])
        rules.append(
            {
                "name": f"{instance.get('role', 'Role')} {ep.get('name')}",
                "enabled": True,
                "direction": "In",
                "profiles": list(_PROFILE_NAMES),
                "protocol": proto,
                "local_port": ",".join(str(p) for p in ports),
                "action": "Allow",
            }
        )
    winrm = instance.get("winrm") or {}
    for label, key, local in (("HTTP", "http_port", 5985), ("HTTPS", "https_port", 5986)):
        ports = [local] + ([winrm[key]] if isinstance(winrm.get(key), int) else [])
        rules.append(
            {
                "name": f"Windows Remote Management ({label}-In)",
                "enabled": True,
                "direction": "In",
                "profiles": list(_PROFILE_NAMES),
                "protocol": "TCP",
                "local_port": ",".join(str(p) for p in ports),
                "action": "Allow",
            }
        )
    return {"profiles": {p: True for p in _PROFILE_NAMES}, "current": "Public", "rules": rules}


def _profile_states(fw: dict[str, Any]) -> dict[str, bool]:
    raw = fw.get("profiles") or {}
    out = {}
    for prof in _PROFILE_NAMES:
        value = (
            next((v for k, v in raw.items() if str(k).lower() == prof.lower()), True) if isinstance(raw, dict) else True
        )
        out[prof] = value if isinstance(value, bool) else str(value).strip().lower() in ("on", "true", "1", "enabled")
    return out


def _netsh_rule_block(rule: dict[str, Any]) -> str:
    profiles = rule.get("profiles", list(_PROFILE_NAMES))
    if isinstance(profiles, (list, tuple)):
        profiles = ",".join(str(p) for p in profiles) if profiles else "Any"
    local_port = rule.get("local_port", "Any")
    if isinstance(local_port, (list, tuple)):
        local_port = ",".join(str(p) for p in local_port)
    enabled = rule.get("enabled", True)
    rows = [
        ("Enabled", "Yes" if enabled is True or str(enabled).lower() in ("yes", "true") else "No"),
        ("Direction", str(rule.get("direction", "In"))),
        ("Profiles", str(profiles)),
        ("Grouping", str(rule.get("grouping", ""))),
        ("LocalIP", "Any"),
        ("RemoteIP", str(rule.get("remote_ip", "Any"))),
        ("Protocol", str(rule.get("protocol", "TCP"))),
        ("LocalPort", str(local_port)),
        ("RemotePort", "Any"),
        ("Edge traversal", "No"),
        ("Action", str(rule.get("action", "Allow"))),
    ]
    body = "\n".join(f"{k + ':':<38}{v}".rstrip() if not v else f"{k + ':':<38}{v}" for k, v in rows)
    return f"\n{'Rule Name:':<38}{rule.get('name', '')}\n{'-' * 70}\n{body}\n"


# ---------------------------------------------------------------------------------------------------------
# The guest
# ---------------------------------------------------------------------------------------------------------


_TCP_PROBE = re.compile(r"BeginConnect\(\s*'(?P<host>[^']+)'\s*,\s*(?P<port>\d+)")


class Guest:
    def __init__(self, instance: dict[str, Any], username: str) -> None:
        self.instance = instance
        self.id = str(instance.get("id") or "localhost")
        self.user = username
        self.host = str(instance.get("host") or "127.0.0.1")
        self.drives = Drives(instance)
        status = instance.get("status_file")
        self.instance_dir = Path(instance["dir"]) if instance.get("dir") else Path(status).parent if status else None

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
            "COMPUTERNAME": self.id.upper(),
            "NUMBER_OF_PROCESSORS": str(os.cpu_count() or 1),
            "OS": "Windows_NT",
            "PROCESSOR_ARCHITECTURE": "AMD64",
            "SystemDrive": "C:",
            "SystemRoot": "C:\\Windows",
            "TEMP": f"C:\\Users\\{self.user}\\AppData\\Local\\Temp",
            "TMP": f"C:\\Users\\{self.user}\\AppData\\Local\\Temp",
            "USERDOMAIN": self.id.upper(),
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

    # -- entry point --------------------------------------------------------------------------------------
    def run(self, command: str, args: list[str], io: CommandIO) -> int:
        line = " ".join([command.strip(), *(a for a in args if a)]).strip()
        try:
            return self.cmd(line, io)
        except Exception as exc:  # never let a guest bug kill the shell: report like a crashed process
            self._err(io, f"Internal error in the emulated guest: {type(exc).__name__}")
            return 1

    def _out(self, io: CommandIO, text: str) -> None:
        io.stdout(text.replace("\r\n", "\n").replace("\n", _CRLF).encode(io.encoding, "replace"))

    def _err(self, io: CommandIO, text: str) -> None:
        if not text.endswith("\n"):
            text += "\n"
        io.stderr(text.replace("\r\n", "\n").replace("\n", _CRLF).encode(io.encoding, "replace"))

    # -- cmd.exe ------------------------------------------------------------------------------------------
    def cmd(self, line: str, io: CommandIO) -> int:
        line = line.strip()
        if not line:
            return 0
        if re.match(r"^powershell(\.exe)?(\s|$)", line, re.IGNORECASE):
            return self.powershell(line, io)  # PowerShell arguments are not cmd-expanded or redirected here
        line = self.expand(line)
        stages, redirs = self._scan(line)
        if stages is None:
            self._err(io, "The syntax of the command is incorrect.")
            return 1
        stdout_dest: str | tuple[str, bool] | None = None  # None: pass through; "nul"; (file, append)
        capture: _Capture | None = None
        for kind, arg in redirs:
            capture = capture or _Capture(io)
            if kind in ("1>", ">", "1>>", ">>"):
                stdout_dest = "nul" if arg.lower() == "nul" else (arg, kind.endswith(">>"))
            elif kind in ("2>", "2>>") and arg.lower() == "nul":
                capture.keep_stderr = False
            elif kind == "2>&1":
                capture.stderr_to_stdout = True
        target: CommandIO = capture if capture is not None else io
        rc = self._simple(stages[0], target) if len(stages) == 1 else self._pipeline(stages, target)
        if capture is not None:
            if stdout_dest is None:
                io.stdout(bytes(capture.buf))
            elif isinstance(stdout_dest, tuple):
                try:
                    gp = self.resolve(stdout_dest[0])
                    with open(gp.path, "ab" if stdout_dest[1] else "wb") as fh:
                        fh.write(bytes(capture.buf))
                except (PathError, OSError):
                    self._err(io, "The system cannot find the path specified.")
                    return 1
        return rc

    @staticmethod
    def _scan(line: str) -> tuple[list[str] | None, list[tuple[str, str]]]:
        """Splits ``|`` stages and pulls out redirections (outside double quotes)."""
        stages: list[str] = []
        redirs: list[tuple[str, str]] = []
        cur: list[str] = []
        in_quote = False
        i, n = 0, len(line)
        while i < n:
            ch = line[i]
            if ch == '"':
                in_quote = not in_quote
                cur.append(ch)
            elif in_quote:
                cur.append(ch)
            elif ch == "|":
                stages.append("".join(cur))
                cur = []
            elif ch == ">":
                fd = ""
                if cur and cur[-1] in "12" and (len(cur) == 1 or cur[-2].isspace()):
                    fd = cur.pop()
                op = ">"
                if i + 1 < n and line[i + 1] == ">":
                    op, i = ">>", i + 1
                if line[i + 1 : i + 3] == "&1":
                    redirs.append((f"{fd or '1'}>&1", ""))
                    i += 3
                    continue
                j = i + 1
                while j < n and line[j].isspace():
                    j += 1
                k = j
                if k < n and line[k] == '"':
                    k = line.find('"', k + 1)
                    k = n if k < 0 else k + 1
                else:
                    while k < n and not line[k].isspace() and line[k] not in "|<>":
                        k += 1
                target = line[j:k].strip('"')
                if not target:
                    return None, []
                redirs.append((f"{fd}{op}" if fd else op, target))
                i = k
                continue
            else:
                cur.append(ch)
            i += 1
        stages.append("".join(cur))
        if any(not s.strip() for s in stages):
            return None, []
        return [s.strip() for s in stages], redirs

    def _pipeline(self, stages: list[str], io: CommandIO) -> int:
        data = b""
        rc = 0
        for idx, stage in enumerate(stages):
            last = idx == len(stages) - 1
            name, rest = self._head(stage)
            if idx > 0 and name in ("findstr", "more"):
                if name == "more":
                    out = data
                    rc = 0
                else:
                    out, rc = self._findstr(rest, data, io.encoding)
            else:
                cap = _Capture(io)
                rc = self._simple(stage, cap)
                out = bytes(cap.buf)
            if last:
                if out:
                    io.stdout(out)
            else:
                data = out
        return rc

    @staticmethod
    def _head(stage: str) -> tuple[str, str]:
        m = re.match(r'^\s*("[^"]*"|[^\s/]+)(.*)$', stage, re.DOTALL)
        if not m:
            return "", ""
        name = m.group(1).strip('"').lower()
        for ext in (".exe", ".com"):
            if name.endswith(ext):
                name = name[: -len(ext)]
        return name, m.group(2)

    def _findstr(self, rest: str, data: bytes, encoding: str) -> tuple[bytes, int]:
        begin = end = icase = invert = False
        needles: list[str] = []
        for arg in split_args(rest):
            low = arg.lower()
            if low.startswith("/c:"):
                needles.append(arg[3:])
            elif low.startswith("/") and len(arg) >= 2:
                for flag in low[1:].split("/"):
                    begin |= flag == "b"
                    end |= flag == "e"
                    icase |= flag == "i"
                    invert |= flag == "v"
            else:
                needles.extend(arg.split())
        text = data.decode(encoding, "replace")
        kept = []
        for ln in text.splitlines():
            hay = ln.lower() if icase else ln
            hit = False
            for needle in needles:
                nd = needle.lower() if icase else needle
                if begin and end:
                    hit |= hay == nd
                elif begin:
                    hit |= hay.startswith(nd)
                elif end:
                    hit |= hay.endswith(nd)
                else:
                    hit |= nd in hay
            if hit != invert:
                kept.append(ln + _CRLF)
        return "".join(kept).encode(encoding, "replace"), 0 if kept else 1

    def _simple(self, stage: str, io: CommandIO) -> int:
        name, rest = self._head(stage)
        m = re.match(r"^\s*echo([.:(])(.*)$", stage, re.IGNORECASE | re.DOTALL)
        if m:
            self._out(io, m.group(2) + "\n")
            return 0
        handler = {
            "echo": self._echo,
            "hostname": lambda r, o: self._print(o, self.id),
            "whoami": lambda r, o: self._print(o, f"{self.id.lower()}\\{self.user.lower()}"),
            "ver": lambda r, o: self._print(o, "\nMicrosoft Windows [Version 6.1.7601]"),
            "set": self._set,
            "cd": self._cd,
            "chdir": self._cd,
            "dir": self._dir,
            "type": self._type,
            "mkdir": self._mkdir,
            "md": self._mkdir,
            "del": self._del,
            "erase": self._del,
            "rmdir": self._rmdir,
            "rd": self._rmdir,
            "exit": self._exit,
            "systeminfo": self._systeminfo,
            "net": self._net,
            "netstat": self._netstat,
            "netsh": self._netsh,
            "sc": self._sc,
            "ping": self._ping,
            "cmd": self._cmd_c,
            "powershell": lambda r, o: self.powershell(stage, o),
            "findstr": lambda r, o: self._findstr(r, b"", o.encoding)[1],
        }.get(name)
        if handler is None:
            self._err(
                io,
                f"'{name if name else stage.split()[0]}' is not recognized as an internal or external command,\n"
                "operable program or batch file.",
            )
            return 1
        return handler(rest, io)

    def _print(self, io: CommandIO, text: str) -> int:
        self._out(io, text + "\n")
        return 0

    def _echo(self, rest: str, io: CommandIO) -> int:
        text = rest[1:] if rest.startswith((" ", "\t")) else rest
        if not text.strip():
            return self._print(io, "ECHO is on.")
        return self._print(io, text.rstrip())

    def _set(self, rest: str, io: CommandIO) -> int:
        prefix = rest.strip().lower()
        rows = [f"{k}={v}" for k, v in sorted(self.env().items(), key=lambda kv: kv[0].lower())]
        rows = [r for r in rows if r.lower().startswith(prefix)]
        if not rows:
            self._err(io, f"Environment variable {rest.strip()} not defined")
            return 1
        return self._print(io, "\n".join(rows))

    def _path_arg(self, rest: str) -> tuple[list[str], list[str]]:
        args = split_args(rest)
        return [a for a in args if not a.startswith("/")], [a.lower() for a in args if a.startswith("/")]

    def _cd(self, rest: str, io: CommandIO) -> int:
        paths, _ = self._path_arg(rest)
        if not paths:
            return self._print(io, self.cwd)
        try:
            if self.resolve(paths[0]).path.is_dir():
                return 0
        except PathError:
            pass
        self._err(io, "The system cannot find the path specified.")
        return 1

    def _volume_header(self, drive: str) -> str:
        return f" Volume in drive {drive} has no label.\n Volume Serial Number is 5A3C-9E21\n"

    def _dir(self, rest: str, io: CommandIO) -> int:
        paths, switches = self._path_arg(rest)
        bare = "/b" in switches
        raw = paths[0] if paths else self.cwd
        try:
            gp = self.resolve(raw)
        except PathError:
            self._err(io, "The system cannot find the path specified.")
            return 1
        drive = gp.display[0]
        if not gp.path.exists():
            if not bare:
                self._out(io, self._volume_header(drive) + "\n")
            if gp.path.parent.is_dir():
                self._err(io, "File Not Found")
            else:
                self._err(io, "The system cannot find the path specified.")
            return 1
        if gp.path.is_dir():
            folder, display = gp.path, gp.display
            entries = sorted(os.listdir(folder), key=str.lower)
            is_root = display.endswith(":\\")
        else:
            folder, display = gp.path.parent, gp.display.rsplit("\\", 1)[0] or gp.display[:3]
            if display.endswith(":"):
                display += "\\"
            entries = [gp.path.name]
            is_root = True
        if bare:
            self._out(io, "".join(e + "\n" for e in entries))
            return 0
        lines = [self._volume_header(drive), f" Directory of {display}", ""]
        files = dirs = 0
        total = 0
        if not is_root:
            d, t = _fmt_time(folder.stat().st_mtime)
            lines += [f"{d}  {t}    <DIR>          .", f"{d}  {t}    <DIR>          .."]
            dirs += 2
        for name in entries:
            try:
                st = (folder / name).stat()
            except OSError:
                continue
            d, t = _fmt_time(st.st_mtime)
            if stat.S_ISDIR(st.st_mode):
                dirs += 1
                lines.append(f"{d}  {t}    <DIR>          {name}")
            else:
                files += 1
                total += st.st_size
                lines.append(f"{d}  {t}    {st.st_size:>14,} {name}")
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = 0
        lines.append(f"{files:>16} File(s) {total:>14,} bytes")
        lines.append(f"{dirs:>16} Dir(s) {free:>15,} bytes free")
        self._out(io, "\n".join(lines) + "\n")
        return 0

    def _type(self, rest: str, io: CommandIO) -> int:
        paths, _ = self._path_arg(rest)
        if not paths:
            self._err(io, "The syntax of the command is incorrect.")
            return 1
        rc = 0
        for raw in paths:
            try:
                gp = self.resolve(raw)
            except PathError:
                self._err(io, "The system cannot find the path specified.")
                rc = 1
                continue
            if gp.path.is_dir():
                self._err(io, "Access is denied.")
                rc = 1
            elif gp.path.is_file():
                io.stdout(gp.path.read_bytes())
            else:
                self._err(io, "The system cannot find the file specified.")
                rc = 1
        return rc

    def _mkdir(self, rest: str, io: CommandIO) -> int:
        paths, _ = self._path_arg(rest)
        if not paths:
            self._err(io, "The syntax of the command is incorrect.")
            return 1
        rc = 0
        for raw in paths:
            try:
                gp = self.resolve(raw)
                if gp.path.exists():
                    self._err(io, f"A subdirectory or file {raw} already exists.")
                    rc = 1
                    continue
                gp.path.mkdir(parents=True)
            except (PathError, OSError):
                self._err(io, "The system cannot find the path specified.")
                rc = 1
        return rc

    def _del(self, rest: str, io: CommandIO) -> int:
        paths, _ = self._path_arg(rest)
        if not paths:
            self._err(io, "The syntax of the command is incorrect.")
            return 1
        for raw in paths:
            try:
                gp = self.resolve(raw)
            except PathError:
                self._err(io, "The system cannot find the path specified.")
                continue
            if gp.path.is_dir():
                for child in gp.path.iterdir():
                    if child.is_file() or child.is_symlink():
                        child.unlink()
            elif gp.path.is_file() or gp.path.is_symlink():
                gp.path.unlink()
            else:
                self._err(io, f"Could Not Find {gp.display}")
        return 0

    def _rmdir(self, rest: str, io: CommandIO) -> int:
        paths, switches = self._path_arg(rest)
        if not paths:
            self._err(io, "The syntax of the command is incorrect.")
            return 1
        for raw in paths:
            try:
                gp = self.resolve(raw)
            except PathError:
                self._err(io, "The system cannot find the path specified.")
                return 2
            if gp.path == gp.root or not gp.path.is_dir():
                missing = not gp.path.exists()
                self._err(io, "The system cannot find the file specified." if missing else "Access is denied.")
                return 2 if missing else 5
            if any(gp.path.iterdir()) and "/s" not in switches:
                self._err(io, "The directory is not empty.")
                return 145
            shutil.rmtree(gp.path)
        return 0

    def _exit(self, rest: str, io: CommandIO) -> int:
        args = [a for a in split_args(rest) if a.lower() != "/b"]
        try:
            return int(args[0]) if args else 0
        except ValueError:
            return 0

    def _cmd_c(self, rest: str, io: CommandIO) -> int:
        m = re.match(r"^\s*/[cCkK]\s*(.*)$", rest, re.DOTALL)
        if not m:
            return self._print(io, "Microsoft Windows [Version 6.1.7601]")
        inner = m.group(1).strip()
        if len(inner) >= 2 and inner[0] == '"' and inner[-1] == '"':
            inner = inner[1:-1]
        return self.cmd(inner, io)

    def _systeminfo(self, rest: str, io: CommandIO) -> int:
        rows = [
            ("Host Name", self.id.upper()),
            ("OS Name", OS_NAME),
            ("OS Version", OS_VERSION),
            ("OS Manufacturer", "Microsoft Corporation"),
            ("OS Configuration", "Standalone Server"),
            ("OS Build Type", "Multiprocessor Free"),
            ("Registered Owner", "Windows User"),
            ("Registered Organization", ""),
            ("System Manufacturer", "Microsoft Corporation"),
            ("System Model", "Virtual Machine"),
            ("System Type", "x64-based PC"),
            ("Windows Directory", "C:\\Windows"),
            ("System Directory", "C:\\Windows\\system32"),
            ("Boot Device", "\\Device\\HarddiskVolume1"),
            ("System Locale", "en-us;English (United States)"),
            ("Time Zone", "(UTC) Coordinated Universal Time"),
            ("Domain", "WORKGROUP"),
        ]
        return self._print(io, "\n" + "\n".join(f"{k + ':':<27}{v}" for k, v in rows))

    def _net(self, rest: str, io: CommandIO) -> int:
        args = split_args(rest)
        if not args or args[0].lower() != "user":
            self._err(io, "The syntax of this command is:\n\nNET\n    [ USER ]")
            return 1
        accounts = ["Administrator", "Guest", self.user]
        if len(args) == 1:
            cells = "".join(f"{a:<25}" for a in accounts).rstrip()
            return self._print(
                io,
                f"\nUser accounts for \\\\{self.id.upper()}\n\n{'-' * 79}\n{cells}\n"
                "The command completed successfully.\n",
            )
        name = args[1]
        match = next((a for a in accounts if a.lower() == name.lower()), None)
        if match is None:
            self._err(io, "The user name could not be found.\n\nMore help is available by typing NET HELPMSG 2221.\n")
            return 2
        active = "No" if match == "Guest" else "Yes"
        groups = "*Guests" if match == "Guest" else "*Administrators"
        rows = [
            ("User name", match),
            ("Full Name", ""),
            ("Comment", "Built-in account for administering the computer/domain" if match != "Guest" else ""),
            ("Account active", active),
            ("Account expires", "Never"),
            ("Local Group Memberships", groups),
            ("Global Group memberships", "*None"),
        ]
        body = "\n".join(f"{k:<29}{v}".rstrip() for k, v in rows)
        return self._print(io, body + "\nThe command completed successfully.\n")

    def _netstat(self, rest: str, io: CommandIO) -> int:
        lines = ["", "Active Connections", "", "  Proto  Local Address          Foreign Address        State"]
        local = self.local_port_map()
        declared: list[str] = []
        for proto, port in self.listening_ports():
            if proto == "TCP" and is_tcp_listening(self.host, port):
                lines.append(f"  TCP    {f'{self.host}:{port}':<23}{'0.0.0.0:0':<23}LISTENING")
                if (proto, port) in local:
                    declared.append(f"  TCP    {f'0.0.0.0:{local[(proto, port)]}':<23}{'0.0.0.0:0':<23}LISTENING")
            elif proto == "UDP" and is_udp_bound(self.host, port):
                lines.append(f"  UDP    {f'{self.host}:{port}':<23}*:*")
                if (proto, port) in local:
                    declared.append(f"  UDP    {f'0.0.0.0:{local[(proto, port)]}':<23}*:*")
        return self._print(io, "\n".join([*lines[:4], *sorted(set(declared)), *lines[4:]]))

    # -- declared local ports and the runtime firewall ------------------------------------------------
    def local_port_map(self) -> dict[tuple[str, int], int]:
        """(proto, port this instance really listens on) -> the port the role declares (``localPort``).

        From ``endpoints[*].local_port`` when the controller writes it, else from the deployment's csdef
        (``STATE/ServiceDefinition.csdef``); WinRM listeners are 5986 (HTTPS) / 5985 (HTTP) as on Windows.
        """
        cached = getattr(self, "_local_ports", None)
        if cached is not None:
            return cached
        declared = _declared_local_ports(self.instance, self.instance_dir)
        out: dict[tuple[str, int], int] = {}
        for ep in self.instance.get("endpoints") or []:
            if not isinstance(ep, dict) or not isinstance(ep.get("port"), int):
                continue
            local = declared.get(str(ep.get("name")))
            if isinstance(local, int) and local != ep["port"]:
                out[("UDP" if ep.get("protocol") == "udp" else "TCP", ep["port"])] = local
        winrm = self.instance.get("winrm") or {}
        for key, local in (("https_port", 5986), ("http_port", 5985)):
            if isinstance(winrm.get(key), int):
                out[("TCP", winrm[key])] = local
        self._local_ports = out
        return out

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

    def _netsh(self, rest: str, io: CommandIO) -> int:
        args = split_args(rest)
        low = [a.lower() for a in args]
        fw = self.firewall()
        if low[:4] == ["advfirewall", "firewall", "show", "rule"]:
            opts = dict(a.split("=", 1) for a in low[4:] if "=" in a)
            name = next((a.split("=", 1)[1] for a in args[4:] if a.lower().startswith("name=")), None)
            if name is None:
                self._print(io, "A specified value is not valid.\n\nUsage: show rule name=<string> [dir=in|out]")
                return 1
            direction = opts.get("dir")
            blocks = []
            for rule in fw.get("rules") or []:
                if not isinstance(rule, dict):
                    continue
                if name.lower() != "all" and str(rule.get("name", "")).lower() != name.lower():
                    continue
                if direction and str(rule.get("direction", "In")).lower() != direction:
                    continue
                blocks.append(_netsh_rule_block(rule))
            if not blocks:
                self._print(io, "No rules match the specified criteria.\n")
                return 1
            return self._print(io, "".join(blocks) + "Ok.\n")
        if len(low) >= 3 and low[:2] == ["advfirewall", "show"] and low[2] in _NETSH_PROFILES:
            profiles = _profile_states(fw)
            which = _NETSH_PROFILES[low[2]]
            if which == "current":
                which = [str(fw.get("current") or "Public").capitalize()]
            state_only = len(low) > 3 and low[3] == "state"
            out = [""]
            for prof in which:
                out += [f"{prof} Profile Settings: ", "-" * 70, f"{'State':<38}{'ON' if profiles.get(prof) else 'OFF'}"]
                if not state_only:
                    out += [f"{'Firewall Policy':<38}BlockInbound,AllowOutbound"]
                out.append("")
            out[-1] = "Ok."
            return self._print(io, "\n".join(out) + "\n")
        self._print(io, f"The following command was not found: {' '.join(args)}.")
        return 1

    _SC_STATES = {
        "running": "4  RUNNING",
        "stopped": "1  STOPPED",
        "startpending": "2  START_PENDING",
        "stoppending": "3  STOP_PENDING",
        "paused": "7  PAUSED",
    }

    def _sc_block(self, svc: dict[str, Any]) -> str:
        state = self._SC_STATES.get(str(svc.get("state", "Stopped")).lower(), "1  STOPPED")
        flags = (
            "(STOPPABLE, PAUSABLE, ACCEPTS_SHUTDOWN)"
            if "RUNNING" in state
            else "(NOT_STOPPABLE, NOT_PAUSABLE, IGNORES_SHUTDOWN)"
        )
        return (
            f"\nSERVICE_NAME: {svc['name']}\n"
            f"        TYPE               : 20  WIN32_SHARE_PROCESS\n"
            f"        STATE              : {state}\n"
            f"                                {flags}\n"
            "        WIN32_EXIT_CODE    : 0  (0x0)\n        SERVICE_EXIT_CODE  : 0  (0x0)\n"
            "        CHECKPOINT         : 0x0\n        WAIT_HINT          : 0x0\n"
        )

    def _sc(self, rest: str, io: CommandIO) -> int:
        args = split_args(rest)
        if not args or args[0].lower() != "query":
            self._err(io, _SC_USAGE)
            return 1
        if len(args) == 1:
            self._out(io, "".join(self._sc_block(s) for s in self.services()))
            return 0
        svc = self.service(args[1])
        if svc is None:
            self._print(
                io,
                "[SC] EnumQueryServicesStatus:OpenService FAILED 1060:\n\n"
                "The specified service does not exist as an installed service.\n",
            )
            return 1060
        self._out(io, self._sc_block(svc))
        return 0

    def _ping(self, rest: str, io: CommandIO) -> int:
        args = split_args(rest)
        count, target = 4, None
        i = 0
        while i < len(args):
            if args[i].lower() in ("-n", "/n") and i + 1 < len(args):
                try:
                    count = max(1, min(int(args[i + 1]), int(MAX_SLEEP)))
                except ValueError:
                    self._err(io, "Bad value for option -n, valid range is from 1 to 4294967295.")
                    return 1
                i += 2
                continue
            if not args[i].startswith(("-", "/")):
                target = args[i]
            i += 1
        if target is None:
            self._err(io, "IP address must be specified.")
            return 1
        if target.lower() not in ("127.0.0.1", "localhost", self.id.lower(), "::1"):
            self._print(io, f"Ping request could not find host {target}. Please check the name and try again.")
            return 1
        self._out(io, f"\nPinging {target} with 32 bytes of data:\n")
        sent = 0
        for n in range(count):
            if n and not io.sleep(1.0):
                break
            self._out(io, "Reply from 127.0.0.1: bytes=32 time<1ms TTL=128\n")
            sent += 1
        self._out(
            io,
            f"\nPing statistics for 127.0.0.1:\n    Packets: Sent = {sent}, Received = {sent}, Lost = 0 (0% loss),\n"
            "Approximate round trip times in milli-seconds:\n    Minimum = 0ms, Maximum = 0ms, Average = 0ms\n",
        )
        return 0

    # -- PowerShell ---------------------------------------------------------------------------------------
    def powershell(self, line: str, io: CommandIO) -> int:
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
                        return self._ps_fail(io, "Cannot process the command because of a missing parameter.")
                    try:
                        script = base64.b64decode(vm.group(1), validate=True).decode("utf-16-le")
                    except (binascii.Error, ValueError, UnicodeDecodeError):
                        return self._ps_fail(
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
                        script = self.resolve(vm.group(1).strip('"')).path.read_text("utf-8-sig")
                    except (PathError, OSError):
                        return self._ps_fail(io, "The argument to the -File parameter does not exist.")
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
            return self._tcp_client_probe(io, probe.group("host"), int(probe.group("port")), script)
        return PowerShell(self, io).run(script)

    def _tcp_client_probe(self, io: CommandIO, host: str, port: int, script: str) -> int:
        """The .NET TcpClient connect probe (``New-Object System.Net.Sockets.TcpClient`` … ``BeginConnect(host,
        port, …)`` … ``WaitOne(ms)``), performed for real. ``host:port`` on the deployment's internal network
        (``instance["internal_network"]``) is routed to the listener of the instance that owns it."""
        wait = re.search(r"WaitOne\(\s*(\d+)", script)
        timeout = min(int(wait.group(1)) if wait else 3000, 30000) / 1000.0
        mark = re.search(r"'(\S+) ok'", script)
        tag = mark.group(1) if mark else "TcpClient"
        route = (self.instance.get("internal_network") or {}).get(f"{host}:{port}")
        target = (str(route[0]), int(route[1])) if route else (host, port)
        try:
            with socket.create_connection(target, timeout=timeout):
                self._out(io, f"{tag} ok\n")
        except TimeoutError:
            self._out(io, f"{tag} timeout\n")
        except OSError as exc:
            if isinstance(exc, ConnectionRefusedError):
                why = "No connection could be made because the target machine actively refused it"
            else:
                why = "A connection attempt failed because the connected party did not properly respond"
            self._out(io, f"{tag} error {why} {host}:{port}\n")
        return 0

    def _ps_fail(self, io: CommandIO, message: str) -> int:
        self._err(io, message)
        return 1


# Windows PowerShell 5.1's ConvertTo-Json writes enums as numbers: ServiceControllerStatus values.
_SERVICE_STATUS = {"stopped": 1, "startpending": 2, "stoppending": 3, "running": 4, "continuepending": 5,
                   "pausepending": 6, "paused": 7}  # fmt: skip


def _json_value(r: Any) -> Any:
    if not isinstance(r, _Item):
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
        "write-output": _Spec("Write-Output", ("InputObject",), ("NoEnumerate",), ("InputObject",)),
        "write-host": _Spec(
            "Write-Host",
            ("Object", "ForegroundColor", "BackgroundColor"),
            ("NoNewline",),
            ("Object",),
        ),
        "write-error": _Spec("Write-Error", ("Message", "Category", "ErrorId"), (), ("Message",)),
        "hostname": _Spec("hostname"),
        "test-path": _Spec("Test-Path", ("Path", "LiteralPath", "PathType"), ("IsValid",), ("Path",)),
        "get-content": _Spec("Get-Content", ("Path", "LiteralPath", "Encoding", "TotalCount"), ("Raw",), ("Path",)),
        "set-content": _Spec(
            "Set-Content",
            ("Path", "LiteralPath", "Value", "Encoding"),
            ("Force", "NoNewline"),
            ("Path", "Value"),
        ),
        "add-content": _Spec(
            "Add-Content",
            ("Path", "LiteralPath", "Value", "Encoding"),
            ("Force", "NoNewline"),
            ("Path", "Value"),
        ),
        "new-item": _Spec("New-Item", ("Path", "ItemType", "Name", "Value"), ("Force",), ("Path",)),
        "remove-item": _Spec("Remove-Item", ("Path", "LiteralPath"), ("Recurse", "Force"), ("Path",)),
        "get-childitem": _Spec(
            "Get-ChildItem",
            ("Path", "LiteralPath", "Filter"),
            ("Name", "Force", "Recurse"),
            ("Path",),
        ),
        "get-service": _Spec("Get-Service", ("Name", "DisplayName"), (), ("Name",)),
        "get-nettcpconnection": _Spec(
            "Get-NetTCPConnection",
            ("State", "LocalPort", "LocalAddress"),
            (),
            ("LocalAddress", "LocalPort"),
        ),
        "start-sleep": _Spec("Start-Sleep", ("Seconds", "Milliseconds"), (), ("Seconds",)),
        "invoke-vmrprobe": _Spec("Invoke-VmrProbe", ("Json",), (), ("Json",)),
        "invoke-webrequest": _Spec(
            "Invoke-WebRequest",
            ("Uri", "Method", "Headers", "Body", "ContentType", "TimeoutSec", "OutFile"),
            ("UseBasicParsing",),
            ("Uri",),
        ),
        "exit": _Spec("exit", ("Code",), (), ("Code",)),
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
        self.io.stdout(text.replace("\r\n", "\n").replace("\n", _CRLF).encode(self.io.encoding, "replace"))

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
        self.errors.extend(f'<S S="Error">{_clixml_text(ln + _CRLF)}</S>' for ln in lines)

    def _flush_stderr(self) -> None:
        if not self.errors and not self.progress:
            return
        body = (_PROGRESS if self.progress else "") + "".join(self.errors)
        doc = f'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">{body}</Objs>'
        self.io.stderr(doc.encode(self.io.encoding, "replace"))

    # -- run ----------------------------------------------------------------------------------------------
    def run(self, script: str) -> int:
        noise = self.g.instance_dir is not None and (self.g.instance_dir / "clixml-noise").exists()
        statements = []
        for line_no, line in enumerate(script.replace("\r\n", "\n").split("\n"), start=1):
            statements += [(s, line_no) for s in _ps_split(line, ";\n")]
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
        except _Exit as ex:
            rc = ex.code
        self._flush_stderr()
        if rc is not None:
            return rc
        return 0 if last_ok else 1

    def _statement(self, stmt: str) -> None:
        m = re.match(r"^\$(\w+)\s*=\s*(.*)$", stmt, re.DOTALL)
        if m:
            toks = _ps_tokens(m.group(2), self.g.getenv)
            self.vars[m.group(1).lower()] = toks[0].text if toks else ""
            return
        stages = _ps_split(stmt, "|")
        results = self._command(stages[0])
        for stage in stages[1:]:
            results = self._filter(stage, results)
        self._format(results)

    def _command(self, stage: str) -> list[Any]:
        toks = _ps_tokens(stage, self.g.getenv)
        if not toks:
            return []
        raw_name = toks[0].text
        name = raw_name.lower()
        if name == "mkdir" or name == "md":
            name = "new-item"
            toks = [toks[0], _Tok("-ItemType", False), _Tok("Directory", True), *toks[1:]]
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
        args = _bind(spec, toks[1:])
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
                f"ParameterArgumentValidationErrorNullNotAllowed,{_fq(cmdlet)}",
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
            f"PathNotFound,{_fq(cmdlet)}",
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
        raise _Exit(code)

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
                f"GetContentWriterDirectoryNotFoundError,{_fq(cmdlet)}",
                cmdlet,
            )
        if gp.path.is_dir():
            raise PsError(
                f"Access to the path '{gp.display}' is denied.",
                f"PermissionDenied: ({gp.display}:String) [{cmdlet}], UnauthorizedAccessException",
                "UnauthorizedAccessException",
                f"GetContentWriterUnauthorizedAccessError,{_fq(cmdlet)}",
                cmdlet,
            )
        with open(gp.path, mode) as fh:
            fh.write(data)
        return []

    def _c_set_content(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        return self._write(args, cmdlet, "wb")

    def _c_add_content(self, args: dict[str, Any], cmdlet: str) -> list[Any]:
        return self._write(args, cmdlet, "ab")

    def _item(self, gp: GuestPath) -> _Item:
        st = gp.path.stat()
        parent = gp.display.rsplit("\\", 1)[0]
        return _Item(
            "fsitem",
            {
                "Mode": ("d----" if stat.S_ISDIR(st.st_mode) else "-a---"),
                "LastWriteTime": _fmt_time(st.st_mtime),
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

    def _service_item(self, svc: dict[str, Any]) -> _Item:
        return _Item(
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
            _Item(
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
        return [_Item("webresponse", {"StatusCode": code, "StatusDescription": reason, "Content": content})]

    # -- pipeline filters and formatting -----------------------------------------------------------------
    def _filter(self, stage: str, results: list[Any]) -> list[Any]:
        toks = _ps_tokens(stage, self.g.getenv)
        name = toks[0].text.lower() if toks else ""
        if name == "out-null":
            return []
        if name in ("out-string", "write-output", "echo"):
            return results
        if name in ("select-object", "select"):
            args = _bind(_Spec("Select-Object", ("ExpandProperty", "Property", "First"), (), ("Property",)), toks[1:])
            out = list(results)
            if args.get("ExpandProperty"):
                prop = str(args["ExpandProperty"])
                out = []
                for r in results:
                    if isinstance(r, _Item):
                        key = next((k for k in r.props if k.lower() == prop.lower()), None)
                        if key is not None:
                            out.append(r.props[key])
            elif args.get("Property"):  # -Property A,B: objects with just those properties (in that order)
                names = [n.strip() for n in str(args["Property"]).split(",") if n.strip()]
                out = []
                for r in results:
                    props = r.props if isinstance(r, _Item) else {}
                    picked: dict[str, Any] = {}
                    for n in names:
                        key = next((k for k in props if k.lower() == n.lower()), n)
                        picked[key] = props.get(key)
                    out.append(_Item("selected:" + (r.kind if isinstance(r, _Item) else ""), picked))
            if "First" in args:
                out = out[: int(str(args["First"]))]
            return out
        if name == "convertto-json":
            args = _bind(_Spec("ConvertTo-Json", ("Depth",), ("Compress",), ("Depth",)), toks[1:])
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
        items = [r for r in results if isinstance(r, _Item)]
        for r in results:
            if isinstance(r, bool):
                lines.append("True" if r else "False")
            elif not isinstance(r, _Item):
                lines.append(str(r))
        if items:
            lines.append(self._table(items))
        self._emit("\n".join(lines) + "\n")

    @staticmethod
    def _table(items: list[_Item]) -> str:
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
