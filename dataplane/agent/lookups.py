"""Registry look-ups for punted misses the agent's view cannot place (its
watch may be behind the registry), made by a thread of their own.

Before, the main loop read the registry itself, three reads a punt under the
agent's lock: a member slow to answer (a leader that lost its disk, a member
cut off while the watch still looked live) held registry events, the fast
path's heartbeat and every other punt for up to a timeout per read, and a
container spraying unknown destinations could ask 50 of them at once. Now the
main loop asks (once per MAC or address however many frames wait for it, at
a bounded rate, with a bounded number outstanding), holds the frames, and goes
on; the answer comes back as a ("looked_up", ...) message, and the held
frames are handled again against the view, which the answer may have filled
in. A frame held longer than the punts' staleness limit is dropped then, as
one the agent came to late always was; a look-up asked that long ago is not
made at all (the registry is slow: its answer would serve nobody), and when the
room for look-ups is full, those are given up to make room.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time

from dataplane.agent import slowpath
from dataplane.core.errors import DataplaneError
from dataplane.registry import Host, Unavailable
from dataplane.registry.reserve import parse_reservation
from dataplane.registry.store import key

log = logging.getLogger("dataplane.agent.punts")

PENDING_MAX = 256          # MACs and addresses being looked up at once; more are dropped
HELD_PER_KEY = 8           # frames held for one of them; more are dropped
ASKED = object()           # Lookups.ask: the frame is held until the answer comes


class Lookups:
    def __init__(self, ag, bucket, counts: dict):
        self.ag, self.bucket, self.counts = ag, bucket, counts
        # (network, "macs" | "ipam", name) -> (asked at, ns; [(punt, held since, ns)])
        self.pending: dict[tuple, tuple[int, list]] = {}
        self.q: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def ask(self, net, mac: str | None, ip: str | None, p) -> object:
        """Under the agent's lock: hold p for the look-up of its MAC (or ARP target address) in
        net. ASKED, or None when the rate or the room for look-ups is used up (the caller drops p)."""
        k = (net.name, "macs", mac) if mac else (net.name, "ipam", ip or "-")
        now = time.monotonic_ns()
        if k in self.pending:
            held = self.pending[k][1]
            if len(held) >= HELD_PER_KEY:
                return None
            held.append((p, now))
            return ASKED
        if len(self.pending) >= PENDING_MAX:
            self._drop_stale(now)
        if len(self.pending) >= PENDING_MAX or not self.bucket.take(time.monotonic()):
            return None
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="lookups", daemon=True)
            self._thread.start()
        self.pending[k] = (now, [(p, now)])
        self.q.put((k, net.vni, now))
        return ASKED

    def _drop_stale(self, now: int) -> None:
        """Look-ups asked longer ago than a punt stays fresh: their frames are dropped as stale
        (the answer, if it ever comes, finds nothing held)."""
        for k, (asked, held) in list(self.pending.items()):
            if now - asked > slowpath.STALE_NS:
                del self.pending[k]
                self.counts["stale"] += len(held)

    def answered(self, k: tuple, asked: int) -> list:
        """Under the agent's lock: the frames held for the look-up of k asked at asked, their age
        brought up to now (none if that look-up was given up and k asked again since)."""
        if self.pending.get(k, (None,))[0] != asked:
            return []
        now = time.monotonic_ns()
        return [dataclasses.replace(p, age_ns=p.age_ns + now - since) for p, since in self.pending.pop(k)[1]]

    def _run(self) -> None:
        while not self.ag.stopping.is_set():
            try:
                k, vni, asked = self.q.get(timeout=0.5)
            except queue.Empty:
                continue
            fresh = time.monotonic_ns() - asked < slowpath.STALE_NS and self.ag.connected.is_set()
            self.ag.q.put(("looked_up", (k, vni, asked, self.read(k) if fresh else None)))

    def read(self, k: tuple):
        """(endpoint, its host, (claim key, its mod revision)) for k from the registry, without
        the agent's lock; None: nobody (or a reservation), or the registry could not say."""
        network, kind, name = k
        reg = self.ag.reg
        try:
            claim = reg.kv.get(key(kind, network, name))
            if claim is None or parse_reservation(claim.value) is not None:
                return None      # nobody, or an address a runtime holds for an endpoint still to come
            ep = reg.endpoint(claim.value.decode())
            hitem = reg.kv.get(key("hosts", ep.host))
            if hitem is None or ep.network != network:
                return None
            return ep, Host.from_json(hitem.value), (claim.key, claim.mod_rev)
        except (Unavailable, DataplaneError) as e:
            log.warning("punt: registry lookup failed: %s", e)
            return None
        except Exception:  # noqa: BLE001 - never let the thread die: the frames are flooded
            log.exception("punt: registry lookup of %s failed", "/".join(k))
            return None
