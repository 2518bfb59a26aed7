"""After a crash: make the kernel match the node's state. Endpoints whose
creation never finished (their intent is still "creating") are undone, the
entries of those that did are written again, host-side veths and map entries
that no endpoint of the state holds are removed, every served VNI's
entries are rewritten from the state (and peers it does not list leave dp_vteps), the node's vxlan device is mended if
something undid it (fpconfig.repair_rx_gro), and sandbox ends an older version
made are given what _create gives them now (endpoints.mend_sandbox_ends). The
agent runs it at start, `up` on every run; the registry side of the repair
is the agent's (agent/local.py)."""

from __future__ import annotations

import re

from dataplane.core.errors import NotFound
from dataplane.kernel import netlink
from dataplane.node import endpoints, fdb, forwarding, fpconfig, gateway, gwrules, networks
from dataplane.node.base import Node

_OURS = re.compile(r"^dp[0-9a-f]{10}$")      # endpoints.host_ifname


def sweep(node: Node) -> list[str]:
    """What was repaired, one line each (nothing: the node was consistent)."""
    with node.changing() as (st, m):
        done = []
        for name, ep in list(st.endpoints.items()):
            if ep.phase != "ready":
                endpoints.destroy(node, m, ep)
                del st.endpoints[name]
                done.append(f"endpoint {name}: its creation never finished; undone")
        keep = {e.host_ifname for e in st.endpoints.values()}
        for ifname in netlink.link_names(node.netns):
            if _OURS.match(ifname) and ifname not in keep:
                netlink.link_delete(node.netns, ifname)
                done.append(f"link {ifname}: no endpoint of the state; removed")
        for ep in st.endpoints.values():    # what the state has is in the maps (rewritten: idempotent)
            if not endpoints.present(m, ep):
                done.append(f"endpoint {ep.name}: map entries missing; written again")
            endpoints.write_entries(m, st, ep)
        if st.ends_swept < endpoints.ENDS_MADE:
            done += endpoints.mend_sandbox_ends(node, st)
        done += gateway.repair(node, m, st)
        done += fpconfig.repair_rx_gro(node, st, m)
        done += endpoints.forget_strays(m, st)
        done += fdb.forget_local_strays(m, st, neigh_too=st.registry is None)
        for vni in st.networks:
            networks.sync(m, st, vni)
        done += networks.forget_stray_peers(m, st)
        return done


def is_repair(line: str) -> bool:
    """Whether a line of sweep() mended something (counted a repair, said as one), or follows
    what moved since (a default route: the ways out's rules and forwarding; said, not counted)."""
    return not line.startswith((gwrules.WAYS_MOVED, forwarding.TURNED))


def vanished(node: Node) -> list:
    """Endpoints whose host-side interface is gone (a runtime deleted the container's
    namespace without telling us): their entries would redirect to an interface that no
    longer exists, where the kernel drops frames without a counter we can read. Removed
    here, on the agent's every tick, so that window is short (the caller logs them):
    returns the endpoints removed."""
    st = node.require_up()
    links = set(netlink.link_names(node.netns))
    gone = [e for e in st.endpoints.values() if e.phase == "ready" and e.host_ifname not in links]
    out = []
    for ep in gone:
        try:
            endpoints.remove(node, ep.name)
            out.append(ep)
        except NotFound:
            pass                       # removed meanwhile
    return out
