"""An endpoint add whose registration gives up on lost replies (an etcd leader's election
outlasts the retries) rolls back only a record it wrote. The id may already be another
host's: then our create was refused, its reply lost, and removing the id's record (as the
rollback did) took that host's endpoint away, its sandbox torn down by its own agent.
A real SQLite registry; the lost replies are commits that apply (or are refused) and then
raise Unavailable, as a reply lost on the way back does."""

from __future__ import annotations

import queue
import threading

import pytest

from dataplane.agent import inflight, ops
from dataplane.core.errors import NotFound
from dataplane.registry import Host, open_registry
from dataplane.registry.kv import Unavailable


class Agent:
    def __init__(self, url: str):
        self.reg = open_registry(url)
        self.me = "h1"
        self.lock = threading.RLock()
        self.q = queue.Queue()
        inflight.attach(self)


@pytest.fixture
def ag(tmp_path, monkeypatch):
    a = Agent(f"sqlite://{tmp_path}/registry.db")
    a.reg.network_create("n", 256, "10.9.0.0/24")
    for name, ip in (("h1", "198.18.0.1"), ("h2", "198.18.0.2")):
        a.reg.host_register(Host.make(name, ip), a.reg.kv.lease_grant(60))
    monkeypatch.setattr(ops, "serve", lambda agent, net: None)       # the node's side is not at issue
    monkeypatch.setattr(ops, "egress", lambda agent, net: [])
    yield a
    a.reg.close()


def replies_lost(monkeypatch, reg):
    from dataplane.registry import backoff
    monkeypatch.setattr(backoff, "LOST_WINDOW_S", 0.3)      # given up on sooner: the outcome is the same
    real = reg.kv.commit

    def commit(txn):
        real(txn)                      # applied, or refused by its compares
        raise Unavailable("registry: the reply was lost")
    monkeypatch.setattr(reg.kv, "commit", commit)


def test_a_lost_create_leaves_another_hosts_record_of_that_id(ag, monkeypatch):
    theirs = ag.reg.endpoint_create("web", "n", "h2")
    replies_lost(monkeypatch, ag.reg)
    with pytest.raises(Unavailable):
        ops.Ops(ag).endpoint_add("web", network="n")
    monkeypatch.undo()
    assert ag.reg.endpoint("web") == theirs, "h2's endpoint was removed by h1's rollback"


def test_a_lost_create_that_applied_is_taken_back(ag, monkeypatch):
    replies_lost(monkeypatch, ag.reg)
    with pytest.raises(Unavailable):
        ops.Ops(ag).endpoint_add("web", network="n")
    monkeypatch.undo()
    with pytest.raises(NotFound):
        ag.reg.endpoint("web")
    again = ag.reg.endpoint_create("web2", "n", "h1")
    assert again.ip == "10.9.0.2", "the address the lost create took was released"


def test_an_election_shorter_than_the_window_costs_no_add(ag, monkeypatch):
    """Commits refused for 1.5 s (a leader's hand-over: etcd drops proposals at once, the client
    sees Unavailable): the add goes through. It gave up after 3 retries 50-150 ms apart."""
    import time
    real, until = ag.reg.kv.commit, time.monotonic() + 1.5

    def commit(txn):
        if time.monotonic() < until:
            raise Unavailable("etcd: no leader")
        return real(txn)
    monkeypatch.setattr(ag.reg.kv, "commit", commit)
    from dataplane.agent.view import RegistryView
    from dataplane.core import state
    ag.view, ag.node = RegistryView(), None
    monkeypatch.setattr(ops.endpoints, "add", lambda node, name, vni, ip, mac, routes: state.LocalEndpoint(
        name=name, vni=vni, ip=ip, mac=mac, host_ifname="dp0000000001"))
    out = ops.Ops(ag).endpoint_add("web", network="n")
    assert out["ip"] == "10.9.0.2" and ag.reg.endpoint("web").host == "h1"
