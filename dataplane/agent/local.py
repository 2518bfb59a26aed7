"""This host's own endpoints against the registry: adopted at start (local
sandboxes registered, registry records without a sandbox here removed),
removed when someone else moves or deletes them, and withdrawn at `down`."""

from __future__ import annotations

import functools
import logging
import os

from dataplane.agent import converge, deferred, inflight, process, rewrite, routers
from dataplane.agent.rewrite import wrote
from dataplane.core.errors import Conflict, DataplaneError, NotFound
from dataplane.node import endpoints
from dataplane.node.fdb import forget_learned_vteps
from dataplane.registry.records import key

log = logging.getLogger("dataplane.agent")


def adopt(ag) -> None:
    """At start: the node's sandboxes are registered; registry entries for
    this host without a sandbox (left by a crash) are removed."""
    st = ag.node.require_up()
    for name, ep in list(st.endpoints.items()):
        if name in ag.view.endpoints or name in ag.busy:
            continue
        net = ag.view.network_of_vni(ep.vni)
        if net is None:
            log.warning("endpoint %s: VNI %d has no network in the registry", name, ep.vni)
            continue
        try:
            wrote(ag, name, ag.reg.endpoint_create(name, net.name, ag.me, ep.ip, ep.mac))
            log.info("registered existing endpoint %s", name)
        except Conflict as e:
            if _held_by_another(ag, net.name, name, ep):
                _unregistrable(ag, name, ep, e)
            else:                # contention, or a record of that id since: the next start tries again
                # (a runtime's sandbox sooner: settle_moves, right after, queues it to deferred.py)
                log.error("endpoint %s: cannot register: %s", name, e)
        except DataplaneError as e:
            log.error("endpoint %s: cannot register: %s", name, e)
    mine = routers.ids(ag, st)                # the gateways' host addresses: no sandbox, ours all the same
    for rec in list(ag.view.endpoints.values()):
        if rec.host == ag.me and rec.id not in st.endpoints and rec.id not in ag.busy and rec.id not in mine:
            try:
                with ag.node.maps() as m:
                    for what in endpoints.clear_debris(ag.node, m, rec.id):
                        log.warning("repaired: %s of endpoint %s (no record in the state) removed", what, rec.id)
                ag.reg.endpoint_rm(rec.id, expect=rec)
                wrote(ag, rec.id, None)
                log.info("removed stale registry endpoint %s (no sandbox here)", rec.id)
            except DataplaneError as e:
                log.error("endpoint %s: cannot remove stale record: %s", rec.id, e)

def _held_by_another(ag, network: str, name: str, ep) -> bool:
    """Does a claim of another endpoint (or a reservation) hold ep's address or MAC?"""
    try:
        for k in (key("ipam", network, ep.ip), key("macs", network, ep.mac)):
            item = ag.reg.kv.get(k)
            if item is not None and item.value != name.encode():
                return True
    except DataplaneError:
        pass
    return False


def _unregistrable(ag, name: str, ep, e: Conflict) -> None:
    """adopt(): a sandbox of ours whose record another writer deleted while the agent was away
    (`registry forget-host`), and whose address or MAC an endpoint of another host holds since.
    As for a record deleted while we run (endpoint_changed): a runtime's container is kept and
    reported as a conflict, our own sandbox goes. Before, both stayed with a log line: two
    hosts held the address, and every reconcile here skipped the other's endpoint as a clash
    with ours, so this host could not reach it, for good. (Under the agent's lock; the whole
    reconcile that follows adopt gives the other endpoint its entries.)"""
    if ep.sandbox and ep.phase == "ready":
        why = f"registry record deleted by another writer; cannot register it again: {e}"
        log.error("endpoint %s belongs to a local %s container, kept: %s", name, ep.sandbox.get("runtime", "runtime"),
                  why)
        ag.conflicts[name] = why
        return
    try:
        endpoints.remove(ag.node, name)
        note_gone(ag, ep)
        log.error("endpoint %s: its registry record was deleted while the agent was away, and it cannot be "
                  "registered again (%s): its sandbox is removed", name, e)
    except DataplaneError as err:
        log.error("endpoint %s: %s", name, err)


def endpoint_event(ag, name: str, rec, local: dict | None = None) -> None:
    """A registry event for endpoint name (the main loop's batch): a write deferred.py keeps
    waiting for it after a failure is due now; then endpoint_changed."""
    deferred.event(ag, name)
    endpoint_changed(ag, name, rec, local)


def endpoint_changed(ag, name: str, rec, local: dict | None = None) -> None:
    """Our sandbox was moved to another host (the move committed) or removed by someone else.
    A Docker or CNI container's interface is the runtime's, never torn down for a registry
    write: that is a conflict, reported (until the runtime removes the endpoint), and a
    deleted record is registered again.
    local: the node's endpoints, read once for a batch of events (else read here).
    An endpoint an operation of ours is working on is passed over: recheck() when it ends."""
    if name in ag.busy:
        return
    local = ag.node.require_up().endpoints if local is None else local
    if name not in local:
        if rec is not None and rec.host == ag.me:
            ag.orphan_suspects.add(name)        # ours, with no sandbox here: drop_orphans looks at it
        return
    ep = local[name]
    if ep.sandbox and ep.phase == "ready" and rec is not None and rec.host == ag.me and rec.moving_to:
        _refuse_move(ag, name, rec, ep)          # a runtime's container cannot be moved by us
        return
    if not _not_ours(ag, rec):
        return
    if local[name].sandbox and local[name].phase == "ready":
        _runtime_conflict(ag, name, rec, local[name])
        return
    try:
        endpoints.remove(ag.node, name)
        local.pop(name, None)
        note_gone(ag, ep)
        log.info("endpoint %s moved to %s: sandbox removed here", name, rec.host if rec else "(removed)")
    except DataplaneError as e:
        log.error("endpoint %s: %s", name, e)


def recheck(ag, eid: str) -> None:
    """An operation of ours on eid ended (inflight.py): what the main loop passed over
    meanwhile is looked at now, against the view as it stands. Before the first sync,
    finish() settles every endpoint anyway."""
    if eid in ag.busy or not ag.synced.is_set():
        return
    rec = ag.view.endpoints.get(eid)
    mine = dict(ag.node.require_up(shared=True).endpoints)    # endpoint_changed keeps it true
    if eid in mine or (rec is not None and rec.host == ag.me):
        endpoint_changed(ag, eid, rec, mine)
        converge.pending(ag)                        # outside a batch: what a removal noted, now


def note_gone(ag, ep) -> None:
    """Under the agent's lock, a sandbox of ours (ep) just went: its MAC and address are noted
    for reconciling (converge.pending, at the end of an event batch; callers outside one call
    it themselves), so they get the entries the view now gives them (the host its record is on,
    if any) and the flood list with them. Before, an event that moved the endpoint away while
    an operation of ours held it here was reconciled with the sandbox still here (a local MAC
    has no remote entry), and nothing wrote the new host's entry after the sandbox went.
    Its record, if this host's still, is an orphan now: drop_orphans looks at it. Before, only
    a sandbox some sweep had seen was (orphan_had): one made and gone between two ticks (an
    interface that vanished at once) kept its record until the agent's restart."""
    ag.view.fine.setdefault(ep.vni, set()).update({("ep", ep.name), ("mac", ep.mac), ("ip", ep.ip)})
    ag.orphan_suspects.add(ep.name)


def _refuse_move(ag, name: str, rec, ep) -> None:
    """Take back a move of a runtime's endpoint: the other host would make a sandbox of
    ours for it while the container stays here, cut off. Its commit then fails and it undoes."""
    why = f"a move to host {rec.moving_to} was refused: the container is the {ep.sandbox.get('runtime', 'runtime')}'s"
    if not deferred.add(ag, name, ("refuse", rec.moving_to),
                        rewrite.take_back(ag, name, rec.moving_to, lambda r: True, why)):
        return                              # queued, or made just now: what it said stands
    log.error("endpoint %s: %s", name, why)
    ag.conflicts[name] = why


def _runtime_conflict(ag, name: str, rec, ep) -> None:
    why = ("registry record deleted by another writer" if rec is None
           else f"registry record moved to host {rec.host} by another writer")
    if rec is None:
        if not deferred.add(ag, name, ("register",), functools.partial(rewrite.register_again, ag, name, why)):
            return                          # queued, or made just now: what it said stands
        if ag.conflicts.get(name, "").startswith(why + ";"):
            return                          # what a try said (adopt's, at start) stands until the next says
        why += "; registering it again"
    if ag.conflicts.get(name) != why:
        log.error("endpoint %s belongs to a local %s container, kept: %s", name,
                  ep.sandbox.get("runtime", "runtime"), why)
    ag.conflicts[name] = why


def _not_ours(ag, rec) -> bool:
    return rec is None or (rec.host != ag.me and rec.moving_to != ag.me)


def hosts_gone(ag, gone: list, mine: dict) -> None:
    """Hosts that left or changed VTEP, all those of a batch up to its next endpoint event at
    once (a rack whose leases lapse together: each host's deletion comes with its reservations'
    claims, which neither step reads): what was learned behind their VTEPs goes in one pass
    over dp_learned, and moves are settled once (a move of ours to one of them can no longer
    complete). One by one, each host cost a pass and a scan of the view: 76-130 ms each with
    a full learned map, so 50 hosts stalled the main loop for 4-6 s."""
    try:        # the batch goes on without it: a failure here left the batch's later events unapplied
        counts = forget_learned_vteps(ag.maps, {h.vtep for h in gone})
    except DataplaneError as e:
        ag.counters["errors"] += 1
        log.error("forgetting what was learned behind hosts that left: %s", e)
        counts = {}
    for h in gone:
        n = counts.get(h.vtep, 0)
        log.info("host %s (%s) left%s", h.name, h.vtep, f"; dropped {n} learned entries" if n else "")
        if h.name == ag.me and ag.view.hosts.get(ag.me) is None and getattr(ag, "leases", None):
            log.warning("this host's record %s was deleted; writing it again", h.name)
            ag.leases.reregister.set()          # (its lease may be alive: keepalives alone never put it back)
    settle_moves(ag, mine)


def settle_moves(ag, local: dict | None = None) -> None:
    """Moves that can no longer complete are taken back: one to this host with
    no sandbox here (we crashed making it), one from this host to a host that
    is gone. A local sandbox whose move committed while we were away goes.
    local: the node's endpoints as the event batch that called this holds them (kept
    true: a sandbox removed here leaves it), else read here."""
    mine = ag.node.require_up().endpoints if local is None else local
    for rec in list(ag.view.endpoints.values()):
        if rec.id in ag.busy:
            continue
        if rewrite.stuck(ag, rec, mine) and deferred.add(
                ag, rec.id, ("take_back", rec.moving_to),
                rewrite.take_back(ag, rec.id, rec.moving_to, lambda r: rewrite.stuck(ag, r))):
            log.warning("endpoint %s: its move to %s cannot complete; taking it back", rec.id, rec.moving_to)
    for name, ep in list(mine.items()):
        rec = ag.view.endpoints.get(name)
        # A runtime's endpoint with no record is registered again, as its deletion's event would have
        # had it (a resync after a lost watch has no events); one of ours is left as it was (adopt's).
        if (rec is not None or (ep.sandbox and ep.phase == "ready")) and _not_ours(ag, rec):
            endpoint_changed(ag, name, rec, mine)


def sweeping(ag) -> bool:
    """Housekeeping's sweep goes on to the next endpoint: the agent is not stopping, and the
    registry is there (else each would wait out its timeouts, the endpoint busy meanwhile)."""
    return not ag.stopping.is_set() and ag.connected.is_set()


def settle_local_moves(ag) -> None:
    """Housekeeping (the sweep thread): a move to this host whose sandbox is here but that no
    `endpoint move` is bringing any more (the agent restarted between making it and the commit,
    or the commit's outcome was unknown) is taken back, and the copy here removed; the old host
    served the endpoint throughout. A move the registry shows committed after all keeps it.
    Each is decided under the agent's lock and written without it, the endpoint ours meanwhile
    (inflight.working_on: no operation between the two, the main loop passes it over)."""
    def unfinished(name: str, ep) -> bool:
        rec = ag.view.endpoints.get(name)
        return rec is not None and rec.moving_to == ag.me and name not in ag.moving and not ep.sandbox

    with ag.lock:
        st = ag.node.require_up()
        names = [name for name, ep in st.endpoints.items() if name not in ag.busy and unfinished(name, ep)]
    for name in names:
        if not sweeping(ag):
            return                                  # the next tick's sweep finds them again
        with inflight.working_on(ag, name):
            with ag.lock:
                ep = ag.node.require_up().endpoints.get(name)
                if ep is None or not unfinished(name, ep):
                    continue
            try:
                now = wrote(ag, name, ag.reg.endpoint_move_abort(name, ag.me))
            except DataplaneError as e:
                log.error("endpoint %s: cannot settle its unfinished move here: %s", name, e)
                continue
            if now.host != ag.me:
                with ag.lock:                       # (housekeeping may have seen its interface vanish)
                    if name in ag.node.require_up().endpoints:
                        endpoints.remove(ag.node, name)
                        note_gone(ag, ep)
                        converge.pending(ag)
                log.warning("endpoint %s: its move here was left unfinished; taken back", name)


def drop_orphans(ag) -> None:
    """Registry records of this host with no sandbox here and no move under way: left by a
    registration whose reply was lost (or a crash). Housekeeping runs it in the sweep thread:
    each is decided under the agent's lock and removed without it, the endpoint ours meanwhile
    (inflight.working_on), so the main loop never waits on the registry for it. Every record
    after a sync; then only those that events have written for this host since
    (endpoint_changed notes them): walking 100,000 records at every tick held up
    registry events by 10-100 ms. A sandbox that went from this node since the last
    call makes its record a suspect too: note_gone names it, and orphan_had catches one
    removed without it."""
    def orphan(rec, here) -> bool:
        return rec is not None and rec.host == ag.me and rec.id not in here and not rec.moving_to

    def ours() -> set:
        st = ag.node.require_up()
        return set(st.endpoints) | routers.ids(ag, st)   # a gateway's host address is ours while it is

    with ag.lock:
        here = ours()
        ag.orphan_suspects |= ag.orphan_had - here
        ag.orphan_had = here
        if ag.orphan_scan_all:
            suspects = [rec.id for rec in ag.view.endpoints.values() if rec.host == ag.me]
            ag.orphan_scan_all = False
        else:
            suspects = list(ag.orphan_suspects)
        ag.orphan_suspects.clear()
        # (busy: recheck() names it again when its operation ends)
        recs = [ag.view.endpoints[e] for e in suspects if e not in ag.busy and orphan(ag.view.endpoints.get(e), here)]
    for i, rec in enumerate(recs):
        if not sweeping(ag):
            with ag.lock:                           # the next tick's sweep, if any, takes them
                ag.orphan_suspects.update(r.id for r in recs[i:])
            return
        with inflight.working_on(ag, rec.id):
            with ag.lock:
                if ag.view.endpoints.get(rec.id) is not rec or not orphan(rec, ours()):
                    continue
            try:
                ag.reg.endpoint_rm(rec.id, expect=rec)     # the record as the view has it, or none
                wrote(ag, rec.id, None)
                log.warning("removed registry endpoint %s: no sandbox here", rec.id)
            except NotFound:                        # gone already (our own removal, its event still to come)
                wrote(ag, rec.id, None)
            except DataplaneError as e:
                with ag.lock:
                    ag.orphan_suspects.add(rec.id)  # tried again at the next tick
                log.error("endpoint %s: cannot remove orphan record: %s", rec.id, e)


def leave(ag) -> None:
    """`dataplane down`: this host's endpoints, address reservations and host record leave the
    registry (the reservations under no lease, Docker's --aux-addresses, stayed and kept their
    networks in use on every host until `registry forget-host`)."""
    try:
        for rec in ag.reg.endpoints(host=ag.me):
            ag.reg.endpoint_rm(rec.id)
        for r in ag.reg.reservations(host=ag.me):
            ag.reg.address_release(r["network"], r["ip"], ag.me)
        if ag.leases.lease:
            ag.reg.kv.lease_revoke(ag.leases.lease)
    except DataplaneError as e:
        log.error("could not leave the registry cleanly: %s", e)
    try:
        os.unlink(process.agent_file(ag.node.name))
    except FileNotFoundError:
        pass
