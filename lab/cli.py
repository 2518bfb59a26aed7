"""`python -m lab`: simulated hosts in network namespaces on this machine, for
trying dataplane, the demo, the tests and the benchmarks. A developer tool in
the checkout, not part of the installed package."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from dataplane.agent.main import LEASE_TTL_DEFAULT
from dataplane.cli.output import add_output, emit
from dataplane.core.errors import DataplaneError
from dataplane.kernel import gso
from lab import topology
from lab.unwind import unwind_on_sigterm


def cmd_up(args):
    topology.up(args.hosts, args.vni, args.per_host, xdp_guard=args.xdp_guard, peer_check=args.peer_check,
                registry=args.registry, lease_ttl=args.lease_ttl, gso_max_size=args.gso_max_size,
                etcd_members=args.etcd_members, etcd_tls=args.etcd_tls, mtu=args.mtu,
                nic_like=args.nic_like, fdb_age=args.fdb_age)
    info = topology.ls()
    tls = (topology.load() or {}).get("params", {}).get("etcd_tls")
    print(f"lab up: {len(info['hosts'])} hosts, {len(info['sandboxes'])} sandboxes, registry {args.registry}"
          + (" (TLS with client certificates, a user per host)" if tls else "") + " (see `python -m lab ls`)")


def cmd_down(args):
    print("lab down" if topology.down() else "lab down: nothing was up")


def cmd_ls(args):
    info = topology.ls()
    if args.output == "json":
        emit(args, info)
        return
    emit(args, info["hosts"], ["name", "netns", "uplink", "vtep"])
    print()
    emit(args, info["sandboxes"], ["name", "host", "vni", "ip", "mac"])
    if info["etcd"]:
        print()
        emit(args, info["etcd"], ["name", "client_url", "pid", "alive", "leader"])


def cmd_exec(args):
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    argv = topology.exec_argv(args.sandbox, argv)
    sys.stdout.flush()
    os.execvp(argv[0], argv)


def cmd_demo(args):
    from lab.demo import run  # noqa: PLC0415 - only the demo needs it
    unwind_on_sigterm()              # a timeout's kill: the lab goes, and the capture
    return run(keep=args.keep, registry=args.registry, etcd_tls=args.etcd_tls, pcap_out=args.write)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab", description="simulated dataplane hosts in network namespaces")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    a = sub.add_parser("up", help="build hosts, bring each up as a VTEP, create sandboxes")
    a.add_argument("--hosts", type=int, default=2, help="number of hosts (default: %(default)s)")
    a.add_argument("--vni", action="append", required=True, help="a VNI every host serves (repeatable)")
    a.add_argument("--per-host", type=int, default=1, help="sandboxes per host and VNI (default: %(default)s)")
    a.add_argument("--xdp-guard", action="store_true", help="attach the XDP guard to every uplink")
    a.add_argument("--peer-check", action=argparse.BooleanOptionalAction, default=None,
                   help="decapsulate only from each VNI's peers (dataplane's default: on)")
    a.add_argument("--registry", choices=topology.REGISTRY_MODES, default="sqlite",
                   help="sqlite file, a real etcd on the underlay, or none (static peers) (default: %(default)s)")
    a.add_argument("--lease-ttl", type=int, default=LEASE_TTL_DEFAULT, help="host liveness lease, s (default: %(default)s)")
    a.add_argument("--etcd-members", type=int, default=1,
                   help="with --registry etcd: members of the etcd cluster, each a host on the underlay "
                        "(odd, 1..5; default: %(default)s)")
    a.add_argument("--mtu", type=int, default=1500,
                   help="underlay MTU, 1280..9000 (default: %(default)s; 9000: a jumbo-frame underlay)")
    a.add_argument("--etcd-tls", action=argparse.BooleanOptionalAction, default=None,
                   help="with --registry etcd: TLS with client certificates (made with openssl at start) for clients "
                        "and peers, and etcd authentication with a user and role per host (default: on; "
                        "--no-etcd-tls for plain HTTP)")
    a.add_argument("--gso-max-size", type=int, default=gso.LEGACY_MAX,
                   help=f"IPv4 GSO/GRO limit of the hosts' uplinks; above 65536 turns on BIG TCP "
                        f"(e.g. {gso.BIG_TCP_SIZE}), which endpoints then inherit (default: %(default)s)")
    a.add_argument("--nic-like", action="store_true",
                   help="underlay links as NICs behave: frames at most an MTU on the wire, GRO at each "
                        "host's uplink (veth alone hands 64 KB frames across whole)")
    a.add_argument("--fdb-age", type=int, default=None,
                   help="learned FDB entry lifetime, s, on every host (default: dataplane's); the agents' "
                        "housekeeping runs every quarter of it, 1-10 s")
    a.set_defaults(func=cmd_up)
    d = sub.add_parser("down", help="remove every lab namespace, link, pin and file")
    d.set_defaults(func=cmd_down)
    ls = sub.add_parser("ls", aliases=["list"], help="hosts and sandboxes")
    add_output(ls)
    ls.set_defaults(func=cmd_ls)
    ex = sub.add_parser("exec", help="run a command in a sandbox: exec SANDBOX -- CMD...")
    ex.add_argument("sandbox", help="sandbox name (as `ls` shows it)")
    ex.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments, after --")
    ex.set_defaults(func=cmd_exec)
    dm = sub.add_parser("demo", help="the multi-host demo on VNI 256")
    dm.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    dm.add_argument("-w", "--write", metavar="FILE",
                    help="keep the underlay capture (VXLAN on UDP 4789) in FILE for Wireshark (default: removed)")
    dm.add_argument("--registry", choices=topology.REGISTRY_MODES, default="etcd",
                    help="etcd (a real etcd and an agent per host), sqlite, or none (static peers) (default: %(default)s)")
    dm.add_argument("--etcd-tls", action=argparse.BooleanOptionalAction, default=None,
                    help="with --registry etcd: TLS, client certificates and a user per host (default: on)")
    dm.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="lab: %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args) or 0
    except DataplaneError as e:
        print(f"lab: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
