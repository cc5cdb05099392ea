"""Copy the firewall policy stores (local, Group Policy, defaults) out of the hives and merge them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from harness.facts.image_firewall import FirewallPolicy, FirewallStoreValues, effective_policy
from harness.readers.image.regf import Hive, Key, values_of

LOCAL_BASE = "Services\\SharedAccess\\Parameters\\FirewallPolicy"
DEFAULTS_BASE = "Services\\SharedAccess\\Defaults\\FirewallPolicy"
GPO_BASE = "Policies\\Microsoft\\WindowsFirewall"
LOCAL_PROFILES = ("DomainProfile", "StandardProfile", "PublicProfile")
GPO_PROFILES = ("DomainProfile", "PrivateProfile", "PublicProfile", "StandardProfile")

#: Wraps the read of one key: ``with guard(hive, key_path): ...`` (the extractor names damage met inside).
Guard = Callable[[Hive, str], contextlib.AbstractContextManager[None]]


def _unguarded(hive: Hive, path: str) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


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


def firewall_policy(
    system: Hive, software: Hive | None, control_set: str, *, guard: Guard = _unguarded
) -> FirewallPolicy | None:
    """The effective policy of the control set ``control_set`` (e.g. ``ControlSet001``). Each store is read
    under ``guard(hive, key path)``, so that damage is reported naming the hive and the store's key."""
    local_path = f"{control_set}\\{LOCAL_BASE}"
    with guard(system, local_path):
        local = _store(system.key(local_path), LOCAL_PROFILES)
    gpo = None
    if software is not None:
        with guard(software, GPO_BASE):
            gpo = _store(software.key(GPO_BASE), GPO_PROFILES)
    defaults_path = f"{control_set}\\{DEFAULTS_BASE}\\FirewallRules"
    with guard(system, defaults_path):
        defaults = values_of(system.key(defaults_path))
    if local is None and gpo is None:
        return None
    return effective_policy(local or FirewallStoreValues(), gpo, defaults_rules=defaults or None)
