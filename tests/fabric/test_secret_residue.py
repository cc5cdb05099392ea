"""Secret residue of a fabric (issue 9 finding 5): the state folder is private whatever the umask, every file
in it that holds a secret is 0600, and the NTLM user file of an instance (it holds the WinRM password) never
lands in the shared temp folder and is gone after `fabric down`, even when the instance was SIGKILLed."""

from __future__ import annotations

import os
import signal
import stat
import tempfile
import time
from pathlib import Path

import pytest

from harness.fabric.client import up
from harness.fabric.lifecycle import wait_until
from harness.fabric.procs import pid_alive

pytestmark = pytest.mark.xdist_group("fabric")

SKIP_DIRS = {"drives", "image", "node_modules"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _files(root: Path):
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in files:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                yield path


def _ntlm_files_holding(password: str, roots: list[Path]) -> list[Path]:
    """NTLM user files (``ntlm-users``; old and new locations) under ``roots`` that hold ``password``."""
    found = []
    for root in roots:
        for folder, _dirs, files in os.walk(root, onerror=lambda e: None):
            for name in files:
                if name.startswith("ntlm-users"):
                    path = Path(folder) / name
                    try:
                        if password in path.read_text("utf-8", errors="replace"):
                            found.append(path)
                    except OSError:
                        continue
    return found


@pytest.fixture
def umask_zero():
    old = os.umask(0)  # the controller inherits it: nothing may rely on the umask for privacy
    yield
    os.umask(old)


def test_state_folder_is_private_and_no_password_file_survives_a_killed_instance(tmp_path, umask_zero):
    state = tmp_path / "fabric"
    fabric = up(state, step_seconds=0.1)
    try:
        password = fabric.winrm_password()
        secrets = {
            "winrm password": password,
            "control token": (state / "secrets" / "control-token").read_text().strip(),
            "management client key": Path(fabric.data["management"]["client_key"]).read_text().strip(),
        }
        # the state folder and its secrets folder: owner only
        assert _mode(state) == 0o700
        assert _mode(state / "secrets") == 0o700
        # the effective configuration has every setting value: owner only
        assert _mode(fabric.layout.cscfg) & 0o077 == 0, oct(_mode(fabric.layout.cscfg))
        # every private key, and every file holding one of the secrets, is 0600
        for path in _files(state):
            text = path.read_bytes()
            holds = [name for name, value in secrets.items() if value.encode() in text]
            if b"PRIVATE KEY-----" in text or holds or path.parent.name == "secrets":
                assert _mode(path) & 0o077 == 0, (str(path), oct(_mode(path)), holds)
        # the NTLM user files live in the private state folder, not in the shared temp folder
        temp = Path(tempfile.gettempdir())
        outside = [p for p in _ntlm_files_holding(password, [temp]) if state not in p.parents]
        assert outside == [], outside
        assert _ntlm_files_holding(password, [state])  # (the instances' files are here)

        victim = fabric.instances[0]
        os.kill(victim["pid"], signal.SIGKILL)
        assert wait_until(lambda: not pid_alive(victim["pid"]), 5)
        time.sleep(0.2)
    finally:
        report = fabric.down()
    assert report.killed == [] and report.ports_still_open == []
    assert _ntlm_files_holding(password, [Path(tempfile.gettempdir())]) == []
