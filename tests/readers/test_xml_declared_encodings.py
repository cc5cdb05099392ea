"""Issue 9, finding 1: the encoding an XML declaration names is checked against an allowlist of real text
encodings; anything else (unknown names, Python's bytes-to-bytes codecs, UTF-7, ...) is Unreadable with a
problem naming the encoding, never a LookupError or other library exception."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.readers.errors import Unreadable
from harness.readers.xmlsafe import parse_xml

P = Path("Bad.csdef")

REFUSED = [
    "x",
    "hex",
    "rot13",
    "base64",
    "mbcs",
    "oem",
    "zlib",
    "bz2",
    "uu",
    "quopri",
    "idna",
    "punycode",
    "utf-7",
    "undefined",
    "unicode_escape",
    "raw_unicode_escape",
    "charmap",
    "palmos",
    "x-mac-roman",
    "../../etc/passwd",
    "a" * 300,
]


def _doc(encoding: str, body: bytes) -> bytes:
    return (
        b'<?xml version="1.0" encoding="'
        + encoding.encode()
        + b'"?><ServiceDefinition name="a">'
        + body
        + b"</ServiceDefinition>"
    )


@pytest.mark.parametrize("encoding", REFUSED)
@pytest.mark.parametrize("body", [b"\xe9", b"e"], ids=["non-utf8-byte", "ascii"])
def test_unaccepted_declared_encoding_is_unreadable_naming_it(encoding: str, body: bytes) -> None:
    with pytest.raises(Unreadable) as info:
        parse_xml(_doc(encoding, body), P)
    assert "not an accepted text encoding" in info.value.problem
    assert repr(encoding[:40]) in info.value.problem or encoding[:40] in info.value.problem


@pytest.mark.parametrize(
    ("encoding", "raw", "text"),
    [
        ("windows-1252", "Caf\xe9".encode("cp1252"), "Caf\xe9"),
        ("ISO-8859-1", b"\xe9", "\xe9"),
        ("iso-8859-15", b"\xa4", "\u20ac"),
        ("latin1", b"\xe9", "\xe9"),
        ("windows-1251", "\u0416".encode("cp1251"), "\u0416"),
        ("koi8-r", "\u0416".encode("koi8-r"), "\u0416"),
        ("Shift_JIS", "\u65e5\u672c".encode("shift_jis"), "\u65e5\u672c"),
        ("EUC-JP", "\u65e5\u672c".encode("euc-jp"), "\u65e5\u672c"),
        ("GB2312", "\u4e2d\u6587".encode("gb2312"), "\u4e2d\u6587"),
        ("Big5", "\u4e2d\u6587".encode("big5"), "\u4e2d\u6587"),
        ("utf-8", "\u00e9".encode(), "\u00e9"),
        ("us-ascii", b"e", "e"),
        ("utf-16", b"e", "e"),  # .NET writes utf-16 declarations into UTF-8 files: the bytes decide
    ],
)
def test_accepted_encodings_decode(encoding: str, raw: bytes, text: str) -> None:
    assert parse_xml(_doc(encoding, raw), P).root.text == text


def test_declared_utf16_without_bom_on_8bit_bytes_is_unreadable() -> None:
    with pytest.raises(Unreadable, match=r"declares UTF-16 but"):
        parse_xml(_doc("utf-16", b"\xe9"), P)


def test_multibyte_declared_but_invalid_bytes_is_unreadable() -> None:
    with pytest.raises(Unreadable, match=r"not valid SHIFT_JIS text at byte \d+"):
        parse_xml(_doc("Shift_JIS", b"\x81\x20\xff"), P)


def test_ascii_declared_with_high_byte_is_unreadable() -> None:
    with pytest.raises(Unreadable, match=r"not valid US-ASCII text at byte \d+"):
        parse_xml(_doc("us-ascii", b"\xe9"), P)


def test_bom_document_with_unaccepted_declaration_is_unreadable() -> None:
    data = "\ufeff<?xml version='1.0' encoding='hex'?><r/>".encode("utf-16-le")
    with pytest.raises(Unreadable, match="'hex', which is not an accepted text encoding"):
        parse_xml(data, P)


def test_packaged_csdef_with_bad_encoding_is_a_package_problem_not_a_crash(tmp_path: Path) -> None:
    from harness.engine.artefact import CSPKG, Artefact
    from harness.readers.cspkg import read_package
    from harness.testing.cspkg import Member, build_cspkg, zip_members

    csdx = zip_members([Member("ServiceDefinition.build.csdef", _doc("x", b"\xe9"))])
    path = tmp_path / "App.cspkg"
    path.write_bytes(build_cspkg("<ServiceDefinition name='a'/>", replace_parts={"csdx": csdx}).data)
    pkg = read_package(Artefact.from_path(path, CSPKG))
    assert any("'x', which is not an accepted text encoding" in message for _, message in pkg.problems)
