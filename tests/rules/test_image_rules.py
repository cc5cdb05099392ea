"""Every image rule on a passing and a failing image built by the factory (real NTFS, real hives, real VHDs).

The passing images are the two lint-clean skeletons (WS2008 R2 VM role, WS2019 Azure); each failing image
is that skeleton with one change. Facts come from the real readers; rules run through the engine exactly
as in a `vmrole lint` run (subjects with the sample service model's WebVM role paired).
"""

from __future__ import annotations

import dataclasses
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.engine.artefact import IMAGE, Artefact
from harness.engine.catalogue import all_rules, rule_by_id
from harness.engine.evaluate import evaluate
from harness.extraction.extract import extract
from harness.extraction.profile import choose_role
from harness.facts.image import AZURE, VMROLE, ImageFacts, ImageSubject
from harness.facts.servicemodel import ServiceDefinition
from harness.readers.servicemodel import read_definition
from harness.testing import keymaterial as km
from harness.testing.hivewriter import binary, dword, sz
from harness.testing.images import ImageSpec, build_image, missing_tools
from harness.testing.vhdwriter import corrupt_copy, write_differencing_vhd
from harness.testing.windows import (
    ADMIN_NTUSER,
    CURRENT_VERSION,
    FIREWALL_POLICY,
    IC_PRODUCT_CODE,
    MACHINE_GUID_2008R2,
    SETUP_STATE,
    UNINSTALL,
    WINLOGON,
    answer_file,
    firewall_rule,
    packed_guid,
    windows_server_2008r2_vmrole,
    windows_server_2019_azure,
)

pytestmark = [
    pytest.mark.skipif(bool(missing_tools()), reason=f"image tools missing: {missing_tools()} (run ./dev setup)"),
    pytest.mark.xdist_group("image-rules"),
]

SAMPLE_CSDEF = Path(__file__).resolve().parents[2] / "harness" / "samples" / "vmrole" / "ServiceDefinition.csdef"
IC_DIR = "Program Files/Windows Azure Integration Components"
STATE_INI = "Windows/Setup/State/State.ini"
FW = f"ControlSet001\\{FIREWALL_POLICY}"
TAG = "Windows/System32/Sysprep/Sysprep_succeeded.tag"
MACHINE_KEYS = "ProgramData/Microsoft/Crypto/RSA/MachineKeys"

VM = windows_server_2008r2_vmrole()
AZ = windows_server_2019_azure()


def _state(value: str) -> Callable[[ImageSpec], ImageSpec]:
    def change(spec: ImageSpec) -> ImageSpec:
        return spec.with_changes(
            hives={"SOFTWARE": {SETUP_STATE: {"ImageState": sz(value)}}},
            files={STATE_INI: f"[State]\r\nImageState={value}\r\n"},
        )

    return change


def _without_ic(spec: ImageSpec) -> ImageSpec:
    return spec.with_changes(
        remove=[IC_DIR],
        hives={
            "SOFTWARE": {
                f"{UNINSTALL}\\{IC_PRODUCT_CODE}": None,
                f"Classes\\Installer\\Products\\{packed_guid(IC_PRODUCT_CODE)}": None,
            },
            "SYSTEM": {"ControlSet001\\Services\\WaAppAgent": None, "ControlSet002\\Services\\WaAppAgent": None},
        },
    )


def _without_agent(spec: ImageSpec) -> ImageSpec:
    return spec.with_changes(
        remove=["WindowsAzure"],
        hives={
            "SYSTEM": {
                f"ControlSet00{n}\\Services\\{name}": None
                for n in (1, 2)
                for name in ("WindowsAzureGuestAgent", "RdAgent")
            },
            "SOFTWARE": {
                key: None
                for k in _uninstall_keys(spec)
                if "Agent" in _display_name(spec, k)
                for key in (f"{UNINSTALL}\\{k}", f"Classes\\Installer\\Products\\{packed_guid(k)}")
            },
        },
    )


def _uninstall_keys(spec: ImageSpec) -> list[str]:
    hive = spec.hive("SOFTWARE") or {}
    prefix = UNINSTALL.lower() + "\\"
    return [
        k.split("\\")[-1] for k in hive if k.lower().startswith(prefix) and k.count("\\") == UNINSTALL.count("\\") + 1
    ]


def _display_name(spec: ImageSpec, key: str) -> str:
    value = spec.value("SOFTWARE", f"{UNINSTALL}\\{key}", "DisplayName")
    return value.data.decode("utf-16-le") if value else ""


def _fw_rule(rule_id: str, **fields: object) -> Callable[[ImageSpec], ImageSpec]:
    def change(spec: ImageSpec) -> ImageSpec:
        return spec.with_changes(hives={"SYSTEM": {f"{FW}\\FirewallRules": {rule_id: sz(firewall_rule(**fields))}}})  # type: ignore[arg-type]

    return change


def _fw_remove(rule_name: str) -> Callable[[ImageSpec], ImageSpec]:
    def change(spec: ImageSpec) -> ImageSpec:
        rules = spec.hive("SYSTEM")[f"{FW}\\FirewallRules"]  # type: ignore[index]
        match = [name for name, value in rules.items() if rule_name in value.data.decode("utf-16-le")]
        assert match, rule_name
        return spec.with_changes(hives={"SYSTEM": {f"{FW}\\FirewallRules": dict.fromkeys(match)}})

    return change


def _cert_with_key(where: str) -> Callable[[ImageSpec], ImageSpec]:
    container = "le-webvm-ssl-3f2a"
    cert = km.server_certificate()
    from cryptography.hazmat.primitives.serialization import Encoding

    der = cert.public_bytes(Encoding.DER)
    thumb = km.cert_thumbprint(der)
    blob = km.cert_blob(der, key_prov_info=km.KeyProvInfo(container))

    def change(spec: ImageSpec) -> ImageSpec:
        key_file = km.capi_container_file_name(container, MACHINE_GUID_2008R2)
        if where == "machine":
            return spec.with_changes(
                hives={
                    "SOFTWARE": {f"Microsoft\\SystemCertificates\\MY\\Certificates\\{thumb}": {"Blob": binary(blob)}}
                },
                files={
                    f"ProgramData/Microsoft/Crypto/RSA/MachineKeys/{key_file}": km.capi_machine_key_file_bytes(
                        container
                    )
                },
            )
        return spec.with_changes(
            hives={
                ADMIN_NTUSER: {
                    f"Software\\Microsoft\\SystemCertificates\\My\\Certificates\\{thumb}": {"Blob": binary(blob)}
                }
            },
            files={
                f"Users/Administrator/AppData/Roaming/Microsoft/Crypto/RSA/S-1-5-21-1-2-3-500/{key_file}": b"\x02" * 600
            },
        )

    return change


@dataclass(frozen=True)
class Case:
    rule: str
    base: str  # "vm" | "az"
    change: Callable[[ImageSpec], ImageSpec] | None = None
    fmt: str = "vhd-fixed"
    #: A container-level change made after the build: (built image, work dir) -> the image to lint.
    post: Callable[[Path, Path], Path] | None = None

    @property
    def role(self) -> bool:
        """The VM-role image is paired with the sample service model; the Azure image serves no model."""
        return self.base == "vm"


def _footer_checksum(image: Path, work: Path) -> Path:
    data = image.read_bytes()[-512:]
    bad = bytes([data[64] ^ 0xFF])
    return corrupt_copy(image, work / "bad-footer.vhd", patch={-512 + 64: bad})


def _differencing(image: Path, work: Path) -> Path:
    parent = work / "base.vhd"
    shutil.copyfile(image, parent)
    return write_differencing_vhd(parent, work / "child.vhd", writes={1024 * 1024 * 40: b"\x01" * 512})


def _encrypted_answer_file(image: Path, work: Path) -> Path:
    """The raw image with its answer file's $DATA attribute flagged encrypted (what `cipher /e` leaves)."""
    from harness.readers.image.ntfs import NtfsVolume
    from harness.testing.images import volume_extent
    from tests.images.ntfs_build import BytesSource, RawVolume

    start, size = volume_extent(VM)
    disk = bytearray(image.read_bytes())
    volume_bytes = bytearray(disk[start : start + size])
    raw = RawVolume(volume_bytes)
    entry = NtfsVolume(BytesSource(volume_bytes)).inventory().lookup("unattend.xml")
    assert entry is not None
    at = raw.attribute(entry.record, 0x80) + 12  # the attribute header's flags
    flags = struct.unpack_from("<H", raw.fixed_record(entry.record), at)[0]
    raw.patch(entry.record, at, struct.pack("<H", flags | 0x4000))
    disk[start : start + size] = volume_bytes
    out = work / "efs.raw"
    out.write_bytes(disk)
    return out


CASES = [
    Case(
        "VMR002",
        "vm",
        lambda s: s.with_changes(files={"Windows/System32/config/SOFTWARE": b"regf" + b"\x00" * 4092}),
    ),
    Case("VMR010", "vm", post=_footer_checksum),
    Case("VMR011", "az", fmt="vhd-dynamic"),
    Case("VMR012", "vm", post=_differencing),
    Case("VMR013", "vm", fmt="vhdx"),
    Case("VMR014", "az", lambda s: s.with_changes(disk_size=64 * 1024 * 1024 + 3 * 512), fmt="vhd-fixed"),
    Case("VMR015", "vm", lambda s: s.with_changes(disk_size=31 * 1024**3), fmt="raw"),
    Case(
        "VMR016",
        "vm",
        lambda s: s.with_changes(
            hives={
                "SOFTWARE": {
                    CURRENT_VERSION: {"CurrentVersion": sz("6.0"), "ProductName": sz("Windows Server 2008 Enterprise")}
                }
            }
        ),
    ),
    Case(
        "VMR017",
        "vm",
        lambda s: s.with_changes(
            hives={
                "SYSTEM": {
                    "ControlSet001\\Control\\Session Manager\\Environment": {"PROCESSOR_ARCHITECTURE": sz("x86")}
                }
            }
        ),
    ),
    Case("VMR018", "vm", lambda s: s.with_changes(remove=["Windows/System32/config"])),
    Case("VMR101", "vm", _without_ic),
    Case("VMR102", "az", _without_agent),
    Case(
        "VMR103",
        "vm",
        lambda s: s.with_changes(hives={"SYSTEM": {"ControlSet001\\Services\\WaAppAgent": {"Start": dword(4)}}}),
    ),
    Case("VMR104", "vm", lambda s: s.with_changes(remove=["unattend.xml"])),
    Case(
        "VMR105",
        "vm",
        lambda s: s.with_changes(
            files={
                "unattend.xml": '<unattend xmlns="urn:schemas-microsoft-com:unattend">'
                '<settings pass="specialize"/></unattend>'
            }
        ),
    ),
    Case("VMR201", "vm", _state("IMAGE_STATE_COMPLETE")),
    Case("VMR202", "vm", _state("IMAGE_STATE_GENERALIZE_RESEAL_TO_AUDIT")),
    Case("VMR203", "vm", _state("IMAGE_STATE_UNDEPLOYABLE")),
    Case(
        "VMR204",
        "vm",
        lambda s: s.with_changes(files={STATE_INI: "[State]\r\nImageState=IMAGE_STATE_COMPLETE\r\n"}),
    ),
    Case(
        "VMR205",
        "vm",
        lambda s: s.with_changes(hives={"SYSTEM": {"Setup": {"SetupType": dword(0)}}}),
    ),
    Case(
        "VMR206",
        "vm",
        lambda s: s.with_changes(hives={"SYSTEM": {"Setup\\Status\\SysprepStatus": {"GeneralizationState": dword(7)}}}),
    ),
    Case("VMR207", "vm", lambda s: s.with_changes(remove=[TAG])),
    Case(
        "VMR208",
        "az",
        lambda s: s.with_changes(files={"Windows/Panther/unattend.xml": answer_file()}),
    ),
    Case(
        "VMR209",
        "vm",
        lambda s: s.with_changes(files={"unattend.xml": answer_file(admin_password="Hunter2!x", plain_text=True)}),
    ),
    Case(
        "VMR210",
        "vm",
        lambda s: s.with_changes(files={"unattend.xml": answer_file(admin_password="Hunter2!x", plain_text=False)}),
    ),
    Case(
        "VMR211",
        "vm",
        lambda s: s.with_changes(
            hives={"SOFTWARE": {WINLOGON: {"DefaultPassword": sz("Hunter2!x"), "AutoAdminLogon": sz("1")}}}
        ),
    ),
    Case("VMR212", "az", lambda s: s.with_changes(files={"unattend.xml": answer_file()})),
    Case("VMR213", "vm", fmt="raw", post=_encrypted_answer_file),
    Case("VMR310", "vm", lambda s: s.with_changes(files={"inetpub/wwwroot/site.pfx": km.pfx_bytes()})),
    Case(
        "VMR311",
        "vm",
        lambda s: s.with_changes(
            files={"Users/Administrator/Downloads/prod.publishsettings": km.publishsettings_bytes()}
        ),
    ),
    Case("VMR312", "vm", _cert_with_key("machine")),
    Case("VMR313", "vm", _cert_with_key("user")),
    Case(
        "VMR314",
        "vm",
        lambda s: s.with_changes(
            files={f"{MACHINE_KEYS}/0123456789abcdef0123456789abcdef_{MACHINE_GUID_2008R2}": b"\x02" * 600}
        ),
    ),
    Case("VMR401", "vm", _fw_remove("8443")),
    Case(
        "VMR402",
        "vm",
        _fw_rule("{block-http}", Action="Block", Active=True, Dir="In", Protocol=6, LPort=80, Name="Block HTTP"),
    ),
    Case(
        "VMR403",
        "vm",
        lambda s: s.with_changes(hives={"SYSTEM": {f"{FW}\\PublicProfile": {"EnableFirewall": dword(0)}}}),
    ),
    Case(
        "VMR404",
        "vm",
        _fw_rule("{sql}", Action="Allow", Active=True, Dir="In", Protocol=6, LPort=1433, Name="SQL Server"),
    ),
    Case(
        "VMR405",
        "vm",
        lambda s: s.with_changes(
            hives={"SYSTEM": {"ControlSet001\\Control\\Terminal Server": {"fDenyTSConnections": dword(1)}}}
        ),
    ),
    Case("VMR406", "az", _fw_remove("5985")),
    Case(
        "VMR408",
        "vm",
        lambda s: s.with_changes(
            hives={
                "SYSTEM": {
                    f"{FW}\\StandardProfile\\GloballyOpenPorts\\List": {"8081:TCP": sz("8081:TCP:*:Enabled:Legacy app")}
                }
            }
        ),
    ),
    Case(
        "VMR409",
        "vm",
        _fw_rule("{broken}", Action="Allow", Active=True, Dir="In", Protocol="tcp", LPort=80, Name="Broken"),
    ),
]

_FACTS: dict[tuple[str, str, str], tuple[Path, ImageFacts]] = {}


def _definition() -> ServiceDefinition:
    return read_definition(Artefact.from_path(SAMPLE_CSDEF, "csdef"))


def _image(
    spec: ImageSpec, fmt: str, cache: Path, post: Callable[[Path, Path], Path] | None, work: Path
) -> tuple[Path, ImageFacts]:
    key = (spec.key(), fmt, post.__name__ if post else "")
    if key not in _FACTS:
        path = build_image(spec, fmt, cache_dir=cache)
        if post is not None:
            work.mkdir(parents=True, exist_ok=True)
            path = post(path, work)
        _FACTS[key] = (path, extract(path))
    return _FACTS[key]


def _subject(
    path: Path, facts: ImageFacts, profile: str, *, role: bool = True, definition: ServiceDefinition | None = None
) -> ImageSubject:
    definition = definition or _definition()
    chosen, _ = choose_role(definition, None)
    return ImageSubject(
        artefact=Artefact.from_path(path, IMAGE),
        facts=facts,
        profile=profile,
        profile_reason="test",
        definition=definition if role else None,
        role=chosen if role else None,
    )


def _base(name: str) -> tuple[ImageSpec, str]:
    return (VM, VMROLE) if name == "vm" else (AZ, AZURE)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.rule}-fails")
def test_rule_fails_on_its_image(case: Case, image_cache: Path, tmp_path: Path, snapshot) -> None:
    base, profile = _base(case.base)
    spec = case.change(base) if case.change else base
    path, facts = _image(spec, case.fmt, image_cache, case.post, tmp_path)
    evaluation = evaluate(rule_by_id(case.rule), _subject(path, facts, profile, role=case.role))
    assert evaluation.skip_reason is None, evaluation.skip_reason
    assert evaluation.findings, f"{case.rule} found nothing on its failing image"
    # the answer-file and autologon password never reach a finding (nor the snapshot); the image's cache
    # name is the hash of its spec: written <spec> so that a change to the skeleton does not touch every file
    snapshot.assert_match(evaluation.findings, paths={"spec": spec.key()}, secrets=["Hunter2!x"])


IMAGE_RULES = sorted(r.id for r in all_rules() if IMAGE in r.applies_to and r.id != "VMR001")


@pytest.mark.parametrize("base_name", ["vm", "az"])
def test_good_skeletons_pass_every_rule_of_their_profile(base_name: str, image_cache: Path, tmp_path: Path) -> None:
    base, profile = _base(base_name)
    path, facts = _image(base, "vhd-fixed", image_cache, None, tmp_path)
    assert not facts.problems
    ran = []
    for rule_id in IMAGE_RULES:
        evaluation = evaluate(rule_by_id(rule_id), _subject(path, facts, profile, role=base_name == "vm"))
        if evaluation.skip_reason is None:
            ran.append(rule_id)
            assert not evaluation.findings, f"{rule_id}: {evaluation.findings}"
        else:
            assert "profile" in evaluation.skip_reason or "service model" in evaluation.skip_reason, (
                evaluation.skip_reason
            )
    assert len(ran) >= (30 if base_name == "vm" else 20), ran


def test_every_image_rule_has_a_failing_image() -> None:
    covered = {c.rule for c in CASES} | {"VMR407"}
    assert set(IMAGE_RULES) <= covered, sorted(set(IMAGE_RULES) - covered)


def test_vmr407_dynamic_endpoint_is_reported_not_passed(image_cache: Path, tmp_path: Path, snapshot) -> None:
    text = SAMPLE_CSDEF.read_text("utf-8").replace(
        '<InternalEndpoint name="Control" protocol="tcp" port="8080" />',
        '<InternalEndpoint name="Control" protocol="tcp" />',
    )
    csdef = tmp_path / "ServiceDefinition.csdef"
    csdef.write_text(text, "utf-8")
    definition = read_definition(Artefact.from_path(csdef, "csdef"))
    path, facts = _image(VM, "vhd-fixed", image_cache, None, tmp_path)
    rule = rule_by_id("VMR407")
    assert not evaluate(rule, _subject(path, facts, VMROLE)).findings
    found = evaluate(rule, _subject(path, facts, VMROLE, definition=definition)).findings
    snapshot.assert_match(found, paths={"spec": VM.key()})


def test_firewall_rules_skip_without_a_service_model(image_cache: Path, tmp_path: Path) -> None:
    path, facts = _image(VM, "vhd-fixed", image_cache, None, tmp_path)
    evaluation = evaluate(rule_by_id("VMR401"), _subject(path, facts, VMROLE, role=False))
    assert evaluation.skip_reason and "--vmr-csdef" in evaluation.skip_reason


def test_profile_gating_names_the_profile(image_cache: Path, tmp_path: Path) -> None:
    path, facts = _image(VM, "vhd-fixed", image_cache, None, tmp_path)
    evaluation = evaluate(rule_by_id("VMR011"), _subject(path, facts, VMROLE))
    assert evaluation.skip_reason and "azure profile" in evaluation.skip_reason


def test_unreadable_part_skips_dependent_rules_with_the_reason(image_cache: Path, tmp_path: Path) -> None:
    spec = VM.with_changes(files={"Windows/System32/config/SOFTWARE": b"regf" + b"\x00" * 4092})
    path, facts = _image(spec, "vhd-fixed", image_cache, None, tmp_path)
    evaluation = evaluate(rule_by_id("VMR016"), _subject(path, facts, VMROLE))
    assert evaluation.skip_reason and "SOFTWARE" in evaluation.skip_reason
    assert dataclasses.replace(facts, problems=()).os is None
