"""Which files of an image are sniffed for key material, and the key-container directories (§4.3-4.5).

Sniffing every small file of a 200,000-file image would read most of the disk, so candidates are
chosen from the inventory by name and place first:

- anywhere (outside the skipped system stores): a key-like extension (.pfx, .pem, .key, .snk, ...),
  or an OpenSSH-style name (``id_rsa``, ``id_ed25519``, ...);
- in the places people leave secrets (§4.5: user profiles, ``inetpub``, the volume root,
  ``Windows\\Temp``, ``Windows\\Panther``, any ``.ssh`` folder): also small files with no extension or a
  text-like extension.

Skipped: ``Windows\\WinSxS``, ``Windows\\Installer``, ``Windows\\servicing`` (signed OS payloads),
``$Extend``/``System Volume Information``, and the key-container directories, which are reported by
:func:`key_containers` instead (they are DPAPI blobs, not sniffable formats).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath
from typing import Any

from harness.readers import keysniff
from harness.readers.image.ntfs import FileEntry, Inventory

PREFIX = keysniff.PREFIX
SMALL_FILE = keysniff.SMALL_FILE

KEY_EXTENSIONS = frozenset(
    {
        ".pfx", ".p12", ".pem", ".key", ".pvk", ".snk", ".ppk", ".jks", ".keystore", ".jceks",
        ".publishsettings", ".der", ".p8", ".pk8", ".cer", ".crt", ".p7k",
    }
)  # fmt: skip
TEXT_EXTENSIONS = frozenset({"", ".txt", ".config", ".xml", ".json", ".ini", ".ps1", ".cmd", ".bat", ".env"})
OPENSSH_NAME = re.compile(r"^id_(rsa|dsa|ecdsa|ed25519)(_sk)?$", re.IGNORECASE)

_SKIP = (
    "windows\\winsxs\\",
    "windows\\installer\\",
    "windows\\servicing\\",
    "$extend\\",
    "system volume information\\",
    "programdata\\microsoft\\crypto\\",
    "windows\\system32\\microsoft\\protect\\",
)
_USER_SKIP = re.compile(r"^(users|documents and settings)\\[^\\]+\\appdata\\roaming\\microsoft\\(crypto|protect)\\")
_SECRET_PLACES = re.compile(
    r"^((users|documents and settings)\\|inetpub\\|windows\\temp\\|windows\\panther\\|[^\\]+$)|(^|\\)\.ssh\\"
)


def _normal(path: str) -> str:
    return path.lstrip("\\").casefold()


def is_candidate(path: str, entry: FileEntry) -> bool:
    if entry.is_dir or entry.size == 0:
        return False
    lowered = _normal(path)
    if lowered.startswith(_SKIP) or _USER_SKIP.match(lowered):
        return False
    suffix = PurePosixPath(entry.name).suffix.lower()
    if suffix in KEY_EXTENSIONS or OPENSSH_NAME.match(entry.name):
        return True
    return entry.size <= SMALL_FILE and suffix in TEXT_EXTENSIONS and bool(_SECRET_PLACES.search(lowered))


def candidates(inventory: Inventory) -> Iterator[tuple[str, FileEntry]]:
    """(volume path, entry) of every file worth sniffing, in inventory order."""
    for path, entry in inventory.walk():
        if is_candidate(path, entry):
            yield path, entry


def sniff(head: bytes, path: str) -> str | None:
    """A key-material label for a file starting with ``head`` (see harness.readers.keysniff)."""
    return keysniff.sniff(head)


# ---- key containers --------------------------------------------------------------------------------

#: Directories holding key containers (§4.3), relative to the volume root. ``*`` = each user profile.
KEY_DIRECTORIES = (
    "ProgramData\\Microsoft\\Crypto\\RSA\\MachineKeys",
    "ProgramData\\Microsoft\\Crypto\\DSS\\MachineKeys",
    "ProgramData\\Microsoft\\Crypto\\RSA\\S-1-5-18",
    "ProgramData\\Microsoft\\Crypto\\RSA\\S-1-5-19",
    "ProgramData\\Microsoft\\Crypto\\RSA\\S-1-5-20",
    "ProgramData\\Microsoft\\Crypto\\Keys",
    "ProgramData\\Microsoft\\Crypto\\SystemKeys",
    "Windows\\ServiceProfiles\\LocalService\\AppData\\Roaming\\Microsoft\\Crypto\\Keys",
    "Windows\\ServiceProfiles\\NetworkService\\AppData\\Roaming\\Microsoft\\Crypto\\Keys",
    "*\\AppData\\Roaming\\Microsoft\\Crypto\\RSA",
    "*\\AppData\\Roaming\\Microsoft\\Crypto\\DSS",
    "*\\AppData\\Roaming\\Microsoft\\Crypto\\Keys",
)
_MAX_KEY_FILES = 10_000


def _profiles(inventory: Inventory) -> list[str]:
    out: list[str] = []
    for root in ("Users", "Documents and Settings"):
        entry = inventory.lookup(root)
        if entry is not None and entry.is_dir:
            out.extend(f"{root}\\{child.name}" for child in inventory.children(entry) if child.is_dir)
    return out


def _files_under(inventory: Inventory, directory: str, depth: int) -> Iterator[tuple[str, FileEntry]]:
    entry = inventory.lookup(directory)
    if entry is None or not entry.is_dir:
        return
    for child in inventory.children(entry):
        path = f"{directory}\\{child.name}"
        if child.is_dir:
            if depth > 0:
                yield from _files_under(inventory, path, depth - 1)
        else:
            yield path, child


def key_containers(inventory: Inventory, allowlist_files: Sequence[str] = ()) -> tuple[Any, ...]:
    """Every file in a key-container directory, classified (allowlisted or not)."""
    from harness.facts.image_certs import classify_key_file, load_machine_key_allowlist

    allowlist = load_machine_key_allowlist(tuple(allowlist_files))
    directories: list[str] = []
    for pattern in KEY_DIRECTORIES:
        if pattern.startswith("*\\"):
            directories.extend(f"{profile}\\{pattern[2:]}" for profile in _profiles(inventory))
        else:
            directories.append(pattern)
    found = []
    for directory in directories:
        for path, entry in _files_under(inventory, directory, depth=1):
            classified = classify_key_file(path, entry.name, allowlist)
            if classified is not None:
                found.append(classified)
            if len(found) >= _MAX_KEY_FILES:
                return tuple(found)
    return tuple(found)
