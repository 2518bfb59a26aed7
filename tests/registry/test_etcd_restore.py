"""etcd restored from a backup under a running agent's watcher: a real member whose data
directory is put back to an earlier copy (its revision goes back; same cluster, so nothing
else tells). The watcher must read the registry whole again, not resume its watch at a
revision the store has not reached (etcd takes such a start without a word and sends
nothing until it gets there: the agent's view would stay the old history's)."""

from __future__ import annotations

import queue
import shutil
import threading
from types import SimpleNamespace

import pytest

from dataplane.agent import pauses, sync, watcher
from dataplane.registry import open_registry
from dataplane.registry.backoff import Backoff
from tests.conftest import IN_CI
from tests.registry.conftest import free_port


@pytest.fixture
def member(tmp_path):
    from lab import etcd as etcd_server
    if not shutil.which("etcd"):
        if IN_CI:
            pytest.fail("CI=true but etcd is not installed", pytrace=False)
        pytest.skip("etcd not installed")
    m = SimpleNamespace(data=str(tmp_path / "data"), port=free_port(), peer=free_port(), pid=None)

    def start():
        m.pid = etcd_server.start(m.data, port=m.port, peer_port=m.peer, log_path=str(tmp_path / "etcd.log"))

    def stop():
        etcd_server.stop(m.pid)
        m.pid = None
    m.start, m.stop = start, stop
    start()
    try:
        yield m
    finally:
        if m.pid:
            stop()


def test_a_restored_store_is_read_whole(member, tmp_path, monkeypatch):
    url = f"etcd://127.0.0.1:{member.port}"
    reg = open_registry(url, watch_deadline_s=2.0)
    reg.network_create("before", 300)
    member.stop()
    shutil.copytree(member.data, tmp_path / "backup")         # the operator's backup
    member.start()
    reg.kv.range_exact("/")
    ag = SimpleNamespace(me="h1", reg=reg, stopping=threading.Event(), registered=threading.Event(),
                         want_snapshot=threading.Event(), connected=threading.Event(), q=queue.Queue(),
                         counters={"reconnects": 0}, _watch=None, _last_watch=None, view_cluster=None,
                         history_reset=False)
    ag.registered.set()
    head = reg.kv.range_exact("/")[0]
    monkeypatch.setattr(sync, "early_snapshot", lambda ag: None)
    monkeypatch.setattr(sync, "start_point", lambda ag, early: head + 1)
    monkeypatch.setattr(Backoff, "wait", lambda self, stopping: stopping.wait(0.1))
    t = threading.Thread(target=watcher.run, args=(ag,), daemon=True)
    t.start()
    try:
        assert ag.connected.wait(10)
        for i in range(5):
            reg.network_create(f"after{i}", 301 + i)
        seen = []
        while len(seen) < 5:
            kind, data = ag.q.get(timeout=10)
            seen += data if kind == "events" else []
        newest = max(e.rev for e in seen)
        member.stop()
        shutil.rmtree(member.data)
        shutil.copytree(tmp_path / "backup", member.data)    # restored
        member.start()
        while True:
            kind, data = ag.q.get(timeout=20)                   # Empty: the watch resumed and waits for ever
            if kind == "snapshot":
                break
        assert data.rev < newest and set(data.networks) == {"before"}
        assert ag.history_reset, "the agent's own writes of the old history are to go"
    finally:
        ag.stopping.set()
        if ag._watch:
            ag._watch.close()
        t.join(10)
        reg.close()
        pauses.release()      # the snapshot read held collection off until a sync no main loop made here
