"""The etcd watch stays honest: progress requests keep an idle watch heard
from, a stopped (SIGSTOP) member ends it with Unavailable within the deadline,
a resume at a compacted revision raises Compacted; the backoff helper; and
the watch's last_rev / lag on both backends. Real etcd only."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from dataplane.registry import parse_url
from dataplane.registry.backoff import Backoff
from dataplane.registry.kv import Compacted, Txn, Unavailable
from dataplane.registry.store import PREFIX
from tests.registry.conftest import watching
from tests.registry.etcdproc import cluster, free_port, require_etcd, stop_member


class Drain:
    """Iterates a watch in a thread (a stuck watch cannot hang the test)."""

    def __init__(self, watch):
        self.watch, self.events, self.error, self.ended_at = watch, [], None, None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for batch in self.watch:
                self.events.extend(batch)
        except Exception as e:  # noqa: BLE001 - the test looks at it
            self.error = e
        self.ended_at = time.monotonic()

    def wait_for(self, n: int, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.events) < n and time.monotonic() < deadline and self.thread.is_alive():
            time.sleep(0.02)
        return self.events

    def stop(self):
        self.watch.close()
        self.thread.join(5)


@pytest.fixture
def lone_etcd(tmp_path):
    """A single etcd of our own (lab.etcd), so a test may SIGSTOP it; always stopped."""
    from lab import etcd as etcd_server
    require_etcd()
    port = free_port()
    pid = etcd_server.start(str(tmp_path / "data"), port=port, peer_port=free_port(), log_path=str(tmp_path / "log"))
    try:
        yield pid, ("127.0.0.1", port)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        etcd_server.stop(pid)


def test_stopped_member_ends_the_watch_within_the_deadline(lone_etcd, transport):
    from dataplane.registry.kv_etcd import EtcdKV
    pid, ep = lone_etcd
    kv = watching(EtcdKV([ep], timeout=1.0, watch_deadline_s=1.5, progress_interval_s=0.3, probe_interval_s=0),
                  transport)
    writer = EtcdKV([ep])     # the writes before the stop wait as long as they need (a loaded CI took over 1 s once)
    rev, _ = kv.range("/t/")
    d = Drain(kv.watch("/t/", rev + 1))
    try:
        assert d.watch.transport == transport
        time.sleep(1.2)   # idle: only the answers to progress requests are heard
        assert d.thread.is_alive() and d.error is None
        assert d.watch.lag_s() < 1.0, "progress requests are not answered"     # (unanswered: 1.2)
        assert d.watch.head_rev == rev and d.watch.last_rev == rev
        _, other = writer.commit(Txn().put("/elsewhere/x", b"1"))      # the store moves on, not the watched keys
        deadline = time.monotonic() + 2
        while d.watch.head_rev < other and time.monotonic() < deadline:
            time.sleep(0.05)
        # an answer to a progress request says the store's revision: head_rev, never last_rev (etcd#15220)
        assert d.watch.head_rev == other and d.watch.last_rev == rev and d.events == []
        _, r = writer.commit(Txn().put("/t/a", b"1"))
        assert [e.key for e in d.wait_for(1)] == ["/t/a"] and d.watch.last_rev == r
        stop_member(pid)   # the connection stays open, and silent
        stopped = time.monotonic()
        d.thread.join(5)
        assert not d.thread.is_alive(), "the watch on a stopped member never ended"
        assert isinstance(d.error, Unavailable) and "heard nothing" in str(d.error)
        assert d.ended_at - stopped <= 1.5 + 0.5
        t0 = time.monotonic()
        with pytest.raises(Unavailable):   # a new watch cannot even finish its handshake
            kv.watch("/t/", d.watch.resume_rev())
        if transport == "grpc":            # nor over gRPC, which then tried the gateway: two timeouts at most
            from dataplane.registry.etcd_grpc import GrpcUnavailable
            from dataplane.registry.etcd_watch_grpc import GrpcWatch
            assert time.monotonic() - t0 < 2 * (1.0 + 1.0) + 0.5
            with pytest.raises(GrpcUnavailable, match="no answer to the watch's creation"):
                GrpcWatch(kv, "/t/", d.watch.resume_rev())
    finally:
        os.kill(pid, signal.SIGCONT)
        d.stop()
        kv.close()
        writer.close()


def test_server_progress_notifications_advance_last_rev(tmp_path, transport):
    """With the server's own notifications on, an idle watch's last_rev follows the store."""
    from dataplane.registry.kv_etcd import EtcdKV
    with cluster(tmp_path, size=1, extra=["--experimental-watch-progress-notify-interval", "200ms"]) as ms:
        kv = watching(EtcdKV([ms[0].endpoint], watch_deadline_s=3.0), transport)
        rev, _ = kv.range("/idle/")
        d = Drain(kv.watch("/idle/", rev + 1))
        try:
            assert d.watch.transport == transport
            _, after = kv.commit(Txn().put("/other/x", b"1"))
            deadline = time.monotonic() + 5
            while d.watch.last_rev < after and time.monotonic() < deadline:
                time.sleep(0.05)
            assert d.watch.last_rev == after and d.events == [] and d.error is None
        finally:
            d.stop()
            kv.close()


def test_resume_at_a_compacted_revision_raises_compacted(etcd_url, transport):
    from dataplane.registry.kv_etcd import EtcdKV
    kv = watching(EtcdKV(parse_url(etcd_url)[1]), transport)
    try:
        first = kv.commit(Txn().put("/compact/a", b"1"))[1]
        now = kv.commit(Txn().put("/compact/b", b"2"))[1]
        kv._post("/kv/compaction", {"revision": str(now), "physical": True})
        w = kv.watch("/compact/", first)
        assert w.transport == transport
        with pytest.raises(Compacted, match=str(now)):
            next(w)
        w.close()
        w = kv.watch("/compact/", now + 1)   # just after the compaction: fine
        kv.commit(Txn().put("/compact/c", b"3"))
        assert [e.key for e in next(w)] == ["/compact/c"]
        w.close()
    finally:
        kv.close()


def test_a_watch_that_fell_back_to_the_gateway_goes_back_to_grpc(etcd_url, monkeypatch):
    """gRPC failing when a watch is made: the gateway's watch, which ends (Unavailable)
    after GATEWAY_FALLBACK_S; resumed from its last_rev, over gRPC, nothing lost."""
    from dataplane.registry import kv_etcd
    from dataplane.registry.etcd_grpc import GrpcUnavailable
    kv = watching(kv_etcd.EtcdKV(parse_url(etcd_url)[1]), "grpc")
    monkeypatch.setattr(kv_etcd, "GATEWAY_FALLBACK_S", 1.0)
    try:
        rev, _ = kv.range("/fb/")

        def refuse(*args):
            raise GrpcUnavailable("refused by the test")
        monkeypatch.setattr(kv._grpc, "watch", refuse)
        d = Drain(kv.watch("/fb/", rev + 1))
        assert d.watch.transport == "gateway"
        monkeypatch.undo()
        _, r1 = kv.commit(Txn().put("/fb/a", b"1"))
        d.thread.join(3)
        assert isinstance(d.error, Unavailable) and "resumed over gRPC" in str(d.error)
        assert [e.rev for e in d.events] == [r1] and d.watch.resume_rev() == r1 + 1
        _, r2 = kv.commit(Txn().put("/fb/b", b"2"))
        again = Drain(kv.watch("/fb/", d.watch.resume_rev()))
        assert again.watch.transport == "grpc"
        assert [e.rev for e in again.wait_for(1)] == [r2]
        again.stop()
    finally:
        kv.close()


def test_watch_reports_last_rev_and_lag(reg):
    """Both backends: last_rev follows the events delivered; resume_rev() continues the watch."""
    rev, _ = reg.kv.range(PREFIX)
    w = reg.watch(rev + 1)
    assert w.last_rev == rev and w.resume_rev() == rev + 1 and 0 <= w.lag_s() < 5
    _, r1 = reg.kv.commit(Txn().put(PREFIX + "x/1", b"1"))
    _, r2 = reg.kv.commit(Txn().put(PREFIX + "x/2", b"2"))
    got = []
    while len(got) < 2:
        got += next(iter(w))
    assert [e.rev for e in got] == [r1, r2] and w.last_rev == r2 and w.lag_s() < 1
    w.close()
    _, r3 = reg.kv.commit(Txn().delete(PREFIX + "x/1"))
    w2 = reg.watch(w.resume_rev())
    assert [(e.key, e.value, e.rev) for e in next(iter(w2))] == [(PREFIX + "x/1", None, r3)]
    w2.close()


def test_backoff_is_bounded_grows_and_jitters():
    rng = random.Random(7)
    b = Backoff(base=0.2, cap=5.0, rng=rng)
    ceilings, waits = [], []
    for _ in range(12):
        ceilings.append(b.ceiling())
        waits.append(b.next())
    assert ceilings[:6] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0]) and max(ceilings) == 5.0
    assert all(0 <= w <= c for w, c in zip(waits, ceilings))
    assert len(set(waits)) == len(waits)   # jitter: no two alike
    # the waits grow: the mean of many agents' n-th wait follows the ceiling (full jitter: half of it)
    means = []
    for n in range(7):
        xs = []
        for seed in range(400):
            a = Backoff(0.2, 5.0, random.Random(seed))
            for _ in range(n):
                a.next()
            xs.append(a.next())
        means.append(sum(xs) / len(xs))
    assert all(x < y for x, y in zip(means, means[1:6])) and means[6] == pytest.approx(2.5, rel=0.15)
    assert [Backoff(rng=random.Random(1)).next() for _ in range(2)] == [Backoff(rng=random.Random(1)).next()] * 2
    b.reset()
    assert b.ceiling() == 0.2 and b.next() <= 0.2
    stop = threading.Event()
    stop.set()
    assert b.wait(stop) is True
    with pytest.raises(ValueError):
        Backoff(base=6, cap=5)
