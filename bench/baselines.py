"""The two baselines beside dataplane in the same lab, each on its own uplink
and underlay bridge so no mode's traffic crosses another's programs:

- routing: no overlay; sandbox -> host router -> underlay -> host router -> sandbox (the ceiling).
- vxlan:   the kernel's vxlan device + a bridge per host (Docker overlay's and flannel's data path),
           on UDP port 8472 (flannel's): dataplane's receive-GRO device holds 4789 in the same
           host namespace (node/rxgro.py), and one port takes one vxlan socket there.
"""

from __future__ import annotations

from contextlib import contextmanager

from lab import nic, topology as lab
from dataplane.core import model
from dataplane.kernel import gso as linkgso, netlink
from dataplane.node import vxlanguard

MODES = ("routing", "vxlan", "dataplane")


def sh(*argv: str) -> None:
    lab.run_checked(list(argv))


def _uplink(h: int, mode: str, ip: str, gso: int = linkgso.LEGACY_MAX, nic_like: bool = False) -> str:
    """Host h gets uplink <mode[0]>ul0 on its own bridge br-<mode> in the underlay namespace."""
    ns, br, dev, port = lab.host_ns(h), f"br-{mode}", f"{mode[0]}ul0", f"{mode[0]}ul-h{h}"
    if not netlink.link_index(lab.UNDERLAY_NS, br):
        sh("ip", "-n", lab.UNDERLAY_NS, "link", "add", br, "type", "bridge")
        sh("ip", "-n", lab.UNDERLAY_NS, "link", "set", br, "up")
    sh("ip", "-n", lab.UNDERLAY_NS, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns)
    sh("ip", "-n", lab.UNDERLAY_NS, "link", "set", port, "master", br, "up")
    linkgso.set_veth(gso, (lab.UNDERLAY_NS, port), (ns, dev))
    if nic_like:
        nic.make(lab.UNDERLAY_NS, port, ns, dev)
    netlink.link_up(ns, dev, ip, 24)
    return dev


def _sandbox(name: str, host_ns: str, host_if: str, ip: str, prefix: int, mtu: int,
             gso: int = linkgso.LEGACY_MAX) -> None:
    netlink.ns_create(name)
    netlink.sysctl(name, "net.ipv6.conf.all.disable_ipv6", "1")
    sh("ip", "-n", host_ns, "link", "add", host_if, "mtu", str(mtu), "type", "veth", "peer", "name", "eth0",
       "netns", name, "mtu", str(mtu))
    sh("ip", "-n", host_ns, "link", "set", host_if, "up")
    linkgso.set_veth(gso, (host_ns, host_if), (name, "eth0"))
    netlink.link_up(name, "lo")
    netlink.link_up(name, "eth0", ip, prefix)


def up(gso: int = linkgso.LEGACY_MAX, nic_like: bool = False, xdp_guard: bool = False) -> dict[str, list[dict]]:
    """The bench lab: two hosts with one VNI-256 sandbox each and no registry (data path only:
    a registry lab gives VNI 256 a gateway, whose NAT rule in the host namespaces puts
    conntrack on the baselines' forwarded frames too), with both baselines beside it.
    Sandboxes per mode, as setup(); dataplane's are the lab's own."""
    lab.up(2, [256], per_host=1, xdp_guard=xdp_guard, registry="none", gso_max_size=gso, nic_like=nic_like)
    for h in (1, 2):
        # node/vxlanguard.py's rule hooks mangle's FORWARD, which every forwarded frame of the
        # baselines then crosses and dataplane's never do (tc redirects them): routing read 1.11x
        # its CPU per 64-byte frame with it (BENCHMARKS, "On an Intel Xeon guest").
        vxlanguard.remove(lab.host_ns(h), lab.UPLINK, model.VXLAN_PORT)
    info = lab.ls()
    pairs = setup(2, gso, nic_like)
    pairs["dataplane"] = [next(s for s in info["sandboxes"] if s["host"] == f"h{h}") for h in (1, 2)]
    return pairs


def setup(hosts: int = 2, gso: int = linkgso.LEGACY_MAX, nic_like: bool = False) -> dict[str, list[dict]]:
    """Sandboxes per mode: [{'name', 'ip'}] indexed by host - 1. The dataplane
    mode's sandboxes are the lab's own (VNI 256). gso (the IPv4 GSO limit,
    BIG TCP above 64 KB) applies to routing; the vxlan device cannot carry
    more than 64 KB, so its mode keeps the default."""
    out: dict[str, list[dict]] = {"routing": [], "vxlan": []}
    for h in range(1, hosts + 1):
        ns = lab.host_ns(h)
        # routing
        _uplink(h, "routing", f"198.18.2.{h}", gso, nic_like)
        sb = f"{lab.PREFIX}b-r{h}"
        _sandbox(sb, ns, "rv0", f"10.251.{h}.2", 24, 1500, gso)
        netlink.link_up(ns, "rv0", f"10.251.{h}.1", 24)
        sh("ip", "-n", sb, "route", "add", "default", "via", f"10.251.{h}.1")
        netlink.sysctl(ns, "net.ipv4.ip_forward", "1")
        for j in range(1, hosts + 1):
            if j != h:
                sh("ip", "-n", ns, "route", "add", f"10.251.{j}.0/24", "via", f"198.18.2.{j}")
        out["routing"].append({"name": sb, "ip": f"10.251.{h}.2"})
        # kernel vxlan + bridge
        dev = _uplink(h, "vxlan", f"198.18.1.{h}", nic_like=nic_like)
        sh("ip", "-n", ns, "link", "add", "vx256", "type", "vxlan", "id", "256", "local", f"198.18.1.{h}",
           "dstport", "8472", "dev", dev)
        sh("ip", "-n", ns, "link", "add", "brk", "type", "bridge")
        sh("ip", "-n", ns, "link", "set", "vx256", "master", "brk", "up")
        sh("ip", "-n", ns, "link", "set", "brk", "up")
        for j in range(1, hosts + 1):
            if j != h:
                sh("bridge", "-n", ns, "fdb", "append", "00:00:00:00:00:00", "dev", "vx256", "dst", f"198.18.1.{j}")
        sb = f"{lab.PREFIX}b-k{h}"
        _sandbox(sb, ns, "kv0", f"10.250.0.{h}", 24, 1450)
        sh("ip", "-n", ns, "link", "set", "kv0", "master", "brk")
        out["vxlan"].append({"name": sb, "ip": f"10.250.0.{h}"})
    return out


ALLOWED = "net.ipv4.tcp_allowed_congestion_control"      # the host's only (the first namespace)
CC = "net.ipv4.tcp_congestion_control"


@contextmanager
def congestion_control(pairs: dict[str, list[dict]], cc: str | None):
    """Every sandbox's default TCP congestion control is cc for the block (None: the kernel's,
    which new namespaces take). Not iperf3's -C: a socket switched from BBR after BBR's init
    keeps the kernel's internal pacing BBR turned on, which cubic never turns off, so `-C
    cubic` measured neither BBR nor a cubic host (docs/BENCHMARKS.md, "--cc"). A namespace
    other than the first may only default to an algorithm the host allows for everyone, so
    cc is added to tcp_allowed_congestion_control for the block."""
    if cc is None:
        yield
        return
    allowed = netlink.sysctl_get(None, ALLOWED).split()
    names = [s["name"] for sbs in pairs.values() for s in sbs]
    host = netlink.sysctl_get(None, CC)
    try:
        try:
            if cc not in allowed:
                netlink.sysctl(None, ALLOWED, " ".join(allowed + [cc]))
            for ns in names:
                netlink.sysctl(ns, CC, cc)
            yield
        finally:
            for ns in names:
                if netlink.ns_exists(ns):
                    netlink.sysctl(ns, CC, host)
    finally:                            # the host's list first of all: it outlives the lab
        if cc not in allowed:
            netlink.sysctl(None, ALLOWED, " ".join(allowed))


def own(a: dict, b: dict, vni: int = 256) -> None:
    """Static entries for the dataplane pair's two MACs (a in h1, b in h2), as a node with a
    registry has them. The lab has no registry: without them each MAC is learned, and frames
    take the learned path's lookups (the peer check, learning, the learned destination)."""
    from dataplane.core.keys import mac_key  # noqa: PLC0415 - the dataplane package, for this only
    from dataplane.node import Node, fdb  # noqa: PLC0415
    for host, mac, vtep_ip in ((1, b["mac"], lab.vtep_ip(2)), (2, a["mac"], lab.vtep_ip(1))):
        with Node(lab.host_ns(host)).maps() as m:
            m.dp_fdb.put(*fdb.static_entry(vni, mac, vtep_ip))
            m.dp_learned.delete(mac_key(vni, mac))
