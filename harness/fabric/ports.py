"""Loopback addresses and ports: the deployment's own VIP, the declared ports it binds, allocated ports.

Every deployment gets its own VIP address in ``127.0.0.0/8`` (:func:`claim_vip`), so its endpoints can listen
on the ports the service definition declares, and two fabrics on one machine never collide. Everything else
(instances, agents, WinRM, the management and control APIs, Azurite) binds 127.0.0.1 on allocated ports
(:func:`allocate`), never a fixed one.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import random
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
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
    start = first + _window(windows) * WINDOW
    ports = list(range(start, start + WINDOW))
    random.shuffle(ports)
    return ports


def _window(windows: int) -> int:
    """This process's window: by pid, within a band of windows of its own under pytest-xdist (the fabrics of
    two workers then never draw from one window: a port one of them freed for a moment, an instance being
    reimaged or crashed by a fault, cannot be handed to the other)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker[:2] == "gw" and worker[2:].isdigit() and count.isdigit() and 0 < int(count) <= windows:
        band = windows // int(count)
        return (int(worker[2:]) % int(count)) * band + os.getpid() % band
    return os.getpid() % windows


def _free(port: int, udp: bool, host: str = LOOPBACK) -> bool:
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def allocate(n: int = 1, *, udp: bool = False, host: str = LOOPBACK) -> list[int]:
    """``n`` distinct free ports on ``host`` (TCP, or free for both TCP and UDP when ``udp``).

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
            if port not in _HANDED_OUT and _free(port, udp, host):
                ports.append(port)
                _HANDED_OUT.add(port)
    if len(ports) == n:
        return ports
    held: list[socket.socket] = []
    try:
        while len(ports) < n:
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            held.append(tcp)
            if udp:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    u.bind((host, port))
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


# ---- the deployment's VIP ----------------------------------------------------------------------------

#: VIPs come from 127.64.0.0/10: clear of 127.0.0.1, of the instances' internal addresses (127.0.1.0/24) and
#: of the 127.0.1.1 that Debian gives the host name.
VIP_NETWORK = ipaddress.ip_network("127.64.0.0/10")
VIP_ATTEMPTS = 64
_CLAIM_PREFIX = "vmrole-fabric-vip/"
_CLAIMS: dict[str, VipClaim] = {}  # address -> claim held by this process


class VipError(OSError):
    """No VIP address could be claimed; the message says why."""


@dataclass
class VipClaim:
    """A VIP address held by this process: an abstract unix socket named after the address is bound for as long
    as the claim lives (the kernel releases it when the process ends, however it ends), so another fabric on the
    machine (same network namespace) skips the address. No file is involved, so nothing can go stale."""

    address: str
    seed: str
    sock: socket.socket

    def release(self) -> None:
        self.sock.close()
        if _CLAIMS.get(self.address) is self:
            del _CLAIMS[self.address]


def release_vip(address: str) -> None:
    """Give up this process's claim on ``address`` (a deleted deployment's VIP); nothing if not held."""
    claim = _CLAIMS.get(address)
    if claim is not None:
        claim.release()


def vip_candidates(seed: str) -> Iterator[str]:
    """The addresses :func:`claim_vip` tries for ``seed``, in order: the same seed always gives the same order."""
    size = VIP_NETWORK.num_addresses
    base = int(VIP_NETWORK.network_address)
    for attempt in range(VIP_ATTEMPTS):
        digest = hashlib.sha256(f"{seed}\0{attempt}".encode()).digest()
        offset = int.from_bytes(digest[:4], "big") % size
        if offset & 0xFF in (0, 255):  # no .0 or .255: some tools read them as network/broadcast addresses
            offset ^= 1
        yield str(ipaddress.IPv4Address(base + offset))


def _proc_net_hex(address: str) -> str:
    import sys

    return f"{int.from_bytes(socket.inet_aton(address), sys.byteorder):08X}"


def address_in_use(address: str) -> bool:
    """Whether any TCP or UDP socket of this network namespace is bound to ``address`` (from /proc/net):
    a program that is not a fabric may use the address too."""
    wanted = _proc_net_hex(address)
    for table in ("tcp", "udp"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 1 and fields[1].split(":")[0] == wanted:
                return True
    return False


def claim_vip(seed: str) -> VipClaim:
    """Claim this deployment's VIP: the first of :func:`vip_candidates` (``seed``: the state folder) that no
    other fabric (or deployment of this process) holds, no socket uses, and that a probe bind accepts. The
    claim lasts until :meth:`VipClaim.release` / :func:`release_vip` or the end of the process."""
    problems: list[str] = []
    for address in vip_candidates(seed):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind("\0" + _CLAIM_PREFIX + address)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                problems.append(f"{address}: held by another fabric")
                continue
            raise VipError(f"cannot claim a VIP address: {exc.strerror or exc}") from None
        reason = "in use by a socket of another program" if address_in_use(address) else bind_problem(address, 0)
        if reason is not None:
            sock.close()
            problems.append(f"{address}: {reason}")
            continue
        claim = VipClaim(address, seed, sock)
        _CLAIMS[address] = claim
        return claim
    raise VipError(f"no free VIP address after {VIP_ATTEMPTS} tries: {'; '.join(problems[-3:])}")


def vip_holder(address: str) -> bool:
    """Whether some process holds the fabric claim on ``address``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.bind("\0" + _CLAIM_PREFIX + address)
        except OSError:
            return True
    return False


def unprivileged_port_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text().strip())
    except (OSError, ValueError):
        return 1024


def bind_problem(host: str, port: int, *, udp: bool = False) -> str | None:
    """Why ``host:port`` cannot be bound now (None: it can), by binding it as HAProxy will (SO_REUSEADDR).

    The reason is meant for people: ``permission denied (ports below 1024 need root or
    CAP_NET_BIND_SERVICE)``, ``in use by another program``, or the system's own words."""
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                what = "udp " if kind == socket.SOCK_DGRAM else ""
                if exc.errno in (errno.EACCES, errno.EPERM):
                    return (
                        f"{what}permission denied (ports below {unprivileged_port_start()} need root or "
                        "CAP_NET_BIND_SERVICE)"
                    )
                if exc.errno == errno.EADDRINUSE:
                    return f"{what}port in use by another program"
                return f"{what}{exc.strerror or exc}"
    return None
