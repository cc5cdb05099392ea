"""Baselines: fingerprints are rule + artefact + logical location, never line numbers."""

from __future__ import annotations

import json

import pytest


def test_baseline_round_trip(pytester, model):
    model(count=1)
    args = ("ServiceConfiguration.Cloud.cscfg", "--vmr-fail-on", "medium")
    assert pytester.runpytest(*args).ret == pytest.ExitCode.TESTS_FAILED

    created = pytester.runpytest(*args, "--vmr-baseline", "baseline.json", "--vmr-create-baseline")
    assert created.ret == pytest.ExitCode.OK
    data = json.loads(pytester.path.joinpath("baseline.json").read_text())
    assert data["format"] == "vmrole-harness/baseline"
    rules = {f["rule"] for f in data["findings"]}
    assert "VMR507" in rules
    assert all(f["artefact"] == "ServiceConfiguration.Cloud.cscfg" for f in data["findings"])

    again = pytester.runpytest(*args, "--vmr-baseline", "baseline.json", "-rs")
    assert again.ret == pytest.ExitCode.OK
    again.stdout.fnmatch_lines(["*SKIPPED*baselined: in baseline*baseline.json*"])


def test_baseline_survives_moved_lines_but_not_new_findings(pytester, model):
    model(count=1)
    args = ("ServiceConfiguration.Cloud.cscfg", "--vmr-fail-on", "medium")
    pytester.runpytest(*args, "--vmr-baseline", "baseline.json", "--vmr-create-baseline")

    cfg = pytester.path / "ServiceConfiguration.Cloud.cscfg"
    text = cfg.read_text()
    cfg.write_text(text.replace("<Role ", "<!-- moved -->\n\n\n  <Role ", 1))
    assert pytester.runpytest(*args, "--vmr-baseline", "baseline.json").ret == pytest.ExitCode.OK

    cfg.write_text(text.replace('name="Web"', 'name="Storefront"'))  # a new role name: new location
    (pytester.path / "ServiceDefinition.csdef").write_text(
        (pytester.path / "ServiceDefinition.csdef").read_text().replace('name="Web"', 'name="Storefront"')
    )
    assert pytester.runpytest(*args, "--vmr-baseline", "baseline.json").ret == pytest.ExitCode.TESTS_FAILED


def test_bad_baseline_file_is_a_usage_error(pytester, model):
    pytester.path.joinpath("baseline.json").write_text('{"format": "something-else", "findings": []}')
    result = pytester.runpytest("ServiceConfiguration.Cloud.cscfg", "--vmr-baseline", "baseline.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*baseline.json: not a vmrole-harness baseline*"])
    result = pytester.runpytest("ServiceConfiguration.Cloud.cscfg", "--vmr-create-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
