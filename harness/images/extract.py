"""Image facts from image bytes: container → partitions → NTFS → hives and files → ImageFacts.

Runs inside the worker process (harness.images.worker). Reads only what the rules need: one pass over
the MFT, the hives, a few small files by path, and the first bytes of key-material candidates. A part
that cannot be read becomes an ImageProblem and the rest is still read; only an image with no readable
container or partition table is Unreadable as a whole.
"""

from __future__ import annotations

import configparser
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.facts.image import (
    HIVES_FOR_PART,
    CertificateEntry,
    ControlSet,
    ImageFacts,
    ImageProblem,
    KeyMaterialFile,
    OsInfo,
    RemoteAccessInfo,
    SysprepInfo,
    VolumeInfo,
    WinlogonInfo,
)
from harness.images import keyscan
from harness.readers.errors import Unreadable
from harness.readers.image.container import open_disk
from harness.readers.image.ntfs import FileEntry, Inventory, NtfsVolume
from harness.readers.image.partitions import Partition, PartitionTable, read_partitions
from harness.readers.image.regf import DIRTY_NOTE, Hive, Key
from harness.readers.image.regf import values_of as regf_values_of
from harness.readers.image.source import FileSource

Progress = Callable[[str], None]

#: Largest hive read into memory (a real SOFTWARE hive is 20-120 MiB).
MAX_HIVE = 256 * 1024 * 1024
#: Largest small text file (answer file, State.ini, log) read.
MAX_TEXT = 4 * 1024 * 1024
#: How much of a key-material candidate is hashed for its fingerprint.
FINGERPRINT_BYTES = 1024 * 1024

CONFIG = "Windows\\System32\\config"


@dataclass(frozen=True)
class ExtractOptions:
    """Inputs besides the image: user signature files and allowlists (paths), read in the worker."""

    signature_files: tuple[str, ...] = ()
    machine_key_allowlists: tuple[str, ...] = ()


def _noop(_: str) -> None:
    return None


class _Reader:
    """State for one extraction: the volume, its inventory, hives, and the problems met."""

    def __init__(self, path: Path, progress: Progress) -> None:
        self.path = path
        self.progress = progress
        self.problems: list[ImageProblem] = []
        self.parts: set[str] = set()
        self.stats: dict[str, float] = {}
        self.volume: NtfsVolume | None = None
        self.inventory: Inventory | None = None
        self.hives: dict[str, Hive | None] = {}

    # ---- bookkeeping ---------------------------------------------------------------------------
    def stage(self, text: str) -> None:
        self.progress(text)

    def problem(self, part: str, path: str, exc: Unreadable | str) -> None:
        text = exc if isinstance(exc, str) else (exc.problem + (f" (at {exc.location})" if exc.location else ""))
        self.problems.append(ImageProblem(part=part, path=path, problem=text))

    # ---- files ---------------------------------------------------------------------------------
    def entry(self, path: str) -> FileEntry | None:
        assert self.inventory is not None
        return self.inventory.lookup(path)

    def exists(self, path: str) -> bool:
        return self.inventory is not None and self.inventory.lookup(path) is not None

    def read(self, entry: FileEntry, limit: int) -> bytes:
        assert self.volume is not None
        return self.volume.read_file(entry, limit)

    def read_text(self, path: str, part: str) -> str | None:
        entry = self.entry(path)
        if entry is None or entry.is_dir:
            return None
        try:
            data = self.read(entry, MAX_TEXT)
        except Unreadable as exc:
            self.problem(part, "\\" + path, exc)
            return None
        return decode_text(data)

    def children(self, path: str) -> list[FileEntry]:
        assert self.inventory is not None
        entry = self.inventory.lookup(path)
        if entry is None or not entry.is_dir:
            return []
        return list(self.inventory.children(entry))

    # ---- hives ---------------------------------------------------------------------------------
    def hive(self, name: str, path: str | None = None) -> Hive | None:
        """A hive by its config name (SYSTEM, SOFTWARE) or an explicit volume path."""
        key = path or name
        if key in self.hives:
            return self.hives[key]
        vol_path = path or f"{CONFIG}\\{name}"
        part = f"{name} hive"
        hive: Hive | None = None
        entry = self.entry(vol_path)
        if entry is None:
            self.problem(part, "\\" + vol_path, "missing")
        elif entry.size > MAX_HIVE:
            self.problem(part, "\\" + vol_path, f"{entry.size:,} bytes is over the {MAX_HIVE:,}-byte limit")
        else:
            self.stage(f"reading the {part} (\\{vol_path})")
            started = time.perf_counter()
            try:
                hive = Hive(self.read(entry, MAX_HIVE), f"{name} hive")
                damage = [n for n in hive.notes if n != DIRTY_NOTE] + hive.check_cells()
                if damage:
                    self.problem(part, "\\" + vol_path, "; ".join(damage[:3]))
            except Unreadable as exc:
                self.problem(part, "\\" + vol_path, exc)
            self.stats[f"hive {name} s"] = time.perf_counter() - started
        self.hives[key] = hive
        return hive


def decode_text(data: bytes) -> str:
    """Text from a Windows file: UTF-16 with a BOM, UTF-8 (with or without BOM), else Latin-1."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    if len(data) >= 4 and data[1] == 0 and data[3] == 0 and data[0] != 0:
        return data.decode("utf-16-le", errors="replace")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def values_of(key: Key | None) -> dict[str, Any]:
    """A key's values by lower-cased name (as Python values); {} for a missing key."""
    return regf_values_of(key, lowercase=True)


def _str(value: Any) -> str | None:
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return None


# ---- container and volume ------------------------------------------------------------------------


def _ntfs_partitions(table: PartitionTable, disk: Any) -> Iterator[tuple[Partition, Any]]:
    for part in table.partitions:
        source = table.source(disk, part)
        head = source.read_at(0, 512)
        if head[3:11] == b"NTFS    ":
            yield part, source


MAX_NOTES_SHOWN = 3
#: Reader notes that are not damage (a bare volume), or that a rule of their own reports (VMR010: footer).
BENIGN_NOTES = (
    "no partition table: the disk is one NTFS volume",
    "VHD footer checksum mismatch",
    "the footer copy at offset 0 differs",
    "no footer copy at offset 0",
)


def _note_problems(reader: _Reader, part: str, notes: Any, where: str = "") -> None:
    """Anomalies a reader noted but read past (an MFT loop, a GPT backup header in use): one problem per part."""
    notes = [str(n) for n in notes if not str(n).startswith(BENIGN_NOTES)]
    if not notes:
        return
    text = "; ".join(notes[:MAX_NOTES_SHOWN])
    if len(notes) > MAX_NOTES_SHOWN:
        text += f"; and {len(notes) - MAX_NOTES_SHOWN} more"
    reader.problem(part, where, text)


def extract(path: Path, options: ExtractOptions | None = None, progress: Progress = _noop) -> ImageFacts:
    """Read the image at ``path``. Raises Unreadable only when nothing at all can be read."""
    options = options or ExtractOptions()
    reader = _Reader(path, progress)
    started = time.perf_counter()
    bytes_before = FileSource.total_bytes_read
    progress("reading the container")
    disk = open_disk(path)
    try:
        progress("reading the partition table")
        table = read_partitions(disk)
        reader.parts.update({"container", "partitions"})
        _note_problems(reader, "container", disk.info.notes)
        _note_problems(reader, "partition table", table.notes)
        volume_info = _open_windows_volume(reader, table, disk)
        facts = ImageFacts(container=disk.info, partitions=table, volume=volume_info)
        if reader.exists(f"{CONFIG}\\SYSTEM") or reader.exists(f"{CONFIG}\\SOFTWARE"):
            facts = _windows_facts(reader, facts, options)
    finally:
        disk.close()
    reader.stats["total s"] = time.perf_counter() - started
    reader.stats["bytes read"] = float(FileSource.total_bytes_read - bytes_before)
    from dataclasses import replace

    return replace(
        facts,
        problems=tuple(reader.problems),
        parts_read=frozenset(reader.parts),
        stats=dict(reader.stats),
    )


def _open_windows_volume(reader: _Reader, table: PartitionTable, disk: Any) -> VolumeInfo | None:
    """The first NTFS volume holding a Windows directory (else the first NTFS volume)."""
    chosen: tuple[Partition, NtfsVolume, Inventory] | None = None
    for part, source in _ntfs_partitions(table, disk):
        reader.stage(f"reading the NTFS volume in partition {part.index}")
        started = time.perf_counter()
        try:
            volume = NtfsVolume(source)
            inventory = volume.inventory()
        except Unreadable as exc:
            reader.problem("NTFS volume", f"partition {part.index}", exc)
            continue
        reader.stats["mft s"] = time.perf_counter() - started
        if chosen is None or inventory.lookup(f"{CONFIG}\\SYSTEM") is not None:
            chosen = (part, volume, inventory)
        if inventory.lookup(f"{CONFIG}\\SYSTEM") is not None:
            break
    if chosen is None:
        if not reader.problems:
            reader.problem("NTFS volume", "", "no NTFS volume in the image")
        return None
    part, volume, inventory = chosen
    reader.volume, reader.inventory = volume, inventory
    _note_problems(reader, "NTFS volume", [*volume.notes, *inventory.notes], f"partition {part.index}")
    reader.parts.add("volume")
    return VolumeInfo(
        partition_index=part.index,
        partition_style=table.style,
        offset=part.start,
        size=part.size,
        label=volume.label,
        cluster_size=volume.cluster_size,
        file_count=inventory.file_count,
        dir_count=inventory.dir_count,
        notes=tuple(inventory.notes),
    )


# ---- Windows --------------------------------------------------------------------------------------


def _windows_facts(reader: _Reader, facts: ImageFacts, options: ExtractOptions) -> ImageFacts:
    from dataclasses import replace

    system = reader.hive("SYSTEM")
    software = reader.hive("SOFTWARE")
    control_set = _control_set(reader, system)
    cs_key = control_set.key if control_set else None
    updates: dict[str, Any] = {"windows_found": True, "control_set": control_set}
    sections: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("os", lambda: {"os": _os_info(reader, system, software, cs_key)}),
        ("services", lambda: {"services": _services(system, cs_key)}),
        ("products", lambda: {"products": _products(software)}),
        ("sysprep", lambda: {"sysprep": _sysprep(reader, system, software)}),
        ("answer files", lambda: _answer_files(reader, system)),
        ("winlogon", lambda: {"winlogon": _winlogon(software)}),
        ("remote access", lambda: {"remote_access": _remote_access(system, cs_key)}),
        ("firewall", lambda: {"firewall": _firewall(reader, system, software, cs_key)}),
        ("users", lambda: {"user_profiles": _user_profiles(reader)}),
        ("key containers", lambda: {"key_containers": _key_containers(reader, options)}),
        ("certificates", lambda: {"certificates": _certificates(reader, software, updates)}),
        ("key material", lambda: {"key_material": _key_material(reader)}),
        ("signatures", lambda: {"signature_matches": _signatures(reader, options, updates)}),
    ]
    for part, build in sections:
        reader.stage(f"reading {part}")
        started = time.perf_counter()
        try:
            result = build()
        except Unreadable as exc:
            reader.problem(part, exc.location or "", exc)
            continue
        reader.stats[f"{part} s"] = time.perf_counter() - started
        if _needs_missing_hive(part, system, software):
            continue
        updates.update(result)
        reader.parts.add(part)
    return replace(facts, **updates)


def _needs_missing_hive(part: str, system: Hive | None, software: Hive | None) -> bool:
    needed = HIVES_FOR_PART.get(part, ())
    return ("SYSTEM" in needed and system is None) or ("SOFTWARE" in needed and software is None)


def _control_set(reader: _Reader, system: Hive | None) -> ControlSet | None:
    if system is None:
        return None
    try:
        select = values_of(system.key("Select"))
    except Unreadable as exc:
        reader.problem("SYSTEM hive", "Select", exc)
        return None
    current, default = _int(select.get("current")), _int(select.get("default"))
    number = default if default else current
    if number is not None and system.key(f"ControlSet{number:03d}") is None:
        number = current if current and system.key(f"ControlSet{current:03d}") is not None else None
    if number is None and system.key("ControlSet001") is not None:
        number = 1
    return ControlSet(number, current, default, _int(select.get("lastknowngood")))


_ARCH = {"amd64": "x64", "x86": "x86", "arm64": "arm64", "ia64": "ia64"}
_PE_MACHINE = {0x8664: "x64", 0x14C: "x86", 0xAA64: "arm64", 0x200: "ia64"}


def _pe_machine(data: bytes) -> str | None:
    if len(data) < 0x40 or data[:2] != b"MZ":
        return None
    pe = int.from_bytes(data[0x3C:0x40], "little")
    if pe + 6 > len(data) or data[pe : pe + 4] != b"PE\0\0":
        return None
    return _PE_MACHINE.get(int.from_bytes(data[pe + 4 : pe + 6], "little"))


def _os_info(reader: _Reader, system: Hive | None, software: Hive | None, cs_key: str | None) -> OsInfo | None:
    if software is None:
        return None
    cv = values_of(software.key("Microsoft\\Windows NT\\CurrentVersion"))
    product_type = arch = arch_source = None
    if system is not None and cs_key:
        product_type = _str(values_of(system.key(f"{cs_key}\\Control\\ProductOptions")).get("producttype"))
        env = values_of(system.key(f"{cs_key}\\Control\\Session Manager\\Environment"))
        raw = _str(env.get("processor_architecture"))
        if raw:
            arch, arch_source = _ARCH.get(raw.lower(), raw), "PROCESSOR_ARCHITECTURE"
    if arch is None:
        for candidate in ("Windows\\System32\\ntoskrnl.exe", "Windows\\System32\\cmd.exe"):
            entry = reader.entry(candidate)
            if entry is not None and not entry.is_dir:
                try:
                    arch = _pe_machine(reader.read(entry, 4096))
                except Unreadable:
                    arch = None
                if arch:
                    arch_source = f"PE header of \\{candidate}"
                    break
    return OsInfo(
        product_name=_str(cv.get("productname")),
        current_version=_str(cv.get("currentversion")),
        build=_str(cv.get("currentbuildnumber")) or _str(cv.get("currentbuild")),
        edition_id=_str(cv.get("editionid")),
        installation_type=_str(cv.get("installationtype")),
        service_pack=_str(cv.get("csdversion")),
        product_type=product_type,
        architecture=arch,
        architecture_source=arch_source,
    )


def _services(system: Hive | None, cs_key: str | None) -> tuple[Any, ...]:
    from harness.facts.image_signatures import ServiceInfo

    if system is None or cs_key is None:
        return ()
    root = system.key(f"{cs_key}\\Services")
    if root is None:
        return ()
    out = []
    for key in root.subkeys():
        v = values_of(key)
        out.append(
            ServiceInfo(
                name=key.name,
                display_name=_str(v.get("displayname")),
                image_path=_str(v.get("imagepath")),
                start=_int(v.get("start")),
                type=_int(v.get("type")),
                object_name=_str(v.get("objectname")),
            )
        )
    return tuple(out)


_UNINSTALL_ROOTS = (
    "Microsoft\\Windows\\CurrentVersion\\Uninstall",
    "Wow6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall",
)


def _products(software: Hive | None) -> tuple[Any, ...]:
    from harness.facts.image_signatures import ProductInfo

    if software is None:
        return ()
    out = []
    for root_path in _UNINSTALL_ROOTS:
        root = software.key(root_path)
        for key in root.subkeys() if root is not None else ():
            v = values_of(key)
            out.append(
                ProductInfo(
                    source="uninstall",
                    key=f"HKLM\\SOFTWARE\\{root_path}\\{key.name}",
                    display_name=_str(v.get("displayname")),
                    publisher=_str(v.get("publisher")),
                    version=_str(v.get("displayversion")),
                    install_location=_str(v.get("installlocation")),
                )
            )
    products = software.key("Classes\\Installer\\Products")
    for key in products.subkeys() if products is not None else ():
        v = values_of(key)
        out.append(
            ProductInfo(
                source="msi",
                key=f"HKLM\\SOFTWARE\\Classes\\Installer\\Products\\{key.name}",
                display_name=_str(v.get("productname")),
                publisher=None,
                version=None,
                install_location=None,
            )
        )
    return tuple(out)


def _sysprep(reader: _Reader, system: Hive | None, software: Hive | None) -> SysprepInfo:
    setup = values_of(system.key("Setup")) if system is not None else {}
    status = values_of(system.key("Setup\\Status\\SysprepStatus")) if system is not None else {}
    state_key = software.key("Microsoft\\Windows\\CurrentVersion\\Setup\\State") if software is not None else None
    ini_text = reader.read_text("Windows\\Setup\\State\\State.ini", "State.ini")
    ini_state = None
    if ini_text is not None:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            parser.read_string(ini_text)
            ini_state = parser.get("State", "ImageState", fallback=None)
        except configparser.Error as exc:
            reader.problem("State.ini", "\\Windows\\Setup\\State\\State.ini", f"not an INI file: {exc.message}")
    errors = 0
    log = reader.read_text("Windows\\System32\\Sysprep\\Panther\\setuperr.log", "sysprep log")
    if log:
        errors = sum(1 for line in log.splitlines() if ", error" in line.lower() or "[0x0" in line.lower())
    panther = tuple(f"\\Windows\\Panther\\{e.name}" for e in reader.children("Windows\\Panther") if not e.is_dir)
    return SysprepInfo(
        image_state_registry=_str(values_of(state_key).get("imagestate")),
        image_state_ini=ini_state.strip() if ini_state else None,
        state_ini_found=ini_text is not None,
        system_setup_in_progress=_int(setup.get("systemsetupinprogress")),
        oobe_in_progress=_int(setup.get("oobeinprogress")),
        setup_type=_int(setup.get("setuptype")),
        cmdline=_str(setup.get("cmdline")),
        unattend_file=_str(setup.get("unattendfile")),
        generalization_state=_int(status.get("generalizationstate")),
        succeeded_tag=reader.exists("Windows\\System32\\Sysprep\\Sysprep_succeeded.tag"),
        setuperr_error_lines=errors,
        panther_files=panther,
    )


def _answer_files(reader: _Reader, system: Hive | None) -> dict[str, Any]:
    from harness.facts.image_unattend import answer_file_candidates, parse_answer_file

    registry_value = _str(values_of(system.key("Setup")).get("unattendfile")) if system is not None else None
    found: list[Any] = []
    order: list[tuple[int, str]] = []
    seen: set[str] = set()
    for position, path in answer_file_candidates(registry_value):
        volume_path = path.replace("/", "\\").lstrip("\\")
        entry = reader.entry(volume_path)
        if entry is None or entry.is_dir:
            continue
        shown = "\\" + reader.inventory.path_of(entry).lstrip("\\") if reader.inventory else "\\" + volume_path
        if shown.lower() in seen:
            continue
        seen.add(shown.lower())
        try:
            data = reader.read(entry, MAX_TEXT)
        except Unreadable as exc:
            reader.problem("answer file", shown, exc)
            continue
        found.append(parse_answer_file(data, shown))
        order.append((position, shown))
    return {"answer_files": tuple(found), "answer_file_order": tuple(order)}


def _winlogon(software: Hive | None) -> WinlogonInfo | None:
    if software is None:
        return None
    key = software.key("Microsoft\\Windows NT\\CurrentVersion\\Winlogon")
    present = False
    if key is not None:
        value = key.value("DefaultPassword")
        present = value is not None and bool(value.data.replace(b"\0", b""))
    v = values_of(key)
    return WinlogonInfo(
        default_password_present=present,
        auto_admin_logon=_str(v.get("autoadminlogon")),
        default_user_name=_str(v.get("defaultusername")),
    )


def _remote_access(system: Hive | None, cs_key: str | None) -> RemoteAccessInfo | None:
    if system is None or cs_key is None:
        return None
    ts = values_of(system.key(f"{cs_key}\\Control\\Terminal Server"))
    rdp = values_of(system.key(f"{cs_key}\\Control\\Terminal Server\\WinStations\\RDP-Tcp"))
    return RemoteAccessInfo(
        deny_ts_connections=_int(ts.get("fdenytsconnections")),
        rdp_port=_int(rdp.get("portnumber")),
        user_authentication=_int(rdp.get("userauthentication")),
    )


def _firewall(reader: _Reader, system: Hive | None, software: Hive | None, cs_key: str | None) -> Any:
    from harness.images.firewall_input import firewall_policy

    if system is None or cs_key is None:
        return None
    return firewall_policy(system, software, cs_key)


def _user_profiles(reader: _Reader) -> tuple[str, ...]:
    names = []
    for root in ("Users", "Documents and Settings"):
        for entry in reader.children(root):
            if entry.is_dir and reader.exists(f"{root}\\{entry.name}\\NTUSER.DAT"):
                names.append(f"{root}\\{entry.name}")
    return tuple(names)


def _key_containers(reader: _Reader, options: ExtractOptions) -> tuple[Any, ...]:
    assert reader.inventory is not None
    return keyscan.key_containers(reader.inventory, options.machine_key_allowlists)


def _certificates(reader: _Reader, software: Hive | None, facts: dict[str, Any]) -> tuple[CertificateEntry, ...]:
    from harness.images.certstores import certificates

    assert reader.inventory is not None
    user_hives: list[tuple[str, Hive]] = []
    for profile in facts.get("user_profiles", ()):
        hive = reader.hive(f"NTUSER.DAT of {profile}", f"{profile}\\NTUSER.DAT")
        if hive is not None:
            user_hives.append((profile, hive))
    return certificates(reader, software, user_hives, facts.get("key_containers", ()))


def _key_material(reader: _Reader) -> tuple[KeyMaterialFile, ...]:
    assert reader.inventory is not None
    found = []
    for path, entry in keyscan.candidates(reader.inventory):
        try:
            head = reader.read(entry, keyscan.PREFIX)
        except Unreadable as exc:
            reader.problem("key material scan", path, exc)
            continue
        label = keyscan.sniff(head, path)
        if label is None:
            continue
        try:
            body = head if entry.size <= len(head) else reader.read(entry, FINGERPRINT_BYTES)
        except Unreadable:
            body = head
        found.append(
            KeyMaterialFile(
                path=path,
                label=label,
                size=entry.size,
                fingerprint=hashlib.sha256(body[:FINGERPRINT_BYTES]).hexdigest()[:16],
            )
        )
    return tuple(found)


def _signatures(reader: _Reader, options: ExtractOptions, facts: dict[str, Any]) -> tuple[Any, ...]:
    from harness.images.sigmatch import match_image_signatures

    assert reader.inventory is not None
    return match_image_signatures(
        reader.inventory,
        services=facts.get("services", ()),
        products=facts.get("products", ()),
        signature_files=options.signature_files,
    )
