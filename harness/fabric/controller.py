"""The fabric controller: one detached process that owns a local deployment.

``python -m harness.fabric.controller --state DIR (--csdef D --cscfg C | --package P [--cscfg C])``

It launches Azurite (node loads it meanwhile), prepares the state directory (certificates, base image,
instance configs), starts the instances, HAProxy and the management API, waits for Azurite (the effective
cscfg points at it), writes ``fabric.json`` with ``"state": "ready"``,
then serves until SIGTERM/SIGINT (or a shutdown request on the control API), when it stops every child
and writes ``"state": "stopped"``. See CONTRACT.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from harness.fabric import views
from harness.fabric.faults import Faults
from harness.fabric.layout import (
    FORMAT,
    Layout,
    ensure_private_dir,
    make_private_dir,
    write_json_atomic,
    write_text_atomic,
)
from harness.fabric.lifecycle import Instances
from harness.fabric.ports import allocate
from harness.fabric.procs import pid_alive, process_identity
from harness.fabric.spec import DeploymentSpec, SpecError, build_spec
from harness.facts.live import platform

log = logging.getLogger("vmrole.fabric")

SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"
#: (role, certificate name) -> (certificate PEM, key PEM) of a service certificate the hosted service holds
Uploaded = dict[tuple[str, str], tuple[Path, Path]]


def _probe_profile() -> Any:
    from harness.fabric.haproxy import ProbeProfile

    return ProbeProfile()


PROBE = _probe_profile()
WINRM_USER = "vmradmin"
DEFAULT_SERVICES = (
    {"name": "W3SVC", "display_name": "World Wide Web Publishing Service", "state": "Running", "start": "Auto"},
    {"name": "WinRM", "display_name": "Windows Remote Management (WS-Management)", "state": "Running", "start": "Auto"},
    {"name": "RdAgent", "display_name": "RdAgent", "state": "Running", "start": "Auto"},
    {
        "name": "WindowsAzureGuestAgent",
        "display_name": "Windows Azure Guest Agent",
        "state": "Running",
        "start": "Auto",
    },
)
BASE_IMAGE_FILES = {
    "Windows/System32/drivers/etc/hosts": "127.0.0.1 localhost\r\n",
    "Windows/System32/config/.keep": "",
    "Windows/Panther/.keep": "",
    "Program Files/.keep": "",
    "ProgramData/.keep": "",
    "Users/Public/.keep": "",
    "vmrole-image.txt": "vmrole-harness generated base image (Windows Server 2008 R2 x64 stand-in)\r\n",
}


class Controller:
    def __init__(self, layout: Layout, spec: DeploymentSpec, *, image_dir: Path | None, step_seconds: float) -> None:
        self.layout = layout
        self.spec = spec
        self.image_dir = image_dir
        self.step_seconds = step_seconds
        self.stopping = threading.Event()
        self.runtime: dict[str, Any] = {}
        self.azurite: Any = None
        self.haproxy: Any = None
        self.mgmt: Any = None
        self.control: Any = None
        self.instances: Instances | None = None
        self.faults: Faults | None = None
        self.service_certs: dict[str, tuple[Path, Path, str]] = {}
        self.arm: Any = None  # the ARM face, with --api vmss (harness/fabric/arm/face.py)
        self.hosted: Any = None  # HostedServices, once started
        self.uploaded_cscfg: str = spec.cscfg_text  # the cscfg as given (main() keeps a UTF-8 file's BOM)
        self.instances_layout: Layout = layout  # where the Production deployment's instance folders are

    # ---- preparation --------------------------------------------------------------------------
    def prepare(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from harness.fabric import certs
        from harness.fabric.azurite import Azurite

        make_private_dir(self.layout.root)  # the state holds the effective cscfg, keys, tokens: owner only
        make_private_dir(self.layout.secrets)
        self.layout.certs.mkdir(parents=True, exist_ok=True)
        # "PID IDENTITY": `fabric down` signals the pid only while it is still this process (issue 9)
        write_text_atomic(self.layout.controller_pid, f"{os.getpid()} {process_identity(os.getpid()) or ''}".strip())
        if self.spec.csdef_text:  # empty when deployed from a package (the csdef stays inside it)
            write_text_atomic(self.layout.csdef, self.spec.csdef_text)
        # node needs over a CPU second to load Azurite: it does so on the other core while keys are made here
        self.azurite = Azurite()
        self.azurite.launch(self.layout.azurite)

        # the fabric's own CA and the management endpoint's server certificate stand in for nothing a guest or
        # an Azure client constrains: EC keys (instant). The rest stay RSA 2048 (certs.py), made in parallel
        # (about 0.5 CPU s each; OpenSSL releases the GIL while it searches primes).
        ca = certs.make_ca(self.layout.certs, key_type="ec")
        self.ca = ca
        self.mgmt_server_cert = certs.issue_server_cert(
            ca, ["localhost", "127.0.0.1"], self.layout.certs / "mgmt-server", key_type="ec"
        )
        # clients reach WinRM at 127.0.0.1 (its own port) or at the VIP (an InstanceInputEndpoint)
        names = ["localhost", "127.0.0.1", self.spec.vip]
        # A state folder started again keeps its RSA keys (its certificates are new): they never leave it,
        # and `fabric down` leaves them there anyway. One thread a core, in the order they are needed: what the
        # instances serve (WinRM, https endpoints) first; the other service certificates (their thumbprints go
        # into the effective cscfg) and the management certificate (its key a secret, under secrets/) are made
        # while the instances start.
        keygen = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="keygen")
        winrm_job = keygen.submit(certs.issue_server_cert, ca, names, self.layout.certs / "winrm", reuse_key=True)
        served = {ep.certificate for role in self.spec.roles for ep in role.endpoints if ep.protocol == "https"}
        declared = dict.fromkeys(name for role in self.spec.roles for name in role.certificates)
        self._service_jobs = {
            name: keygen.submit(
                certs.service_certificate, ca, name, self.layout.certs / f"svc-{name}", names=names, reuse_key=True
            )
            for name in sorted(declared, key=lambda name: name not in served)  # stable: served ones first
        }
        self._mgmt_client_job = keygen.submit(
            certs.issue_client_cert,
            ca,
            "vmrole-harness management",
            self.layout.certs / "mgmt-client",
            key_out=self.layout.secrets / "mgmt-client.key",
            reuse_key=True,
        )
        keygen.shutdown(wait=False)
        password = secrets.token_urlsafe(18) + "!A1"
        write_text_atomic(self.layout.secrets / "winrm-password", password)
        os.chmod(self.layout.secrets / "winrm-password", 0o600)
        write_text_atomic(self.layout.secrets / "control-token", secrets.token_hex(16))
        os.chmod(self.layout.secrets / "control-token", 0o600)
        self._base_image()
        self.winrm_cert = winrm_job.result()
        self._service_certificates(served)

    def _service_certificates(self, names: set[str | None] | None = None) -> None:
        """Wait for the service certificates being made (``names`` only, else all) and record them."""
        for name, job in self._service_jobs.items():
            if name not in self.service_certs and (names is None or name in names):
                self.service_certs[name] = job.result()
        self.thumbprints: dict[str | tuple[str, str], str] = {
            name: cert[2] for name, cert in self.service_certs.items() if name in self._service_jobs
        }

    def _management_client(self) -> tuple[Path, Path]:
        """The management certificate (made while the instances start) and its key (in secrets/)."""
        return self._mgmt_client_job.result()

    def _base_image(self) -> None:
        target = self.layout.image_os
        if target.exists():
            shutil.rmtree(target)
        if self.image_dir is not None:
            shutil.copytree(self.image_dir, target, symlinks=True)
            return
        for rel, text in BASE_IMAGE_FILES.items():
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, "utf-8")

    def _effective_cscfg(self, connection_string: str) -> str:
        from harness.fabric import certs
        from harness.fabric.settings import point_storage_at

        text = certs.rewrite_thumbprints(self.spec.cscfg_text, self.thumbprints)
        return point_storage_at(text, connection_string)

    # ---- deployments created through the management API (harness/fabric/deployments.py) --------
    def effective_configuration(self, cscfg_text: str, spec: DeploymentSpec, uploaded: Uploaded | None = None) -> str:
        """The fabric's copy of an uploaded cscfg: the certificates of the hosted service where it holds the
        thumbprint the cscfg names (``uploaded``: (role, certificate name) -> (pem, key)), else ones it made
        (now, for roles that declare new ones), storage settings pointing at its Azurite."""
        from harness.fabric import certs
        from harness.fabric.settings import point_storage_at

        for role in spec.roles:
            for name in role.certificates:
                if name not in self.service_certs and (role.name, name) not in (uploaded or {}):
                    self.service_certs[name] = certs.service_certificate(
                        self.ca, name, self.layout.certs / f"svc-{name}"
                    )
        text = certs.rewrite_thumbprints(cscfg_text, self.stand_in_thumbprints(spec, uploaded))
        return point_storage_at(text, self.azurite.connection_string)

    def stand_in_thumbprints(self, spec: DeploymentSpec, uploaded: Uploaded | None = None) -> dict[Any, str]:
        """(role, certificate name) -> the thumbprint of the certificate the fabric made in place of the user's,
        for the certificates of ``spec`` the hosted service does not hold (``uploaded``)."""
        return {
            (role.name, name): self.service_certs[name][2]
            for role in spec.roles
            for name in role.certificates
            if (role.name, name) not in (uploaded or {}) and name in self.service_certs
        }

    def deployment_instances(self, spec: DeploymentSpec, layout: Layout, uploaded: Uploaded | None = None) -> Instances:
        """A new deployment's instances, prepared (folders, configs) in ``layout`` but not started."""
        write_text_atomic(layout.cscfg, self.effective_configuration(spec.cscfg_text, spec, uploaded))
        password = self.layout.secrets / "winrm-password"
        write_text_atomic(layout.secrets / "winrm-password", password.read_text())
        os.chmod(layout.secrets / "winrm-password", 0o600)
        configs = {inst.id: self.instance_config(inst, spec, layout, uploaded) for inst in spec.instances}
        instances = Instances(spec, layout, configs, step_seconds=self.step_seconds, on_change=self.write_ready)
        for inst in spec.instances:
            instances.prepare(inst)
        return instances

    def submitted_cscfg(
        self, text: str | None = None, spec: DeploymentSpec | None = None, uploaded: Uploaded | None = None
    ) -> str:
        """A configuration as the fabric's hosted service keeps it (Get Deployment): the cscfg as given (default:
        the one the fabric started with), byte for byte (storage settings, BOM, line ends), but for the
        thumbprints of the certificates the fabric made in place of the user's (whose keys it cannot have), as
        one uploads the certificates to Azure before deploying a cscfg that names them."""
        from harness.fabric import certs

        given = self.uploaded_cscfg if text is None else text
        mapping = self.stand_in_thumbprints(spec, uploaded) if spec is not None else getattr(self, "thumbprints", {})
        return certs.rewrite_thumbprints(given, mapping)

    def production_changed(self, deployment: Any) -> None:
        """A swap made ``deployment`` the Production one: the state file and faults follow it."""
        self.spec = deployment.spec
        self.instances = deployment.instances
        self.haproxy = deployment.haproxy
        self.instances_layout = deployment.layout

    def instance_config(
        self,
        inst: Any,
        spec: DeploymentSpec | None = None,
        layout: Layout | None = None,
        uploaded: Uploaded | None = None,
    ) -> dict[str, Any]:
        """``spec``/``layout``: a deployment created through the management API (default: the fabric's own)."""
        spec = spec or self.spec
        layout = layout or self.layout
        il = layout.instance(inst.id)
        role = spec.role(inst.role)
        endpoints = []
        for ep in role.endpoints:
            if ep.serves != "app":  # answered by the instance's WinRM listener, not by the app
                continue
            entry: dict[str, Any] = {
                "name": ep.name,
                "protocol": ep.protocol,
                "port": inst.endpoint_ports[ep.name],
                "local_port": ep.local_port,  # the declared port: what the guest's netstat/firewall show
            }
            held = (uploaded or {}).get((role.name, ep.certificate or ""))
            if ep.protocol == "https" and held is not None:  # the hosted service's own certificate
                entry.update(cert=str(held[0]), key=str(held[1]))
            elif ep.protocol == "https" and ep.certificate in self.service_certs:
                pem, key, _ = self.service_certs[ep.certificate]
                entry.update(cert=str(pem), key=str(key))
            endpoints.append(entry)
        config: dict[str, Any] = {
            "id": inst.id,
            "role": inst.role,
            "index": inst.index,
            "deployment_id": spec.deployment_id,
            "host": "127.0.0.1",
            "endpoints": endpoints,
            "agent_port": inst.agent_port,
            "winrm": {
                "https_port": inst.winrm_https_port,
                "http_port": inst.winrm_http_port,
                "cert": str(self.winrm_cert[0]),
                "key": str(self.winrm_cert[1]),
                "username": WINRM_USER,
                "password_file": str(layout.secrets / "winrm-password"),
                "delay_ms_file": str(il.winrm_delay),
            },
            "drives": {
                "C": str(il.os_drive),
                "E": str(il.app_drive),
                "local": {s.name: str(il.local_storage(s.name)) for s in role.local_storage},
            },
            "status_file": str(il.status),
            "internal_network": self.internal_network(spec),
            "app_command": None,
            "services": [dict(s) for s in DEFAULT_SERVICES],
        }
        if self.arm is not None and spec is self.spec:  # served as a scale set: its VMs' own names and ids
            from harness.fabric.arm.resources import guest_identity

            config.update(guest_identity(spec, inst))
        return config

    def internal_network(self, spec: DeploymentSpec | None = None) -> dict[str, list[Any]]:
        """``"<instance ip>:<declared port>" -> ["127.0.0.1", listening port]`` for every internal endpoint:
        how the emulated guests route the deployment's internal network."""
        spec = spec or self.spec
        routes: dict[str, list[Any]] = {}
        for inst in spec.instances:
            for ep in spec.role(inst.role).endpoints:
                if ep.kind == "InternalEndpoint" and ep.declared_port:
                    routes[f"{inst.internal_ip}:{ep.declared_port}"] = ["127.0.0.1", inst.endpoint_ports[ep.name]]
        return routes

    # ---- start / stop -------------------------------------------------------------------------
    def start(self) -> None:
        from harness.fabric.haproxy import HAProxy, render_config, spec_from_deployment
        from harness.fabric.mgmt.server import FaultState, ManagementServer

        self.write_state("starting")
        configs = {inst.id: self.instance_config(inst) for inst in self.spec.instances}
        self.instances = Instances(
            self.spec, self.layout, configs, step_seconds=self.step_seconds, on_change=self.write_ready
        )
        for inst in self.spec.instances:
            self.instances.prepare(inst)
        starters = [threading.Thread(target=self._start_one, args=(inst.id,)) for inst in self.spec.instances]
        self.start_errors: list[str] = []
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        if self.start_errors:
            raise RuntimeError("; ".join(self.start_errors))
        # Ready before HAProxy starts: its first agent check then finds "up ready" (a "drain" answer would keep
        # an instance out of rotation until the next check, agent_inter_ms later). Nothing outside sees the
        # instances before fabric.json says "ready".
        for inst in self.spec.instances:
            self.instances.set_ready(inst.id, True)
        self._service_certificates()  # all of them now: thumbprints for the effective cscfg, Get Deployment
        self._stage("instances")

        self.layout.haproxy.mkdir(parents=True, exist_ok=True)
        config_path = self.layout.haproxy / "haproxy.cfg"
        socket_path = self.layout.haproxy_socket
        if socket_path.parent == self.layout.haproxy:
            make_private_dir(socket_path.parent)
        else:
            ensure_private_dir(socket_path.parent)  # a predictable folder under the shared /tmp: must be ours
        lb_spec = spec_from_deployment(self.spec, socket_path, probe=PROBE)
        config_path.write_text(render_config(lb_spec), "utf-8")
        self.haproxy = HAProxy(socket_path)
        self.haproxy.start(config_path)
        self._stage("haproxy")

        (https_port,) = allocate(1)
        from harness.fabric.deployments import HostedServices

        self.hosted = HostedServices(self)
        self.mgmt_faults = FaultState()
        self.mgmt_client = self._management_client()
        # HTTPS with the management certificate only, as Azure: no plain-HTTP listener (issue 9: it took
        # reboot/reimage from any local user).
        self.mgmt = ManagementServer(
            self.hosted,
            subscription_id=SUBSCRIPTION_ID,
            http_port=None,
            https_port=https_port,
            server_cert=str(self.mgmt_server_cert[0]),
            server_key=str(self.mgmt_server_cert[1]),
            ca_cert=str(self.ca[0]),
            require_client_cert=True,
            client_cert=str(self.mgmt_client[0]),
            faults=self.mgmt_faults,
        )
        self.mgmt.start()
        self.faults = Faults(self)
        self.faults.start()
        from harness.fabric.control import ControlServer

        self.control = ControlServer(self, (self.layout.secrets / "control-token").read_text().strip())
        self.control.start()
        if self.arm is not None:
            self.arm.start()
        self._stage("management")
        # launched by prepare(), it loads meanwhile (about 1.5 s of node): only the effective cscfg needs it
        self.azurite.wait_ready()
        self._stage("azurite")
        storage_secret = self.layout.secrets / "storage-connection-string"
        write_text_atomic(storage_secret, self.azurite.connection_string)
        os.chmod(storage_secret, 0o600)
        write_text_atomic(self.layout.cscfg, self._effective_cscfg(self.azurite.connection_string))
        self._wait_for_rotation()
        self._stage("rotation")
        self.write_state("starting")  # runtime with every port, for the target file
        self._write_target()  # before "ready": up() returns as soon as it reads ready
        self.write_state("ready")
        self._stage("ready")

    def _stage(self, name: str) -> None:
        """Log how long the start took so far (since the process began: interpreter and imports count) and
        since the last stage: where `fabric up` spends its time."""
        now = _since_process_start()
        last = getattr(self, "_stage_at", 0.0)
        self._stage_at = now
        log.info("start: %s at %.2f s (+%.2f s)", name, now, now - last)

    def _write_target(self) -> None:
        """STATE/target.vmrtarget.yml: the live suites' target for this fabric (`vmrole probe` takes it)."""
        import yaml

        from harness.live.target import fabric_target_document

        document = fabric_target_document(self.runtime, self.layout.root)
        write_text_atomic(self.layout.root / "target.vmrtarget.yml", yaml.safe_dump(document, sort_keys=False))
        if self.arm is not None:  # --api vmss: the same deployment reached as its first scale set over ARM
            from harness.live.target import fabric_vmss_management

            vmss = {**document, "name": "local-fabric-vmss", "management": fabric_vmss_management(self.runtime)}
            write_text_atomic(self.layout.root / "target-vmss.vmrtarget.yml", yaml.safe_dump(vmss, sort_keys=False))

    def _wait_for_rotation(self) -> None:
        """Ready means every Ready instance is in its load balancer's rotation, not merely started."""
        from harness.fabric.deployments import wait_for_rotation

        wait_for_rotation(self.haproxy, self.spec)

    def _start_one(self, instance_id: str) -> None:
        assert self.instances is not None
        try:
            self.instances.start(instance_id)
        except Exception as exc:
            self.start_errors.append(str(exc))

    def stop(self) -> None:
        self.write_state("stopping")
        if self.faults is not None:
            self.faults.stop()
        for part in (self.control, self.mgmt, self.arm):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.shutdown()
        if self.haproxy is not None:
            with contextlib.suppress(Exception):
                self.haproxy.stop()
            if self.layout.haproxy_socket.parent != self.layout.haproxy:  # the short folder under /tmp
                shutil.rmtree(self.layout.haproxy_socket.parent, ignore_errors=True)
        if self.instances is not None:
            self.instances.stop_all()
        if self.hosted is not None:  # deployments created through the management API
            self.hosted.stop_all()
        for folder in self.layout.ntlm_user_dirs():  # left by instances that were killed
            shutil.rmtree(folder, ignore_errors=True)
        if self.azurite is not None:
            with contextlib.suppress(Exception):
                self.azurite.stop()
        self.write_state("stopped")

    # ---- state file ---------------------------------------------------------------------------
    def write_ready(self) -> None:
        if self.runtime.get("state") == "ready":
            self.write_state("ready")

    def write_state(self, state: str, error: str | None = None) -> None:
        spec = self.spec
        inst_rt = []
        for inst in spec.instances:
            inst_rt.append(
                {
                    "id": inst.id,
                    "role": inst.role,
                    "pid": self.instances.pid(inst.id) if self.instances else None,
                    "status": self.instances.status(inst.id) if self.instances else platform.UNKNOWN,
                    "dir": str(self.instances_layout.instance(inst.id).root),
                    "endpoints": dict(inst.endpoint_ports),
                    "instance_endpoints": dict(inst.instance_public_ports),
                    "instance_declared_ports": dict(inst.instance_declared_ports),
                    "agent_port": inst.agent_port,
                    "winrm": {"https_port": inst.winrm_https_port, "http_port": inst.winrm_http_port},
                    "internal_ip": inst.internal_ip,
                }
            )
        pids = [os.getpid()]
        for part in (self.azurite, self.haproxy):
            pid = getattr(part, "pid", None) if part is not None else None
            if pid:
                pids.append(pid)
        if self.instances is not None:
            pids += self.instances.pids()
        if self.hosted is not None:
            pids += self.hosted.extra_pids()
        data = {
            "format": FORMAT,
            "version": 1,
            "state": state,
            "error": error,
            "service_name": spec.service_name,
            "deployment_name": spec.deployment_name,
            "deployment_id": spec.deployment_id,
            "slot": "Production",
            "subscription_id": SUBSCRIPTION_ID,
            "vip": spec.vip,
            # declared public ports the VIP could not bind: where they answer instead, and why
            "port_fallbacks": [f.to_json() for f in spec.port_fallbacks],
            "notes": list(spec.notes),
            "controller": {
                "pid": os.getpid(),
                "identity": process_identity(os.getpid()),
                "control_port": getattr(self.control, "port", None),
            },
            "management": {
                "http_port": getattr(self.mgmt, "http_port", None),
                "https_port": getattr(self.mgmt, "https_port", None),
                "ca": str(self.layout.certs / "ca.pem"),
                "client_cert": str(self.mgmt_client[0]) if hasattr(self, "mgmt_client") else None,
                "client_key": str(self.mgmt_client[1]) if hasattr(self, "mgmt_client") else None,
                "require_client_cert": True,
            },
            "haproxy": {
                "probe": {
                    **PROBE.to_json(),
                    "agent_inter_ms": PROBE.agent_inter_ms,
                    "removal_window_s": PROBE.removal_window_s,
                },
                "pid": getattr(self.haproxy, "pid", None),
                "config": str(self.layout.haproxy / "haproxy.cfg"),
                "socket": str(self.layout.haproxy_socket),
            },
            "azurite": {
                "pid": getattr(self.azurite, "pid", None),
                "blob_port": getattr(self.azurite, "port", None),
                "connection_string": getattr(self.azurite, "connection_string", None),
            },
            "winrm": {"username": WINRM_USER, "password_file": str(self.layout.secrets / "winrm-password")},
            "certificates": {name: thumb for name, (_, _, thumb) in self.service_certs.items()},
            "input_endpoints": [
                {
                    "role": e.role,
                    "name": e.name,
                    "protocol": e.protocol,
                    "public_port": e.public_port,
                    "declared_port": e.declared_port,
                    "local_port": e.local_port,
                    "certificate": e.certificate,
                }
                for e in spec.input_endpoints
            ],
            "local_storage": {
                r.name: [{"name": s.name, "clean_on_role_recycle": s.clean_on_role_recycle} for s in r.local_storage]
                for r in spec.roles
            },
            "instances": inst_rt,
            "faults": self.faults.describe() if self.faults else [],
            "pids": pids,
            # what `fabric down` checks before signalling a recorded pid (it may be another process by then)
            "identities": {str(pid): ident for pid in pids if (ident := process_identity(pid)) is not None},
        }
        if self.arm is not None:
            data["arm"] = self.arm.describe()
        self.runtime = data
        write_json_atomic(self.layout.fabric_json, data)

    # ---- Lifecycle protocol (for the management API) ------------------------------------------
    def deployment(self) -> views.DeploymentView:
        """The Production deployment; its Configuration is the cscfg as given, not the fabric's rewritten copy."""
        assert self.instances is not None
        if self.hosted is not None:
            return self.hosted.deployment()
        from harness.fabric.deployments import deployment_view

        return deployment_view(
            self.spec,
            self.instances,
            slot="Production",
            status=platform.RUNNING,
            label=self.spec.deployment_name,
            configuration=self.submitted_cscfg(),
        )

    def start_operation(self, kind: str, instance_id: str) -> str:
        assert self.instances is not None
        return self.instances.start_operation(kind, instance_id)

    def operation(self, request_id: str) -> views.OperationView | None:
        assert self.instances is not None
        return self.instances.operation(request_id)


def _since_process_start() -> float:
    """Seconds since this process was created (/proc/self/stat field 22, in clock ticks after boot)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            ticks = int(fh.read().rsplit(") ", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.fabric.controller")
    parser.add_argument("--state", required=True)
    parser.add_argument("--csdef")
    parser.add_argument("--cscfg")
    parser.add_argument("--package")
    parser.add_argument("--image-dir")
    parser.add_argument("--name")
    parser.add_argument("--step-seconds", type=float, default=0.3)
    parser.add_argument("--watch-pid", type=int, help="stop the fabric when this process (the starter) is gone")
    parser.add_argument("--api", choices=("classic", "vmss"), default="classic")
    parser.add_argument("--template", help="an ARM template (scale set + load balancer) instead of a csdef")
    parser.add_argument("--image", help="the image the scale set runs (its name, e.g. web.vhd)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    layout = Layout(Path(args.state).resolve())
    make_private_dir(layout.root)
    try:
        if args.template:  # its scale sets and load balancer become the service model
            from harness.fabric.arm.template import service_model

            args.csdef, args.cscfg = service_model(Path(args.template), layout.root / "template")
        spec = build_spec(
            csdef=Path(args.csdef) if args.csdef else None,
            cscfg=Path(args.cscfg) if args.cscfg else None,
            package=Path(args.package) if args.package else None,
            name=args.name,
            vip_seed=str(layout.root),  # the same state folder gets the same VIP while it is free
        )
    except SpecError as exc:
        write_json_atomic(layout.fabric_json, {"format": FORMAT, "version": 1, "state": "failed", "error": str(exc)})
        print(f"vmrole fabric: {exc}", file=sys.stderr)
        return 2
    controller = Controller(
        layout, spec, image_dir=Path(args.image_dir) if args.image_dir else None, step_seconds=args.step_seconds
    )
    if args.cscfg:  # Get Deployment shows the configuration as given (a UTF-8 BOM too), not as the spec reads it
        raw = Path(args.cscfg).read_bytes()
        with contextlib.suppress(UnicodeDecodeError):
            controller.uploaded_cscfg = raw.decode("utf-8")

    def on_signal(signum: int, frame: Any) -> None:
        controller.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        controller.prepare()
        if args.api == "vmss":  # made now, its RSA token-signing key is generated while the instances start
            from harness.fabric.arm.face import ArmFace

            controller.arm = ArmFace(controller, subscription=SUBSCRIPTION_ID, image=args.image)
        controller._stage("prepared")
        controller.start()
        log.info("fabric ready: %s (%d instances)", spec.deployment_name, len(spec.instances))
    except Exception as exc:
        log.error("fabric failed to start: %s\n%s", exc, traceback.format_exc())
        controller.stop()
        controller.write_state("failed", error=str(exc))
        return 1
    while not controller.stopping.wait(1.0):
        if args.watch_pid and not pid_alive(args.watch_pid):
            log.info("the process that started the fabric (pid %d) is gone", args.watch_pid)
            break
    log.info("stopping the fabric")
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
