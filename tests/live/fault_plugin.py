"""A pytest plugin for probe runs under test: breaks a fabric part right before a given live item runs.

Loaded into a `vmrole probe` subprocess with ``-- -p tests.live.fault_plugin``; it reads

- ``VMR_FAULT_STATE``: the fabric's state directory;
- ``VMR_FAULT_AT``: a rule id (``VMR700``): the action happens once, in the setup of the first item whose
  name starts with it (every earlier stage has run, later ones have not: deterministic "during the probe");
- ``VMR_FAULT_DO``: ``fault:<kind>[:<seconds>]`` (through the control API) or ``kill:<part>`` with part
  ``haproxy``, ``azurite``, ``controller`` (the management API lives in it) or an instance id (SIGKILL,
  waiting until the process is gone);
- ``VMR_FAULT_REPORTS``: a file to append every item report to (JSON lines: nodeid, phase, outcome, the
  failure or skip text exactly as pytest would print it).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest


def part_pid(data: dict, part: str) -> int:
    if part in ("haproxy", "azurite"):
        return int(data[part]["pid"])
    if part == "controller":
        return int(data["controller"]["pid"])
    for inst in data["instances"]:
        if inst["id"] == part:
            return int(inst["pid"])
    raise KeyError(part)


def break_part(state: Path, action: str) -> None:
    from harness.fabric.client import Fabric
    from harness.fabric.procs import pid_alive

    fabric = Fabric(state)
    kind, _, rest = action.partition(":")
    if kind == "fault":
        name, _, seconds = rest.partition(":")
        fabric.inject(name, None, seconds=float(seconds or 120))
        return
    if kind != "kill":
        raise ValueError(f"unknown action {action!r}")
    pid = part_pid(fabric.data, rest)
    os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < end:
        time.sleep(0.02)


_done: list[bool] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    at = os.environ.get("VMR_FAULT_AT")
    if _done or not at or not item.name.startswith(at):
        return
    _done.append(True)
    break_part(Path(os.environ["VMR_FAULT_STATE"]), os.environ["VMR_FAULT_DO"])


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = os.environ.get("VMR_FAULT_REPORTS")
    if not path or (report.passed and report.when != "call"):
        return
    entry = {
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "longrepr": str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else report.longreprtext,
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
