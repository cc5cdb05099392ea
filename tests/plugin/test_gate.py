"""Selection, severity threshold, overrides and exit codes."""

from __future__ import annotations

import pytest

from tests.plugin.test_collection import collected_ids


def test_select_by_id_prefix_and_name(pytester, model):
    args = ("ServiceDefinition.csdef", "ServiceConfiguration.Cloud.cscfg", "--collect-only", "-q")
    ids = collected_ids(pytester.runpytest(*args, "--vmr-select", "VMR50"))
    assert ids and all(i.startswith("VMR50") for i in ids)
    ids = collected_ids(pytester.runpytest(*args, "--vmr-select", "single-instance-role"))
    assert ids == ["VMR507[ServiceConfiguration.Cloud.cscfg]"]
    ids = collected_ids(pytester.runpytest(*args, "--vmr-select", "VMR507,VMR506"))
    assert sorted(ids) == ["VMR506[ServiceConfiguration.Cloud.cscfg]", "VMR507[ServiceConfiguration.Cloud.cscfg]"]
    ids = collected_ids(pytester.runpytest(*args, "--vmr-ignore", "VMR5", "--vmr-ignore", "VMR3"))
    assert ids and not any(i.startswith(("VMR5", "VMR3")) for i in ids)


def test_unknown_selector_is_a_usage_error(pytester, model):
    result = pytester.runpytest("ServiceDefinition.csdef", "--vmr-select", "VMR59x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--vmr-select: 'VMR59x' matches no rule*"])


def test_fail_on_threshold(pytester, model):
    model(count=1)  # VMR507 single-instance-role, medium
    ok = pytester.runpytest("ServiceConfiguration.Cloud.cscfg", "--vmr-fail-on", "high")
    assert ok.ret == pytest.ExitCode.OK
    bad = pytester.runpytest("ServiceConfiguration.Cloud.cscfg", "--vmr-fail-on", "medium")
    assert bad.ret == pytest.ExitCode.TESTS_FAILED
    bad.stdout.fnmatch_lines(["*VMR507 single-instance-role: 1 finding(s) at or above medium*"])
    assert bad.parseoutcomes()["failed"] == 1
    wrong = pytester.runpytest("ServiceConfiguration.Cloud.cscfg", "--vmr-fail-on", "severe")
    assert wrong.ret == pytest.ExitCode.USAGE_ERROR


def test_severity_override(pytester, model):
    model(count=1)
    result = pytester.runpytest("ServiceConfiguration.Cloud.cscfg", "--vmr-severity", "VMR507=critical")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*[[]critical[]] VMR507*"])
    result = pytester.runpytest("ServiceConfiguration.Cloud.cscfg", "--vmr-severity", "VMR507")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_exit_code_when_nothing_to_lint(pytester):
    assert pytester.runpytest(".").ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_missing_option_artefact_is_a_usage_error(pytester):
    result = pytester.runpytest("--vmr-package", "nope.cspkg")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*artefact not found*nope.cspkg*"])
