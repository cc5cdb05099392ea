"""One ASCII-integer parser (harness/ascii.py), and the live parsers that use it: no ValueError on '²'."""

from __future__ import annotations

import pytest

from harness.ascii import is_ascii_digits, parse_ascii_int
from harness.live.probes.guest import _port_matches, firewall_allows


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("80", 80),
        (" 443 ", 443),
        ("007", 7),
        (None, None),
        ("", None),
        ("  ", None),
        ("²", None),
        ("1²", None),
        ("٣", None),  # an Arabic-Indic digit: int() takes it
        ("+1", None),
        ("-1", None),
        ("1_0", None),
        ("1.0", None),
        ("0x10", None),
        ("9" * 5000, None),  # beyond int()'s digit limit: None, not ValueError
    ],
)
def test_parse_ascii_int(text: str | None, expected: int | None) -> None:
    assert parse_ascii_int(text) == expected


def test_parse_ascii_int_options() -> None:
    assert parse_ascii_int("255", max_digits=3) == 255
    assert parse_ascii_int("0255", max_digits=3) is None
    assert parse_ascii_int(" 3", strip=False) is None
    assert parse_ascii_int("3", strip=False) == 3
    assert is_ascii_digits("12") and not is_ascii_digits("") and not is_ascii_digits("²")


@pytest.mark.parametrize(
    ("spec", "matches"), [("²", False), ("²-90", False), ("70-²", False), ("²,80", True), (" ² ", False)]
)
def test_a_firewall_port_spec_with_a_non_ascii_digit_does_not_raise(spec: str, matches: bool) -> None:
    """netsh output with a superscript digit in LocalPort: it used to raise ValueError out of the guest probe."""
    assert _port_matches(spec, 80) is matches
    rules = [{"rule name": "odd", "enabled": "Yes", "direction": "In", "action": "Allow", "localport": spec}]
    assert firewall_allows({"Domain": True, "Private": False, "Public": False}, rules, "tcp", 80)[0] is matches


def test_firewall_port_specs_still_match() -> None:
    assert _port_matches("80", 80) and _port_matches("70-90", 80) and _port_matches("443, 80", 80)
    assert _port_matches("Any", 80) and _port_matches("", 80) and not _port_matches("81", 80)
