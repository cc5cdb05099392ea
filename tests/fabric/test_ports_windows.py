"""Port windows: the fabrics of two pytest-xdist workers never draw ports from one window (a port freed for a
moment by a reimage or a crash fault in one worker's fabric was once handed to the other worker's fabric)."""

from __future__ import annotations

import pytest

from harness.fabric import ports


@pytest.mark.parametrize("windows", [2, 20, 91])
def test_xdist_workers_get_disjoint_windows_whatever_their_pids(monkeypatch: pytest.MonkeyPatch, windows: int) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    seen: dict[str, set[int]] = {}
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        for pid in range(1000, 1400):
            monkeypatch.setattr(ports.os, "getpid", lambda pid=pid: pid)
            window = ports._window(windows)
            assert 0 <= window < windows
            seen.setdefault(worker, set()).add(window)
    assert not seen["gw0"] & seen["gw1"]
    assert len(seen["gw0"]) == windows // 2  # every window of its band is used: pids still spread fabrics


def test_outside_xdist_the_window_follows_the_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.setattr(ports.os, "getpid", lambda: 1234)
    assert ports._window(91) == 1234 % 91
