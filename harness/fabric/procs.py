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
