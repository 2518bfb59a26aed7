"""The CLI as a user meets it: bad input gives one line, a non-zero exit and
nothing half-created; up and down are idempotent."""

import os
import shutil
import subprocess
import sys

import pytest

from dataplane.kernel import gso as linkgso, loader as fastpath, netlink, tcx
from dataplane.core import state
from dataplane.node import Node
from tests.conftest import require_privileges
from tests.integration.conftest import DATAPLANE, dp, dp_json

NS = "dpl-cli"


@pytest.fixture
def host():
    """A namespace with an uplink (a veth whose peer sits in a second namespace)."""
    require_privileges()
    for ns in (NS, NS + "p"):
        netlink.ns_delete(ns)
        netlink.ns_create(ns)
    try:
        subprocess.run(["ip", "-n", NS, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", NS + "p"],
                       check=True)
        netlink.link_up(NS, "ul0", "198.18.1.1", 24)
        netlink.link_up(NS + "p", "ul0", "198.18.1.2", 24)
        yield NS
    finally:
        subprocess.run(DATAPLANE + ["--netns", NS, "down"], capture_output=True)
        for ns in (NS, NS + "p"):
            netlink.ns_delete(ns)
        assert not os.path.exists(os.path.join(fastpath.PIN_ROOT, NS))
        assert not os.path.exists(state.node_dir(NS))


def nothing_created(ns=NS):
    assert not os.path.exists(os.path.join(fastpath.PIN_ROOT, ns)), "pins left"
    assert state.load(ns) is None, "state left"
    assert tcx.names(ns, netlink.link_index(ns, "ul0")) == [], "program left"
    assert netlink.tc_filter_names(ns, netlink.link_index(ns, "ul0")) == [], "filter left"


@pytest.mark.parametrize("args,code,msg", [
    (["--vni", "0"], 2, "bad VNI 0"),
    (["--vni", "16777216"], 2, "must be 1..16777215"),
    (["--vni", "256", "--local-ip", "300.1.1.1"], 2, "bad local address"),
    (["--vni", "256", "--local-ip", "198.18.1.9"], 2, "is not an address of ul0"),
    (["--vni", "256", "--peer", "nope"], 2, "bad peer address"),
    (["--vni", "256", "--underlay", "nope0"], 3, "interface 'nope0' not found"),
    (["--vni", "256", "--port", "70000"], 2, "bad UDP port"),
    (["--vni", "256", "--vni", "257", "--subnet", "10.9.0.0/24"], 2, "exactly one --vni"),
])
def test_bad_input_one_line_nonzero_nothing_created(host, args, code, msg):
    before = dp_json("network", "list")
    r = dp("--netns", host, "up", "--underlay", "ul0", *args, check=False) if "--underlay" not in args else \
        dp("--netns", host, "up", *args, check=False)
    assert r.returncode == code, r.stderr
    assert msg in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    nothing_created()
    assert dp_json("network", "list") == before, "no registry network half-created"


def test_missing_namespace():
    require_privileges()
    r = dp("--netns", "dpl-nonexistent", "up", "--vni", "256", check=False)
    assert r.returncode == 3 and "does not exist" in r.stderr


def test_not_root_is_refused():
    require_privileges()
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + DATAPLANE +
                       ["--netns", "dpl-x", "up", "--vni", "256"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 5, r.stderr
    assert "needs root" in r.stderr


def test_bcc_missing_is_a_clear_error(host):
    code = ("import sys; sys.modules['bcc'] = None\n"
            "from dataplane.cli.main import main\n"
            f"sys.exit(main(['--netns', '{host}', 'up', '--vni', '256', '--underlay', 'ul0']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 6 and "bcc is not importable" in r.stderr
    nothing_created()


def test_up_and_down_are_idempotent(host):
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0")
    first = dp_json("--netns", host, "stats")
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0")
    assert [s["vni"] for s in dp_json("--netns", host, "stats")] == [s["vni"] for s in first] == [0, 256]
    assert tcx.names(host, netlink.link_index(host, "ul0")) == ["from_overlay"]
    assert len(vxlan_guard_rules(host)) == 1, "one rule, however often up runs (node/vxlanguard.py)"
    assert dp("--netns", host, "down").stdout.startswith("down: node removed")
    assert vxlan_guard_rules(host) == []
    assert dp("--netns", host, "down").stdout.startswith("down: nothing was up")
    nothing_created()


def test_down_puts_the_uplinks_forwarding_back_unless_the_host_turned_it_on_for_all(host):
    """`up` turns IPv4 forwarding on for the uplink (bpf_fib_lookup needs it) and `down` put back
    what the first `up` found. If Docker (or a sysctl.conf) turned forwarding on for every
    interface since, writing 0 back cut the host's containers off: replies arriving on the uplink
    were no longer forwarded to them. Now `down` leaves it on then, and says so."""
    key = "net.ipv4.conf.ul0.forwarding"
    assert netlink.sysctl_get(host, key) == "0"
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry")
    assert netlink.sysctl_get(host, key) == "1"
    dp("--netns", host, "down")
    assert netlink.sysctl_get(host, key) == "0", "put back as the first up found it"
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry")
    netlink.sysctl(host, "net.ipv4.conf.all.forwarding", "1")       # Docker's start
    r = dp("--netns", host, "down")
    assert netlink.sysctl_get(host, key) == "1" and "stays on for ul0" in r.stderr, r.stderr


def test_the_vxlan_guard_can_be_turned_off_and_on_again(host):
    """A host that routes other machines' VXLAN, or bridges VMs that send it, cannot keep
    node/vxlanguard.py's rule: `up --no-vxlan-guard` removes it on a running node, and the
    choice is kept by later `up`s and at a restore after reboot."""
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry")
    assert len(vxlan_guard_rules(host)) == 1
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry", "--no-vxlan-guard")
    assert vxlan_guard_rules(host) == []
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry")
    assert vxlan_guard_rules(host) == [], "a later up keeps the choice"
    assert dp_json("--netns", host, "status")["vxlan_guard"] is False
    assert state.load_boot(host)["vxlan_guard"] is False, "and so does the restore at boot"
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry", "--vxlan-guard")
    assert len(vxlan_guard_rules(host)) == 1
    dp("--netns", host, "down")
    assert vxlan_guard_rules(host) == []


def test_a_failed_rerun_of_up_puts_back_receive_gro_and_the_xdp_guard(host, monkeypatch):
    """A re-run with --no-rx-gro --xdp-guard --vxlan-guard that failed after its receive-GRO, guard
    and XDP steps (here the next-hop priming) left dpgro0 removed, the XDP guard attached and the
    guard rule added, while the saved state and status said otherwise (review findings). All are
    put back as saved."""
    import ctypes
    from dataplane.core.errors import KernelError
    from dataplane.node import rxgro, vtep
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry", "--peer", "198.18.1.2",
       "--no-vxlan-guard")
    node, uplink = Node(host), netlink.link_index(host, "ul0")
    assert netlink.link_indexes(host).get(rxgro.IFNAME) and not netlink.xdp_attached(host, uplink)

    def refused(*args, **kwargs):
        raise KernelError("next hop refused (a test's stand-in failure)")
    monkeypatch.setattr(vtep.nexthops, "prime", refused)
    with pytest.raises(KernelError):
        vtep.up(node, [256], rx_gro=False, xdp_guard=True, vxlan_guard=True, quiet=True)
    monkeypatch.undo()
    assert not netlink.xdp_attached(host, uplink), "the XDP guard the failed run attached is gone"
    assert vxlan_guard_rules(host) == [], "and so is the guard rule it added"
    gro = netlink.link_indexes(host).get(rxgro.IFNAME)
    with node.maps() as m:
        assert gro and m.dp_config.get(ctypes.c_uint32(0)).tunnel_ifindex == gro, "dpgro0 is back, in use"
    dp("--netns", host, "down")


def test_the_xdp_guard_can_be_turned_off_on_a_running_node(host):
    """`up --xdp-guard` was for good: a later `up` kept it, and no flag took it off short of
    `down` (which takes the node's endpoints with it). --no-xdp-guard detaches it on a running
    node, as --no-vxlan-guard and --no-rx-gro do theirs; the boot file keeps the choice."""
    from dataplane.core import state
    args = ["--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry"]
    uplink = netlink.link_index(host, "ul0")
    dp(*args, "--xdp-guard")
    dp(*args)
    assert netlink.xdp_attached(host, uplink) and Node(host).require_up().config.xdp_guard, "kept by a later up"
    dp(*args, "--no-xdp-guard")
    assert not netlink.xdp_attached(host, uplink), "detached"
    assert not Node(host).require_up().config.xdp_guard and state.load_boot(host)["xdp_guard"] is False
    dp(*args, "--xdp-guard")
    assert netlink.xdp_attached(host, uplink), "and back"
    r = dp("--netns", host, "up", "--restore", "--no-xdp-guard", check=False)
    assert r.returncode == 2 and "--xdp-guard" in r.stderr, r.stderr
    dp("--netns", host, "down")


def test_a_registry_command_waiting_on_an_unanswering_registry_says_so(host):
    """A registry member that does not answer (black-holed: here routed to the uplink's peer,
    which forwards nothing) took `network create` 6 s to report, `network list` 20, silently; the
    project's rule is a progress line on anything that takes more than a second."""
    subprocess.run(["ip", "-n", host, "route", "add", "10.77.0.0/24", "via", "198.18.1.2"], check=True)
    r = subprocess.run(["ip", "netns", "exec", host, sys.executable, "-m", "dataplane.cli", "network", "create", "x",
                        "--vni", "77", "--registry", "etcd://10.77.0.2:2379"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and "unreachable" in r.stderr, r.stderr
    assert "dataplane: waiting for the registry at etcd://10.77.0.2:2379" in r.stderr.splitlines()[0], r.stderr


def test_the_overlay_storm_rate_is_set_shown_kept_and_checked(host):
    """`up --overlay-storm-rate COPIES` (the per-network budget for floods from the underlay) on a
    running node: in dp_config at once, in status, kept by later `up`s and at boot; 0 turns it
    off; a bad value is refused with nothing changed."""
    import ctypes

    def cfg():
        with Node(host).maps() as m:
            c = m.dp_meters.get(ctypes.c_uint32(0))
        return c.overlay_storm_interval_ns, c.overlay_storm_burst_ns
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry")
    assert cfg() == (10_000, 100_000_000), "100,000 copies/s and a 0.1-s burst by default"
    with Node(host).maps() as m:
        h = m.dp_meters.get(ctypes.c_uint32(0))
    assert (h.overlay_host_interval_ns, h.overlay_host_burst_ns) == (2_500, 100_000_000), "400,000 for the host"
    assert (h.overlay_peer_interval_ns, h.overlay_peer_burst_ns) == (20_000, 100_000_000), "50,000 for a peer"
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry", "--overlay-storm-rate", "400")
    assert cfg() == (2_500_000, 100_000_000)

    def peer_interval() -> int:
        with Node(host).maps() as m:
            return m.dp_meters.get(ctypes.c_uint32(0)).overlay_peer_interval_ns
    assert peer_interval() == 5_000_000, "a peer's share follows the network's rate: half of it, 200"
    assert dp_json("--netns", host, "status")["overlay_storm_peer_rate"] == 200
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry", "--overlay-storm-peer-rate", "0")
    assert peer_interval() == 0, "0: no limit per peer"
    assert dp_json("--netns", host, "status")["overlay_storm_peer_rate"] == 0
    assert state.load_boot(host)["meters"]["overlay_storm_peer_rate"] == 0
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry", "--overlay-storm-peer-rate", "auto")
    assert peer_interval() == 5_000_000, "auto: half the network's again"
    assert "200 for a peer, half the network rate" in dp("--netns", host, "status").stdout
    assert state.load_boot(host)["meters"]["overlay_storm_peer_rate"] is None
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry")
    assert cfg()[0] == 2_500_000, "a later up keeps the choice"
    assert dp_json("--netns", host, "status")["overlay_storm_rate"] == 400
    assert state.load_boot(host)["meters"]["overlay_storm_rate"] == 400, "and so does the restore at boot"
    r = dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry", "--overlay-storm-rate", "-1",
           check=False)
    assert r.returncode == 2 and "bad overlay storm rate -1: must be 0..10000000 copies" in r.stderr, r.stderr
    assert cfg()[0] == 2_500_000
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry", "--overlay-storm-rate", "0")
    assert cfg() == (0, 0)
    assert "from the underlay off" in dp("--netns", host, "status").stdout
    dp("--netns", host, "down")


def test_the_learning_rate_is_set_kept_and_restored_from_an_older_boot_file(host):
    import ctypes

    def cfg():
        with Node(host).maps() as m:
            c, s = m.dp_meters.get(ctypes.c_uint32(0)), m.dp_config.get(ctypes.c_uint32(0))
        return c.learn_interval_ns, c.learn_burst_ns, s.storm_interval_ns
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry")
    assert cfg()[:2] == (1_000_000, 1_000_000_000), "1000 MACs/s, and as many at once, by default"
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry", "--learn-rate", "250")
    assert cfg()[:2] == (4_000_000, 1_000_000_000)
    assert dp_json("--netns", host, "status")["learn_rate"] == 250
    assert state.load_boot(host)["meters"]["learn_rate"] == 250
    assert state.load_boot(host)["storm"] == [1000, 200, 100000], "what an older version restores from"
    # A boot file of the version before (storm control's two as a list, nothing else) restores as it said.
    boot = state.load_boot(host)
    boot.pop("meters")
    boot["storm"] = [50, 100]
    state.save_boot(host, boot)
    shutil.rmtree(os.path.join(fastpath.PIN_ROOT, host))
    tcx.detach(host, netlink.link_index(host, "ul0"), "from_overlay")
    shutil.rmtree(state.node_dir(host))
    dp("--netns", host, "up", "--restore")
    assert cfg() == (1_000_000, 1_000_000_000, 20_000_000), "storm control at 50/s; the rest at their defaults"
    dp("--netns", host, "down")


def vxlan_guard_rules(host: str) -> list[str]:
    out = netlink.ns_exec(host, ["iptables", "-t", "mangle", "-S", "FORWARD"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "no VXLAN forwarded" in line]


@pytest.mark.parametrize("mode", [[], ["--no-registry"]], ids=["registry", "static"])
def test_endpoint_errors(host, mode):
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", *mode)
    r = dp("--netns", host, "endpoint", "add", "dpl-e1", "--vni", "999", check=False)
    assert r.returncode == 3 and ("VNI 999 is not up" in r.stderr or "no network has VNI 999" in r.stderr)
    r = dp("--netns", host, "endpoint", "add", "dpl-e1", "--vni", "256", "--ip", "10.9.9.9", check=False)
    assert r.returncode == 2 and "host address of 10.1.0.0/24" in r.stderr
    assert not netlink.ns_exists(f"{host}.dpl-e1")
    dp("--netns", host, "endpoint", "add", "dpl-e1", "--vni", "256")
    r = dp("--netns", host, "endpoint", "add", "dpl-e1", "--vni", "256", check=False)
    assert r.returncode == 4 and "exists already" in r.stderr
    r = dp("--netns", host, "endpoint", "rm", "dpl-nope", check=False)
    assert r.returncode == 3
    dp("--netns", host, "down")
    assert not netlink.ns_exists(f"{host}.dpl-e1"), "down removes the sandboxes it created"


def test_down_of_a_node_whose_namespace_was_deleted(host):
    """`ip netns del` of a node's namespace, then `down`: its links went with the namespace, so
    down removes the sandboxes, the pins and the state and exits 0 (before: it failed on every
    try, entering the gone namespace to delete the veths, and left all of it)."""
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry")
    dp("--netns", host, "endpoint", "add", "dpl-e3", "--vni", "256")
    netlink.ns_delete(host)
    r = dp("--netns", host, "down", check=False)
    assert r.returncode == 0, r.stderr
    assert not netlink.ns_exists(f"{host}.dpl-e3"), "the sandbox namespace went too"
    assert state.load(host) is None and not os.path.exists(os.path.join(fastpath.PIN_ROOT, host))


def test_down_deletes_the_ports_in_batches_and_nothing_else(host, monkeypatch):
    """`down` deletes its endpoints' ports by requests naming a link group (one at a time,
    each deletion waited out the kernel's grace periods: 53 s at 1,000 endpoints, bench.ops).
    A batch's group is a number no other interface has and no batch before it had: a bystander in
    the group first drawn survives."""
    from contextlib import contextmanager
    from dataplane.kernel import linkbatch
    from dataplane.node import vtep
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry")
    names = [f"dpl-b{i}" for i in range(4)]
    for name in names:
        dp("--netns", host, "endpoint", "add", name, "--vni", "256")
    ports = [ep.host_ifname for ep in Node(host).require_up().endpoints.values()]
    subprocess.run(["ip", "-n", host, "link", "add", "dpl-by0", "group", "1234567", "type", "veth", "peer", "name",
                    "dpl-by1"], check=True)
    drawn = iter([1234567, 7654321, 7654321, 2345678])      # taken; drawn; drawn already; drawn
    monkeypatch.setattr(linkbatch, "_draw", lambda: next(drawn))
    monkeypatch.setattr(linkbatch, "BATCH", 2)          # 4 ports: two batches, RTNL let go between
    requests, real = [], linkbatch.ipr

    class Seen:
        def __init__(self, sock):
            self.sock = sock

        def link(self, cmd, **kw):
            requests.append((cmd, kw))
            return self.sock.link(cmd, **kw)

        def __getattr__(self, name):
            return getattr(self.sock, name)

    @contextmanager
    def seen(ns):
        with real(ns) as sock:
            yield Seen(sock)
    monkeypatch.setattr(linkbatch, "ipr", seen)
    assert vtep.down(Node(host))
    assert [kw for cmd, kw in requests if cmd == "del"] == [{"group": 7654321}, {"group": 2345678}]
    assert all(netlink.link_index(host, p) is None for p in ports), "a port survived"
    assert netlink.link_index(host, "dpl-by0") and netlink.link_index(host, "ul0"), "an interface not ours went"
    assert not any(netlink.ns_exists(f"{host}.{n}") for n in names), "a sandbox survived"


def test_down_one_vni_keeps_the_other(host):
    dp("--netns", host, "up", "--vni", "256", "--vni", "257", "--underlay", "ul0", "--no-registry")
    dp("--netns", host, "endpoint", "add", "dpl-e2", "--vni", "257")
    dp("--netns", host, "down", "--vni", "257")
    assert [s["vni"] for s in dp_json("--netns", host, "stats")] == [0, 256]
    assert not netlink.ns_exists(f"{host}.dpl-e2")
    again = dp_json("--netns", host, "down", "--vni", "257")
    assert again["not_up"] == [257] and again["vnis"] == [], "idempotent"
    assert [s["vni"] for s in dp_json("--netns", host, "stats")] == [0, 256]
    dp("--netns", host, "down")


def test_endpoints_inherit_an_uplink_with_big_tcp(host):
    """A user who turned BIG TCP on for the uplink sees it at `up`, and each
    endpoint created afterwards builds packets as large; a 64 KB uplink leaves
    endpoints at the default."""
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry")
    dp("--netns", host, "endpoint", "add", "dpl-e3", "--vni", "256")
    assert linkgso.gso_ipv4_max(f"{host}.dpl-e3", "eth0") == linkgso.LEGACY_MAX
    linkgso.set_gso_ipv4_max(host, "ul0", linkgso.BIG_TCP_SIZE)
    out = dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry").stdout
    assert f"endpoints send up to {linkgso.BIG_TCP_SIZE}-byte packets" in out
    ep = dp_json("--netns", host, "endpoint", "add", "dpl-e4", "--vni", "256")
    assert linkgso.gso_ipv4_max(f"{host}.dpl-e4", "eth0") == linkgso.BIG_TCP_SIZE
    assert linkgso.gso_ipv4_max(host, ep["host_ifname"]) == linkgso.BIG_TCP_SIZE
    dp("--netns", host, "down")
    assert not netlink.ns_exists(f"{host}.dpl-e3") and not netlink.ns_exists(f"{host}.dpl-e4")


def test_up_restore_brings_a_rebooted_node_back_and_down_forgets_it(host):
    dp("--netns", host, "up", "--vni", "256", "--vni", "257", "--underlay", "ul0", "--no-registry",
       "--peer", "198.18.1.2", "--fdb-age", "120")
    dp("--netns", host, "peer", "add", "198.18.1.9", "--vni", "257")
    r = dp("--netns", host, "up", "--restore", "--vni", "256", check=False)
    assert r.returncode == 2 and "--vni" in r.stderr, "--restore takes the saved configuration alone"
    # A reboot: pins, the uplink's filters and /run are gone; /var/lib is not.
    shutil.rmtree(os.path.join(fastpath.PIN_ROOT, host))
    tcx.detach(host, netlink.link_index(host, "ul0"), "from_overlay")
    shutil.rmtree(state.node_dir(host))
    back = dp_json("--netns", host, "up", "--restore")
    assert [n["vni"] for n in back["networks"]] == [256, 257] and back["vtep"] == "198.18.1.1"
    peers = {(p["vni"], p["peer"]) for p in dp_json("--netns", host, "peer", "list")}
    assert peers == {(256, "198.18.1.2"), (257, "198.18.1.2"), (257, "198.18.1.9")}
    assert Node(host).state().config.fdb_age_s == 120
    assert "from_overlay" in tcx.names(host, netlink.link_index(host, "ul0"))
    dp("--netns", host, "down")
    r = dp("--netns", host, "up", "--restore", check=False)
    assert r.returncode == 3 and "nothing to restore" in r.stderr
    nothing_created(host)


def test_a_node_whose_underlay_moved_comes_back_with_the_new_one(host):
    """An interface renamed after a reboot (predictable names changed), or a new address: --restore
    refused --underlay and --local-ip, so `down` and an `up` with every option typed again was the
    only way back. Now they are taken, the rest as saved, and saved for the next boot."""
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry", "--fdb-age", "120")
    shutil.rmtree(os.path.join(fastpath.PIN_ROOT, host))                     # a reboot
    tcx.detach(host, netlink.link_index(host, "ul0"), "from_overlay")
    shutil.rmtree(state.node_dir(host))
    for argv in (["link", "set", "ul0", "down"], ["link", "set", "ul0", "name", "ul1"], ["link", "set", "ul1", "up"]):
        netlink.ns_exec(host, ["ip", *argv], check=True)
    r = dp("--netns", host, "up", "--restore", "--underlay", "ul1", "--local-ip", "198.18.1.77", check=False)
    assert r.returncode == 2 and "not an address of ul1" in r.stderr, "given by hand: checked at once, no wait"
    back = dp_json("--netns", host, "up", "--restore", "--underlay", "ul1")
    assert (back["underlay"], back["vtep"], [n["vni"] for n in back["networks"]]) == ("ul1", "198.18.1.1", [256])
    assert Node(host).state().config.fdb_age_s == 120, "the rest as saved"
    assert state.load_boot(host)["underlay"] == "ul1", "and saved for the next boot"
    assert "from_overlay" in tcx.names(host, netlink.link_index(host, "ul1"))
    r = dp("--netns", host, "up", "--restore", "--local-ip", "198.18.1.1", check=False)
    assert r.returncode == 4 and "is up" in r.stderr, "a running node's address is not changed under its agent"
    dp("--netns", host, "down")


def test_observing_commands_fail_cleanly_and_keep_what_they_should(host, tmp_path):
    """Review findings: a capture refused for its input emptied the -w file first; `status`
    printed a traceback once the uplink had been made again under another ifindex (the
    state keeps the old one until the next up); `stats --interval 0` exited 1, not 2, and
    `--vni 0` (the rows of no VNI, as its help says) was refused."""
    dp("--netns", NS, "up", "--vni", "256", "--underlay", "ul0")
    old = tmp_path / "old.pcap"
    old.write_bytes(b"keep")
    r = dp("--netns", NS, "capture", "--vni", "999", "-w", str(old), "-c", "1", check=False)
    assert r.returncode == 3 and "not served" in r.stderr, r
    assert old.read_bytes() == b"keep", "the earlier capture was emptied"

    r = dp("--netns", NS, "stats", "--watch", "--interval", "0", check=False)
    assert r.returncode == 2 and "--interval" in r.stderr, r
    rows = dp_json("--netns", NS, "stats", "--vni", "0")
    assert [row["vni"] for row in rows] == [0], rows

    subprocess.run(["ip", "-n", NS, "link", "del", "ul0"], check=True)       # the underlay made again
    subprocess.run(["ip", "-n", NS, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", NS + "p"],
                   check=True)
    r = dp("--netns", NS, "status", check=False)
    assert "Traceback" not in r.stderr and r.returncode == 0, r


def test_a_capture_ended_by_sigterm_keeps_its_frames(host, tmp_path):
    """`timeout 10 dataplane capture ...` or a kill: the default SIGTERM handler exited at once,
    so the frames still in the writer's buffer (all of them, with little traffic) were lost."""
    import signal
    import time
    from tests.integration.conftest import ended_by, in_ns, reaped
    dp("--netns", NS, "up", "--vni", "256", "--underlay", "ul0")
    pcap = tmp_path / "x.pcap"
    with reaped(subprocess.Popen(DATAPLANE + ["--netns", NS, "capture", "--vni", "256", "-w", str(pcap)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)) as p:
        time.sleep(1.5)
        r = in_ns(NS + "p", """
from scapy.all import Ether, IP, UDP, sendp
from scapy.layers.vxlan import VXLAN
inner = Ether(src="02:42:0a:01:00:98", dst="02:42:0a:01:00:99") / IP() / UDP()
sendp([Ether(dst="ff:ff:ff:ff:ff:ff") / IP(src="198.18.1.2", dst="198.18.1.1") / UDP(dport=4789)
       / VXLAN(flags=0x08, vni=256) / inner] * 3, iface="ul0", verbose=False)
""")
        assert r.returncode == 0, r.stderr
        out, err = ended_by(p, signal.SIGTERM, timeout=10)
    assert p.returncode == 0, err
    assert "3 frames written" in out + err, (out, err)
    assert pcap.stat().st_size > 24 + 3 * 16, "the frames reached the file"


def test_a_failed_rerun_of_up_leaves_the_fast_path_as_status_says(host, monkeypatch):
    """`up` run again with new settings writes dp_config first; a later step that failed (here the
    uplink's attach) left the new settings in force while the saved state, status and the next
    `up` had the old ones (review finding). Now dp_config is written back as saved."""
    import ctypes
    from dataplane.core import abi
    from dataplane.core.errors import KernelError
    from dataplane.node import vtep
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--no-registry")
    peer_check = int(abi.load().enums["dp_cfg_flag"].DP_CFG_PEER_CHECK)
    node = Node(host)
    with node.maps() as m:
        before = m.dp_config.get(ctypes.c_uint32(0))
    assert before.flags & peer_check and before.storm_interval_ns

    def refused(*args, **kwargs):
        raise KernelError("tcx attach refused (a test's stand-in failure)")
    monkeypatch.setattr(vtep.tcx, "attach", refused)
    with pytest.raises(KernelError):
        vtep.up(node, [256], peer_check=False, meters={"storm_rate": 7}, port=4790, quiet=True)
    monkeypatch.undo()
    with node.maps() as m:
        after = m.dp_config.get(ctypes.c_uint32(0))
    assert after.flags & peer_check, "the peer check is on, as status says"
    assert after.storm_interval_ns == before.storm_interval_ns
    assert dp_json("--netns", host, "status")["peer_check"] is True
    assert after.port == before.port
    rules = vxlan_guard_rules(host)
    assert len(rules) == 1 and "--dport 4789" in rules[0], f"the old port's guard is back: {rules}"
    dp("--netns", host, "down")
