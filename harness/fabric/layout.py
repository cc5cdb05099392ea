"""Paths inside a fabric state directory (see CONTRACT.md) and atomic JSON files."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "vmrole-harness/fabric"
DEFAULT_STATE = Path(".vmrole/fabric")


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def fabric_json(self) -> Path:
        return self.root / "fabric.json"

    @property
    def controller_pid(self) -> Path:
        return self.root / "controller.pid"

    @property
    def controller_log(self) -> Path:
        return self.root / "controller.log"

    @property
    def csdef(self) -> Path:
        return self.root / "ServiceDefinition.csdef"

    @property
    def cscfg(self) -> Path:
        return self.root / "ServiceConfiguration.cscfg"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    def ntlm_user_dirs(self, instance_id: str = "") -> list[Path]:
        """The instances' private NTLM user-file folders (``secrets/vmr-winrm-<ID>-*``; they hold the WinRM
        password): removed when an instance is started again and by ``fabric down``."""
        return sorted(self.secrets.glob(f"vmr-winrm-{instance_id}*"))

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def image_os(self) -> Path:
        return self.root / "image" / "os"

    @property
    def haproxy(self) -> Path:
        return self.root / "haproxy"

    @property
    def haproxy_socket(self) -> Path:
        """The runtime API socket: in the state dir, or — when that path would pass the 107-byte limit of
        HAProxy socket paths (deep temp dirs do) — in a short per-state folder under /tmp."""
        path = self.haproxy / "haproxy.sock"
        if len(str(path)) <= 90:  # HAProxy allows 97 bytes here (less than the 107 of sun_path)
            return path
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"vmr-{digest}" / "haproxy.sock"

    @property
    def azurite(self) -> Path:
        return self.root / "azurite"

    def instance(self, instance_id: str) -> InstanceLayout:
        return InstanceLayout(self.root / "instances" / instance_id)


@dataclass(frozen=True)
class InstanceLayout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "instance.json"

    @property
    def status(self) -> Path:
        return self.root / "status"

    @property
    def pid(self) -> Path:
        return self.root / "pid"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def winrm_delay(self) -> Path:
        return self.root / "winrm-delay"

    @property
    def os_drive(self) -> Path:
        return self.root / "drives" / "os"

    @property
    def app_drive(self) -> Path:
        return self.root / "drives" / "app"

    def local_storage(self, name: str) -> Path:
        return self.root / "drives" / "local" / name

    @property
    def temp_drive(self) -> Path:
        """A scale-set VM's temporary disk (D:, winrm/disks.py): emptied by a reimage."""
        return self.root / "drives" / "temp"


def make_private_dir(path: Path) -> Path:
    """``path`` (and missing parents) as a directory only its owner can enter (0700 whatever the umask)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def ensure_private_dir(path: Path) -> Path:
    """``path`` as a folder of this user that nobody else can enter: made 0700 when missing; an existing one
    that is a symlink, someone else's, or open to others is refused (RuntimeError), never used — in the
    shared temp folder another local user can make it ahead of us (the HAProxy admin socket goes there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise RuntimeError(f"{path} is not a private folder of this user (owner, mode or symlink); remove it")
    return path


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a file of mode 0600 (whatever the umask: state files may hold the
    effective configuration's setting values, tokens, passwords; every fabric process runs as one user)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover file keeps its old mode through O_CREAT
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fd = -1
            fh.write(text)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))
