"""Transactions over etcd's gRPC API (kv_etcd.commit, etcd_grpc.Channels.txn):
once a member's channel is connected, a commit goes that way instead of
through the member's JSON gateway. The same txn means the same thing either
way; what fails is classed as the gateway's answer would be (a member that
stops answering: outcome unknown, not retried elsewhere; a permission:
Refused; a token etcd forgot: logged in again and sent again)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from dataplane.registry import Refused, open_registry
from dataplane.registry.kv import Txn, Unavailable
from dataplane.registry.store import key
from tests.registry.etcdproc import cluster, stop_member
from tests.registry.test_etcd_failover import _first, _follower, _kv, _serving


def _txns(kv, base: str) -> list:
    """A run of txns covering every kind of compare and op; what each returned,
    and what the keys hold after. Revisions are given relative to the first."""
    out = []
    ok, rev0 = kv.commit(Txn().absent(base + "a").put(base + "a", b"1"))
    out.append((ok, 0))
    out.append((kv.commit(Txn().absent(base + "a").put(base + "a", b"2"))[0], None))  # exists: the compare fails
    a = kv.get(base + "a")
    ok, rev = kv.commit(Txn().unchanged(base + "a", a.mod_rev).put(base + "a", b"3").put(base + "b", b"4"))
    out.append((ok, rev - rev0))
    out.append((kv.commit(Txn().unchanged(base + "a", a.mod_rev).delete(base + "b"))[0], None))  # stale mod_rev
    lease = kv.lease_grant(30)
    ok, rev = kv.commit(Txn().put(base + "c", b"5", lease).delete(base + "b"))
    out.append((ok, rev - rev0))
    items = {it.key[len(base):]: (it.value, it.mod_rev - rev0, it.lease == lease) for it in kv.range(base)[1]}
    return [out, items]


def _gateway_refuses_txns(kv, monkeypatch):
    real = kv._http

    def http(i, path, *a, **kw):
        assert path != "/kv/txn", "the txn went through the gateway"
        return real(i, path, *a, **kw)
    monkeypatch.setattr(kv, "_http", http)


def test_txns_over_grpc_and_the_gateway_mean_the_same(etcd_url, monkeypatch):
    over_json, over_grpc = open_registry(etcd_url), open_registry(etcd_url)
    try:
        over_json.kv.use_grpc = False
        want = _txns(over_json.kv, "/gt/json/")
        over_grpc.kv.open_channels(wait_s=5)
        _gateway_refuses_txns(over_grpc.kv, monkeypatch)
        assert _txns(over_grpc.kv, "/gt/grpc/") == want
        assert over_grpc.kv.grpc_commits == 5 and over_json.kv.grpc_commits == 0
    finally:
        over_json.close()
        over_grpc.close()


def test_a_process_without_channels_commits_through_the_gateway(etcd_url):
    """A CLI command writes once: it makes no gRPC channel for it."""
    reg = open_registry(etcd_url)
    try:
        assert reg.kv.commit(Txn().put("/gt/cli", b"1"))[0]
        assert reg.kv.grpc_commits == 0 and not reg.kv._grpc._channels
    finally:
        reg.close()


def test_a_grpc_txn_whose_member_stops_answering_has_an_unknown_outcome(tmp_path):
    with cluster(tmp_path) as ms:
        victim = _follower(ms)
        kv = _kv(_first(victim, ms), timeout=1.0)
        try:
            kv.open_channels(wait_s=5)
            assert kv.commit(Txn().put("/u/warm", b"1"))[0] and kv.grpc_commits == 1
            assert _serving(kv, ms) is victim
            stop_member(victim.pid)
            try:
                with pytest.raises(Unavailable, match="etcd txn at .*, outcome unknown: DEADLINE_EXCEEDED"):
                    kv.commit(Txn().absent("/u/k").put("/u/k", b"1"))
                assert _serving(kv, ms) is not victim
                ok, _ = kv.commit(Txn().absent("/u/k").put("/u/k", b"1"))
                assert ok
            finally:
                os.kill(victim.pid, signal.SIGCONT)
        finally:
            kv.close()


def test_a_grpc_txn_on_a_dead_member_goes_to_the_next(tmp_path):
    """A killed member's channel is no longer connected: the txn goes through the
    gateway's path, which finds the member refusing connections and moves on."""
    with cluster(tmp_path) as ms:
        down = _follower(ms)
        kv = _kv(_first(down, ms), timeout=1.0)
        try:
            kv.open_channels(wait_s=5)
            down.kill()
            deadline = time.monotonic() + 5
            while kv._grpc.ready(0) and time.monotonic() < deadline:
                time.sleep(0.01)
            ok, _ = kv.commit(Txn().absent("/d/a").put("/d/a", b"1"))
            assert ok and _serving(kv, ms) is not down
        finally:
            kv.close()


def test_over_grpc_a_host_cannot_write_another_hosts_record_and_a_forgotten_token_is_replaced(tmp_path, monkeypatch):
    with cluster(tmp_path, size=1, tls=True, hosts=("h1", "h2"), extra=["--auth-token-ttl", "1"]) as sec:
        h1 = open_registry(sec.url("h1"), watch_deadline_s=3.0)
        try:
            h1.kv.open_channels(wait_s=5)
            _gateway_refuses_txns(h1.kv, monkeypatch)
            with pytest.raises(Refused, match="dataplane-host-h1 is not permitted"):
                h1.kv.commit(Txn().put(key("hosts", "h2"), b'{"name": "h2", "vtep": "198.18.0.66"}'))
            assert h1.kv.get(key("hosts", "h2")) is None
            first = h1.kv._token
            time.sleep(2.5)                        # etcd forgets a simple token idle for its TTL
            h1.network_create("g1", 320)           # refused before applying, so sent again
            assert h1.kv._token not in (None, first) and h1.kv.grpc_commits == 1
            assert [n.name for n in h1.networks()] == ["g1"]
        finally:
            h1.close()


def test_a_channel_that_went_idle_connects_again_for_the_next_txn(etcd_url, monkeypatch):
    """gRPC closes a channel's connection after IDLE_MS without a call; asking
    whether it is ready starts a new one, so a quiet agent goes back to gRPC."""
    from dataplane.registry import etcd_grpc
    monkeypatch.setattr(etcd_grpc, "IDLE_MS", 300)
    reg = open_registry(etcd_url)
    try:
        kv = reg.kv
        kv.open_channels(wait_s=5)
        kv.commit(Txn().put("/gt/idle", b"0"))       # the idle time counts from the last call
        assert kv.grpc_commits == 1

        def until(want: bool, within: float = 10.0) -> bool:
            deadline = time.monotonic() + within
            while kv._grpc.ready(kv._current) != want and time.monotonic() < deadline:
                time.sleep(0.05)
            return kv._grpc.ready(kv._current) == want
        assert until(False), "the channel never went idle"
        assert until(True), "an idle channel was not connected again"
        kv.commit(Txn().put("/gt/idle", b"1"))
        assert kv.grpc_commits == 2
    finally:
        reg.close()


def test_over_grpc_a_client_without_a_login_is_refused_as_the_gateway_refuses_it(tmp_path):
    """etcd refuses it as INVALID_ARGUMENT ("user name is empty"), before applying anything:
    the gateway sends the txn again and says what to do, as for any client."""
    from dataplane.registry.etcd_access import url as etcd_url
    with cluster(tmp_path, size=1, tls=True, hosts=("h1",)) as sec:
        reg = open_registry(etcd_url(sec.endpoints, sec.pki.client("h1")))
        try:
            reg.kv.open_channels(wait_s=5)
            assert reg.kv._grpc.ready(reg.kv._current)
            with pytest.raises(Refused, match="authentication on: add user="):
                reg.kv.commit(Txn().put(key("networks", "evil"), b"{}"))
            assert reg.kv.grpc_commits == 0
        finally:
            reg.close()
