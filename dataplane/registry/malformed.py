"""A network record this version cannot read, removed by name (`network rm`).

A record written before a check that now refuses it (a multicast or loopback subnet, whose
default gateway every read refused) was listed nowhere, could not be removed, and kept its VNI
taken: `network rm` read it first and failed on the read. Such a record goes when no endpoint
names its network, with its fence and its VNI's index if that still names it."""

from __future__ import annotations

import json

from dataplane.core import model
from dataplane.core.errors import Conflict, NotFound, UsageError
from dataplane.registry.ipam import fence_key
from dataplane.registry.kv import Txn
from dataplane.registry.records import key

ATTEMPTS = 5


def _vni(raw: bytes) -> int | None:
    try:
        vni = json.loads(raw).get("vni")
        return model.parse_vni(vni) if isinstance(vni, int) and not isinstance(vni, bool) else None
    except (ValueError, AttributeError, UsageError):
        return None


def network_rm(reg, name: str) -> None:
    name = model.parse_name(name, "network name")
    for _ in range(ATTEMPTS):
        item = reg.kv.get(key("networks", name))
        if item is None:
            raise NotFound(f"network {name!r} not found")
        users = [e.id for e in reg.endpoints(network=name)]
        if users:
            raise Conflict(f"network {name} is in use: it has {len(users)} endpoint(s), e.g. {users[0]}: "
                           "remove them first")
        fence = reg.kv.get(fence_key(name))
        txn = (Txn().unchanged(item.key, item.mod_rev).unchanged(fence_key(name), fence.mod_rev if fence else 0)
               .delete(item.key).delete(fence_key(name)))
        vni = _vni(item.value)
        held = reg.kv.get(key("vnis", vni)) if vni is not None else None
        if held is not None and held.value.decode() == name:
            txn.unchanged(held.key, held.mod_rev).delete(held.key)
        ok, sent = reg._commit_retrying(txn)
        if ok or (sent and reg.kv.get(item.key) is None):
            return
    raise Conflict(f"network {name} changed while it was being removed; try again")
