"""Validation against the OpenAPI descriptions themselves, from a local checkout of
https://github.com/Azure/azure-rest-api-specs (``VMR_AZURE_REST_API_SPECS=/path/to/checkout``; the repository is
too large to ship in the test data).

For each definition the newest ``stable`` api-version not newer than the one served is used (the served one in a
current checkout); ``$ref``s are resolved across files (common-types, the Network files' web of references),
Swagger 2.0 schemas are read as JSON Schema draft 4 (``x-ms-*`` extensions and ``readOnly`` are annotations,
``discriminator`` names a property).
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

ENV = "VMR_AZURE_REST_API_SPECS"
PROVIDERS = {
    "compute": "specification/compute/resource-manager/Microsoft.Compute",
    "network": "specification/network/resource-manager/Microsoft.Network",
}


def checkout() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value and (Path(value) / "specification").is_dir() else None


@cache
def _load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text("utf-8-sig")))


def find(root: Path, provider: str, definition: str, served: str) -> tuple[Path, str] | None:
    """(file, api-version) of ``definition`` in the newest stable version ≤ ``served``."""
    versions: dict[str, list[Path]] = {}
    for stable in (root / PROVIDERS[provider]).glob("**/stable"):
        for folder in stable.iterdir():
            if folder.is_dir() and folder.name <= served:
                versions.setdefault(folder.name, []).extend(sorted(folder.glob("*.json")))
    for version in sorted(versions, reverse=True):
        for path in versions[version]:
            if definition in (_load(path).get("definitions") or {}):
                return path, version
    return None


def validator(path: Path, definition: str) -> Any:
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    def retrieve(uri: str) -> Resource[Any]:
        return DRAFT4.create_resource(_load(Path(uri.removeprefix("file://"))))

    registry: Registry[Any] = Registry(retrieve=retrieve)  # type: ignore[call-arg]
    return jsonschema.Draft4Validator({"$ref": f"file://{path}#/definitions/{definition}"}, registry=registry)
