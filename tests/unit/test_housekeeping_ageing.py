"""Housekeeping ages learned entries without the agent's lock: a pass over a full
dp_learned is a few to 25 ms, which an endpoint's add (it takes the lock) need not wait
for; the rest of the tick keeps the lock. (The pass itself: tests/bpf/test_learned_ageing.py.)"""

from __future__ import annotations

import threading
from types import SimpleNamespace

from dataplane.agent import housekeeping


def test_ageing_runs_without_the_agents_lock(monkeypatch):
    ag = SimpleNamespace(lock=threading.RLock(), synced=threading.Event(), connected=threading.Event(),
                         counters={"aged": 0}, maps=object(), sweeper=None)
    ag.node = SimpleNamespace(state=lambda: SimpleNamespace(config=SimpleNamespace(fdb_age_s=300), gateways={}))
    held: list[bool] = []

    def age(maps, age_ns, now_ns):
        assert maps is ag.maps and age_ns == 300 * 10**9
        got = []
        t = threading.Thread(target=lambda: got.append(ag.lock.acquire(timeout=1) and (ag.lock.release() or True)))
        t.start()
        t.join()
        held.append(not got[0])
        return 3
    monkeypatch.setattr(housekeeping, "age_learned", age)
    monkeypatch.setattr(housekeeping, "vanished", lambda node: [])
    monkeypatch.setattr(housekeeping.networks, "prune_parted", lambda node: None)
    monkeypatch.setattr(housekeeping.monitor, "clear_if_abandoned", lambda node: None)
    monkeypatch.setattr(housekeeping.rxgro, "intact", lambda node, st, maps: True)
    monkeypatch.setattr(housekeeping.rxgro, "freed", lambda node, st: False)
    monkeypatch.setattr(housekeeping.pauses, "tick", lambda: None)
    monkeypatch.setattr(housekeeping, "_mend_vxlan_guard", lambda ag, st: None)
    monkeypatch.setattr(housekeeping, "_prune_nexthops", lambda ag, st: None)
    housekeeping.tick(ag)
    assert held == [False], "learned entries were aged under the agent's lock"
    assert ag.counters["aged"] == 3
