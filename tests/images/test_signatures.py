"""Integration-component / guest-agent signatures: shipped data, user files, matching (§1.2, §1.4)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from harness.facts.image_signatures import (
    MAX_SIGNATURE_FILE,
    ProductInfo,
    ServiceInfo,
    SignatureError,
    SignatureMatch,
    SignatureSet,
    compile_glob,
    load_signatures,
    match_signatures,
    normalise_path,
    parse_signature_text,
)

GUEST_AGENT_DIR = r"WindowsAzure\GuestAgent_2.7.41491.1010_2021-05-13_000000"


class Inventory:
    """A fake NTFS inventory that records what the matcher asks for."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = [normalise_path(p) for p in paths]
        folders = {"/".join(p.split("/")[:i]) for p in self.paths for i in range(1, p.count("/") + 1)}
        self.all = {p.lower(): p for p in [*sorted(folders), *self.paths]}
        self.exists_calls: list[str] = []
        self.list_calls: list[str] = []

    def exists(self, path: str) -> bool:
        self.exists_calls.append(path)
        return normalise_path(path).lower() in self.all

    def list_under(self, prefix: str) -> list[str]:
        self.list_calls.append(prefix)
        start = normalise_path(prefix).lower()
        return [
            "\\" + p.replace("/", "\\")
            for key, p in sorted(self.all.items())
            if not start or key.startswith(start + "/")
        ]


def run(
    signatures: SignatureSet,
    services: Sequence[ServiceInfo] = (),
    products: Sequence[ProductInfo] = (),
    paths: Sequence[str] = (),
) -> tuple[list[SignatureMatch], Inventory]:
    inventory = Inventory(paths)
    return match_signatures(signatures, services, products, inventory.exists, inventory.list_under), inventory


def ids(matches: list[SignatureMatch]) -> list[str]:
    return [m.signature_id for m in matches]


@pytest.fixture(scope="module")
def shipped() -> SignatureSet:
    return load_signatures()


# ---- shipped data ---------------------------------------------------------------------------------


def test_shipped_signatures_cover_both_profiles(shipped: SignatureSet) -> None:
    assert shipped.profiles == ("vmrole", "azure")
    for profile in ("vmrole", "azure"):
        kinds = {s.kind for s in shipped.for_profile(profile).signatures}
        assert kinds == {"service", "product", "path"}
    assert all(s.description and s.source == "image-signatures.yml (shipped)" for s in shipped.signatures)
    assert shipped.get("azure.guest-agent.service") is not None and shipped.get("nope") is None


AZURE_SERVICES = [
    ServiceInfo(
        "WindowsAzureGuestAgent",
        "Windows Azure Guest Agent",
        rf"C:\{GUEST_AGENT_DIR}\WindowsAzureGuestAgent.exe",
        2,
        0x10,
        "LocalSystem",
    ),
    ServiceInfo("RdAgent", "RdAgent", r"C:\WindowsAzure\Packages\WaAppAgent.exe", 2, 0x10, "LocalSystem"),
    ServiceInfo(
        "WindowsAzureTelemetryService",
        "Windows Azure Telemetry Service",
        r"C:\WindowsAzure\Packages\WaTelemetry.exe",
        2,
    ),
    ServiceInfo(
        "W32Time",
        "Windows Time",
        r"%SystemRoot%\system32\svchost.exe -k LocalService",
        3,
        0x20,
        r"NT AUTHORITY\LocalService",
    ),
    ServiceInfo("Tcpip", "TCP/IP Protocol Driver", r"System32\drivers\tcpip.sys", 0, 1),
]


def test_azure_agent_image(shipped: SignatureSet) -> None:
    matches, inventory = run(
        shipped.for_profile("azure"),
        AZURE_SERVICES,
        [
            ProductInfo(
                "uninstall",
                "{3C8A4E2B-0000-4F9E-9B2B-6F1A0A3C8F10}",
                "Windows Azure VM Agent - 2.7.41491.1010",
                "Microsoft Corporation",
                "2.7.41491.1010",
                r"C:\WindowsAzure\Packages",
            )
        ],
        [
            rf"{GUEST_AGENT_DIR}\WindowsAzureGuestAgent.exe",
            rf"{GUEST_AGENT_DIR}\WaAppAgent.exe",
            r"WindowsAzure\Packages\WaAppAgent.exe",
            r"WindowsAzure\Logs\WaAppAgent.log",
            r"Windows\System32\cmd.exe",
        ],
    )
    assert ids(matches) == [
        "azure.guest-agent.service",
        "azure.rdagent.service",
        "azure.telemetry.service",
        "azure.vm-agent.product",
        "azure.guest-agent.files",
        "azure.waappagent.files",
        "azure.install-root",
    ]
    assert all(m.requirements_met for m in matches)
    guest = matches[0]
    assert (guest.subject, guest.strength, guest.profile, guest.kind) == (
        "WindowsAzureGuestAgent",
        "strong",
        "azure",
        "service",
    )
    assert "2 (auto)" in guest.detail
    files = next(m for m in matches if m.signature_id == "azure.guest-agent.files")
    assert files.subject == rf"{GUEST_AGENT_DIR}\WindowsAzureGuestAgent.exe" and files.count == 1
    product = next(m for m in matches if m.kind == "product")
    assert product.subject.startswith("{3C8A") and "2.7.41491.1010" in product.detail
    # Globs are answered under their literal prefix; never by listing the whole volume.
    assert inventory.list_calls == ["WindowsAzure"]
    assert r"WindowsAzure\Packages\GuestAgent\WindowsAzureGuestAgent.exe" in inventory.exists_calls


def test_disabled_agent_service_matches_but_misses_its_requirement(shipped: SignatureSet) -> None:
    matches, _ = run(
        shipped.for_profile("azure"), [ServiceInfo("RdAgent", "RdAgent", r"C:\WindowsAzure\Packages\WaAppAgent.exe", 4)]
    )
    (match,) = matches
    assert match.signature_id == "azure.rdagent.service" and not match.requirements_met
    assert match.detail == "start type 4 (disabled); the signature expects 2 (auto)"
    (absent,) = run(shipped.for_profile("azure"), [ServiceInfo("rdagent")])[0]
    assert not absent.requirements_met and "start type absent" in absent.detail


def test_vmrole_ic_image(shipped: SignatureSet) -> None:
    services = [
        ServiceInfo(
            "WaAgentSvc",
            "Windows Azure Agent",
            r"C:\Program Files\Windows Azure Integration Components\v1.6\WaAppAgent.exe",
            2,
        ),
        ServiceInfo("W32Time", "Windows Time", r"svchost.exe -k LocalService", 3),
    ]
    products = [
        ProductInfo(
            "msi",
            "C3A7B1E0D0F24B3489B2C5D6E7F80912",
            "Windows Azure Integration Components",
            "Microsoft Corporation",
            "1.6.21103.1459",
        ),
        ProductInfo(
            "uninstall",
            "{0AE1...}",
            "Microsoft Visual C++ 2010  x64 Redistributable - 10.0.40219",
            "Microsoft Corporation",
        ),
    ]
    paths = [
        r"Program Files\Windows Azure Integration Components\v1.6\WaAppAgent.exe",
        r"Windows\assembly\GAC_MSIL\Microsoft.WindowsAzure.ServiceRuntime\1.0.0.0__31bf3856ad364e35\Microsoft.WindowsAzure.ServiceRuntime.dll",
        "unattend.xml",
    ]
    matches, inventory = run(shipped.for_profile("vmrole"), services, products, paths)
    assert ids(matches) == [
        "vmrole.ic.product",
        "vmrole.ic.files",
        "vmrole.agent.service",
        "vmrole.agent.service-display-name",
        "vmrole.serviceruntime.gac",
        "vmrole.answer-file",
    ]
    assert {m.signature_id: m.strength for m in matches}["vmrole.answer-file"] == "weak"
    assert inventory.list_calls == []  # every vmrole path pattern is a literal or "X/**"


def test_clean_image_matches_nothing(shipped: SignatureSet) -> None:
    matches, _ = run(
        shipped,
        [ServiceInfo("W32Time", "Windows Time", "svchost.exe", 3), ServiceInfo("Dhcp", None, None, 2)],
        [ProductInfo("uninstall", "{X}", "Notepad++", "Don Ho"), ProductInfo("msi", "ABC", None, None)],
        [r"Windows\System32\cmd.exe", r"Program Files\Contoso\app.exe"],
    )
    assert matches == []


def test_strings_from_the_image_are_bounded(shipped: SignatureSet) -> None:
    huge = "x" * 1_000_000 + "WindowsAzureGuestAgent"
    matches, _ = run(shipped, [ServiceInfo(huge, huge, huge, 2)])
    assert matches == []  # only the first MAX_SUBJECT characters are searched


# ---- globs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "prefix", "literal", "subtree"),
    [
        ("WindowsAzure/GuestAgent_*/WindowsAzureGuestAgent.exe", "WindowsAzure", False, False),
        (
            r"C:\Program Files\Windows Azure Integration Components\**",
            r"Program Files\Windows Azure Integration Components",
            False,
            True,
        ),
        ("/unattend.xml", "unattend.xml", True, False),
        ("**/id_rsa", "", False, False),
        ("Users/*/AppData/**/Keys/*", "Users", False, False),
    ],
)
def test_compile_glob_prefix(pattern: str, prefix: str, literal: bool, subtree: bool) -> None:
    glob = compile_glob(pattern)
    assert (glob.prefix, glob.literal, glob.subtree) == (prefix, literal, subtree)


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        (
            "WindowsAzure/GuestAgent_*/WindowsAzureGuestAgent.exe",
            r"\WindowsAzure\GuestAgent_2.7_x\WindowsAzureGuestAgent.exe",
            True,
        ),
        (
            "WindowsAzure/GuestAgent_*/WindowsAzureGuestAgent.exe",
            r"windowsazure\guestagent_\windowsazureguestagent.EXE",
            True,
        ),
        (
            "WindowsAzure/GuestAgent_*/WindowsAzureGuestAgent.exe",
            r"WindowsAzure\GuestAgent_1\sub\WindowsAzureGuestAgent.exe",
            False,
        ),
        (
            "WindowsAzure/GuestAgent_*/WindowsAzureGuestAgent.exe",
            r"WindowsAzure\Packages\WindowsAzureGuestAgent.exe",
            False,
        ),
        ("A/**", "A", True),
        ("A/**", r"A\b\c", True),
        ("A/**", "AB", False),
        ("**/id_rsa", "id_rsa", True),
        ("**/id_rsa", r"Users\x\.ssh\id_rsa", True),
        ("**/id_rsa", r"Users\x\.ssh\id_rsa.pub", False),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**/b", "a/xb", False),
        ("file?.txt", "file1.txt", True),
        ("file?.txt", "file10.txt", False),
        ("file?.txt", "file/.txt", False),
        ("a+b (1)/[x].txt", "a+b (1)/[x].txt", True),  # regex characters are literal
    ],
)
def test_glob_matching(pattern: str, path: str, matches: bool) -> None:
    assert compile_glob(pattern).matches(path) is matches


@pytest.mark.parametrize("pattern", ["", "/", "**", "\\\\"])
def test_useless_globs_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        compile_glob(pattern)


def test_list_results_are_filtered_and_bounded_as_evidence() -> None:
    signatures = write_and_load_text(
        "version: 1\nsignatures:\n  - id: logs\n    profile: azure\n    kind: path\n"
        "    paths: ['WindowsAzure/Logs/*.log']\n"
    )
    paths = [rf"WindowsAzure\Logs\agent{i}.log" for i in range(12)] + [r"WindowsAzure\Logs\keep.txt"]
    (match,), inventory = run(signatures, paths=paths)
    assert match.count == 12 and len(match.evidence) == 5 and match.subject == match.evidence[0]
    assert inventory.list_calls == [r"WindowsAzure\Logs"]


def test_listing_callable_may_return_junk() -> None:
    signatures = write_and_load_text(
        "version: 1\nsignatures:\n  - id: g\n    profile: azure\n    kind: path\n    paths: ['X/*.exe']\n"
    )
    matches = match_signatures(signatures, [], [], lambda _p: False, lambda _p: [None, 5, "X/a.exe", "C:/X/b.EXE"])  # type: ignore[list-item]
    assert [m.count for m in matches] == [2]


# ---- user files ----------------------------------------------------------------------------------


def write_and_load_text(text: str) -> SignatureSet:
    """Signatures from YAML text alone (no shipped ones, no file)."""
    return SignatureSet(tuple(s for _, s in parse_signature_text(text, "test.yml") if s is not None))


def test_user_file_overrides_disables_and_adds(tmp_path: Path) -> None:
    user = tmp_path / "mine.yml"
    user.write_text(
        """
version: 1
signatures:
  - id: azure.rdagent.service          # replace: accept demand start too
    profile: azure
    kind: service
    name: '^RdAgent$'
    start: [auto, demand]
    description: RdAgent, auto or manual in our images
  - id: vmrole.answer-file
    kind: path
    enabled: false
  - id: contoso.adapter.service
    profile: contoso
    kind: service
    image_path: 'ContosoAdapter\\.exe'
    start: [2]
    description: our VM-role adapter service
    strength: weak
""",
        encoding="utf-8",
    )
    merged = load_signatures([user])
    assert merged.get("vmrole.answer-file") is None
    rdagent = merged.get("azure.rdagent.service")
    assert rdagent is not None and rdagent.start_types == frozenset({2, 3}) and rdagent.source == str(user)
    ids_in_order = [s.id for s in merged.signatures]
    shipped_ids = [s.id for s in load_signatures().signatures]
    assert ids_in_order[: len(shipped_ids) - 1] == [i for i in shipped_ids if i != "vmrole.answer-file"]  # places kept
    assert ids_in_order[-1] == "contoso.adapter.service"
    assert merged.profiles == ("vmrole", "azure", "contoso")
    matches, _ = run(
        merged,
        [ServiceInfo("RdAgent", None, None, 3), ServiceInfo("ContosoAdapter", None, r"C:\App\ContosoAdapter.exe", 2)],
        paths=["unattend.xml"],
    )
    assert [(m.signature_id, m.requirements_met) for m in matches] == [
        ("azure.rdagent.service", True),
        ("contoso.adapter.service", True),
    ]


def test_later_user_files_win(tmp_path: Path) -> None:
    first, second = tmp_path / "a.yml", tmp_path / "b.yml"
    entry = "version: 1\nsignatures:\n  - id: x\n    profile: p\n    kind: product\n    display_name: '{}'\n"
    first.write_text(entry.format("First"), encoding="utf-8")
    second.write_text(entry.format("Second"), encoding="utf-8")
    merged = load_signatures([first, second], include_default=False)
    (signature,) = merged.signatures
    assert signature.patterns[0][1].pattern == "Second" and signature.source == str(second)


def test_disabling_an_unknown_id_is_harmless(tmp_path: Path) -> None:
    path = tmp_path / "off.yml"
    path.write_text("signatures:\n  - id: never.shipped\n    kind: path\n    enabled: false\n", encoding="utf-8")
    assert len(load_signatures([path]).signatures) == len(load_signatures().signatures)


def test_empty_user_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.yml"
    path.write_text("# nothing yet\n", encoding="utf-8")
    assert load_signatures([path]) == load_signatures()


def test_product_sources_and_publisher() -> None:
    signatures = write_and_load_text(
        "signatures:\n  - id: p\n    profile: x\n    kind: product\n    display_name: Agent\n"
        "    publisher: '^Microsoft'\n    sources: [msi]\n"
    )
    products = [
        ProductInfo("msi", "A", "Agent", "Microsoft Corporation"),
        ProductInfo("uninstall", "B", "Agent", "Microsoft Corporation"),
        ProductInfo("msi", "C", "Agent", "Contoso"),
        ProductInfo("msi", "D", "Agent", None),
    ]
    assert [m.subject for m in run(signatures, products=products)[0]] == ["A"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("signatures: [\n", "not valid YAML at line 2"),
        ("- id: x\n", "expected a mapping with 'version' and 'signatures'"),
        ("version: 2\nsignatures: []\n", "version 2 is not supported"),
        ("signatures: []\nextra: 1\n", "unknown top-level keys ['extra']"),
        ("signatures: {}\n", "'signatures' must be a list"),
        ("signatures:\n  - just a string\n", "entry 1: expected a mapping"),
        ("signatures:\n  - profile: azure\n    kind: path\n    paths: [a]\n", "entry 1: 'id' is required"),
        ("signatures:\n  - id: bad id!\n    kind: path\n", "entry 1: 'id' is required"),
        (
            "signatures:\n  - id: x\n    profile: azure\n    kind: registry\n",
            "entry 1 (x): 'kind' must be one of service, product, path",
        ),
        ("signatures:\n  - id: x\n    profile: Azure!\n    kind: path\n    paths: [a]\n", "(x): 'profile' is required"),
        (
            "signatures:\n  - id: x\n    profile: azure\n    kind: service\n",
            "(x): a service signature needs one of name, display_name, image_path",
        ),
        (
            "signatures:\n  - id: x\n    profile: azure\n    kind: service\n    name: '([a-'\n",
            "(x): 'name' is not a valid regular expression",
        ),
        (
            "signatures:\n  - id: x\n    profile: azure\n    kind: service\n    name: 5\n",
            "(x): 'name' must be a non-empty regular expression",
        ),
        (
            "signatures:\n  - id: x\n    profile: azure\n    kind: service\n    name: a\n    start: [sometimes]\n",
            "start type 'sometimes'",
        ),
        (
            "signatures:\n  - id: x\n    profile: azure\n    kind: service\n    name: a\n    start: 2\n",
            "'start' must be a non-empty list",
        ),
        (
            "signatures:\n  - id: x\n    profile: azure\n    kind: service\n    name: a\n    paths: [b]\n",
            "unknown keys for kind service: ['paths']",
        ),
        ("signatures:\n  - id: x\n    profile: azure\n    kind: path\n", "(x): 'paths' must be a non-empty list"),
        ("signatures:\n  - id: x\n    profile: azure\n    kind: path\n    paths: ['**']\n", "matches every path"),
        ("signatures:\n  - id: x\n    profile: azure\n    kind: path\n    paths: [7]\n", "is not a string"),
        (
            "signatures:\n  - id: x\n    profile: azure\n    kind: product\n    display_name: a\n    sources: [rpm]\n",
            "'sources' must be a list of",
        ),
        (
            "signatures:\n  - id: x\n    profile: azure\n    kind: path\n    paths: [a]\n    strength: medium\n",
            "'strength' must be strong or weak",
        ),
        (
            "signatures:\n  - id: x\n    profile: azure\n    kind: path\n    paths: [a]\n    confirmed: maybe\n",
            "'confirmed' must be true or false",
        ),
        (
            "signatures:\n  - id: x\n    profile: azure\n    kind: path\n    paths: [a]\n    enabled: no-thanks\n",
            "'enabled' must be true or false",
        ),
        (
            "signatures:\n  - {id: x, profile: a, kind: path, paths: [a]}\n"
            "  - {id: x, profile: a, kind: path, paths: [b]}\n",
            "entry 2: id 'x' is used twice",
        ),
    ],
)
def test_bad_signature_files_name_the_file_and_entry(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad-signatures.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SignatureError) as info:
        load_signatures([path])
    assert str(info.value).startswith(f"signature file {path}")
    assert message in str(info.value)


def test_unreadable_user_files(tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match="cannot read it"):
        load_signatures([tmp_path / "missing.yml"])
    big = tmp_path / "big.yml"
    big.write_bytes(b"#" * (MAX_SIGNATURE_FILE + 1))
    with pytest.raises(SignatureError, match="over the"):
        load_signatures([big])
    binary = tmp_path / "bin.yml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SignatureError, match="not UTF-8"):
        load_signatures([binary])


def test_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.yml"
    path.write_text("signatures: !!python/object/apply:os.system ['echo pwned']\n", encoding="utf-8")
    with pytest.raises(SignatureError, match="not valid YAML"):
        load_signatures([path])


def test_facts_are_frozen() -> None:
    service = ServiceInfo("x")
    with pytest.raises(AttributeError):
        service.name = "y"  # type: ignore[misc]
    assert hash(ProductInfo("msi", "k")) == hash(ProductInfo("msi", "k"))
