"""Device features (what `ethtool -K` sets), through the ethtool ioctl from a thread
inside the device's namespace (pyroute2's IoctlEthtool)."""

from __future__ import annotations

import os

from dataplane.core.errors import KernelError
from dataplane.kernel.netns import call_in_netns

# Segmentation of packets that already carry a tunnel (NETIF_F_GSO_ENCAP_ALL). Off on the
# sandbox end of an endpoint, such a packet is cut there, in software, before from_endpoint
# adds our tunnel: its marks describe the tunnel it has, which ours cannot segment under
# (docs/DESIGN.md, "Sandboxes that send tunnelled traffic into the overlay").
TUNNEL_GSO = ("tx-udp_tnl-segmentation", "tx-udp_tnl-csum-segmentation", "tx-gre-segmentation",
              "tx-gre-csum-segmentation", "tx-ipxip4-segmentation", "tx-ipxip6-segmentation")


def _ioctl(ifname: str):
    from pyroute2.ethtool.ioctl import IoctlEthtool  # noqa: PLC0415 (netlink._nlerror says why)
    return IoctlEthtool(ifname)


def features(netns: str | None, ifname: str, names: tuple[str, ...]) -> dict[str, bool]:
    """{name: on} for those of names the device has."""
    def get():
        e = _ioctl(ifname)
        try:
            f = e.get_features()
            return {n: bool(f.is_active(n)) for n in names if n in f}
        finally:
            e.close()
    return _call(netns, ifname, get)


def set_off(netns: str | None, ifname: str, names: tuple[str, ...]) -> None:
    """Turn names off on the device (those it has; fixed ones stay as they are)."""
    def put():
        e = _ioctl(ifname)
        try:
            f = e.get_features()
            for n in names:
                if n in f and f.is_available(n):
                    f.set_value(n, False)
            e.set_features(f)
        finally:
            e.close()
    _call(netns, ifname, put)


def _call(netns: str | None, ifname: str, fn):
    try:
        return call_in_netns(netns, fn)
    except OSError as e:
        code = e.errno or 0
        raise KernelError(f"ethtool features of {ifname}: {os.strerror(code) if code else e} (errno {code})") from None
