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

import logging

from dataplane.agent import inflight
from dataplane.agent.rewrite import wrote
from dataplane.core.errors import Conflict, DataplaneError, UsageError
from dataplane.node import gateway
from dataplane.registry.records import router_id

log = logging.getLogger("dataplane.agent")


def ids(ag, st) -> set[str]:
    """The records of this host's gateways' addresses, ours while the gateways are."""
    return {router_id(v, ag.me) for v in st.gateways}


def register(ag, vnis=None) -> None:
    """Each gateway here (of vnis: all if None) given its registered host address; errors are
    logged, and the next sweep tries again."""
    st = ag.node.require_up(shared=True)
    for vni in sorted(set(st.gateways) if vnis is None else set(vnis) & set(st.gateways)):
        try:
            _one(ag, vni, st.router_ips.get(vni))
        except DataplaneError as e:
            log.error("gateway of VNI %d: cannot register this host's address on its network: %s", vni, e)


def _one(ag, vni: int, had: str | None) -> None:
    rid = router_id(vni, ag.me)
    with ag.lock:
        rec = ag.view.endpoints.get(rid)
        net = ag.view.network_of_vni(vni)
    if net is None:
        return
    if rec is not None and (rec.host != ag.me or rec.network != net.name):
        raise Conflict(f"the registry's endpoint {rid} is on host {rec.host}, network {rec.network}: not this "
                       f"host's router; remove it (`dataplane endpoint rm {rid}`) and it is made again")
    if rec is None:
        with inflight.working_on(ag, rid), inflight.network_lock(ag, net.name):
            try:           # the address it had, if still free: connections masqueraded to it live on
                rec = ag.reg.endpoint_create(rid, net.name, ag.me, ip=had)
            except (Conflict, UsageError):
                if had is None:
                    raise
                rec = ag.reg.endpoint_create(rid, net.name, ag.me)
            wrote(ag, rid, rec)
    if rec.ip != had:
        with ag.lock:
            if gateway.set_address(ag.node, vni, rec.ip):
                log.info("gateway of VNI %d: this host's address on %s is %s", vni, net.name, rec.ip)
