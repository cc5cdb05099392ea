"""Ask for a TLS client certificate, and let any certificate (or none) complete the handshake.

Azure's management endpoint completes the TLS handshake whatever certificate the client presents and answers
``403 ForbiddenError`` over HTTP when the certificate is not one of the subscription's management certificates.
Python's ``ssl`` cannot do that by itself: with ``CERT_OPTIONAL`` it verifies a presented certificate against
the context's CA store and aborts the handshake when the chain does not verify, and it exposes no verify
callback. :func:`accept_any_client_certificate` installs OpenSSL's verify callback on the context's ``SSL_CTX``
through ``ctypes``; the callback accepts every certificate.

What is skipped is the *chain* check only: OpenSSL still checks the client's CertificateVerify signature, so the
client has proven it holds the private key of the certificate ``getpeercert(binary_form=True)`` returns. The
caller must authenticate that certificate itself (``ManagementServer`` compares it with the pinned management
certificates before anything else runs).

Guard rails (fail closed): the callback is installed only through the very ``libssl`` the ``ssl`` module loaded
(same ``OpenSSL_version_num``) and only when the pointer read from the context reads back the context's own
verify mode and options. Otherwise nothing is changed, :func:`accept_any_client_certificate` returns False and
the handshake keeps verifying against the CA store (a foreign certificate then fails the handshake instead of
getting the 403). CPython keeps an installed verify callback when ``verify_mode`` is set again
(``_ssl.c``: ``_set_verify_mode`` passes ``SSL_CTX_get_verify_callback`` back to ``SSL_CTX_set_verify``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import ssl
import threading
from pathlib import Path

log = logging.getLogger("harness.fabric.mgmt")

SSL_VERIFY_PEER = 0x01

_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


def _accept(preverify_ok: int, store_ctx: int | None) -> int:
    return 1


_ACCEPT = _VERIFY_CB(_accept)  # module-level: OpenSSL keeps the pointer for the context's lifetime
_lib_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def _loaded_libssl() -> str | None:
    """The path of the libssl mapped into this process (the one ``_ssl`` uses), or None."""
    maps = Path("/proc/self/maps")
    try:
        for line in maps.read_text("utf-8", "replace").splitlines():
            path = line.split()[-1] if line.split() else ""
            if "/libssl.so" in path:
                return path
    except OSError:
        pass
    return ctypes.util.find_library("ssl")


def _libssl() -> ctypes.CDLL | None:
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        path = _loaded_libssl()
        if path is None:
            return None
        try:
            lib = ctypes.CDLL(path)
            lib.OpenSSL_version_num.restype = ctypes.c_ulong
            lib.OpenSSL_version_num.argtypes = []
            if lib.OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
                log.warning("libssl %s is not the OpenSSL the ssl module uses", path)
                return None
            lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
            lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
            lib.SSL_CTX_get_options.restype = ctypes.c_uint64
            lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
            lib.SSL_CTX_set_verify.restype = None
            lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CB]
        except (OSError, AttributeError):
            log.warning("cannot use libssl %s for the client-certificate callback", path, exc_info=True)
            return None
        _lib = lib
        return lib


def accept_any_client_certificate(ctx: ssl.SSLContext) -> bool:
    """Request a client certificate (``CERT_OPTIONAL``) and accept any at the TLS layer. True when installed;
    False leaves ``ctx`` verifying client certificates against its CA store."""
    if ctx.verify_mode != ssl.CERT_OPTIONAL:
        raise ValueError("accept_any_client_certificate needs a CERT_OPTIONAL context")
    lib = _libssl()
    if lib is None:
        return False
    # PySSLContext starts with PyObject_HEAD, then `SSL_CTX *ctx` (Modules/_ssl.c)
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ptr:
        return False
    if lib.SSL_CTX_get_verify_mode(ptr) != SSL_VERIFY_PEER or lib.SSL_CTX_get_options(ptr) != int(ctx.options):
        log.warning("SSLContext layout not recognised: client certificates stay verified against the CA")
        return False
    lib.SSL_CTX_set_verify(ptr, SSL_VERIFY_PEER, _ACCEPT)
    return True
