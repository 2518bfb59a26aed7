"""Endpoints an API operation of this agent is working on.

An operation (endpoint add, rm, move; a runtime's attach and detach) writes the
registry and makes or removes the sandbox. Its registry calls are made without the
agent's lock: during an outage each can take seconds per member, and the main loop
(registry events, punts, the fast path's heartbeat, ageing) must not wait on them.
Between its steps the registry and the node disagree about that endpoint on purpose
(a record with no sandbox yet, a sandbox whose record is going), so the main loop
leaves an endpoint in `ag.busy` alone (local.py), and looks at it again once the
operation ends (a "recheck" message: whatever the watch brought meanwhile is applied
then). Two operations on one endpoint take turns."""

from __future__ import annotations

import contextlib
import threading
import time

DETACHED_KEEP_S = 3600.0        # how long a detach's arrival is remembered (an attach waits far less)
_detached_mu = threading.Lock()   # (never the agent's lock: taken before the turn is)


def attach(ag) -> None:
    """The bookkeeping on ag (which has its lock): the endpoints being worked on, the
    condition that says one was let go, the lock that puts the runtimes' network operations
    in turn without the agent's lock, and a lock per network for address allocations."""
    ag.busy = set()
    ag.busy_changed = threading.Condition(ag.lock)
    ag.oplock = threading.RLock()
    ag.netlocks, ag.netlocks_mu = {}, threading.Lock()
    # deferred.py: writes decided under the lock (endpoint -> deferred.Entry), made without it
    ag.deferred, ag.writer = {}, None
    ag.detached_at = {}         # endpoint -> when the last detach of it arrived (detach_arrived)


def detach_arrived(ag, eid: str) -> None:
    """A detach of eid has arrived, before it waits for its turn (working_on takes the agent's
    lock, which grants no order): an attach that arrived before it and has not had its turn is
    not to make anything (detached_since)."""
    now = time.monotonic()
    with _detached_mu:
        seen = ag.__dict__.setdefault("detached_at", {})
        for k in [k for k, t in seen.items() if now - t > DETACHED_KEEP_S]:
            del seen[k]
        seen[eid] = now


def detached_since(ag, eid: str, arrived: float) -> bool:
    """Whether a detach of eid arrived after `arrived` (an attach's arrival, time.monotonic())."""
    with _detached_mu:
        return getattr(ag, "detached_at", {}).get(eid, float("-inf")) > arrived


def network_lock(ag, network: str) -> threading.RLock:
    """The lock that puts this agent's address allocations on one registry network in turn
    (concurrent ones would compare its fence key and pick one next free address: all but one
    retried); on other networks they go on meanwhile. Never the agent's lock."""
    with ag.netlocks_mu:
        return ag.netlocks.setdefault(network, threading.RLock())


@contextlib.contextmanager
def working_on(ag, eid: str):
    """For the length of the with-block, eid is this thread's: the main loop passes it
    over, and another operation on it waits for its turn."""
    with ag.busy_changed:                   # the agent's lock: never while a turn of the loop runs
        while eid in ag.busy:
            ag.busy_changed.wait()
        ag.busy.add(eid)
    try:
        yield
    finally:
        with ag.busy_changed:
            ag.busy.discard(eid)
            ag.busy_changed.notify_all()
        ag.q.put(("recheck", eid))
