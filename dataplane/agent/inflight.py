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

# The runtimes' turns on one endpoint (runtime_turn): never the agent's lock, taken first.
_turns = threading.Condition()


def attach(ag) -> None:
    """The bookkeeping on ag (which has its lock): the endpoints being worked on, the
    condition that says one was let go, the lock that puts the runtimes' network operations
    in turn without the agent's lock, a lock per network for address allocations, and the
    runtimes' turns per endpoint."""
    ag.busy = set()
    ag.busy_changed = threading.Condition(ag.lock)
    ag.oplock = threading.RLock()
    ag.netlocks, ag.netlocks_mu = {}, threading.Lock()
    # deferred.py: writes decided under the lock (endpoint -> deferred.Entry), made without it
    ag.deferred, ag.writer = {}, None
    ag.turns = {}               # endpoint -> the runtime calls on it, in the order they came (runtime_turn)


@contextlib.contextmanager
def runtime_turn(ag, eid: str):
    """A runtime's attach or detach of eid has its turn in the order the calls came, before
    working_on: that takes the agent's lock, which grants no order, so an ADD the runtime gave up
    on (the agent busy with a restart's sync) could have its turn after the DEL that followed it,
    which found nothing, and make an endpoint no DEL would remove (or a DEL given up on, after the
    next ADD of the container, removed what that made). Never the agent's lock: the main loop
    takes no turn, and waits for none."""
    me, turns = object(), ag.__dict__.setdefault("turns", {})
    with _turns:
        line = turns.setdefault(eid, [])
        line.append(me)
    try:
        with _turns:
            while line[0] is not me:
                _turns.wait()
        yield
    finally:                                # (a wait cut short too: no turn left held for good)
        with _turns:
            line.remove(me)
            if not line:
                turns.pop(eid, None)
            _turns.notify_all()


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
