"""systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram
to $NOTIFY_SOCKET. A no-op when not started by systemd with Type=notify."""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send e.g. "READY=1" or "STATUS=..."; True if there was someone to tell."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]       # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall(message.encode())
        return True
    except OSError:
        return False
