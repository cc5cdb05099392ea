"""JSON Schemas for ARM responses, derived from the models azure-mgmt-compute / azure-mgmt-network generate from
the published API description (Azure/azure-rest-api-specs, TypeSpec → OpenAPI → Python, for the api-version
each package serves): every property the model declares with its wire name and type, enums closed to their
known values, non-optional properties required, and no property the model does not declare.

The SDK's deserializer ignores unknown keys and wrong types; these schemas do not, so a response that the
client would silently half-read fails here.
"""

from __future__ import annotations

import datetime
import enum
import sys
import types
import typing
from typing import Any


def _rest_fields(cls: type) -> dict[str, tuple[str, Any]]:
    """attribute → (wire name, annotation), through the model's MRO (as model_base.Model.__new__ does)."""
    out: dict[str, tuple[str, Any]] = {}
    for klass in reversed(cls.__mro__):
        module = sys.modules.get(klass.__module__)
        annotations = getattr(klass, "__annotations__", {})
        for attr, value in vars(klass).items():
            if attr.startswith("_") or not hasattr(value, "_type") or not hasattr(value, "_rest_name_input"):
                continue
            raw = annotations.get(attr)
            hint = _evaluate(raw, module) if raw is not None else Any
            out[attr] = (value._rest_name_input or attr, hint)
    return out


def _namespace(module: Any) -> dict[str, Any]:
    namespace = dict(vars(module)) if module is not None else {}
    namespace.setdefault("typing", typing)
    package = ".".join(module.__name__.split(".")[:3]) + ".models" if module is not None else ""
    if package in sys.modules:
        namespace["_models"] = sys.modules[package]
    return namespace


def _evaluate(raw: Any, module: Any) -> Any:
    """The SDK's own annotations ("_models.X", Optional["_models.X"]) as types."""
    if isinstance(raw, str):
        raw = eval(raw, _namespace(module))
    return _resolve(raw, module)


def _resolve(hint: Any, module: Any) -> Any:
    if isinstance(hint, str):
        return _resolve(eval(hint, _namespace(module)), module)
    if isinstance(hint, typing.ForwardRef):
        return _resolve(eval(hint.__forward_arg__, _namespace(module)), module)
    args = typing.get_args(hint)
    if not args:
        return hint
    resolved = tuple(_resolve(a, module) for a in args)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return typing.Union[resolved]  # noqa: UP007
    if origin is typing.Literal:
        return hint
    return origin[resolved] if origin is not None else hint


class Builder:
    def __init__(self) -> None:
        self.definitions: dict[str, Any] = {}

    def schema_for(self, cls: type) -> dict[str, Any]:
        ref = self.model(cls)
        return {"$ref": ref["$ref"], "definitions": self.definitions}

    def model(self, cls: type) -> dict[str, Any]:
        name = f"{cls.__module__.split('.')[2]}.{cls.__name__}"
        if name not in self.definitions:
            self.definitions[name] = {}  # placeholder: recursive models
            props, required = {}, []
            for _attr, (wire, hint) in _rest_fields(cls).items():
                optional, inner = _unwrap_optional(hint)
                props[wire] = self.annotation(inner)
                if not optional:
                    required.append(wire)
            self.definitions[name] = {
                "type": "object",
                "properties": props,
                "required": sorted(required),
                "additionalProperties": False,
            }
        return {"$ref": f"#/definitions/{name}"}

    def annotation(self, hint: Any) -> dict[str, Any]:
        _optional, hint = _unwrap_optional(hint)
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if hint is Any or hint is None:
            return {}
        if hint is str:
            return {"type": "string"}
        if hint is bool:
            return {"type": "boolean"}
        if hint is int:
            return {"type": "integer"}
        if hint is float:
            return {"type": "number"}
        if hint in (datetime.datetime, datetime.date, datetime.timedelta, bytes):
            return {"type": "string"}
        if origin in (list, typing.List):  # noqa: UP006
            return {"type": "array", "items": self.annotation(args[0]) if args else {}}
        if origin in (dict, typing.Dict):  # noqa: UP006
            return {"type": "object", "additionalProperties": self.annotation(args[1]) if len(args) > 1 else {}}
        if origin is typing.Literal:
            return {"enum": list(args)}
        if origin in (typing.Union, types.UnionType):
            enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
            if enums:
                return {"type": "string", "enum": sorted({str(m.value) for e in enums for m in e})}
            return {"anyOf": [self.annotation(a) for a in args]}
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return {"type": "string", "enum": sorted(str(m.value) for m in hint)}
        if isinstance(hint, type) and hasattr(hint, "__mro__") and any(k.__name__ == "Model" for k in hint.__mro__):
            return self.model(hint)
        raise TypeError(f"no JSON Schema for annotation {hint!r}")


def _unwrap_optional(hint: Any) -> tuple[bool, Any]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) < len(typing.get_args(hint)):
            return True, args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
    return False, hint


def schema(model: type) -> dict[str, Any]:
    return Builder().schema_for(model)


def list_schema(model: type) -> dict[str, Any]:
    """A page of a list operation: ``{"value": [...], "nextLink"?}``."""
    built = Builder()
    item = built.model(model)
    return {
        "type": "object",
        "properties": {"value": {"type": "array", "items": item}, "nextLink": {"type": "string"}},
        "required": ["value"],
        "additionalProperties": False,
        "definitions": built.definitions,
    }
