"""The CNI plugin's duties toward the spec beyond one attachment (from a review against SPEC
1.0.0/1.1.0): DEL best effort on a node taken down, GC and STATUS passed on to the IPAM plugin,
GC going on past a failing attachment, the IPAM plugin's stderr passed through, a passing outage
answered with code 11, and a chain's routes kept. Each test failed on the code before."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from dataplane.core import state
from dataplane.registry import Unavailable
from dataplane.registry.records import Network
from dataplane.runtimes import cni
from tests.unit.fake_agent import FakeAgent

CONF = {"cniVersion": "1.1.0", "name": "ov", "type": "dataplane", "vni": 256, "node": "h1"}
ENV = {"CNI_CONTAINERID": "abc", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0"}


def endpoint(cid: str) -> dict:
    return {"name": cni.endpoint_id("ov", cid, "eth0"), "vni": 256, "ip": "10.1.0.5", "mac": "02:42:0a:01:00:05",
            "host_ifname": "dp1", "sandbox": {"netns": "/run/netns/x", "ifname": "eth0", "runtime": "cni",
                                              "network": "ov", "container_id": cid}}


@pytest.fixture
def agent(monkeypatch):
    a = FakeAgent(networks=[Network.make("vni256", 256, "10.1.0.0/24")])
    monkeypatch.setattr(cni, "client", SimpleNamespace(call=a.call, AgentNotRunning=FakeAgent.AgentNotRunning))
    return a


def recording_ipam(tmp_path, body: str = "", speaks: str = '"1.0.0","1.1.0"') -> dict:
    """An IPAM plugin that answers VERSION with speaks, notes every other call ("COMMAND
    CONTAINERID") in tmp_path/calls, then runs body."""
    p = tmp_path / "rec-ipam"
    version = f'[ "$CNI_COMMAND" = VERSION ] && {{ echo \'{{"cniVersion":"1.1.0","supportedVersions":[{speaks}]}}\'; exit 0; }}'
    keep = f'[ "$CNI_COMMAND" = GC ] && cat > {tmp_path}/gc-body'
    p.write_text(f'#!/bin/sh\n{version}\necho "$CNI_COMMAND $CNI_CONTAINERID" >> {tmp_path}/calls\n{keep}\n{body}\n'
                 'exit 0\n')
    p.chmod(0o755)
    return {"type": "rec-ipam"}


def calls(tmp_path) -> list[str]:
    f = tmp_path / "calls"
    return f.read_text().split("\n")[:-1] if f.exists() else []


def run(conf: dict, command: str, tmp_path, **env):
    return cni.run({**ENV, "CNI_COMMAND": command, "CNI_PATH": str(tmp_path), **env}, json.dumps(conf).encode())


def test_del_on_a_node_taken_down_gives_the_address_back_and_succeeds(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "RUN_ROOT", str(tmp_path / "run"))       # no node state: it was taken down
    conf = {**CONF, "node": "gone", "ipam": recording_ipam(tmp_path)}
    assert run(conf, "DEL", tmp_path) == (0, None)
    assert calls(tmp_path) == ["DEL abc"]


def test_del_on_a_node_up_without_its_agent_keeps_the_address(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "load", lambda node: object())            # the node is up
    conf = {**CONF, "node": "gone", "ipam": recording_ipam(tmp_path)}
    status, out = run(conf, "DEL", tmp_path)
    assert (status, out["code"]) == (1, cni.E_TRY_AGAIN) and calls(tmp_path) == []


def test_gc_goes_on_past_a_failure_and_is_passed_to_the_ipam_plugin(tmp_path, agent):
    agent.endpoints = {e["name"]: e for e in (endpoint("c1"), endpoint("c2"))}
    fail_c1 = 'if [ "$CNI_CONTAINERID" = c1 ]; then echo \'{"code":5,"msg":"locked"}\'; exit 1; fi'
    conf = {**CONF, "ipam": recording_ipam(tmp_path, fail_c1), cni.VALID_ATTACHMENTS: None}   # libcni's null
    status, out = run(conf, "GC", tmp_path)
    assert status == 1 and "locked" in out["msg"]
    assert list(agent.endpoints) == [endpoint("c1")["name"]], "c2 collected; c1 kept for the next GC"
    # Passed on all the same (the spec: forward GC, continue past errors; before, a failing
    # attachment held up the delegate's GC for good), with c1 listed as valid: still ours.
    assert calls(tmp_path) == ["DEL c1", "DEL c2", "GC abc"]
    body = json.loads((tmp_path / "gc-body").read_text())
    assert body[cni.VALID_ATTACHMENTS] == body[cni.ATTACHMENTS] == [{"containerID": "c1", "ifname": "eth0"}]
    (tmp_path / "calls").unlink()
    fine = {**CONF, "ipam": recording_ipam(tmp_path), cni.VALID_ATTACHMENTS: []}
    assert run(fine, "GC", tmp_path) == (0, None)
    assert calls(tmp_path) == ["DEL c1", "GC abc"] and not agent.endpoints


def test_status_asks_the_ipam_plugin_but_not_one_too_old_to_know(tmp_path, agent):
    full = '[ "$CNI_COMMAND" = STATUS ] && { echo \'{"code":50,"msg":"range exhausted"}\'; exit 1; }'
    status, out = run({**CONF, "ipam": recording_ipam(tmp_path, full)}, "STATUS", tmp_path)
    assert (status, out["code"]) == (1, 50) and "range exhausted" in out["msg"]
    old = '{ echo \'{"code":3,"msg":"missing containerID"}\'; exit 1; }'      # as Debian's host-local 1.0.0
    assert run({**CONF, "ipam": recording_ipam(tmp_path, old, speaks='"1.0.0"')}, "STATUS", tmp_path) == (0, None)
    status, out = run({**CONF, "ipam": {"type": "not-there"}}, "STATUS", tmp_path)
    assert (status, out["code"]) == (1, cni.E_NOT_AVAILABLE), out
    env = {**ENV, "CNI_COMMAND": "STATUS"}          # CNI_PATH is optional for STATUS
    assert cni.run(env, json.dumps({**CONF, "ipam": {"type": "rec-ipam"}}).encode()) == (0, None)


def test_the_ipam_plugins_stderr_reaches_ours(tmp_path, agent, capfd):
    diag = 'echo ipam-diag >&2; echo \'{"code":11,"msg":"busy"}\'; exit 1'
    run({**CONF, "ipam": recording_ipam(tmp_path, diag)}, "ADD", tmp_path)
    assert "ipam-diag" in capfd.readouterr().err


def test_a_registry_outage_is_try_again_also_for_check(tmp_path, monkeypatch):
    from dataplane.core.errors import TryAgain

    def call(node, op, timeout=60.0, **args):
        raise TryAgain("etcd: no leader")
    monkeypatch.setattr(cni, "client", SimpleNamespace(call=call, AgentNotRunning=FakeAgent.AgentNotRunning))
    prev = {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.1.0.5/24", "interface": 0}]}
    for command, conf in (("ADD", CONF), ("CHECK", {**CONF, "prevResult": prev})):
        status, out = run(conf, command, tmp_path)
        assert (status, out["code"]) == (1, cni.E_TRY_AGAIN), (command, out)


def test_the_agent_marks_an_unreachable_registry_as_passing_and_the_client_says_try_again(monkeypatch):
    from dataplane.agent import apitypes, client, server
    from dataplane.core.errors import TryAgain
    from dataplane.registry import Refused

    def down():
        raise Unavailable("etcd: no leader")

    def refused():
        raise Refused("etcd: permission denied")
    handlers = {"down": down, "refused": refused}
    srv = SimpleNamespace(handlers=handlers, schemas={op: apitypes.schema(fn) for op, fn in handlers.items()})
    assert server.Server.dispatch(srv, "down", {})["transient"] is True
    assert server.Server.dispatch(srv, "refused", {})["transient"] is False, "a refusal does not pass"
    reply = json.dumps(server.Server.dispatch(srv, "down", {})).encode() + b"\n"

    class Sock:
        def __init__(self, *a):
            pass

        def settimeout(self, t):
            pass

        def connect(self, path):
            pass

        def sendall(self, data):
            pass

        def recv(self, n):
            return reply

        def close(self):
            pass
    monkeypatch.setattr(client.socket, "socket", Sock)
    with pytest.raises(TryAgain, match="no leader"):
        client.call("h1", "down")


def test_a_chains_routes_stay_when_the_ipam_gives_the_address(tmp_path, agent):
    add = '[ "$CNI_COMMAND" = ADD ] && echo \'{"cniVersion":"1.1.0","ips":[{"address":"10.1.0.7/24"}]}\''
    prev = {"cniVersion": "1.1.0", "interfaces": [{"name": "br0"}], "ips": [],
            "routes": [{"dst": "192.168.50.0/24"}]}
    status, out = run({**CONF, "ipam": recording_ipam(tmp_path, add), "prevResult": prev}, "ADD", tmp_path)
    assert status == 0, out
    assert {"dst": "192.168.50.0/24"} in out.get("routes", []), out
    attach = next(args for op, args in agent.calls if op == "endpoint_attach")
    assert {"dst": "192.168.50.0/24"} not in attach["routes"], "reported, not installed through our interface"


def test_ip_masq_on_a_vni_the_registry_has_no_network_for_yet(tmp_path, agent, monkeypatch):
    """ipMasq with no IPAM on a new VNI: the gateway's network is made first, as the attach would
    make it (before: gateway_ensure found no network, code 101, while the same without ipMasq worked)."""
    def gateway_ensure(vni):
        net = agent.networks.get(vni)
        if net is None:
            from dataplane.core.errors import NotFound
            raise NotFound(f"no network has VNI {vni}: create one with `dataplane network create`")
        return {"vni": vni, "gateway": net.gateway, "routes": [{"dst": "0.0.0.0/0", "gw": net.gateway}]}
    monkeypatch.setattr(agent, "gateway_ensure", gateway_ensure, raising=False)
    status, out = run({**CONF, "vni": 300, "ipMasq": True}, "ADD", tmp_path)
    assert status == 0, out
    assert any(r["dst"] == "0.0.0.0/0" for r in out["routes"]), out


@pytest.mark.parametrize("gateway, made_with", [("10.2.0.254", "10.2.0.254"), ("10.2.0.1", "10.2.0.1"),
                                                (None, "10.2.0.1"), ("10.9.0.1", "10.2.0.1")])
def test_the_first_add_makes_the_network_with_the_ipams_gateway(tmp_path, agent, gateway, made_with):
    """host-local with "gateway": "10.2.0.254" hands out .1 first; the network the first ADD made
    had .1 as its gateway, so the registry refused that pod's address (code 7) on every host."""
    ip = {"address": "10.2.0.5/24", **({"gateway": gateway} if gateway else {})}
    add = f'[ "$CNI_COMMAND" = ADD ] && echo \'{{"cniVersion":"1.1.0","ips":[{json.dumps(ip)}]}}\''
    status, out = run({**CONF, "vni": 300, "ipam": recording_ipam(tmp_path, add)}, "ADD", tmp_path)
    assert status == 0, out
    assert agent.networks[300].gateway == made_with
    ensure = next(args for op, args in agent.calls if op == "network_ensure")
    assert ("gateway" in ensure) == (made_with != "10.2.0.1"), "the first address is not sent (older agents)"


def test_a_chains_routes_of_another_table_are_reported_not_put_in_the_main_one(tmp_path, agent):
    """No IPAM: the address and routes come from an earlier plugin's prevResult. Its route of
    table 100 (and one with a priority) went into the main table through our interface, while
    the result said table 100; CHECK then looked for it in the main table and failed (101)."""
    odd = [{"dst": "0.0.0.0/0", "table": 100}, {"dst": "192.168.0.0/16", "priority": 5}]
    prev = {"cniVersion": "1.1.0", "interfaces": [], "ips": [{"address": "10.1.0.7/24"}],
            "routes": [*odd, {"dst": "172.16.0.0/12"}]}
    status, out = run({**CONF, "prevResult": prev}, "ADD", tmp_path)
    assert status == 0, out
    attach = next(args for op, args in agent.calls if op == "endpoint_attach")
    assert [r["dst"] for r in attach["routes"]] == ["172.16.0.0/12"], attach["routes"]
    assert all(r in out["routes"] for r in odd), out["routes"]
    agent.calls.clear()
    assert run({**CONF, "prevResult": out}, "CHECK", tmp_path) == (0, None)
    check = next(args for op, args in agent.calls if op == "endpoint_check")
    assert [r["dst"] for r in check["routes"]] == ["172.16.0.0/12"]


def test_check_of_a_container_whose_namespace_went_is_broken_not_unknown(tmp_path, agent, monkeypatch):
    """CHECK of a container whose namespace went is 101 ("broken"), saying so. It was the spec's 3,
    which tells the runtime that no cleanup is needed, no DEL: the IPAM's lease waited for that
    DEL for good (our endpoint goes at the agent's next tick, its interface gone)."""
    from dataplane.core.errors import NotFound

    def gone(**kw):
        raise NotFound("network namespace /run/netns/x does not exist")
    monkeypatch.setattr(agent, "endpoint_check", gone)
    prev = {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.1.0.5/24", "interface": 0}]}
    status, out = run({**CONF, "prevResult": prev}, "CHECK", tmp_path)
    assert (status, out["code"]) == (1, cni.E_BROKEN) and "/run/netns/x does not exist" in out["msg"], out
