"""The ``vmrole_fabric`` fixture: bring a local deployment up for a test, and always down afterwards."""

from __future__ import annotations

import atexit
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def vmrole_fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Any]]:
    """A factory: ``fabric = vmrole_fabric(csdef=..., cscfg=...)`` (default: the bundled sample).

    Every fabric it started is brought down at teardown (and at interpreter exit, should teardown not
    run), and the teardown fails if a process or port was left behind.
    """
    from harness.fabric.client import Fabric, down, up

    started: list[Fabric] = []

    def start(
        csdef: Path | None = None, cscfg: Path | None = None, package: Path | None = None, **options: Any
    ) -> Fabric:
        state = tmp_path_factory.mktemp("fabric")
        atexit.register(down, state)
        fabric = up(state, csdef=csdef, cscfg=cscfg, package=package, **options)
        started.append(fabric)
        return fabric

    yield start
    leftovers = []
    for fabric in started:
        report = fabric.down()
        if report.ports_still_open or report.killed:
            leftovers.append(f"{fabric.layout.root}: killed {report.killed}, open ports {report.ports_still_open}")
    assert not leftovers, "the fabric left processes or ports behind: " + "; ".join(leftovers)
