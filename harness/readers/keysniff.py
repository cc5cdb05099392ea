"""Recognise files that carry private keys or credentials from their first bytes (PEM, PKCS #12, PKCS #8, ...).

Only a label leaves this module; the bytes are never copied into facts, messages or logs.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

#: Extensions worth sniffing whatever their size; other files are sniffed only when small.
CANDIDATE_EXTENSIONS = frozenset(
    {
        ".pfx", ".p12", ".pem", ".key", ".pvk", ".snk", ".ppk", ".jks", ".keystore", ".jceks",
        ".publishsettings", ".cer", ".crt", ".der", ".p8", ".pk8", ".txt", ".config", ".xml", "",
    }
)  # fmt: skip
#: Files up to this size are sniffed whatever their name (keys are small; id_rsa has no extension).
SMALL_FILE = 64 * 1024
#: How much of a candidate is read: PEM blocks and <PublishData> may follow a preamble.
PREFIX = 64 * 1024

_PEM_PRIVATE = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_PKCS7_OID = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07"  # 1.2.840.113549.1.7.{1,2,6}
#: DER private keys: PKCS#8 PrivateKeyInfo (version 0, then an AlgorithmIdentifier SEQUENCE) and
#: PKCS#1 RSAPrivateKey (version 0, then the modulus INTEGER). Both start SEQUENCE, INTEGER 0.
_DER_VERSION_0 = b"\x02\x01\x00"
_PKCS8_ALGORITHMS = (
    b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01",  # rsaEncryption
    b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01",  # id-ecPublicKey
    b"\x06\x07\x2a\x86\x48\xce\x38\x04\x01",  # id-dsa
    b"\x06\x03\x2b\x65\x70",  # Ed25519
    b"\x06\x03\x2b\x65\x71",  # Ed448
)
_PUBLISH_DATA = (b"<PublishData", "<PublishData".encode("utf-16-le"), "<PublishData".encode("utf-16-be"))


def is_candidate(name: str, size: int) -> bool:
    leaf = name.replace("\\", "/").rsplit("!", 1)[-1]
    return size <= SMALL_FILE or PurePosixPath(leaf).suffix.lower() in CANDIDATE_EXTENSIONS


def _der_length_end(data: bytes) -> int | None:
    """Offset just past a DER SEQUENCE header at data[0], or None when it is not one."""
    if len(data) < 2 or data[0] != 0x30:
        return None
    first = data[1]
    if first < 0x80:
        return 2
    if first == 0x80:  # indefinite length (BER), which PKCS#12 writers sometimes use
        return 2
    count = first & 0x7F
    return 2 + count if 1 <= count <= 4 else None


def sniff(prefix: bytes) -> str | None:
    """A key-material label for a file starting with ``prefix``, or None."""
    if prefix.startswith(b"\x1e\xf1\xb5\xb0"):  # PVK magic 0xb0b5f11e, little-endian
        return "pvk"
    if prefix[8:12] == b"RSA2" and prefix[:1] == b"\x07":  # PRIVATEKEYBLOB header, then RSAPUBKEY magic
        return "snk-private-key"
    if prefix.startswith(b"RSA2"):
        return "snk-private-key"
    if prefix.startswith(b"\xfe\xed\xfe\xed"):
        return "jks"
    if prefix.startswith(b"\xce\xce\xce\xce"):
        return "jceks"
    if prefix.startswith(b"PuTTY-User-Key-File-"):
        return "putty-private-key"
    end = _der_length_end(prefix)
    if end is not None and prefix[end : end + 3] == b"\x02\x01\x03" and _PKCS7_OID in prefix[end : end + 40]:
        return "pkcs12"  # PFX ::= SEQUENCE { version INTEGER 3, authSafe ContentInfo (pkcs7 data/signed) }
    if end is not None and prefix[end : end + 3] == _DER_VERSION_0:
        body = prefix[end + 3 : end + 24]
        if body[:1] == b"\x30" and any(oid in body for oid in _PKCS8_ALGORITHMS):
            return "der-private-key"
        if body[:1] == b"\x02" and len(prefix) > 256:  # RSAPrivateKey: modulus INTEGER follows the version
            return "der-private-key"
    if b"-----BEGIN OPENSSH PRIVATE KEY-----" in prefix:
        return "openssh-private-key"
    if _PEM_PRIVATE.search(prefix):
        return "pem-private-key"
    if any(marker in prefix for marker in _PUBLISH_DATA):
        return "publishsettings"
    return None
