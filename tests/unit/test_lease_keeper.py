"""The lease keeper (agent/lease.py) against a scripted registry: after an outage it tries again
within a third of the TTL, and it writes the host's record again when the record was deleted
under a live lease."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from dataplane.agent import lease
from dataplane.registry import Unavailable
from dataplane.registry.backoff import Backoff


def ceilings_after_failures(ttl: float) -> list[float]:
    """The keeper registered, then 12 failed keepalives: the largest wait before each next try."""
    stopping, ceilings = threading.Event(), []

    def keepalive(lease_id, timeout):
        raise Unavailable("etcd: no leader")
    ag = SimpleNamespace(me="h1", ttl=ttl, stopping=stopping, registered=threading.Event(),
                         counters={"registry_errors": 0}, disconnected=lambda: None,
                         reg=SimpleNamespace(kv=SimpleNamespace(lease_keepalive=keepalive)))
    keeper = lease.LeaseKeeper(ag)
    keeper.lease, keeper._once = 0x1234, True          # registered before the outage

    def wait(self, ev):
        ceilings.append(self.ceiling())
        self.next()
        if len(ceilings) >= 12:
            ev.set()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Backoff, "wait", wait)
        keeper.run()
    return ceilings


def test_after_an_outage_keepalives_are_tried_within_a_third_of_the_ttl():
    """When etcd regains its quorum it gives every lease its TTL (and an election timeout) from
    then: the keeper must try again before that runs out. Its waits between failed tries grew to
    5 s (Backoff's cap), and a 3-s lease lapsed after the outage it had outlived, the host's
    records and reservations deleted with it (a review found it)."""
    ceilings = ceilings_after_failures(3)
    assert max(ceilings) <= 1.0, ceilings


def test_a_host_record_deleted_under_a_live_lease_is_written_again():
    """A host record deleted while its lease lives (`etcdctl del`, a restore taken between a grant
    and its put): keepalives go on succeeding, and the keeper, which wrote the record again only
    when one failed, never did; every other host dropped this one's entries for good (a review
    found it). The agent's event handling (local.hosts_gone) now asks the keeper to."""
    stopping, writes, first = threading.Event(), [], threading.Event()

    def host_register(vtep, lease_id, keep):
        writes.append(lease_id)
        first.set()
        if len(writes) > 1:
            stopping.set()
        return 7
    ag = SimpleNamespace(me="h1", ttl=0.03, stopping=stopping, registered=threading.Event(), vtep=None,
                         counters={"registry_errors": 0}, disconnected=lambda: None,
                         reg=SimpleNamespace(host_register=host_register, kv=SimpleNamespace(
                             lease_keepalive=lambda lease_id, timeout: True, lease_grant=lambda ttl: 0x99)))
    keeper = lease.LeaseKeeper(ag)
    keeper.save = lambda: None
    t = threading.Thread(target=keeper.run, daemon=True)
    t.start()
    try:
        assert first.wait(5)
        keeper.reregister.set()             # the watch saw the record deleted
        t.join(5)
    finally:
        stopping.set()
    assert writes == [0x99, 0x99], "written again, under the same (live) lease"


def test_a_long_ttl_keeps_backoffs_cap():
    """TTL/3 bounds the waits between failed tries, and Backoff's 5 s still does for a long TTL
    (60 s made it 20 s: a registry back after an outage was found that much later)."""
    ceilings = ceilings_after_failures(60)
    assert max(ceilings) == 5.0, ceilings
