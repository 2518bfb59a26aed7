"""Address reservations (a part of store.Registry, through ipam.Endpoints): an
address held for a container runtime before its endpoint exists.

Docker asks its IPAM driver for an address before the network driver's
CreateEndpoint, and gives it back (ReleaseAddress) after DeleteEndpoint; the
address must be held cluster-wide from the one to the other. A reservation is
the key an endpoint's claim is, ipam/<network>/<ip>, put in one compare-and-
swap transaction that requires it absent, so a reservation and an endpoint (or
two reservations) can never hold one address.

  value   "~reserved:<host>:<unix time>:<nonce>". No endpoint id starts with "~"
          (records.parse_endpoint_id), so whoever reads a claim as an endpoint
          id finds no endpoint of that name: the agent's reconcile installs
          nothing for it, and it is no bad record (parse_item takes any value).
  lease   the reserving host's: it vanishes with the host (its agent leaves,
          or is silent for a lease TTL). That is the only expiry.
  claim   endpoint_create(..., reserved=True) on the same host turns it into
          the endpoint's claim (compared on its mod revision; the put carries no
          lease, which detaches the key from the host's).
  back    endpoint_rm(id, reserve=(host, lease)) turns the claim back into a
          reservation: the address stays the runtime's until it releases it.
  release address_release deletes it only while it is a reservation of that
          host: never an endpoint's claim, never another host's reservation.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from dataplane.core import model
from dataplane.core.errors import Conflict, DataplaneError, NotFound
from dataplane.registry.backoff import pause_or_raise
from dataplane.registry.kv import Item, Txn, Unavailable
from dataplane.registry.records import Network, key

MARK = "~reserved:"
ATTEMPTS = 64          # commits per reservation: each lost race retries (next address)
RELEASE_ATTEMPTS = 5   # read + delete rounds when the key changes under a release


@dataclass(frozen=True)
class Reservation:
    host: str
    at: int            # unix time it was made (for people reading the registry)


def reservation_value(host: str) -> bytes:
    return f"{MARK}{model.parse_name(host, 'host name')}:{int(time.time())}:{secrets.token_hex(4)}".encode()


def parse_reservation(value) -> Reservation | None:
    """The reservation a claim's value is, or None (an endpoint id, or junk)."""
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    if not isinstance(text, str) or not text.startswith(MARK):
        return None
    parts = text[len(MARK):].split(":")
    if len(parts) != 3 or not parts[1].isascii() or not parts[1].isdigit():
        return None
    try:
        return Reservation(model.parse_name(parts[0], "host name"), int(parts[1]))
    except DataplaneError:
        return None


def holder_text(value: bytes) -> str:
    """Who holds a claim, for an error message: an endpoint id, or a reservation."""
    r = parse_reservation(value)
    return value.decode(errors="replace") if r is None else f"a reservation of host {r.host}"


def reserved_by(item: Item | None, host: str) -> bool:
    r = parse_reservation(item.value) if item is not None else None
    return r is not None and r.host == host


class Reservations:
    """Mixed into store.Registry (through ipam.Endpoints): needs self.kv, self._used,
    self._hint, self._network_item(name) and self._next_free(net)."""

    def networks_with_subnet(self, subnet) -> list[Network]:
        """The registry networks whose subnet is subnet (read from networks/ alone)."""
        want = str(model.parse_subnet(subnet))
        _, items = self.kv.range(key("networks", ""))
        out = []
        for it in items:
            try:
                net = Network.from_json(it.value)
            except DataplaneError:
                continue                 # a bad record: the agent reports it, nobody reserves in it
            if net.subnet == want:
                out.append(net)
        return out

    def address_reserve(self, network, host, lease: int, ip=None, keep: bool = False) -> str:
        """Reserve ip (None: the lowest free address) in network for host, under
        host's lease; returns the address. Conflict if ip is held, or none is free.
        keep: under no lease (Docker's --aux-address, asked for once): it goes when released,
        with its network, or with `registry forget-host`, not when the host's lease lapses."""
        host = model.parse_name(host, "host name")
        if not lease:
            raise DataplaneError(f"host {host} is not registered (no lease yet): try again")
        lease = 0 if keep else lease
        net_item, net = self._network_item(network)
        want = net.check_ip(ip) if ip is not None else None
        sent: list[tuple[str, bytes]] = []   # (address, value) committed with the reply lost
        lost, since = 0, time.monotonic()
        for _ in range(ATTEMPTS):      # (a cached view that seems full is read again by _next_free)
            try:
                got = self._reserve_once(net_item, host, lease, want, sent)
            except Unavailable as e:
                lost += 1
                pause_or_raise(lost, e, since)
                continue
            if isinstance(got, str):
                self._used.setdefault(net.name, set()).add(got)
                return got
            net_item = got
        raise Conflict(f"could not reserve an address in {net.name} after {ATTEMPTS} tries (contention)")

    def _reserve_once(self, net_item: Item, host, lease, want, sent):
        """One attempt: the address when reserved; else the network item to try next with."""
        net = Network.from_json(net_item.value)
        if want is not None:
            net.check_ip(want)                       # the network may have been created again
        for addr, value in sent:                     # did a commit whose reply was lost apply?
            item = self.kv.get(key("ipam", net.name, addr))
            if item is not None and item.value == value:
                return addr
        addr = want or self._next_free(net)
        ik, value = key("ipam", net.name, addr), reservation_value(host)
        txn = Txn().unchanged(net_item.key, net_item.mod_rev).absent(ik).put(ik, value, lease)
        try:
            if self.kv.commit(txn)[0]:
                return addr
        except Unavailable:
            sent.append((addr, value))
            raise
        now = self.kv.get(net_item.key)
        if now is None:
            raise NotFound(f"network {net.name} was removed while an address was being reserved in it")
        if now.mod_rev != net_item.mod_rev:          # removed and created again
            self._used.pop(net.name, None)
            return now
        holder = self.kv.get(ik)
        if holder is not None and want is not None:
            raise Conflict(f"address {addr} is in use on {net.name} by {holder_text(holder.value)}")
        self._used.pop(net.name, None)               # someone else took it: read the claims again
        return net_item

    def address_release(self, network, ip, host) -> bool:
        """Delete host's reservation of ip in network; False if there is none (the
        address is free, an endpoint's, or another host's: all left as they are).
        The network record is not needed: a reservation left by a removed network
        is released the same way."""
        network = model.parse_name(network, "network name")
        ip = model.parse_ipv4_str(ip, "address")
        ik = key("ipam", network, ip)
        lost, since = 0, time.monotonic()
        sent = None                                  # the reservation a delete whose reply was lost removed
        changed = 0                                  # compares that failed (lost replies count in time)
        while changed < RELEASE_ATTEMPTS:
            try:
                item = self.kv.get(ik)
                if sent is not None and (item is None or item.create_rev != sent.create_rev):
                    ok = True                        # our delete applied (what is there now is another claim)
                elif not reserved_by(item, host):
                    return False
                else:
                    sent = None
                    try:
                        ok = self.kv.commit(Txn().unchanged(ik, item.mod_rev).delete(ik))[0]
                    except Unavailable:
                        sent = item
                        raise
            except Unavailable as e:
                lost += 1                            # read again: gone means released
                pause_or_raise(lost, e, since)
                continue
            if ok:
                self._used.get(network, set()).discard(ip)
                self._hint[network] = 0
                return True
            changed += 1
        raise Conflict(f"the claim of {ip} on {network} changed {RELEASE_ATTEMPTS} times while it was being "
                       "released; try again")

    def reservation(self, network, ip) -> Reservation | None:
        """The reservation holding ip in network, or None (free, or an endpoint's)."""
        item = self.kv.get(key("ipam", model.parse_name(network, "network name"), model.parse_ipv4_str(ip, "address")))
        return parse_reservation(item.value) if item is not None else None

    def reservations(self, network=None, host=None) -> list[dict]:
        """Reservations (of host, in network, if given): [{network, ip, host, at}]."""
        prefix = key("ipam", model.parse_name(network, "network name"), "") if network else key("ipam", "")
        _, items = self.kv.range(prefix)
        out = []
        for it in items:
            r = parse_reservation(it.value)
            if r is None or (host is not None and r.host != host):
                continue
            net, _, ip = it.key[len(key("ipam", "")):].partition("/")
            out.append({"network": net, "ip": ip, "host": r.host, "at": r.at})
        return out

    def reservations_drop(self, network, host) -> int:
        """Release every reservation of host in network; how many went."""
        return sum(self.address_release(network, r["ip"], host) for r in self.reservations(network, host))
