"""The probes of a live run: which function gathers each stage's facts, which are destructive, which chart each
feeds. The only place that says so: :class:`harness.live.subject.LiveSubject` runs them, the pytest plugin
marks destructive items and attaches charts from it.

Kept free of heavy imports (the plugin reads it while collecting offline artefacts too).
"""

from __future__ import annotations

from dataclasses import dataclass

PROBES = "harness.live.probes"


@dataclass(frozen=True)
class Stage:
    #: the subject's attribute (``subject.reimage``) and the name in ``requires`` of the rules that read it
    name: str
    #: module under :data:`PROBES` and the function ``(LiveContext) -> facts`` in it
    module: str
    function: str
    #: reimages, reboots or takes an instance out of Ready: runs only with ``--vmr-destructive``, and only
    #: on a deployment the readiness wait found ready
    destructive: bool = False
    #: the ``ctx.chart`` key whose picture the stage's rules carry into the report (None: no picture)
    chart: str | None = None

    @property
    def qualified_module(self) -> str:
        return f"{PROBES}.{self.module}"


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("deployment", "deployment", "run_deployment"),
        Stage("readiness", "deployment", "run_readiness"),
        Stage("endpoints", "endpoints", "run"),
        Stage("guest", "guest", "run"),
        Stage("rotation", "rotation", "run", chart="lb-spread"),
        Stage("drain", "drain", "run", destructive=True, chart="lb-spread"),
        Stage("reimage", "reimage", "run_reimage", destructive=True, chart="reimage-timeline"),
        # the report draws one timeline picture, the reimage's: the reboot rules carry it too
        Stage("reboot", "reimage", "run_reboot", destructive=True, chart="reimage-timeline"),
    )
}

#: stages that change the deployment (reimage, reboot, take an instance out of rotation)
DESTRUCTIVE: frozenset[str] = frozenset(name for name, s in STAGES.items() if s.destructive)
#: stages that run without waiting for readiness first (they are the wait, or what it reads)
UNGATED: frozenset[str] = frozenset({"deployment", "readiness"})


def chart_of(requires: tuple[str, ...]) -> str | None:
    """The chart a rule reading these stages carries (the first stage that feeds one)."""
    return next((STAGES[r].chart for r in requires if r in STAGES and STAGES[r].chart), None)
