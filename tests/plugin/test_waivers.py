"""Waivers: justification and expiry required, fail closed, injected clock via --vmr-today."""

from __future__ import annotations

import textwrap

import pytest

WAIVER = """
waivers:
  - rule: {rule}
    target: "{target}"
    justification: "OPS-42: single instance until the migration"
    expires: {expires}
"""


def write_waivers(pytester, rule="VMR507", target="**/*.cscfg", expires="2027-01-31"):
    pytester.path.joinpath("waivers.yml").write_text(WAIVER.format(rule=rule, target=target, expires=expires))


@pytest.fixture
def single_instance(pytester, model):
    model(count=1)
    return ("ServiceConfiguration.Cloud.cscfg", "--vmr-fail-on", "medium", "-rs")


def test_valid_waiver_turns_the_finding_into_a_skip_with_its_justification(pytester, single_instance):
    write_waivers(pytester)
    result = pytester.runpytest(*single_instance, "--vmr-waivers", "waivers.yml", "--vmr-today", "2026-12-01")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*SKIPPED*waived: OPS-42: single instance until the migration*"])


def test_waiver_by_rule_name_and_glob(pytester, single_instance):
    write_waivers(pytester, rule="single-instance-role", target="ServiceConfiguration.*.cscfg")
    result = pytester.runpytest(*single_instance, "--vmr-waivers", "waivers.yml", "--vmr-today", "2026-12-01")
    assert result.ret == pytest.ExitCode.OK


def test_waiver_for_another_target_does_not_apply(pytester, single_instance):
    write_waivers(pytester, target="other/*.cscfg")
    result = pytester.runpytest(*single_instance, "--vmr-waivers", "waivers.yml", "--vmr-today", "2026-12-01")
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_expired_waiver_fails_closed_and_says_so(pytester, single_instance):
    write_waivers(pytester, expires="2027-01-31")
    on_the_day = pytester.runpytest(*single_instance, "--vmr-waivers", "waivers.yml", "--vmr-today", "2027-01-31")
    assert on_the_day.ret == pytest.ExitCode.OK
    after = pytester.runpytest(*single_instance, "--vmr-waivers", "waivers.yml", "--vmr-today", "2027-02-01")
    assert after.ret == pytest.ExitCode.TESTS_FAILED
    after.stdout.fnmatch_lines(["*waiver #1 (VMR507 on **/*.cscfg) expired on 2027-01-31*"])


def test_clock_from_environment(pytester, single_instance, monkeypatch):
    write_waivers(pytester, expires="2027-01-31")
    monkeypatch.setenv("VMR_TODAY", "2030-01-01")
    assert pytester.runpytest(*single_instance, "--vmr-waivers", "waivers.yml").ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("waivers:\n  - rule: VMR507\n    target: '*'\n    expires: 2027-01-01\n", "'justification' is required"),
        ("waivers:\n  - rule: VMR507\n    target: '*'\n    justification: x\n", "'expires' is required"),
        (
            "waivers:\n  - rule: VMR507\n    target: '*'\n    justification: x\n    expires: soon\n",
            "'expires' must be a date",
        ),
        ("waivers:\n  - rule: VMR507\n    target: '*'\n    justification: ''\n    expires: 2027-01-01\n", "non-empty"),
        ("waivers:\n  - rule: VMR507\n    target: '*'\n    why: x\n", "unknown keys"),
        ("waivers: [unclosed\n", "not valid YAML"),
        ("- just a list item that is not a mapping\n", "expected a mapping"),
    ],
)
def test_malformed_waivers_file_is_a_usage_error_before_collection(pytester, model, content, problem):
    pytester.path.joinpath("waivers.yml").write_text(content)
    result = pytester.runpytest("ServiceConfiguration.Cloud.cscfg", "--vmr-waivers", "waivers.yml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "waivers.yml" in err and problem in err
    assert "collected" not in result.stdout.str()


def test_missing_waivers_file_is_a_usage_error(pytester, model):
    result = pytester.runpytest("ServiceConfiguration.Cloud.cscfg", "--vmr-waivers", "absent.yml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*absent.yml: cannot read it*"])


def test_secret_rules_are_not_waivable_by_default(pytester, model):
    from tests.plugin.conftest import SECRET_KEY

    model(greeting=f"DefaultEndpointsProtocol=https;AccountName=shopdata;AccountKey={SECRET_KEY}")
    pytester.path.joinpath("waivers.yml").write_text(
        textwrap.dedent(
            """
            waivers:
              - rule: VMR3
                target: "*"
                justification: "we like our keys where they are"
                expires: 2099-01-01
            """
        )
    )
    args = ("ServiceConfiguration.Cloud.cscfg", "--vmr-waivers", "waivers.yml", "--vmr-today", "2026-12-01")
    refused = pytester.runpytest(*args)
    assert refused.ret == pytest.ExitCode.TESTS_FAILED
    refused.stdout.fnmatch_lines(["*not applied: VMR30* is not waivable*"])
    allowed = pytester.runpytest(*args, "--vmr-allow-secret-waivers")
    assert allowed.ret == pytest.ExitCode.OK
