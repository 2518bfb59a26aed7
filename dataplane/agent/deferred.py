"""Registry writes that handling an event decides under the agent's lock, made without it.

Taking back the move of a runtime's container, taking back a move that can no longer
complete, registering again a runtime's endpoint whose record another writer deleted: each
is decided while the main loop applies a batch of events (under the agent's lock) and each
is a registry write, which can take a request timeout per member (3 s) and, after lost
replies, the retry window (backoff.LOST_WINDOW_S). Made under the lock, every registry event,
punt and heartbeat waited on them. Now they are queued (add) and made by a thread of their
own once the turn is done (start): the endpoint is that thread's meanwhile
(inflight.working_on: the main loop passes it over and looks at it again after), each write
checks first that what called for it still holds, and one the registry could not take
(Unavailable) is tried again RETRY_S later; a refusal or a conflict is final. A write made
(or given up) for one premise is not queued again for it by the look that follows its end
(inflight's recheck): only a new event for the endpoint (event()) lets it be asked again.
"""

from __future__ import annotations

import logging
import threading
import time

from dataplane.agent import inflight
from dataplane.core.errors import DataplaneError
from dataplane.registry import Full, Refused, Unavailable

RETRY_S = 1.0
log = logging.getLogger("dataplane.agent")


def transient(e: Exception) -> bool:
    """The registry could not take the write now (unreachable, no leader): worth trying again."""
    return isinstance(e, Unavailable) and not isinstance(e, (Refused, Full))


def add(ag, eid: str, key: tuple, write) -> bool:
    """Under the agent's lock: write() is to be made for endpoint eid, for the premise key
    (("take_back", host), ("register",)). False if that is queued already or was just made."""
    pending = ag.deferred.get(eid)
    if (pending is not None and pending[0] == key) or ag.deferred_done.get(eid) == key:
        return False
    ag.deferred[eid] = (key, write)
    return True


def event(ag, eid: str) -> None:
    """Under the agent's lock: a registry event for eid came; what was made for it may be asked again."""
    ag.deferred_done.pop(eid, None)


def start(ag) -> None:
    """The main loop, between turns: a thread for the writes queued, unless one runs or the
    last failure is too recent."""
    if not ag.deferred or time.monotonic() < ag.deferred_due or (ag.writer is not None and ag.writer.is_alive()):
        return
    ag.writer = threading.Thread(target=run, args=(ag,), name="deferred", daemon=True)
    ag.writer.start()


def run(ag) -> None:
    """Make the queued writes one endpoint at a time, passing over those an operation holds
    (its end brings a recheck, and the main loop a start); stop at the first the registry
    could not take (kept for the next start, RETRY_S on)."""
    while not ag.stopping.is_set():
        with ag.lock:
            eid = next((e for e in ag.deferred if e not in ag.busy), None)
            if eid is None:
                return
            key, write = ag.deferred.pop(eid)
        with inflight.working_on(ag, eid):
            try:
                write()
            except DataplaneError as e:
                again = transient(e)
                log.error("endpoint %s: %s%s", eid, e, f"; trying again in {RETRY_S:.0f} s" if again else "")
                with ag.lock:
                    if again:
                        ag.deferred.setdefault(eid, (key, write))
                        ag.deferred_due = time.monotonic() + RETRY_S
                    else:
                        ag.deferred_done[eid] = key
                if again:
                    return
                continue
            with ag.lock:
                ag.deferred_done[eid] = key
