"""The readers against real files nobody on this project wrote (../shared/samples).

Every service-model file is read within a deadline and either parses or raises Unreadable (only the
three files manifest.tsv marks MALFORMED_XML may do the latter); parsed roles agree with the
manifest's ``role_kinds`` column. Both real packages read cleanly with all manifest hashes matching.
"""

from __future__ import annotations

import csv
import functools
import re
import time
from pathlib import Path

import pytest

from harness.engine.artefact import CSCFG, CSDEF, CSPKG, Artefact
from harness.facts.servicemodel import ServiceConfiguration, ServiceDefinition
from harness.readers.cspkg import read_package
from harness.readers.errors import Unreadable
from harness.readers.servicemodel import read_configuration, read_definition

from .conftest import SAMPLES, samples_dir

#: Per-file deadline. Real files take milliseconds; this only catches pathological slowness.
DEADLINE_S = 2.0
_CSDEF_ROLE = re.compile(r"^(?P<kind>\w+):(?P<name>.*)\((?P<vmsize>[^()]*)\)$")
_CSCFG_ROLE = re.compile(r"^Role:(?P<name>.*)x(?P<count>\d+|None)$")


def _model_files() -> list[Path]:
    base = (SAMPLES / "service-models").resolve()
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*") if p.suffix.lower() in (".csdef", ".cscfg"))


@functools.cache
def _manifest() -> dict[str, dict[str, str]]:
    base = samples_dir("service-models")
    with (base / "manifest.tsv").open(encoding="utf-8", newline="") as handle:
        return {row["local_file"]: row for row in csv.DictReader(handle, delimiter="\t")}


_FILES = _model_files()
_PARAMS = [pytest.param(p, id=p.parent.name + "/" + p.name) for p in _FILES] or [
    pytest.param(None, id="samples-absent")
]


def _read(path: Path) -> tuple[ServiceDefinition | ServiceConfiguration | None, Unreadable | None, float]:
    kind = CSDEF if path.suffix.lower() == ".csdef" else CSCFG
    artefact = Artefact.from_path(path, kind, path.parents[1])
    start = time.perf_counter()
    try:
        facts = read_definition(artefact) if kind == CSDEF else read_configuration(artefact)
        return facts, None, time.perf_counter() - start
    except Unreadable as exc:
        return None, exc, time.perf_counter() - start


@pytest.mark.parametrize("path", _PARAMS)
def test_sample_service_model(path: Path | None) -> None:
    if path is None:
        samples_dir("service-models")  # skips with the reason
        return
    row = _manifest().get(f"{path.parent.name}/{path.name}")
    assert row is not None, f"{path} is not described in manifest.tsv"
    facts, error, elapsed = _read(path)
    assert elapsed < DEADLINE_S, f"took {elapsed:.2f}s"
    malformed = "MALFORMED_XML" in row["notable_features"].split(",")
    if malformed:
        assert error is not None, "manifest.tsv marks this file MALFORMED_XML but it parsed"
        assert "not well-formed XML at line" in error.problem
        return
    assert error is None, f"unexpectedly unreadable: {error}"
    _compare_roles(facts, row["role_kinds"])


def _compare_roles(facts: ServiceDefinition | ServiceConfiguration | None, role_kinds: str) -> None:
    expected = [] if role_kinds in ("-", "") else role_kinds.split(";")
    if isinstance(facts, ServiceDefinition):
        # The manifest writes a missing name as "None"; the facts carry "" for it.
        got = [f"{r.kind}:{r.name or 'None'}({r.vmsize or '-'})" for r in facts.roles]
        for item in expected:
            assert _CSDEF_ROLE.match(item), item
    else:
        assert isinstance(facts, ServiceConfiguration)
        got = [f"Role:{r.name}x{r.instances if r.instances is not None else 'None'}" for r in facts.roles]
        for item in expected:
            assert _CSCFG_ROLE.match(item), item
    assert got == expected


def test_corpus_is_complete() -> None:
    """Every manifest row has a file and the three malformed ones are the only Unreadable files."""
    rows = _manifest()
    base = samples_dir("service-models")
    assert len(_FILES) == len(rows) == 417
    assert all((base / name).is_file() for name in rows)
    malformed = {name for name, row in rows.items() if "MALFORMED_XML" in row["notable_features"]}
    assert len(malformed) == 3
    unreadable = {f"{p.parent.name}/{p.name}" for p in _FILES if _read(p)[1] is not None}
    assert unreadable == malformed


def test_utf16_samples_parse() -> None:
    rows = _manifest()
    utf16 = [name for name, row in rows.items() if "UTF16" in row["notable_features"].split(",")]
    assert utf16
    base = samples_dir("service-models")
    for name in utf16:
        facts, error, _ = _read(base / name)
        assert error is None and facts is not None and facts.roles, name


# ---- real packages -----------------------------------------------------------------------------------


def _packages() -> list[Path]:
    return sorted(samples_dir("cspkg").glob("*.cspkg"))


def test_both_real_packages_present() -> None:
    assert len(_packages()) == 2


@pytest.mark.parametrize("index", [0, 1])
def test_real_package(index: int) -> None:
    path = _packages()[index]
    start = time.perf_counter()
    pkg = read_package(Artefact.from_path(path, CSPKG, path.parent))
    assert time.perf_counter() - start < DEADLINE_S * 5
    assert pkg.problems == ()
    assert pkg.hash_type == "1"
    assert len(pkg.manifest_items) == 4
    assert all(item.matches for item in pkg.manifest_items), [i.name for i in pkg.manifest_items if not i.matches]
    assert pkg.definition is not None
    assert pkg.definition.part is not None and ".csdx!" in pkg.definition.part
    assert len(pkg.payloads) == 1
    (payload,) = pkg.payloads
    assert payload.encrypted is False
    assert payload.role_name == pkg.definition.roles[0].name
    assert any(e.name.startswith(f"{payload.part}!approot/") for e in pkg.entries)
    assert pkg.sdk_version is not None and pkg.sdk_version[0].isdigit()
    assert not [e.name for e in pkg.entries if e.key_material]
