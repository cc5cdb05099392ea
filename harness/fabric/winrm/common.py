"""What every emulated guest command shares: the output sink, cmd-style argument splitting, real listening checks
and the OS identity the guest claims."""

from __future__ import annotations

import datetime as _dt
import socket
from dataclasses import dataclass, field
from typing import Protocol

OS_NAME = "Microsoft Windows Server 2008 R2 Datacenter"
OS_VERSION = "6.1.7601 Service Pack 1 Build 7601"
MAX_SLEEP = 600.0
CRLF = "\r\n"


class CommandIO(Protocol):
    """Where a running command writes; ``sleep`` returns False when the command was signalled."""

    @property
    def encoding(self) -> str: ...

    def stdout(self, data: bytes) -> None: ...

    def stderr(self, data: bytes) -> None: ...

    def sleep(self, seconds: float) -> bool: ...


@dataclass
class Capture:
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


def fmt_time(ts: float) -> tuple[str, str]:
    t = _dt.datetime.fromtimestamp(ts)
    return t.strftime("%m/%d/%Y"), t.strftime("%I:%M %p")


def write_out(io: CommandIO, text: str) -> None:
    """Text to stdout: CRLF line ends, encoded in the shell's code page."""
    io.stdout(text.replace("\r\n", "\n").replace("\n", CRLF).encode(io.encoding, "replace"))


def write_line(io: CommandIO, text: str) -> int:
    """``text`` and a newline to stdout; rc 0."""
    write_out(io, text + "\n")
    return 0


def write_err(io: CommandIO, text: str) -> None:
    """Text to stderr, newline-terminated, CRLF line ends."""
    if not text.endswith("\n"):
        text += "\n"
    io.stderr(text.replace("\r\n", "\n").replace("\n", CRLF).encode(io.encoding, "replace"))
