"""What the fast path holds, read back for people: the FDB and the counters."""

from __future__ import annotations

import ctypes
import time

from dataplane.core import abi, model
from dataplane.core.keys import ip_str
from dataplane.node import networks
from dataplane.node.base import Node

_S = abi.load().structs
_C = abi.load().constants


def fdb(node: Node) -> list[dict]:
    st = node.require_up()
    age_ns = st.config.fdb_age_s * 1_000_000_000
    now = time.monotonic_ns()
    rows = []
    with node.maps() as m:
        for k, v in m.dp_local_macs.items():
            rows.append({"vni": k.vni, "mac": model.mac_str(k.mac), "where": "local",
                         "ifindex": v.value, "age_s": None, "state": "static"})
        for k, v in m.dp_fdb.items():
            rows.append({"vni": k.vni, "mac": model.mac_str(k.mac), "where": ip_str(v.vtep),
                         "ifindex": None, "age_s": None, "state": "static"})
        for k, v in m.dp_learned.items():
            age = max(0, now - v.last_seen_ns)
            rows.append({"vni": k.vni, "mac": model.mac_str(k.mac), "where": ip_str(v.vtep),
                         "ifindex": None, "age_s": round(age / 1e9, 1),
                         "state": "learned" if age < age_ns else "expired"})
    return sorted(rows, key=lambda r: (r["vni"], r["mac"]))


def stats(node: Node) -> list[dict]:
    """Counters per VNI summed over CPUs; VNI 0 is what belongs to no VNI."""
    st = node.require_up()
    names = abi.drop_names()
    counters = [n for n, _ in _S["dp_stats"]._fields_ if n != "drops"]
    rows = []
    with node.maps() as m:
        slots = [(0, 0)] + [(k.value, net.slot) for k, net in m.dp_networks.items()]
        for vni, slot in slots:
            percpu = m.dp_stats.get(ctypes.c_uint32(slot))
            if percpu is None:
                continue
            row = {"vni": vni}
            for c in counters:
                row[c] = sum(getattr(cpu, c) for cpu in percpu)
            row["drops"] = {names[i]: total for i in range(len(names))
                            if (total := sum(cpu.drops[i] for cpu in percpu))}
            if vni in st.networks:   # members a broadcast cannot reach (networks.over_limit says why)
                row["unreached"] = (max(0, len(networks.flood_list(st, vni)) - _C["DP_MAX_FLOOD"]) +
                                    max(0, len(st.local_endpoints(vni)) - _C["DP_MAX_LOCAL"]))
            rows.append(row)
    return sorted(rows, key=lambda r: r["vni"])
