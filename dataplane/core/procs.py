"""Stopping a process this project started (the agent, etcd): SIGTERM, a
grace period, then SIGKILL; reaped if it is our child, and gone once all its
threads have exited if it is not (a zombie waits on its own parent, not on us)."""

from __future__ import annotations

import os
import select
import signal
import time


def _open(pid: int) -> int | None:
    """A pidfd for pid (None: the process is gone, or pidfds are not to be had)."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def _exited(pid: int, pidfd: int | None) -> bool:
    """A process another started has exited: its pidfd is readable once the whole thread
    group has (a zombie whose parent has not reaped it yet included; its leader alone
    shows Z in /proc/PID/stat while other threads still run). Without a pidfd: /proc/PID gone."""
    if pidfd is None:
        return not os.path.exists(f"/proc/{pid}")
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    return bool(p.poll(0))


def _reap(pid: int, pidfd: int | None = None) -> bool:
    """True once pid is gone (reaped here, or not our child and exited)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return _exited(pid, pidfd)


def terminate(pid: int, timeout: float = 10.0, first: int = signal.SIGTERM) -> None:
    pidfd = _open(pid)       # before the first signal: the number cannot be another process's then
    try:
        for sig, wait in ((first, timeout), (signal.SIGKILL, 2.0)):
            if sig is not None:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if _reap(pid, pidfd):
                    return
                time.sleep(0.05)
    finally:
        if pidfd is not None:
            os.close(pidfd)
