"""etcd out of space (its NOSPACE alarm, the classic outage of an etcd whose history nobody
compacts): every write is refused on every member until an operator compacts, defragments
and disarms. A registry write then fails at once with that advice (kv.Full), over the JSON
gateway and over gRPC alike. Before, it was taken for a lost reply: retried for 5 s and then
given as "HTTP 429: etcdserver: mvcc: database space exceeded". Reads go on meanwhile, and
writes work again once the operator did what the message says. A real etcd with a small quota."""

from __future__ import annotations

import time

import pytest
import requests

from dataplane.registry import Full, open_registry
from dataplane.registry.kv import Txn
from dataplane.registry.records import Host
from tests.registry.etcdproc import cluster

QUOTA = 8 * 1024 * 1024
VALUE = b"x" * 200_000


def fill(kv) -> None:
    """Versions of one big key until etcd raises its alarm (nothing compacts them)."""
    for _ in range(200):
        try:
            kv.commit(Txn().put("/dataplane-test/fill", VALUE))
        except Full:
            return
    pytest.fail(f"etcd never ran out of space at a {QUOTA}-byte quota")


def clear(port: int) -> None:
    """What the message tells the operator to do, through the gateway (etcdctl is not installed)."""
    base = f"http://127.0.0.1:{port}/v3"
    status = requests.post(f"{base}/maintenance/status", json={}, timeout=5).json()
    requests.post(f"{base}/kv/compaction", json={"revision": status["header"]["revision"], "physical": True},
                  timeout=30).raise_for_status()
    requests.post(f"{base}/maintenance/defragment", json={}, timeout=30).raise_for_status()
    requests.post(f"{base}/maintenance/alarm", json={"action": "DEACTIVATE", "memberID": status["header"]["member_id"],
                                                     "alarm": "NOSPACE"}, timeout=5).raise_for_status()


def test_a_registry_out_of_space_says_so_at_once_and_takes_writes_once_cleared(tmp_path):
    with cluster(tmp_path, size=1, extra=["--quota-backend-bytes", str(QUOTA)]) as members:
        reg = open_registry(f"etcd://127.0.0.1:{members[0].port}")
        try:
            reg.network_create("n", 256, "10.9.0.0/24")
            lease = reg.kv.lease_grant(60)
            reg.host_register(Host.make("h1", "198.18.0.1"), lease)
            fill(reg.kv)
            t0 = time.monotonic()
            with pytest.raises(Full, match="etcd is out of space .*alarm disarm"):
                reg.endpoint_create("web", "n", "h1")
            assert time.monotonic() - t0 < 2.0, "said at once, not retried as a lost reply"
            reg.kv.open_channels(wait_s=5)                  # commits go over gRPC from now on
            assert reg.kv._grpc.ready(reg.kv._current)
            with pytest.raises(Full, match="^etcd txn at .*etcd is out of space"):   # gRPC's words, not the gateway's
                reg.endpoint_create("web", "n", "h1")
            assert reg.network("n").vni == 256, "reads go on"
            assert reg.kv.lease_keepalive(lease), "leases are renewed: the host stays alive"
            clear(members[0].port)
            assert reg.endpoint_create("web", "n", "h1").host == "h1"
        finally:
            reg.close()
