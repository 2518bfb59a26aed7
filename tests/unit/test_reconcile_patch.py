"""reconcile.patch (the entries of single MACs and addresses, what the agent
computes per watch event) agrees with reconcile.desired (whole VNIs) on every
case of the whole-VNI tables, key by key: the incremental path can never
install what the whole one would not, or miss what it would."""

from __future__ import annotations

import pytest

from dataplane.agent.reconcile import desired, patch
from tests.unit.test_reconcile import ENTRY_CASES, SKIP_CASES, facts, local_of, LOCAL_WEB

CASES = [(c.values[0], c.values[1], c.id) for c in ENTRY_CASES]
CASES += [(c.values[0], facts(local=local_of(LOCAL_WEB)), c.id) for c in SKIP_CASES]


def keys_of(view, vni):
    net = view.network_of_vni(vni)
    keys = set()
    for e in view.endpoints.values():
        keys |= {("mac", e.mac), ("ip", e.ip), ("ep", e.id)}
    for table, kind in ((view.macs, "mac"), (view.ipam, "ip")):
        keys |= {(kind, k.split("/", 1)[1]) for k in table if net and k.startswith(net.name + "/")}
    return keys


@pytest.mark.parametrize("view,f", [c[:2] for c in CASES], ids=[c[2] for c in CASES])
def test_patch_agrees_with_desired_key_by_key(view, f):
    whole = desired(view, f)
    for vni in f.served:
        if view.network_of_vni(vni) is None:
            continue
        want = whole.entries[vni]
        p = patch(view, f, vni, keys_of(view, vni))
        assert {m: v for m, v in p.fdb.items() if v is not None} == want.fdb, f"VNI {vni} fdb"
        assert {i: m for i, m in p.neigh.items() if m is not None} == want.neigh, f"VNI {vni} neigh"
        mine = {eid for eid in whole.skipped if view.endpoints[eid].network == view.network_of_vni(vni).name}
        assert set(p.skipped) == mine, f"VNI {vni} skipped"
        assert sorted(set(p.fdb.values()) - {None}) == want.flood, f"VNI {vni} flood"
