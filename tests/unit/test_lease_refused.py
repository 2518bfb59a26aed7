"""An agent whose registry refuses it (a login, a permission, a certificate:
dataplane.registry.Refused) stops with that reason instead of retrying for
ever; an outage (Unavailable) is waited out. No registry needed: a stand-in."""

from __future__ import annotations

import threading

from dataplane.agent.lease import LeaseKeeper
from dataplane.registry import Refused, Unavailable


class FakeKV:
    def __init__(self, error):
        self.error, self.calls = error, 0

    def lease_keepalive(self, lease, timeout=None):
        return False

    def lease_grant(self, ttl):
        self.calls += 1
        raise self.error


class FakeAgent:
    def __init__(self, error):
        self.me, self.ttl, self.failed = "h1", 3, None
        self.stopping, self.registered = threading.Event(), threading.Event()
        self.reg = type("Reg", (), {"kv": FakeKV(error)})()
        self.counters = {"errors": 0, "registry_errors": 0}

    def fail(self, why):
        self.failed = why
        self.stopping.set()

    def disconnected(self):
        if self.reg.kv.calls >= 2:
            self.stopping.set()


def test_a_refusal_stops_the_agent_with_its_reason(monkeypatch):
    ag = FakeAgent(Refused("etcd at 198.18.0.251:2379 refused the login of user dataplane-host-h1"))
    keeper = LeaseKeeper(ag)
    monkeypatch.setattr(keeper, "_old_lease", lambda: 0)
    keeper.run()
    assert str(ag.failed) == ("the registry refuses host h1: etcd at 198.18.0.251:2379 refused the login of user "
                              "dataplane-host-h1") and ag.reg.kv.calls == 1 and not ag.registered.is_set()
    assert isinstance(ag.failed, Refused) and ag.failed.exit_code == 5, "exit 5, as README says (it was 4)"


def test_an_outage_is_waited_out(monkeypatch):
    ag = FakeAgent(Unavailable("etcd unreachable"))
    keeper = LeaseKeeper(ag)
    monkeypatch.setattr(keeper, "_old_lease", lambda: 0)
    keeper.run()
    assert ag.failed is None and ag.reg.kv.calls >= 2


def test_an_unexpected_error_is_logged_and_tried_again(monkeypatch, caplog):
    """This thread is the host's liveness: an exception of no registry type (a TLS file that
    could not be read came as a bare OSError) used to end it silently, and the host was seen
    dead a TTL later while the agent looked healthy."""
    from dataplane.registry import backoff
    monkeypatch.setattr(backoff.Backoff, "wait", lambda self, stop: stop.is_set())
    ag = FakeAgent(OSError("Could not find a suitable TLS CA certificate bundle"))
    ag.disconnected = lambda: None
    kv = ag.reg.kv
    real = kv.lease_grant

    def grant(ttl):
        if kv.calls >= 2:
            ag.stopping.set()
        return real(ttl)
    kv.lease_grant = grant
    keeper = LeaseKeeper(ag)
    keeper.run()
    assert kv.calls >= 2, "tried again"
    assert ag.failed is None and ag.counters["registry_errors"] >= 1
    assert "unexpected error" in caplog.text


def test_a_registration_that_fails_after_the_lease_lapsed_is_made_again(monkeypatch):
    """The lease lapsed (keepalive False), a new one was granted, and writing the host record
    under it failed (a DataplaneError: "changed 5 times"). The next turn must register again:
    before, the keeper went on renewing the new lease, and the host record was never written
    under it (other hosts dropped this host for good). A keepalive that fails for an outage
    counts as a registry error too."""
    from dataplane.core.errors import DataplaneError
    from dataplane.registry import backoff
    monkeypatch.setattr(backoff.Backoff, "wait", lambda self, stop: stop.is_set())
    ag = FakeAgent(None)
    ag.disconnected = lambda: None
    writes, grants, keepalives = [], iter([2]), []

    class KV:
        def lease_keepalive(self, lease, timeout=None):
            keepalives.append(lease)
            if len(keepalives) > 20:
                ag.stopping.set()                 # the old code renews lease 2 for ever
            if len(keepalives) == 1:
                raise Unavailable("etcd: no leader")    # the previous agent's lease 1, asked at start
            return lease == 2 or not writes       # lease 1 lapses once written under

        def lease_grant(self, ttl):
            return next(grants)

    def host_register(vtep, lease, keep=False):
        writes.append(lease)
        if len(writes) == 2:
            raise DataplaneError("host h1 changed 5 times while registering")
        if len(writes) == 3:
            ag.stopping.set()
        return 10 + len(writes)
    ag.reg = type("Reg", (), {"kv": KV(), "host_register": staticmethod(host_register)})()
    ag.vtep = None
    keeper = LeaseKeeper(ag)
    keeper.previous = 1                           # the last agent's lease, as start() reads it
    monkeypatch.setattr(keeper, "save", lambda: None)
    monkeypatch.setattr(ag.stopping, "wait", lambda t=None: ag.stopping.is_set())
    keeper.run()
    assert writes == [1, 2, 2], "the host record written again under the new lease"
    assert ag.counters["registry_errors"] == 2, "the failed write and the failed keepalive"
