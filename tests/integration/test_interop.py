"""A real peer: hosts running the fast path exchange traffic with a host
whose VTEP is the Linux kernel's vxlan device (port 4789, static flood
entries, MACs learned), both ways, ping and TCP, and tshark finds the
frames of both implementations clean."""

import pytest

from lab import capture, kernelpeer, topology as lab
from dataplane.core import model
from lab.traffic import ping, tcp_transfer
from tests.integration.conftest import dp, make_lab, sandbox, stats

VNI = 256
KV_VTEP = "198.18.0.50"


@pytest.fixture(scope="module")
def info():
    for x in make_lab(2, [VNI], per_host=1, registry="none"):
        subnet = model.default_subnet(VNI)
        kv = kernelpeer.add(VNI, KV_VTEP, str(subnet.network_address + 200), subnet.prefixlen,
                            [lab.vtep_ip(1), lab.vtep_ip(2)])
        try:
            for h in (1, 2):
                dp("--netns", lab.host_ns(h), "peer", "add", KV_VTEP, "--vni", str(VNI))
            yield {**x, "kv": kv}
        finally:
            kernelpeer.remove()


def test_ping_both_ways_with_the_kernel_vtep(info):
    a, kv = sandbox(info, "h1", VNI), info["kv"]
    assert ping(kv["sandbox"], a["ip"], count=3)[0] == 3, "kernel vxlan -> fast path"
    assert ping(a["name"], kv["ip"], count=3)[0] == 3, "fast path -> kernel vxlan"
    b = sandbox(info, "h2", VNI)
    assert ping(b["name"], kv["ip"], count=2)[0] == 2


def test_tcp_both_ways_with_the_kernel_vtep(info):
    a, kv = sandbox(info, "h2", VNI), info["kv"]
    n = 4 << 20
    assert tcp_transfer(kv["sandbox"], a["name"], kv["ip"], n) == n, "fast path sends, kernel receives"
    assert tcp_transfer(a["name"], kv["sandbox"], a["ip"], n, port=5301) == n, "kernel sends, fast path receives"


def test_mixed_capture_is_clean(info):
    a, kv = sandbox(info, "h1", VNI), info["kv"]
    before = stats(lab.host_ns(1), VNI)

    def traffic():
        assert ping(a["name"], kv["ip"], count=2)[0] == 2
        assert tcp_transfer(kv["sandbox"], a["name"], kv["ip"], 1 << 20, port=5302) == 1 << 20
    rows, _ = capture.during(lab.UNDERLAY_NS, lab.BRIDGE, "udp port 4789", traffic)
    ours = [r for r in rows if r["ip.src"] == lab.vtep_ip(1)]
    theirs = [r for r in rows if r["ip.src"] == KV_VTEP]
    assert ours and theirs
    assert {r["vxlan.vni"] for r in rows} == {str(VNI)}
    # The kernel leaves DF clear by default: only our frames are held to DF.
    assert capture.problems(ours) == []
    assert [p for p in capture.problems(theirs) if "DF" not in p] == []
    after = stats(lab.host_ns(1), VNI)
    assert after["rx_packets"] > before["rx_packets"] and after["tx_packets"] > before["tx_packets"]
