"""Firewall facts: the rule grammar, store merging, and the endpoint port check (domain ref §3)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.facts.image_firewall import (
    MAX_FIELDS,
    MAX_PROBLEMS,
    FirewallStoreValues,
    check_port,
    effective_policy,
    endpoint_local_port,
    endpoint_local_port_range,
    endpoint_protocol_number,
    parse_legacy_open_port,
    parse_rule,
    policy_version_text,
)
from harness.facts.servicemodel import INPUT, INSTANCE_INPUT, INTERNAL, Endpoint, PortRange

#: MS-GPFAS §4.2 example (LA6 filled in; the spec elides it).
GPFAS_EXAMPLE = (
    "v2.10|Action=Allow|Active=TRUE|Dir=In|Protocol=6|Profile=Public|LPort=RPC|RPort=49000|"
    "LA4=192.168.1.0/255.255.255.0|LA6=fe80::/64|RA4=LocalSubnet|RA6=LocalSubnet|App=c:\\path\\foo.exe|"
    "Name=Firewall Rule Test|Security=Authenticate|Security2_9=An-NoEncap|"
)
#: The shape of a WS2008 R2 built-in rule (§3.3).
RDP_RULE = (
    "v2.10|Action=Allow|Active=TRUE|Dir=In|Protocol=6|LPort=3389|App=System|Name=@FirewallAPI.dll,-28753|"
    "Desc=@FirewallAPI.dll,-28756|EmbedCtxt=@FirewallAPI.dll,-28752|"
)


def rule(**fields: str | list[str]) -> str:
    """A rule string from keyword fields (lists repeat the field), v2.10."""
    parts = ["v2.10"]
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            parts.append(f"{name}={item}")
    return "|".join(parts) + "|"


def inbound(action: str = "Allow", **fields: str | list[str]) -> str:
    return rule(Action=action, Active="TRUE", Dir="In", **fields)


def policy(local_rules: dict[str, str] | None = None, gpo: FirewallStoreValues | None = None, **local_profiles):
    return effective_policy(FirewallStoreValues(profiles=local_profiles, rules=local_rules or {}), gpo)


# ---- grammar ---------------------------------------------------------------------------------------


def test_gpfas_example_parses_every_field() -> None:
    parsed = parse_rule("{A1B2}", GPFAS_EXAMPLE, "gpo")
    assert parsed.id == "{A1B2}" and parsed.store == "gpo"
    assert parsed.version == "2.10"
    assert (parsed.action, parsed.active, parsed.direction) == ("allow", True, "in")
    assert parsed.profiles == frozenset({"public"})
    assert parsed.protocol == 6
    assert [(p.kind, p.keyword) for p in parsed.local_ports] == [("keyword", "RPC")]
    assert [(p.kind, p.low, p.high) for p in parsed.remote_ports] == [("port", 49000, 49000)]
    assert parsed.app == "c:\\path\\foo.exe"
    assert parsed.name == "Firewall Rule Test"
    assert parsed.security == "Authenticate"
    assert parsed.values("security2_9") == ("An-NoEncap",)
    assert parsed.remote_addresses == ("LocalSubnet", "LocalSubnet")
    assert parsed.values("LA4") == ("192.168.1.0/255.255.255.0",)
    assert parsed.unknown_fields == ()
    assert parsed.problems == ()
    assert parsed.usable
    assert parsed.requires_authentication


def test_builtin_rdp_rule_shape() -> None:
    parsed = parse_rule("RemoteDesktop-In-TCP", RDP_RULE, "local")
    assert parsed.problems == ()
    assert parsed.profiles == frozenset()  # absent = all profiles
    assert [(p.low, p.high) for p in parsed.local_ports] == [(3389, 3389)]
    assert parsed.app == "System"
    assert parsed.name == "@FirewallAPI.dll,-28753"
    assert parsed.description == "@FirewallAPI.dll,-28756"
    assert parsed.group == "@FirewallAPI.dll,-28752"
    assert parsed.label == "RemoteDesktop-In-TCP"  # indirect display names are not shown
    assert [name for name, _ in parsed.fields] == [
        "Action",
        "Active",
        "Dir",
        "Protocol",
        "LPort",
        "App",
        "Name",
        "Desc",
        "EmbedCtxt",
    ]


def test_repeated_fields_keep_every_value_in_order() -> None:
    parsed = parse_rule(
        "r", inbound(Protocol="6", LPort=["80", "443", "8000-8080"], Profile=["Private", "Public"]), "local"
    )
    assert [p.text for p in parsed.local_ports] == ["80", "443", "8000-8080"]
    assert parsed.values("LPort") == ("80", "443", "8000-8080")
    assert parsed.profiles == frozenset({"private", "public"})
    assert parsed.problems == ()


def test_unknown_fields_are_kept_in_order_and_named() -> None:
    parsed = parse_rule("r", inbound(Protocol="6", FutureField=["a", "b"], LPort="80", Zeta="z=1"), "local")
    assert parsed.unknown_fields == ("FutureField", "Zeta")
    assert parsed.values("futurefield") == ("a", "b")
    assert parsed.values("Zeta") == ("z=1",)  # a value may itself hold "="
    assert parsed.usable


def test_known_field_names_are_case_insensitive_and_canonical() -> None:
    parsed = parse_rule("r", "v2.10|action=BLOCK|ACTIVE=TRUE|dir=in|protocol=17|lport=53|", "local")
    assert (parsed.action, parsed.active, parsed.direction, parsed.protocol) == ("block", True, "in", 17)
    assert [name for name, _ in parsed.fields] == ["Action", "Active", "Dir", "Protocol", "LPort"]
    assert parsed.unknown_fields == ()


@pytest.mark.parametrize(
    ("action", "expected"), [("Allow", "allow"), ("ALLOW", "allow"), ("Block", "block"), ("ByPass", "bypass")]
)
def test_action_is_compared_case_insensitively(action: str, expected: str) -> None:
    parsed = parse_rule("r", inbound(action), "local")
    assert parsed.action == expected
    assert not any("Action" in p for p in parsed.problems)


def test_unknown_action_is_kept_lower_cased_with_a_problem() -> None:
    parsed = parse_rule("r", inbound("Deny"), "local")
    assert parsed.action == "deny"
    assert any("Action=Deny is not Allow, Block or Bypass" in p for p in parsed.problems)


def test_active_false_and_missing_and_odd() -> None:
    assert parse_rule("r", rule(Action="Allow", Active="FALSE", Dir="In"), "local").active is False
    missing = parse_rule("r", rule(Action="Allow", Dir="In"), "local")
    assert missing.active is False and any("no Active field" in p for p in missing.problems)
    odd = parse_rule("r", rule(Action="Allow", Active="yes", Dir="In"), "local")
    assert odd.active is False and any("Active=yes" in p for p in odd.problems)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Action=Allow|Active=TRUE|Dir=In|", "no version token"),
        ("v2|Action=Allow|", "no version token"),
        (inbound(Protocol="abc"), "Protocol=abc is not a number"),
        (inbound(Protocol="256"), "Protocol=256 is not a number"),
        (inbound(Protocol="-1"), "Protocol=-1 is not a number"),
        ("v2.10|Action=Allow|garbage|Dir=In|", "'garbage' is not NAME=VALUE"),
        ("v2.10|=novalue|", "is not NAME=VALUE"),
        (rule(Action="Allow", Active="TRUE", Dir="Sideways"), "Dir=Sideways is not In or Out"),
        (inbound(Profile="Work"), "Profile=Work is not Domain, Private or Public"),
        (inbound(Protocol="6", LPort="70000"), "LPort=70000 is not a port"),
        (inbound(Protocol="6", LPort="90-80"), "LPort=90-80 is not a port"),
        (inbound(Protocol="6", LPort="80;81"), "LPort=80;81 is not a port"),
        (inbound(Protocol="6", LPort="Gopher"), "LPort=Gopher is not a known port keyword"),
        (inbound(LPort="80"), "ports are only valid with Protocol=6 or 17; Protocol is absent"),
        (inbound(Protocol="1", LPort="80"), "Protocol is 1"),
        (inbound(Protocol=["6", "17"]), "Protocol given 2 times"),
        (rule(Active="TRUE", Dir="In"), "no Action field"),
        (rule(Action="Allow", Active="TRUE"), "no Dir field"),
    ],
)
def test_malformed_rules_report_a_problem(text: str, problem: str) -> None:
    parsed = parse_rule("bad", text, "local")
    assert any(problem in p for p in parsed.problems), parsed.problems


@pytest.mark.parametrize(
    "text",
    [
        inbound(Protocol="abc", LPort="80"),
        inbound(Protocol="6", LPort="70000"),
        inbound(LPort="80"),
        inbound(Protocol="58", LPort="80"),
        inbound(Profile="Work"),
        rule(Action="Allow", Active="TRUE", Dir="Sideways"),
    ],
)
def test_rules_with_malformed_matching_fields_are_unusable(text: str) -> None:
    parsed = parse_rule("bad", text, "local")
    assert not parsed.usable
    verdict = check_port(policy({"bad": text}), 6, 80, "public")
    assert not verdict.allowed and verdict.allowing_rules == ()


def test_partly_readable_profile_list_keeps_the_readable_ones() -> None:
    parsed = parse_rule("r", inbound(Profile=["Work", "Private"]), "local")
    assert parsed.profiles == frozenset({"private"})
    assert parsed.usable


def test_comma_port_lists_are_read_with_a_problem() -> None:
    parsed = parse_rule("r", inbound(Protocol="6", LPort="80,443"), "local")
    assert [p.low for p in parsed.local_ports] == [80, 443]
    assert any("comma list" in p for p in parsed.problems)


def test_non_string_values_never_raise() -> None:
    for value in (b"v2.10|Action=Allow|", 7, None, ["v2.10|"]):
        parsed = parse_rule("r", value, "local")  # type: ignore[arg-type]
        assert not parsed.usable and "not a string" in parsed.problems[0]
    assert parse_rule(123, RDP_RULE, "local").id == "123"  # type: ignore[arg-type]


def test_unknown_store_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="unknown firewall store"):
        parse_rule("r", RDP_RULE, "registry")


def test_empty_and_blank_tokens() -> None:
    assert parse_rule("r", "", "local").problems[0].startswith("no version token")
    parsed = parse_rule("r", "v2.10||Action=Allow|| |Dir=In|Active=TRUE", "local")  # no trailing bar
    assert (parsed.action, parsed.direction, parsed.active) == ("allow", "in", True)


def test_huge_rules_are_bounded() -> None:
    addresses = "|".join(f"RA4=10.0.{i // 256}.{i % 256}" for i in range(MAX_FIELDS + 50))
    parsed = parse_rule("r", f"v2.10|Action=Block|Active=TRUE|Dir=In|{addresses}|", "gpo")
    assert any(f"more than {MAX_FIELDS} fields" in p for p in parsed.problems)
    assert len(parsed.remote_addresses) == MAX_FIELDS - 3
    many = parse_rule("r", "v2.10|" + "|".join(f"X{i}" for i in range(500)) + "|", "local")
    assert len(many.problems) == MAX_PROBLEMS + 1 and many.problems[-1].endswith("more problems not listed")
    long_text = parse_rule("r", "v2.10|Name=" + "x" * (2 << 20) + "|", "local")
    assert any("characters; only the first" in p for p in long_text.problems)


def test_problem_messages_do_not_echo_control_characters() -> None:
    parsed = parse_rule("r", "v2.10|Protocol=\x1b[31mred|", "local")
    assert all("\x1b" not in p for p in parsed.problems)


# ---- port specs --------------------------------------------------------------------------------


def test_port_ranges_match_inclusively() -> None:
    (spec,) = parse_rule("r", inbound(Protocol="6", LPort="5000-5100"), "local").local_ports
    assert spec.kind == "range"
    assert [spec.matches(p) for p in (4999, 5000, 5050, 5100, 5101)] == [False, True, True, True, False]


@pytest.mark.parametrize(
    ("field", "value", "port", "matches"),
    [
        ("LPort", "RPC", 49152, False),
        ("LPort", "rpc", 135, False),
        ("LPort", "RPC-EPMap", 135, True),  # the one keyword with a documented number
        ("LPort", "RPC-EPMap", 136, False),
        ("LPort", "Teredo", 3544, False),
        ("LPort2_10", "IPHTTPSIn", 443, False),
        ("LPort2_10", "IPTLSIn", 443, False),
        ("LPort2_10", "1-66", 66, True),
        ("LPort2_20", "Ply2Disc", 80, False),
        ("LPort2_24", "mDNS", 5353, False),
    ],
)
def test_keyword_ports(field: str, value: str, port: int, matches: bool) -> None:
    parsed = parse_rule("r", inbound(Protocol="6", **{field: value}), "local")
    (spec,) = parsed.local_ports
    assert spec.field == field
    assert spec.matches(port) is matches
    assert parsed.usable


def test_keyword_spelling_is_canonical() -> None:
    (spec,) = parse_rule("r", inbound(Protocol="6", LPort="rpc-epmap"), "local").local_ports
    assert spec.keyword == "RPC-EPMap"


# ---- merging the stores ------------------------------------------------------------------------------


def test_defaults_when_nothing_is_configured() -> None:
    merged = effective_policy(FirewallStoreValues())
    for name in ("domain", "private", "public"):
        profile = merged.profile(name)
        assert profile.enabled is None and profile.enabled_source == "default" and profile.firewall_on
        assert profile.default_inbound_action is None and profile.inbound_default == "block"
        assert profile.allow_local_rules
    assert merged.allow_local_merge and not merged.has_gpo and merged.problems == ()


def test_local_profile_keys_map_standard_to_private() -> None:
    merged = policy(
        DomainProfile={"EnableFirewall": 1},
        standardprofile={"EnableFirewall": 0, "DefaultInboundAction": 0},
        PublicProfile={"EnableFirewall": 1, "DefaultInboundAction": 1},
    )
    assert merged.profile("private").enabled is False
    assert merged.profile("private").default_inbound_action == "allow"
    assert merged.profile("public").default_inbound_action == "block"
    assert merged.profile("domain").enabled is True
    assert merged.profile("Standard").name == "private"


def test_gpo_value_overrides_local_value_by_value() -> None:
    gpo = FirewallStoreValues(profiles={"PublicProfile": {"EnableFirewall": 0}})
    merged = policy(gpo=gpo, PublicProfile={"EnableFirewall": 1, "DefaultInboundAction": 0})
    public = merged.profile("public")
    assert (public.enabled, public.enabled_source) == (False, "gpo")
    assert (public.default_inbound_action, public.default_inbound_source) == ("allow", "local")
    assert ("EnableFirewall", "0", "gpo") in public.settings
    assert ("DefaultInboundAction", "0", "local") in public.settings
    assert merged.has_gpo


def test_gpo_private_profile_key_and_string_dwords() -> None:
    gpo = FirewallStoreValues(profiles={"PrivateProfile": {"EnableFirewall": "0"}})
    assert policy(gpo=gpo).profile("private").enabled is False


def test_unreadable_gpo_value_falls_back_to_local() -> None:
    gpo = FirewallStoreValues(profiles={"PublicProfile": {"EnableFirewall": b"\x00\x01"}})
    merged = policy(gpo=gpo, PublicProfile={"EnableFirewall": 0})
    assert (merged.profile("public").enabled, merged.profile("public").enabled_source) == (False, "local")
    assert any("EnableFirewall" in p and "not understood" in p for p in merged.problems)


def test_raw_dword_bytes_are_read_little_endian() -> None:
    merged = policy(PublicProfile={"EnableFirewall": b"\x00\x00\x00\x00"})
    assert merged.profile("public").enabled is False


def test_default_inbound_action_out_of_range_is_a_problem() -> None:
    merged = policy(PublicProfile={"DefaultInboundAction": 7})
    assert merged.profile("public").default_inbound_action is None
    assert merged.profile("public").inbound_default == "block"
    assert merged.problems


def test_rules_are_unioned_gpo_first() -> None:
    gpo = FirewallStoreValues(rules={"G1": inbound(Protocol="6", LPort="80")})
    merged = policy({"L1": inbound(Protocol="6", LPort="443")}, gpo=gpo)
    assert [(r.id, r.store) for r in merged.rules] == [("G1", "gpo"), ("L1", "local")]
    assert check_port(merged, 6, 80, "public").allowed
    assert check_port(merged, 6, 443, "public").allowed


def test_allow_local_policy_merge_zero_drops_local_rules_in_that_profile() -> None:
    gpo = FirewallStoreValues(profiles={"PublicProfile": {"AllowLocalPolicyMerge": 0}})
    merged = policy({"L1": inbound(Protocol="6", LPort="443")}, gpo=gpo)
    assert not merged.allow_local_merge
    assert merged.profile("public").allow_local_rules is False
    assert merged.profile("public").allow_local_rules_source == "gpo"
    assert merged.profile("private").allow_local_rules is True
    assert [r.id for r in merged.rules] == ["L1"]  # still reported
    assert [r.id for r in merged.rules_in_effect("public")] == []
    public = check_port(merged, 6, 443, "public")
    assert not public.allowed and "no active inbound allow rule" in public.reason
    assert check_port(merged, 6, 443, "private").allowed


def test_allow_local_policy_merge_in_the_local_store_means_nothing() -> None:
    merged = policy({"L1": inbound(Protocol="6", LPort="443")}, PublicProfile={"AllowLocalPolicyMerge": 0})
    assert merged.profile("public").allow_local_rules
    assert check_port(merged, 6, 443, "public").allowed


def test_gpo_standard_profile_is_legacy_not_merged() -> None:
    gpo = FirewallStoreValues(profiles={"StandardProfile": {"EnableFirewall": 0}})
    merged = policy(gpo=gpo)
    assert all(merged.profile(p).enabled is None for p in ("domain", "private", "public"))
    assert merged.problems == ()


def test_unknown_profile_keys_and_hostile_shapes_are_problems() -> None:
    local = FirewallStoreValues(
        profiles={"WorkProfile": {"EnableFirewall": 1}, 5: {}, "PublicProfile": "not a mapping"},  # type: ignore[dict-item]
        rules={"ok": RDP_RULE, "binary": b"\x00\x01", 9: "v2.10|"},  # type: ignore[dict-item]
        globally_open_ports="nope",  # type: ignore[arg-type]
        policy_version="weird",
    )
    merged = effective_policy(local)
    text = " ".join(merged.problems)
    assert "WorkProfile" in text and "not a mapping" in text and "not a string" in text
    assert "PolicyVersion" in text
    assert [r.id for r in merged.rules] == ["ok", "binary"]
    assert not merged.rules[1].usable


def test_policy_version() -> None:
    assert policy_version_text(0x20A) == "2.10"
    assert policy_version_text(0x21F) == "2.31"
    assert policy_version_text(None) is None
    assert effective_policy(FirewallStoreValues(policy_version=0x20A)).policy_version == "2.10"


def test_defaults_store_is_parsed_but_never_enforced() -> None:
    merged = effective_policy(FirewallStoreValues(), defaults_rules={"D1": inbound(Protocol="6", LPort="80")})
    assert [(r.id, r.store) for r in merged.default_rules] == [("D1", "defaults")]
    assert merged.rules == ()
    assert not check_port(merged, 6, 80, "public").allowed


# ---- legacy open ports -----------------------------------------------------------------------------


def test_legacy_globally_open_ports_are_parsed_and_reported_not_enforced() -> None:
    gpo = FirewallStoreValues(globally_open_ports={"StandardProfile": {"8080:TCP": "8080:TCP:*:Enabled:Web"}})
    local = FirewallStoreValues(
        globally_open_ports={"DomainProfile": {"53:UDP": "53:UDP:LocalSubNet:Disabled:DNS", "x": "abc"}}
    )
    merged = effective_policy(local, gpo)
    entries = {(e.store, e.value_name): e for e in merged.legacy_open_ports}
    web = entries[("gpo", "8080:TCP")]
    assert (web.port, web.protocol, web.scope, web.enabled, web.name) == (8080, "TCP", "*", True, "Web")
    assert web.profiles == frozenset({"private", "public"})
    dns = entries[("local", "53:UDP")]
    assert (dns.port, dns.protocol_number, dns.enabled, dns.profiles) == (53, 17, False, frozenset({"domain"}))
    assert entries[("local", "x")].problems
    verdict = check_port(merged, 6, 8080, "public")
    assert not verdict.allowed
    assert verdict.legacy_open_ports == (web,)
    assert check_port(merged, 6, 8080, "domain").legacy_open_ports == ()


@pytest.mark.parametrize("data", ["", ":::", "99999:TCP:*:Enabled:x", "80:ICMP:*:On:x", None, b"80:TCP"])
def test_legacy_entries_never_raise(data: object) -> None:
    entry = parse_legacy_open_port("local", "StandardProfile", "v", data)
    assert entry.problems and not (entry.enabled and entry.port is not None and entry.protocol_number)


def test_legacy_name_may_contain_colons() -> None:
    entry = parse_legacy_open_port("gpo", "DomainProfile", "v", "443:TCP:*:Enabled:Site: secure")
    assert entry.name == "Site: secure" and entry.problems == ()


# ---- the port check --------------------------------------------------------------------------------


def test_block_rule_shadows_allow_rule() -> None:
    merged = policy(
        {
            "allow-web": inbound(Protocol="6", LPort="80", Name="Web"),
            "block-range": inbound("Block", Protocol="6", LPort="1-1024", Name="Lockdown"),
        }
    )
    verdict = check_port(merged, 6, 80, "public")
    assert not verdict.allowed and verdict.firewall_enabled
    assert [r.id for r in verdict.blocking_rules] == ["block-range"]
    assert [r.id for r in verdict.allowing_rules] == ["allow-web"]
    assert "block-range (Lockdown)" in verdict.reason and "Block beats" in verdict.reason
    assert check_port(merged, 6, 8080, "public").allowed is False  # no allow at all
    assert check_port(merged, 17, 80, "public").allowed is False


def test_authenticated_bypass_beats_block() -> None:
    merged = policy(
        {
            "bypass": inbound("Bypass", Protocol="6", LPort="80", RMauth="O:LSD:(A;;CC;;;S-1-5-21-1)"),
            "block": inbound("Block", Protocol="6"),
        }
    )
    verdict = check_port(merged, 6, 80, "public")
    assert verdict.allowed and verdict.authenticated_only
    assert [r.id for r in verdict.allowing_rules] == ["bypass"]
    assert "authenticated-bypass" in verdict.reason and "IPsec" in verdict.reason


def test_authenticate_security_marks_the_verdict() -> None:
    verdict = check_port(
        policy({"a": inbound(Protocol="6", LPort="80", Security="AuthenticateEncrypt")}), 6, 80, "public"
    )
    assert verdict.allowed and verdict.authenticated_only


def test_scoped_rules_are_flagged() -> None:
    merged = policy({"a": inbound(Protocol="6", LPort="80", RA4="LocalSubnet")})
    assert check_port(merged, 6, 80, "public").scoped
    merged = policy({"a": inbound(Protocol="6", LPort="80", RA4="LocalSubnet"), "b": inbound(Protocol="6", LPort="80")})
    assert not check_port(merged, 6, 80, "public").scoped


def test_profile_specific_rules() -> None:
    merged = policy({"p": inbound(Protocol="6", LPort="8080", Profile=["Private", "Domain"])})
    assert check_port(merged, 6, 8080, "private").allowed
    assert check_port(merged, 6, 8080, "domain").allowed
    assert not check_port(merged, 6, 8080, "public").allowed
    assert check_port(merged, 6, 8080, "PUBLIC").profile == "public"


def test_disabled_outbound_and_directionless_rules_are_ignored() -> None:
    merged = policy(
        {
            "off": rule(Action="Allow", Active="FALSE", Dir="In", Protocol="6", LPort="80"),
            "out": rule(Action="Allow", Active="TRUE", Dir="Out", Protocol="6", LPort="80"),
            "nodir": rule(Action="Allow", Active="TRUE", Protocol="6", LPort="80"),
            "block-off": rule(Action="Block", Active="FALSE", Dir="In", Protocol="6", LPort="443"),
            "allow-443": inbound(Protocol="6", LPort="443"),
        }
    )
    assert not check_port(merged, 6, 80, "public").allowed
    verdict = check_port(merged, 6, 443, "public")
    assert verdict.allowed and verdict.blocking_rules == ()


def test_protocol_absent_means_any() -> None:
    merged = policy({"any": inbound(Name="Everything")})
    for protocol, port in ((6, 80), (17, 53), (None, 9000)):
        assert check_port(merged, protocol, port, "public").allowed


def test_any_protocol_endpoint_needs_a_protocol_less_rule() -> None:
    merged = policy({"tcp": inbound(Protocol="6", LPort="9000")})
    verdict = check_port(merged, None, 9000, "public")
    assert not verdict.allowed and verdict.protocol is None
    assert "any protocol port 9000" in verdict.reason
    shadowed = policy({"any": inbound(), "tcp-block": inbound("Block", Protocol="6", LPort="9000")})
    assert not check_port(shadowed, None, 9000, "public").allowed  # TCP part is blocked


def test_udp_endpoint_is_not_opened_by_tcp_rule() -> None:
    merged = policy({"tcp": inbound(Protocol="6", LPort="53"), "udp": inbound(Protocol="17", LPort="5353")})
    assert not check_port(merged, 17, 53, "public").allowed
    assert check_port(merged, 17, 5353, "public").allowed


def test_rule_without_ports_covers_every_port_of_its_protocol() -> None:
    merged = policy({"all-tcp": inbound(Protocol="6")})
    assert check_port(merged, 6, 1, "public").allowed and check_port(merged, 6, 65535, "public").allowed
    assert not check_port(merged, 17, 1, "public").allowed


def test_keyword_rules_do_not_open_numeric_ports_except_rpc_epmap() -> None:
    merged = policy({"rpc": inbound(Protocol="6", LPort="RPC"), "epmap": inbound(Protocol="6", LPort="RPC-EPMap")})
    assert not check_port(merged, 6, 49152, "public").allowed
    assert check_port(merged, 6, 135, "public").allowed


def test_firewall_off_is_allowed_but_says_so() -> None:
    gpo = FirewallStoreValues(profiles={"PublicProfile": {"EnableFirewall": 0}})
    verdict = check_port(policy(gpo=gpo), 6, 80, "public")
    assert verdict.allowed and not verdict.firewall_enabled
    assert "firewall is off" in verdict.reason and "gpo" in verdict.reason


def test_default_inbound_allow_admits_unmatched_ports_but_block_rules_still_win() -> None:
    merged = policy({"b": inbound("Block", Protocol="6", LPort="23")}, PublicProfile={"DefaultInboundAction": 0})
    verdict = check_port(merged, 6, 80, "public")
    assert (
        verdict.allowed
        and verdict.default_inbound_action == "allow"
        and "default inbound action is allow" in verdict.reason
    )
    assert not check_port(merged, 6, 23, "public").allowed


def test_do_not_allow_exceptions_blocks_everything() -> None:
    merged = policy({"a": inbound(Protocol="6", LPort="80")}, PublicProfile={"DoNotAllowExceptions": 1})
    verdict = check_port(merged, 6, 80, "public")
    assert not verdict.allowed and "DoNotAllowExceptions" in verdict.reason


@pytest.mark.parametrize("port", [-1, 65536, True, "80"])
def test_invalid_port_is_a_verdict_not_an_exception(port: object) -> None:
    verdict = check_port(policy({"any": inbound()}), 6, port, "public")  # type: ignore[arg-type]
    assert not verdict.allowed and "not a port number" in verdict.reason


def test_unknown_profile_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="unknown firewall profile"):
        check_port(policy(), 6, 80, "work")


def test_reason_lists_at_most_three_rules() -> None:
    merged = policy({f"b{i}": inbound("Block", Protocol="6", LPort="80") for i in range(5)})
    assert "and 2 more" in check_port(merged, 6, 80, "public").reason


# ---- service model helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "number"), [("tcp", 6), ("http", 6), ("HTTPS", 6), (" udp ", 17), ("any", None), ("Any", None)]
)
def test_endpoint_protocol_number(protocol: str, number: int | None) -> None:
    assert endpoint_protocol_number(protocol) == number


@pytest.mark.parametrize("protocol", ["ftp", "", None, 6])
def test_endpoint_protocol_number_rejects_unknown(protocol: object) -> None:
    with pytest.raises(ValueError, match="not tcp, http, https, udp or any"):
        endpoint_protocol_number(protocol)  # type: ignore[arg-type]


def endpoint(kind: str = INPUT, **kw: object) -> Endpoint:
    return Endpoint(location="/ServiceDefinition/VirtualMachineRole/Endpoints/X", kind=kind, name="X", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ep", "expected"),
    [
        (endpoint(protocol="http", port="80", local_port="8080"), 8080),
        (endpoint(protocol="http", port="80"), 80),
        (endpoint(protocol="tcp", port="443", local_port="*"), "dynamic"),
        (endpoint(protocol="tcp", port="443", local_port=" * "), "dynamic"),
        (endpoint(protocol="tcp", port="443", local_port="abc"), None),
        (endpoint(protocol="tcp", port="0"), None),
        (endpoint(protocol="tcp", port="65536"), None),
        (endpoint(protocol="tcp"), None),
        (endpoint(INSTANCE_INPUT, protocol="tcp", local_port="3390"), 3390),
        (endpoint(INTERNAL, protocol="tcp", port="8080"), 8080),
        (endpoint(INTERNAL, protocol="tcp"), "dynamic"),
        (endpoint(INTERNAL, protocol="any", fixed_ports=(PortRange("/f", min="9000", max="9000"),)), 9000),
        (endpoint(INTERNAL, protocol="any", fixed_ports=(PortRange("/f", min="9000"),)), 9000),
        (endpoint(INTERNAL, protocol="any", fixed_ports=(PortRange("/f", min="9000", max="9010"),)), None),
    ],
)
def test_endpoint_local_port(ep: Endpoint, expected: object) -> None:
    assert endpoint_local_port(ep) == expected


def test_endpoint_local_port_range() -> None:
    ranged = endpoint(INTERNAL, protocol="any", fixed_ports=(PortRange("/f", min="9000", max="9010"),))
    assert endpoint_local_port_range(ranged) == (9000, 9010)
    assert endpoint_local_port_range(endpoint(INTERNAL, protocol="tcp", port="80")) is None
    bad = endpoint(INTERNAL, protocol="any", fixed_ports=(PortRange("/f", min="9010", max="9000"),))
    assert endpoint_local_port_range(bad) is None
    assert endpoint_local_port_range(endpoint(protocol="tcp", port="80")) is None


def test_endpoint_to_verdict_end_to_end() -> None:
    ep = endpoint(protocol="http", port="80", local_port="8080")
    merged = policy({"web": inbound(Protocol="6", LPort="8080", Profile="Public")})
    port = endpoint_local_port(ep)
    assert isinstance(port, int)
    results = {
        p: check_port(merged, endpoint_protocol_number(ep.protocol or ""), port, p).allowed
        for p in ("domain", "private", "public")
    }
    assert results == {"domain": False, "private": False, "public": True}


# ---- never raises --------------------------------------------------------------------------------

_FIELD_NAMES = st.sampled_from(
    ["Action", "Active", "Dir", "Profile", "Protocol", "LPort", "RPort", "LPort2_10", "App", "Svc", "RA4", "Name", "Zz"]
)
_FIELD_VALUES = st.one_of(
    st.sampled_from(
        [
            "Allow",
            "Block",
            "ByPass",
            "TRUE",
            "FALSE",
            "In",
            "Out",
            "Public",
            "6",
            "17",
            "80",
            "1-66",
            "RPC",
            "RPC-EPMap",
        ]
    ),
    st.text(max_size=12),
)
_STRUCTURED = st.lists(st.tuples(_FIELD_NAMES, _FIELD_VALUES), max_size=12).map(
    lambda fields: "v2.10|" + "".join(f"{n}={v}|" for n, v in fields)
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_id=st.text(max_size=20), text=st.one_of(st.text(max_size=300), _STRUCTURED))
def test_parse_rule_never_raises(rule_id: str, text: str) -> None:
    parsed = parse_rule(rule_id, text, "local")
    assert isinstance(parsed.problems, tuple)
    hash(parsed)  # frozen and hashable all the way down


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rules=st.dictionaries(st.text(max_size=5), st.one_of(_STRUCTURED, st.text(max_size=60)), max_size=6),
    profiles=st.dictionaries(
        st.sampled_from(["DomainProfile", "StandardProfile", "PublicProfile", "Bogus"]),
        st.dictionaries(
            st.sampled_from(["EnableFirewall", "DefaultInboundAction", "DoNotAllowExceptions"]),
            st.one_of(st.integers(-5, 2**33), st.text(max_size=4), st.binary(max_size=5), st.none()),
            max_size=3,
        ),
        max_size=4,
    ),
    protocol=st.sampled_from([6, 17, None, 1]),
    port=st.integers(-2, 70000),
    profile=st.sampled_from(["domain", "private", "public"]),
)
def test_policy_and_check_never_raise(rules, profiles, protocol, port, profile) -> None:
    merged = effective_policy(FirewallStoreValues(profiles=profiles, rules=rules), FirewallStoreValues(rules=rules))
    verdict = check_port(merged, protocol, port, profile)
    assert isinstance(verdict.allowed, bool)
    if verdict.allowed and verdict.firewall_enabled and verdict.default_inbound_action == "block":
        assert verdict.allowing_rules
