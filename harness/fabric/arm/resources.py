"""The fabric's state as ARM JSON: scale sets, their VMs and instance views, the load balancer, public IP
and network interfaces, shaped as the Compute (2026-04-01) and Network (2026-03-01; scale-set NICs
2018-10-01) API versions define them (tests/data/azure-rest-api-specs/ holds the definitions the tests check
every response against).

How a Cloud Service deployment maps (one scale set per role, named after it; instance ``<Role>_IN_<n>`` is
scale-set VM ``n``):

| fabric | ARM |
|---|---|
| role vmsize Small … ExtraLarge | ``sku.name`` Standard_A1 … Standard_A4 (the classic size table) |
| ``<Instances count>`` | ``sku.capacity`` |
| InputEndpoint | LB rule + probe (``frontendPort`` the reachable VIP port, ``backendPort`` the local port) |
| InstanceInputEndpoint | inbound NAT pool + one NAT rule per instance (``<pool>.<instanceId>``) |
| instance ready and in HAProxy's rotation / busy, crashed | ``vmHealth`` HealthState/healthy / unhealthy |
| phase StoppingRole … BusyRole | ``ProvisioningState/updating``, PowerState stopping/stopped/starting/running |
| internal address | the NIC's ``privateIPAddress`` |
| LocalStorage (``drives/local/<name>``) | a data disk (lun in declaration order, ``diskSizeGB`` from sizeInMB) |
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.facts.live import platform

LOCATION = "local"
COMPUTE = "Microsoft.Compute"
NETWORK = "Microsoft.Network"
VMSS_TYPE = f"{COMPUTE}/virtualMachineScaleSets"
VM_TYPE = f"{VMSS_TYPE}/virtualMachines"
LB_TYPE = f"{NETWORK}/loadBalancers"
PIP_TYPE = f"{NETWORK}/publicIPAddresses"
NIC_TYPE = f"{NETWORK}/networkInterfaces"
CLASSIC_SIZES = {  # https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-sizes-specs
    "extrasmall": "Standard_A0",
    "small": "Standard_A1",
    "medium": "Standard_A2",
    "large": "Standard_A3",
    "extralarge": "Standard_A4",
}
AGENT_VERSION = "2.7.41491.1102"


def arm_size(vmsize: str) -> str:
    return CLASSIC_SIZES.get(vmsize.lower(), vmsize)


def _iso(ts: float | None = None) -> str:
    ts = time.time() if ts is None else ts
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e7):07d}+00:00"


def _guid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


def computer_name(role: str, index: int) -> str:
    """A scale-set VM's computer name: the set's ``computerNamePrefix`` (the role name, lower case, at most 9
    characters) and its instance id in six digits, as Azure names Uniform scale-set VMs."""
    return f"{role[:9].lower()}{index:06d}"


def unique_id(deployment_id: str, vmss: str) -> str:
    """The scale set's ``uniqueId``: stable for one deployment and scale set."""
    return _guid(deployment_id, vmss)


def guest_identity(spec: Any, inst: Any) -> dict[str, str]:
    """What an instance of a deployment served as a scale set shows of itself (``instance_config``'s keys):
    ``name``, the computer name it answers as (served-by, banner); ``deployment_id``, the id its data-disk
    stand-ins (LocalStorage) are mounted under, the scale set's uniqueId (the id the facts carry)."""
    return {"name": computer_name(inst.role, inst.index), "deployment_id": unique_id(spec.deployment_id, inst.role)}


def _status(code: str, display: str, level: str = "Info", when: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"code": code, "level": level, "displayStatus": display}
    if when is not None:
        out["time"] = _iso(when)
    return out


@dataclass(frozen=True)
class Names:
    """Where the deployment lives in ARM: subscription, resource group and the names derived from the spec."""

    subscription: str
    group: str
    image: str  # the image name (the VM role's OsImage href or --image, without .vhd)

    def group_id(self) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{self.group}"

    def rid(self, provider_type: str, name: str) -> str:
        return f"{self.group_id()}/providers/{provider_type}/{name}"


class View:
    """Renders one moment of the fabric (``backend`` is the controller: ``spec``, ``instances``)."""

    def __init__(self, backend: Any, names: Names, created: float) -> None:
        self.b = backend
        self.n = names
        self.created = created
        #: scale set -> the capacity an update under way goes to, else None (the ARM server's Scaler)
        self.pending: Callable[[str], int | None] = lambda vmss: None

    # ---- naming ---------------------------------------------------------------------------------
    @property
    def spec(self) -> Any:
        return self.b.spec

    @property
    def admin_user(self) -> str:
        return str(getattr(self.b, "winrm_user", "vmradmin"))

    def lb_name(self) -> str:
        return f"{self.spec.service_name}-lb"

    def pip_name(self) -> str:
        return f"{self.spec.service_name}-ip"

    def vmss_names(self) -> list[str]:
        return [r.name for r in self.spec.roles]

    def role(self, vmss: str) -> Any:
        return self.spec.role(vmss)

    def members(self, vmss: str) -> list[Any]:
        return [i for i in self.spec.instances if i.role == vmss]

    def member(self, vmss: str, instance_id: str) -> Any | None:
        for inst in self.members(vmss):
            if str(inst.index) == instance_id:
                return inst
        return None

    def vmss_id(self, vmss: str) -> str:
        return self.n.rid(VMSS_TYPE, vmss)

    def vm_id(self, inst: Any) -> str:
        return f"{self.vmss_id(inst.role)}/virtualMachines/{inst.index}"

    def lb_id(self) -> str:
        return self.n.rid(LB_TYPE, self.lb_name())

    def lb_child(self, kind: str, name: str) -> str:
        return f"{self.lb_id()}/{kind}/{name}"

    def pip_id(self) -> str:
        return self.n.rid(PIP_TYPE, self.pip_name())

    def nic_config_name(self, vmss: str) -> str:
        return f"{vmss.lower()}-nic"

    def nic_id(self, inst: Any) -> str:
        return f"{self.vm_id(inst)}/networkInterfaces/{self.nic_config_name(inst.role)}"

    def ipconfig_id(self, inst: Any) -> str:
        return f"{self.nic_id(inst)}/ipConfigurations/ipconfig1"

    def subnet_id(self) -> str:
        return f"{self.n.rid(f'{NETWORK}/virtualNetworks', f'{self.spec.service_name}-vnet')}/subnets/default"

    def image_id(self) -> str:
        return self.n.rid(f"{COMPUTE}/images", self.n.image)

    def computer_name(self, inst: Any) -> str:
        return computer_name(inst.role, inst.index)

    def _etag(self, *parts: str) -> str:
        return f'W/"{_guid(self.spec.deployment_id, *parts)}"'

    # ---- instance state ---------------------------------------------------------------------------
    def phase(self, inst: Any) -> tuple[str, str, bool]:
        """(provisioning state, power state, healthy) of one instance now."""
        instances = self.b.instances
        with instances.lock:
            phase = instances.phase.get(inst.id)
            power = instances.power.get(inst.id, platform.STARTED)
        status = instances.status(inst.id)
        if phase is not None:
            power_code = {
                platform.STOPPING: "stopping",
                platform.STOPPED_VM: "stopped",
                platform.STARTING_VM: "starting",
            }.get(phase, "running")
            return "Updating", power_code, False
        if power in (platform.STOPPED, "Stopping"):
            return "Succeeded", "stopped" if power == platform.STOPPED else "stopping", False
        if power == "Deallocated":
            return "Succeeded", "deallocated", False
        if status == platform.UNRESPONSIVE:
            return "Succeeded", "running", False
        return "Succeeded", "running", status == platform.READY and self.in_rotation(inst)

    def in_rotation(self, inst: Any) -> bool:
        """Whether the load balancer's health probe passes: the instance is in its HAProxy backend's rotation
        (a crashed app drops out after the probe's removal window). True when the role has no balanced
        endpoint or HAProxy cannot be asked."""
        from harness.fabric.haproxy import backend_name

        rules = [e for e in self.role(inst.role).endpoints if e.kind == "InputEndpoint" and e.protocol != "udp"]
        haproxy = getattr(self.b, "haproxy", None)
        if not rules or haproxy is None:
            return True
        try:
            return inst.id in haproxy.runtime.in_rotation(backend_name(inst.role, rules[0].name))
        except Exception:  # HAProxy restarting or gone: the instance's own status decides
            return True

    def vm_instance_view(self, inst: Any) -> dict[str, Any]:
        provisioning, power, healthy = self.phase(inst)
        role = self.role(inst.role)
        agent_ready = power == "running" and provisioning == "Succeeded"
        prov_status = (
            _status("ProvisioningState/succeeded", "Provisioning succeeded", when=self.created)
            if provisioning == "Succeeded"
            else _status("ProvisioningState/updating", "Updating")
        )
        power_display = {
            "running": "VM running",
            "stopping": "VM stopping",
            "stopped": "VM stopped",
            "starting": "VM starting",
            "deallocated": "VM deallocated",
        }[power]
        view: dict[str, Any] = {
            "platformUpdateDomain": inst.upgrade_domain,
            "platformFaultDomain": inst.fault_domain,
            "computerName": self.computer_name(inst),
            "osName": "Windows Server 2008 R2 Datacenter",
            "osVersion": "6.1.7601",
            "vmAgent": {
                "vmAgentVersion": AGENT_VERSION if agent_ready else "Unknown",
                "statuses": [
                    _status("ProvisioningState/succeeded", "Ready", when=time.time())
                    if agent_ready
                    else _status("ProvisioningState/Unavailable", "Not Ready", level="Warning", when=time.time())
                ],
            },
            "disks": [
                {
                    "name": name,
                    "statuses": [_status("ProvisioningState/succeeded", "Provisioning succeeded", when=self.created)],
                }
                for name in [f"{inst.role}_{inst.index}_OsDisk"]
                + [f"{inst.role}_{inst.index}_{s.name}" for s in role.local_storage]
            ],
            "statuses": [prov_status, _status(f"PowerState/{power}", power_display)],
        }
        if any(e.kind == "InputEndpoint" for e in role.endpoints):
            view["vmHealth"] = {
                "status": _status(
                    "HealthState/healthy" if healthy else "HealthState/unhealthy",
                    "The VM is healthy" if healthy else "The VM is unhealthy",
                )
            }
        return view

    # ---- Compute --------------------------------------------------------------------------------
    def storage_profile(self, vmss: str, inst: Any | None = None) -> dict[str, Any]:
        os_disk: dict[str, Any] = {
            "osType": "Windows",
            "createOption": "FromImage",
            "caching": "ReadWrite",
            "managedDisk": {"storageAccountType": "Standard_LRS"},
            "diskSizeGB": 127,
        }
        if inst is not None:
            name = f"{inst.role}_{inst.index}_OsDisk"
            os_disk = {"name": name, **os_disk}
            os_disk["managedDisk"] = {
                "storageAccountType": "Standard_LRS",
                "id": self.n.rid(f"{COMPUTE}/disks", name),
            }
        return {"imageReference": {"id": self.image_id()}, "osDisk": os_disk, "dataDisks": self.data_disks(vmss, inst)}

    def data_disks(self, vmss: str, inst: Any | None = None) -> list[dict[str, Any]]:
        """The role's LocalStorage resources, one data disk each (lun in declaration order): what a reimage keeps
        and ``reimageall`` or the lose-local-storage fault loses."""
        disks = []
        for lun, storage in enumerate(self.role(vmss).local_storage):
            disk: dict[str, Any] = {
                "lun": lun,
                "createOption": "Empty",
                "caching": "None",
                "managedDisk": {"storageAccountType": "Standard_LRS"},
                "diskSizeGB": max(1, -(-storage.size_mb // 1024)),
            }
            if inst is not None:
                name = f"{inst.role}_{inst.index}_{storage.name}"
                disk = {"lun": lun, "name": name, **{k: v for k, v in disk.items() if k != "lun"}}
                disk["managedDisk"] = {"storageAccountType": "Standard_LRS", "id": self.n.rid(f"{COMPUTE}/disks", name)}
                disk["toBeDetached"] = False
            disks.append(disk)
        return disks

    def network_profile(self, vmss: str) -> dict[str, Any]:
        role = self.role(vmss)
        pools = [{"id": self.lb_child("backendAddressPools", vmss)}] if self._has_rules(vmss) else []
        nat_pools = [
            {"id": self.lb_child("inboundNatPools", f"{vmss}-{e.name}")}
            for e in role.endpoints
            if e.kind == "InstanceInputEndpoint"
        ]
        ipconfig: dict[str, Any] = {
            "subnet": {"id": self.subnet_id()},
            "privateIPAddressVersion": "IPv4",
            "loadBalancerBackendAddressPools": pools,
            "loadBalancerInboundNatPools": nat_pools,
        }
        profile: dict[str, Any] = {
            "networkInterfaceConfigurations": [
                {
                    "name": self.nic_config_name(vmss),
                    "properties": {
                        "primary": True,
                        "enableAcceleratedNetworking": False,
                        "enableIPForwarding": False,
                        "ipConfigurations": [{"name": "ipconfig1", "properties": ipconfig}],
                    },
                }
            ]
        }
        probe = self._probe_names(vmss)
        if probe:
            profile["healthProbe"] = {"id": self.lb_child("probes", probe[0])}
        return profile

    def os_profile(self, vmss: str) -> dict[str, Any]:
        return {
            "computerNamePrefix": vmss[:9].lower(),
            "adminUsername": self.admin_user,
            "windowsConfiguration": {"provisionVMAgent": True, "enableAutomaticUpdates": True},
            "secrets": [],
            "allowExtensionOperations": True,
            "requireGuestProvisionSignal": True,
        }

    def vmss(self, vmss: str) -> dict[str, Any]:
        role = self.role(vmss)
        members = self.members(vmss)
        target = self.pending(vmss)
        updating = target is not None or any(self.phase(i)[0] != "Succeeded" for i in members)
        return {
            "id": self.vmss_id(vmss),
            "name": vmss,
            "type": VMSS_TYPE,
            "location": LOCATION,
            "sku": {
                "name": arm_size(role.vmsize),
                "tier": "Standard",
                "capacity": len(members) if target is None else target,
            },
            "properties": {
                "singlePlacementGroup": True,
                "orchestrationMode": "Uniform",
                "upgradePolicy": {"mode": "Manual"},
                "virtualMachineProfile": {
                    "osProfile": self.os_profile(vmss),
                    "storageProfile": self.storage_profile(vmss),
                    "networkProfile": self.network_profile(vmss),
                },
                "provisioningState": "Updating" if updating else "Succeeded",
                "overprovision": False,
                "doNotRunExtensionsOnOverprovisionedVMs": False,
                "uniqueId": unique_id(self.spec.deployment_id, vmss),
                "platformFaultDomainCount": 1,
                "timeCreated": _iso(self.created),
            },
        }

    def vmss_instance_view(self, vmss: str) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for inst in self.members(vmss):
            code = "ProvisioningState/" + self.phase(inst)[0].lower()
            counts[code] = counts.get(code, 0) + 1
        updating = any(code != "ProvisioningState/succeeded" for code in counts)
        return {
            "virtualMachine": {"statusesSummary": [{"code": c, "count": n} for c, n in sorted(counts.items())]},
            "statuses": [
                _status("ProvisioningState/updating", "Updating")
                if updating
                else _status("ProvisioningState/succeeded", "Provisioning succeeded", when=self.created)
            ],
        }

    def vm(self, inst: Any, *, expand: bool = False) -> dict[str, Any]:
        role = self.role(inst.role)
        provisioning = self.phase(inst)[0]
        props: dict[str, Any] = {
            "latestModelApplied": True,
            "modelDefinitionApplied": "VirtualMachineScaleSet",
            "vmId": _guid(self.spec.deployment_id, inst.id),
            "hardwareProfile": {"vmSize": arm_size(role.vmsize)},
            "storageProfile": self.storage_profile(inst.role, inst),
            "osProfile": {
                "computerName": self.computer_name(inst),
                "adminUsername": self.admin_user,
                "windowsConfiguration": {"provisionVMAgent": True, "enableAutomaticUpdates": True},
                "secrets": [],
                "allowExtensionOperations": True,
                "requireGuestProvisionSignal": True,
            },
            "networkProfile": {"networkInterfaces": [{"id": self.nic_id(inst)}]},
            "networkProfileConfiguration": {
                "networkInterfaceConfigurations": self.network_profile(inst.role)["networkInterfaceConfigurations"]
            },
            "provisioningState": provisioning,
            "timeCreated": _iso(self.created),
        }
        if expand:
            props["instanceView"] = self.vm_instance_view(inst)
        return {
            "id": self.vm_id(inst),
            "name": f"{inst.role}_{inst.index}",
            "type": VM_TYPE,
            "location": LOCATION,
            "instanceId": str(inst.index),
            "sku": {"name": arm_size(role.vmsize), "tier": "Standard"},
            "properties": props,
        }

    # ---- Network --------------------------------------------------------------------------------
    def _rules(self, vmss: str) -> list[Any]:
        return [e for e in self.role(vmss).endpoints if e.kind == "InputEndpoint"]

    def _has_rules(self, vmss: str) -> bool:
        return bool(self._rules(vmss))

    def _probe_names(self, vmss: str) -> list[str]:
        return [f"{vmss}-{e.name}-probe" for e in self._rules(vmss)]

    def _sub(self, kind: str, name: str, child_type: str, props: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "id": self.lb_child(kind, name),
            "etag": self._etag("lb", kind, name),
            "type": f"{LB_TYPE}/{child_type}",
            "properties": {"provisioningState": "Succeeded", **props},
        }

    def load_balancer(self) -> dict[str, Any]:
        frontend = self.lb_child("frontendIPConfigurations", "LoadBalancerFrontEnd")
        rules, probes, pools, nat_pools, nat_rules = [], [], [], [], []
        for vmss in self.vmss_names():
            members = self.members(vmss)
            rule_refs = [{"id": self.lb_child("loadBalancingRules", f"{vmss}-{e.name}")} for e in self._rules(vmss)]
            if rule_refs:
                pools.append(
                    self._sub(
                        "backendAddressPools",
                        vmss,
                        "backendAddressPools",
                        {
                            "backendIPConfigurations": [{"id": self.ipconfig_id(i)} for i in members],
                            "loadBalancingRules": rule_refs,
                        },
                    )
                )
            for ep in self._rules(vmss):
                rule_id = self.lb_child("loadBalancingRules", f"{vmss}-{ep.name}")
                probe_name = f"{vmss}-{ep.name}-probe"
                rules.append(
                    self._sub(
                        "loadBalancingRules",
                        f"{vmss}-{ep.name}",
                        "loadBalancingRules",
                        {
                            "frontendIPConfiguration": {"id": frontend},
                            "backendAddressPool": {"id": self.lb_child("backendAddressPools", vmss)},
                            "backendAddressPools": [{"id": self.lb_child("backendAddressPools", vmss)}],
                            "probe": {"id": self.lb_child("probes", probe_name)},
                            "protocol": "Udp" if ep.protocol == "udp" else "Tcp",
                            "loadDistribution": "Default",
                            "frontendPort": ep.public_port,
                            "backendPort": ep.local_port or ep.declared_port or 0,
                            "idleTimeoutInMinutes": 4,
                            "enableFloatingIP": False,
                            "enableTcpReset": False,
                            "disableOutboundSnat": False,
                        },
                    )
                )
                probe: dict[str, Any] = {
                    "protocol": "Http" if ep.protocol == "http" else "Tcp",
                    "port": ep.local_port or ep.declared_port or 0,
                    "intervalInSeconds": 5,
                    "numberOfProbes": 2,
                    "probeThreshold": 1,
                    "loadBalancingRules": [{"id": rule_id}],
                }
                if ep.protocol == "http":
                    probe["requestPath"] = "/"
                probes.append(self._sub("probes", probe_name, "probes", probe))
            for ep in self.role(vmss).endpoints:
                if ep.kind != "InstanceInputEndpoint":
                    continue
                pool_name = f"{vmss}-{ep.name}"
                ports = [i.instance_public_ports[ep.name] for i in members if ep.name in i.instance_public_ports]
                nat_pools.append(
                    self._sub(
                        "inboundNatPools",
                        pool_name,
                        "inboundNatPools",
                        {
                            "frontendIPConfiguration": {"id": frontend},
                            "protocol": "Udp" if ep.protocol == "udp" else "Tcp",
                            "frontendPortRangeStart": min(ports) if ports else 0,
                            "frontendPortRangeEnd": max(ports) if ports else 0,
                            "backendPort": ep.local_port or 0,
                            "idleTimeoutInMinutes": 4,
                            "enableFloatingIP": False,
                            "enableTcpReset": False,
                        },
                    )
                )
                for inst in members:
                    if ep.name not in inst.instance_public_ports:
                        continue
                    nat_rules.append(
                        self._sub(
                            "inboundNatRules",
                            f"{pool_name}.{inst.index}",
                            "inboundNatRules",
                            {
                                "frontendIPConfiguration": {"id": frontend},
                                "backendIPConfiguration": {"id": self.ipconfig_id(inst)},
                                "protocol": "Udp" if ep.protocol == "udp" else "Tcp",
                                "frontendPort": inst.instance_public_ports[ep.name],
                                "backendPort": ep.local_port or 0,
                                "idleTimeoutInMinutes": 4,
                                "enableFloatingIP": False,
                                "enableTcpReset": False,
                            },
                        )
                    )
        frontend_config = self._sub(
            "frontendIPConfigurations",
            "LoadBalancerFrontEnd",
            "frontendIPConfigurations",
            {
                "privateIPAllocationMethod": "Dynamic",
                "publicIPAddress": {"id": self.pip_id()},
                "loadBalancingRules": [{"id": r["id"]} for r in rules],
                "inboundNatPools": [{"id": p["id"]} for p in nat_pools],
                "inboundNatRules": [{"id": r["id"]} for r in nat_rules],
            },
        )
        return {
            "name": self.lb_name(),
            "id": self.lb_id(),
            "etag": self._etag("lb"),
            "type": LB_TYPE,
            "location": LOCATION,
            "sku": {"name": "Standard", "tier": "Regional"},
            "properties": {
                "provisioningState": "Succeeded",
                "resourceGuid": _guid(self.spec.deployment_id, "lb"),
                "frontendIPConfigurations": [frontend_config],
                "backendAddressPools": pools,
                "loadBalancingRules": rules,
                "probes": probes,
                "inboundNatRules": nat_rules,
                "inboundNatPools": nat_pools,
                "outboundRules": [],
            },
        }

    def public_ip(self) -> dict[str, Any]:
        label = self.spec.service_name.lower()
        return {
            "name": self.pip_name(),
            "id": self.pip_id(),
            "etag": self._etag("pip"),
            "location": LOCATION,
            "type": PIP_TYPE,
            "sku": {"name": "Standard", "tier": "Regional"},
            "properties": {
                "provisioningState": "Succeeded",
                "resourceGuid": _guid(self.spec.deployment_id, "pip"),
                "ipAddress": getattr(self.spec, "vip", "127.0.0.1"),
                "publicIPAddressVersion": "IPv4",
                "publicIPAllocationMethod": "Static",
                "idleTimeoutInMinutes": 4,
                "dnsSettings": {"domainNameLabel": label, "fqdn": f"{label}.{LOCATION}.cloudapp.azure.com"},
                "ipTags": [],
                "ipConfiguration": {"id": self.lb_child("frontendIPConfigurations", "LoadBalancerFrontEnd")},
            },
        }

    def network_interface(self, inst: Any) -> dict[str, Any]:
        vmss = inst.role
        pools = [{"id": self.lb_child("backendAddressPools", vmss)}] if self._has_rules(vmss) else []
        nat_rules = [
            {"id": self.lb_child("inboundNatRules", f"{vmss}-{e.name}.{inst.index}")}
            for e in self.role(vmss).endpoints
            if e.kind == "InstanceInputEndpoint" and e.name in inst.instance_public_ports
        ]
        mac = _guid(self.spec.deployment_id, inst.id, "mac").replace("-", "")[:12].upper()
        return {
            "name": self.nic_config_name(vmss),
            "id": self.nic_id(inst),
            "etag": self._etag("nic", inst.id),
            "location": LOCATION,
            "properties": {
                "provisioningState": "Succeeded",
                "resourceGuid": _guid(self.spec.deployment_id, inst.id, "nic"),
                "virtualMachine": {"id": self.vm_id(inst)},
                "ipConfigurations": [
                    {
                        "name": "ipconfig1",
                        "id": self.ipconfig_id(inst),
                        "etag": self._etag("nic", inst.id, "ipconfig1"),
                        "properties": {
                            "provisioningState": "Succeeded",
                            "privateIPAddress": inst.internal_ip,
                            "privateIPAllocationMethod": "Dynamic",
                            "subnet": {"id": self.subnet_id()},
                            "primary": True,
                            "privateIPAddressVersion": "IPv4",
                            "loadBalancerBackendAddressPools": pools,
                            "loadBalancerInboundNatRules": nat_rules,
                        },
                    }
                ],
                "dnsSettings": {"dnsServers": [], "appliedDnsServers": []},
                "macAddress": "-".join(mac[i : i + 2] for i in range(0, 12, 2)),
                "enableAcceleratedNetworking": False,
                "enableIPForwarding": False,
                "primary": True,
            },
        }
