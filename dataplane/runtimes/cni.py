"""The CNI plugin (spec 1.0.0 and 1.1.0): `type: "dataplane"` in a network
configuration puts the container on a VNI of the overlay.

The runtime runs this with CNI_* in the environment and the configuration on
stdin. It delegates addresses to the configured IPAM plugin (host-local, ...)
or, with no `ipam` section, lets the registry assign one; it asks the node's
agent (over its unix socket) to make the veth, attach the fast path and
register the endpoint. It imports no bcc and no netlink library.

Configuration keys of ours: `vni` (required), `node` (the agent's node name,
default "host": a lab host's is its namespace name).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import sys

from dataplane.agent import client
from dataplane.agent.client import AgentSilent
from dataplane.core import state
from dataplane.core.errors import Conflict, DataplaneError, NotFound, TryAgain, UsageError
from dataplane.runtimes import cni_asks, gateway_arg
from dataplane.runtimes.cni_input import SUPPORTED, _attachment, _check_conf, _read_conf, _refused
from dataplane.runtimes.cni_ipam import (ATTACHMENTS, E_BROKEN, E_CONFIG, E_CONFLICT, E_DECODE,  # noqa: F401
                                         E_ENV, E_INTERNAL, E_IO, E_NOT_AVAILABLE, E_TRY_AGAIN,
                                         E_UNKNOWN_CONTAINER, E_VERSION, VALID_ATTACHMENTS, CNIError, _env,
                                         _ipam, gc_listing)
from dataplane.runtimes.cni_ipam import supports as ipam_supports
from dataplane.runtimes.cni_result import extra_fields, first_ipv4, objects, shape, v4_routes, via


# What the agent says when the container's namespace (CNI_NETNS, an absolute path) is gone: the
# spec's code 3. Before, any NotFound naming a "namespace" got it: an interface missing in the
# host namespace, or the node's own namespace gone, told the runtime its container was unknown.
_CONTAINER_GONE = re.compile(r"network namespace '?/\S* does not exist")

def endpoint_id(network: str, container_id: str, ifname: str) -> str:
    """One attachment (network, container, interface) -> one registry endpoint."""
    return "cni-" + hashlib.sha256(f"{network}/{container_id}/{ifname}".encode()).hexdigest()[:24]


# --- the agent and the IPAM plugin ------------------------------------------------

def _agent(conf: dict, op: str, **args):
    node = conf.get("node", "host")
    try:
        return client.call(node, op, timeout=30, **args)
    except client.AgentNotRunning as e:
        raise CNIError(E_TRY_AGAIN, f"the dataplane agent of node {node} is not running", str(e)) from None
    except TryAgain as e:          # the registry unreachable, or the agent slow to answer: passing
        err = CNIError(E_TRY_AGAIN, f"agent request {op}: {e}")
        err.in_doubt = isinstance(e, AgentSilent)    # the agent may still be carrying it out
        raise err from None
    except NotFound as e:           # 3 only for the container's namespace (a path; the node's is a name)
        raise CNIError(E_UNKNOWN_CONTAINER if _CONTAINER_GONE.search(str(e)) else E_BROKEN, str(e)) from None
    except UsageError as e:
        raise CNIError(E_CONFIG, str(e)) from None
    except Conflict as e:
        raise CNIError(E_CONFLICT, str(e)) from None
    except (DataplaneError, OSError, ValueError) as e:
        raise CNIError(E_IO, f"agent request {op} failed: {e}") from None


def _egress(conf: dict, vni: int, routes: list) -> tuple[str, list]:
    """ipMasq: the host's gateway for the VNI (made if missing, with SNAT: node/gateway.py) and
    the routes (v4_routes') with a default route through it, unless the IPAM gave one."""
    way = _agent(conf, "gateway_ensure", vni=vni)
    routes = via(routes, way["gateway"])     # ours, which the router answers for: the IPAM's may differ
    default = any(ipaddress.ip_network(r["dst"], strict=False).prefixlen == 0 for r in routes)
    return way["gateway"], routes if default else routes + way["routes"]


# --- commands ----------------------------------------------------------------------

def cmd_add(conf: dict, env) -> dict:
    vni = _check_conf(conf)
    cid, ifname, netns = _attachment(env, need_netns=True)
    prev = conf.get("prevResult") or {}
    faces, prev_ips, _ = shape(prev)          # all of it checked before anything is made
    mac, asked_ip = cni_asks.mac(conf, env), cni_asks.ip(conf, env) if "ipam" not in conf else None
    attaching = False
    try:
        ipam = _ipam(conf, env, "ADD") if "ipam" in conf else None
        source = ipam if ipam is not None else prev
        iface, ipinfo = first_ipv4(source)
        routes = v4_routes(shape(source)[2], strict=ipam is not None)
        if "ipam" in conf and iface is None:
            raise CNIError(E_CONFIG, f"IPAM plugin {conf['ipam']['type']} returned no IPv4 address")
        # The way out is the network's: it must exist first. An "mtu" is the network's too: made
        # with it, or checked against it (it was dropped silently when the registry allocated).
        if iface is not None or conf.get("ipMasq") or conf.get("mtu") is not None:
            _agent(conf, "network_ensure", vni=vni, subnet=str(iface.network) if iface else None,
                   mtu=conf.get("mtu"),      # the IPAM's gateway, kept from its pods: the network's if it makes it
                   **(gateway_arg(str(iface.network), (ipinfo or {}).get("gateway")) if ipam and iface else {}))
        gateway, routes = (_egress(conf, vni, routes) if conf.get("ipMasq")
                           else (None, via(routes, (ipinfo or {}).get("gateway"))))
        sandbox = {"netns": netns, "ifname": ifname, "runtime": "cni", "network": conf["name"],
                   "container_id": cid}
        attaching = True
        ep = _agent(conf, "endpoint_attach", id=endpoint_id(conf["name"], cid, ifname), vni=vni,
                    sandbox=sandbox, ip=str(iface.ip) if iface else asked_ip, mac=mac,
                    prefixlen=iface.network.prefixlen if iface else None, routes=routes)
    except BaseException as e:
        if attaching and getattr(e, "in_doubt", False):
            # The agent had the attach and did not answer in time: it may still finish it, with
            # this address. Freed now, the address could go to a concurrent ADD while this
            # container holds it; the runtime's DEL frees it once the agent has let go.
            e.details = "the address is kept until DEL: the agent may still attach it"
            raise
        # Whatever its ADD did or printed (not JSON, null): the address given back. Not after the
        # IPAM plugin's own refusal, which gave none: host-local refuses a repeated ADD for the
        # same container and interface, whose DEL would free the address the first one holds.
        if "ipam" in conf and not getattr(e, "refused", False):
            try:
                _ipam(conf, env, "DEL")
            except CNIError:
                pass
        raise
    ifaces = faces + [{"name": ep["host_ifname"]}, {"name": ifname, "mac": ep["mac"], "sandbox": netns}]
    addr = f"{ep['ip']}/{iface.network.prefixlen if iface else ipaddress.IPv4Network(ep['subnet']).prefixlen}"
    ip_entry = {"address": addr, "interface": len(ifaces) - 1}
    gw = gateway or (ipinfo or {}).get("gateway")
    if gw and isinstance(gw, str):
        ip_entry["gateway"] = gw
    result = {"cniVersion": conf["cniVersion"], "interfaces": ifaces,
              "ips": [i for i in prev_ips if i["address"] != addr] + [ip_entry]}
    if source is not prev:         # a chain's earlier routes stay in the result (installed by their plugin)
        routes = [r for r in shape(prev)[2] if r not in routes] + routes
    else:                          # its IPv6 ones too, which we left alone, and those we could not install
        routes = [r for r in shape(prev)[2]
                  if ipaddress.ip_network(r["dst"], strict=False).version != 4 or extra_fields(r)] + routes
    if routes:
        result["routes"] = routes
    dns = (source or {}).get("dns") or prev.get("dns")
    if dns:
        result["dns"] = dns
    return result


def cmd_del(conf: dict, env) -> None:
    """Best effort, and idempotent. A node taken down (no state: its sandboxes, veths and maps
    went with it) has nothing of ours left: the address is given back and DEL succeeds. A node
    up whose agent cannot answer keeps the address until the agent has let go of the endpoint
    (an address freed first could be handed out while the registry still holds it)."""
    _check_conf(conf)
    cid, ifname = _env(env, "CNI_CONTAINERID"), _env(env, "CNI_IFNAME")
    # Names its ADD refused before asking the IPAM plugin: no address to give back (and the
    # reference plugins refuse such names on DEL too).
    refused = _refused(env)
    try:
        _agent(conf, "endpoint_detach", id=endpoint_id(conf["name"], cid, ifname))
    except CNIError as e:
        if e.code != E_TRY_AGAIN or _node_up(conf):
            raise
    if "ipam" in conf and not refused:
        _ipam(conf, env, "DEL")


def _node_up(conf: dict) -> bool:
    try:
        return state.load(conf.get("node", "host")) is not None
    except DataplaneError:
        return True                # unreadable: assume up, and keep the address


def cmd_check(conf: dict, env) -> None:
    _check_conf(conf)
    cid, ifname, netns = _attachment(env, need_netns=True)
    prev = conf.get("prevResult")
    if not isinstance(prev, dict):
        raise CNIError(E_CONFIG, "CHECK needs prevResult")
    faces = objects(prev, "interfaces", "name")
    mine = [i for i, f in enumerate(faces) if f.get("name") == ifname and f.get("sandbox")]
    if not mine:
        raise CNIError(E_BROKEN, f"prevResult has no interface {ifname} in a sandbox")
    mac = faces[mine[-1]].get("mac")
    try:
        addrs = [ipaddress.ip_interface(i["address"]) for i in objects(prev, "ips", "address")
                 if i.get("interface") == mine[-1]]
        # Every IPv4 route of the result, a chain's earlier ones too: each is in the container
        # (the reference plugins check them all the same way); not one of another table (sbr's,
        # an earlier plugin's), which ADD did not install and the main table never has.
        routes = [r for r in objects(prev, "routes", "dst")
                  if ipaddress.ip_network(r["dst"], strict=False).version == 4 and not extra_fields(r)]
    except ValueError as e:
        raise CNIError(E_DECODE, f"prevResult has a bad address or route: {e}") from None
    try:
        _agent(conf, "endpoint_check", id=endpoint_id(conf["name"], cid, ifname),
               ip=str(addrs[0].ip) if addrs else None, mac=mac, routes=routes)
    except CNIError as e:
        # Its namespace gone is broken too, not the spec's 3 ("the runtime does not need to perform
        # any container network cleanup"): the IPAM's lease waits for its DEL.
        if e.code == E_TRY_AGAIN:
            raise
        # (said so however the agent put it: its next tick removes an endpoint whose interface went
        # with the namespace, and then it knows no such endpoint)
        why = f"network namespace {netns} does not exist" if not os.path.exists(netns) else e.msg
        raise CNIError(E_BROKEN, f"attachment of {cid}/{ifname} is broken: {why}") from None
    if "ipam" in conf:
        _ipam(conf, env, "CHECK")


def cmd_status(conf: dict, env) -> None:
    _check_conf(conf)
    try:
        ping = _agent(conf, "ping")
    except CNIError as e:
        raise CNIError(E_NOT_AVAILABLE, "the dataplane agent is not available", e.msg) from None
    # ADD needs the registry to take requests, not the agent's watch: a watch resuming after an
    # etcd member's restart made every node's runtime NotReady for its seconds, all at once.
    answering = ping["registered"] if "registered" in ping else ping.get("connected")   # (older agents: the watch)
    if not ping.get("synced") or not answering:
        raise CNIError(E_NOT_AVAILABLE, "the dataplane agent is not connected to its registry")
    if "ipam" in conf and env.get("CNI_PATH"):    # the spec: its delegate's STATUS too (CNI_PATH is
        try:                                     # optional for STATUS: without it there is none to ask)
            if ipam_supports(conf, env, "1.1.0"):
                _ipam(conf, env, "STATUS")
        except CNIError as e:
            if e.code == E_NOT_AVAILABLE:
                raise
            raise CNIError(E_NOT_AVAILABLE, f"the IPAM plugin is not available: {e.msg}", e.details) from None


def cmd_gc(conf: dict, env) -> None:
    """Remove this network's attachments on this node that the runtime no longer lists, and
    release their addresses through the IPAM plugin; then pass the GC on to the IPAM plugin
    itself (the spec) if it speaks 1.1.0, which frees what it holds for attachments no longer
    listed (one that does not, as Debian's 1.0.0 host-local, is left at that); an attachment
    that failed here goes to it as valid, so it keeps that address. An error on one attachment
    does not stop the others: the first is reported once all were tried."""
    _check_conf(conf)
    keep = set()
    for name in (VALID_ATTACHMENTS, ATTACHMENTS):      # either name, or both: what either lists stays
        valid = conf.get(name)
        if valid is None:
            continue               # libcni sends null for an empty list
        if not isinstance(valid, list):
            raise CNIError(E_CONFIG, f"{name} must be a list")
        keep |= {(a.get("containerID"), a.get("ifname")) for a in valid if isinstance(a, dict)}
    failed, held = [], []
    for ep in _agent(conf, "endpoint_local", runtime="cni"):
        sb = ep["sandbox"]
        if sb.get("network") != conf["name"] or (sb.get("container_id"), sb.get("ifname")) in keep:
            continue
        try:               # the address first: if that fails the attachment stays, and the next GC
            if "ipam" in conf:     # retries it (detached first, a failed release would never be retried)
                _ipam(conf, env, "DEL", {"CNI_CONTAINERID": sb["container_id"], "CNI_IFNAME": sb["ifname"],
                                         "CNI_NETNS": ""})
            _agent(conf, "endpoint_detach", id=ep["name"])
        except CNIError as e:
            failed.append(e)
            held.append({"containerID": sb["container_id"], "ifname": sb["ifname"]})
    if "ipam" in conf:             # the spec: passed on whatever failed here ("continue" past errors),
        try:                       # what failed above listed as valid: it is still ours, not the delegate's to free
            if ipam_supports(conf, env, "1.1.0"):      # one too old for GC is left at that
                _ipam(gc_listing(conf, held), env, "GC")
        except CNIError as e:
            failed.append(e)
    if failed:
        raise failed[0]


COMMANDS = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "STATUS": cmd_status, "GC": cmd_gc}


def run(env, raw: bytes) -> tuple[int, dict | None]:
    """(exit status, JSON for stdout) for one invocation."""
    version = SUPPORTED[-1]
    try:
        cmd = _env(env, "CNI_COMMAND")
        conf = _read_conf(raw) if raw.strip() or cmd != "VERSION" else {}
        if isinstance(conf.get("cniVersion"), str):
            version = conf["cniVersion"]
        if cmd == "VERSION":
            return 0, {"cniVersion": version if version in SUPPORTED else SUPPORTED[-1],
                       "supportedVersions": SUPPORTED}
        fn = COMMANDS.get(cmd)
        if fn is None:
            raise CNIError(E_ENV, f"unknown CNI_COMMAND {cmd!r}")
        if cmd in ("STATUS", "GC") and conf.get("cniVersion") == "1.0.0":
            raise CNIError(E_VERSION, f"{cmd} needs CNI version 1.1.0")
        return 0, fn(conf, env)
    except CNIError as e:
        return 1, e.to_dict(version)
    except Exception as e:  # noqa: BLE001 - the runtime gets the spec's error object, never a traceback
        print(f"dataplane CNI: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1, CNIError(E_INTERNAL, f"internal error: {type(e).__name__}: {e}").to_dict(version)


def main() -> int:
    status, out = run(os.environ, sys.stdin.buffer.read())
    if out is not None:
        sys.stdout.write(json.dumps(out) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
