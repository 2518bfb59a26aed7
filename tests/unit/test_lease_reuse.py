"""A restarted agent keeps the previous agent's lease only if it was granted for the same
TTL on the same registry: a 10-s lease kept by an agent now run with 60 s would be renewed
every 20 s and lapse in between (the host seen dead, its reservations gone), and a long one
kept by an agent now run with a short TTL would outlive its crash by too much. A real
SQLite registry."""

from __future__ import annotations

from types import SimpleNamespace

from dataplane.agent import process
from dataplane.agent.lease import LeaseKeeper
from dataplane.core import state
from dataplane.registry import open_registry
from dataplane.registry.records import Host


def keeper(reg, url: str, ttl: int, me: str = "h1") -> LeaseKeeper:
    ag = SimpleNamespace(node=SimpleNamespace(name="n1"), me=me, url=url, ttl=ttl, reg=reg,
                         vtep=Host.make(me, "198.18.0.1"), registered_rev=0)
    k = LeaseKeeper(ag)
    k.start()
    k._register()
    return k


def test_the_lease_is_kept_only_for_the_same_ttl_and_registry(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "RUN_ROOT", str(tmp_path / "run"))
    url = f"sqlite://{tmp_path}/registry.db"
    reg = open_registry(url)
    try:
        first = keeper(reg, url, 10).lease
        assert keeper(reg, url, 10).lease == first, "a restart keeps it"
        other = keeper(reg, url, 60).lease
        assert other != first, "another TTL: a lease of its own"
        assert keeper(reg, url + "?x=1", 60).lease != other, "another registry URL: a lease of its own"
        with open(process.agent_file("n1"), "w") as f:
            f.write("[1, 2]")                          # a file from who knows where: ignored
        assert keeper(reg, url, 60).lease
    finally:
        reg.close()


def test_a_node_brought_up_under_another_host_name_takes_a_lease_of_its_own(tmp_path, monkeypatch):
    """`up --host-name new` after the agent of host old died: the new agent kept old's lease,
    and with it old's host record alive for good (forget-host refused it as alive)."""
    monkeypatch.setattr(state, "RUN_ROOT", str(tmp_path / "run"))
    url = f"sqlite://{tmp_path}/registry.db"
    reg = open_registry(url)
    try:
        first = keeper(reg, url, 10).lease
        assert keeper(reg, url, 10, me="h2").lease != first
    finally:
        reg.close()
