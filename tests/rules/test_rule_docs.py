"""Rule documentation stands on its own (issue 10, item 3).

Every rule cites public sources by URL (its ``references`` tuple and its docstring's References section, the
same URLs in the same order, all from ``harness.docs_sources``); nothing shipped points at a document that is
not shipped; every rule has a generated page in ``docs/rules/`` and the committed pages are exactly what
``vmrole rules --docs docs/rules`` writes; SARIF gives every catalogue rule a ``helpUri``.

When a test here fails after a docstring change, regenerate the pages with::

    vmrole rules --docs docs/rules
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness import cli, docs, docs_sources
from harness.docs_sources import BY_URL, SOURCES, reference_links, refs, rule_page_name, title_of
from harness.engine.catalogue import all_rules
from harness.engine.rule import Rule
from harness.engine.severity import Severity
from harness.reports import sarif
from harness.reports.model import RuleInfo, RunResult

REPO = Path(__file__).resolve().parents[2]
DOCS_DIR = REPO / docs_sources.RULE_DOCS_DIR
RULES = all_rules()

#: Names of the internal documents the rule pages used to cite, and the shorthand for them.
BANNED = re.compile(
    r"reference\s*§|vmrole-reference|live-reference|domain[ -]ref(erence)?\b|reader-pitfalls",
    re.IGNORECASE,
)
#: A bare section sign pointing into a document: allowed only right after a public spec's name
#: (``RFC 6125 §6.4``, ``[MS-GPFAS] §2.2``, ``ECMA-376 §9``).
SECTION = re.compile(r"§\s*\d")
PUBLIC_SPEC_BEFORE = re.compile(r"(RFC\s*\d+|\[?MS-[A-Z0-9]+\]?|ECMA-\d+|ISO(/IEC)?\s*[\d-]+)[\s,]*(section)?\s*$")
#: What is scanned: everything of the package that is text (the checks install as harness.checks).
SHIPPED_ROOTS = ("checks", "harness")
TEXT_SUFFIXES = {".py", ".md", ".yml", ".yaml", ".json", ".ini", ".j2", ".html", ".txt", ".cfg", ".toml", ".xml"}


def _ids(rules: tuple[type[Rule], ...]) -> list[str]:
    return [r.id for r in rules]


# ---- references ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES, ids=_ids(RULES))
def test_every_rule_cites_public_sources_by_url(rule: type[Rule]) -> None:
    assert rule.references, f"{rule.id} cites no source"
    assert len(set(rule.references)) == len(rule.references), f"{rule.id} cites a source twice"
    for url in rule.references:
        assert url.startswith("https://"), f"{rule.id}: {url!r} is not an https URL"
        assert url in BY_URL, f"{rule.id}: {url!r} is not in harness/docs_sources.py's table"


@pytest.mark.parametrize("rule", RULES, ids=_ids(RULES))
def test_docstring_references_are_the_references_tuple(rule: type[Rule]) -> None:
    section = rule.doc_sections()["References"]
    links = reference_links(section)
    assert [url for _, url in links] == list(rule.references), (
        f"{rule.id}: the docstring's References section and the references tuple differ"
    )
    for text, url in links:
        assert text.startswith(title_of(url)), f"{rule.id}: {url} is cited as {text!r}, not under its table title"
    lines = [line for line in section.splitlines() if line.strip()]
    assert len(lines) == len(links), f"{rule.id}: a References line is not '- <title>: <https URL>': {lines}"


def test_source_table_is_well_formed() -> None:
    assert len({s.url for s in SOURCES.values()}) == len(SOURCES), "two keys share a URL"
    for key, source in SOURCES.items():
        assert source.key == key
        assert source.url.startswith("https://"), source
        assert source.title, source
        assert not BANNED.search(source.title)
    with pytest.raises(KeyError):
        refs("no-such-source")


def test_every_source_in_the_table_is_cited() -> None:
    cited = {url for rule in RULES for url in rule.references}
    assert {s.key for s in SOURCES.values() if s.url not in cited} == set()


def _shipped_text_files() -> list[Path]:
    files = []
    for root in SHIPPED_ROOTS:
        for path in sorted((REPO / root).rglob("*")):
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
                files.append(path)
    return files


def _pointers(text: str) -> list[str]:
    found = [m.group(0) for m in BANNED.finditer(text)]
    for match in SECTION.finditer(text):
        before = text[max(0, match.start() - 40) : match.start()]
        if not PUBLIC_SPEC_BEFORE.search(before):
            found.append(text[max(0, match.start() - 20) : match.end() + 3].replace("\n", " "))
    return found


def test_pointer_scan_is_not_vacuous() -> None:
    assert _pointers("see vmrole-reference §9") and _pointers("(domain ref §4.4)") and _pointers("(§3.4)")
    assert _pointers("Domain reference §5.5") and _pointers("live-reference §7") and _pointers("reader-pitfalls.md")
    assert not _pointers("RFC 6125 §6.4.4, [MS-GPFAS] §2.2.2.19 and ECMA-376 §9")
    assert len(_shipped_text_files()) > 100
    assert any(p.suffix == ".yml" for p in _shipped_text_files())  # package data is scanned too


def test_nothing_shipped_points_at_an_unshipped_document() -> None:
    offenders = []
    for path in _shipped_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for pointer in _pointers(text):
            offenders.append(f"{path.relative_to(REPO)}: {pointer!r}")
    assert offenders == [], "pointers to documents that are not shipped:\n" + "\n".join(offenders)


def test_generated_pages_point_nowhere_private() -> None:
    for name, text in docs.rule_pages().items():
        assert _pointers(text) == [], name


# ---- generated pages ------------------------------------------------------------------------------------


def test_every_rule_has_a_committed_page_linked_from_the_index() -> None:
    index = (DOCS_DIR / docs.INDEX_PAGE).read_text(encoding="utf-8")
    for rule in RULES:
        page = DOCS_DIR / rule_page_name(rule.id)
        assert page.is_file(), f"{page} missing: run `vmrole rules --docs docs/rules`"
        assert f"]({rule_page_name(rule.id)})" in index, f"the index does not link {rule.id}"


def test_committed_pages_are_what_the_command_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rules"
    assert cli.main(["rules", "--docs", str(out)]) == 0
    written = {p.name: p.read_text(encoding="utf-8") for p in out.iterdir()}
    committed = {p.name: p.read_text(encoding="utf-8") for p in DOCS_DIR.iterdir() if p.is_file()}
    assert sorted(written) == sorted(committed), "docs/rules holds other files than the command writes"
    stale = sorted(name for name in written if written[name] != committed[name])
    assert stale == [], f"stale rule pages {stale}: run `vmrole rules --docs docs/rules`"
    assert docs.stale_rule_pages(DOCS_DIR) == []
    assert cli.main(["rules", "--docs", str(DOCS_DIR), "--check"]) == 0
    capsys.readouterr()


def test_rule_page_has_the_parts_of_a_rule_page() -> None:
    rule = next(r for r in RULES if r.id == "VMR010")
    page = docs.rule_page(rule)
    lines = page.splitlines()
    assert lines[0] == docs.GENERATED
    assert "# VMR010 vhd-footer-invalid" in lines
    assert rule.summary() in lines
    assert "| Severity | high (the default; `--severity VMR010=LEVEL` changes it) |" in lines
    assert "| Applies to | `image` |" in lines
    assert "| Waivable | yes |" in lines
    assert any(line.startswith("| Tags |") for line in lines)
    headings = [line for line in lines if line.startswith("## ")]
    assert headings == ["## What it does", "## Why is this bad?", "## Example", "## Use instead", "## References"]
    for url in rule.references:
        assert f"]({url})" in page, f"{url} is not a link on the page"
    assert "[All rules](README.md)" in lines


def test_secret_rule_page_says_not_waivable() -> None:
    rule = next(r for r in RULES if not r.waivable)
    assert "| Waivable | no (a secret: fix it, do not waive it) |" in docs.rule_page(rule).splitlines()


def test_check_fails_on_a_stale_page_and_writing_repairs_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "rules"
    assert cli.main(["rules", "--docs", str(out)]) == 0
    page = out / rule_page_name(RULES[0].id)
    page.write_text(page.read_text(encoding="utf-8") + "hand edit\n", encoding="utf-8")
    orphan = out / "VMR999.md"
    orphan.write_text(docs.GENERATED + "\n\n# VMR999 gone\n", encoding="utf-8")
    assert docs.stale_rule_pages(out) == sorted([page.name, orphan.name])
    assert cli.main(["rules", "--docs", str(out), "--check"]) == 1
    assert "is stale" in capsys.readouterr().err
    assert cli.main(["rules", "--docs", str(out)]) == 0
    assert not orphan.exists(), "a page generated for a rule that no longer exists is removed"
    assert docs.stale_rule_pages(out) == []


def test_writing_never_overwrites_a_file_it_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "rules"
    out.mkdir()
    (out / "NOTES.md").write_text("mine\n", encoding="utf-8")
    (out / docs.INDEX_PAGE).write_text("# my own index\n", encoding="utf-8")
    assert cli.main(["rules", "--docs", str(out)]) == 4
    assert "not overwriting" in capsys.readouterr().err
    assert (out / docs.INDEX_PAGE).read_text(encoding="utf-8") == "# my own index\n"
    assert (out / "NOTES.md").read_text(encoding="utf-8") == "mine\n"
    assert sorted(p.name for p in out.iterdir()) == sorted([docs.INDEX_PAGE, "NOTES.md"]), (
        "nothing is written on refusal"
    )


def test_check_without_docs_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["rules", "--check"]) == 4
    assert "--docs" in capsys.readouterr().err


def test_rules_json_lists_references_and_help_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docs_sources, "rule_docs_base_url", lambda: None)
    by_id = {entry["id"]: entry for entry in docs.rules_json()}
    for rule in RULES:
        assert by_id[rule.id]["references"] == list(rule.references)
        assert by_id[rule.id]["help_uri"] == rule.references[0]


# ---- SARIF helpUri ----------------------------------------------------------------------------------------


def _catalogue_run() -> RunResult:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    rules = [
        RuleInfo(
            id=r.id,
            name=r.name,
            severity=r.severity,
            summary=r.summary(),
            help_markdown=r.help_markdown(),
            applies_to=tuple(sorted(r.applies_to)),
            tags=tuple(r.tags),
            references=tuple(r.references),
        )
        for r in RULES
    ]
    return RunResult(tool_version="0.1.0", started=now, finished=now, fail_on=Severity.HIGH, root="/", rules=rules)


def _descriptors() -> dict[str, dict]:
    return {d["id"]: d for d in sarif.build_sarif(_catalogue_run())["runs"][0]["tool"]["driver"]["rules"]}


def test_sarif_links_every_rule_to_its_first_reference_without_a_pages_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docs_sources, "rule_docs_base_url", lambda: None)
    descriptors = _descriptors()
    assert sorted(descriptors) == _ids(RULES)
    for rule in RULES:
        d = descriptors[rule.id]
        assert d["helpUri"] == rule.references[0]
        for url in rule.references:
            assert f"]({url})" in d["help"]["markdown"], f"{rule.id}: {url} is not a link in help.markdown"
            assert url in d["help"]["text"]


def test_sarif_links_every_rule_to_its_page_when_the_pages_have_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docs_sources, "rule_docs_base_url", lambda: "https://github.com/o/r/blob/main/docs/rules")
    for rule_id, d in _descriptors().items():
        assert d["helpUri"] == f"https://github.com/o/r/blob/main/docs/rules/{rule_id}.md"
        assert (DOCS_DIR / f"{rule_id}.md").is_file()  # the page the URL names exists in the repository


@pytest.mark.parametrize(
    ("urls", "expected"),
    [
        ({}, None),
        ({"homepage": "https://example.test/vmrole"}, None),
        (
            {"repository": "https://github.com/o/vmrole-harness.git"},
            "https://github.com/o/vmrole-harness/blob/main/docs/rules",
        ),
        ({"source": "https://github.com/o/r/"}, "https://github.com/o/r/blob/main/docs/rules"),
        (
            {"rules": "https://o.github.io/r/rules/", "repository": "https://github.com/o/r"},
            "https://o.github.io/r/rules",
        ),
        ({"rules": "http://insecure.test/rules"}, None),
    ],
)
def test_pages_base_url_from_project_urls(
    urls: dict[str, str], expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docs_sources, "_project_urls", lambda: urls)
    docs_sources.rule_docs_base_url.cache_clear()
    try:
        assert docs_sources.rule_docs_base_url() == expected
        page = docs_sources.rule_page_url("VMR010")
        assert page == (f"{expected}/VMR010.md" if expected else None)
    finally:
        docs_sources.rule_docs_base_url.cache_clear()
