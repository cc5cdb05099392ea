"""Key material and certificate-store bytes for image tests.

Everything here is deterministic: RSA keys come from primes drawn from a seeded generator, certificates
are RSA PKCS#1 v1.5 signed (deterministic) with fixed serials and dates, Ed25519 keys come from a seed.
The only exceptions are the password-protected variants (``pfx_bytes(password=...)``,
``pem_private_key_bytes(password=...)``), which use a random salt from the ``cryptography`` package.

These keys are for tests only: anyone can regenerate them from the seed.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import hmac
import json
import os
import random
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "AT_KEYEXCHANGE",
    "AT_SIGNATURE",
    "CERT_FRIENDLY_NAME_PROP_ID",
    "CERT_KEY_PROV_INFO_PROP_ID",
    "CERT_SHA1_HASH_PROP_ID",
    "CRYPT_MACHINE_KEYSET",
    "DPAPI_PROVIDER_GUID",
    "KeyProvInfo",
    "capi_container_file_name",
    "capi_machine_key_file_bytes",
    "cert_blob",
    "cert_thumbprint",
    "ec_private_key",
    "ed25519_private_key",
    "jks_bytes",
    "key_prov_info_bytes",
    "openssh_key_bytes",
    "pem_private_key_bytes",
    "pfx_bytes",
    "publishsettings_bytes",
    "putty_ppk_bytes",
    "pvk_bytes",
    "root_ca_certificate",
    "rsa_private_key",
    "server_certificate",
    "snk_private_bytes",
    "snk_public_bytes",
    "verify_signature",
]

CERT_KEY_PROV_INFO_PROP_ID = 2
CERT_SHA1_HASH_PROP_ID = 3
CERT_FRIENDLY_NAME_PROP_ID = 11
CERT_CERT_PROP_ID = 0x20
CRYPT_MACHINE_KEYSET = 0x20
AT_KEYEXCHANGE = 1
AT_SIGNATURE = 2
CALG_RSA_KEYX = 0xA400
CALG_RSA_SIGN = 0x2400
CALG_SHA1 = 0x8004
#: {df9d8cd0-1501-11d1-8c7a-00c04fc297eb}: the DPAPI provider GUID that opens every DPAPI blob.
DPAPI_PROVIDER_GUID = "df9d8cd0-1501-11d1-8c7a-00c04fc297eb"

_NOT_BEFORE = datetime.datetime(2011, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(2036, 1, 1, tzinfo=datetime.UTC)


# --------------------------------------------------------------------------------------------- keys


def _probable_prime(n: int, rng: random.Random, rounds: int = 24) -> bool:
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 2), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


_SIEVE_PRIMES = [p for p in range(3, 20000) if all(p % d for d in range(2, int(p**0.5) + 1))]
_WINDOW = 4096  # odd candidates examined per random start


def _prime(rng: random.Random, bits: int, e: int) -> int:
    """A probable prime of exactly ``bits`` bits (top two bits set, so p*q has the full size): a random odd
    start, a sieve over the next window of odd numbers, Miller-Rabin on the survivors."""
    while True:
        start = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        composite = bytearray(_WINDOW)  # index i stands for start + 2*i
        for p in _SIEVE_PRIMES:
            first = (-start * pow(2, -1, p)) % p
            composite[first::p] = b"\x01" * len(range(first, _WINDOW, p))
        for i in range(_WINDOW):
            if composite[i]:
                continue
            candidate = start + 2 * i
            if candidate.bit_length() != bits or (candidate - 1) % e == 0:
                continue
            if pow(2, candidate - 1, candidate) == 1 and _probable_prime(candidate, rng, rounds=6):
                return candidate


def _key_cache_dir() -> Path:
    env = os.environ.get("VMR_KEY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vmrole-harness" / "keys"


def _cached_primes(seed: int, bits: int) -> tuple[int, int] | None:
    try:
        data = json.loads((_key_cache_dir() / f"rsa-{bits}-{seed}.json").read_text())
        p, q = int(data["p"], 16), int(data["q"], 16)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if p > q > 2 and (p * q).bit_length() == bits and pow(2, p - 1, p) == 1 and pow(2, q - 1, q) == 1:
        return p, q
    return None


def _store_primes(seed: int, bits: int, p: int, q: int) -> None:
    folder = _key_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".rsa-")
        with os.fdopen(fd, "w") as fh:
            json.dump({"p": f"{p:x}", "q": f"{q:x}"}, fh)
        os.replace(tmp, folder / f"rsa-{bits}-{seed}.json")
    except OSError:
        pass  # the cache only saves time


@functools.lru_cache(maxsize=32)
def rsa_private_key(seed: int = 1, bits: int = 2048) -> rsa.RSAPrivateKey:
    """A deterministic RSA key (e = 65537) for ``seed``: the same key every run, on every machine.

    Deriving the primes takes about a second for 2048 bits in pure Python, so they are also kept on disk
    (``$VMR_KEY_CACHE`` or ``~/.cache/vmrole-harness/keys``); a cached pair is checked before use.
    """
    e = 65537
    cached = _cached_primes(seed, bits)
    if cached is not None:
        p, q = cached
    else:
        rng = random.Random(f"vmrole-harness rsa {seed} {bits}")
        while True:
            p, q = _prime(rng, bits // 2, e), _prime(rng, bits - bits // 2, e)
            if p != q and (p * q).bit_length() == bits:
                break
        p, q = max(p, q), min(p, q)
        _store_primes(seed, bits, p, q)
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e, p * q),
    )
    return numbers.private_key()


def ec_private_key(seed: int = 1) -> ec.EllipticCurvePrivateKey:
    """A deterministic P-256 key."""
    secret = int.from_bytes(hashlib.sha256(f"vmrole-harness ec {seed}".encode()).digest(), "big")
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    return ec.derive_private_key(secret % (order - 1) + 1, ec.SECP256R1())


def ed25519_private_key(seed: int = 1) -> ed25519.Ed25519PrivateKey:
    """A deterministic Ed25519 key."""
    return ed25519.Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(f"vmrole-harness ed25519 {seed}".encode()).digest()
    )


# --------------------------------------------------------------------------------------------- certificates


def _name(common_name: str, organisation: str = "vmrole-harness test") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
        ]
    )


@functools.lru_cache(maxsize=8)
def root_ca_certificate(seed: int = 100) -> x509.Certificate:
    """A self-signed root CA ("vmrole-harness Test Root CA"), RSA 2048 / SHA-256, valid 2011-2036."""
    key = rsa_private_key(seed)
    subject = _name("vmrole-harness Test Root CA")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(0x1E2A0000 + seed)
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .add_extension(ski, critical=False)
    )
    return builder.sign(key, hashes.SHA256())


@functools.lru_cache(maxsize=8)
def server_certificate(common_name: str = "webvm.contoso.example", seed: int = 101) -> x509.Certificate:
    """A TLS server certificate for ``common_name`` issued by :func:`root_ca_certificate`; its key is
    ``rsa_private_key(seed)``."""
    ca = root_ca_certificate()
    ca_key = rsa_private_key(100)
    key = rsa_private_key(seed)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(0x5E4A0000 + seed)
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(datetime.datetime(2031, 1, 1, tzinfo=datetime.UTC))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    return builder.sign(ca_key, hashes.SHA256())


def cert_thumbprint(cert_der: bytes) -> str:
    """The SHA-1 thumbprint, upper-case hex: the registry key name of a certificate in a store."""
    return hashlib.sha1(cert_der).hexdigest().upper()


# --------------------------------------------------------------------------------------------- store blobs


@dataclass(frozen=True)
class KeyProvInfo:
    """CERT_KEY_PROV_INFO_PROP_ID (2) content: which key container holds the certificate's private key."""

    container: str
    provider: str = "Microsoft Enhanced RSA and AES Cryptographic Provider"
    prov_type: int = 24  # PROV_RSA_AES; 1 = PROV_RSA_FULL, 0 = a CNG key storage provider
    flags: int = CRYPT_MACHINE_KEYSET
    key_spec: int = AT_KEYEXCHANGE


def key_prov_info_bytes(info: KeyProvInfo) -> bytes:
    """MS-GPEF 2.2.1.1.1.1.1: offsets to the container and provider names, provider type, flags, 8 reserved
    bytes (cProvParam = 0, no parameters), key spec, then the NUL-terminated UTF-16LE names."""
    container = (info.container + "\0").encode("utf-16-le")
    provider = (info.provider + "\0").encode("utf-16-le")
    header = 28
    return (
        struct.pack("<IIIIIII", header, header + len(container), info.prov_type, info.flags, 0, 0, info.key_spec)
        + container
        + provider
    )


def _element(prop_id: int, value: bytes) -> bytes:
    return struct.pack("<III", prop_id, 1, len(value)) + value


def cert_blob(
    cert_der: bytes,
    *,
    key_prov_info: KeyProvInfo | None = None,
    friendly_name: str | None = None,
    sha1_hash: bool = True,
) -> bytes:
    """A registry certificate-store ``Blob`` (MS-GPEF 2.2.1.1.1): property elements ``{PropertyId, 1, Length, Value}`` —
    KEY_PROV_INFO (2), FRIENDLY_NAME (11), SHA1_HASH (3) when asked — then the certificate itself (0x20, DER)
    last, the order Windows serialises them in."""
    out = b""
    if key_prov_info is not None:
        out += _element(CERT_KEY_PROV_INFO_PROP_ID, key_prov_info_bytes(key_prov_info))
    if friendly_name is not None:
        out += _element(CERT_FRIENDLY_NAME_PROP_ID, (friendly_name + "\0").encode("utf-16-le"))
    if sha1_hash:
        out += _element(CERT_SHA1_HASH_PROP_ID, hashlib.sha1(cert_der).digest())
    return out + _element(CERT_CERT_PROP_ID, cert_der)


def capi_container_file_name(container: str, machine_guid: str) -> str:
    """The CAPI machine-key file name of a key container: ``<32 hex>_<MachineGuid>``, where the hex part is the
    MD5 of the lower-cased container name plus a NUL (ANSI), printed as four little-endian 32-bit words. This
    form reproduces Windows' well-known names (iisConfigurationKey -> 6de9cb26..., iisWasKey -> 76944fb3...,
    NetFrameworkConfigurationKey -> d6d986f0...); the plain hex digest usually quoted does not."""
    digest = hashlib.md5((container.lower() + "\0").encode("cp1252", "replace"), usedforsecurity=False).digest()
    prefix = "".join(f"{word:08x}" for word in struct.unpack("<4I", digest))
    return f"{prefix}_{machine_guid.lower()}"


def capi_machine_key_file_bytes(container: str, seed: int = 0, *, bits: int = 2048) -> bytes:
    """A plausible CAPI machine-key container file: a small header, the container name, the public key
    (``RSA1``) and a DPAPI-protected private part (provider GUID, then filler). It holds no usable key and is
    not recognised by the key sniffer (it is not a bare PRIVATEKEYBLOB)."""
    name = container.encode("ascii", "replace") + b"\0"
    key = rsa_private_key(seed, bits) if bits >= 512 else None
    public = b""
    if key is not None:
        pub = key.public_key().public_numbers()
        public = b"RSA1" + struct.pack("<III", bits // 8 + 8, bits, bits // 8 - 1) + struct.pack("<I", pub.e)
        public += pub.n.to_bytes(bits // 8, "little") + bytes(8)
    rng = random.Random(f"vmrole-harness dpapi {container} {seed}")
    dpapi = struct.pack("<I", 1) + _guid_le(DPAPI_PROVIDER_GUID) + bytes(rng.getrandbits(8) for _ in range(1200))
    header = struct.pack("<IIIIIIIIII", 2, 0, len(name), 0, 0, 0, 0, len(public), len(dpapi), 0)
    return header + name + public + dpapi


def _guid_le(text: str) -> bytes:
    import uuid

    return uuid.UUID(text).bytes_le


# --------------------------------------------------------------------------------------------- files


def _oid(dotted: str) -> bytes:
    parts = [int(x) for x in dotted.split(".")]
    body = bytes([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        body += bytes(reversed(chunk))
    return _der(0x06, body)


_PKCS7_DATA = "1.2.840.113549.1.7.1"


def _content_info_data(payload: bytes) -> bytes:
    return _der(0x30, _oid(_PKCS7_DATA) + _der(0xA0, _der(0x04, payload)))


def _pkcs12_unprotected(key: rsa.RSAPrivateKey, certs: list[x509.Certificate], friendly_name: str) -> bytes:
    """An RFC 7292 PFX with no MAC and no encryption (``openssl pkcs12 -export -nodes -nomac`` style):
    one SafeContents with a keyBag (PKCS#8) and a certBag per certificate. Deterministic bytes."""
    local_key_id = hashlib.sha1(certs[0].public_bytes(serialization.Encoding.DER)).digest()
    attributes = _der(
        0x31,
        _der(0x30, _oid("1.2.840.113549.1.9.20") + _der(0x31, _der(0x1E, friendly_name.encode("utf-16-be"))))
        + _der(0x30, _oid("1.2.840.113549.1.9.21") + _der(0x31, _der(0x04, local_key_id))),
    )
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    bags = [_der(0x30, _oid("1.2.840.113549.1.12.10.1.1") + _der(0xA0, pkcs8) + attributes)]
    for i, cert in enumerate(certs):
        cert_bag = _der(
            0x30,
            _oid("1.2.840.113549.1.9.22.1") + _der(0xA0, _der(0x04, cert.public_bytes(serialization.Encoding.DER))),
        )
        bags.append(
            _der(0x30, _oid("1.2.840.113549.1.12.10.1.3") + _der(0xA0, cert_bag) + (attributes if i == 0 else b""))
        )
    safe_contents = _der(0x30, b"".join(bags))
    auth_safe = _der(0x30, _content_info_data(safe_contents))
    return _der(0x30, _der(0x02, b"\x03") + _content_info_data(auth_safe))


def pfx_bytes(*, seed: int = 101, common_name: str = "webvm.contoso.example", password: bytes | None = None) -> bytes:
    """A PKCS#12 with the server key, its certificate and the root CA. Without a password: no MAC, no
    encryption, deterministic bytes. With one: ``cryptography``'s encrypted PKCS#12 (random salt)."""
    key = rsa_private_key(seed)
    cert = server_certificate(common_name, seed)
    if password:
        return pkcs12.serialize_key_and_certificates(
            common_name.encode(), key, cert, [root_ca_certificate()], serialization.BestAvailableEncryption(password)
        )
    return _pkcs12_unprotected(key, [cert, root_ca_certificate()], common_name)


def pem_private_key_bytes(*, kind: str = "pkcs8", seed: int = 102, password: bytes | None = None) -> bytes:
    """A PEM private key: ``kind`` "pkcs8" (BEGIN PRIVATE KEY), "pkcs1" (BEGIN RSA PRIVATE KEY), "ec"
    (BEGIN EC PRIVATE KEY); a password gives an encrypted PKCS#8 (BEGIN ENCRYPTED PRIVATE KEY, random salt)."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "ec":
        key, fmt = ec_private_key(seed), serialization.PrivateFormat.TraditionalOpenSSL
    elif kind == "pkcs1":
        key, fmt = rsa_private_key(seed), serialization.PrivateFormat.TraditionalOpenSSL
    elif kind == "pkcs8":
        key, fmt = rsa_private_key(seed), serialization.PrivateFormat.PKCS8
    else:
        raise ValueError(f"kind must be pkcs8, pkcs1 or ec, not {kind!r}")
    if password:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def _private_key_blob(key: rsa.RSAPrivateKey, alg: int) -> bytes:
    """A CAPI PRIVATEKEYBLOB: BLOBHEADER (type 7, version 2, alg), RSAPUBKEY ("RSA2"), then modulus, primes,
    CRT exponents, coefficient and private exponent, little-endian."""
    n = key.private_numbers()
    bits = key.key_size
    full, half = bits // 8, bits // 16

    def le(value: int, size: int) -> bytes:
        return value.to_bytes(size, "little")

    return (
        struct.pack("<BBHI", 0x07, 0x02, 0, alg)
        + b"RSA2"
        + struct.pack("<II", bits, n.public_numbers.e)
        + le(n.public_numbers.n, full)
        + le(n.p, half)
        + le(n.q, half)
        + le(n.dmp1, half)
        + le(n.dmq1, half)
        + le(n.iqmp, half)
        + le(n.d, full)
    )


def pvk_bytes(*, seed: int = 103, bits: int = 2048, key_spec: int = AT_KEYEXCHANGE) -> bytes:
    """An unencrypted Microsoft PVK file: magic 0xB0B5F11E, reserved, key type, encrypted=0, salt length 0,
    key length, then a PRIVATEKEYBLOB (``openssl rsa -inform PVK -pvk-none`` reads it)."""
    blob = _private_key_blob(
        rsa_private_key(seed, bits), CALG_RSA_KEYX if key_spec == AT_KEYEXCHANGE else CALG_RSA_SIGN
    )
    return struct.pack("<IIIIII", 0xB0B5F11E, 0, key_spec, 0, 0, len(blob)) + blob


def snk_private_bytes(*, seed: int = 104, bits: int = 1024) -> bytes:
    """A strong-name key pair (``sn -k``): a bare PRIVATEKEYBLOB with CALG_RSA_SIGN ("RSA2")."""
    return _private_key_blob(rsa_private_key(seed, bits), CALG_RSA_SIGN)


def snk_public_bytes(*, seed: int = 104, bits: int = 1024) -> bytes:
    """The public half (``sn -p``): signature/hash algorithm ids, length, then a PUBLICKEYBLOB ("RSA1").
    Not a secret: rules must not flag it."""
    key = rsa_private_key(seed, bits).public_key().public_numbers()
    blob = struct.pack("<BBHI", 0x06, 0x02, 0, CALG_RSA_SIGN) + b"RSA1" + struct.pack("<II", bits, key.e)
    blob += key.n.to_bytes(bits // 8, "little")
    return struct.pack("<III", CALG_RSA_SIGN, CALG_SHA1, len(blob)) + blob


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b""
    return _ssh_string(raw)


def putty_ppk_bytes(*, seed: int = 105, bits: int = 2048, comment: str = "rsa-key-20130201") -> bytes:
    """An unencrypted PuTTY private key (PuTTY-User-Key-File-2, ssh-rsa) with a correct Private-MAC."""
    n = rsa_private_key(seed, bits).private_numbers()
    public = _ssh_string(b"ssh-rsa") + _mpint(n.public_numbers.e) + _mpint(n.public_numbers.n)
    private = _mpint(n.d) + _mpint(n.p) + _mpint(n.q) + _mpint(n.iqmp)
    mac_key = hashlib.sha1(b"putty-private-key-file-mac-key").digest()
    mac_data = b"".join(_ssh_string(x) for x in (b"ssh-rsa", b"none", comment.encode(), public, private))
    mac = hmac.new(mac_key, mac_data, hashlib.sha1).hexdigest()

    def lines(data: bytes) -> list[str]:
        text = base64.b64encode(data).decode()
        return [text[i : i + 64] for i in range(0, len(text), 64)]

    pub_lines, priv_lines = lines(public), lines(private)
    out = [
        "PuTTY-User-Key-File-2: ssh-rsa",
        "Encryption: none",
        f"Comment: {comment}",
        f"Public-Lines: {len(pub_lines)}",
        *pub_lines,
        f"Private-Lines: {len(priv_lines)}",
        *priv_lines,
        f"Private-MAC: {mac}",
    ]
    return ("\r\n".join(out) + "\r\n").encode()


def openssh_key_bytes(*, seed: int = 106, comment: str = "deploy@build01") -> bytes:
    """An unencrypted OpenSSH private key (openssh-key-v1, ssh-ed25519) with a fixed check integer, so
    the bytes are deterministic (``ssh-keygen -y -f`` reads it)."""
    key = ed25519_private_key(seed)
    secret = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    public_blob = _ssh_string(b"ssh-ed25519") + _ssh_string(pub)
    check = struct.pack(">I", int.from_bytes(hashlib.sha256(secret).digest()[:4], "big")) * 2
    section = check + _ssh_string(b"ssh-ed25519") + _ssh_string(pub) + _ssh_string(secret + pub)
    section += _ssh_string(comment.encode())
    section += bytes(range(1, 1 + (-len(section)) % 8))
    body = b"openssh-key-v1\0" + _ssh_string(b"none") + _ssh_string(b"none") + _ssh_string(b"")
    body += struct.pack(">I", 1) + _ssh_string(public_blob) + _ssh_string(section)
    text = base64.b64encode(body).decode()
    wrapped = "\n".join(text[i : i + 70] for i in range(0, len(text), 70))
    return f"-----BEGIN OPENSSH PRIVATE KEY-----\n{wrapped}\n-----END OPENSSH PRIVATE KEY-----\n".encode()


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def _java_utf(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack(">H", len(data)) + data


def jks_bytes(
    *, seed: int = 107, password: str = "changeit", alias: str = "webvm", common_name: str = "webvm.contoso.example"
) -> bytes:
    """A Java KeyStore (magic FEEDFEED, version 2) with one PrivateKeyEntry (key protected with Sun's
    KeyProtector, fixed salt) and its certificate chain, closed by the keyed SHA-1 integrity digest;
    ``keytool -list -storepass <password>`` reads it."""
    key = rsa_private_key(seed)
    cert = server_certificate(common_name, seed)
    plain = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pw = password.encode("utf-16-be")
    salt = hashlib.sha1(f"vmrole-harness jks salt {seed}".encode()).digest()
    stream, digest = b"", salt
    while len(stream) < len(plain):
        digest = hashlib.sha1(pw + digest).digest()
        stream += digest
    protected = salt + bytes(a ^ b for a, b in zip(plain, stream, strict=False)) + hashlib.sha1(pw + plain).digest()
    sun_oid = _der(0x06, bytes([0x2B, 0x06, 0x01, 0x04, 0x01, 0x2A, 0x02, 0x11, 0x01, 0x01]))  # 1.3.6.1.4.1.42.2.17.1.1
    encrypted_info = _der(0x30, _der(0x30, sun_oid + b"\x05\x00") + _der(0x04, protected))
    chain = [cert, root_ca_certificate()]
    created_ms = 1359720000 * 1000
    body = struct.pack(">III", 0xFEEDFEED, 2, 1)
    body += struct.pack(">I", 1) + _java_utf(alias) + struct.pack(">Q", created_ms)
    body += struct.pack(">I", len(encrypted_info)) + encrypted_info + struct.pack(">I", len(chain))
    for c in chain:
        der = c.public_bytes(serialization.Encoding.DER)
        body += _java_utf("X.509") + struct.pack(">I", len(der)) + der
    return body + hashlib.sha1(pw + b"Mighty Aphrodite" + body).digest()


def publishsettings_bytes(
    *, subscription_id: str = "8a3c3e7b-5c1e-4d4a-9f2b-0c1d2e3f4a5b", name: str = "Contoso Production"
) -> bytes:
    """An Azure ``.publishsettings`` file (schema 2.0) embedding a management-certificate PFX (base64)."""
    pfx = base64.b64encode(pfx_bytes(seed=108, common_name="Windows Azure Tools")).decode()
    return (
        '<?xml version="1.0" encoding="utf-8"?>\r\n<PublishData>\r\n'
        '  <PublishProfile\r\n    SchemaVersion="2.0"\r\n    PublishMethod="AzureServiceManagementAPI">\r\n'
        f'    <Subscription\r\n      ServiceManagementUrl="https://management.core.windows.net"\r\n'
        f'      Id="{subscription_id}"\r\n      Name="{name}"\r\n      ManagementCertificate="{pfx}" />\r\n'
        "  </PublishProfile>\r\n</PublishData>\r\n"
    ).encode()


def verify_signature(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    """Raise unless ``issuer``'s key signed ``cert`` (RSA PKCS#1 v1.5): for tests."""
    public = issuer.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    assert cert.signature_hash_algorithm is not None
    public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
