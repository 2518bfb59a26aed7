"""The C generator and counter (csrc/gen.c) as commands, run inside a
sandbox namespace by bench/run:

    python -m bench.gen send --dst-mac M --src-ip A --dst-ip B --seconds S [--flows N] [--rate PPS]
    python -m bench.gen count --seconds S

Each prints one JSON line: packets, bytes, errors, seconds, pps.

`count` also binds a UDP socket on the frames' port and never reads it: the
frames reach a socket and are dropped at its full buffer. Without that sink the
receiving stack answered every frame with an ICMP port unreachable, which cost
a route lookup per frame and sent the errors back through the path under test
(the same load in every mode, so it pulled every ratio towards 1)."""

from __future__ import annotations

import argparse
import json
import socket
import sys

from dataplane.core import cwire


DISCARD_PORT = 9  # RFC 863; the frames' UDP destination and the counter's sink


def frame64(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str) -> bytes:
    """A 60-byte IPv4/UDP frame (64 on the wire with the FCS), UDP checksum 0."""
    payload = b"\0" * 18
    ip = bytearray(20)
    ip[0], ip[8], ip[9] = 0x45, 64, 17
    ip[2:4] = (20 + 8 + len(payload)).to_bytes(2, "big")
    ip[12:16], ip[16:20] = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    ip[10:12] = cwire.ipv4_csum(bytes(ip)).to_bytes(2, "big")
    udp = (10000).to_bytes(2, "big") + DISCARD_PORT.to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big") + b"\0\0"
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
    return eth + bytes(ip) + udp + payload


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench.gen")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("--ifname", default="eth0")
    s.add_argument("--dst-mac", required=True)
    s.add_argument("--src-ip", required=True)
    s.add_argument("--dst-ip", required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--flows", type=int, default=16)
    s.add_argument("--rate", type=int, default=0, help="packets/s, 0 = as fast as possible")
    c = sub.add_parser("count")
    c.add_argument("--ifname", default="eth0")
    c.add_argument("--seconds", type=float, required=True)
    a = p.parse_args(argv)
    if a.cmd == "send":
        with open(f"/sys/class/net/{a.ifname}/address") as f:
            src_mac = f.read().strip()
        st = cwire.gen_send(a.ifname, frame64(src_mac, a.dst_mac, a.src_ip, a.dst_ip), seconds=a.seconds,
                            rate_pps=a.rate, flows=a.flows)
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
            sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum
            sink.bind(("0.0.0.0", DISCARD_PORT))
            st = cwire.gen_count(a.ifname, a.seconds)
    print(json.dumps({**st._asdict(), "pps": st.pps}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
