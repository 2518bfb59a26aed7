"""Device features (what `ethtool -K` sets), through the ethtool ioctl from a thread
inside the device's namespace (pyroute2's IoctlEthtool)."""

from __future__ import annotations

import errno
import os

from dataplane.core.errors import KernelError, NotFound
from dataplane.kernel.netns import call_in_netns

# Segmentation of packets that already carry a tunnel (NETIF_F_GSO_ENCAP_ALL). Off on the
# sandbox end of an endpoint, such a packet is cut there, in software, before from_endpoint
# sees it: a node without its vxlan device cannot cut it, and drops it (bpf/lib/encap.h,
# encap_marked; docs/DESIGN.md, "Sandboxes that send tunnelled traffic into the overlay").
TUNNEL_GSO = ("tx-udp_tnl-segmentation", "tx-udp_tnl-csum-segmentation", "tx-gre-segmentation",
              "tx-gre-csum-segmentation", "tx-ipxip4-segmentation", "tx-ipxip6-segmentation")


def _ioctl():
    from pyroute2.ethtool import ioctl  # noqa: PLC0415 (netlink._nlerror says why)
    return ioctl


def _active(e, names: tuple[str, ...]) -> dict[str, bool]:
    f = e.get_features()
    return {n: bool(f.is_active(n)) for n in names if n in f}


def features(netns: str | None, ifname: str, names: tuple[str, ...]) -> dict[str, bool]:
    """{name: on} for those of names the device has."""
    def get():
        e = _ioctl().IoctlEthtool(ifname)
        try:
            return _active(e, names)
        finally:
            e.close()
    return _call(netns, ifname, get)


def set_off(netns: str | None, ifname: str, names: tuple[str, ...]) -> None:
    """Turn names off on the device (those it can change); an error if one stays on."""
    def put():
        mod = _ioctl()
        e = mod.IoctlEthtool(ifname)
        try:
            f = e.get_features()
            for n in names:
                if n in f and f.is_available(n):
                    f.set_value(n, False)
            try:
                e.set_features(f)
            except mod.NotSupportedError:
                pass                 # a positive answer (ETHTOOL_F_WISH...): what it did is read below
            now = e.get_features()
            still = [n for n in names if n in now and now.is_active(n) and now.is_available(n)]
            if still:
                raise KernelError(f"ethtool: {', '.join(still)} stay on for {ifname}")
        finally:
            e.close()
    _call(netns, ifname, put)


def _call(netns: str | None, ifname: str, fn):
    try:
        return call_in_netns(netns, fn)
    except OSError as e:
        code = e.errno or 0
        if code == errno.ENODEV:
            raise NotFound(f"no interface {ifname!r}") from None
        raise KernelError(f"ethtool features of {ifname}: {os.strerror(code) if code else e} (errno {code})") from None
    except _ioctl().EthtoolError as e:
        if isinstance(e, _ioctl().NoSuchDevice):
            raise NotFound(f"no interface {ifname!r}") from None
        raise KernelError(f"ethtool features of {ifname}: not supported") from None
