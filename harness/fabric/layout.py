"""Paths inside a fabric state directory (see CONTRACT.md) and atomic JSON files."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
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


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", "utf-8")
    tmp.replace(path)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, "utf-8")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))
