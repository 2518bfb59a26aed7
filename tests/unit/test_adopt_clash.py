"""At start the agent registers the sandboxes it finds without a record (local.adopt). If the
record was deleted while the agent was away (`registry forget-host`) and another host's
endpoint took the address since, registration is refused: our own sandbox goes (as when a
record is deleted while we run), a runtime's container is kept and reported as a conflict.
Before, both stayed with a log line, and every reconcile here skipped the other endpoint as a
clash with ours. A real SQLite registry; the node's side is a dict."""

from __future__ import annotations

import ipaddress
import queue
import threading
from types import SimpleNamespace

import pytest

from dataplane.agent import inflight, local
from dataplane.agent.view import RegistryView
from dataplane.core import model, state
from dataplane.registry import Host, open_registry
from dataplane.registry.kv import Event
from dataplane.registry.records import key

IP = "10.9.0.5"
MAC = model.mac_for_ip(ipaddress.IPv4Address(IP))


class Agent:
    def __init__(self, url: str):
        self.reg = open_registry(url)
        self.me, self.lock, self.q, self.conflicts = "h1", threading.RLock(), queue.Queue(), {}
        self.orphan_suspects: set[str] = set()
        inflight.attach(self)
        net = self.reg.network_create("n", 256, "10.9.0.0/24")
        for name, ip in (("h1", "198.18.0.1"), ("h2", "198.18.0.2")):
            self.reg.host_register(Host.make(name, ip), self.reg.kv.lease_grant(60))
        self.view = RegistryView()
        self.view.apply(Event(key("networks", "n"), net.to_json(), 1))
        self.sandboxes: dict = {}
        self.node = SimpleNamespace(
            require_up=lambda shared=False: SimpleNamespace(endpoints=self.sandboxes, gateways={}))


@pytest.fixture
def ag(tmp_path, monkeypatch):
    a = Agent(f"sqlite://{tmp_path}/registry.db")
    a.reg.endpoint_create("theirs", "n", "h2", ip=IP)            # took the address while h1 was away
    monkeypatch.setattr(local.endpoints, "remove", lambda node, name: a.sandboxes.pop(name))
    yield a
    a.reg.close()


def sandbox(runtime: bool) -> state.LocalEndpoint:
    return state.LocalEndpoint(name="mine", vni=256, ip=IP, mac=MAC, host_ifname="dp0000000001",
                               sandbox={"runtime": "cni", "netns": "/run/netns/c"} if runtime else None)


def test_our_own_sandbox_that_cannot_be_registered_again_goes(ag):
    ag.sandboxes["mine"] = sandbox(runtime=False)
    with ag.lock:
        local.adopt(ag)
    assert "mine" not in ag.sandboxes, "two hosts kept the address"
    assert ("ip", IP) in ag.view.fine[256], "its address is reconciled (the other host's entries)"


def test_a_runtimes_container_is_kept_and_reported(ag):
    ag.sandboxes["mine"] = sandbox(runtime=True)
    with ag.lock:
        local.adopt(ag)
    assert "mine" in ag.sandboxes
    assert "cannot register it again" in ag.conflicts["mine"]


def test_a_refusal_for_another_reason_leaves_the_sandbox(ag, monkeypatch):
    """Contention (64 fence retries lost, many hosts adopting at once after an outage) says
    nothing about the address: the sandbox stays, for the next start to register."""
    from dataplane.core.errors import Conflict
    ag.reg.endpoint_rm("theirs")
    ag.sandboxes["mine"] = sandbox(runtime=False)

    def contended(*a, **kw):
        raise Conflict("could not allocate an address in n after 64 tries (contention)")
    monkeypatch.setattr(ag.reg, "endpoint_create", contended)
    with ag.lock:
        local.adopt(ag)
    assert "mine" in ag.sandboxes and "mine" not in ag.conflicts
