"""Container runtimes: the Docker remote network driver and the CNI plugin, both clients of the
agent's API (agent.client) only."""

from __future__ import annotations

import ipaddress


def gateway_arg(subnet: str, gw: str | None) -> dict:
    """network_ensure's gateway argument from the runtime's IPAM: none for the subnet's first
    address, which is what a network gets without one (and an agent older than the argument
    refuses it), nor for one that is no host address of the subnet."""
    net = ipaddress.IPv4Network(subnet)
    try:
        ip = ipaddress.IPv4Address(gw) if gw else None
    except ValueError:
        return {}
    hosts = ip is not None and ip in net and ip not in (net.network_address, net.broadcast_address)
    return {"gateway": str(ip)} if hosts and ip != next(net.hosts()) else {}
