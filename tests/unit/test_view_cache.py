"""The registry view on disk (agent/cache.py): what it keeps, and every case
in which a warm start must not use it."""

from __future__ import annotations

import os

import pytest

from dataplane.agent import cache
from dataplane.agent.view import RegistryView
from dataplane.core import state
from dataplane.registry import Endpoint, Host, Network, Snapshot


@pytest.fixture
def lib(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "LIB_ROOT", str(tmp_path))
    return tmp_path


def view(rev: int = 40) -> RegistryView:
    net = Network.make("n1", 256, "10.0.0.0/24")
    snap = Snapshot(rev=rev, networks={"n1": net}, hosts={"h2": Host.make("h2", "198.18.0.2")},
                    bad=["/dataplane/endpoints/x: malformed endpoint record: not JSON"])
    e = Endpoint.make("web", "n1", "h2", "02:00:00:00:00:07", "10.0.0.7")
    m = Endpoint.make("mover", "n1", "h2", "02:00:00:00:00:08", "10.0.0.8", moving_to="h3")
    snap.endpoints = {e.id: e, m.id: m}
    for x in (e, m):
        snap.macs[f"n1/{x.mac}"] = snap.ipam[f"n1/{x.ip}"] = x.id
    v = RegistryView()
    v.load(snap)
    return v


def save(v, cluster="c1"):
    cache.save("node1", cache.dump(cache.copy(v), cluster, ["/dataplane/endpoints/x: malformed endpoint record: not JSON"]))


def test_the_view_comes_back_as_it_was(lib):
    v = view()
    save(v)
    snap = cache.load("node1", "c1", before_rev=41)
    assert snap is not None and snap.rev == 40
    assert snap.networks == v.networks and snap.hosts == v.hosts and snap.endpoints == v.endpoints
    assert snap.macs == v.macs and snap.ipam == v.ipam
    assert snap.bad == ["/dataplane/endpoints/x: malformed endpoint record: not JSON"]
    assert snap.endpoints["mover"].moving_to == "h3"
    assert oct(os.stat(cache.path("node1")).st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("cluster, before_rev, why", [
    ("c2", 41, "another etcd cluster (or a restored backup: a new cluster id)"),
    (None, 41, "a store with no cluster id (SQLite)"),
    ("c1", 40, "a revision not before this start's registration: the store went back"),
    ("c1", 12, "the store's history is shorter than the view's"),
])
def test_a_view_that_does_not_fit_the_store_is_not_used(lib, cluster, before_rev, why):
    save(view())
    assert cache.load("node1", cluster, before_rev) is None, why


def test_a_view_others_could_have_written_is_not_used(lib):
    save(view())
    os.chmod(cache.path("node1"), 0o644)
    assert cache.load("node1", "c1", 41) is None


@pytest.mark.parametrize("damage", [b"", b"{", b'{"format": 1}', b'{"format": 99, "rev": 3}',
                                    b'{"format": 1, "prefix": "/dataplane/", "cluster": "c1", "rev": "x"}'])
def test_a_torn_or_foreign_file_is_not_used(lib, damage):
    save(view())
    with open(cache.path("node1"), "wb") as f:
        f.write(damage)
    assert cache.load("node1", "c1", 41) is None


def test_no_file_no_view(lib):
    assert cache.load("node1", "c1", 41) is None
