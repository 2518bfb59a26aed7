"""Which routes a CNI container gets, and which the result reports (runtimes/cni.py): the IPv4
ones go in, each with a next hop; with ipMasq that is our gateway (the one the host's router
answers for), whatever gateway the IPAM names; a chain's IPv6 routes stay in the result."""

from __future__ import annotations

import pytest

from dataplane.agent import client
from dataplane.runtimes import cni
from tests.unit.test_cni_attach_in_doubt import CONF, ENV


@pytest.fixture
def attached(monkeypatch):
    calls = {}

    def call(node, op, timeout=60.0, **args):
        calls[op] = args
        if op == "gateway_ensure":
            return {"gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]}
        if op == "endpoint_attach":
            return {"host_ifname": "dp0000000001", "mac": "02:42:0a:01:00:05", "ip": args["ip"] or "10.1.0.5",
                    "subnet": "10.1.0.0/24"}
        return {}
    monkeypatch.setattr(client, "call", call)
    return calls


def test_with_ipmasq_a_route_without_gw_goes_through_our_gateway(monkeypatch, attached):
    lease = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.254"}],
             "routes": [{"dst": "0.0.0.0/0"}]}
    monkeypatch.setattr(cni, "_ipam", lambda conf, env, command, overrides=None: lease if command == "ADD" else None)
    cni.cmd_add({**CONF, "ipMasq": True}, ENV)
    assert attached["endpoint_attach"]["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}], \
        "the IPAM's gateway is no router here: nothing answers for it"


def test_a_chains_ipv6_routes_stay_in_the_result(attached):
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1"},
                                           {"address": "fd00::5/64", "gateway": "fd00::1"}],
            "routes": [{"dst": "10.2.0.0/16"}, {"dst": "::/0"}]}
    conf = {k: v for k, v in CONF.items() if k != "ipam"}
    out = cni.cmd_add({**conf, "prevResult": prev}, ENV)
    assert attached["endpoint_attach"]["routes"] == [{"dst": "10.2.0.0/16", "gw": "10.1.0.1"}]
    assert {"dst": "::/0"} in out["routes"] and {"dst": "10.2.0.0/16", "gw": "10.1.0.1"} in out["routes"], out


def test_a_route_whose_destination_has_host_bits_goes_in_as_its_network():
    """An IPAM's route `10.9.0.1/16` passed the result's check (strict=False) and then failed ADD
    with an internal ValueError where the route was installed; Go's plugins take it as 10.9.0.0/16."""
    from dataplane.kernel import links

    class Rtnl:
        added = []

        def route_add(self, idx, dst, gw):
            self.added.append((idx, str(dst), gw))
    links._routes_here(Rtnl(), "/run/netns/x", 7, [{"dst": "10.9.0.1/16", "gw": "10.1.0.1"}])
    assert Rtnl.added == [(7, "10.9.0.0/16", "10.1.0.1")]


@pytest.mark.parametrize("field,value", [("table", 100), ("priority", 10), ("mtu", 1300), ("scope", 253)])
def test_a_route_field_the_plugin_does_not_install_is_refused_by_name(field, value):
    """The spec's 1.1.0 route fields went unheeded: `{"dst": "0.0.0.0/0", "table": 100}` became the
    container's main-table default route, and the result still listed the table."""
    from dataplane.runtimes import cni_result
    with pytest.raises(cni.CNIError) as e:
        cni_result.v4_routes([{"dst": "0.0.0.0/0", "gw": "10.1.0.1", field: value}])
    assert e.value.code == cni.E_CONFIG and repr(field) in e.value.msg and str(value) in e.value.msg
    assert cni_result.v4_routes([{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "fd00::/8", "table": 5}]) == [
        {"dst": "0.0.0.0/0", "gw": "10.1.0.1"}], "an IPv6 route is left out, whatever its fields"
    chained = [{"dst": "10.8.0.0/16", field: value}]       # a prevResult's: an earlier plugin's, reported as given,
    assert cni_result.v4_routes(chained, strict=False) == []     # not installed (test_cni_delegation)
