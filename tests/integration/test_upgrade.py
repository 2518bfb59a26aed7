"""An upgrade from the previous release: the nodes it brought up (pins, state, agents) are taken
over by this version's `up --restore`, as the systemd unit's ExecStartPre runs it when the
package upgrade restarts the unit, and their sandboxes keep reaching each other.

A pinned map whose layout a version changes makes `up` refuse until `dataplane down`: after a
package upgrade the unit's restart then failed for good (a review found 8389aaf's larger
dp_config doing so, before it shipped). New settings and state go into maps of their own, which
`up` makes beside the old ones; a map that holds only settings `up` writes, or the fast path's
caches and meter state, is made anew in its new layout (dp_meters grew after 3578d78)."""

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from dataplane.agent import process
from dataplane.node import Node, readout
from lab import topology as lab
from lab.traffic import ping
from tests.conftest import require_privileges
from tests.integration.conftest import dp, dp_json, leftovers, sandbox

# Versions whose nodes this one takes over: before the meters' maps, with a smaller dp_meters, and
# with dp_peer_meters' values without their count. Move them on with each release.
PREVIOUS = ("c3cf6535cf67284d810cff3677817da8a5cdf0e0", "3578d788926a62805d0cb0dbbd1f8744e3aba7db",
            "3512c342614597023565c115ce7977ea76a0c334")
# Those that pinned dp_peer_meters (in a layout of their own: kernel/maps.py remade).
PEER_METERS_PINNED = PREVIOUS[2:]
HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def git(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", HERE, *argv], capture_output=True, text=True, **kw)


@pytest.fixture(params=PREVIOUS, ids=lambda c: c[:7])
def old_tree(request, tmp_path):
    """A worktree of a previous version with this checkout's C helper (csrc/ must not differ)."""
    require_privileges()
    previous = request.param
    if git("cat-file", "-e", previous + "^{commit}").returncode:
        why = f"{previous[:12]} is not in this checkout's history (a shallow clone, a tarball, or git refusing it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {why}", pytrace=False)
        pytest.skip(why)
    assert git("diff", "--quiet", previous, "--", "csrc/").returncode == 0, "csrc/ changed: the helper differs"
    pkg = os.path.join(HERE, "dataplane")
    helper = [f for f in os.listdir(pkg) if f.startswith("_cwire") and f.endswith(".so")]
    assert helper, "the C helper is not built in this checkout (scripts/bootstrap.sh builds it)"
    tree = str(tmp_path / "tree")
    git("worktree", "add", "--detach", tree, previous, check=True)
    try:
        shutil.copy(os.path.join(pkg, helper[0]), os.path.join(tree, "dataplane", helper[0]))
        yield previous, tree
    finally:
        git("worktree", "remove", "--force", tree)
        git("worktree", "prune")


def stop(pid: int | None) -> None:
    assert pid, "no agent runs"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}"), f"agent {pid} did not stop"


def _rules(chain: str) -> str:
    from dataplane.kernel import netlink
    return netlink.ns_exec("dpl-h1", ["iptables", "-S", chain], capture_output=True, text=True).stdout


def _arp_announce(value: str | None = None) -> str:
    from dataplane.kernel import netlink
    key = f"net.ipv4.conf.dpgw{256:06x}.arp_announce"
    if value is not None:
        netlink.sysctl("dpl-h1", key, value)
    return netlink.sysctl_get("dpl-h1", key)


def test_nodes_the_previous_release_brought_up_are_taken_over(old_tree):
    previous, old_tree = old_tree
    try:
        lab.down()
        old = {**os.environ, "PYTHONPATH": old_tree}
        r = subprocess.run([sys.executable, "-m", "lab", "up", "--hosts", "2", "--vni", "256"], cwd=old_tree,
                           env=old, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        info = lab.ls()
        a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
        assert ping(a["name"], b["ip"])[0] == 3
        before = next(s for s in readout.stats(Node("dpl-h1")) if s["vni"] == 256)["tx_packets"]
        # Between the package upgrade and the restart: this version's status of the old node.
        rows = {r["map"]: r for r in dp_json("--netns", "dpl-h1", "status")["maps"]}
        assert rows["dp_peer_meters"]["pinned"] is (previous in PEER_METERS_PINNED) and rows["dp_fdb"]["pinned"]
        if previous in PEER_METERS_PINNED:
            with Node("dpl-h1").maps() as m:
                assert not m.dp_peer_meters.layout_is_ours()
        old_stats = next(s for s in dp_json("--netns", "dpl-h1", "stats") if s["vni"] == 256)
        assert old_stats["overlay_storm_peers"] == {}, "an older layout's entries are not read as this one's"
        assert "dataplane egress vni 256" in _rules("FORWARD"), "the old layout: the gateway's rules in FORWARD"
        _arp_announce("0")          # an older version's router: the kernel's default, whatever this host's is
        for ns in ("dpl-h1", "dpl-h2"):      # the unit restarted: its agent stopped, ExecStartPre, the new agent
            stop(process.running_pid(ns))
            dp("--netns", ns, "up", "--restore")
            assert process.running_pid(ns)
        assert lab.ls()["sandboxes"] == info["sandboxes"], "the same endpoints"
        assert ping(a["name"], b["ip"])[0] == 3
        assert "dataplane egress vni" not in _rules("FORWARD") and "vni 256" in _rules("DATAPLANE-FORWARD"), \
            "the gateway's rules moved into chains of their own"
        assert ping(a["name"], lab.WORLD_IP, 2, 0.2)[0] == 2, "its way out works"
        assert _arp_announce() == "2", "the router's ARP names the gateway's address (hairpin replies)"
        after = next(s for s in readout.stats(Node("dpl-h1")) if s["vni"] == 256)["tx_packets"]
        assert after >= before + 3, "taken over, not made again: the counters the old version kept go on"
        with Node("dpl-h1").maps() as m:      # the new maps, made beside the old ones and set
            meters = m.dp_meters.get(ctypes.c_uint32(0))
            assert all(r["pinned"] for r in dp_json("--netns", "dpl-h1", "status")["maps"])
            assert meters.overlay_storm_interval_ns == 10_000 and meters.overlay_peer_interval_ns == 20_000
            assert m.dp_peer_meters.layout_is_ours(), "made anew in this version's layout"
    finally:
        lab.down()
    assert not leftovers(), "lab down left something"
