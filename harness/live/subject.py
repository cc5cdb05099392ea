"""The subject live rules see (:class:`harness.facts.live.subject.LiveFacts`): one lazy attribute per probe
stage, each run once per process."""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from harness.engine.artefact import Artefact
from harness.facts.live.deployment import HEALTHY, RUNNING, DeploymentFacts, ReadinessFacts
from harness.facts.live.endpoints import EndpointFacts
from harness.facts.live.guest import GuestFacts
from harness.facts.live.reimage import RebootFacts, ReimageFacts
from harness.facts.live.rotation import DrainFacts, RotationFacts
from harness.live.context import LiveContext
from harness.live.errors import StageError
from harness.live.health import DependencyDown
from harness.live.stages import STAGES, UNGATED

F = TypeVar("F")


@dataclass
class StageRecord:
    facts: Any = None
    error: str | None = None
    seconds: float = 0.0
    ran: bool = False
    #: the stage raised something other than StageError/DependencyDown: its rules fail with ``error``
    failed: bool = False


class LiveSubject:
    """Rules read ``subject.<stage>``; the stage runs on first access. ``None`` + ``notes[stage]``
    when it could not run or was not requested.

    Every stage but ``deployment`` starts from the one readiness wait of the run (``readiness``); a
    destructive stage runs only on a deployment that wait found ready: on one that is not, it is skipped
    at once with the instances that were not ready (never a wait of its own for them)."""

    def __init__(self, artefact: Artefact, ctx: LiveContext) -> None:
        self.artefact = artefact
        self.ctx = ctx
        self.records: dict[str, StageRecord] = {}
        self.notes = _Notes(self)

    @property
    def target_name(self) -> str:
        return self.ctx.target.name

    # ---- one typed attribute per stage (harness.live.stages.STAGES) --------------------------
    @property
    def deployment(self) -> DeploymentFacts | None:
        return self._facts("deployment", DeploymentFacts)

    @property
    def readiness(self) -> ReadinessFacts | None:
        return self._facts("readiness", ReadinessFacts)

    @property
    def endpoints(self) -> EndpointFacts | None:
        return self._facts("endpoints", EndpointFacts)

    @property
    def guest(self) -> GuestFacts | None:
        return self._facts("guest", GuestFacts)

    @property
    def rotation(self) -> RotationFacts | None:
        return self._facts("rotation", RotationFacts)

    @property
    def drain(self) -> DrainFacts | None:
        return self._facts("drain", DrainFacts)

    @property
    def reimage(self) -> ReimageFacts | None:
        return self._facts("reimage", ReimageFacts)

    @property
    def reboot(self) -> RebootFacts | None:
        return self._facts("reboot", RebootFacts)

    def _facts(self, stage: str, kind: type[F]) -> F | None:
        record = self.run(stage)
        if record.failed:
            import pytest

            # a short failure (no traceback: the cause is in the message), never pytest's raw traceback
            pytest.fail(record.error or f"the {stage} probe failed", pytrace=False)
        facts = record.facts
        if facts is not None and not isinstance(facts, kind):
            raise TypeError(f"the {stage} probe gave {type(facts).__name__}, not {kind.__name__}")
        return facts

    # ---- running a stage ---------------------------------------------------------------------
    def run(self, stage: str) -> StageRecord:
        record = self.records.get(stage)
        if record is not None:
            return record
        spec = STAGES[stage]
        record = StageRecord(ran=True)
        self.records[stage] = record
        if spec.destructive and not self.ctx.destructive:
            record.error = f"destructive probe '{stage}' not requested (run with --vmr-destructive)"
            return record
        if stage not in UNGATED:
            ready = self.run("readiness")  # every stage starts from the one readiness wait of the run
            if ready.facts is None:
                record.error = f"the deployment is not ready: {ready.error}"
                return record
            if spec.destructive and not ready.facts.ready:
                record.error = self.ctx.masker(f"destructive probe '{stage}' not run: {not_ready(ready.facts)}")
                self.ctx.log(f"stage {stage} skipped: the deployment is not ready")
                return record
        started = time.monotonic()
        outer, self.ctx.stage = self.ctx.stage, stage
        try:
            fn = getattr(importlib.import_module(spec.qualified_module), spec.function)
            record.facts = fn(self.ctx)
        except (StageError, DependencyDown) as exc:
            record.error = self.ctx.masker(str(exc))
        except Exception as exc:  # a client or the stage itself broke: a short cause, never a traceback
            record.error = self.ctx.masker(stage_failure(stage, exc))
            record.failed = True
        finally:
            self.ctx.stage = outer
            record.seconds = time.monotonic() - started
            self.ctx.log(f"stage {stage} done", seconds=round(record.seconds, 3), error=record.error)
        if spec.destructive:  # leave the deployment ready for the stages after this one
            try:
                self.ctx.deployment(refresh=True)
            except Exception as exc:  # the next stage's own Get Deployment says so, if it matters
                self.ctx.log(f"stage {stage}: Get Deployment afterwards failed", error=self.ctx.masker(str(exc)))
        return record


def not_ready(readiness: ReadinessFacts) -> str:
    """Why the readiness wait did not end ready, naming the instances (for a skipped destructive probe)."""
    how = (
        "an instance reached a failed status"
        if readiness.failed_fast
        else f"it was not ready within the {readiness.deadline:g} s readiness deadline"
    )
    bad = [f"{i.name} is {i.status or 'without a status'}" for i in readiness.instances if i.classification != HEALTHY]
    if readiness.deployment_status != RUNNING:
        bad.insert(0, f"the deployment is {readiness.deployment_status or 'without a status'}")
    if not readiness.instances:
        bad.append("it has no instances")
    return f"the deployment is not ready ({how}): {', '.join(bad) or 'not every instance is ReadyRole'}"


def stage_failure(stage: str, exc: BaseException, limit: int = 400) -> str:
    """One line for an unexpected exception of a stage: what, the message, and where it was raised."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        parts = Path(last.filename).parts
        short = "/".join(parts[-3:]) if len(parts) >= 3 else last.filename
        where = f" (raised at {short}:{last.lineno})"
    return f"the {stage} probe could not finish: {type(exc).__name__}: {text or '(no message)'}{where}"


class _Notes(Mapping[str, str]):
    """Why a stage attribute is None (a read-only mapping, filled as stages run)."""

    def __init__(self, subject: LiveSubject) -> None:
        self.subject = subject

    def __getitem__(self, key: str) -> str:
        record = self.subject.records.get(key)
        if record is None or not record.error:
            raise KeyError(key)
        return record.error

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, r in self.subject.records.items() if r.error])

    def __len__(self) -> int:
        return sum(1 for r in self.subject.records.values() if r.error)
