"""Hostile data in a real etcd never stops a snapshot or a watch: a key that is
not UTF-8 and records that do not parse are listed as bad and skipped."""

from __future__ import annotations

import base64
import json

from dataplane.registry import open_registry
from dataplane.registry.store import PREFIX, key


def raw_put(reg, k: bytes, v: bytes) -> None:
    b = lambda x: base64.b64encode(x).decode()  # noqa: E731
    reg.kv._post("/kv/put", {"key": b(k), "value": b(v)})


def test_a_key_that_is_not_utf8_and_hostile_records_are_listed_not_fatal(etcd_url):
    reg = open_registry(etcd_url)
    try:
        reg.kv._post("/kv/deleterange", {"key": base64.b64encode(PREFIX.encode()).decode(),
                                         "range_end": base64.b64encode((PREFIX[:-1] + "0").encode()).decode()})
        reg.network_create("good", 300)
        start = reg.snapshot().rev
        w = reg.watch(start + 1)
        raw_put(reg, PREFIX.encode() + b"endpoints/\xff\xfe", b'{"id": "x"}')
        raw_put(reg, key("networks", "inf").encode(),
                json.dumps({"name": "inf", "vni": 1e400, "subnet": "10.9.0.0/24", "gateway": "10.9.0.1",
                            "mtu": 1450, "port": 4789}).encode())
        raw_put(reg, key("hosts", "deep").encode(), b"[" * 100000 + b"]" * 100000)
        snap = reg.snapshot()
        assert set(snap.networks) == {"good"}
        assert len(snap.bad) == 3, snap.bad
        got = []
        for batch in w:
            got += batch
            if len(got) >= 3:
                break
        w.close()
        assert len(got) == 3, "the watch delivers them (the agent then skips them) instead of dying"
    finally:
        reg.close()
