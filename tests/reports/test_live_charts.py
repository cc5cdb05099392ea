"""Live pictures: escaped, one bar per instance, a timeline segment per status, labels never stacked."""

from __future__ import annotations

import re

from harness.reports.live_charts import live_charts


def test_spread_and_timeline_render_as_escaped_svg():
    charts = live_charts(
        [
            {"key": "lb-spread", "artefact": "t", "data": {"instances": {"A_IN_0": 5, "<b>": 0}, "requests": 5}},
            {
                "key": "reimage-timeline",
                "artefact": "t",
                "data": {"instance": "A_IN_0", "events": [[0, "ReadyRole"], [0.1, "StoppingRole"], [10, "StoppedVM"]]},
            },
            {"key": "unknown", "artefact": "t", "data": {}},
        ]
    )
    assert [c.title for c in charts] == ["Load-balancer spread", "Reimage timeline"]
    spread, timeline = (str(c.svg) for c in charts)
    assert spread.count("<rect") == 2 and "&lt;b&gt;" in spread and "<b>" not in spread
    assert timeline.count("<rect") == 3
    # the first two labels would overlap (0.1 s apart on a 10 s axis): they go to separate rows
    ys = [(float(x), int(y)) for x, y in re.findall(r'<text x="([\d.]+)" y="(\d+)"', timeline)]
    assert len({y for _, y in ys}) >= 2
