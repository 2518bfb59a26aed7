"""Each gateway's host address (node/gateway.py): an address of the network's own for this
host's router, registered like an endpoint under the id dpgw.<VNI>.<host>, so every other host
installs its MAC (behind this host's VTEP) and answers ARP for it, as for any endpoint of ours.
Masquerading into the subnet picks it on the router, so the target of a DNAT back into the
subnet (kube-proxy's ClusterIP, a published port), wherever it lives, replies to the host that
holds the connection.

Registered by the sweep thread (housekeeping.py) and right after a gateway is made (ops.py),
never under the agent's lock; the router takes the address the record holds. Without one (a
registry outage when the gateway was made) the router is as an older version made it, and all
but such a DNAT to another host works. The record is this host's while the gateway is
(local.py counts it among the host's own); with the gateway gone it is an orphan, which the
sweep removes, and `down` withdraws it with the host's endpoints.
"""

from __future__ import annotations

import ipaddress
import logging

from dataplane.agent import inflight
from dataplane.agent.rewrite import wrote
from dataplane.core import model
from dataplane.core.errors import Conflict, DataplaneError, UsageError
from dataplane.node import gateway
from dataplane.registry.records import router_id

log = logging.getLogger("dataplane.agent")


def ids(ag, st) -> set[str]:
    """The records of this host's gateways' addresses, ours while the gateways are."""
    return {router_id(v, ag.me) for v in st.gateways}


def owned(ag, st, vni: int) -> list[tuple[str, str, str]]:
    """[(record id, MAC, address)] of the VNI's gateway router's host address here, if it has one:
    what reconcile counts among this host's own, so no other record takes its entries."""
    ip = st.router_ip(vni)
    return [(router_id(vni, ag.me), model.mac_for_ip(ip), ip)] if ip else []


def register(ag, net=None) -> None:
    """Each gateway here (net's alone if given: a registry network the caller just read) given
    its registered host address; errors are logged (once each), and the next sweep tries again."""
    st = ag.node.require_up(shared=True)
    for vni in sorted(set(st.gateways) if net is None else {net.vni} & set(st.gateways)):
        if ag.stopping.is_set():
            return                  # (`down`: the host's records are being withdrawn)
        try:
            _one(ag, vni, st, net)
            _said.pop(vni, None)
        except DataplaneError as e:
            if _said.get(vni) != str(e):
                _said[vni] = str(e)
                log.error("gateway of VNI %d: cannot register this host's address on its network: %s", vni, e)


_said: dict[int, str] = {}     # vni -> the error last logged for it


def _one(ag, vni: int, st, net=None) -> None:
    rid, had = router_id(vni, ag.me), st.router_ips.get(vni)
    with inflight.working_on(ag, rid):         # one registration at a time (the sweep, a runtime's call)
        with ag.lock:
            rec = ag.view.endpoints.get(rid)
            net = net or ag.view.network_of_vni(vni)
            free = _from_the_top(ag.view, net, had) if net is not None and rec is None else []
        if net is None:
            return
        if rec is not None and (rec.host != ag.me or rec.network != net.name or rec.mac != model.mac_for_ip(rec.ip)):
            raise Conflict(f"the registry's endpoint {rid} (host {rec.host}, network {rec.network}, MAC {rec.mac}) "
                           f"is not this host's router's; remove it (`dataplane endpoint rm {rid}`) and it is "
                           "made again")
        if rec is None:
            rec = _create(ag, rid, net, free)
    # (held over older programs, it is applied by the sweep of the `up` that attaches this version's:
    # gateway.repair, with NodeState.router_alias set)
    if rec.ip != had:
        with ag.lock:
            if gateway.set_address(ag.node, vni, rec.ip):
                log.info("gateway of VNI %d: this host's address on %s is %s", vni, net.name, rec.ip)


TRIES = 8


def _from_the_top(view, net, had: str | None) -> list[str]:
    """Up to TRIES addresses of net to try, highest first (the one it had first): free as the view
    has them (the registry has the last word). From the top, away from where the registry's
    allocation starts and a CNI host-local range most likely is."""
    out = [had] if had else []
    reserved, n = net.reserved(), net.net
    for i in range(int(n.broadcast_address) - 1, int(n.network_address), -1):
        ip = str(ipaddress.IPv4Address(i))
        if len(out) >= TRIES:
            break
        if ip not in reserved and f"{net.name}/{ip}" not in view.ipam and ip not in out:
            out.append(ip)
    return out


def _create(ag, rid: str, net, free: list[str]):
    with inflight.network_lock(ag, net.name):
        for ip in free:
            try:
                return wrote(ag, rid, ag.reg.endpoint_create(rid, net.name, ag.me, ip=ip))
            except (Conflict, UsageError):
                continue        # taken since the view's claims, or the network made again meanwhile
        return wrote(ag, rid, ag.reg.endpoint_create(rid, net.name, ag.me))     # the registry's pick
