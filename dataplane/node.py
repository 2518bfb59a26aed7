"""One VTEP ("node"): a host network namespace running the fast path.

up/down, endpoints, peers and the read-outs (fdb, stats) for one node. The
node is the host namespace this process runs in, or a named one (the lab's
simulated hosts). Its maps are pinned under /sys/fs/bpf/dataplane/<node>/ and
what it created is recorded in /run/dataplane/<node>/state.json.
"""

from __future__ import annotations

import ctypes
import hashlib
import ipaddress
import os
import shutil
import socket
import sys
import time

from . import abi, fastpath, linkgso, model, netlink, state
from .keys import be32 as _be32, ip_key as _ip_key, ip_str as _ip, mac_key as _mac_key, slot_key as _slot
from .errors import Conflict, DataplaneError, KernelError, NotFound, NotPermitted, UsageError
from .maps import NodeMaps

_S = abi.load().structs
_C = abi.load().constants
_E = abi.load().enums
HOST_NODE = "host"


def require_root() -> None:
    if os.geteuid() != 0:
        raise NotPermitted("dataplane needs root (BPF, tc and network namespaces)")


def flood_list(st: dict, vni: int) -> list[str]:
    """Static peers (--peer) first, then the VTEPs the agent learned from the registry."""
    key = str(vni)
    out = list(st["peers"].get(key, []))
    out += [ip for ip in st.get("registry_peers", {}).get(key, []) if ip not in out]
    return out[: abi.load().constants["DP_MAX_FLOOD"]]


def parse_sandbox(sb) -> dict | None:
    """Validate an endpoint's sandbox (model.Endpoint.sandbox); a copy of it."""
    if sb is None:
        return None
    if not isinstance(sb, dict) or ("netns" in sb) == ("peer" in sb):
        raise UsageError("sandbox must name either a netns (with ifname) or a peer interface")
    if "netns" in sb:
        if not isinstance(sb["netns"], str) or not sb["netns"].startswith("/"):
            raise UsageError(f"bad sandbox netns {sb['netns']!r}: an absolute path expected")
        model.parse_ifname(sb.get("ifname"))
    else:
        model.parse_ifname(sb["peer"])
    return dict(sb)


def host_ifname(endpoint: str) -> str:
    return "dp" + hashlib.sha1(endpoint.encode()).hexdigest()[:10]


class Node:
    def __init__(self, netns: str | None = None, name: str | None = None):
        if netns is not None:
            model.parse_name(netns, "namespace")
        self.netns = netns
        self.name = name or netns or HOST_NODE
        self.pin_dir = os.path.join(fastpath.PIN_ROOT, self.name)

    # --- state helpers -----------------------------------------------------

    def state(self) -> dict | None:
        return state.load(self.name)

    def _require_up(self) -> dict:
        st = self.state()
        if not st:
            where = f" in namespace {self.netns}" if self.netns else ""
            raise NotFound(f"dataplane is not up{where}: run `dataplane up --vni N` first")
        return st

    def _maps(self) -> NodeMaps:
        return NodeMaps(self.pin_dir)

    # --- up ----------------------------------------------------------------

    def up(self, vnis, underlay=None, local_ip=None, port=None, subnet=None, peers=(),
           peer_check=False, xdp_guard=False, fdb_age=None, map_sizes=None, quiet=False,
           registry: str | None = None, host_name: str | None = None, lease_ttl: int | None = None) -> dict:
        """Make this namespace a VTEP serving vnis. Idempotent; a second call
        reloads the programs (atomic replace) and adds what is new. With a
        registry, the node's agent adds the registry's networks and peers."""
        require_root()
        vnis = sorted({model.parse_vni(v) for v in vnis})
        if not vnis and not registry:
            raise UsageError("give at least one --vni")
        if host_name is not None:
            model.parse_name(host_name, "host name")
        if subnet is not None and len(vnis) != 1:
            raise UsageError("--subnet applies to exactly one --vni")
        subnet = model.parse_subnet(subnet) if subnet is not None else None
        port = model.parse_port(port) if port is not None else None
        peers = [str(model.parse_ipv4(p, "peer address")) for p in peers]
        fdb_age = model.parse_age(fdb_age) if fdb_age is not None else None
        if underlay is not None:
            model.parse_ifname(underlay)
        if self.netns and not netlink.ns_exists(self.netns):
            raise NotFound(f"network namespace {self.netns!r} does not exist")

        with state.locked(self.name):
            old = self.state()
            if old and underlay and underlay != old["config"]["underlay"]:
                raise Conflict(f"node {self.name} is up on {old['config']['underlay']}; run `dataplane down` first")
            underlay = underlay or (old["config"]["underlay"] if old else netlink.default_route_ifname(self.netns))
            if not underlay:
                raise UsageError("no --underlay given and no default route to take it from")
            link = netlink.link_info(self.netns, underlay)
            if local_ip is None:
                local_ip = old["config"]["local_ip"] if old else (link["ipv4"][0] if link["ipv4"] else None)
                if local_ip is None:
                    raise UsageError(f"{underlay} has no IPv4 address: give --local-ip")
            local_ip = str(model.parse_ipv4(local_ip, "local address"))
            if local_ip not in link["ipv4"]:
                raise UsageError(f"--local-ip {local_ip} is not an address of {underlay} ({', '.join(link['ipv4']) or 'none'})")
            if local_ip in peers:
                raise UsageError(f"peer {local_ip} is this node's own address")
            if old and registry and old.get("registry") not in (None, registry):
                raise Conflict(f"node {self.name} uses registry {old['registry']}; run `dataplane down` first")
            for vni in vnis:
                if old and subnet and str(vni) in old["networks"] and old["networks"][str(vni)]["subnet"] != str(subnet):
                    raise Conflict(f"VNI {vni} exists with subnet {old['networks'][str(vni)]['subnet']}")

            cfg = model.NodeConfig(**old["config"]) if old else model.NodeConfig(underlay=underlay, local_ip=local_ip)
            cfg.local_ip = local_ip
            cfg.port = port or cfg.port
            cfg.peer_check = peer_check or cfg.peer_check
            cfg.xdp_guard = xdp_guard or cfg.xdp_guard
            cfg.fdb_age_s = fdb_age or cfg.fdb_age_s
            st = old or {"node": self.name, "netns": self.netns, "pin_dir": self.pin_dir,
                         "networks": {}, "endpoints": {}, "peers": {}, "map_sizes": dict(map_sizes or {})}
            st["config"] = cfg.to_dict()
            if registry:
                st["registry"] = registry
                st["host_name"] = host_name or st.get("host_name") or self._default_host_name()
                st["lease_ttl"] = lease_ttl or st.get("lease_ttl")
            st["uplink_ifindex"] = link["index"]
            st["uplink_mtu"] = link["mtu"]
            st["uplink_mac"] = link["mac"]
            st["uplink_gso_max"] = linkgso.gso_ipv4_max(self.netns, link["name"])
            try:
                self._apply(st, vnis, subnet, peers, quiet)
            except BaseException:
                if not old:
                    self._teardown(st, quiet=True)
                raise
            state.save(self.name, st)
            return st

    def _default_host_name(self) -> str:
        return self.netns or socket.gethostname().split(".")[0]

    def _forwarding_key(self, st: dict) -> str:
        return f"net.ipv4.conf.{st['config']['underlay']}.forwarding"

    def _apply(self, st: dict, vnis, subnet, peers, quiet) -> None:
        # bpf_fib_lookup, which keeps the next-hop cache fresh, answers only for
        # an interface with IPv4 forwarding on (as container hosts run anyway).
        key = self._forwarding_key(st)
        if "restore_forwarding" not in st:
            st["restore_forwarding"] = netlink.sysctl_get(self.netns, key)
        netlink.sysctl(self.netns, key, "1")
        loaded = fastpath.load(self.pin_dir, st.get("map_sizes"), quiet=quiet)
        try:
            with self._maps() as m:
                self._write_config(m, st)
                for vni in vnis:
                    self._add_network(m, st, vni, subnet)
                # New programs go in by replacing the filters in place: no moment without one.
                netlink.tc_attach(self.netns, st["uplink_ifindex"], loaded.fds["from_overlay"], "from_overlay")
                for ep in st["endpoints"].values():
                    netlink.tc_attach(self.netns, ep["ifindex"], loaded.fds["from_endpoint"], "from_endpoint")
                if st["config"]["xdp_guard"]:
                    netlink.xdp_attach(self.netns, st["uplink_ifindex"], loaded.fds["xdp_guard"])
                for vni in vnis:
                    for p in peers:
                        self._add_peer(m, st, vni, p)
                for p in sorted({p for lst in st["peers"].values() for p in lst}):
                    self._prime_nexthop(m, st, p)
        finally:
            loaded.close()

    def _write_config(self, m: NodeMaps, st: dict) -> None:
        c = st["config"]
        f = _E["dp_cfg_flag"]
        flags = int(f.DP_CFG_PEER_CHECK) if c["peer_check"] else 0
        flags |= int(f.DP_CFG_PUNT_MISS) if st.get("punt_miss") else 0
        val = _S["dp_config"](local_ip=_be32(c["local_ip"]), port=socket.htons(c["port"]),
                              src_port_min=c["src_port_min"], src_port_max=c["src_port_max"],
                              flags=flags, uplink_ifindex=st["uplink_ifindex"],
                              fdb_age_ns=c["fdb_age_s"] * 1_000_000_000)
        m.dp_config.put(ctypes.c_uint32(0), val)

    def _add_network(self, m: NodeMaps, st: dict, vni: int, subnet) -> None:
        key = str(vni)
        if key not in st["networks"]:
            slot = self._free_slot(st)
            net = model.Network(vni=vni, subnet=str(subnet or model.default_subnet(vni)),
                                mtu=st["uplink_mtu"] - model.ENCAP_LEN, slot=slot)
            m.dp_stats.put(ctypes.c_uint32(slot), m.dp_stats.zero())  # a reused slot starts at zero
            st["networks"][key] = net.to_dict()
            st["peers"].setdefault(key, [])
        self._sync_network(m, st, vni)

    @staticmethod
    def _free_slot(st: dict) -> int:
        """The lowest dp_stats slot no network holds; 0 belongs to 'no VNI'."""
        used = {n["slot"] for n in st["networks"].values()}
        size = (st.get("map_sizes") or {}).get("DP_MAP_NETWORKS", _C["DP_MAP_NETWORKS"])
        slot = next((i for i in range(1, size) if i not in used), None)
        if slot is None:
            raise UsageError(f"this node already serves {size - 1} networks, the most its maps hold "
                             "(DP_MAP_NETWORKS)")
        return slot

    def _sync_network(self, m: NodeMaps, st: dict, vni: int) -> None:
        """Rewrite the VNI's entry, its local-port and flood slots from the state.
        Slots are written before the counts grow and removed after they shrink."""
        key = str(vni)
        ports = [e["ifindex"] for e in st["endpoints"].values() if e["vni"] == vni]
        vteps = flood_list(st, vni)
        old = m.dp_networks.get(ctypes.c_uint32(vni))
        for i, ifx in enumerate(ports):
            m.dp_local_ports.put(_slot(vni, i), ctypes.c_uint32(ifx))
        for i, ip in enumerate(vteps):
            m.dp_flood.put(_slot(vni, i), ctypes.c_uint32(_be32(ip)))
            m.dp_vteps.put(_ip_key(vni, ip), ctypes.c_uint32(i))
        net = _S["dp_network"](mtu=st["networks"][key]["mtu"], slot=st["networks"][key]["slot"],
                               n_local=len(ports), n_flood=len(vteps))
        m.dp_networks.put(ctypes.c_uint32(vni), net)
        if old is not None:
            for i in range(len(ports), old.n_local):
                m.dp_local_ports.delete(_slot(vni, i))
            for i in range(len(vteps), old.n_flood):
                m.dp_flood.delete(_slot(vni, i))
        for ip in st.setdefault("flooded", {}).get(key, []):
            if ip not in vteps:
                m.dp_vteps.delete(_ip_key(vni, ip))
        st["flooded"][key] = vteps

    # --- networks from the registry ---------------------------------------------

    def network_add(self, vni: int, subnet: str, mtu: int | None = None) -> None:
        """Serve a VNI (maps only; the programs are loaded already)."""
        with state.locked(self.name):
            st = self._require_up()
            key = str(vni)
            have = st["networks"].get(key)
            if have and have["subnet"] != str(subnet):
                raise Conflict(f"VNI {vni} is up with subnet {have['subnet']}, the registry says {subnet}")
            if not have:
                net = model.Network(vni=vni, subnet=str(subnet),
                                    mtu=min(mtu or 65535, st["uplink_mtu"] - model.ENCAP_LEN))
                st["networks"][key] = net.to_dict()
            with self._maps() as m:
                self._add_network(m, st, vni, subnet)
            state.save(self.name, st)

    def network_rm(self, vni: int) -> None:
        """Stop serving a VNI (its endpoints go with it); the node stays up."""
        with state.locked(self.name):
            st = self._require_up()
            if str(vni) in st["networks"]:
                self._down_networks(st, [vni])
                st.get("registry_peers", {}).pop(str(vni), None)
                state.save(self.name, st)

    def set_punt_miss(self, on: bool) -> None:
        """An agent drains dp_punts (on) or no longer does (off): misses are
        punted to it or flooded."""
        with state.locked(self.name):
            st = self._require_up()
            st["punt_miss"] = bool(on)
            with self._maps() as m:
                self._write_config(m, st)
            state.save(self.name, st)

    def set_registry_peers(self, vni: int, ips: list[str]) -> None:
        """The VTEPs the registry says share this VNI: the flood list's second half."""
        with state.locked(self.name):
            st = self._require_up()
            key = str(vni)
            rp = st.setdefault("registry_peers", {})
            new = [ip for ip in ips if ip not in rp.get(key, [])]
            rp[key] = list(ips)
            with self._maps() as m:
                self._sync_network(m, st, vni)
                for ip in new:
                    self._prime_nexthop(m, st, ip, timeout=0.2)
            state.save(self.name, st)

    # --- peers -------------------------------------------------------------

    def _add_peer(self, m: NodeMaps, st: dict, vni: int, ip: str) -> bool:
        lst = st["peers"].setdefault(str(vni), [])
        if ip in lst:
            return False
        if len(lst) >= abi.load().constants["DP_MAX_FLOOD"]:
            raise Conflict(f"VNI {vni} has the maximum of {len(lst)} peers")
        lst.append(ip)
        self._sync_network(m, st, vni)
        return True

    def _prime_nexthop(self, m: NodeMaps, st: dict, ip: str, timeout: float = 1.0) -> None:
        """Resolve the peer's next hop now (the kernel ARPs for it) so the first
        flooded frame already has outer MACs; the fast path refreshes it later."""
        oif, via = netlink.route_oif(self.netns, ip)
        if oif != st["uplink_ifindex"]:
            raise UsageError(f"peer {ip} is not reached through {st['config']['underlay']}")
        mac = netlink.wait_neigh(self.netns, oif, via, timeout=timeout)
        if not mac:
            print(f"dataplane: warning: {via} does not answer ARP yet; resolved on first use",
                  file=sys.stderr)
            return
        nh = _S["dp_nexthop"](ifindex=oif, updated_ns=time.monotonic_ns())
        ctypes.memmove(nh.smac, model.mac_bytes(st["uplink_mac"]), 6)
        ctypes.memmove(nh.dmac, model.mac_bytes(mac), 6)
        m.dp_nexthops.put(ctypes.c_uint32(_be32(ip)), nh)

    def peer_add(self, ip: str, vnis=None) -> list[int]:
        require_root()
        ip = str(model.parse_ipv4(ip, "peer address"))
        with state.locked(self.name):
            st = self._require_up()
            if ip == st["config"]["local_ip"]:
                raise UsageError(f"peer {ip} is this node's own address")
            targets = self._vnis(st, vnis)
            with self._maps() as m:
                added = [v for v in targets if self._add_peer(m, st, v, ip)]
                self._prime_nexthop(m, st, ip)
            state.save(self.name, st)
        return added

    def peer_rm(self, ip: str, vnis=None) -> list[int]:
        require_root()
        ip = str(model.parse_ipv4(ip, "peer address"))
        with state.locked(self.name):
            st = self._require_up()
            removed = []
            with self._maps() as m:
                for v in self._vnis(st, vnis):
                    lst = st["peers"].get(str(v), [])
                    if ip in lst:
                        lst.remove(ip)
                        self._sync_network(m, st, v)  # also drops its dp_vteps entry
                        removed.append(v)
            if not removed:
                raise NotFound(f"peer {ip} is not configured")
            state.save(self.name, st)
        return removed

    def peers(self) -> list[dict]:
        st = self._require_up()
        return [{"vni": int(v), "peer": ip} for v, lst in sorted(st["peers"].items(), key=lambda x: int(x[0]))
                for ip in lst]

    def _vnis(self, st: dict, vnis) -> list[int]:
        if not vnis:
            return sorted(int(v) for v in st["networks"])
        out = []
        for v in vnis:
            v = model.parse_vni(v)
            if str(v) not in st["networks"]:
                raise NotFound(f"VNI {v} is not up on this node")
            out.append(v)
        return out

    # --- endpoints -----------------------------------------------------------

    def endpoint_add(self, name: str, vni, ip=None, mac=None, sandbox: dict | None = None,
                     prefixlen: int | None = None, routes=()) -> dict:
        """An endpoint on VNI vni. With no sandbox, a new namespace `name` with
        eth0 in it (the CLI and the lab); otherwise see model.Endpoint.sandbox."""
        require_root()
        name = model.parse_name(name, "endpoint name")
        vni = model.parse_vni(vni)
        mac = model.parse_mac(mac) if mac is not None else None
        sandbox = parse_sandbox(sandbox)
        with state.locked(self.name):
            st = self._require_up()
            net = st["networks"].get(str(vni))
            if not net:
                raise NotFound(f"VNI {vni} is not up on this node: run `dataplane up --vni {vni}`")
            if name in st["endpoints"]:
                raise Conflict(f"endpoint {name!r} exists already")
            if sandbox is None and netlink.ns_exists(name):
                raise Conflict(f"network namespace {name!r} exists already")
            subnet = ipaddress.IPv4Network(net["subnet"])
            used = {e["ip"] for e in st["endpoints"].values() if e["vni"] == vni}
            ip = self._pick_ip(subnet, used, ip)
            mac = mac or model.mac_for_ip(ipaddress.IPv4Address(ip))
            if any(e["mac"] == mac and e["vni"] == vni for e in st["endpoints"].values()):
                raise Conflict(f"MAC {mac} is in use on VNI {vni}")
            ep = model.Endpoint(name=name, vni=vni, ip=ip, mac=mac, host_ifname=host_ifname(name),
                                sandbox=sandbox)
            try:
                self._create_endpoint(st, ep, prefixlen or subnet.prefixlen, net["mtu"], routes)
            except BaseException:
                self._destroy_endpoint(st, ep.to_dict())
                raise
            st["endpoints"][name] = ep.to_dict()
            with self._maps() as m:
                self._sync_network(m, st, vni)
            state.save(self.name, st)
            return ep.to_dict()

    @staticmethod
    def _pick_ip(subnet: ipaddress.IPv4Network, used: set, ip) -> str:
        gateway = str(next(subnet.hosts()))  # .1 stays free for a gateway, as Docker keeps it
        if ip is not None:
            addr = model.parse_ipv4(ip, "endpoint address")
            if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
                raise UsageError(f"address {addr} is not a host address of {subnet}")
            if str(addr) in used:
                raise Conflict(f"address {addr} is in use on this network")
            return str(addr)
        for host in subnet.hosts():
            if str(host) != gateway and str(host) not in used:
                return str(host)
        raise Conflict(f"subnet {subnet} has no free address")

    def _create_endpoint(self, st: dict, ep: model.Endpoint, prefixlen: int, mtu: int, routes=()) -> None:
        sb = ep.sandbox or {}
        if "netns" in sb:          # CNI: straight into the runtime's namespace
            if not netlink.ns_path_exists(sb["netns"]):
                raise NotFound(f"network namespace {sb['netns']} does not exist")
            inner = (sb["netns"], sb["ifname"])
            ep.ifindex = netlink.veth_create(self.netns, ep.host_ifname, *inner, ep.mac, mtu)
            netlink.link_up(sb["netns"], sb["ifname"], ep.ip, prefixlen)
            netlink.routes_add(sb["netns"], sb["ifname"], routes)
        elif "peer" in sb:         # Docker: the engine moves and addresses the peer
            inner = (self.netns, sb["peer"])
            ep.ifindex = netlink.veth_create(self.netns, ep.host_ifname, *inner, ep.mac, mtu)
        else:
            netlink.ns_create(ep.name)
            for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
                netlink.sysctl(ep.name, key, "1")
            inner = (ep.name, "eth0")
            ep.ifindex = netlink.veth_create(self.netns, ep.host_ifname, *inner, ep.mac, mtu)
            netlink.link_up(ep.name, "lo")
            netlink.link_up(ep.name, "eth0", ep.ip, prefixlen)
        netlink.sysctl(self.netns, f"net.ipv6.conf.{ep.host_ifname}.disable_ipv6", "1")
        # GSO packets as large as the uplink sends (BIG TCP where it has it): the fast
        # path carries them whole, and a larger limit would only make the uplink segment.
        linkgso.set_veth(st.get("uplink_gso_max", linkgso.LEGACY_MAX), (self.netns, ep.host_ifname), inner)
        with self._maps() as m:
            val = _S["dp_endpoint"](vni=ep.vni, ip=_be32(ep.ip), slot=st["networks"][str(ep.vni)]["slot"])
            ctypes.memmove(val.mac, model.mac_bytes(ep.mac), 6)
            m.dp_endpoints.put(ctypes.c_uint32(ep.ifindex), val)
            m.dp_local_macs.put(_mac_key(ep.vni, ep.mac), ctypes.c_uint32(ep.ifindex))
            # The fast path skips its MAC-conflict check for a fresh learned entry: the MAC is ours now.
            m.dp_learned.delete(_mac_key(ep.vni, ep.mac))
            nv = _S["dp_mac"]()
            ctypes.memmove(nv.mac, model.mac_bytes(ep.mac), 6)
            m.dp_neigh.put(_ip_key(ep.vni, ep.ip), nv)
        fd = fastpath.open_prog(self.pin_dir, "from_endpoint")
        try:
            netlink.tc_attach(self.netns, ep.ifindex, fd, "from_endpoint")
        finally:
            os.close(fd)

    def _destroy_endpoint(self, st: dict, ep: dict) -> None:
        """Undo an endpoint, whatever part of it exists. Safe to call twice."""
        try:
            with self._maps() as m:
                if ep.get("ifindex"):
                    m.dp_endpoints.delete(ctypes.c_uint32(ep["ifindex"]))
                m.dp_local_macs.delete(_mac_key(ep["vni"], ep["mac"]))
                m.dp_neigh.delete(_ip_key(ep["vni"], ep["ip"]))
        except NotFound:
            pass  # maps already gone (node torn down)
        netlink.link_delete(self.netns, ep["host_ifname"])
        if not ep.get("sandbox"):          # the namespace is ours only without a runtime's sandbox
            netlink.ns_delete(ep["name"])

    def endpoint_in_maps(self, ep: dict) -> bool:
        """The fast path knows this endpoint (by its veth, MAC and address)."""
        with self._maps() as m:
            val = m.dp_endpoints.get(ctypes.c_uint32(ep["ifindex"]))
            return (val is not None and val.vni == ep["vni"] and bytes(val.mac) == model.mac_bytes(ep["mac"])
                    and m.dp_local_macs.get(_mac_key(ep["vni"], ep["mac"])) is not None
                    and m.dp_neigh.get(_ip_key(ep["vni"], ep["ip"])) is not None)

    def endpoint_rm(self, name: str) -> dict:
        require_root()
        with state.locked(self.name):
            st = self._require_up()
            ep = st["endpoints"].pop(name, None)
            if ep is None:
                raise NotFound(f"endpoint {name!r} not found")
            self._destroy_endpoint(st, ep)
            with self._maps() as m:
                self._sync_network(m, st, ep["vni"])
            state.save(self.name, st)
            return ep

    def endpoints(self) -> list[dict]:
        st = self._require_up()
        return [dict(e, node=self.name) for _, e in sorted(st["endpoints"].items())]

    # --- down ----------------------------------------------------------------

    def down(self, vnis=None, quiet=False) -> bool:
        """Remove the node (or only some VNIs and their endpoints). False if it was not up."""
        require_root()
        with state.locked(self.name):
            st = self.state()
            if not st:
                self._remove_pins()
                state.remove(self.name)
                return False
            if vnis:
                self._down_networks(st, self._vnis(st, vnis))
                if st["networks"]:
                    state.save(self.name, st)
                    return True
            self._teardown(st, quiet)
        state.remove(self.name)
        return True

    def _down_networks(self, st: dict, vnis: list[int]) -> None:
        with self._maps() as m:
            for vni in vnis:
                for name, ep in list(st["endpoints"].items()):
                    if ep["vni"] == vni:
                        self._destroy_endpoint(st, ep)
                        del st["endpoints"][name]
                st["peers"][str(vni)] = []
                st.get("registry_peers", {}).pop(str(vni), None)
                self._sync_network(m, st, vni)
                del st["peers"][str(vni)]
                st["flooded"].pop(str(vni), None)
                del st["networks"][str(vni)]
                m.dp_networks.delete(ctypes.c_uint32(vni))  # its slot is zeroed when a network takes it next

    def _teardown(self, st: dict, quiet: bool) -> None:
        errors = []
        for ep in list(st.get("endpoints", {}).values()):
            try:
                self._destroy_endpoint(st, ep)
            except DataplaneError as e:
                errors.append(str(e))
        ifx = st.get("uplink_ifindex")
        if ifx and (not self.netns or netlink.ns_exists(self.netns)):
            try:
                netlink.tc_detach(self.netns, ifx)
                netlink.xdp_detach(self.netns, ifx)
                if not netlink.tc_filter_names(self.netns, ifx):
                    netlink.clsact_delete(self.netns, ifx)
                if st.get("restore_forwarding") is not None:
                    netlink.sysctl(self.netns, self._forwarding_key(st), st["restore_forwarding"])
            except (KernelError, NotFound) as e:
                errors.append(str(e))
        self._remove_pins()
        if errors and not quiet:
            raise KernelError("down finished with errors: " + "; ".join(errors))

    def _remove_pins(self) -> None:
        shutil.rmtree(self.pin_dir, ignore_errors=True)
        try:
            os.rmdir(fastpath.PIN_ROOT)
        except OSError:
            pass

    # --- read-outs -------------------------------------------------------------

    def fdb(self) -> list[dict]:
        st = self._require_up()
        age_ns = st["config"]["fdb_age_s"] * 1_000_000_000
        now = time.monotonic_ns()
        rows = []
        with self._maps() as m:
            for k, v in m.dp_local_macs.items():
                rows.append({"vni": k.vni, "mac": model.mac_str(k.mac), "where": "local",
                             "ifindex": v.value, "age_s": None, "state": "static"})
            for k, v in m.dp_fdb.items():
                rows.append({"vni": k.vni, "mac": model.mac_str(k.mac), "where": _ip(v.vtep),
                             "ifindex": None, "age_s": None, "state": "static"})
            for k, v in m.dp_learned.items():
                age = max(0, now - v.last_seen_ns)
                rows.append({"vni": k.vni, "mac": model.mac_str(k.mac), "where": _ip(v.vtep),
                             "ifindex": None, "age_s": round(age / 1e9, 1),
                             "state": "learned" if age < age_ns else "expired"})
        return sorted(rows, key=lambda r: (r["vni"], r["mac"]))

    def stats(self) -> list[dict]:
        self._require_up()
        names = abi.drop_names()
        counters = [n for n, _ in _S["dp_stats"]._fields_ if n != "drops"]
        rows = []
        with self._maps() as m:
            slots = [(0, 0)] + [(k.value, net.slot) for k, net in m.dp_networks.items()]
            for vni, slot in slots:
                percpu = m.dp_stats.get(ctypes.c_uint32(slot))
                if percpu is None:
                    continue
                row = {"vni": vni}
                for c in counters:
                    row[c] = sum(getattr(cpu, c) for cpu in percpu)
                row["drops"] = {names[i]: total for i in range(len(names))
                                if (total := sum(cpu.drops[i] for cpu in percpu))}
                rows.append(row)
        return sorted(rows, key=lambda r: r["vni"])

