"""Masking secrets out of every text the live probes show (evidence, messages, logs)."""

from __future__ import annotations

import base64
import json
import logging
import re
import urllib.parse
from collections.abc import Iterable

MASK = "***"
MIN_SECRET = 4  # shorter values would mask ordinary words


class Masker:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._needles: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        if not secret or len(secret) < MIN_SECRET:
            return
        forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
        forms.add(base64.b64encode(secret.encode()).decode())
        forms.add(base64.b64encode(secret.encode("utf-16-le")).decode())
        # as quoted in exception messages (int('…'), KeyError) and in JSON text
        forms |= {repr(secret)[1:-1], json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
        self._needles |= {f for f in forms if len(f) >= MIN_SECRET}

    def add_value(self, value: str | None) -> None:
        """A value that may be or hold a secret: the whole value and, for connection strings and query
        strings, each field's value (``AccountKey=…;``, ``sig=…&``), so that a part quoted alone is masked."""
        if not value:
            return
        self.add(value)
        for part in re.split(r"[;&?]", value):
            name, sep, field = part.partition("=")
            if sep and name.strip():
                self.add(field.strip())
                self.add(urllib.parse.unquote(field.strip()))

    def __call__(self, text: str) -> str:
        # longest first, so a secret containing another is masked whole
        for needle in sorted(self._needles, key=len, reverse=True):
            if needle in text:
                text = text.replace(needle, MASK)
        return text


# ---- authentication tokens in third-party debug logs ---------------------------------------------------

#: pyspnego logs every authentication token it sends or receives at DEBUG. An NTLM AUTHENTICATE message
#: carries the NTLMv2 response, which is cracked offline for the password; CredSSP carries the credentials.
TOKEN_LOGGERS = ("spnego._ntlm", "spnego._negotiate", "spnego._credssp", "spnego._sspi")
_TOKEN_RECORD = re.compile(r"^(\w+ (?:step|TSRequest) (?:input|output)):")


class AuthTokenFilter(logging.Filter):
    """Keeps the record (that a step happened) and withholds the token it would print."""

    def filter(self, record: logging.LogRecord) -> bool:
        match = _TOKEN_RECORD.match(str(record.msg))
        if match:
            record.msg, record.args = f"{match.group(1)}: (token withheld by vmrole-harness)", ()
        return True


def withhold_auth_tokens() -> None:
    """Install :class:`AuthTokenFilter` on the loggers that print authentication tokens (idempotent)."""
    for name in TOKEN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, AuthTokenFilter) for f in logger.filters):
            logger.addFilter(AuthTokenFilter())
