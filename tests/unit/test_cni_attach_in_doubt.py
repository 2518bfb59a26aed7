"""An ADD whose attach the agent did not answer in time (it may still finish it) keeps the
IPAM's address: released at once, as every other failed ADD's is, it could be handed to a
concurrent ADD while the agent gave it to this container (whose later attach then failed as
a conflict). The runtime's DEL releases it once the agent has let go. An agent that answered
with an error, or that was not running, still gets the address released."""

from __future__ import annotations

import pytest

from dataplane.agent import client
from dataplane.core import errors
from dataplane.runtimes import cni

CONF = {"cniVersion": "1.0.0", "name": "ov", "type": "dataplane", "vni": 256, "node": "n1",
        "ipam": {"type": "host-local"}}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/c1", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/nowhere"}
LEASE = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}]}


@pytest.fixture
def ipam_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(cni, "_ipam", lambda conf, env, command, overrides=None:
                        calls.append(command) or (LEASE if command == "ADD" else None))
    return calls


def agent_failing_attach(monkeypatch, error):
    def call(node, op, timeout=60.0, **args):
        if op == "endpoint_attach":
            raise error
        return {}
    monkeypatch.setattr(client, "call", call)


def test_an_attach_the_agent_did_not_answer_keeps_the_address(monkeypatch, ipam_calls):
    agent_failing_attach(monkeypatch, client.AgentSilent("the agent of node n1 did not answer"))
    with pytest.raises(cni.CNIError) as e:
        cni.cmd_add(dict(CONF), ENV)
    assert e.value.code == cni.E_TRY_AGAIN and "kept until DEL" in e.value.details
    assert ipam_calls == ["ADD"], "the address was released while the agent may still attach it"


@pytest.mark.parametrize("error", [errors.TryAgain("registry unreachable"), client.AgentNotRunning("not running"),
                                   errors.Conflict("address in use")])
def test_an_attach_that_failed_releases_the_address(monkeypatch, ipam_calls, error):
    agent_failing_attach(monkeypatch, error)
    with pytest.raises(cni.CNIError):
        cni.cmd_add(dict(CONF), ENV)
    assert ipam_calls == ["ADD", "DEL"]


def test_a_request_sent_and_not_answered_is_told_apart(tmp_path, monkeypatch):
    import socket
    path = str(tmp_path / "agent.sock")
    monkeypatch.setattr(client, "socket_path", lambda node: path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)                     # accepted by the kernel, never read or answered
    try:
        with pytest.raises(client.AgentSilent):
            client.call("n1", "endpoint_attach", timeout=0.2)
    finally:
        srv.close()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_request_the_agent_took_and_dropped_is_in_doubt(tmp_path, monkeypatch, ipam_calls, how):
    """An agent that went (a crash, a restart by systemd) after it had read an attach may have
    carried it out: the client said KernelError ("closed the connection", or the reset), and ADD
    released the address at once. Now that is in doubt, as an unanswered request is: the address
    is kept until DEL."""
    import json
    import socket
    import struct
    import threading
    path = str(tmp_path / "agent.sock")
    monkeypatch.setattr(client, "socket_path", lambda node: path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def agent_goes():
        while True:
            c, _ = srv.accept()
            req = json.loads(c.makefile("rb").readline())      # it has the request
            if req["op"] != "endpoint_attach":                 # the network's: answered
                c.sendall(json.dumps({"ok": True, "result": {}}).encode() + b"\n")
                c.close()
                continue
            if how == "reset":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            return
    t = threading.Thread(target=agent_goes)
    t.start()
    try:
        with pytest.raises(cni.CNIError) as e:
            cni.cmd_add(dict(CONF), ENV)
    finally:
        t.join()
        srv.close()
    assert e.value.code == cni.E_TRY_AGAIN and "kept until DEL" in e.value.details, e.value.msg
    assert ipam_calls == ["ADD"], "the address was released while the attach may have been carried out"


def test_an_mtu_is_the_networks_also_when_the_registry_allocates(monkeypatch):
    """Without an IPAM section the registry allocates, and "mtu" was dropped silently: the
    network was made with the default, and a disagreeing one never reported."""
    calls = []

    def call(node, op, timeout=60.0, **args):
        calls.append((op, args))
        return {"host_ifname": "dp0000000001", "mac": "02:42:0a:01:00:05", "ip": "10.1.0.5",
                "subnet": "10.1.0.0/24"} if op == "endpoint_attach" else {}
    monkeypatch.setattr(client, "call", call)
    conf = {k: v for k, v in CONF.items() if k != "ipam"}
    cni.cmd_add({**conf, "mtu": 1400}, ENV)
    assert ("network_ensure", {"vni": 256, "subnet": None, "mtu": 1400}) in calls


@pytest.mark.parametrize("message, code", [
    ("network namespace /run/netns/c1 does not exist", cni.E_UNKNOWN_CONTAINER),
    ("network namespace '/run/netns/c1' does not exist", cni.E_UNKNOWN_CONTAINER),       # netns.py's form
    ("network namespace 'dpl-h1' does not exist", cni.E_BROKEN),            # the node's own
    ("interface 'dp0000000001' not found in the host namespace", cni.E_BROKEN),
])
def test_only_the_containers_namespace_gone_is_code_3(monkeypatch, ipam_calls, message, code):
    """Code 3 tells the runtime the container is unknown and DEL need not be called."""
    agent_failing_attach(monkeypatch, errors.NotFound(message))
    with pytest.raises(cni.CNIError) as e:
        cni.cmd_add(dict(CONF), ENV)
    assert e.value.code == code
