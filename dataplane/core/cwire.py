"""The C helper (csrc/, bound with cffi in API mode): reference VXLAN
encapsulation and decapsulation built from the same wire.h the fast path
compiles, BPF_PROG_TEST_RUN, and the packet generator/counter."""

from __future__ import annotations

import os
import socket
from typing import NamedTuple

from dataplane.core import abi, model
from dataplane._cwire import ffi, lib
from dataplane.core.errors import DataplaneError
from dataplane.core.keys import be32, ip_str

DEFAULT_PORT = abi.load().constants["DP_VXLAN_PORT"]
SPORT_MIN = abi.load().constants["DP_SRC_PORT_MIN"]
SPORT_MAX = abi.load().constants["DP_SRC_PORT_MAX"]
ENCAP_LEN = abi.load().constants["DP_ENCAP_LEN"]
NOT_OURS = lib.dpw_not_ours()


class WireError(DataplaneError):
    """A frame the decoder refuses; .reason is the fast path's drop reason."""

    def __init__(self, reason: str):
        super().__init__(f"not a valid VXLAN frame: {reason}")
        self.reason = reason


class TestRun(NamedTuple):
    retval: int
    data: bytes
    ctx: bytes
    duration_ns: int


class Decap(NamedTuple):
    vni: int
    src: str
    dst: str
    sport: int
    dport: int
    inner: bytes


class GenStats(NamedTuple):
    packets: int
    bytes: int
    errors: int
    seconds: float

    @property
    def pps(self) -> float:
        return self.packets / self.seconds if self.seconds else 0.0


def _mac(m: str | bytes) -> bytes:
    return m if isinstance(m, bytes) else model.mac_bytes(m)


def ipv4_csum(header: bytes) -> int:
    """Checksum of a 20-byte IPv4 header (its check field ignored), as it goes on the wire (big-endian value)."""
    if len(header) < 20:
        raise ValueError("an IPv4 header is 20 bytes")
    c = lib.dpw_ipv4_csum(header[:20])
    return int.from_bytes(c.to_bytes(2, "little"), "big")


def flow_hash(frame: bytes) -> int:
    return lib.dpw_flow_hash(frame, len(frame))


def src_port(frame: bytes, lo: int = SPORT_MIN, hi: int = SPORT_MAX) -> int:
    """The outer UDP source port the fast path picks for this inner frame."""
    return lib.dpw_src_port(lo, hi, flow_hash(frame))


def encap(inner: bytes, *, smac, dmac, src: str, dst: str, vni: int, dport: int = DEFAULT_PORT,
          sport_min: int = SPORT_MIN, sport_max: int = SPORT_MAX, udp_csum: bool = False) -> bytes:
    a = ffi.new("struct dpw_encap_args *")
    ffi.memmove(a.smac, _mac(smac), 6)
    ffi.memmove(a.dmac, _mac(dmac), 6)
    a.src, a.dst = be32(src), be32(dst)
    a.dport, a.sport_min, a.sport_max, a.udp_csum, a.vni = dport, sport_min, sport_max, int(udp_csum), vni
    out = ffi.new("uint8_t[]", len(inner) + ENCAP_LEN)
    n = lib.dpw_encap(a, inner, len(inner), out, len(out))
    if n < 0:
        raise ValueError(f"cannot encapsulate: inner frame of {len(inner)} bytes, VNI {vni}")
    return ffi.buffer(out, n)[:]


def decap(pkt: bytes, local_ip: str | None = None, port: int = DEFAULT_PORT) -> Decap | None:
    """Judge an arriving frame exactly as the fast path does. None: not VXLAN
    for this VTEP (local_ip; by default the frame's own destination) and
    port; WireError: ours but malformed."""
    if local_ip is None:
        local_ip = socket.inet_ntoa(pkt[30:34]) if len(pkt) >= 34 else "0.0.0.0"
    r = ffi.new("struct dpw_decap_result *")
    ret = lib.dpw_decap(pkt, len(pkt), be32(local_ip), port, r)
    if ret == NOT_OURS:
        return None
    if ret < 0:
        names = abi.drop_names()
        raise WireError(names[-ret] if -ret < len(names) else str(ret))
    return Decap(r.vni, ip_str(r.src), ip_str(r.dst), r.sport, r.dport,
                 pkt[r.inner_off:r.inner_off + r.inner_len])


def prog_test_run(fd: int, data: bytes, ctx: bytes | None = None, repeat: int = 1,
                  out_room: int = 256) -> TestRun:
    """Run a loaded program on one packet (BPF_PROG_TEST_RUN)."""
    out = ffi.new("uint8_t[]", len(data) + out_room)
    ctx_out = ffi.new("uint8_t[]", max(len(ctx or b""), 1))
    res = ffi.new("struct dpw_test_run *")
    err = lib.dpw_prog_test_run(fd, data, len(data), out, len(out),
                                ctx if ctx is not None else ffi.NULL, len(ctx or b""),
                                ctx_out if ctx is not None else ffi.NULL, len(ctx_out), repeat, res)
    if err:
        raise DataplaneError(f"BPF_PROG_TEST_RUN on prog fd {fd}: {errno_name(-err)}")
    return TestRun(res.retval, ffi.buffer(out, res.data_out_len)[:],
                   ffi.buffer(ctx_out, res.ctx_out_len)[:] if ctx is not None else b"", res.duration_ns)


def errno_name(e: int) -> str:
    return f"{os.strerror(e)} (errno {e})"


def _ifindex(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise DataplaneError(f"no interface {ifname!r} in this network namespace") from None


def _stats(st) -> GenStats:
    return GenStats(st.packets, st.bytes, st.errors, st.elapsed_ns / 1e9)


def gen_send(ifname: str, frame: bytes, *, seconds: float, max_packets: int = 1 << 62,
             rate_pps: int = 0, flows: int = 1) -> GenStats:
    """Send copies of an Ethernet frame out of ifname (of this process's
    netns) until max_packets, seconds or forever-at-rate_pps runs out."""
    st = ffi.new("struct dpw_gen_stats *")
    err = lib.dpw_gen_send(_ifindex(ifname), frame, len(frame), flows, max_packets,
                           int(seconds * 1e9), rate_pps, st)
    if err:
        raise DataplaneError(f"generator on {ifname}: {errno_name(-err)}")
    return _stats(st)


def gen_count(ifname: str, seconds: float) -> GenStats:
    """Count frames arriving on ifname for a while."""
    st = ffi.new("struct dpw_gen_stats *")
    err = lib.dpw_gen_count(_ifindex(ifname), int(seconds * 1e9), st)
    if err:
        raise DataplaneError(f"counter on {ifname}: {errno_name(-err)}")
    return _stats(st)
