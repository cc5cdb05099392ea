"""The composite GitHub Action in action.yml, checked as nearly as possible without GitHub.

* action.yml validates against SchemaStore's published schema for action metadata
  (tests/data/github-action.schema.json; source and licence in github-action.schema.SOURCE.md).
* Its steps are executed the way the runner executes a composite action: a ``uses:`` step is recorded with
  its ``with:`` evaluated (setup-python is stood in for by a fresh virtualenv, upload-sarif by checking the
  file it would read), a ``run:`` step runs under ``bash --noprofile --norc -eo pipefail`` with its ``env:``
  evaluated, ``GITHUB_ACTION_PATH``/``GITHUB_OUTPUT`` set, and ``if:`` decides whether a step runs after a
  failure. ``Expressions`` evaluates exactly the expressions the action uses (``inputs.<declared input>``,
  ``github.action_path``, ``steps.<id>.outputs.<name>``, ``always()``, ``==`` with a quoted literal, ``&&``)
  and refuses anything else, so a new expression in action.yml fails here until it is understood.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.reports import sarif_validation

REPO = Path(__file__).resolve().parents[2]
ACTION = REPO / "action.yml"
SCHEMA = REPO / "tests" / "data" / "github-action.schema.json"
SAMPLE = REPO / "harness" / "samples" / "vmrole"

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
NAME = r"[A-Za-z_][A-Za-z0-9_-]*"


def _action() -> dict:
    return yaml.safe_load(ACTION.read_text("utf-8"))


# ---- metadata schema -------------------------------------------------------------------------------------


def _schema_errors(document: dict) -> list[str]:
    schema = json.loads(SCHEMA.read_text("utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document))


def test_action_validates_against_schemastore_schema() -> None:
    schema = json.loads(SCHEMA.read_text("utf-8"))
    assert schema["$id"] == "https://json.schemastore.org/github-action.json"
    assert _schema_errors(_action()) == []


def test_schema_validation_is_not_vacuous() -> None:
    broken = _action()
    broken["runs"]["using"] = "composit"
    del broken["inputs"]["paths"]["description"]
    broken["runs"]["steps"][1]["shell"] = 3
    assert _schema_errors(broken) != []
    no_description = _action()
    del no_description["description"]
    assert _schema_errors(no_description) != []


def test_action_declares_the_documented_inputs() -> None:
    action = _action()
    assert set(action["inputs"]) == {
        "paths",
        "images",
        "fail-on",
        "shard",
        "python-version",
        "report-dir",
        "upload-sarif",
    }
    assert action["inputs"]["upload-sarif"]["default"] == "true"
    assert action["runs"]["using"] == "composite"
    uses = [step.get("uses", "").split("@")[0] for step in action["runs"]["steps"]]
    assert uses[0] == "actions/setup-python" and uses[-1] == "github/codeql-action/upload-sarif"
    readme = (REPO / "README.md").read_text("utf-8")
    section = readme.split("### Pre-commit and GitHub Actions", 1)[1].split("\n## ", 1)[0]
    for name in action["inputs"]:
        assert f"`{name}`" in section, f"input {name} is not documented in README"


# ---- a small interpreter for the expressions the action uses ----------------------------------------------


class Refused(Exception):
    """An expression this interpreter does not evaluate (the runner might: extend deliberately, not silently)."""


@dataclass
class Expressions:
    inputs: dict[str, str]
    action_path: str
    step_outputs: dict[str, dict[str, str]] = field(default_factory=dict)

    def value(self, expr: str) -> str:
        if m := re.fullmatch(rf"inputs\.({NAME})", expr):
            if m[1] not in self.inputs:
                raise Refused(f"undeclared input {m[1]!r}")
            return self.inputs[m[1]]
        if expr == "github.action_path":
            return self.action_path
        if m := re.fullmatch(rf"steps\.({NAME})\.outputs\.({NAME})", expr):
            # the runner gives '' for an output a step did not set
            return self.step_outputs.get(m[1], {}).get(m[2], "")
        raise Refused(expr)

    def substitute(self, text: str) -> str:
        return EXPRESSION.sub(lambda m: self.value(m[1]), text)

    def condition(self, text: str, *, failed: bool) -> bool:
        """A step's ``if:``: without a status function the runner adds ``success()``."""
        body = EXPRESSION.fullmatch(text.strip())
        expr = body[1] if body else text.strip()
        status_checked = False
        result = True
        for term in (t.strip() for t in expr.split("&&")):
            if term == "always()":
                status_checked = True
            elif m := re.fullmatch(r"((?:inputs|steps|github)\.[A-Za-z0-9_.-]+)\s*==\s*'([^']*)'", term):
                # string comparison in expressions ignores case
                result = result and self.value(m[1]).casefold() == m[2].casefold()
            else:
                raise Refused(f"condition term {term!r}")
        return result if status_checked else result and not failed


def test_interpreter_refuses_what_it_does_not_know() -> None:
    expressions = Expressions(inputs={"paths": "."}, action_path="/a")
    assert expressions.substitute("x ${{ inputs.paths }} ${{github.action_path}}") == "x . /a"
    for text in ("${{ inputs.nope }}", "${{ github.workspace }}", "${{ secrets.TOKEN }}", "${{ format('{0}', 1) }}"):
        with pytest.raises(Refused):
            expressions.substitute(text)
    for condition in ("failure()", "inputs.paths != '.'", "always() || true", "contains(inputs.paths, 'x')"):
        with pytest.raises(Refused):
            expressions.condition(condition, failed=False)
    assert expressions.condition("always() && inputs.paths == '.'", failed=True)
    assert not expressions.condition("inputs.paths == '.'", failed=True)
    assert not expressions.condition("always() && inputs.paths == 'x'", failed=False)


@dataclass
class Run:
    steps: list[tuple[str, str, object]]  # (name, outcome, uses-with or exit code)
    outputs: dict[str, str]

    def outcome(self, name: str) -> str:
        return next(outcome for step, outcome, _ in self.steps if step == name)

    def detail(self, name: str) -> object:
        return next(detail for step, _, detail in self.steps if step == name)


def run_composite(
    action: dict, given: dict[str, str], *, action_path: Path, workspace: Path, python_bin: Path, tmp: Path
) -> Run:
    declared = action["inputs"]
    unknown = set(given) - set(declared)
    assert not unknown, f"not inputs of the action: {unknown}"
    inputs = {name: str(given.get(name, spec.get("default", ""))) for name, spec in declared.items()}
    expressions = Expressions(inputs=inputs, action_path=str(action_path))
    failed = False
    done: list[tuple[str, str, object]] = []
    for index, step in enumerate(action["runs"]["steps"]):
        name = step.get("name", f"step {index}")
        if not expressions.condition(step.get("if", ""), failed=failed) if step.get("if") else failed:
            done.append((name, "skipped", None))
            continue
        if "uses" in step:
            with_ = {k: expressions.substitute(str(v)) for k, v in step.get("with", {}).items()}
            done.append((name, "used", with_))
            continue
        assert step["shell"] == "bash", "only bash run steps are interpreted"
        env = {k: expressions.substitute(str(v)) for k, v in step.get("env", {}).items()}
        output_file = tmp / f"output-{index}"
        output_file.write_text("", "utf-8")
        script = tmp / f"step-{index}.sh"
        script.write_text(expressions.substitute(step["run"]), "utf-8")
        proc_env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "GITHUB_"))}
        proc_env.update(env)
        proc_env.update(
            PATH=f"{python_bin}{os.pathsep}{os.environ['PATH']}",  # what setup-python does
            GITHUB_ACTION_PATH=str(action_path),
            GITHUB_OUTPUT=str(output_file),
            GITHUB_WORKSPACE=str(workspace),
            PIP_NO_INPUT="1",
        )
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=workspace,
            env=proc_env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        outputs = {}
        for line in output_file.read_text("utf-8").splitlines():
            key, sep, value = line.partition("=")
            assert sep and "<<" not in key, f"GITHUB_OUTPUT line not understood: {line!r}"
            outputs[key] = value
        if "id" in step:
            expressions.step_outputs[step["id"]] = outputs
        failed = failed or proc.returncode != 0
        done.append(
            (name, "success" if proc.returncode == 0 else "failure", (proc.returncode, proc.stdout + proc.stderr))
        )
    outputs = {k: expressions.substitute(str(v["value"])) for k, v in action.get("outputs", {}).items()}
    return Run(done, outputs)


# ---- running it ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def action_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the runner checks out for ``uses: owner/vmrole-harness@rev``: the repository at a commit."""
    clone = tmp_path_factory.mktemp("action") / "vmrole-harness"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    (clone / "action.yml").write_text(ACTION.read_text("utf-8"), "utf-8")  # the file under test
    return clone


@pytest.fixture(scope="module")
def python_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stands in for actions/setup-python: a fresh interpreter environment whose bin/ goes first on PATH.
    The harness's dependencies are made visible from the test environment (a .pth line) so pip need not
    download them; the harness itself is installed by the action's own step."""
    root = tmp_path_factory.mktemp("setup-python") / "venv"
    venv.EnvBuilder(with_pip=True).create(root)
    site = subprocess.run(
        [str(root / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "test-dependencies.pth").write_text("\n".join(deps) + "\n", "utf-8")
    return root / "bin"


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "workspace"
    (ws / "deploy").mkdir(parents=True)
    for f in SAMPLE.iterdir():
        (ws / "deploy" / f.name).write_bytes(f.read_bytes())
    return ws


def _run(given, action_path, python_bin, workspace, tmp_path) -> Run:
    steps_tmp = tmp_path / "runner"
    steps_tmp.mkdir(exist_ok=True)
    return run_composite(
        _action(), given, action_path=action_path, workspace=workspace, python_bin=python_bin, tmp=steps_tmp
    )


def _valid_sarif(path: Path) -> dict:
    schema_path = sarif_validation.oasis_schema()
    if schema_path is None:
        pytest.skip(f"SARIF 2.1.0 schema not installed: {sarif_validation.PYPI_INSTALL}")
    document = json.loads(path.read_text("utf-8"))
    schema = json.loads(schema_path.read_text("utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert [e.message for e in validator.iter_errors(document)] == []
    return document


def test_action_passes_on_the_sample_and_uploads_its_sarif(action_path, python_bin, workspace, tmp_path) -> None:
    run = _run({"paths": "deploy/"}, action_path, python_bin, workspace, tmp_path)
    assert run.outcome("Set up Python") == "used"
    assert run.detail("Set up Python") == {"python-version": "3.12"}
    install_code, install_log = run.detail("Install vmrole-harness")
    assert install_code == 0, install_log
    # the harness the lint ran is the one installed from the action's path, not the test environment's
    where = subprocess.run(
        [str(python_bin / "python"), "-c", "import harness; print(harness.__file__)"],
        cwd=workspace,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(str(python_bin.parent)), where
    code, log = run.detail("vmrole lint")
    assert code == 0, log
    assert "vmrole-harness: PASS" in log
    assert run.outcome("Upload SARIF") == "used"
    sarif_file = run.detail("Upload SARIF")["sarif_file"]
    assert sarif_file == "vmrole-reports/vmrole.sarif" == run.outputs["sarif-file"]
    document = _valid_sarif(workspace / sarif_file)
    assert {r["ruleId"] for r in document["runs"][0]["results"]} == {"VMR538"}


def test_action_fails_on_findings_and_still_uploads(action_path, python_bin, workspace, tmp_path) -> None:
    given = {"paths": "deploy/ServiceConfiguration.Cloud.cscfg\ndeploy/ServiceDefinition.csdef", "fail-on": "medium"}
    given["report-dir"] = "out/lint reports"
    run = _run(given, action_path, python_bin, workspace, tmp_path)
    code, log = run.detail("vmrole lint")
    assert code == 1, log
    assert "vmrole-harness: FAIL" in log and "VMR538" in log
    assert run.outcome("Upload SARIF") == "used"  # always(): the findings reach code scanning
    sarif_file = run.detail("Upload SARIF")["sarif_file"]
    assert sarif_file == "out/lint reports/vmrole.sarif"
    _valid_sarif(workspace / sarif_file)


def test_action_without_upload_and_with_a_usage_error(action_path, python_bin, workspace, tmp_path) -> None:
    run = _run(
        {"paths": "deploy/", "upload-sarif": "false", "fail-on": "sometimes"},
        action_path,
        python_bin,
        workspace,
        tmp_path,
    )
    code, log = run.detail("vmrole lint")
    assert code == 4, log  # usage error, as README's exit-code table says
    assert run.outcome("Upload SARIF") == "skipped"


def test_action_lints_images_named_in_images(action_path, python_bin, workspace, tmp_path) -> None:
    (workspace / "WebVM.vhd").write_bytes(b"not a disk image\n" * 64)
    run = _run({"paths": "", "images": "WebVM.vhd"}, action_path, python_bin, workspace, tmp_path)
    code, log = run.detail("vmrole lint")
    assert code == 1, log
    assert "VMR001" in log and "WebVM.vhd" in log and "Traceback" not in log
    _valid_sarif(workspace / run.detail("Upload SARIF")["sarif_file"])


def test_action_shard_input(action_path, python_bin, workspace, tmp_path) -> None:
    """`shard` is passed as --shard I/N; it needs a vmrole whose `lint --help` lists --shard."""
    help_text = subprocess.run([str(python_bin / "vmrole"), "lint", "--help"], capture_output=True, text=True).stdout
    run = _run({"paths": "deploy/", "shard": "1/2"}, action_path, python_bin, workspace, tmp_path)
    code, log = run.detail("vmrole lint")
    if "--shard" in help_text:
        assert code == 0, log
    else:
        # an older vmrole refuses the option by name (argparse's exit 2, not README's usage-error 4)
        assert code != 0 and "unrecognized arguments: --shard" in log, log
