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


RDP_CSDEF = """<?xml version="1.0" encoding="utf-8"?>
<ServiceDefinition name="Shop" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition">
  <WebRole name="Web" vmsize="Small">
    <Imports><Import moduleName="RemoteAccess" /><Import moduleName="RemoteForwarder" /></Imports>
  </WebRole>
</ServiceDefinition>
"""

RDP_CSCFG = """<?xml version="1.0" encoding="utf-8"?>
<ServiceConfiguration serviceName="Shop" osFamily="2" osVersion="*"
    xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration">
  <Role name="Web">
    <Instances count="2" />
    <ConfigurationSettings>
      <Setting name="Microsoft.WindowsAzure.Plugins.RemoteAccess.Enabled" value="true" />
      <Setting name="Microsoft.WindowsAzure.Plugins.RemoteAccess.AccountUsername" value="ops" />
      <Setting name="Microsoft.WindowsAzure.Plugins.RemoteAccess.AccountEncryptedPassword" value="" />
      <Setting name="Microsoft.WindowsAzure.Plugins.RemoteAccess.AccountExpiration"
               value="2027-06-30T23:59:59.0000000+00:00" />
      <Setting name="Microsoft.WindowsAzure.Plugins.RemoteForwarder.Enabled" value="true" />
    </ConfigurationSettings>
  </Role>
</ServiceConfiguration>
"""


def test_the_run_date_drives_account_expiry(pytester):
    pytester.path.joinpath("ServiceDefinition.csdef").write_text(RDP_CSDEF)
    pytester.path.joinpath("ServiceConfiguration.Cloud.cscfg").write_text(RDP_CSCFG)
    args = ("ServiceConfiguration.Cloud.cscfg", "--vmr-select", "rdp-account-expired", "--vmr-fail-on", "low")
    assert pytester.runpytest(*args, "--vmr-today", "2027-01-01").ret == pytest.ExitCode.OK
    soon = pytester.runpytest(*args, "--vmr-today", "2027-06-15")
    assert soon.ret == pytest.ExitCode.TESTS_FAILED
    soon.stdout.fnmatch_lines(["*[[]low[]] VMR533*"])
    expired = pytester.runpytest(*args, "--vmr-today", "2027-07-01")
    expired.stdout.fnmatch_lines(["*[[]medium[]] VMR533*"])


@pytest.mark.parametrize(
    "argv", [["lint", "--bogus"], ["lint", "--fail-on"], ["fabric", "bogus"], [], ["report", "merge"]], ids=str
)
def test_a_bad_command_line_is_a_usage_error_exit_4(argv, capsys):
    """README: 2 means interrupted, 4 a usage error; argparse's own exit code would be 2."""
    from harness.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 4
    assert "error:" in capsys.readouterr().err
