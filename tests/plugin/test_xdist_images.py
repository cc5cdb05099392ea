"""Many images, several processes: each image is read once in the whole run, the report is that of a serial run,
and the terminal shows one progress line per image (issue 13, item 2). `vmrole lint -n 0` reads one image at a time,
`-n N` N at once (in isolated reader processes, the rules in the one pytest process), the default one per core;
pytest-xdist (plain `pytest -n N`, or `vmrole lint -- -n N`) shares the images out among its workers.

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


def three_images(cache_dir: Path) -> list[Path]:
    """Three distinct small images: a clean one, one with a key file, one with a different computer."""
    base = windows_server_2008r2_vmrole()
    specs = [
        base,
        base.with_changes(files={"Users/Administrator/.ssh/id_rsa": km.pem_private_key_bytes()}),
        base.with_changes(files={"inetpub/wwwroot/site.pfx": km.pfx_bytes()}),
    ]
    return [build_image(spec, "vhd-fixed", cache_dir=cache_dir) for spec in specs]


@pytest.fixture(scope="module")
def images(image_cache: Path) -> list[Path]:
    return three_images(image_cache)


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


def _comparable(folder: Path) -> dict:
    """The whole JSON report apart from its times (run start, end and duration, each item's duration)."""
    data = json.loads((folder / "vmrole.json").read_text())
    for key in ("started", "finished", "duration_seconds"):
        assert key in data
        del data[key]
    data["items"] = sorted(({**i, "duration": None} for i in data["items"]), key=lambda i: i["nodeid"])
    data["findings"] = sorted(data["findings"], key=lambda f: (f["fingerprint"], f["artefact"], f["location"]))
    return data


def test_every_mode_reads_each_image_once_and_reports_the_same(images: list[Path], tmp_path: Path) -> None:
    """Serial (-n 0), two readers (-n 2) and the default (auto): one read per image, the same JSON report."""
    named = [arg for image in images for arg in ("--image", str(image))]
    common = ["--no-allure", "--no-junit"]
    real = sorted(os.path.realpath(p) for p in images)
    reports = {}
    for label, workers in (("serial", ["-n", "0"]), ("two", ["-n", "2"]), ("default", [])):
        proc, reads = _run(tmp_path, label, ["lint", *named, *common, "--report-dir", label, *workers])
        assert proc.returncode == 1, f"{label}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        assert sorted(reads) == real, f"{label} reads: {Counter(reads)}"
        assert "workers" not in proc.stdout, proc.stdout[-2000:]  # pytest-xdist did not start
        for image in images:  # one progress line per image, as it is read (before pytest says what it collected)
            assert proc.stdout.count(f"vmrole: image {image.name}: profile") == 1, proc.stdout[-3000:]
            assert proc.stdout.index(f"vmrole: image {image.name}") < proc.stdout.index("collected "), proc.stdout
        reports[label] = _comparable(tmp_path / label)
    findings = reports["serial"]["findings"]
    assert {Path(f["artefact"]).name for f in findings} == {p.name for p in images[1:]}  # the key files were found
    assert reports["two"] == reports["serial"]
    assert reports["default"] == reports["serial"]


@pytest.mark.slow  # starts pytest-xdist's two workers (~5 s)
def test_xdist_forced_after_the_double_dash_still_reads_each_image_once(images: list[Path], tmp_path: Path) -> None:
    """`vmrole lint -- -n 2`: the reads `vmrole lint` started are handed over to the workers, not repeated."""
    named = [arg for image in images for arg in ("--image", str(image))]
    common = ["--no-allure", "--no-junit"]
    serial, serial_reads = _run(tmp_path, "serial", ["lint", *named, *common, "--report-dir", "serial", "-n", "0"])
    forced, forced_reads = _run(
        tmp_path, "forced", ["lint", *named, *common, "--report-dir", "forced", "--", "-n", "2"]
    )
    assert serial.returncode == forced.returncode == 1, serial.stdout[-3000:] + forced.stdout[-3000:]
    assert "2 workers" in forced.stdout, forced.stdout[-2000:]
    real = sorted(os.path.realpath(p) for p in images)
    assert sorted(serial_reads) == real
    assert sorted(forced_reads) == real, f"reads: {Counter(forced_reads)}"
    s_findings, s_items = _report(tmp_path / "serial")
    f_findings, f_items = _report(tmp_path / "forced")
    assert s_findings == f_findings
    assert s_items == f_items and len(s_items) == len({i[0] for i in s_items})
    for image in images:  # one progress line per image, on the controller's terminal
        assert forced.stdout.count(f"vmrole: image {image.name}: profile") == 1, forced.stdout[-3000:]


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
