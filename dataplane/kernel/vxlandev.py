"""Kernel vxlan devices: which one holds a UDP port, and the collect_md device that
node/rxgro.py keeps (its socket lets the uplink's GRO merge our frames, and what
from_endpoint cannot encapsulate itself goes out through it)."""

from __future__ import annotations

from typing import NamedTuple

from dataplane.core.errors import KernelError
from dataplane.kernel.netlink import _kerr, _nlerror, ipr


def _vxlan_data(link):
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_DATA") if info is not None and info.get_attr("IFLA_INFO_KIND") == "vxlan" else None


def _port_range(data) -> tuple[int, int] | None:
    r = data.get_attr("IFLA_VXLAN_PORT_RANGE")
    return (r["low"], r["high"]) if r else None


def _read(netns: str | None, name: str | None):
    with ipr(netns) as s:
        try:
            links = s.get_links() if name is None else [ln for i in s.link_lookup(ifname=name) for ln in s.get_links(i)]
        except _nlerror() as e:
            raise _kerr(f"read vxlan devices{f' ({name})' if name else ''}", e) from None
    return [(ln, data) for ln in links if (data := _vxlan_data(ln)) is not None]


def _same(data, port: int, src_ports: tuple[int, int]) -> bool:
    """The device is what vxlan_external makes: external, no learning, that port and range."""
    return (data.get_attr("IFLA_VXLAN_PORT") == port and _port_range(data) == src_ports
            and data.get_attr("IFLA_VXLAN_COLLECT_METADATA") == 1 and data.get_attr("IFLA_VXLAN_LEARNING") == 0)


class Vxlan(NamedTuple):
    port: int
    up: bool
    ifindex: int
    tx_dropped: int | None      # frames it dropped on transmit (down, or a GSO packet it could not segment)


def vxlan_ports(netns: str | None, name: str | None = None) -> dict[str, Vxlan]:
    """{name: Vxlan} of every vxlan device in netns, or of the one named (one link read
    instead of a dump that decodes every link, endpoints included)."""
    return {ln.get_attr("IFLA_IFNAME"): Vxlan(data.get_attr("IFLA_VXLAN_PORT"), bool(ln["flags"] & 1), ln["index"],
                                              _tx_dropped(ln)) for ln, data in _read(netns, name)}


def _tx_dropped(link) -> int | None:
    stats = link.get_attr("IFLA_STATS64")
    return stats["tx_dropped"] if stats else None


def vxlan_external(netns: str | None, name: str, port: int, src_ports: tuple[int, int], mtu: int) -> int:
    """A collect_md ("external") vxlan device on UDP port `port`, without learning, outer source
    ports from src_ports, made down (its socket opens when it goes up); its ifindex. One of
    that name with another port or range is made again; the MTU is set either way."""
    have = _read(netns, name)
    with ipr(netns) as s:
        try:
            if have and _same(have[0][1], port, src_ports):
                idx = have[0][0]["index"]
                s.link("set", index=idx, mtu=mtu)
                return idx
            for idx in s.link_lookup(ifname=name):
                s.link("del", index=idx)
            s.link("add", ifname=name, kind="vxlan", vxlan_collect_metadata=1, vxlan_port=port, vxlan_learning=0,
                   vxlan_port_range={"low": src_ports[0], "high": src_ports[1]}, mtu=mtu)
        except _nlerror() as e:
            raise _kerr(f"make vxlan device {name} on port {port}", e) from None
        made = s.link_lookup(ifname=name)
    if not made:                        # deleted by someone else right after it was made
        raise KernelError(f"vxlan device {name} on port {port} went as it was made")
    return made[0]
