"""The agent's API operations for the CLI: endpoints (add, remove, move,
list), peers and status. Every endpoint that appears here is registered
first, then created, and the registration is rolled back if creating fails
(register_then_create, shared with runtime_ops.py). Registry calls are made
without the agent's lock, the endpoint marked as being worked on instead
(inflight.py); the lock is held only while the node itself changes."""

from __future__ import annotations

import logging
import os

from dataplane.agent import converge, inflight, local, routers
from dataplane.agent.inflight import working_on
from dataplane.core import model
from dataplane.core.errors import Conflict, DataplaneError, NotFound, UsageError
from dataplane.node import endpoints, gateway, networks, peers
from dataplane.registry import Unavailable
from dataplane.registry.records import ROUTER_PREFIX, is_router

STATUS_LOCK_WAIT_S = 2.0

log = logging.getLogger("dataplane.agent")


def register_then_create(register, rollback, create):
    """(record, created): the registry write, then the local objects; if
    creating fails, the registry write is undone (rollback(record)) and the error
    raised. A write that gave up on lost replies may have applied: rollback(r)
    for each record r it may have stored (the Unavailable's maybe_stored; one
    call with None where the write does not say)."""
    try:
        rec = register()
    except Unavailable as e:
        for sent in getattr(e, "maybe_stored", [None]):
            _quietly(lambda: rollback(sent))      # take it back if it applied and we can
        raise
    try:
        return rec, create(rec)
    except BaseException:
        try:
            rollback(rec)
        except DataplaneError as e:
            log.error("could not roll back the registry: %s", e)
        raise


def unregister(ag, id):
    """register_then_create's rollback of an endpoint's creation: its record goes only if it is
    the one we wrote. After lost replies the id's record may be another host's (our create
    was refused, its reply lost): removing it by id took that host's endpoint away."""
    return lambda rec: rec is not None and ag.reg.endpoint_rm(id, expect=rec)


def register_endpoint(ag, id, network: str, *args, **kw):
    """ag.reg.endpoint_create(id, network, ...) with this agent's other address allocations on
    that network held off: concurrent creates on one network all compare its fence key and pick
    the same next free address from one cache, so all but one would retry, over and over (a
    burst of pods). Allocations on other networks go on meanwhile (before, one lock held them
    all: during an outage each waited out the one before it). Not the agent's lock: the main
    loop never waits on it."""
    with inflight.network_lock(ag, network):
        return ag.reg.endpoint_create(id, network, *args, **kw)


def _quietly(fn) -> None:
    try:
        fn()
    except DataplaneError:
        pass                     # the orphan sweep (local.drop_orphans) takes it later


def serve(agent, net) -> None:
    """The node serves the registry network's VNI (a no-op if it does)."""
    networks.ensure_served(agent.node, net.vni, net.subnet, net.mtu)


def egress(agent, net) -> list[dict]:
    """The routes of an endpoint of ours on net: a default route through this host's
    gateway (made if missing, node/gateway.py), or none on an internal network."""
    if net.internal:
        return []
    gateway.ensure(agent.node, net.vni, net.gateway)
    return [{"dst": "0.0.0.0/0", "gw": net.gateway}]


class Ops:
    def __init__(self, agent):
        self.ag = agent

    def handlers(self) -> dict:
        return {"ping": self.ping, "status": self.status, "endpoint_add": self.endpoint_add,
                "endpoint_rm": self.endpoint_rm, "endpoint_move": self.endpoint_move,
                "endpoint_list": self.endpoint_list, "peer_list": self.peer_list, "leave": self.leave,
                "gateway_ensure": self.gateway_ensure}

    def ping(self) -> dict:
        ag = self.ag
        # registered: its lease's last keepalive was answered (the registry takes requests) while
        # connected is the watch's alone, down a few seconds at every etcd member restart
        return {"host": ag.me, "synced": ag.synced.is_set(), "connected": ag.connected.is_set(),
                "registered": bool(getattr(ag.leases, "live", False)), "pid": os.getpid()}

    def status(self) -> dict:
        """What the agent knows of itself. Its lock is held by the main loop's turns (a whole
        VNI's convergence, a registry call of its own during an outage): after STATUS_LOCK_WAIT_S
        the figures are read without it ("busy": true) rather than the command hanging."""
        ag = self.ag
        metrics = _metrics(ag)             # before the lock: re-reading a web config holds up no turn
        got = ag.lock.acquire(timeout=STATUS_LOCK_WAIT_S)
        try:
            return {**self.ping(), "busy": not got, "lease_live": ag.leases.live,
                    "registry": ag.url, "revision": ag.view.rev, "watch_lag_s": ag.watch_lag_s(),
                    "watch_member": ag.watch_member(), "watch_transport": ag.watch_transport(),
                    "registry_transport": ag.reg.kv.transport_counts(),
                    "lease": ag.leases.lease,
                    "lease_ttl": ag.ttl, "networks": len(ag.view.networks), "hosts": sorted(ag.view.hosts),
                    "endpoints": len(ag.view.endpoints), "installed": ag.remote.counts(),
                    "last_sync_ms": round(ag.last_sync_s * 1000, 1),
                    "last_snapshot_ms": round(ag.last_snapshot_s * 1000, 1), "warm_start": ag.warm_start,
                    "claims_pending": ag.view.claims_pending, "last_claims_ms": round(ag.last_claims_s * 1000, 1),
                    "map_error": ag.remote.last_error, **metrics,
                    **ag.counters, "vni_errors": {str(v): e for v, e in sorted(ag.vni_errors.items())},
                    "skipped_endpoints": dict(ag.skipped), "conflicts": dict(ag.conflicts),
                    "in_flight": sorted(ag.busy),
                    "bad_records_recent": list(ag.bad),
                    "punts": dict(ag.punts.counts), "over_limit": networks.over_limit(ag.node.require_up()),
                    "rss_kib": _rss_kib(), "rss_peak_kib": _rss_kib("VmHWM")}
        finally:
            if got:
                ag.lock.release()

    def _network_for(self, network=None, vni=None):
        if network is not None:
            net = self.ag.reg.network(network)
            if vni is not None and net.vni != model.parse_vni(vni):        # (the --vni went unheeded)
                raise Conflict(f"network {net.name} has VNI {net.vni}, not {vni}: give one of --network and --vni")
            return net
        net = self.ag.reg.network_by_vni(vni)
        if net is None:
            raise NotFound(f"no network has VNI {vni}: create one with `dataplane network create`")
        return net

    def endpoint_add(self, id: str, network: str | None = None, vni: int | str | None = None, ip: str | None = None,
                     mac: str | None = None) -> dict:
        ag = self.ag
        model.parse_name(id, "endpoint name")   # it names the sandbox namespace too
        if id.startswith(ROUTER_PREFIX):
            raise UsageError(f"bad endpoint name {id!r}: names starting {ROUTER_PREFIX!r} are kept for the "
                             "gateways' host addresses")
        net = self._network_for(network, vni)
        with working_on(ag, id):
            with ag.lock:                # refused here (an MTU the underlay cannot carry) before any write
                serve(ag, net)
                way_out = egress(ag, net)

            def create(rec):
                with ag.lock:            # served again: a reconcile during the write may have let it go
                    serve(ag, net)
                    ep = endpoints.add(ag.node, id, net.vni, ip=rec.ip, mac=rec.mac, routes=egress(ag, net))
                    local.wrote(ag, id, rec)
                    return ep
            rec, ep = register_then_create(lambda: register_endpoint(ag, id, net.name, ag.me, ip=ip, mac=mac),
                                           unregister(ag, id), create)
        if way_out:
            routers.register(ag, net)            # its gateway's host address, if it has none yet
        return {**ep.to_dict(), "network": net.name, "host": ag.me}

    def gateway_ensure(self, vni: int | str) -> dict:
        """A runtime's container wants a way out (CNI "ipMasq"): this host's gateway
        for the VNI, and the route to give the container."""
        net = self._network_for(None, model.parse_vni(vni))
        if net.internal:
            raise UsageError(f"network {net.name} is internal: it has no way out (ipMasq)")
        with self.ag.lock:
            serve(self.ag, net)
            routes = egress(self.ag, net)
        if routes:
            routers.register(self.ag, net)
        return {"vni": net.vni, "gateway": net.gateway, "routes": routes}

    def endpoint_rm(self, id: str) -> dict:
        ag = self.ag
        with working_on(ag, id):
            rec = ag.reg.endpoint(id)
            if rec.host != ag.me:
                raise Conflict(f"endpoint {id} lives on host {rec.host}; remove it there")
            with ag.lock:
                if id in ag.node.require_up().endpoints:
                    endpoints.remove(ag.node, id)
            ag.reg.endpoint_rm(id)      # if this fails, the record is an orphan: local.drop_orphans
            local.wrote(ag, id, None)
        return rec.to_dict()

    def endpoint_move(self, id: str) -> dict:
        """Bring an endpoint (same MAC and address) to this host, make before
        break: the move is marked in the registry, the sandbox made here, then
        the move committed, at which the old host removes its own. If anything
        fails here, the mark is taken back and the old host keeps serving it."""
        ag = self.ag
        rec = ag.reg.endpoint(id)
        if rec.host == ag.me:
            raise Conflict(f"endpoint {id} is on this host already")
        net = ag.reg.network(rec.network)
        if is_router(rec, net.vni):
            raise UsageError(f"endpoint {id} is host {rec.host}'s gateway router's own address: it does not move")

        def create(_marked):
            with ag.lock:
                serve(ag, net)
                return endpoints.add(ag.node, id, net.vni, ip=rec.ip, mac=rec.mac, routes=egress(ag, net))

        with ag.lock:
            if id in ag.moving:
                raise Conflict(f"endpoint {id} is being moved to this host already")
            ag.moving.add(id)
        try:
            with working_on(ag, id):
                _, ep = register_then_create(lambda: local.wrote(ag, id, ag.reg.endpoint_move_begin(id, ag.me)),
                                             lambda _: local.wrote(ag, id, ag.reg.endpoint_move_abort(id, ag.me)),
                                             create)
                try:
                    moved = ag.reg.endpoint_move(id, ag.me)
                except Unavailable as e:
                    moved = self._move_outcome(id, e)
                except BaseException:
                    self._undo_move(id)
                    raise
                local.wrote(ag, id, moved)
        finally:
            with ag.lock:
                ag.moving.discard(id)
        if not net.internal:
            routers.register(ag, net)            # a gateway made for it here
        return {**ep.to_dict(), "network": net.name, "host": ag.me, "from": rec.host}

    def _undo_move(self, id) -> None:
        """Our sandbox goes, then the mark. While it was here its MAC and address were local, so
        a record that took them meanwhile (the endpoint removed on its host and another made
        there with the same address: the model test's seed 77975222) was judged a clash and
        skipped; they are reconciled now, as for any sandbox that goes (local.note_gone)."""
        ag = self.ag
        with ag.lock:
            local.note_gone(ag, endpoints.remove(ag.node, id))
            converge.pending(ag)
        local.wrote(ag, id, ag.reg.endpoint_move_abort(id, ag.me))

    def _move_outcome(self, id, err: Unavailable):
        """The commit's reply was lost: it may have applied, and the old host then removes its
        sandbox, so ours may be the only one. Undo only when the record says it did not apply;
        if the registry cannot say, the sandbox stays and the move is settled later
        (local.settle_local_moves)."""
        ag = self.ag
        try:
            rec = ag.reg.endpoint(id)
        except Unavailable:
            raise Unavailable(f"{err}; whether the move committed is unknown: the sandbox stays here "
                              "until the registry says (the agent settles it)") from None
        except NotFound:
            rec = None
        if rec is not None and rec.host == ag.me and rec.moving_to is None:
            return rec                          # it applied
        self._undo_move(id)
        raise err

    def endpoint_list(self) -> list[dict]:
        ag = self.ag
        with ag.lock:            # copies only (the records are frozen): the lock holds up events and punts
            nets = {n.name: n.vni for n in ag.view.networks.values()}
            eps, hosts = list(ag.view.endpoints.values()), set(ag.view.hosts)
        return [{**e.to_dict(), "vni": nets.get(e.network), "local": e.host == ag.me, "alive": e.host in hosts,
                 "router": is_router(e, nets.get(e.network))} for e in sorted(eps, key=lambda e: e.id)]

    def peer_list(self) -> list[dict]:
        return peers.listing(self.ag.node.require_up())

    def leave(self) -> dict:
        log.info("asked to leave the registry and stop")
        self.ag.stop(leave=True)
        return {"host": self.ag.me}


def _metrics(ag) -> dict:
    """The address /metrics is served on as configured, and why not (once Agent.run began serving)."""
    if not hasattr(ag, "metrics"):
        return {}
    srv = ag.metrics
    web = srv.web if srv else None
    if web is not None:
        web.current()                  # the files as they are now, not as the last scrape found them
    return {"metrics_served": srv.asked if srv else None, "metrics_error": ag.metrics_error,
            "metrics_web_config_served": srv.web_config if srv else None,
            "metrics_web_error": web.error if web else None}


def _rss_kib(field: str = "VmRSS") -> int:
    """Resident memory now (VmRSS) or at its peak so far (VmHWM), KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0
