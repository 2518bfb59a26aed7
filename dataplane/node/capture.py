"""`dataplane capture`: a VNI's frames into a pcap file Wireshark opens.

Outer (default): the VNI's VXLAN frames as they cross the uplink, both ways.
A packet socket on the uplink sees them all: arriving frames before the tc
program decapsulates them, ours after it encapsulated and redirected them.
Inner (--inner): each endpoint's frames as its sandbox sends and receives
them, read on the sandbox's own interface inside its namespace: the frames
the fast path delivers with bpf_redirect_peer never cross the host side of
the veth, so a capture there (tcpdump's usual spot) would miss them. A
Docker endpoint's interface is in a namespace only the engine knows; for it
the host side is read, which sees what the container sends only."""

from __future__ import annotations

import select
import socket
import struct
import time

from dataplane.core import model
from dataplane.core.errors import NotFound, UsageError
from dataplane.kernel import netns as kns
from dataplane.node import endpoints
from dataplane.node.base import Node, require_root

ETH_P_ALL = 0x0003
SNAPLEN = 65535
LINKTYPE_ETHERNET = 1


def _packet_socket(ifname: str) -> socket.socket:
    """Opened with no protocol (it hears nothing yet), then bound to ifname and every protocol:
    opened with ETH_P_ALL it would queue other interfaces' frames before the bind."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind((ifname, ETH_P_ALL))
    except OSError:
        s.close()
        raise
    return s


def open_sockets(node: Node, vni: int, endpoint: str | None = None, inner: bool = False) -> list[tuple]:
    """(label, socket, namespace) to read: the uplink's, or each endpoint's."""
    require_root()
    st = node.require_up()
    if vni not in st.networks:
        raise NotFound(f"VNI {vni} is not served on node {node.name}")
    eps = [e for e in st.local_endpoints(vni) if endpoint in (None, e.name)]
    if endpoint is not None and not eps:
        raise NotFound(f"no endpoint {endpoint} on VNI {vni} here")
    if inner and not eps:
        raise NotFound(f"no endpoint of VNI {vni} on node {node.name}: --inner has nothing to capture "
                       "(the uplink carries the VNI's frames: leave out --inner)")
    if not inner:
        if endpoint is not None:
            raise UsageError("--endpoint goes with --inner (the uplink carries every endpoint's frames)")
        return [(st.config.underlay, kns.call_in_netns(node.netns, _packet_socket, st.config.underlay), node.netns)]
    out = []
    for e in eps:
        sb = e.sandbox or {}
        if "netns" in sb:                          # CNI: the runtime's namespace, by path
            where, ifname = sb["netns"], sb.get("ifname") or "eth0"
        elif "peer" in sb:                         # Docker: only the host side is ours to find
            where, ifname = node.netns, e.host_ifname
        else:
            where, ifname = endpoints.sandbox_netns(e), "eth0"
        out.append((e.name, kns.call_in_netns(where, _packet_socket, ifname), where))
    return out


def is_vni(frame: bytes, vni: int, port: int) -> bool:
    """An IPv4/UDP VXLAN frame of vni, to or from port."""
    if len(frame) < 14 + 20 + 8 + 8 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return False
    l4 = 14 + (frame[14] & 0xF) * 4
    if len(frame) < l4 + 16:
        return False
    sport, dport = struct.unpack_from("!HH", frame, l4)
    return port in (sport, dport) and int.from_bytes(frame[l4 + 12:l4 + 15], "big") == vni


class PcapWriter:
    def __init__(self, path: str):
        try:
            self.f = open(path, "wb")
        except OSError as e:
            raise UsageError(f"cannot write {path}: {e.strerror}") from None
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))

    def write(self, frame: bytes, ts: float, orig_len: int) -> None:
        cut = frame[:SNAPLEN]
        self.f.write(struct.pack("<IIII", int(ts), int((ts % 1) * 1e6), len(cut), orig_len) + cut)

    def close(self) -> None:
        self.f.close()


def run(node: Node, vni: int, path: str, count: int | None = None, timeout: float | None = None,
        endpoint: str | None = None, inner: bool = False, started=None) -> int:
    """Capture until count frames, timeout seconds, or ^C; returns frames written.
    started(): called once every check passed and the capture begins."""
    vni = model.parse_vni(vni)
    socks = open_sockets(node, vni, endpoint, inner)      # every check first: the file is emptied only then
    try:
        port = node.require_up().config.port
        out = PcapWriter(path)
        if started:
            started()
    except BaseException:
        for _, s, _ in socks:
            s.close()
        raise
    buf = bytearray(SNAPLEN)
    written = 0
    end = time.monotonic() + timeout if timeout else None
    try:
        while count is None or written < count:
            wait = 0.5 if end is None else max(0.0, min(0.5, end - time.monotonic()))
            if end is not None and wait == 0:
                break
            ready, _, _ = select.select([s for _, s, _ in socks], [], [], wait)
            for s in ready:
                n = s.recv_into(buf, 0, socket.MSG_TRUNC)     # n: the frame's whole length (GSO: > 64 KB)
                frame = bytes(buf[:min(n, SNAPLEN)])
                if not inner and not is_vni(frame, vni, port):
                    continue
                out.write(frame, time.time(), n)
                written += 1
                if count is not None and written >= count:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        out.close()
        for _, s, _ in socks:
            s.close()
    return written
