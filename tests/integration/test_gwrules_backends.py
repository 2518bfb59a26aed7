"""The gateways' rules (node/gwrules.py) against both iptables back ends Debian ships
(iptables-nft, the default, and iptables-legacy), in a namespace of this test's own: an older
version's rules in FORWARD and POSTROUTING move into our chains in one transaction, the jump
of the ACCEPTs goes just below DOCKER-USER's (the DROPs' in mangle), what `iptables -S` prints
back is what intact() expects (else the agent would mend them at every tick), and with the last
gateway the chains go."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from dataplane.core.state import Gateway
from dataplane.kernel import netlink
from dataplane.node import gwrules
from tests.conftest import require_privileges

NS = "dpl-gwr"
GW = Gateway(vni=256, ip="10.1.0.1", mac="02:00:0a:01:00:01", subnet="10.1.0.0/24", router="dpgw000100",
             port="dpgp000100")
GW2 = Gateway(vni=304, ip="10.34.0.1", mac="02:00:0a:22:00:01", subnet="10.34.0.0/24", router="dpgw000130",
              port="dpgp000130")
OLD = [("nat", "-A", "POSTROUTING", ["-s", GW.subnet, "!", "-d", GW.subnet]),
       ("filter", "-I", "FORWARD", ["-i", GW.router, "-o", "dpgw+"])]


@pytest.fixture(params=["nft", "legacy"])
def backend(request, tmp_path, monkeypatch):
    """PATH's iptables, iptables-restore: the back end's; a namespace of our own, removed after
    (its rules with it: both back ends keep them per namespace)."""
    require_privileges()
    for tool in ("iptables", "iptables-restore"):
        real = shutil.which(f"{tool.replace('iptables', 'iptables-' + request.param)}")
        if real is None:
            pytest.fail(f"{tool} ({request.param}) is not installed: scripts/bootstrap.sh installs iptables")
        os.symlink(real, tmp_path / tool)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    netlink.ns_delete(NS)
    netlink.ns_create(NS)
    try:
        yield request.param
    finally:
        netlink.ns_delete(NS)


def ipt(*argv: str) -> subprocess.CompletedProcess:
    return netlink.ns_exec(NS, ["iptables", "-w", "5", *argv], capture_output=True, text=True, check=True)


def test_an_older_layout_moves_into_our_chains_below_docker_user_and_goes_with_the_last(backend):
    for cmd in (["link", "add", "d0", "type", "veth", "peer", "name", "d1"], ["link", "set", "d1", "up"],
                ["addr", "add", "192.0.2.1/24", "dev", "d0"],
                ["link", "set", "d0", "up"], ["route", "add", "default", "via", "192.0.2.254", "dev", "d0"]):
        netlink.ns_exec(NS, ["ip", *cmd], check=True)          # a way out (gwrules.ways_out)
    assert gwrules.ways_out(NS) == ["d0"]
    ipt("-N", "DOCKER-USER")
    ipt("-A", "FORWARD", "-j", "DOCKER-USER")
    for table, op, chain, match in OLD:
        ipt("-t", table, op, chain, *match, "-m", "comment", "--comment", "dataplane egress vni 256", "-j",
            "MASQUERADE" if table == "nat" else "DROP")
    done = gwrules.sync(NS, [GW, GW2])
    assert done[0].startswith("iptables rules of the gateway of VNI 256: moved into chains of their own"), done
    lines = gwrules.listing(NS)
    assert gwrules.intact(lines, [GW, GW2], ["d0"]), lines
    assert not any(gwrules.legacy(lines).values())
    assert lines["filter"]["FORWARD"] == [["-j", "DOCKER-USER"], gwrules._jump(gwrules.FORWARD)]
    assert lines["mangle"]["FORWARD"] == [gwrules._jump(gwrules.ISOLATION)]
    assert gwrules.sync(NS, [GW, GW2]) == [], "as written is as read back: nothing to mend"
    moved = gwrules.sync(NS, [GW, GW2], ["d0"])          # forwarding on for d0 by us: confined
    assert len(moved) == 1 and moved[0].startswith(gwrules.WAYS_MOVED), moved
    assert gwrules.intact(gwrules.listing(NS), [GW, GW2], ["d0"], ["d0"])
    assert gwrules.sync(NS, [GW, GW2], ["d0"]) == [], "the confining rule read back as written"
    assert gwrules.sync(NS, [GW, GW2])[0].startswith(gwrules.WAYS_MOVED)
    assert gwrules.sync(NS, [GW2]) == ["iptables rules of VNI 256, which has no gateway here; removed"]
    assert gwrules.sync(NS, []) == ["iptables rules of VNI 304, which has no gateway here; removed"]
    assert gwrules.sync(NS, []) == []
    left = netlink.ns_exec(NS, [f"iptables-{backend}-save"], capture_output=True, text=True, check=True).stdout
    assert "dataplane" not in left and "DATAPLANE" not in left, left
