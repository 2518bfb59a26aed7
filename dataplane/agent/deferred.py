"""Registry writes that handling an event decides under the agent's lock, made without it.

Taking back the move of a runtime's container, taking back a move that can no longer
complete, registering again a runtime's endpoint whose record another writer deleted: each
is decided while the main loop applies a batch of events (under the agent's lock) and each
is a registry write, which can take a request timeout per member (3 s) and, after lost
replies, the retry window (backoff.LOST_WINDOW_S). Made under the lock, every registry event,
punt and heartbeat waited on them. Now they are queued (add) and made by a thread of their
own once the turn is done (start): the endpoint is that thread's meanwhile
(inflight.working_on: the main loop passes it over and looks at it again after), and each
write checks first that what called for it still holds (else it is dropped). One that fails
stays queued: RETRY_S on if the registry could not take it, FINAL_RETRY_S on if it was refused
(a conflict, a refusal, no space: an operator or another host may change that, and no event
for this endpoint need come when they do). A new registry event for the endpoint makes it
due at once (event); the look its own end brings does not queue it again (add: the same
premise queued already), so nothing loops.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, NamedTuple

from dataplane.agent import inflight
from dataplane.core.errors import DataplaneError
from dataplane.registry.kv import transient

RETRY_S = 1.0
FINAL_RETRY_S = 30.0
log = logging.getLogger("dataplane.agent")


class Entry(NamedTuple):
    key: tuple                  # the premise: ("refuse", host), ("take_back", host), ("register",)
    write: Callable[[], None]
    due: float = 0.0            # time.monotonic() from which it may be tried
    said: str | None = None     # what its last failure said (logged again only when that changes)


def add(ag, eid: str, key: tuple, write) -> bool:
    """Under the agent's lock: write() is to be made for endpoint eid, for the premise key
    (("refuse", host), ("take_back", host), ("register",)); it replaces a write queued for
    another. False if that premise is queued already (its last try's words stand)."""
    pending = ag.deferred.get(eid)
    if pending is not None and (pending.key == key or (pending.key[0] == "refuse" and key[0] == "take_back")):
        return False                        # (a refusal takes the move back and says why: it stays)
    ag.deferred[eid] = Entry(key, write)
    return True


def event(ag, eid: str) -> None:
    """Under the agent's lock: a registry event for eid came: a write waiting for it is due now."""
    pending = ag.deferred.get(eid)
    if pending is not None:
        ag.deferred[eid] = pending._replace(due=0.0)


def start(ag) -> None:
    """The main loop, between turns: a thread for the writes due, unless one runs. (One held by
    an operation is not due: its end brings a recheck, so a turn, so a start.)"""
    if not ag.deferred or (ag.writer is not None and ag.writer.is_alive()):
        return
    with ag.lock:
        now = time.monotonic()
        if not any(e.due <= now and eid not in ag.busy for eid, e in ag.deferred.items()):
            return
    ag.writer = threading.Thread(target=run, args=(ag,), name="deferred", daemon=True)
    ag.writer.start()


def run(ag) -> None:
    """Make the writes due, one endpoint at a time, passing over those an operation holds (its
    end brings a recheck, and the main loop a start) and those waiting after a failure. The
    first the registry could not take ends the run, and every write waits RETRY_S: during an
    outage, each try holds its endpoint for the registry's timeouts. A failure is logged as an
    error when its words change (a conflict that stays is tried every FINAL_RETRY_S quietly)."""
    while not ag.stopping.is_set():
        with ag.lock:
            now = time.monotonic()
            eid = next((e for e, entry in ag.deferred.items() if entry.due <= now and e not in ag.busy), None)
            if eid is None:
                return
            entry = ag.deferred.pop(eid)
        with inflight.working_on(ag, eid):
            try:
                entry.write()
                continue
            except DataplaneError as e:
                wait, why = (RETRY_S if transient(e) else FINAL_RETRY_S), str(e)
                (log.error if why != entry.said else log.debug)("endpoint %s: %s; trying again in %.0f s", eid, e, wait)
            except Exception as e:  # noqa: BLE001 - a defect of ours must not end the thread or drop the write
                wait, why = FINAL_RETRY_S, repr(e)
                log.exception("endpoint %s: a registry write failed; trying again in %.0f s", eid, wait)
            with ag.lock:                   # queued again before the recheck that leaving brings
                ag.deferred.setdefault(eid, entry._replace(due=time.monotonic() + wait, said=why))
                if wait == RETRY_S:         # the registry is away: the others wait too
                    later = time.monotonic() + RETRY_S
                    for other, queued in list(ag.deferred.items()):
                        ag.deferred[other] = queued._replace(due=max(queued.due, later))
        if wait == RETRY_S:
            return
