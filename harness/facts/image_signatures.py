"""Signatures of the VM-role integration components and the Azure VM agent.

The signals are data: the shipped ``harness/data/image-signatures.yml``, extended by user files
(``--vmr-signatures PATH``). :func:`load_signatures` validates them (a bad file or entry is a
:class:`SignatureError` naming the file and the entry); :func:`match_signatures` applies them to
facts a reader extracted: services, installed products, and a file inventory reached through two
callables, so this module never touches the image.

Path patterns compile to a literal directory prefix plus a regular expression
(:func:`compile_glob`): the matcher asks the inventory only for what lies under the prefix, so a
pattern such as ``WindowsAzure/GuestAgent_*/WindowsAzureGuestAgent.exe`` never walks the volume.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml

PROFILE_VMROLE = "vmrole"
PROFILE_AZURE = "azure"
KINDS = ("service", "product", "path")
STRENGTHS = ("strong", "weak")
PRODUCT_SOURCES = ("uninstall", "uninstall-wow64", "msi")
#: Service start types (the ``Start`` DWORD).
START_TYPES = {"boot": 0, "system": 1, "auto": 2, "demand": 3, "manual": 3, "disabled": 4}
_START_NAMES = {0: "boot", 1: "system", 2: "auto", 3: "demand", 4: "disabled"}

MAX_SIGNATURE_FILE = 1 << 20
MAX_SIGNATURES = 2000
MAX_REGEX = 1000
#: Strings from the image are cut to this length before a regex sees them (bounds matching time).
MAX_SUBJECT = 4096
#: At most this many paths from one ``list_glob`` call are looked at.
MAX_LISTED = 1_000_000
#: Paths kept as evidence per matched pattern.
MAX_EVIDENCE = 5

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_PROFILE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_COMMON_KEYS = {"id", "profile", "kind", "description", "strength", "confirmed", "enabled"}
_KIND_KEYS = {
    "service": {"name", "display_name", "image_path", "start"},
    "product": {"display_name", "publisher", "sources"},
    "path": {"paths"},
}
_MATCH_KEYS = {"service": ("name", "display_name", "image_path"), "product": ("display_name", "publisher")}


# ---- facts the matcher reads (readers fill these) ----------------------------------------------------


@dataclass(frozen=True)
class ServiceInfo:
    """A ``Services\\<name>`` key: the values rules care about, as the hive holds them."""

    name: str
    display_name: str | None = None
    image_path: str | None = None
    start: int | None = None  # 0 boot, 1 system, 2 auto, 3 demand, 4 disabled
    type: int | None = None  # 0x10 own process, 0x20 shared process, 1/2 drivers, ...
    object_name: str | None = None  # the account: LocalSystem, NT AUTHORITY\NetworkService, ...


@dataclass(frozen=True)
class ProductInfo:
    """An installed product: an ``Uninstall\\<key>`` entry (``source`` "uninstall", or
    "uninstall-wow64" under Wow6432Node) or an MSI registration (``source`` "msi", ``key`` the packed
    GUID, ``display_name`` its ProductName)."""

    source: str
    key: str
    display_name: str | None = None
    publisher: str | None = None
    version: str | None = None
    install_location: str | None = None


# ---- path patterns -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GlobPattern:
    """A compiled volume path pattern.

    ``prefix``: the leading folders without wildcards, volume-relative with backslashes ("" = the
    volume root). ``literal``: no wildcard at all, so one existence check of ``prefix`` (the whole
    path) answers it. ``subtree``: the pattern is ``X/**``, answered by the existence of ``X``.
    Otherwise :meth:`matches` decides, on paths listed below ``prefix``.
    """

    pattern: str
    prefix: str
    #: Full-matches "/" + the "/"-separated volume-relative path, case-insensitively.
    regex: re.Pattern[str]
    literal: bool = False
    subtree: bool = False

    def matches(self, path: str) -> bool:
        return self.regex.fullmatch("/" + normalise_path(path)) is not None


def normalise_path(path: str) -> str:
    """A volume path as "a/b/c": "/" separators, no drive letter, no leading or trailing separator."""
    text = path.replace("\\", "/")
    text = re.sub(r"^[A-Za-z]:", "", text)
    return re.sub(r"/+", "/", text).strip("/")


def _component_regex(component: str) -> str:
    out = []
    for char in component:
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(char))
    return "".join(out)


def compile_glob(pattern: str) -> GlobPattern:
    """Compile a pattern (see the module docs). Raises ``ValueError`` for an empty pattern or one
    that would match the whole volume (``**``)."""
    parts = normalise_path(pattern).split("/") if normalise_path(pattern) else []
    if not parts:
        raise ValueError("empty path pattern")
    if parts == ["**"]:
        raise ValueError("'**' alone matches every path on the volume")
    literal_parts: list[str] = []
    for part in parts:
        if "*" in part or "?" in part:
            break
        literal_parts.append(part)
    regex = []
    for index, part in enumerate(parts):
        if part == "**":
            # Last: the folder itself or anything below it. Elsewhere: any number of folders.
            regex.append("(?:/.*)?" if index == len(parts) - 1 else "(?:/[^/]+)*")
        else:
            regex.append("/" + _component_regex(part))
    return GlobPattern(
        pattern=pattern,
        prefix="\\".join(literal_parts),
        regex=re.compile("".join(regex), re.IGNORECASE | re.DOTALL),
        literal=len(literal_parts) == len(parts),
        subtree=parts[len(literal_parts) :] == ["**"],
    )


# ---- signatures --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """One signal. Only the fields of its ``kind`` are set."""

    id: str
    profile: str
    kind: Literal["service", "product", "path"]
    description: str = ""
    strength: Literal["strong", "weak"] = "strong"
    confirmed: bool = False
    #: service: name / display_name / image_path; product: display_name / publisher.
    patterns: tuple[tuple[str, re.Pattern[str]], ...] = ()
    start_types: frozenset[int] = frozenset()  # service: empty = any start type
    sources: frozenset[str] = frozenset()  # product: empty = any source
    paths: tuple[GlobPattern, ...] = ()  # path
    source: str = ""  # the file it came from


@dataclass(frozen=True)
class SignatureSet:
    signatures: tuple[Signature, ...] = ()

    @property
    def profiles(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.profile for s in self.signatures))

    def for_profile(self, profile: str) -> SignatureSet:
        return SignatureSet(tuple(s for s in self.signatures if s.profile == profile))

    def get(self, signature_id: str) -> Signature | None:
        return next((s for s in self.signatures if s.id == signature_id), None)


class SignatureError(Exception):
    """A signature file cannot be used; the message names the file and the bad entry."""


def _start_types(value: object, where: str) -> frozenset[int]:
    if not isinstance(value, list) or not value:
        raise SignatureError(f"{where}: 'start' must be a non-empty list of start types")
    types = set()
    for item in value:
        if isinstance(item, bool):
            item = str(item)
        if isinstance(item, int) and 0 <= item <= 4:
            types.add(item)
        elif isinstance(item, str) and item.strip().lower() in START_TYPES:
            types.add(START_TYPES[item.strip().lower()])
        else:
            raise SignatureError(f"{where}: start type {item!r} is not one of {', '.join(START_TYPES)} or 0-4")
    return frozenset(types)


def _regex(value: object, key: str, where: str) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise SignatureError(f"{where}: '{key}' must be a non-empty regular expression string")
    if len(value) > MAX_REGEX:
        raise SignatureError(f"{where}: '{key}' is longer than {MAX_REGEX} characters")
    try:
        return re.compile(value, re.IGNORECASE)
    except re.error as exc:
        raise SignatureError(f"{where}: '{key}' is not a valid regular expression ({exc})") from None


def _signature(entry: dict[object, object], where: str, source: str) -> tuple[str, Signature | None]:
    """(id, signature), signature None for ``enabled: false``."""
    sig_id = entry.get("id")
    if not isinstance(sig_id, str) or not _ID.fullmatch(sig_id):
        raise SignatureError(f"{where}: 'id' is required (letters, digits, '.', '_', '-')")
    where = f"{where} ({sig_id})"
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SignatureError(f"{where}: 'enabled' must be true or false")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise SignatureError(f"{where}: 'kind' must be one of {', '.join(KINDS)}")
    unknown = set(map(str, entry)) - _COMMON_KEYS - _KIND_KEYS[str(kind)]
    if unknown:
        raise SignatureError(f"{where}: unknown keys for kind {kind}: {sorted(unknown)}")
    if not enabled:
        return sig_id, None
    profile = entry.get("profile")
    if not isinstance(profile, str) or not _PROFILE.fullmatch(profile):
        raise SignatureError(f"{where}: 'profile' is required (lower-case letters, digits, '_', '-')")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise SignatureError(f"{where}: 'description' must be a string")
    strength = entry.get("strength", "strong")
    if strength not in STRENGTHS:
        raise SignatureError(f"{where}: 'strength' must be strong or weak")
    confirmed = entry.get("confirmed", False)
    if not isinstance(confirmed, bool):
        raise SignatureError(f"{where}: 'confirmed' must be true or false")

    patterns: list[tuple[str, re.Pattern[str]]] = []
    start_types: frozenset[int] = frozenset()
    sources: frozenset[str] = frozenset()
    paths: list[GlobPattern] = []
    if kind in _MATCH_KEYS:
        for key in _MATCH_KEYS[str(kind)]:
            if key in entry:
                patterns.append((key, _regex(entry[key], key, where)))
        if not patterns:
            raise SignatureError(f"{where}: a {kind} signature needs one of {', '.join(_MATCH_KEYS[str(kind)])}")
    if kind == "service" and "start" in entry:
        start_types = _start_types(entry["start"], where)
    if kind == "product" and "sources" in entry:
        raw_sources = entry["sources"]
        if not isinstance(raw_sources, list) or not raw_sources or any(s not in PRODUCT_SOURCES for s in raw_sources):
            raise SignatureError(f"{where}: 'sources' must be a list of {', '.join(PRODUCT_SOURCES)}")
        sources = frozenset(map(str, raw_sources))
    if kind == "path":
        raw_paths = entry.get("paths")
        if not isinstance(raw_paths, list) or not raw_paths:
            raise SignatureError(f"{where}: 'paths' must be a non-empty list of path patterns")
        for raw in raw_paths:
            if not isinstance(raw, str) or len(raw) > MAX_REGEX:
                raise SignatureError(f"{where}: path pattern {raw!r} is not a string or is too long")
            try:
                paths.append(compile_glob(raw))
            except ValueError as exc:
                raise SignatureError(f"{where}: path pattern {raw!r}: {exc}") from None
    return sig_id, Signature(
        id=sig_id,
        profile=profile,
        kind=kind,  # type: ignore[arg-type]
        description=description.strip(),
        strength=strength,  # type: ignore[arg-type]
        confirmed=confirmed,
        patterns=tuple(patterns),
        start_types=start_types,
        sources=sources,
        paths=tuple(paths),
        source=source,
    )


def parse_signature_text(text: str, source: str) -> list[tuple[str, Signature | None]]:
    """Validate one signature file's text; ``source`` names it in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SignatureError(f"signature file {source}: not valid YAML{at}") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise SignatureError(f"signature file {source}: expected a mapping with 'version' and 'signatures'")
    unknown = set(map(str, data)) - {"version", "signatures"}
    if unknown:
        raise SignatureError(f"signature file {source}: unknown top-level keys {sorted(unknown)}")
    if data.get("version", 1) != 1:
        raise SignatureError(f"signature file {source}: version {data.get('version')!r} is not supported (use 1)")
    entries = data.get("signatures")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise SignatureError(f"signature file {source}: 'signatures' must be a list")
    if len(entries) > MAX_SIGNATURES:
        raise SignatureError(f"signature file {source}: more than {MAX_SIGNATURES} signatures")
    result: list[tuple[str, Signature | None]] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries, start=1):
        where = f"signature file {source}, entry {index}"
        if not isinstance(entry, dict):
            raise SignatureError(f"{where}: expected a mapping with id, profile, kind")
        sig_id, signature = _signature(entry, where, source)
        if sig_id in seen:
            raise SignatureError(f"{where}: id {sig_id!r} is used twice in this file")
        seen.add(sig_id)
        result.append((sig_id, signature))
    return result


def _read_user_file(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_SIGNATURE_FILE:
            raise SignatureError(f"signature file {path}: {size} bytes, over the {MAX_SIGNATURE_FILE} byte limit")
        with path.open("rb") as handle:
            return handle.read(MAX_SIGNATURE_FILE).decode("utf-8")
    except OSError as exc:
        raise SignatureError(f"signature file {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise SignatureError(f"signature file {path}: not UTF-8 text") from None


def load_signatures(extra: Iterable[Path | str] = (), *, include_default: bool = True) -> SignatureSet:
    """The shipped signatures merged with user files, in order: an entry replaces the one with the
    same id (keeping its place), ``enabled: false`` removes it, new ids are appended. Raises
    :class:`SignatureError`."""
    merged: dict[str, Signature | None] = {}
    sources: list[tuple[str, str]] = []
    if include_default:
        shipped = resources.files("harness").joinpath("data/image-signatures.yml")
        sources.append((shipped.read_text(encoding="utf-8"), "image-signatures.yml (shipped)"))
    for item in extra:
        path = Path(item)
        sources.append((_read_user_file(path), str(path)))
    for text, source in sources:
        for sig_id, signature in parse_signature_text(text, source):
            merged[sig_id] = signature
    return SignatureSet(tuple(s for s in merged.values() if s is not None))


# ---- matching ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureMatch:
    """A signal found. ``subject``: the service name, the product key, or the first matching path.

    ``requirements_met`` is False when the subject matched but a requirement did not hold (a
    service with a start type the signature does not accept); ``detail`` says which.
    """

    signature_id: str
    profile: str
    kind: str
    strength: str
    subject: str
    requirements_met: bool = True
    detail: str = ""
    evidence: tuple[str, ...] = ()  # path signals: up to MAX_EVIDENCE matching paths
    count: int = 1  # path signals: how many paths matched (of those looked at)


def _search(pattern: re.Pattern[str], value: str | None) -> bool:
    return value is not None and pattern.search(value[:MAX_SUBJECT]) is not None


def _start_text(start: int | None) -> str:
    return "absent" if start is None else f"{start} ({_START_NAMES.get(start, 'unknown')})"


def _match_service(signature: Signature, service: ServiceInfo) -> SignatureMatch | None:
    fields = {"name": service.name, "display_name": service.display_name, "image_path": service.image_path}
    if not all(_search(pattern, fields[key]) for key, pattern in signature.patterns):
        return None
    met = not signature.start_types or service.start in signature.start_types
    detail = f"start type {_start_text(service.start)}"
    if not met:
        wanted = ", ".join(_start_text(t) for t in sorted(signature.start_types))
        detail += f"; the signature expects {wanted}"
    return SignatureMatch(signature.id, signature.profile, "service", signature.strength, service.name, met, detail)


def _match_product(signature: Signature, product: ProductInfo) -> SignatureMatch | None:
    if signature.sources and product.source not in signature.sources:
        return None
    fields = {"display_name": product.display_name, "publisher": product.publisher}
    if not all(_search(pattern, fields[key]) for key, pattern in signature.patterns):
        return None
    detail = f"{product.source} {product.display_name or ''}".strip()
    if product.version:
        detail += f" {product.version}"
    return SignatureMatch(signature.id, signature.profile, "product", signature.strength, product.key, True, detail)


def _match_path(
    signature: Signature,
    glob: GlobPattern,
    path_exists: Callable[[str], bool],
    list_glob: Callable[[str], Sequence[str]],
) -> SignatureMatch | None:
    if glob.literal or glob.subtree:
        # A fixed path, or "X/**" which is exactly "X exists".
        if not path_exists(glob.prefix):
            return None
        return SignatureMatch(
            signature.id, signature.profile, "path", signature.strength, glob.prefix, True, glob.pattern, (glob.prefix,)
        )
    found: list[str] = []
    count = 0
    for index, path in enumerate(list_glob(glob.prefix)):
        if index >= MAX_LISTED:
            break
        if isinstance(path, str) and glob.matches(path):
            count += 1
            if len(found) < MAX_EVIDENCE:
                found.append(normalise_path(path).replace("/", "\\"))
    if not count:
        return None
    found.sort(key=str.lower)
    return SignatureMatch(
        signature.id, signature.profile, "path", signature.strength, found[0], True, glob.pattern, tuple(found), count
    )


def match_signatures(
    signatures: SignatureSet,
    services: Sequence[ServiceInfo],
    products: Sequence[ProductInfo],
    path_exists: Callable[[str], bool],
    list_glob: Callable[[str], Sequence[str]],
) -> list[SignatureMatch]:
    """Every signal found, in signature order.

    ``path_exists(path)`` gets a volume-relative path with backslashes (no drive, no leading
    separator; e.g. ``WindowsAzure\\Packages\\WaAppAgent.exe``) and answers case-insensitively
    whether a file or folder exists there. ``list_glob(prefix)`` gets a pattern's literal folder
    prefix in the same form ("" = the volume root, only for patterns that start with a wildcard) and
    returns the volume-relative paths of everything below it, at any depth (the prefix itself may be
    included; "/" or "\\", a leading separator or drive are accepted). Only paths under the prefix
    are ever requested; the regex then picks the matches. One match per (signature, pattern).
    """
    matches: list[SignatureMatch] = []
    for signature in signatures.signatures:
        if signature.kind == "service":
            matches.extend(m for s in services if (m := _match_service(signature, s)) is not None)
        elif signature.kind == "product":
            matches.extend(m for p in products if (m := _match_product(signature, p)) is not None)
        else:
            for glob in signature.paths:
                match = _match_path(signature, glob, path_exists, list_glob)
                if match is not None:
                    matches.append(match)
    return matches
