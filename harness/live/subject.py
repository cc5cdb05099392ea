"""The subject live rules see: one lazy attribute per stage, each run once per process."""

from __future__ import annotations

import importlib
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.engine.artefact import Artefact
from harness.live.context import LiveContext
from harness.live.errors import StageError
from harness.live.health import DependencyDown

# attribute -> (module under harness.suites.live, function, destructive)
STAGES: dict[str, tuple[str, str, bool]] = {
    "deployment": ("deployment", "run_deployment", False),
    "readiness": ("deployment", "run_readiness", False),
    "endpoints": ("endpoints", "run", False),
    "guest": ("guest", "run", False),
    "rotation": ("rotation", "run", False),
    "drain": ("drain", "run", True),
    "reimage": ("reimage", "run_reimage", True),
    "reboot": ("reimage", "run_reboot", True),
}


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
    when it could not run or was not requested."""

    def __init__(self, artefact: Artefact, ctx: LiveContext) -> None:
        self.artefact = artefact
        self.ctx = ctx
        self.records: dict[str, StageRecord] = {}
        self.notes = _Notes(self)

    @property
    def target_name(self) -> str:
        return self.ctx.target.name

    def __getattr__(self, name: str) -> Any:
        if name not in STAGES:
            raise AttributeError(name)
        record = self.run(name)
        if record.failed:
            import pytest

            # a short failure (no traceback: the cause is in the message), never pytest's raw traceback
            pytest.fail(record.error or f"the {name} probe failed", pytrace=False)
        return record.facts

    def run(self, stage: str) -> StageRecord:
        record = self.records.get(stage)
        if record is not None:
            return record
        module, function, destructive = STAGES[stage]
        record = StageRecord(ran=True)
        self.records[stage] = record
        if destructive and not self.ctx.destructive:
            record.error = f"destructive probe '{stage}' not requested (run with --vmr-destructive)"
            return record
        if stage not in ("deployment", "readiness"):
            ready = self.run("readiness")  # every stage starts from a ready deployment
            if ready.facts is None:
                record.error = f"the deployment is not ready: {ready.error}"
                return record
        started = time.monotonic()
        outer, self.ctx.stage = getattr(self.ctx, "stage", None), stage
        try:
            fn = getattr(importlib.import_module(f"harness.suites.live.{module}"), function)
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
        if destructive:  # leave the deployment ready for the stages after this one
            try:
                self.ctx.deployment(refresh=True)
            except Exception as exc:  # the next stage's own Get Deployment says so, if it matters
                self.ctx.log(f"stage {stage}: Get Deployment afterwards failed", error=self.ctx.masker(str(exc)))
        return record


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


class _Notes:
    """Why a stage attribute is None (a read-only mapping, filled as stages run)."""

    def __init__(self, subject: LiveSubject) -> None:
        self.subject = subject

    def get(self, key: str, default: str | None = None) -> str | None:
        record = self.subject.records.get(key)
        return record.error if record is not None and record.error else default
