"""The agent's slow path: frames the fast path punted (dp_punts ring
buffer, see bpf/lib/punt.h) and how they are sent on once resolved.

The agent decides where a frame goes (punts.py, with the registry view);
this module reads the punts and sends frames out: encapsulated by the C
helper (cwire.encap, the same bytes as the fast path) on the uplink with
the next hop's MACs from dp_nexthops, or, when there is no next hop yet,
as a UDP datagram that the kernel routes."""

from __future__ import annotations

import ctypes
import os
import socket
import time
from dataclasses import dataclass

from dataplane.core import abi, cwire, model
from dataplane.core.keys import be32
from dataplane.core.state import NodeConfig
from dataplane.kernel.maps import NodeMaps
from dataplane.kernel.ringbuf import RingReader

_S = abi.load().structs
_R = abi.load().enums["dp_punt_reason"]
UNKNOWN_DST = int(_R.DP_PUNT_UNKNOWN_DST)
ARP_MISS = int(_R.DP_PUNT_ARP_MISS)
STALE_NS = 2_000_000_000      # a punt older than this (agent was away) is dropped, not sent late


@dataclass(frozen=True)
class Punt:
    vni: int
    ifindex: int
    reason: int
    frame: bytes
    age_ns: int

    @property
    def dst_mac(self) -> str:
        return model.mac_str(self.frame[:6])

    @property
    def arp_target(self) -> str | None:
        """The address an ARP request asks for."""
        if self.reason != ARP_MISS or len(self.frame) < 42:
            return None
        return socket.inet_ntoa(self.frame[38:42])


def parse(rec: bytes) -> Punt:
    size = ctypes.sizeof(_S["dp_punt"])
    p = _S["dp_punt"].from_buffer_copy(rec[:size].ljust(size, b"\0"))
    n = min(p.len, len(p.frame))
    return Punt(p.vni, p.ifindex, p.reason, bytes(p.frame[:n]), time.monotonic_ns() - p.ts_ns)


class Sender:
    """Sends inner frames to remote VTEPs from user space."""

    def __init__(self, maps: NodeMaps, config: NodeConfig):
        self.maps = maps
        self.local_ip = config.local_ip
        self.port = config.port
        self.sport = (config.src_port_min, config.src_port_max)
        self.raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((self.local_ip, 0))
        # Never block the agent's loop on a full queue: a frame that cannot go now is dropped
        # (the caller counts it), as the fast path would drop it.
        self.raw.setblocking(False)
        self.udp.setblocking(False)

    def send(self, vni: int, vtep: str, frame: bytes) -> str:
        """Send one frame to vtep; returns how ("nexthop" or "routed")."""
        nh = self.maps.dp_nexthops.get(ctypes.c_uint32(be32(vtep)))
        zero = b"\0" * 6
        pkt = cwire.encap(frame, smac=bytes(nh.smac) if nh else zero, dmac=bytes(nh.dmac) if nh else zero,
                          src=self.local_ip, dst=vtep, vni=vni, dport=self.port,
                          sport_min=self.sport[0], sport_max=self.sport[1])
        if nh is not None and nh.ifindex:
            self.raw.sendto(pkt, (socket.if_indextoname(nh.ifindex), 0))
            return "nexthop"
        self.udp.sendto(pkt[42:], (vtep, self.port))   # VXLAN header + frame; the kernel adds the rest
        return "routed"

    def close(self) -> None:
        self.raw.close()
        self.udp.close()


class PuntReader:
    def __init__(self, pin_dir: str):
        self.ring = RingReader(os.path.join(pin_dir, "dp_punts"))

    def read(self, timeout_s: float, limit: int = 256) -> list[bytes]:
        """Raw records (parse() each): the caller may refuse some before parsing."""
        return self.ring.read(timeout_s, limit)

    def close(self) -> None:
        self.ring.close()
