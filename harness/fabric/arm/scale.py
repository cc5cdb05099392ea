"""Scaling a scale set and deleting its VMs: the deployment's role gains or loses instance processes.

A PUT or PATCH of a scale set may change ``sku.capacity`` only; anything else the fabric cannot honour is Compute's
``409 PropertyChangeNotAllowed`` naming the property (never accepted silently). Properties the request leaves
out are kept (a PATCH's meaning; the fabric reads a PUT the same way, since it cannot reset them either).

- **Scale out**: new VMs get instance ids above every id the set ever had (Azure never reuses one:
  https://learn.microsoft.com/en-us/azure/virtual-machine-scale-sets/virtual-machine-scale-sets-instance-ids),
  their own ports, internal address and folders; each starts (StartingVM → BusyRole → ReadyRole) and the load
  balancer (HAProxy) is rebuilt with them in its backend.
- **Scale in** removes the highest instance ids (the ``Default`` scale-in policy without zones or fault domains
  to balance: https://learn.microsoft.com/en-us/azure/virtual-machine-scale-sets/virtual-machine-scale-sets-scale-in-policy)
  through the deployment's Delete Role Instances (``HostedServices.delete_role_instances``), as does a delete of
  VMs by id.

Either is one operation of the deployment (the lifecycle's lock: another one is a 409 meanwhile). The fabric
keeps at least one VM per scale set (its deployments keep a role instance) and at most :data:`MAX_CAPACITY`
(each VM is a local process): beyond those it answers ``409 OperationNotAllowed``. The other instances' view of
the internal network (routes to internal endpoints) is the one they started with; a new VM knows every one.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

from harness.fabric.arm import errors
from harness.fabric.arm.resources import guest_identity
from harness.fabric.ports import allocate, bind_problem
from harness.fabric.spec import DeploymentSpec, InstanceSpec
from harness.facts.live import platform

MAX_CAPACITY = 20
#: read-only or server-set properties a client may echo back from a GET: never a change
_IGNORED = {
    ("id",),
    ("name",),
    ("type",),
    ("etag",),
    ("location",),
    ("properties", "provisioningState"),
    ("properties", "uniqueId"),
    ("properties", "timeCreated"),
    ("sku", "capacity"),  # the change the fabric makes
}


def changed_properties(current: Any, requested: Any, path: tuple[str, ...] = ()) -> list[str]:
    """The properties ``requested`` (a PUT/PATCH body) sets to other values than ``current`` (the GET body), as
    dotted names without the ``properties.`` envelope (``virtualMachineProfile.osProfile.adminUsername``).
    Strings compare without case (ARM's enums and names are case-insensitive); a property the request leaves
    out or sends as null is unchanged."""
    if path in _IGNORED or requested is None:
        return []
    if isinstance(requested, dict):
        if not isinstance(current, dict):
            return [] if not requested else [_name(path)]
        found: list[str] = []
        for key, value in requested.items():
            match = next((k for k in current if k.lower() == str(key).lower()), None)
            if match is None:
                if value not in (None, {}, [], False, ""):
                    found.append(_name((*path, str(key))))
                continue
            found += changed_properties(current[match], value, (*path, match))
        return found
    if isinstance(requested, list):
        if not isinstance(current, list) or len(current) != len(requested):
            return [_name(path)]
        found = []
        for i, (cur, req) in enumerate(zip(current, requested, strict=True)):
            found += changed_properties(cur, req, (*path[:-1], f"{path[-1]}[{i}]") if path else (f"[{i}]",))
        return found
    if isinstance(requested, str) and isinstance(current, str):
        return [] if requested.lower() == current.lower() else [_name(path)]
    if isinstance(requested, bool) or isinstance(current, bool):
        return [] if requested is current else [_name(path)]
    return [] if requested == current else [_name(path)]


def _name(path: tuple[str, ...]) -> str:
    parts = list(path)
    if parts and parts[0] == "properties":
        parts = parts[1:]
    return ".".join(parts) or "(body)"


def requested_capacity(body: Any, current: int) -> int:
    """``sku.capacity`` of a PUT/PATCH body (``current`` if it has none); 400 if it is not a whole number."""
    sku = body.get("sku") if isinstance(body, dict) else None
    value = sku.get("capacity") if isinstance(sku, dict) else None
    if value is None:
        return current
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise errors.ArmError(
            400,
            "InvalidParameter",
            f"The value {value!r} of property 'sku.capacity' is not valid: give a whole number of VMs, 0 or more.",
            target="sku.capacity",
        )
    return value


class Scaler:
    """Capacity changes and deletes of VMs of the controller's Production deployment (the one the ARM face
    serves), run as that deployment's operations (``HostedServices``)."""

    def __init__(self, backend: Any) -> None:
        self.b = backend
        self.lock = threading.Lock()
        #: scale set -> (the capacity an update goes to, its deployment operation) while that runs
        self.pending: dict[str, tuple[int, str]] = {}
        self.next_index: dict[str, int] = {}  # scale set -> the next instance id (ids are never reused)
        self._next_octet = 0

    # ---- where ----------------------------------------------------------------------------------
    def deployment(self) -> tuple[str, Any]:
        """(hosted service name, Deployment) of the instances the ARM face serves."""
        hosted = self.b.hosted
        with hosted.lock:
            for svc in hosted.services.values():
                for dep in svc.slots.values():
                    if dep.instances is self.b.instances:
                        return svc.name, dep
        raise errors.internal_error()

    def pending_capacity(self, vmss: str) -> int | None:
        """The capacity ``vmss`` is being scaled to (None when no update runs): what its ``sku.capacity`` says
        meanwhile, as Azure shows the new model at once."""
        with self.lock:
            entry = self.pending.get(vmss)
        if entry is None:
            return None
        view = self.b.hosted.operation(entry[1])
        if view is None or view.status != platform.IN_PROGRESS:
            with self.lock:
                if self.pending.get(vmss) == entry:
                    del self.pending[vmss]
            return None
        return entry[0]

    def _reserve(self, spec: DeploymentSpec, vmss: str, count: int) -> list[tuple[int, str]]:
        """``count`` new (instance index, internal address) pairs, never used before in this fabric."""
        with self.lock:
            used = [i.index for i in spec.instances if i.role == vmss]
            first = max([self.next_index.get(vmss, 0), *(u + 1 for u in used)])
            self.next_index[vmss] = first + count
            octets = [int(i.internal_ip.rsplit(".", 1)[1]) for i in spec.instances]
            octet = max([self._next_octet, *(o + 1 for o in octets)])
            self._next_octet = octet + count
        if octet + count > 255:
            raise errors.operation_not_allowed("The local fabric has no internal address left for another VM.")
        return [(first + k, f"127.0.1.{octet + k}") for k in range(count)]

    # ---- capacity -------------------------------------------------------------------------------
    def check(self, vmss: str, target: int) -> None:
        if target < 1:
            raise errors.operation_not_allowed(
                f"The local fabric keeps at least one VM in scale set '{vmss}' (its deployment keeps a role "
                "instance); 'sku.capacity' 0 is not served."
            )
        if target > MAX_CAPACITY:
            raise errors.operation_not_allowed(
                f"The local fabric runs at most {MAX_CAPACITY} VMs per scale set (each is a local process); "
                f"'sku.capacity' {target} is not served."
            )

    def scale(self, vmss: str, target: int) -> str:
        """Start the capacity change of ``vmss`` to ``target``: the deployment operation's request id."""
        _, dep = self.deployment()
        members = [i for i in dep.spec.instances if i.role == vmss]
        if target < len(members):
            doomed = sorted(members, key=lambda i: i.index)[target:]
            request_id = self.delete(vmss, [i.id for i in doomed], action="scale")
        else:
            request_id = self._scale_out(dep, vmss, target - len(members))
        with self.lock:
            self.pending[vmss] = (target, request_id)
        return request_id

    def delete(self, vmss: str, instance_ids: list[str], *, action: str = "delete") -> str:
        """Start removing the fabric instances ``instance_ids`` of ``vmss`` (Delete Role Instances)."""
        from harness.fabric import views
        from harness.fabric.deployments import ApiProblem

        service, dep = self.deployment()
        left = sum(1 for i in dep.spec.instances if i.role == vmss and i.id not in instance_ids)
        if left < 1:
            raise errors.operation_not_allowed(
                f"The local fabric keeps at least one VM in scale set '{vmss}' (its deployment keeps a role "
                f"instance): the {action} would remove them all."
            )
        try:
            return str(self.b.hosted.delete_role_instances(service, slot=dep.slot, name=None, names=instance_ids))
        except views.Conflict:
            raise errors.conflict() from None
        except ApiProblem as exc:
            raise errors.ArmError(exc.status, "InvalidParameter", exc.message) from None

    def _scale_out(self, dep: Any, vmss: str, count: int) -> str:
        from harness.fabric import views

        hosted = self.b.hosted
        try:
            op = hosted.begin(dep, "scale-out")
        except views.Conflict:
            raise errors.conflict() from None
        try:
            slots = self._reserve(dep.spec, vmss, count)
        except errors.ArmError:
            op.status = platform.SUCCEEDED  # nothing started: release the deployment again
            raise

        def work() -> None:
            self._add(dep, vmss, slots)

        return str(hosted.run(op, work))

    def _add(self, dep: Any, vmss: str, slots: list[tuple[int, str]]) -> None:
        from harness.fabric.deployments import each  # every instance at once, as the deployments do

        ins = dep.instances
        spec: DeploymentSpec = dep.spec
        new = [new_instance(spec, vmss, index, address) for index, address in slots]
        role = dataclasses.replace(spec.role(vmss), instances=spec.role(vmss).instances + len(new))
        grown = dataclasses.replace(
            spec,
            roles=tuple(role if r.name == vmss else r for r in spec.roles),
            instances=(*spec.instances, *new),
        )
        configs = {}
        for inst in new:
            config = self.b.instance_config(inst, grown, dep.layout)
            config.update(guest_identity(grown, inst))  # served as a scale set: the VM's own name and ids
            configs[inst.id] = config
        with self.b.hosted.lock, ins.lock:
            ins.configs.update(configs)
            for inst in new:
                ins.phase[inst.id] = platform.STARTING_VM
            dep.spec = grown
            ins.spec = grown
        if ins is self.b.instances:
            self.b.production_changed(dep)  # the ARM view and fabric.json show the new VMs (Creating)
        try:
            for inst in new:
                ins.prepare(inst)
            each(ins.start, [i.id for i in new])
            with ins.lock:
                for inst in new:
                    ins.phase[inst.id] = platform.BUSY
            ins.on_change()
            time.sleep(ins.step_seconds)
            for inst in new:
                ins.set_ready(inst.id, True)
        except BaseException:
            self._withdraw(dep, spec, new)  # the set keeps its VMs of before; the operation fails
            raise
        finally:
            with ins.lock:
                for inst in new:
                    ins.phase.pop(inst.id, None)
        if dep.haproxy is not None:  # the backend pool follows: HAProxy again with the new servers
            dep.haproxy.stop()
        self.b.hosted.start_balancer(dep)
        if ins is self.b.instances:
            self.b.production_changed(dep)

    def _withdraw(self, dep: Any, spec: DeploymentSpec, new: list[InstanceSpec]) -> None:
        """A scale-out that failed: its VMs stop and leave the deployment again (their ids stay used)."""
        ins = dep.instances
        for inst in new:
            try:
                ins.stop(inst.id)
            except Exception:  # already gone: nothing to stop
                continue
        with self.b.hosted.lock, ins.lock:
            dep.spec = spec
            ins.spec = spec
            for inst in new:
                ins.configs.pop(inst.id, None)
                ins.power.pop(inst.id, None)
        if ins is self.b.instances:
            self.b.production_changed(dep)


def new_instance(spec: DeploymentSpec, vmss: str, index: int, address: str) -> InstanceSpec:
    """A new VM of ``vmss`` as the spec builder makes an instance: its own listening ports, its instance input
    endpoints' public ports (the declared range's port for ``index`` when it can be bound, else an allocated
    one), upgrade and fault domain from the index."""
    role = spec.role(vmss)
    ports = iter(allocate(len(role.endpoints) + 3, udp=True))
    endpoint_ports = {e.name: next(ports) for e in role.endpoints}
    agent, winrm_https, winrm_http = next(ports), next(ports), next(ports)
    winrm = {"winrm-https": winrm_https, "winrm-http": winrm_http}
    endpoint_ports.update({e.name: winrm[e.serves] for e in role.endpoints if e.serves in winrm})
    taken = {p for i in spec.instances for p in i.instance_public_ports.values()} | {
        e.public_port for e in spec.input_endpoints
    }
    public: dict[str, int] = {}
    declared: dict[str, int | None] = {}
    for ep in role.endpoints:
        if ep.kind != "InstanceInputEndpoint":
            continue
        udp = ep.protocol == "udp"
        wanted = _range_port(spec, vmss, ep.name, index)
        if wanted is not None and wanted not in taken and bind_problem(spec.vip, wanted, udp=udp) is None:
            public[ep.name], declared[ep.name] = wanted, wanted
        else:
            (public[ep.name],) = allocate(1, udp=udp, host=spec.vip)
            declared[ep.name] = None
        taken.add(public[ep.name])
    return InstanceSpec(
        id=f"{vmss}_IN_{index}",
        role=vmss,
        index=index,
        upgrade_domain=index % 5,
        fault_domain=index % 2,
        endpoint_ports=endpoint_ports,
        instance_public_ports=public,
        instance_declared_ports=declared,
        agent_port=agent,
        winrm_https_port=winrm_https,
        winrm_http_port=winrm_http,
        internal_ip=address,
    )


def _range_port(spec: DeploymentSpec, vmss: str, endpoint: str, index: int) -> int | None:
    """The port the endpoint's declared range gives instance ``index`` (its start plus the index), known from
    an instance that got its declared port; None without one."""
    for inst in spec.instances:
        got = inst.instance_declared_ports.get(endpoint) if inst.role == vmss else None
        if got is not None:
            port = got - inst.index + index
            return port if 0 < port < 65536 else None
    return None
