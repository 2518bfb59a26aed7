"""IPv4 BIG TCP across the overlay: with uplinks that take GSO packets over
64 KB, endpoints inherit the limit and the fast path carries the super-packets
whole (outer IPv4 and UDP lengths 0, as the kernel writes them)."""

import pytest

from lab import capture, topology as lab
from dataplane.kernel import gso as linkgso
from lab.traffic import tcp_transfer
from tests.integration.conftest import dp, make_lab, sandbox, stats

SIZE = linkgso.BIG_TCP_SIZE


@pytest.fixture(scope="module")
def info():
    yield from make_lab(2, [256], per_host=1, registry="none", gso_max_size=SIZE)


def test_endpoints_inherit_the_uplink_limit(info):
    for h in ("h1", "h2"):
        ns = lab.host_ns(int(h[1:]))
        assert linkgso.gso_ipv4_max(ns, lab.UPLINK) == SIZE
        assert linkgso.gso_ipv4_max(sandbox(info, h, 256)["name"], "eth0") == SIZE


def test_a_sandbox_makes_no_gso_packet_the_fast_path_would_drop(info):
    """The fast path drops a GSO packet of more than DP_GSO_SEGS_MAX segments (a packet socket's
    tiny gso_size); a sandbox's own TCP keeps to its eth0's gso_max_segs, which is that, so
    under a tiny MSS it makes smaller packets (a veth's default is 65,535)."""
    import json
    import subprocess
    from dataplane.core import abi
    ns = sandbox(info, "h1", 256)["netns"]
    link = json.loads(subprocess.run(["ip", "-n", ns, "-d", "-j", "link", "show", "eth0"], capture_output=True,
                                     text=True, check=True).stdout)[0]
    assert link["gso_max_segs"] == abi.load().constants["DP_GSO_SEGS_MAX"] == 2048, link["gso_max_segs"]


def test_super_packets_cross_whole_and_decode_clean(info):
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    before = stats("dpl-h1", 256)

    def transfer():
        assert tcp_transfer(b["name"], a["name"], b["ip"], 16 << 20) == 16 << 20
    rows, protos = capture.during(lab.UNDERLAY_NS, lab.BRIDGE, f"udp port 4789 and src host {lab.vtep_ip(1)}",
                                  transfer)
    after = stats("dpl-h1", 256)
    assert after["drops"] == before["drops"]
    big = [r for r in rows if int(r["frame.len"]) > 14 + 0xFFFF]
    assert big, f"no frame over 64 KB among {len(rows)}; largest {max((int(r['frame.len']) for r in rows), default=0)}"
    # Wireshark reads total length 0 as a TSO capture and UDP length 0xffff as
    # the field's maximum: VNI, flags, checksum right and nothing malformed.
    assert {r["vxlan.vni"] for r in rows} == {"256"}
    assert capture.problems(rows) == [], capture.flow_notes(rows)
    assert all(":vxlan:eth:ethertype:ip:tcp" in p for r, p in zip(rows, protos) if r in big)


@pytest.mark.parametrize("size", ["1000", "65535", "600000"])
def test_bad_gso_size_is_one_line_and_leaves_the_lab_alone(info, size):
    r = dp("lab", "up", "--vni", "256", "--gso-max-size", size, check=False)
    assert r.returncode == 2, r.stderr
    assert "--gso-max-size must be 65536..524280" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert len(lab.ls()["sandboxes"]) == len(info["sandboxes"])
