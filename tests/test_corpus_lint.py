"""Every rule over every real-world file in ../shared/samples: no crash, no hang, sane findings."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.engine.catalogue import all_rules
from harness.lint import LintOptions, RuleOutcome, lint
from harness.testing.corpus import load_manifest, pairings

PER_FILE_DEADLINE = 5.0  # seconds for reading one file and running every rule on it


def lint_one(path: Path, options: LintOptions) -> dict[str, RuleOutcome]:
    """Each rule's outcome on ``path`` (VMR001 alone when it is unreadable)."""
    (result,) = lint([path], options).artefacts
    return {outcome.rule_id: outcome for outcome in result.outcomes}


@pytest.fixture(scope="module")
def corpus(shared_samples):
    folder = shared_samples / "service-models"
    files = load_manifest(folder)
    pairs = pairings(files)
    results = {}
    for f in files:
        started = time.monotonic()
        # only same-commit partners: never let a sibling from another commit pair in
        options = LintOptions(csdef=pairs.get(f.path), siblings=False, root=folder)
        results[f.path] = lint_one(f.path, options)
        elapsed = time.monotonic() - started
        assert elapsed < PER_FILE_DEADLINE, f"{f.path}: {elapsed:.1f}s"
    return files, pairs, results


def test_every_file_linted_and_only_malformed_files_unreadable(corpus):
    files, _, results = corpus
    assert len(files) > 400
    for f in files:
        evals = results[f.path]
        unreadable = evals["VMR001"].findings
        if "MALFORMED_XML" in f.features:
            assert list(evals) == ["VMR001"], f.path
            assert len(unreadable) == 1 and f.path.name in unreadable[0].message
        else:
            assert unreadable == (), f"{f.path}: {unreadable}"
            assert len(evals) > 5


def test_cross_file_rules_run_only_on_same_commit_pairs(corpus):
    files, pairs, results = corpus
    cross = [r for r in all_rules() if "definition" in r.requires and "configuration" in r.requires]
    assert cross
    by_path = {f.path: f for f in files}
    paired = 0
    for f in files:
        if f.kind != "cscfg" or "MALFORMED_XML" in f.features:
            continue
        partner = pairs[f.path]
        for rule in cross:
            evaluation = results[f.path][rule.id]
            if partner is None:
                assert evaluation.findings == () and evaluation.skip_reason, (f.path, rule.id)
            else:
                assert by_path[partner].commit == f.commit or by_path[partner].commit.startswith(
                    f.pairing.removeprefix("paired@")
                )
        paired += partner is not None
    assert paired > 100


def test_findings_match_what_the_manifest_says_is_there(corpus):
    files, _, results = corpus
    fired = {rid: {p for p, ev in results.items() if rid in ev and ev[rid].findings} for rid in ("VMR301",)}
    literal_keys = {f.path for f in files if "LITERAL_ACCOUNTKEY" in f.features}
    assert literal_keys and literal_keys <= fired["VMR301"]


def test_real_packages_lint_without_unreadable_findings(shared_samples):
    for pkg in sorted((shared_samples / "cspkg").glob("*.cspkg")):
        evals = lint_one(pkg, LintOptions(root=shared_samples))
        assert evals["VMR001"].findings == ()
        assert len(evals) > 10
