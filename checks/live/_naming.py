"""How live findings name an instance: a scale-set VM by its computer name AND instance id
(``webvm000002 (instance 2)``), a classic role instance by its name (``WebVM_IN_2``, unchanged)."""

from __future__ import annotations

from harness.facts.live.deployment import DeploymentFacts
from harness.facts.live.subject import LiveFacts


def instance_label(subject: LiveFacts, name: str | None) -> str:
    """``name`` as findings show it: the deployment's ``label`` of that instance (computer name and instance id
    on a VM scale set; the name itself for a classic role instance); ``name`` when the deployment facts are not
    there or do not know it."""
    if not name:
        return name or ""
    deployment = deployment_of(subject)
    found = deployment.instance(name) if deployment is not None else None
    return found.label if found is not None else name


def deployment_of(subject: LiveFacts) -> DeploymentFacts | None:
    """The subject's deployment facts, or None when it has none."""
    deployment = getattr(subject, "deployment", None)
    return deployment if isinstance(deployment, DeploymentFacts) else None
