"""Fault injection with a duration and guaranteed rollback.

| kind | target | effect | rollback |
|---|---|---|---|
| `busy` | instance | the instance reports Busy (agent says down; status BusyRole) | Ready again |
| `crash` | instance | the instance's app stops serving (SIGUSR1); the agent says down | instance restarted |
| `kill-backend` | instance | the instance process is killed outright (SIGKILL) | instance restarted |
| `mgmt-409` | — | operations (POST) get 409 ConflictError, as while another operation runs | normal answers |
| `mgmt-500` | — | every management request gets 500 InternalError | normal answers |
| `mgmt-timeout` | — | the management API holds requests without answering | normal answers |
| `winrm-slow` | instance | every WinRM response is delayed by `delay_ms` | no delay |
| `lose-local-storage` | instance | the next reimage loses local storage ("moved to new hardware") | disarmed |
| `cert-mismatch` | instance | its HTTPS endpoints serve a certificate whose thumbprint is not the cscfg's | restored |

Every fault ends when its duration runs out, when cleared through the control API, or when the fabric
stops, whichever comes first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from harness.fabric.layout import write_text_atomic

KINDS = (
    "busy", "crash", "kill-backend", "mgmt-409", "mgmt-500", "mgmt-timeout", "winrm-slow", "lose-local-storage",
    "cert-mismatch",
)  # fmt: skip
INSTANCE_KINDS = ("busy", "crash", "kill-backend", "winrm-slow", "lose-local-storage", "cert-mismatch")
MAX_SECONDS = 3600.0


class FaultError(ValueError):
    """A fault request that cannot be applied; the message says why."""


@dataclass
class Fault:
    id: str
    kind: str
    target: str | None
    seconds: float
    started: float
    until: float
    delay_ms: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "target": self.target,
            "seconds": self.seconds,
            "remaining": max(0.0, round(self.until - time.monotonic(), 2)),
        }


class Faults:
    def __init__(self, controller: Any) -> None:
        self.c = controller
        self.active: dict[str, Fault] = {}
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="fault-rollback", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.clear()

    def describe(self) -> list[dict[str, Any]]:
        with self.lock:
            return [f.describe() for f in self.active.values()]

    def inject(self, kind: str, target: str | None, seconds: float, delay_ms: int = 0) -> Fault:
        if kind not in KINDS:
            raise FaultError(f"unknown fault {kind!r} (choose from {', '.join(KINDS)})")
        if not 0 < seconds <= MAX_SECONDS:
            raise FaultError(f"a fault needs a duration between 0 and {MAX_SECONDS:.0f} seconds, got {seconds}")
        if kind in INSTANCE_KINDS:
            if target is None:
                raise FaultError(f"fault {kind!r} needs a target instance (e.g. WebVM_IN_0)")
            arm = getattr(self.c, "arm", None)  # served as a scale set: a VM's computer name names it too
            target = (arm.instance_for(target) if arm is not None else None) or target
            try:
                self.c.spec.instance(target)
            except KeyError:
                raise FaultError(f"no instance {target!r} in this deployment") from None
        if kind == "winrm-slow" and delay_ms <= 0:
            raise FaultError("fault 'winrm-slow' needs delay_ms > 0")
        now = time.monotonic()
        fault = Fault(uuid.uuid4().hex[:12], kind, target, seconds, now, now + seconds, delay_ms)
        with self.lock:
            self._apply(fault)
            self.active[fault.id] = fault
        self.c.write_ready()
        return fault

    def remove(self, fault_id: str) -> bool:
        with self.lock:
            fault = self.active.pop(fault_id, None)
            if fault is None:
                return False
            self._rollback(fault)
        self.c.write_ready()
        return True

    def clear(self) -> None:
        with self.lock:
            ids = list(self.active)
        for fault_id in ids:
            self.remove(fault_id)

    def _watch(self) -> None:
        while not self.stopping.wait(0.05):
            now = time.monotonic()
            with self.lock:
                expired = [f.id for f in self.active.values() if f.until <= now]
            for fault_id in expired:
                with contextlib.suppress(Exception):
                    self.remove(fault_id)

    # ---- effects ------------------------------------------------------------------------------
    def _apply(self, f: Fault) -> None:
        inst = self.c.instances
        if f.kind == "busy":
            inst.set_ready(f.target, False)
        elif f.kind in ("crash", "kill-backend"):
            pid = inst.pid(f.target)
            if pid is None:
                raise FaultError(f"instance {f.target!r} is not running")
            os.kill(pid, signal.SIGUSR1 if f.kind == "crash" else signal.SIGKILL)
        elif f.kind.startswith("mgmt-"):
            # Azure answers 409 to operations while another one runs; reads keep working.
            scope = "post" if f.kind == "mgmt-409" else "all"
            self.c.mgmt_faults.set(f.kind.removeprefix("mgmt-"), f.seconds, scope)
        elif f.kind == "winrm-slow":
            write_text_atomic(inst.ilayout(f.target).winrm_delay, str(f.delay_ms))
        elif f.kind == "lose-local-storage":
            inst.lose_local_storage.add(f.target)
        elif f.kind == "cert-mismatch":
            assert f.target is not None  # an instance fault: inject() checked it
            self._swap_certificates(f.target, wrong=True)

    def _swap_certificates(self, instance_id: str, *, wrong: bool) -> None:
        """Point the instance's HTTPS endpoints at another certificate (or back), then restart it."""
        from harness.fabric import certs
        from harness.fabric.layout import write_json_atomic

        inst = self.c.instances
        config = inst.configs[instance_id]
        changed = False
        for ep in config["endpoints"]:
            if ep.get("protocol") != "https" or "cert" not in ep:
                continue
            if wrong:
                ep.setdefault("original", {"cert": ep["cert"], "key": ep["key"]})
                out = self.c.layout.certs / f"wrong-{instance_id}-{ep['name']}"
                other = certs.service_certificate(None, f"not-{ep['name']}", out)
                ep["cert"], ep["key"] = str(other.pem), str(other.key)
            elif "original" in ep:
                ep.update(ep.pop("original"))
            changed = True
        if not changed:
            raise FaultError(f"instance {instance_id!r} has no HTTPS endpoint")
        write_json_atomic(inst.ilayout(instance_id).config, config)
        inst.stop(instance_id)
        inst.start(instance_id)
        inst.set_ready(instance_id, True)

    def _rollback(self, f: Fault) -> None:
        inst = self.c.instances
        if f.kind == "busy":
            if f.target not in inst.phase:  # an operation in flight owns the status
                inst.set_ready(f.target, True)
        elif f.kind in ("crash", "kill-backend"):
            if f.target not in inst.phase and not self.stopping.is_set():
                inst.stop(f.target)
                inst.start(f.target)
                inst.set_ready(f.target, True)
        elif f.kind.startswith("mgmt-"):
            # The API holds one fault at a time: a newer one replaced this one; leave it alone.
            if not any(other.kind.startswith("mgmt-") for other in self.active.values()):
                self.c.mgmt_faults.clear()
        elif f.kind == "winrm-slow":
            with contextlib.suppress(FileNotFoundError):
                inst.ilayout(f.target).winrm_delay.unlink()
        elif f.kind == "lose-local-storage":
            inst.lose_local_storage.discard(f.target)
        elif f.kind == "cert-mismatch" and not self.stopping.is_set():
            assert f.target is not None
            self._swap_certificates(f.target, wrong=False)
