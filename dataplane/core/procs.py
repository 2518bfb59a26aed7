"""Stopping a process this project started (the agent, etcd): SIGTERM, a
grace period, then SIGKILL; reaped if it is our child."""

from __future__ import annotations

import os
import signal
import time


def _reap(pid: int) -> bool:
    """True once pid is gone (reaped here, or not our child and exited)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return not os.path.exists(f"/proc/{pid}")


def terminate(pid: int, timeout: float = 10.0, first: int = signal.SIGTERM) -> None:
    for sig, wait in ((first, timeout), (signal.SIGKILL, 2.0)):
        if sig is not None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _reap(pid):
                return
            time.sleep(0.05)
