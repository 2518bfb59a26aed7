"""A lab host whose VTEP is the Linux kernel's own vxlan device (and a
bridge), as Docker's overlay driver and flannel build it: the peer that
shows this fast path interoperates with theirs. Everything it creates is
named with the lab prefix, so `lab down` removes it."""

from __future__ import annotations

from lab import topology as lab
from dataplane.kernel import netlink

NS = f"{lab.PREFIX}kv"               # the kernel VTEP host
SANDBOX = f"{lab.PREFIX}kv-sb"       # its one sandbox
PORT = f"{lab.PREFIX}kvp"            # its port on the underlay bridge


def _ip(*argv: str) -> None:
    lab.run_checked(["ip", *argv])


def add(vni: int, vtep: str, sandbox_ip: str, prefix: int, peers: list[str], mtu: int = 1450) -> dict:
    """Host NS on the lab underlay at vtep, vxlan device for vni on port
    4789 flooding to peers (static FDB, MACs learned), and a sandbox."""
    lab.underlay_host(NS, PORT, "eth0", vtep)
    _ip("-n", NS, "link", "add", "vxlan0", "type", "vxlan", "id", str(vni), "local", vtep, "dstport", "4789",
        "dev", "eth0", "learning")
    _ip("-n", NS, "link", "add", "kbr0", "type", "bridge")
    _ip("-n", NS, "link", "set", "vxlan0", "master", "kbr0", "up")
    _ip("-n", NS, "link", "set", "kbr0", "up")
    for p in peers:
        lab.run_checked(["bridge", "-n", NS, "fdb", "append", "00:00:00:00:00:00", "dev", "vxlan0", "dst", p])
    netlink.ns_create(SANDBOX)
    netlink.sysctl(SANDBOX, "net.ipv6.conf.all.disable_ipv6", "1")
    _ip("-n", NS, "link", "add", "sb0", "mtu", str(mtu), "type", "veth", "peer", "name", "eth0",
        "netns", SANDBOX, "mtu", str(mtu))
    _ip("-n", NS, "link", "set", "sb0", "master", "kbr0", "up")
    netlink.link_up(SANDBOX, "lo")
    netlink.link_up(SANDBOX, "eth0", sandbox_ip, prefix)
    return {"netns": NS, "vtep": vtep, "sandbox": SANDBOX, "ip": sandbox_ip}


def remove() -> None:
    for ns in (SANDBOX, NS):
        if ns in netlink.ns_list():
            netlink.ns_delete(ns)
    if netlink.link_index(lab.UNDERLAY_NS, PORT):
        _ip("-n", lab.UNDERLAY_NS, "link", "del", PORT)
