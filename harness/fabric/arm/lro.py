"""Long-running operations of the ARM face, and their operation-status resources.

``restart``, ``reimage`` and ``reimageAll`` of a scale-set VM are the fabric's reboot, reimage and rebuild
(``lifecycle.py``: the instance walks StoppingRole → StoppedVM → StartingVM → BusyRole → ReadyRole, a reimage
copies the base image back onto C:); ``powerOff``, ``start`` and ``deallocate`` stop or start the instance
process. A scale-set-wide action (``instanceIds``) runs on every listed VM at once, as one operation that fails
if one VM's part does; a scale or a delete of VMs is a deployment operation (``scale.py``) the ARM operation
follows (:meth:`Operations.track`). Each returns an operation id; Compute answers ``202`` with
``Azure-AsyncOperation`` (the status resource: ``{"status": "InProgress" | "Succeeded" | "Failed"}``) and
``Location`` (``202`` until done, then ``200``), as described in
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
    instance_ids: tuple[str, ...]  # the fabric instances it acts on (empty for a scale-set update)
    started: float
    instances: Any  # the Instances object that runs it (production may change on a swap)
    request_id: str | None = None  # the lifecycle (or deployment) operation it is, or holds
    status: str = IN_PROGRESS
    ended: float | None = None
    error: tuple[str, str] | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Operations:
    def __init__(self, backend: Any) -> None:
        self.b = backend
        self.ops: dict[str, ArmOperation] = {}
        self.lock = threading.Lock()

    def begin(self, kind: str, instance_ids: list[str]) -> ArmOperation:
        """Start ``kind`` on the fabric instances ``instance_ids`` at once (one VM's action, or a scale-set-wide
        one with ``instanceIds``), held as one operation of the deployment's lifecycle; raises
        :class:`views.Conflict` while another one runs."""
        if kind not in KINDS:
            raise ValueError(kind)
        if not instance_ids:
            raise ValueError("no instance")
        instances = self.b.instances
        for instance_id in instance_ids:
            instances.spec.instance(instance_id)  # KeyError: not an instance of the deployment
        op = ArmOperation(str(uuid.uuid4()), kind, tuple(instance_ids), time.time(), instances)
        with instances.lock:
            current = instances.current
            if current is not None and current.status == platform.IN_PROGRESS:
                raise views.Conflict("another operation is in progress on this deployment")
            # held as the lifecycle's current operation: the Service Management API's reboot/reimage (and
            # another ARM action) get 409 while it runs
            held = Operation(request_id=uuid.uuid4().hex, kind=kind, instance_id=",".join(instance_ids))
            instances.operations[held.request_id] = held
            instances.current = held
            op.request_id = held.request_id
            if kind not in _LIFECYCLE:
                for instance_id in instance_ids:
                    instances.phase[instance_id] = platform.STOPPING if kind != "start" else platform.STARTING_VM
        threading.Thread(target=self._run, args=(op, held), name=f"arm-{kind}", daemon=True).start()
        self._remember(op)
        return op

    def track(self, kind: str, request_id: str) -> ArmOperation:
        """An ARM operation for a deployment operation already started (``HostedServices``: a scale, a delete
        of instances): its status is that operation's."""
        op = ArmOperation(str(uuid.uuid4()), kind, (), time.time(), self.b.instances, request_id)
        self._remember(op)
        return op

    def _remember(self, op: ArmOperation) -> None:
        with self.lock:
            self.ops[op.id] = op
            while len(self.ops) > KEEP:
                oldest = next(iter(self.ops))
                if self.ops[oldest].status == IN_PROGRESS:
                    break
                del self.ops[oldest]

    def _run(self, op: ArmOperation, held: Operation) -> None:
        """Each instance's part on its own thread (Azure acts on the listed VMs together); the operation fails
        if one part does, naming it."""
        failures: list[str] = []
        parts = [
            threading.Thread(target=self._one, args=(op, i, failures), name=f"arm-{op.kind}-{i}", daemon=True)
            for i in op.instance_ids
        ]
        for t in parts:
            t.start()
        for t in parts:
            t.join()
        inst = op.instances
        with inst.lock:
            if failures:
                held.status = platform.OPERATION_FAILED
                held.http_status_code = 500
                held.error_code = "InternalExecutionError"
                held.error_message = "; ".join(sorted(failures))
            else:
                held.status = platform.SUCCEEDED
        inst.on_change()

    def _one(self, op: ArmOperation, instance_id: str, failures: list[str]) -> None:
        inst = op.instances
        if op.kind in _LIFECYCLE:
            # the lifecycle's own walk (StoppingRole … ReadyRole, the drives reset as the kind says); the lock is
            # the held operation's, so the part runs without taking it again
            part = Operation(
                request_id=uuid.uuid4().hex, kind=_LIFECYCLE[op.kind], instance_id=instance_id, data_disks=True
            )
            inst.run_operation(part)
            if part.status != platform.SUCCEEDED:
                failures.append(part.error_message or f"{op.kind} of {instance_id} failed")
            return
        try:
            if op.kind in ("powerOff", "deallocate"):
                inst.set_ready(instance_id, False)
                inst.stop(instance_id)
                if op.kind == "deallocate":
                    with inst.lock:
                        inst.power[instance_id] = "Deallocated"
            elif inst.pid(instance_id) is None:  # starting a running VM changes nothing (as on Azure)
                inst.start(instance_id)
                inst.set_ready(instance_id, True)
        except Exception as exc:  # the operation fails; the fabric keeps running
            failures.append(f"{op.kind} of {instance_id} failed: {exc}")
        finally:
            with inst.lock:
                inst.phase.pop(instance_id, None)
            inst.on_change()

    def _finish(self, op: ArmOperation, status: str, error: tuple[str, str] | None = None) -> None:
        op.status, op.error, op.ended = status, error, time.time()
        op.done.set()

    def _view(self, op: ArmOperation) -> views.OperationView | None:
        assert op.request_id is not None
        view = op.instances.operation(op.request_id)
        hosted = getattr(self.b, "hosted", None)
        if view is None and hosted is not None:  # a deployment operation (scale, delete of instances)
            view = hosted.operation(op.request_id)
        return view

    def get(self, op_id: str) -> ArmOperation | None:
        with self.lock:
            op = self.ops.get(op_id.lower())
        if op is None:
            return None
        with self.lock:  # one caller finishes it
            if op.request_id is not None and op.status == IN_PROGRESS:
                view = self._view(op)
                if view is not None and view.status == platform.SUCCEEDED:
                    self._finish(op, SUCCEEDED)
                elif view is not None and view.status != platform.IN_PROGRESS:
                    code = view.error_code or "InternalExecutionError"
                    self._finish(op, FAILED, (code, view.error_message or ""))
        return op

    def in_progress(self) -> bool:
        with self.lock:
            ids = list(self.ops)
        return any((op := self.get(i)) is not None and op.status == IN_PROGRESS for i in ids)
