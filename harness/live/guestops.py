"""Helpers of the probes that work inside instances (``guest``, ``reimage``): the role's csdef entry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.facts.servicemodel import RoleDef, ServiceDefinition
from harness.live.deployment_source import definition

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.live.target import Target


def definition_of(target: Target) -> ServiceDefinition | None:
    """The csdef facts (``target.model.csdef``), or None (not named, or unreadable)."""
    return definition(target)[0]


def role_of(definition: ServiceDefinition | None, role: str) -> RoleDef | None:
    """The csdef's entry for ``role`` (None without a csdef, or when it does not declare the role)."""
    if definition is None:
        return None
    return next((r for r in definition.roles if r.name == role), None)


__all__ = ["definition_of", "role_of"]
