"""Bringing a node up and down: the uplink, the programs, the configuration (dp_config
and dp_meters through fpconfig.py). The only writer of dp_agent (the loader fills dp_tail)."""

from __future__ import annotations

import ctypes

from dataplane.core import abi, model, state
from dataplane.core.notice import notice
from dataplane.core.errors import Conflict, DataplaneError, KernelError, NotFound, UsageError
from dataplane.core.state import NodeConfig, NodeState, Uplink
from dataplane.kernel import gso, loader, netlink, tcx
from dataplane.kernel.maps import NodeMaps
from dataplane.node import choices, endpoints, fpconfig, gateway, networks, nexthops, peers, rxgro, vxlanguard
from dataplane.node.base import HOST_NODE, Node, node_netns, require_root

_S = abi.load().structs


def up(node: Node, vnis, underlay=None, local_ip=None, port=None, subnet=None, peer_ips=(),
       peer_check: bool | None = None, rx_gro: bool | None = None, xdp_guard: bool | None = None, fdb_age=None,
       vxlan_guard: bool | None = None,
       map_sizes=None, quiet=False,
       meters: dict | None = None, metrics_address: str | None = None, metrics_web_config: str | None = None,
       mtus: dict[int, int] | None = None,
       registry: str | None = None, host_name: str | None = None, lease_ttl: int | None = None) -> NodeState:
    """Make the node's namespace a VTEP serving vnis. Idempotent; a second call
    reloads the programs (atomic replace) and adds what is new. With a
    registry, the node's agent adds the registry's networks and peers."""
    require_root()
    vnis = sorted({model.parse_vni(v) for v in vnis})
    if not vnis and not registry:
        raise UsageError("give at least one --vni")
    if host_name is not None:
        model.parse_name(host_name, "host name")
    if lease_ttl is not None:
        lease_ttl = model.parse_lease_ttl(lease_ttl)
    if isinstance(subnet, dict):         # a subnet per VNI (restoring a node at boot)
        subnet = {int(v): model.parse_subnet(s) for v, s in subnet.items()}
    elif subnet is not None:
        if len(vnis) != 1:
            raise UsageError("--subnet applies to exactly one --vni")
        subnet = {vnis[0]: model.parse_subnet(subnet)}
    port = model.parse_port(port) if port is not None else None
    peer_ips = [str(model.parse_ipv4(p, "peer address")) for p in peer_ips]
    fdb_age = model.parse_age(fdb_age) if fdb_age is not None else None
    if metrics_address not in (None, "", "off"):
        model.parse_host_port(metrics_address, "metrics address")
    meters = choices.meters(meters)       # storm control, the overlay's and learning: {NodeConfig field: value}
    loader.check_map_sizes(map_sizes or {})
    if underlay is not None:
        model.parse_ifname(underlay)
    if node.netns == HOST_NODE and not node.state():
        node_netns(node.netns)              # refused: a new node in a namespace with the host node's name
    if node.netns and not netlink.ns_exists(node.netns):
        raise NotFound(f"network namespace {node.netns!r} does not exist")

    with state.locked(node.name):
        old = node.state()
        if old and underlay and underlay != old.config.underlay:
            raise Conflict(f"node {node.name} is up on {old.config.underlay}; run `dataplane down` first")
        underlay = underlay or (old.config.underlay if old else netlink.default_route_ifname(node.netns))
        if not underlay:
            raise UsageError("no --underlay given and no default route to take it from")
        link = netlink.link_info(node.netns, underlay)
        if local_ip is None:
            local_ip = old.config.local_ip if old else (link["ipv4"][0] if link["ipv4"] else None)
            if local_ip is None:
                raise UsageError(f"{underlay} has no IPv4 address: give --local-ip")
        local_ip = str(model.parse_ipv4(local_ip, "local address"))
        if local_ip not in link["ipv4"]:
            raise UsageError(f"--local-ip {local_ip} is not an address of {underlay} "
                             f"({', '.join(link['ipv4']) or 'none'})")
        if local_ip in peer_ips:
            raise UsageError(f"peer {local_ip} is this node's own address")
        if old and registry and old.registry not in (None, registry):
            raise Conflict(f"node {node.name} uses registry {old.registry}; run `dataplane down` first")
        if old and map_sizes:
            made = {k: old.map_sizes.get(k, abi.load().constants[k]) for k in map_sizes}
            if made != map_sizes:
                raise Conflict(f"node {node.name}'s maps were made with {made}: sizes are fixed when the maps "
                               "are made; `dataplane down` first to change them")
        for vni in vnis:
            if old and subnet and vni in subnet and vni in old.networks and old.networks[vni].subnet != str(subnet[vni]):
                raise Conflict(f"VNI {vni} exists with subnet {old.networks[vni].subnet}")

        uplink = Uplink(ifindex=link["index"], mtu=link["mtu"], mac=link["mac"],
                        gso_max=gso.gso_ipv4_max(node.netns, link["name"]))
        had_xdp = bool(old) and netlink.xdp_attached(node.netns, uplink.ifindex)    # for a rollback
        if old:
            st, cfg = old, old.config
            st.uplink = uplink
        else:
            cfg = NodeConfig(underlay=underlay, local_ip=local_ip)
            st = NodeState(node=node.name, netns=node.netns, pin_dir=node.pin_dir, config=cfg, uplink=uplink,
                           map_sizes=dict(map_sizes or {}), ends_swept=endpoints.ENDS_MADE)
        cfg.local_ip = local_ip
        if old and port and port != cfg.port:    # the guard of the old port goes with it
            vxlanguard.remove(node.netns, cfg.underlay, cfg.port)
        cfg.port = port or cfg.port
        if peer_check is not None:          # either way on a running node: the filter is in dp_config
            cfg.peer_check = bool(peer_check)
        if rx_gro is not None:              # either way on a running node
            cfg.rx_gro = bool(rx_gro)
        if vxlan_guard is not None:         # either way on a running node
            cfg.vxlan_guard = bool(vxlan_guard)
        drop_xdp = bool(old) and cfg.xdp_guard and xdp_guard is not None and not xdp_guard
        if xdp_guard is not None:           # either way on a running node
            cfg.xdp_guard = bool(xdp_guard)
        cfg.fdb_age_s = fdb_age or cfg.fdb_age_s
        for field, value in meters.items():     # either way on a running node
            setattr(cfg, field, value)
        if metrics_address is not None:       # the agent reads it when it starts
            cfg.metrics_address = "" if metrics_address in ("", "off") else metrics_address
        if metrics_web_config is not None:    # (checked by control.up)
            cfg.metrics_web_config = "" if metrics_web_config in ("", "off") else metrics_web_config
        if registry:
            st.registry = registry
            st.host_name = choices.host_name_for(node, host_name, st.host_name)
            st.lease_ttl = lease_ttl or st.lease_ttl
        try:
            _apply(node, st, vnis, subnet, peer_ips, quiet, mtus or {})
        except BaseException:
            if not old:
                _teardown(node, st, quiet=True)
            else:
                fpconfig.config_back(node, st, had_xdp)
            raise
        if drop_xdp:                        # ours (the saved state had it on): after the rest went in
            netlink.xdp_detach(node.netns, st.uplink.ifindex)
        st.router_alias = True              # these programs are attached now (NodeState.router_ips)
        state.save(st)
        return st


def _forwarding_key(st: NodeState) -> str:
    return netlink.conf_key(st.config.underlay, "forwarding")


def restore_forwarding(node: Node, st: NodeState, quiet: bool) -> None:
    """The uplink's IPv4 forwarding as it was before the first `up`; but left on if the host has
    turned forwarding on for every interface since (Docker does, or a sysctl.conf): that covers
    the uplink too, and off there it cut the host's containers off (replies arriving on the
    uplink were no longer forwarded to them) until Docker restarted."""
    if st.restore_forwarding == "0" and netlink.sysctl_get(node.netns, "net.ipv4.conf.all.forwarding") == "1":
        notice(f"IPv4 forwarding stays on for {st.config.underlay}: the host has it on for all interfaces "
               "(net.ipv4.conf.all.forwarding, as Docker sets it)", quiet)
        return
    netlink.sysctl(node.netns, _forwarding_key(st), st.restore_forwarding)


def _apply(node: Node, st: NodeState, vnis, subnet, peer_ips, quiet, mtus: dict[int, int]) -> None:
    # bpf_fib_lookup, which keeps the next-hop cache fresh, answers only for
    # an interface with IPv4 forwarding on (as container hosts run anyway).
    key = _forwarding_key(st)
    if st.restore_forwarding is None:
        st.restore_forwarding = netlink.sysctl_get(node.netns, key)
    netlink.sysctl(node.netns, key, "1")
    loaded = loader.load(node.pin_dir, st.map_sizes, quiet=quiet)
    try:
        with node.maps() as m:
            fpconfig.write_config(m, st)
            for vni in vnis:
                networks.serve(m, st, vni, (subnet or {}).get(vni), mtus.get(vni))
            # New programs go in by replacing the old ones in place: no moment without one.
            # Filters an older version attached can be there only while the state says "tc".
            legacy, st.hook = st.hook != "tcx", "tcx"   # the programs just loaded end frames as tcx needs
            tcx.attach(node.netns, st.uplink.ifindex, loaded.fds["from_overlay"], "from_overlay")
            if legacy:
                tcx.drop_filter(node.netns, st.uplink.ifindex, "from_overlay")
            fpconfig.set_tunnel_dev(m, rxgro.ensure(node, st, loaded.fds["gro_sink"]))
            if st.config.vxlan_guard:
                vxlanguard.at_up(node.netns, st.config.underlay, st.config.port)
            else:
                vxlanguard.remove(node.netns, st.config.underlay, st.config.port)
            ports = [(ep.host_ifname, ep.ifindex) for ep in st.endpoints.values() if ep.phase == "ready"]
            ports += [(gw.port, gw.ifindex) for gw in st.gateways.values()]
            have = netlink.link_indexes(node.netns)
            for ifname, ifindex in ports:
                # A port whose interface is gone (a crash before it was made, or removed behind
                # our back) is left to the sweep that follows every up (node/sweep.py): failing
                # here kept that sweep from ever running.
                if ifindex and have.get(ifname) == ifindex:
                    tcx.attach(node.netns, ifindex, loaded.fds["from_endpoint"], "from_endpoint")
                    if legacy:
                        tcx.drop_filter(node.netns, ifindex, "from_endpoint")
            if st.config.xdp_guard:
                netlink.xdp_attach(node.netns, st.uplink.ifindex, loaded.fds["xdp_guard"])
            for vni in vnis:
                for p in peer_ips:
                    peers.add_to(m, st, vni, p)
            for p in sorted({p for lst in st.peers.values() for p in lst}):
                nexthops.prime(m, st, node.netns, p)
    finally:
        loaded.close()


def set_punt_until(m: NodeMaps, until_ns: int) -> None:
    """The agent's heartbeat: misses are punted to it until then (0: never),
    flooded after. Written by the agent alone, so no lock: nothing else
    writes dp_agent."""
    m.dp_agent.put(ctypes.c_uint32(0), _S["dp_agent"](punt_until_ns=until_ns))


def remove_networks(node: Node, m: NodeMaps, st: NodeState, vnis: list[int], quiet: bool = True) -> None:
    """Stop serving these VNIs; their endpoints go with them (all tried before an error is raised)."""
    for vni in vnis:
        doomed = [name for name, ep in st.endpoints.items() if ep.vni == vni]
        if errors := endpoints.destroy_all(node, m, [st.endpoints[n] for n in doomed], False, quiet):
            raise KernelError(f"VNI {vni}: " + "; ".join(errors))
        ips = [st.endpoints.pop(name).ip for name in doomed]
        gateway.remove(node, m, st, vni, ips)
        networks.drop(m, st, vni)


def unserve(node: Node, vni: int) -> None:
    """Stop serving a VNI (its endpoints go with it); the node stays up."""
    with node.changing() as (st, m):
        if vni in st.networks:
            remove_networks(node, m, st, [vni])


def down(node: Node, vnis=None, quiet=False) -> bool:
    """Remove the node (or only some VNIs and their endpoints). False if it was not up."""
    require_root()
    with state.locked(node.name):
        st = node.state()
        if not st:
            _remove_pins(node)
            state.remove(node.name)
            return False
        if vnis:                          # those not up are gone already: idempotent, like the whole node
            doomed = [v for v in sorted({model.parse_vni(v) for v in vnis}) if v in st.networks]
            if doomed:
                with node.maps() as m:
                    remove_networks(node, m, st, doomed, quiet)
            if st.networks:
                state.save(st)
                return True
        _teardown(node, st, quiet)
    state.remove(node.name)
    return True


def _teardown(node: Node, st: NodeState, quiet: bool) -> None:
    errors = []
    links_gone = bool(node.netns) and not netlink.ns_exists(node.netns)   # deleted: its links went with it
    with node.maps() as m:
        errors += endpoints.destroy_all(node, m, list(st.endpoints.values()), links_gone, quiet)
        for vni in list(st.gateways):
            try:
                gateway.remove(node, m, st, vni, [e.ip for e in st.endpoints.values() if e.vni == vni])
            except DataplaneError as e:
                errors.append(str(e))
    ifx = st.uplink.ifindex
    if ifx and (not node.netns or netlink.ns_exists(node.netns)):
        try:
            tcx.detach(node.netns, ifx, "from_overlay")
            tcx.drop_filter(node.netns, ifx, "from_overlay")   # an older version's
            netlink.xdp_detach(node.netns, ifx)
            # the underlay removed or renamed since: its setting went with it, nothing to restore
            if st.restore_forwarding is not None and \
                    netlink.link_index(node.netns, st.config.underlay) == ifx:
                restore_forwarding(node, st, quiet)
        except (KernelError, NotFound) as e:
            errors.append(str(e))
    if not node.netns or netlink.ns_exists(node.netns):
        try:
            rxgro.remove(node)       # whatever failed above: it would hold the port with no state left
        except KernelError as e:
            errors.append(str(e))
        vxlanguard.remove(node.netns, st.config.underlay, st.config.port)
    _remove_pins(node)
    if errors and not quiet:
        raise KernelError("down finished with errors: " + "; ".join(errors))


def _remove_pins(node: Node) -> None:
    loader.remove_pins(node.pin_dir)
