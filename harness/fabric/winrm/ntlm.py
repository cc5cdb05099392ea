"""NTLM acceptor for the WinRM server (pyspnego) and WinRM HTTP message encryption (MS-WSMV 2.2.9.1.1).

pyspnego's pure-Python NTLM acceptor looks the user up in the file named by ``NTLM_USER_FILE``
(``DOMAIN:USER:PASSWORD`` lines).  The variable is process-wide, but several WinRM servers can run in one
process (the test-suite does), so :class:`CredentialFile` writes a private file (0600, in a 0700 temp
directory owned by the server) and :func:`acceptor_step` points pyspnego at it for the calling thread only
(pyspnego resolves the file through ``spnego._ntlm._get_credential_file`` on every lookup; we wrap that
function with a thread-local override and fall back to the environment variable for everyone else).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import struct
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

# pyspnego (and the cryptography it loads) is imported where it is used: an instance process that starts its
# WinRM listeners would otherwise spend ~0.15 CPU s on it before its ports listen (issue 12)
if TYPE_CHECKING:
    import spnego
    from spnego.channel_bindings import GssChannelBindings

BOUNDARY = b"--Encrypted Boundary"
PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
ENCRYPTED_CONTENT_TYPE = f'multipart/encrypted;protocol="{PROTOCOL}";boundary="Encrypted Boundary"'
_OCTET_PREFIX = b"\tContent-Type: application/octet-stream\r\n"

_local = threading.local()
_patch_lock = threading.Lock()
_patched = False


def _install_scoped_credential_file() -> None:
    global _patched
    with _patch_lock:
        if _patched:
            return
        import spnego._ntlm as _spnego_ntlm

        original = _spnego_ntlm._get_credential_file

        def scoped() -> str | None:
            path = getattr(_local, "user_file", None)
            return path if path else original()

        _spnego_ntlm._get_credential_file = scoped
        _patched = True


@contextlib.contextmanager
def _credential_scope(user_file: str) -> Iterator[None]:
    previous = getattr(_local, "user_file", None)
    _local.user_file = user_file
    try:
        yield
    finally:
        _local.user_file = previous


class CredentialFile:
    """A private NTLM_USER_FILE for one user: ``:user:pass`` (empty domain, as pywinrm sends) plus the
    domain forms ``.``, the host name and ``WORKGROUP`` a client may send."""

    def __init__(
        self,
        username: str,
        password: str,
        domains: tuple[str, ...] = (),
        *,
        directory: str | os.PathLike[str] | None = None,
        tag: str = "",
    ) -> None:
        """``directory``: where the private folder ``vmr-winrm-<tag>-*`` is made (default: the temp folder). The
        fabric passes its 0700 ``secrets/`` folder, so a killed instance leaves nothing in the shared temp
        folder and ``fabric down`` removes what it left (issue 9)."""
        if any(c in username for c in ":\r\n") or any(c in password for c in "\r\n"):
            raise ValueError("WinRM user name/password contain characters an NTLM user file cannot hold")
        safe_tag = "".join(c for c in tag if c.isascii() and (c.isalnum() or c in "_.")) if tag else ""
        prefix = f"vmr-winrm-{safe_tag}-" if safe_tag else "vmr-winrm-"
        self._dir = tempfile.mkdtemp(prefix=prefix, dir=os.fspath(directory) if directory is not None else None)
        os.chmod(self._dir, 0o700)
        self.path = os.path.join(self._dir, "ntlm-users")
        lines = [f":{username}:{password}"]
        for domain in dict.fromkeys((".", "WORKGROUP", *domains)):
            if domain and ":" not in domain:
                lines.append(f"{domain}:{username}:{password}")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")

    def remove(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def channel_bindings_for(cert_file: str | os.PathLike[str]) -> GssChannelBindings | None:
    """RFC 5929 ``tls-server-end-point`` bindings of the first certificate in ``cert_file``."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from spnego.channel_bindings import GssChannelBindings

    try:
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    except (OSError, ValueError):
        return None
    algorithm = cert.signature_hash_algorithm
    name = algorithm.name if algorithm is not None else "sha256"
    if name in ("md5", "sha1"):
        name = "sha256"
    digest = hashlib.new(name, cert.public_bytes(Encoding.DER)).digest()
    return GssChannelBindings(application_data=b"tls-server-end-point:" + digest)


def token_message_type(token: bytes) -> int | None:
    """1 (negotiate), 3 (authenticate) for a raw NTLM token, None for anything else (e.g. SPNEGO)."""
    if len(token) >= 12 and token[:8] == b"NTLMSSP\x00":
        return struct.unpack("<I", token[8:12])[0]
    return None


def _client_sent_bindings(token: bytes) -> bool:
    try:
        from spnego._ntlm_raw.messages import Authenticate, AvId, NTClientChallengeV2

        auth = Authenticate.unpack(token)
        response = auth.nt_challenge_response or b""
        if len(response) <= 24:
            return False
        return AvId.channel_bindings in NTClientChallengeV2.unpack(response[16:]).av_pairs
    except Exception:
        return False


class NtlmAcceptor:
    """One connection's NTLM server context: ``challenge(type1) -> type2``, ``authenticate(type3)``."""

    def __init__(self, credentials: CredentialFile, bindings: GssChannelBindings | None) -> None:
        _install_scoped_credential_file()
        self._credentials = credentials
        self._bindings = bindings
        self._ctx: spnego.ContextProxy | None = None
        self.complete = False

    def challenge(self, token: bytes) -> bytes:
        import spnego
        from spnego.exceptions import SpnegoError

        self.complete = False
        with _credential_scope(self._credentials.path):
            self._ctx = spnego.server(protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
            out = self._ctx.step(token)
        if not out:
            raise SpnegoError(context_msg="NTLM acceptor produced no challenge")
        return out

    def authenticate(self, token: bytes) -> str:
        """Completes the context; returns the client principal. Raises SpnegoError on bad credentials."""
        from spnego.exceptions import SpnegoError

        if self._ctx is None:
            raise SpnegoError(context_msg="NTLM authenticate message without a negotiate message")
        bindings = self._bindings if self._bindings is not None and _client_sent_bindings(token) else None
        with _credential_scope(self._credentials.path):
            self._ctx.step(token, channel_bindings=bindings)
        if not self._ctx.complete:
            raise SpnegoError(context_msg="NTLM context incomplete")
        self.complete = True
        return self._ctx.client_principal or ""

    # -- message encryption -------------------------------------------------------------------------------

    def decrypt(self, body: bytes) -> bytes:
        """Unwraps a ``multipart/encrypted`` request body (one or more encrypted parts)."""
        from spnego.exceptions import SpnegoError

        if self._ctx is None or not self.complete:
            raise SpnegoError(context_msg="encrypted message on an unauthenticated connection")
        parts = [p for p in body.split(BOUNDARY + b"\r\n") if p]
        if len(parts) < 2 or len(parts) % 2:
            raise ValueError("malformed multipart/encrypted body")
        out = b""
        for i in range(0, len(parts), 2):
            header, payload = parts[i], parts[i + 1]
            if b"Length=" not in header:
                raise ValueError("encrypted part without OriginalContent Length")
            expected = int(header.split(b"Length=")[1].split(b"\r\n")[0].strip())
            if payload.endswith(BOUNDARY + b"--\r\n"):
                payload = payload[: -len(BOUNDARY + b"--\r\n")]
            if not payload.startswith(_OCTET_PREFIX):
                raise ValueError("encrypted part without application/octet-stream")
            payload = payload[len(_OCTET_PREFIX) :]
            if len(payload) < 4:
                raise ValueError("truncated encrypted part")
            sig_len = struct.unpack("<i", payload[:4])[0]
            if sig_len < 0 or sig_len > len(payload) - 4:
                raise ValueError("bad signature length")
            plain = self._ctx.unwrap_winrm(payload[4 : 4 + sig_len], payload[4 + sig_len :])
            if len(plain) != expected:
                raise ValueError("encrypted length does not match OriginalContent")
            out += plain
        return out

    def encrypt(self, body: bytes) -> bytes:
        from spnego.exceptions import SpnegoError

        if self._ctx is None or not self.complete:
            raise SpnegoError(context_msg="cannot encrypt before authentication")
        wrapped = self._ctx.wrap_winrm(body)
        return (
            BOUNDARY + b"\r\n"
            b"\tContent-Type: " + PROTOCOL.encode() + b"\r\n"
            b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=" + str(len(body)).encode() + b"\r\n"
            + BOUNDARY + b"\r\n" + _OCTET_PREFIX
            + struct.pack("<i", len(wrapped.header)) + wrapped.header + wrapped.data
            + BOUNDARY + b"--\r\n"
        )  # fmt: skip


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
