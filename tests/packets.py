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
