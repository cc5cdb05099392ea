"""An ARM template as the fabric's deployment: its scale sets and load balancers become a service model.

``vmrole fabric up --api vmss --template azuredeploy.json`` reads the template's
``Microsoft.Compute/virtualMachineScaleSets`` and ``Microsoft.Network/loadBalancers`` resources
(https://learn.microsoft.com/en-us/azure/azure-resource-manager/templates/syntax) and writes the equivalent
csdef/cscfg, which the fabric then runs as usual:

| template | service model |
|---|---|
| scale set ``name``, ``sku.name`` (Standard_A0 … A4), ``sku.capacity`` | VirtualMachineRole, vmsize, instances |
| load-balancing rule (``frontendPort``, ``backendPort``, ``protocol``; an Http probe makes it http) | InputEndpoint |
| inbound NAT pool (``frontendPortRangeStart``–``End``, ``backendPort``) | InstanceInputEndpoint + FixedPortRange |
| ``storageProfile.dataDisks[]`` (``lun``, ``diskSizeGB``) | LocalStorage ``datadisk<lun>``, kept by reimage |

A load balancer belongs to the scale sets whose network profile names it (or to the only scale set). Only
``[parameters('p')]`` and ``[variables('v')]`` are resolved (a parameter's ``defaultValue``, or ``value`` in a
``parameters`` section); any other expression where a number or name is needed is an error naming the file and
the JSON path, as is a template over 4 MiB, no scale set, a capacity outside 1–20 or a port outside 1–65535.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from harness.fabric.arm.resources import CLASSIC_SIZES
from harness.fabric.spec import SpecError

MAX_BYTES = 4 * 1024 * 1024
MAX_CAPACITY = 20
_EXPR = re.compile(r"^\[\s*(parameters|variables)\(\s*'([^']+)'\s*\)\s*\]$")
_SIZES = {v.lower(): k for k, v in CLASSIC_SIZES.items()}
_CLASSIC_NAMES = {
    "extrasmall": "ExtraSmall",
    "small": "Small",
    "medium": "Medium",
    "large": "Large",
    "extralarge": "ExtraLarge",
}


class _Template:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise SpecError(f"{path}: cannot read the template ({exc.strerror})") from None
        if size > MAX_BYTES:
            raise SpecError(f"{path}: the template is {size} bytes; ARM takes at most {MAX_BYTES} (4 MiB)")
        try:
            self.doc = json.loads(path.read_bytes().decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise SpecError(f"{path}: not a JSON template ({exc})") from None
        if not isinstance(self.doc, dict) or not isinstance(self.doc.get("resources"), list):
            raise SpecError(f"{path}: not an ARM template (no 'resources' array)")
        params, variables = self.doc.get("parameters"), self.doc.get("variables")
        self.parameters: dict[str, Any] = params if isinstance(params, dict) else {}
        self.variables: dict[str, Any] = variables if isinstance(variables, dict) else {}

    def fail(self, where: str, problem: str) -> SpecError:
        return SpecError(f"{self.path}: {where}: {problem}")

    def value(self, raw: Any, where: str, depth: int = 0) -> Any:
        if isinstance(raw, str) and raw.startswith("[") and not raw.startswith("[["):
            m = _EXPR.match(raw)
            if m is None or depth > 8:
                raise self.fail(
                    where, f"the expression {raw!r} is not resolved by the fabric (only parameters/variables)"
                )
            kind, name = m.groups()
            table = self.parameters if kind == "parameters" else self.variables
            if name not in table:
                raise self.fail(where, f"{kind[:-1]} {name!r} is not declared")
            entry = table[name]
            if kind == "parameters":
                if not isinstance(entry, dict) or ("defaultValue" not in entry and "value" not in entry):
                    raise self.fail(where, f"parameter {name!r} has no defaultValue")
                entry = entry.get("value", entry.get("defaultValue"))
            return self.value(entry, where, depth + 1)
        return raw

    def integer(self, raw: Any, where: str, low: int, high: int) -> int:
        value = self.value(raw, where)
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise self.fail(where, f"{value!r} is not a whole number from {low} to {high}")
        return value

    def name(self, raw: Any, where: str) -> str:
        value = self.value(raw, where)
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"{value!r} is not a name")
        return value


def _role_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return cleaned if cleaned[:1].isalpha() else f"R{cleaned}"


def _lb_names(t: _Template, index: int, lb: dict[str, Any]) -> set[str]:
    """The load balancer's name as written and as resolved: how a scale set's network profile may name it."""
    raw = lb.get("name")
    names = {str(raw)} if raw else set()
    with contextlib.suppress(SpecError):
        names.add(t.name(raw, f"resources[{index}].name"))
    return names


def _quoted(text: str) -> set[str]:
    """Every name-like piece of a JSON text: the strings and the quoted arguments inside expressions."""
    return set(re.findall(r"'([^']+)'", text)) | set(re.findall(r'"([^"]+)"', text))


def _data_disks(t: _Template, index: int, vmss: dict[str, Any]) -> list[str]:
    """``virtualMachineProfile.storageProfile.dataDisks`` as LocalStorage resources ``datadisk<lun>`` that a
    reimage keeps (cleanOnRoleRecycle=false), ``sizeInMB`` from ``diskSizeGB``."""
    profile = _props(vmss).get("virtualMachineProfile")
    storage = profile.get("storageProfile") if isinstance(profile, dict) else None
    disks = storage.get("dataDisks") if isinstance(storage, dict) else None
    out = []
    for k, disk in enumerate(disks if isinstance(disks, list) else []):
        where = f"resources[{index}].properties.virtualMachineProfile.storageProfile.dataDisks[{k}]"
        if not isinstance(disk, dict):
            raise t.fail(where, "not an object")
        lun = t.integer(disk.get("lun"), f"{where}.lun", 0, 63)
        size = t.integer(disk.get("diskSizeGB", 1), f"{where}.diskSizeGB", 1, 32767)
        out.append(f'      <LocalStorage name="datadisk{lun}" sizeInMB="{size * 1024}" cleanOnRoleRecycle="false" />')
    return out


def _props(resource: dict[str, Any]) -> dict[str, Any]:
    props = resource.get("properties")
    return props if isinstance(props, dict) else {}


def service_model(path: Path, out_dir: Path) -> tuple[str, str]:
    """Write ``ServiceDefinition.csdef`` and ``ServiceConfiguration.cscfg`` for the template into ``out_dir``;
    returns their paths. Raises :class:`SpecError` naming the file and the problem."""
    t = _Template(path)
    scale_sets, balancers = [], []
    for i, res in enumerate(t.doc["resources"]):
        if not isinstance(res, dict):
            continue
        kind = str(res.get("type", "")).lower()
        if kind == "microsoft.compute/virtualmachinescalesets":
            scale_sets.append((i, res))
        elif kind == "microsoft.network/loadbalancers":
            balancers.append((i, res))
    if not scale_sets:
        raise SpecError(f"{path}: the template has no Microsoft.Compute/virtualMachineScaleSets resource")
    roles, configs = [], []
    used_ports: set[int] = set()
    for i, vmss in scale_sets:
        where = f"resources[{i}]"
        name = t.name(vmss.get("name"), f"{where}.name")
        raw_sku = vmss.get("sku")
        sku: dict[str, Any] = raw_sku if isinstance(raw_sku, dict) else {}
        capacity = t.integer(sku.get("capacity", 1), f"{where}.sku.capacity", 1, MAX_CAPACITY)
        size_name = str(t.value(sku.get("name", "Standard_A1"), f"{where}.sku.name"))
        vmsize = _CLASSIC_NAMES.get(_SIZES.get(size_name.lower(), "small"), "Small")
        text = json.dumps(vmss)
        mine = [(j, lb) for j, lb in balancers if _lb_names(t, j, lb) & _quoted(text)]
        if not mine and len(scale_sets) == 1:
            mine = balancers
        endpoints = []
        for j, lb in mine:
            lb_props = _props(lb)
            probes = {
                str(p.get("name")): str(_props(p).get("protocol", "Tcp")).lower()
                for p in lb_props.get("probes", []) or []
                if isinstance(p, dict)
            }
            for k, rule in enumerate(lb_props.get("loadBalancingRules", []) or []):
                rw = f"resources[{j}].properties.loadBalancingRules[{k}]"
                rp = _props(rule)
                front = t.integer(rp.get("frontendPort"), f"{rw}.properties.frontendPort", 1, 65535)
                back = t.integer(rp.get("backendPort", front), f"{rw}.properties.backendPort", 1, 65535)
                if front in used_ports:
                    raise t.fail(f"{rw}.properties.frontendPort", f"port {front} is already used by another rule")
                used_ports.add(front)
                protocol = str(t.value(rp.get("protocol", "Tcp"), f"{rw}.properties.protocol")).lower()
                probe_ref = json.dumps(rp.get("probe", ""))
                http = any(n in probe_ref and proto == "http" for n, proto in probes.items())
                proto = "udp" if protocol == "udp" else ("http" if http else "tcp")
                ep_name = _role_name(t.name(rule.get("name"), f"{rw}.name"))
                endpoints.append(
                    f'      <InputEndpoint name={quoteattr(ep_name)} protocol="{proto}" port="{front}" '
                    f'localPort="{back}" />'
                )
            for k, pool in enumerate(lb_props.get("inboundNatPools", []) or []):
                pw = f"resources[{j}].properties.inboundNatPools[{k}]"
                pp = _props(pool)
                low = t.integer(pp.get("frontendPortRangeStart"), f"{pw}.properties.frontendPortRangeStart", 1, 65535)
                high = t.integer(pp.get("frontendPortRangeEnd"), f"{pw}.properties.frontendPortRangeEnd", low, 65535)
                back = t.integer(pp.get("backendPort"), f"{pw}.properties.backendPort", 1, 65535)
                ep_name = _role_name(t.name(pool.get("name"), f"{pw}.name"))
                endpoints.append(
                    f'      <InstanceInputEndpoint name={quoteattr(ep_name)} localPort="{back}" protocol="tcp">\n'
                    f'        <AllocatePublicPortFrom><FixedPortRange min="{low}" max="{high}" />'
                    "</AllocatePublicPortFrom>\n      </InstanceInputEndpoint>"
                )
        role = _role_name(name)
        parts = []
        if endpoints:
            parts.append("    <Endpoints>\n" + "\n".join(endpoints) + "\n    </Endpoints>")
        storage = _data_disks(t, i, vmss)
        if storage:
            parts.append("    <LocalResources>\n" + "\n".join(storage) + "\n    </LocalResources>")
        roles.append(
            f"  <VirtualMachineRole name={quoteattr(role)} vmsize={quoteattr(vmsize)}>\n"
            + "\n".join(parts)
            + "\n  </VirtualMachineRole>"
            if parts
            else f"  <VirtualMachineRole name={quoteattr(role)} vmsize={quoteattr(vmsize)} />"
        )
        configs.append(f'  <Role name={quoteattr(role)}>\n    <Instances count="{capacity}" />\n  </Role>')
    service = _role_name(path.stem) or "Template"
    csdef = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f"<ServiceDefinition name={quoteattr(service)} "
        'xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition">\n'
        + "\n".join(roles)
        + "\n</ServiceDefinition>\n"
    )
    cscfg = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<ServiceConfiguration serviceName={quoteattr(service)} osFamily="2" osVersion="*" '
        'xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration">\n'
        + "\n".join(configs)
        + "\n</ServiceConfiguration>\n"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    csdef_path, cscfg_path = out_dir / "ServiceDefinition.csdef", out_dir / "ServiceConfiguration.cscfg"
    csdef_path.write_text(csdef, "utf-8")
    cscfg_path.write_text(cscfg, "utf-8")
    return str(csdef_path), str(cscfg_path)
