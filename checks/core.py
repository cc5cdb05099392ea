"""Rules about the harness's ability to read an artefact at all (0xx)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from harness.docs_sources import refs
from harness.engine.artefact import KINDS, Artefact
from harness.engine.finding import Finding
from harness.engine.rule import Rule
from harness.engine.severity import Severity


@dataclass(frozen=True)
class UnreadableSubject:
    """What rules see for an artefact whose reader gave up: the problem, in words."""

    artefact: Artefact
    problem: str
    location: str | None = None


class ArtefactUnreadable(Rule):
    """The artefact could not be read, so no other rule could check it.

    ## What it does
    Reports a file the harness cannot read: malformed XML, a forbidden DTD, a truncated or hostile
    zip, an unknown encoding, a file over a size limit. It passes for every artefact that was read.

    ## Why is this bad?
    Nothing else was checked. The platform rejects such a file at deployment time, or (for an
    oversized or hostile archive) it may be an attack on the tools that read it.

    ## Example
    A ServiceConfiguration.cscfg with an unclosed element:
    ```xml
    <ServiceConfiguration serviceName="svc"><Role name="Web">
    ```

    ## Use instead
    Fix the file so that it is well-formed and within the limits, then lint again. Package files
    should be produced by cspack, not edited by hand.

    ## References
    - Azure Cloud Services (classic) Definition Schema (.csdef file): https://learn.microsoft.com/en-us/azure/cloud-services/schema-csdef-file
    - Azure Cloud Services (classic) Config Schema (.cscfg file): https://learn.microsoft.com/en-us/azure/cloud-services/schema-cscfg-file
    - What is the Cloud Service (classic) model and how do I package it? — the package format: https://learn.microsoft.com/en-us/azure/cloud-services/cloud-services-model-and-package
    """

    id = "VMR001"
    name = "artefact-unreadable"
    references = refs("csdef-schema", "cscfg-schema", "cloud-services-model")
    severity = Severity.CRITICAL
    applies_to = frozenset(KINDS)

    def check(self, subject: object) -> Iterator[Finding]:
        if isinstance(subject, UnreadableSubject):
            yield self.finding(
                subject,
                subject.location or "/",
                f"{subject.artefact.display} is unreadable: {subject.problem}",
                evidence={"file": subject.artefact.identity},
            )


class ImagePartUnreadable(Rule):
    """A part of a disk image (a registry hive, the NTFS volume, a file) could not be read.

    ## What it does
    Reports each part of an image the readers gave up on: a corrupted registry hive bin, an MFT
    loop, a truncated file, a missing hive, a bad cell or a subkey cycle met while reading a key. The
    rest of the image is still read and checked; the rules that needed the unreadable part are
    skipped and say so. The location names the part, its path, the registry key being read and the
    offset, e.g. `SYSTEM hive \\Windows\\System32\\config\\SYSTEM [Select] @ 0xad20`; the same
    damage met by several reads is one finding.

    ## Why is this bad?
    Checks that needed the part did not run, so the image is not known to be safe. Windows itself
    may fail to boot from it (a corrupted SYSTEM hive stops the boot; a broken MFT loses files).

    ## Example
    A SYSTEM hive whose second hive bin has a zero cell size.

    ## Use instead
    Rebuild the image from a healthy reference machine (run `chkdsk /f` before sysprep), or restore
    the damaged hive from `Windows\\System32\\config\\RegBack`. Then lint again.

    ## References
    - Prepare a Windows VHD or VHDX to upload to Azure — check the disk with chkdsk before upload: https://learn.microsoft.com/en-us/azure/virtual-machines/windows/prepare-for-upload-vhd-image
    - Virtual Hard Disk Image Format Specification (Microsoft, v1.0): https://www.microsoft.com/en-us/download/details.aspx?id=23850
    """

    id = "VMR002"
    name = "image-part-unreadable"
    references = refs("azure-prepare-vhd", "vhd-spec")
    severity = Severity.HIGH
    applies_to = frozenset({"image"})

    def check(self, subject: object) -> Iterator[Finding]:
        facts = getattr(subject, "facts", None)
        for problem in getattr(facts, "problems", ()):
            yield self.finding(
                subject,
                problem.location,
                f"{problem.part}: {problem.problem}",
                evidence={
                    "part": problem.part,
                    "path": problem.path or "-",
                    "key": problem.key or "-",
                    "offset": problem.offset or "-",
                },
            )
