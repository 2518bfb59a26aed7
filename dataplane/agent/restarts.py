"""An agent that keeps dying under systemd waits longer before each new start.

The unit restarts the agent a second after it exits and never gives up (a late underlay at boot
must not leave the node without one for good; service_cmds.py). An agent that dies at every
start (a registry URL it refuses, a defect) was restarted every second, for good: a start's
sweep and its read of the registry each time, and a journal filling with the same lines. systemd
252 (Debian 12) has no RestartSteps= to slow it. So the agent counts its starts in a row that
never came to a healthy run (synced, and up HEALTHY_S), in the node's run directory (gone at a
reboot), and under a supervisor waits 2 s before the FREE+1st, 4 s before the next, up to
MAX_WAIT_S, saying why in its log and in `systemctl status`. A healthy run starts the count over.
Started by hand (`dataplane up`) it only counts: nothing restarts it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable

from dataplane.agent import sdnotify
from dataplane.core import state

log = logging.getLogger("dataplane.agent")
FREE = 3                 # starts in a row without a healthy run before any wait
MAX_WAIT_S = 30.0        # (the unit's TimeoutStartSec, 120 s, also covers the restore's wait for the underlay)
HEALTHY_S = 60.0         # synced and up this long: the count starts over


def _path(node: str) -> str:
    return os.path.join(state.node_dir(node), "agent-starts")


def _count(node: str) -> int:
    try:
        with open(_path(node)) as f:
            return max(0, int(json.load(f)))
    except (OSError, ValueError, TypeError):
        return 0


def _save(node: str, n: int) -> None:
    if not os.path.isdir(state.node_dir(node)):     # the node taken down meanwhile: nothing to make again
        return
    with contextlib.suppress(OSError):      # a count not kept only means no wait
        state.write_json(_path(node), n)


def wait_for(n: int) -> float:
    """The wait before the nth start in a row without a healthy run."""
    return min(MAX_WAIT_S, 2.0 ** (n - FREE)) if n > FREE else 0.0


def before_start(node: str, wait: Callable[[float], object], supervised: bool | None = None) -> float:
    """Count this start; under a supervisor (NOTIFY_SOCKET), wait (wait(seconds): a sleep that a
    stop cuts short) as the count says. The seconds waited."""
    n = _count(node) + 1
    _save(node, n)
    if supervised is None:
        supervised = bool(os.environ.get("NOTIFY_SOCKET"))
    seconds = wait_for(n) if supervised else 0.0
    if seconds:
        why = f"start {n} in a row without a healthy run (synced and up {HEALTHY_S:.0f} s): waiting {seconds:.0f} s"
        log.warning("%s first", why)
        sdnotify.notify(f"STATUS={why}")
        wait(seconds)
    return seconds


def note_uptime(ag, now: float) -> None:
    """From the agent's housekeeping: once synced and up HEALTHY_S, the count starts over (once)."""
    if not getattr(ag, "run_was_healthy", False) and ag.synced.is_set() and now - ag.started >= HEALTHY_S:
        ag.run_was_healthy = True
        _save(ag.node.name, 0)
