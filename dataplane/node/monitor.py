"""`dataplane monitor`: the fast path's events (bpf/lib/monitor.h) as they
happen. One monitor a node at a time (a lock); while it runs, bits in
dp_config.flags make the programs write drops, punts and sampled forwarded
frames to the dp_events ring buffer, and it clears them when it ends. A
monitor killed outright leaves them set: the agent clears them on its next
tick when nobody holds the lock (clear_if_abandoned)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import time

from dataplane.core import abi, model, state
from dataplane.core.errors import Conflict, UsageError
from dataplane.kernel import netlink
from dataplane.kernel.ringbuf import RingReader
from dataplane.node import fpconfig
from dataplane.node.base import Node, require_root

_A = abi.load()
_F = _A.enums["dp_cfg_flag"]
_E = _A.enums["dp_event_type"]
_P = _A.enums["dp_punt_reason"]
TYPES = {"drop": int(_F.DP_CFG_MON_DROP), "punt": int(_F.DP_CFG_MON_PUNT), "trace": int(_F.DP_CFG_MON_TRACE)}
MASK = sum(TYPES.values())
_NAMES = {int(_E.DP_EVENT_DROP): "drop", int(_E.DP_EVENT_PUNT): "punt", int(_E.DP_EVENT_TRACE): "trace"}
_TC = {0: "pass", 2: "shot", 4: "consumed", 7: "redirect"}   # 4: flooded by clones or punted (monitor.h)
LOCK = "monitor.lock"


def parse_types(text: str) -> int:
    flags = 0
    for t in str(text).split(","):
        if t not in TYPES:
            raise UsageError(f"bad event type {t!r}: use {', '.join(TYPES)} (comma-separated)")
        flags |= TYPES[t]
    return flags


@contextlib.contextmanager
def running(node: Node, flags: int, sample: int = 1, rate: int = 10000):
    """Turn the events on (flags: TYPES bits) for the duration; yields a reader of decoded events."""
    require_root()
    st = node.require_up()
    if not 1 <= sample <= 1 << 20 or not 1 <= rate <= 1_000_000:
        raise UsageError("--sample must be 1..1048576 and --rate 1..1000000")
    lock = None
    for _ in range(20):              # the agent's tick takes the lock for a moment (clear_if_abandoned)
        lock = state.hold(node.name, LOCK)
        if lock is not None:
            break
        time.sleep(0.05)
    if lock is None:
        raise Conflict(f"another `dataplane monitor` runs on node {node.name}")
    try:
        with node.maps() as m:
            reader = RingReader(os.path.join(st.pin_dir, "dp_events"))
            try:
                reader.read(0, limit=1 << 20)          # what an earlier monitor left
                events = Events(node, m, reader)
                with state.locked(node.name):          # dp_config: no `up` writes it meanwhile
                    fpconfig.set_monitor(m, flags, sample, 1_000_000_000 // rate)
                try:
                    yield events
                finally:
                    with state.locked(node.name):
                        fpconfig.set_monitor(m, 0, 0, 0)
            finally:
                reader.close()
    finally:
        os.close(lock)


def clear_if_abandoned(node: Node) -> bool:
    """Events on but no monitor holds the lock (it was killed): turn them off."""
    lock = state.hold(node.name, LOCK)
    if lock is None:
        return False
    try:
        with node.maps() as m:
            cfg = m.dp_config.get(ctypes.c_uint32(0))
            if cfg is None or not cfg.flags & MASK:
                return False
            with state.locked(node.name):
                fpconfig.set_monitor(m, 0, 0, 0)
            return True
    finally:
        os.close(lock)


class Events:
    def __init__(self, node: Node, maps, reader: RingReader):
        self.node, self.maps, self.reader = node, maps, reader
        self._vni = {}
        self._ifname = {}
        self.size = ctypes.sizeof(_A.structs["dp_event"])
        self._base = self._lost_by_slot()     # slot -> (vni, events lost before this monitor)
        self._lost: dict[int, tuple] = {}     # slot -> (vni, lost during this monitor, as last read)

    def read(self, timeout_s: float = 0.5) -> list[dict]:
        return [self.decode(r) for r in self.reader.read(timeout_s, limit=1024)]

    def lost(self, vni: int | None = None) -> int:
        """Events the fast path could not write during this monitor (over the rate, or the ring
        full), of one VNI if given (0: of none). It never goes down: a VNI unserved meanwhile
        keeps what it lost."""
        for slot, (v, n) in self._lost_by_slot().items():
            was = self._lost.get(slot, (v, 0))[1]
            self._lost[slot] = (v, max(was, n - self._base.get(slot, (v, 0))[1]))
        return sum(n for v, n in self._lost.values() if vni is None or v == vni)

    def _lost_by_slot(self) -> dict[int, tuple]:
        slots = {0: 0} | {n.slot: k.value for k, n in self.maps.dp_networks.items()}
        return {s: (v, sum(cpu.monitor_lost for cpu in (self.maps.dp_stats.get(ctypes.c_uint32(s)) or [])))
                for s, v in slots.items()}

    def decode(self, rec: bytes) -> dict:
        ev = _A.structs["dp_event"].from_buffer_copy(rec[:self.size].ljust(self.size, b"\0"))
        kind = _NAMES.get(ev.type, str(ev.type))
        if kind == "drop":
            names = abi.drop_names()
            reason = names[ev.reason] if ev.reason < len(names) else str(ev.reason)
        elif kind == "punt":
            reason = "unknown_dst" if ev.reason == int(_P.DP_PUNT_UNKNOWN_DST) else "arp_miss"
        else:
            reason = _TC.get(ev.reason, str(ev.reason))
        out = {"time": round(time.time(), 6), "type": kind, "reason": reason, "vni": self.vni_of(ev.slot),
               "ifindex": ev.ifindex, "interface": self.ifname(ev.ifindex), "len": ev.len}
        out.update(describe(bytes(ev.head[:ev.cap])))
        return out

    def vni_of(self, slot: int) -> int:
        if slot not in self._vni:
            self._vni = {n.slot: k.value for k, n in self.maps.dp_networks.items()}
            self._vni.setdefault(slot, 0)
        return self._vni[slot]

    def ifname(self, ifindex: int) -> str | None:
        if ifindex not in self._ifname:
            self._ifname = {i: n for n, i in ((n, netlink.link_index(self.node.netns, n))
                                                for n in netlink.link_names(self.node.netns))}
            self._ifname.setdefault(ifindex, None)
        return self._ifname[ifindex]


def describe(frame: bytes, depth: int = 0) -> dict:
    """MACs, ethertype, addresses, protocol and ports of a frame's head; a VXLAN
    frame's inner frame under "inner"."""
    if len(frame) < 14:
        return {}
    out = {"src_mac": model.mac_str(frame[6:12]), "dst_mac": model.mac_str(frame[0:6])}
    etype = struct.unpack_from("!H", frame, 12)[0]
    out["ethertype"] = f"0x{etype:04x}"
    if etype == 0x0806 and len(frame) >= 42:
        out.update(proto="arp", op=struct.unpack_from("!H", frame, 20)[0],
                   src_ip=socket.inet_ntoa(frame[28:32]), dst_ip=socket.inet_ntoa(frame[38:42]))
    elif etype == 0x0800 and len(frame) >= 34:
        ihl = (frame[14] & 0xF) * 4
        proto = frame[23]
        out.update(src_ip=socket.inet_ntoa(frame[26:30]), dst_ip=socket.inet_ntoa(frame[30:34]),
                   proto={1: "icmp", 6: "tcp", 17: "udp"}.get(proto, str(proto)))
        l4 = 14 + ihl
        if proto in (6, 17) and len(frame) >= l4 + 4:
            out["src_port"], out["dst_port"] = struct.unpack_from("!HH", frame, l4)
            if proto == 17 and depth == 0 and out["dst_port"] == model.VXLAN_PORT and len(frame) >= l4 + 16:
                out["vxlan_vni"] = int.from_bytes(frame[l4 + 12:l4 + 15], "big")
                out["inner"] = describe(frame[l4 + 16:], depth + 1)
    return out
