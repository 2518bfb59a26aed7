"""An agent that keeps dying under systemd waits longer before each new start.

The unit restarts the agent a second after it exits and never gives up (a late underlay at boot
must not leave the node without one for good; service_cmds.py). An agent that dies at every
start (a registry that refuses it, certificates it cannot read, a defect) was restarted every
second, for good: a start's sweep and its read of the registry each time, and a journal filling
with the same lines. systemd 252 (Debian 12) has no RestartSteps= to slow it. So `agent run`
counts its starts in a row that never came to a healthy run (synced, and up HEALTHY_S), in the
node's run directory (gone at a reboot), and under a supervisor waits 2 s before the FREE+1st,
4 s before the next, up to MAX_WAIT_S, saying why in its log and in `systemctl status`, with the
unit's start timeout extended by the wait. A healthy run starts the count over, and so do a stop
asked for once synced (`systemctl restart`) and a start long after the last (STALE_S).
Started by hand (`dataplane up`) it only counts: nothing restarts it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable

from dataplane.agent import sdnotify
from dataplane.core import state

log = logging.getLogger("dataplane.agent")
FREE = 3                 # starts in a row without a healthy run before any wait
MAX_WAIT_S = 30.0
HEALTHY_S = 60.0         # synced and up this long: the count starts over
STALE_S = 2 * (MAX_WAIT_S + HEALTHY_S)      # a start this long after the last starts over too
START_TIMEOUT_S = 120    # the unit's TimeoutStartSec: extended by each wait
CAP = FREE + 16          # the count kept: past it, the wait is the same


def _path(node: str) -> str:
    return os.path.join(state.node_dir(node), "agent-starts")


def _now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)      # (the file is in /run: one boot's)


def _read(node: str) -> tuple[int, float]:
    try:
        with open(_path(node)) as f:
            d = json.load(f)
        return max(0, min(CAP, int(d["n"]))), float(d["at"])
    except (OSError, ValueError, TypeError, KeyError):
        return 0, 0.0


def _save(node: str, n: int, at: float) -> None:
    if not os.path.isdir(state.node_dir(node)):     # the node taken down meanwhile: nothing to make again
        return
    with contextlib.suppress(OSError):      # a count not kept only means no wait
        state.write_json(_path(node), {"n": n, "at": at})


def wait_for(n: int) -> float:
    """The wait before the nth start in a row without a healthy run."""
    return min(MAX_WAIT_S, 2.0 ** (min(n, CAP) - FREE)) if n > FREE else 0.0


def count(node: str) -> int:
    """This start counted (the first thing `agent run` does, so that a start that fails at once
    counts too): its number in the row."""
    n, at = _read(node)
    now = _now()
    n = 1 if now - at > STALE_S else min(CAP, n + 1)
    _save(node, n, now)
    return n


def uncount(node: str) -> None:
    """The start just counted was none of the node's agent's (refused: another agent holds it)."""
    n, at = _read(node)
    if n:
        _save(node, n - 1, at)


def under_supervisor() -> bool:
    return bool(os.environ.get("NOTIFY_SOCKET"))


def pause(n: int, wait: Callable[[float], object], supervised: bool | None = None) -> float:
    """Under a supervisor (NOTIFY_SOCKET), wait as the nth start in a row (wait(seconds): a sleep
    that a stop may cut short). The seconds waited."""
    if supervised is None:
        supervised = under_supervisor()
    seconds = wait_for(n) if supervised else 0.0
    if seconds:
        why = f"start {n} in a row without a healthy run (synced and up {HEALTHY_S:.0f} s): waiting {seconds:.0f} s"
        log.warning("%s first", why)
        sdnotify.notify(f"STATUS={why}\nEXTEND_TIMEOUT_USEC={int((seconds + START_TIMEOUT_S) * 1e6)}")
        wait(seconds)
    return seconds


def pause_holding(ag) -> bool:
    """Agent.run's wait, once it holds the node and the agent file names it (so `down` sees it).
    True if a stop came while it waited. A start that fails before this waits in `agent run`."""
    ag.start_waited = True
    return bool(pause(getattr(ag, "start_number", 0), ag.stopping.wait)) and ag.stopping.is_set()


def stopped(node: str) -> None:
    """A stop asked for (SIGTERM: `systemctl restart`) once synced: the count starts over. A start
    killed at the unit's start timeout has not synced, and a watchdog's kill is no SIGTERM."""
    _save(node, 0, _now())


def note_uptime(ag, now: float) -> None:
    """From the agent's main loop: once synced and up HEALTHY_S, the count starts over (once)."""
    if not getattr(ag, "run_was_healthy", False) and ag.synced.is_set() and now - ag.started >= HEALTHY_S:
        ag.run_was_healthy = True
        _save(ag.node.name, 0, _now())
