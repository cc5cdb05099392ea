"""Canary secrets: unique, greppable values planted in inputs, and a scanner that finds them (or any of the
encodings an output path could apply to them) in outputs.

A canary is ``CANARY-<kind>-<random hex>`` (some kinds with a tail of characters that encoders change:
``/+=&<>"'%;`` and a non-ASCII letter). :func:`forms` lists what an encoder on an output path would turn it
into: URL-encoding, base64 (of UTF-8 and of UTF-16LE, at every alignment inside a longer base64 stream),
UTF-16LE bytes, hex, HTML/XML/JSON escaping, an HTTP Basic ``Authorization`` value. :func:`scan` reports
each hit with the file, the form and the text around it — with the secret itself masked, so a failing run
does not leak it either.
"""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

#: A tail that every encoder changes: URL, HTML, XML, JSON, shell and connection-string specials, non-ASCII.
SPECIALS = "/+=&<>\"'%;é"
MIN_FORM = 12  # shorter fragments (base64 cores of short values) would match by chance


def make(kind: str, *, specials: bool = False, length: int = 16) -> str:
    value = f"CANARY-{kind}-{secrets.token_hex(length // 2)}"
    return value + SPECIALS if specials else value


def _b64_cores(data: bytes, *, urlsafe: bool = False) -> set[str]:
    """The base64 characters fully determined by ``data`` at each of the three alignments it can have inside
    a longer base64 stream (so base64 of a whole document holding the secret is caught too)."""
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    cores = set()
    for shift in range(3):
        text = encode(b"\0" * shift + data + b"\0\0\0").decode()
        start = 4 if shift else 0  # the group mixing padding bytes with the secret
        end = ((shift + len(data)) // 3) * 4  # the last group made of secret bytes only
        cores.add(text[start:end])
    cores.add(encode(data).decode())  # the whole value, padding included
    return {c for c in cores if len(c) >= MIN_FORM}


def forms(value: str, *, user: str | None = None) -> dict[str, bytes]:
    """Encoded forms of ``value`` (name -> bytes to look for). ``user`` adds the HTTP Basic credential."""
    utf8, utf16 = value.encode(), value.encode("utf-16-le")
    found: dict[str, str | bytes] = {
        "plain": value,
        "url-encoded": urllib.parse.quote(value, safe=""),
        "url-encoded (plus)": urllib.parse.quote_plus(value),
        "url-encoded (path)": urllib.parse.quote(value),
        "html-escaped": html.escape(value),
        "xml-escaped": xml_escape(value, {'"': "&quot;"}),
        "json-escaped": json.dumps(value)[1:-1],
        "json-escaped (ascii)": json.dumps(value, ensure_ascii=True)[1:-1],
        "hex": utf8.hex(),
        "HEX": utf8.hex().upper(),
        "utf-16le": utf16,
        "utf-16le hex": utf16.hex(),
        "repr": repr(value)[1:-1],
    }
    for name, data in (("base64", utf8), ("base64 of utf-16le", utf16)):
        for i, core in enumerate(sorted(_b64_cores(data))):
            found[f"{name} #{i}"] = core
        for i, core in enumerate(sorted(_b64_cores(data, urlsafe=True))):
            found[f"{name} (urlsafe) #{i}"] = core
    if user is not None:
        basic = f"{user}:{value}".encode()
        found["basic auth"] = base64.b64encode(basic).decode()
        found["basic auth (utf-16le)"] = base64.b64encode(f"{user}:{value}".encode("utf-16-le")).decode()
    out: dict[str, bytes] = {}
    for name, form in found.items():
        data = form.encode() if isinstance(form, str) else form
        if len(data) >= MIN_FORM and data not in out.values():
            out[name] = data
    return out


@dataclass
class Canaries:
    """Every planted secret by kind, with the encodings to look for."""

    values: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)  # kind -> user name, for Basic-auth forms

    def __repr__(self) -> str:  # a failing test prints its arguments: never the values
        return f"Canaries({len(self.values)} kinds: {', '.join(self.values)})"

    def add(self, kind: str, value: str, *, user: str | None = None) -> str:
        self.values[kind] = value
        if user is not None:
            self.users[kind] = user
        return value

    def needles(self) -> list[tuple[str, str, bytes]]:
        """(kind, form name, bytes), longest first."""
        out = [
            (kind, name, data)
            for kind, value in self.values.items()
            for name, data in forms(value, user=self.users.get(kind)).items()
        ]
        return sorted(out, key=lambda n: len(n[2]), reverse=True)


@dataclass(frozen=True)
class Hit:
    where: str
    kind: str
    form: str
    context: str

    def __str__(self) -> str:
        return f"{self.where}: canary {self.kind} ({self.form}) in …{self.context}…"


def _context(data: bytes, at: int, size: int, needles: list[tuple[str, str, bytes]]) -> str:
    window = data[max(0, at - 80) : at + size + 80]
    for kind, name, needle in needles:  # mask every canary in the excerpt, the hit included
        window = window.replace(needle, f"<CANARY {kind} {name}>".encode())
    return window.decode("utf-8", "replace").replace("\n", "\\n")


#: Secrets the run makes up itself (not known to the test): a SAS signature the reimage probe signs, an
#: Authorization header, an NTLM authentication token, a PEM private key block. Masked text reads ``sig=***``.
SHAPES = {
    "SAS signature": re.compile(rb"[?&;]sig=(?!\*\*\*)[A-Za-z0-9%+/=_-]{16,}"),
    "Authorization header": re.compile(
        rb"Authorization['\"]?\s*[:=]\s*['\"]?(Basic|Negotiate|NTLM|Bearer) [A-Za-z0-9+/=._-]{8,}"
    ),
    # an NTLM AUTHENTICATE message (base64 of "NTLMSSP\0" + type 3): its NTLMv2 response is cracked offline
    # for the password (pyspnego logs every NTLM token at DEBUG)
    "NTLM authenticate message": re.compile(rb"TlRMTVNTUAADAAAA[A-Za-z0-9+/=]{16,}"),
    # a header followed by key data (rule documentation names the header alone)
    "PEM private key": re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:\s|\\[rn]|&#1[03];)*[A-Za-z0-9+/]{40}"),
}


def scan_bytes(where: str, data: bytes, canaries: Canaries) -> list[Hit]:
    needles = canaries.needles()
    hits: list[Hit] = []
    for name, pattern in SHAPES.items():
        for match in pattern.finditer(data):
            masked = data[: match.start()] + f"<{name}>".encode() + data[match.end() :]
            hits.append(Hit(where, "made-up secret", name, _context(masked, match.start(), len(name) + 2, needles)))
    for kind, name, needle in needles:
        at = data.find(needle)
        if at >= 0:
            hits.append(Hit(where, kind, name, _context(data, at, len(needle), needles)))
    return hits


def scan(outputs: Mapping[str, bytes | str | Path] | Iterable[Path], canaries: Canaries) -> list[Hit]:
    """Scan named texts and files (a directory is scanned recursively); returns every hit."""
    items: list[tuple[str, bytes | str | Path]] = (
        list(outputs.items()) if isinstance(outputs, Mapping) else [(str(p), p) for p in outputs]
    )
    hits: list[Hit] = []
    for where, thing in items:
        if isinstance(thing, Path):
            files = sorted(p for p in thing.rglob("*") if p.is_file()) if thing.is_dir() else [thing]
            for path in files:
                hits += scan_bytes(str(path), path.read_bytes(), canaries)
        else:
            hits += scan_bytes(where, thing.encode() if isinstance(thing, str) else thing, canaries)
    return hits


def report(hits: list[Hit]) -> str:
    return f"{len(hits)} canary secret(s) found in outputs:\n" + "\n".join(f"  {h}" for h in hits)
