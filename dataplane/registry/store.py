"""The registry: networks, hosts and endpoints over a KV store (kv.py).

Layout under /dataplane/ (one JSON record per key):
  networks/<name>         the network           vnis/<vni>               its name (one network per VNI)
  hosts/<name>            a live host (leased)  endpoints/<id>           the endpoint
  ipam/<network>/<ip>     endpoint id holding the address
  macs/<network>/<mac>    endpoint id holding the MAC
  netuse/<network>        a fence: bumped by every endpoint create there, compared by network_rm
Every create is one compare-and-swap transaction over all the keys it
claims, so two hosts allocating at the same moment can never get the same
address: the loser's transaction fails and it tries the next address.
Endpoint writes are in ipam.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from dataplane.core import model
from dataplane.core.errors import Conflict, DataplaneError, NotFound, UsageError
from dataplane.registry.backoff import pause_or_raise
from dataplane.registry import malformed
from dataplane.registry.ipam import Endpoints, fence_key
from dataplane.registry.kv import KV, Event, Item, Refused, Txn, Unavailable
from dataplane.registry.records import PREFIX, Endpoint, Host, Network, endpoint_canonical, is_router, key

# What snapshots read, small first (the first read fixes the revision of the rest).
MIRRORED = ("networks", "hosts", "endpoints", "macs", "ipam")
RECORDS, CLAIMS = MIRRORED[:3], MIRRORED[3:]
ATTEMPTS = 5       # read + commit rounds of host_register and network_rm when a record changes under them


@dataclass
class Snapshot:
    rev: int
    networks: dict[str, Network] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    macs: dict[str, str] = field(default_factory=dict)       # "<network>/<mac>" -> endpoint id
    ipam: dict[str, str] = field(default_factory=dict)       # "<network>/<ip>" -> endpoint id
    bad: list[str] = field(default_factory=list)      # "key: why" for records refused
    claims_read: bool = True    # False: macs and ipam were not read (Registry.snapshot(claims=False))


@dataclass(frozen=True)
class Change:
    kind: str                  # "networks", "hosts", "endpoints", "macs" or "ipam"
    name: str
    record: object | None      # None: deleted
    rev: int


def split_key(k: str) -> tuple[str, str]:
    """("endpoints", "web1") for /dataplane/endpoints/web1."""
    kind, _, name = k[len(PREFIX):].partition("/")
    return kind, name


def parse_item(k: str, value: bytes | None):
    """(kind, name, record) for a registry key; record None for a deletion;
    None for keys the agent does not mirror (vnis, netuse). Raises UsageError for a
    malformed record."""
    try:
        k.encode()
    except UnicodeEncodeError:
        raise UsageError("key is not UTF-8") from None
    kind, name = split_key(k)
    if kind in ("macs", "ipam"):        # claims: "<network>/<mac or ip>" -> endpoint id
        return kind, name, (value.decode(errors="replace") if value is not None else None)
    cls = {"networks": Network, "hosts": Host, "endpoints": Endpoint}.get(kind)
    if cls is None:
        return None
    if value is None:
        return kind, name, None
    try:
        rec = cls.from_json(value)
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever a hostile record does, it is a bad record, not a crash
        raise UsageError(f"malformed record: {type(e).__name__}: {e}") from None
    rec_name = rec.id if kind == "endpoints" else rec.name
    if rec_name != name:
        raise UsageError(f"record {k} names itself {rec_name!r}")
    return kind, name, rec


def _claims(out: dict, skip: int, rows) -> list:
    """IPAM claims into out as parse_item reads them, the common case (an ASCII key)
    in one pass: 200,000 of them at a cold start. Returns the rows left for parse_item."""
    rest = []
    for k, v in rows:
        if k.isascii():
            out[k[skip:].decode()] = v.decode(errors="replace")
        else:
            rest.append((k, v))
    return rest


def _endpoints(out: dict, skip: int, rows) -> list:
    """Endpoint records into out, the common case (an ASCII key, the record as
    to_json writes it, naming itself) in one pass: 100,000 at a cold start.
    Returns the rows left for parse_item, which says what is wrong with them."""
    rest = []
    for k, v in rows:
        rec = endpoint_canonical(v) if k.isascii() else None
        if rec is not None and k[skip:].decode() == rec.id:
            out[rec.id] = rec
        else:
            rest.append((k, v))
    return rest


_FAST_PATHS = {"macs": _claims, "ipam": _claims, "endpoints": _endpoints}   # the rest: parse_item only


class Registry(Endpoints):
    def __init__(self, kv: KV):
        self.kv = kv
        self.url = kv.url
        self._used: dict[str, set[str]] = {}   # per network: addresses seen taken (a hint only)
        self._hint: dict[str, int] = {}         # per network: offset where the next scan starts

    def close(self) -> None:
        self.kv.close()

    # --- networks ------------------------------------------------------------

    def network_create(self, name, vni, subnet=None, gateway=None, mtu=None, port=None,
                       exist_ok: bool = False, internal: bool = False, runtime: bool = False) -> Network:
        net = Network.make(name, vni, subnet, gateway, mtu, port, internal, runtime)
        txn = (Txn().absent(key("networks", net.name)).absent(key("vnis", net.vni))
               .put(key("networks", net.name), net.to_json()).put(key("vnis", net.vni), net.name.encode()))
        ok, sent = self._commit_retrying(txn)
        if ok:
            return net
        old = self._network_or_none(net.name)
        if sent and old is not None and old.to_json() == net.to_json():
            return old                       # our earlier commit applied; its reply was lost
        if old is None:
            holder = self.kv.get(key("vnis", net.vni))
            raise Conflict(f"VNI {net.vni} belongs to network {holder.value.decode() if holder else '?'}")
        if exist_ok and (subnet is None or old.subnet == net.subnet) and old.vni == net.vni:
            return old
        raise Conflict(f"network {net.name} exists (VNI {old.vni}, {old.subnet})")

    def _commit_retrying(self, txn: Txn) -> tuple[bool, bool]:
        """(committed, sent before): the txn committed, retried after a lost reply (Unavailable:
        it may have applied) for up to backoff.LOST_WINDOW_S. sent: an earlier try may have
        applied, so a failed compare may be our own write (the caller reads back)."""
        lost, since = 0, time.monotonic()
        while True:
            try:
                return self.kv.commit(txn)[0], lost > 0
            except Refused:
                raise                          # refused for good: nothing to wait out
            except Unavailable as e:
                lost += 1
                pause_or_raise(lost, e, since)

    def _network_or_none(self, name: str) -> Network | None:
        item = self.kv.get(key("networks", name))
        return Network.from_json(item.value) if item else None

    def _network_item(self, name) -> tuple[Item, Network]:
        """(stored item, record) of a network; NotFound if there is none."""
        item = self.kv.get(key("networks", model.parse_name(name, "network name")))
        if item is None:
            raise NotFound(f"network {name!r} not found")
        return item, Network.from_json(item.value)

    def network(self, name: str) -> Network:
        return self._network_item(name)[1]

    def network_by_vni(self, vni) -> Network | None:
        item = self.kv.get(key("vnis", model.parse_vni(vni)))
        return self._network_or_none(item.value.decode()) if item else None

    def network_rm(self, name: str) -> Network | None:
        """Remove a network no endpoint uses. The fence is read before the
        endpoints are listed and compared by the delete, so an endpoint
        created in between fails the delete; it is then checked again."""
        sent = None                          # a delete whose reply was lost: maybe applied
        for _ in range(ATTEMPTS):
            try:
                item, net = self._network_item(name)
            except NotFound:
                if sent is None:
                    raise
                return self._forget_network(sent)      # our delete applied; its reply was lost
            except UsageError:                         # a record this version cannot read: by name
                return malformed.network_rm(self, name)
            fk = fence_key(net.name)
            fence = self.kv.get(fk)
            eps = self.endpoints(network=net.name)
            routers = [e for e in eps if is_router(e, net.vni)]    # go with it
            users = [e.id for e in eps if e not in routers]
            if users:
                raise Conflict(f"network {net.name} is in use: it has {len(users)} endpoint(s), "
                               f"e.g. {users[0]}: remove them first")
            txn = (Txn().unchanged(item.key, item.mod_rev).unchanged(fk, fence.mod_rev if fence else 0)
                   .delete(item.key).delete(key("vnis", net.vni)).delete(fk))
            for r in routers:
                for k in (key("endpoints", r.id), key("ipam", net.name, r.ip), key("macs", net.name, r.mac)):
                    txn.delete(k)
            ok, lost = self._commit_retrying(txn)
            sent = net if lost else sent
            if ok:
                return self._forget_network(net)
        raise Conflict(f"network {name} changed while it was being removed; try again")

    def _forget_network(self, net: Network) -> Network:
        self._used.pop(net.name, None)
        self._hint.pop(net.name, None)
        return net

    def networks(self) -> list[Network]:
        """Read from networks/ alone (a whole snapshot, 100,000 endpoints and their claims, was
        read for this under the agent's lock, by every Docker network create without a VNI)."""
        return list(self._read(("networks",)).networks.values())

    # --- hosts ---------------------------------------------------------------

    def host_register(self, host: Host, lease: int, keep: bool = False) -> int:
        """Put the host's record under lease, in one transaction that creates
        it or re-puts a record of the same VTEP address (an agent restart).
        Conflict if another VTEP holds the name (the agent stops on that);
        a record that keeps changing under us is a plain, retryable
        DataplaneError. A malformed record there is no live host: it is replaced.
        Returns the revision of the put. keep: a record already as it would be
        written (same bytes, same lease) is left alone and its revision returned:
        a re-put after an outage is an event every host applies (a whole reconcile of
        the host's VNIs), from every host that comes back at once. An agent's start
        always puts (its revision is where a warm start is synced)."""
        k = key("hosts", host.name)
        for _ in range(ATTEMPTS):
            item = self.kv.get(k)
            if keep and item is not None and item.value == host.to_json() and item.lease == lease:
                return item.mod_rev
            old = None
            if item is not None:
                try:
                    old = Host.from_json(item.value)
                except UsageError:
                    pass
            if old is not None and old.vtep != host.vtep:
                raise Conflict(f"host name {host.name} is registered by VTEP {old.vtep}; this host is VTEP "
                               f"{host.vtep}: give each host its own --host-name")
            ok, rev = self.kv.commit(Txn().unchanged(k, item.mod_rev if item else 0).put(k, host.to_json(), lease))
            if ok:
                return rev
        raise DataplaneError(f"host {host.name} changed {ATTEMPTS} times while it was being registered; try again")

    def host_forget(self, name: str) -> dict:
        """What a host that is gone for good left in the registry: its endpoints with their
        claims, its address reservations, moves to it (taken back). Refused while the host
        is alive (its record, under its agent's lease, is there): a live agent registers its
        sandboxes again. Each record goes only if it is still the one read."""
        name = model.parse_name(name, "host name")

        def dead(done: str = "") -> None:
            if self.kv.get(key("hosts", name)) is not None:
                raise Conflict(f"host {name} is alive (its agent keeps its lease){done}: run `dataplane down` "
                               "there, or stop its agent and wait out its lease TTL")
        dead()
        removed, aborted = [], []
        snap = self.snapshot(claims=False)        # one read for the endpoints and the networks
        for e in snap.endpoints.values():
            # Asked again before each write: an agent that registers meanwhile (a partition healed)
            # had its endpoints removed under it, its sandboxes torn down (a review found it).
            # Not in the write's transaction: a window of one read, not of the whole loop.
            if e.host == name or e.moving_to == name:
                dead(f"; it came back after {len(removed)} of its endpoints were removed")
            if e.host == name:
                self.endpoint_rm(e.id, expect=e)
                removed.append(e.id)
            elif e.moving_to == name:
                self.endpoint_move_abort(e.id, name)
                aborted.append(e.id)
        released = 0
        for n in snap.networks:             # (its reservations too: Docker's --aux-addresses)
            dead(f"; it came back after {len(removed)} of its endpoints were removed")
            released += self.reservations_drop(n, name)
        return {"host": name, "endpoints_removed": removed, "moves_taken_back": aborted,
                "reservations_released": released}

    def hosts(self) -> list[Host]:
        return list(self.snapshot().hosts.values())

    # --- endpoints (writes in ipam.py) ---------------------------------------------

    def endpoints(self, network: str | None = None, host: str | None = None) -> list[Endpoint]:
        """Read from endpoints/ alone, not the claims and the rest a snapshot reads."""
        return [e for e in self._read(("endpoints",)).endpoints.values()
                if (network is None or e.network == network) and (host is None or e.host == host)]

    # --- mirroring ---------------------------------------------------------------

    def snapshot(self, claims: bool = True) -> Snapshot:
        """Everything, read at one revision. Malformed records are listed in
        .bad and left out, never fatal. Each prefix is parsed as its read
        arrives, beside the reads still under way. claims=False: the records
        alone, without the IPAM claims (macs, ipam: two of every three keys);
        .claims_read says which (an agent's cold start reads them later)."""
        return self._read(MIRRORED if claims else RECORDS)

    def claims(self) -> Snapshot:
        """The IPAM claims (macs, ipam), read at one revision (the current one), side by
        side: the networks, read first, fix the revision (left unparsed)."""
        return self._read(("networks",) + CLAIMS, keep=CLAIMS)

    def _read(self, kinds: tuple[str, ...], keep: tuple[str, ...] | None = None) -> Snapshot:
        """kinds read at one revision; those not in keep (default: all) only fix it."""
        def parse(i: int, rows) -> tuple[dict, list[str]]:
            out, bad, kind = {}, [], kinds[i]
            if keep is not None and kind not in keep:
                return out, bad
            fast = _FAST_PATHS.get(kind)
            if fast is not None:
                rows = fast(out, len(key(kind, "")), rows)
            for k, v in rows:
                k = k.decode(errors="surrogateescape")
                try:
                    parsed = parse_item(k, v)
                except UsageError as e:
                    bad.append(f"{k}: {e}")
                    continue
                if parsed and parsed[0] == kind:
                    out[parsed[1]] = parsed[2]
            return out, bad
        rev, parts = self.kv.range_many([key(kind, "") for kind in kinds], parse)
        snap = Snapshot(rev=rev, claims_read="macs" in kinds)
        for kind, (out, bad) in zip(kinds, parts):
            setattr(snap, kind, out)
            snap.bad += bad
        return snap

    def watch(self, start_rev: int):
        return self.kv.watch(PREFIX, start_rev)


def change(ev: Event) -> Change | None:
    """A watch event as a Change, or None for keys not mirrored. Raises UsageError if malformed."""
    parsed = parse_item(ev.key, ev.value)
    if parsed is None:
        return None
    kind, name, rec = parsed
    return Change(kind, name, rec, ev.rev)
