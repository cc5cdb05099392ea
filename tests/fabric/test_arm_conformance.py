"""tests/fabric/arm_openapi.py on small Swagger 2.0 descriptions laid out as in Azure/azure-rest-api-specs, so the
operation lookup, the cross-file validation and the $ref closure are tested without a checkout of the repository
(the fabric test that uses them against a real checkout is skipped without one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fabric import arm_openapi

NET = "specification/network/resource-manager/Microsoft.Network/stable"
LB_PATH = (
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Network"
    "/loadBalancers/{loadBalancerName}"
)
NIC_PATH = (
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute"
    "/virtualMachineScaleSets/{virtualMachineScaleSetName}/networkInterfaces"
)
SERVED_LB = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/loadbalancers/lb"
SERVED_NICS = (
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web/networkInterfaces"
)


def _write(root: Path, relative: str, document: dict[str, Any]) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), "utf-8")


def _operation(schema_ref: str, api_version: str) -> dict[str, Any]:
    return {
        "get": {
            "operationId": "Get",
            "parameters": [{"$ref": f"./network.json#/parameters/{api_version}"}],
            "responses": {"200": {"description": "OK", "schema": {"$ref": schema_ref}}},
        }
    }


def _version(root: Path, version: str, *, extra_property: bool) -> None:
    """One stable folder: network.json (parameters, a shared definition), loadBalancer.json, vmssNic.json."""
    folder = f"{NET}/{version}"
    _write(
        root,
        f"{folder}/network.json",
        {
            "swagger": "2.0",
            "paths": {},
            "parameters": {
                "ApiVersionParameter": {"name": "api-version", "in": "query", "type": "string"},
                "ApiVersionVmssParameter": {
                    "name": "api-version",
                    "in": "query",
                    "type": "string",
                    "enum": ["2017-03-30"],
                },
            },
            "definitions": {"SubResource": {"properties": {"id": {"type": "string"}}}},
        },
    )
    properties: dict[str, Any] = {
        "frontendPort": {"type": "integer"},
        "probe": {"$ref": "./network.json#/definitions/SubResource"},
    }
    if extra_property:
        properties["probeThreshold"] = {"type": "integer"}
    _write(
        root,
        f"{folder}/loadBalancer.json",
        {
            "swagger": "2.0",
            "paths": {LB_PATH: _operation("#/definitions/LoadBalancer", "ApiVersionParameter")},
            "definitions": {
                "LoadBalancer": {
                    "properties": {
                        "name": {"type": "string", "readOnly": True},
                        "properties": {"$ref": "#/definitions/Props"},
                    },
                    "x-ms-azure-resource": True,
                },
                "Props": {"properties": properties},
            },
        },
    )
    _write(
        root,
        f"{folder}/vmssNic.json",
        {
            "swagger": "2.0",
            "paths": {NIC_PATH: _operation("./loadBalancer.json#/definitions/LoadBalancer", "ApiVersionVmssParameter")},
        },
    )


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    _version(tmp_path, "2019-02-01", extra_property=False)
    _version(tmp_path, "2021-02-01", extra_property=True)
    _write(tmp_path, f"{NET}/2021-02-01/examples/LoadBalancerGet.json", {"parameters": {}})  # not a description
    return tmp_path


def test_the_newest_description_not_newer_than_the_served_api_version(specs: Path) -> None:
    newest = arm_openapi.operation(specs, "network", SERVED_LB, "GET", "2026-03-01")
    assert newest is not None and (newest.folder, newest.api_version) == ("2021-02-01", "2021-02-01")
    assert newest.template == LB_PATH and newest.spec["operationId"] == "Get"
    older = arm_openapi.operation(specs, "network", SERVED_LB, "GET", "2020-01-01")
    assert older is not None and older.folder == "2019-02-01"
    assert arm_openapi.operation(specs, "network", SERVED_LB, "GET", "2018-10-01") is None
    assert arm_openapi.operation(specs, "network", SERVED_LB, "DELETE", "2026-03-01") is None
    assert arm_openapi.operation(specs, "network", SERVED_LB + "/probes", "GET", "2026-03-01") is None


def test_an_operation_pinned_to_its_own_api_version_is_found_in_newer_folders(specs: Path) -> None:
    op = arm_openapi.operation(specs, "network", SERVED_NICS.lower(), "get", "2018-10-01")
    assert op is not None and (op.folder, op.api_version) == ("2021-02-01", "2017-03-30")
    assert arm_openapi.operation(specs, "network", SERVED_NICS, "GET", "2016-12-01") is None


def test_validation_follows_refs_across_files_and_lets_newer_properties_pass(specs: Path) -> None:
    op = arm_openapi.operation(specs, "network", SERVED_LB, "GET", "2026-03-01")
    assert op is not None
    validator = arm_openapi.validator(op)
    good = {"name": "lb", "properties": {"frontendPort": 80, "probe": {"id": "p"}, "addedIn2030": [1]}}
    assert list(validator.iter_errors(good)) == []
    bad = {"name": 7, "properties": {"frontendPort": "80", "probe": {"id": 5}}}
    messages = sorted(e.message for e in validator.iter_errors(bad))
    assert messages == ["'80' is not of type 'integer'", "5 is not of type 'string'", "7 is not of type 'string'"]
    pinned = arm_openapi.operation(specs, "network", SERVED_NICS, "GET", "2018-10-01")
    assert pinned is not None
    assert [e.message for e in arm_openapi.validator(pinned).iter_errors({"properties": {"probe": []}})] == [
        "[] is not of type 'object'"
    ]


def test_the_closure_is_the_files_the_operations_reach(specs: Path) -> None:
    lb = arm_openapi.operation(specs, "network", SERVED_LB, "GET", "2026-03-01")
    nics = arm_openapi.operation(specs, "network", SERVED_NICS, "GET", "2018-10-01")
    assert lb is not None and nics is not None
    names = [p.relative_to(specs).as_posix() for p in arm_openapi.closure([lb, nics])]
    assert names == [f"{NET}/2021-02-01/{f}" for f in ("loadBalancer.json", "network.json", "vmssNic.json")]
