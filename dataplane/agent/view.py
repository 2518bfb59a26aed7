"""The agent's view of the registry: the records as last seen, kept current by
snapshots and watch events, in revision order. No I/O: the watcher thread
feeds it, reconcile.py reads it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

from ..core.errors import UsageError
from ..registry import Snapshot, change
from ..registry.store import MIRRORED, split_key


CLASH = ""                  # a provisional claim two records make: it names no endpoint


def provisional_claims(endpoints: dict) -> tuple[dict, dict]:
    """(macs, ipam) as the records claim them: what the registry's claims are when its
    writers keep to its transactions (a record and its two claims in one). A MAC or an
    address two records claim is CLASH (neither is installed until the claims say which)."""
    macs, ipam = {}, {}
    for e in endpoints.values():
        pre = e.network + "/"
        k = pre + e.mac
        macs[k] = CLASH if k in macs else e.id
        k = pre + e.ip
        ipam[k] = CLASH if k in ipam else e.id
    return macs, ipam


@dataclass
class RegistryView:
    rev: int = 0
    base_rev: int = 0                               # the last snapshot's revision
    networks: dict = field(default_factory=dict)    # name -> records.Network
    hosts: dict = field(default_factory=dict)       # name -> records.Host (live: its lease holds)
    endpoints: dict = field(default_factory=dict)   # id -> records.Endpoint
    macs: dict = field(default_factory=dict)        # "<network>/<mac>" -> endpoint id (IPAM claim)
    ipam: dict = field(default_factory=dict)        # "<network>/<ip>" -> endpoint id
    # What applied events changed since take_changes(): VNIs to recompute whole (a host or a
    # network changed), and the MAC/address keys of single endpoints and claims per VNI.
    coarse: set = field(default_factory=set)
    fine: dict = field(default_factory=dict)        # vni -> {("mac", mac) | ("ip", ip) | ("ep", id)}
    # Claims not read yet (a cold start's snapshot without them): macs and ipam hold what the
    # records themselves claim, CLASH where two records claim one key, until load_claims().
    # touched: the claims the applied events wrote since: (kind, name) -> (revision, value or None).
    claims_pending: bool = False
    touched: dict = field(default_factory=dict)
    claims_rev: int = 0             # the claims read's revision: claim events up to it are in it
    # The agent's own endpoint writes, put here ahead of the watch: id -> (revision, record or None).
    # Events for that endpoint below the revision are older than what the view holds, and passed over.
    ahead: dict = field(default_factory=dict)
    # Within deferring_hosts(): hosts whose record changed, their VNIs found by take_changes().
    deferred_hosts: set | None = None

    def load(self, snap: Snapshot) -> None:
        self.coarse, self.fine = set(), {}
        if self.deferred_hosts is not None:
            self.deferred_hosts = set()
        self.rev = self.base_rev = snap.rev
        self.networks, self.hosts, self.endpoints = snap.networks, snap.hosts, snap.endpoints
        self.macs, self.ipam = snap.macs, snap.ipam
        self.claims_pending, self.touched, self.claims_rev = not snap.claims_read, {}, 0
        if self.claims_pending:
            self.macs, self.ipam = provisional_claims(snap.endpoints)
        self.ahead = {eid: (rev, rec) for eid, (rev, rec) in self.ahead.items() if rev > snap.rev}
        for eid, (_, rec) in self.ahead.items():      # a read that began before our write
            self._put_endpoint(eid, rec)

    def load_claims(self, claims: Snapshot) -> None:
        """The claims read (at claims.rev) replace the provisional ones. A claim an
        applied event wrote after claims.rev keeps the event's value; claim events up
        to claims.rev still to come are dropped (apply), the read holds them already."""
        macs, ipam = claims.macs, claims.ipam
        for (kind, name), (rev, value) in self.touched.items():
            if rev > claims.rev:
                d = macs if kind == "macs" else ipam
                if value is None:
                    d.pop(name, None)
                else:
                    d[name] = value
        self.macs, self.ipam, self.claims_pending, self.touched = macs, ipam, False, {}
        self.claims_rev = claims.rev

    def network_of_vni(self, vni: int):
        return next((n for n in self.networks.values() if n.vni == vni), None)

    def apply(self, ev, on_bad=None, on_host_gone=None, on_endpoint=None) -> set[int]:
        """Apply one watch event; returns the VNIs whose entries it may change.
        on_bad(key, why) hears of a record that does not parse (it is treated
        as deleted); on_host_gone(host) of a host that died or changed VTEP;
        on_endpoint(id, record or None) of every endpoint written or deleted.
        An event the last snapshot already holds (a replay) changes nothing."""
        if ev.rev <= self.base_rev:
            return set()
        self.rev = max(self.rev, ev.rev)
        try:
            ch = change(ev)
        except UsageError as e:
            if on_bad:
                on_bad(ev.key, str(e))
            kind, name = split_key(ev.key)
            return self.forget(kind, name) if kind in MIRRORED else set()
        if ch is None or (ch.kind in ("macs", "ipam") and ev.rev <= self.claims_rev):
            return set()
        if ch.kind == "endpoints" and ch.name in self.ahead:
            if ev.rev < self.ahead[ch.name][0]:
                return set()                        # older than the agent's own write, which the view holds
            del self.ahead[ch.name]
        if ch.kind in ("hosts", "networks") and ch.record is not None \
                and getattr(self, ch.kind).get(ch.name) == ch.record:
            return set()     # the same record again (a host's agent restarted): a scan of every endpoint for nothing
        gone = self.hosts.get(ch.name) if ch.kind == "hosts" else None
        dirty = self.forget(ch.kind, ch.name)
        if gone is not None and on_host_gone and (ch.record is None or ch.record.vtep != gone.vtep):
            on_host_gone(gone)
        if self.claims_pending and ch.kind in ("macs", "ipam"):
            self.touched[(ch.kind, ch.name)] = (ev.rev, ch.record)
        if ch.record is not None:
            getattr(self, ch.kind)[ch.name] = ch.record
            if ch.kind != "hosts" or gone is None:   # a host known before: forget() noted its VNIs,
                dirty |= self._note(ch.kind, ch.name, ch.record)   # the same (one scan of every endpoint)
        if ch.kind == "endpoints" and on_endpoint:
            on_endpoint(ch.name, ch.record)
        return dirty

    def wrote(self, eid: str, rec, rev: int) -> None:
        """The agent wrote endpoint eid (rec, or None: removed) at revision rev (0: unknown).
        Until the watch brings that write, older events for eid are stale: an endpoint removed
        elsewhere and created here again must not be removed by the first event's late arrival.
        A write the view has reached already (rev <= self.rev: the watch brought it, and maybe
        a later change of the same endpoint) is left as the view has it."""
        if rev and rev <= self.rev:
            return
        self._put_endpoint(eid, rec)
        if rev > self.rev:
            self.ahead[eid] = (rev, rec)

    def _put_endpoint(self, eid: str, rec) -> None:
        self._leaving(self.endpoints.get(eid))
        if rec is None:
            self.endpoints.pop(eid, None)
        else:
            self.endpoints[eid] = rec

    def remember(self, ep, host=None, claim: tuple[str, int] | None = None) -> None:
        """Records read from the registry directly (ahead of the watch): the endpoint a
        punt looked up by one of its claims, claim = (registry key, its mod revision),
        both its claims set to it meanwhile. While claims are pending, only the claim
        read is noted as newer than a claims read before its revision. What it changes is
        noted as an event's change is (converge.pending takes it)."""
        new_host = host is not None and self.hosts.get(host.name) != host
        self.endpoints[ep.id] = ep
        if host is not None:
            self.hosts[host.name] = host
        self.macs[f"{ep.network}/{ep.mac}"] = self.ipam[f"{ep.network}/{ep.ip}"] = ep.id
        if self.claims_pending and claim is not None:
            kind, name = split_key(claim[0])
            self.touched[(kind, name)] = (claim[1], ep.id)
        self._note("endpoints", ep.id, ep)
        if new_host:         # a host back before its watch event, which will then be no change:
            self._note("hosts", host.name, host)     # its other endpoints are reconciled now

    def forget(self, kind: str, name: str) -> set[int]:
        rec = getattr(self, kind).pop(name, None)
        if rec is None:
            return set()
        if kind == "endpoints":
            self._leaving(rec)
        return self._note(kind, name, rec)

    @contextmanager
    def deferring_hosts(self):
        """Within: a host record's change notes the host, and the VNIs its endpoints are in are
        found by take_changes() (or at the end), every such host in one scan of the endpoints,
        where each took a scan of its own (13 ms a host at 100,000 endpoints; a rack's 50 lapsed
        leases in one event batch, 0.7 s). apply() leaves those VNIs out of what it returns.
        An endpoint that leaves such a host later in the batch (removed, moved, or rewritten by
        our own write) keeps its VNI in (_leaving), so the VNIs are those the scans per host
        found, and more only where an endpoint came to such a host after its change."""
        self.deferred_hosts = set()
        try:
            yield
        finally:
            self._resolve_hosts()
            self.deferred_hosts = None

    def _leaving(self, rec) -> None:
        """While deferring: an endpoint record replaced or removed whose host's change is deferred
        keeps its VNI for that host, as the host's own scan at its event would have counted it."""
        if self.deferred_hosts and rec is not None and rec.host in self.deferred_hosts:
            net = self.networks.get(rec.network)
            if net is not None:
                self.coarse.add(net.vni)

    def _resolve_hosts(self) -> None:
        if self.deferred_hosts:
            names, self.deferred_hosts = self.deferred_hosts, set()
            nets = {e.network for e in self.endpoints.values() if e.host in names}
            self.coarse |= {n.vni for n in self.networks.values() if n.name in nets}

    def _note(self, kind: str, name: str, rec) -> set[int]:
        """Record what rec's change touches, as finely as can be known; its VNIs."""
        if kind == "hosts" and self.deferred_hosts is not None:
            self.deferred_hosts.add(rec.name)
            return set()
        if kind in ("hosts", "networks"):
            vnis = self.touches(kind, rec)
            self.coarse |= vnis
            return vnis
        if kind == "endpoints":
            net, keys = rec.network, {("mac", rec.mac), ("ip", rec.ip), ("ep", name)}
        else:                                       # a claim "<network>/<mac or ip>"
            net, _, what = name.partition("/")
            keys = {("mac" if kind == "macs" else "ip", what)}
        n = self.networks.get(net)
        if n is not None:
            self.fine.setdefault(n.vni, set()).update(keys)
        return self.touches(kind, rec)

    def take_changes(self) -> tuple[set, dict]:
        """(coarse VNIs, fine keys per VNI) noted since the last call."""
        self._resolve_hosts()
        out = (self.coarse, self.fine)
        self.coarse, self.fine = set(), {}
        return out

    def touches(self, kind: str, rec) -> set[int]:
        """The VNIs whose desired entries depend on this record."""
        if kind in ("macs", "ipam"):
            ep = self.endpoints.get(rec)
            net = self.networks.get(ep.network) if ep else None
            return {net.vni} if net else set()
        if kind == "networks":
            return {rec.vni}
        if kind == "hosts":
            nets = {e.network for e in self.endpoints.values() if e.host == rec.name}
            return {n.vni for n in self.networks.values() if n.name in nets}
        net = self.networks.get(rec.network)
        return {net.vni} if net else set()
