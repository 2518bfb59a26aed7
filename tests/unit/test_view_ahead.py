"""The agent's own endpoint writes against a watch that lags and replies that are lost
(review findings). Its writes go into its view ahead of the watch (view.wrote), and events
for that endpoint older than the write are passed over: an endpoint removed on one host and
created on this one again was torn down here when the removal arrived late. A move whose
commit reply was lost keeps its sandbox when the commit applied (or may have), and a move
left unfinished here is taken back by housekeeping. A real SQLite registry and the real API
operations; only the node (veths, maps) is stood in for."""

from __future__ import annotations

import queue
import threading
from types import SimpleNamespace

import pytest

from dataplane.agent import converge, inflight, local, ops
from dataplane.agent.view import RegistryView
from dataplane.core import state
from dataplane.registry import Unavailable, backoff, open_registry
from dataplane.registry.records import Host
from dataplane.registry.store import PREFIX


class Agent:
    def __init__(self, url: str, me: str):
        self.reg, self.me = open_registry(url), me
        self.lock, self.view, self.moving, self.q = threading.RLock(), RegistryView(), set(), queue.Queue()
        inflight.attach(self)
        self.sandboxes: dict = {}
        self.node = SimpleNamespace(
            require_up=lambda shared=False: SimpleNamespace(endpoints=self.sandboxes, gateways={}))
        self.orphan_suspects, self.orphan_had, self.orphan_scan_all = set(), set(), False
        self.conflicts: dict = {}
        self.stopping, self.connected = threading.Event(), threading.Event()
        self.connected.set()

    def apply_events_after(self, rev: int, until: int) -> None:
        """What the watch delivers from rev on, applied as the main loop does."""
        w = self.reg.watch(rev + 1)
        try:
            while self.view.rev < until:
                for ev in next(w):
                    self.view.apply(ev, on_endpoint=lambda name, rec: local.endpoint_changed(self, name, rec))
        finally:
            w.close()


def stand_in_node(monkeypatch, ag: Agent) -> None:
    def add(node, name, vni, ip=None, mac=None, routes=(), **_):
        ag.sandboxes[name] = state.LocalEndpoint(name=name, vni=vni, ip=ip, mac=mac, host_ifname="dp" + name)
        return ag.sandboxes[name]

    def remove(node, name):
        ag.sandboxes.pop(name)
    fake = SimpleNamespace(add=add, remove=remove)
    monkeypatch.setattr(ops, "endpoints", fake)
    monkeypatch.setattr(local, "endpoints", fake)
    ag.converged = []                       # what a removal outside an event batch wrote again
    monkeypatch.setattr(converge, "single", lambda ag_, fine: ag.converged.append(fine))
    monkeypatch.setattr(ops, "serve", lambda ag, net: None)
    monkeypatch.setattr(ops, "egress", lambda ag, net: [])


def test_a_late_removal_does_not_tear_down_the_endpoint_created_here_since(tmp_path, monkeypatch):
    url = f"sqlite://{tmp_path}/registry.db"
    ag = Agent(url, "h1")
    stand_in_node(monkeypatch, ag)
    reg = ag.reg
    try:
        reg.network_create("n", 256, "10.9.0.0/24")
        for name, ip in (("h1", "198.18.0.1"), ("h2", "198.18.0.2")):
            reg.host_register(Host.make(name, ip), reg.kv.lease_grant(60))
        reg.endpoint_create("web", "n", "h2")
        snap = reg.snapshot()
        ag.view.load(snap)                               # h1 synced: web lives on h2
        reg.endpoint_rm("web")                           # h2 removes it (rescheduled)...
        ops.Ops(ag).endpoint_add("web", network="n")     # ...and h1 makes it, before its watch saw the removal
        made = reg.kv.get(f"{PREFIX}endpoints/web")
        assert ag.view.endpoints["web"].host == "h1"

        ag.apply_events_after(snap.rev, until=made.mod_rev)
        assert "web" in ag.sandboxes, "the late removal tore down the new sandbox"
        assert ag.view.endpoints["web"].host == "h1" and not ag.conflicts
        local.drop_orphans(ag)
        assert reg.endpoint("web").host == "h1"
        assert reg.kv.get(f"{PREFIX}endpoints/web").mod_rev == made.mod_rev, "the record was not written again"
        assert not ag.view.ahead, "the watch caught up with the write"
    finally:
        reg.close()


def test_a_snapshot_read_before_the_write_keeps_the_write(tmp_path):
    """A full read that began before the agent's own write arrives after it: the view keeps
    the write, and only the watch's copy of that write (or a later one) replaces it."""
    reg = open_registry(f"sqlite://{tmp_path}/registry.db")
    try:
        reg.network_create("n", 256, "10.9.0.0/24")
        reg.host_register(Host.make("h1", "198.18.0.1"), reg.kv.lease_grant(60))
        old = reg.snapshot()
        view = RegistryView()
        rec = reg.endpoint_create("web", "n", "h1")
        from dataplane.registry.ipam import write_rev
        view.wrote("web", rec, write_rev())
        view.load(old)
        assert view.endpoints["web"] == rec
        view.load(reg.snapshot())                         # a read that holds the write: nothing ahead
        assert view.endpoints["web"] == rec and not view.ahead
    finally:
        reg.close()


def registry_with_web_on_h2(tmp_path, monkeypatch) -> Agent:
    ag = Agent(f"sqlite://{tmp_path}/registry.db", "h1")
    stand_in_node(monkeypatch, ag)
    ag.reg.network_create("n", 256, "10.9.0.0/24")
    for name, ip in (("h1", "198.18.0.1"), ("h2", "198.18.0.2")):
        ag.reg.host_register(Host.make(name, ip), ag.reg.kv.lease_grant(60))
    ag.reg.endpoint_create("web", "n", "h2")
    ag.view.load(ag.reg.snapshot())
    return ag


def lose_the_commit_reply(monkeypatch, kv, reads_lost: int) -> None:
    """The move's commit applies, its reply is lost, and the next reads_lost reads fail too
    (a leader election, say)."""
    real_commit, real_get, left = kv.commit, kv.get, [0]

    def commit(txn):
        out = real_commit(txn)
        if any(k.endswith("/endpoints/web") and b'"host": "h1"' in v and b"moving_to" not in v
               for k, v, _ in txn.puts):                  # the commit: on h1, no mark
            left[0] = reads_lost
            raise Unavailable("etcd: the reply was lost")
        return out

    def get(k):
        if left[0]:
            left[0] -= 1
            raise Unavailable("etcd: no leader")
        return real_get(k)
    monkeypatch.setattr(kv, "commit", commit)
    monkeypatch.setattr(kv, "get", get)
    monkeypatch.setattr(backoff, "RETRY_PAUSE_S", 0.001)
    monkeypatch.setattr(backoff, "LOST_WINDOW_S", 0.3)


def test_a_move_whose_commit_reply_was_lost_keeps_its_sandbox(tmp_path, monkeypatch):
    """The commit applied: the old host removes its copy on the event, so the one here is the
    only one. It used to be torn down (and its record then dropped as an orphan)."""
    ag = registry_with_web_on_h2(tmp_path, monkeypatch)
    try:
        lose_the_commit_reply(monkeypatch, ag.reg.kv, 3)
        out = ops.Ops(ag).endpoint_move("web")
        assert out["host"] == "h1" and "web" in ag.sandboxes
        assert ag.reg.endpoint("web").host == "h1"
        local.drop_orphans(ag)
        assert ag.reg.endpoint("web").host == "h1"
    finally:
        ag.reg.close()


def test_a_move_whose_outcome_is_unknown_keeps_its_sandbox_until_it_is_known(tmp_path, monkeypatch):
    ag = registry_with_web_on_h2(tmp_path, monkeypatch)
    try:
        lose_the_commit_reply(monkeypatch, ag.reg.kv, 1000)
        with pytest.raises(Unavailable, match="whether the move committed is unknown"):
            ops.Ops(ag).endpoint_move("web")
        assert "web" in ag.sandboxes and not ag.moving
        monkeypatch.undo()                                # the registry answers again
        stand_in_node(monkeypatch, ag)
        local.settle_local_moves(ag)                      # it committed: kept
        assert "web" in ag.sandboxes and ag.reg.endpoint("web").host == "h1"
    finally:
        ag.reg.close()


def test_an_unfinished_move_here_is_taken_back(tmp_path, monkeypatch):
    """The agent restarted between making the sandbox and the commit: the record stays marked
    (moving_to this host) and nothing is bringing the move any more. Housekeeping takes it
    back and removes the copy here; the old host served it throughout."""
    ag = registry_with_web_on_h2(tmp_path, monkeypatch)
    try:
        marked = ag.reg.endpoint_move_begin("web", "h1")
        ag.view.endpoints["web"] = marked
        ag.sandboxes["web"] = state.LocalEndpoint(name="web", vni=256, ip=marked.ip, mac=marked.mac,
                                                  host_ifname="dpweb")
        ag.moving.add("web")
        local.settle_local_moves(ag)                      # a move under way is left alone
        assert "web" in ag.sandboxes and ag.reg.endpoint("web").moving_to == "h1"
        ag.moving.clear()
        local.settle_local_moves(ag)
        rec = ag.reg.endpoint("web")
        assert (rec.host, rec.moving_to) == ("h2", None) and "web" not in ag.sandboxes
    finally:
        ag.reg.close()


def test_a_snapshot_below_the_views_revision_drops_the_old_history(tmp_path, monkeypatch):
    """However the snapshot came to be read (a resync asked for while the store was being
    restored, a failed read retried), one below the view's revision is of a store gone back:
    the agent's writes held ahead of the watch and the view on disk go (before, only the
    watcher's own check marked it, and the old writes came back into the view)."""
    from dataplane.agent import cache, sync
    from dataplane.registry import Endpoint, Snapshot
    discarded = []
    monkeypatch.setattr(sync, "finish", lambda ag, rev, warm: None)
    monkeypatch.setattr(cache, "discard", lambda node: discarded.append(node))
    view = RegistryView()
    old = Endpoint.make("web", "n", "h1", "02:42:0a:01:00:05", "10.1.0.5")
    view.rev = 900
    view.wrote("web", old, 950)                      # our write of the old history, ahead of the watch
    ag = SimpleNamespace(lock=threading.RLock(), view=view, history_reset=False, view_cluster=None,
                         reg=SimpleNamespace(kv=SimpleNamespace()), _cache_rev=880, _cache_gen=0,
                         node=SimpleNamespace(name="t"), counters={"resyncs": 0, "bad_records": 0}, _sync_at=None, bad=[],
                         _routed=set(), synced=threading.Event())
    sync.apply_snapshot(ag, Snapshot(rev=40))        # the restored store
    assert "web" not in view.endpoints and not view.ahead
    assert discarded == ["t"] and ag._cache_gen == 1 and ag._cache_rev == 0
