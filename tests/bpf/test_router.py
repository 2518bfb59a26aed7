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


HOST_IP = "10.1.0.40"                 # the router's host address (node/gateway.py)
HOST_MAC = "02:42:0a:01:00:28"        # derived from it, as the registry's record has it


@pytest.fixture
def host_address(gw):
    """The router as gateway.write_entries leaves it once the host has an address: the port's
    entry holds that address, and its MAC is local, flagged an alias of the router's."""
    import ctypes
    gw.endpoint(GW_IFINDEX, GW_MAC, HOST_IP, router=True)
    router, alias = gw.abi.constants["DP_LOCAL_ROUTER"], gw.abi.constants["DP_LOCAL_ALIAS"]
    gw.maps.dp_local_macs.put(gw.mac_key(VNI, GW_MAC), ctypes.c_uint32(GW_IFINDEX | router))
    gw.maps.dp_local_macs.put(gw.mac_key(VNI, HOST_MAC), ctypes.c_uint32(GW_IFINDEX | router | alias))
    yield gw
    gw.maps.dp_local_macs.delete(gw.mac_key(VNI, HOST_MAC))


def test_a_frame_to_the_routers_host_address_reaches_the_router_with_its_own_mac(host_address):
    """The reply of a DNAT's target, masqueraded to the host address: from a sandbox here and
    from another host. The router's device takes frames to its own MAC only."""
    hx = host_address
    here = P.inner_ipv4(EP_MAC, HOST_MAC, EP_IP, HOST_IP, proto="tcp")
    ret, out = hx.run_tc("from_endpoint", here, EP_IFINDEX)
    assert ret == TC_ACT_REDIRECT and Ether(out).dst == GW_MAC and out[6:] == bytes(here)[6:]
    far = P.inner_ipv4(REMOTE_MAC, HOST_MAC, REMOTE_IP, HOST_IP, proto="tcp")
    ret, out = hx.run_tc("from_overlay", P.vxlan(far, VNI, PEER_IP, LOCAL_IP))
    assert ret == TC_ACT_REDIRECT and Ether(out).dst == GW_MAC and out[6:] == bytes(far)[6:]
    to_gateway = P.inner_ipv4(EP_MAC, GW_MAC, EP_IP, ELSEWHERE, proto="tcp")
    assert hx.run_tc("from_endpoint", to_gateway, EP_IFINDEX)[1] == bytes(to_gateway), "the gateway's frames as ever"


def test_a_routers_frames_leave_from_its_host_addresses_mac(host_address):
    """The gateway's MAC is every host's router's: another host with a gateway of the network
    dropped a frame from it as its own (mac_conflict), and an ARP of the router, which names its
    host address, as a spoof. Whatever way the frame goes (to another host here; flooded and
    punted copies are made from the same rewritten frame). A router with no host address has
    the gateway's address in its port's entry, and sends from the gateway's MAC as before."""
    hx = host_address
    frame = P.inner_ipv4(GW_MAC, REMOTE_MAC, HOST_IP, REMOTE_IP, proto="tcp")
    ret, out = hx.run_tc("from_endpoint", frame, GW_IFINDEX)
    assert ret == TC_ACT_REDIRECT
    inner = Ether(out)[VXLAN].payload
    assert inner.src == HOST_MAC and bytes(inner)[:6] == bytes(frame)[:6] and bytes(inner)[12:] == bytes(frame)[12:]
    local = P.inner_ipv4(GW_MAC, EP_MAC, ELSEWHERE, EP_IP, proto="tcp")
    ret, out = hx.run_tc("from_endpoint", local, GW_IFINDEX)
    assert ret == TC_ACT_REDIRECT and Ether(out).src == HOST_MAC, "the world's reply to a sandbox here too"
    reply = P.arp_reply(GW_MAC, HOST_IP, REMOTE_MAC, REMOTE_IP)
    ret, out = hx.run_tc("from_endpoint", reply, GW_IFINDEX)
    arp = Ether(out)[VXLAN].payload
    assert ret == TC_ACT_REDIRECT and arp.src == HOST_MAC and arp["ARP"].hwsrc == HOST_MAC, arp.show(dump=True)
    hx.endpoint(GW_IFINDEX, GW_MAC, GW_IP, router=True)
    ret, out = hx.run_tc("from_endpoint", frame, GW_IFINDEX)
    assert ret == TC_ACT_REDIRECT and bytes(Ether(out)[VXLAN].payload) == bytes(frame)
