"""Role instances as processes, and what reboot / reimage / rebuild do to them.

Folder semantics (issue 4; Reimage and Rebuild Role Instance in the Service Management API,
https://learn.microsoft.com/previous-versions/azure/reference/gg441292(v=azure.100) and
https://learn.microsoft.com/previous-versions/azure/reference/dn627518(v=azure.100)):

| operation | OS drive (C:) | app drive (E:) | local storage, cleanOnRoleRecycle=false | =true |
|---|---|---|---|---|
| reboot    | kept          | kept           | kept                                    | kept  |
| reimage   | reset to image| reset          | kept (lost with the lose-local-storage fault) | wiped |
| rebuild   | reset to image| reset          | wiped                                   | wiped |

A scale-set VM's temporary disk (D:, ``drives/temp``) is kept by a reboot and emptied by reimage and rebuild.
An operation that comes through the ARM face (``Operation.data_disks``) treats every local storage as the
scale-set VM's data disk it is served as: a reimage keeps it whatever ``cleanOnRoleRecycle`` says (only the
lose-local-storage fault loses it); reimageAll (rebuild) wipes it.

Each operation walks the instance through StoppingRole → StoppedVM → StartingVM → BusyRole → ReadyRole,
each status held for at least ``step_seconds`` so a poller sees it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.fabric import views
from harness.fabric.layout import InstanceLayout, Layout, write_json_atomic, write_text_atomic
from harness.fabric.ports import is_listening
from harness.fabric.procs import stop_process
from harness.fabric.spec import DeploymentSpec, InstanceSpec
from harness.facts.live import platform

START_DEADLINE = 15.0
STOP_DEADLINE = 5.0
OPERATIONS = ("reboot", "reimage", "rebuild")


class FabricStartError(Exception):
    """An instance did not come up; the message names it and quotes its log."""


@dataclass
class Operation:
    request_id: str
    kind: str
    instance_id: str
    status: str = platform.IN_PROGRESS
    http_status_code: int = 200
    error_code: str | None = None
    error_message: str | None = None
    history: list[tuple[float, str]] = field(default_factory=list)
    #: the local storages are a scale-set VM's data disks (an ARM operation): a reimage keeps them all
    data_disks: bool = False


def wait_until(predicate: Callable[[], bool], deadline_s: float, interval: float = 0.02) -> bool:
    end = time.monotonic() + deadline_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval)


def _copy_tree(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    if src.exists():
        shutil.copytree(src, dst, symlinks=True)
    else:
        dst.mkdir(parents=True)


def _empty(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


class Instances:
    """Starts, stops and resets the instance processes of a deployment; tracks their statuses."""

    def __init__(
        self,
        spec: DeploymentSpec,
        layout: Layout,
        configs: dict[str, dict],
        *,
        step_seconds: float = 0.3,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.spec = spec
        self.layout = layout
        self.configs = configs
        self.step_seconds = step_seconds
        self.on_change = on_change or (lambda: None)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.phase: dict[str, str] = {}  # instance id -> status shown while an operation runs
        self.power: dict[str, str] = {}
        self.operations: dict[str, Operation] = {}
        self.current: Operation | None = None
        self.lose_local_storage: set[str] = set()  # armed fault: next reimage loses local storage
        self.lock = threading.RLock()

    # ---- processes ----------------------------------------------------------------------------
    def ilayout(self, instance_id: str) -> InstanceLayout:
        return self.layout.instance(instance_id)

    def prepare(self, inst: InstanceSpec) -> None:
        """First-time folders: OS drive from the base image, empty app drive and local storage."""
        il = self.ilayout(inst.id)
        _copy_tree(self.layout.image_os, il.os_drive)
        _empty(il.app_drive)
        _empty(il.temp_drive)
        for storage in self.spec.role(inst.role).local_storage:
            il.local_storage(storage.name).mkdir(parents=True, exist_ok=True)
        write_json_atomic(il.config, self.configs[inst.id])
        write_text_atomic(il.status, "busy")

    def start(self, instance_id: str) -> None:
        il = self.ilayout(instance_id)
        write_text_atomic(il.status, "busy")
        for folder in self.layout.ntlm_user_dirs(f"{instance_id}-"):  # left by a killed earlier process
            shutil.rmtree(folder, ignore_errors=True)
        log = il.log.open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.fabric.instance", "--config", str(il.config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            close_fds=True,
        )
        log.close()
        with self.lock:
            self.procs[instance_id] = proc
            self.power[instance_id] = "Starting"
        if not wait_until(lambda: self._listening(instance_id) or proc.poll() is not None, START_DEADLINE):
            raise FabricStartError(f"instance {instance_id} did not open its ports within {START_DEADLINE:.0f} s")
        if proc.poll() is not None:
            tail = il.log.read_text("utf-8", errors="replace")[-1500:]
            raise FabricStartError(f"instance {instance_id} exited with {proc.returncode}:\n{tail}")
        with self.lock:
            self.power[instance_id] = platform.STARTED
        self.on_change()

    def _listening(self, instance_id: str) -> bool:
        inst = self.spec.instance(instance_id)
        config = self.configs[instance_id]
        ports = [inst.agent_port]
        ports += [e["port"] for e in config["endpoints"] if e["protocol"] != "udp" and not config.get("app_command")]
        return all(is_listening(p) for p in ports)

    def stop(self, instance_id: str) -> None:
        with self.lock:
            proc = self.procs.pop(instance_id, None)
            self.power[instance_id] = "Stopping"
        if proc is not None:
            stop_process(proc, STOP_DEADLINE)
        with self.lock:
            self.power[instance_id] = platform.STOPPED

    def set_ready(self, instance_id: str, ready: bool) -> None:
        write_text_atomic(self.ilayout(instance_id).status, "ready" if ready else "busy")
        self.on_change()

    def is_ready(self, instance_id: str) -> bool:
        try:
            return self.ilayout(instance_id).status.read_text("utf-8").strip() == "ready"
        except OSError:
            return False

    def pids(self) -> list[int]:
        with self.lock:
            return [p.pid for p in self.procs.values() if p.poll() is None]

    def pid(self, instance_id: str) -> int | None:
        with self.lock:
            proc = self.procs.get(instance_id)
            return proc.pid if proc is not None and proc.poll() is None else None

    def status(self, instance_id: str) -> str:
        with self.lock:
            if instance_id in self.phase:
                return self.phase[instance_id]
            proc = self.procs.get(instance_id)
        if proc is None or proc.poll() is not None:
            return "UnresponsiveRole"
        return platform.READY if self.is_ready(instance_id) else platform.BUSY

    def stop_all(self) -> None:
        threads = [threading.Thread(target=self.stop, args=(i,)) for i in list(self.procs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    # ---- operations ---------------------------------------------------------------------------
    def start_operation(self, kind: str, instance_id: str) -> str:
        if kind not in OPERATIONS:
            raise ValueError(f"unknown operation {kind!r}")
        self.spec.instance(instance_id)  # StopIteration → unknown
        with self.lock:
            if self.current is not None and self.current.status == platform.IN_PROGRESS:
                raise views.Conflict(
                    f"operation {self.current.request_id} ({self.current.kind} of {self.current.instance_id}) "
                    "is in progress on this deployment"
                )
            op = Operation(request_id=uuid.uuid4().hex, kind=kind, instance_id=instance_id)
            self.operations[op.request_id] = op
            self.current = op
        threading.Thread(target=self.run_operation, args=(op,), name=f"op-{kind}-{instance_id}", daemon=True).start()
        return op.request_id

    def _walk(self, op: Operation, status: str) -> None:
        with self.lock:
            self.phase[op.instance_id] = status
            op.history.append((time.time(), status))
        self.on_change()
        time.sleep(self.step_seconds)

    def run_operation(self, op: Operation) -> None:
        """Walks ``op``'s instance through the operation on this thread; the caller holds the deployment's
        operation (:meth:`start_operation`, or an ARM action that holds it for several instances)."""
        try:
            inst = self.spec.instance(op.instance_id)
            self.set_ready(inst.id, False)
            self._walk(op, platform.STOPPING)
            self.stop(inst.id)
            self._walk(op, platform.STOPPED_VM)
            self._reset(op.kind, inst, data_disks=op.data_disks)
            self._walk(op, platform.STARTING_VM)
            self.start(inst.id)
            self._walk(op, platform.BUSY)
            self.set_ready(inst.id, True)
            with self.lock:
                self.phase.pop(inst.id, None)
                op.history.append((time.time(), platform.READY))
                op.status = platform.SUCCEEDED
        except Exception as exc:  # the operation fails; the fabric keeps running
            with self.lock:
                self.phase.pop(op.instance_id, None)
                op.status = platform.OPERATION_FAILED
                op.http_status_code = 500
                op.error_code = "InternalError"
                op.error_message = f"{op.kind} of {op.instance_id} failed: {exc}"
        finally:
            self.on_change()

    def _reset(self, kind: str, inst: InstanceSpec, *, data_disks: bool = False) -> None:
        il = self.ilayout(inst.id)
        if kind == "reboot":
            return
        _copy_tree(self.layout.image_os, il.os_drive)
        _empty(il.app_drive)
        _empty(il.temp_drive)  # a scale-set VM's temporary disk: a reimage does not keep it
        lose = kind == "rebuild" or inst.id in self.lose_local_storage
        self.lose_local_storage.discard(inst.id)
        for storage in self.spec.role(inst.role).local_storage:
            if lose or (storage.clean_on_role_recycle and not data_disks):
                _empty(il.local_storage(storage.name))

    def operation(self, request_id: str) -> views.OperationView | None:
        with self.lock:
            op = self.operations.get(request_id.replace("-", "").lower())
            if op is None:
                return None
            return views.OperationView(
                request_id=op.request_id,
                status=op.status,
                http_status_code=op.http_status_code,
                error_code=op.error_code,
                error_message=op.error_message,
            )
