"""Registry writes that handling an event decides under the agent's lock, made without it.

Taking back the move of a runtime's container, taking back a move that can no longer
complete, registering again a runtime's endpoint whose record another writer deleted: each
is decided while the main loop applies a batch of events (under the agent's lock) and each
is a registry write, which can take a request timeout per member (3 s) and, after lost
replies, the retry window (backoff.LOST_WINDOW_S). Made under the lock, every registry event,
punt and heartbeat waited on them. Now they are queued (add) and made by a thread of their
own once the batch is done (start): the endpoint is that thread's meanwhile
(inflight.working_on: the main loop passes it over and looks at it again after), each write
checks first that what called for it still holds, and one that fails is tried again RETRY_S
later. The last write queued for an endpoint replaces an earlier one not yet made.
"""

from __future__ import annotations

import logging
import threading
import time

from dataplane.agent import inflight
from dataplane.core.errors import DataplaneError

RETRY_S = 1.0
log = logging.getLogger("dataplane.agent")


def add(ag, eid: str, write) -> None:
    """Under the agent's lock: write() is to be made for endpoint eid, without the lock."""
    ag.deferred[eid] = write


def start(ag) -> None:
    """The main loop, between turns: a thread for the writes queued, unless one runs or the
    last failure is too recent."""
    if not ag.deferred or time.monotonic() < ag.deferred_due or (ag.writer is not None and ag.writer.is_alive()):
        return
    ag.writer = threading.Thread(target=run, args=(ag,), name="deferred", daemon=True)
    ag.writer.start()


def run(ag) -> None:
    """Make the queued writes, one endpoint at a time; stop at the first that fails (kept for
    the next start, RETRY_S on)."""
    while not ag.stopping.is_set():
        with ag.lock:
            if not ag.deferred:
                return
            eid = next(iter(ag.deferred))
            write = ag.deferred.pop(eid)
        with inflight.working_on(ag, eid):
            try:
                write()
            except DataplaneError as e:
                log.error("endpoint %s: %s; trying again in %.0f s", eid, e, RETRY_S)
                with ag.lock:
                    ag.deferred.setdefault(eid, write)
                    ag.deferred_due = time.monotonic() + RETRY_S
                return
