"""Safe XML parsing for untrusted service-model and package documents.

Everything here is built on defusedxml's expat parser with DTDs, entity declarations and external
references forbidden, and with caps checked *before* and *during* parsing (document size, element
nesting depth, element count), so that a hostile file costs bounded time and memory. Every failure
becomes :class:`Unreadable` with a sentence a person can act on; no library exception escapes.

The result is a small tree of :class:`Node` objects: local element names (namespace stripped, the
root namespace remembered), raw attribute strings, the line of each start tag, and an element-path
``location`` that findings point at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import ParseError
from xml.parsers import expat

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser

from harness.readers.errors import Unreadable

MIB = 1024 * 1024
#: Real service models are a few KiB; 8 MiB leaves room for generated files and stops memory abuse.
DEFAULT_MAX_BYTES = 8 * MIB
#: Real files nest < 12 deep; deep nesting is only ever an attack on recursive consumers.
DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_ELEMENTS = 200_000


@dataclass(eq=False)
class Node:
    """One element. ``tag`` is the local name; ``attrib`` keys are local names too."""

    tag: str
    namespace: str | None
    attrib: dict[str, str]
    line: int | None
    children: list[Node] = field(default_factory=list)
    text: str = ""
    location: str = ""

    def get(self, name: str) -> str | None:
        return self.attrib.get(name)

    def find(self, tag: str) -> Node | None:
        for child in self.children:
            if child.tag == tag:
                return child
        return None

    def findall(self, tag: str) -> list[Node]:
        return [child for child in self.children if child.tag == tag]


@dataclass(frozen=True)
class Document:
    root: Node
    #: The root element's namespace URI, or None when it has none.
    namespace: str | None


class _LimitExceeded(Exception):
    """Raised from inside expat callbacks; turned into Unreadable by parse_xml."""


def _split(qname: str) -> tuple[str | None, str]:
    if qname.startswith("{"):
        ns, _, local = qname[1:].partition("}")
        return ns, local
    return None, qname


class _Builder:
    """A TreeBuilder-compatible target that also enforces the depth and count caps."""

    def __init__(self, max_depth: int, max_elements: int) -> None:
        self._max_depth = max_depth
        self._max_elements = max_elements
        self._stack: list[Node] = []
        self._count = 0
        self._text: list[str] = []
        self.root: Node | None = None
        # Set once the parser exists: the expat object, for cheap line numbers.
        self.expat: expat.XMLParserType | None = None

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self._count += 1
        if self._count > self._max_elements:
            raise _LimitExceeded(f"more than {self._max_elements} elements")
        if len(self._stack) >= self._max_depth:
            raise _LimitExceeded(f"elements nested more than {self._max_depth} deep")
        self._flush_text()
        ns, local = _split(tag)
        attrs = {_split(k)[1]: v for k, v in attrib.items()}
        line = self.expat.CurrentLineNumber if self.expat is not None else None
        node = Node(tag=local, namespace=ns, attrib=attrs, line=line)
        if self._stack:
            self._stack[-1].children.append(node)
        else:
            self.root = node
        self._stack.append(node)

    def end(self, tag: str) -> None:
        self._flush_text()
        self._stack.pop()

    def data(self, text: str) -> None:
        # Only direct text is kept (SupportData/SDKVersion and similar), capped like everything else.
        if self._stack:
            self._text.append(text)

    def _flush_text(self) -> None:
        if self._text and self._stack:
            node = self._stack[-1]
            node.text = (node.text + "".join(self._text))[: 64 * 1024]
        self._text = []

    def close(self) -> Node | None:
        return self.root


#: The encoding name in an XML declaration (any quoted value: names outside the allowlist are refused below).
_DECL_ENCODING = re.compile(r"""\A<\?xml\s[^>]*?\bencoding\s*=\s*(["'])([^"'<>]{0,1000})\1""")
_DECL_ENCODING_BYTES = re.compile(_DECL_ENCODING.pattern.encode())

#: The encodings a document may declare: real text encodings, by their IANA names and common aliases
#: (lower case, "_" read as "-"), mapped to the Python codec that decodes them. Nothing else is looked up:
#: Python also "knows" bytes-to-bytes codecs (hex, base64, zlib, rot13, uu, ...), codecs that are not
#: charsets (idna, punycode, unicode_escape, undefined), UTF-7 (a classic filter-evasion trick) and
#: platform-only ones (mbcs, oem); a declaration naming any of those, or an unknown name, is Unreadable.
#: UTF-16 and UTF-32 are read only when the bytes say so (byte order mark or "<\0"/"\0<"), never because
#: a declaration says so; .NET writes encoding="utf-16" into files saved as UTF-8, which read as UTF-8.
_UTF16_32 = "utf-16/32"
ACCEPTED_ENCODINGS: dict[str, str] = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "us-ascii": "ascii",
    "ascii": "ascii",
    "latin1": "latin-1",
    "latin-1": "latin-1",
    **{
        name: _UTF16_32
        for name in ("utf-16", "utf16", "utf-16le", "utf-16be", "utf-32", "utf32", "utf-32le", "utf-32be")
    },
    **{f"iso-8859-{n}": f"iso8859_{n}" for n in (*range(1, 12), 13, 14, 15, 16)},
    **{f"iso8859-{n}": f"iso8859_{n}" for n in (*range(1, 12), 13, 14, 15, 16)},
    **{f"windows-{n}": f"cp{n}" for n in range(1250, 1259)},
    **{f"cp{n}": f"cp{n}" for n in range(1250, 1259)},
    "shift-jis": "shift_jis",
    "sjis": "shift_jis",
    "windows-31j": "cp932",
    "cp932": "cp932",
    "euc-jp": "euc_jp",
    "euc-kr": "euc_kr",
    "gb2312": "gb2312",
    "gbk": "gbk",
    "gb18030": "gb18030",
    "big5": "big5",
    "koi8-r": "koi8_r",
    "koi8-u": "koi8_u",
}
ACCEPTED_SUMMARY = (
    "UTF-8, UTF-16, UTF-32, US-ASCII, ISO-8859-1 to -16, windows-1250 to -1258, Shift_JIS, EUC-JP, EUC-KR, "
    "GB2312, GBK, GB18030, Big5, KOI8-R, KOI8-U"
)


def _declared(name: str, path: Path) -> tuple[str, str]:
    """(name as declared, Python codec) for an accepted declared encoding; Unreadable naming it otherwise."""
    codec = ACCEPTED_ENCODINGS.get(name.strip().lower().replace("_", "-"))
    if codec is None:
        shown = name if len(name) <= 40 else name[:40] + "…"
        raise Unreadable(
            path,
            f"declares encoding {shown!r}, which is not an accepted text encoding (accepted: {ACCEPTED_SUMMARY})",
        )
    return name.strip(), codec


def _check_declaration(text: str, path: Path) -> str:
    match = _DECL_ENCODING.match(text[:2048])
    if match is not None:
        _declared(match.group(2), path)
    return text


def _decode(data: bytes, path: Path) -> str:
    """Text for the parser, always decoded here (expat is then told the text is UTF-8, so it never looks a
    declared name up itself): by the byte order mark or byte pattern for UTF-16/32, as UTF-8 when the bytes
    are valid UTF-8 (so a wrong ``encoding="utf-16"`` declaration, common in .NET output, does not matter),
    otherwise by the declared encoding, which must be in :data:`ACCEPTED_ENCODINGS`."""
    boms = (
        (b"\xef\xbb\xbf", "utf-8"),
        (b"\xff\xfe\x00\x00", "utf-32-le"),
        (b"\x00\x00\xfe\xff", "utf-32-be"),
        (b"\xff\xfe", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be"),
    )
    for bom, codec in boms:
        if data.startswith(bom):
            return _check_declaration(_strict(data[len(bom) :], codec, path), path)
    if data.startswith(b"<\x00") and not data.startswith(b"<\x00\x00"):
        return _check_declaration(_strict(data, "utf-16-le", path), path)
    if data.startswith(b"\x00<") and not data.startswith(b"\x00\x00"):
        return _check_declaration(_strict(data, "utf-16-be", path), path)
    try:
        return _check_declaration(data.decode("utf-8"), path)
    except UnicodeDecodeError as exc:
        bad_utf8 = exc.start
    match = _DECL_ENCODING_BYTES.match(data[:2048])
    if match is None:
        raise Unreadable(path, f"not valid UTF-8 text at byte {bad_utf8} and no other encoding is declared")
    name, codec = _declared(match.group(2).decode("latin-1"), path)
    if codec == "utf-8":
        raise Unreadable(path, f"not valid UTF-8 text at byte {bad_utf8}")
    if codec == _UTF16_32:
        raise Unreadable(
            path,
            f"declares {name.upper()} but has no byte order mark and is written in 8-bit text (not valid "
            f"UTF-8 at byte {bad_utf8})",
        )
    return _strict(data, codec, path, shown=name.upper())


def _strict(data: bytes, codec: str, path: Path, *, shown: str | None = None) -> str:
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        raise Unreadable(path, f"not valid {shown or codec.upper()} text at byte {exc.start}") from None


def size_text(size: int) -> str:
    """A size for a message: "2 GiB", "30 MiB", "8.5 MiB", "512 KiB", "12 bytes"."""
    if size >= 1024 * MIB:
        value = size / (1024 * MIB)
        return f"{value:.0f} GiB" if value >= 10 or value == int(value) else f"{value:.1f} GiB"
    if size >= MIB:
        value = size / MIB
        return f"{value:.0f} MiB" if value >= 10 or value == int(value) else f"{value:.1f} MiB"
    if size >= 1024:
        return f"{size // 1024} KiB"
    return f"{size} bytes"


def check_size(size: int, limit: int, what: str, path: Path) -> None:
    if size > limit:
        raise Unreadable(path, f"file is {size_text(size)}, over the {size_text(limit)} limit for a {what}")


def parse_xml(
    data: bytes,
    path: Path,
    *,
    what: str = "service-model file",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    location_prefix: str = "",
    location: str | None = None,
) -> Document:
    """Parse untrusted bytes into a :class:`Document`, or raise :class:`Unreadable`.

    ``path`` and ``location`` only label the error; ``location_prefix`` goes in front of every
    element location (a package part name followed by "!").
    """
    check_size(len(data), max_bytes, what, path)
    if not data.strip():
        raise Unreadable(path, "file is empty", location=location)
    text = _decode(data, path)
    builder = _Builder(max_depth, max_elements)
    parser = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    builder.expat = parser.parser
    try:
        parser.feed(text)
        root = parser.close()
    except ParseError as exc:
        line, column = getattr(exc, "position", (0, 0))
        column += 1  # expat counts columns from 0; editors count from 1
        reason = expat.errors.messages.get(getattr(exc, "code", 0), "syntax error")
        raise Unreadable(
            path, f"not well-formed XML at line {line}, column {column}: {reason}", location=location
        ) from None
    except DTDForbidden:
        raise Unreadable(path, "DTDs are not allowed (the file has a <!DOCTYPE>)", location=location) from None
    except EntitiesForbidden:
        raise Unreadable(path, "entity declarations are not allowed", location=location) from None
    except ExternalReferenceForbidden:
        raise Unreadable(path, "external entity references are not allowed", location=location) from None
    except _LimitExceeded as exc:
        raise Unreadable(path, f"XML has {exc}; refusing to parse further", location=location) from None
    except (ValueError, UnicodeError, LookupError, RecursionError, MemoryError) as exc:
        # expat's str path re-encodes; lone surrogates and similar land here.
        raise Unreadable(path, f"cannot parse XML: {type(exc).__name__}", location=location) from None
    if root is None:
        raise Unreadable(path, "no root element", location=location)
    _assign_locations(root, location_prefix)
    return Document(root=root, namespace=root.namespace)


def _quote(value: str) -> str | None:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None  # XPath 1.0 has no escape: fall back to an index


#: Attributes that identify an element among its siblings, in order of preference.
KEY_ATTRIBUTES = ("name", "moduleName")


def _assign_locations(root: Node, prefix: str) -> None:
    """Element paths that name elements by their key attribute (``[@name='X']``), else by position.

    A second sibling with the same tag and key gets ``[@name='X'][2]`` (XPath: the 2nd of those), so
    two findings on duplicated elements never share a location or a fingerprint.
    """
    root.location = f"{prefix}/{root.tag}"
    stack = [root]
    while stack:  # iterative: depth is capped, but recursion buys nothing here
        parent = stack.pop()
        same_tag: dict[str, int] = {}
        for child in parent.children:
            same_tag[child.tag] = same_tag.get(child.tag, 0) + 1
        seen: dict[str, int] = {}
        seen_key: dict[tuple[str, str, str], int] = {}
        for child in parent.children:
            seen[child.tag] = seen.get(child.tag, 0) + 1
            attr = next((a for a in KEY_ATTRIBUTES if child.attrib.get(a) is not None), None)
            quoted = _quote(child.attrib[attr]) if attr is not None else None
            if attr is not None and quoted is not None:
                key = (child.tag, attr, child.attrib[attr])
                seen_key[key] = seen_key.get(key, 0) + 1
                nth = f"[{seen_key[key]}]" if seen_key[key] > 1 else ""
                step = f"{child.tag}[@{attr}={quoted}]{nth}"
            elif same_tag[child.tag] > 1:
                step = f"{child.tag}[{seen[child.tag]}]"
            else:
                step = child.tag
            child.location = f"{parent.location}/{step}"
            stack.append(child)
