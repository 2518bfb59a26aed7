"""A move to this host whose commit fails (the endpoint was removed on its host meanwhile) takes
its sandbox back. While the sandbox was here its MAC and address were local, so a record that
took them meanwhile (another endpoint made on the old host with the freed address) was skipped
as a clash; undoing must reconcile them, or that endpoint has no entry here until something
else changes it (CI, tests/integration/test_model.py, seed 77975222)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from dataplane.agent import converge, ops
from dataplane.agent.view import RegistryView
from dataplane.core.errors import NotFound
from dataplane.core.state import LocalEndpoint


def test_undoing_a_move_reconciles_what_its_sandbox_held(monkeypatch):
    gone = LocalEndpoint(name="m4", vni=256, ip="10.1.0.2", mac="02:42:0a:01:00:02", host_ifname="dp0")
    taken = []
    ag = SimpleNamespace(view=RegistryView(), lock=threading.RLock(), node=object(), me="h3", orphan_suspects=set())

    def abort(eid, host):
        raise NotFound(f"endpoint {eid!r} not found")
    ag.reg = SimpleNamespace(endpoint_move_abort=abort)
    monkeypatch.setattr(ops.endpoints, "remove", lambda node, eid: gone)
    monkeypatch.setattr(converge, "pending", lambda a: taken.append(a.view.take_changes()))
    with pytest.raises(NotFound):
        ops.Ops(ag)._undo_move("m4")
    assert taken == [(set(), {256: {("ep", "m4"), ("mac", gone.mac), ("ip", gone.ip)}})]
