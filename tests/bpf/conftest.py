"""Loads the real programs into the kernel under a private pin directory and
runs packets through them with BPF_PROG_TEST_RUN. Map entries a test needs
are written per test and the whole directory is removed afterwards."""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import time
import sys

import pytest

from tests.conftest import require_privileges

LOCAL_IP = "198.18.0.1"
PEER_IP = "198.18.0.2"
OTHER_PEER_IP = "198.18.0.3"
VNI = 256
OTHER_VNI = 257
EP_IFINDEX = 1000           # host side of a local endpoint (not a real link: test runs only)
EP2_IFINDEX = 1001
EP_MAC, EP_IP = "02:42:0a:01:00:0b", "10.1.0.11"
EP2_MAC, EP2_IP = "02:42:0a:01:00:0c", "10.1.0.12"
REMOTE_MAC, REMOTE_IP = "02:42:0a:01:00:15", "10.1.0.21"
UPLINK_IFINDEX = 900
NH_SMAC, NH_DMAC = "02:00:00:00:00:aa", "02:00:00:00:00:bb"
SPORT = 50000               # src port range pinned to one value so encapsulated bytes are exact

TC_ACT_OK, TC_ACT_SHOT, TC_ACT_STOLEN, TC_ACT_REDIRECT = 0, 2, 4, 7
XDP_DROP, XDP_PASS = 1, 2


def be32(ip: str) -> int:
    return int.from_bytes(socket.inet_aton(ip), sys.byteorder)


def tc_ctx(ingress_ifindex: int = 0, gso_size: int = 0) -> bytes:
    """A struct __sk_buff for BPF_PROG_TEST_RUN of a tc program: ingress_ifindex (offset 36) and
    gso_size (offset 176; the kernel takes it into the skb's shared info), the rest zero."""
    ctx = (ctypes.c_uint32 * 48)()
    ctx[9] = ingress_ifindex
    ctx[44] = gso_size
    return bytes(ctx)


class Harness:
    def __init__(self, pin_dir: str):
        from dataplane.core import abi, cwire
        from dataplane.kernel import loader as fastpath
        from dataplane.kernel.maps import NodeMaps

        self.abi = abi.load()
        self.S = self.abi.structs
        self.cwire = cwire
        self.loaded = fastpath.load(pin_dir, quiet=True)
        self.fds = self.loaded.fds
        self.maps = NodeMaps(pin_dir)
        self.drop = self.abi.enums["dp_drop"]
        from dataplane.kernel import clock
        self.clock = clock.calibrate(pin_dir)     # (tick ns, offset): dp_now_ns() on jiffies, as `up` sets it

    # --- map set-up ---------------------------------------------------------
    def mac_key(self, vni, mac):
        k = self.S["dp_mac_key"](vni=vni)
        ctypes.memmove(k.mac, bytes.fromhex(mac.replace(":", "")), 6)
        return k

    def configure(self, peer_check=False, src_port=(SPORT, SPORT), punt=False, fdb_age_ns=300 * 10**9,
                  storm_ns=(0, 0), overlay_storm_ns=(0, 0), overlay_host_ns=(0, 0), overlay_peer_ns=(0, 0),
                  learn_ns=(0, 0), clock=True):
        f = self.abi.enums["dp_cfg_flag"]
        flags = int(f.DP_CFG_PEER_CHECK) if peer_check else 0
        # An agent whose heartbeat reaches an hour ahead, or none.
        until = time.monotonic_ns() + 3600 * 10**9 if punt else 0
        self.maps.dp_agent.put(ctypes.c_uint32(0), self.S["dp_agent"](punt_until_ns=until))
        self.maps.dp_config.put(ctypes.c_uint32(0), self.S["dp_config"](
            local_ip=be32(LOCAL_IP), port=socket.htons(4789), src_port_min=src_port[0],
            src_port_max=src_port[1], flags=flags, uplink_ifindex=UPLINK_IFINDEX,
            fdb_age_ns=fdb_age_ns, storm_interval_ns=storm_ns[0], storm_burst_ns=storm_ns[1],
            clock_ns_per_jiffy=self.clock[0] if clock else 0, clock_offset_ns=self.clock[1] if clock else 0))
        self.maps.dp_meters.put(ctypes.c_uint32(0), self.S["dp_meters"](
            overlay_storm_interval_ns=overlay_storm_ns[0], overlay_storm_burst_ns=overlay_storm_ns[1],
            learn_interval_ns=learn_ns[0], learn_burst_ns=learn_ns[1],
            overlay_host_interval_ns=overlay_host_ns[0], overlay_host_burst_ns=overlay_host_ns[1],
            overlay_peer_interval_ns=overlay_peer_ns[0], overlay_peer_burst_ns=overlay_peer_ns[1]))

    def slot(self, vni: int) -> int:
        """The dp_stats slot of vni (0 for no VNI), given out as the control plane does."""
        if vni not in self.slots:
            self.slots[vni] = max(self.slots.values()) + 1
        return self.slots[vni]

    def network(self, vni: int, mtu: int = 1450, **kw):
        """A dp_network entry for vni, carrying its counters' slot."""
        return self.S["dp_network"](mtu=mtu, slot=self.slot(vni), **kw)

    def baseline(self):
        m, S = self.maps, self.S
        self.configure()
        self.slots = {0: 0}
        for vni in (VNI, OTHER_VNI):
            m.dp_networks.put(ctypes.c_uint32(vni), self.network(vni, n_local=0, n_flood=0))
        for vni in (0, VNI, OTHER_VNI):
            m.dp_stats.put(ctypes.c_uint32(self.slot(vni)), m.dp_stats.zero())
            m.dp_net_meters.put(ctypes.c_uint32(self.slot(vni)), m.dp_net_meters.zero())
        for ifx, mac, ip in ((EP_IFINDEX, EP_MAC, EP_IP), (EP2_IFINDEX, EP2_MAC, EP2_IP)):
            self.endpoint(ifx, mac, ip)
        for ip, mac in ((EP_IP, EP_MAC), (EP2_IP, EP2_MAC), (REMOTE_IP, REMOTE_MAC)):
            nv = S["dp_mac"]()
            ctypes.memmove(nv.mac, bytes.fromhex(mac.replace(":", "")), 6)
            m.dp_neigh.put(S["dp_ip_key"](vni=VNI, ip=be32(ip)), nv)
        m.dp_fdb.put(self.mac_key(VNI, REMOTE_MAC), S["dp_fdb_entry"](vtep=be32(PEER_IP), flags=1))
        m.dp_vteps.put(S["dp_ip_key"](vni=VNI, ip=be32(PEER_IP)), ctypes.c_uint32(0))
        for ip in (PEER_IP, OTHER_PEER_IP):
            self.nexthop(ip, flags=1)

    def endpoint(self, ifindex: int, mac: str, ip: str, vni: int = VNI, router: bool = False) -> None:
        """A local endpoint behind host-side ifindex: its dp_endpoints and dp_local_macs entries;
        router: a gateway's port, written as node/gateway.py writes it."""
        flags = int(self.abi.enums["dp_ep_flag"].DP_EP_ROUTER) if router else 0
        ep = self.S["dp_endpoint"](vni=vni, ip=be32(ip), slot=self.slot(vni), mtu=1450, flags=flags)
        ctypes.memmove(ep.mac, bytes.fromhex(mac.replace(":", "")), 6)
        self.maps.dp_endpoints.put(ctypes.c_uint32(ifindex), ep)
        oif = ifindex | (self.abi.constants["DP_LOCAL_ROUTER"] if router else 0)
        self.maps.dp_local_macs.put(self.mac_key(vni, mac), ctypes.c_uint32(oif))

    def nexthop(self, vtep: str, **kw) -> None:
        """dp_nexthops[vtep]: out of the uplink, NH_SMAC to NH_DMAC; kw: flags, updated_ns."""
        nh = self.S["dp_nexthop"](ifindex=UPLINK_IFINDEX, **kw)
        ctypes.memmove(nh.smac, bytes.fromhex(NH_SMAC.replace(":", "")), 6)
        ctypes.memmove(nh.dmac, bytes.fromhex(NH_DMAC.replace(":", "")), 6)
        self.maps.dp_nexthops.put(ctypes.c_uint32(be32(vtep)), nh)

    # --- running packets ------------------------------------------------------
    def run_tc(self, prog: str, frame: bytes, ingress_ifindex: int = 0, gso_size: int = 0):
        r = self.cwire.prog_test_run(self.fds[prog], bytes(frame), tc_ctx(ingress_ifindex, gso_size))
        return r.retval, r.data

    def run_xdp(self, frame: bytes):
        r = self.cwire.prog_test_run(self.fds["xdp_guard"], bytes(frame))
        return r.retval, r.data

    def stats(self, vni: int) -> dict:
        per = self.maps.dp_stats.get(ctypes.c_uint32(self.slot(vni)))
        out = {n: sum(getattr(c, n) for c in per) for n, _ in self.S["dp_stats"]._fields_ if n != "drops"}
        out["drops"] = [sum(c.drops[i] for c in per) for i in range(self.abi.constants["DP_DROP_SLOTS"])]
        out["learn_limited"] = self.maps.dp_net_meters.get(ctypes.c_uint32(self.slot(vni))).learn_limited
        return out

    def meter_state(self, vni: int, **fields) -> None:
        """dp_net_meters[vni's slot]: its meters' state as given, the rest zero."""
        self.maps.dp_net_meters.put(ctypes.c_uint32(self.slot(vni)), self.S["dp_net_meter"](**fields))

    def close(self):
        self.maps.close()
        self.loaded.close()


@pytest.fixture(scope="session")
def harness():
    require_privileges()
    from dataplane.kernel import loader as fastpath

    # "_": no node can have the name (model.NAME_RE), so the session sweep of dead runs' pins never hits one.
    pin_dir = os.path.join(fastpath.PIN_ROOT, f"_test-{os.getpid()}")
    # A compile, whatever ran before in this session (test_abi reads bcc's tables): no entry to load.
    import bcc
    from dataplane.kernel import progcache
    from dataplane.kernel.bundle import bundle
    progcache.forget(fastpath.cache_key(bundle().encode(), fastpath._cflags({}), bcc.__version__))
    h = None
    try:
        h = Harness(pin_dir)
        yield h
    finally:
        if h:
            h.close()
        shutil.rmtree(pin_dir, ignore_errors=True)
        if not os.environ.get("DATAPLANE_TESTS_BESIDE"):    # (beside the labs: theirs to make and remove)
            try:
                os.rmdir(fastpath.PIN_ROOT)
            except OSError:
                pass


@pytest.fixture
def hx(harness):
    """The harness with the baseline map contents, and no learned state from earlier tests."""
    harness.baseline()
    for k in harness.maps.dp_learned.keys():
        harness.maps.dp_learned.delete(k)
    yield harness
