"""Masking secrets out of every text the live suites show (evidence, messages, logs)."""

from __future__ import annotations

import base64
import json
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
