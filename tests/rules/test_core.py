"""VMR001 artefact-unreadable: one finding naming the file and the problem; silent for readable files."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness.checks.core import ArtefactUnreadable, UnreadableSubject

from harness.engine.artefact import CSDEF, Artefact
from harness.readers.errors import Unreadable
from harness.subjects import Pairing, build_subject


def test_vmr001_reports_the_reader_problem(tmp_path: Path, snapshot):
    path = tmp_path / "ServiceDefinition.csdef"
    path.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><ServiceDefinition name="x"/>')
    artefact = Artefact.from_path(path, CSDEF, tmp_path)
    with pytest.raises(Unreadable) as exc:
        build_subject(artefact, Pairing(), tmp_path)
    snapshot.assert_match(ArtefactUnreadable().check(UnreadableSubject(artefact, exc.value.problem)))


def test_vmr001_is_silent_for_a_readable_file(tmp_path: Path, sm):
    path = tmp_path / "ServiceDefinition.csdef"
    path.write_text(
        '<ServiceDefinition name="x" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition">'
        '<WebRole name="Web" /></ServiceDefinition>'
    )
    subject = build_subject(Artefact.from_path(path, CSDEF, tmp_path), Pairing(), tmp_path).subject
    assert list(ArtefactUnreadable().check(subject)) == []
