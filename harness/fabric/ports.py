"""Loopback port allocation: the fabric never uses fixed ports."""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

LOOPBACK = "127.0.0.1"


WINDOW = 250  # ports per process window: ~90 windows below a default ephemeral range
_HANDED_OUT: set[int] = set()
_LOCK = threading.Lock()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _candidates() -> list[int]:
    """Ports below the kernel's ephemeral range, in a per-process window, shuffled.

    Outgoing connections take their local port from the ephemeral range: a port handed out from there
    (bind to 0) can be taken by some client's connection before the server that was given it binds it.
    Below that range only servers bind, the per-process window keeps concurrent fabrics (xdist workers)
    apart, and the shuffle makes two of them unlikely to race for the same port even in one window.
    """
    low, _ = _ephemeral_range()
    first, last = 10_000, low - 1
    if last - first < 2_000:
        return []
    windows = (last - first + 1) // WINDOW
    start = first + (os.getpid() % windows) * WINDOW
    ports = list(range(start, start + WINDOW))
    random.shuffle(ports)
    return ports


def _free(port: int, udp: bool) -> bool:
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                return False
    return True


def allocate(n: int = 1, *, udp: bool = False) -> list[int]:
    """``n`` distinct free loopback ports (TCP, or free for both TCP and UDP when ``udp``).

    Taken below the ephemeral range (see :func:`_candidates`); bind-to-0 is the fallback when that range
    is too small. A port can still be taken between this call and the bind of the server it is for; the
    servers report a bind failure clearly, naming the port.
    """
    ports: list[int] = []
    with _LOCK:
        for port in _candidates():
            if len(ports) == n:
                break
            # never twice in one process: an earlier caller's server may not have bound its port yet
            if port not in _HANDED_OUT and _free(port, udp):
                ports.append(port)
                _HANDED_OUT.add(port)
    if len(ports) == n:
        return ports
    held: list[socket.socket] = []
    try:
        while len(ports) < n:
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.bind((LOOPBACK, 0))
            port = tcp.getsockname()[1]
            held.append(tcp)
            if udp:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    u.bind((LOOPBACK, port))
                except OSError:
                    u.close()
                    continue
                held.append(u)
            if port not in ports:
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def is_listening(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
