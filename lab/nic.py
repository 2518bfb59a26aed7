"""A NIC-like underlay link. A veth pair hands a GSO super-packet to its peer whole and
receives without GRO, so two lab hosts trade 64 KB frames, which no network between real
hosts carries. Here the wire end segments (software GSO: at most an MTU per frame, as a
NIC's TSO puts on the wire) and the host end runs GRO (veth's NAPI mode, as a NIC's driver
does), so a host receives what hosts with real NICs receive."""

from __future__ import annotations

import subprocess

from dataplane.core.errors import DataplaneError

_NO_OFFLOAD = ("tso", "off", "gso", "off", "tx-udp_tnl-segmentation", "off", "tx-udp_tnl-csum-segmentation", "off")


def make(wire_ns: str, wire_port: str, host_ns: str, uplink: str) -> None:
    for ns, dev, features in ((wire_ns, wire_port, _NO_OFFLOAD), (host_ns, uplink, ("gro", "on"))):
        r = subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-K", dev, *features], capture_output=True, text=True)
        if r.returncode:
            raise DataplaneError(f"ethtool -K {dev} {' '.join(features)} in {ns}: {r.stderr.strip()}")
