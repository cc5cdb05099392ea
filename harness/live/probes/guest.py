r"""Stage ``guest``: in-guest checks over WinRM (one shell per instance, reused).

Per instance, three round trips, each a command that also works on a real Windows Server 2008 R2+:

1. ``netstat -an`` — which declared local ports (InputEndpoint / InstanceInputEndpoint ``localPort``) listen;
2. ``netsh advfirewall show allprofiles state`` and ``netsh advfirewall firewall show rule name=all dir=in``
   — whether the runtime firewall lets each of those ports in (every profile that is ON needs an enabled
   inbound allow rule for it, and no enabled inbound block rule may match);
3. one PowerShell batch ``Get-Service -Name '<X>' | Select-Object Name,Status | ConvertTo-Json -Compress`` per
   configured service (``target.services``), falling back to ``sc query <X>`` when PowerShell cannot run it.

``target.app_state_paths`` on the OS drive are judged from the model alone (no WinRM).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

from harness.ascii import parse_ascii_int
from harness.facts.live.deployment import DeploymentFacts
from harness.facts.live.guest import AppStatePath, GuestFacts, InstanceGuest, PortCheck, ServiceCheck
from harness.facts.servicemodel import INPUT, INSTANCE_INPUT, ServiceDefinition, parse_int
from harness.live.context import LiveContext
from harness.live.guestops import definition_of, role_of
from harness.live.winrm_pool import WinRMError, WinRMPool, ps_quote

PROFILES = ("Domain", "Private", "Public")
LOCAL_STORAGE_PREFIX = "c:\\resources\\directory\\"
SERVICE_STATUS = {1: "Stopped", 2: "StartPending", 3: "StopPending", 4: "Running", 5: "ContinuePending",
                  6: "PausePending", 7: "Paused"}  # fmt: skip
SC_STATES = {"RUNNING": "Running", "STOPPED": "Stopped", "START_PENDING": "StartPending",
             "STOP_PENDING": "StopPending", "PAUSED": "Paused"}  # fmt: skip


def run(ctx: LiveContext) -> GuestFacts:
    definition = definition_of(ctx.target)
    pool = ctx.winrm
    results = []
    for inst in ctx.deployment().instances:
        results.append(_check_instance(ctx, pool, inst.name, inst.role, definition))
    return GuestFacts(
        instances=tuple(results),
        app_state_paths=tuple(app_state_path(p) for p in ctx.target.app_state_paths),
        services_expected=tuple(ctx.target.services),
        notes=() if definition is not None else ("no csdef in the target: endpoints from the deployment",),
    )


def _check_instance(
    ctx: LiveContext, pool: WinRMPool, name: str, role: str, definition: ServiceDefinition | None
) -> InstanceGuest:
    started = time.monotonic()
    errors: list[str] = []
    try:
        shell_id = pool.shell_id(name)
    except WinRMError as exc:
        return InstanceGuest(name, role, False, error=str(exc), seconds=time.monotonic() - started)
    declared = declared_ports(definition, role, ctx.deployment(), name)
    listening: set[tuple[str, int]] | None = None
    try:
        r = pool.run_cmd(name, "netstat -an")
        if r.rc == 0:
            listening = parse_netstat(r.stdout)
        else:
            errors.append(f"netstat -an failed (rc {r.rc}): {r.stderr.strip()[:200]}")
    except WinRMError as exc:
        errors.append(f"netstat -an: {exc}")
    profiles: dict[str, bool] | None = None
    rules: list[dict[str, str]] | None = None
    try:
        r = pool.run_cmd(name, "netsh advfirewall show allprofiles state")
        if r.rc == 0:
            profiles = parse_profiles(r.stdout)
        else:
            errors.append(f"netsh advfirewall show allprofiles state failed (rc {r.rc}): {r.stdout.strip()[:200]}")
        r = pool.run_cmd(name, "netsh advfirewall firewall show rule name=all dir=in")
        if r.rc == 0:
            rules = parse_rules(r.stdout)
        elif "No rules match" in r.stdout:
            rules = []
        else:
            errors.append(f"netsh advfirewall firewall show rule failed (rc {r.rc}): {r.stdout.strip()[:200]}")
    except WinRMError as exc:
        errors.append(f"netsh advfirewall: {exc}")
    ports = []
    for endpoint, kind, protocol, port in declared:
        allowed: bool | None = None
        blocked: tuple[str, ...] = ()
        block_rule = None
        if profiles is not None and rules is not None:
            allowed, blocked, block_rule = firewall_allows(profiles, rules, protocol, port)
        is_listening = None if listening is None else (protocol, port) in listening
        ports.append(PortCheck(endpoint, kind, protocol, port, is_listening, allowed, blocked, block_rule))
    services = _services(pool, name, tuple(ctx.target.services), errors)
    return InstanceGuest(
        instance=name,
        role=role,
        reachable=True,
        shell_id=shell_id,
        ports=tuple(ports),
        services=services,
        firewall_profiles=profiles,
        check_errors=tuple(errors),
        seconds=time.monotonic() - started,
    )


def _services(pool: WinRMPool, instance: str, names: tuple[str, ...], errors: list[str]) -> tuple[ServiceCheck, ...]:
    if not names:
        return ()
    values: list[Any] = [None] * len(names)
    try:
        values = pool.batch(instance, [f"Get-Service -Name {ps_quote(n)} | Select-Object Name,Status" for n in names])
    except WinRMError as exc:
        errors.append(f"Get-Service batch: {exc}; falling back to sc query")
    out = []
    for name, value in zip(names, values, strict=True):
        status = service_status(value)
        if status is not None:
            out.append(ServiceCheck(name, True, status))
            continue
        try:  # not found by Get-Service, or PowerShell could not run it: ask the service control manager
            r = pool.run_cmd(instance, f"sc query {name}")
        except WinRMError as exc:
            errors.append(f"sc query {name}: {exc}")
            out.append(ServiceCheck(name, None, None))
            continue
        if r.rc == 1060:
            out.append(ServiceCheck(name, False, None))
            continue
        m = re.search(r"STATE\s*:\s*\d+\s+(\w+)", r.stdout)
        if r.rc == 0 and m:
            out.append(ServiceCheck(name, True, SC_STATES.get(m.group(1), m.group(1).title())))
        else:
            errors.append(f"sc query {name} failed (rc {r.rc})")
            out.append(ServiceCheck(name, None, None))
    return tuple(out)


def service_status(value: Any) -> str | None:
    """Status from ``Get-Service | Select-Object Name,Status | ConvertTo-Json``: a number (Windows PowerShell
    writes enums as numbers) or a name."""
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, dict):
        return None
    status = next((v for k, v in value.items() if k.lower() == "status"), None)
    if isinstance(status, int):
        return SERVICE_STATUS.get(status, str(status))
    return str(status) if status is not None else None


# ---- parsing -----------------------------------------------------------------------------------


def parse_netstat(text: str) -> set[tuple[str, int]]:
    """(proto, local port) of TCP LISTENING rows and UDP rows of ``netstat -an``."""
    out: set[tuple[str, int]] = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0].upper() not in ("TCP", "UDP"):
            continue
        proto = parts[0].lower()
        if proto == "tcp" and (len(parts) < 4 or parts[3].upper() != "LISTENING"):
            continue
        local_port = parse_ascii_int(parts[1].rpartition(":")[2]) if ":" in parts[1] else None
        if local_port is not None:
            out.add((proto, local_port))
    return out


def parse_profiles(text: str) -> dict[str, bool]:
    out: dict[str, bool] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^\s*(\w+) Profile Settings:", line)
        if m:
            current = m.group(1).capitalize()
            continue
        m = re.match(r"^\s*State\s+(ON|OFF)\b", line, re.IGNORECASE)
        if m and current:
            out[current] = m.group(1).upper() == "ON"
    return out


def parse_rules(text: str) -> list[dict[str, str]]:
    """The rule blocks of ``netsh advfirewall firewall show rule``: {field (lower-case): value}."""
    rules: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z][A-Za-z ]*?):\s*(.*)$", line)
        if not m:
            continue
        key, value = m.group(1).strip().lower(), m.group(2).strip()
        if key == "rule name":
            current = {"rule name": value}
            rules.append(current)
        elif current is not None:
            current[key] = value
    return rules


def _port_matches(spec: str, port: int) -> bool:
    spec = spec.strip()
    if not spec or spec.lower() == "any":
        return True
    for part in spec.split(","):
        if "-" in part:
            text_lo, _, text_hi = part.partition("-")
            lo, hi = parse_ascii_int(text_lo), parse_ascii_int(text_hi)
            if lo is not None and hi is not None and lo <= port <= hi:
                return True
        elif parse_ascii_int(part) == port:
            return True
    return False


def _rule_matches(rule: dict[str, str], protocol: str, port: int) -> bool:
    if rule.get("enabled", "Yes").lower() != "yes" or rule.get("direction", "In").lower() != "in":
        return False
    proto = rule.get("protocol", "Any").lower()
    if proto not in ("any", protocol):
        return False
    return _port_matches(rule.get("localport", "Any"), port)


def _rule_profiles(rule: dict[str, str]) -> set[str]:
    raw = rule.get("profiles", "Any")
    if raw.strip().lower() in ("any", ""):
        return set(PROFILES)
    return {p.strip().capitalize() for p in raw.split(",")}


def firewall_allows(
    profiles: dict[str, bool], rules: Iterable[dict[str, str]], protocol: str, port: int
) -> tuple[bool, tuple[str, ...], str | None]:
    """(allowed, profiles on without an allow rule, matching block rule) for an inbound port."""
    on = [p for p in PROFILES if profiles.get(p, True)]
    if not on:
        return True, (), None
    matching = [r for r in rules if _rule_matches(r, protocol, port)]
    for rule in matching:
        if rule.get("action", "").lower() == "block" and _rule_profiles(rule) & set(on):
            return False, tuple(p for p in on if p in _rule_profiles(rule)), rule.get("rule name")
    allowed_in: set[str] = set()
    for rule in matching:
        if rule.get("action", "").lower() == "allow":
            allowed_in |= _rule_profiles(rule)
    missing = tuple(p for p in on if p not in allowed_in)
    return not missing, missing, None


# ---- the model ---------------------------------------------------------------------------------


def app_state_path(path: str) -> AppStatePath:
    text = path.strip().replace("/", "\\")
    m = re.match(r"^([A-Za-z]):", text)
    drive = m.group(1).upper() if m else None
    on_os = drive == "C" and not text.lower().startswith(LOCAL_STORAGE_PREFIX)
    return AppStatePath(path=path, drive=drive, on_os_drive=on_os)


def declared_ports(
    definition: ServiceDefinition | None, role: str, deployment: DeploymentFacts, instance: str
) -> list[tuple[str, str, str, int]]:
    """(endpoint, kind, protocol, local port) for the role's input and instance input endpoints."""
    out: list[tuple[str, str, str, int]] = []
    rdef = role_of(definition, role)
    if rdef is not None:
        for ep in rdef.endpoints:
            if ep.kind not in (INPUT, INSTANCE_INPUT):
                continue
            local = parse_int(ep.local_port) if ep.local_port else None
            if local is None and ep.kind == INPUT and ep.port:
                local = parse_int(ep.port)
            if isinstance(local, int):
                out.append((ep.name, ep.kind, "udp" if (ep.protocol or "").lower() == "udp" else "tcp", local))
        return out
    inst = deployment.instance(instance)  # no csdef: the deployment's view
    for iep in inst.endpoints if inst is not None else ():
        if iep.local_port is not None and iep.local_port > 0:
            proto = "udp" if iep.protocol.lower() == "udp" else "tcp"
            out.append((iep.name, "Endpoint", proto, iep.local_port))
    return out
