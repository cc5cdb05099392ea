"""Rewriting the effective configuration so storage settings point at the fabric's Azurite."""

from __future__ import annotations

import re

# A <Setting name=".." value=".."/> whose value is a storage connection string (or dev storage).
_SETTING = re.compile(r"(<Setting\b[^>]*?\bvalue\s*=\s*)(\"[^\"]*\"|'[^']*')", re.IGNORECASE)
_STORAGE = re.compile(r"(UseDevelopmentStorage\s*=\s*true|AccountName\s*=|BlobEndpoint\s*=)", re.IGNORECASE)


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def point_storage_at(cscfg_text: str, connection_string: str) -> str:
    """Every setting holding a storage connection string now names ``connection_string``.

    Targeted substitution keeps the rest of the file byte-for-byte (comments, order, formatting).
    """

    def swap(match: re.Match[str]) -> str:
        quoted = match.group(2)
        if not _STORAGE.search(quoted[1:-1]):
            return match.group(0)
        return f'{match.group(1)}"{_escape(connection_string)}"'

    return _SETTING.sub(swap, cscfg_text)
