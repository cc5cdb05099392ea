"""What a live rule sees: :class:`LiveFacts`, one typed attribute per probe stage.

``harness.live.subject.LiveSubject`` implements it (each attribute runs its probe once, on first read);
the rule tests build it from plain objects. A stage attribute is ``None`` when its probe could not run or
was not requested, and ``notes[stage]`` then says why; the engine skips a rule whose ``requires`` names a
stage that is ``None``, so a rule body may assume the stages it requires are there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, TypeVar

from harness.engine.artefact import Artefact
from harness.engine.rule import NotApplicable
from harness.facts.live.deployment import DeploymentFacts, ReadinessFacts
from harness.facts.live.endpoints import EndpointFacts
from harness.facts.live.guest import GuestFacts
from harness.facts.live.reimage import RebootFacts, ReimageFacts
from harness.facts.live.rotation import DrainFacts, RotationFacts


class LiveFacts(Protocol):
    """The subject of every rule in ``checks/live``."""

    @property
    def artefact(self) -> Artefact: ...

    @property
    def target_name(self) -> str: ...

    @property
    def notes(self) -> Mapping[str, str]:
        """stage -> why its attribute is None."""
        ...

    @property
    def deployment(self) -> DeploymentFacts | None: ...

    @property
    def readiness(self) -> ReadinessFacts | None: ...

    @property
    def endpoints(self) -> EndpointFacts | None: ...

    @property
    def guest(self) -> GuestFacts | None: ...

    @property
    def rotation(self) -> RotationFacts | None: ...

    @property
    def drain(self) -> DrainFacts | None: ...

    @property
    def reimage(self) -> ReimageFacts | None: ...

    @property
    def reboot(self) -> RebootFacts | None: ...


F = TypeVar("F")


def present(facts: F | None, stage: str) -> F:
    """A stage's facts in a rule that ``requires`` it: the engine skips the rule before it runs when they are
    None, so this only narrows the type (NotApplicable, were a rule called directly without them)."""
    if facts is None:
        raise NotApplicable(f"no {stage} facts: the {stage} probe did not run")
    return facts


__all__ = ["LiveFacts", "present"]
