"""Validation against the OpenAPI descriptions themselves, from a local checkout of
https://github.com/Azure/azure-rest-api-specs (``VMR_AZURE_REST_API_SPECS=/path/to/checkout``; neither the repository
nor the $ref closure of the files used is kept in the test data, see tests/data/azure-rest-api-specs/SOURCE.md).

A served request is matched to the *operation* that describes it: the ``paths`` template (case-insensitive, as ARM
routes) and method, in the newest ``stable`` folder whose api-version for that operation is not newer than the one
served. An operation's api-version is its folder's, unless its ``api-version`` parameter pins one (the scale-set NIC
and public-IP operations are pinned to 2017-03-30 / 2018-10-01 in every Network folder). The answer is validated
against that operation's ``responses/200/schema``, ``$ref``s resolved across files (common-types, the Network files'
web of references); Swagger 2.0 schemas are read as JSON Schema draft 4 (``x-ms-*`` extensions and ``readOnly`` are
annotations, ``discriminator`` names a property, ``format`` is not asserted, and a schema with ``properties`` but no
``type`` is an object, as AutoRest reads it).

What such a validation cannot see: an older description has no ``additionalProperties: false``, so properties added
after it pass unchecked, and enums it does not close (``x-ms-enum`` ``modelAsString``) accept any string.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

ENV = "VMR_AZURE_REST_API_SPECS"
PROVIDERS = {
    "compute": "specification/compute/resource-manager/Microsoft.Compute",
    "network": "specification/network/resource-manager/Microsoft.Network",
}


def checkout() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value).resolve() if value and (Path(value) / "specification").is_dir() else None


@cache
def _load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text("utf-8-sig")))


@dataclass(frozen=True)
class Operation:
    file: Path
    template: str
    method: str
    folder: str  # the stable folder's api-version
    api_version: str  # the operation's own (pinned, or the folder's)

    @property
    def pointer(self) -> str:
        escaped = self.template.replace("~", "~0").replace("/", "~1")
        return f"/paths/{escaped}/{self.method}/responses/200/schema"

    @property
    def spec(self) -> dict[str, Any]:
        return dict(_load(self.file)["paths"][self.template][self.method])


@cache
def _template(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}/]+\})", template)
    body = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(body + "/?", re.IGNORECASE)


def _at(node: Any, pointer: str) -> Any:
    """The node a JSON pointer (a ``$ref``'s fragment) names."""
    for segment in pointer.strip("/").split("/") if pointer.strip("/") else []:
        node = node[int(segment)] if isinstance(node, list) else node[segment.replace("~1", "/").replace("~0", "~")]
    return node


def _parameter(file: Path, value: dict[str, Any]) -> dict[str, Any]:
    ref = value.get("$ref")
    if not ref:
        return value
    target, _, fragment = ref.partition("#")
    return dict(_at(_load((file.parent / target).resolve()) if target else _load(file), fragment))


def _pinned(file: Path, spec: dict[str, Any]) -> str | None:
    for value in spec.get("parameters", []):
        parameter = _parameter(file, value)
        if parameter.get("name") == "api-version" and parameter.get("enum"):
            return str(parameter["enum"][0])
    return None


@cache
def _folders(root: Path, provider: str) -> list[tuple[str, list[Path]]]:
    """(api-version, description files) of every stable folder, newest first."""
    folders: dict[str, list[Path]] = {}
    for stable in (root / PROVIDERS[provider]).glob("**/stable"):
        for folder in stable.iterdir():
            if folder.is_dir():
                folders.setdefault(folder.name, []).extend(sorted(folder.glob("*.json")))
    return sorted(folders.items(), reverse=True)


def operation(root: Path, provider: str, path: str, method: str, served: str) -> Operation | None:
    """The newest description of ``method path`` whose api-version is not newer than ``served``."""
    method = method.lower()
    for folder, files in _folders(root, provider):
        for file in files:
            for template, item in (_load(file).get("paths") or {}).items():
                if method not in item or not _template(template).fullmatch(path):
                    continue
                version = _pinned(file, item[method]) or folder
                if version <= served:
                    return Operation(file, template, method, folder, version)
    return None


def _objectify(schema: Any) -> None:
    """A schema with ``properties`` (or a schema-valued ``additionalProperties``) and no ``type`` is an object, as
    AutoRest reads it and Azure's linter (MissingTypeObject) asks; in JSON Schema it would accept any value."""
    if not isinstance(schema, dict):
        return
    properties = schema.get("properties")
    extra = schema.get("additionalProperties")
    if "type" not in schema and (isinstance(properties, dict) or isinstance(extra, dict)):
        schema["type"] = "object"
    for sub in (properties or {}).values() if isinstance(properties, dict) else ():
        _objectify(sub)
    for sub in (extra, schema.get("items"), *schema.get("allOf", [])):
        _objectify(sub)


@cache
def _as_json_schema(path: Path) -> dict[str, Any]:
    document = json.loads(json.dumps(_load(path)))  # a copy: the lookups read the file as written
    for definition in (document.get("definitions") or {}).values():
        _objectify(definition)
    for item in (document.get("paths") or {}).values():
        for spec in item.values() if isinstance(item, dict) else ():
            for response in (spec.get("responses") or {}).values() if isinstance(spec, dict) else ():
                _objectify(response.get("schema"))
    return dict(document)


@cache
def validator(op: Operation) -> Any:
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    def retrieve(uri: str) -> Resource[Any]:
        return DRAFT4.create_resource(_as_json_schema(Path(uri.removeprefix("file://"))))

    registry: Registry[Any] = Registry(retrieve=retrieve)  # type: ignore[call-arg]
    ref = f"file://{op.file}#{quote(op.pointer, safe='/~')}"
    return jsonschema.Draft4Validator({"$ref": ref}, registry=registry)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def closure(operations: list[Operation]) -> list[Path]:
    """The description files the 200-response schemas of ``operations`` reach through ``$ref``s (and the files the
    operations' parameters come from): what a sparse checkout for these tests needs."""
    seen: set[tuple[Path, str]] = set()
    todo = [(op.file, op.pointer) for op in operations]
    todo += [(op.file, f"{op.pointer.removesuffix('/responses/200/schema')}/parameters") for op in operations]
    while todo:
        file, pointer = todo.pop()
        if (file, pointer) in seen:
            continue
        seen.add((file, pointer))
        for ref in _refs(_at(_load(file), pointer)):
            target, _, fragment = ref.partition("#")
            todo.append(((file.parent / target).resolve() if target else file, fragment))
    return sorted({file for file, _ in seen})
