"""`vmrole lint -n N` chooses how to spread the work: service models alone are linted in one process (their rule
items take about a millisecond each, less than xdist's cost of shipping each result), images with xdist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "harness" / "samples" / "vmrole"


def _lint(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "lint", str(SAMPLE), "--no-allure", *args],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_service_models_alone_are_linted_in_one_process(tmp_path: Path) -> None:
    serial = _lint(tmp_path, "--report-dir", "serial")
    auto = _lint(tmp_path, "--report-dir", "auto", "-n", "2")
    assert auto.returncode == serial.returncode, auto.stdout[-2000:] + auto.stderr[-2000:]
    assert "-n 2: service models only, linted in one process" in auto.stdout
    assert "workers" not in auto.stdout  # pytest-xdist did not start ("created: 2/2 workers")
    reports = [json.loads((tmp_path / d / "vmrole.json").read_text()) for d in ("serial", "auto")]
    serial_findings, auto_findings = (sorted(f["fingerprint"] for f in r["findings"]) for r in reports)
    assert serial_findings == auto_findings
    assert len(reports[0]["items"]) == len(reports[1]["items"]) > 0


@pytest.mark.slow  # starts pytest-xdist's workers (~5 s)
def test_xdist_can_still_be_forced_after_the_double_dash(tmp_path: Path) -> None:
    forced = _lint(tmp_path, "--report-dir", "forced", "--", "-n", "2", "--basetemp", str(tmp_path / "bt"))
    assert "2 workers" in forced.stdout, forced.stdout[-2000:] + forced.stderr[-2000:]
    assert "linted in one process" not in forced.stdout
