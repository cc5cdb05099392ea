"""Probes ``deployment`` and ``readiness``: Get Deployment as facts, and the one wait until it is ready.

The work is in :mod:`harness.live.deployment_source` (the context needs it too: its cached Get Deployment).
"""

from __future__ import annotations

from harness.facts.live.deployment import DeploymentFacts, ReadinessFacts
from harness.live.context import LiveContext


def run_deployment(ctx: LiveContext) -> DeploymentFacts:
    facts = ctx.deployment()
    ctx.evidence("deployment.xml", facts.xml)
    return facts


def run_readiness(ctx: LiveContext) -> ReadinessFacts:
    return ctx.wait_ready()


__all__ = ["run_deployment", "run_readiness"]
