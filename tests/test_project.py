"""Promises about the project itself: generated docs are current, packaging covers every module."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
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
    assert listed <= found, f"listed in [tool.setuptools] packages but no such package folder: {sorted(listed - found)}"


def test_plugin_and_console_script_are_declared_and_import():
    # what pyproject.toml declares (installed metadata is only rewritten at install time), and that both import
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    assert project["entry-points"]["pytest11"] == {"vmrole": "harness.plugin.main"}
    assert project["scripts"] == {"vmrole": "harness.cli:run"}
    plugin = importlib.import_module("harness.plugin.main")
    assert callable(plugin.pytest_configure)
    assert callable(importlib.import_module("harness.cli").run)


def test_installed_entry_points_match_pyproject():
    dist = metadata.distribution("vmrole-harness")
    eps = {(ep.group, ep.name): ep.value for ep in dist.entry_points}
    assert eps[("pytest11", "vmrole")] == "harness.plugin.main"
    assert eps[("console_scripts", "vmrole")] == "harness.cli:run"


def test_report_template_is_package_data_and_reports_is_output_only():
    from importlib import resources

    config = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    assert "templates/*" in config["package-data"]["harness.reports"]
    assert resources.files("harness.reports").joinpath("templates/report.html.j2").is_file()
    # the top-level reports/ folder is where runs write (vmrole lint, ./dev demo): never a package, never tracked
    assert "reports" not in config["package-dir"].values()
    assert not (REPO / "reports" / "__init__.py").exists()
    assert "/reports/" in (REPO / ".gitignore").read_text("utf-8").splitlines()


def test_xdist_groups_stay_on_one_worker(tmp_path: Path):
    """``./dev test`` runs ``--dist loadgroup``: tests sharing a fabric, and the built-in live items of one target,
    must stay on one worker. pytest 9.2 with pytest-xdist 3.8 silently broke that (pyproject bounds pytest)."""
    (tmp_path / "test_group.py").write_text(
        "import os, pytest\n"
        "@pytest.mark.xdist_group('one')\n"
        "@pytest.mark.parametrize('i', range(8))\n"
        "def test_member(i):\n"
        "    with open(os.environ['GROUP_LOG'], 'a') as log:\n"
        "        log.write(os.environ['PYTEST_XDIST_WORKER'] + '\\n')\n",
        "utf-8",
    )
    log = tmp_path / "workers.log"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "test_group.py",
        ],
        cwd=tmp_path,
        env={**os.environ, "GROUP_LOG": str(log)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    workers = log.read_text("utf-8").split()
    assert len(workers) == 8 and len(set(workers)) == 1, f"one xdist_group ran on several workers: {workers}"
