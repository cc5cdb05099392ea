"""Certificates for the local fabric: a private CA, server/client certificates and service certificates.

Everything is PEM on disk (see CONTRACT.md, ``STATE/certs``). Private keys are written with mode 0600.
Keys are RSA 2048 where the certificates stand in for what a Windows guest and the Service Management
API accept (service certificates such as RemoteAccess.PasswordEncryption must be RSA, and so are the WinRM
listener's and the management certificate). Certificates no Windows or Azure counterpart constrains (the
fabric's own CA, the management endpoint's server certificate) may use ``key_type="ec"`` (P-256): an RSA key
costs about half a CPU second to generate, an EC key well under a millisecond.

Works with cryptography 38 (Debian 12) and newer.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import defusedxml.ElementTree as SafeET
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA",
    "CertPair",
    "ServiceCert",
    "issue_client_cert",
    "issue_server_cert",
    "make_ca",
    "rewrite_thumbprints",
    "service_certificate",
    "thumbprint",
]

KEY_SIZE = 2048
KEY_TYPES = ("rsa", "ec")
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
VALIDITY_DAYS = 825
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1")


class CA(NamedTuple):
    """Paths of a CA certificate and its key; unpacks as ``(ca_pem, ca_key)``."""

    pem: Path
    key: Path


class CertPair(NamedTuple):
    pem: Path
    key: Path


class ServiceCert(NamedTuple):
    pem: Path
    key: Path
    thumbprint: str  # 40 upper-case hex digits (SHA-1 of the DER), as a cscfg carries it


# -- helpers -------------------------------------------------------------------------------------------


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0)


def _new_key(key_type: str = "rsa") -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type != "rsa":
        raise ValueError(f"key_type must be one of {KEY_TYPES}, not {key_type!r}")
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)


def _key_for(path: Path, key_type: str, reuse: bool) -> PrivateKey:
    """A new key; with ``reuse``, the one already at ``path`` when it is a private key of that type and size (a
    fabric started again from the same state folder: its certificates are new, their keys need not be)."""
    if reuse and path.is_file() and not path.is_symlink():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError):
            key = None
        if key_type == "rsa" and isinstance(key, rsa.RSAPrivateKey) and key.key_size == KEY_SIZE:
            return key
        if key_type == "ec" and isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            return key
    return _new_key(key_type)


def _write_key(path: Path, key: PrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
        os.write(fd, data)
    finally:
        os.close(fd)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _key_path(out: Path, key_out: Path | str | None) -> Path:
    return Path(key_out) if key_out is not None else out.with_suffix(".key")


def _pem_path(out: Path | str) -> Path:
    out = Path(out)
    return out if out.suffix in (".pem", ".crt", ".cer") else out.with_name(out.name + ".pem")


def _load_ca(ca: CA | tuple[Path | str, Path | str]) -> tuple[x509.Certificate, PrivateKey]:
    pem, key = ca
    cert = x509.load_pem_x509_certificate(Path(pem).read_bytes())
    private = serialization.load_pem_private_key(Path(key).read_bytes(), password=None)
    if not isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise TypeError("the fabric CA key must be RSA or EC")
    return cert, private


def _san(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _build(
    subject: x509.Name,
    key: PrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: PrivateKey,
    *,
    is_ca: bool = False,
    eku: list[x509.ObjectIdentifier] | None = None,
    san: Iterable[str] = (),
) -> x509.Certificate:
    now = _now()
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(days=1))
        .not_valid_after(now + _dt.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.public_key() if issuer is not None else public  # type: ignore[arg-type]
            ),
            critical=False,
        )
    )
    if is_ca:
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
    else:
        rsa_key = isinstance(key, rsa.RSAPrivateKey)  # an EC key signs (ECDHE-ECDSA) and never enciphers
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=rsa_key,
            data_encipherment=rsa_key,  # service certificates decrypt (RemoteAccess password encryption)
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
    builder = builder.add_extension(usage, critical=True)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    san = list(san)
    if san:
        builder = builder.add_extension(_san(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(cn: str, org: str = "vmrole-harness local fabric") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


# -- public API ----------------------------------------------------------------------------------------


def make_ca(
    directory: Path | str, *, name: str = "ca", cn: str = "vmrole-harness fabric CA", key_type: str = "rsa"
) -> CA:
    """Create ``<directory>/<name>.pem`` and ``<directory>/<name>-key.pem`` (mode 0600)."""
    directory = Path(directory)
    key = _new_key(key_type)
    cert = _build(_name(cn), key, None, key, is_ca=True)
    ca = CA(directory / f"{name}.pem", directory / f"{name}-key.pem")
    _write_key(ca.key, key)
    _write_cert(ca.pem, cert)
    return ca


def issue_server_cert(
    ca: CA | tuple[Path | str, Path | str],
    names: Iterable[str] = DEFAULT_SERVER_NAMES,
    out: Path | str = "server.pem",
    *,
    key_out: Path | str | None = None,
    key_type: str = "rsa",
    reuse_key: bool = False,
) -> CertPair:
    """A TLS server certificate for ``names`` (DNS names and IP addresses go into the SAN).

    ``out`` is the certificate path (``.pem`` is appended when it has no certificate suffix); the key
    goes to ``key_out`` or next to it with the suffix ``.key`` (``reuse_key``: a key of ``key_type``
    already there is kept).
    """
    names = list(names)
    if not names:
        raise ValueError("a server certificate needs at least one name")
    ca_cert, ca_key = _load_ca(ca)
    pem = _pem_path(out)
    pair = CertPair(pem, _key_path(pem, key_out))
    key = _key_for(pair.key, key_type, reuse_key)
    cert = _build(_name(names[0]), key, ca_cert, ca_key, eku=[ExtendedKeyUsageOID.SERVER_AUTH], san=names)
    _write_key(pair.key, key)
    _write_cert(pair.pem, cert)
    return pair


def issue_client_cert(
    ca: CA | tuple[Path | str, Path | str],
    cn: str,
    out: Path | str,
    *,
    key_out: Path | str | None = None,
    reuse_key: bool = False,
) -> CertPair:
    """A TLS client certificate (the Service Management *management certificate*; RSA)."""
    ca_cert, ca_key = _load_ca(ca)
    pem = _pem_path(out)
    pair = CertPair(pem, _key_path(pem, key_out))
    key = _key_for(pair.key, "rsa", reuse_key)
    cert = _build(_name(cn), key, ca_cert, ca_key, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    _write_key(pair.key, key)
    _write_cert(pair.pem, cert)
    return pair


def service_certificate(
    ca: CA | tuple[Path | str, Path | str] | None,
    name: str,
    out: Path | str,
    *,
    key_out: Path | str | None = None,
    names: Iterable[str] = DEFAULT_SERVER_NAMES,
    reuse_key: bool = False,
) -> ServiceCert:
    """A certificate standing in for a cscfg ``<Certificate name=…>`` (issued by ``ca``, or self-signed).

    It is usable as an HTTPS endpoint certificate (serverAuth, SAN ``names``) and for data encryption,
    and its thumbprint is what goes back into the effective cscfg. RSA; ``reuse_key`` keeps an RSA key
    already at the key path.
    """
    pem = _pem_path(out)
    key_path = _key_path(pem, key_out)
    key = _key_for(key_path, "rsa", reuse_key)
    subject = _name(name, org="vmrole-harness service certificate")
    eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    if ca is None:
        cert = _build(subject, key, None, key, eku=eku, san=names)
    else:
        ca_cert, ca_key = _load_ca(ca)
        cert = _build(subject, key, ca_cert, ca_key, eku=eku, san=names)
    _write_key(key_path, key)
    _write_cert(pem, cert)
    return ServiceCert(pem, key_path, _thumbprint_of(cert))


def _thumbprint_of(cert: x509.Certificate) -> str:
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()


def thumbprint(pem: Path | str | bytes) -> str:
    """SHA-1 of the DER encoding, 40 upper-case hex digits (the Windows/cscfg thumbprint).

    ``pem`` is a path, or the PEM text itself (``str`` starting with ``-----BEGIN`` or ``bytes``).
    """
    if isinstance(pem, bytes):
        data = pem
    elif isinstance(pem, str) and pem.lstrip().startswith("-----BEGIN"):
        data = pem.encode("ascii")
    else:
        data = Path(pem).read_bytes()
    return _thumbprint_of(x509.load_pem_x509_certificate(data))


# -- cscfg rewriting -----------------------------------------------------------------------------------

_ROLE_RE = re.compile(r"<(?P<prefix>[\w.-]+:)?Role\b(?P<attrs>[^>]*?)(?<!/)>(?P<body>.*?)</(?:[\w.-]+:)?Role\s*>", re.S)
_CERT_RE = re.compile(r"<(?:[\w.-]+:)?Certificate\b(?P<attrs>[^>]*?)(?P<end>/?>)", re.S)
_NAME_RE = re.compile(r"""(?<![\w:.-])name\s*=\s*(?P<q>["'])(?P<v>.*?)(?P=q)""", re.S)
_TP_RE = re.compile(r"""(?<![\w:.-])thumbprint\s*=\s*(?P<q>["'])(?P<v>.*?)(?P=q)""", re.S)
_THUMB_OK = re.compile(r"^[0-9A-F]{40}$")


def _unescape(value: str) -> str:
    return (value.replace("&quot;", '"').replace("&apos;", "'").replace("&lt;", "<").replace("&gt;", ">")).replace(
        "&amp;", "&"
    )


def rewrite_thumbprints(
    cscfg_text: str,
    thumbprints: Mapping[str | tuple[str, str], str],
    *,
    strict: bool = False,
) -> str:
    """Write generated thumbprints into a cscfg, changing nothing else.

    ``thumbprints`` maps a certificate name to its thumbprint for every role, or ``(role, name)`` to a
    thumbprint for one role (that wins over the plain name). Only the value of the ``thumbprint``
    attribute of matching ``<Certificate name="…"/>`` elements inside ``<Role>`` elements is replaced
    (namespace prefixes are ignored); the rest of the text is kept byte for byte. With ``strict`` a
    mapping entry that matches no certificate raises ``KeyError``. The result is parsed (defusedxml) to
    prove it is still well-formed and carries the new values.
    """
    wanted: dict[str | tuple[str, str], str] = {}
    for key, value in thumbprints.items():
        tp = value.replace(" ", "").replace(":", "").upper()
        if not _THUMB_OK.match(tp):
            raise ValueError(f"not a SHA-1 thumbprint for {key!r}: {value!r}")
        wanted[key] = tp
    used: set[str | tuple[str, str]] = set()
    expected: list[tuple[str, str, str]] = []

    def role_sub(role: re.Match[str]) -> str:
        name_m = _NAME_RE.search(role.group("attrs"))
        role_name = _unescape(name_m.group("v")) if name_m else ""

        def cert_sub(cert: re.Match[str]) -> str:
            attrs = cert.group("attrs")
            cn = _NAME_RE.search(attrs)
            if cn is None:
                return cert.group(0)
            cert_name = _unescape(cn.group("v"))
            key: str | tuple[str, str]
            if (role_name, cert_name) in wanted:
                key = (role_name, cert_name)
            elif cert_name in wanted:
                key = cert_name
            else:
                return cert.group(0)
            used.add(key)
            tp = wanted[key]
            expected.append((role_name, cert_name, tp))
            tp_m = _TP_RE.search(attrs)
            if tp_m is not None:
                new_attrs = attrs[: tp_m.start("v")] + tp + attrs[tp_m.end("v") :]
            else:
                new_attrs = attrs[: cn.end()] + f' thumbprint="{tp}"' + attrs[cn.end() :]
            start = cert.start("attrs") - cert.start()
            whole = cert.group(0)
            return whole[:start] + new_attrs + whole[start + len(attrs) :]

        body = role.group("body")
        new_body = _CERT_RE.sub(cert_sub, body)
        whole = role.group(0)
        offset = role.start("body") - role.start()
        return whole[:offset] + new_body + whole[offset + len(body) :]

    result = _ROLE_RE.sub(role_sub, cscfg_text)
    if strict:
        missing = [k for k in wanted if k not in used]
        if missing:
            raise KeyError(f"certificates not found in the cscfg: {missing!r}")
    _validate(result, expected)
    return result


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _validate(text: str, expected: list[tuple[str, str, str]]) -> None:
    root = SafeET.fromstring(text)
    found: dict[tuple[str, str], str] = {}
    for role in root.iter():
        if _local(role.tag) != "Role":
            continue
        for cert in role.iter():
            if _local(cert.tag) == "Certificate":
                found[(role.get("name", ""), cert.get("name", ""))] = cert.get("thumbprint", "")
    for role_name, cert_name, tp in expected:
        if found.get((role_name, cert_name)) != tp:
            raise ValueError(f"rewriting the thumbprint of {role_name}/{cert_name} did not take effect")
