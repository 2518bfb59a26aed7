"""`dataplane`: argument parsing and output only; the work is in node.py and lab.py."""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager

from . import agentctl, api, lab, linkgso, model, netlink, registry
from .agent import LEASE_TTL_DEFAULT
from .errors import Conflict, DataplaneError, NotFound, UsageError
from .node import Node, require_root


def _out(args, rows, columns) -> None:
    if getattr(args, "output", "table") == "json":
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    if not rows:
        print("(none)")
        return
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):
        return ",".join(f"{k}={n}" for k, n in v.items()) or "-"
    return str(v)


def _add_output(p) -> None:
    p.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format")


def _node(args) -> Node:
    return Node(args.netns)


def cmd_up(args):
    require_root()
    node = _node(args)
    old = node.state() or {}
    if args.no_registry and old.get("registry"):
        raise Conflict(f"node {node.name} runs with registry {old['registry']}; run `dataplane down` first")
    if args.registry or args.no_registry:
        url = None if args.no_registry else args.registry
    else:   # a re-run keeps the node's mode
        url = old.get("registry") if old else registry.DEFAULT_URL
    if old and bool(url) != bool(old.get("registry")):
        raise Conflict(f"node {node.name} is up {'with' if old.get('registry') else 'without'} a registry; "
                       "run `dataplane down` first")
    if url:
        registry.parse_url(url)
    vnis = [model.parse_vni(v) for v in args.vni or []]
    if args.subnet is not None and len(vnis) != 1:
        raise UsageError("--subnet applies to exactly one --vni")
    created = _ensure_networks(url, vnis, args) if url and vnis else []
    try:
        st = node.up(vnis, underlay=args.underlay, local_ip=args.local_ip, port=args.port,
                     subnet=args.subnet, peers=args.peer or (), peer_check=args.peer_check,
                     xdp_guard=args.xdp_guard, fdb_age=args.fdb_age,
                     map_sizes=dict(args.map_size or []), registry=url, host_name=args.host_name,
                     lease_ttl=args.lease_ttl)
    except BaseException:
        _drop_networks(url, created)   # nothing half-created, in the registry either
        raise
    if st.get("registry"):
        agentctl.spawn(node.name, node.netns, st["registry"], st["host_name"], st["lease_ttl"] or LEASE_TTL_DEFAULT)
        st = node.state()
    c = st["config"]
    nets = ", ".join(f"{v} ({n['subnet']}, mtu {n['mtu']})" for v, n in sorted(st["networks"].items(), key=lambda x: int(x[0])))
    where = f"; host {st['host_name']} in registry {st['registry']}" if st.get("registry") else ""
    gso = st.get("uplink_gso_max", linkgso.LEGACY_MAX)
    big = f"; IPv4 BIG TCP: endpoints send up to {gso}-byte packets, as {c['underlay']} does" \
        if gso > linkgso.LEGACY_MAX else ""
    print(f"up: node {st['node']} VTEP {c['local_ip']}:{c['port']} on {c['underlay']}; "
          f"VNIs {nets or '(from registry)'}{where}{big}")


def _ensure_networks(url: str, vnis: list[int], args) -> list[str]:
    """Each --vni is a registry network (vni<N> unless one has that VNI); returns those created."""
    reg = registry.open_registry(url)
    created = []
    try:
        for vni in vnis:
            net = reg.network_by_vni(vni)
            if net is None:
                net = reg.network_create(f"vni{vni}", vni, subnet=args.subnet, port=args.port)
                created.append(net.name)
            if args.subnet and net.subnet != str(model.parse_subnet(args.subnet)):
                raise Conflict(f"VNI {vni} is network {net.name} with subnet {net.subnet} in the registry")
            args.subnet = args.subnet or (net.subnet if len(vnis) == 1 else None)
    except BaseException:
        _drop_networks(url, created, reg)
        raise
    finally:
        reg.close()
    return created


def _drop_networks(url: str, names: list[str], reg=None) -> None:
    own = reg is None
    reg = reg or registry.open_registry(url)
    try:
        for name in names:
            try:
                reg.network_rm(name)
            except DataplaneError:
                pass
    finally:
        if own:
            reg.close()


def cmd_down(args):
    node = _node(args)
    if args.vni and (node.state() or {}).get("registry"):
        raise UsageError("with a registry a node serves every registry network: "
                         "remove the network with `dataplane network rm`, or the node with `dataplane down`")
    if not args.vni:
        agentctl.stop(node.name, leave=True)
    if node.down(args.vni):
        print("down: " + (f"VNIs {', '.join(args.vni)} removed" if args.vni else "node removed"))
    else:
        print("down: nothing was up")


def _agent_node(args) -> Node | None:
    """The node if it runs with a registry (its agent handles endpoints), else None."""
    node = _node(args)
    st = node.state()
    return node if st and st.get("registry") else None


def cmd_endpoint_add(args):
    node = _agent_node(args)
    if node:
        ep = api.call(node.name, "endpoint_add", id=args.name, network=args.network,
                      vni=model.parse_vni(args.vni) if args.vni else None, ip=args.ip, mac=args.mac)
    else:
        if not args.vni:
            raise UsageError("give --vni (a node without a registry has no named networks)")
        ep = _node(args).endpoint_add(args.name, args.vni, ip=args.ip, mac=args.mac)
    print(f"endpoint {ep['name']}: VNI {ep['vni']} {ep['ip']} {ep['mac']} (netns {ep['name']}, host side {ep['host_ifname']})")


def cmd_endpoint_rm(args):
    node = _agent_node(args)
    if node:
        api.call(node.name, "endpoint_rm", id=args.name)
    else:
        _node(args).endpoint_rm(args.name)
    print(f"endpoint {args.name} removed")


def cmd_endpoint_move(args):
    node = _agent_node(args)
    if not node:
        raise UsageError("moving an endpoint needs a node with a registry")
    ep = api.call(node.name, "endpoint_move", id=args.name)
    print(f"endpoint {ep['name']} moved from {ep['from']} to {ep['host']}: VNI {ep['vni']} {ep['ip']} {ep['mac']}")


def cmd_endpoint_list(args):
    node = _agent_node(args)
    if node:
        _out(args, api.call(node.name, "endpoint_list"), ["id", "network", "vni", "host", "ip", "mac", "alive"])
    else:
        _out(args, _node(args).endpoints(), ["name", "vni", "ip", "mac", "host_ifname", "ifindex"])


@contextmanager
def _registry(args):
    """--registry, else the node's registry, else the default; closed after use."""
    url = getattr(args, "registry", None)
    if not url:
        st = _node(args).state()
        url = (st or {}).get("registry") or registry.DEFAULT_URL
    reg = registry.open_registry(url)
    try:
        yield reg
    finally:
        reg.close()


def cmd_network_create(args):
    with _registry(args) as reg:
        net = reg.network_create(args.name, args.vni, subnet=args.subnet, gateway=args.gateway,
                                 mtu=args.mtu, port=args.port)
    print(f"network {net.name}: VNI {net.vni} {net.subnet} gateway {net.gateway} mtu {net.mtu} port {net.port}")


def cmd_network_rm(args):
    with _registry(args) as reg:
        reg.network_rm(args.name)
    print(f"network {args.name} removed")


def cmd_network_list(args):
    with _registry(args) as reg:
        snap = reg.snapshot()
    count = {}
    for e in snap.endpoints.values():
        count[e.network] = count.get(e.network, 0) + 1
    rows = [{**n.to_dict(), "endpoints": count.get(n.name, 0)} for n in sorted(snap.networks.values(), key=lambda n: n.vni)]
    _out(args, rows, ["name", "vni", "subnet", "gateway", "mtu", "port", "endpoints"])


def cmd_agent_run(args):
    from .agent import Agent, install_signal_handlers  # noqa: PLC0415
    node = _node(args)
    st = node.state()
    if not st:
        raise NotFound(f"node {node.name} is not up: run `dataplane up` first")
    url = args.registry or st.get("registry") or registry.DEFAULT_URL
    ag = Agent(node, url, args.host_name or st.get("host_name") or node.name,
               args.lease_ttl or st.get("lease_ttl") or LEASE_TTL_DEFAULT)
    install_signal_handlers(ag)
    ag.run()


def cmd_agent_status(args):
    row = api.call(_node(args).name, "status")
    if args.output == "json":
        _out(args, row, [])
        return
    for k, v in row.items():
        print(f"{k:14} {_cell(v)}")


def cmd_peer_add(args):
    added = _node(args).peer_add(args.ip, args.vni)
    print(f"peer {args.ip}: added to VNIs {', '.join(map(str, added)) or '(already present)'}")


def cmd_peer_rm(args):
    removed = _node(args).peer_rm(args.ip, args.vni)
    print(f"peer {args.ip}: removed from VNIs {', '.join(map(str, removed))}")


def cmd_peer_list(args):
    node = _agent_node(args)
    rows = api.call(node.name, "peer_list") if node else [dict(r, source="static") for r in _node(args).peers()]
    _out(args, rows, ["vni", "peer", "source"])


def cmd_fdb_list(args):
    _out(args, _node(args).fdb(), ["vni", "mac", "where", "state", "age_s"])


def cmd_stats(args):
    _out(args, _node(args).stats(), ["vni", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes",
                                     "local_packets", "arp_replies", "flooded", "drops"])


def cmd_lab_up(args):
    lab.up(args.hosts, args.vni, args.per_host, xdp_guard=args.xdp_guard, peer_check=args.peer_check,
           registry=args.registry, lease_ttl=args.lease_ttl, gso_max_size=args.gso_max_size)
    info = lab.ls()
    print(f"lab up: {len(info['hosts'])} hosts, {len(info['sandboxes'])} sandboxes, registry {args.registry} "
          "(see `dataplane lab ls`)")


def cmd_lab_down(args):
    print("lab down" if lab.down() else "lab down: nothing was up")


def cmd_lab_ls(args):
    info = lab.ls()
    if args.output == "json":
        _out(args, info, [])
        return
    _out(args, info["hosts"], ["name", "netns", "uplink", "vtep"])
    print()
    _out(args, info["sandboxes"], ["name", "host", "vni", "ip", "mac"])


def cmd_lab_exec(args):
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    argv = lab.exec_argv(args.sandbox, argv)
    sys.stdout.flush()
    os.execvp(argv[0], argv)


def cmd_lab_demo(args):
    from .demo import run  # noqa: PLC0415 - only the demo needs it
    return run(keep=args.keep, registry=args.registry)


def cmd_docker_plugin(args):
    from . import docker_driver  # noqa: PLC0415
    node = _node(args).name
    api.call(node, "ping", timeout=5)       # a clear error now, not at Docker's first request
    docker_driver.serve(node, args.socket)


def cmd_cni_install(args):
    from . import cni  # noqa: PLC0415
    print(cni.install(args.bin_dir))


def _map_size(text: str):
    name, _, value = text.partition("=")
    try:
        return name, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=ENTRIES, got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dataplane", description="VXLAN overlay for containers with an eBPF fast path")
    p.add_argument("--netns", help="operate on the node inside this network namespace (default: this host)")
    sub = p.add_subparsers(dest="cmd", required=True)

    up = sub.add_parser("up", help="make this host a VTEP for one or more VNIs (idempotent)")
    up.add_argument("--vni", action="append", help=f"VXLAN network id, 1..{model.VNI_MAX} (repeatable; with a registry, optional)")
    up.add_argument("--underlay", help="uplink interface (default: that of the default route)")
    up.add_argument("--local-ip", help="VTEP address (default: the underlay's first IPv4 address)")
    up.add_argument("--port", type=int, help=f"VXLAN UDP port (default {model.VXLAN_PORT})")
    up.add_argument("--subnet", help="endpoint subnet of the VNI (default 10.<vni/256>.<vni%%256>.0/24)")
    up.add_argument("--peer", action="append", help="remote VTEP to flood to (repeatable)")
    up.add_argument("--peer-check", action="store_true", help="decapsulate only from configured peers")
    up.add_argument("--xdp-guard", action="store_true", help="attach the XDP guard to the uplink")
    up.add_argument("--fdb-age", type=int, help=f"learned FDB entry lifetime, s (default {model.FDB_AGE_DEFAULT_S})")
    up.add_argument("--map-size", action="append", type=_map_size, metavar="DP_MAP_X=N", help="override a map size")
    up.add_argument("--registry", help=f"endpoint registry: sqlite:///PATH or etcd://HOST:PORT[,...] (default $DATAPLANE_REGISTRY or {registry.BUILTIN_URL})")
    up.add_argument("--no-registry", action="store_true", help="no registry and no agent: peers and endpoints by hand")
    up.add_argument("--host-name", help="this host's name in the registry (default: the namespace or hostname)")
    up.add_argument("--lease-ttl", type=int, help=f"host liveness lease, s (default {LEASE_TTL_DEFAULT})")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="remove the node, or only some VNIs (idempotent)")
    down.add_argument("--vni", action="append", help="remove only this VNI and its endpoints")
    down.set_defaults(func=cmd_down)

    ep = sub.add_parser("endpoint", help="sandboxes attached to a VNI").add_subparsers(dest="sub", required=True)
    a = ep.add_parser("add", help="create a sandbox netns NAME with eth0 on the VNI")
    a.add_argument("name")
    a.add_argument("--vni")
    a.add_argument("--network", help="registry network name (instead of --vni)")
    a.add_argument("--ip", help="address in the VNI's subnet (default: next free)")
    a.add_argument("--mac", help="default: 02:42 + the IPv4 address, as Docker does")
    a.set_defaults(func=cmd_endpoint_add)
    r = ep.add_parser("rm", help="remove an endpoint and its sandbox")
    r.add_argument("name")
    r.set_defaults(func=cmd_endpoint_rm)
    mv = ep.add_parser("move", help="bring a registered endpoint (same MAC and address) to this host")
    mv.add_argument("name")
    mv.set_defaults(func=cmd_endpoint_move)
    ls = ep.add_parser("list", help="list endpoints")
    _add_output(ls)
    ls.set_defaults(func=cmd_endpoint_list)

    peer = sub.add_parser("peer", help="remote VTEPs").add_subparsers(dest="sub", required=True)
    a = peer.add_parser("add")
    a.add_argument("ip")
    a.add_argument("--vni", action="append", help="only on this VNI (default: every VNI of the node)")
    a.set_defaults(func=cmd_peer_add)
    r = peer.add_parser("rm")
    r.add_argument("ip")
    r.add_argument("--vni", action="append")
    r.set_defaults(func=cmd_peer_rm)
    ls = peer.add_parser("list")
    _add_output(ls)
    ls.set_defaults(func=cmd_peer_list)

    net = sub.add_parser("network", help="registry networks (one VNI and subnet each)").add_subparsers(dest="sub", required=True)
    a = net.add_parser("create")
    a.add_argument("name")
    a.add_argument("--vni", required=True)
    a.add_argument("--subnet")
    a.add_argument("--gateway")
    a.add_argument("--mtu", type=int)
    a.add_argument("--port", type=int)
    a.add_argument("--registry")
    a.set_defaults(func=cmd_network_create)
    r = net.add_parser("rm")
    r.add_argument("name")
    r.add_argument("--registry")
    r.set_defaults(func=cmd_network_rm)
    ls = net.add_parser("list")
    ls.add_argument("--registry")
    _add_output(ls)
    ls.set_defaults(func=cmd_network_list)

    ag = sub.add_parser("agent", help="the registry agent of this node").add_subparsers(dest="sub", required=True)
    a = ag.add_parser("run", help="run the agent in the foreground (`up` starts it in the background)")
    a.add_argument("--registry")
    a.add_argument("--host-name")
    a.add_argument("--lease-ttl", type=int)
    a.set_defaults(func=cmd_agent_run)
    a = ag.add_parser("status")
    _add_output(a)
    a.set_defaults(func=cmd_agent_status)

    fdb = sub.add_parser("fdb", help="forwarding database").add_subparsers(dest="sub", required=True)
    ls = fdb.add_parser("list", help="local, static and learned MACs")
    _add_output(ls)
    ls.set_defaults(func=cmd_fdb_list)

    st = sub.add_parser("stats", help="per-VNI counters and drops by reason (VNI 0: no VNI)")
    _add_output(st)
    st.set_defaults(func=cmd_stats)

    dk = sub.add_parser("docker-plugin", help="serve the Docker network driver `dataplane` (foreground)")
    dk.add_argument("--socket", default="/run/docker/plugins/dataplane.sock",
                    help="plugin socket; Docker finds /run/docker/plugins/NAME.sock (default: %(default)s)")
    dk.set_defaults(func=cmd_docker_plugin)

    cn = sub.add_parser("cni", help="the CNI plugin").add_subparsers(dest="sub", required=True)
    a = cn.add_parser("install", help="write the `dataplane` plugin executable into a CNI bin directory")
    a.add_argument("--bin-dir", default="/opt/cni/bin")
    a.set_defaults(func=cmd_cni_install)

    labp = sub.add_parser("lab", help="simulated hosts in network namespaces").add_subparsers(dest="sub", required=True)
    a = labp.add_parser("up", help="build hosts, bring each up as a VTEP, create sandboxes")
    a.add_argument("--hosts", type=int, default=2)
    a.add_argument("--vni", action="append", required=True)
    a.add_argument("--per-host", type=int, default=1, help="sandboxes per host and VNI")
    a.add_argument("--xdp-guard", action="store_true")
    a.add_argument("--peer-check", action="store_true")
    a.add_argument("--registry", choices=lab.REGISTRY_MODES, default="sqlite",
                   help="sqlite file, a real etcd on the underlay, or none (static peers)")
    a.add_argument("--lease-ttl", type=int, default=LEASE_TTL_DEFAULT)
    a.add_argument("--gso-max-size", type=int, default=linkgso.LEGACY_MAX,
                   help=f"IPv4 GSO/GRO limit of the hosts' uplinks; above 65536 turns on BIG TCP "
                        f"(e.g. {linkgso.BIG_TCP_SIZE}), which endpoints then inherit")
    a.set_defaults(func=cmd_lab_up)
    d = labp.add_parser("down", help="remove every lab namespace, link, pin and file")
    d.set_defaults(func=cmd_lab_down)
    ls = labp.add_parser("ls", help="hosts and sandboxes")
    _add_output(ls)
    ls.set_defaults(func=cmd_lab_ls)
    ex = labp.add_parser("exec", help="run a command in a sandbox: lab exec SANDBOX -- CMD...")
    ex.add_argument("sandbox")
    ex.add_argument("command", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_lab_exec)
    dm = labp.add_parser("demo", help="the multi-host demo on VNI 256")
    dm.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    dm.add_argument("--registry", choices=lab.REGISTRY_MODES, default="etcd",
                    help="etcd (default: a real etcd and an agent per host), sqlite, or none (static peers)")
    dm.set_defaults(func=cmd_lab_demo)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.netns and args.cmd != "lab" and netlink.ns_exists(model.parse_name(args.netns, "namespace")):
            # Act as a process of that host: registry traffic leaves from its namespace.
            netlink.enter_netns(args.netns)
        rc = args.func(args)
    except DataplaneError as e:
        print(f"dataplane: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
