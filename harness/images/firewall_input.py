"""Copy the firewall policy stores out of the hives (§3.2) and merge them (harness.facts.image_firewall)."""

from __future__ import annotations

from typing import Any

from harness.facts.image_firewall import FirewallPolicy, FirewallStoreValues, effective_policy
from harness.readers.image.regf import Hive, Key, values_of

LOCAL_BASE = "Services\\SharedAccess\\Parameters\\FirewallPolicy"
DEFAULTS_BASE = "Services\\SharedAccess\\Defaults\\FirewallPolicy"
GPO_BASE = "Policies\\Microsoft\\WindowsFirewall"
LOCAL_PROFILES = ("DomainProfile", "StandardProfile", "PublicProfile")
GPO_PROFILES = ("DomainProfile", "PrivateProfile", "PublicProfile", "StandardProfile")


def _store(base: Key | None, profile_keys: tuple[str, ...]) -> FirewallStoreValues | None:
    if base is None:
        return None
    profiles: dict[str, dict[str, Any]] = {}
    open_ports: dict[str, dict[str, Any]] = {}
    for name in profile_keys:
        key = base.subkey(name)
        if key is None:
            continue
        profiles[name] = values_of(key)
        legacy = key.subkey("GloballyOpenPorts")
        legacy_list = legacy.subkey("List") if legacy is not None else None
        if legacy_list is not None:
            open_ports[name] = values_of(legacy_list)
    return FirewallStoreValues(
        profiles=profiles,
        rules=values_of(base.subkey("FirewallRules")),
        globally_open_ports=open_ports,
        policy_version=values_of(base).get("PolicyVersion"),
    )


def firewall_policy(system: Hive, software: Hive | None, control_set: str) -> FirewallPolicy | None:
    """The effective policy of the control set ``control_set`` (e.g. ``ControlSet001``)."""
    local = _store(system.key(f"{control_set}\\{LOCAL_BASE}"), LOCAL_PROFILES)
    gpo = _store(software.key(GPO_BASE), GPO_PROFILES) if software is not None else None
    defaults = system.key(f"{control_set}\\{DEFAULTS_BASE}\\FirewallRules")
    if local is None and gpo is None:
        return None
    return effective_policy(local or FirewallStoreValues(), gpo, defaults_rules=values_of(defaults) or None)
