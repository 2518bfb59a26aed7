"""Converging: the agent asks reconcile.py what the maps should hold and
apply.py writes it. whole() recomputes entire VNIs (a snapshot, a host or a
network changed); single() only the MACs and addresses that single endpoint
or claim events touched, so a change costs the same in a VNI of 10 endpoints
or of 100,000."""

from __future__ import annotations

import logging
import time

from dataplane.agent import routers
from dataplane.agent.apply import apply, apply_patches
from dataplane.agent.reconcile import LocalFacts, desired, patch
from dataplane.node import nexthops

log = logging.getLogger("dataplane.agent")
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 60.0    # a failing VNI is tried 1 s after it fails, then 1, 2, 4 ... 60 s apart


def facts(ag, st) -> LocalFacts:
    """What reconcile needs of the node; peer routes asked of the kernel once per VTEP (until a snapshot)."""
    todo = {h.vtep for h in ag.view.hosts.values() if h.vtep not in ag._routed}
    if todo:
        ag._routed.update(nexthops.routed_many(ag.node.netns, st, sorted(todo)))
    return LocalFacts(me=ag.me, port=st.config.port, served=frozenset(st.networks),
                      local={v: [(e.name, e.mac, e.ip) for e in st.local_endpoints(v)] for v in st.networks},
                      routers={v: routers.owned(ag, st, v) for v in st.gateways},
                      unroutable=frozenset(v for v, ok in ag._routed.items() if not ok))


def whole(ag, vnis=None) -> None:
    """Make the maps equal the registry for vnis (None: all)."""
    st = ag.node.require_up(shared=True)
    if vnis is None:
        vnis = {n.vni for n in ag.view.networks.values()} | set(st.networks) | ag.remote.vnis()
    d = desired(ag.view, facts(ag, st), vnis)
    for name, port in d.other_port.items():
        log.warning("network %s: port %d differs from this VTEP's %d; not served", name, port, st.config.port)
    for eid, why in d.skipped.items():
        if eid not in ag.skipped:
            ag.counters["bad_records"] += 1
            log.warning("endpoint %s: %s; skipped", eid, why)
    ag.skipped = {k: v for k, v in ag.skipped.items() if not _judged(ag.view, k, d.entries)} | d.skipped
    failed = apply(ag.node, ag.remote, d) | d.errors
    for vni in d.entries:
        if vni in failed and ag.vni_errors.get(vni) != failed[vni]:
            log.error("VNI %d: %s", vni, failed[vni])
        ag.vni_errors.pop(vni, None)
    ag.vni_errors.update(failed)
    for vni in d.unserve:
        log.info("VNI %d left the registry: no longer served", vni)


def pending(ag) -> None:
    """What the view noted since it was last asked (an event batch, a sandbox that went):
    whole VNIs where a host or network changed, single keys in the rest."""
    coarse, fine = ag.view.take_changes()
    if coarse:
        whole(ag, coarse)
    fine = {v: keys for v, keys in fine.items() if v not in coarse}
    if fine:
        single(ag, fine)


def _judged(view, eid: str, vnis) -> bool:
    """A whole reconcile of vnis judged endpoint eid again (or it is gone): its old verdict goes."""
    e = view.endpoints.get(eid)
    net = view.networks.get(e.network) if e is not None else None
    return net is None or net.vni in vnis


def single(ag, fine: dict) -> None:
    """Single endpoints changed: only their entries are recomputed and written
    (a VNI this node does not serve yet goes the whole way)."""
    st = ag.node.require_up(shared=True)
    new = {v for v in fine if v not in st.networks}
    if new:
        whole(ag, new)
    lf = facts(ag, st)
    patches = {v: patch(ag.view, lf, v, keys) for v, keys in fine.items() if v not in new}
    for p in patches.values():
        for eid in p.judged - p.skipped.keys():
            ag.skipped.pop(eid, None)
        for eid, why in p.skipped.items():
            if ag.skipped.get(eid) != why:
                ag.counters["bad_records"] += 1
                log.warning("endpoint %s: %s; skipped", eid, why)
            ag.skipped[eid] = why
    failed = apply_patches(ag.node, ag.remote, patches, st)
    room = ag.remote.room_made(len(st.endpoints) + len(st.gateways))
    if ag.remote.short and room:     # a full map refused entries, and room was just made (else
        whole(ag, set(ag.remote.short))  # retry()'s backoff: whole after every event was 360 ms each)
    for vni, p in patches.items():
        if p.unroutable:
            failed.setdefault(vni, f"VTEP {', '.join(sorted(p.unroutable))} not reached through the uplink")
    ag.vni_errors.update(failed)


def retry(ag, slow_s: float = 0.1) -> None:
    """VNIs served only in part (vni_errors, or entries a full map refused) are reconciled whole
    again, each on a backoff of its own (RETRY_FIRST_S, RETRY_MAX_S): a cause that
    went (a route mended, a map with room again, an uplink MTU raised) ends the error with no
    other change to the VNI. Their peers once found unroutable are asked of the kernel again
    first: that verdict is otherwise kept until the next snapshot."""
    now = time.monotonic()
    failing = set(ag.vni_errors) | set(ag.remote.short) if ag.synced.is_set() else set()
    for vni in [v for v in ag.retries if v not in failing]:
        del ag.retries[vni]                    # healed, or gone: the next failure starts at 1 s
    for vni in failing - ag.retries.keys():
        ag.retries[vni] = (RETRY_FIRST_S, now + RETRY_FIRST_S)
    due = {v for v, (_, at) in ag.retries.items() if at <= now}
    if not due:
        return
    for vni in due:                            # before the attempt: one that raises waits its turn too
        gap = ag.retries[vni][0]
        ag.retries[vni] = (min(RETRY_MAX_S, gap * 2), now + gap)
    for ip in [ip for ip, ok in ag._routed.items() if not ok]:
        del ag._routed[ip]
    with ag.lock:
        whole(ag, due)
    healed = due - set(ag.vni_errors) - set(ag.remote.short)
    for vni in healed:
        del ag.retries[vni]
    if healed:
        log.info("VNI %s served in full again", ", ".join(str(v) for v in sorted(healed)))
    if time.monotonic() - now > slow_s:
        log.warning("slow turn: retrying VNI %s took %.0f ms", ", ".join(str(v) for v in sorted(due)),
                    (time.monotonic() - now) * 1000)
