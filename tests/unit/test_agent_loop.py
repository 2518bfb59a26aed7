"""The agent's main loop applies registry messages strictly in the order the
watcher queued them: a snapshot between two event batches is never overtaken
by the later batch (which would lose that batch's changes for good)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from dataplane.agent import main as agent_main
from dataplane.core.errors import KernelError
from dataplane.registry.kv import Event


@pytest.fixture
def agent(tmp_path, monkeypatch):
    ag = agent_main.Agent(SimpleNamespace(name="t", netns=None), f"sqlite://{tmp_path}/reg.db", "h1")
    cfg = SimpleNamespace(config=SimpleNamespace(fdb_age_s=300))
    ag.node = SimpleNamespace(name="t", netns=None, require_up=lambda shared=False: cfg, state=lambda: cfg)
    monkeypatch.setattr(agent_main.vtep, "set_punt_until", lambda m, until: None)
    applied = []
    ag._apply_snapshot = lambda snap: applied.append(("snapshot", snap.rev))
    ag._apply_events = lambda evs: applied.append(("events", [e.rev for e in evs]))
    ag._age = lambda: None
    ag.remote = SimpleNamespace(short=set())     # as after run() opened the maps
    ag.applied = applied
    yield ag
    ag.reg.close()


def ev(rev: int) -> Event:
    return Event(key="/dataplane/endpoints/x", value=None, rev=rev)


def run_until(ag, n: int, within: float = 2.0) -> list:
    """Run the loop until n messages were applied (or within seconds passed)."""
    def watch():
        for _ in range(int(within * 100)):
            if len(ag.applied) >= n:
                break
            threading.Event().wait(0.01)
        ag.stop()
    t = threading.Thread(target=watch)
    t.start()
    ag._main_loop()
    t.join()
    return ag.applied


def test_a_snapshot_between_event_batches_keeps_its_place(agent):
    agent.q.put(("snapshot", SimpleNamespace(rev=5)))
    agent.q.put(("events", [ev(10)]))
    agent.q.put(("snapshot", SimpleNamespace(rev=20)))
    agent.q.put(("events", [ev(21)]))
    applied = run_until(agent, 4)
    assert applied == [("snapshot", 5), ("events", [10]), ("snapshot", 20), ("events", [21])]


def test_consecutive_event_batches_are_applied_as_one(agent):
    agent.q.put(("snapshot", SimpleNamespace(rev=5)))
    for r in (6, 7, 8):
        agent.q.put(("events", [ev(r)]))
    agent.punts.backlog.append("a punt")          # what the reader thread offered
    agent.q.put(("punts", None))
    agent.q.put(("events", [ev(9)]))
    agent.punts.handle = lambda batch: agent.applied.append(("punts", len(batch)))
    applied = run_until(agent, 4)
    assert applied == [("snapshot", 5), ("events", [6, 7, 8]), ("punts", 1), ("events", [9])]


def test_an_event_the_snapshot_already_holds_changes_nothing():
    """A replayed event older than the snapshot must not roll the view back."""
    import json

    from dataplane.agent.view import RegistryView
    from dataplane.registry import Endpoint, Network, Snapshot
    from dataplane.registry.store import key
    net = Network.make("n", 300)
    new = Endpoint.make("e", "n", "h2", "02:42:0a:01:2c:05", "10.1.44.5")
    view = RegistryView()
    view.load(Snapshot(rev=20, networks={"n": net}, endpoints={"e": new}))
    old = json.dumps({**new.to_dict(), "host": "h1"}).encode()
    assert view.apply(Event(key=key("endpoints", "e"), value=old, rev=15)) == set()
    assert view.endpoints["e"].host == "h2" and view.rev == 20
    assert view.apply(Event(key=key("endpoints", "e"), value=old, rev=21)) == {300}
    assert view.endpoints["e"].host == "h1" and view.rev == 21


def test_a_failing_housekeeping_tick_or_heartbeat_does_not_end_the_agent(agent, monkeypatch):
    """Housekeeping and the punt heartbeat ran outside the loop's error handling: one
    DataplaneError there (a map that could not be read, an interface gone mid-tick) ended the
    agent, and with it the node's registry updates, until a supervisor restarted it."""
    cfg = SimpleNamespace(config=SimpleNamespace(fdb_age_s=4))       # a tick every second
    agent.node = SimpleNamespace(name="t", netns=None, require_up=lambda shared=False: cfg, state=lambda: cfg)
    ticks = []

    def tick(ag, slow_s=0.1):
        ticks.append(1)
        raise KernelError("dp_learned: pinned map not found")
    monkeypatch.setattr(agent_main.housekeeping, "tick", tick)

    def beat(m, until):
        raise KernelError("dp_agent: pinned map not found")
    monkeypatch.setattr(agent_main.vtep, "set_punt_until", beat)
    agent.synced.set()
    threading.Timer(1.5, lambda: agent.q.put(("events", [ev(7)]))).start()
    assert run_until(agent, 1, within=4.0) == [("events", [7])]
    assert ticks
    assert agent.counters["errors"] >= 2


def test_a_defect_in_handling_a_message_resyncs_instead_of_ending_the_agent(agent):
    """An exception that is no DataplaneError (a defect of ours, met on some record) ended the
    main loop and the agent with it: a node run without systemd got no registry update again,
    and a supervised one restarted from a view on disk the defect may have spoiled. Now: its
    traceback in the log, an error counted, the next watch from a full snapshot (once a minute
    at most), and the loop goes on."""
    applied = agent.applied

    def apply(evs):
        if not applied:
            applied.append("failed")
            raise KeyError("network")
        applied.append(("events", [e.rev for e in evs]))
    agent._apply_events = apply
    agent.q.put(("events", [ev(5)]))
    agent.q.put(("snapshot", SimpleNamespace(rev=9)))
    agent.q.put(("events", [ev(10)]))
    assert run_until(agent, 3) == ["failed", ("snapshot", 9), ("events", [10])]
    assert agent.counters["errors"] == 1 and agent.want_snapshot.is_set()
    agent.want_snapshot.clear()
    agent.resync()
    assert not agent.want_snapshot.is_set(), "not again within the minute"


def test_a_resync_asked_for_too_soon_is_made_when_due(agent):
    """A batch that failed within a minute of the last resync left its later events unapplied,
    and the resync it asked for was dropped: the view stayed wrong until some later fault. Now
    it is owed, and the main loop makes it once the minute is up."""
    agent.resync()
    assert agent.want_snapshot.is_set()
    agent.want_snapshot.clear()

    def apply(evs):
        agent.applied.append(("events", [e.rev for e in evs]))
        if len(agent.applied) == 1:
            raise KernelError("dp_learned: cannot read")
    agent._apply_events = apply
    agent.q.put(("events", [ev(5)]))
    run_until(agent, 1)
    assert not agent.want_snapshot.is_set() and agent.resync_owed, "not within the minute, but owed"
    agent.stopping.clear()
    agent._resynced -= agent_main.RESYNC_EVERY_S            # the minute is up
    agent.q.put(("events", [ev(6)]))
    run_until(agent, 2)
    assert agent.want_snapshot.is_set() and not agent.resync_owed
