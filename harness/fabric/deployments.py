"""The fabric's hosted services and their deployments, as the Service Management API changes them.

The controller starts with one hosted service and its Production deployment (adopted here). Through the
management API a deployment can then be created from a package blob in the fabric's Azurite (Production or
Staging slot), have its configuration changed, be suspended and started, swapped between slots, and
deleted; hosted services can be created, updated and deleted. Every deployment is real: its own instance
processes (``Instances``), its own HAProxy (frontends on its public ports) and its own state folder
(``STATE/deployments/<private id>/``; the adopted one uses the fabric's root as before).

Long operations run on a thread and are tracked as :class:`~harness.fabric.lifecycle.Operation` (Get
Operation Status). One operation at a time per deployment: a second one is a
:class:`~harness.fabric.views.Conflict` naming the first (the API's 409). Status walks (Get Deployment's
``Status``, the reference's deployment statuses,
https://learn.microsoft.com/en-us/previous-versions/azure/reference/ee460804(v=azure.100)):

- suspend: ``Running`` → ``SuspendedTransitioning`` → ``Suspended``; instances ``StoppingRole`` →
  ``StoppedVM`` (power ``Stopped``), processes stopped, out of rotation;
- start: ``Suspended`` → ``RunningTransitioning`` → ``Running``; instances ``StartingVM`` → ``BusyRole`` →
  ``ReadyRole``;
- change configuration: ``Running`` → ``RunningTransitioning`` → ``Running`` (instances keep running, as
  with a settings-only change on Azure); the uploaded text replaces the deployment's configuration;
- Create Deployment without ``StartDeployment`` leaves the deployment ``Suspended`` (instances
  ``StoppedVM``), as Azure does; with it the deployment starts at once.

Get Deployment's ``Configuration`` is the configuration as uploaded (the file given to ``fabric up``, or
the decoded ``Configuration`` of Create Deployment / Change Configuration) byte for byte, but for the
thumbprints of the certificates the fabric made in place of the user's (it cannot have their keys; on Azure
they are uploaded before a cscfg naming them is deployed): ``Controller.submitted_cscfg``. The fabric's
working copy (storage settings pointing at its Azurite) stays in the deployment's state folder.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from harness.fabric import views
from harness.fabric.layout import Layout, make_private_dir, write_text_atomic
from harness.fabric.lifecycle import Instances, Operation, wait_until
from harness.fabric.spec import DeploymentSpec, EndpointSpec, InstanceSpec, SpecError, build_spec
from harness.facts.live import platform

log = logging.getLogger("vmrole.fabric.deployments")

PRODUCTION = "Production"
STAGING = "Staging"
SLOTS = (PRODUCTION, STAGING)
#: Azure refused service packages over 600 MB; the cspkg reader's limits (harness/readers/zipsafe.py) assume it.
MAX_PACKAGE_BYTES = 600 * 1000 * 1000
MAX_CONFIGURATION_BYTES = 1 << 20  # the API takes at most a 1 MiB request body anyway
ROTATION_DEADLINE = 15.0
OS_VERSION = "WA-GUEST-OS-2.12_201208-02"
SDK_VERSION = "1.7.30602.1703"
RUNNING_TRANSITIONING = "RunningTransitioning"
DEPLOYING = "Deploying"


class ApiProblem(Exception):
    """A request the fabric refuses, with the Service Management error it answers (status, code, text)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bad_request(message: str) -> ApiProblem:
    return ApiProblem(400, "BadRequest", message)


def not_found(message: str) -> ApiProblem:
    return ApiProblem(404, "ResourceNotFound", message)


def conflict(message: str) -> ApiProblem:
    return ApiProblem(409, "ConflictError", message)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class DeploymentLayout(Layout):
    """A created deployment's state folder: its own instances, HAProxy, cscfg and secrets (the WinRM password
    file, next to which each instance keeps its NTLM user folder), the fabric's base image."""

    image_root: Path = Path()

    @property
    def image_os(self) -> Path:
        return self.image_root / "image" / "os"


def decode_base64_text(value: str, what: str) -> str:
    """Base64 (as the API carries a configuration) → text; the BOM and line ends are kept verbatim."""
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"The {what} is not valid base64.") from None
    if len(data) > MAX_CONFIGURATION_BYTES:
        raise bad_request(f"The {what} is larger than {MAX_CONFIGURATION_BYTES} bytes.")
    for bom, codec in ((b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                break
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request(f"The {what} is not UTF-8 or UTF-16 text.") from None


def certificate_der(data_b64: str, certificate_format: str, password: str) -> bytes:
    """The certificate of an Add Service Certificate body (base64 pfx + password, or base64 cer: DER or PEM),
    as DER; 400 BadRequest naming the problem otherwise."""
    return certificate_and_key(data_b64, certificate_format, password)[0]


def certificate_and_key(data_b64: str, certificate_format: str, password: str) -> tuple[bytes, bytes | None]:
    """:func:`certificate_der` and, for a pfx holding one, its private key (unencrypted PKCS#8 PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, pkcs12

    try:
        data = base64.b64decode("".join(data_b64.split()), validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("The certificate data is not valid base64.") from None
    kind = certificate_format.strip().lower()
    try:
        if kind == "pfx":
            key, cert, _chain = pkcs12.load_key_and_certificates(data, password.encode("utf-8") or None)
            if cert is None:
                raise ValueError("the pfx holds no certificate")
            key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()) if key else None
            return cert.public_bytes(Encoding.DER), key_pem
        if kind == "cer":
            loaded = x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----") else None
            return (loaded or x509.load_der_x509_certificate(data)).public_bytes(Encoding.DER), None
    except ValueError as exc:
        raise bad_request(f"The certificate cannot be read as {kind}: {exc}") from None
    raise bad_request(f"The certificate format '{certificate_format}' is not valid: give pfx or cer.")


def deployment_view(
    spec: DeploymentSpec,
    instances: Instances,
    *,
    slot: str,
    status: str,
    label: str,
    configuration: str,
) -> views.DeploymentView:
    """What Get Deployment shows of a running deployment."""
    vip = _vip(spec)
    rendered = []
    for inst in spec.instances:
        role = spec.role(inst.role)
        endpoint_views = []
        for ep in role.endpoints:
            if ep.kind == "InternalEndpoint":  # not on the VIP: Get Deployment does not list them
                continue
            protocol = "udp" if ep.protocol == "udp" else "tcp"
            port = ep.public_port if ep.kind == "InputEndpoint" else inst.instance_public_ports[ep.name]
            endpoint_views.append(views.InstanceEndpointView(ep.name, protocol, port, ep.local_port or 0, vip))
        rendered.append(
            views.InstanceView(
                role_name=inst.role,
                instance_name=inst.id,
                status=instances.status(inst.id),
                upgrade_domain=inst.upgrade_domain,
                fault_domain=inst.fault_domain,
                size=role.vmsize,
                ip_address=inst.internal_ip,
                power_state=instances.power.get(inst.id, platform.STARTED),
                endpoints=tuple(endpoint_views),
            )
        )
    inputs = tuple(
        views.InputEndpointView(
            e.role, e.name, "udp" if e.protocol == "udp" else "tcp", e.public_port, e.local_port or 0, vip
        )
        for e in spec.input_endpoints
    )
    return views.DeploymentView(
        service_name=spec.service_name,
        name=spec.deployment_name,
        slot=slot,
        private_id=spec.deployment_id,
        status=status,
        label=label,
        url=f"http://{spec.service_name.lower()}.cloudapp.net/",
        configuration=configuration,
        sdk_version=SDK_VERSION,
        vip=vip,
        instances=tuple(rendered),
        input_endpoints=inputs,
        roles=tuple((r.name, OS_VERSION) for r in spec.roles),
    )


def wait_for_rotation(haproxy: Any, spec: DeploymentSpec, deadline: float = ROTATION_DEADLINE) -> None:
    """Every instance of each load-balanced endpoint is in its backend's rotation (RuntimeError otherwise)."""
    from harness.fabric.haproxy import backend_name

    api = haproxy.runtime
    expected = {
        backend_name(ep.role, ep.name): {i.id for i in spec.instances if i.role == ep.role}
        for ep in spec.input_endpoints
        if ep.protocol != "udp"
    }

    def all_in() -> bool:
        return all(api.in_rotation(backend) >= servers for backend, servers in expected.items())

    if not wait_until(all_in, deadline, 0.05):
        missing = {b: sorted(s - api.in_rotation(b)) for b, s in expected.items() if not api.in_rotation(b) >= s}
        raise RuntimeError(f"instances not in load-balancer rotation after {deadline:.0f} s: {missing}")


class Deployment:
    """One deployment: its spec, instance processes, load balancer, slot, status and uploaded configuration."""

    def __init__(
        self,
        *,
        spec: DeploymentSpec,
        layout: Layout,
        instances: Instances,
        haproxy: Any,
        slot: str,
        label: str,
        configuration: str,
        status: str = platform.RUNNING,
    ) -> None:
        self.spec = spec
        self.layout = layout
        self.instances = instances
        self.haproxy = haproxy
        self.slot = slot
        self.label = label
        self.configuration = configuration  # as uploaded; the effective copy is layout.cscfg
        self.status = status
        self.created = _now()
        self.modified = self.created
        self.upgrade: Upgrade | None = None  # an upgrade in progress (Get Deployment's UpgradeStatus)
        #: (role, certificate name) -> (pem, key): the hosted service's certificates this deployment serves
        self.uploaded: dict[tuple[str, str], tuple[Path, Path]] = {}

    @property
    def name(self) -> str:
        return self.spec.deployment_name

    def view(self) -> views.DeploymentView:
        return deployment_view(
            self.spec,
            self.instances,
            slot=self.slot,
            status=self.status,
            label=self.label,
            configuration=self.configuration,
        )

    @property
    def locked(self) -> bool:
        current = self.instances.current
        return current is not None and current.status == platform.IN_PROGRESS

    def pids(self) -> list[int]:
        pids = self.instances.pids()
        if self.haproxy is not None and self.haproxy.pid:
            pids.append(self.haproxy.pid)
        return pids

    def stop(self) -> None:
        """Stop every process of the deployment (idempotent)."""
        if self.haproxy is not None:
            with contextlib.suppress(Exception):
                self.haproxy.stop()
        self.instances.stop_all()
        for folder in self.layout.ntlm_user_dirs():
            shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Upgrade:
    """An upgrade under way: its mode (Auto, Manual, Simultaneous), the domain it is at and that domain's
    state (``Before``: a Manual upgrade waits for Walk Upgrade Domain; ``During``: it is being upgraded)."""

    mode: str
    domains: list[int]
    role: str | None
    domain: int = 0
    state: str = "Before"


@dataclass
class HostedService:
    name: str
    label: str
    description: str = ""
    location: str = "Local Fabric"
    created: str = dataclasses.field(default_factory=_now)
    modified: str = dataclasses.field(default_factory=_now)
    slots: dict[str, Deployment] = dataclasses.field(default_factory=dict)
    #: service certificates: SHA-1 thumbprint (upper-case hex) -> the certificate's DER (its public part)
    certificates: dict[str, bytes] = dataclasses.field(default_factory=dict)
    #: thumbprint -> (certificate PEM, key PEM) files of the certificates uploaded with their key (a pfx)
    keys: dict[str, tuple[Path, Path]] = dataclasses.field(default_factory=dict)

    def deployment_named(self, name: str) -> Deployment | None:
        return next((d for d in self.slots.values() if d.name == name), None)


class HostedServices:
    """The subscription's hosted services, driven by the management API (the extended ``Lifecycle``)."""

    def __init__(self, controller: Any) -> None:
        self.controller = controller
        self.lock = threading.RLock()
        self.services: dict[str, HostedService] = {}
        self.operations: dict[str, Operation] = {}
        self.retired: list[Instances] = []  # instances of deleted deployments (their operations stay readable)
        spec: DeploymentSpec = controller.spec
        adopted = Deployment(
            spec=spec,
            layout=controller.layout,
            instances=controller.instances,
            haproxy=controller.haproxy,
            slot=PRODUCTION,
            label=spec.deployment_name,
            configuration=controller.submitted_cscfg(),
        )
        first = HostedService(spec.service_name, spec.service_name)
        first.slots[PRODUCTION] = adopted
        for pem, _key, thumbprint in getattr(controller, "service_certs", {}).values():
            # the certificates the fabric made for the cscfg, as if uploaded before the deployment
            first.certificates[thumbprint.upper()] = ssl.PEM_cert_to_DER_cert(Path(pem).read_text("ascii"))
        self.services[spec.service_name.lower()] = first

    # ---- the original single-deployment Lifecycle ------------------------------------------------
    def deployment(self) -> views.DeploymentView:
        """The fabric's first service's Production deployment (what the single-deployment API showed)."""
        with self.lock:
            for svc in self.services.values():
                dep = svc.slots.get(PRODUCTION)
                if dep is not None:
                    return dep.view()
        raise KeyError("no production deployment")

    def start_operation(self, kind: str, instance_id: str) -> str:
        with self.lock:
            for svc in self.services.values():
                dep = svc.slots.get(PRODUCTION)
                if dep is not None:
                    return dep.instances.start_operation(kind, instance_id)
        raise KeyError(instance_id)

    def operation(self, request_id: str) -> views.OperationView | None:
        rid = request_id.replace("-", "").lower()
        with self.lock:
            op = self.operations.get(rid)
            pools = [d.instances for s in self.services.values() for d in s.slots.values()] + self.retired
        if op is not None:
            return views.OperationView(op.request_id, op.status, op.http_status_code, op.error_code, op.error_message)
        for pool in pools:
            found = pool.operation(rid)
            if found is not None:
                return found
        return None

    # ---- lookups ---------------------------------------------------------------------------------
    def service(self, name: str) -> HostedService:
        with self.lock:
            svc = self.services.get(name.lower())
        if svc is None:
            raise not_found("The hosted service does not exist.")
        return svc

    def find(self, service: str, *, slot: str | None = None, name: str | None = None) -> Deployment:
        svc = self.service(service)
        with self.lock:
            if slot is not None:
                canonical = next((s for s in SLOTS if s.lower() == slot.lower()), None)
                dep = svc.slots.get(canonical) if canonical else None
                if dep is None:
                    raise not_found("No deployments were found.")
                return dep
            dep = svc.deployment_named(name or "")
        if dep is None:
            raise not_found(f"The deployment name '{name}' does not exist.")
        return dep

    def extra_pids(self) -> list[int]:
        """The processes of every deployment but the controller's own (it records those itself)."""
        with self.lock:
            deps = [d for s in self.services.values() for d in s.slots.values()]
        return [p for d in deps if d.instances is not self.controller.instances for p in d.pids()]

    # ---- hosted services -------------------------------------------------------------------------
    def name_available(self, name: str) -> tuple[bool, str]:
        with self.lock:
            taken = name.lower() in self.services
        if taken:
            return False, "The specified DNS name is already taken."
        return True, ""

    def create_service(self, name: str, label: str, description: str, location: str) -> None:
        with self.lock:
            if name.lower() in self.services:
                raise conflict("The specified DNS name is already taken.")
            self.services[name.lower()] = HostedService(name, label, description, location or "Local Fabric")

    def update_service(self, name: str, label: str | None, description: str | None) -> None:
        svc = self.service(name)
        with self.lock:
            if label is not None:
                svc.label = label
            if description is not None:
                svc.description = description
            svc.modified = _now()

    # ---- service certificates ----------------------------------------------------------------------
    def add_certificate(self, service: str, data_b64: str, certificate_format: str, password: str) -> str:
        """Add Service Certificate (pfx with its password, or cer): its public part is kept; an operation
        that has already succeeded (the API answers 202 with its id)."""
        svc = self.service(service)
        der, key = certificate_and_key(data_b64, certificate_format, password)
        thumbprint = hashlib.sha1(der).hexdigest().upper()
        held = None
        if key is not None:  # a deployment whose cscfg names this thumbprint serves this certificate
            layout = self.controller.layout
            pem_path, key_path = (
                layout.certs / f"uploaded-{thumbprint}.pem",
                layout.secrets / f"uploaded-{thumbprint}.key",
            )
            write_text_atomic(key_path, key.decode("ascii"))
            os.chmod(key_path, 0o600)
            write_text_atomic(pem_path, ssl.DER_cert_to_PEM_cert(der))
            held = (pem_path, key_path)
        with self.lock:
            svc.certificates[thumbprint] = der
            if held is not None:
                svc.keys[thumbprint] = held
            op = Operation(uuid.uuid4().hex, "add-certificate", "", status=platform.SUCCEEDED)
            self.operations[op.request_id] = op
        return op.request_id

    def certificate(self, service: str, algorithm: str, thumbprint: str) -> bytes:
        svc = self.service(service)
        with self.lock:
            der = svc.certificates.get(thumbprint.upper()) if algorithm.lower() == "sha1" else None
        if der is None:
            raise not_found("The specified certificate does not exist.")
        return der

    def delete_certificate(self, service: str, algorithm: str, thumbprint: str) -> str:
        self.certificate(service, algorithm, thumbprint)
        svc = self.service(service)
        with self.lock:
            svc.certificates.pop(thumbprint.upper(), None)
            op = Operation(uuid.uuid4().hex, "delete-certificate", "", status=platform.SUCCEEDED)
            self.operations[op.request_id] = op
        return op.request_id

    def delete_service(self, name: str) -> None:
        svc = self.service(name)
        with self.lock:
            if svc.slots:
                raise conflict("The hosted service has deployments: delete them first.")
            del self.services[name.lower()]

    # ---- operations on a deployment --------------------------------------------------------------
    def begin(self, dep: Deployment, kind: str) -> Operation:
        """Take the deployment's exclusive lock for an operation (Conflict naming the holder otherwise)."""
        with dep.instances.lock:
            current = dep.instances.current
            if current is not None and current.status == platform.IN_PROGRESS:
                raise views.Conflict(f"operation {current.request_id} ({current.kind}) is in progress")
            op = Operation(request_id=uuid.uuid4().hex, kind=kind, instance_id="")
            dep.instances.current = op
        with self.lock:
            self.operations[op.request_id] = op
        return op

    def run(self, op: Operation, work: Callable[[], None]) -> str:
        """``work`` on a thread as the operation ``op`` (from :meth:`begin`): its outcome ends the operation."""

        def body() -> None:
            try:
                work()
                op.status = platform.SUCCEEDED
            except ApiProblem as exc:
                op.status, op.http_status_code = platform.OPERATION_FAILED, exc.status
                op.error_code, op.error_message = exc.code, exc.message
            except Exception as exc:
                log.exception("%s failed", op.kind)
                op.status, op.http_status_code = platform.OPERATION_FAILED, 500
                op.error_code, op.error_message = "InternalError", f"{op.kind} failed: {exc}"
            finally:
                self.controller.write_ready()

        threading.Thread(target=body, name=f"op-{op.kind}", daemon=True).start()
        return op.request_id

    def _hold(self, dep: Deployment, status: str) -> None:
        with self.lock:
            dep.status = status
            dep.modified = _now()
        time.sleep(dep.instances.step_seconds)

    def _walk_instances(self, dep: Deployment, status: str, instance_ids: list[str]) -> None:
        with dep.instances.lock:
            for i in instance_ids:
                dep.instances.phase[i] = status
        self.controller.write_ready()
        time.sleep(dep.instances.step_seconds)

    def _stop_instances(self, dep: Deployment, instance_ids: list[str] | None = None) -> None:
        """``instance_ids`` (default: all of the deployment) out of rotation, StoppingRole → StoppedVM."""
        ids = [i.id for i in dep.spec.instances] if instance_ids is None else instance_ids
        ins = dep.instances
        for i in ids:
            ins.set_ready(i, False)
        self._walk_instances(dep, platform.STOPPING, ids)
        each(ins.stop, ids)
        self._walk_instances(dep, platform.STOPPED_VM, ids)

    def _start_instances(self, dep: Deployment, instance_ids: list[str] | None = None) -> None:
        """``instance_ids`` (default: all of the deployment) StartingVM → BusyRole → ReadyRole, in rotation."""
        ids = [i.id for i in dep.spec.instances] if instance_ids is None else instance_ids
        ins = dep.instances
        self._walk_instances(dep, platform.STARTING_VM, ids)
        each(ins.start, ids)
        self._walk_instances(dep, platform.BUSY, ids)
        for i in ids:
            ins.set_ready(i, True)
        with ins.lock:
            for i in ids:
                ins.phase.pop(i, None)
        if dep.haproxy is not None:
            wait_for_rotation(dep.haproxy, dep.spec)

    def update_status(self, service: str, name: str, status: str) -> str:
        dep = self.find(service, name=name)
        wanted = {"running": platform.RUNNING, "suspended": platform.SUSPENDED}.get(status.strip().lower())
        if wanted is None:
            raise bad_request(f"The value '{status}' of Status is not valid: give Running or Suspended.")
        op = self.begin(dep, "status")

        def work() -> None:
            before = dep.status
            if before == wanted:
                return
            try:
                if wanted == platform.SUSPENDED:
                    self._hold(dep, platform.SUSPENDED_TRANSITIONING)
                    self._stop_instances(dep)
                else:
                    self._hold(dep, RUNNING_TRANSITIONING)
                    self._start_instances(dep)
            except BaseException:
                with self.lock:
                    dep.status = before  # the operation failed: the deployment is not in a transition any more
                raise
            with self.lock:
                dep.status = wanted
                dep.modified = _now()

        return self.run(op, work)

    def change_configuration(self, service: str, *, slot: str | None, name: str | None, encoded: str) -> str:
        dep = self.find(service, slot=slot, name=name)
        text = decode_base64_text(encoded, "configuration")
        new_spec = self._validated(dep.spec, text)
        op = self.begin(dep, "configuration")

        def work() -> None:
            before = dep.status
            self._hold(dep, RUNNING_TRANSITIONING if before == platform.RUNNING else platform.SUSPENDED_TRANSITIONING)
            effective = self.controller.effective_configuration(text, new_spec, dep.uploaded)
            write_text_atomic(dep.layout.cscfg, effective)
            with self.lock:
                dep.configuration = self.controller.submitted_cscfg(text, dep.spec, dep.uploaded)
                dep.spec = dataclasses.replace(dep.spec, cscfg_text=text)
                dep.status = before
                dep.modified = _now()

        return self.run(op, work)

    def _validated(self, spec: DeploymentSpec, text: str) -> DeploymentSpec:
        """The new configuration read with the project's reader against the running csdef (400 otherwise)."""
        from harness.engine.artefact import CSCFG, Artefact
        from harness.readers.errors import Unreadable
        from harness.readers.servicemodel import read_configuration

        with tempfile.TemporaryDirectory(prefix="vmr-cscfg-") as tmp:
            path = Path(tmp) / "ServiceConfiguration.cscfg"
            path.write_text(text, "utf-8")
            try:
                config = read_configuration(Artefact.from_path(path, CSCFG))
            except Unreadable as exc:
                raise bad_request(f"The configuration is not valid: {exc}") from None
        for role in spec.roles:
            rc = config.role(role.name)
            if rc is None:
                raise bad_request(f"The configuration has no settings for role '{role.name}' of the deployment.")
            if rc.instance_count != role.instances:
                raise bad_request(
                    f"Role '{role.name}': the fabric cannot change the instance count "
                    f"({role.instances} → {rc.instance_count}) of a running deployment."
                )
        return spec

    def _recycle(self, dep: Deployment, instance_ids: list[str]) -> None:
        """Stop and start ``instance_ids`` together (an upgrade domain): StoppingRole → StoppedVM → StartingVM →
        BusyRole → ReadyRole, out of rotation meanwhile."""
        self._stop_instances(dep, instance_ids)
        self._start_instances(dep, instance_ids)

    def _domain(self, dep: Deployment, upgrade: Upgrade, domain: int) -> list[str]:
        return [
            i.id
            for i in dep.spec.instances
            if i.upgrade_domain == domain and (upgrade.role is None or i.role == upgrade.role)
        ]

    def upgrade_deployment(
        self,
        service: str,
        *,
        slot: str | None,
        name: str | None,
        mode: str,
        package_url: str,
        encoded_configuration: str,
        label: str | None,
        role: str | None,
    ) -> str:
        """Upgrade Deployment: the package must declare the deployment's roles and endpoints (the fabric does
        not change a running deployment's topology); the configuration is checked as Change Configuration's.
        Auto walks the upgrade domains in order, Simultaneous recycles every instance at once, Manual waits
        for Walk Upgrade Domain on each domain."""
        dep = self.find(service, slot=slot, name=name)
        modes = {"auto": "Auto", "manual": "Manual", "simultaneous": "Simultaneous"}
        chosen = modes.get(mode.strip().lower())
        if chosen is None:
            raise bad_request(f"The upgrade mode '{mode}' is not valid: give Auto, Manual or Simultaneous.")
        if dep.upgrade is not None:
            raise conflict("An upgrade of this deployment is already in progress: walk its upgrade domains first.")
        if role and role not in {r.name for r in dep.spec.roles}:
            raise bad_request(f"The role '{role}' is not a role of deployment '{dep.name}'.")
        text = decode_base64_text(encoded_configuration, "configuration")
        self._validated(dep.spec, text)
        with tempfile.TemporaryDirectory(prefix="vmr-upgrade-") as tmp:
            package = self._fetch_package(package_url, Path(tmp) / "package.cspkg")
            self._same_topology(dep.spec, package)
        selected = [i for i in dep.spec.instances if role is None or i.role == role]
        upgrade = Upgrade(chosen, sorted({i.upgrade_domain for i in selected}), role or None)
        op = self.begin(dep, "upgrade")

        def work() -> None:
            effective = self.controller.effective_configuration(text, dep.spec, dep.uploaded)
            write_text_atomic(dep.layout.cscfg, effective)
            with self.lock:
                dep.configuration = self.controller.submitted_cscfg(text, dep.spec, dep.uploaded)
                dep.spec = dataclasses.replace(dep.spec, cscfg_text=text)
                dep.label = label if label is not None else dep.label
                dep.status = RUNNING_TRANSITIONING
                dep.upgrade = upgrade
                dep.modified = _now()
            try:
                if chosen == "Simultaneous":
                    upgrade.state = "During"
                    self._recycle(dep, [i.id for i in selected])
                elif chosen == "Auto":
                    for domain in upgrade.domains:
                        upgrade.domain, upgrade.state = domain, "During"
                        self._recycle(dep, self._domain(dep, upgrade, domain))
                else:
                    upgrade.domain, upgrade.state = upgrade.domains[0], "Before"
                    return  # Walk Upgrade Domain does the rest
                with self.lock:
                    dep.upgrade = None
            finally:
                with self.lock:
                    dep.status = platform.RUNNING

        return self.run(op, work)

    def walk_upgrade_domain(self, service: str, *, slot: str | None, name: str | None, domain: str) -> str:
        dep = self.find(service, slot=slot, name=name)
        upgrade = dep.upgrade
        if upgrade is None or upgrade.mode != "Manual":
            raise bad_request(f"Deployment '{dep.name}' has no manual upgrade in progress.")
        number = int(domain) if domain.strip().isdigit() else -1
        if number != upgrade.domain or upgrade.state != "Before":
            raise bad_request(f"The upgrade domain to walk is {upgrade.domain}, not '{domain}'.")
        op = self.begin(dep, "walk")

        def work() -> None:
            with self.lock:
                upgrade.state = "During"
                dep.status = RUNNING_TRANSITIONING
            try:
                self._recycle(dep, self._domain(dep, upgrade, number))
                later = [d for d in upgrade.domains if d > number]
                with self.lock:
                    if later:
                        upgrade.domain, upgrade.state = later[0], "Before"
                    else:
                        dep.upgrade = None
                    dep.modified = _now()
            finally:
                with self.lock:
                    dep.status = platform.RUNNING

        return self.run(op, work)

    def _same_topology(self, spec: DeploymentSpec, package: Path) -> None:
        definition = _package_definition(package)

        def public(endpoints: Any) -> set[tuple[str, str]]:
            return {(e.name, e.kind) for e in endpoints if e.kind != "InternalEndpoint"}

        running = {r.name: public(r.endpoints) for r in spec.roles}
        given = {r.name: public(r.endpoints) for r in definition.roles}
        if given != running:
            raise bad_request(
                "The package declares other roles or endpoints than the deployment runs; the fabric upgrades "
                "a deployment in place only (delete and create it to change its topology)."
            )

    def delete_role_instances(self, service: str, *, slot: str | None, name: str | None, names: list[str]) -> str:
        """Delete Role Instances: the named instances stop and leave the deployment (and its load balancer)."""
        dep = self.find(service, slot=slot, name=name)
        known = {i.id for i in dep.spec.instances}
        unknown = [n for n in names if n not in known]
        if not names or unknown:
            raise bad_request(f"The role instances {unknown or names} are not instances of '{dep.name}'.")
        left = {
            r.name: sum(1 for i in dep.spec.instances if i.role == r.name and i.id not in names) for r in dep.spec.roles
        }
        if any(count == 0 for count in left.values()):
            raise bad_request("A role must keep at least one instance.")
        op = self.begin(dep, "delete-instances")

        def work() -> None:
            ins = dep.instances
            for i in names:
                ins.set_ready(i, False)
            with ins.lock:
                for i in names:
                    ins.phase[i] = platform.STOPPING
            time.sleep(ins.step_seconds)
            each(ins.stop, names)
            roles = tuple(dataclasses.replace(r, instances=left[r.name]) for r in dep.spec.roles)
            spec = dataclasses.replace(
                dep.spec, roles=roles, instances=tuple(i for i in dep.spec.instances if i.id not in names)
            )
            if dep.haproxy is not None:
                dep.haproxy.stop()
            with self.lock, ins.lock:
                dep.spec = spec
                ins.spec = spec
                for i in names:
                    ins.phase.pop(i, None)
                    ins.configs.pop(i, None)
                dep.modified = _now()
            self.start_balancer(dep)
            if dep.instances is self.controller.instances:
                self.controller.production_changed(dep)

        return self.run(op, work)

    def delete_deployment(self, service: str, *, slot: str | None, name: str | None) -> str:
        dep = self.find(service, slot=slot, name=name)
        op = self.begin(dep, "delete")
        svc = self.service(service)

        def work() -> None:
            self._hold(dep, platform.DELETING)
            if any(dep.instances.pid(i.id) for i in dep.spec.instances):
                self._stop_instances(dep)
            dep.stop()
            with self.lock:
                for slot_name, d in list(svc.slots.items()):
                    if d is dep:
                        del svc.slots[slot_name]
                self.retired.append(dep.instances)
            _release(dep)

        return self.run(op, work)

    def swap(self, service: str, production: str | None, source: str) -> str:
        svc = self.service(service)
        with self.lock:
            src = svc.deployment_named(source)
            prod = svc.slots.get(PRODUCTION)
        if src is None:
            raise not_found(f"The deployment name '{source}' does not exist.")
        if src.slot != STAGING:
            raise bad_request(f"The source deployment '{source}' is not in the Staging slot.")
        if production and (prod is None or prod.name != production):
            raise bad_request(f"The deployment '{production}' is not in the Production slot.")
        op = self.begin(src, "swap")
        if prod is not None:
            try:
                prod_op = self.begin(prod, "swap")
            except views.Conflict:
                op.status = platform.SUCCEEDED  # release the source again
                raise
        else:
            prod_op = None

        def work() -> None:
            try:
                self._swap(svc, src, prod)
            finally:
                if prod_op is not None:
                    prod_op.status = platform.SUCCEEDED

        return self.run(op, work)

    def _swap(self, svc: HostedService, src: Deployment, prod: Deployment | None) -> None:
        """Exchange the slots and the public addresses: the VIPs, the ports of the load-balanced endpoints both
        declare, and those of the instance endpoints both have (the rest keep their ports on the new VIP)."""
        if prod is not None:
            src_spec, prod_spec = _with_addresses_of(src.spec, prod.spec), _with_addresses_of(prod.spec, src.spec)
            for dep in (prod, src):
                if dep.haproxy is not None:
                    dep.haproxy.stop()
            with self.lock:
                src.spec, prod.spec = src_spec, prod_spec
            for dep in (prod, src):
                self.start_balancer(dep)
        with self.lock:
            svc.slots.pop(STAGING, None)
            svc.slots.pop(PRODUCTION, None)
            src.slot, src.modified = PRODUCTION, _now()
            svc.slots[PRODUCTION] = src
            if prod is not None:
                prod.slot, prod.modified = STAGING, _now()
                svc.slots[STAGING] = prod
            self.controller.production_changed(src)

    def start_balancer(self, dep: Deployment) -> None:
        """The deployment's load balancer (HAProxy) started on its current spec."""
        from harness.fabric.haproxy import HAProxy, render_config, spec_from_deployment

        dep.layout.haproxy.mkdir(parents=True, exist_ok=True)
        socket_path = dep.layout.haproxy_socket
        make_private_dir(socket_path.parent)
        config_path = dep.layout.haproxy / "haproxy.cfg"
        config_path.write_text(render_config(spec_from_deployment(dep.spec, socket_path, probe=_probe())), "utf-8")
        dep.haproxy = HAProxy(socket_path)
        dep.haproxy.start(config_path)
        if dep.status == platform.RUNNING:
            wait_for_rotation(dep.haproxy, dep.spec)

    # ---- Create Deployment -----------------------------------------------------------------------
    def create_deployment(
        self,
        service: str,
        slot: str,
        *,
        name: str,
        package_url: str,
        label: str,
        encoded_configuration: str,
        start: bool,
    ) -> str:
        svc = self.service(service)
        canonical = next((s for s in SLOTS if s.lower() == slot.lower()), None)
        if canonical is None:
            raise bad_request(f"The deployment slot '{slot}' is not valid: give production or staging.")
        if not name or len(name) > 100:
            raise bad_request("The deployment name must be 1 to 100 characters.")
        text = decode_base64_text(encoded_configuration, "configuration")
        with self.lock:
            if canonical in svc.slots:
                raise conflict(f"There is already a deployment in the {canonical} slot of '{svc.name}'.")
            if any(d.name == name for s in self.services.values() for d in s.slots.values()):
                raise conflict(f"A deployment named '{name}' already exists.")
        root = self.controller.layout.root / "deployments" / uuid.uuid4().hex
        make_private_dir(root.parent)
        layout = DeploymentLayout(root, image_root=self.controller.layout.root)
        make_private_dir(layout.root)
        make_private_dir(layout.secrets)
        try:
            package = self._fetch_package(package_url, layout.root / "package.cspkg")
            _package_definition(package)  # a package the reader refuses is Azure's "not a valid service package"
            cscfg = layout.root / "uploaded.cscfg"
            write_text_atomic(cscfg, text)  # 0600: a cscfg may hold storage keys
            try:
                spec = build_spec(package=package, cscfg=cscfg, name=name)
            except SpecError as exc:
                problem = _without(exc, layout.root)
                raise bad_request(f"The package or configuration cannot be deployed: {problem}") from None
            if spec.service_name.lower() != svc.name.lower():
                spec = dataclasses.replace(spec, service_name=svc.name)
            uploaded = self._held_certificates(svc, cscfg)
            instances = self.controller.deployment_instances(spec, layout, uploaded)
        except BaseException:
            shutil.rmtree(layout.root, ignore_errors=True)
            raise
        dep = Deployment(
            spec=spec,
            layout=layout,
            instances=instances,
            haproxy=None,
            slot=canonical,
            label=label,
            configuration=self.controller.submitted_cscfg(text, spec, uploaded),
            status=DEPLOYING,
        )
        dep.uploaded = uploaded
        with self.lock:
            if canonical in svc.slots:  # a concurrent create won the slot
                shutil.rmtree(layout.root, ignore_errors=True)
                raise conflict(f"There is already a deployment in the {canonical} slot of '{svc.name}'.")
            svc.slots[canonical] = dep
        op = self.begin(dep, "create")

        def work() -> None:
            try:
                with dep.instances.lock:
                    for inst in spec.instances:
                        dep.instances.phase[inst.id] = platform.STOPPED_VM
                        dep.instances.power[inst.id] = platform.STOPPED
                time.sleep(dep.instances.step_seconds)
                self.start_balancer(dep)
                if start:
                    self._start_instances(dep)
                with self.lock:
                    dep.status = platform.RUNNING if start else platform.SUSPENDED
                    if canonical == PRODUCTION:
                        self.controller.production_changed(dep)
            except BaseException:
                dep.stop()
                with self.lock:
                    if svc.slots.get(canonical) is dep:
                        del svc.slots[canonical]
                    self.retired.append(dep.instances)
                _release(dep)
                raise

        return self.run(op, work)

    def _held_certificates(self, svc: HostedService, cscfg: Path) -> dict[tuple[str, str], tuple[Path, Path]]:
        """(role, certificate name) -> (pem, key) for the certificates the cscfg names by a thumbprint the hosted
        service holds with its key: those are served as they are (no stand-in)."""
        from harness.engine.artefact import CSCFG, Artefact
        from harness.readers.errors import Unreadable
        from harness.readers.servicemodel import read_configuration

        try:
            config = read_configuration(Artefact.from_path(cscfg, CSCFG))
        except Unreadable:
            return {}  # build_spec read it already; nothing held then
        with self.lock:
            keys = dict(svc.keys)
        held = {}
        for role in config.roles:
            for cert in role.certificates:
                thumbprint = (cert.thumbprint or "").replace(" ", "").upper()
                if thumbprint in keys:
                    held[(role.name, cert.name)] = keys[thumbprint]
        return held

    def _fetch_package(self, url: str, target: Path) -> Path:
        """The package blob from the fabric's Azurite (the only storage it has), size-capped."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        from harness.fabric.azurite import ACCOUNT_NAME, blob_client

        azurite = self.controller.azurite
        parts = urlsplit(url.strip())
        path = [unquote(p) for p in parts.path.split("/") if p]
        ours = parts.scheme in ("http", "https") and parts.hostname == "127.0.0.1" and parts.port == azurite.port
        if not ours or len(path) < 3 or path[0] != ACCOUNT_NAME:
            shown = parts._replace(query="", fragment="").geturl()  # never echo a SAS signature
            raise bad_request(
                f"The package URL '{shown}' is not a blob of this fabric's storage "
                f"(http://127.0.0.1:{azurite.port}/{ACCOUNT_NAME}/<container>/<blob>)."
            )
        container, blob = path[1], "/".join(path[2:])
        client = blob_client(azurite.connection_string).get_blob_client(container, blob)
        try:
            size = client.get_blob_properties().size
            if size > MAX_PACKAGE_BYTES:
                raise bad_request(f"The package is {size} bytes; the limit is {MAX_PACKAGE_BYTES} bytes.")
            with open(target, "wb") as out:
                os.chmod(target, 0o600)
                client.download_blob().readinto(out)
        except ResourceNotFoundError:
            raise bad_request(f"The package blob '{container}/{blob}' does not exist.") from None
        except AzureError as exc:
            raise bad_request(f"The package blob '{container}/{blob}' cannot be read: {exc}") from None
        if target.stat().st_size > MAX_PACKAGE_BYTES:
            raise bad_request(f"The package is larger than {MAX_PACKAGE_BYTES} bytes.")
        return target

    # ---- shutdown --------------------------------------------------------------------------------
    def stop_all(self) -> None:
        with self.lock:
            deps = [d for s in self.services.values() for d in s.slots.values()]
        threads = [threading.Thread(target=d.stop) for d in deps]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


#: Azure's answer to a package it cannot read (recorded in github.com/smarx/waz-cmd/issues/2); the fabric adds
#: what its reader found, in brackets.
INVALID_PACKAGE_MESSAGE = "The file provided is not a valid service package. Detailed error code: FileFormatException"


def _package_definition(package: Path) -> Any:
    """The package's service definition, read with the project's cspkg reader (400 BadRequest otherwise)."""
    from harness.engine.artefact import CSPKG, Artefact
    from harness.readers.cspkg import read_package
    from harness.readers.errors import Unreadable

    try:
        definition = read_package(Artefact.from_path(package, CSPKG)).definition
    except Unreadable as exc:
        raise bad_request(f"{INVALID_PACKAGE_MESSAGE} ({_without(exc, package.parent)})") from None
    if definition is None:
        raise bad_request(f"{INVALID_PACKAGE_MESSAGE} (it holds no readable service definition)")
    return definition


def _release(dep: Deployment) -> None:
    """What a deleted deployment held: its VIP claim and (one made through the API) its state folder."""
    from harness.fabric.ports import release_vip

    release_vip(dep.spec.vip)
    if isinstance(dep.layout, DeploymentLayout):  # never the fabric's own root
        shutil.rmtree(dep.layout.root, ignore_errors=True)


def each(action: Callable[[str], None], instance_ids: list[str]) -> None:
    """``action`` on every instance at once (threads); the first error is raised once all are done."""
    errors: list[BaseException] = []

    def one(instance_id: str) -> None:
        try:
            action(instance_id)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in instance_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("; ".join(str(e) for e in errors))


def _without(exc: Exception, folder: Path) -> str:
    """An error text without the fabric's internal paths (the client never named those files)."""
    return (
        str(exc)
        .replace(str(folder / "package.cspkg"), "the package")
        .replace(str(folder / "uploaded.cscfg"), "the configuration")
    )


def _with_addresses_of(spec: DeploymentSpec, other: DeploymentSpec) -> DeploymentSpec:
    """``spec`` on ``other``'s public addresses, for what both have."""
    ports = {(e.role, e.name): e.public_port for e in other.input_endpoints}
    instance_ports = {i.id: i.instance_public_ports for i in other.instances}

    def endpoint(ep: EndpointSpec) -> EndpointSpec:
        key = (ep.role, ep.name)
        return dataclasses.replace(ep, public_port=ports[key]) if ep.kind == "InputEndpoint" and key in ports else ep

    def instance(inst: InstanceSpec) -> InstanceSpec:
        theirs = instance_ports.get(inst.id, {})
        mine = {name: theirs.get(name, port) for name, port in inst.instance_public_ports.items()}
        return dataclasses.replace(inst, instance_public_ports=mine)

    roles = tuple(dataclasses.replace(r, endpoints=tuple(endpoint(e) for e in r.endpoints)) for r in spec.roles)
    instances = tuple(instance(i) for i in spec.instances)
    return dataclasses.replace(spec, roles=roles, instances=instances, vip=_vip(other))


def _vip(spec: DeploymentSpec) -> str:
    """The deployment's own VIP (``harness.fabric.ports.claim_vip``), 127.0.0.1 for a spec without one."""
    return spec.vip or "127.0.0.1"


def _probe() -> Any:
    from harness.fabric.controller import PROBE

    return PROBE
