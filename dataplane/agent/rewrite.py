"""Registry writes of the agent's own endpoint records after it wrote or decided them: the
view told of each write (wrote), and the writes that handling another writer's edit calls
for, made by deferred.py without the agent's lock (take_back, register_again)."""

from __future__ import annotations

import logging

from dataplane.core.errors import Conflict, DataplaneError
from dataplane.registry.ipam import write_rev
from dataplane.registry.kv import transient

log = logging.getLogger("dataplane.agent")


def wrote(ag, eid: str, rec):
    """Right after this thread wrote endpoint eid to the registry (rec, or None: removed): the
    view holds it ahead of the watch, and older events for it are passed over. Returns rec."""
    with ag.lock:
        ag.view.wrote(eid, rec, write_rev())
    return rec


def take_back(ag, eid: str, to: str, still, why: str | None = None):
    """A write for deferred.add: the move of eid to host `to` taken back, if the view still
    shows it and still(rec) holds (under the lock); why: the conflict it answers, if any."""
    def write() -> None:
        with ag.lock:
            rec = ag.view.endpoints.get(eid)
            if rec is None or rec.moving_to != to or not still(rec):
                return                      # committed, taken back or removed since, or made here
        try:
            wrote(ag, eid, ag.reg.endpoint_move_abort(eid, to))
        except DataplaneError as e:
            if why:
                _said(ag, eid, f"{why} (taking the move back failed: {e}; trying again)")
            raise
        if why:
            _said(ag, eid, why)
        log.warning("endpoint %s: its move to %s is taken back", eid, to)
    return write


def register_again(ag, name: str, why: str) -> None:
    """A write for deferred.add: a runtime's endpoint whose record was deleted, registered again
    (unless it went, or has a record again, since)."""
    with ag.lock:
        ep = ag.node.require_up().endpoints.get(name)
        if ep is None or ag.view.endpoints.get(name) is not None:
            return
        net = ag.view.network_of_vni(ep.vni)
    try:
        if net is None:
            raise Conflict(f"VNI {ep.vni} has no network in the registry")
        wrote(ag, name, ag.reg.endpoint_create(name, net.name, ag.me, ep.ip, ep.mac))
    except DataplaneError as e:
        _said(ag, name, f"{why}; cannot register it again {'yet' if transient(e) else 'for now'}: {e}")
        raise
    _said(ag, name, f"{why}; registered again")
    log.warning("endpoint %s: registered again", name)


def _said(ag, eid: str, why: str) -> None:
    with ag.lock:
        ag.conflicts[eid] = why


def stuck(ag, rec, mine: dict | None = None) -> bool:
    """A move that can no longer complete: to this host with no sandbox here, or from this
    host to a host that is gone. (mine: the node's endpoints; read here if not given.)"""
    if rec.moving_to == ag.me:
        return rec.id not in (ag.node.require_up().endpoints if mine is None else mine)
    return rec.host == ag.me and bool(rec.moving_to) and rec.moving_to not in ag.view.hosts
