"""In-guest facts (stage ``guest``): listeners, runtime firewall and services per instance, over WinRM."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PortCheck:
    """One declared endpoint's local port inside one instance."""

    endpoint: str
    kind: str  # InputEndpoint | InstanceInputEndpoint
    protocol: str  # tcp | udp
    local_port: int
    listening: bool | None  # None: netstat could not be read
    firewall_allowed: bool | None  # None: the firewall could not be read
    #: profiles that are on and have no enabled inbound allow rule for the port (or a block rule)
    blocked_profiles: tuple[str, ...] = ()
    block_rule: str | None = None  # an enabled inbound block rule that matches, by name


@dataclass(frozen=True)
class ServiceCheck:
    name: str
    exists: bool | None  # None: the query failed
    status: str | None  # Running | Stopped | …


@dataclass(frozen=True)
class InstanceGuest:
    instance: str
    role: str
    reachable: bool
    error: str | None = None  # WinRM could not be used at all
    shell_id: str | None = None
    ports: tuple[PortCheck, ...] = ()
    services: tuple[ServiceCheck, ...] = ()
    firewall_profiles: dict[str, bool] | None = None  # Domain/Private/Public -> on
    check_errors: tuple[str, ...] = ()  # a check that could not run (netstat, netsh, services)
    seconds: float = 0.0


@dataclass(frozen=True)
class AppStatePath:
    path: str
    drive: str | None  # "C" …; None for a UNC or relative path
    on_os_drive: bool  # on C: and not under a LocalStorage root (C:\Resources\Directory\…)


@dataclass(frozen=True)
class GuestFacts:
    instances: tuple[InstanceGuest, ...] = ()
    app_state_paths: tuple[AppStatePath, ...] = ()
    services_expected: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
