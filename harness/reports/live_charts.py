"""Pictures for the live probes, as inline SVG: load-balancer spread and reimage timeline.

Chart data comes from the live stages (harness/live/CONTRACT.md); every text is escaped here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

STATUS_COLOURS = {
    "ReadyRole": "#2e7d32",
    "BusyRole": "#f9a825",
    "StoppingRole": "#ef6c00",
    "StoppedVM": "#c62828",
    "StartingVM": "#6a1b9a",
    "StartingRole": "#6a1b9a",
    "RestartingRole": "#ef6c00",
}


@dataclass(frozen=True)
class LiveChart:
    title: str
    artefact: str
    svg: Markup
    caption: str


def _bars(counts: dict[str, int], bound: Any, width: int = 640) -> Markup:
    names = sorted(counts)
    top = max([*counts.values(), 1])
    row, label_w = 26, 150
    height = row * len(names) + 10
    parts = [f'<svg class="live-chart" viewBox="0 0 {width} {height}" role="img" width="{width}" height="{height}">']
    for i, name in enumerate(names):
        y = 5 + i * row
        w = int((width - label_w - 60) * counts[name] / top)
        colour = "#c62828" if counts[name] == 0 else "#1565c0"
        parts.append(f'<text x="0" y="{y + 16}" font-size="13">{escape(name)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 2)}" height="18" fill="{colour}" rx="3"/>')
        parts.append(f'<text x="{label_w + w + 6}" y="{y + 16}" font-size="12">{int(counts[name])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _timeline(events: list[Any], width: int = 640) -> Markup:
    points = [(float(e[0]), str(e[1])) for e in events if isinstance(e, (list, tuple)) and len(e) >= 2]
    if not points:
        return Markup("<p>(no events)</p>")
    t0, t1 = points[0][0], max(points[-1][0], points[0][0] + 0.001)
    span = t1 - t0
    rows_end: list[float] = []  # where the last label of each text row ends, to avoid overlaps
    labels: list[str] = []
    for i, (t, status) in enumerate(points):
        end = points[i + 1][0] if i + 1 < len(points) else t1 + span * 0.08
        x = 10 + (width - 20) * (t - t0) / (span * 1.08)
        w = max(2.0, (width - 20) * (end - t) / (span * 1.08))
        colour = STATUS_COLOURS.get(status, "#607d8b")
        labels.append(f'<rect x="{x:.1f}" y="10" width="{w:.1f}" height="26" fill="{colour}"/>')
        text = f"{status} @ {t - t0:.1f}s"
        row = next((r for r, last in enumerate(rows_end) if last < x), len(rows_end))
        if row == len(rows_end):
            rows_end.append(0.0)
        rows_end[row] = x + 6.2 * len(text) + 8
        labels.append(f'<text x="{x:.1f}" y="{54 + row * 15}" font-size="11">{escape(text)}</text>')
    height = 60 + 15 * len(rows_end)
    parts = [f'<svg class="live-chart" viewBox="0 0 {width} {height}" role="img" width="{width}" height="{height}">']
    parts += labels
    parts.append("</svg>")
    return Markup("".join(parts))


def live_charts(charts: list[dict[str, Any]]) -> list[LiveChart]:
    out = []
    for chart in charts:
        data = chart.get("data") or {}
        artefact = str(chart.get("artefact", ""))
        if chart.get("key") == "lb-spread":
            counts = {str(k): int(v) for k, v in (data.get("instances") or {}).items()}
            caption = (
                f"{data.get('requests', '?')} new connections through the VIP; bound for "
                f"{data.get('confidence', '?')} confidence: {data.get('bound', '?')} requests"
            )
            out.append(LiveChart("Load-balancer spread", artefact, _bars(counts, data.get("bound")), caption))
        elif chart.get("key") == "reimage-timeline":
            caption = f"instance {data.get('instance', '?')}: status over time during the reimage"
            out.append(LiveChart("Reimage timeline", artefact, _timeline(data.get("events") or []), caption))
    return out
