"""Certificate facts: store blobs, KEY_PROV_INFO, certificate summaries, key-container files (§4)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import struct
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.extraction.certs import (
    MACHINE_KEY_ALLOWLIST,
    MAX_PROPERTIES,
    AllowlistError,
    capi_container_file_prefix,
    certificate_summary,
    classify_key_file,
    key_files_for_container,
    load_machine_key_allowlist,
    parse_cert_blob,
    parse_key_prov_info,
)
from harness.facts.image_certs import KeyContainerFile

GUID = "74659c6a-5d5b-4c39-9d3b-3f7b1f9c0a11"
NOW = dt.datetime(2012, 6, 1, tzinfo=dt.UTC)


def make_cert(
    common_name: str,
    *,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool | None = None,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
) -> tuple[x509.Certificate, object]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Contoso")]
    )
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(0x1A2B3C)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=365))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    return builder.sign(issuer_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    return make_cert("Contoso Root", ca=True)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def leaf(ca) -> x509.Certificate:
    ca_cert, ca_key = ca
    cert, _ = make_cert("web.contoso.example", issuer=(ca_cert.subject, ca_key))
    return cert


def der_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def prop(prop_id: int, value: bytes, *, reserved: int = 1, length: int | None = None) -> bytes:
    return struct.pack("<III", prop_id, reserved, len(value) if length is None else length) + value


def utf16z(text: str) -> bytes:
    return (text + "\0").encode("utf-16-le")


def key_prov_info(
    container: str | None, provider: str | None, *, prov_type: int = 24, flags: int = 0x20, key_spec: int = 1
) -> bytes:
    """A serialized CRYPT_KEY_PROV_INFO: 7 u32 then the strings, offsets from the value start."""
    body = b""
    offsets = []
    for text in (container, provider):
        if text is None:
            offsets.append(0)
        else:
            offsets.append(28 + len(body))
            body += utf16z(text)
    return struct.pack("<7I", offsets[0], offsets[1], prov_type, flags, 0, 0, key_spec) + body


def store_blob(der: bytes, *extra: bytes) -> bytes:
    """Windows writes other properties first and the certificate (0x20) last."""
    return b"".join(extra) + prop(0x20, der)


# ---- blobs --------------------------------------------------------------------------------------


def test_blob_with_key_prov_info_and_friendly_name(ca) -> None:
    der = der_of(ca[0])
    sha1 = ca[0].fingerprint(hashes.SHA1())
    kpi = key_prov_info("le-WebServer-1234", "Microsoft Enhanced RSA and AES Cryptographic Provider")
    blob = parse_cert_blob(
        store_blob(der, prop(2, kpi), prop(3, sha1), prop(11, utf16z("Contoso SSL")), prop(0x5C, b"\x01\x02"))
    )
    assert blob.der == der
    assert blob.property_ids == (2, 3, 11, 0x5C, 0x20)
    assert [p.length for p in blob.properties] == [len(kpi), 20, len(utf16z("Contoso SSL")), 2, len(der)]
    assert blob.properties[0].offset == 12
    assert blob.friendly_name == "Contoso SSL"
    assert blob.sha1_property == sha1.hex().upper()
    assert blob.has_key_reference
    info = blob.key_prov_info
    assert info is not None
    assert info.container_name == "le-WebServer-1234"
    assert info.provider_name == "Microsoft Enhanced RSA and AES Cryptographic Provider"
    assert (info.provider_type, info.flags, info.key_spec) == (24, 0x20, 1)
    assert info.machine_keyset and not info.is_cng
    assert info.problems == () and blob.problems == ()


def test_cng_user_key_prov_info() -> None:
    info = parse_key_prov_info(
        key_prov_info("{8F1B...}", "Microsoft Software Key Storage Provider", prov_type=0, flags=0, key_spec=0)
    )
    assert info.is_cng and not info.machine_keyset
    assert info.provider_name == "Microsoft Software Key Storage Provider"


def test_blob_without_key_reference(leaf) -> None:
    blob = parse_cert_blob(store_blob(der_of(leaf)))
    assert not blob.has_key_reference and blob.key_prov_info is None and blob.friendly_name is None


def test_truncated_certificate_property(leaf) -> None:
    data = store_blob(der_of(leaf))
    blob = parse_cert_blob(data[:-10])
    assert blob.der is None
    assert any("claims" in p and "only" in p for p in blob.problems)
    assert any("no certificate property" in p for p in blob.problems)


def test_overlong_length_is_refused_without_allocation(leaf) -> None:
    blob = parse_cert_blob(prop(2, b"\x00" * 8, length=0xFFFFFFFF) + prop(0x20, der_of(leaf)))
    assert blob.properties == () and blob.der is None
    assert "claims 4294967295 bytes" in blob.problems[0]


def test_trailing_bytes_and_reserved_word(leaf) -> None:
    blob = parse_cert_blob(prop(0x20, der_of(leaf), reserved=7) + b"\x00\x01\x02")
    assert blob.der == der_of(leaf)
    assert any("reserved word 7" in p for p in blob.problems)
    assert any("3 trailing bytes" in p for p in blob.problems)


def test_duplicate_certificate_property_keeps_the_first(ca, leaf) -> None:
    blob = parse_cert_blob(prop(0x20, der_of(ca[0])) + prop(0x20, der_of(leaf)))
    assert blob.der == der_of(ca[0])
    assert any("more than once" in p for p in blob.problems)


@pytest.mark.parametrize("value", [b"", "text", None, 12])
def test_empty_and_non_binary_blobs(value: object) -> None:
    blob = parse_cert_blob(value)  # type: ignore[arg-type]
    assert blob.problems and blob.der is None


def test_size_and_property_count_are_bounded() -> None:
    assert "over the 100-byte limit" in parse_cert_blob(b"\x00" * 200, max_size=100).problems[0]
    many = parse_cert_blob(prop(9, b"") * (MAX_PROPERTIES + 5))
    assert len(many.properties) == MAX_PROPERTIES
    assert any(f"more than {MAX_PROPERTIES} properties" in p for p in many.problems)
    assert sum("more than once" in p for p in many.problems) == 1


def test_bytearray_and_memoryview_are_accepted(leaf) -> None:
    data = store_blob(der_of(leaf))
    assert parse_cert_blob(bytearray(data)).der == der_of(leaf)
    assert parse_cert_blob(memoryview(data)).der == der_of(leaf)


def test_bad_sha1_property_length() -> None:
    blob = parse_cert_blob(prop(3, b"\x01" * 19))
    assert blob.sha1_property is None and any("not 20" in p for p in blob.problems)


# ---- KEY_PROV_INFO bounds ------------------------------------------------------------------------


def test_key_prov_info_shorter_than_its_header() -> None:
    info = parse_key_prov_info(b"\x00" * 20)
    assert info.container_name is None and "shorter than its 28-byte header" in info.problems[0]


def test_key_prov_info_offsets_past_the_end_and_into_the_header() -> None:
    value = struct.pack("<7I", 4000, 8, 1, 0x20, 0, 0, 2)
    info = parse_key_prov_info(value)
    assert info.container_name is None and info.provider_name is None
    assert info.machine_keyset and info.key_spec == 2
    text = " ".join(info.problems)
    assert "past the end" in text and "points into the header" in text


def test_key_prov_info_without_nul_terminator() -> None:
    value = struct.pack("<7I", 28, 0, 1, 0, 0, 0, 1) + "abc".encode("utf-16-le")
    info = parse_key_prov_info(value)
    assert info.container_name == "abc" and any("not NUL-terminated" in p for p in info.problems)


def test_key_prov_info_long_name_is_cut() -> None:
    value = struct.pack("<7I", 28, 0, 1, 0, 0, 0, 1) + ("x" * 5000 + "\0").encode("utf-16-le")
    info = parse_key_prov_info(value)
    assert info.container_name == "x" * 1024 and any("longer than 1024" in p for p in info.problems)


def test_key_prov_info_odd_offset_and_bad_utf16_never_raise() -> None:
    value = struct.pack("<7I", 29, 0, 1, 0, 0, 0, 1) + b"\xff\xd8\x00\x00\x00"
    info = parse_key_prov_info(value)
    assert isinstance(info.container_name, str)


# ---- never leaks ---------------------------------------------------------------------------------


def test_key_material_in_a_property_is_labelled_never_copied(leaf) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    secret_line = pem.splitlines()[1].decode()
    blob = parse_cert_blob(store_blob(der_of(leaf), prop(0x1234, pem), prop(0x99, b"\x1e\xf1\xb5\xb0" + b"\x00" * 40)))
    assert blob.key_material == ((0x1234, "pem-private-key"), (0x99, "pvk"))
    shown = repr(blob) + "".join(repr(getattr(blob, f.name)) for f in dataclasses.fields(blob) if f.name != "der")
    assert secret_line not in shown and "PRIVATE KEY" not in shown
    assert "der=" not in repr(blob)  # the certificate bytes stay out of repr too
    assert [p.length for p in blob.properties][:2] == [len(pem), 44]


# ---- summaries ------------------------------------------------------------------------------------


def test_summary_of_a_self_signed_ca(ca) -> None:
    cert = ca[0]
    summary = certificate_summary(der_of(cert))
    assert summary.thumbprint == cert.fingerprint(hashes.SHA1()).hex().upper()
    assert summary.sha256 == cert.fingerprint(hashes.SHA256()).hex().upper()
    assert summary.subject == "O=Contoso,CN=Contoso Root"
    assert summary.issuer == summary.subject
    assert summary.self_signed is True and summary.is_ca is True
    assert summary.serial_number == "1A2B3C"
    assert summary.not_before == "2012-06-01T00:00:00+00:00"
    assert summary.not_after == "2013-06-01T00:00:00+00:00"
    assert summary.public_key == "EC secp256r1"
    assert summary.problem is None


def test_summary_of_an_issued_leaf_without_basic_constraints(leaf) -> None:
    summary = certificate_summary(der_of(leaf))
    assert summary.subject == "O=Contoso,CN=web.contoso.example"
    assert summary.issuer == "O=Contoso,CN=Contoso Root"
    assert summary.self_signed is False and summary.is_ca is False


def test_summary_rsa_key_description() -> None:
    cert, _ = make_cert("rsa", key=rsa.generate_private_key(public_exponent=65537, key_size=2048), ca=False)
    summary = certificate_summary(der_of(cert))
    assert summary.public_key == "RSA 2048" and summary.is_ca is False


@pytest.mark.parametrize("data", [b"", b"\x30\x82\x01\x00garbage", b"not a certificate at all"])
def test_unparsable_der_gives_a_problem_and_a_thumbprint(data: bytes) -> None:
    summary = certificate_summary(data)
    assert summary.problem and summary.subject is None
    assert len(summary.thumbprint) == 40


def test_summary_of_non_bytes_and_huge_input() -> None:
    assert "not bytes" in (certificate_summary("x").problem or "")  # type: ignore[arg-type]
    assert "over the" in (certificate_summary(b"\x30" * (2 << 20)).problem or "")


def test_blob_to_summary(leaf) -> None:
    blob = parse_cert_blob(store_blob(der_of(leaf)))
    assert blob.der is not None
    assert certificate_summary(blob.der).subject == "O=Contoso,CN=web.contoso.example"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_blob_parser_never_raises(data: bytes) -> None:
    blob = parse_cert_blob(data)
    assert isinstance(blob.problems, tuple)
    if blob.key_prov_info is not None:
        assert isinstance(blob.key_prov_info.problems, tuple)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.integers(0, 600), st.integers(0, 600))
def test_key_prov_info_and_summary_never_raise(tail: bytes, off1: int, off2: int) -> None:
    parse_key_prov_info(struct.pack("<7I", off1, off2, 1, 0x20, 3, 0, 1) + tail)
    assert certificate_summary(b"\x30\x82" + tail).problem


def test_mutated_real_certificate_never_raises(ca, recwarn) -> None:
    der = bytearray(der_of(ca[0]))
    for index in range(0, len(der), 7):
        mutated = bytearray(der)
        mutated[index] ^= 0xFF
        summary = certificate_summary(bytes(mutated))
        assert summary.thumbprint
    assert len(recwarn) == 0  # parser warnings become summary.warnings, not noise


def test_negative_serial_is_a_warning_not_a_problem() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "neg")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(5)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    der = bytearray(der_of(cert))
    serial_at = der.index(b"\x02\x01\x05")  # INTEGER 5
    der[serial_at + 2] = 0xFB  # INTEGER -5
    summary = certificate_summary(bytes(der))
    assert summary.serial_number == "-5" and summary.problem is None
    assert summary.warnings[0] == "serial number is not positive (RFC 5280 section 4.1.2.2 requires a positive integer)"


# ---- key container files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("directory", "kind"),
    [
        (r"ProgramData\Microsoft\Crypto\RSA\MachineKeys", "capi-machine-rsa"),
        (r"C:\ProgramData\Microsoft\Crypto\DSS\MachineKeys", "capi-machine-dss"),
        (r"\ProgramData\Microsoft\Crypto\RSA\S-1-5-18", "capi-system"),
        ("ProgramData/Microsoft/Crypto/RSA/S-1-5-20", "capi-system"),
        (r"programdata\microsoft\crypto\keys", "cng-machine"),
        (r"ProgramData\Microsoft\Crypto\SystemKeys", "cng-system"),
        (r"Windows\ServiceProfiles\LocalService\AppData\Roaming\Microsoft\Crypto\Keys", "cng-system"),
        (r"Windows\ServiceProfiles\NetworkService\AppData\Roaming\Microsoft\Crypto\Keys", "cng-system"),
        (
            r"Users\Administrator\AppData\Roaming\Microsoft\Crypto\RSA\S-1-5-21-1004336348-1177238915-682003330-500",
            "capi-user",
        ),
        (r"Users\ops\AppData\Roaming\Microsoft\Crypto\Keys", "cng-user"),
        (r"Users\ops\AppData\Roaming\Microsoft\Protect\S-1-5-21-1-2-3-1001", "dpapi-masterkey"),
        (r"Windows\System32\Microsoft\Protect\S-1-5-18", "dpapi-masterkey"),
        (r"Windows\System32\Microsoft\Protect\S-1-5-18\User", "dpapi-masterkey"),
        (r"Documents and Settings\All Users\Application Data\Microsoft\Crypto\RSA\MachineKeys", "capi-machine-rsa"),
        (r"Documents and Settings\bob\Application Data\Microsoft\Crypto\RSA\S-1-5-21-9-9-9-1003", "capi-user"),
    ],
)
def test_key_directories(directory: str, kind: str) -> None:
    name = f"0123456789abcdef0123456789abcdef_{GUID}"
    classified = classify_key_file(directory + "\\" + name, name)
    assert classified is not None and classified.kind == kind and not classified.allowlisted
    assert classified.path.endswith("\\" + name) and not classified.path.startswith(("\\", "C:"))
    as_directory = classify_key_file(directory, name)  # the directory form gives the same answer
    assert as_directory == classified


@pytest.mark.parametrize(
    "path",
    [
        r"ProgramData\Microsoft\Crypto\RSA",
        r"ProgramData\Microsoft\Crypto\RSA\MachineKeys\sub",
        r"Windows\System32\config",
        r"Users\ops\AppData\Roaming\Microsoft\Crypto\RSA\NotASid",
        r"Users\ops\Documents",
    ],
)
def test_other_directories_are_not_key_directories(path: str) -> None:
    assert classify_key_file(path, "abc_def") is None


def test_non_key_files_and_bad_names() -> None:
    assert classify_key_file(r"Users\ops\AppData\Roaming\Microsoft\Protect\S-1-5-21-1-1", "Preferred") is None
    assert classify_key_file(r"ProgramData\Microsoft\Crypto\Keys", "") is None
    assert classify_key_file(r"ProgramData\Microsoft\Crypto\Keys", "a\\b") is None
    assert classify_key_file(None, "x") is None  # type: ignore[arg-type]


def test_shipped_allowlist_entries_are_allowlisted_in_machinekeys_only() -> None:
    for entry in MACHINE_KEY_ALLOWLIST.entries:
        name = f"{entry.prefix.upper()}_{GUID}"
        found = classify_key_file(r"ProgramData\Microsoft\Crypto\RSA\MachineKeys", name)
        assert found is not None and found.allowlisted and found.allowlist_entry == entry
        elsewhere = classify_key_file(r"ProgramData\Microsoft\Crypto\Keys", name)
        assert elsewhere is not None and not elsewhere.allowlisted


def test_shipped_allowlist_names_derive_from_their_containers() -> None:
    assert len(MACHINE_KEY_ALLOWLIST.entries) == 5
    for entry in MACHINE_KEY_ALLOWLIST.entries:
        assert entry.container and capi_container_file_prefix(entry.container) == entry.prefix


def test_user_allowlist_extends_the_shipped_one(tmp_path: Path) -> None:
    extra = tmp_path / "keys.yml"
    extra.write_text(
        "version: 1\nentries:\n"
        "  - prefix: F686AACE6942FB7F7CEB231212EEF4A4\n"
        "    container: TSSecKeySet1\n"
        "    description: RDP listener certificate key, expected in our images\n"
        "  - prefix: 0123456789abcdef0123456789abcdef\n"
        "    description: our app's CNG key\n"
        "    kinds: [cng-machine]\n",
        encoding="utf-8",
    )
    allowlist = load_machine_key_allowlist([extra])
    assert len(allowlist.entries) == 7
    rdp = classify_key_file(
        r"ProgramData\Microsoft\Crypto\RSA\MachineKeys", f"f686aace6942fb7f7ceb231212eef4a4_{GUID}", allowlist
    )
    assert rdp is not None and rdp.allowlisted and rdp.allowlist_entry is not None
    assert rdp.allowlist_entry.source == str(extra)
    assert not classify_key_file(
        r"ProgramData\Microsoft\Crypto\RSA\MachineKeys", f"f686aace6942fb7f7ceb231212eef4a4_{GUID}"
    ).allowlisted  # type: ignore[union-attr]
    app = classify_key_file(r"ProgramData\Microsoft\Crypto\Keys", f"0123456789abcdef0123456789abcdef_{GUID}", allowlist)
    assert app is not None and app.allowlisted
    only_user = load_machine_key_allowlist([extra], include_default=False)
    assert len(only_user.entries) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("entries: [\n", "not valid YAML at line"),
        ("- a\n", "expected a mapping with 'version' and 'entries'"),
        ("entries: {}\n", "'entries' must be a list"),
        ("entries:\n  - nope\n", "entry 1: expected a mapping"),
        ("entries:\n  - prefix: xyz\n    description: d\n", "entry 1: 'prefix' must be 32 hexadecimal"),
        ("entries:\n  - prefix: 0123456789abcdef0123456789abcdef\n", "'description' is required"),
        (
            "entries:\n  - prefix: 0123456789abcdef0123456789abcdef\n    description: d\n    kinds: [rsa]\n",
            "'kinds' must be a list of",
        ),
        (
            "entries:\n  - prefix: 0123456789abcdef0123456789abcdef\n    description: d\n    colour: red\n",
            "unknown keys ['colour']",
        ),
    ],
)
def test_bad_allowlist_files_name_the_file_and_entry(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(AllowlistError) as info:
        load_machine_key_allowlist([path])
    assert str(path) in str(info.value) and message in str(info.value)


def test_missing_and_binary_allowlist_files(tmp_path: Path) -> None:
    with pytest.raises(AllowlistError, match="cannot read it"):
        load_machine_key_allowlist([tmp_path / "absent.yml"])
    binary = tmp_path / "bin.yml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(AllowlistError, match="not UTF-8"):
        load_machine_key_allowlist([binary])


# ---- container → file -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("container", "prefix"),
    [
        ("iisConfigurationKey", "6de9cb26d2b98c01ec4e9e8b34824aa2"),
        ("iisWasKey", "76944fb33636aeddb9590521c2e8815a"),
        ("NetFrameworkConfigurationKey", "d6d986f09a1ee04e24c949879fdb506c"),
        ("Microsoft Internet Information Server", "c2319c42033a5ca7f44e731bfd3fa2b5"),
        ("MS IIS DCOM Server", "7a436fe806e483969f48a894af2fe9a1"),
        ("TSSecKeySet1", "f686aace6942fb7f7ceb231212eef4a4"),
        ("TSSECKEYSET1", "f686aace6942fb7f7ceb231212eef4a4"),  # lower-cased first
    ],
)
def test_capi_container_file_prefix_reproduces_well_known_names(container: str, prefix: str) -> None:
    assert capi_container_file_prefix(container) == prefix


def test_capi_prefix_handles_any_text() -> None:
    assert len(capi_container_file_prefix("Schlüssel ☃")) == 32
    assert len(capi_container_file_prefix("")) == 32


def test_key_files_for_container() -> None:
    prefix = capi_container_file_prefix("le-WebServer-1234")
    files = [
        KeyContainerFile(
            rf"ProgramData\Microsoft\Crypto\RSA\MachineKeys\{prefix}_{GUID}", f"{prefix}_{GUID}", "capi-machine-rsa"
        ),
        KeyContainerFile(rf"ProgramData\Microsoft\Crypto\Keys\{prefix}_{GUID}", f"{prefix}_{GUID}", "cng-machine"),
        KeyContainerFile(r"ProgramData\Microsoft\Crypto\RSA\MachineKeys\other", "other", "capi-machine-rsa"),
    ]
    assert key_files_for_container("LE-WEBSERVER-1234", files) == files[:1]
