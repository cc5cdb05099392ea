"""Issue 9, finding 1 end to end: one hostile file is one failing VMR001 item; every other artefact is still
linted and every report is still written (exit 1, never a collection error with exit 2)."""

from __future__ import annotations

import json

import pytest

BAD = b'<?xml version="1.0" encoding="x"?>\n<ServiceDefinition name="Shop">\xe9</ServiceDefinition>\n'


@pytest.mark.parametrize("encoding", [b"x", b"hex", b"rot13", b"base64", b"mbcs"])
def test_bad_declared_encoding_is_one_vmr001_item_and_the_rest_is_linted(pytester, model, encoding):
    bad = pytester.mkdir("bad")
    (bad / "Bad.csdef").write_bytes(BAD.replace(b'"x"', b'"' + encoding + b'"'))
    result = pytester.runpytest(".", "--vmr-discover", "--vmr-report-dir", "out", "-p", "no:xdist", "-rf")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    out = result.stdout.str()
    assert "Traceback" not in out and "LookupError" not in out and "error during collection" not in out
    failed = [line for line in result.outlines if line.startswith("FAILED")]
    assert len(failed) == 1 and "VMR001" in failed[0] and "Bad.csdef" in failed[0], failed
    assert "not an accepted text encoding" in out
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 1 and outcomes.get("passed", 0) > 10  # the good pair was linted
    for name in ("vmrole.sarif", "vmrole.json", "vmrole.html"):
        assert (pytester.path / "out" / name).is_file(), name
    data = json.loads((pytester.path / "out" / "vmrole.json").read_text())
    assert [f["rule_id"] for f in data["findings"] if f["rule_id"] == "VMR001"] == ["VMR001"]
    assert any("ServiceConfiguration.Cloud.cscfg" in i["nodeid"] for i in data["items"])
