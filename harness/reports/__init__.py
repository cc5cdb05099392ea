"""Report writers: SARIF 2.1.0, JSON, HTML (jinja2), allure enrichment. Fed from a RunResult."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from harness.reports.model import RunResult

#: Fixed file names, so CI steps and docs can name them.
FILE_NAMES = {"sarif": "vmrole.sarif", "json": "vmrole.json", "html": "vmrole.html"}
FORMATS = frozenset(FILE_NAMES)


def _writers() -> dict[str, Callable[[RunResult, Path], Path]]:
    # Imported here so that importing harness.reports (e.g. for the model) stays cheap.
    from harness.reports.html import write_html
    from harness.reports.jsonreport import write_json
    from harness.reports.sarif import write_sarif

    return {"sarif": write_sarif, "json": write_json, "html": write_html}


def write_reports(result: RunResult, out_dir: Path, formats: Iterable[str]) -> dict[str, Path]:
    """Write each requested format into ``out_dir`` (created if needed); returns format -> path.

    Raises ValueError for an unknown format before writing anything.
    """
    wanted = {f.strip().lower() for f in formats if f.strip()}
    unknown = wanted - FORMATS
    if unknown:
        raise ValueError(
            f"unknown report format(s): {', '.join(sorted(unknown))} (expected: {', '.join(sorted(FORMATS))})"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers = _writers()
    return {fmt: writers[fmt](result, out_dir / FILE_NAMES[fmt]) for fmt in sorted(wanted)}
