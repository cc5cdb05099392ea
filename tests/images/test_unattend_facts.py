"""Answer-file facts: passes, components, password leaks without the passwords, search order (§2.4)."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.extraction.unattend import (
    ANSWER_FILE_SEARCH_ORDER,
    MAX_LEAKS,
    answer_file_candidates,
    parse_answer_file,
    registry_answer_file_path,
)
from harness.facts.image_unattend import AnswerFile

NS = 'xmlns="urn:schemas-microsoft-com:unattend" xmlns:wcm="http://schemas.microsoft.com/WMIConfig/2002/State"'
COMPONENT = 'processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS"'
#: Distinctive secrets: none of them may ever appear in a parsed AnswerFile.
SECRETS = ("Adm1n-Secret-42", "AutoL0gon-Secret", "L0cal-Secret", "J0in-Secret", "D0main-Secret", "Mach1ne-Secret")


def encoded(password: str, element: str) -> str:
    """The PlainText=false form: base64(UTF-16LE(password + element name))."""
    return base64.b64encode((password + element).encode("utf-16-le")).decode("ascii")


def unattend(*settings: str, root_attrs: str = NS) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<unattend {root_attrs}>\n' + "\n".join(settings) + "\n</unattend>\n"
    ).encode()


def settings_block(pass_name: str, *components: str) -> str:
    return f'<settings pass="{pass_name}">' + "".join(components) + "</settings>"


def component(name: str, body: str, arch: str = "amd64") -> str:
    return f'<component name="{name}" {COMPONENT.replace("amd64", arch)}>{body}</component>'


def assert_no_secret(answer: AnswerFile) -> None:
    shown = repr(answer) + "".join(repr(getattr(answer, f.name)) for f in dataclasses.fields(answer))
    for secret in SECRETS:
        assert secret not in shown
        for element in ("AdministratorPassword", "Password"):
            assert encoded(secret, element) not in shown


#: What the VM-role IC setup writes to C:\unattend.xml (§1.1): locale, time zone, updates off, the
#: Administrator password.
IC_ANSWER_FILE = unattend(
    settings_block(
        "oobeSystem",
        component(
            "Microsoft-Windows-International-Core",
            "<InputLocale>en-US</InputLocale><SystemLocale>en-US</SystemLocale><UILanguage>en-US</UILanguage>"
            "<UserLocale>en-US</UserLocale>",
        ),
        component(
            "Microsoft-Windows-Shell-Setup",
            "<OOBE><HideEULAPage>true</HideEULAPage><ProtectYourPC>3</ProtectYourPC><SkipUserOOBE>true</SkipUserOOBE></OOBE>"
            "<TimeZone>UTC</TimeZone>"
            f"<UserAccounts><AdministratorPassword><Value>{SECRETS[0]}</Value><PlainText>true</PlainText>"
            "</AdministratorPassword></UserAccounts>",
        ),
    ),
    settings_block(
        "specialize", component("Microsoft-Windows-Security-SPP-UX", "<SkipAutoActivation>true</SkipAutoActivation>")
    ),
    settings_block("generalize", component("Microsoft-Windows-Security-SPP", "<SkipRearm>1</SkipRearm>")),
)


def test_ic_answer_file_passes_components_and_plaintext_admin_password() -> None:
    answer = parse_answer_file(IC_ANSWER_FILE, "unattend.xml")
    assert answer.problem is None and answer.is_unattend and answer.notes == ()
    assert answer.namespace == "urn:schemas-microsoft-com:unattend"
    assert answer.passes == ("oobeSystem", "specialize", "generalize")
    assert [(c.name, c.processor_architecture) for c in answer.components_in("oobeSystem")] == [
        ("Microsoft-Windows-International-Core", "amd64"),
        ("Microsoft-Windows-Shell-Setup", "amd64"),
    ]
    (leak,) = answer.password_leaks
    assert leak.element == "AdministratorPassword"
    assert (leak.pass_name, leak.component) == ("oobeSystem", "Microsoft-Windows-Shell-Setup")
    assert leak.plaintext and not leak.reversible and not leak.empty and leak.encoding_confirmed is None
    assert leak.location == (
        "/unattend/settings[@pass='oobeSystem']"
        "/component[@name='Microsoft-Windows-Shell-Setup'][@processorArchitecture='amd64']"
        "/UserAccounts/AdministratorPassword"
    )
    assert_no_secret(answer)


@pytest.mark.parametrize("flag", ["false", "False", " false ", "0"])
def test_plaintext_false_is_reversible(flag: str) -> None:
    body = (
        f"<UserAccounts><AdministratorPassword><Value>{encoded(SECRETS[0], 'AdministratorPassword')}</Value>"
        f"<PlainText>{flag}</PlainText></AdministratorPassword></UserAccounts>"
    )
    answer = parse_answer_file(
        unattend(settings_block("oobeSystem", component("Microsoft-Windows-Shell-Setup", body))), "u.xml"
    )
    (leak,) = answer.password_leaks
    assert leak.reversible and not leak.plaintext and leak.encoding_confirmed is True
    assert_no_secret(answer)


def test_plaintext_false_with_a_value_of_another_shape() -> None:
    body = "<AutoLogon><Password><Value>not base64 at all!</Value><PlainText>false</PlainText></Password></AutoLogon>"
    (leak,) = parse_answer_file(
        unattend(settings_block("oobeSystem", component("Microsoft-Windows-Shell-Setup", body))), "u"
    ).password_leaks
    assert leak.reversible and leak.encoding_confirmed is False


@pytest.mark.parametrize(
    "plain_text", ["<PlainText>true</PlainText>", "<PlainText>1</PlainText>", "", "<PlainText>maybe</PlainText>"]
)
def test_plaintext_true_missing_or_odd_counts_as_plain_text(plain_text: str) -> None:
    body = (
        "<AutoLogon><Enabled>true</Enabled><Username>ops</Username>"
        f"<Password><Value>{SECRETS[1]}</Value>{plain_text}</Password></AutoLogon>"
    )
    answer = parse_answer_file(
        unattend(settings_block("oobeSystem", component("Microsoft-Windows-Shell-Setup", body))), "u"
    )
    (leak,) = answer.password_leaks
    assert leak.element == "AutoLogon/Password" and leak.plaintext and not leak.reversible
    assert_no_secret(answer)


def test_every_leak_kind() -> None:
    shell = (
        f"<AutoLogon><Password><Value>{SECRETS[1]}</Value><PlainText>true</PlainText></Password>"
        "<Username>Administrator</Username></AutoLogon>"
        "<UserAccounts>"
        f"<AdministratorPassword><Value>{encoded(SECRETS[0], 'AdministratorPassword')}</Value>"
        "<PlainText>false</PlainText></AdministratorPassword>"
        '<LocalAccounts><LocalAccount wcm:action="add"><Name>Administrator</Name><Group>Administrators</Group>'
        f"<Password><Value>{SECRETS[2]}</Value><PlainText>true</PlainText></Password></LocalAccount>"
        '<LocalAccount wcm:action="add"><Group>Users</Group>'
        f"<Password><Value>{encoded(SECRETS[2], 'Password')}</Value><PlainText>false</PlainText></Password>"
        "</LocalAccount></LocalAccounts>"
        '<DomainAccounts><DomainAccountList wcm:action="add"><Domain>contoso</Domain>'
        '<DomainAccount wcm:action="add"><Name>svc</Name><Group>Administrators</Group>'
        f"<Password>{SECRETS[4]}</Password></DomainAccount>"
        "</DomainAccountList></DomainAccounts>"
        "</UserAccounts>"
    )
    join = (
        f"<Identification><Credentials><Domain>contoso</Domain><Password>{SECRETS[3]}</Password><Username>joiner</Username></Credentials>"
        f"<JoinDomain>contoso</JoinDomain><MachinePassword>{SECRETS[5]}</MachinePassword></Identification>"
    )
    answer = parse_answer_file(
        unattend(
            settings_block("specialize", component("Microsoft-Windows-UnattendedJoin", join)),
            settings_block("oobeSystem", component("Microsoft-Windows-Shell-Setup", shell)),
        ),
        "Windows/Panther/unattend.xml",
    )
    got = {(leak.element, leak.pass_name, leak.plaintext, leak.reversible) for leak in answer.password_leaks}
    assert got == {
        ("Credentials/Password", "specialize", True, False),
        ("Identification/MachinePassword", "specialize", True, False),
        ("AutoLogon/Password", "oobeSystem", True, False),
        ("AdministratorPassword", "oobeSystem", False, True),
        ("LocalAccount[Administrator]/Password", "oobeSystem", True, False),
        ("LocalAccount/Password", "oobeSystem", False, True),
        ("DomainAccounts", "oobeSystem", True, False),
    }
    by_element = {leak.element: leak for leak in answer.password_leaks}
    assert by_element["LocalAccount[Administrator]/Password"].location.endswith(
        "/UserAccounts/LocalAccounts/LocalAccount[Name='Administrator']/Password"
    )
    assert by_element["LocalAccount/Password"].location.endswith("/LocalAccounts/LocalAccount[2]/Password")
    assert by_element["LocalAccount/Password"].encoding_confirmed is True
    assert len({leak.location for leak in answer.password_leaks}) == len(answer.password_leaks)
    assert_no_secret(answer)


def test_empty_password_is_flagged_empty() -> None:
    body = (
        "<UserAccounts><AdministratorPassword><Value></Value><PlainText>true</PlainText>"
        "</AdministratorPassword></UserAccounts>"
    )
    (leak,) = parse_answer_file(
        unattend(settings_block("oobeSystem", component("Microsoft-Windows-Shell-Setup", body))), "u"
    ).password_leaks
    assert leak.empty and leak.plaintext


def test_x86_and_amd64_components_get_distinct_locations() -> None:
    body = f"<UserAccounts><AdministratorPassword><Value>{SECRETS[0]}</Value></AdministratorPassword></UserAccounts>"
    answer = parse_answer_file(
        unattend(
            settings_block(
                "oobeSystem",
                component("Microsoft-Windows-Shell-Setup", body, "x86"),
                component("Microsoft-Windows-Shell-Setup", body, "amd64"),
            )
        ),
        "u",
    )
    locations = [leak.location for leak in answer.password_leaks]
    assert len(locations) == 2 and "[@processorArchitecture='x86']" in locations[0] and "'amd64'" in locations[1]
    assert [c.processor_architecture for c in answer.components] == ["x86", "amd64"]


def test_prefixed_namespace_is_the_same_document() -> None:
    data = (
        '<u:unattend xmlns:u="urn:schemas-microsoft-com:unattend"><u:settings pass="oobeSystem">'
        '<u:component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64">'
        f"<u:AutoLogon><u:Password><u:Value>{SECRETS[1]}</u:Value></u:Password></u:AutoLogon>"
        "</u:component></u:settings></u:unattend>"
    ).encode()
    answer = parse_answer_file(data, "u")
    assert answer.is_unattend and answer.passes == ("oobeSystem",)
    assert [leak.element for leak in answer.password_leaks] == ["AutoLogon/Password"]


def test_missing_namespace_and_odd_structure_are_notes_and_leaks_still_found() -> None:
    data = unattend(
        '<settings><component name="X"><AdministratorPassword>'
        + SECRETS[0]
        + "</AdministratorPassword></component></settings>",
        settings_block("oobeSytem"),
        root_attrs="",
    )
    answer = parse_answer_file(data, "u")
    assert not answer.is_unattend and answer.problem is None
    notes = " ".join(answer.notes)
    assert (
        "not urn:schemas-microsoft-com:unattend" in notes
        and "has no pass attribute" in notes
        and "unknown pass 'oobeSytem'" in notes
    )
    (leak,) = answer.password_leaks
    assert leak.pass_name is None and leak.element == "AdministratorPassword"
    assert_no_secret(answer)


def test_other_root_element() -> None:
    answer = parse_answer_file(b"<configuration><appSettings/></configuration>", "web.config")
    assert not answer.is_unattend and "root element is <configuration>" in answer.notes[0]


def test_utf16_answer_file() -> None:
    text = IC_ANSWER_FILE.decode().replace('encoding="utf-8"', 'encoding="utf-16"')
    answer = parse_answer_file(b"\xff\xfe" + text.encode("utf-16-le"), "u")
    assert answer.problem is None and len(answer.password_leaks) == 1


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<unattend xmlns="urn:schemas-microsoft-com:unattend">&lol2;</unattend>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE u [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<unattend xmlns="urn:schemas-microsoft-com:unattend"><settings pass="oobeSystem">&xxe;</settings></unattend>"""
EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE unattend SYSTEM "http://example.invalid/u.dtd">
<unattend xmlns="urn:schemas-microsoft-com:unattend"/>"""


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (BILLION_LAUGHS, "DTDs are not allowed"),
        (XXE, "DTDs are not allowed"),
        (EXTERNAL_DTD, "DTDs are not allowed"),
        (b"<unattend><settings></unattend>", "not well-formed XML at line 1"),
        (b"", "file is empty"),
        (b"   \n", "file is empty"),
        (b"\xff\xfe<\x00\x00\xd8", "not valid UTF-16-LE"),
        (b"<a>" * 100 + b"</a>" * 100, "nested more than"),
    ],
)
def test_unparsable_and_hostile_files_give_a_problem(data: bytes, problem: str) -> None:
    answer = parse_answer_file(data, "C:/unattend.xml")
    assert answer.problem is not None and problem in answer.problem
    assert answer.passes == () and answer.password_leaks == ()


def test_size_cap() -> None:
    answer = parse_answer_file(IC_ANSWER_FILE + b" " * 2000, "u", max_bytes=1000)
    assert answer.problem is not None and "over the" in answer.problem


def test_non_bytes_input() -> None:
    assert "not bytes" in (parse_answer_file("<unattend/>", "u").problem or "")  # type: ignore[arg-type]


def test_leak_count_is_bounded() -> None:
    body = "".join(f"<P{i}Password>x</P{i}Password>" for i in range(MAX_LEAKS + 10))
    answer = parse_answer_file(unattend(settings_block("oobeSystem", component("C", body))), "u")
    assert len(answer.password_leaks) == MAX_LEAKS
    assert any("more than" in n for n in answer.notes)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=400), st.text(max_size=300).map(str.encode)))
def test_parse_answer_file_never_raises(data: bytes) -> None:
    assert isinstance(parse_answer_file(data, "fuzz.xml"), AnswerFile)


_TAGS = st.sampled_from(
    ["settings", "component", "Password", "Value", "PlainText", "LocalAccount", "Name", "AutoLogon"]
)


@st.composite
def _trees(draw: st.DrawFn, depth: int = 0) -> str:
    tag = draw(_TAGS)
    attrs = (
        draw(st.sampled_from(["", ' pass="oobeSystem"', ' name="x"', ' name="a\'b"', " name='q\"'"]))
        if depth < 3
        else ""
    )
    children = draw(st.lists(_trees(depth + 1), max_size=3)) if depth < 4 else []
    text = draw(st.sampled_from(["", "true", "false", "x", "AAAA"]))
    return f"<{tag}{attrs}>{text}{''.join(children)}</{tag}>"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_trees(), max_size=4))
def test_structured_documents_never_raise(children: list[str]) -> None:
    answer = parse_answer_file(
        f'<unattend xmlns="urn:schemas-microsoft-com:unattend">{"".join(children)}</unattend>'.encode(), "u"
    )
    assert answer.problem is None
    for leak in answer.password_leaks:
        assert leak.location.startswith("/unattend")


# ---- search order -------------------------------------------------------------------------------


def test_search_order_data() -> None:
    positions = [loc.position for loc in ANSWER_FILE_SEARCH_ORDER]
    assert positions == sorted(positions) and set(positions) == set(range(1, 8))
    offline = {loc.position for loc in ANSWER_FILE_SEARCH_ORDER if loc.offline_relevant}
    assert offline == {1, 2, 3, 6, 7}
    assert all(loc.path is None for loc in ANSWER_FILE_SEARCH_ORDER if loc.position in (4, 5))
    paths = [loc.path for loc in ANSWER_FILE_SEARCH_ORDER if loc.path]
    assert "Unattend.xml" in paths and r"Windows\Panther\Unattend.xml" in paths
    assert all(not p.startswith(("\\", "C:")) for p in paths)


def test_candidates_without_registry_value() -> None:
    assert answer_file_candidates(None) == [
        (2, r"Windows\Panther\Unattend\Unattend.xml"),
        (2, r"Windows\Panther\Unattend\Autounattend.xml"),
        (3, r"Windows\Panther\Unattend.xml"),
        (3, r"Windows\Panther\Autounattend.xml"),
        (6, r"Windows\System32\Sysprep\Unattend.xml"),
        (7, "Unattend.xml"),
        (7, "Autounattend.xml"),
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (r"C:\Deploy\answers.xml", r"Deploy\answers.xml"),
        (r"c:/deploy//answers.xml", r"deploy\answers.xml"),
        (r'"C:\Deploy\answers.xml"', r"Deploy\answers.xml"),
        (r"%SystemDrive%\unattend.xml", "unattend.xml"),
        (r"%WINDIR%\Panther\custom.xml", r"Windows\Panther\custom.xml"),
        (r"%SystemRoot%\System32\Sysprep\x.xml", r"Windows\System32\Sysprep\x.xml"),
        (r"\answers\a.xml", r"answers\a.xml"),
        (r"D:\answers.xml", None),
        (r"\\server\share\answers.xml", None),
        (r"\\?\C:\answers.xml", None),
        ("answers.xml", None),
        ("", None),
        ("   ", None),
        (None, None),
        (7, None),
    ],
)
def test_registry_value_to_volume_path(value: object, expected: str | None) -> None:
    assert registry_answer_file_path(value) == expected  # type: ignore[arg-type]


def test_registry_value_comes_first_and_duplicates_are_dropped() -> None:
    candidates = answer_file_candidates(r"C:\unattend.xml")
    assert candidates[0] == (1, "unattend.xml")
    assert (7, "Unattend.xml") not in candidates and (7, "Autounattend.xml") in candidates
    custom = answer_file_candidates(r"D:\x.xml")
    assert custom == answer_file_candidates(None)


def test_candidates_with_another_windows_folder() -> None:
    candidates = answer_file_candidates(r"%WINDIR%\Panther\Unattend.xml", windows_dir="WINNT")
    assert candidates[0] == (1, r"WINNT\Panther\Unattend.xml")
    assert (3, r"WINNT\Panther\Unattend.xml") not in candidates
    assert (6, r"WINNT\System32\Sysprep\Unattend.xml") in candidates
