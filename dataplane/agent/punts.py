"""Misses the fast path punted to the agent (see slowpath.py for reading and
sending): find the owner of the MAC or address, repair a lost entry, send
the frame to the owner's VTEP, or replicate it when nobody owns it.

Overload: the ring buffer holds what the agent has not read; what it has read
waits in a bounded backlog (more is dropped and counted), is taken a slice at
a time so registry events queued meanwhile go first. Punts are taken from the
ring at a bounded rate (the rest wait there; a full ring makes the fast path
flood, under storm control), charged to their sending endpoint before they
are parsed, and registry lookups have a rate of their own: a container
spraying random destinations costs the agent a bounded share of its time.
What the view cannot place is looked up in the registry by another thread
(lookups.py): the frames wait for the answer, the main loop does not.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import deque

from dataplane.agent import converge, slowpath
from dataplane.agent.lookups import ASKED, Lookups
from dataplane.core import abi
from dataplane.core.errors import DataplaneError
from dataplane.node import networks

log = logging.getLogger(__name__)

BACKLOG = 4096             # punts read but not yet handled; when full the reader leaves them in the ring
INTAKE = (5000.0, 500)     # punts taken from the ring per second, and at once: the rest wait there, and
                           # a full ring makes the fast path flood (under storm control) instead
SLICE_S = 0.02             # the main loop handles punts this long, then looks at its queue again
PER_SOURCE = (200.0, 100)  # punts handled per second, and at once, per sending endpoint
LOOKUPS = (200.0, 50)      # registry lookups per second, and at once, for all punts (one per MAC or address)
COPIES = (10000.0, 2048)   # frames the agent replicates to VTEPs per second (unresolved misses)
SOURCES_MAX = 4096         # endpoints with a bucket; past this the buckets start over
LIMITED = object()         # _owner: not looked up (over the rate); the punt is dropped


_FLOOD_MAX = abi.load().constants["DP_MAX_FLOOD"]   # the fast path's flood list, no more
_IFINDEX = struct.Struct("=I")
_IFINDEX_AT = abi.load().structs["dp_punt"].ifindex.offset


class Bucket:
    """A token bucket: rate per second, up to burst at once."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.tokens, self.at = float(burst), time.monotonic()

    def _fill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def take(self, now: float, n: int = 1) -> bool:
        self._fill(now)
        if self.tokens < n:
            return False
        self.tokens -= n
        return True

    def available(self, now: float) -> int:
        self._fill(now)
        return int(self.tokens)


class PuntHandler:
    def __init__(self, agent):
        self.ag = agent
        # received (taken from the ring), resolved (sent to the owner's VTEP; looked_up: the
        # registry knew what our view did not yet; repaired: the map had lost an entry we had
        # installed), local, unresolved (flooded), stale; rate_limited (over the sending
        # endpoint's rate: dropped), lookup_limited (registry lookups over their rate: dropped)
        self.counts = {"received": 0, "resolved": 0, "looked_up": 0, "repaired": 0, "local": 0,
                       "unresolved": 0, "flooded": 0, "stale": 0, "send_errors": 0,
                       "rate_limited": 0, "lookup_limited": 0, "flood_limited": 0}
        self.backlog: deque = deque()
        self._mu = threading.Lock()
        self._queued = False       # a ("punts", None) message is in the agent's queue
        self.intake = Bucket(*INTAKE)
        self.sources: dict[int, Bucket] = {}
        self.lookups = Lookups(agent, Bucket(*LOOKUPS), self.counts)
        self.copies = Bucket(*COPIES)
        self._quiet_until = 0.0    # send failures are logged at most once a second

    def room(self) -> int:
        """How many punts the reader may take from the ring now (0: leave them there)."""
        with self._mu:
            return max(0, min(BACKLOG - len(self.backlog), self.intake.available(time.monotonic())))

    def offer(self, records: list[bytes]) -> bool:
        """The reader's side: raw ring records, at most room(). Each is charged to its
        sending endpoint before it is parsed. True: the main loop must be told."""
        now = time.monotonic()
        keep = []
        for rec in records:
            self.intake.take(now)
            if self._admit(_IFINDEX.unpack_from(rec, _IFINDEX_AT)[0], now):
                keep.append(slowpath.parse(rec))
        with self._mu:
            self.counts["received"] += len(records)
            self.backlog.extend(keep)
            wake = bool(self.backlog) and not self._queued
            self._queued = self._queued or wake
            return wake

    def run_slice(self) -> bool:
        """The main loop's side: handle punts for up to SLICE_S. True: more wait
        (the caller queues another turn behind whatever came meanwhile). Whatever
        handle() raises, the backlog keeps its turn: a punt that failed must not
        leave _queued set with nobody coming back for the rest."""
        end = time.monotonic() + SLICE_S
        try:
            while time.monotonic() < end:
                with self._mu:
                    batch = [self.backlog.popleft() for _ in range(min(8, len(self.backlog)))]
                if not batch:
                    break
                self.handle(batch)
        finally:
            with self._mu:
                self._queued = bool(self.backlog)
                more = self._queued
        return more

    def _admit(self, ifindex: int, now: float) -> bool:
        b = self.sources.get(ifindex)
        if b is None:
            if len(self.sources) >= SOURCES_MAX:
                self.sources.clear()
            b = self.sources[ifindex] = Bucket(*PER_SOURCE)
        if b.take(now):
            return True
        self.counts["rate_limited"] += 1
        return False

    def handle(self, batch, asked: bool = False, answered: bool = False) -> None:
        """Each punt sent where the view says, or flooded; what the view cannot place is
        held for a registry look-up (asked: it was, and the view has its answer; answered:
        that answer went into the view)."""
        ag, c = self.ag, self.counts
        st = None            # read only for a flood: the whole state file, 2.3 ms at 1,000 endpoints
        with ag.lock:
            for p in batch:
                if p.age_ns > slowpath.STALE_NS:
                    c["stale"] += 1
                    continue
                net = ag.view.network_of_vni(p.vni)
                ep = self._owner(net, p, asked) if net else None
                if ep is LIMITED or ep is ASKED:
                    continue
                host = ag.view.hosts.get(ep.host) if ep else None
                if ep is not None and ep.host == ag.me:
                    c["local"] += 1      # ours, its sandbox is being set up: nothing to send
                elif host is not None:
                    c["resolved"] += 1
                    c["looked_up"] += answered
                    c["repaired"] += ag.remote.repair(p.vni, ep.mac, host.vtep, ep.ip)
                    self._send(p.vni, host.vtep, p.frame)
                else:
                    c["unresolved"] += 1  # nobody in the registry: flood as the fast path would
                    st = st or ag.node.require_up(shared=True)
                    vteps = networks.flood_list(st, p.vni)[:_FLOOD_MAX]
                    if not self.copies.take(time.monotonic(), len(vteps)):
                        c["flood_limited"] += 1         # the copies' own budget: dropped
                        continue
                    for vtep in vteps:
                        c["flooded"] += self._send(p.vni, vtep, p.frame)

    def _owner(self, net, p, asked: bool):
        """The endpoint a punted frame is for, from our view of the registry; if the view
        has none, ASKED (held for a look-up), LIMITED (over the look-ups' rate or room:
        dropped) or None (flooded: not connected, a look-up would wait seconds; or asked)."""
        ag = self.ag
        mac = p.dst_mac if p.reason == slowpath.UNKNOWN_DST else None
        ip = p.arp_target
        eid = ag.view.macs.get(f"{net.name}/{mac}") if mac else ag.view.ipam.get(f"{net.name}/{ip}")
        e = ag.view.endpoints.get(eid) if eid else None
        if e is not None and e.network == net.name:
            return e
        if asked or not ag.connected.is_set():
            return None
        if self.lookups.ask(net, mac, ip, p) is ASKED:
            return ASKED
        self.counts["lookup_limited"] += 1
        return LIMITED

    def looked_up(self, answer) -> None:
        """The main loop's side of a look-up's answer: what it found goes into the view
        (the watch brings the same records later) unless the view has come past it since,
        then the frames held for it are handled again."""
        k, vni, asked, found = answer
        ag = self.ag
        with ag.lock:
            held = self.lookups.answered(k, asked)
            if not held:
                return
            net = ag.view.network_of_vni(vni)
            # The view has not seen the claim yet (every read came after it), and holds no write
            # of our own for that endpoint (ahead of the watch, newer than what was read).
            take = (found is not None and net is not None and found[0].network == net.name
                    and ag.view.rev < found[2][1] and found[0].id not in ag.view.ahead)
            if take:              # its entries alone, as its watch event would (a whole VNI: 37 ms at 10,000),
                ag.view.remember(*found)     # and whole VNIs only for a host it brings back
                converge.pending(ag)
            self.handle(held, asked=True, answered=take)

    def _send(self, vni: int, vtep: str, frame: bytes) -> int:
        try:
            self.ag.sender.send(vni, vtep, frame)
            return 1
        except OSError as e:
            self.counts["send_errors"] += 1
            now = time.monotonic()
            if now >= self._quiet_until:         # one line a second, however many fail
                self._quiet_until = now + 1.0
                log.warning("punt: sending to %s failed: %s (send_errors: %d)", vtep, e, self.counts["send_errors"])
            return 0
