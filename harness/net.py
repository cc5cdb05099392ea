"""Small network helpers shared by the fabric and the live suites."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from harness.ascii import is_ascii_digits, parse_ascii_int


def is_ip_address(text: str) -> bool:
    """``text`` is an IPv4 or IPv6 address literal (not a host name)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class BadBodyLength(Exception):
    """A request body a server will not read: ``reason`` is ``chunked``, ``malformed`` or ``too-large``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def request_body_length(headers: Any, max_body: int) -> int:
    """The Content-Length of a request to serve (0 when absent); raises :class:`BadBodyLength` for a chunked
    body, a value that is not ASCII digits (``int()`` would take ``+1``, ``1_0`` or ``²``'s relatives), or one
    over ``max_body``. The caller answers (and closes the connection: the body cannot be skipped)."""
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        raise BadBodyLength("chunked")
    raw = (headers.get("Content-Length") or "0").strip()
    if not is_ascii_digits(raw):
        raise BadBodyLength("malformed")
    length = parse_ascii_int(raw, max_digits=12)
    if length is None or length > max_body:
        raise BadBodyLength("too-large")
    return length


def secret_matches(given: str | None, expected: bytes) -> bool:
    """A header value equals a secret, in constant time. http.server decodes header bytes as Latin-1, so
    encoding back gives the bytes sent; bytes are compared (``hmac.compare_digest`` raises TypeError on
    non-ASCII str)."""
    return hmac.compare_digest((given or "").strip().encode("latin-1", errors="replace"), expected)
