"""Simulated hosts in network namespaces, for the demo, the tests and the benchmarks.

Topology: an underlay namespace holding a bridge (the physical switch), N host
namespaces each with an uplink `ul0` on it (VTEP 198.18.0.<i>, the RFC 2544
benchmarking range), every host a dataplane node, and sandboxes (endpoints)
on chosen VNIs. Everything created is recorded before it is created, so
`down` removes it even after a failed `up`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys

from dataplane.agent import client, control, process
from lab import certs, etcd, nic
from dataplane.kernel import gso, netlink
from dataplane.core import model, procs, state
from dataplane.registry import etcd_access, etcd_auth, open_registry
from dataplane.core.errors import Conflict, DataplaneError, NotFound, UsageError
from dataplane.node import Node, endpoints, require_root, vtep

PREFIX = "dpl-"
UNDERLAY_NS = f"{PREFIX}ul"
BRIDGE = "br0"
UPLINK = "ul0"
VTEP_NET = ipaddress.IPv4Network("198.18.0.0/24")
WORLD_IP = "198.18.0.254"       # the switch namespace's own address: the world outside the overlay
METRICS_PORT = 9469            # each lab agent serves /metrics on its VTEP address
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


def run_checked(argv: list[str]) -> None:
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


REGISTRY_MODES = ("sqlite", "etcd", "none")
ETCD_PORT = 2379
MAX_ETCD = 5
REGISTRY_DIR = os.path.join(state.RUN_ROOT, f"{PREFIX}registry")
PKI_DIR = os.path.join(REGISTRY_DIR, "pki")    # --etcd-tls: CA, certificates, etcd passwords (lab/certs.py)


def etcd_ip(i: int) -> str:
    """Member e<i> of the lab's etcd cluster: 198.18.0.25<i>, a host of its own on the underlay."""
    return str(VTEP_NET.network_address + 250 + i)


def registry_url(mode: str, members: int | None = None, tls: bool | None = None, host: str | None = None) -> str | None:
    """The registry's URL, with every etcd member (default: as many as the lab has). With
    TLS (the lab's --etcd-tls; on when no lab is up) host ("h1") gets its agent's URL (its
    client certificate, its etcd user), no host the administrator's (root, the lab's own
    certificate: for the lab and the tests' checks)."""
    if mode == "sqlite":
        return f"sqlite://{REGISTRY_DIR}/registry.db"
    if mode == "etcd":
        lab = load() or {}
        n = members or len(lab.get("etcd") or []) or 1
        if tls is None:
            tls = lab["params"].get("etcd_tls", False) if lab else True
        eps = [(etcd_ip(i), ETCD_PORT) for i in range(1, n + 1)]
        if not tls:
            return etcd_access.url(eps)
        return etcd.host_url(eps, certs.Pki(PKI_DIR), host) if host else etcd.admin_url(eps, certs.Pki(PKI_DIR))
    return None


def host_name(i: int) -> str:
    return f"h{i}"


def up(hosts: int, vnis, per_host: int = 1, xdp_guard: bool = False, peer_check: bool | None = None,
       registry: str = "sqlite", lease_ttl: int = 10, gso_max_size: int = gso.LEGACY_MAX,
       etcd_members: int = 1, etcd_tls: bool | None = None, mtu: int = 1500, nic_like: bool = False,
       fdb_age: int | None = None) -> dict:
    require_root()
    if registry not in REGISTRY_MODES:
        raise UsageError(f"--registry must be one of {', '.join(REGISTRY_MODES)}")
    if not (1 <= int(etcd_members) <= MAX_ETCD and int(etcd_members) % 2) or (registry != "etcd" and etcd_members != 1):
        raise UsageError(f"--etcd-members must be odd, 1..{MAX_ETCD}, and goes with --registry etcd")
    etcd_tls = registry == "etcd" if etcd_tls is None else bool(etcd_tls)
    if etcd_tls and registry != "etcd":
        raise UsageError("--etcd-tls goes with --registry etcd")
    if not 1 <= int(hosts) <= MAX_HOSTS:
        raise UsageError(f"--hosts must be 1..{MAX_HOSTS}")
    if not 0 <= int(per_host) <= MAX_PER_HOST:
        raise UsageError(f"--per-host must be 0..{MAX_PER_HOST}")
    if not gso.LEGACY_MAX <= int(gso_max_size) <= gso.VETH_MAX:
        raise UsageError(f"--gso-max-size must be {gso.LEGACY_MAX}..{gso.VETH_MAX}")
    if not 1280 <= int(mtu) <= 9000:
        raise UsageError("--mtu must be 1280..9000")
    fdb_age = None if fdb_age is None else model.parse_age(fdb_age)
    vnis = sorted({model.parse_vni(v) for v in vnis})
    if not vnis:
        raise UsageError("give at least one --vni")
    params = {"hosts": int(hosts), "vnis": vnis, "per_host": int(per_host),
              "xdp_guard": bool(xdp_guard), "peer_check": peer_check, "registry": registry,
              "lease_ttl": int(lease_ttl), "gso_max_size": int(gso_max_size), "etcd_members": int(etcd_members),
              "etcd_tls": etcd_tls,
              "mtu": int(mtu), "nic_like": bool(nic_like),
              "fdb_age": fdb_age}
    lab = load()
    if lab:
        if lab["params"] == params and lab.get("complete"):
            return lab
        raise Conflict("a lab with other parameters is up: run `python -m lab down` first")
    lab = {"params": params, "complete": False, "hosts": [], "sandboxes": [], "etcd": []}
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


def underlay_host(ns: str, port: str, ifname: str, ip: str, gso_max_size: int = gso.LEGACY_MAX,
                  mtu: int = 1500) -> None:
    """A namespace with no IPv6 noise, plugged into the underlay bridge
    (port there, ifname inside) with address ip on the VTEP network. Above
    64 KB, gso_max_size plays a NIC with IPv4 BIG TCP turned on; mtu above
    1500, a jumbo-frame underlay."""
    netlink.ns_create(ns)
    netlink.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
    netlink.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
    run_checked(["ip", "-n", UNDERLAY_NS, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns])
    run_checked(["ip", "-n", UNDERLAY_NS, "link", "set", port, "master", BRIDGE, "up"])
    gso.set_veth(gso_max_size, (UNDERLAY_NS, port), (ns, ifname))
    if mtu != 1500:
        run_checked(["ip", "-n", UNDERLAY_NS, "link", "set", port, "mtu", str(mtu)])
        run_checked(["ip", "-n", ns, "link", "set", ifname, "mtu", str(mtu)])
    netlink.link_up(ns, "lo")
    netlink.link_up(ns, ifname, ip, VTEP_NET.prefixlen)


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
    netlink.link_up(UNDERLAY_NS, "lo")
    run_checked(["ip", "-n", UNDERLAY_NS, "link", "add", BRIDGE, "type", "bridge"])
    run_checked(["ip", "-n", UNDERLAY_NS, "link", "set", BRIDGE, "up"])
    # The switch has an address too: the world outside (egress), and where metrics are scraped from.
    netlink.link_up(UNDERLAY_NS, BRIDGE, WORLD_IP, VTEP_NET.prefixlen)
    for i in range(1, n + 1):
        ns = host_ns(i)
        lab["hosts"].append({"name": f"h{i}", "netns": ns, "uplink": UPLINK, "vtep": vtep_ip(i),
                             # scraped from the underlay (the switch namespace, or a host's)
                             "metrics_url": f"http://{vtep_ip(i)}:{METRICS_PORT}/metrics"
                             if p["registry"] != "none" else None})
        _save(lab)
        underlay_host(ns, f"ul-h{i}", UPLINK, vtep_ip(i), p.get("gso_max_size", gso.LEGACY_MAX), p.get("mtu", 1500))
        if p.get("nic_like"):
            nic.make(UNDERLAY_NS, f"ul-h{i}", ns, UPLINK)
    url = _start_registry(lab, p)
    for i in range(1, n + 1):
        peers = [] if url else [vtep_ip(j) for j in range(1, n + 1) if j != i]
        # Each agent with its own certificate and etcd user (TLS), else the lab's one URL.
        host_url = registry_url("etcd", p["etcd_members"], p["etcd_tls"], host_name(i)) if p.get("etcd_tls") else url
        _progress(f"host h{i}: VTEP {vtep_ip(i)}, VNIs {', '.join(map(str, p['vnis']))}"
                  + (f", agent on {host_url}" if host_url else ""))
        vtep.up(Node(host_ns(i)), p["vnis"], underlay=UPLINK, local_ip=vtep_ip(i), peer_ips=peers,
                peer_check=p["peer_check"], xdp_guard=p["xdp_guard"], quiet=True, fdb_age=p.get("fdb_age"),
                metrics_address=f"{vtep_ip(i)}:{METRICS_PORT}",
                registry=host_url, host_name=host_name(i), lease_ttl=p["lease_ttl"])
        control.persist(Node(host_ns(i)))      # as `dataplane up` does: the host comes back after a reboot
        if url:
            process.spawn(host_ns(i), host_ns(i), host_url, host_name(i), p["lease_ttl"], quiet=True)
    for i in range(1, n + 1):
        for vni in p["vnis"]:
            for k in range(1, p["per_host"] + 1):
                name = sandbox_name(i, vni, k)
                lab["sandboxes"].append(name)
                _save(lab)
                if url:
                    client.call(host_ns(i), "endpoint_add", id=name, vni=vni, ip=sandbox_ip(vni, i, k))
                else:
                    endpoints.add(Node(host_ns(i)), name, vni, ip=sandbox_ip(vni, i, k))
    _progress(f"up: {n} hosts, {len(lab['sandboxes'])} sandboxes")


def _start_registry(lab: dict, p: dict) -> str | None:
    """The lab's registry: a SQLite file, or a real etcd cluster whose members
    are hosts of their own on the underlay (198.18.0.251...), which agents
    reach over their uplinks like any host would."""
    if p["registry"] == "etcd":
        n, tls = p.get("etcd_members", 1), p.get("etcd_tls")
        peers = ",".join(f"e{i}={'https' if tls else 'http'}://{etcd_ip(i)}:{ETCD_PORT + 1}" for i in range(1, n + 1))
        for i in range(1, n + 1):
            m = {"name": f"e{i}", "netns": f"{PREFIX}e{i}", "ip": etcd_ip(i), "pid": None, "initial_cluster": peers}
            lab["etcd"].append(m)
            _save(lab)
            underlay_host(m["netns"], f"ul-e{i}", UPLINK, m["ip"])
        _progress(f"etcd: {n} member(s) on {', '.join(m['ip'] for m in lab['etcd'])}")
        hosts = [host_name(i) for i in range(1, p["hosts"] + 1)]
        if tls:
            _progress(f"etcd TLS: a CA, member, host and admin certificates (openssl) in {PKI_DIR}")
            os.makedirs(REGISTRY_DIR, mode=0o700, exist_ok=True)
            certs.make_pki(PKI_DIR, {m["name"]: (m["ip"],) for m in lab["etcd"]}, hosts + ["admin"],
                           ["root"] + [etcd_auth.host_user(h) for h in hosts])
        start_etcd(lab)
        if tls:
            _progress("etcd: authentication on, a user and role per host (may write only its own host record)")
            etcd.enable_auth([(m["ip"], ETCD_PORT) for m in lab["etcd"]], certs.Pki(PKI_DIR), hosts,
                             netns=lab["etcd"][0]["netns"])
    elif p["registry"] == "sqlite":
        os.makedirs(REGISTRY_DIR, mode=0o700, exist_ok=True)
    url = registry_url(p["registry"], p.get("etcd_members", 1), p.get("etcd_tls"))
    if url:
        def create_networks():
            reg = open_registry(url)
            try:
                for vni in p["vnis"]:
                    reg.network_create(f"vni{vni}", vni, exist_ok=True,
                                       mtu=min(p.get("mtu", 1500), 9000) - model.ENCAP_LEN)
            finally:
                reg.close()
        # From a namespace on the underlay network (a member's own): the registry is reached as hosts reach it.
        netlink.call_in_netns(lab["etcd"][0]["netns"] if lab["etcd"] else None, create_networks)
    return url


def start_etcd(lab: dict, name: str | None = None) -> None:
    """(Re)start the lab's etcd members (or one) on their data directories: a
    restarted member rejoins its cluster. The tests stop and start them."""
    todo = [m for m in lab.get("etcd") or [] if name in (None, m["name"]) and not _alive(m)]
    for m in todo:
        m["pid"] = etcd.start(os.path.join(REGISTRY_DIR, m["name"]), m["ip"], ETCD_PORT, ETCD_PORT + 1,
                              netns=m["netns"], log_path=os.path.join(REGISTRY_DIR, f"{m['name']}.log"),
                              name=m["name"], initial_cluster=m["initial_cluster"], wait=False,
                              tls=_member_tls(lab, m))
        _save(lab)
    for m in todo:
        if not etcd.wait_healthy(m["ip"], ETCD_PORT, m["netns"], tls=_member_tls(lab, m)):
            raise DataplaneError(f"etcd member {m['name']} did not become healthy; see {REGISTRY_DIR}/{m['name']}.log")


def _admin_tls(lab: dict):
    """The lab's own client certificate when the lab runs etcd with TLS, else None."""
    return certs.Pki(PKI_DIR).client("admin") if lab["params"].get("etcd_tls") else None


def _member_tls(lab: dict, m: dict):
    """The member's certificate when the lab runs etcd with TLS, else None."""
    return certs.Pki(PKI_DIR).member(m["name"]) if lab["params"].get("etcd_tls") else None


def stop_etcd(lab: dict, name: str | None = None, sig=None) -> None:
    """Stop the lab's etcd members (or one); sig=SIGKILL for a crash."""
    for m in lab.get("etcd") or []:
        if name in (None, m["name"]) and m.get("pid"):
            procs.terminate(m["pid"], first=sig) if sig is not None else etcd.stop(m["pid"])
            m["pid"] = None
            _save(lab)


def registry_netns() -> str | None:
    """A namespace on the underlay network from which the registry is reached
    as the hosts reach it (an etcd member's own), None for the SQLite file."""
    members = (load() or {}).get("etcd") or []
    return members[0]["netns"] if members else None


def _alive(m: dict) -> bool:
    try:
        with open(f"/proc/{m['pid']}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, TypeError, IndexError):
        return False


def etcd_members(lab: dict | None = None) -> list[dict]:
    """The members as they are now: name, client URL, pid, alive, leader, raft term."""
    out = []
    lab = lab or load() or {}
    for m in lab.get("etcd") or []:
        # Asked as the lab's admin client: with authentication on, etcd's gateway refuses a
        # client certificate with a name (a member's), answering 400.
        alive, tls = _alive(m), _admin_tls(lab)
        st = (etcd.member_status(m["ip"], ETCD_PORT, m["netns"], tls=tls) if alive else None) or {}
        out.append({"name": m["name"], "client_url": f"{'https' if tls else 'http'}://{m['ip']}:{ETCD_PORT}",
                    "netns": m["netns"], "pid": m["pid"] if alive else None, "alive": alive,
                    "leader": bool(st.get("leader")), "raft_term": st.get("raft_term")})
    return out


def down() -> bool:
    """Remove every lab object, recorded or merely named like one. Safe to repeat."""
    require_root()
    lab = load()
    hosts = {h["netns"] for h in (lab or {}).get("hosts", [])}
    hosts |= {ns for ns in netlink.ns_list() if ns.startswith(PREFIX + "h") and "-v" not in ns and "." not in ns}
    for ns in sorted(hosts):
        try:
            process.stop(ns)
            vtep.down(Node(ns), quiet=True)
        except DataplaneError as e:
            _progress(f"warning: {ns}: {e}")
    if lab:
        stop_etcd(lab, sig=signal.SIGKILL)
    _kill_strays()
    for ns in netlink.ns_list():
        if ns.startswith(PREFIX):
            netlink.ns_delete(ns)
    shutil.rmtree(REGISTRY_DIR, ignore_errors=True)
    for d in os.listdir(state.LIB_ROOT) if os.path.isdir(state.LIB_ROOT) else []:
        if d.startswith(PREFIX):         # the lab hosts' boot configuration and Docker maps
            shutil.rmtree(os.path.join(state.LIB_ROOT, d), ignore_errors=True)
    with contextlib.suppress(OSError):   # left empty by the lab: it goes too (a host's own stays)
        os.rmdir(state.LIB_ROOT)
    if os.path.exists(LAB_FILE):
        os.unlink(LAB_FILE)
    state.prune()
    return lab is not None


def _kill_strays() -> None:
    """Agents and etcd of a lab whose records were lost (a crashed `lab up`)."""
    marks = (f"--netns {PREFIX}h".encode(), REGISTRY_DIR.encode())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if int(pid) != os.getpid() and any(m in cmd for m in marks):
            procs.terminate(int(pid))


def ls() -> dict:
    lab = load()
    if not lab:
        raise NotFound("no lab is up: run `python -m lab up`")
    sandboxes = []
    for h in lab["hosts"]:
        node = Node(h["netns"])
        if node.state():
            for ep in endpoints.listing(node):
                sb = ep.get("sandbox") or {}   # a runtime's (CNI, Docker) or our own namespace
                # name: what to exec into (our namespace, or the runtime's handle); id: the endpoint
                ns = sb.get("netns") if sb else ep["netns"] or ep["name"]
                sandboxes.append({"name": ns, "id": ep["name"], "netns": ns, "host": h["name"],
                                  "vni": ep["vni"], "ip": ep["ip"], "mac": ep["mac"],
                                  "runtime": sb.get("runtime", "dataplane")})
    return {"hosts": lab["hosts"], "sandboxes": sandboxes, "etcd": etcd_members(lab),
            "complete": lab.get("complete", False)}


def resolve_sandbox(name: str) -> str:
    """Accept the namespace name, the endpoint id (dpl-h1-v256-1) or its short form (h1-v256-1)."""
    for s in ls()["sandboxes"]:
        if name in (s["netns"], s["id"], s["id"].removeprefix(PREFIX)) and netlink.ns_exists(s["netns"]):
            return s["netns"]
    raise NotFound(f"sandbox {name!r} not found (see `python -m lab ls`)")


def exec_argv(sandbox: str, argv: list[str]) -> list[str]:
    if not argv:
        raise UsageError("give a command after --")
    return ["ip", "netns", "exec", resolve_sandbox(sandbox)] + list(argv)
