"""Loopback port allocation: the fabric never uses fixed ports."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def allocate(n: int = 1, *, udp: bool = False) -> list[int]:
    """``n`` distinct free loopback ports (TCP, or ports free for both TCP and UDP when ``udp``).

    The sockets are held until all ``n`` are chosen so the same port is never handed out twice in one
    call; another process can still race us for a port afterwards, which callers handle by retrying
    the start of the server that failed to bind.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
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
