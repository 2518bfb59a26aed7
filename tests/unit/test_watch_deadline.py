"""How long the agent's registry watch may stay silent before it is taken for dead."""

from __future__ import annotations

from types import SimpleNamespace

from dataplane.agent import main as agent_main


def test_a_long_lease_does_not_make_a_dead_watch_go_unnoticed_for_minutes():
    """The watch's deadline was the lease TTL: with --lease-ttl 300 a watch on an etcd member
    that lost power went unnoticed for up to 300 s while the other members kept the lease."""
    ag = agent_main.Agent(SimpleNamespace(name="t", netns=None), "etcd://127.0.0.1:1", "h1", lease_ttl=300)
    try:
        assert ag.reg.kv.watch_deadline_s <= 15 and ag.reg.kv.progress_interval_s <= 5
    finally:
        ag.reg.close()
