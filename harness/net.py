"""Small network helpers shared by the fabric and the live suites."""

from __future__ import annotations

import ipaddress


def is_ip_address(text: str) -> bool:
    """``text`` is an IPv4 or IPv6 address literal (not a host name)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
