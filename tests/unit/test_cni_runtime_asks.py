"""What a runtime asks of the plugin beyond one plain ADD (from a review against SPEC 1.0.0/1.1.0
and the conventions): the MAC and addresses it passes (runtimeConfig through capabilities,
CNI_ARGS, args.cni), a DEL that must succeed for an attachment whose ADD was refused, and a
repeated ADD that the IPAM plugin refuses. Each test failed on the code before."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dataplane.registry.records import Network
from dataplane.runtimes import cni
from tests.unit.fake_agent import FakeAgent
from tests.unit.test_cni_delegation import CONF, calls, recording_ipam, run

MAC = "02:42:aa:bb:cc:01"


@pytest.fixture
def agent(monkeypatch):
    a = FakeAgent(networks=[Network.make("vni256", 256, "10.1.0.0/24")])
    monkeypatch.setattr(cni, "client", SimpleNamespace(call=a.call, AgentNotRunning=FakeAgent.AgentNotRunning))
    return a


def _attach(agent) -> dict:
    return next(args for op, args in agent.calls if op == "endpoint_attach")


@pytest.mark.parametrize("how", ["runtimeConfig", "CNI_ARGS", "args"])
def test_the_mac_the_runtime_asks_for_is_the_containers(tmp_path, agent, how):
    """The tuning plugin's `mac` capability, CNI_ARGS' MAC= and args.cni.mac (the reference
    bridge plugin takes all three). Ignored before: the container got the derived MAC, and a
    later plugin setting the asked one made every frame a spoofed one to the fast path."""
    conf, env = dict(CONF), {}
    if how == "runtimeConfig":
        conf["runtimeConfig"] = {"mac": MAC}
    elif how == "CNI_ARGS":
        env["CNI_ARGS"] = f"IgnoreUnknown=1;K8S_POD_NAME=web;MAC={MAC}"
    else:
        conf["args"] = {"cni": {"mac": MAC}}
    status, out = run(conf, "ADD", tmp_path, **env)
    assert status == 0, out
    assert _attach(agent)["mac"] == MAC
    assert [i["mac"] for i in out["interfaces"] if i.get("sandbox")] == [MAC]


def test_a_bad_mac_asked_for_is_refused_before_anything_is_made(tmp_path, agent):
    for bad in ("01:00:5e:00:00:01", "nonsense", 7):
        status, out = run({**CONF, "runtimeConfig": {"mac": bad}}, "ADD", tmp_path)
        assert (status, out["code"]) == (1, cni.E_CONFIG), out
    assert not agent.endpoints and not [op for op, _ in agent.calls if op == "endpoint_attach"]


@pytest.mark.parametrize("how", ["runtimeConfig", "CNI_ARGS"])
def test_the_address_the_runtime_asks_for_without_an_ipam_plugin(tmp_path, agent, how):
    """With an ipam section the IPAM plugin takes `ips` itself (host-local does); without one
    the registry assigns, and the address asked for was ignored."""
    conf, env = dict(CONF), {}
    if how == "runtimeConfig":
        conf["runtimeConfig"] = {"ips": ["10.1.0.42/24"]}
    else:
        env["CNI_ARGS"] = "IP=10.1.0.42"
    status, out = run(conf, "ADD", tmp_path, **env)
    assert status == 0, out
    assert _attach(agent)["ip"] == "10.1.0.42" and out["ips"][-1]["address"] == "10.1.0.42/24"


def test_del_succeeds_for_an_interface_name_or_namespace_its_add_refused(tmp_path, agent):
    """"A delete must still be executed even if the add fails": an ADD refused for its
    CNI_IFNAME (over 15 bytes, as a custom name can be) or a relative CNI_NETNS left a DEL
    that failed the same way, for good, and the pod stuck in Terminating."""
    for env in ({"CNI_IFNAME": "net1-with-a-long-name"}, {"CNI_NETNS": "relative/path"}, {"CNI_IFNAME": "a/b"}):
        assert run(CONF, "ADD", tmp_path, **env)[1]["code"] == cni.E_ENV
        assert run(CONF, "DEL", tmp_path, **env) == (0, None), env
    # With an IPAM plugin: no DEL passed on for names the ADD refused before asking it (the
    # reference plugins refuse such names on DEL too, which failed ours all the same).
    refuses = '[ ${#CNI_IFNAME} -gt 15 ] && { echo \'{"code":4,"msg":"interface name is too long"}\'; exit 1; }'
    conf = {**CONF, "ipam": recording_ipam(tmp_path, refuses)}
    assert run(conf, "DEL", tmp_path, CNI_IFNAME="net1-with-a-long-name") == (0, None)
    assert calls(tmp_path) == []
    assert run(conf, "DEL", tmp_path) == (0, None) and calls(tmp_path) == ["DEL abc"], "a valid one still is"


def test_a_repeated_add_the_ipam_plugin_refuses_keeps_the_first_address(tmp_path, agent):
    """host-local refuses a second ADD for the same container and interface ("duplicate
    allocation"); the plugin then ran the IPAM DEL for that container and interface, which
    freed the address the first ADD's container still uses."""
    body = ('[ "$CNI_COMMAND" = ADD ] && { echo \'{"code":11,"msg":"duplicate allocation is not allowed"}\'; '
            'exit 1; }')
    status, out = run({**CONF, "ipam": recording_ipam(tmp_path, body)}, "ADD", tmp_path)
    assert status == 1 and "duplicate" in out["msg"]
    assert calls(tmp_path) == ["ADD abc"], "no IPAM DEL after the IPAM plugin's own refusal"
    # One that gave an address the attach then refused: given back, as before.
    (tmp_path / "calls").unlink()
    outside = '[ "$CNI_COMMAND" = ADD ] && echo \'{"cniVersion":"1.1.0","ips":[{"address":"10.9.0.7/24"}]}\''
    status, out = run({**CONF, "ipam": recording_ipam(tmp_path, outside)}, "ADD", tmp_path)
    assert status == 1 and calls(tmp_path) == ["ADD abc", "DEL abc"], out
