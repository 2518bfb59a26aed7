"""Misses the fast path punted to the agent (see slowpath.py for reading and
sending): find the owner of the MAC or address, repair a lost entry, send
the frame to the owner's VTEP, or replicate it when nobody owns it."""

from __future__ import annotations

import logging

from dataplane.agent import slowpath
from dataplane.core.errors import DataplaneError
from dataplane.node import networks
from dataplane.registry import Host, Unavailable
from dataplane.registry.store import key

log = logging.getLogger(__name__)


class PuntHandler:
    def __init__(self, agent):
        self.ag = agent
        # resolved (sent to the owner's VTEP; looked_up: the registry knew what our view
        # did not yet; repaired: the map had lost an entry we had installed), local,
        # unresolved (flooded), stale
        self.counts = {"received": 0, "resolved": 0, "looked_up": 0, "repaired": 0, "local": 0,
                       "unresolved": 0, "flooded": 0, "stale": 0, "send_errors": 0}

    def handle(self, batch) -> None:
        ag, c = self.ag, self.counts
        st = ag.node.require_up()
        with ag.lock:
            for p in batch:
                c["received"] += 1
                if p.age_ns > slowpath.STALE_NS:
                    c["stale"] += 1
                    continue
                net = ag.view.network_of_vni(p.vni)
                ep = self._owner(net, p) if net else None
                host = ag.view.hosts.get(ep.host) if ep else None
                if ep is not None and ep.host == ag.me:
                    c["local"] += 1      # ours, its sandbox is being set up: nothing to send
                elif host is not None:
                    c["resolved"] += 1
                    c["repaired"] += ag.remote.repair(p.vni, ep.mac, host.vtep, ep.ip)
                    self._send(p.vni, host.vtep, p.frame)
                else:
                    c["unresolved"] += 1  # nobody in the registry: flood as the fast path would
                    for vtep in networks.flood_list(st, p.vni):
                        c["flooded"] += self._send(p.vni, vtep, p.frame)

    def _owner(self, net, p):
        """The endpoint a punted frame is for: from our view of the registry,
        else from the registry itself (our watch may not have caught up)."""
        ag = self.ag
        mac = p.dst_mac if p.reason == slowpath.UNKNOWN_DST else None
        ip = p.arp_target
        for e in ag.view.endpoints.values():
            if e.network == net.name and (e.mac == mac or e.ip == ip):
                return e
        try:
            claim = ag.reg.kv.get(key("macs", net.name, mac) if mac else key("ipam", net.name, ip or "-"))
            if claim is None:
                return None
            ep = ag.reg.endpoint(claim.value.decode())
            hitem = ag.reg.kv.get(key("hosts", ep.host))
            if hitem is None or ep.network != net.name:
                return None
            host = Host.from_json(hitem.value)
        except (Unavailable, DataplaneError) as e:
            log.warning("punt: registry lookup failed: %s", e)
            return None
        # The watch brings these same records later; install them now.
        ag.view.remember(ep, host)
        ag.reconcile(vnis={net.vni})
        self.counts["looked_up"] += 1
        return ep

    def _send(self, vni: int, vtep: str, frame: bytes) -> int:
        try:
            self.ag.sender.send(vni, vtep, frame)
            return 1
        except OSError as e:
            self.counts["send_errors"] += 1
            log.warning("punt: sending to %s failed: %s", vtep, e)
            return 0
