"""The pre-commit hooks in .pre-commit-hooks.yaml, checked by pre-commit itself.

The manifest is validated with pre-commit's own schema (``pre_commit.clientlib.load_manifest``). The hooks are
then run by the real tool in a temporary git repository holding the bundled sample model and a damaged copy:
``pre-commit try-repo`` (what a hook author runs) and ``pre-commit run`` with a ``.pre-commit-config.yaml``
naming the repository at a commit (what a user runs). Both install the harness with pip into a virtualenv of
their own, from a clone of this repository's HEAD: commit the hook file before running these.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("pre_commit", reason="pre-commit not installed; pip install -e '.[dev]'")
from pre_commit.clientlib import load_manifest

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / ".pre-commit-hooks.yaml"
SAMPLE = REPO / "harness" / "samples" / "vmrole"
CSCFG = "ServiceConfiguration.Cloud.cscfg"
CSDEF = "ServiceDefinition.csdef"


def _hooks() -> dict[str, dict]:
    return {hook["id"]: hook for hook in load_manifest(str(MANIFEST))}


def test_manifest_validates_against_pre_commits_schema() -> None:
    hooks = _hooks()  # raises InvalidManifestError on any schema violation
    assert set(hooks) == {"vmrole-lint", "vmrole-lint-images"}
    for hook in hooks.values():
        assert hook["language"] == "python"
        assert hook["entry"].split()[:2] == ["vmrole", "lint"]
        assert hook["pass_filenames"] is True
        assert hook["require_serial"] is True


def test_manifest_schema_check_is_not_vacuous(tmp_path: Path) -> None:
    from pre_commit.clientlib import InvalidManifestError

    broken = yaml.safe_load(MANIFEST.read_text("utf-8"))
    del broken[0]["entry"]
    (tmp_path / "hooks.yaml").write_text(yaml.safe_dump(broken), "utf-8")
    with pytest.raises(InvalidManifestError, match="entry"):
        load_manifest(str(tmp_path / "hooks.yaml"))


@pytest.mark.parametrize(
    ("hook_id", "name", "selected"),
    [
        ("vmrole-lint", "deploy/ServiceDefinition.csdef", True),
        ("vmrole-lint", "deploy/X.ServiceConfiguration.Cloud.cscfg", True),
        ("vmrole-lint", "out/App.cspkg", True),
        ("vmrole-lint", "deploy/ServiceDefinition.csdef.bak", False),
        ("vmrole-lint", "WebVM.vhd", False),
        ("vmrole-lint-images", "images/WebVM.vhd", True),
        ("vmrole-lint-images", "images/WebVM.vhdx", True),
        ("vmrole-lint-images", "images/WebVM.vhd.gz", False),
        ("vmrole-lint-images", "deploy/ServiceDefinition.csdef", False),
    ],
)
def test_hook_file_patterns(hook_id: str, name: str, selected: bool) -> None:
    hook = _hooks()[hook_id]
    # pre-commit matches `files` with re.search against the path relative to the repository root
    assert bool(re.search(hook["files"], name)) is selected


def test_image_hook_is_opt_in() -> None:
    hooks = _hooks()
    assert hooks["vmrole-lint-images"]["stages"] == ["manual"]
    assert hooks["vmrole-lint"]["stages"] == []  # every stage the user's config installs


# ---- the real tool ---------------------------------------------------------------------------------------


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(
        ["git", "-c", "user.name=vmrole test", "-c", "user.email=test@example.invalid", *args],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean clone of HEAD: try-repo on a dirty tree would pick up others' uncommitted work."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    clone = tmp_path_factory.mktemp("hook-repo") / "vmrole-harness"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    if not (clone / ".pre-commit-hooks.yaml").is_file():
        pytest.fail("HEAD has no .pre-commit-hooks.yaml: commit it before running these tests")
    return clone


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's repository: the bundled sample model, a damaged copy (a cscfg role the csdef does not define)
    and a file that is not a disk image under a .vhd name."""
    root = tmp_path_factory.mktemp("project")
    for folder in ("good", "bad"):
        shutil.copytree(SAMPLE, root / folder)
    bad = root / "bad" / CSCFG
    text = bad.read_text("utf-8")
    assert '<Role name="Indexer">' in text
    bad.write_text(text.replace('<Role name="Indexer">', '<Role name="Indexr">'), "utf-8")
    (root / "images").mkdir()
    (root / "images" / "WebVM.vhd").write_bytes(b"not a disk image\n" * 64)
    _git(root, "init", "--quiet")
    _git(root, "add", ".")
    _git(root, "commit", "--quiet", "-m", "sample")
    return root


def _pre_commit(cwd: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRE_COMMIT", "VIRTUAL_ENV"))}
    env.update(PRE_COMMIT_HOME=str(home), GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def test_try_repo_fails_on_the_damaged_cscfg_naming_the_finding(hook_repo: Path, project: Path, tmp_path: Path) -> None:
    # only the cscfg is passed: the hook still checks it against the csdef beside it (cross-file rule VMR501)
    result = _pre_commit(
        project, tmp_path / "home", "try-repo", str(hook_repo), "vmrole-lint", "--files", f"bad/{CSCFG}", "--verbose"
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert re.search(r"vmrole lint \(service models and packages\)\.+Failed", out), out
    assert "VMR501 unmatched-role" in out
    assert "Role name='Indexr'> but the service definition defines no such role" in out
    assert "Traceback" not in out


@pytest.fixture(scope="module")
def configured(hook_repo: Path, project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project with a .pre-commit-config.yaml naming both hooks at the clone's HEAD; returns the
    PRE_COMMIT_HOME, whose hook environment is installed on first use and shared by the tests."""
    rev = _git(hook_repo, "rev-parse", "HEAD").strip()
    config = {
        "repos": [{"repo": str(hook_repo), "rev": rev, "hooks": [{"id": "vmrole-lint"}, {"id": "vmrole-lint-images"}]}]
    }
    (project / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
    return tmp_path_factory.mktemp("pre-commit-home")


def test_run_passes_on_the_sample_model(configured: Path, project: Path) -> None:
    result = _pre_commit(project, configured, "run", "vmrole-lint", "--files", f"good/{CSCFG}", f"good/{CSDEF}", "-v")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert re.search(r"vmrole lint \(service models and packages\)\.+Passed", out), out
    assert "vmrole-harness: PASS" in out
    # its SARIF report lands in .vmrole-reports/ of the user's repository, untracked
    assert (project / ".vmrole-reports" / "vmrole.sarif").is_file()
    assert not (project / ".vmrole-reports" / "junit.xml").exists()


def test_run_fails_on_the_damaged_cscfg(configured: Path, project: Path) -> None:
    result = _pre_commit(project, configured, "run", "vmrole-lint", "--files", f"good/{CSDEF}", f"bad/{CSCFG}", "-v")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "VMR501 unmatched-role" in out
    assert "bad/ServiceConfiguration.Cloud.cscfg" in out


def test_image_hook_runs_only_on_the_manual_stage(configured: Path, project: Path) -> None:
    default = _pre_commit(project, configured, "run", "--files", "images/WebVM.vhd")
    assert default.returncode == 0, default.stdout + default.stderr
    assert "vmrole lint (disk images)" not in default.stdout

    manual = _pre_commit(
        project, configured, "run", "vmrole-lint-images", "--hook-stage", "manual", "--files", "images/WebVM.vhd", "-v"
    )
    out = manual.stdout + manual.stderr
    assert manual.returncode == 1, out
    assert re.search(r"vmrole lint \(disk images\)\.+Failed", out), out
    assert "VMR001" in out and "WebVM.vhd" in out
    assert "Traceback" not in out
