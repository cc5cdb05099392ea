r"""The cmd.exe interpreter of the emulated guest.

cmd.exe command surface (the first word is case-insensitive, ``.exe`` optional)
------------------------------------------------------------------------------
=========================================  ========================================================================
form                                       result
=========================================  ========================================================================
``echo text`` / ``echo.``                  text (``%VAR%`` expanded: PROCESSOR_ARCHITECTURE=AMD64, COMPUTERNAME,
                                           USERNAME, USERDOMAIN, USERPROFILE, OS, SystemDrive, SystemRoot, windir,
                                           TEMP, TMP, ComSpec, NUMBER_OF_PROCESSORS); bare ``echo`` → ``ECHO is on.``
``hostname``                               the computer name (the instance id; a scale-set VM's name)
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
``reg query|add|delete KEY …``             the registry (``registry.py``); missing → ``ERROR: The system was unable
                                           to find the specified registry key or value.`` rc 1
``cmd /c line``                            runs ``line``
``powershell …``                           ``powershell.py`` (cmd expands ``%VAR%`` and takes pipes and
                                           redirections outside double quotes first, as for any command)
``> file`` / ``>> file`` / ``>nul`` /      redirections of stdout (to a guest file or nowhere) and stderr
``2>nul`` / ``2>&1``
anything else (``uname``, ``python3`` …)   stderr ``'x' is not recognized as an internal or external command,
                                           operable program or batch file.`` rc 1
=========================================  ========================================================================

No chaining (``&``, ``&&``, ``||``), no wildcards, no ``if``/``for``.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from typing import TYPE_CHECKING, Any

from .common import (
    CRLF,
    MAX_SLEEP,
    OS_NAME,
    OS_VERSION,
    Capture,
    CommandIO,
    fmt_time,
    is_tcp_listening,
    is_udp_bound,
    split_args,
    write_err,
    write_out,
)
from .netsh import netsh
from .paths import PathError
from .registry import reg

if TYPE_CHECKING:
    from .guest import Guest

_SC_USAGE = (
    "DESCRIPTION:\n        SC is a command line program used for communicating with the\n"
    "        Service Control Manager and services.\nUSAGE:\n        sc <server> [command] [service name]"
)


class CmdExe:
    """One ``cmd.exe /c <line>`` run in the guest."""

    def __init__(self, guest: Guest) -> None:
        self.g = guest

    def run(self, line: str, io: CommandIO) -> int:
        line = line.strip()
        if not line:
            return 0
        line = self.g.expand(line)
        stages, redirs = self._scan(line)
        if stages is None:
            write_err(io, "The syntax of the command is incorrect.")
            return 1
        stdout_dest: str | tuple[str, bool] | None = None  # None: pass through; "nul"; (file, append)
        capture: Capture | None = None
        for kind, arg in redirs:
            capture = capture or Capture(io)
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
                    gp = self.g.resolve(stdout_dest[0])
                    with open(gp.path, "ab" if stdout_dest[1] else "wb") as fh:
                        fh.write(bytes(capture.buf))
                except (PathError, OSError):
                    write_err(io, "The system cannot find the path specified.")
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
                cap = Capture(io)
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
                kept.append(ln + CRLF)
        return "".join(kept).encode(encoding, "replace"), 0 if kept else 1

    def _simple(self, stage: str, io: CommandIO) -> int:
        name, rest = self._head(stage)
        m = re.match(r"^\s*echo([.:(])(.*)$", stage, re.IGNORECASE | re.DOTALL)
        if m:
            write_out(io, m.group(2) + "\n")
            return 0
        handler = {
            "echo": self._echo,
            "hostname": lambda r, o: self._print(o, self.g.computer),
            "whoami": lambda r, o: self._print(o, f"{self.g.id.lower()}\\{self.g.user.lower()}"),
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
            "netsh": lambda r, o: netsh(self.g, r, o),
            "reg": lambda r, o: reg(self.g, r, o),
            "sc": self._sc,
            "ping": self._ping,
            "cmd": self._cmd_c,
            "powershell": lambda r, o: self.g.powershell(stage, o),
            "findstr": lambda r, o: self._findstr(r, b"", o.encoding)[1],
        }.get(name)
        if handler is None:
            typed = re.match(r'^\s*("[^"]*"|[^\s/]+)', stage)  # cmd names the command as it was typed
            shown = typed.group(1).strip('"') if typed else stage.split()[0]
            write_err(
                io,
                f"'{shown}' is not recognized as an internal or external command,\noperable program or batch file.",
            )
            return 1
        return handler(rest, io)

    def _print(self, io: CommandIO, text: str) -> int:
        write_out(io, text + "\n")
        return 0

    def _echo(self, rest: str, io: CommandIO) -> int:
        text = rest[1:] if rest.startswith((" ", "\t")) else rest
        if not text.strip():
            return self._print(io, "ECHO is on.")
        return self._print(io, text.rstrip())

    def _set(self, rest: str, io: CommandIO) -> int:
        prefix = rest.strip().lower()
        rows = [f"{k}={v}" for k, v in sorted(self.g.env().items(), key=lambda kv: kv[0].lower())]
        rows = [r for r in rows if r.lower().startswith(prefix)]
        if not rows:
            write_err(io, f"Environment variable {rest.strip()} not defined")
            return 1
        return self._print(io, "\n".join(rows))

    def _path_arg(self, rest: str) -> tuple[list[str], list[str]]:
        args = split_args(rest)
        return [a for a in args if not a.startswith("/")], [a.lower() for a in args if a.startswith("/")]

    def _cd(self, rest: str, io: CommandIO) -> int:
        paths, _ = self._path_arg(rest)
        if not paths:
            return self._print(io, self.g.cwd)
        try:
            if self.g.resolve(paths[0]).path.is_dir():
                return 0
        except PathError:
            pass
        write_err(io, "The system cannot find the path specified.")
        return 1

    def _volume_header(self, drive: str) -> str:
        return f" Volume in drive {drive} has no label.\n Volume Serial Number is 5A3C-9E21\n"

    def _dir(self, rest: str, io: CommandIO) -> int:
        paths, switches = self._path_arg(rest)
        bare = "/b" in switches
        raw = paths[0] if paths else self.g.cwd
        try:
            gp = self.g.resolve(raw)
        except PathError:
            write_err(io, "The system cannot find the path specified.")
            return 1
        drive = gp.display[0]
        if not gp.path.exists():
            if not bare:
                write_out(io, self._volume_header(drive) + "\n")
            if gp.path.parent.is_dir():
                write_err(io, "File Not Found")
            else:
                write_err(io, "The system cannot find the path specified.")
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
            write_out(io, "".join(e + "\n" for e in entries))
            return 0
        lines = [self._volume_header(drive), f" Directory of {display}", ""]
        files = dirs = 0
        total = 0
        if not is_root:
            d, t = fmt_time(folder.stat().st_mtime)
            lines += [f"{d}  {t}    <DIR>          .", f"{d}  {t}    <DIR>          .."]
            dirs += 2
        for name in entries:
            try:
                st = (folder / name).stat()
            except OSError:
                continue
            d, t = fmt_time(st.st_mtime)
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
        write_out(io, "\n".join(lines) + "\n")
        return 0

    def _type(self, rest: str, io: CommandIO) -> int:
        paths, _ = self._path_arg(rest)
        if not paths:
            write_err(io, "The syntax of the command is incorrect.")
            return 1
        rc = 0
        for raw in paths:
            try:
                gp = self.g.resolve(raw)
            except PathError:
                write_err(io, "The system cannot find the path specified.")
                rc = 1
                continue
            if gp.path.is_dir():
                write_err(io, "Access is denied.")
                rc = 1
            elif gp.path.is_file():
                io.stdout(gp.path.read_bytes())
            else:
                write_err(io, "The system cannot find the file specified.")
                rc = 1
        return rc

    def _mkdir(self, rest: str, io: CommandIO) -> int:
        paths, _ = self._path_arg(rest)
        if not paths:
            write_err(io, "The syntax of the command is incorrect.")
            return 1
        rc = 0
        for raw in paths:
            try:
                gp = self.g.resolve(raw)
                if gp.path.exists():
                    write_err(io, f"A subdirectory or file {raw} already exists.")
                    rc = 1
                    continue
                gp.path.mkdir(parents=True)
            except (PathError, OSError):
                write_err(io, "The system cannot find the path specified.")
                rc = 1
        return rc

    def _del(self, rest: str, io: CommandIO) -> int:
        paths, _ = self._path_arg(rest)
        if not paths:
            write_err(io, "The syntax of the command is incorrect.")
            return 1
        for raw in paths:
            try:
                gp = self.g.resolve(raw)
            except PathError:
                write_err(io, "The system cannot find the path specified.")
                continue
            if gp.path.is_dir():
                for child in gp.path.iterdir():
                    if child.is_file() or child.is_symlink():
                        child.unlink()
            elif gp.path.is_file() or gp.path.is_symlink():
                gp.path.unlink()
            else:
                write_err(io, f"Could Not Find {gp.display}")
        return 0

    def _rmdir(self, rest: str, io: CommandIO) -> int:
        paths, switches = self._path_arg(rest)
        if not paths:
            write_err(io, "The syntax of the command is incorrect.")
            return 1
        for raw in paths:
            try:
                gp = self.g.resolve(raw)
            except PathError:
                write_err(io, "The system cannot find the path specified.")
                return 2
            if gp.path == gp.root or not gp.path.is_dir():
                missing = not gp.path.exists()
                write_err(io, "The system cannot find the file specified." if missing else "Access is denied.")
                return 2 if missing else 5
            if any(gp.path.iterdir()) and "/s" not in switches:
                write_err(io, "The directory is not empty.")
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
        return self.run(inner, io)

    def _systeminfo(self, rest: str, io: CommandIO) -> int:
        rows = [
            ("Host Name", self.g.id.upper()),
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
            write_err(io, "The syntax of this command is:\n\nNET\n    [ USER ]")
            return 1
        accounts = ["Administrator", "Guest", self.g.user]
        if len(args) == 1:
            cells = "".join(f"{a:<25}" for a in accounts).rstrip()
            return self._print(
                io,
                f"\nUser accounts for \\\\{self.g.id.upper()}\n\n{'-' * 79}\n{cells}\n"
                "The command completed successfully.\n",
            )
        name = args[1]
        match = next((a for a in accounts if a.lower() == name.lower()), None)
        if match is None:
            write_err(io, "The user name could not be found.\n\nMore help is available by typing NET HELPMSG 2221.\n")
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
        local = self.g.local_port_map()
        declared: list[str] = []
        for proto, port in self.g.listening_ports():
            if proto == "TCP" and is_tcp_listening(self.g.host, port):
                lines.append(f"  TCP    {f'{self.g.host}:{port}':<23}{'0.0.0.0:0':<23}LISTENING")
                if (proto, port) in local:
                    declared.append(f"  TCP    {f'0.0.0.0:{local[(proto, port)]}':<23}{'0.0.0.0:0':<23}LISTENING")
            elif proto == "UDP" and is_udp_bound(self.g.host, port):
                lines.append(f"  UDP    {f'{self.g.host}:{port}':<23}*:*")
                if (proto, port) in local:
                    declared.append(f"  UDP    {f'0.0.0.0:{local[(proto, port)]}':<23}*:*")
        return self._print(io, "\n".join([*lines[:4], *sorted(set(declared)), *lines[4:]]))

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
            write_err(io, _SC_USAGE)
            return 1
        if len(args) == 1:
            write_out(io, "".join(self._sc_block(s) for s in self.g.services()))
            return 0
        svc = self.g.service(args[1])
        if svc is None:
            self._print(
                io,
                "[SC] EnumQueryServicesStatus:OpenService FAILED 1060:\n\n"
                "The specified service does not exist as an installed service.\n",
            )
            return 1060
        write_out(io, self._sc_block(svc))
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
                    write_err(io, "Bad value for option -n, valid range is from 1 to 4294967295.")
                    return 1
                i += 2
                continue
            if not args[i].startswith(("-", "/")):
                target = args[i]
            i += 1
        if target is None:
            write_err(io, "IP address must be specified.")
            return 1
        if target.lower() not in ("127.0.0.1", "localhost", self.g.id.lower(), "::1"):
            self._print(io, f"Ping request could not find host {target}. Please check the name and try again.")
            return 1
        write_out(io, f"\nPinging {target} with 32 bytes of data:\n")
        sent = 0
        for n in range(count):
            if n and not io.sleep(1.0):
                break
            write_out(io, "Reply from 127.0.0.1: bytes=32 time<1ms TTL=128\n")
            sent += 1
        write_out(
            io,
            f"\nPing statistics for 127.0.0.1:\n    Packets: Sent = {sent}, Received = {sent}, Lost = 0 (0% loss),\n"
            "Approximate round trip times in milli-seconds:\n    Minimum = 0ms, Maximum = 0ms, Average = 0ms\n",
        )
        return 0
