"""Docker drives the overlay: two lab hosts, each with a real Docker engine
(Debian's docker.io) and the dataplane driver beside its agent, as
`docker network create -d dataplane` users would run them."""

from __future__ import annotations

import json
import subprocess

import pytest

from dataplane.agent import client as api
from lab import topology as lab
from dataplane.kernel import ethtool, gso as linkgso, netlink
from dataplane.core import state
from dataplane.node import Node, endpoints, readout, rxgro, sweep
from tests.integration.conftest import make_lab, wait_for
from tests.runtimes import IMAGE, running_engines

H1, H2 = lab.host_ns(1), lab.host_ns(2)
NETS = {"net1": (300, "10.30.0.0/24"), "net2": (301, "10.31.0.0/24")}


@pytest.fixture(scope="module")
def info():
    # BIG TCP uplinks: containers must inherit the limit through the driver too.
    yield from make_lab(2, [256], per_host=0, registry="sqlite", gso_max_size=linkgso.BIG_TCP_SIZE)


@pytest.fixture(scope="module")
def engines(info):
    yield from running_engines([H1, H2])


def ip_range(net: str, host: int) -> str:
    """Each engine allocates from its own /28: Docker's IPAM is per engine."""
    base = NETS[net][1].rsplit(".", 1)[0]
    return f"{base}.{16 * host}/28"


def create_networks(engines, *names):
    for i, e in enumerate(engines, 1):
        for name in names:
            vni, subnet = NETS[name]
            e.docker("network", "create", "-d", "dataplane", "-o", f"vni={vni}", "--subnet", subnet,
                     "--ip-range", ip_range(name, i), name)


def map_entries(ns: str, vnis) -> dict:
    with Node(ns).maps() as m:
        return {"endpoints": sum(1 for _, v in m.dp_endpoints.items() if v.vni in vnis),
                "local_macs": sum(1 for k, _ in m.dp_local_macs.items() if k.vni in vnis),
                "neigh": sum(1 for k, _ in m.dp_neigh.items() if k.vni in vnis),
                "fdb": sum(1 for k, _ in m.dp_fdb.items() if k.vni in vnis)}


def runtime_links(ns: str) -> list[str]:
    with netlink.ipr(ns) as s:
        names = [link.get_attr("IFLA_IFNAME") for link in s.get_links()]
    return [n for n in names if n.startswith(("dp", "dkp")) and n != rxgro.IFNAME]   # that one is the node's


def ping(engine, container: str, ip: str, count: int = 3) -> str:
    r = engine.docker("exec", container, "ping", "-c", str(count), "-W", "1", ip, check=False)
    return r.stdout + r.stderr


def test_containers_reach_each_other_across_hosts_and_networks_stay_apart(engines):
    e1, e2 = engines
    create_networks(engines, "net1", "net2")
    e1.docker("run", "-d", "--name", "a1", "--net", "net1", "--cap-add", "NET_ADMIN", IMAGE, "sleep", "600")
    e2.docker("run", "-d", "--name", "a2", "--net", "net1", IMAGE, "sleep", "600")
    e2.docker("run", "-d", "--name", "b2", "--net", "net2", IMAGE, "sleep", "600")
    a2, b2 = e2.ip_of("a2"), e2.ip_of("b2")
    assert a2.startswith("10.30.0.") and b2.startswith("10.31.0.")
    out = ping(e1, "a1", a2)
    assert "3 packets received" in out, out
    pid = e1.docker("inspect", "-f", "{{.State.Pid}}", "a1").stdout.strip()
    assert linkgso.gso_ipv4_max(f"/proc/{pid}/ns/net", "eth0") == linkgso.BIG_TCP_SIZE, \
        "the container inherits the uplink's limit"
    assert ethtool.features(f"/proc/{pid}/ns/net", "eth0", ethtool.TUNNEL_GSO) == \
        dict.fromkeys(ethtool.TUNNEL_GSO, False), "tunnelled GSO is cut in the container"

    # Isolation, made as hard as possible: a1 is told b2's address is on its
    # own link and what b2's MAC is, so frames go straight to it on VNI 300.
    b2_mac = e2.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}",
                       "b2").stdout.strip()
    e1.docker("exec", "a1", "ip", "route", "add", "10.31.0.0/24", "dev", "eth0")
    e1.docker("exec", "a1", "arp", "-s", b2, b2_mac)
    before = next(s for s in readout.stats(Node(H2)) if s["vni"] == 301)["rx_packets"]
    out = ping(e1, "a1", b2)
    assert "0 packets received" in out, out
    assert next(s for s in readout.stats(Node(H2)) if s["vni"] == 301)["rx_packets"] == before

    # the registry sees Docker's endpoints like any other
    eps = {e["ip"]: e for e in api.call(H1, "endpoint_list")}
    assert eps[a2]["host"] == "h2" and eps[a2]["network"] == "vni300" and eps[b2]["network"] == "vni301"


def test_an_older_versions_container_is_told_to_cut_tunnelled_gso(engines):
    """A container whose endpoint an older version made segments tunnelled GSO (its eth0 was
    made without the setting). The engine moved and renamed the peer, and the node's state
    records neither its namespace nor its name: the sweep (every `up`, the agent's start)
    finds it through the host end's link and turns the setting off."""
    e1, _ = engines
    path = f"/proc/{e1.docker('inspect', '-f', '{{.State.Pid}}', 'a1').stdout.strip()}/ns/net"
    off = dict.fromkeys(ethtool.TUNNEL_GSO, False)
    subprocess.run(["nsenter", f"--net={path}", "ethtool", "-K", "eth0",
                    *[x for f in ethtool.TUNNEL_GSO for x in (f, "on")]], check=True)
    assert ethtool.features(path, "eth0", ethtool.TUNNEL_GSO) != off
    try:
        with state.locked(H1):
            with open(state._path(H1)) as f:
                old = json.load(f)
            old.pop("ends_swept", None)                # as an older version wrote it
            state.write_json(state._path(H1), old)
        done = sweep.sweep(Node(H1))
        assert ethtool.features(path, "eth0", ethtool.TUNNEL_GSO) == off, done
        assert any(d.startswith("1 endpoint(s) an older version made: their sandbox ends cut tunnelled GSO")
                   for d in done), done
        assert Node(H1).state().ends_swept == endpoints.ENDS_MADE
    finally:
        ethtool.set_off(path, "eth0", ethtool.TUNNEL_GSO)
        if Node(H1).state().ends_swept < endpoints.ENDS_MADE:
            sweep.sweep(Node(H1))
    out = ping(e1, "a1", engines[1].ip_of("a2"))
    assert "3 packets received" in out, out


def test_removing_containers_and_networks_leaves_nothing(engines):
    e1, e2 = engines
    e1.docker("rm", "-f", "a1")
    e2.docker("rm", "-f", "a2", "b2")
    for e in engines:
        e.docker("network", "rm", "net1", "net2")
    for ns in (H1, H2):
        assert runtime_links(ns) == [], ns
        assert Node(ns).state().endpoints == {}
        assert set(Node(ns).state().networks) == {256}
        assert map_entries(ns, {300, 301}) == {"endpoints": 0, "local_macs": 0, "neigh": 0, "fdb": 0}
    assert api.call(H1, "endpoint_list") == []
    assert all(s["vni"] not in (300, 301) for s in readout.stats(Node(H1)))


def test_docker_users_get_clear_errors_and_nothing_half_made(engines):
    e1, e2 = engines
    r = e1.docker("network", "create", "-d", "dataplane", "-o", "vni=abc", "--subnet", "10.40.0.0/24", "bad",
                  check=False)
    assert r.returncode and "bad VNI 'abc'" in r.stderr, r.stderr
    r = e1.docker("network", "create", "-d", "dataplane", "-o", "colour=red", "--subnet", "10.40.0.0/24", "bad",
                  check=False)
    assert r.returncode and "unknown option 'colour'" in r.stderr, r.stderr
    e1.docker("network", "create", "-d", "dataplane", "-o", "vni=302", "--subnet", "10.32.0.0/24", "net3")
    r = e2.docker("network", "create", "-d", "dataplane", "-o", "vni=302", "--subnet", "10.99.0.0/24", "net3",
                  check=False)
    assert r.returncode and "use the same subnet on every host" in r.stderr, r.stderr
    # Two engines whose IPAMs hand out the same address on one VNI: the second is refused.
    e2.docker("network", "create", "-d", "dataplane", "-o", "vni=302", "--subnet", "10.32.0.0/24", "net3")
    e1.docker("run", "-d", "--name", "c1", "--net", "net3", IMAGE, "sleep", "600")
    r = e2.docker("run", "-d", "--name", "c2", "--net", "net3", IMAGE, "sleep", "600", check=False)
    assert r.returncode and "disjoint address ranges" in r.stderr, r.stderr
    assert Node(H2).state().endpoints == {} and runtime_links(H2) == []
    e2.docker("rm", "-f", "c2")
    e1.docker("rm", "-f", "c1")
    for e in engines:
        e.docker("network", "rm", "net3")
    assert api.call(H1, "endpoint_list") == []


def test_driver_picks_a_vni_when_none_is_given(engines):
    e1, _ = engines
    e1.docker("network", "create", "-d", "dataplane", "--subnet", "10.33.0.0/24", "auto")
    nets = Node(H1).state().networks
    assert 4096 in nets and nets[4096].subnet == "10.33.0.0/24"
    e1.docker("run", "-d", "--name", "d1", "--net", "auto", IMAGE, "sleep", "600")
    assert [e["vni"] for e in api.call(H1, "endpoint_local", runtime="docker")] == [4096]
    e1.docker("rm", "-f", "d1")
    e1.docker("network", "rm", "auto")
    assert wait_for(lambda: 4096 not in Node(H1).state().networks)


def test_the_gateway_docker_keeps_is_the_networks(engines):
    """`--gateway` was ignored: the registry network took the subnet's first address as its
    gateway, which Docker's IPAM (keeping .254 back instead) gave the first container, and the
    registry refused it ("reserved") on every run. Docker's own options that reach the driver in
    the generic map (`-o com.docker.network.enable_ipv6=false`) were "unknown options"."""
    e1, _ = engines
    e1.docker("network", "create", "-d", "dataplane", "-o", "vni=303", "-o", "com.docker.network.enable_ipv6=false",
              "--subnet", "10.35.0.0/24", "--gateway", "10.35.0.254", "gw")
    try:
        e1.docker("run", "-d", "--name", "g1", "--net", "gw", IMAGE, "sleep", "600")
        assert [e["ip"] for e in api.call(H1, "endpoint_local", runtime="docker")] == ["10.35.0.1"]
        from dataplane.registry import open_registry
        reg = open_registry(lab.registry_url("sqlite"))
        try:
            assert reg.network_by_vni(303).gateway == "10.35.0.254"
        finally:
            reg.close()
    finally:
        e1.docker("rm", "-f", "g1", check=False)
        e1.docker("network", "rm", "gw", check=False)
    assert wait_for(lambda: 303 not in Node(H1).state().networks)


FETCH = """
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=10).status)
except urllib.error.HTTPError as e:
    print(e.code)
"""


def test_containers_reach_the_world_and_publish_ports_unless_internal(engines):
    """Issue 16, item 1 (Docker): the world (the lab switch's 198.18.0.254) is reached
    through Docker's gateway bridge with the host's address as the source; -p publishes
    a port there; --internal networks reach nothing outside; east-west stays on the overlay."""
    import subprocess
    import sys
    from lab import capture
    e1, e2 = engines
    for i, e in enumerate(engines, 1):
        e.docker("network", "create", "-d", "dataplane", "-o", "vni=302", "--subnet", "10.32.0.0/24",
                 "--ip-range", f"10.32.0.{16 * i}/28", "pub")
    e1.docker("network", "create", "-d", "dataplane", "--internal", "-o", "vni=303", "--subnet", "10.33.0.0/24",
              "priv")
    try:
        e1.docker("run", "-d", "--name", "w1", "--net", "pub", "-p", "8080:80", IMAGE, "busybox", "httpd", "-f", "-p", "80")
        e2.docker("run", "-d", "--name", "w2", "--net", "pub", IMAGE, "sleep", "600")
        e1.docker("run", "-d", "--name", "p1", "--net", "priv", IMAGE, "sleep", "600")
        cap = capture.Capture(lab.UNDERLAY_NS, lab.BRIDGE, "icmp")
        try:
            assert "0% packet loss" in ping(e1, "w1", lab.WORLD_IP), "egress"
            pcap = cap.stop()
            r = subprocess.run(["tshark", "-r", pcap, "-n", "-T", "fields", "-e", "ip.src", "-Y", "icmp.type == 8"],
                               capture_output=True, text=True, check=True)
        finally:
            cap.remove()
        assert set(r.stdout.split()) == {lab.vtep_ip(1)}, f"the world sees the host's address (SNAT): {r.stdout}"
        web = subprocess.Popen(["ip", "netns", "exec", lab.UNDERLAY_NS, sys.executable, "-m", "http.server",
                                "--bind", lab.WORLD_IP, "--directory", "/usr/share/doc/iperf3", "8081"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            import time
            time.sleep(1)
            got = e1.docker("exec", "w1", "busybox", "wget", "-q", "-O-", f"http://{lab.WORLD_IP}:8081/", check=False)
        finally:
            web.kill()
            web.wait()
        assert got.returncode == 0 and "copyright" in got.stdout, f"a TCP fetch from the container: {got}"
        r = subprocess.run(["ip", "netns", "exec", lab.UNDERLAY_NS, sys.executable, "-c", FETCH,
                            f"http://{lab.vtep_ip(1)}:8080/"], capture_output=True, text=True, timeout=30)
        assert r.stdout.strip().isdigit(), f"-p 8080:80 answers HTTP from the world: {r.stdout} {r.stderr}"
        out = ping(e1, "p1", lab.WORLD_IP, count=2)
        assert "100% packet loss" in out or "Network is unreachable" in out, f"--internal reaches nothing: {out}"
        before = [s for s in readout.stats(Node(H1)) if s["vni"] == 302][0]["tx_packets"]
        assert "0% packet loss" in ping(e1, "w1", e2.ip_of("w2")), "east-west"
        after = [s for s in readout.stats(Node(H1)) if s["vni"] == 302][0]["tx_packets"]
        assert after >= before + 3, "east-west went over the overlay (VXLAN), not the gateway"
    finally:
        e1.docker("rm", "-f", "w1", "p1", check=False)
        e2.docker("rm", "-f", "w2", check=False)
        for e in engines:
            e.docker("network", "rm", "pub", check=False)
        e1.docker("network", "rm", "priv", check=False)


def test_the_ipam_driver_gives_distinct_addresses_across_engines(engines):
    """Issue 16, item 4: `--ipam-driver dataplane` on two engines sharing a VNI, with
    no --ip-range split: concurrent `docker run`s on both never get the same address,
    --ip is honoured once, the gateway is the registry's, and removal frees everything."""
    import threading
    from dataplane.registry import open_registry
    e1, e2 = engines
    for e in engines:
        e.docker("network", "create", "-d", "dataplane", "--ipam-driver", "dataplane", "-o", "vni=304",
                 "--subnet", "10.34.0.0/24", "ipn")
    names = {e: [f"i{k}-{i}" for k in range(4)] for i, e in enumerate(engines, 1)}
    errors = []

    def run(e, name):
        r = e.docker("run", "-d", "--name", name, "--net", "ipn", IMAGE, "sleep", "600", check=False)
        if r.returncode:
            errors.append(r.stderr)
    threads = [threading.Thread(target=run, args=(e, n)) for e in engines for n in names[e]]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        assert not errors, errors
        ips = [e.ip_of(n) for e in engines for n in names[e]]
        assert len(set(ips)) == 8 and all(ip.startswith("10.34.0.") for ip in ips), ips
        assert "10.34.0.1" not in ips
        e1.docker("run", "-d", "--name", "fixed1", "--net", "ipn", "--ip", "10.34.0.200", IMAGE, "sleep", "600")
        r = e2.docker("run", "-d", "--name", "fixed2", "--net", "ipn", "--ip", "10.34.0.200", IMAGE, "sleep", "600",
                      check=False)
        assert r.returncode and "10.34.0.200" in r.stderr and "in use" in r.stderr, r.stderr
        assert "0% packet loss" in ping(e1, names[e1][0], e2.ip_of(names[e2][0])), "across hosts"
        reg = open_registry(lab.registry_url("sqlite"))
        try:
            claims = {k: v for k, v in reg.snapshot().ipam.items() if k.startswith("vni304/")}
        finally:
            reg.close()
        assert len(claims) == 9 and all(v.startswith("dk-") for v in claims.values()), claims
        assert api.call(H1, "address_list") == [] and api.call(H2, "address_list") == []
    finally:
        for e in engines:
            e.docker("rm", "-f", *names[e], "fixed1", "fixed2", check=False)
    for e in engines:
        e.docker("network", "rm", "ipn")
    reg = open_registry(lab.registry_url("sqlite"))
    try:
        snap = reg.snapshot()
    finally:
        reg.close()
    assert not [k for k in snap.ipam if k.startswith("vni304/")], "removal frees every address"
