"""Collection: which artefacts become items, and how items are named."""

from __future__ import annotations

import pytest


def collected_ids(result: pytest.RunResult) -> list[str]:
    return [line.split("::", 1)[1] for line in result.outlines if "::VMR" in line]


def test_files_named_on_the_command_line_become_one_item_per_rule(pytester, model):
    result = pytester.runpytest("ServiceDefinition.csdef", "ServiceConfiguration.Cloud.cscfg", "--collect-only", "-q")
    ids = collected_ids(result)
    assert "VMR001[ServiceDefinition.csdef]" in ids
    assert "VMR001[ServiceConfiguration.Cloud.cscfg]" in ids
    assert "VMR501[ServiceConfiguration.Cloud.cscfg]" in ids  # cross-file rule on the cscfg
    assert not any(i.startswith("VMR501[ServiceDefinition") for i in ids)  # not reported twice
    assert len(ids) == len(set(ids))


def test_directories_are_linted_only_with_discover(pytester, model):
    result = pytester.runpytest(".", "--collect-only", "-q")
    assert collected_ids(result) == []
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result = pytester.runpytest(".", "--vmr-discover", "--collect-only", "-q")
    assert len(collected_ids(result)) > 10


def test_option_paths_are_collected(pytester, model):
    sub = pytester.mkdir("elsewhere")
    (pytester.path / "ServiceDefinition.csdef").rename(sub / "Def.csdef")
    result = pytester.runpytest(
        "--vmr-csdef", "elsewhere/Def.csdef", "--vmr-cscfg", "ServiceConfiguration.Cloud.cscfg", "-q", "-rs"
    )
    assert result.ret == pytest.ExitCode.OK
    assert "paired with" not in result.stdout.str()  # cross-file rules ran: the csdef came from the option
    assert any(
        "VMR501" in line
        for line in pytester.runpytest(
            "--vmr-csdef",
            "elsewhere/Def.csdef",
            "--vmr-cscfg",
            "ServiceConfiguration.Cloud.cscfg",
            "--collect-only",
            "-q",
        ).outlines
    )


def test_cscfg_without_a_csdef_skips_cross_file_rules_with_a_reason(pytester, model):
    (pytester.path / "ServiceDefinition.csdef").unlink()
    result = pytester.runpytest("ServiceConfiguration.Cloud.cscfg", "-rs")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*no ServiceDefinition .csdef paired with ServiceConfiguration.Cloud.cscfg*"])


def test_env_and_ini_mirror_options(pytester, model):
    model(count=1)  # VMR507 single-instance-role: medium
    assert pytester.runpytest("ServiceConfiguration.Cloud.cscfg").ret == pytest.ExitCode.OK
    pytester.makeini("[pytest]\nvmr_fail_on = medium\n")
    assert pytester.runpytest("ServiceConfiguration.Cloud.cscfg").ret == pytest.ExitCode.TESTS_FAILED
    # the environment beats the ini file, the command line beats both
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VMR_FAIL_ON", "critical")
        assert pytester.runpytest("ServiceConfiguration.Cloud.cscfg").ret == pytest.ExitCode.OK
        result = pytester.runpytest("ServiceConfiguration.Cloud.cscfg", "--vmr-fail-on", "low")
        assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_unreadable_file_is_one_failing_item_naming_file_and_problem(pytester, model):
    (pytester.path / "ServiceDefinition.csdef").write_text("<ServiceDefinition name='x'><WebRole>", "utf-8")
    result = pytester.runpytest("ServiceDefinition.csdef", "-q")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "VMR001" in out and "ServiceDefinition.csdef is unreadable" in out
    assert "Traceback" not in out


def test_markers_and_keywords_select_items(pytester, model):
    model(count=1)
    result = pytester.runpytest("ServiceConfiguration.Cloud.cscfg", "-m", "vmr_medium", "--collect-only", "-q")
    ids = collected_ids(result)
    assert "VMR507[ServiceConfiguration.Cloud.cscfg]" in ids
    assert all("VMR001" not in i for i in ids)  # critical rule not selected by -m vmr_medium
    result = pytester.runpytest("ServiceConfiguration.Cloud.cscfg", "-k", "single-instance-role", "-q")
    result.assert_outcomes(passed=1)


def test_collection_prepares_each_artefact_as_lint_does(pytester, model, monkeypatch):
    """The plugin reads, dates and chooses rules through harness.lint.prepare, the step lint() uses, so the
    two cannot drift: each artefact goes through it once and its rules are the items collected."""
    import harness.plugin.main as plugin_main
    from harness import lint as lint_module

    prepared: dict[str, list[str]] = {}

    def spy(artefact, *args):
        result = lint_module.prepare(artefact, *args)
        assert artefact.display not in prepared
        prepared[artefact.display] = [f"{rule.id}[{artefact.display}]" for rule in result.rules]
        return result

    monkeypatch.setattr(plugin_main, "prepare", spy)
    pytester.path.joinpath("Broken.cscfg").write_text("<ServiceConfiguration", "utf-8")
    result = pytester.runpytest_inprocess(".", "--vmr-discover", "--collect-only", "-q")
    assert set(prepared) == {"ServiceDefinition.csdef", "ServiceConfiguration.Cloud.cscfg", "Broken.cscfg"}
    assert prepared["Broken.cscfg"] == ["VMR001[Broken.cscfg]"]  # unreadable: VMR001 alone
    assert sorted(collected_ids(result)) == sorted(i for ids in prepared.values() for i in ids)
