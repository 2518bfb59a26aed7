"""A leader that is slow (here: stopped for a moment, shorter than an election) makes a txn
sent through a follower time out. The follower is healthy: it stays the member requests go
to, and a watch on it stays. Before, any txn that timed out marked the member it went through
failed, which ended every watch on it (kv_etcd's "another request to this member failed") and
moved them elsewhere: churn on every host at each slow fsync of the leader."""

from __future__ import annotations

import os
import signal

import pytest

from dataplane.registry.kv import Txn, Unavailable
from tests.registry.conftest import watching
from tests.registry.etcdproc import cluster
from tests.registry.test_etcd_failover import _first, _follower, _kv, _leader, _until_ok
from tests.registry.test_etcd_watch import Drain


def test_a_txn_a_slow_leader_times_out_leaves_its_member_in_use(tmp_path, transport):
    with cluster(tmp_path) as ms:
        leader, f = _leader(ms), _follower(ms)
        kv = watching(_kv(_first(f, ms), timeout=0.3), transport)
        if transport == "grpc":
            kv.open_channels(wait_s=5)
        d = Drain(kv.watch("/slow/", kv.range("/slow/")[0] + 1))
        try:
            assert d.watch.member == 0 and d.watch.transport == transport
            os.kill(leader.pid, signal.SIGSTOP)
            try:
                with pytest.raises(Unavailable, match="outcome unknown"):
                    kv.commit(Txn().put("/slow/a", b"1"))
            finally:
                os.kill(leader.pid, signal.SIGCONT)
            assert not kv._failed_recently(0), "the healthy member the txn went through was marked failed"
            (_, rev), _ = _until_ok(lambda: kv.commit(Txn().put("/slow/b", b"2")))
            events = d.wait_for(1)
            while events and events[-1].rev < rev and d.thread.is_alive():
                events = d.wait_for(len(events) + 1)
            assert events and events[-1].key == "/slow/b", (events, d.error)
            assert d.error is None and d.thread.is_alive(), f"the watch on the healthy member ended: {d.error}"
        finally:
            d.stop()
            kv.close()
