"""One node with its agent on a SQLite registry: full maps are reported and
counted, learned entries age out, and the CLI's registry commands."""

from __future__ import annotations

import time

import pytest

from dataplane.core import abi
from dataplane.agent import process as agentctl, client as api
from dataplane.kernel import netlink
from dataplane.core.keys import be32, mac_key
from dataplane.node import Node, readout
from dataplane.registry import Host, open_registry
from tests.integration.conftest import dp, dp_json, wait_for
from tests.integration.test_cli import host  # noqa: F401 - the namespace-with-uplink fixture

NS = "dpl-cli"


@pytest.fixture
def reg_url(tmp_path):
    return f"sqlite://{tmp_path}/reg.db"


def test_full_fdb_map_is_an_error_and_a_counter_then_recovers(host, reg_url):  # noqa: F811
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--registry", reg_url,
       "--host-name", "me", "--map-size", "DP_MAP_FDB=4")
    again = ["--netns", host, "up", "--vni", "256", "--registry", reg_url, "--host-name", "me"]
    r = dp(*again, "--map-size", "DP_MAP_FDB=8", check=False)
    assert r.returncode == 4 and "fixed when the maps are made" in r.stderr, "before: ignored, said nothing"
    dp(*again, "--map-size", "DP_MAP_FDB=4")        # the same again: idempotent
    dp(*again, "--map-size", "DP_MAP_NEIGH=65536")  # what it was made with by default: no change either
    reg = open_registry(reg_url)
    try:
        reg.host_register(Host.make("other", "198.18.1.2"), reg.kv.lease_grant(120))
        eps = [reg.endpoint_create(f"r{i}", "vni256", "other") for i in range(6)]
        assert wait_for(lambda: api.call(host, "status")["installed"]["map_full"] >= 1)
        st = api.call(host, "status")
        assert "dp_fdb: map is full" in st["map_error"] and "--map-size" in st["map_error"]
        assert st["installed"]["fdb"] == 4, "what fits is installed, the rest is counted, not lost silently"
        assert api.call(host, "ping")["synced"]
        for ep in eps[:3]:
            reg.endpoint_rm(ep.id)
        want = {e.mac for e in eps[3:]} | {reg.endpoint_create("r6", "vni256", "other").mac}
        remote = lambda: {r["mac"] for r in readout.fdb(Node(host)) if r["where"] == "198.18.1.2"}  # noqa: E731
        assert wait_for(lambda: remote() == want), "freed room is used: nothing stays lost"
    finally:
        reg.close()
        dp("--netns", host, "down")
    assert agentctl.running_pid(host) is None


def test_agent_ages_learned_entries(host, reg_url):  # noqa: F811
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--registry", reg_url, "--fdb-age", "2")
    S = abi.load().structs
    with Node(host).maps() as m:
        now = time.monotonic_ns()
        for i, age_s in enumerate((10, 0)):
            v = S["dp_fdb_entry"](vtep=be32("198.18.1.2"), last_seen_ns=now - age_s * 1_000_000_000)
            m.dp_learned.put(mac_key(256, f"02:00:00:00:00:0{i + 1}"), v)
        assert wait_for(lambda: m.dp_learned.get(mac_key(256, "02:00:00:00:00:01")) is None, timeout=5)
        assert m.dp_learned.get(mac_key(256, "02:00:00:00:00:02")) is not None, "a fresh entry stays"
    assert api.call(host, "status")["aged"] >= 1
    dp("--netns", host, "down")


def test_registry_cli_and_json(host, reg_url):  # noqa: F811
    dp("network", "create", "blue", "--vni", "300", "--subnet", "10.30.0.0/24", "--registry", reg_url)
    r = dp("network", "create", "red", "--vni", "300", "--registry", reg_url, check=False)
    assert r.returncode == 4 and "VNI 300 belongs to network blue" in r.stderr
    r = dp("network", "create", "red", "--vni", "0", "--registry", reg_url, check=False)
    assert r.returncode == 2 and "bad VNI" in r.stderr
    dp("--netns", host, "up", "--underlay", "ul0", "--registry", reg_url, "--host-name", "me")
    assert wait_for(lambda: 300 in Node(host).state().networks), "the agent serves registry networks"
    added = dp_json("--netns", host, "endpoint", "add", "dpl-b1", "--network", "blue")
    assert added["id"] == added["name"] == "dpl-b1", "an endpoint is `id` in every command's JSON (`name` too)"
    eps = dp_json("--netns", host, "endpoint", "list")
    assert [(e["id"], e["network"], e["vni"], e["host"], e["ip"]) for e in eps] == \
        [("dpl-b1", "blue", 300, "me", "10.30.0.2")]
    assert netlink.ns_exists(f"{host}.dpl-b1")
    nets = dp_json("network", "list", "--registry", reg_url)
    assert [(n["name"], n["vni"], n["endpoints"]) for n in nets] == [("blue", 300, 1)]
    r = dp("network", "rm", "blue", "--registry", reg_url, check=False)
    assert r.returncode == 4 and "remove them first" in r.stderr
    assert dp_json("--netns", host, "agent", "status")["host"] == "me"
    r = dp("--netns", host, "down", "--vni", "300", check=False)
    assert r.returncode == 2 and "network rm" in r.stderr
    dp("--netns", host, "down")
    assert not netlink.ns_exists(f"{host}.dpl-b1")
    reg = open_registry(reg_url)
    try:
        assert reg.endpoints() == [] and reg.hosts() == [], "down leaves the registry"
    finally:
        reg.close()
    dp("network", "rm", "blue", "--registry", reg_url)


def test_down_after_the_agent_died_still_leaves_the_registry(host, reg_url):  # noqa: F811
    """The agent leaves the registry itself at `down`; one that had died (or was killed half-way
    through leaving) left this host's endpoints and claims there for good, and its host record
    until the lease ran out: `down` removes the node's state, so no agent came back for them."""
    import os
    import signal
    dp("--netns", host, "up", "--vni", "256", "--underlay", "ul0", "--registry", reg_url, "--host-name", "me")
    for name in ("dpl-d1", "dpl-d2"):
        dp("--netns", host, "endpoint", "add", name, "--vni", "256")
    os.kill(agentctl.running_pid(host), signal.SIGKILL)
    assert wait_for(lambda: agentctl.running_pid(host) is None)
    r = dp("--netns", host, "down")
    assert "2 endpoint(s)" in r.stderr, r.stderr
    reg = open_registry(reg_url)
    try:
        assert reg.endpoints() == [] and reg.hosts() == [], "down leaves the registry"
        again = reg.endpoint_create("dpl-d3", "vni256", "other")
        assert again.ip == "10.1.0.2", "the claims went with the records"
    finally:
        reg.close()


def test_sqlite_lab_converges_across_hosts():
    from tests.integration.conftest import make_lab
    from lab.traffic import ping
    gen = make_lab(2, [256], per_host=1, registry="sqlite", lease_ttl=3)
    info = next(gen)
    try:
        dp("--netns", "dpl-h1", "endpoint", "add", "dpl-sq1", "--vni", "256")
        ep = next(e for e in dp_json("--netns", "dpl-h2", "endpoint", "list") if e["id"] == "dpl-sq1")
        assert wait_for(lambda: any(r["mac"] == ep["mac"] and r["where"] == "198.18.0.1"
                                    for r in readout.fdb(Node("dpl-h2"))))
        src = next(s for s in info["sandboxes"] if s["host"] == "h2")
        assert ping(src["name"], ep["ip"], count=2)[0] == 2
    finally:
        next(gen, None)


def test_a_registry_network_counts_only_under_its_own_vni():
    """A VNI that arrives through the agent (`network create`, Docker, CNI) gets a
    counter slot of its own: its traffic is not also counted under VNI 0."""
    from tests.integration.conftest import make_lab
    from lab.traffic import ping
    gen = make_lab(2, [256], per_host=0, registry="sqlite")
    next(gen)
    try:
        dp("--netns", "dpl-h1", "network", "create", "net9", "--vni", "300", "--subnet", "10.39.0.0/24")
        for h in ("dpl-h1", "dpl-h2"):
            assert wait_for(lambda: 300 in Node(h).state().networks), f"{h} serves VNI 300"
        dp("--netns", "dpl-h1", "endpoint", "add", "dpl-n1", "--network", "net9")
        b = dp_json("--netns", "dpl-h2", "endpoint", "add", "dpl-n2", "--network", "net9")
        assert ping("dpl-h1.dpl-n1", b["ip"], count=5)[0] == 5
        for h in ("dpl-h1", "dpl-h2"):
            rows = {r["vni"]: r for r in dp_json("--netns", h, "stats")}
            assert rows[300]["tx_packets"] >= 5 and rows[300]["rx_packets"] >= 5, rows[300]
            traffic = {k: rows[0][k] for k in ("rx_packets", "tx_packets", "local_packets", "arp_replies", "flooded")}
            assert set(traffic.values()) == {0}, f"{h}: VNI 0 counted VNI 300's traffic too: {traffic}"
    finally:
        next(gen, None)
