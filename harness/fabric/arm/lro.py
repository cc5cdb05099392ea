"""Long-running operations of the ARM face, and their operation-status resources.

``restart``, ``reimage`` and ``reimageAll`` of a scale-set VM are the fabric's reboot, reimage and rebuild
(``lifecycle.py``: the instance walks StoppingRole → StoppedVM → StartingVM → BusyRole → ReadyRole, a reimage
copies the base image back onto C:); ``powerOff``, ``start`` and ``deallocate`` stop or start the instance
process. Each returns an operation id; Compute answers ``202`` with ``Azure-AsyncOperation`` (the status
resource: ``{"status": "InProgress" | "Succeeded" | "Failed"}``) and ``Location`` (``202`` until done, then
``200``), as described in
https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/async-operations. One operation at a
time runs per deployment: another gets ``409 Conflict`` (the fabric's lifecycle lock).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from harness.fabric import views
from harness.fabric.lifecycle import Operation
from harness.facts.live import platform

KINDS = ("restart", "reimage", "reimageAll", "powerOff", "start", "deallocate")
_LIFECYCLE = {"restart": "reboot", "reimage": "reimage", "reimageAll": "rebuild"}
IN_PROGRESS, SUCCEEDED, FAILED = "InProgress", "Succeeded", "Failed"
KEEP = 256  # finished operations remembered (oldest forgotten first)


@dataclass
class ArmOperation:
    id: str
    kind: str
    instance_id: str
    started: float
    instances: Any  # the Instances object that runs it (production may change on a swap)
    request_id: str | None = None  # the lifecycle operation it is (or holds, for the power actions)
    status: str = IN_PROGRESS
    ended: float | None = None
    error: tuple[str, str] | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Operations:
    def __init__(self, backend: Any) -> None:
        self.b = backend
        self.ops: dict[str, ArmOperation] = {}
        self.lock = threading.Lock()

    def begin(self, kind: str, instance_id: str) -> ArmOperation:
        """Start ``kind`` on the fabric instance; raises :class:`views.Conflict` while another one runs."""
        if kind not in KINDS:
            raise ValueError(kind)
        instances = self.b.instances
        op = ArmOperation(str(uuid.uuid4()), kind, instance_id, time.time(), instances)
        if kind in _LIFECYCLE:
            op.request_id = instances.start_operation(_LIFECYCLE[kind], instance_id)
        else:
            with instances.lock:
                current = instances.current
                if current is not None and current.status == platform.IN_PROGRESS:
                    raise views.Conflict("another operation is in progress on this deployment")
                # held as the lifecycle's current operation: the Service Management API's reboot/reimage (and
                # another ARM action) get 409 while it runs
                held = Operation(request_id=uuid.uuid4().hex, kind=kind, instance_id=instance_id)
                instances.operations[held.request_id] = held
                instances.current = held
                op.request_id = held.request_id
                instances.phase[instance_id] = platform.STOPPING if kind != "start" else platform.STARTING_VM
            threading.Thread(target=self._power, args=(op,), name=f"arm-{kind}-{instance_id}", daemon=True).start()
        with self.lock:
            self.ops[op.id] = op
            while len(self.ops) > KEEP:
                oldest = next(iter(self.ops))
                if self.ops[oldest].status == IN_PROGRESS:
                    break
                del self.ops[oldest]
        return op

    def _power(self, op: ArmOperation) -> None:
        inst = op.instances
        held = inst.operations[op.request_id]
        try:
            if op.kind in ("powerOff", "deallocate"):
                inst.set_ready(op.instance_id, False)
                inst.stop(op.instance_id)
                if op.kind == "deallocate":
                    with inst.lock:
                        inst.power[op.instance_id] = "Deallocated"
            else:
                inst.start(op.instance_id)
                inst.set_ready(op.instance_id, True)
            with inst.lock:
                held.status = platform.SUCCEEDED
        except Exception as exc:  # the operation fails; the fabric keeps running
            with inst.lock:
                held.status = platform.OPERATION_FAILED
                held.http_status_code = 500
                held.error_code = "InternalExecutionError"
                held.error_message = f"{op.kind} of {op.instance_id} failed: {exc}"
        finally:
            with inst.lock:
                inst.phase.pop(op.instance_id, None)
            inst.on_change()

    def _finish(self, op: ArmOperation, status: str, error: tuple[str, str] | None = None) -> None:
        op.status, op.error, op.ended = status, error, time.time()
        op.done.set()

    def get(self, op_id: str) -> ArmOperation | None:
        with self.lock:
            op = self.ops.get(op_id.lower())
        if op is None:
            return None
        if op.request_id is not None and op.status == IN_PROGRESS:
            view = op.instances.operation(op.request_id)
            if view is not None and view.status == platform.SUCCEEDED:
                self._finish(op, SUCCEEDED)
            elif view is not None and view.status != platform.IN_PROGRESS:
                self._finish(op, FAILED, (view.error_code or "InternalExecutionError", view.error_message or ""))
        return op

    def in_progress(self) -> bool:
        with self.lock:
            ids = list(self.ops)
        return any((op := self.get(i)) is not None and op.status == IN_PROGRESS for i in ids)
