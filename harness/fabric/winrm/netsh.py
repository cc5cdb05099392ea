"""The instance's Windows Firewall state and ``netsh advfirewall``; the ports the role declares (``localPort``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import CommandIO, split_args, write_line

if TYPE_CHECKING:
    from .guest import Guest

_PROFILE_NAMES = ("Domain", "Private", "Public")
_NETSH_PROFILES: dict[str, Any] = {
    "allprofiles": list(_PROFILE_NAMES),
    "currentprofile": "current",
    "domainprofile": ["Domain"],
    "privateprofile": ["Private"],
    "publicprofile": ["Public"],
}


def _declared_local_ports(instance: dict[str, Any], instance_dir: Path | None) -> dict[str, int]:
    """Endpoint name -> declared local port (``endpoints[*].local_port``, else the deployment's csdef)."""
    out: dict[str, int] = {}
    for ep in instance.get("endpoints") or []:
        if isinstance(ep, dict) and isinstance(ep.get("local_port"), int):
            out[str(ep.get("name"))] = ep["local_port"]
    if out or instance_dir is None:
        return out
    csdef = instance_dir.parent.parent / "ServiceDefinition.csdef"
    if not csdef.is_file():
        return out
    try:
        from harness.engine.artefact import CSDEF, Artefact
        from harness.facts.servicemodel import INPUT, INSTANCE_INPUT, parse_int
        from harness.readers.servicemodel import read_definition

        definition = read_definition(Artefact.from_path(csdef, CSDEF))
    except Exception:  # an unreadable csdef: no declared ports, netstat shows the real ones only
        return out
    for role in definition.roles:
        if role.name != instance.get("role"):
            continue
        for ep in role.endpoints:
            if ep.kind not in (INPUT, INSTANCE_INPUT):
                continue
            local = parse_int(ep.local_port) if ep.local_port else None
            if local is None and ep.kind == INPUT:
                local = parse_int(ep.port) if ep.port else None
            if isinstance(local, int):
                out[ep.name] = local
    return out


def local_port_map(instance: dict[str, Any], instance_dir: Path | None) -> dict[tuple[str, int], int]:
    """(proto, port this instance really listens on) -> the port the role declares (``localPort``).

    From ``endpoints[*].local_port`` when the controller writes it, else from the deployment's csdef
    (``STATE/ServiceDefinition.csdef``); WinRM listeners are 5986 (HTTPS) / 5985 (HTTP) as on Windows.
    """
    declared = _declared_local_ports(instance, instance_dir)
    out: dict[tuple[str, int], int] = {}
    for ep in instance.get("endpoints") or []:
        if not isinstance(ep, dict) or not isinstance(ep.get("port"), int):
            continue
        local = declared.get(str(ep.get("name")))
        if isinstance(local, int) and local != ep["port"]:
            out[("UDP" if ep.get("protocol") == "udp" else "TCP", ep["port"])] = local
    winrm = instance.get("winrm") or {}
    for key, local in (("https_port", 5986), ("http_port", 5985)):
        if isinstance(winrm.get(key), int):
            out[("TCP", winrm[key])] = local
    return out


def default_firewall(instance: dict[str, Any], local_ports: dict[tuple[str, int], int] | None = None) -> dict[str, Any]:
    """The firewall an instance has unless ``instance.json`` says otherwise: every profile on, one inbound
    allow rule per endpoint (its declared local port and the port it really listens on) and the two
    standard WinRM rules.  The controller may call this to write ``instance["firewall"]`` explicitly."""
    if local_ports is None:
        local_ports = local_port_map(instance, None)
    rules: list[dict[str, Any]] = []
    for ep in instance.get("endpoints") or []:
        if not isinstance(ep, dict) or not isinstance(ep.get("port"), int):
            continue
        proto = "UDP" if ep.get("protocol") == "udp" else "TCP"
        ports = [ep["port"]]
        if (proto, ep["port"]) in local_ports:
            ports.insert(0, local_ports[(proto, ep["port"])])
        rules.append(
            {
                "name": f"{instance.get('role', 'Role')} {ep.get('name')}",
                "enabled": True,
                "direction": "In",
                "profiles": list(_PROFILE_NAMES),
                "protocol": proto,
                "local_port": ",".join(str(p) for p in ports),
                "action": "Allow",
            }
        )
    winrm = instance.get("winrm") or {}
    for label, key, local in (("HTTP", "http_port", 5985), ("HTTPS", "https_port", 5986)):
        ports = [local] + ([winrm[key]] if isinstance(winrm.get(key), int) else [])
        rules.append(
            {
                "name": f"Windows Remote Management ({label}-In)",
                "enabled": True,
                "direction": "In",
                "profiles": list(_PROFILE_NAMES),
                "protocol": "TCP",
                "local_port": ",".join(str(p) for p in ports),
                "action": "Allow",
            }
        )
    return {"profiles": {p: True for p in _PROFILE_NAMES}, "current": "Public", "rules": rules}


def _profile_states(fw: dict[str, Any]) -> dict[str, bool]:
    raw = fw.get("profiles") or {}
    out = {}
    for prof in _PROFILE_NAMES:
        value = (
            next((v for k, v in raw.items() if str(k).lower() == prof.lower()), True) if isinstance(raw, dict) else True
        )
        out[prof] = value if isinstance(value, bool) else str(value).strip().lower() in ("on", "true", "1", "enabled")
    return out


def _netsh_rule_block(rule: dict[str, Any]) -> str:
    profiles = rule.get("profiles", list(_PROFILE_NAMES))
    if isinstance(profiles, (list, tuple)):
        profiles = ",".join(str(p) for p in profiles) if profiles else "Any"
    local_port = rule.get("local_port", "Any")
    if isinstance(local_port, (list, tuple)):
        local_port = ",".join(str(p) for p in local_port)
    enabled = rule.get("enabled", True)
    rows = [
        ("Enabled", "Yes" if enabled is True or str(enabled).lower() in ("yes", "true") else "No"),
        ("Direction", str(rule.get("direction", "In"))),
        ("Profiles", str(profiles)),
        ("Grouping", str(rule.get("grouping", ""))),
        ("LocalIP", "Any"),
        ("RemoteIP", str(rule.get("remote_ip", "Any"))),
        ("Protocol", str(rule.get("protocol", "TCP"))),
        ("LocalPort", str(local_port)),
        ("RemotePort", "Any"),
        ("Edge traversal", "No"),
        ("Action", str(rule.get("action", "Allow"))),
    ]
    body = "\n".join(f"{k + ':':<38}{v}".rstrip() if not v else f"{k + ':':<38}{v}" for k, v in rows)
    return f"\n{'Rule Name:':<38}{rule.get('name', '')}\n{'-' * 70}\n{body}\n"


def netsh(g: Guest, rest: str, io: CommandIO) -> int:
    """``netsh advfirewall firewall show rule name=… [dir=in|out]`` and ``netsh advfirewall show <profile> [state]``."""
    args = split_args(rest)
    low = [a.lower() for a in args]
    fw = g.firewall()
    if low[:4] == ["advfirewall", "firewall", "show", "rule"]:
        opts = dict(a.split("=", 1) for a in low[4:] if "=" in a)
        name = next((a.split("=", 1)[1] for a in args[4:] if a.lower().startswith("name=")), None)
        if name is None:
            write_line(io, "A specified value is not valid.\n\nUsage: show rule name=<string> [dir=in|out]")
            return 1
        direction = opts.get("dir")
        blocks = []
        for rule in fw.get("rules") or []:
            if not isinstance(rule, dict):
                continue
            if name.lower() != "all" and str(rule.get("name", "")).lower() != name.lower():
                continue
            if direction and str(rule.get("direction", "In")).lower() != direction:
                continue
            blocks.append(_netsh_rule_block(rule))
        if not blocks:
            write_line(io, "No rules match the specified criteria.\n")
            return 1
        return write_line(io, "".join(blocks) + "Ok.\n")
    if len(low) >= 3 and low[:2] == ["advfirewall", "show"] and low[2] in _NETSH_PROFILES:
        profiles = _profile_states(fw)
        which = _NETSH_PROFILES[low[2]]
        if which == "current":
            which = [str(fw.get("current") or "Public").capitalize()]
        state_only = len(low) > 3 and low[3] == "state"
        out = [""]
        for prof in which:
            out += [f"{prof} Profile Settings: ", "-" * 70, f"{'State':<38}{'ON' if profiles.get(prof) else 'OFF'}"]
            if not state_only:
                out += [f"{'Firewall Policy':<38}BlockInbound,AllowOutbound"]
            out.append("")
        out[-1] = "Ok."
        return write_line(io, "\n".join(out) + "\n")
    write_line(io, f"The following command was not found: {' '.join(args)}.")
    return 1
