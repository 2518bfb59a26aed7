"""The agent's housekeeping, every few seconds between registry messages: orphan
records and unfinished moves (swept by a thread: they write the registry),
parted peers, learned entries to age, an abandoned monitor, interfaces that
vanished, the node's vxlan device if something undid it or plain sockets let
its port go (node/rxgro.py), gateways' iptables rules a firewall reload took away
(node/gwrules.py), and a garbage collection (pauses.py). It holds up
registry events while it runs, so each step is kept short and a slow tick is
logged with its slow steps."""

from __future__ import annotations

import logging
import threading
import time

from dataplane.agent import converge, local, pauses, routers
from dataplane.core import state
from dataplane.core.errors import DataplaneError
from dataplane.node import forwarding, fpconfig, gwrules, monitor, networks, nexthops, rxgro, vxlanguard
from dataplane.node.fdb import age_learned
from dataplane.node.sweep import vanished

log = logging.getLogger("dataplane.agent")


def sweep(ag) -> None:
    """Orphan records and unfinished moves here, settled by a thread of their own (they write
    the registry, which can take a timeout per member: the main loop must not wait), one
    sweep at a time."""
    if ag.sweeper is not None and ag.sweeper.is_alive():
        return

    def run():
        try:
            local.drop_orphans(ag)
            local.settle_local_moves(ag)
            routers.register(ag)
        except Exception as e:  # noqa: BLE001 - said; the suspects it had taken are looked for whole
            if isinstance(e, DataplaneError):
                log.error("sweeping orphan records and unfinished moves: %s", e)
            else:
                log.exception("sweeping orphan records and unfinished moves failed")
            with ag.lock:
                ag.orphan_scan_all = True
    ag.sweeper = threading.Thread(target=run, name="sweep", daemon=True)
    ag.sweeper.start()


def _mend_rx_gro(ag, st) -> None:
    """dpgro0 deleted, downed or stripped of its sink behind our back, or kept off the port by
    a plain socket that has since let it go: made (counted a repair), or, where it cannot be,
    an error logged (the node goes without until the port is free, or until `up`)."""
    if rxgro.intact(ag.node, st, ag.maps) and not rxgro.freed(ag.node, st):
        return
    with ag.node.changing() as (now, m):
        for line in fpconfig.repair_rx_gro(ag.node, now, m):
            if now.rx_gro == rxgro.ON:
                log.warning("repaired: %s", line)
                ag.counters["repairs"] += 1
            else:
                ag.counters["errors"] += 1
                log.error("%s", line)


def _mend_vxlan_guard(ag, st) -> None:
    """node/vxlanguard.py's rule put back if a firewall's reload or a flush took it away. Judged
    by the state as it is under the node's lock, not the tick's copy: an `up --no-vxlan-guard`
    between the two removed the rule, and the copy (guard on) put it back for good. The lock
    only when the rule is missing: `up` holds it for seconds, and the main loop runs this."""
    c = st.config
    if not c.vxlan_guard or not vxlanguard.missing(ag.node.netns, c.underlay, c.port):
        return
    with state.locked(ag.node.name):
        now = ag.node.state()
        c = now.config if now else None
        mended = c is not None and c.vxlan_guard and vxlanguard.ensure(ag.node.netns, c.underlay, c.port)
    if mended:
        log.warning("repaired: the rule that keeps containers' VXLAN off the underlay was missing "
                    "(a firewall reload or flush?); put back")
        ag.counters["repairs"] += 1


def _mend_gateways(ag, st) -> None:
    """The gateways' rules, read without a lock (six `iptables -S`, about 13 ms), written again
    under the node's if a firewall's reload or a flush took any away (counted a repair); and
    forwarding on for a way out that lacks it (a default route that moved: not a repair)."""
    if not st.gateways:
        return
    ways = gwrules.ways_out(ag.node.netns)
    if gwrules.intact(gwrules.listing(ag.node.netns), st.gateways.values(), ways, forwarding.confined(st)) and \
            not forwarding.due(ag.node, st, ways):
        return
    # Under the node's lock, which every writer of these rules holds (`up`, the sweep, a gateway's
    # making and removal, the agent's through node.changing()): a gateway made or removed meanwhile
    # is written as the state has it now. Taken only when a repair is due (as _mend_vxlan_guard
    # does): `up` holds it for seconds.
    with state.locked(ag.node.name):
        now = ag.node.state()
        if not now or not now.gateways:
            return
        noted = forwarding.note(ag.node, now)               # the rules confine those ways first
        for line in gwrules.sync(ag.node.netns, now.gateways.values(), forwarding.confined(now)):
            if line.startswith(gwrules.WAYS_MOVED):
                log.info("%s", line)
                continue
            log.warning("repaired: %s (a firewall reload or flush?)", line)
            ag.counters["repairs"] += 1
        turned = forwarding.apply(ag.node, now)
        for line in turned:
            log.info("%s", line)
        if noted or turned:
            state.save(now)


def _prune_nexthops(ag, st) -> None:
    """nexthops.prune once a minute (a pass over up to 4,096 entries), without the lock: an entry
    it removes is resolved again on first use."""
    if time.monotonic() - getattr(ag, "nexthops_pruned", 0.0) < 60:
        return
    ag.nexthops_pruned = time.monotonic()
    n = nexthops.prune(ag.maps, st, time.monotonic_ns())
    if n:
        log.info("pruned %d next hops of VTEPs that are no peer now, unused %d s", n, nexthops.IDLE_NS // 10**9)


def tick(ag, slow_s: float = 0.1) -> list[str]:
    """Housekeeping; returns its steps that took over 10 ms, and names them in a warning if
    the whole took over slow_s (it held up registry events that long)."""
    st, steps, t = ag.node.state(), [], time.monotonic()
    started = t

    def step(what: str) -> None:
        nonlocal t
        now = time.monotonic()
        if now - t > 0.01:
            steps.append(f"{what} {(now - t) * 1000:.0f} ms")
        t = now
    if not st:
        return steps
    with ag.lock:
        gone = vanished(ag.node)                 # first: their records go in this tick's orphans
        for ep in gone:
            log.warning("endpoint %s: its interface vanished; removed", ep.name)
            ag.counters["vanished"] += 1
            local.note_gone(ag, ep)              # a record another host holds gets its entries now
        if gone:
            converge.pending(ag)
        step("interfaces")
        if ag.synced.is_set() and ag.connected.is_set():
            sweep(ag)
        networks.prune_parted(ag.node)
        monitor.clear_if_abandoned(ag.node)      # a monitor killed outright left events on
        try:
            _mend_rx_gro(ag, st)
        except DataplaneError as e:         # logged; the rest of the tick goes on
            ag.counters["errors"] += 1
            log.error("mending %s: %s", rxgro.IFNAME, e)
        step("receive GRO")
    # Without the lock: the control plane only ever deletes dp_learned's entries (a MAC given
    # to an endpoint or a static entry; the pass finds it gone, which is harmless), and a full
    # map's pass is still 5-25 ms that an endpoint's add need not wait for.
    n = age_learned(ag.maps, st.config.fdb_age_s * 1_000_000_000, time.monotonic_ns())
    if n:              # counted with the deletion, not after the rest of the tick (iptables runs)
        ag.counters["aged"] += n
        log.info("aged out %d learned FDB entries", n)
    _prune_nexthops(ag, st)
    step("ageing")
    try:
        _mend_gateways(ag, st)
    except DataplaneError as e:
        ag.counters["errors"] += 1
        log.error("mending the gateways' rules: %s", e)
    try:
        _mend_vxlan_guard(ag, st)
    except DataplaneError as e:
        ag.counters["errors"] += 1
        log.error("mending the rule that keeps containers' VXLAN off the underlay: %s", e)
    step("gateways")
    pauses.tick()
    step("collection")
    if time.monotonic() - started > slow_s:
        log.warning("slow turn: housekeeping took %.0f ms (%s)", (time.monotonic() - started) * 1000, ", ".join(steps))
    return steps
