"""Bringing a local fabric up and down, and talking to it with the real clients.

``up()`` starts the controller detached and waits for ``fabric.json`` to say ready; ``down()`` stops it and
checks that no process it started is left. ``Fabric`` reads the running fabric's description and builds
clients for it: the Service Management client (mutual TLS), pywinrm sessions, the blob client.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.fabric.layout import DEFAULT_STATE, Layout, make_private_dir, read_json
from harness.fabric.ports import is_listening
from harness.fabric.procs import is_recorded_process

UP_TIMEOUT = 60.0
DOWN_TIMEOUT = 20.0


class FabricError(Exception):
    """The fabric could not be brought up or down; the message says what happened."""


def up(
    state_dir: Path = DEFAULT_STATE,
    *,
    csdef: Path | None = None,
    cscfg: Path | None = None,
    package: Path | None = None,
    image_dir: Path | None = None,
    step_seconds: float = 0.3,
    timeout: float = UP_TIMEOUT,
    tied: bool = True,
    api: str = "classic",
    template: Path | None = None,
    image: str | None = None,
) -> Fabric:
    """Start a fabric for the model (default: the bundled sample VM-role service) and wait until ready.

    ``tied`` (the default for library and test use) makes the fabric stop by itself when this process
    ends, even if it is killed before it could call ``down()``; `vmrole fabric up` passes False so the
    fabric outlives the command. ``api="vmss"`` adds the ARM face (harness/fabric/arm); ``template`` (an ARM
    template) replaces the service model, ``image`` names the image the scale set runs.
    """
    if csdef is None and package is None and template is None:
        csdef, cscfg = sample_model()
    layout = Layout(Path(state_dir).resolve())
    current = _state(layout)
    controller = _section(current, "controller")
    pid, identity = controller.get("pid"), controller.get("identity")
    if current.get("state") in ("starting", "ready") and isinstance(pid, int) and is_recorded_process(pid, identity):
        raise FabricError(f"a fabric is already running from {layout.root} (pid {pid}); run `vmrole fabric down`")
    make_private_dir(layout.root)  # owner only, whatever the umask (issue 9)
    layout.fabric_json.unlink(missing_ok=True)
    args = [sys.executable, "-m", "harness.fabric.controller", "--state", str(layout.root)]
    for flag, value in (("--csdef", csdef), ("--cscfg", cscfg), ("--package", package), ("--image-dir", image_dir)):
        if value is not None:
            args += [flag, str(Path(value).resolve())]
    args += ["--step-seconds", str(step_seconds)]
    if api != "classic":
        args += ["--api", api]
    if template is not None:
        args += ["--template", str(Path(template).resolve())]
    if image is not None:
        args += ["--image", str(image)]
    if tied:
        args += ["--watch-pid", str(os.getpid())]
    logfile = os.fdopen(os.open(layout.controller_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile, start_new_session=True, close_fds=True
    )
    logfile.close()
    end = time.monotonic() + timeout
    try:
        while True:
            state = _state(layout)
            if state.get("state") == "ready":
                return Fabric(layout)
            if state.get("state") == "failed" or proc.poll() is not None:
                proc.wait(DOWN_TIMEOUT)
                error = state.get("error") or _log_tail(layout)
                raise FabricError(f"the fabric failed to start: {error}")
            if time.monotonic() > end:
                raise FabricError(f"the fabric did not become ready within {timeout:.0f} s:\n{_log_tail(layout)}")
            time.sleep(0.05)
    except BaseException:
        down(layout.root)
        raise


def sample_model() -> tuple[Path, Path]:
    """The bundled sample service model (csdef, cscfg) shipped in the package."""
    from importlib import resources

    folder = resources.files("harness") / "samples" / "vmrole"
    return Path(str(folder / "ServiceDefinition.csdef")), Path(str(folder / "ServiceConfiguration.Cloud.cscfg"))


def _state(layout: Layout) -> dict[str, Any]:
    try:
        return read_json(layout.fabric_json)
    except (OSError, ValueError):
        return {}


def _log_tail(layout: Layout, size: int = 3000) -> str:
    try:
        return layout.controller_log.read_text("utf-8", errors="replace")[-size:]
    except OSError:
        return "(no controller log)"


@dataclass(frozen=True)
class DownReport:
    stopped: list[int]
    killed: list[int]
    ports_still_open: list[int]
    # recorded pids whose process is gone: not running, or the pid now belongs to another process (left alone)
    gone: list[int] = field(default_factory=list)


def _recorded(layout: Layout, state: dict[str, Any]) -> dict[int, str | None]:
    """pid -> identity recorded for it (None when the state does not say)."""
    identities = _section(state, "identities")
    recorded: dict[int, str | None] = {}
    for pid in state.get("pids", []):
        if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
            ident = identities.get(str(pid))
            recorded[pid] = ident if isinstance(ident, str) else None
    controller = _section(state, "controller")
    pid, ident = controller.get("pid"), controller.get("identity")
    if pid is None and layout.controller_pid.exists():  # "PID IDENTITY" (written before fabric.json)
        with contextlib.suppress(ValueError, OSError, IndexError):
            parts = layout.controller_pid.read_text().split()
            pid, ident = int(parts[0]), (parts[1] if len(parts) > 1 else None)
    if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
        recorded[pid] = ident if isinstance(ident, str) else recorded.get(pid)
    return recorded


def _section(state: dict[str, Any], key: str) -> dict[str, Any]:
    value = state.get(key)
    return value if isinstance(value, dict) else {}


def _controller_of(state: dict[str, Any]) -> int | None:
    pid = _section(state, "controller").get("pid")
    return pid if isinstance(pid, int) and not isinstance(pid, bool) else None


def down(state_dir: Path = DEFAULT_STATE, timeout: float = DOWN_TIMEOUT) -> DownReport:
    """Stop the controller (it stops its children), then make sure nothing it started is left.

    A recorded pid is signalled only while it is still the process the fabric recorded (same start time
    and boot: ``identities`` in fabric.json, the identity in controller.pid): on a stale state folder the pid
    may belong to an unrelated process by now, which is left alone and reported in ``gone``.
    """
    layout = Layout(Path(state_dir).resolve())
    state = _state(layout)
    recorded = _recorded(layout, state)
    ours = {pid for pid, ident in recorded.items() if is_recorded_process(pid, ident)}
    gone = sorted(set(recorded) - ours)  # not running, or the pid is another process now: never signalled
    controller = _controller_of(state)
    if controller is None and layout.controller_pid.exists():
        with contextlib.suppress(ValueError, OSError, IndexError):
            controller = int(layout.controller_pid.read_text().split()[0])
    if controller in ours:
        assert controller is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(controller, signal.SIGTERM)
        end = time.monotonic() + timeout
        while is_recorded_process(controller, recorded[controller]) and time.monotonic() < end:
            time.sleep(0.05)
    # Re-read: the controller records the children it had when it stopped (with their identities).
    if ours:
        state = _state(layout) or state
        for pid, ident in _recorded(layout, state).items():
            if pid not in recorded and ident is not None:
                recorded[pid] = ident
                ours.add(pid)
    killed = []
    for pid in sorted(ours):
        if is_recorded_process(pid, recorded[pid]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    if not any(is_recorded_process(pid, recorded[pid]) for pid in ours):
        for folder in layout.ntlm_user_dirs():  # the WinRM password, left by instances that were killed
            shutil.rmtree(folder, ignore_errors=True)
    listeners = _listeners(state)
    deadline = time.monotonic() + 5
    while ours and any(is_listening(p, h) for h, p in listeners) and time.monotonic() < deadline:
        time.sleep(0.05)
    still_open = sorted({p for h, p in listeners if is_listening(p, h)})
    return DownReport(stopped=sorted(ours), killed=killed, ports_still_open=still_open, gone=gone)


def _listeners(state: dict[str, Any]) -> list[tuple[str, int]]:
    """(address, port) of every listener the fabric recorded: public endpoints on its VIP, the rest on
    127.0.0.1."""
    recorded_vip = state.get("vip")
    vip = recorded_vip if isinstance(recorded_vip, str) and recorded_vip else "127.0.0.1"
    public = [e.get("public_port") for e in state.get("input_endpoints", [])]
    ports = []
    for inst in state.get("instances", []):
        ports += list((inst.get("endpoints") or {}).values())
        public += list((inst.get("instance_endpoints") or {}).values())
        ports += [inst.get("agent_port"), *((inst.get("winrm") or {}).values())]
    mgmt = state.get("management") or {}
    ports += [mgmt.get("http_port"), mgmt.get("https_port"), (state.get("azurite") or {}).get("blob_port")]
    ports.append((state.get("controller") or {}).get("control_port"))

    def valid(p: Any) -> bool:
        return isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536

    out = {(vip, p) for p in public if valid(p)} | {("127.0.0.1", p) for p in ports if valid(p)}
    return sorted(out)


class Fabric:
    """A running fabric, described by its ``fabric.json``."""

    def __init__(self, layout: Layout | Path) -> None:
        self.layout = layout if isinstance(layout, Layout) else Layout(Path(layout).resolve())
        self.data: dict[str, Any] = read_json(self.layout.fabric_json)

    def refresh(self) -> dict[str, Any]:
        self.data = self._control("GET", "/status")
        return self.data

    def down(self) -> DownReport:
        return down(self.layout.root)

    # ---- control API --------------------------------------------------------------------------
    def _control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        port = self.data["controller"]["control_port"]
        token = (self.layout.secrets / "control-token").read_text().strip()
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
        req.add_header("X-Vmr-Token", token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", errors="replace")
            with contextlib.suppress(ValueError):
                detail = json.loads(detail).get("error", detail)
            raise FabricError(f"control API {method} {path}: {exc.code} {detail}") from None

    def inject(self, kind: str, target: str | None = None, seconds: float = 30.0, delay_ms: int = 0) -> dict[str, Any]:
        return self._control(
            "POST", "/faults", {"kind": kind, "target": target, "seconds": seconds, "delay_ms": delay_ms}
        )

    def clear_faults(self, fault_id: str | None = None) -> Any:
        return self._control("DELETE", f"/faults/{fault_id}" if fault_id else "/faults")

    # ---- descriptions -------------------------------------------------------------------------
    @property
    def instances(self) -> list[dict[str, Any]]:
        return list(self.data["instances"])

    def instance(self, instance_id: str) -> dict[str, Any]:
        for inst in self.data["instances"]:
            if inst["id"] == instance_id:
                return inst
        raise KeyError(instance_id)

    def endpoint(self, name: str, role: str | None = None) -> dict[str, Any]:
        for ep in self.data["input_endpoints"]:
            if ep["name"] == name and (role is None or ep["role"] == role):
                return ep
        raise KeyError(name)

    def vip_url(self, endpoint: str, path: str = "/") -> str:
        ep = self.endpoint(endpoint)
        scheme = "https" if ep["protocol"] == "https" else "http"
        return f"{scheme}://{self.vip}:{ep['public_port']}{path}"

    @property
    def vip(self) -> str:
        """The deployment's own loopback address, where its public endpoints listen."""
        return str(self.data.get("vip") or "127.0.0.1")

    def instance_endpoint(self, instance_id: str, name: str) -> tuple[str, int]:
        """(VIP, public port) of an InstanceInputEndpoint of one instance."""
        return self.vip, int(self.instance(instance_id)["instance_endpoints"][name])

    @property
    def ca_file(self) -> str:
        return str(self.layout.certs / "ca.pem")

    # ---- real clients -------------------------------------------------------------------------
    def management_client(self, *, https: bool = True) -> Any:
        """azure-servicemanagement-legacy's ServiceManagementService pointed at the emulator."""
        import requests
        from azure.servicemanagement import ServiceManagementService

        mgmt = self.data["management"]
        if not https:
            raise FabricError("the fabric's management API is HTTPS only, with the management certificate")
        session = requests.Session()
        # with trust_env, REQUESTS_CA_BUNDLE wins over session.verify (https://github.com/psf/requests/issues/3829)
        session.trust_env = False
        session.cert = (mgmt["client_cert"], mgmt["client_key"])
        session.verify = mgmt["ca"]
        host = f"127.0.0.1:{mgmt['https_port']}"
        return ServiceManagementService(self.data["subscription_id"], host=host, request_session=session)

    def winrm_password(self) -> str:
        return Path(self.data["winrm"]["password_file"]).read_text().strip()

    def winrm_session(self, instance_id: str, transport: str = "ntlm", *, https: bool = True, **kwargs: Any) -> Any:
        import winrm

        inst = self.instance(instance_id)
        port = inst["winrm"]["https_port" if https else "http_port"]
        scheme = "https" if https else "http"
        options: dict[str, Any] = {"transport": transport, "server_cert_validation": "ignore"}
        if https:
            options.update(server_cert_validation="validate", ca_trust_path=self.ca_file)
        options.update(kwargs)
        return winrm.Session(
            f"{scheme}://127.0.0.1:{port}/wsman",
            auth=(self.data["winrm"]["username"], self.winrm_password()),
            **options,
        )

    def blob_service(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        from harness.fabric.azurite import API_VERSION

        return BlobServiceClient.from_connection_string(
            self.data["azurite"]["connection_string"], api_version=API_VERSION
        )
