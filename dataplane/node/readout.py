"""What the fast path holds, read back for people: the FDB and the counters."""

from __future__ import annotations

import ctypes
import os
import time

from dataplane.core import abi, model
from dataplane.core.errors import DataplaneError, NotFound
from dataplane.core.keys import ip_str
from dataplane.kernel import bpfsys, loader, netlink, tcx
from dataplane.kernel.maps import SPECS
from dataplane.node import networks, rxgro
from dataplane.node.base import Node

_S = abi.load().structs
_C = abi.load().constants


def fdb(node: Node) -> list[dict]:
    st = node.require_up()
    age_ns = st.config.fdb_age_s * 1_000_000_000
    now = time.monotonic_ns()
    rows = []
    with node.maps() as m:
        router, alias = _C["DP_LOCAL_ROUTER"], _C["DP_LOCAL_ALIAS"]
        for k, v in m.dp_local_macs.items():
            kind = ("router" if v.value & alias else "gateway") if v.value & router else "static"
            rows.append({"vni": k.vni, "mac": model.mac_str(k.mac), "where": "local",
                         "ifindex": v.value & ~(router | alias), "age_s": None, "state": kind})
        for k, v in m.dp_fdb.items():
            rows.append({"vni": k.vni, "mac": model.mac_str(k.mac), "where": ip_str(v.vtep),
                         "ifindex": None, "age_s": None, "state": "static"})
        for k, v in m.dp_learned.items():
            age = max(0, now - v.last_seen_ns)
            rows.append({"vni": k.vni, "mac": model.mac_str(k.mac), "where": ip_str(v.vtep),
                         "ifindex": None, "age_s": round(age / 1e9, 1),
                         "state": "learned" if age < age_ns else "expired"})
    return sorted(rows, key=lambda r: (r["vni"], r["mac"]))


def _learn_limited(m, slot: int) -> int:
    """dp_net_meters[slot].learn_limited; 0 for slot 0 and on pins of an older version, which lack the map."""
    try:
        meter = m.dp_net_meters.get(ctypes.c_uint32(slot)) if slot else None
    except NotFound:
        return 0
    return meter.learn_limited if meter else 0


def peer_refusals(m) -> dict[int, dict[str, int]]:
    """{VNI: {peer's outer address: broadcasts its overlay storm meter refused}} for the pairs with
    any (dp_peer_meters): whose floods a network's overlay_storm_peer drops were. Addresses that are
    no VTEP of the VNI (dp_vteps: forged ones, let in with the peer check off, or a peer removed
    since; the LRU keeps them until it is full) are summed under "other", so a forger cannot make
    the list, or the metric's series, grow by one per address. Empty on pins of an older version
    (no such map, or one without the counts) until `up` makes the map anew."""
    key_t, val_t = _S["dp_ip_key"], _S["dp_peer_meter"]
    ksz, vsz = ctypes.sizeof(key_t), ctypes.sizeof(val_t)
    out: dict[int, dict[str, int]] = {}
    peers = networks.peer_meters(m)
    if peers is None:
        return out
    # Every entry's count read in place (up to DP_MAP_VTEPS of them at each scrape); the keys with
    # one are decoded, and looked up among the VTEPs read in one go (with the peer check off they
    # may be as many).
    refused = [(keys[i * ksz:(i + 1) * ksz], n) for keys, vals in peers.raw_chunks()
               for i, n in enumerate(memoryview(vals).cast("Q")[val_t.refused.offset // 8::vsz // 8]) if n]
    vteps = {keys[i:i + ksz] for keys, _ in m.dp_vteps.raw_chunks() for i in range(0, len(keys), ksz)} \
        if refused else set()
    for kb, n in refused:
        k = key_t.from_buffer_copy(kb)
        row = out.setdefault(k.vni, {})
        addr = ip_str(k.ip) if kb in vteps else "other"
        row[addr] = row.get(addr, 0) + n
    return {vni: dict(sorted(row.items(), key=lambda kv: -kv[1])) for vni, row in out.items()}


def stats(node: Node) -> list[dict]:
    """Counters per VNI summed over CPUs; VNI 0 is what belongs to no VNI. overlay_storm_peers:
    the peers behind the VNI's overlay_storm_peer drops, with each one's count."""
    st = node.require_up()
    names = abi.drop_names()
    members = networks.members(st)
    counters = [n for n, _ in _S["dp_stats"]._fields_ if n != "drops"]
    rows = []
    with node.maps() as m:
        slots = [(0, 0)] + [(k.value, net.slot) for k, net in m.dp_networks.items()]
        refusals = peer_refusals(m)
        for vni, slot in slots:
            percpu = m.dp_stats.get(ctypes.c_uint32(slot))
            if percpu is None:
                continue
            row = {"vni": vni}
            for c in counters:
                row[c] = sum(getattr(cpu, c) for cpu in percpu)
            row["drops"] = {names[i]: total for i in range(len(names))
                            if (total := sum(cpu.drops[i] for cpu in percpu))}
            row["learn_limited"] = _learn_limited(m, slot)
            if vni:
                row["overlay_storm_peers"] = refusals.get(vni, {})
            if vni in members:       # members a broadcast cannot reach (networks.over_limit says why)
                n, k = members[vni]
                row["unreached"] = max(0, n - _C["DP_MAX_FLOOD"]) + max(0, k - _C["DP_MAX_LOCAL"])
            rows.append(row)
    return sorted(rows, key=lambda r: r["vni"])


def _infos(pin_dir: str) -> dict[str, dict | None]:
    """bpfsys.prog_info of each of the fast path's pinned programs, None for one not loaded."""
    out = {}
    for name in loader.TC_PROGRAMS + loader.XDP_PROGRAMS:
        try:
            fd = loader.open_prog(pin_dir, name)
        except DataplaneError:
            out[name] = None
            continue
        try:
            out[name] = bpfsys.prog_info(fd)
        finally:
            os.close(fd)
    return out


def program_runs(node: Node) -> list[dict]:
    """Runs and run time of each loaded program as the kernel counts them: only while its
    BPF statistics are on (the sysctl, or a BPF_ENABLE_STATS handle someone holds; two clock
    reads a run), from the program's load on. A tail-called program is never counted: its
    time is in its caller's."""
    return [{"program": name, "runs": info["run_cnt"], "run_ns": info["run_time_ns"]}
            for name, info in _infos(node.require_up().pin_dir).items() if info is not None]


def bpf_stats_enabled() -> bool:
    """sysctl kernel.bpf_stats_enabled is 1. The kernel also counts while a BPF_ENABLE_STATS
    handle is open, which the sysctl does not show."""
    return netlink.sysctl_get(None, "kernel.bpf_stats_enabled") == "1"


def programs(node: Node) -> list[dict]:
    """Each pinned program: id, when it was loaded, where it is attached, and its runs and
    nanoseconds per run where the kernel counts them (bpf_stats_enabled)."""
    st = node.require_up()
    boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    at_tcx = tcx.names(node.netns, st.uplink.ifindex)
    uplink = at_tcx + netlink.tc_filter_names(node.netns, st.uplink.ifindex)
    xdp = netlink.xdp_attached(node.netns, st.uplink.ifindex, "xdp_guard")
    gro = rxgro.look(node.netns, st.config.port, st.config.rx_gro)
    on_endpoints = tcx.count_attached(node.netns, [e.ifindex for e in st.endpoints.values() if e.ifindex],
                                      "from_endpoint")
    rows = []
    for name, info in _infos(st.pin_dir).items():
        if info is None:
            rows.append({"program": name, "id": None, "loaded": None, "attached": "not loaded",
                         "runs": None, "ns_per_run": None})
            continue
        hook = "tcx" if "from_overlay" in at_tcx else "tc"      # what is there, not what state says
        where = {"from_overlay": f"{hook} ingress {st.config.underlay}" if name in uplink else "not attached",
                 "from_endpoint": f"{hook} ingress, {on_endpoints}/{len(st.endpoints)} endpoints",
                 "xdp_guard": f"xdp {st.config.underlay}" if xdp else "not attached",
                 "gro_sink": rxgro.describe(st, gro),
                 "dp_clock": "test runs (clock)"}.get(name, "tail call")
        rows.append({"program": name, "id": info["id"], "attached": where,
                     "loaded": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(boot + info["load_time_ns"] / 1e9)),
                     "runs": info["run_cnt"],
                     "ns_per_run": round(info["run_time_ns"] / info["run_cnt"]) if info["run_cnt"] else None})
        if name == "gro_sink" and gro.dropped is not None:
            rows[-1]["dropped"] = gro.dropped       # sent through the device, counted as sent by us, lost there
    return rows


def maps(node: Node) -> list[dict]:
    """Each map's kind, entries in use (hash maps) and capacity; pinned False for a map this version
    has and the node's pins lack (brought up by an older version: the next `up` makes it)."""
    st = node.require_up()
    rows = []
    with node.maps() as m:
        for name, spec in SPECS.items():
            used, pinned = None, os.path.exists(os.path.join(node.pin_dir, name))
            if pinned and spec.kind in ("hash", "lru_hash"):
                try:
                    used = getattr(m, name).count()
                except NotFound:          # unpinned since (an `up` making it anew)
                    pinned = False
            rows.append({"map": name, "kind": spec.kind, "entries": used,
                         "capacity": spec.max_entries(st.map_sizes), "pinned": pinned})
    return rows
