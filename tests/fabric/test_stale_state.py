"""`vmrole fabric down` on a stale state folder (issue 9 finding 4): the pids it recorded may belong to other
processes now. Before signalling, down checks that the process is still the one the fabric started (its
start time since boot, recorded when the fabric wrote the pid); anything else is left alone and reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.fabric.client import down
from harness.fabric.layout import FORMAT
from harness.fabric.procs import process_identity


@pytest.fixture
def unrelated():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def _stale_state(root: Path, pid: int, identity: str | None) -> Path:
    state = root / "fabric"
    state.mkdir()
    data = {
        "format": FORMAT,
        "version": 1,
        "state": "ready",
        "controller": {"pid": pid, "control_port": None},
        "management": {"http_port": None, "https_port": None},
        "instances": [{"id": "WebVM_IN_0", "pid": pid, "endpoints": {}, "winrm": {}}],
        "pids": [pid],
    }
    if identity is not None:
        data["controller"]["identity"] = identity
        data["identities"] = {str(pid): identity}
    (state / "fabric.json").write_text(json.dumps(data))
    (state / "controller.pid").write_text(f"{pid}\n")
    return state


@pytest.mark.parametrize("identity", [None, "another-boot/12345"], ids=["no identity recorded", "identity differs"])
def test_down_on_a_stale_state_leaves_an_unrelated_process_alone(tmp_path, unrelated, identity):
    state = _stale_state(tmp_path, unrelated.pid, identity)
    report = down(state, timeout=2)
    assert unrelated.poll() is None, "fabric down killed a process it did not start"
    assert report.killed == []
    assert unrelated.pid in report.gone
    assert unrelated.pid not in report.stopped


def test_cli_down_says_the_recorded_process_is_gone(tmp_path, unrelated):
    state = _stale_state(tmp_path, unrelated.pid, "another-boot/12345")
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "fabric", "down", "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert unrelated.poll() is None
    text = out.stdout + out.stderr
    assert f"pid {unrelated.pid}" in text and "gone" in text, text


def test_identity_is_start_time_and_boot(unrelated):
    identity = process_identity(unrelated.pid)
    assert identity is not None and identity == process_identity(unrelated.pid)
    assert identity != process_identity(os.getpid())
    assert process_identity(2**22 + 12345) is None
