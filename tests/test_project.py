"""Promises about the project itself: generated docs are current, packaging covers every module."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from harness.docs import update_readme

REPO = Path(__file__).resolve().parent.parent


def test_readme_generated_tables_are_current():
    text = (REPO / "README.md").read_text("utf-8")
    assert update_readme(text) == text, "run: .venv/bin/vmrole rules --update-readme README.md"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text("utf-8")
    assert "./dev test" in readme and "./dev demo" in readme
    assert "./dev test" in (REPO / ".ci" / "run").read_text("utf-8")


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {v: k for k, v in config["package-dir"].items()}
    found = set()
    for top, name in folders.items():
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / top)
            if "__pycache__" in rel.parts:
                continue
            dotted = ".".join([name, *rel.parts]) if rel.parts else name
            # sub-folders of harness/ that are mapped elsewhere are covered by their own mapping
            found.add(dotted)
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_plugin_and_console_script_are_registered():
    dist = metadata.distribution("vmrole-harness")
    eps = {(ep.group, ep.name): ep.value for ep in dist.entry_points}
    assert eps[("pytest11", "vmrole")] == "harness.plugin.main"
    assert eps[("console_scripts", "vmrole")] == "harness.cli:main"


def test_report_template_is_package_data_and_reports_is_output_only():
    from importlib import resources

    config = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    assert "templates/*" in config["package-data"]["harness.reports"]
    assert resources.files("harness.reports").joinpath("templates/report.html.j2").is_file()
    # the top-level reports/ folder is where runs write (vmrole lint, ./dev demo): never a package, never tracked
    assert "reports" not in config["package-dir"].values()
    assert not (REPO / "reports" / "__init__.py").exists()
    assert "/reports/" in (REPO / ".gitignore").read_text("utf-8").splitlines()
