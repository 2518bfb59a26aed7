"""This host's own endpoints against the registry: adopted at start (local
sandboxes registered, registry records without a sandbox here removed),
removed when someone else moves or deletes them, and withdrawn at `down`."""

from __future__ import annotations

import logging
import os

from dataplane.agent import process
from dataplane.core.errors import DataplaneError
from dataplane.node import endpoints

log = logging.getLogger("dataplane.agent")


def adopt(ag) -> None:
    """At start: the node's sandboxes are registered; registry entries for
    this host without a sandbox (left by a crash) are removed."""
    st = ag.node.require_up()
    for name, ep in st.endpoints.items():
        if name in ag.view.endpoints:
            continue
        net = ag.view.network_of_vni(ep.vni)
        if net is None:
            log.warning("endpoint %s: VNI %d has no network in the registry", name, ep.vni)
            continue
        try:
            ag.view.endpoints[name] = ag.reg.endpoint_create(name, net.name, ag.me, ep.ip, ep.mac)
            log.info("registered existing endpoint %s", name)
        except DataplaneError as e:
            log.error("endpoint %s: cannot register: %s", name, e)
    for rec in list(ag.view.endpoints.values()):
        if rec.host == ag.me and rec.id not in st.endpoints:
            try:
                with ag.node.maps() as m:
                    for what in endpoints.clear_debris(ag.node, m, rec.id):
                        log.warning("repaired: %s of endpoint %s (no record in the state) removed", what, rec.id)
                ag.reg.endpoint_rm(rec.id)
                del ag.view.endpoints[rec.id]
                log.info("removed stale registry endpoint %s (no sandbox here)", rec.id)
            except DataplaneError as e:
                log.error("endpoint %s: cannot remove stale record: %s", rec.id, e)

def endpoint_changed(ag, name: str, rec) -> None:
    """Our sandbox was moved to another host (or removed) by someone else."""
    st = ag.node.require_up()
    if name in st.endpoints and (rec is None or rec.host != ag.me):
        try:
            endpoints.remove(ag.node, name)
            log.info("endpoint %s moved to %s: sandbox removed here", name, rec.host if rec else "(removed)")
        except DataplaneError as e:
            log.error("endpoint %s: %s", name, e)

def leave(ag) -> None:
    """`dataplane down`: this host's endpoints and host record leave the registry."""
    try:
        for rec in ag.reg.endpoints(host=ag.me):
            ag.reg.endpoint_rm(rec.id)
        if ag.leases.lease:
            ag.reg.kv.lease_revoke(ag.leases.lease)
    except DataplaneError as e:
        log.error("could not leave the registry cleanly: %s", e)
    try:
        os.unlink(process.agent_file(ag.node.name))
    except FileNotFoundError:
        pass
