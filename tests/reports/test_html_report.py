"""HTML report: content, escaping, self-containment (no fetched resource), the SVG chart."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.docs_sources import title_of
from harness.reports import sarif
from harness.reports.common import rule_help_uri
from harness.reports.html import render_html, write_html
from harness.reports.model import RunResult
from tests.reports.conftest import SCRIPT_MESSAGE

URL_ATTRIBUTES = {"src", "href", "srcset", "action", "poster", "data", "xlink:href", "formaction", "background"}


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        (self.styles if self._in_style else self.text).append(data)

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


@pytest.fixture
def html(run: RunResult) -> str:
    return render_html(run)


def test_every_finding_is_shown_with_rule_and_message(run: RunResult, html: str) -> None:
    text = parse(html).all_text
    for fr in run.findings:
        assert fr.finding.rule_id in text
        assert fr.finding.rule_name in text
        assert " ".join(fr.finding.message.split()) in text
        assert fr.finding.location in text


def test_message_markup_is_escaped(html: str) -> None:
    page = parse(html)
    assert "script" not in {tag for tag, _ in page.tags}
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in html
    assert SCRIPT_MESSAGE in page.all_text  # shown to the reader as text


def test_self_contained_no_external_resources(run: RunResult, html: str) -> None:
    page = parse(html)
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed", "base"}
    help_links = {uri for r in run.rules if (uri := rule_help_uri(r))}
    doc_links = set()
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            if name not in URL_ATTRIBUTES or not value:
                continue
            if value.startswith("#"):
                continue
            assert tag == "a" and name == "href", f"<{tag} {name}={value!r}> would load a resource"
            assert re.match(r"^https?://", value), value
            doc_links.add(value)
    # Only rule documentation links: the help URIs and links written in the rule docs.
    assert help_links <= doc_links
    assert all(u in help_links or "learn.microsoft.com" in u for u in doc_links), doc_links
    css = "\n".join(page.styles)
    assert "url(" not in css and "@import" not in css
    assert not re.search(r"\b(src|href)\s*=\s*[\"']?//", html)  # protocol-relative


def test_inline_svg_chart(html: str) -> None:
    page = parse(html)
    svg = [attrs for tag, attrs in page.tags if tag == "svg"]
    assert svg and svg[0].get("role") == "img"
    rects = [attrs.get("class") for tag, attrs in page.tags if tag == "rect"]
    assert {"seg-failed", "seg-reported", "seg-suppressed"} <= set(rects)


def test_verdict_and_threshold(html: str) -> None:
    text = parse(html).all_text
    assert "FAIL" in text
    assert "2 findings at or above high are neither waived nor baselined" in text
    assert "Fail-on threshold: high" in text


def test_dispositions_with_justification(html: str) -> None:
    text = parse(html).all_text
    assert "OPS-123: legacy endpoint removed in the Q3 migration (expires 2031-09-30)" in text
    assert "baselined in .vmrole-baseline.json" in text


def test_grouped_by_artefact_then_rule_worst_first(run: RunResult, html: str) -> None:
    page = parse(html)
    artefacts = []
    for i, (tag, attrs) in enumerate(page.tags):
        if tag == "span" and attrs.get("class") == "name":
            artefacts.append(i)
    assert len(artefacts) == 4
    text = page.all_text
    # the critical failure's package comes before the csdef's high failure
    assert text.index("pkg/Shop.cspkg") < text.index("svc/ServiceDefinition.csdef")
    assert text.index("VMR402 endpoint-port-blocked-by-firewall") < text.index("VMR501 http-input-endpoint")


def test_rule_help_is_collapsible_with_the_doc(run: RunResult, html: str) -> None:
    page = parse(html)
    details = [attrs.get("id") for tag, attrs in page.tags if tag == "details"]
    assert details == [f"rule-{r.id}" for r in sorted(run.rules, key=lambda r: r.id)]
    assert "Why is this bad?" in page.all_text
    assert "<pre><code>&lt;InputEndpoint name=&#34;HttpIn&#34;" in html


def test_pass_and_empty_runs_render(run: RunResult) -> None:
    run.findings = []
    text = parse(render_html(run)).all_text
    assert "PASS" in text and "No findings." in text


def test_unsafe_help_uri_is_not_linked(run: RunResult) -> None:
    from dataclasses import replace

    run.rules = [replace(r, help_uri="javascript:alert(1)") if r.id == "VMR301" else r for r in run.rules]
    assert "javascript:" not in render_html(run)


def test_write_html(run: RunResult, tmp_path: Path) -> None:
    path = write_html(run, tmp_path / "x" / "report.html")
    content = path.read_text(encoding="utf-8")
    assert content.startswith("<!DOCTYPE html>")
    assert content == render_html(run)


def _rule_bodies(html: str) -> dict[str, str]:
    return dict(re.findall(r'<details class="rule" id="rule-(VMR\d+)">(.*?)</details>', html, re.S))


def test_each_rule_links_the_help_uri_sarif_links(run: RunResult, html: str) -> None:
    (sarif_run,) = sarif.build_sarif(run)["runs"]
    sarif_uris = {d["id"]: d.get("helpUri") for d in sarif_run["tool"]["driver"]["rules"]}
    bodies = _rule_bodies(html)
    assert set(bodies) == {r.id for r in run.rules}
    linked = 0
    for rule_id, body in bodies.items():
        uri = sarif_uris[rule_id]
        if uri is None:
            assert ">documentation</a>" not in body
            continue
        hrefs = {attrs["href"] for tag, attrs in parse(body).tags if tag == "a"}
        assert uri in hrefs, rule_id
        assert f'<a href="{uri}" rel="noreferrer noopener">documentation</a>' in body
        linked += 1
    assert linked >= 3  # VMR301 and VMR501 set one; VMR504 has its reference's


def test_references_render_as_links(run: RunResult, html: str) -> None:
    bodies = _rule_bodies(html)
    # cited in the doc text as a Markdown link: a link under its title
    cited = "https://learn.microsoft.com/en-us/previous-versions/azure/reference/ee758711(v=azure.100)"
    assert f'<a href="{cited}" rel="noreferrer noopener">Cloud service definition schema</a>' in bodies["VMR501"]
    # a reference the doc does not cite is listed under its title from harness.docs_sources
    (uncited,) = next(r for r in run.rules if r.id == "VMR504").references
    page = parse(bodies["VMR504"])
    assert {"href": uncited, "rel": "noreferrer noopener"} in [a for tag, a in page.tags if tag == "a"]
    assert title_of(uncited) in page.all_text and title_of(uncited) != uncited


def test_doc_reference_lines_become_links_under_their_title(run: RunResult) -> None:
    """A catalogue docstring's ``- Title: URL`` line (parentheses in the URL included) is one link."""
    from dataclasses import replace

    url = "https://learn.microsoft.com/en-us/previous-versions/azure/reference/gg441298(v=azure.100)"
    doc = f"Summary.\n\n### References\n- Reboot Role Instance: {url}\n"
    run.rules = [replace(r, help_markdown=doc, references=(url,)) if r.id == "VMR502" else r for r in run.rules]
    body = _rule_bodies(render_html(run))["VMR502"]
    assert f'<a href="{url}" rel="noreferrer noopener">Reboot Role Instance</a>' in body
    assert body.count(f'href="{url}"') == 2  # the reference and the documentation link; not listed again


def test_unsafe_reference_is_not_linked_and_markup_is_escaped(run: RunResult) -> None:
    from dataclasses import replace

    bad = ("javascript:alert(1)", 'https://x.test/"><script>alert(1)</script>')
    run.rules = [replace(r, references=bad) if r.id == "VMR503" else r for r in run.rules]
    html = render_html(run)
    assert "javascript:" not in html and "<script" not in html.lower()
    hrefs = [a["href"] for tag, a in parse(_rule_bodies(html)["VMR503"]).tags if tag == "a"]
    assert 'https://x.test/"><script>alert(1)</script>' in hrefs  # one attribute value, escaped in the HTML
