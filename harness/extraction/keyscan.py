"""Which files of an image are sniffed for key material, and the key-container directories.

Sniffing every small file of a 200,000-file image would read most of the disk, so candidates are
chosen from the inventory by name and place first:

- anywhere (outside the skipped system stores): a key-like extension (.pfx, .pem, .key, .snk, ...),
  or an OpenSSH-style name (``id_rsa``, ``id_ed25519``, ...);
- in the places people leave secrets (user profiles, ``inetpub``, the volume root,
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
    r"^((users|documents and settings)\\[^\\]+\\((desktop|documents|downloads|my documents|\.ssh)\\|[^\\]+$)"
    r"|inetpub\\|windows\\temp\\|windows\\panther\\|[^\\]+$)|(^|\\)\.ssh\\"
)


def _normal(path: str) -> str:
    return path.lstrip("\\").casefold()


#: NTFS's own metadata files in the volume root (not user data; $Recycle.Bin is, and stays in).
NTFS_METAFILES = frozenset(
    {"$mft", "$mftmirr", "$logfile", "$volume", "$attrdef", "$bitmap", "$boot", "$badclus", "$secure", "$upcase"}
)


def _skipped(path: str) -> bool:
    lowered = _normal(path)
    return lowered.startswith(_SKIP) or bool(_USER_SKIP.match(lowered)) or lowered in NTFS_METAFILES


def is_candidate(path: str, entry: FileEntry) -> bool:
    """The rule above for one file (``candidates`` applies it without walking every path)."""
    if entry.is_dir or entry.size == 0 or _skipped(path):
        return False
    suffix = PurePosixPath(entry.name).suffix.lower()
    if suffix in KEY_EXTENSIONS or OPENSSH_NAME.match(entry.name):
        return True
    return entry.size <= SMALL_FILE and suffix in TEXT_EXTENSIONS and bool(_SECRET_PLACES.search(_normal(path)))


def key_name(name: str) -> bool:
    """A key-like extension or an OpenSSH key name (cheap: called once per name on the volume)."""
    dot = name.rfind(".")
    if dot >= 0 and name[dot:].lower() in KEY_EXTENSIONS:
        return True
    return name[:3].lower() == "id_" and OPENSSH_NAME.match(name) is not None


#: ``key_name`` and ".ssh" folders as Inventory.select patterns (matched against lower-cased names).
KEY_OR_SSH_NAMES = (
    r"\.(?:" + "|".join(re.escape(e[1:]) for e in sorted(KEY_EXTENSIONS)) + r")$",
    r"id_(?:rsa|dsa|ecdsa|ed25519)(?:_sk)?$",  # no "^": a literal prefix searches fastest; is_candidate checks
    r"\.ssh$",
)

#: Places whose small text files are sniffed too: in each profile the profile folder itself, Desktop,
#: Documents, Downloads and .ssh (not AppData: DPAPI and certificate stores there are read as such);
#: inetpub, Windows\Temp and Windows\Panther; any ".ssh" folder; the volume root.
PROFILE_PLACES = ("Desktop", "Documents", "Downloads", "My Documents", ".ssh")
SECRET_FOLDERS = ("inetpub", "Windows\\Temp", "Windows\\Panther")


def _profile_places(inventory: Inventory) -> Iterator[str]:
    for root in ("Users", "Documents and Settings"):
        for profile in inventory.children(root):
            if profile.is_dir:
                yield from (f"{root}\\{profile.name}\\{place}" for place in PROFILE_PLACES)


def candidates(inventory: Inventory) -> Iterator[tuple[str, FileEntry]]:
    """(volume path, entry) of every file worth sniffing, each once.

    Key-like names come from one regex pass over the names; small text files only from the secret places
    (their subtrees, the volume root, ``.ssh`` folders), so a 200,000-file volume costs a few hundred
    milliseconds, not a full path walk.
    """
    seen: set[tuple[int, int]] = set()

    def fresh(path: str, entry: FileEntry) -> bool:
        key = (entry.parent, entry.record)
        if key in seen or not is_candidate(path, entry):
            return False
        seen.add(key)
        return True

    ssh: list[str] = []
    for path, entry in inventory.select(*KEY_OR_SSH_NAMES):
        if entry.is_dir:
            if entry.name.lower() == ".ssh":
                ssh.append(path)
        elif fresh(path, entry):
            yield path, entry
    for place in (*SECRET_FOLDERS, *_profile_places(inventory), *ssh):
        for path, entry in inventory.walk_under(place):
            if fresh(path, entry):
                yield path, entry
    top_level = [("", inventory.root())]  # files lying directly in the volume root or in a profile folder
    for root in ("Users", "Documents and Settings"):
        top_level += [(f"\\{root}\\{p.name}", p) for p in inventory.children(root) if p.is_dir]
    for base, folder in top_level:
        for entry in inventory.children(folder):
            path = f"{base}\\{entry.name}"
            if fresh(path, entry):
                yield path, entry


def sniff(head: bytes, path: str) -> str | None:
    """A key-material label for a file starting with ``head`` (see harness.readers.keysniff)."""
    return keysniff.sniff(head)


# ---- key containers --------------------------------------------------------------------------------

#: Directories holding key containers (CNG "Key Storage and Retrieval"), relative to the volume root.
#: ``*`` = each user profile.
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


def key_containers(inventory: Inventory, allowlist_files: Sequence[str] = ()) -> tuple[Any, ...]:
    """Every file in a key-container directory, classified (allowlisted or not)."""
    from harness.extraction.certs import classify_key_file, load_machine_key_allowlist

    allowlist = load_machine_key_allowlist(tuple(allowlist_files))
    directories: list[str] = []
    for pattern in KEY_DIRECTORIES:
        if pattern.startswith("*\\"):
            directories.extend(f"{profile}\\{pattern[2:]}" for profile in _profiles(inventory))
        else:
            directories.append(pattern)
    found = []
    for directory in directories:
        for path, entry in inventory.walk_under(directory, max_depth=2):
            if entry.is_dir:
                continue
            classified = classify_key_file(path, entry.name, allowlist)
            if classified is not None:
                found.append(classified)
            if len(found) >= _MAX_KEY_FILES:
                return tuple(found)
    return tuple(found)
