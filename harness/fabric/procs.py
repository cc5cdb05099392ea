"""Stopping a child process: a first signal, a grace period, then SIGTERM and SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any


def stop_process(
    proc: subprocess.Popen[Any],
    grace_seconds: float,
    *,
    first_signal: int = signal.SIGTERM,
    kill_seconds: float | None = None,
) -> bool:
    """Send ``first_signal`` and wait up to ``grace_seconds``; then SIGTERM (unless that was the first
    signal) and SIGKILL, waiting up to ``kill_seconds`` (default ``grace_seconds``) after each.

    Stops early once the process has exited (or is gone). True when it has exited.
    """
    wait = grace_seconds if kill_seconds is None else kill_seconds
    steps = [(first_signal, grace_seconds)]
    if first_signal != signal.SIGTERM:
        steps.append((signal.SIGTERM, wait))
    steps.append((signal.SIGKILL, wait))
    for sig, seconds in steps:
        if proc.poll() is not None:
            break
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(seconds)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll() is not None


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie, or a child of ours that has exited (reaped here), is gone."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child (the controller started by up())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return "unknown-boot"


def process_identity(pid: int) -> str | None:
    """``<boot id>/<start time>`` of a running process (field 22 of /proc/PID/stat: clock ticks after boot),
    None when there is no such process. A pid is reused by later processes; this pair is not, so it tells
    whether a recorded pid is still the process that was recorded (issue 9)."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError, ValueError):
        return None
    # after "pid (comm) ", fields[0] is field 3 (state): field 22 (starttime) is fields[19]
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return f"{_boot_id()}/{fields[19]}"


def is_recorded_process(pid: int, identity: str | None) -> bool:
    """True when ``pid`` runs and is the process recorded with ``identity`` (never without an identity)."""
    return bool(identity) and pid_alive(pid) and process_identity(pid) == identity
