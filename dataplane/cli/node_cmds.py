"""`up`, `down`, `peer`, `fdb` and `agent`: one node and its agent."""

from __future__ import annotations

import argparse
import time

from dataplane.agent import boot_wait, client, control
from dataplane.agent.main import LEASE_TTL_DEFAULT
from dataplane.cli.output import add_output, add_vni_filter, by_vni, emit, say
from dataplane.core import model
from dataplane.core.errors import Conflict, NotFound, UsageError
from dataplane.kernel import gso
from dataplane.node import Node, choices, peers, readout
from dataplane import registry


def node_of(args) -> Node:
    return Node(args.netns)


def agent_node(args) -> Node | None:
    """The node if it runs with a registry (its agent handles endpoints), else None."""
    node = node_of(args)
    st = node.state()
    return node if st and st.registry else None


RESTORE_ALONE = ("vni", "port", "subnet", "peer", "peer_check", "rx_gro", "vxlan_guard",
                 "xdp_guard", "fdb_age", *choices.METER_FIELDS, "metrics_address", "metrics_web_config",
                 "map_size", "registry", "no_registry", "host_name", "lease_ttl")


def cmd_up(args):
    node = node_of(args)
    if args.restore:
        # Given at all, not by truth (--port 0 and --fdb-age 0 went unheeded, not refused), but for
        # --no-registry, a store_true flag whose False is its unset.
        given = [f"--{a.replace('_', '-')}" for a in RESTORE_ALONE
                 if (getattr(args, a) if a == "no_registry" else getattr(args, a) is not None)]
        if given:
            raise UsageError(f"--restore takes the node's saved configuration (but --underlay and --local-ip, "
                             f"where the underlay moved): drop {', '.join(given)}")
        try:
            st = control.restore(node, agent=not args.no_agent, underlay=args.underlay, local_ip=args.local_ip)
        except Exception as e:
            boot_wait.before_failing(e)
            raise
    else:
        url = control.registry_mode(node, args.registry, args.no_registry)
        st = control.up(node, url, args.vni, subnet=args.subnet, port=args.port, host_name=args.host_name,
                        lease_ttl=args.lease_ttl, underlay=args.underlay, local_ip=args.local_ip,
                        peer_ips=args.peer or (), peer_check=args.peer_check, rx_gro=args.rx_gro,
                        xdp_guard=args.xdp_guard, vxlan_guard=args.vxlan_guard,
                        fdb_age=args.fdb_age, map_sizes=dict(args.map_size or []), agent=not args.no_agent,
                        meters={a: getattr(args, a) for a in choices.METER_FIELDS},
                        metrics_address=args.metrics_address, metrics_web_config=args.metrics_web_config)
    c = st.config
    nets = ", ".join(f"{v} ({n.subnet}, mtu {n.mtu})" for v, n in sorted(st.networks.items()))
    where = f"; host {st.host_name} in registry {st.registry}" if st.registry else ""
    big = (f"; IPv4 BIG TCP: endpoints send up to {st.uplink.gso_max}-byte packets, as {c.underlay} does"
           if st.uplink.gso_max > gso.LEGACY_MAX else "")
    say(args, f"up: node {st.node} VTEP {c.local_ip}:{c.port} on {c.underlay}; "
              f"VNIs {nets or '(from registry)'}{where}{big}",
        {"node": st.node, "vtep": c.local_ip, "port": c.port, "underlay": c.underlay,
         "networks": [{"vni": v, "subnet": n.subnet, "mtu": n.mtu} for v, n in sorted(st.networks.items())],
         "registry": st.registry, "host_name": st.host_name, "gso_max": st.uplink.gso_max})


def cmd_down(args):
    node = node_of(args)
    vnis = sorted({model.parse_vni(v) for v in args.vni or []})
    st = node.state()
    absent = [v for v in vnis if not st or v not in st.networks]
    was_up = control.down(node, vnis)
    gone = [v for v in vnis if v not in absent]
    what = (f"VNIs {', '.join(map(str, gone)) or 'none'} removed"
            + (f"; {', '.join(map(str, absent))} not up" if absent else "")) if vnis else "node removed"
    say(args, f"down: {what}" if was_up else "down: nothing was up",
        {"was_up": was_up, "vnis": gone, "not_up": absent})


def cmd_peer_add(args):
    added = peers.add(node_of(args), args.ip, args.vni)
    control.persist(node_of(args))
    say(args, f"peer {args.ip}: added to VNIs {', '.join(map(str, added)) or '(already present)'}",
        {"peer": args.ip, "added": added})


def cmd_peer_rm(args):
    removed = peers.remove(node_of(args), args.ip, args.vni)
    control.persist(node_of(args))
    say(args, f"peer {args.ip}: removed from VNIs {', '.join(map(str, removed))}", {"peer": args.ip, "removed": removed})


def cmd_peer_list(args):
    node = agent_node(args)
    rows = client.call(node.name, "peer_list") if node else peers.listing(node_of(args).require_up())
    emit(args, by_vni(args, rows), ["vni", "peer", "source"])


def cmd_fdb_list(args):
    emit(args, by_vni(args, readout.fdb(node_of(args))), ["vni", "mac", "where", "state", "age_s"])


def cmd_agent_run(args):
    from dataplane.agent import restarts  # noqa: PLC0415 - only the agent needs it
    from dataplane.agent.main import Agent  # noqa: PLC0415
    node = node_of(args)
    st = node.state()
    if not st:
        raise NotFound(f"node {node.name} is not up: run `dataplane up` first")
    n = restarts.count(node.name)        # a start that fails at once (its registry's files unreadable) counts too
    try:
        if not st.registry:              # (it went on with the default registry, and unserved the static VNIs)
            raise UsageError(f"node {node.name} runs without a registry (static peers): it has no agent; "
                             "`dataplane up --registry URL` gives it one")
        ttl = args.lease_ttl if args.lease_ttl is not None else (st.lease_ttl or LEASE_TTL_DEFAULT)   # 0: refused
        ag = Agent(node, args.registry or st.registry or registry.DEFAULT_URL,
                   args.host_name or st.host_name or node.name, ttl)
    except Exception:
        restarts.pause(n, time.sleep)      # before the error goes back to the supervisor, which restarts us
        raise
    ag.start_number = n                  # Agent.run waits as it says, once it holds the node
    from dataplane.agent.signals import install_signal_handlers  # noqa: PLC0415 - as Agent
    install_signal_handlers(ag)
    try:
        ag.run()
    except Exception as e:
        if getattr(ag, "start_waited", False):
            raise                        # the next start counts it and waits
        if isinstance(e, Conflict) and not restarts.under_supervisor():
            restarts.uncount(node.name)  # typed by hand beside a running agent: not that agent's row
        else:                            # failed before its wait (another agent holds the node, the agent file
            restarts.pause(n, time.sleep)    # not written: /run full): waits as a crash loop does
        raise


def cmd_agent_status(args):
    emit(args, client.call(node_of(args).name, "status"))


def _map_size(text: str):
    name, _, value = text.partition("=")
    try:
        return name, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=ENTRIES, got {text!r}") from None


def register(sub) -> None:
    up = sub.add_parser("up", help="make this host a VTEP for one or more VNIs (idempotent)")
    up.add_argument("--vni", action="append",
                    help=f"VXLAN network id, 1..{model.VNI_MAX} (repeatable; optional with a registry)")
    up.add_argument("--underlay", help="uplink interface (default: that of the default route)")
    up.add_argument("--local-ip", help="VTEP address (default: the underlay's first IPv4 address)")
    up.add_argument("--port", type=int, help=f"VXLAN UDP port (default {model.VXLAN_PORT})")
    up.add_argument("--subnet", help="endpoint subnet of the VNI (default 10.<(vni/256)%%256>.<vni%%256>.0/24)")
    up.add_argument("--peer", action="append", help="remote VTEP to flood to (repeatable)")
    up.add_argument("--peer-check", action=argparse.BooleanOptionalAction, default=None,
                    help="decapsulate only from the VTEPs the registry (or --peer) lists for the VNI: on by default; "
                         "--no-peer-check accepts VXLAN from anyone (either way on a running node)")
    up.add_argument("--xdp-guard", action=argparse.BooleanOptionalAction, default=None,
                    help="attach the XDP guard to the uplink (default: off; --no-xdp-guard detaches it; either "
                         "way on a running node, and kept by later `up`s)")
    up.add_argument("--rx-gro", action=argparse.BooleanOptionalAction, default=None,
                    help="hold the VXLAN port with dpgro0, a vxlan device that receives nothing, so that the "
                         "uplink's GRO merges frames from other hosts (default: on; docs/DESIGN.md 'Receive GRO')")
    up.add_argument("--vxlan-guard", action=argparse.BooleanOptionalAction, default=None,
                    help="drop UDP to the VXLAN port that this host forwards out of its uplink, so no container "
                         "sends VXLAN into the overlay through the host's NAT (default: on; --no-vxlan-guard for a "
                         "host that routes others' VXLAN; either way on a running node)")
    up.add_argument("--fdb-age", type=int, help=f"learned FDB entry lifetime, s (default {model.FDB_AGE_DEFAULT_S})")
    up.add_argument("--storm-rate", type=int, metavar="FRAMES",
                    help="storm control: broadcast/unknown frames per second one endpoint may flood "
                         f"(default {model.STORM_RATE_DEFAULT}; 0: no limit; either way on a running node)")
    up.add_argument("--storm-burst", type=int, metavar="FRAMES",
                    help=f"storm control: frames one endpoint may flood at once (default {model.STORM_BURST_DEFAULT})")
    up.add_argument("--overlay-storm-rate", type=int, metavar="COPIES",
                    help="storm control for broadcast and multicast frames that arrive from the underlay: copies per "
                         "second into this host's endpoints one network may make of them (default "
                         f"{model.OVERLAY_STORM_RATE_DEFAULT}; 0: no limit; either way on a running node)")
    up.add_argument("--overlay-storm-host-rate", type=int, metavar="COPIES",
                    help="the same for all networks of this host together (default "
                         f"{model.OVERLAY_HOST_RATE_DEFAULT}; 0: no limit; either way on a running node)")
    up.add_argument("--overlay-storm-peer-rate", metavar="COPIES|auto",
                    help="the same for the frames of one peer (VTEP address) in one network, so that one host "
                         "that does not meter its floods takes at most this share of the network's (default "
                         "'auto': half the network's rate; 0: no limit; either way on a running node)")
    up.add_argument("--learn-rate", type=int, metavar="MACS",
                    help="MACs new to a network it may learn from other hosts' frames per second, and as many "
                         f"at once (default {model.LEARN_RATE_DEFAULT}; 0: no limit; either way on a running node)")
    up.add_argument("--metrics-address", metavar="ADDRESS:PORT",
                    help="where the agent serves Prometheus /metrics and /healthz (default 127.0.0.1:9469; "
                         "'off': nowhere); the agent takes it when it (re)starts")
    up.add_argument("--metrics-web-config", metavar="FILE",
                    help="TLS (client certificates too) and passwords for /metrics, in the web config format of "
                         "Prometheus's exporters (node_exporter's --web.config.file); checked now, read again "
                         "when it or its files change; 'off': plain HTTP; the agent takes it when it (re)starts")
    up.add_argument("--map-size", action="append", type=_map_size, metavar="DP_MAP_X=N",
                    help="override a map's number of entries (repeatable)")
    up.add_argument("--registry", help="endpoint registry: sqlite:///PATH, etcd://HOST:PORT[,...] or, over TLS with a "
                                       "client certificate and an etcd user, etcds://HOST:PORT[,...]?ca=FILE&cert=FILE"
                                       "&key=FILE&user=NAME&password-file=FILE; the node keeps it for restarts "
                                       f"(default $DATAPLANE_REGISTRY or {registry.BUILTIN_URL})")
    up.add_argument("--no-registry", action="store_true", help="no registry and no agent: peers and endpoints by hand")
    up.add_argument("--host-name", help="this host's name in the registry (default: the namespace or hostname)")
    up.add_argument("--lease-ttl", type=int, help=f"host liveness lease, s (default {LEASE_TTL_DEFAULT})")
    up.add_argument("--restore", action="store_true",
                    help="bring the node back as it was last brought up (its configuration is kept in "
                         "/var/lib/dataplane; at boot, the systemd unit runs this)")
    up.add_argument("--no-agent", action="store_true",
                    help="do not start the agent (a supervisor runs `dataplane agent run` instead)")
    add_output(up)
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="remove the node, or only some VNIs (idempotent)")
    down.add_argument("--vni", action="append", help="remove only this VNI and its endpoints (no registry only)")
    add_output(down)
    down.set_defaults(func=cmd_down)

    peer = sub.add_parser("peer", help="remote VTEPs a VNI floods to").add_subparsers(dest="sub", required=True)
    for verb, fn, what in (("add", cmd_peer_add, "add a static peer"), ("rm", cmd_peer_rm, "remove a static peer")):
        a = peer.add_parser(verb, help=what)
        a.add_argument("ip", help="the peer's VTEP address")
        a.add_argument("--vni", action="append", help="only on this VNI (repeatable; default: every VNI of the node)")
        add_output(a)
        a.set_defaults(func=fn)
    _list_parser(peer, "static and registry peers per VNI", cmd_peer_list)

    fdb = sub.add_parser("fdb", help="forwarding database").add_subparsers(dest="sub", required=True)
    _list_parser(fdb, "local, static and learned MACs", cmd_fdb_list)


    ag = sub.add_parser("agent", help="the registry agent of this node").add_subparsers(dest="sub", required=True)
    a = ag.add_parser("run", help="run the agent in the foreground (`up` starts it in the background)")
    a.add_argument("--registry", help="registry URL (default: the node's)")
    a.add_argument("--host-name", help="this host's name in the registry (default: the node's)")
    a.add_argument("--lease-ttl", type=int, help=f"host liveness lease, s (default: the node's, or {LEASE_TTL_DEFAULT})")
    a.set_defaults(func=cmd_agent_run)
    a = ag.add_parser("status", help="revision, hosts, installed entries, errors, punts, memory")
    add_output(a)
    a.set_defaults(func=cmd_agent_status)


def _list_parser(sub, what: str, fn):
    """`list` with `ls` as its alias, everywhere; the parser."""
    ls = sub.add_parser("list", aliases=["ls"], help=what)
    add_vni_filter(ls)
    add_output(ls)
    ls.set_defaults(func=fn)
    return ls
