"""Shared base for image rules: profile gating and "this part of the image was read" gating.

Data and small helpers only; no rules live here (the catalogue ignores classes without ``id``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from harness.engine.artefact import IMAGE
from harness.engine.finding import Finding
from harness.engine.rule import NotApplicable, Rule
from harness.facts.image import AZURE, PROFILES, VMROLE, ImageFacts, ImageSubject, hives_for

BOTH = frozenset(PROFILES)
VMROLE_ONLY = frozenset({VMROLE})
AZURE_ONLY = frozenset({AZURE})
IMAGE_KINDS = frozenset({IMAGE})


class ImageRule(Rule):
    """Base of image rules: skips (with the reason) when the profile or a needed part does not apply."""

    applies_to = IMAGE_KINDS
    #: Profiles the rule belongs to.
    profiles: ClassVar[frozenset[str]] = BOTH
    #: Parts of ImageFacts.parts_read the rule needs ("os", "services", "firewall", "volume", ...).
    parts: ClassVar[tuple[str, ...]] = ()

    def check(self, subject: ImageSubject) -> Iterable[Finding]:
        if subject.profile not in self.profiles:
            wanted = " or ".join(sorted(self.profiles))
            raise NotApplicable(f"for the {wanted} profile; this image is linted with the {subject.profile} profile")
        facts = subject.facts
        for part in self.parts:
            if part not in facts.parts_read:
                raise NotApplicable(missing_part_reason(facts, part))
        return self.judge(subject, facts)

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterable[Finding]:
        raise NotImplementedError  # abstract: every image rule overrides it


def missing_part_reason(facts: ImageFacts, part: str) -> str:
    if "volume" not in facts.parts_read:
        return "no readable NTFS volume in the image (see VMR002)"
    if not facts.windows_found:
        return "no Windows installation (Windows\\System32\\config) on the image's volume"
    problem = next((p for p in facts.problems if part in p.part or p.part.split()[0] in hives_for(part)), None)
    if problem is not None:
        return f"the image's {part} could not be read: {problem.part} {problem.problem} (see VMR002)"
    return f"the image's {part} could not be read (see VMR002)"


def image_location(path: str) -> str:
    """A volume path as findings show it: ``C:\\Windows\\...`` (the system drive as Windows sees it)."""
    return "C:\\" + path.lstrip("\\")
