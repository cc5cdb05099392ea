"""Subjects: an artefact's facts plus the related artefacts it is checked against (read once per process).

Below the plugin: :func:`harness.lint.lint`, the pytest plugin and the benchmarks build subjects here.

Pairing: a .cscfg is checked against the .csdef given with ``--vmr-csdef``, else the build csdef of
the single ``--vmr-package``, else a sibling .csdef with the same name prefix
(``X__ServiceConfiguration.Cloud.cscfg`` pairs with ``X__ServiceDefinition.csdef``), preferring a
source ``ServiceDefinition.csdef`` over a ``ServiceDefinition.build.csdef``. Without a pairing the
cross-file rules are skipped, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.engine.artefact import CSCFG, CSDEF, CSPKG, IMAGE, Artefact
from harness.facts.servicemodel import Package, ServiceConfiguration, ServiceDefinition, ServiceModelSubject
from harness.readers.errors import Unreadable

if TYPE_CHECKING:
    from harness.extraction.options import ExtractOptions
    from harness.facts.image import ImageFacts, ImageSubject

Facts = ServiceDefinition | ServiceConfiguration | Package


@dataclass(frozen=True)
class ImageSettings:
    """How images are read and judged (options --vmr-image-profile, --vmr-role, ...)."""

    profile: str = "auto"  # "auto" | "vmrole" | "azure"
    role: str | None = None
    signature_files: tuple[str, ...] = ()
    machine_key_allowlists: tuple[str, ...] = ()
    timeout: float = 300.0
    #: Directories a differencing image's parent may be opened from, besides the child's own (absolute paths).
    parent_dirs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pairing:
    """Explicit pairing from the options (absolute paths)."""

    csdef: Path | None = None
    packages: tuple[Path, ...] = ()
    cscfgs: tuple[Path, ...] = ()
    targets: tuple[Path, ...] = ()
    images: tuple[Path, ...] = ()
    image: ImageSettings = ImageSettings()
    #: Look for a sibling .csdef when nothing else pairs a .cscfg (off for corpora of mixed commits).
    siblings: bool = True


_CACHE: dict[tuple[str, int, int, str], object] = {}


def _key(artefact: Artefact) -> tuple[str, int, int, str]:
    try:
        st = artefact.path.stat()
        return (str(artefact.path), st.st_mtime_ns, st.st_size, artefact.identity)
    except OSError:
        return (str(artefact.path), -1, -1, artefact.identity)


def _facts_key(artefact: Artefact, image: ImageSettings | None) -> tuple[str, int, int, str]:
    key = _key(artefact)
    return (*key[:3], f"{key[3]}|{image!r}") if artefact.kind == IMAGE else key


def is_cached(artefact: Artefact, image: ImageSettings | None = None) -> bool:
    """Whether :func:`read_facts` answers from this process's cache (an image need not be read ahead)."""
    return _facts_key(artefact, image) in _CACHE


def read_facts(artefact: Artefact, image: ImageSettings | None = None) -> Any:
    """The artefact's own facts; raises Unreadable. Cached per process and file version."""
    key = _facts_key(artefact, image)
    cached = _CACHE.get(key)
    if cached is None:
        try:
            cached = _read(artefact, image or ImageSettings())
        except Unreadable as exc:
            cached = exc
        _CACHE[key] = cached
    if isinstance(cached, Unreadable):
        raise cached
    return cached


def _read(artefact: Artefact, image: ImageSettings) -> Any:
    if not artefact.path.is_file():
        raise Unreadable(artefact.path, "no such file" if not artefact.path.exists() else "not a regular file")
    if artefact.kind == CSDEF:
        from harness.readers.servicemodel import read_definition

        return read_definition(artefact)
    if artefact.kind == CSCFG:
        from harness.readers.servicemodel import read_configuration

        return read_configuration(artefact)
    if artefact.kind == CSPKG:
        from harness.readers.cspkg import read_package

        return read_package(artefact)
    if artefact.kind == IMAGE:
        from harness.extraction.worker import read_image_isolated

        return read_image_isolated(artefact.path, extract_options(image), timeout=image.timeout)
    raise Unreadable(artefact.path, f"unsupported artefact kind {artefact.kind!r}")


def extract_options(image: ImageSettings) -> ExtractOptions:
    """The :class:`~harness.extraction.extract.ExtractOptions` an image is read with under these settings."""
    from harness.extraction.options import ExtractOptions

    return ExtractOptions(image.signature_files, image.machine_key_allowlists, image.parent_dirs)


def name_prefix(name: str, marker: str) -> str | None:
    """The part of a file name before ``marker`` (case-insensitive), e.g. ``X__`` of ``X__ServiceDefinition.csdef``;
    None without the marker."""
    idx = name.lower().find(marker)
    return None if idx < 0 else name[:idx]


def sibling_definition(cscfg: Path) -> Path | None:
    """The csdef next to ``cscfg`` with the same name prefix, or None."""
    prefix = name_prefix(cscfg.name, "serviceconfiguration")
    if prefix is None:
        prefix = ""
    siblings = definitions_beside(cscfg)
    candidates = [p for p in siblings if name_prefix(p.name, "servicedefinition") == prefix]
    if not candidates and len(siblings) == 1 and prefix == "":
        candidates = siblings
    return one_definition(candidates)


def definitions_beside(path: Path) -> list[Path]:
    """The .csdef files in ``path``'s folder, sorted (none when the folder cannot be listed)."""
    try:
        return sorted(p for p in path.parent.iterdir() if p.suffix.lower() == ".csdef" and p.is_file())
    except OSError:
        return []


def one_definition(candidates: list[Path]) -> Path | None:
    """The one csdef of ``candidates``; of several, the one that is not a build output (``.build.``); else None."""
    if len(candidates) > 1:
        source = [p for p in candidates if ".build." not in p.name.lower()]
        candidates = source if len(source) == 1 else []
    return candidates[0] if len(candidates) == 1 else None


@dataclass(frozen=True)
class SubjectResult:
    subject: Any
    #: Why a related artefact is missing (e.g. "no ServiceDefinition .csdef next to X"), for skip reasons.
    notes: dict[str, str]


def build_subject(artefact: Artefact, pairing: Pairing, root: Path) -> SubjectResult:
    """Facts for ``artefact`` plus its related artefacts. Raises Unreadable for the artefact itself."""
    own = read_facts(artefact, pairing.image)
    notes: dict[str, str] = {}
    if artefact.kind == IMAGE:
        return _image_subject(artefact, own, pairing, root, notes)
    if isinstance(own, ServiceDefinition):
        return SubjectResult(ServiceModelSubject(artefact=artefact, definition=own), notes)
    if isinstance(own, Package):
        configuration = None
        if len(pairing.cscfgs) == 1:
            configuration = _related(pairing.cscfgs[0], CSCFG, root, notes, "configuration")
        if own.definition is None:
            notes["definition"] = f"{artefact.display} holds no readable ServiceDefinition.build.csdef"
        return SubjectResult(
            ServiceModelSubject(
                artefact=artefact,
                definition=own.definition,
                configuration=configuration if isinstance(configuration, ServiceConfiguration) else None,
                package=own,
            ),
            notes,
        )
    assert isinstance(own, ServiceConfiguration)
    named, definition = _named_definition(pairing, root, notes)
    if not named:
        sibling = sibling_definition(artefact.path) if pairing.siblings else None
        if sibling is None:
            notes["definition"] = (
                f"no ServiceDefinition .csdef paired with {artefact.display} "
                "(none with the same name prefix next to it; name one with --vmr-csdef)"
            )
        else:
            found = _related(sibling, CSDEF, root, notes, "definition")
            definition = found if isinstance(found, ServiceDefinition) else None
    return SubjectResult(ServiceModelSubject(artefact=artefact, definition=definition, configuration=own), notes)


def _named_definition(pairing: Pairing, root: Path, notes: dict[str, str]) -> tuple[bool, ServiceDefinition | None]:
    """(named, csdef): the --vmr-csdef file, else the single --vmr-package's build csdef; (False, None) when the
    options name neither. A named csdef that cannot be read leaves the reason in ``notes``."""
    if pairing.csdef is not None:
        found = _related(pairing.csdef, CSDEF, root, notes, "definition")
        return True, found if isinstance(found, ServiceDefinition) else None
    if len(pairing.packages) == 1:
        pkg = _related(pairing.packages[0], CSPKG, root, notes, "definition")
        if isinstance(pkg, Package) and pkg.definition is None:
            notes["definition"] = f"{pairing.packages[0].name} holds no readable build csdef"
        return True, pkg.definition if isinstance(pkg, Package) else None
    return False, None


def _related(path: Path, kind: str, root: Path, notes: dict[str, str], slot: str) -> Facts | None:
    related = Artefact.from_path(path, kind, root)
    try:
        return read_facts(related)
    except Unreadable as exc:
        notes[slot] = f"the paired {related.display} is unreadable: {exc.problem}"
        return None


def _image_subject(
    artefact: Artefact, facts: ImageFacts, pairing: Pairing, root: Path, notes: dict[str, str]
) -> SubjectResult:
    """An image plus the service model it is deployed with (csdef, or the single package's build csdef)."""
    from harness.extraction.profile import choose_profile, choose_role
    from harness.facts.image import ImageSubject

    configuration: ServiceConfiguration | None = None
    named, definition = _named_definition(pairing, root, notes)
    if not named:
        notes["definition"] = (
            f"no service model paired with {artefact.display} "
            "(name one with --vmr-csdef or a single --vmr-package to check the firewall against its endpoints)"
        )
    if len(pairing.cscfgs) == 1:
        found = _related(pairing.cscfgs[0], CSCFG, root, notes, "configuration")
        configuration = found if isinstance(found, ServiceConfiguration) else None
    role = None
    if definition is not None:
        role, why = choose_role(definition, pairing.image.role)
        if role is None:
            notes["role"] = why
    profile, reason = choose_profile(pairing.image.profile, facts, definition)
    subject: ImageSubject = ImageSubject(
        artefact=artefact,
        facts=facts,
        profile=profile,
        profile_reason=reason,
        definition=definition,
        configuration=configuration,
        role=role,
    )
    return SubjectResult(subject, notes)
