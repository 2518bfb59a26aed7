"""`agent status` answers while a long turn of the main loop holds the agent's lock (its own
registry calls during an outage: seconds per etcd member), saying it read without the lock;
before, the command hung until the turn ended or the client gave up after 60 s."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from dataplane.agent import ops
from tests.unit.held import held_elsewhere


def fake_agent():
    view = SimpleNamespace(rev=7, claims_pending=False, networks={}, hosts={"h1": 1}, endpoints={})
    return SimpleNamespace(
        me="h1", url="etcd://x", lock=threading.RLock(), synced=threading.Event(), connected=threading.Event(),
        view=view, watch_lag_s=lambda: None, watch_member=lambda: None, watch_transport=lambda: None,
        reg=SimpleNamespace(kv=SimpleNamespace(transport_counts=lambda: {})),
        leases=SimpleNamespace(lease=5, live=True), ttl=10,
        remote=SimpleNamespace(counts=lambda: {"fdb": 0, "neigh": 0, "map_full": 0}, last_error=None),
        last_sync_s=0.0, last_snapshot_s=0.0, last_claims_s=0.0, warm_start=False, counters={"events": 1},
        vni_errors={}, skipped={}, conflicts={}, busy=set(), bad=[], punts=SimpleNamespace(counts={}),
        node=SimpleNamespace(require_up=lambda shared=False: None))


def test_status_answers_while_the_lock_is_held(monkeypatch):
    monkeypatch.setattr(ops.networks, "over_limit", lambda st: [])
    monkeypatch.setattr(ops, "STATUS_LOCK_WAIT_S", 0.2)
    ag = fake_agent()
    o = ops.Ops(ag)
    st = o.status()
    assert st["busy"] is False and st["revision"] == 7 and st["lease_live"] is True
    with held_elsewhere(ag.lock):
        t0 = time.monotonic()
        st = o.status()
        assert time.monotonic() - t0 < 2 and st["busy"] is True and st["revision"] == 7
