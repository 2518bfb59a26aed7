"""Simulated hosts in network namespaces, for the demo, the tests and the benchmarks.

Topology: an underlay namespace holding a bridge (the physical switch), N host
namespaces each with an uplink `ul0` on it (VTEP 198.18.0.<i>, the RFC 2544
benchmarking range), every host a dataplane node, and sandboxes (endpoints)
on chosen VNIs. Everything created is recorded before it is created, so
`down` removes it even after a failed `up`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

from . import model, netlink, state
from .errors import Conflict, DataplaneError, NotFound, UsageError
from .node import Node, require_root

PREFIX = "dpl-"
UNDERLAY_NS = f"{PREFIX}ul"
BRIDGE = "br0"
UPLINK = "ul0"
VTEP_NET = ipaddress.IPv4Network("198.18.0.0/24")
MAX_HOSTS = 25
MAX_PER_HOST = 9
LAB_FILE = os.path.join(state.RUN_ROOT, "lab.json")


def host_ns(i: int) -> str:
    return f"{PREFIX}h{i}"


def vtep_ip(i: int) -> str:
    return str(VTEP_NET.network_address + i)


def sandbox_name(h: int, vni: int, k: int) -> str:
    return f"{PREFIX}h{h}-v{vni}-{k}"


def sandbox_ip(vni: int, h: int, k: int) -> str:
    """.<h><k>: host 2's first sandbox is .21, readable in captures."""
    return str(model.default_subnet(vni).network_address + h * 10 + k)


def _progress(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def _run(argv: list[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode:
        raise DataplaneError(f"{' '.join(argv)}: {r.stderr.strip()}")


def load() -> dict | None:
    try:
        with open(LAB_FILE) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _save(lab: dict) -> None:
    os.makedirs(state.RUN_ROOT, exist_ok=True)
    with open(LAB_FILE, "w") as f:
        json.dump(lab, f, indent=1)


def up(hosts: int, vnis, per_host: int = 1, xdp_guard: bool = False, peer_check: bool = False) -> dict:
    require_root()
    if not 1 <= int(hosts) <= MAX_HOSTS:
        raise UsageError(f"--hosts must be 1..{MAX_HOSTS}")
    if not 0 <= int(per_host) <= MAX_PER_HOST:
        raise UsageError(f"--per-host must be 0..{MAX_PER_HOST}")
    vnis = sorted({model.parse_vni(v) for v in vnis})
    if not vnis:
        raise UsageError("give at least one --vni")
    params = {"hosts": int(hosts), "vnis": vnis, "per_host": int(per_host),
              "xdp_guard": bool(xdp_guard), "peer_check": bool(peer_check)}
    lab = load()
    if lab:
        if lab["params"] == params and lab.get("complete"):
            return lab
        raise Conflict("a lab with other parameters is up: run `dataplane lab down` first")
    lab = {"params": params, "complete": False, "hosts": [], "sandboxes": []}
    _save(lab)
    try:
        _build(lab, params)
    except BaseException:
        _progress("up failed; removing what was created")
        down()
        raise
    lab["complete"] = True
    _save(lab)
    return lab


def _build(lab: dict, p: dict) -> None:
    n = p["hosts"]
    _progress(f"underlay {UNDERLAY_NS} with bridge {BRIDGE}")
    netlink.ns_create(UNDERLAY_NS)
    netlink.sysctl(UNDERLAY_NS, "net.ipv6.conf.all.disable_ipv6", "1")
    netlink.sysctl(UNDERLAY_NS, "net.ipv6.conf.default.disable_ipv6", "1")
    # br_netfilter is built into this kernel: without this the "switch" would run
    # iptables and drop malformed IPv4 itself, which a real switch does not.
    for fam in ("iptables", "ip6tables", "arptables"):
        netlink.sysctl(UNDERLAY_NS, f"net.bridge.bridge-nf-call-{fam}", "0")
    _run(["ip", "-n", UNDERLAY_NS, "link", "add", BRIDGE, "type", "bridge"])
    _run(["ip", "-n", UNDERLAY_NS, "link", "set", BRIDGE, "up"])
    for i in range(1, n + 1):
        ns = host_ns(i)
        lab["hosts"].append({"name": f"h{i}", "netns": ns, "uplink": UPLINK, "vtep": vtep_ip(i)})
        _save(lab)
        netlink.ns_create(ns)
        netlink.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
        netlink.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
        port = f"ul-h{i}"
        _run(["ip", "-n", UNDERLAY_NS, "link", "add", port, "type", "veth", "peer", "name", UPLINK, "netns", ns])
        _run(["ip", "-n", UNDERLAY_NS, "link", "set", port, "master", BRIDGE, "up"])
        netlink.link_up(ns, "lo")
        netlink.link_up(ns, UPLINK, vtep_ip(i), VTEP_NET.prefixlen)
    for i in range(1, n + 1):
        _progress(f"host h{i}: VTEP {vtep_ip(i)}, VNIs {', '.join(map(str, p['vnis']))}")
        peers = [vtep_ip(j) for j in range(1, n + 1) if j != i]
        Node(host_ns(i)).up(p["vnis"], underlay=UPLINK, local_ip=vtep_ip(i), peers=peers,
                            peer_check=p["peer_check"], xdp_guard=p["xdp_guard"], quiet=True)
    for i in range(1, n + 1):
        for vni in p["vnis"]:
            for k in range(1, p["per_host"] + 1):
                name = sandbox_name(i, vni, k)
                lab["sandboxes"].append(name)
                _save(lab)
                Node(host_ns(i)).endpoint_add(name, vni, ip=sandbox_ip(vni, i, k))
    _progress(f"up: {n} hosts, {len(lab['sandboxes'])} sandboxes")


def down() -> bool:
    """Remove every lab object, recorded or merely named like one. Safe to repeat."""
    require_root()
    lab = load()
    hosts = {h["netns"] for h in (lab or {}).get("hosts", [])}
    hosts |= {ns for ns in netlink.ns_list() if ns.startswith(PREFIX + "h") and "-v" not in ns}
    for ns in sorted(hosts):
        try:
            Node(ns).down(quiet=True)
        except DataplaneError as e:
            _progress(f"warning: {ns}: {e}")
    for ns in netlink.ns_list():
        if ns.startswith(PREFIX):
            netlink.ns_delete(ns)
    if os.path.exists(LAB_FILE):
        os.unlink(LAB_FILE)
    state.prune()
    return lab is not None


def ls() -> dict:
    lab = load()
    if not lab:
        raise NotFound("no lab is up: run `dataplane lab up`")
    sandboxes = []
    for h in lab["hosts"]:
        node = Node(h["netns"])
        if node.state():
            for ep in node.endpoints():
                sandboxes.append({"name": ep["name"], "netns": ep["name"], "host": h["name"],
                                  "vni": ep["vni"], "ip": ep["ip"], "mac": ep["mac"]})
    return {"hosts": lab["hosts"], "sandboxes": sandboxes, "complete": lab.get("complete", False)}


def resolve_sandbox(name: str) -> str:
    """Accept the full namespace name or the short form (h1-v256-1)."""
    for cand in (name, PREFIX + name):
        if cand.startswith(PREFIX) and netlink.ns_exists(cand):
            return cand
    raise NotFound(f"sandbox {name!r} not found (see `dataplane lab ls`)")


def exec_argv(sandbox: str, argv: list[str]) -> list[str]:
    if not argv:
        raise UsageError("give a command after --")
    return ["ip", "netns", "exec", resolve_sandbox(sandbox)] + list(argv)
