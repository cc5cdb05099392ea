"""Just enough Markdown for rule docstrings, rendered safely (everything escaped first).

Handles headings, paragraphs, ``-``/``*`` lists, fenced code blocks, inline code, ``**bold**`` and
``[text](https://…)`` links; anything else shows as text. Links other than http(s) stay text, so a
docstring can never inject a ``javascript:`` URL into the report.
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^\s*[-*]\s+(.*)$")
_FENCE = re.compile(r"^\s*(```|~~~)")
# A URL may hold balanced parentheses, as learn.microsoft.com's "(v=azure.100)" pages do.
_LINK = re.compile(r"\[([^\]]+)\]\((https?://(?:[^\s()]|\([^\s()]*\))+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_BARE_URL = re.compile(r"(?<![\"'>=])\b(https?://[^\s<>\"')]+[^\s<>\"'.,;:)])")


def inline(text: str) -> str:
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if len(part) > 1 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{escape(part[1:-1])}</code>")
            continue
        html = str(escape(part))
        html = _LINK.sub(r'<a href="\2" rel="noreferrer noopener">\1</a>', html)
        if "<a " not in html:
            html = _BARE_URL.sub(r'<a href="\1" rel="noreferrer noopener">\1</a>', html)
        html = _BOLD.sub(r"<strong>\1</strong>", html)
        out.append(html)
    return "".join(out)


def to_html(text: str, heading_level: int = 4) -> Markup:
    out: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []
    code: list[str] | None = None

    def flush() -> None:
        if paragraph:
            out.append("<p>" + inline(" ".join(s.strip() for s in paragraph)) + "</p>")
            paragraph.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{inline(item)}</li>" for item in items) + "</ul>")
            items.clear()

    for line in text.splitlines():
        if code is not None:
            if _FENCE.match(line):
                out.append(f"<pre><code>{escape(chr(10).join(code))}</code></pre>")
                code = None
            else:
                code.append(line)
            continue
        if _FENCE.match(line):
            flush()
            code = []
            continue
        if heading := _HEADING.match(line):
            flush()
            out.append(f"<h{heading_level}>{inline(heading.group(2))}</h{heading_level}>")
            continue
        if bullet := _BULLET.match(line):
            if paragraph:
                flush()
            items.append(bullet.group(1).strip())
            continue
        if not line.strip():
            flush()
            continue
        if items and line.startswith((" ", "\t")):
            items[-1] += " " + line.strip()
            continue
        if items:
            flush()
        paragraph.append(line)
    if code is not None:  # unterminated fence: show what there is
        out.append(f"<pre><code>{escape(chr(10).join(code))}</code></pre>")
    flush()
    return Markup("\n".join(out))
