"""Ports for servers the tests start (etcd members, the metrics endpoint).

A port found free by binding to port 0 comes from the kernel's ephemeral
range, where any outgoing connection on the machine may take it as its source
port before our server binds it: an etcd member of a new cluster once failed
to start with "bind: address already in use" while its fellow members were
already dialling each other. These come from below that range, where only an
explicit bind takes a port, and none is handed out twice by one process."""

from __future__ import annotations

import random
import socket
import threading

_given: set[int] = set()
_lock = threading.Lock()
LOWEST = 20000


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on host that nothing has bound, below the ephemeral range, new to this process."""
    high = _ephemeral_low() - 1
    with _lock:
        for _ in range(1000):
            port = random.randint(LOWEST, high)
            if port in _given:
                continue
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _given.add(port)
            return port
    raise RuntimeError(f"no free port on {host} in {LOWEST}-{high}")
