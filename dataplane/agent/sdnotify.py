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


class Watchdog:
    """systemd's watchdog (WatchdogSec=): WATCHDOG=1 every half of WATCHDOG_USEC, from the main
    loop's turns, so an agent whose main loop is stuck (a deadlock, a call that never returns)
    is killed and restarted (before, a hung agent was left as it was). Nothing when systemd asked
    for none, or asked another process (WATCHDOG_PID)."""

    def __init__(self, env=os.environ):
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.every_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self.due = 0.0

    def ping(self, now: float) -> None:
        if self.every_s is not None and now >= self.due:
            self.due = now + self.every_s
            notify("WATCHDOG=1")
