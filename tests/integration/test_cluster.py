"""The overlay running itself: 3 lab hosts, a real etcd on the underlay, an
agent per host, real traffic. Hosts never get --peer; everything they know
comes through the registry."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from dataplane.agent import process as agentctl, client as api
from lab import topology as lab
from dataplane.node import Node, readout
from dataplane.registry import open_registry
from dataplane.registry.kv import Txn
from dataplane.registry.store import key
from lab.traffic import ping
from tests.integration.conftest import dp, dp_json, make_lab, sandbox, stats, wait_for

TTL = 3


@pytest.fixture(scope="module")
def info():
    yield from make_lab(3, [256, 257], per_host=1, registry="etcd", lease_ttl=TTL)


def remote_macs(ns, vni=256):
    return {r["mac"]: r["where"] for r in readout.fdb(Node(ns)) if r["vni"] == vni and r["where"] != "local"}


def flood(ns, vni=256):
    return sorted(p["peer"] for p in dp_json("--netns", ns, "peer", "list") if p["vni"] == vni)


def in_registry(fn):
    """Registry calls from the test process go out of the lab's underlay namespace, as
    the module's lab's administrator (its URL read now: at import another lab may be up)."""
    from dataplane.kernel import netlink
    url = lab.registry_url("etcd")

    def run():
        reg = open_registry(url)
        try:
            return fn(reg)
        finally:
            reg.close()
    return netlink.call_in_netns(lab.registry_netns(), run)


def status(ns):
    return api.call(ns, "status")


def test_hosts_know_each_other_without_peer_flags(info):
    for i in (1, 2, 3):
        st = status(f"dpl-h{i}")
        assert st["watch_transport"] == "grpc" and st["registry_transport"]["grpc_watches"] >= 1, st
        others = sorted(lab.vtep_ip(j) for j in (1, 2, 3) if j != i)
        assert flood(f"dpl-h{i}") == others
        assert sorted(set(remote_macs(f"dpl-h{i}").values())) == others
    a, b = sandbox(info, "h1", 256), sandbox(info, "h3", 256)
    assert ping(a["name"], b["ip"], count=3)[0] == 3


def test_endpoint_added_on_one_host_reaches_all_and_removal_cleans(info):
    commits = status("dpl-h1")["registry_transport"]["grpc_commits"]
    out = dp("--netns", "dpl-h1", "endpoint", "add", "dpl-new1", "--vni", "256").stdout
    assert status("dpl-h1")["registry_transport"]["grpc_commits"] > commits, "the agent writes over gRPC"
    rec = next(e for e in dp_json("--netns", "dpl-h2", "endpoint", "list") if e["id"] == "dpl-new1")
    assert rec["host"] == "h1" and rec["ip"] in out
    for ns in ("dpl-h2", "dpl-h3"):
        assert wait_for(lambda ns=ns: remote_macs(ns).get(rec["mac"]) == lab.vtep_ip(1)), ns
    src = sandbox(info, "h2", 256)
    arp_before = stats("dpl-h2", 256)["arp_replies"]
    flooded_before = stats("dpl-h2", 256)["flooded"]
    assert ping(src["name"], rec["ip"], count=2)[0] == 2
    assert stats("dpl-h2", 256)["arp_replies"] > arp_before, "ARP answered on h2 from the registry's entry"
    assert stats("dpl-h2", 256)["flooded"] == flooded_before, "nothing needed flooding"
    dp("--netns", "dpl-h1", "endpoint", "rm", "dpl-new1")
    for ns in ("dpl-h2", "dpl-h3"):
        assert wait_for(lambda ns=ns: rec["mac"] not in remote_macs(ns)), ns
        neigh = {(k.vni, k.ip) for k, _ in Node(ns).maps().dp_neigh.items()}
        from dataplane.core.keys import be32
        assert (256, be32(rec["ip"])) not in neigh


def test_moved_sandbox_is_reached_at_its_new_place(info):
    dp("--netns", "dpl-h1", "endpoint", "add", "dpl-mv", "--vni", "256")
    rec = next(e for e in dp_json("--netns", "dpl-h1", "endpoint", "list") if e["id"] == "dpl-mv")
    src = sandbox(info, "h3", 256)
    assert wait_for(lambda: rec["mac"] in remote_macs("dpl-h3"))
    assert ping(src["name"], rec["ip"], count=2)[0] == 2     # h3 also learns it behind h1
    moved = dp_json("--netns", "dpl-h2", "endpoint", "move", "dpl-mv")
    assert moved["id"] == moved["name"] == "dpl-mv", "an endpoint is `id` in every command's JSON"
    assert wait_for(lambda: remote_macs("dpl-h3").get(rec["mac"]) == lab.vtep_ip(2))
    assert wait_for(lambda: "dpl-mv" not in Node("dpl-h1").state().endpoints), "old sandbox removed by h1"
    assert "dpl-mv" in Node("dpl-h2").state().endpoints
    learned = [r for r in readout.fdb(Node("dpl-h3")) if r["mac"] == rec["mac"] and r["where"] == lab.vtep_ip(1)]
    assert learned == [], "no entry keeps pointing at the old host"
    assert ping(src["name"], rec["ip"], count=3)[0] == 3
    dp("--netns", "dpl-h2", "endpoint", "rm", "dpl-mv")


def test_dead_host_leaves_every_fdb_and_flood_list_within_the_lease(info):
    dead = lab.vtep_ip(3)
    pid = agentctl.running_pid("dpl-h3")
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    gone = lambda: all(dead not in remote_macs(ns).values() and dead not in flood(ns)  # noqa: E731
                       for ns in ("dpl-h1", "dpl-h2"))
    assert wait_for(gone, timeout=TTL + 5, every=0.1)
    took = time.monotonic() - t0
    assert took <= TTL + 2, f"took {took:.1f} s for a {TTL} s lease"
    # It comes back: `up` again starts its agent, which re-registers it.
    dp("--netns", "dpl-h3", "up")
    assert wait_for(lambda: dead in flood("dpl-h1") and dead in remote_macs("dpl-h1").values())
    a, b = sandbox(info, "h1", 256), sandbox(info, "h3", 256)
    assert ping(a["name"], b["ip"], count=2)[0] == 2


def _ping_stream(src, dst, count, out):
    r = subprocess.run(["ip", "netns", "exec", src, "ping", "-q", "-i", "0.01", "-c", str(count), "-W", "1", dst],
                       capture_output=True, text=True)
    out.append(r.stdout)


def _received(text):
    line = next(x for x in text.splitlines() if "received" in x)
    return int(line.split(",")[1].split()[0])


def test_agent_restart_and_code_upgrade_lose_no_packet(info, tmp_path):
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    out = []
    t = threading.Thread(target=_ping_stream, args=(a["name"], b["ip"], 400, out))
    t.start()
    time.sleep(0.5)
    old_pid = agentctl.running_pid("dpl-h1")
    os.kill(old_pid, signal.SIGTERM)
    assert wait_for(lambda: agentctl.running_pid("dpl-h1") is None)
    time.sleep(0.5)                        # forwarding on pinned maps, no agent
    # Changed BPF code: a copy of bpf/ with another learning refresh constant.
    src = tmp_path / "bpf"
    shutil.copytree(os.path.join(os.path.dirname(__file__), "..", "..", "bpf"), src)
    abi_h = src / "dp_abi.h"
    abi_h.write_text(abi_h.read_text().replace("DP_LEARN_REFRESH_NS 1000000000", "DP_LEARN_REFRESH_NS 2000000000"))
    tag_before = _prog_tag("dpl-h1")
    dp("--netns", "dpl-h1", "up", env={**os.environ, "DATAPLANE_BPF_DIR": str(src)})
    assert _prog_tag("dpl-h1") != tag_before, "the new code is what runs"
    assert agentctl.running_pid("dpl-h1") not in (None, old_pid)
    t.join(timeout=30)
    assert _received(out[0]) == 400, out[0]
    assert status("dpl-h1")["synced"]
    dp("--netns", "dpl-h1", "up")          # back to the tree's code


def _prog_tag(ns):
    from dataplane.kernel import loader as fastpath
    r = subprocess.run(["bpftool", "prog", "show", "pinned", fastpath.prog_pin(os.path.join(fastpath.PIN_ROOT, ns),
                                                                              "from_overlay")],
                       capture_output=True, text=True, check=True)
    return r.stdout.split("tag")[1].split()[0]


def test_etcd_outage_keeps_forwarding_then_resumes(info):
    """The watch resumes from the last revision it delivered once etcd is back
    (its history kept on disk): no snapshot needed, nothing lost."""
    state = lab.load()
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    seen = {ns: status(ns)["reconnects"] + status(ns)["resyncs"] for ns in ("dpl-h1", "dpl-h2")}
    lab.stop_etcd(state)
    try:
        assert wait_for(lambda: not status("dpl-h1")["connected"], timeout=TTL + 5)
        assert ping(a["name"], b["ip"], count=3)[0] == 3, "forwarding on the last known state"
    finally:
        lab.start_etcd(state)
    for ns in ("dpl-h1", "dpl-h2"):
        assert wait_for(lambda ns=ns: status(ns)["connected"]
                        and status(ns)["reconnects"] + status(ns)["resyncs"] > seen[ns], timeout=15)
    dp("--netns", "dpl-h1", "endpoint", "add", "dpl-after", "--vni", "256")
    rec = next(e for e in dp_json("--netns", "dpl-h1", "endpoint", "list") if e["id"] == "dpl-after")
    assert wait_for(lambda: remote_macs("dpl-h2").get(rec["mac"]) == lab.vtep_ip(1))
    # Exactly the registry's view: no duplicate, nothing stale.
    snap = in_registry(lambda reg: reg.snapshot())
    want = {e.mac: lab.vtep_ip(int(e.host[1:])) for e in snap.endpoints.values()
            if e.network == "vni256" and e.host != "h2" and e.host in snap.hosts}
    assert {m: v for m, v in remote_macs("dpl-h2").items()} == want
    dp("--netns", "dpl-h1", "endpoint", "rm", "dpl-after")


def test_concurrent_writers_lose_no_update(info):
    names = {ns: [f"dpl-c{ns[-1]}{i}" for i in range(8)] for ns in ("dpl-h1", "dpl-h2")}
    errors = []

    def writer(ns):
        for n in names[ns]:
            try:
                api.call(ns, "endpoint_add", id=n, vni=257)
            except Exception as e:  # collected for the assertion
                errors.append(e)
    threads = [threading.Thread(target=writer, args=(ns,)) for ns in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    listed = lambda: [e for e in dp_json("--netns", "dpl-h3", "endpoint", "list")  # noqa: E731
                      if e["id"].startswith("dpl-c")]
    # A third host's view is eventually consistent (a CI run once listed it mid-resync): wait for it.
    assert wait_for(lambda: len(listed()) == 16, timeout=15), listed()
    eps = listed()
    assert len({e["ip"] for e in eps}) == 16
    assert wait_for(lambda: {e["mac"] for e in eps} <= set(remote_macs("dpl-h3", 257)))
    for ns, lst in names.items():
        for n in lst:
            api.call(ns, "endpoint_rm", id=n)


def test_bad_registry_data_is_skipped_not_fatal(info):
    good = sandbox(info, "h1", 256)
    before = status("dpl-h2")["bad_records"]
    clash_mac = good["mac"]
    bad = {key("endpoints", "junk"): b"{not json",
           key("networks", "huge"): b'{"name": "huge", "vni": 99999999, "subnet": "10.7.0.0/24", '
                                    b'"gateway": "10.7.0.1", "mtu": 1450, "port": 4789}',
           key("endpoints", "dpl-clash"): ('{"id": "dpl-clash", "network": "vni256", "host": "h3", '
                                           f'"mac": "{clash_mac}", "ip": "10.1.0.99"}}').encode()}

    def write(reg):
        txn = Txn()
        for k, v in bad.items():
            txn.put(k, v)
        return reg.kv.commit(txn)[0]
    assert in_registry(write)
    try:
        assert wait_for(lambda: status("dpl-h2")["bad_records"] >= before + 3)
        for ns in ("dpl-h1", "dpl-h2", "dpl-h3"):
            assert status(ns)["synced"], f"agent of {ns} still answers"
        assert remote_macs("dpl-h2")[clash_mac] == lab.vtep_ip(1), "the clash did not steal the MAC"
        b = sandbox(info, "h2", 256)
        assert ping(b["name"], good["ip"], count=2)[0] == 2
    finally:
        def clean(reg):
            txn = Txn()
            for k in bad:
                txn.delete(k)
            reg.kv.commit(txn)
        in_registry(clean)


def test_miss_is_punted_resolved_installed_and_resent(info):
    """h1's maps lose h3's endpoint (as if evicted). The sandbox's ARP misses
    in the fast path, is punted to h1's agent, which puts the entries back
    and sends the request on to h3 itself: the ping still answers."""
    from dataplane.core.keys import ip_key, mac_key
    from dataplane.kernel import netlink

    a, b = sandbox(info, "h1", 256), sandbox(info, "h3", 256)
    before = status("dpl-h1")["punts"]
    flooded = stats("dpl-h1", 256)["flooded"]
    m = Node("dpl-h1").maps()
    try:
        m.dp_fdb.delete(mac_key(256, b["mac"]))
        m.dp_neigh.delete(ip_key(256, b["ip"]))
        m.dp_learned.delete(mac_key(256, b["mac"]))
    finally:
        m.close()
    netlink.ns_exec(a["name"], ["ip", "neigh", "flush", "dev", "eth0"], check=True)
    assert ping(a["name"], b["ip"], count=3)[0] == 3
    after = status("dpl-h1")["punts"]
    assert after["received"] > before["received"]
    assert after["resolved"] > before["resolved"] and after["repaired"] > before["repaired"]
    assert stats("dpl-h1", 256)["punted"] >= 1
    assert stats("dpl-h1", 256)["flooded"] == flooded, "resolved by the agent, not flooded"
    assert remote_macs("dpl-h1")[b["mac"]] == lab.vtep_ip(3), "entry installed again"


def test_miss_nobody_owns_is_flooded_by_the_agent(info):
    """A frame to a MAC no registry entry has: the agent replicates it to the
    VNI's VTEPs (with the C helper's encapsulation), where it arrives as valid
    VXLAN and is dropped as an unknown destination."""
    a = sandbox(info, "h1", 256)
    ghost_ip = a["ip"].rsplit(".", 1)[0] + ".250"
    before = status("dpl-h1")["punts"]
    drops = [stats(ns, 256)["drops"].get("unknown_dst", 0) for ns in ("dpl-h2", "dpl-h3")]
    from dataplane.kernel import netlink
    netlink.ns_exec(a["name"], ["ip", "neigh", "replace", ghost_ip, "lladdr", "02:de:ad:00:00:01",
                                "dev", "eth0", "nud", "permanent"], check=True)
    try:
        assert ping(a["name"], ghost_ip, count=2)[0] == 0
    finally:
        netlink.ns_exec(a["name"], ["ip", "neigh", "del", ghost_ip, "dev", "eth0"])
    after = status("dpl-h1")["punts"]
    assert after["unresolved"] >= before["unresolved"] + 2
    assert after["flooded"] >= before["flooded"] + 4, "two frames to two VTEPs"
    assert after["send_errors"] == before["send_errors"]
    for ns, d in zip(("dpl-h2", "dpl-h3"), drops):
        assert wait_for(lambda ns=ns, d=d: stats(ns, 256)["drops"].get("unknown_dst", 0) >= d + 2), ns
