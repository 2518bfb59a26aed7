"""`endpoint` and `network`: through the node's agent when it has a registry,
on the node directly when it has none; `registry auth-setup`: etcd's users;
`registry forget-host`: what a host gone for good left in the registry."""

from __future__ import annotations

from dataplane.agent import client, control
from dataplane.cli.node_cmds import _list_parser, agent_node, node_of
from dataplane.cli.output import add_output, by_vni, emit, say
from dataplane.core import model
from dataplane.core.errors import UsageError
from dataplane.core.notice import notice
from dataplane.node import endpoints
from dataplane import registry
from dataplane.registry import etcd_access, etcd_auth
from dataplane.registry.records import is_router, key


def cmd_endpoint_add(args):
    node = agent_node(args)
    if node:
        ep = client.call(node.name, "endpoint_add", id=args.name, network=args.network,
                         vni=model.parse_vni(args.vni) if args.vni else None, ip=args.ip, mac=args.mac)
    else:
        if not args.vni or args.network:
            raise UsageError("give --vni alone (a node without a registry has no named networks)")
        ep = endpoints.add(node_of(args), args.name, args.vni, ip=args.ip, mac=args.mac).to_dict()
    say(args, f"endpoint {ep['name']}: VNI {ep['vni']} {ep['ip']} {ep['mac']} "
              f"(netns {ep['netns']}, host side {ep['host_ifname']})", {"id": ep["name"], **ep})


def cmd_endpoint_rm(args):
    node = agent_node(args)
    if node:
        client.call(node.name, "endpoint_rm", id=args.name)
    else:
        endpoints.remove(node_of(args), args.name)
    say(args, f"endpoint {args.name} removed", {"id": args.name, "name": args.name, "removed": True})


def cmd_endpoint_move(args):
    node = agent_node(args)
    if not node:
        raise UsageError("moving an endpoint needs a node with a registry")
    ep = client.call(node.name, "endpoint_move", id=args.name)
    say(args, f"endpoint {ep['name']} moved from {ep['from']} to {ep['host']}: VNI {ep['vni']} {ep['ip']} {ep['mac']}",
        {"id": ep["name"], **ep})


ENDPOINT_COLUMNS = ["id", "network", "vni", "host", "ip", "mac", "alive"]


def cmd_endpoint_list(args):
    """The same keys in every mode: without a registry, the node's endpoints are the whole list."""
    node = agent_node(args)
    if node:
        rows = client.call(node.name, "endpoint_list")
    else:
        n = node_of(args)
        rows = [{"id": e["name"], "network": None, "vni": e["vni"], "host": n.name, "ip": e["ip"], "mac": e["mac"],
                 "alive": True, "local": True} for e in endpoints.listing(n)]
    if not args.routers:          # the gateways' own addresses (agent/routers.py) only when asked
        rows = [r for r in rows if not r.get("router")]
    emit(args, by_vni(args, rows), ENDPOINT_COLUMNS)


def cmd_network_create(args):
    with control.opened(args.registry, node_of(args)) as reg:
        net = reg.network_create(args.name, args.vni, subnet=args.subnet, gateway=args.gateway,
                                 mtu=args.mtu, port=args.port, internal=args.internal)
    say(args, f"network {net.name}: VNI {net.vni} {net.subnet} gateway {net.gateway} mtu {net.mtu} port {net.port}"
        + (" internal (no way out)" if net.internal else ""), net.to_dict())


def cmd_network_rm(args):
    with control.opened(args.registry, node_of(args)) as reg:
        reg.network_rm(args.name)
    say(args, f"network {args.name} removed", {"name": args.name, "removed": True})


def cmd_network_list(args):
    with control.opened(args.registry, node_of(args)) as reg:
        snap = reg.snapshot()
    count = {}
    vnis = {n.name: n.vni for n in snap.networks.values()}
    for e in snap.endpoints.values():
        if not is_router(e, vnis.get(e.network)):     # a gateway's own address is no endpoint
            count[e.network] = count.get(e.network, 0) + 1
    rows = [{**n.to_dict(), "endpoints": count.get(n.name, 0)} for n in sorted(snap.networks.values(), key=lambda n: n.vni)]
    for bad in snap.bad:                 # listed nowhere else: say what removes it (registry/malformed.py)
        if bad.startswith(key("networks", "")):
            name = bad[len(key("networks", "")):].partition(":")[0]
            notice(f"warning: network record {name!r} cannot be read ({bad.partition(': ')[2]}): "
                   f"`dataplane network rm {name}` removes it")
    emit(args, rows, ["name", "vni", "subnet", "gateway", "mtu", "port", "endpoints"])


def cmd_registry_auth_setup(args):
    kind, access = registry.parse_url(args.registry)
    if kind != "etcds":
        raise UsageError("auth-setup is for etcd over TLS: give --registry etcds://...?ca=...&user=root&password-file=...")
    users = {}
    hosts = [model.parse_name(h, "host name") for h in args.hosts]     # all first: no files for half of them
    for host in hosts:
        users[host] = etcd_access.read_password(etcd_auth.password_file(args.password_dir, host))
    with control.opened(args.registry) as reg:
        done = etcd_auth.setup(reg.kv, access.password(), users)
    rows = [{"host": h, "user": etcd_auth.host_user(h), "password_file": etcd_auth.password_file(args.password_dir, h)}
            for h in args.hosts]
    say(args, "\n".join(done + [f"host {r['host']}: add to its registry URL (and its own cert= and key=): "
                                f"user={r['user']}&password-file={r['password_file']}" for r in rows]),
        {"done": done, "hosts": rows})


def cmd_registry_forget_host(args):
    with control.opened(args.registry, node_of(args)) as reg:
        out = reg.host_forget(args.host)
    say(args, f"host {out['host']}: {len(out['endpoints_removed'])} endpoint(s) removed, "
              f"{len(out['moves_taken_back'])} move(s) to it taken back, "
              f"{out['reservations_released']} reservation(s) released", out)


def register(sub) -> None:
    ep = sub.add_parser("endpoint", help="sandboxes attached to a VNI").add_subparsers(dest="sub", required=True)
    a = ep.add_parser("add", help="create a sandbox netns NAME with eth0 on the VNI")
    a.add_argument("name", help="endpoint name, also the sandbox's network namespace")
    a.add_argument("--vni", help="the VNI to attach to (with a registry: the network having it)")
    a.add_argument("--network", help="registry network name (instead of --vni)")
    a.add_argument("--ip", help="address in the network's subnet (default: next free)")
    a.add_argument("--mac", help="MAC address (default: 02:42 + the IPv4 address, as Docker does)")
    add_output(a)
    a.set_defaults(func=cmd_endpoint_add)
    r = ep.add_parser("rm", help="remove an endpoint and its sandbox")
    r.add_argument("name", help="the endpoint to remove")
    add_output(r)
    r.set_defaults(func=cmd_endpoint_rm)
    mv = ep.add_parser("move", help="bring a registered endpoint (same MAC and address) to this host")
    mv.add_argument("name", help="the endpoint to move here")
    add_output(mv)
    mv.set_defaults(func=cmd_endpoint_move)
    ls = _list_parser(ep, "every endpoint (with a registry: of the whole cluster)", cmd_endpoint_list)
    ls.add_argument("--routers", action="store_true",
                    help="also each host's gateway router's own address in a network (dpgw.<VNI>.<host>)")

    net = sub.add_parser("network", help="registry networks (one VNI and subnet each)").add_subparsers(
        dest="sub", required=True)
    reg_help = "registry URL (default: the node's, else $DATAPLANE_REGISTRY or the built-in default)"
    a = net.add_parser("create", help="create a network in the registry; every agent serves it")
    a.add_argument("name", help="network name")
    a.add_argument("--vni", required=True, help=f"its VXLAN network id, 1..{model.VNI_MAX}")
    a.add_argument("--subnet", help="endpoint subnet (default 10.<(vni/256)%%256>.<vni%%256>.0/24)")
    a.add_argument("--gateway", help="gateway address kept out of allocation (default: the subnet's first)")
    a.add_argument("--mtu", type=int, help="endpoint MTU (default: 1450)")
    a.add_argument("--port", type=int, help=f"VXLAN UDP port (default {model.VXLAN_PORT})")
    a.add_argument("--internal", action="store_true",
                   help="no way out of the overlay: endpoints get no default route through the host's gateway")
    a.add_argument("--registry", help=reg_help)
    add_output(a)
    a.set_defaults(func=cmd_network_create)
    r = net.add_parser("rm", help="remove a network that has no endpoints")
    r.add_argument("name", help="network name")
    r.add_argument("--registry", help=reg_help)
    add_output(r)
    r.set_defaults(func=cmd_network_rm)
    ls = net.add_parser("list", aliases=["ls"], help="networks with their endpoint counts")
    ls.add_argument("--registry", help=reg_help)
    add_output(ls)
    ls.set_defaults(func=cmd_network_list)

    rg = sub.add_parser("registry", help="the registry: etcd's access control, hosts gone for good").add_subparsers(
        dest="sub", required=True)
    a = rg.add_parser("auth-setup", help="turn etcd's authentication on: root, and per host a user and role that "
                                         "reads the registry, writes shared records and only its own host record")
    a.add_argument("hosts", nargs="+", metavar="HOST", help="host names, as their agents register (--host-name)")
    a.add_argument("--registry", required=True,
                   help="etcds://HOST:PORT[,...]?ca=FILE&cert=FILE&key=FILE&user=root&password-file=FILE "
                        "(root's password: kept in that file; set on root while authentication is still off)")
    a.add_argument("--password-dir", required=True,
                   help="each host's etcd password in DIR/<host>.password (0600): made if missing, kept if present")
    add_output(a)
    a.set_defaults(func=cmd_registry_auth_setup)
    f = rg.add_parser("forget-host", help="remove what a host gone for good left: its endpoints and their "
                                          "addresses, its reservations, moves to it (refused while it is alive)")
    f.add_argument("host", help="the host's name, as its agent registered (--host-name)")
    f.add_argument("--registry", help=reg_help)
    add_output(f)
    f.set_defaults(func=cmd_registry_forget_host)
