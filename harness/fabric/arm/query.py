"""The scale-set VM list's query options, as the Compute reference documents them
(https://learn.microsoft.com/en-us/rest/api/compute/virtual-machine-scale-set-vms/list):

- ``$filter``: ``startswith(instanceView/statuses/code, 'PowerState') eq true``,
  ``properties/latestModelApplied eq true`` or ``… eq false``;
- ``$select``: ``instanceView`` or ``instanceView/statuses``;
- ``$expand``: ``instanceView``;

and paging: a page holds at most ``page size`` VMs, the rest is behind ``nextLink`` (``$skiptoken``).

The reference lists the allowed values only; how a VM list renders a ``$select`` and what a value outside
them answers are not documented. The fabric's best estimate: ``$select=instanceView`` (and the PowerState
filter) add ``properties.instanceView`` as ``$expand`` does, ``instanceView/statuses`` (and the PowerState
filter) keep only its ``statuses`` (the PowerState ones for the filter: what the portal asks it for); any
other value is ``400 InvalidParameter`` naming the parameter (Compute's code for a bad parameter, with
``target`` as its other parameter errors carry).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from harness.fabric.arm.errors import ArmError

#: VMs per page. Compute does not document its page size; 1000 is the most ARM list operations return in one
#: page (``$top``'s usual ceiling). ``VMR_FABRIC_ARM_PAGE_SIZE`` (in the environment of ``fabric up``) changes it.
DEFAULT_PAGE_SIZE = 1000
PAGE_SIZE_ENV = "VMR_FABRIC_ARM_PAGE_SIZE"

_POWER_STATE = re.compile(
    r"^\s*startswith\(\s*instanceView/statuses/code\s*,\s*'PowerState'\s*\)\s+eq\s+true\s*$", re.IGNORECASE
)
_LATEST_MODEL = re.compile(r"^\s*properties/latestModelApplied\s+eq\s+(?P<value>true|false)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class VmListQuery:
    """What one VM list request asks for: the filter, what of the instance view to include, and where to start."""

    power_state_only: bool = False  # the PowerState filter: the instance view's PowerState statuses only
    latest_model: bool | None = None  # properties/latestModelApplied eq true|false
    instance_view: bool = False  # include properties.instanceView
    statuses_only: bool = False  # … with its statuses only
    skip: int = 0


def invalid(parameter: str, value: str, allowed: str) -> ArmError:
    return ArmError(
        400,
        "InvalidParameter",
        f"The value '{value}' of parameter '{parameter}' is not valid. Allowed values are {allowed}.",
        target=parameter,
    )


def parse_filter(value: str | None) -> tuple[bool, bool | None]:
    """(PowerState statuses only, latestModelApplied wanted or None) of a ``$filter``; 400 otherwise."""
    if value is None or not value.strip():
        return False, None
    if _POWER_STATE.match(value):
        return True, None
    m = _LATEST_MODEL.match(value)
    if m:
        return False, m.group("value").lower() == "true"
    raise invalid(
        "$filter",
        value,
        "'startswith(instanceView/statuses/code, 'PowerState') eq true', 'properties/latestModelApplied eq true', "
        "'properties/latestModelApplied eq false'",
    )


def parse_select(value: str | None) -> tuple[bool, bool]:
    """(include the instance view, its statuses only) of a ``$select``; 400 otherwise."""
    if value is None or not value.strip():
        return False, False
    wanted = value.strip().lower()
    if wanted == "instanceview":
        return True, False
    if wanted == "instanceview/statuses":
        return True, True
    raise invalid("$select", value, "'instanceView', 'instanceView/statuses'")


def parse_expand(value: str | None) -> bool:
    if value is None or not value.strip():
        return False
    if value.strip().lower() == "instanceview":
        return True
    raise invalid("$expand", value, "'instanceView'")


def skiptoken(offset: int) -> str:
    return base64.urlsafe_b64encode(f"vm:{offset}".encode("ascii")).decode("ascii").rstrip("=")


def parse_skiptoken(value: str | None) -> int:
    if value is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    m = re.fullmatch(r"vm:(\d{1,9})", text)
    if m is None:
        raise ArmError(
            400, "InvalidParameter", "The value of parameter '$skiptoken' is not valid.", target="$skiptoken"
        )
    return int(m.group(1))


def vm_list_query(filter_: str | None, select: str | None, expand: str | None, token: str | None) -> VmListQuery:
    power, latest = parse_filter(filter_)
    view, statuses = parse_select(select)
    expanded = parse_expand(expand)
    return VmListQuery(
        power_state_only=power,
        latest_model=latest,
        instance_view=view or expanded or power,
        statuses_only=(statuses or power) and not expanded,
        skip=parse_skiptoken(token),
    )


def page_size(value: str | None) -> int:
    """``VMR_FABRIC_ARM_PAGE_SIZE``: a positive whole number (default :data:`DEFAULT_PAGE_SIZE`)."""
    if value is None or not value.strip():
        return DEFAULT_PAGE_SIZE
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"{PAGE_SIZE_ENV}={value!r}: give a positive whole number of VMs per page")
    return int(value)
