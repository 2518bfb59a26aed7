"""An attach the runtime gave up on (the agent slow: CNI's ADD answered 11, "in doubt") and then
DELeted: the DEL found nothing while the attach still waited for its network (network_ensure,
behind other requests on the agent's oplock), freed the address in the IPAM, and the attach went
on to claim it and make the endpoint, for good. The DEL now waits for the attach, then removes
what it made. Real RuntimeOps over a real SQLite registry (test_docker_ipam's harness)."""

from __future__ import annotations

import threading
import time

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


def test_an_attach_whose_del_had_its_turn_first_makes_nothing(engines, monkeypatch):  # noqa: F811
    """The attach asked for first, the DEL after, but the DEL had its turn first: both wait for
    the agent's lock (held by a restart's sync longer than the runtime waits for ADD's answer),
    which grants no order. The DEL found nothing and the IPAM freed the address; the attach then
    made the endpoint, which no DEL would ever remove (a review found it). It makes nothing now."""
    from dataplane.core.errors import Conflict
    ag = engines["h1"].agent
    ops = runtime_ops.RuntimeOps(ag)
    real, waiting, go = runtime_ops.working_on, threading.Event(), threading.Event()

    def late(ag_, eid):                     # the attach's turn comes only after the DEL's
        if threading.current_thread().name == "attach":
            waiting.set()
            assert go.wait(10)
        return real(ag_, eid)
    monkeypatch.setattr(runtime_ops, "working_on", late)
    out = {}

    def attach():
        try:
            out["attach"] = ops.endpoint_attach("ov-c2-eth0", 256, {**SANDBOX, "container_id": "c2"})
        except Conflict as e:
            out["refused"] = str(e)
    t = threading.Thread(target=attach, name="attach", daemon=True)
    t.start()
    assert waiting.wait(10)
    assert ops.endpoint_detach("ov-c2-eth0")["removed"] is False, "nothing made yet"
    go.set()
    t.join(10)
    assert "attach" not in out and "detached after this attach" in out.get("refused", ""), out
    assert ag.local.endpoints == {} and ag.reg.endpoints() == [], "nothing made"
    assert ops.endpoint_attach("ov-c2-eth0", 256, {**SANDBOX, "container_id": "c2"}), "a later ADD is made"
