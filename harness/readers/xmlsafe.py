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


_DECL_ENCODING = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def _decode(data: bytes, path: Path) -> str | bytes:
    """Text for the parser: decoded here when the byte order mark or byte pattern says UTF-16/32 or the
    bytes are valid UTF-8 (so a wrong ``encoding="utf-16"`` declaration, common in .NET output, does
    not matter); otherwise the raw bytes, so that expat honours a declared single-byte encoding."""
    boms = (
        (b"\xef\xbb\xbf", "utf-8"),
        (b"\xff\xfe\x00\x00", "utf-32-le"),
        (b"\x00\x00\xfe\xff", "utf-32-be"),
        (b"\xff\xfe", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be"),
    )
    for bom, codec in boms:
        if data.startswith(bom):
            return _strict(data[len(bom) :], codec, path)
    if data.startswith(b"<\x00") and not data.startswith(b"<\x00\x00"):
        return _strict(data, "utf-16-le", path)
    if data.startswith(b"\x00<") and not data.startswith(b"\x00\x00"):
        return _strict(data, "utf-16-be", path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        match = _DECL_ENCODING.match(data)
        if match is None or match.group(1).lower() in (b"utf-8", b"utf8"):
            raise Unreadable(path, "not valid UTF-8 text and no other encoding is declared") from None
        return data


def _strict(data: bytes, codec: str, path: Path) -> str:
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        raise Unreadable(path, f"not valid {codec.upper()} text at byte {exc.start}") from None


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
    except (ValueError, UnicodeError, RecursionError, MemoryError) as exc:
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
