"""A 3-member etcd cluster on loopback, the client given all three: when the
member it talks to dies or stops, requests go on through another member, and
a watch resumed from last_rev + 1 gets every event written meanwhile, once."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from dataplane.registry import parse_url
from dataplane.registry.backoff import Backoff
from dataplane.registry.kv import Txn, Unavailable
from tests.registry.conftest import watching
from tests.registry.etcdproc import cluster, stop_member
from tests.registry.test_etcd_watch import Drain

BIG = b"v" * 5000   # several WebSocket frames per message


def _kv(members, **kw):
    from dataplane.registry.kv_etcd import EtcdKV
    return EtcdKV(parse_url("etcd://" + ",".join(f"127.0.0.1:{m.port}" for m in members))[1], **kw)


def _serving(kv, members):
    """The member the client sends to first now."""
    return next(m for m in members if kv.endpoint() == f"127.0.0.1:{m.port}")


def _leader(members):
    import requests
    st = requests.post(f"http://127.0.0.1:{members[0].port}/v3/maintenance/status", json={}, timeout=3).json()
    for m in members:
        if requests.post(f"http://127.0.0.1:{m.port}/v3/maintenance/status", json={},
                         timeout=3).json()["header"]["member_id"] == st["leader"]:
            return m
    raise AssertionError("no leader")


def _follower(members):
    leader = _leader(members)
    return next(m for m in members if m is not leader)


def _first(member, members) -> list:
    """The members with `member` first: the client starts there."""
    return [member] + [m for m in members if m is not member]


def _until_ok(fn, within: float = 20.0):
    """fn() retried on Unavailable with jittered backoff, as the agent does: (result, attempts)."""
    b, deadline, attempts = Backoff(0.05, 1.0, random.Random(1)), time.monotonic() + within, 0
    while True:
        attempts += 1
        try:
            return fn(), attempts
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(b.next())


@pytest.mark.parametrize("role", ["follower", "leader"])
def test_member_killed_requests_fail_over_and_the_watch_resumes_without_loss(tmp_path, role, transport):
    with cluster(tmp_path) as ms:
        leader = _leader(ms)
        victim = leader if role == "leader" else _follower(ms)
        kv = watching(_kv(_first(victim, ms), timeout=2.0, watch_deadline_s=3.0), transport)
        try:
            base, _ = kv.range("/fo/")
            d = Drain(kv.watch("/fo/", base + 1))
            assert d.watch.transport == transport
            before = [kv.commit(Txn().put(f"/fo/a{i}", BIG + b"%d" % i))[1] for i in range(3)]
            assert [e.rev for e in d.wait_for(3)] == before
            assert d.events[0].value == BIG + b"0"
            assert _serving(kv, ms) is victim and d.watch.member == 0
            victim.kill()
            d.thread.join(5)
            assert isinstance(d.error, Unavailable), "the watch outlived its member"
            resume = d.watch.resume_rev()
            assert resume == before[-1] + 1

            # A read through another member; when the leader died, once a new one is elected.
            (rev, items), attempts = _until_ok(lambda: kv.range("/fo/"))
            assert len(items) == 3 and _serving(kv, ms) is not victim
            assert attempts == 1 or role == "leader"
            written = []
            for i in range(10):    # one txn = one revision: two keys each
                ok, rev = kv.commit(Txn().put(f"/fo/b{i}", b"x").put(f"/fo/c{i}", BIG))
                assert ok
                written += [(f"/fo/b{i}", rev), (f"/fo/c{i}", rev)]
            written.append(("/fo/a0", kv.commit(Txn().delete("/fo/a0"))[1]))
            rev, items = kv.range("/fo/")
            assert rev == written[-1][1] and len(items) == 2 + 20

            d2 = Drain(kv.watch("/fo/", resume))
            assert d2.watch.transport == transport
            got = d2.wait_for(len(written))
            time.sleep(0.3)   # and nothing more arrives
            assert [(e.key, e.rev) for e in got] == written
            assert got[-1].value is None and got[1].value == BIG
            assert d2.watch.last_rev == written[-1][1] and d2.error is None
            d2.stop()
        finally:
            kv.close()


def test_stopped_member_is_skipped_by_every_request(tmp_path, transport):
    """SIGSTOP: connections to the member open but nothing answers; each request
    times out on it and moves on; a watch there ends, a new one goes elsewhere."""
    with cluster(tmp_path) as ms:
        victim = _follower(ms)
        kv = watching(_kv(_first(victim, ms), timeout=1.0, watch_deadline_s=2.0, progress_interval_s=0.3), transport)
        try:
            base, _ = kv.range("/st/")
            old = Drain(kv.watch("/st/", base + 1))
            assert old.watch.transport == transport
            assert _serving(kv, ms) is victim
            stop_member(victim.pid)
            t0 = time.monotonic()
            rev, _ = kv.range("/st/")          # times out on the victim, answered by the next
            assert time.monotonic() - t0 < 1.0 + 1.0 + 1.0
            assert rev >= base and _serving(kv, ms) is not victim
            old.thread.join(5)                  # the other request's failure ends the old watch
            assert isinstance(old.error, Unavailable) and old.ended_at - t0 < 2.0 + 0.5
            new = Drain(kv.watch("/st/", old.watch.resume_rev()))
            assert new.watch.member != 0 and new.watch.transport == transport   # the victim is first in the list
            ok, r1 = kv.commit(Txn().put("/st/k", b"1"))
            assert ok and [e.rev for e in new.wait_for(1)] == [r1]
            lease = kv.lease_grant(5)
            assert kv.lease_keepalive(lease)
            kv.lease_revoke(lease)
            new.stop()
        finally:
            os.kill(victim.pid, signal.SIGCONT)
            kv.close()


def test_a_snapshot_read_waits_on_a_stopped_member_once(tmp_path, transport, monkeypatch):
    """Side-by-side reads of a snapshot (range_many) with a member stopped: the read it was
    given waits out one bulk timeout, then goes to another member; the next snapshot
    leaves that member alone. Before: gRPC's read timed out on it, the gateway's fallback
    asked the same member first and timed out again, and every later snapshot did the same
    (over a minute each with etcd's 30-s bulk timeout, the agent disconnected meanwhile)."""
    from dataplane.registry import kv_etcd, kv_etcd_grpc
    monkeypatch.setattr(kv_etcd, "BULK_TIMEOUT_S", 2.0)
    monkeypatch.setattr(kv_etcd_grpc, "BULK_TIMEOUT_S", 2.0)
    with cluster(tmp_path) as ms:
        members = _first(_leader(ms), ms)       # the second prefix from a follower: no election
        kv = watching(_kv(members, timeout=1.0), transport)
        prefixes = ["/s1/", "/s2/", "/s3/"]
        try:
            for p in prefixes:
                kv.commit(Txn().put(p + "k", b"v"))
            if transport == "grpc":
                kv.open_channels(wait_s=5)
                for i in range(3):
                    kv._grpc.connect(i, 5)
            victim = members[kv._order()[1]]       # the member the second prefix is read from
            stop_member(victim.pid)
            t0 = time.monotonic()
            rev, parts = kv.range_many(prefixes)
            first = time.monotonic() - t0
            assert [len(p) for p in parts] == [1, 1, 1]
            assert first < 2.0 + 1.5, f"waited {first:.1f} s: more than one bulk timeout"
            t0 = time.monotonic()
            kv.range_many(prefixes)
            assert time.monotonic() - t0 < 1.0, "the stopped member asked again"
        finally:
            os.kill(victim.pid, signal.SIGCONT)
            kv.close()


def test_txn_with_unknown_outcome_is_not_retried_elsewhere(tmp_path):
    """A txn sent to a member that then never answers may have been applied:
    it raises Unavailable instead of running again on another member, and the
    next request starts at the next member."""
    with cluster(tmp_path) as ms:
        victim = _follower(ms)
        kv = _kv(_first(victim, ms), timeout=1.0)
        try:
            kv.range("/u/")
            assert _serving(kv, ms) is victim
            stop_member(victim.pid)
            try:
                kv.commit(Txn().absent("/u/k").put("/u/k", b"1"))
                raise AssertionError("a txn with an unknown outcome was reported as done")
            except Unavailable as e:
                assert "outcome unknown" in str(e)
            assert _serving(kv, ms) is not victim
            ok, _ = kv.commit(Txn().absent("/u/k").put("/u/k", b"1"))
            assert ok
        finally:
            os.kill(victim.pid, signal.SIGCONT)
            kv.close()


def test_watch_and_txn_start_on_the_next_member_when_the_first_is_down(tmp_path, transport):
    with cluster(tmp_path) as ms:
        down = _follower(ms)   # no election: the writes go through at once
        down.kill()
        kv, kv2 = watching(_kv(_first(down, ms), timeout=1.0), transport), _kv(_first(down, ms), timeout=1.0)
        try:
            w = kv.watch("/n/", 1)
            assert w.member == 1 and _serving(kv, ms) is not down and w.transport == transport
            # refused: the txn surely never reached the member, so it moves on too
            ok, rev = kv2.commit(Txn().absent("/n/a").put("/n/a", b"1"))
            assert ok and _serving(kv2, ms) is not down
            assert [e.rev for e in next(w)] == [rev]
            w.close()
        finally:
            kv.close()
            kv2.close()


def test_watch_on_a_member_cut_off_from_the_leader_ends(tmp_path, transport):
    """The two other members stopped: ours still answers progress requests, but its
    linearizable probe read fails, which ends the watch (the deadline alone would not)."""
    with cluster(tmp_path) as ms:
        kv = watching(_kv(ms, timeout=1.0, watch_deadline_s=30.0, progress_interval_s=0.2, probe_interval_s=1.0),
                      transport)
        others = []
        try:
            d = Drain(kv.watch("/cut/", kv.range("/cut/")[0] + 1))
            assert d.watch.transport == transport
            others = [m for m in ms if kv.endpoint(d.watch.member) != f"127.0.0.1:{m.port}"]
            for m in others:
                stop_member(m.pid)
            t0 = time.monotonic()
            d.thread.join(10)
            # over gRPC the member may end the stream first ("hasleader": three election timeouts)
            assert isinstance(d.error, Unavailable) and ("fails reads" in str(d.error) or
                                                         transport == "grpc" and "no leader" in str(d.error)), d.error
            assert d.ended_at - t0 < 1.0 + 1.0 + 1.0 + 0.5, (d.ended_at - t0, d.error)
            # progress answers kept coming until the probe (which blocks reads for its 1 s timeout)
            assert d.watch.lag_s(d.ended_at) < 1.0 + 0.2 + 0.3, (d.watch.lag_s(d.ended_at), d.error)
        finally:
            for m in others:
                os.kill(m.pid, signal.SIGCONT)
            kv.close()


def test_no_watch_opens_without_quorum(tmp_path, transport):
    """Two of three members stopped: opening a watch fails (Unavailable) rather than returning
    one that the agent would count as connected (its /healthz 200 through the outage). Before,
    the gateway's WebSocket watch returned as soon as its create request was sent."""
    with cluster(tmp_path) as ms:
        kv = watching(_kv(ms, timeout=1.0, watch_deadline_s=30.0, progress_interval_s=0.2, probe_interval_s=1.0),
                      transport)
        rev = kv.range("/nq/")[0]
        for m in ms[1:]:
            stop_member(m.pid)
        try:
            time.sleep(2.0)                      # past three 0.5-s election timeouts: nobody leads
            t0 = time.monotonic()
            with pytest.raises(Unavailable):
                w = kv.watch("/nq/", rev + 1)
                w.close()
            assert time.monotonic() - t0 < 3 * (1.0 + 1.0) + 1
        finally:
            for m in ms[1:]:
                os.kill(m.pid, signal.SIGCONT)
            kv.close()


def test_a_grpc_watch_ends_when_its_member_has_no_leader(tmp_path):
    """No probe reads: the two other members stopped, the member ends the stream
    itself ("hasleader": after three election timeouts without a leader)."""
    with cluster(tmp_path) as ms:
        kv = watching(_kv(ms, timeout=1.0, watch_deadline_s=30.0, progress_interval_s=0.2, probe_interval_s=0),
                      "grpc")
        others = []
        try:
            d = Drain(kv.watch("/nl/", kv.range("/nl/")[0] + 1))
            assert d.watch.transport == "grpc"
            others = [m for m in ms if kv.endpoint(d.watch.member) != f"127.0.0.1:{m.port}"]
            for m in others:
                stop_member(m.pid)
            t0 = time.monotonic()
            d.thread.join(10)
            assert isinstance(d.error, Unavailable) and "no leader" in str(d.error), d.error
            assert d.ended_at - t0 < 4 * 0.5 + 1.5        # three 0.5-s election timeouts, checked every 0.5 s
        finally:
            for m in others:
                os.kill(m.pid, signal.SIGCONT)
            kv.close()


def test_a_short_lease_outlives_a_stopped_member(tmp_path, monkeypatch):
    """The lease keeper with a 3-s TTL (renewed every second) whose member stops answering:
    each keepalive waited etcd's usual 3 s there before asking the next member, by when
    the lease had lapsed, the host record with it (seen dead cluster-wide), and a new lease
    was taken. A member now gets at most TTL/4 to answer a keepalive."""
    import threading
    from types import SimpleNamespace
    from dataplane.agent.lease import LeaseKeeper
    from dataplane.registry.records import Host
    from dataplane.core import state
    from dataplane.registry.store import Registry, key
    monkeypatch.setattr(state, "RUN_ROOT", str(tmp_path / "run"))       # the keeper's agent file
    with cluster(tmp_path) as ms:
        victim = _follower(ms)
        kv = _kv(_first(victim, ms))
        events = []
        ag = SimpleNamespace(me="h1", ttl=3, reg=Registry(kv), vtep=Host.make("h1", "198.18.0.1"), registered_rev=0,
                             stopping=threading.Event(), registered=threading.Event(), counters={"errors": 0, "registry_errors": 0},
                             node=SimpleNamespace(name="x"), url="etcd://test", fail=events.append,
                             disconnected=lambda: events.append("disconnected"))
        keeper = LeaseKeeper(ag)
        t = threading.Thread(target=keeper.run, daemon=True)
        try:
            t.start()
            assert ag.registered.wait(10)
            first = keeper.lease
            assert _serving(kv, ms) is victim
            stop_member(victim.pid)
            other = _kv([m for m in ms if m is not victim])
            seen_gone = False
            for _ in range(40):                       # 8 s: several keepalives, all through the stop
                seen_gone = seen_gone or other.get(key("hosts", "h1")) is None
                time.sleep(0.2)
            other.close()
            assert not seen_gone, "the host record lapsed"
            assert keeper.lease == first and not events, events
        finally:
            ag.stopping.set()
            os.kill(victim.pid, signal.SIGCONT)
            t.join(10)
            kv.close()
