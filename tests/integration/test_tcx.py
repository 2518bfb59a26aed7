"""The fast path at tcx (dataplane/kernel/tcx.py): the verdicts it means there,
attachment in place, and the cls_bpf filter of an older version removed at `up`."""

from __future__ import annotations

import os

import pytest

from dataplane.kernel import loader, netlink, netns, tcx
from dataplane.node import Node, readout
from tests.integration.conftest import dp, dp_json, in_ns, make_lab, sandbox, stats

BROADCASTS = 20
SEND = r"""
import sys
from scapy.all import Ether, IP, UDP, Raw, sendp
mac, ip, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sendp([Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src=ip, dst="255.255.255.255") / UDP(dport=9) / Raw(b"b")] * n,
      iface="eth0", verbose=False)
"""


@pytest.fixture(scope="module")
def info():
    yield from make_lab(2, [256], registry="none")


def ip_in_receives(ns: str) -> int:
    """IPv4 datagrams the namespace's stack took in (/proc/net/snmp, Ip: InReceives)."""
    rows = [l.split() for l in netlink.ns_exec(ns, ["cat", "/proc/net/snmp"], capture_output=True, text=True,
                                                 check=True).stdout.splitlines() if l.startswith("Ip:")]
    return int(rows[1][rows[0].index("InReceives")])


def test_a_flooded_frame_is_consumed_and_the_host_stack_never_sees_it(info):
    """A broadcast is flooded by clones and the frame itself consumed. tcx knows only
    next, pass, drop and redirect: the TC_ACT_STOLEN a cls_bpf filter returned means
    "next" there, and the host namespace's stack took every flooded frame in too."""
    sb = sandbox(info, "h1", 256)
    flooded, received = stats("dpl-h1", 256)["flooded"], ip_in_receives("dpl-h1")
    r = in_ns(sb["netns"], SEND, sb["mac"], sb["ip"], BROADCASTS)
    assert r.returncode == 0, r.stderr
    assert stats("dpl-h1", 256)["flooded"] >= flooded + BROADCASTS
    assert ip_in_receives("dpl-h1") - received < BROADCASTS // 4, "the host stack got the flooded frames"


def test_attaching_replaces_ours_in_place_and_is_idempotent(info):
    """One from_overlay at the uplink however often it is attached; a new program takes
    the old one's place (BPF_F_REPLACE), another program there is left alone."""
    ns, ifx = "dpl-h1", netlink.link_index("dpl-h1", "ul0")
    node = Node(ns)
    before = tcx.ids(ns, ifx)
    assert len(before) == 1
    fd = loader.open_prog(node.require_up().pin_dir, "from_overlay")
    try:
        tcx.attach(ns, ifx, fd, "from_overlay")
        assert tcx.ids(ns, ifx) == before, "attaching the program that is there changed nothing"
        dp("--netns", ns, "up", "--vni", "256")           # reloads: a new program
        after = tcx.ids(ns, ifx)
        assert len(after) == 1 and after != before and tcx.names(ns, ifx) == ["from_overlay"]
        # someone else's program (ours under another name stands in) stays where it is
        other = loader.open_prog(node.require_up().pin_dir, "from_endpoint")
        try:
            tcx.attach(ns, ifx, other, "from_endpoint")
            dp("--netns", ns, "up", "--vni", "256")
            assert sorted(tcx.names(ns, ifx)) == ["from_endpoint", "from_overlay"]
            tcx.detach(ns, ifx, "from_endpoint")
            assert tcx.names(ns, ifx) == ["from_overlay"]
        finally:
            os.close(other)
    finally:
        os.close(fd)
    assert sb_ping(info)


def test_a_node_an_older_version_brought_up_keeps_filters_until_up(info):
    """An older version attached cls_bpf filters, and its pinned programs end a consumed frame
    with TC_ACT_STOLEN. Until an `up` reloads them, a new endpoint's port gets a filter too (at
    tcx those programs would hand flooded frames to the host stack), and status sees the
    filters; `up` then leaves only tcx programs, on the uplink and on every port."""
    ns, ifx = "dpl-h2", netlink.link_index("dpl-h2", "ul0")
    node = Node(ns)
    fd = loader.open_prog(node.require_up().pin_dir, "from_overlay")
    try:
        netlink.tc_attach(ns, ifx, fd, "from_overlay")
    finally:
        os.close(fd)
    tcx.detach(ns, ifx, "from_overlay")
    with node.changing() as (st, _):
        st.hook = "tc"
    try:
        dp("--netns", ns, "endpoint", "add", "dpl-old1", "--vni", "256")
        port = node.require_up().endpoints["dpl-old1"].ifindex
        assert netlink.tc_filter_names(ns, port) == ["from_endpoint"] and tcx.names(ns, port) == []
        progs = {p["program"]: p["attached"] for p in dp_json("--netns", ns, "status")["programs"]}
        assert progs["from_overlay"] == "tc ingress ul0" and progs["from_endpoint"] == "tc ingress, 2/2 endpoints"
        assert sb_ping(info)
        dp("--netns", ns, "up", "--vni", "256")
        for i, name in ((ifx, "from_overlay"), (port, "from_endpoint")):
            assert netlink.tc_filter_names(ns, i) == [] and tcx.names(ns, i) == [name]
        progs = {p["program"]: p["attached"] for p in dp_json("--netns", ns, "status")["programs"]}
        assert progs["from_overlay"] == "tcx ingress ul0" and progs["from_endpoint"] == "tcx ingress, 2/2 endpoints"
        assert sb_ping(info)
    finally:
        dp("--netns", ns, "endpoint", "rm", "dpl-old1", check=False)


def test_status_reads_every_port_in_one_visit_to_the_namespace(info, monkeypatch):
    """`dataplane status` counts the ports running from_endpoint in one visit to the node's
    namespace, however many there are (before: two visits and an rtnetlink socket per port,
    1.1 s at 1,000 endpoints), and a port without it is still counted out."""
    ns, node, visits = "dpl-h2", Node("dpl-h2"), []
    enter = netns.enter_netns
    monkeypatch.setattr(netns, "enter_netns", lambda name: (visits.append(name), enter(name))[1])

    def status() -> tuple[str, int]:
        visits.clear()
        row = next(r["attached"] for r in readout.programs(node) if r["program"] == "from_endpoint")
        return row, len(visits)

    _, few = status()
    added = [f"dpl-many{i}" for i in range(3)]
    try:
        for name in added:
            dp("--netns", ns, "endpoint", "add", name, "--vni", "256")
        n = len(node.require_up().endpoints)
        assert status() == (f"tcx ingress, {n}/{n} endpoints", few)
        tcx.detach(ns, node.require_up().endpoints[added[0]].ifindex, "from_endpoint")
        assert status()[0] == f"tcx ingress, {n - 1}/{n} endpoints"
    finally:
        for name in added:
            dp("--netns", ns, "endpoint", "rm", name, check=False)


def sb_ping(info) -> bool:
    from lab.traffic import ping
    return ping(sandbox(info, "h1", 256)["name"], sandbox(info, "h2", 256)["ip"], count=2)[0] == 2


def test_the_monitor_calls_a_flooded_frame_consumed_not_shot(info):
    """Its verdict at tcx is a drop, but `monitor --type trace` says what happened to it."""
    import json
    from tests.integration.test_metrics import _monitor
    sb = sandbox(info, "h1", 256)
    mon = _monitor("--type", "trace", "-c", "4")
    try:
        r = in_ns(sb["netns"], SEND, sb["mac"], sb["ip"], 3)
        assert r.returncode == 0, r.stderr
        out, err = mon.communicate(timeout=30)
    finally:
        if mon.poll() is None:
            mon.kill()
    # Only our broadcasts (inner frames of the flooded copies): a neighbour probe between the
    # sandboxes, and its reply, may be traced meanwhile (the probe was, as the only event taken).
    frames = [(e, e.get("inner") or e) for e in map(json.loads, out.splitlines())]
    evs = [e for e, f in frames if (f["src_mac"], f["dst_mac"]) == (sb["mac"], "ff:ff:ff:ff:ff:ff")]
    assert evs and [e["reason"] for e in evs] == ["consumed"] * len(evs), out + err
