"""Many images, several processes: each image is read once in the whole run, the findings are those of a serial
run, and the terminal shows one progress line per image (issue 13, item 2).

Reads are counted with ``VMR_IMAGE_READ_LOG`` (harness.extraction.shared_reads): every process of the run - the
`vmrole` controller, its xdist workers and their forked image readers - appends one line per read it starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from harness.cli import _lint_ini
from harness.testing import keymaterial as km
from harness.testing.images import build_image, missing_tools
from harness.testing.windows import windows_server_2008r2_vmrole

pytestmark = [
    pytest.mark.skipif(bool(missing_tools()), reason=f"image tools missing: {missing_tools()} (run ./dev setup)"),
    pytest.mark.xdist_group("image-lint"),
]

#: `vmrole lint`'s pytest configuration: no other plugins (hypothesis alone costs ~1 s per process)
LINT_INI = _lint_ini()


@pytest.fixture(scope="module")
def images(image_cache: Path) -> list[Path]:
    """Three distinct small images: a clean one, one with a key file, one with a different computer."""
    base = windows_server_2008r2_vmrole()
    specs = [
        base,
        base.with_changes(files={"Users/Administrator/.ssh/id_rsa": km.pem_private_key_bytes()}),
        base.with_changes(files={"inetpub/wwwroot/site.pfx": km.pfx_bytes()}),
    ]
    return [build_image(spec, "vhd-fixed", cache_dir=image_cache) for spec in specs]


def _run(
    tmp: Path, name: str, args: list[str], module: str = "harness.cli"
) -> tuple[subprocess.CompletedProcess, list]:
    log = tmp / f"{name}.reads"
    env = {**os.environ, "VMR_IMAGE_READ_LOG": str(log)}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=tmp, env=env, capture_output=True, text=True, timeout=300
    )
    reads = [line.split(" ", 1)[1] for line in log.read_text().splitlines()] if log.exists() else []
    return proc, reads


def _report(folder: Path) -> tuple[list, list]:
    data = json.loads((folder / "vmrole.json").read_text())
    findings = sorted(
        (f["rule_id"], f["artefact"], f["location"], f["message"], f["disposition"], f["fingerprint"])
        for f in data["findings"]
    )
    items = sorted((i["nodeid"], i["outcome"], i.get("skip_reason")) for i in data["items"])
    return findings, items


def test_each_image_read_once_with_two_workers_and_same_findings(images: list[Path], tmp_path: Path) -> None:
    named = [arg for image in images for arg in ("--image", str(image))]
    common = ["--no-allure", "--no-junit"]
    serial, serial_reads = _run(tmp_path, "serial", ["lint", *named, *common, "--report-dir", "serial"])
    parallel, parallel_reads = _run(tmp_path, "parallel", ["lint", *named, *common, "--report-dir", "par", "-n", "2"])
    assert serial.returncode == parallel.returncode == 1, serial.stdout[-3000:] + parallel.stdout[-3000:]

    real = sorted(os.path.realpath(p) for p in images)
    assert sorted(serial_reads) == real
    assert sorted(parallel_reads) == real, f"reads: {Counter(parallel_reads)}"

    s_findings, s_items = _report(tmp_path / "serial")
    p_findings, p_items = _report(tmp_path / "par")
    assert {Path(f[1]).name for f in s_findings} == {p.name for p in images[1:]}  # the key files were found
    assert s_findings == p_findings
    assert s_items == p_items and len(s_items) == len({i[0] for i in s_items})
    for image in images:  # one progress line per image, on the controller's terminal
        assert parallel.stdout.count(f"vmrole: image {image.name}: profile") == 1, parallel.stdout[-3000:]


def test_plain_pytest_with_workers_reads_each_image_once(images: list[Path], tmp_path: Path) -> None:
    """Without `vmrole lint` nobody reads ahead: the workers claim the named images among themselves."""
    named = [arg for image in images for arg in ("--vmr-image", str(image))]
    args = [*named, "-p", "xdist", "-n", "2", "-p", "no:cacheprovider", "--vmr-report-dir", "out", "-q"]
    args += ["--rootdir", str(tmp_path), "-c", LINT_INI, "--basetemp", str(tmp_path / "bt")]
    proc, reads = _run(tmp_path, "pytest", args, module="pytest")
    assert proc.returncode == 1, proc.stdout[-3000:]  # the key files fail at the default threshold (high)
    assert sorted(reads) == sorted(os.path.realpath(p) for p in images), f"reads: {Counter(reads)}"
    findings, _ = _report(tmp_path / "out")
    assert {Path(f[1]).name for f in findings} == {p.name for p in images[1:]}
