"""An endpoint operation's registry calls are made without the agent's lock (inflight.py):
the main loop goes on while one waits on the registry, leaves the endpoint it works on
alone between its steps, and looks at it again once it ends. The registry is a real
SQLite one; its endpoint write is held at a chosen point to stand for a slow etcd."""

from __future__ import annotations

import contextlib
import dataclasses
import threading

from dataplane.agent import inflight, local, ops
from dataplane.registry.records import Host
from dataplane.registry.store import PREFIX
from tests.unit.test_view_ahead import Agent, stand_in_node


def agent(tmp_path, monkeypatch) -> Agent:
    ag = Agent(f"sqlite://{tmp_path}/registry.db", "h1")
    stand_in_node(monkeypatch, ag)
    ag.synced = threading.Event()
    ag.synced.set()
    ag.reg.network_create("n", 256, "10.9.0.0/24")
    for name, ip in (("h1", "198.18.0.1"), ("h2", "198.18.0.2")):
        ag.reg.host_register(Host.make(name, ip), ag.reg.kv.lease_grant(60))
    ag.view.load(ag.reg.snapshot())
    return ag


@contextlib.contextmanager
def add_held(ag, monkeypatch, eid: str, after: bool):
    """endpoint_add(eid) in another thread, its registry endpoint_create stopped (before or
    after its write) for the length of the with-block; yields the list its result goes into."""
    there, go, real = threading.Event(), threading.Event(), ag.reg.endpoint_create

    def create(*a, **kw):
        out = real(*a, **kw) if after else None
        there.set()
        assert go.wait(20)
        return out if after else real(*a, **kw)
    monkeypatch.setattr(ag.reg, "endpoint_create", create)
    out: list = []
    t = threading.Thread(target=lambda: out.append(ops.Ops(ag).endpoint_add(eid, network="n")))
    t.start()
    try:
        assert there.wait(5)
        yield out
    finally:
        go.set()
        t.join(10)


def test_the_agents_lock_is_free_while_an_endpoint_add_waits_on_the_registry(tmp_path, monkeypatch):
    """Before, endpoint_add held the lock across its registry calls: during an outage (seconds
    per member, three members, then the roll-back) registry events, punts, the fast path's
    heartbeat and ageing all waited behind it."""
    ag = agent(tmp_path, monkeypatch)
    with add_held(ag, monkeypatch, "web", after=False) as out:
        got = ag.lock.acquire(timeout=1)
        if got:
            ag.lock.release()
        assert got, "the main loop would wait on the registry call"
    assert out and out[0]["host"] == "h1" and "web" in ag.sandboxes
    assert ag.q.get_nowait() == ("recheck", "web")


def test_a_record_with_its_sandbox_still_to_come_is_not_an_orphan(tmp_path, monkeypatch):
    """Registered, the sandbox not made yet: the watch brings the record, and the orphan sweep
    (a record of ours with no sandbox here) must leave it to the operation."""
    ag = agent(tmp_path, monkeypatch)
    rev0 = ag.view.rev
    with add_held(ag, monkeypatch, "web", after=True) as out:
        made = ag.reg.kv.get(f"{PREFIX}endpoints/web")
        with ag.lock:
            ag.apply_events_after(rev0, until=made.mod_rev)
            ag.orphan_scan_all = True
            local.drop_orphans(ag)
        assert ag.reg.kv.get(f"{PREFIX}endpoints/web") is not None, "removed as an orphan mid-operation"
    assert out and "web" in ag.sandboxes and ag.reg.endpoint("web").host == "h1"


def test_what_the_watch_brought_meanwhile_is_applied_when_the_operation_ends(tmp_path, monkeypatch):
    """Another writer removed the record while our add was between its steps: the event was
    passed over then, and the recheck at the end removes the sandbox the registry no longer has."""
    ag = agent(tmp_path, monkeypatch)
    rev0 = ag.view.rev
    with add_held(ag, monkeypatch, "web", after=True) as out:
        ag.reg.endpoint_rm("web")                       # another writer
        gone = ag.reg.kv.range_exact(f"{PREFIX}endpoints/web")[0]
        with ag.lock:
            ag.apply_events_after(rev0, until=gone)
        assert "web" not in ag.view.endpoints
    assert out and "web" in ag.sandboxes                # made from our write, which the view had passed
    assert "web" not in ag.view.endpoints, "our older write was put over the later removal"
    msg = ag.q.get_nowait()
    assert msg == ("recheck", "web")
    with ag.lock:
        local.recheck(ag, msg[1])
    assert "web" not in ag.sandboxes, "a sandbox the registry no longer has was kept"


def test_concurrent_adds_on_one_network_take_turns_at_allocating(tmp_path, monkeypatch):
    """Without the agent's lock, creates on one network ran at once: each compares the
    network's fence key and picks the next free address from one cache, so all but one
    retried, over and over (a burst of pods). They take turns (ops.register_endpoint): one commit each."""
    ag = agent(tmp_path, monkeypatch)
    commits, real = [], ag.reg.kv.commit

    def commit(txn):
        commits.append(1)
        return real(txn)
    monkeypatch.setattr(ag.reg.kv, "commit", commit)
    out: list = []
    threads = [threading.Thread(target=lambda i=i: out.append(ops.Ops(ag).endpoint_add(f"p{i}", network="n")))
               for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(out) == 12 and len({e["ip"] for e in out}) == 12
    assert len(commits) == 12, f"{len(commits) - 12} creates retried"


def test_the_network_is_served_again_after_the_write(tmp_path, monkeypatch):
    """A whole reconcile during the registry write may let the VNI go (no local endpoint yet,
    the view without the network): the sandbox is made only after serving it again."""
    ag = agent(tmp_path, monkeypatch)
    steps, real = [], ag.reg.endpoint_create
    monkeypatch.setattr(ops, "serve", lambda ag, net: steps.append("serve"))

    def create(*a, **kw):
        steps.append("write")
        return real(*a, **kw)
    monkeypatch.setattr(ag.reg, "endpoint_create", create)
    ops.Ops(ag).endpoint_add("web", network="n")
    assert steps == ["serve", "write", "serve"]


def test_an_allocation_on_one_network_does_not_wait_for_one_on_another(tmp_path, monkeypatch):
    """Address allocations take turns per network (a shared fence key), not across all of them:
    before, one lock held every endpoint add, reservation and runtime network call of the agent,
    so during an outage each waited out the one before it on any network."""
    ag = agent(tmp_path, monkeypatch)
    ag.reg.network_create("m", 257, "10.8.0.0/24")
    ag.view.load(ag.reg.snapshot())
    there, go, real = threading.Event(), threading.Event(), ag.reg.endpoint_create

    def create(id, *a, **kw):
        if id == "web":
            there.set()
            assert go.wait(20)
        return real(id, *a, **kw)
    monkeypatch.setattr(ag.reg, "endpoint_create", create)
    out: list = []
    held = threading.Thread(target=lambda: out.append(ops.Ops(ag).endpoint_add("web", network="n")))
    other = threading.Thread(target=lambda: out.append(ops.Ops(ag).endpoint_add("db", network="m")))
    try:
        held.start()
        assert there.wait(5)
        other.start()
        other.join(5)
        assert not other.is_alive(), "the add on network m waited for the one on n"
        assert [r["name"] for r in out] == ["db"]
    finally:
        go.set()
        held.join(10)
        other.join(10)
    assert sorted(r["name"] for r in out) == ["db", "web"]


def test_a_sandbox_a_recheck_removes_gets_its_new_hosts_entries(tmp_path, monkeypatch):
    """Found by the model check (seed 137293670): h2 moved an endpoint away from h1 while an
    operation of h1's held it; the move's event was reconciled with the sandbox still here (no
    remote entry for a local MAC), the recheck then removed the sandbox, and nothing wrote the
    entry for h2 nor put h2 in the flood list."""
    ag = agent(tmp_path, monkeypatch)
    ops.Ops(ag).endpoint_add("web", network="n")
    ep = ag.sandboxes["web"]
    with ag.lock:                                   # the view has it moved to h2 (the event came)
        ag.view.endpoints["web"] = dataclasses.replace(ag.view.endpoints["web"], host="h2")
        ag.converged.clear()
        local.recheck(ag, "web")
    assert "web" not in ag.sandboxes
    assert ag.converged == [{256: {("ep", "web"), ("mac", ep.mac), ("ip", ep.ip)}}]


def test_a_network_release_waits_for_an_allocation_on_that_network(tmp_path, monkeypatch):
    """A reservation is no endpoint (no fence compare sees it): a release that checked "unused"
    while a reservation of ours on that network was being made would remove the network under
    it. Since allocations take turns per network, the release takes that network's lock too."""
    from dataplane.agent.runtime_ops import RuntimeOps
    ag = agent(tmp_path, monkeypatch)
    out: list = []
    lock = inflight.network_lock(ag, "n")
    with lock:                                     # an allocation on n under way
        t = threading.Thread(target=lambda: out.append(RuntimeOps(ag).network_release(256)))
        t.start()
        t.join(1)
        assert t.is_alive() and not out, "the release went ahead of the allocation on its network"
    t.join(10)
    assert out == [{"vni": 256, "removed": True, "network": "n"}]


def test_a_runtime_detach_of_a_sandbox_whose_record_went_elsewhere_writes_its_entries(tmp_path, monkeypatch):
    """Another writer gave the record to h2 while the runtime's sandbox was here (a conflict:
    its entries for h2 were left out). The runtime's detach removes the sandbox: the entries
    the view gives that MAC and address now are written then."""
    from dataplane.agent import runtime_ops
    ag = agent(tmp_path, monkeypatch)
    monkeypatch.setattr(runtime_ops, "endpoints", ops.endpoints)      # the stand-in node
    ops.Ops(ag).endpoint_add("web", network="n")
    ep = ag.sandboxes["web"]
    ag.reg.endpoint_rm("web")
    ag.reg.endpoint_create("web", "n", "h2", ep.ip, ep.mac)
    ag.converged.clear()
    out = runtime_ops.RuntimeOps(ag).endpoint_detach("web")
    assert out["registry"].startswith("record left") and "web" not in ag.sandboxes
    assert ag.converged == [{256: {("ep", "web"), ("mac", ep.mac), ("ip", ep.ip)}}]
