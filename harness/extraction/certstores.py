"""Certificate stores of an offline image: registry stores and file-based user stores.

Each certificate becomes a CertificateEntry with its public facts and whether it claims a private key
(KEY_PROV_INFO). The key container named there is resolved to a file among the image's key-container
files (harness.extraction.keyscan) by the CAPI name hint; CNG containers are matched by name when the
file carries it. No key material is read or kept.

This module walks the stores; each entry's bytes are parsed and summarised by harness.extraction.certs
(blob, KEY_PROV_INFO, DER summary, key-file classification) into harness.facts.image_certs data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from harness.extraction.certs import certificate_summary, key_files_for_container, parse_cert_blob
from harness.facts.image import CertificateEntry
from harness.facts.image_certs import KeyContainerFile
from harness.readers.errors import Unreadable
from harness.readers.image.regf import Hive, Key

MAX_CERTS_PER_STORE = 5000
MAX_BLOB_FILE = 1024 * 1024

#: (location label, key path in the SOFTWARE hive holding stores)
MACHINE_STORE_ROOTS = (
    ("LocalMachine", "Microsoft\\SystemCertificates"),
    ("GroupPolicy", "Policies\\Microsoft\\SystemCertificates"),
    ("Enterprise", "Microsoft\\EnterpriseCertificates"),
)
SERVICE_STORES = "Microsoft\\Cryptography\\Services"
USER_STORE_ROOT = "Software\\Microsoft\\SystemCertificates"
USER_FILE_STORE = "AppData\\Roaming\\Microsoft\\SystemCertificates\\My\\Certificates"

#: Wraps the read of one store root: ``with guard(hive, key_path): ...`` (the extractor names damage met inside).
Guard = Callable[[Hive, str], contextlib.AbstractContextManager[None]]


def _unguarded(hive: Hive, path: str) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def _stores(root: Key | None) -> Iterator[tuple[str, Key]]:
    if root is None:
        return
    for store in root.subkeys():
        certs = store.subkey("Certificates")
        if certs is not None:
            yield store.name, certs


def _entry(
    location: str, store: str, source: str, thumbprint: str, blob: bytes, key_files: Sequence[KeyContainerFile]
) -> CertificateEntry:
    parsed = parse_cert_blob(blob)
    summary = certificate_summary(parsed.der) if parsed.der is not None else None
    kpi = parsed.key_prov_info
    key_file = None
    if kpi is not None and kpi.container_name:
        matches = key_files_for_container(kpi.container_name, key_files)
        if not matches:
            lowered = kpi.container_name.lower()
            matches = [f for f in key_files if f.name.lower() == lowered]
        key_file = "\\" + matches[0].path.lstrip("\\") if matches else None
    problems = list(parsed.problems)
    if summary is not None and summary.problem:
        problems.append(summary.problem)
    if parsed.der is None:
        problems.append("the blob holds no certificate (property 0x20)")
    return CertificateEntry(
        location=location,
        store=store,
        source=source,
        thumbprint=thumbprint.upper(),
        subject=summary.subject if summary else None,
        issuer=summary.issuer if summary else None,
        not_after=summary.not_after if summary else None,
        claims_private_key=parsed.has_key_reference,
        container=kpi.container_name if kpi else None,
        provider=kpi.provider_name if kpi else None,
        machine_keyset=kpi.machine_keyset if kpi else None,
        key_file=key_file,
        problems=tuple(problems),
    )


def _registry_certs(
    location: str, hive_name: str, root_path: str, root: Key | None, key_files: Sequence[KeyContainerFile]
) -> Iterator[CertificateEntry]:
    for store, certs in _stores(root):
        for index, cert_key in enumerate(certs.subkeys()):
            if index >= MAX_CERTS_PER_STORE:
                break
            value = cert_key.value("Blob")
            if value is None:
                continue
            source = f"{hive_name}\\{root_path}\\{store}\\Certificates\\{cert_key.name}"
            yield _entry(location, store, source, cert_key.name, value.data, key_files)


def certificates(
    reader: Any,
    software: Hive | None,
    user_hives: Sequence[tuple[str, Hive]],
    key_files: Sequence[KeyContainerFile],
    *,
    guard: Guard = _unguarded,
) -> tuple[CertificateEntry, ...]:
    """Every certificate of the image's machine, service and user stores. Each store root is read under
    ``guard(hive, key path)``, so that damage is reported naming the hive and the store."""
    found: list[CertificateEntry] = []
    if software is not None:
        for location, path in MACHINE_STORE_ROOTS:
            with guard(software, path):
                found.extend(_registry_certs(location, "HKLM\\SOFTWARE", path, software.key(path), key_files))
        with guard(software, SERVICE_STORES):
            services = software.key(SERVICE_STORES)
            service_keys = services.subkeys() if services is not None else []
        for service in service_keys:
            path = f"{SERVICE_STORES}\\{service.name}\\SystemCertificates"
            with guard(software, path):
                root = service.subkey("SystemCertificates")
                found.extend(_registry_certs(f"Service:{service.name}", "HKLM\\SOFTWARE", path, root, key_files))
    for profile, hive in user_hives:
        label = f"User:{profile.rsplit(chr(92), 1)[-1]}"
        hive_name = f"{profile}\\NTUSER.DAT"
        with guard(hive, USER_STORE_ROOT):
            root = hive.key(USER_STORE_ROOT)
            found.extend(_registry_certs(label, hive_name, USER_STORE_ROOT, root, key_files))
        for entry in reader.children(f"{profile}\\{USER_FILE_STORE}"):
            if entry.is_dir or entry.size > MAX_BLOB_FILE:
                continue
            path = f"\\{profile}\\{USER_FILE_STORE}\\{entry.name}"
            try:
                blob = reader.read(entry, MAX_BLOB_FILE)
            except Unreadable as exc:
                reader.problem("certificate store", path, exc)
                continue
            found.append(_entry(label, "My", path, entry.name, blob, key_files))
    return tuple(found)
