"""Named scapy packet builders for every test. VXLAN is always built with
flags=0x08 (the I bit): scapy's default 0x0C sets a GPE bit that Linux rejects."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

VXLAN_PORT = 4789


def inner_ipv4(src_mac, dst_mac, src_ip, dst_ip, payload=b"dataplane" * 4, proto="udp"):
    l4 = UDP(sport=40000, dport=7) if proto == "udp" else ICMP() if proto == "icmp" else TCP(sport=40000, dport=80)
    return Ether(src=src_mac, dst=dst_mac) / IP(src=src_ip, dst=dst_ip) / l4 / Raw(payload)


def arp_request(src_mac, src_ip, target_ip):
    return Ether(src=src_mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=src_mac, psrc=src_ip,
                                                                hwdst="00:00:00:00:00:00", pdst=target_ip)


def arp_reply(src_mac, src_ip, dst_mac, dst_ip):
    return Ether(src=src_mac, dst=dst_mac) / ARP(op=2, hwsrc=src_mac, psrc=src_ip, hwdst=dst_mac, pdst=dst_ip)


def vxlan(inner, vni, outer_src_ip, outer_dst_ip, outer_src_mac="02:00:00:00:00:aa",
          outer_dst_mac="02:00:00:00:00:bb", sport=50000, dport=VXLAN_PORT, flags=0x08, ip_id=0, df=True):
    """An RFC 7348 frame as the fast path writes it: DF, TTL 64, UDP checksum 0."""
    return (Ether(src=outer_src_mac, dst=outer_dst_mac)
            / IP(src=outer_src_ip, dst=outer_dst_ip, id=ip_id, ttl=64, flags="DF" if df else 0)
            / UDP(sport=sport, dport=dport, chksum=0)
            / VXLAN(flags=flags, vni=vni)
            / inner)


def _round(h: int, k: int) -> int:
    m = 0xFFFFFFFF
    k = (k * 0xCC9E2D51) & m
    k = ((k << 15) | (k >> 17)) & m
    k = (k * 0x1B873593) & m
    h ^= k
    h = ((h << 13) | (h >> 19)) & m
    return (h * 5 + 0xE6546B64) & m


def flow_hash(frame: bytes) -> int:
    """Independent Python model of the inner flow hash (bpf/lib/wire.h):
    MurmurHash3 rounds over four little-endian words, then its finaliser."""
    le = lambda b: int.from_bytes(b, "little")  # noqa: E731
    words = [0, 0, 0, 0]
    if len(frame) >= 34 and frame[12:14] == b"\x08\x00" and frame[14] >> 4 == 4 and frame[14] & 15 >= 5:
        ip = frame[14:]
        ihl = (ip[0] & 15) * 4
        frag = int.from_bytes(ip[6:8], "big")
        words = [le(ip[12:16]), le(ip[16:20]), ip[9], 0]
        if not frag & 0x3FFF and ip[9] in (6, 17) and len(ip) >= ihl + 4:
            words[3] = le(ip[ihl:ihl + 4])
    elif len(frame) >= 12:
        words = [le(frame[0:4]), le(frame[4:8]), le(frame[8:12]), 0]
    h = 0x9E3779B9
    for w in words:
        h = _round(h, w)
    h ^= 16
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def src_port(frame: bytes, lo: int = 49152, hi: int = 65535) -> int:
    return lo if hi <= lo else lo + ((flow_hash(bytes(frame)) * (hi - lo)) >> 32)
