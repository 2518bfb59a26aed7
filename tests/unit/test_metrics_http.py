"""/healthz answers 200 only when the agent is synced *and* the registry answers its lease's
keepalives; other paths are 404. (The lab test scrapes /metrics.)"""

import threading
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from dataplane.agent import metrics, metrics_http
from tests.unit.held import held_elsewhere
from tests.ports import free_port


@pytest.fixture
def served():
    ag = SimpleNamespace(lock=threading.RLock(), synced=threading.Event(), connected=threading.Event(),
                         leases=SimpleNamespace(live=False))
    srv = metrics_http.Server(ag, f"127.0.0.1:{free_port()}")
    srv.start()
    yield ag, f"http://{srv.address}"
    srv.stop()


def get(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code


def test_healthz_follows_sync_and_the_lease(served):
    """It followed the watch (`connected`): 503 for the seconds of every etcd member's restart,
    on every node at once (a liveness probe restarted healthy agents), and 200 while a full etcd
    refused the lease's keepalives (other hosts about to drop this one). A query and HEAD too."""
    import urllib.request
    ag, base = served
    assert get(base + "/healthz") == 503
    ag.synced.set()
    assert get(base + "/healthz") == 503, "synced but the registry does not take the lease's keepalives"
    ag.leases.live = True
    assert get(base + "/healthz") == 200, "the watch down (resuming after a member's restart): still healthy"
    ag.connected.set()
    assert get(base + "/healthz?probe=1") == 200
    head = urllib.request.urlopen(urllib.request.Request(base + "/healthz", method="HEAD"), timeout=5)
    assert head.status == 200 and head.read() == b"" and head.headers["Content-Length"] == "3"
    ag.leases.live = False
    assert get(base + "/healthz") == 503, "connected, but the lease lapses: not healthy"
    assert get(base + "/nothing") == 404


def test_a_bad_or_busy_address_is_a_usage_error():
    from dataplane.core.errors import UsageError
    with pytest.raises(UsageError):
        metrics_http.Server(SimpleNamespace(), "localhost")
    ag = SimpleNamespace(lock=threading.RLock(), synced=threading.Event(), connected=threading.Event())
    first = metrics_http.Server(ag, f"127.0.0.1:{free_port()}")
    try:
        with pytest.raises(UsageError):
            metrics_http.Server(ag, first.address)
    finally:
        first.httpd.server_close()


def test_every_dp_stats_counter_is_exported():
    """A counter added to struct dp_stats is a metric too (monitor_lost was not), and so is
    dp_net_meter's learn_limited, which readout.stats shows beside them."""
    from dataplane.core import abi
    fields = {n for n, _ in abi.load().structs["dp_stats"]._fields_} - {"drops"}
    assert set(metrics.STATS) == fields | {"learn_limited"}


def fake_agent():
    from dataplane.core.errors import DataplaneError

    def not_up():
        raise DataplaneError("node not up")
    view = SimpleNamespace(rev=7, claims_pending=False, networks={"n": 1}, hosts={"h1": 1, "h2": 2}, endpoints={})
    return SimpleNamespace(
        lock=threading.RLock(), synced=threading.Event(), connected=threading.Event(), remote=None,
        counters={"events": 3}, punts=SimpleNamespace(counts={"received": 2, "resolved": 1, "stale": 1}),
        vni_errors={}, conflicts={}, skipped={}, busy=set(), view=view, leases=SimpleNamespace(live=True), ttl=10,
        silence_s=lambda: 0.5, warm_start=False, last_sync_s=0.1, last_snapshot_s=0.2, last_claims_s=0.0,
        reg=SimpleNamespace(kv=SimpleNamespace(transport_counts=lambda: {})), node=SimpleNamespace(require_up=not_up))


def test_a_scrape_does_not_wait_on_a_busy_agent():
    """A long turn of the main loop holds the agent's lock: a scrape waits a second at most, then
    serves the figures it read last and says so (before: it waited as long as the lock was
    held, past Prometheus's timeout)."""
    import time

    from prometheus_client.parser import text_string_to_metric_families

    from dataplane.agent import metrics_agent
    ag = fake_agent()
    figures = metrics_agent.AgentFigures(ag)

    def read() -> dict:
        from prometheus_client import CollectorRegistry, generate_latest
        reg = CollectorRegistry(auto_describe=False)
        reg.register(figures)
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(generate_latest(reg).decode()) for s in f.samples}
    first = read()
    assert figures.fresh and first[("dataplane_registry_revision", ())] == 7
    assert first[("dataplane_agent_punts_total", (("outcome", "stale"),))] == 1
    assert first[("dataplane_agent_punts_received_total", ())] == 2
    with held_elsewhere(ag.lock):
        ag.view.rev = 8
        t0 = time.monotonic()
        second = read()
        assert time.monotonic() - t0 < metrics_agent.LOCK_WAIT_S + 1
        assert not figures.fresh and second[("dataplane_registry_revision", ())] == 7, "the last copy"
    assert read()[("dataplane_registry_revision", ())] == 8 and figures.fresh


def test_refusals_of_addresses_that_are_no_peer_are_a_gauge(monkeypatch):
    """What the peer meters hold for addresses that are no VTEP of the VNI now was the counter's
    peer="other": it went down whenever such a peer came back (its count moved to its own series)
    or the LRU evicted one, which Prometheus reads as a reset, a false burst in rate()."""
    rows = [{"vni": 256, "drops": {}, "overlay_storm_peers": {"198.18.0.2": 5, "other": 7},
             **{field: 0 for field in metrics.STATS}}]
    monkeypatch.setattr(metrics.readout, "stats", lambda node: rows)
    fams = {f.name: f for f in metrics.Collector(SimpleNamespace(node=None))._stats({})}
    counter = fams["dataplane_overlay_storm_peer_refused"]
    assert counter.type == "counter" and [s.labels for s in counter.samples] == [{"vni": "256", "peer": "198.18.0.2"}]
    gauge = fams["dataplane_overlay_storm_unlisted_refused"]
    assert gauge.type == "gauge" and [(s.labels, s.value) for s in gauge.samples] == [({"vni": "256"}, 7)]


def test_a_scrape_waits_for_another_only_so_long(monkeypatch):
    """Each /metrics waited on the one before with no bound: a scrape stuck in a netlink call held
    every later one, a thread each, until the agent restarted."""
    monkeypatch.setattr(metrics_http, "SCRAPE_WAIT_S", 0.2)
    ag = SimpleNamespace(lock=threading.RLock(), synced=threading.Event(), connected=threading.Event())
    srv = metrics_http.Server(ag, f"127.0.0.1:{free_port()}")
    srv.start()
    try:
        with srv.scraping:                  # one under way, stuck
            assert get(f"http://{srv.address}/metrics") == 503
    finally:
        srv.stop()
