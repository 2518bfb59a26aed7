"""The registry: networks, hosts and endpoints over a KV store (kv.py).

Layout under /dataplane/ (one JSON record per key):
  networks/<name>         the network           vnis/<vni>               its name (one network per VNI)
  hosts/<name>            a live host (leased)  endpoints/<id>           the endpoint
  ipam/<network>/<ip>     endpoint id holding the address
  macs/<network>/<mac>    endpoint id holding the MAC
Every create is one compare-and-swap transaction over all the keys it
claims, so two hosts allocating at the same moment can never get the same
address: the loser's transaction fails and it tries the next address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from dataplane.core import model
from dataplane.core.errors import Conflict, NotFound, UsageError
from dataplane.registry.kv import KV, Event, Txn
from dataplane.registry.records import Endpoint, Host, Network, parse_endpoint_id

PREFIX = "/dataplane/"
ALLOC_ATTEMPTS = 64


def key(*parts) -> str:
    return PREFIX + "/".join(str(p) for p in parts)


@dataclass
class Snapshot:
    rev: int
    networks: dict[str, Network] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    macs: dict[str, str] = field(default_factory=dict)       # "<network>/<mac>" -> endpoint id
    ipam: dict[str, str] = field(default_factory=dict)       # "<network>/<ip>" -> endpoint id
    bad: list[str] = field(default_factory=list)      # "key: why" for records refused


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
    None for keys the agent does not mirror (vnis). Raises UsageError for a
    malformed record."""
    kind, name = split_key(k)
    if kind in ("macs", "ipam"):        # claims: "<network>/<mac or ip>" -> endpoint id
        return kind, name, (value.decode(errors="replace") if value is not None else None)
    cls = {"networks": Network, "hosts": Host, "endpoints": Endpoint}.get(kind)
    if cls is None:
        return None
    if value is None:
        return kind, name, None
    rec = cls.from_json(value)
    rec_name = rec.id if kind == "endpoints" else rec.name
    if rec_name != name:
        raise UsageError(f"record {k} names itself {rec_name!r}")
    return kind, name, rec


class Registry:
    def __init__(self, kv: KV):
        self.kv = kv
        self.url = kv.url
        self._used: dict[str, set[str]] = {}   # per network: addresses seen taken (a hint only)
        self._hint: dict[str, int] = {}         # per network: offset where the next scan starts

    def close(self) -> None:
        self.kv.close()

    # --- networks ------------------------------------------------------------

    def network_create(self, name, vni, subnet=None, gateway=None, mtu=None, port=None,
                       exist_ok: bool = False) -> Network:
        net = Network.make(name, vni, subnet, gateway, mtu, port)
        txn = (Txn().absent(key("networks", net.name)).absent(key("vnis", net.vni))
               .put(key("networks", net.name), net.to_json()).put(key("vnis", net.vni), net.name.encode()))
        ok, _ = self.kv.commit(txn)
        if ok:
            return net
        old = self._network_or_none(net.name)
        if old is None:
            holder = self.kv.get(key("vnis", net.vni))
            raise Conflict(f"VNI {net.vni} belongs to network {holder.value.decode() if holder else '?'}")
        if exist_ok and (subnet is None or old.subnet == net.subnet) and old.vni == net.vni:
            return old
        raise Conflict(f"network {net.name} exists (VNI {old.vni}, {old.subnet})")

    def _network_or_none(self, name: str) -> Network | None:
        item = self.kv.get(key("networks", name))
        return Network.from_json(item.value) if item else None

    def network(self, name: str) -> Network:
        net = self._network_or_none(model.parse_name(name, "network name"))
        if net is None:
            raise NotFound(f"network {name!r} not found")
        return net

    def network_by_vni(self, vni) -> Network | None:
        item = self.kv.get(key("vnis", model.parse_vni(vni)))
        return self._network_or_none(item.value.decode()) if item else None

    def network_rm(self, name: str) -> Network:
        net = self.network(name)
        users = [e.id for e in self.endpoints(network=net.name)]
        if users:
            raise Conflict(f"network {net.name} has {len(users)} endpoint(s), e.g. {users[0]}: remove them first")
        item = self.kv.get(key("networks", net.name))
        txn = (Txn().unchanged(item.key, item.mod_rev).delete(item.key).delete(key("vnis", net.vni)))
        if not self.kv.commit(txn)[0]:
            raise Conflict(f"network {net.name} changed while it was being removed; try again")
        return net

    def networks(self) -> list[Network]:
        return list(self.snapshot().networks.values())

    # --- hosts ---------------------------------------------------------------

    def host_register(self, host: Host, lease: int) -> None:
        self.kv.commit(Txn().put(key("hosts", host.name), host.to_json(), lease))

    def hosts(self) -> list[Host]:
        return list(self.snapshot().hosts.values())

    # --- endpoints -------------------------------------------------------------

    def endpoint_create(self, id, network, host, ip=None, mac=None) -> Endpoint:
        """Register an endpoint; with no ip, take the network's next free address."""
        net = self.network(network)
        want_ip = net.check_ip(ip) if ip is not None else None
        mac = model.parse_mac(mac) if mac is not None else None
        Endpoint.make(id, net.name, host, mac or "02:00:00:00:00:01", want_ip or net.gateway)  # validate early
        for _ in range(ALLOC_ATTEMPTS):
            addr = want_ip or self._next_free(net)
            ep = Endpoint.make(id, net.name, host, mac or model.mac_for_ip(ipaddress.IPv4Address(addr)), addr)
            txn = (Txn().absent(key("endpoints", ep.id)).absent(key("ipam", net.name, ep.ip))
                   .absent(key("macs", net.name, ep.mac))
                   .put(key("endpoints", ep.id), ep.to_json())
                   .put(key("ipam", net.name, ep.ip), ep.id.encode())
                   .put(key("macs", net.name, ep.mac), ep.id.encode()))
            if self.kv.commit(txn)[0]:
                self._used.setdefault(net.name, set()).add(ep.ip)
                return ep
            self._explain_clash(net, ep, auto_ip=want_ip is None)
            self._used.pop(net.name, None)   # someone else allocated: re-read
        raise Conflict(f"could not allocate an address in {net.name} after {ALLOC_ATTEMPTS} tries (contention)")

    def _explain_clash(self, net: Network, ep: Endpoint, auto_ip: bool) -> None:
        """Raise for a clash that retrying cannot fix; return if another address may work."""
        old = self.kv.get(key("endpoints", ep.id))
        if old is not None:
            raise Conflict(f"endpoint {ep.id} exists already")
        holder = self.kv.get(key("macs", net.name, ep.mac))
        if holder is not None and not auto_ip:
            raise Conflict(f"MAC {ep.mac} is in use on {net.name} by {holder.value.decode()}")
        holder = self.kv.get(key("ipam", net.name, ep.ip))
        if holder is not None and not auto_ip:
            raise Conflict(f"address {ep.ip} is in use on {net.name} by {holder.value.decode()}")

    def _next_free(self, net: Network) -> str:
        """Lowest free host address. The scan resumes where the last one
        stopped (a hint, reset whenever the cached view is re-read), so
        filling a /16 is linear, not quadratic."""
        used = self._used.get(net.name)
        if used is None:
            _, items = self.kv.range(key("ipam", net.name) + "/")
            used = self._used[net.name] = {i.key.rsplit("/", 1)[1] for i in items}
            self._hint[net.name] = 0
        reserved = net.reserved()
        first = int(net.net.network_address) + 1
        last = int(net.net.broadcast_address) - 1
        start = first + self._hint.get(net.name, 0)
        for n in range(start, last + 1):
            ip = str(ipaddress.IPv4Address(n))
            if ip not in used and ip not in reserved:
                self._hint[net.name] = n - first
                return ip
        raise Conflict(f"network {net.name} ({net.subnet}) has no free address")

    def _endpoint_item(self, id):
        """(stored item, record) of an endpoint; NotFound if there is none."""
        item = self.kv.get(key("endpoints", parse_endpoint_id(id)))
        if item is None:
            raise NotFound(f"endpoint {id!r} not found")
        return item, Endpoint.from_json(item.value)

    def endpoint(self, id) -> Endpoint:
        return self._endpoint_item(id)[1]

    def endpoint_rm(self, id) -> Endpoint:
        item, ep = self._endpoint_item(id)
        txn = (Txn().unchanged(item.key, item.mod_rev).delete(item.key)
               .delete(key("ipam", ep.network, ep.ip)).delete(key("macs", ep.network, ep.mac)))
        if not self.kv.commit(txn)[0]:
            raise Conflict(f"endpoint {ep.id} changed while it was being removed; try again")
        self._used.get(ep.network, set()).discard(ep.ip)
        self._hint[ep.network] = 0             # a lower address is free again
        return ep

    def endpoint_move(self, id, host) -> Endpoint:
        """Re-home an endpoint (same MAC and address) in one write, so other
        hosts switch their entry straight from the old host to the new one."""
        item, old = self._endpoint_item(id)
        ep = Endpoint.make(old.id, old.network, host, old.mac, old.ip)
        if not self.kv.commit(Txn().unchanged(item.key, item.mod_rev).put(item.key, ep.to_json()))[0]:
            raise Conflict(f"endpoint {ep.id} changed while it was being moved; try again")
        return ep

    def endpoints(self, network: str | None = None, host: str | None = None) -> list[Endpoint]:
        return [e for e in self.snapshot().endpoints.values()
                if (network is None or e.network == network) and (host is None or e.host == host)]

    # --- mirroring ---------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Everything, read at one revision. Malformed records are listed in
        .bad and left out, never fatal."""
        rev, items = self.kv.range(PREFIX)
        snap = Snapshot(rev=rev)
        for item in items:
            try:
                parsed = parse_item(item.key, item.value)
            except UsageError as e:
                snap.bad.append(f"{item.key}: {e}")
                continue
            if parsed:
                kind, name, rec = parsed
                getattr(snap, kind)[name] = rec
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
