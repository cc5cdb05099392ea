"""Azure's published examples (tests/data/azure-rest-api-specs, see SOURCE.md there) and how an answer of the
fabric is compared with one: in shape, not in values, and through the model the real client reads it into."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPECS = Path(__file__).resolve().parents[1] / "data" / "azure-rest-api-specs"


def example(name: str) -> dict[str, Any]:
    """``name`` is ``<folder>/<file stem>``, e.g. ``compute-2026-04-01/VirtualMachineScaleSet_List_MinimumSet_Gen``."""
    return dict(json.loads((SPECS / f"{name}.json").read_text("utf-8")))


def strip_nulls(value: Any) -> Any:
    """ARM examples write absent properties as null; the wire leaves them out."""
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def shape_mismatches(ours: Any, published: Any, path: str = "") -> list[str]:
    """Where a property both bodies have differs in JSON type (values are not compared). Every item of one of our
    arrays is compared with the example's item at the same index, or its last one."""
    if published is None:
        return []
    if _kind(ours) != _kind(published):
        return [f"{path or '/'}: ours is {_kind(ours)}, the example's is {_kind(published)}"]
    out: list[str] = []
    if isinstance(ours, dict):
        for key in ours.keys() & published.keys():
            out += shape_mismatches(ours[key], published[key], f"{path}/{key}")
    elif isinstance(ours, list) and published:
        for index, item in enumerate(ours):
            out += shape_mismatches(item, published[min(index, len(published) - 1)], f"{path}/{index}")
    return out


def common_paths(ours: Any, published: Any) -> int:
    """How many property paths both bodies have (through the first item of arrays)."""
    if isinstance(ours, dict) and isinstance(published, dict):
        return sum(1 + common_paths(ours[k], published[k]) for k in ours.keys() & published.keys())
    if isinstance(ours, list) and isinstance(published, list) and ours and published:
        return common_paths(ours[0], published[0])
    return 0


def unread_by_model(model: Any, published: Any, path: str = "") -> list[str]:
    """Every property the example has and the client's model holds must be reachable through the model's own
    attributes (its wire name mapped by the SDK) and not None: what a caller of the client would read."""
    from tests.fabric.arm_sdk_schema import _rest_fields

    if not isinstance(published, dict):
        return []
    fields = {wire: attr for attr, (wire, _hint) in _rest_fields(type(model)).items()}
    if not fields:  # a dict-typed property (tags, identities): plain data
        return []
    wire = model.as_dict() if hasattr(model, "as_dict") else {}
    out: list[str] = []
    for key in sorted(wire.keys() & published.keys()):
        where = f"{path}/{key}"
        if key not in fields:
            out.append(f"{where}: the client's {type(model).__name__} has no attribute for it")
            continue
        value = getattr(model, fields[key])
        if value is None:
            out.append(f"{where}: the client's {type(model).__name__}.{fields[key]} is None")
        elif isinstance(value, list) and value and isinstance(published[key], list) and published[key]:
            out += unread_by_model(value[0], published[key][0], f"{where}/0")
        else:
            out += unread_by_model(value, published[key], where)
    return out
