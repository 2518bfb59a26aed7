"""Endpoint writes (a part of store.Registry): address and MAC claims, moves
and removals, each one compare-and-swap transaction.

A create compares the network record as it read it and bumps the network's
fence key netuse/<network>; network_rm compares that fence, so an endpoint
created while its network is being removed makes one of the two fail instead
of outliving the network. (The agent does not mirror netuse/: parse_item
skips it.)

A commit whose reply is lost (the KV raises Unavailable, the write may or
may not have applied) is retried for up to backoff.LOST_WINDOW_S. A retry that
finds exactly the record it sent already stored takes that as its success,
so the caller sees the endpoint, not a Conflict with itself. Only a retry
does: an endpoint that was there before the call is a Conflict as ever.

Address reservations (a runtime's address before its endpoint exists) are
reserve.py's; here only endpoint_create(reserved=True), which takes one over,
and endpoint_rm(reserve=...), which gives the address back to one.
"""

from __future__ import annotations

import ipaddress
import threading
import time

from dataplane.core import model
from dataplane.core.errors import Conflict, NotFound, UsageError
from dataplane.registry.backoff import pause_or_raise
from dataplane.registry.kv import Item, Refused, Txn, Unavailable
from dataplane.registry.records import Endpoint, Network, key, parse_endpoint_id
from dataplane.registry.reserve import Reservations, holder_text, reservation_value, reserved_by

ALLOC_ATTEMPTS = 64      # commits per create: each lost race retries (next address, fresh fence)


def fence_key(network: str) -> str:
    """Bumped by every endpoint create in the network, compared by network_rm."""
    return key("netuse", network)


_wrote = threading.local()


def write_rev() -> int:
    """The revision at which this thread's last endpoint write (create, remove, move) took
    effect, 0 if unknown: the agent puts what it wrote into its view ahead of the watch, and
    events for that endpoint older than this are then stale (agent/view.py)."""
    return getattr(_wrote, "rev", 0)


class Endpoints(Reservations):
    """Mixed into store.Registry: needs self.kv, self._used, self._hint and
    self._network_item(name) -> (Item, Network)."""

    def endpoint_create(self, id, network, host, ip=None, mac=None, reserved: bool = False) -> Endpoint:
        """Register an endpoint; with no ip, take the network's next free address.
        NotFound if the network is removed before the endpoint is committed.
        reserved: ip may be held by host's reservation (reserve.py), which becomes
        the endpoint's claim; without one the address must be free, as ever."""
        net_item, net = self._network_item(network)
        want_ip = net.check_ip(ip) if ip is not None else None
        mac = model.parse_mac(mac) if mac is not None else None
        Endpoint.make(id, net.name, host, mac or "02:00:00:00:00:01", want_ip or net.gateway)  # validate early
        sent: list[Endpoint] = []        # committed, reply lost: maybe stored
        lost, since = 0, time.monotonic()
        _wrote.rev = 0
        taken: set[str] = set()          # addresses this create found another host holding
        for _ in range(ALLOC_ATTEMPTS):
            try:
                ep, net_item = self._create_once(net_item, id, host, want_ip, mac, sent, reserved, taken)
            except Refused:
                raise                          # refused for good: nothing to wait out
            except Unavailable as e:
                lost += 1
                # What a rollback may remove: only a record this create sent (a commit whose reply
                # was lost); the id's record may be another host's, which our commit never replaced.
                e.maybe_stored = list(dict.fromkeys(sent))       # each tried once
                pause_or_raise(lost, e, since)
                continue
            if ep is not None:
                self._used.setdefault(ep.network, set()).add(ep.ip)
                return ep
        raise Conflict(f"could not allocate an address in {net.name} after {ALLOC_ATTEMPTS} tries (contention)")

    def _create_once(self, net_item: Item, id, host, want_ip, mac, sent: list[Endpoint], reserved: bool,
                     taken: set):
        """One attempt: (endpoint, _) when stored; (None, network item to use
        next) when another attempt may work; raises when none can."""
        net = Network.from_json(net_item.value)
        if want_ip is not None:
            net.check_ip(want_ip)            # the network may have been re-created
        if mac is not None and mac == model.mac_for_ip(ipaddress.IPv4Address(net.gateway)):
            # Every host's router for the network holds it (node/gateway.py): an endpoint with it
            # took the gateway over on its node, and its removal deleted the gateway's entry.
            raise UsageError(f"MAC {mac} is reserved: it is the gateway's of {net.name}")
        fence = self.kv.get(fence_key(net.name))
        addr = want_ip or self._next_free(net, taken)
        ep = Endpoint.make(id, net.name, host, mac or model.mac_for_ip(ipaddress.IPv4Address(addr)), addr)
        ek, ik, mk = key("endpoints", ep.id), key("ipam", net.name, ep.ip), key("macs", net.name, ep.mac)
        held = self.kv.get(ik) if reserved and want_ip is not None else None
        mine = reserved_by(held, ep.host)            # our reservation: taken over, compared as read
        txn = (Txn().unchanged(net_item.key, net_item.mod_rev)
               .unchanged(fence_key(net.name), fence.mod_rev if fence else 0)
               .absent(ek).unchanged(ik, held.mod_rev if mine else 0).absent(mk)
               .put(ek, ep.to_json()).put(ik, ep.id.encode()).put(mk, ep.id.encode())
               .put(fence_key(net.name), ep.id.encode()))
        try:
            ok, _wrote.rev = self.kv.commit(txn)
            if ok:
                return ep, net_item
        except Unavailable:
            sent.append(ep)
            raise
        _wrote.rev = 0
        # Why did a compare fail?
        old = self.kv.get(ek)
        if old is not None:
            if sent and _record(old) in sent:
                _wrote.rev = old.mod_rev
                return _record(old), net_item          # our earlier commit applied
            raise Conflict(f"endpoint {ep.id} exists already")
        now = self.kv.get(net_item.key)
        if now is None:
            raise NotFound(f"network {net.name} was removed while endpoint {ep.id} was being created")
        if now.mod_rev != net_item.mod_rev:              # removed and created again
            self._used.pop(net.name, None)
            taken.clear()                                # what the old network held means nothing
            return None, now
        if self._address_taken(net, ep, auto_ip=want_ip is None, auto_mac=mac is None, reserved=reserved):
            taken.add(ep.ip)
            self._someone_took(net.name, ep.ip, again=len(taken) > 1)
        return None, net_item                            # else only the fence moved: go again

    def _someone_took(self, network: str, ip: str, again: bool) -> None:
        """The address we tried is held (or its MAC is). The first time in a create, that one
        address is marked used and the scan goes on from it: with hosts adding endpoints in
        turn, each one's cache misses what the others took since, and re-reading the network's
        claims each time cost every add a scan of them all (6 ms of a 48-ms add at 2,000
        endpoints, bench.ops's lab). A second address taken in the same create: the claims are
        read anew (what the create found taken stays out of its scan: _next_free's avoid)."""
        used = self._used.get(network)
        if used is not None and not again:
            used.add(ip)
        else:
            self._used.pop(network, None)

    def _address_taken(self, net: Network, ep: Endpoint, auto_ip: bool, auto_mac: bool, reserved=False) -> bool:
        """Raise for a clash that retrying cannot fix; True if the address or
        MAC we tried is taken (another address may work, or our reservation
        changed under us and is read again)."""
        holder = self.kv.get(key("macs", net.name, ep.mac))
        if holder is not None and not (auto_ip and auto_mac):
            raise Conflict(f"MAC {ep.mac} is in use on {net.name} by {holder.value.decode()}")
        taken = holder is not None
        holder = self.kv.get(key("ipam", net.name, ep.ip))
        if holder is not None and not auto_ip and not (reserved and reserved_by(holder, ep.host)):
            raise Conflict(f"address {ep.ip} is in use on {net.name} by {holder_text(holder.value)}")
        return taken or holder is not None

    def _next_free(self, net: Network, avoid=frozenset()) -> str:
        """Lowest host address not claimed, reserved or in avoid. The scan resumes where the
        last one stopped (a hint, reset whenever the cached view is re-read), so filling a /16
        is linear, not quadratic. A scan of a cached view that finds none reads the claims again
        and starts over: the cache never learns what other hosts freed."""
        reserved = net.reserved()
        first = int(net.net.network_address) + 1
        last = int(net.net.broadcast_address) - 1
        for again in (False, True):
            used = self._used.get(net.name)
            read = used is None or again
            if read:
                _, items = self.kv.range(key("ipam", net.name) + "/")
                used = self._used[net.name] = {i.key.rsplit("/", 1)[1] for i in items}
                self._hint[net.name] = 0
            for n in range(first + self._hint.get(net.name, 0), last + 1):
                ip = str(ipaddress.IPv4Address(n))
                if ip not in used and ip not in reserved and ip not in avoid:
                    self._hint[net.name] = n - first
                    return ip
            if read:
                break
        raise Conflict(f"no free address in {net.subnet} (network {net.name})")

    def _endpoint_item(self, id):
        """(stored item, record) of an endpoint; NotFound if there is none."""
        item = self.kv.get(key("endpoints", parse_endpoint_id(id)))
        if item is None:
            raise NotFound(f"endpoint {id!r} not found")
        return item, Endpoint.from_json(item.value)

    def endpoint(self, id) -> Endpoint:
        return self._endpoint_item(id)[1]

    def endpoint_rm(self, id, reserve: tuple[str, int] | None = None, expect: Endpoint | None = None) -> Endpoint:
        """Remove an endpoint and its claims; returns the removed record (also
        when a retry finds that the delete whose reply was lost did apply).
        reserve=(host, lease): its address claim becomes host's reservation under
        lease instead of going (reserve.py), in the same transaction.
        expect: remove it only if the stored record is this one (Conflict if not)."""
        sent = None                      # (item, record) of a delete whose reply was lost
        lost, since = 0, time.monotonic()
        _wrote.rev = 0
        while True:
            try:
                if sent is not None:
                    item = self.kv.get(sent[0].key)
                    if item is None or item.create_rev != sent[0].create_rev:
                        ep = sent[1]     # gone (a record there now is a new endpoint, not ours)
                        # The delete's own revision is unknown; every write of the key before it is
                        # at or below the record's last one (the delete compared it).
                        _wrote.rev = sent[0].mod_rev + 1
                        break
                    if item.mod_rev != sent[0].mod_rev:
                        raise Conflict(f"endpoint {sent[1].id} changed while it was being removed; try again")
                item, ep = self._endpoint_item(id)
                if expect is not None and ep != expect:
                    raise Conflict(f"endpoint {id} is no longer the record it was ({ep.host}): not removed")
                txn = Txn().unchanged(item.key, item.mod_rev).delete(item.key).delete(key("macs", ep.network, ep.mac))
                ik = key("ipam", ep.network, ep.ip)
                if reserve is None:
                    txn.delete(ik)
                else:
                    txn.put(ik, reservation_value(reserve[0]), reserve[1])
                try:
                    ok, _wrote.rev = self.kv.commit(txn)
                except Unavailable:
                    sent = (item, ep)
                    raise
            except Unavailable as e:
                lost += 1
                pause_or_raise(lost, e, since)
                continue
            if not ok:
                raise Conflict(f"endpoint {ep.id} changed while it was being removed; try again")
            break
        if reserve is None:
            self._used.get(ep.network, set()).discard(ep.ip)
            self._hint[ep.network] = 0         # a lower address is free again
        return ep

    def endpoint_move(self, id, host) -> Endpoint:
        """Commit a move: the endpoint (same MAC and address) is on host now, in
        one write, so other hosts switch their entry straight to it."""
        def commit(old):
            if old.host == host and old.moving_to is None:
                return old               # committed already (a retry after a lost reply)
            if old.moving_to != host:    # the mark is gone: the old host (or an abort) took the move back
                raise Conflict(f"the move of endpoint {id} to host {host} was taken back")
            return Endpoint.make(old.id, old.network, host, old.mac, old.ip)
        return self._rewrite(id, commit)

    def endpoint_move_begin(self, id, host) -> Endpoint:
        """Mark a move to host as under way; its old host keeps its sandbox (and
        the traffic) until the move commits or is aborted."""
        def begin(old):
            if old.host == host:
                raise Conflict(f"endpoint {id} is on host {host} already")
            if old.moving_to not in (None, host):
                raise Conflict(f"endpoint {id} is being moved to host {old.moving_to}")
            return Endpoint.make(old.id, old.network, old.host, old.mac, old.ip, moving_to=host)
        return self._rewrite(id, begin)

    def endpoint_move_abort(self, id, host) -> Endpoint:
        """Forget a move to host (it failed, or host is gone); the endpoint stays where it is."""
        def abort(old):
            if old.moving_to != host:
                return old              # not (or no longer) that move: nothing to undo
            return Endpoint.make(old.id, old.network, old.host, old.mac, old.ip)
        return self._rewrite(id, abort)

    def _rewrite(self, id, change) -> Endpoint:
        """Replace the endpoint's record with change(old), compared on its mod
        revision; a retry after a lost reply that finds its write applied is done."""
        sent = None                      # the record of a write whose reply was lost
        lost, since = 0, time.monotonic()
        _wrote.rev = 0
        while True:
            try:
                item, old = self._endpoint_item(id)
                if sent is not None and old == sent:
                    _wrote.rev = item.mod_rev
                    return old           # that write applied
                ep = change(old)
                if ep == old:
                    _wrote.rev = item.mod_rev
                    return old
                try:
                    txn = Txn().unchanged(item.key, item.mod_rev).put(item.key, ep.to_json())
                    ok, _wrote.rev = self.kv.commit(txn)
                except Unavailable:
                    sent = ep
                    raise
            except Unavailable as e:
                lost += 1
                pause_or_raise(lost, e, since)
                continue
            if not ok:
                raise Conflict(f"endpoint {ep.id} changed while it was being moved; try again")
            return ep


def _record(item: Item) -> Endpoint | None:
    try:
        return Endpoint.from_json(item.value)
    except UsageError:
        return None
