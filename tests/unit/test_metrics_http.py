"""/healthz answers 200 only when the agent is synced *and* its registry
connection is live; other paths are 404. (The lab test scrapes /metrics.)"""

import socket
import threading
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from dataplane.agent import metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served():
    ag = SimpleNamespace(lock=threading.RLock(), synced=threading.Event(), connected=threading.Event())
    srv = metrics.Server(ag, f"127.0.0.1:{free_port()}")
    srv.start()
    yield ag, f"http://{srv.address}"
    srv.stop()


def get(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code


def test_healthz_follows_sync_and_connection(served):
    ag, base = served
    assert get(base + "/healthz") == 503
    ag.synced.set()
    assert get(base + "/healthz") == 503, "synced but the registry is unreachable"
    ag.connected.set()
    assert get(base + "/healthz") == 200
    ag.connected.clear()
    assert get(base + "/healthz") == 503
    assert get(base + "/nothing") == 404


def test_a_bad_or_busy_address_is_a_usage_error():
    from dataplane.core.errors import UsageError
    with pytest.raises(UsageError):
        metrics.Server(SimpleNamespace(), "localhost")
    ag = SimpleNamespace(lock=threading.RLock(), synced=threading.Event(), connected=threading.Event())
    first = metrics.Server(ag, f"127.0.0.1:{free_port()}")
    try:
        with pytest.raises(UsageError):
            metrics.Server(ag, first.address)
    finally:
        first.httpd.server_close()
