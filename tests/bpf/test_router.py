"""What may not leave a network through its gateway (bpf/lib/router.h): UDP to the VXLAN
port. The host routes and masquerades what the gateway's router gets, so such a datagram
reached a peer VTEP from this host's own address, and the peer delivered its inner frame
into whichever VNI it named (the peer check and the owner check both pass for this host):
one network's sandbox wrote into another network. The same through from_overlay (a peer
relaying by our gateway). Everything else to the router goes as before."""

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from tests import packets as P
from tests.bpf.conftest import (EP_IFINDEX, EP_IP, EP_MAC, LOCAL_IP, PEER_IP, REMOTE_IP, REMOTE_MAC,
                                TC_ACT_REDIRECT, TC_ACT_SHOT, VNI)
from tests.bpf.test_local_copies import drops

GW_IFINDEX, GW_MAC, GW_IP = 1010, "02:42:0a:01:00:01", "10.1.0.1"
ELSEWHERE = "198.18.0.9"      # another host's VTEP, as the sandbox would aim


@pytest.fixture
def gw(hx):
    import ctypes
    hx.endpoint(GW_IFINDEX, GW_MAC, GW_IP, router=True)
    yield hx
    hx.maps.dp_endpoints.delete(ctypes.c_uint32(GW_IFINDEX))
    hx.maps.dp_local_macs.delete(hx.mac_key(VNI, GW_MAC))


def tunnelled(dport=4789, frag=0, flags=0, src_mac=EP_MAC, src_ip=EP_IP, options=None):
    """A sandbox's datagram for the world through its gateway, carrying VXLAN for VNI 999."""
    inner = P.inner_ipv4("02:42:0a:63:00:05", "02:42:0a:63:00:06", "10.99.0.5", "10.99.0.6")
    ip = IP(src=src_ip, dst=ELSEWHERE, frag=frag, flags=flags, **({"options": options} if options else {}))
    return Ether(src=src_mac, dst=GW_MAC) / ip / UDP(sport=40000, dport=dport) / VXLAN(flags=8, vni=999) / inner


def sent(hx, prog, frame, ifindex=0):
    return hx.run_tc(prog, bytes(frame), ifindex)[0]


def test_vxlan_from_a_sandbox_to_the_world_is_dropped_and_counted(gw):
    before = drops(gw, VNI, "TUNNEL_VIA_GATEWAY")
    assert sent(gw, "from_endpoint", tunnelled(), EP_IFINDEX) == TC_ACT_SHOT
    from scapy.layers.inet import IPOption_Router_Alert
    assert sent(gw, "from_endpoint", tunnelled(options=[IPOption_Router_Alert()]), EP_IFINDEX) == TC_ACT_SHOT
    assert sent(gw, "from_endpoint", tunnelled(flags="MF"), EP_IFINDEX) == TC_ACT_SHOT, "a first fragment"
    assert drops(gw, VNI, "TUNNEL_VIA_GATEWAY") == before + 3


def test_the_rest_goes_to_the_router_as_before(gw):
    local = gw.stats(VNI)["local_packets"]
    assert sent(gw, "from_endpoint", tunnelled(dport=53), EP_IFINDEX) == TC_ACT_REDIRECT
    # a later fragment has no UDP header to judge; without its first it is never reassembled
    later = Ether(src=EP_MAC, dst=GW_MAC) / IP(src=EP_IP, dst=ELSEWHERE, proto=17, frag=3) / Raw(b"\x12\xb5" * 20)
    assert sent(gw, "from_endpoint", later, EP_IFINDEX) == TC_ACT_REDIRECT
    tcp = P.inner_ipv4(EP_MAC, GW_MAC, EP_IP, ELSEWHERE, proto="tcp")
    tcp["TCP"].dport = 4789
    assert sent(gw, "from_endpoint", tcp, EP_IFINDEX) == TC_ACT_REDIRECT
    assert gw.stats(VNI)["local_packets"] == local + 3


def test_a_peers_vxlan_relayed_through_our_gateway_is_dropped(gw):
    inner = tunnelled(src_mac=REMOTE_MAC, src_ip=REMOTE_IP)
    before = drops(gw, VNI, "TUNNEL_VIA_GATEWAY")
    assert sent(gw, "from_overlay", P.vxlan(inner, VNI, PEER_IP, LOCAL_IP)) == TC_ACT_SHOT
    assert drops(gw, VNI, "TUNNEL_VIA_GATEWAY") == before + 1
    assert sent(gw, "from_overlay", P.vxlan(tunnelled(dport=53, src_mac=REMOTE_MAC, src_ip=REMOTE_IP), VNI, PEER_IP,
                                              LOCAL_IP)) == TC_ACT_REDIRECT
