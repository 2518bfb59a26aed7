"""Stopping a process this project started (the agent, etcd): SIGTERM, a
grace period, then SIGKILL; reaped if it is our child, and gone once it has
exited if it is not (a zombie waits on its own parent, not on us)."""

from __future__ import annotations

import os
import signal
import time


def _exited(pid: int) -> bool:
    """True if pid is no process or one that has exited and waits only to be
    reaped by its parent (state Z or X): a process another started."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _reap(pid: int) -> bool:
    """True once pid is gone (reaped here, or not our child and exited)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return _exited(pid)


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
