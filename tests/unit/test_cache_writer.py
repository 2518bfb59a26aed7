"""Writing the registry view to disk (sync.write_cache): by a forked child, so
that making the bytes never holds the agent's GIL against its main loop; a
child's failure is said and the view counts as not written; the write at stop
is the last word."""

from __future__ import annotations

import logging
import os
import threading
import time
from types import SimpleNamespace

import pytest

from dataplane.agent import cache, sync
from dataplane.agent.view import RegistryView
from dataplane.core import state
from dataplane.registry import Endpoint, Network, Snapshot


@pytest.fixture
def lib(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "LIB_ROOT", str(tmp_path))
    return tmp_path


def agent(rev: int) -> SimpleNamespace:
    net = Network.make("n1", 256, "10.0.0.0/24")
    e = Endpoint.make("web", "n1", "h2", "02:00:00:00:00:07", "10.0.0.7")
    v = RegistryView()
    v.load(Snapshot(rev=rev, networks={"n1": net}, endpoints={"web": e},
                    macs={f"n1/{e.mac}": "web"}, ipam={f"n1/{e.ip}": "web"}))
    synced = threading.Event()
    synced.set()
    return SimpleNamespace(lock=threading.RLock(), view=v, bad=[], node=SimpleNamespace(name="node1"),
                           reg=SimpleNamespace(kv=SimpleNamespace(cluster_id="c1")), synced=synced,
                           _cache_rev=0, _cache_gen=0, _cache_due=0.0, _cache_writer=None)


def dump_noting_pid(monkeypatch, where, delay: float = 0.0):
    """cache.dump, writing the pid of the process that runs it to where (after delay)."""
    real = cache.dump

    def dump(*a):
        time.sleep(delay)
        where.write_text(str(os.getpid()))
        return real(*a)
    monkeypatch.setattr(cache, "dump", dump)


def test_the_view_is_made_and_written_by_another_process(lib, monkeypatch, tmp_path):
    dump_noting_pid(monkeypatch, tmp_path / "pid")
    ag = agent(40)
    sync.write_cache(ag)
    ag._cache_writer.join(10)
    assert int((tmp_path / "pid").read_text()) != os.getpid()
    snap = cache.load("node1", "c1", before_rev=41)
    assert snap is not None and snap.rev == 40 and set(snap.endpoints) == {"web"}
    assert ag._cache_rev == 40


def test_a_failed_write_is_said_and_the_view_counts_as_not_written(lib, monkeypatch, caplog):
    def save(node, data):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(cache, "save", save)
    ag = agent(40)
    with caplog.at_level(logging.WARNING, logger="dataplane.agent"):
        sync.write_cache(ag)
        ag._cache_writer.join(10)
    assert "No space left on device" in caplog.text
    assert ag._cache_rev == 0 and cache.load("node1", "c1", before_rev=41) is None


def test_the_write_at_stop_comes_after_one_under_way(lib, monkeypatch, tmp_path):
    """A child still writing revision 40 when the agent stops at 41: the file ends at 41."""
    dump_noting_pid(monkeypatch, tmp_path / "pid", delay=0.5)
    ag = agent(40)
    sync.write_cache(ag)
    with ag.lock:
        ag.view.rev = 41
    sync.write_cache(ag, now=True)
    time.sleep(1.0)                                  # past the child's end, had it not been waited for
    snap = cache.load("node1", "c1", before_rev=42)
    assert snap is not None and snap.rev == 41 and ag._cache_rev == 41


def test_a_write_is_not_started_while_the_last_is_under_way(lib, monkeypatch, tmp_path):
    dump_noting_pid(monkeypatch, tmp_path / "pid", delay=0.5)
    ag = agent(40)
    sync.write_cache(ag)
    first = ag._cache_writer
    with ag.lock:
        ag.view.rev = 41
    sync.write_cache(ag)
    assert ag._cache_writer is first
    first.join(10)
    assert ag._cache_rev == 40


def test_a_child_that_hangs_is_stopped_and_leaves_nothing(lib, monkeypatch):
    def save(node, data):                           # stuck in the middle of its write
        os.makedirs(os.path.dirname(cache.path(node)), exist_ok=True)
        with open(f"{cache.path(node)}.{os.getpid()}.tmp", "wb") as f:
            f.write(data[:100])
        time.sleep(30)
    monkeypatch.setattr(cache, "save", save)
    ag = agent(40)
    pid, rd = cache.fork_save("node1", ag.view, "c1", [])
    with pytest.raises(OSError, match="stopped"):
        cache.wait_saved("node1", pid, rd, timeout=0.5)
    assert os.listdir(os.path.dirname(cache.path("node1"))) == []


def test_the_child_holds_none_of_the_agents_descriptors(lib, monkeypatch, tmp_path):
    """The agent's lock file (flock'd) must not outlive the agent in a child still writing."""
    held = os.open(tmp_path / "agent.lock", os.O_CREAT | os.O_RDWR)
    real = cache.dump

    def dump(*a):
        (tmp_path / "fds").write_text(" ".join(os.listdir("/proc/self/fd")))
        return real(*a)
    monkeypatch.setattr(cache, "dump", dump)
    try:
        ag = agent(40)
        cache.wait_saved("node1", *cache.fork_save("node1", ag.view, "c1", []))
        fds = {int(x) for x in (tmp_path / "fds").read_text().split()}
        assert held not in fds and len(fds) <= 2, fds      # the pipe's end, and listdir's own
    finally:
        os.close(held)
