"""Issue 9, finding 3 end to end: --vmr-image-parent-dir (ini key vmr_image_parent_dir, VMR_IMAGE_PARENT_DIR,
`vmrole lint --image-parent-dir`) reaches the container reader in the image worker; without it a parent
outside the child's directory is refused and named only by the path its locator gave."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.testing.vhdwriter import write_differencing_vhd

OUTSIDE = "not opened: outside the allowed directories"


@pytest.fixture
def split_chain(pytester: pytest.Pytester) -> tuple[Path, Path]:
    """(child, parent directory): child/child.vhd whose parent is base/parent.vhd, in the pytester directory
    (so that an ini file written there is the run's ini file)."""
    tmp_path = pytester.path
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    (tmp_path / "child").mkdir()
    (tmp_path / "base").mkdir()
    parent = tmp_path / "base" / "parent.vhd"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed,force_size=on", str(parent), "4M"],
        check=True,
        capture_output=True,
    )
    child = write_differencing_vhd(parent, tmp_path / "child" / "child.vhd", locator="absolute")
    return child, parent.parent


def _vmr001(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines)


def test_parent_outside_refused_without_the_option(pytester: pytest.Pytester, split_chain) -> None:
    child, base_dir = split_chain
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--vmr-image", str(child), "-rf")
    out = _vmr001(result)
    assert "VMR001" in out and OUTSIDE in out and str(base_dir / "parent.vhd") in out
    assert "Traceback" not in out


def test_option_env_and_ini_allow_the_parent_directory(pytester: pytest.Pytester, split_chain) -> None:
    child, base_dir = split_chain
    args = ("-p", "no:cacheprovider", "--vmr-image", str(child), "-rf")
    result = pytester.runpytest_inprocess(*args, "--vmr-image-parent-dir", str(base_dir))
    assert OUTSIDE not in _vmr001(result) and "parent of differencing disk" not in _vmr001(result)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VMR_IMAGE_PARENT_DIR", str(base_dir))
        assert OUTSIDE not in _vmr001(pytester.runpytest_inprocess(*args))
    pytester.makeini(f"[pytest]\nvmr_image_parent_dir =\n    {base_dir}\n")
    assert OUTSIDE not in _vmr001(pytester.runpytest_inprocess(*args))


def test_parent_dir_must_be_a_directory(pytester: pytest.Pytester, split_chain, tmp_path: Path) -> None:
    child, _ = split_chain
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--vmr-image", str(child), "--vmr-image-parent-dir", str(tmp_path / "nope")
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"--vmr-image-parent-dir: not a directory: {tmp_path / 'nope'}" in "\n".join(result.errlines)


def test_vmrole_lint_passes_image_parent_dir() -> None:
    from harness.cli import build_parser, lint_args

    ns = build_parser().parse_args(["lint", "x.vhd", "--image-parent-dir", "/srv/a", "--image-parent-dir", "/srv/b"])
    args = lint_args(ns, ["x.vhd"], [])
    assert args[args.index("--vmr-image-parent-dir") + 1] == "/srv/a"
    assert args.count("--vmr-image-parent-dir") == 2


def test_image_settings_reach_the_extract_options() -> None:
    from harness.extraction.extract import ExtractOptions
    from harness.subjects import ImageSettings

    assert ImageSettings(parent_dirs=("/srv/a",)).parent_dirs == ("/srv/a",)
    assert ExtractOptions(parent_dirs=("/srv/a",)).parent_dirs == ("/srv/a",)
