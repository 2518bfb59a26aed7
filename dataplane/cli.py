"""`dataplane`: argument parsing and output only; the work is in node.py and lab.py."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import lab, model
from .errors import DataplaneError
from .node import Node


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
    st = _node(args).up(args.vni, underlay=args.underlay, local_ip=args.local_ip, port=args.port,
                        subnet=args.subnet, peers=args.peer or (), peer_check=args.peer_check,
                        xdp_guard=args.xdp_guard, fdb_age=args.fdb_age,
                        map_sizes=dict(args.map_size or []))
    c = st["config"]
    nets = ", ".join(f"{v} ({n['subnet']}, mtu {n['mtu']})" for v, n in sorted(st["networks"].items(), key=lambda x: int(x[0])))
    print(f"up: node {st['node']} VTEP {c['local_ip']}:{c['port']} on {c['underlay']}; VNIs {nets}")


def cmd_down(args):
    if _node(args).down(args.vni):
        print("down: " + (f"VNIs {', '.join(args.vni)} removed" if args.vni else "node removed"))
    else:
        print("down: nothing was up")


def cmd_endpoint_add(args):
    ep = _node(args).endpoint_add(args.name, args.vni, ip=args.ip, mac=args.mac)
    print(f"endpoint {ep['name']}: VNI {ep['vni']} {ep['ip']} {ep['mac']} (netns {ep['name']}, host side {ep['host_ifname']})")


def cmd_endpoint_rm(args):
    _node(args).endpoint_rm(args.name)
    print(f"endpoint {args.name} removed")


def cmd_endpoint_list(args):
    _out(args, _node(args).endpoints(), ["name", "vni", "ip", "mac", "host_ifname", "ifindex"])


def cmd_peer_add(args):
    added = _node(args).peer_add(args.ip, args.vni)
    print(f"peer {args.ip}: added to VNIs {', '.join(map(str, added)) or '(already present)'}")


def cmd_peer_rm(args):
    removed = _node(args).peer_rm(args.ip, args.vni)
    print(f"peer {args.ip}: removed from VNIs {', '.join(map(str, removed))}")


def cmd_peer_list(args):
    _out(args, _node(args).peers(), ["vni", "peer"])


def cmd_fdb_list(args):
    _out(args, _node(args).fdb(), ["vni", "mac", "where", "state", "age_s"])


def cmd_stats(args):
    _out(args, _node(args).stats(), ["vni", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes",
                                     "local_packets", "arp_replies", "flooded", "drops"])


def cmd_lab_up(args):
    lab.up(args.hosts, args.vni, args.per_host, xdp_guard=args.xdp_guard, peer_check=args.peer_check)
    info = lab.ls()
    print(f"lab up: {len(info['hosts'])} hosts, {len(info['sandboxes'])} sandboxes (see `dataplane lab ls`)")


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
    return run(keep=args.keep)


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
    up.add_argument("--vni", action="append", required=True, help=f"VXLAN network id, 1..{model.VNI_MAX} (repeatable)")
    up.add_argument("--underlay", help="uplink interface (default: that of the default route)")
    up.add_argument("--local-ip", help="VTEP address (default: the underlay's first IPv4 address)")
    up.add_argument("--port", type=int, help=f"VXLAN UDP port (default {model.VXLAN_PORT})")
    up.add_argument("--subnet", help="endpoint subnet of the VNI (default 10.<vni/256>.<vni%%256>.0/24)")
    up.add_argument("--peer", action="append", help="remote VTEP to flood to (repeatable)")
    up.add_argument("--peer-check", action="store_true", help="decapsulate only from configured peers")
    up.add_argument("--xdp-guard", action="store_true", help="attach the XDP guard to the uplink")
    up.add_argument("--fdb-age", type=int, help=f"learned FDB entry lifetime, s (default {model.FDB_AGE_DEFAULT_S})")
    up.add_argument("--map-size", action="append", type=_map_size, metavar="DP_MAP_X=N", help="override a map size")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="remove the node, or only some VNIs (idempotent)")
    down.add_argument("--vni", action="append", help="remove only this VNI and its endpoints")
    down.set_defaults(func=cmd_down)

    ep = sub.add_parser("endpoint", help="sandboxes attached to a VNI").add_subparsers(dest="sub", required=True)
    a = ep.add_parser("add", help="create a sandbox netns NAME with eth0 on the VNI")
    a.add_argument("name")
    a.add_argument("--vni", required=True)
    a.add_argument("--ip", help="address in the VNI's subnet (default: next free)")
    a.add_argument("--mac", help="default: 02:42 + the IPv4 address, as Docker does")
    a.set_defaults(func=cmd_endpoint_add)
    r = ep.add_parser("rm", help="remove an endpoint and its sandbox")
    r.add_argument("name")
    r.set_defaults(func=cmd_endpoint_rm)
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

    fdb = sub.add_parser("fdb", help="forwarding database").add_subparsers(dest="sub", required=True)
    ls = fdb.add_parser("list", help="local, static and learned MACs")
    _add_output(ls)
    ls.set_defaults(func=cmd_fdb_list)

    st = sub.add_parser("stats", help="per-VNI counters and drops by reason (VNI 0: no VNI)")
    _add_output(st)
    st.set_defaults(func=cmd_stats)

    labp = sub.add_parser("lab", help="simulated hosts in network namespaces").add_subparsers(dest="sub", required=True)
    a = labp.add_parser("up", help="build hosts, bring each up as a VTEP, create sandboxes")
    a.add_argument("--hosts", type=int, default=2)
    a.add_argument("--vni", action="append", required=True)
    a.add_argument("--per-host", type=int, default=1, help="sandboxes per host and VNI")
    a.add_argument("--xdp-guard", action="store_true")
    a.add_argument("--peer-check", action="store_true")
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
    dm.set_defaults(func=cmd_lab_demo)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        rc = args.func(args)
    except DataplaneError as e:
        print(f"dataplane: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
