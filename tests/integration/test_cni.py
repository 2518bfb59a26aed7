"""The CNI plugin under a real runtime: libcni itself (Debian's source, built
into tests/cni/cnirun.go) runs ADD/CHECK/DEL of a chain
[dataplane + host-local IPAM, tuning] for containers on two lab hosts.
GC and STATUS (spec 1.1.0, newer than Debian's libcni) and the error cases
are driven exactly as the spec tells a runtime to: env and stdin."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest

from dataplane.agent import client as api
from dataplane.runtimes import cni
from lab import topology as lab
from dataplane.kernel import ethtool, gso as linkgso, netlink, tcx
from dataplane.node import Node
from tests.integration.conftest import make_lab, wait_for
from tests.runtimes import IMAGE, DockerLab, build_cnirun, require_runtimes

H = {1: lab.host_ns(1), 2: lab.host_ns(2)}
SUBNET = "10.1.0.0/24"          # the lab's VNI 256 network
RANGES = {1: ("10.1.0.10", "10.1.0.49"), 2: ("10.1.0.50", "10.1.0.89")}


@pytest.fixture(scope="module")
def info():
    # BIG TCP uplinks: containers must inherit the limit through the CNI path too.
    yield from make_lab(2, [256], per_host=0, registry="sqlite", gso_max_size=linkgso.BIG_TCP_SIZE)


class Runtime:
    def __init__(self, work: str, cnirun: str):
        self.work, self.cnirun = work, cnirun
        self.bin = os.path.join(work, "bin")
        subprocess.run([sys.executable, "-m", "dataplane.cli", "cni", "install", "--bin-dir", self.bin],
                       check=True, capture_output=True)
        for p in ("host-local", "tuning", "portmap"):
            os.symlink(f"/usr/lib/cni/{p}", os.path.join(self.bin, p))
        self.env = {**os.environ, "CNI_PATH": self.bin, "CNI_CACHE_DIR": os.path.join(work, "cache")}
        self.netns: list[str] = []

    def conf(self, host: int, version: str = "1.0.0", **extra) -> dict:
        start, end = RANGES[host]
        return {"cniVersion": version, "name": "ov256", "type": "dataplane", "vni": 256, "node": H[host],
                "ipam": {"type": "host-local", "dataDir": self.ipam_dir(host),
                         "ranges": [[{"subnet": SUBNET, "rangeStart": start, "rangeEnd": end}]]}, **extra}

    def ipam_dir(self, host: int) -> str:
        return os.path.join(self.work, f"ipam-h{host}")

    def leased(self, host: int) -> set[str]:
        d = os.path.join(self.ipam_dir(host), "ov256")
        return {f for f in os.listdir(d) if f[0].isdigit()} if os.path.isdir(d) else set()

    def conflist(self, host: int) -> str:
        path = os.path.join(self.work, f"h{host}.conflist")
        if os.path.exists(path):
            return path
        plugin = self.conf(host)
        plugin.pop("cniVersion"), plugin.pop("name")
        with open(path, "w") as f:
            json.dump({"cniVersion": "1.0.0", "name": "ov256", "plugins": [
                plugin, {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}}]}, f)
        return path

    def container(self, name: str) -> str:
        ns = f"{lab.PREFIX}{name}"
        netlink.ns_create(ns)
        self.netns.append(ns)
        return f"/run/netns/{ns}"

    def run(self, host: int, cmd: str, netns: str, cid: str, conflist: str | None = None,
            caps: dict | None = None) -> subprocess.CompletedProcess:
        env = {**self.env, **({"CNIRUN_CAPS": json.dumps(caps)} if caps else {})}
        return subprocess.run(["ip", "netns", "exec", H[host], self.cnirun, cmd, conflist or self.conflist(host),
                               netns, cid, "eth0"], env=env, capture_output=True, text=True, timeout=120)

    def plugin(self, conf, env: dict, raw: bytes | None = None) -> tuple[int, dict | None]:
        """The plugin as the spec runs it: CNI_* in env, configuration on stdin."""
        run_env = {k: v for k, v in self.env.items() if not k.startswith("CNI_")}
        run_env.update({"CNI_PATH": self.bin, **env})
        body = raw if raw is not None else json.dumps(conf).encode()
        r = subprocess.run([os.path.join(self.bin, "dataplane")], input=body, env=run_env, capture_output=True,
                           timeout=120)
        return r.returncode, json.loads(r.stdout) if r.stdout.strip() else None

    def close(self) -> None:
        for ns in self.netns:
            netlink.ns_delete(ns.rsplit("/", 1)[-1])
        shutil.rmtree(self.work, ignore_errors=True)


@pytest.fixture(scope="module")
def rt(info):
    require_runtimes()
    r = Runtime(tempfile.mkdtemp(prefix="dp-cni-"), build_cnirun())
    try:
        yield r
    finally:
        r.close()


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, f"exit {r.returncode}: {r.stdout} {r.stderr}"
    return r.stdout


def ns_ping(netns: str, ip: str, count: int = 3) -> bool:
    r = subprocess.run(["ip", "netns", "exec", os.path.basename(netns), "ping", "-c", str(count), "-W", "1", ip],
                       capture_output=True, text=True)
    return r.returncode == 0


def local_cni(host: int) -> list[dict]:
    return api.call(H[host], "endpoint_local", runtime="cni")


def test_libcni_add_check_ping_del(rt):
    c1, c2 = rt.container("c1"), rt.container("c2")
    res1 = json.loads(ok(rt.run(1, "add", c1, "ctr-1")))
    res2 = json.loads(ok(rt.run(2, "add", c2, "ctr-2")))
    ip1, ip2 = (r["ips"][0]["address"].split("/")[0] for r in (res1, res2))
    assert ip1 == "10.1.0.10" and ip2 == "10.1.0.50"
    inner = res1["interfaces"][res1["ips"][0]["interface"]]
    assert inner["name"] == "eth0" and inner["sandbox"] == c1
    assert netlink.link_info(c1, "eth0")["mac"] == inner["mac"]
    assert linkgso.gso_ipv4_max(c1, "eth0") == linkgso.BIG_TCP_SIZE, "the container inherits the uplink's limit"
    assert ethtool.features(c1, "eth0", ethtool.TUNNEL_GSO) == dict.fromkeys(ethtool.TUNNEL_GSO, False), \
        "tunnelled GSO is cut in the container"
    # the chained tuning plugin got our result and acted on our interface
    assert netlink.sysctl_get(os.path.basename(c1), "net.ipv4.conf.eth0.arp_notify") == "1"
    ok(rt.run(1, "check", c1, "ctr-1"))
    assert ns_ping(c1, ip2) and ns_ping(c2, ip1)
    regs = {e["ip"]: e for e in api.call(H[1], "endpoint_list")}
    assert regs[ip2]["host"] == "h2" and regs[ip2]["network"] == "vni256"

    ok(rt.run(2, "del", c2, "ctr-2"))
    ok(rt.run(2, "del", c2, "ctr-2"))          # DEL is idempotent
    assert local_cni(2) == [] and rt.leased(2) == set()
    assert "eth0" not in [link for link in _links(c2)]
    assert ip2 not in {e["ip"] for e in api.call(H[1], "endpoint_list")}
    ok(rt.run(1, "del", c1, "ctr-1"))


def test_the_mac_the_runtime_asks_for(rt):
    """libcni passes the `mac` capability as runtimeConfig to a plugin that declares it (as
    Podman and the tuning plugin's users do): the container's interface has it, the registry
    and the fast path know it (it pings), CHECK agrees. Before, it was ignored: the container
    got the MAC derived from its address."""
    plugin = rt.conf(1, capabilities={"mac": True})
    plugin.pop("cniVersion"), plugin.pop("name")
    path = os.path.join(rt.work, "h1-mac.conflist")
    with open(path, "w") as f:
        json.dump({"cniVersion": "1.0.0", "name": "ov256", "plugins": [plugin]}, f)
    c, peer = rt.container("mac1"), rt.container("mac2")
    caps = {"mac": "02:42:aa:bb:cc:01"}
    res = json.loads(ok(rt.run(1, "add", c, "ctr-mac1", conflist=path, caps=caps)))
    try:
        assert res["interfaces"][res["ips"][0]["interface"]]["mac"] == caps["mac"], res
        assert netlink.link_info(c, "eth0")["mac"] == caps["mac"]
        ok(rt.run(1, "check", c, "ctr-mac1", conflist=path, caps=caps))
        other = json.loads(ok(rt.run(2, "add", peer, "ctr-mac2")))
        assert ns_ping(c, other["ips"][0]["address"].split("/")[0]), "the fast path knows the MAC asked for"
    finally:
        ok(rt.run(2, "del", peer, "ctr-mac2"))
        ok(rt.run(1, "del", c, "ctr-mac1", conflist=path, caps=caps))


def _links(netns: str) -> list[str]:
    with netlink.ipr(netns) as s:
        return [link.get_attr("IFLA_IFNAME") for link in s.get_links()]


def test_check_reports_a_broken_attachment(rt):
    c3 = rt.container("c3")
    ok(rt.run(1, "add", c3, "ctr-3"))
    ep = local_cni(1)[0]
    tcx.detach(H[1], ep["ifindex"], "from_endpoint")   # someone removed the fast path from its veth
    r = rt.run(1, "check", c3, "ctr-3")
    assert r.returncode and "fast path is not attached" in r.stderr, r.stderr
    ok(rt.run(1, "del", c3, "ctr-3"))
    assert local_cni(1) == [] and rt.leased(1) == set()


def test_check_of_a_container_whose_namespace_went_says_so_and_del_cleans_up(rt):
    """CHECK after the container's namespace went named an interface of ours that was missing
    (its veth went with the namespace), and the DESIGN said code 3, which would tell the runtime
    no DEL is needed: the IPAM's lease waited for that DEL for good. It says the namespace is
    gone (101), however far the agent got with removing the endpoint, and the DEL frees it."""
    c6 = rt.container("c6")
    ok(rt.run(1, "add", c6, "ctr-6"))
    try:
        netlink.ns_delete(os.path.basename(c6))
        r = rt.run(1, "check", c6, "ctr-6")
        assert r.returncode and f"network namespace {c6} does not exist" in r.stderr, r.stderr
    finally:
        ok(rt.run(1, "del", c6, "ctr-6"))
    assert wait_for(lambda: local_cni(1) == [], timeout=10) and rt.leased(1) == set()


def test_check_reports_a_missing_route(rt):
    """CHECK finds each route of the result in the container: the IPAM's (installed by us) and a
    gateway route, and says which one went missing."""
    c4 = rt.container("c4")
    conf = rt.conf(1)
    conf["ipam"]["routes"] = [{"dst": "10.99.0.0/16"}, {"dst": "10.98.0.0/16", "gw": "10.1.0.1"}]
    conf.pop("cniVersion"), conf.pop("name")
    path = os.path.join(rt.work, "h1-routes.conflist")
    with open(path, "w") as f:
        json.dump({"cniVersion": "1.0.0", "name": "ov256", "plugins": [conf]}, f)
    res = json.loads(ok(rt.run(1, "add", c4, "ctr-4", conflist=path)))
    assert {r["dst"] for r in res["routes"]} == {"10.99.0.0/16", "10.98.0.0/16"}
    ok(rt.run(1, "check", c4, "ctr-4", conflist=path))
    subprocess.run(["ip", "-n", os.path.basename(c4), "route", "del", "10.98.0.0/16"], check=True)
    r = rt.run(1, "check", c4, "ctr-4", conflist=path)
    assert r.returncode and "no route to 10.98.0.0/16 via 10.1.0.1" in r.stderr, r.stderr
    ok(rt.run(1, "del", c4, "ctr-4", conflist=path))
    assert local_cni(1) == [] and rt.leased(1) == set()


def test_concurrent_adds_get_distinct_addresses(rt):
    names = [f"k{i}" for i in range(6)]
    paths = {n: rt.container(n) for n in names}
    results: dict = {}

    def add(n):
        results[n] = rt.run(1, "add", paths[n], f"ctr-{n}")
    threads = [threading.Thread(target=add, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ips = {json.loads(ok(results[n]))["ips"][0]["address"] for n in names}
    assert len(ips) == len(names)
    assert len(local_cni(1)) == len(names) and len(rt.leased(1)) == len(names)
    for n in names:
        ok(rt.run(1, "del", paths[n], f"ctr-{n}"))
    assert local_cni(1) == [] and rt.leased(1) == set()


def test_gc_removes_what_the_runtime_no_longer_lists(rt):
    keep, lost = rt.container("g1"), rt.container("g2")
    ok(rt.run(1, "add", keep, "ctr-keep"))
    ok(rt.run(1, "add", lost, "ctr-lost"))
    conf = rt.conf(1, "1.1.0", **{cni.VALID_ATTACHMENTS: [{"containerID": "ctr-keep", "ifname": "eth0"}]})
    assert rt.plugin(conf, {"CNI_COMMAND": "GC"}) == (0, None)
    left = local_cni(1)
    assert [e["sandbox"]["container_id"] for e in left] == ["ctr-keep"]
    assert rt.leased(1) == {left[0]["ip"]}
    assert "eth0" not in _links(lost)
    # The key as the 1.1.0 spec's text names it (a runtime that follows the text sends only this
    # one): the plugin read only libcni's name, took the list for empty and detached everything.
    lost = rt.container("g3")
    ok(rt.run(1, "add", lost, "ctr-lost2"))
    conf = rt.conf(1, "1.1.0", **{"cni.dev/attachments": [{"containerID": "ctr-keep", "ifname": "eth0"}]})
    assert rt.plugin(conf, {"CNI_COMMAND": "GC"}) == (0, None)
    assert [e["sandbox"]["container_id"] for e in local_cni(1)] == ["ctr-keep"]
    assert "eth0" in _links(keep) and "eth0" not in _links(lost)
    ok(rt.run(1, "del", keep, "ctr-keep"))


def test_an_ipam_default_route_without_gw_and_ipv6_routes(rt):
    """A dual-stack host-local whose routes name no gateway (a common setting): the default
    route goes through the address's gateway, as the reference plugins install it, and the
    IPv6 route is left out with the IPv6 address. Before, the IPv6 route failed the ADD with
    an internal error (code 5), and without it the default route went in with no next hop
    (with ipMasq too: the IPAM's default route stood for ours), so the world was unreachable."""
    conf = rt.conf(1, ipMasq=True)
    conf["ipam"]["ranges"].append([{"subnet": "fd00:dd::/64"}])
    conf["ipam"]["routes"] = [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    path = os.path.join(rt.work, "h1-dual.conflist")
    plugin = {k: v for k, v in conf.items() if k not in ("cniVersion", "name")}
    with open(path, "w") as f:
        json.dump({"cniVersion": "1.0.0", "name": "ov256", "plugins": [plugin]}, f)
    c = rt.container("dual")
    res = json.loads(ok(rt.run(1, "add", c, "ctr-dual", conflist=path)))
    try:
        assert res["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}], res
        routes = subprocess.run(["ip", "netns", "exec", os.path.basename(c), "ip", "route"],
                                capture_output=True, text=True).stdout
        assert "default via 10.1.0.1 dev eth0" in routes, routes
        assert ns_ping(c, lab.WORLD_IP), "the container reaches the world"
    finally:
        ok(rt.run(1, "del", c, "ctr-dual", conflist=path))


def test_status_and_version(rt):
    assert rt.plugin(rt.conf(1, "1.1.0"), {"CNI_COMMAND": "STATUS"}) == (0, None)
    rc, out = rt.plugin(rt.conf(1, "1.1.0", node="no-such-node"), {"CNI_COMMAND": "STATUS"})
    assert rc == 1 and out["code"] == cni.E_NOT_AVAILABLE
    rc, out = rt.plugin({"cniVersion": "1.1.0"}, {"CNI_COMMAND": "VERSION"})
    assert rc == 0 and out == {"cniVersion": "1.1.0", "supportedVersions": ["1.0.0", "1.1.0"]}


def test_bad_input_gets_the_spec_error_code_and_creates_nothing(rt):
    netns = rt.container("bad")
    full = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr-bad", "CNI_NETNS": netns, "CNI_IFNAME": "eth0"}
    links_before = _links(H[1])
    cases = [
        ("malformed JSON", rt.conf(1), full, b"{not json", cni.E_DECODE),
        ("unknown command", rt.conf(1), {**full, "CNI_COMMAND": "FROB"}, None, cni.E_ENV),
        ("no CNI_COMMAND", rt.conf(1), {k: v for k, v in full.items() if k != "CNI_COMMAND"}, None, cni.E_ENV),
        ("no CNI_CONTAINERID", rt.conf(1), {k: v for k, v in full.items() if k != "CNI_CONTAINERID"}, None,
         cni.E_ENV),
        ("no CNI_NETNS", rt.conf(1), {k: v for k, v in full.items() if k != "CNI_NETNS"}, None, cni.E_ENV),
        ("unsupported version", rt.conf(1, "0.3.1"), full, None, cni.E_VERSION),
        ("no vni", {k: v for k, v in rt.conf(1).items() if k != "vni"}, full, None, cni.E_CONFIG),
        ("missing netns", rt.conf(1), {**full, "CNI_NETNS": "/run/netns/dpl-none"}, None, cni.E_UNKNOWN_CONTAINER),
    ]
    for what, conf, env, raw, code in cases:
        rc, out = rt.plugin(conf, env, raw)
        assert rc == 1 and out["code"] == code, (what, out)
        assert out["msg"], what
    assert _links(H[1]) == links_before and local_cni(1) == [] and rt.leased(1) == set()
    assert "eth0" not in _links(netns)


def test_cni_and_docker_containers_share_a_vni(rt):
    dl = DockerLab([H[2]])
    try:
        (engine,) = dl.start()
        engine.docker("network", "create", "-d", "dataplane", "-o", "vni=256", "--subnet", SUBNET,
                      "--ip-range", "10.1.0.96/28", "ov256")
        engine.docker("run", "-d", "--name", "d2", "--net", "ov256", IMAGE, "sleep", "600")
        dip = engine.ip_of("d2")
        c = rt.container("mix")
        cip = json.loads(ok(rt.run(1, "add", c, "ctr-mix")))["ips"][0]["address"].split("/")[0]
        assert ns_ping(c, dip)
        r = engine.docker("exec", "d2", "ping", "-c", "3", "-W", "1", cip, check=False)
        assert "3 packets received" in r.stdout, r.stdout + r.stderr
        ok(rt.run(1, "del", c, "ctr-mix"))
        engine.docker("rm", "-f", "d2")
        engine.docker("network", "rm", "ov256")
    finally:
        dl.close()
    assert Node(H[2]).state().endpoints == {} and local_cni(1) == []


SERVE = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(1); s.settimeout(30)
c, peer = s.accept(); c.sendall(b"hello from the container"); c.close()
"""
PEER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7078)); s.listen(1); s.settimeout(30)
c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()
"""
ASK = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10); print(c.recv(100).decode())
"""


def test_ipmasq_reaches_the_world_and_portmap_publishes_a_port(rt):
    """Issue 16, item 1 (CNI): with "ipMasq": true the container gets a default route
    through its host's gateway and reaches the world as the host (SNAT); the reference
    portmap plugin chained after ours publishes a port the world reaches, and the container
    itself by the host's address (hairpin)."""
    import time
    plugin = rt.conf(1, ipMasq=True)
    plugin.pop("cniVersion"), plugin.pop("name")
    path = os.path.join(rt.work, "h1-egress.conflist")
    with open(path, "w") as f:
        json.dump({"cniVersion": "1.0.0", "name": "ov256", "plugins": [
            plugin, {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}]}, f)
    c = rt.container("eg1")
    caps = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    res = json.loads(ok(rt.run(1, "add", c, "ctr-eg1", conflist=path, caps=caps)))
    assert res["ips"][0]["gateway"] == "10.1.0.1"
    assert {"dst": "0.0.0.0/0", "gw": "10.1.0.1"} in res["routes"], res
    assert ns_ping(c, lab.WORLD_IP), "the container reaches the world"
    world = subprocess.Popen(["ip", "netns", "exec", lab.UNDERLAY_NS, sys.executable, "-c", PEER, lab.WORLD_IP],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        r = subprocess.run(["ip", "netns", "exec", os.path.basename(c), sys.executable, "-c", ASK, lab.WORLD_IP,
                            "7078"], capture_output=True, text=True, timeout=30)
    finally:
        world.wait(timeout=30)
    assert r.stdout.strip() == lab.vtep_ip(1), f"a TCP connection to the world, from the host's address: {r}"
    srv = subprocess.Popen(["ip", "netns", "exec", os.path.basename(c), sys.executable, "-c", SERVE],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        r = subprocess.run(["ip", "netns", "exec", lab.UNDERLAY_NS, sys.executable, "-c", ASK, lab.vtep_ip(1),
                            "8080"], capture_output=True, text=True, timeout=30)
        assert r.stdout.strip() == "hello from the container", f"portmap: {r.stdout} {r.stderr}"
    finally:
        srv.kill()
        srv.wait()
    # Hairpin: the container reaches its own published port by the host's address (portmap masquerades
    # it). In by the router and out by it again, DNAT'd: the DROP between routers dropped it before.
    srv = subprocess.Popen(["ip", "netns", "exec", os.path.basename(c), sys.executable, "-c", SERVE],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        r = subprocess.run(["ip", "netns", "exec", os.path.basename(c), sys.executable, "-c", ASK, lab.vtep_ip(1),
                            "8080"], capture_output=True, text=True, timeout=30)
        assert r.stdout.strip() == "hello from the container", f"hairpin: {r.stdout} {r.stderr}"
    finally:
        srv.kill()
        srv.wait()
    ok(rt.run(1, "del", c, "ctr-eg1", conflist=path, caps=caps))
    rules = netlink.ns_exec(H[1], ["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    assert "8080" not in rules, "portmap's DEL took its rules back"


def test_a_host_local_range_from_the_bottom_keeps_its_first_address(rt):
    """host-local's default range starts at the subnet's second address. The first ipMasq
    container on a host makes its gateway, whose router registers an address of its own
    (agent/routers.py): taken lowest-first, that was the one host-local had just given the
    container, and the ADD failed on the clash. Routers take theirs from the top."""
    conf = rt.conf(2, ipMasq=True)
    conf["ipam"] = {"type": "host-local", "dataDir": os.path.join(rt.work, "ipam-bottom"),
                    "ranges": [[{"subnet": SUBNET, "rangeStart": "10.1.0.2", "rangeEnd": "10.1.0.9"}]]}
    c = rt.container("bottom1")
    code, res = rt.plugin(conf, {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr-bottom1", "CNI_NETNS": c,
                                 "CNI_IFNAME": "eth0"})
    try:
        assert code == 0 and res["ips"][0]["address"] == "10.1.0.2/24", res
        assert ns_ping(c, lab.WORLD_IP), "the container reaches the world"
        routers = [e["ip"] for e in api.call(H[2], "endpoint_list") if e["router"]]
        assert routers and all(int(ip.rsplit(".", 1)[1]) > 89 for ip in routers), \
            f"above every host-local range of the module: {routers}"
    finally:
        rt.plugin(conf, {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "ctr-bottom1", "CNI_NETNS": c, "CNI_IFNAME": "eth0"})
