"""Windows Firewall policy of an offline image, from plain registry data ([MS-GPFAS], [MS-FASP]).

Pure interpretation: the reader hands over registry values as plain Python data (``str`` / ``int``
/ ``bytes`` / ``list``, whatever the hive held) and gets frozen facts back. Nothing here raises on
hostile data; a value that cannot be understood becomes a ``problems`` entry, and a rule whose
matching fields are malformed is kept (for reporting) but marked ``usable=False`` so that it never
allows or blocks anything, as the firewall service ignores rules it cannot parse.

Inputs (all volume-independent, registry paths relative to their hive):

* local store, ``SYSTEM\\ControlSet00N\\Services\\SharedAccess\\Parameters\\FirewallPolicy``:
  subkeys ``DomainProfile``, ``StandardProfile`` (= private), ``PublicProfile``; ``FirewallRules``;
  value ``PolicyVersion``; legacy ``<Profile>\\GloballyOpenPorts\\List``.
* Group Policy store, ``SOFTWARE\\Policies\\Microsoft\\WindowsFirewall``: ``DomainProfile``,
  ``PrivateProfile``, ``PublicProfile`` (plus the legacy XP-era ``StandardProfile``), ``FirewallRules``.
* factory defaults, ``SharedAccess\\Defaults\\FirewallPolicy\\FirewallRules`` (reported, never enforced).

Merge semantics ([MS-FASP] 2.2.38, FW_PROFILE_CONFIG_ENABLE_FW): a GPO profile value that is configured
overrides the local value, value by value; GPO and local rules are unioned, except that a GPO profile with
``AllowLocalPolicyMerge=0`` makes local rules count for nothing in that profile. Unset ``EnableFirewall``
means on and unset ``DefaultInboundAction`` means block (the documented Windows defaults).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from harness.ascii import parse_ascii_int
from harness.facts.servicemodel import INTERNAL, Endpoint, parse_int

# ---- constants -----------------------------------------------------------------------------------

STORE_LOCAL = "local"
STORE_GPO = "gpo"
STORE_DEFAULTS = "defaults"
STORE_LEGACY = "legacy"
STORES = (STORE_LOCAL, STORE_GPO, STORE_DEFAULTS, STORE_LEGACY)

DOMAIN = "domain"
PRIVATE = "private"
PUBLIC = "public"
PROFILES = (DOMAIN, PRIVATE, PUBLIC)

TCP = 6
UDP = 17

#: A rule string longer than this is cut (at a field boundary) and the cut noted. Real rules are a
#: few hundred characters; long ones carry address lists (thousands of RA4 entries).
MAX_RULE_CHARS = 1 << 20
#: At most this many fields are read from one rule.
MAX_FIELDS = 20_000
#: At most this many problems are kept per rule (the rest are counted in one last entry).
MAX_PROBLEMS = 20
#: At most this many rules are read per store.
MAX_RULES = 50_000
#: Display strings (Name, Desc, EmbedCtxt, App, Svc) are cut to this many characters (MS-FASP: 10001).
MAX_TEXT = 10_001

#: Field names of the rule grammar (MS-GPFAS 2.2.2.19), lower-cased → canonical spelling.
KNOWN_FIELDS: Mapping[str, str] = {
    name.lower(): name
    for name in (
        "Action", "Active", "Dir", "Profile", "Protocol",
        "LPort", "RPort", "LPort2_10", "RPort2_10", "LPort2_20", "LPort2_24",
        "App", "Svc", "LA4", "RA4", "LA6", "RA6", "RA42", "RA62", "IF", "IFType", "ICMP4", "ICMP6",
        "Name", "Desc", "EmbedCtxt", "Edge", "Defer", "Security", "Security2_9", "Security2", "LSM",
        "Platform", "Platform2", "AppPkgId", "LUAuth", "LUOwn", "RMauth", "RUAuth", "TTK", "TTK2_27",
        "ComptId", "PCross",
    )
}  # fmt: skip

LOCAL_PORT_FIELDS = ("LPort", "LPort2_10", "LPort2_20", "LPort2_24")
REMOTE_PORT_FIELDS = ("RPort", "RPort2_10")
REMOTE_ADDRESS_FIELDS = ("RA4", "RA6", "RA42", "RA62")

#: Port keywords of the grammar, lower-cased → canonical spelling.
PORT_KEYWORDS: Mapping[str, str] = {
    k.lower(): k
    for k in ("RPC", "RPC-EPMap", "Teredo", "IPHTTPSIn", "IPHTTPSOut", "IPTLSIn", "IPTLSOut", "Ply2Disc", "mDNS")
}
#: The only keyword with a documented fixed number (MS-GPFAS 2.2.2.19: "RPC-EPMap (135 endpoint mapper)"). Every
#: other keyword is a dynamic or service-specific port and never matches a numeric port.
KEYWORD_FIXED_PORTS: Mapping[str, int] = {"RPC-EPMap": 135}

#: Registry subkey names of the profile keys, per store (case-insensitive).
LOCAL_PROFILE_KEYS: Mapping[str, str] = {"domainprofile": DOMAIN, "standardprofile": PRIVATE, "publicprofile": PUBLIC}
GPO_PROFILE_KEYS: Mapping[str, str] = {"domainprofile": DOMAIN, "privateprofile": PRIVATE, "publicprofile": PUBLIC}
#: The XP-era GPO ``StandardProfile`` key (administrative-template settings): kept for its
#: GloballyOpenPorts list only; its profile values are not merged (how they map onto the Vista+
#: private/public profiles is unconfirmed).
GPO_LEGACY_PROFILE_KEY = "standardprofile"
#: Profiles the legacy (pre-Vista) lists apply to: DomainProfile → domain, StandardProfile → the
#: non-domain profiles (not documented; the natural reading of the XP-era profiles).
LEGACY_PROFILE_KEYS: Mapping[str, frozenset[str]] = {
    "domainprofile": frozenset({DOMAIN}),
    "standardprofile": frozenset({PRIVATE, PUBLIC}),
}

T = TypeVar("T")

_VERSION = re.compile(r"[vV](\d{1,5})\.(\d{1,5})")
_PORT_NUMBER = re.compile(r"\d{1,5}")
_PORT_RANGE = re.compile(r"(\d{1,5})\s*-\s*(\d{1,5})")
_KEYWORD = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


# ---- rules -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortSpec:
    """One ``LPort``/``RPort`` value: a port, a range or a keyword.

    ``valid=False`` (text that is none of these) matches nothing: the rule is then ``usable=False``.
    """

    field: str  # the field it came from: "LPort", "LPort2_10", ...
    text: str  # as written
    low: int | None = None
    high: int | None = None
    keyword: str | None = None  # canonical spelling for known keywords, else as written
    valid: bool = True

    @property
    def kind(self) -> Literal["port", "range", "keyword", "invalid"]:
        if not self.valid:
            return "invalid"
        if self.keyword is not None:
            return "keyword"
        return "port" if self.low == self.high else "range"

    def matches(self, port: int) -> bool:
        """Whether a numeric port falls in this spec. Keywords match only their documented number
        (``RPC-EPMap`` = 135); ``RPC``, ``IPHTTPSIn`` and the rest never match a number."""
        if not self.valid:
            return False
        if self.keyword is not None:
            return KEYWORD_FIXED_PORTS.get(self.keyword) == port
        assert self.low is not None and self.high is not None
        return self.low <= port <= self.high


@dataclass(frozen=True)
class FirewallRule:
    """One firewall rule string, parsed (MS-GPFAS 2.2.2.19). Values are as written unless noted.

    ``fields`` keeps every field in order of first appearance, each with all its values (fields may
    repeat), unknown ones included; ``unknown_fields`` names those not in the grammar table.
    ``usable`` is False when a field the matcher relies on is malformed (Protocol, Dir, Profile, a
    port, ports without TCP/UDP): such a rule is reported but never allows or blocks.
    """

    id: str
    store: str  # "local" | "gpo" | "defaults" | "legacy"
    version: str | None = None  # "2.10"
    action: str | None = None  # "allow" | "block" | "bypass" | other, lower-cased; None = absent
    active: bool = False
    direction: Literal["in", "out"] | None = None
    profiles: frozenset[str] = frozenset()  # empty = all profiles
    protocol: int | None = None  # None = any (or malformed: see usable)
    local_ports: tuple[PortSpec, ...] = ()  # empty = any
    remote_ports: tuple[PortSpec, ...] = ()
    app: str | None = None
    service: str | None = None
    name: str | None = None
    description: str | None = None
    group: str | None = None  # EmbedCtxt
    security: str | None = None
    remote_addresses: tuple[str, ...] = ()  # RA4/RA6/RA42/RA62 values; empty = any
    interfaces: tuple[str, ...] = ()  # IF and IFType values; empty = all
    fields: tuple[tuple[str, tuple[str, ...]], ...] = ()
    unknown_fields: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    usable: bool = True

    def values(self, name: str) -> tuple[str, ...]:
        """All values of a field (case-insensitive name), in order; () when absent."""
        wanted = name.lower()
        for field_name, values in self.fields:
            if field_name.lower() == wanted:
                return values
        return ()

    @property
    def label(self) -> str:
        """For messages: the id, plus the display name when it is a literal (not ``@dll,-id``)."""
        if self.name and not self.name.startswith("@") and self.name != self.id:
            return f"{self.id} ({self.name})"
        return self.id

    @property
    def requires_authentication(self) -> bool:
        """Only IPsec-authenticated traffic: a Bypass rule, or a Security=Authenticate* requirement."""
        return self.action == "bypass" or (self.security or "").strip().lower().startswith("authenticat")

    def applies_to_profile(self, profile: str) -> bool:
        return not self.profiles or profile in self.profiles


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.dropped = 0

    def add(self, message: str) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(message)
        else:
            self.dropped += 1

    def result(self) -> tuple[str, ...]:
        if self.dropped:
            return (*self.items, f"{self.dropped} more problems not listed")
        return tuple(self.items)


def _short(text: str, limit: int = 60) -> str:
    """A value for a problem message: cut, and with control characters made visible."""
    cut = text if len(text) <= limit else text[:limit] + "…"
    return cut.encode("unicode_escape", "backslashreplace").decode("ascii", "replace")


def _parse_port(field_name: str, text: str, problems: _Problems) -> list[PortSpec]:
    parts = [text]
    if "," in text:  # not in the grammar (lists repeat the field), but some writers do it
        problems.add(f"{field_name}={_short(text)} is a comma list; the grammar repeats the field instead")
        parts = [p for p in text.split(",") if p.strip()] or [text]
    specs = []
    for part in parts:
        value = part.strip()
        if _PORT_NUMBER.fullmatch(value):
            number = int(value)
            if number <= 65535:
                specs.append(PortSpec(field_name, part, number, number))
                continue
        elif match := _PORT_RANGE.fullmatch(value):
            low, high = int(match.group(1)), int(match.group(2))
            if low <= high <= 65535:
                specs.append(PortSpec(field_name, part, low, high))
                continue
        elif _KEYWORD.fullmatch(value):
            canonical = PORT_KEYWORDS.get(value.lower())
            if canonical is None:
                problems.add(f"{field_name}={_short(value)} is not a known port keyword")
            specs.append(PortSpec(field_name, part, keyword=canonical or value))
            continue
        problems.add(f"{field_name}={_short(part)} is not a port, a port range or a port keyword")
        specs.append(PortSpec(field_name, part, valid=False))
    return specs


def _truncate_rule(text: str, problems: _Problems) -> str:
    if len(text) <= MAX_RULE_CHARS:
        return text
    problems.add(f"rule is {len(text)} characters; only the first {MAX_RULE_CHARS} were read")
    cut = text[:MAX_RULE_CHARS]
    bar = cut.rfind("|")
    return cut[: bar + 1] if bar >= 0 else cut


def parse_rule(rule_id: str, text: str, store: str) -> FirewallRule:
    """Parse one rule string (a registry value under ``FirewallRules``; ``rule_id`` is its name).

    Never raises on ``rule_id``/``text`` (non-string data becomes a problem); raises ``ValueError``
    only for an unknown ``store``, which is a caller bug.
    """
    if store not in STORES:
        raise ValueError(f"unknown firewall store {store!r}; expected one of {', '.join(STORES)}")
    problems = _Problems()
    rid = rule_id if isinstance(rule_id, str) else _short(repr(rule_id))
    if not isinstance(text, str):
        problems.add(f"rule value is {type(text).__name__}, not a string (REG_SZ)")
        return FirewallRule(id=rid, store=store, problems=problems.result(), usable=False)
    tokens = _truncate_rule(text, problems).split("|")

    version: str | None = None
    first = tokens[0].strip() if tokens else ""
    if match := _VERSION.fullmatch(first):
        version = f"{int(match.group(1))}.{int(match.group(2))}"
        tokens = tokens[1:]
    else:
        problems.add("no version token (the rule should start with v<major>.<minor>|)")

    order: list[str] = []
    values: dict[str, list[str]] = {}
    spelled: dict[str, str] = {}
    count = 0
    for raw in tokens:
        if not raw.strip():
            continue
        count += 1
        if count > MAX_FIELDS:
            problems.add(f"more than {MAX_FIELDS} fields; the rest were not read")
            break
        name, eq, value = raw.partition("=")
        name = name.strip()
        if not eq or not name:
            problems.add(f"field {_short(raw)!r} is not NAME=VALUE")
            continue
        key = name.lower()
        if key not in values:
            order.append(key)
            values[key] = []
            spelled[key] = KNOWN_FIELDS.get(key, name)
        values[key].append(value)

    fields = tuple((spelled[k], tuple(values[k])) for k in order)
    unknown = tuple(spelled[k] for k in order if k not in KNOWN_FIELDS)
    usable = True

    def single(name: str) -> str | None:
        got = values.get(name.lower())
        if not got:
            return None
        if len(got) > 1:
            problems.add(f"{name} given {len(got)} times; the last one is used")
        return got[-1]

    def text_of(name: str) -> str | None:
        value = single(name)
        return None if value is None else value[:MAX_TEXT]

    action_text = single("Action")
    action = action_text.strip().lower()[:64] if action_text is not None else None
    if action is None:
        problems.add("no Action field")
    elif action not in ("allow", "block", "bypass"):
        problems.add(f"Action={_short(action_text or '')} is not Allow, Block or Bypass")

    active_text = single("Active")
    active = False
    if active_text is None:
        problems.add("no Active field (the rule is disabled)")
    elif active_text.strip().upper() == "TRUE":
        active = True
    elif active_text.strip().upper() != "FALSE":
        problems.add(f"Active={_short(active_text)} is not TRUE or FALSE (the rule is disabled)")

    direction: Literal["in", "out"] | None = None
    dir_text = single("Dir")
    if dir_text is None:
        problems.add("no Dir field")
    elif dir_text.strip().lower() == "in":
        direction = "in"
    elif dir_text.strip().lower() == "out":
        direction = "out"
    else:
        problems.add(f"Dir={_short(dir_text)} is not In or Out")
        usable = False

    profiles: set[str] = set()
    profile_values = values.get("profile", [])
    for value in profile_values:
        name = value.strip().lower()
        if name in PROFILES:
            profiles.add(name)
        else:
            problems.add(f"Profile={_short(value)} is not Domain, Private or Public")
    if profile_values and not profiles:
        usable = False  # every value unreadable: "all profiles" would be the wrong reading

    protocol: int | None = None
    protocol_text = single("Protocol")
    if protocol_text is not None:
        number = parse_ascii_int(protocol_text, max_digits=3)
        if number is not None and number <= 255:
            protocol = number
        else:
            problems.add(f"Protocol={_short(protocol_text)} is not a number from 0 to 255")
            usable = False

    local_ports: list[PortSpec] = []
    for name in LOCAL_PORT_FIELDS:
        for value in values.get(name.lower(), []):
            local_ports.extend(_parse_port(name, value, problems))
    remote_ports: list[PortSpec] = []
    for name in REMOTE_PORT_FIELDS:
        for value in values.get(name.lower(), []):
            remote_ports.extend(_parse_port(name, value, problems))
    if any(not spec.valid for spec in local_ports + remote_ports):
        usable = False
    if (local_ports or remote_ports) and protocol not in (TCP, UDP) and usable:
        shown = "absent (any)" if protocol is None else str(protocol)
        problems.add(f"ports are only valid with Protocol=6 or 17; Protocol is {shown}")
        usable = False

    remote_addresses = tuple(v for name in REMOTE_ADDRESS_FIELDS for v in values.get(name.lower(), []))
    interfaces = tuple(v for name in ("IF", "IFType") for v in values.get(name.lower(), []))

    return FirewallRule(
        id=rid,
        store=store,
        version=version,
        action=action,
        active=active,
        direction=direction,
        profiles=frozenset(profiles),
        protocol=protocol,
        local_ports=tuple(local_ports),
        remote_ports=tuple(remote_ports),
        app=text_of("App"),
        service=text_of("Svc"),
        name=text_of("Name"),
        description=text_of("Desc"),
        group=text_of("EmbedCtxt"),
        security=text_of("Security"),
        remote_addresses=remote_addresses,
        interfaces=interfaces,
        fields=fields,
        unknown_fields=unknown,
        problems=problems.result(),
        usable=usable,
    )


# ---- legacy (pre-Vista) open ports ------------------------------------------------------------


@dataclass(frozen=True)
class LegacyOpenPort:
    """One ``GloballyOpenPorts\\List`` entry: value ``"80:TCP"`` = ``"80:TCP:*:Enabled:Name"``.

    Reported, never enforced by :func:`check_port` (whether WS2008 R2 honours the list is unconfirmed).
    """

    store: str  # "local" | "gpo"
    profile_key: str  # the registry subkey it was under ("StandardProfile", "DomainProfile")
    profiles: frozenset[str]  # the Vista+ profiles that key stands for
    value_name: str
    port: int | None
    protocol: str | None  # "TCP" | "UDP" | as written
    scope: str | None  # "*", "LocalSubNet", address list
    enabled: bool
    name: str | None
    problems: tuple[str, ...] = ()

    @property
    def protocol_number(self) -> int | None:
        return {"TCP": TCP, "UDP": UDP}.get((self.protocol or "").upper())


def parse_legacy_open_port(store: str, profile_key: str, value_name: str, data: object) -> LegacyOpenPort:
    """Parse one ``GloballyOpenPorts\\List`` value; never raises."""
    problems: list[str] = []
    name_text = value_name if isinstance(value_name, str) else _short(repr(value_name))
    profiles = LEGACY_PROFILE_KEYS.get(str(profile_key).lower(), frozenset())
    if not isinstance(data, str):
        problems.append(f"value is {type(data).__name__}, not a string")
        return LegacyOpenPort(
            store, str(profile_key), profiles, name_text, None, None, None, False, None, tuple(problems)
        )
    parts = data[:MAX_TEXT].split(":", 4)
    while len(parts) < 5:
        parts.append("")
    port_text, protocol, scope, state, name = (p.strip() for p in parts)
    port = int(port_text) if _PORT_NUMBER.fullmatch(port_text) and int(port_text) <= 65535 else None
    if port is None:
        problems.append(f"port {_short(port_text)!r} is not a number from 0 to 65535")
    if protocol.upper() not in ("TCP", "UDP"):
        problems.append(f"protocol {_short(protocol)!r} is not TCP or UDP")
    enabled = state.lower() == "enabled"
    if state.lower() not in ("enabled", "disabled"):
        problems.append(f"state {_short(state)!r} is not Enabled or Disabled")
    return LegacyOpenPort(
        store=store,
        profile_key=str(profile_key),
        profiles=profiles,
        value_name=name_text,
        port=port,
        protocol=protocol.upper() if protocol.upper() in ("TCP", "UDP") else (protocol or None),
        scope=scope or None,
        enabled=enabled,
        name=name or None,
        problems=tuple(problems),
    )


# ---- profiles and the merged policy ---------------------------------------------------------------


@dataclass(frozen=True)
class FirewallStoreValues:
    """One policy store as plain registry data (what a reader copies out of a hive).

    ``profiles``: profile subkey name (``DomainProfile``, ``StandardProfile``, ``PrivateProfile``,
    ``PublicProfile``; case-insensitive) → value name → data. ``rules``: ``FirewallRules`` value name
    → data (REG_SZ rule strings). ``globally_open_ports``: profile subkey name → values of its
    ``GloballyOpenPorts\\List`` key. ``policy_version``: the local ``PolicyVersion`` DWORD, if read.
    """

    profiles: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    rules: Mapping[str, object] = field(default_factory=dict)
    globally_open_ports: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    policy_version: object = None


@dataclass(frozen=True)
class FirewallProfile:
    """Effective settings of one profile. ``None`` = configured in neither store.

    Sources are ``"gpo"``, ``"local"`` or ``"default"``. ``settings`` lists every merged value
    (name as written, value as text, source) for evidence.
    """

    name: str  # "domain" | "private" | "public"
    enabled: bool | None = None
    enabled_source: str = "default"
    default_inbound_action: Literal["block", "allow"] | None = None
    default_inbound_source: str = "default"
    default_outbound_action: Literal["block", "allow"] | None = None
    disable_notifications: bool | None = None
    #: DoNotAllowExceptions=1 ("block all incoming connections"): rules are ignored.
    do_not_allow_exceptions: bool | None = None
    #: False when the GPO sets AllowLocalPolicyMerge=0: local rules do not apply in this profile.
    allow_local_rules: bool = True
    allow_local_rules_source: str = "default"
    settings: tuple[tuple[str, str, str], ...] = ()

    @property
    def firewall_on(self) -> bool:
        return self.enabled is not False

    @property
    def inbound_default(self) -> Literal["block", "allow"]:
        return self.default_inbound_action or "block"


@dataclass(frozen=True)
class FirewallPolicy:
    """The effective firewall policy: per-profile settings, every rule of both stores, legacy lists."""

    profiles: Mapping[str, FirewallProfile]
    rules: tuple[FirewallRule, ...] = ()  # GPO rules first, then local
    #: False when AllowLocalPolicyMerge=0 in at least one profile (see FirewallProfile.allow_local_rules).
    allow_local_merge: bool = True
    legacy_open_ports: tuple[LegacyOpenPort, ...] = ()
    policy_version: str | None = None  # "2.10" from PolicyVersion 0x20A
    default_rules: tuple[FirewallRule, ...] = ()  # factory defaults: never enforced
    has_gpo: bool = False
    problems: tuple[str, ...] = ()

    def profile(self, name: str) -> FirewallProfile:
        return self.profiles[_profile_name(name)]

    def rules_in_effect(self, profile: str) -> tuple[FirewallRule, ...]:
        """Rules of the stores that count in ``profile`` (GPO always; local unless merge is off)."""
        prof = self.profile(profile)
        return tuple(
            r for r in self.rules if r.store == STORE_GPO or (r.store == STORE_LOCAL and prof.allow_local_rules)
        )


def _profile_name(name: str) -> str:
    key = str(name).strip().lower()
    if key == "standard":
        key = PRIVATE
    if key not in PROFILES:
        raise ValueError(f"unknown firewall profile {name!r}; expected domain, private or public")
    return key


def _dword(value: object) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if 0 <= value <= 0xFFFFFFFF else None
    if isinstance(value, str) and (number := parse_ascii_int(value, max_digits=10)) is not None:
        return number
    if isinstance(value, bytes) and len(value) == 4:  # a DWORD handed over raw
        return int.from_bytes(value, "little")
    return None


def _lower_keys(mapping: object, what: str, problems: list[str]) -> dict[str, tuple[str, object]]:
    """name.lower() → (name as written, value); non-mappings and non-string names become problems."""
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        problems.append(f"{what} is {type(mapping).__name__}, not a mapping; ignored")
        return {}
    result: dict[str, tuple[str, object]] = {}
    for count, (name, value) in enumerate(mapping.items()):
        if count >= MAX_RULES:
            problems.append(f"{what} has more than {MAX_RULES} entries; the rest were not read")
            break
        if not isinstance(name, str):
            problems.append(f"{what}: entry named {_short(repr(name))} ignored (name is not a string)")
            continue
        result.setdefault(name.lower(), (name, value))
    return result


def _store_profiles(
    store: FirewallStoreValues, keys: Mapping[str, str], store_name: str, problems: list[str]
) -> dict[str, dict[str, tuple[str, object]]]:
    result: dict[str, dict[str, tuple[str, object]]] = {}
    for key_lower, (key, values) in _lower_keys(store.profiles, f"{store_name} profiles", problems).items():
        profile = keys.get(key_lower)
        if profile is None:
            if not (store_name == STORE_GPO and key_lower == GPO_LEGACY_PROFILE_KEY):
                problems.append(f"{store_name} profile key {_short(key)!r} is not a known profile key; ignored")
            continue
        result[profile] = _lower_keys(values, f"{store_name} {key}", problems)
    return result


Action = Literal["allow", "block"]
#: DefaultInboundAction / DefaultOutboundAction DWORD values (0 = allow, 1 = block; the registry value for
#: block is inferred, not documented).
_ACTIONS: Mapping[int, Action] = {0: "allow", 1: "block"}


def _merge_profile(
    name: str,
    local: Mapping[str, tuple[str, object]],
    gpo: Mapping[str, tuple[str, object]],
    problems: list[str],
) -> FirewallProfile:
    settings: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for source, values in ((STORE_GPO, gpo), (STORE_LOCAL, local)):
        for key, (written, value) in values.items():
            if key not in seen:
                seen.add(key)
                shown = value if isinstance(value, (int, str)) else f"<{type(value).__name__}>"
                settings.append((written, _short(str(shown), 200), source))

    def pick(value_name: str, convert: Callable[[object], T | None], *, gpo_only: bool = False) -> tuple[T | None, str]:
        key = value_name.lower()
        stores = ((STORE_GPO, gpo),) if gpo_only else ((STORE_GPO, gpo), (STORE_LOCAL, local))
        for source, values in stores:
            if key not in values:
                continue
            written, raw = values[key]
            got = convert(raw)
            if got is None:
                problems.append(f"{source} {name} profile: {written}={_short(repr(raw))} is not understood; ignored")
                continue
            return got, source
        return None, "default"

    def as_bool(raw: object) -> bool | None:
        number = _dword(raw)
        return None if number is None else number != 0

    def as_action(raw: object) -> Action | None:
        number = _dword(raw)
        return None if number is None else _ACTIONS.get(number)

    inbound: Action | None
    outbound: Action | None
    enabled, enabled_source = pick("EnableFirewall", as_bool)
    inbound, inbound_source = pick("DefaultInboundAction", as_action)
    outbound, _ = pick("DefaultOutboundAction", as_action)
    notifications, _ = pick("DisableNotifications", as_bool)
    shielded, _ = pick("DoNotAllowExceptions", as_bool)
    # AllowLocalPolicyMerge is a GPO setting (MS-GPFAS 2.2.3.13); a local copy means nothing.
    merge, merge_source = pick("AllowLocalPolicyMerge", as_bool, gpo_only=True)
    return FirewallProfile(
        name=name,
        enabled=enabled,
        enabled_source=enabled_source,
        default_inbound_action=inbound,
        default_inbound_source=inbound_source,
        default_outbound_action=outbound,
        disable_notifications=notifications,
        do_not_allow_exceptions=shielded,
        allow_local_rules=merge is not False,
        allow_local_rules_source=merge_source,
        settings=tuple(settings),
    )


def _rules(
    store: FirewallStoreValues | Mapping[str, object] | None, store_name: str, problems: list[str]
) -> list[FirewallRule]:
    if store is None:
        return []
    mapping = store.rules if isinstance(store, FirewallStoreValues) else store
    rules = []
    for _key, (rule_id, text) in _lower_keys(mapping, f"{store_name} FirewallRules", problems).items():
        rules.append(parse_rule(rule_id, text, store_name))  # type: ignore[arg-type]
    return rules


def _legacy(store: FirewallStoreValues | None, store_name: str, problems: list[str]) -> list[LegacyOpenPort]:
    if store is None:
        return []
    entries = []
    lists = _lower_keys(store.globally_open_ports, f"{store_name} GloballyOpenPorts", problems)
    for key_lower, (key, values) in lists.items():
        if key_lower not in LEGACY_PROFILE_KEYS:
            problems.append(f"{store_name} GloballyOpenPorts under {_short(key)!r}: not DomainProfile/StandardProfile")
        for _name, (value_name, data) in _lower_keys(values, f"{store_name} {key} GloballyOpenPorts", problems).items():
            entries.append(parse_legacy_open_port(store_name, key, value_name, data))
    return entries


def policy_version_text(value: object) -> str | None:
    """``PolicyVersion`` DWORD (0x20A) as "2.10"; None when absent or not a DWORD."""
    number = _dword(value)
    if number is None or number > 0xFFFF:
        return None
    return f"{number >> 8}.{number & 0xFF}"


def effective_policy(
    local: FirewallStoreValues,
    gpo: FirewallStoreValues | None = None,
    *,
    defaults_rules: Mapping[str, object] | None = None,
) -> FirewallPolicy:
    """Merge the local store and the Group Policy store into the policy Windows would enforce.

    ``gpo=None`` means no ``SOFTWARE\\Policies\\Microsoft\\WindowsFirewall`` key. Per profile, each
    GPO value that is configured (and understood) wins over the local one. Rules of both stores are
    kept in ``rules``; :func:`check_port` and :meth:`FirewallPolicy.rules_in_effect` skip local rules
    in a profile whose GPO sets ``AllowLocalPolicyMerge=0``. ``defaults_rules`` (the factory
    ``Defaults`` store) are parsed for reporting only. Never raises on hostile data.
    """
    problems: list[str] = []
    local_profiles = _store_profiles(local, LOCAL_PROFILE_KEYS, STORE_LOCAL, problems)
    gpo_profiles = _store_profiles(gpo, GPO_PROFILE_KEYS, STORE_GPO, problems) if gpo is not None else {}
    profiles = {
        name: _merge_profile(name, local_profiles.get(name, {}), gpo_profiles.get(name, {}), problems)
        for name in PROFILES
    }
    rules = _rules(gpo, STORE_GPO, problems) + _rules(local, STORE_LOCAL, problems)
    legacy = _legacy(gpo, STORE_GPO, problems) + _legacy(local, STORE_LOCAL, problems)
    version = policy_version_text(local.policy_version)
    if local.policy_version is not None and version is None:
        problems.append(f"PolicyVersion={_short(repr(local.policy_version))} is not a version DWORD")
    return FirewallPolicy(
        profiles=profiles,
        rules=tuple(rules),
        allow_local_merge=all(p.allow_local_rules for p in profiles.values()),
        legacy_open_ports=tuple(legacy),
        policy_version=version,
        default_rules=tuple(_rules(defaults_rules, STORE_DEFAULTS, problems)),
        has_gpo=gpo is not None,
        problems=tuple(problems),
    )


# ---- the endpoint check (VMR401/VMR402) --------------------------------------------------------------------


@dataclass(frozen=True)
class PortVerdict:
    """Whether inbound traffic to ``port`` gets through in one profile, and why.

    ``allowed`` is True when the firewall is off in the profile (check ``firewall_enabled``: "no host
    firewall" is a warning, not a pass). ``authenticated_only``: every allowing rule admits only
    IPsec-authenticated traffic. ``scoped``: every allowing rule limits remote addresses or
    interfaces. ``legacy_open_ports``: matching pre-Vista list entries (reported, not enforced).
    """

    profile: str
    protocol: int | None
    port: int
    allowed: bool
    firewall_enabled: bool
    allowing_rules: tuple[FirewallRule, ...] = ()
    blocking_rules: tuple[FirewallRule, ...] = ()
    reason: str = ""
    default_inbound_action: str = "block"
    authenticated_only: bool = False
    scoped: bool = False
    legacy_open_ports: tuple[LegacyOpenPort, ...] = ()


def _ports_match(rule: FirewallRule, port: int) -> bool:
    return not rule.local_ports or any(spec.matches(port) for spec in rule.local_ports)


def _allows(rule: FirewallRule, protocol: int | None, port: int) -> bool:
    # An any-protocol endpoint is only fully open through a rule without a Protocol.
    protocol_ok = rule.protocol is None if protocol is None else rule.protocol in (None, protocol)
    return protocol_ok and _ports_match(rule, port)


def _blocks(rule: FirewallRule, protocol: int | None, port: int) -> bool:
    # Any overlap blocks: a TCP block rule shadows part of an any-protocol endpoint.
    protocol_ok = protocol is None or rule.protocol in (None, protocol)
    return protocol_ok and _ports_match(rule, port)


def _names(rules: Iterable[FirewallRule], limit: int = 3) -> str:
    rules = list(rules)
    shown = ", ".join(r.label for r in rules[:limit])
    return shown + (f" and {len(rules) - limit} more" if len(rules) > limit else "")


def check_port(policy: FirewallPolicy, protocol: int | None, port: int, profile: str) -> PortVerdict:
    """Judge inbound ``protocol``/``port`` in ``profile`` (the endpoint check of VMR401/VMR402).

    Counts only usable, active, inbound rules of the stores in effect for the profile that apply
    to it. ``protocol=None`` is an any-protocol endpoint. A Block rule beats Allow rules; a Bypass
    (authenticated bypass) rule beats Block. Raises ``ValueError`` only for an unknown profile name.
    """
    name = _profile_name(profile)
    prof = policy.profiles[name]
    on = prof.firewall_on
    default = prof.inbound_default
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        return PortVerdict(
            profile=name,
            protocol=protocol,
            port=port,
            allowed=False,
            firewall_enabled=on,
            reason=f"{port!r} is not a port number",
            default_inbound_action=default,
        )
    label = f"{'any protocol' if protocol is None else _protocol_name(protocol)} port {port}"

    candidates = [
        r
        for r in policy.rules_in_effect(name)
        if r.usable and r.active and r.direction == "in" and r.applies_to_profile(name)
    ]
    allowing = tuple(r for r in candidates if r.action in ("allow", "bypass") and _allows(r, protocol, port))
    blocking = tuple(r for r in candidates if r.action == "block" and _blocks(r, protocol, port))
    bypass = tuple(r for r in allowing if r.action == "bypass")
    legacy = tuple(
        e
        for e in policy.legacy_open_ports
        if e.enabled
        and e.port == port
        and name in e.profiles
        and (protocol is None or e.protocol_number == protocol)
        and (e.store == STORE_GPO or prof.allow_local_rules)
    )
    effective_allow = bypass if (blocking and bypass) else allowing
    authenticated_only = bool(effective_allow) and all(r.requires_authentication for r in effective_allow)
    scoped = bool(effective_allow) and all(r.remote_addresses or r.interfaces for r in effective_allow)

    source = "" if prof.enabled_source == "default" else f" ({prof.enabled_source} EnableFirewall=0)"
    if not on:
        allowed, reason = True, f"the firewall is off in the {name} profile{source}: nothing filters {label}"
    elif prof.do_not_allow_exceptions:
        allowed, reason = False, f"DoNotAllowExceptions=1 in the {name} profile blocks all inbound traffic"
    elif blocking and not bypass:
        allowed = False
        reason = f"{label} is blocked in the {name} profile by {_names(blocking)}"
        if allowing:
            reason += f" (Block beats the Allow rule(s) {_names(allowing)})"
    elif blocking:
        allowed = True
        reason = f"{label} is allowed in the {name} profile by authenticated-bypass rule(s) {_names(bypass)}"
        reason += f" despite Block rule(s) {_names(blocking)}"
    elif allowing:
        allowed, reason = True, f"{label} is allowed in the {name} profile by {_names(allowing)}"
    elif default == "allow":
        allowed = True
        reason = f"no rule matches {label}; the {name} profile's default inbound action is allow"
    else:
        allowed = False
        reason = f"no active inbound allow rule matches {label} in the {name} profile (default inbound action: block)"
    if allowed and on and authenticated_only:
        reason += "; only IPsec-authenticated traffic is admitted"
    return PortVerdict(
        profile=name,
        protocol=protocol,
        port=port,
        firewall_enabled=on,
        allowed=allowed,
        allowing_rules=effective_allow if on else allowing,
        blocking_rules=blocking,
        reason=reason,
        default_inbound_action=default,
        authenticated_only=authenticated_only,
        scoped=scoped,
        legacy_open_ports=legacy,
    )


def _protocol_name(protocol: int) -> str:
    return {TCP: "TCP", UDP: "UDP"}.get(protocol, f"protocol {protocol}")


# ---- service model → firewall terms ---------------------------------------------------------------

_ENDPOINT_PROTOCOLS: Mapping[str, int | None] = {"tcp": TCP, "http": TCP, "https": TCP, "udp": UDP, "any": None}


def endpoint_protocol_number(protocol: str) -> int | None:
    """The IP protocol an endpoint's ``protocol`` attribute needs (the csdef endpoint protocols): tcp/http/https → 6,
    udp → 17, any → None (a rule without Protocol). Case-insensitive. Raises ``ValueError`` for
    anything else (including None): the service-model rules report unknown protocols."""
    key = protocol.strip().lower() if isinstance(protocol, str) else None
    if key is None or key not in _ENDPOINT_PROTOCOLS:
        raise ValueError(f"endpoint protocol {protocol!r} is not tcp, http, https, udp or any")
    return _ENDPOINT_PROTOCOLS[key]


def endpoint_local_port(endpoint: Endpoint) -> int | Literal["dynamic"] | None:
    """The port the role instance listens on (the endpoint's ``localPort``, else its ``port``).

    ``localPort``, or ``port`` when ``localPort`` is omitted; ``"*"`` → ``"dynamic"``. An
    InternalEndpoint with neither uses its single ``FixedPort`` child, or is ``"dynamic"`` when it
    has no FixedPort/FixedPortRange. None when the port is not a number in 1–65535 or is a range
    (see :func:`endpoint_local_port_range`).
    """
    text = endpoint.local_port if endpoint.local_port is not None else endpoint.port
    if text is None and endpoint.kind == INTERNAL:
        if not endpoint.fixed_ports:
            return "dynamic"
        if len(endpoint.fixed_ports) == 1:
            fixed = endpoint.fixed_ports[0]
            low, high = parse_int(fixed.min), parse_int(fixed.max if fixed.max is not None else fixed.min)
            if low is not None and low == high and 1 <= low <= 65535:
                return low
        return None
    if text is None:
        return None
    if text.strip() == "*":
        return "dynamic"
    number = parse_int(text)
    return number if number is not None and 1 <= number <= 65535 else None


def endpoint_local_port_range(endpoint: Endpoint) -> tuple[int, int] | None:
    """An InternalEndpoint's single ``FixedPortRange`` (min, max) when it has no port attribute;
    None otherwise or when the range is not 1 ≤ min ≤ max ≤ 65535."""
    if endpoint.kind != INTERNAL or endpoint.port is not None or endpoint.local_port is not None:
        return None
    if len(endpoint.fixed_ports) != 1:
        return None
    fixed = endpoint.fixed_ports[0]
    low, high = parse_int(fixed.min), parse_int(fixed.max)
    if low is None or high is None or not 1 <= low <= high <= 65535:
        return None
    return low, high
