"""An attach the runtime gave up on (the agent slow: CNI's ADD answered 11, "in doubt") and then
DELeted: the DEL found nothing while the attach still waited for its network (network_ensure,
behind other requests on the agent's oplock), freed the address in the IPAM, and the attach went
on to claim it and make the endpoint, for good. The DEL now waits for the attach, then removes
what it made. Real RuntimeOps over a real SQLite registry (test_docker_ipam's harness)."""

from __future__ import annotations

import threading
import time

import pytest

from dataplane.agent import runtime_ops
from tests.unit.test_docker_ipam import engines  # noqa: F401

SANDBOX = {"netns": "/run/netns/x", "ifname": "eth0", "runtime": "cni", "network": "ov", "container_id": "c1"}


def test_a_del_during_an_attach_in_doubt_removes_what_the_attach_makes(engines, monkeypatch):  # noqa: F811
    ag = engines["h1"].agent
    ops = runtime_ops.RuntimeOps(ag)
    real, held, go = ops.network_ensure, threading.Event(), threading.Event()

    def slow_network_ensure(**kw):
        held.set()
        assert go.wait(10)                  # the runtime's DEL comes meanwhile
        return real(**kw)
    monkeypatch.setattr(ops, "network_ensure", slow_network_ensure)
    attach = threading.Thread(target=ops.endpoint_attach, args=("ov-c1-eth0", 256, SANDBOX), daemon=True)
    attach.start()
    assert held.wait(10)
    out = {}
    detach = threading.Thread(target=lambda: out.update(ops.endpoint_detach("ov-c1-eth0")), daemon=True)
    detach.start()
    time.sleep(0.3)
    assert detach.is_alive(), f"the DEL answered before the attach it follows was done: {out}"
    go.set()
    attach.join(10)
    detach.join(10)
    assert out["removed"] is True
    assert ag.local.endpoints == {} and ag.reg.endpoints() == [], "nothing left of the attach"


@pytest.mark.parametrize("first", ["attach", "detach"])
def test_a_runtimes_calls_on_an_endpoint_have_their_turns_in_the_order_they_came(engines, monkeypatch, first):  # noqa: F811
    """The first call is held up before its turn at the endpoint (as by the agent's lock, which a
    restart's sync holds longer than the runtime waits for an answer, and which grants no order).
    An ADD given up on whose DEL went first made, after that DEL found nothing, an endpoint no DEL
    would remove, on an address the IPAM had freed (a review found it); a DEL given up on, after
    the next ADD, removed what that ADD made. Now the second call waits for the first."""
    ag = engines["h1"].agent
    ops = runtime_ops.RuntimeOps(ag)
    eid, sandbox, out = "ov-c2-eth0", {**SANDBOX, "container_id": "c2"}, {}
    real, held, go = runtime_ops.working_on, threading.Event(), threading.Event()

    def slow(ag_, eid_):
        if threading.current_thread().name == first:
            held.set()
            assert go.wait(10)
        return real(ag_, eid_)
    monkeypatch.setattr(runtime_ops, "working_on", slow)
    calls = {"attach": lambda: out.update(attach=ops.endpoint_attach(eid, 256, sandbox)),
             "detach": lambda: out.update(detach=ops.endpoint_detach(eid))}
    second = "detach" if first == "attach" else "attach"
    threads = {k: threading.Thread(target=fn, name=k, daemon=True) for k, fn in calls.items()}
    threads[first].start()
    assert held.wait(10)
    threads[second].start()
    time.sleep(0.3)
    assert threads[second].is_alive(), f"the {second} went before the {first} that came first: {out}"
    go.set()
    for t in threads.values():
        t.join(10)
    assert set(out) == {"attach", "detach"}, out
    if first == "attach":
        assert out["detach"]["removed"] is True, "the DEL removed what the ADD before it made"
        assert ag.local.endpoints == {} and ag.reg.endpoints() == [], "nothing left"
    else:
        assert out["detach"]["removed"] is False and [e.id for e in ag.reg.endpoints()] == [eid], \
            "the ADD after the DEL stays made"
