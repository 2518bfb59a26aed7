"""`dataplane endpoint ls` through the agent made every row under the agent's lock, which holds
up registry events and punts: 570 ms at 100,000 endpoints (/tmp script). Now the lock covers
copying the view's lists; the rows are made after."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from dataplane.agent.ops import Ops
from dataplane.registry import Endpoint, Network


class Lock:
    def __init__(self):
        self.lock, self.held = threading.Lock(), False

    def __enter__(self):
        self.lock.acquire()
        self.held = True

    def __exit__(self, *exc):
        self.held = False
        self.lock.release()


def test_rows_are_made_outside_the_agent_lock(monkeypatch):
    eps = {e.id: e for e in (Endpoint.make("b", "n1", "h2", "02:00:00:00:00:02", "10.0.0.2"),
                             Endpoint.make("a", "n1", "h1", "02:00:00:00:00:01", "10.0.0.1"))}
    ag = SimpleNamespace(lock=Lock(), me="h1", view=SimpleNamespace(
        networks={"n1": Network.make("n1", 256, "10.0.0.0/24")}, endpoints=eps, hosts={"h1": None}))
    made = []
    to_dict = Endpoint.to_dict
    monkeypatch.setattr(Endpoint, "to_dict", lambda e: (made.append(ag.lock.held), to_dict(e))[1])
    rows = Ops(ag).endpoint_list()
    assert made == [False, False], "rows made under the agent's lock"
    assert [(r["id"], r["vni"], r["local"], r["alive"]) for r in rows] == [("a", 256, True, True),
                                                                         ("b", 256, False, False)]
