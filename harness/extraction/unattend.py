"""Reading answer files (unattend.xml) of an offline image into :mod:`harness.facts.image_unattend` facts.

:func:`parse_answer_file` reads one file's bytes with the project's safe XML reader (no DTDs, no
entities, size/depth/count caps) and reports where passwords are, never what they are: a
:class:`~harness.facts.image_unattend.PasswordLeak` records the element, the pass, whether the value
is plain text or the reversible ``PlainText=false`` encoding (base64 of UTF-16LE(password + element
name)), and an XPath-like location. The password value is not stored, hashed or echoed anywhere.

:data:`ANSWER_FILE_SEARCH_ORDER` and :func:`answer_file_candidates` give Windows Setup's implicit
search order as volume-relative paths, for the extractor to look up in the image's file inventory.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path

from harness.facts.image_unattend import PASSES, UNATTEND_NAMESPACE, AnswerComponent, AnswerFile, PasswordLeak
from harness.readers.errors import Unreadable
from harness.readers.xmlsafe import MIB, Node, parse_xml

#: Real answer files are tens of KiB.
MAX_ANSWER_FILE = 4 * MIB
MAX_LEAKS = 1000
_NAME_CHARS = 64


def _quote(value: str) -> str:
    value = value[:_NAME_CHARS]
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return "'" + value.replace("'", "") + "'"


def _child_text(node: Node, tag: str) -> str | None:
    for child in node.children:
        if child.tag.lower() == tag.lower():
            return child.text
    return None


def _step(node: Node, siblings: list[Node]) -> str:
    """One location step: settings by pass, component by name and architecture, LocalAccount by
    Name, otherwise the tag with a position when the tag repeats among its siblings."""
    tag = node.tag
    if tag == "settings" and node.get("pass") is not None:
        return f"settings[@pass={_quote(node.get('pass') or '')}]"
    if tag == "component" and node.get("name") is not None:
        step = f"component[@name={_quote(node.get('name') or '')}]"
        if node.get("processorArchitecture") is not None:
            step += f"[@processorArchitecture={_quote(node.get('processorArchitecture') or '')}]"
        return step
    if tag == "LocalAccount":
        name = _child_text(node, "Name")
        if name is not None and name.strip():
            return f"LocalAccount[Name={_quote(name.strip())}]"
    same = [s for s in siblings if s.tag == tag]
    if len(same) > 1:
        return f"{tag}[{next(i for i, s in enumerate(same, start=1) if s is node)}]"
    return tag


def _is_password_element(node: Node) -> bool:
    if not node.tag.lower().endswith("password"):
        return False
    # A leaf with text, or a Value/PlainText container (the usual shape).
    return not node.children or any(c.tag in ("Value", "PlainText") for c in node.children)


def _element_label(node: Node, ancestors: list[Node]) -> str:
    parent = ancestors[-1] if ancestors else None
    if any(a.tag == "DomainAccounts" for a in ancestors):
        return "DomainAccounts"
    if node.tag == "AdministratorPassword" or parent is None:
        return node.tag
    if parent.tag == "LocalAccount":
        name = (_child_text(parent, "Name") or "").strip()[:_NAME_CHARS]
        return f"LocalAccount[{name}]/{node.tag}" if name else f"LocalAccount/{node.tag}"
    return f"{parent.tag}/{node.tag}"


def _encoding_confirmed(value: str, element: str) -> bool:
    """Whether a PlainText=false value has the documented shape; the decoded text is discarded."""
    try:
        decoded = base64.b64decode(re.sub(r"\s+", "", value), validate=True)
        text = decoded.decode("utf-16-le")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    return text.endswith(element)


def _leak(
    node: Node, ancestors: list[Node], location: str, pass_name: str | None, component: str | None
) -> PasswordLeak:
    value_node = next((c for c in node.children if c.tag == "Value"), None)
    value = value_node.text if value_node is not None else node.text
    plain_text = _child_text(node, "PlainText")
    flag = plain_text.strip().lower() if plain_text is not None else None
    reversible = flag in ("false", "0")
    empty = not value.strip()
    return PasswordLeak(
        element=_element_label(node, ancestors),
        pass_name=pass_name,
        plaintext=not reversible,
        reversible=reversible,
        location=location,
        component=component,
        empty=empty,
        encoding_confirmed=_encoding_confirmed(value, node.tag) if reversible and not empty else None,
    )


def parse_answer_file(data: bytes, path: str, *, max_bytes: int = MAX_ANSWER_FILE) -> AnswerFile:
    """Parse an answer file. Unparsable input (malformed XML, a DTD or entity, over ``max_bytes``,
    bad encoding) gives an :class:`AnswerFile` with ``problem`` set; this never raises."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return AnswerFile(path=str(path), problem=f"content is {type(data).__name__}, not bytes")
    try:
        document = parse_xml(bytes(data), Path(str(path)), what="answer file", max_bytes=max_bytes)
    except Unreadable as exc:
        return AnswerFile(path=str(path), problem=exc.problem)

    root = document.root
    notes: list[str] = []
    is_unattend = root.tag == "unattend" and root.namespace == UNATTEND_NAMESPACE
    if root.tag != "unattend":
        notes.append(f"root element is <{root.tag}>, not <unattend>")
    elif root.namespace != UNATTEND_NAMESPACE:
        shown = root.namespace or "no namespace"
        notes.append(f"<unattend> is in {shown}, not {UNATTEND_NAMESPACE}: Windows Setup ignores it")

    passes: list[str] = []
    components: list[AnswerComponent] = []
    leaks: list[PasswordLeak] = []
    # (node, location, ancestors, pass, component) — iterative; depth is capped by the XML reader.
    stack: list[tuple[Node, str, list[Node], str | None, str | None]] = [(root, f"/{root.tag}", [], None, None)]
    while stack:
        node, location, ancestors, pass_name, component = stack.pop()
        if node.tag == "settings":
            pass_name = node.get("pass")
            if pass_name is None:
                notes.append(f"{location} has no pass attribute")
            else:
                if pass_name not in passes:
                    passes.append(pass_name)
                if pass_name not in PASSES:
                    notes.append(f"unknown pass {pass_name[:_NAME_CHARS]!r} at {location}")
        elif node.tag == "component":
            component = node.get("name")
            components.append(AnswerComponent(pass_name, component, node.get("processorArchitecture"), location))
        if _is_password_element(node):
            if len(leaks) < MAX_LEAKS:
                leaks.append(_leak(node, ancestors, location, pass_name, component))
            continue  # its Value/PlainText children are part of this leak
        child_ancestors = [*ancestors, node]
        for child in reversed(node.children):
            step = _step(child, node.children)
            stack.append((child, f"{location}/{step}", child_ancestors, pass_name, component))
    if len(leaks) >= MAX_LEAKS:
        notes.append(f"more than {MAX_LEAKS} password elements; the rest are not listed")
    return AnswerFile(
        path=str(path),
        passes=tuple(passes),
        components=tuple(components),
        password_leaks=tuple(leaks),
        namespace=root.namespace,
        is_unattend=is_unattend,
        notes=tuple(notes),
    )


# ---- implicit search order (Windows Setup Automation Overview) ------------------------------------


@dataclass(frozen=True)
class AnswerFileLocation:
    """One place Windows Setup looks for an answer file.

    ``path`` is volume-relative with backslashes, ``%WINDIR%`` written as ``Windows``; None when the
    place is not a fixed path (the registry value, removable media). ``offline_relevant``: the
    place is inside the image, so an offline check can look at it.
    """

    position: int
    path: str | None
    description: str
    offline_relevant: bool


ANSWER_FILE_SEARCH_ORDER: tuple[AnswerFileLocation, ...] = (
    AnswerFileLocation(1, None, r"HKLM\System\Setup value UnattendFile (explicit path)", True),
    AnswerFileLocation(2, r"Windows\Panther\Unattend\Unattend.xml", r"%WINDIR%\Panther\Unattend", True),
    AnswerFileLocation(2, r"Windows\Panther\Unattend\Autounattend.xml", r"%WINDIR%\Panther\Unattend", True),
    AnswerFileLocation(3, r"Windows\Panther\Unattend.xml", r"%WINDIR%\Panther (answer file cached by Setup)", True),
    AnswerFileLocation(3, r"Windows\Panther\Autounattend.xml", r"%WINDIR%\Panther (answer file cached by Setup)", True),
    AnswerFileLocation(4, None, "root of removable read/write media (Autounattend.xml)", False),
    AnswerFileLocation(5, None, "root of removable read-only media (Autounattend.xml)", False),
    AnswerFileLocation(6, None, r"\Sources of the setup media (windowsPE and offlineServicing passes)", False),
    AnswerFileLocation(6, r"Windows\System32\Sysprep\Unattend.xml", r"%WINDIR%\System32\Sysprep (other passes)", True),
    AnswerFileLocation(7, "Unattend.xml", r"%SYSTEMDRIVE% root (the VM-role IC's C:\unattend.xml)", True),
    AnswerFileLocation(7, "Autounattend.xml", r"%SYSTEMDRIVE% root", True),
)

_MAX_PATH = 32_767
_ENV = re.compile(r"%(systemroot|windir|systemdrive)%", re.IGNORECASE)


def registry_answer_file_path(value: str | None, *, windows_dir: str = "Windows") -> str | None:
    """The volume-relative path of an ``UnattendFile`` registry value, or None when it is empty, on
    another drive, a UNC path or relative (it cannot be looked up on the system volume)."""
    if not isinstance(value, str):
        return None
    text = value.strip().strip('"')[:_MAX_PATH]
    if not text:
        return None
    text = _ENV.sub(lambda m: "C:" if m.group(1).lower() == "systemdrive" else f"C:\\{windows_dir}", text)
    text = text.replace("/", "\\")
    if text.startswith("\\\\"):
        return None  # UNC or \\?\ path
    if re.match(r"[A-Za-z]:", text):
        if text[0].upper() != "C":
            return None
        text = text[2:]
    elif not text.startswith("\\"):
        return None  # relative: to what, Setup does not document
    parts = [p for p in text.split("\\") if p]
    return "\\".join(parts) or None


def answer_file_candidates(
    unattend_file_registry_value: str | None, *, windows_dir: str = "Windows"
) -> list[tuple[int, str]]:
    """(position, volume-relative path) of every in-image place Setup would look, in search order.

    Position 1 is the ``UnattendFile`` value when it names a file on the system drive (``C:``,
    ``%SystemDrive%``, ``%SystemRoot%``/``%WINDIR%``); the fixed places follow. A path already listed
    (compared case-insensitively) is not repeated. The system volume is taken to be ``C:``.
    """
    candidates: list[tuple[int, str]] = []
    seen: set[str] = set()
    registry_path = registry_answer_file_path(unattend_file_registry_value, windows_dir=windows_dir)
    if registry_path is not None:
        candidates.append((1, registry_path))
        seen.add(registry_path.lower())
    for location in ANSWER_FILE_SEARCH_ORDER:
        if location.path is None or not location.offline_relevant:
            continue
        path = location.path
        if windows_dir != "Windows" and path.lower().startswith("windows\\"):
            path = windows_dir + path[len("Windows") :]
        if path.lower() not in seen:
            seen.add(path.lower())
            candidates.append((location.position, path))
    return candidates
