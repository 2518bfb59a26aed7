"""An agent that keeps dying under systemd waits longer before each new start (agent/restarts.py):
it was restarted every second, for good. The count is a real file in the node's run directory."""

import os
from types import SimpleNamespace

import pytest

from dataplane.agent import restarts
from dataplane.core import state


@pytest.fixture
def node(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "RUN_ROOT", str(tmp_path))
    os.makedirs(state.node_dir("n1"))
    return "n1"


def test_starts_in_a_row_wait_longer_up_to_a_bound(node):
    waited = []
    got = [restarts.before_start(node, waited.append, supervised=True) for _ in range(10)]
    assert got[:restarts.FREE] == [0.0] * restarts.FREE
    assert got[restarts.FREE:restarts.FREE + 4] == [2.0, 4.0, 8.0, 16.0]
    assert got[-1] == restarts.MAX_WAIT_S and max(got) == restarts.MAX_WAIT_S
    assert waited == [g for g in got if g]


def test_a_healthy_run_starts_the_count_over(node):
    for _ in range(6):
        restarts.before_start(node, lambda s: None, supervised=True)
    ag = SimpleNamespace(node=SimpleNamespace(name=node), synced=SimpleNamespace(is_set=lambda: True), started=0.0)
    restarts.note_uptime(ag, restarts.HEALTHY_S - 1)
    assert restarts.before_start(node, lambda s: None, supervised=True) > 0, "not up long enough yet"
    restarts.note_uptime(ag, restarts.HEALTHY_S)
    assert restarts.before_start(node, lambda s: None, supervised=True) == 0.0


def test_started_by_hand_it_counts_but_never_waits(node):
    for _ in range(8):
        assert restarts.before_start(node, pytest.fail, supervised=False) == 0.0
    assert restarts.before_start(node, lambda s: None, supervised=True) == restarts.MAX_WAIT_S


def test_a_node_taken_down_is_not_made_again(node):
    os.rmdir(state.node_dir(node))
    restarts.before_start(node, lambda s: None, supervised=True)
    assert not os.path.exists(state.node_dir(node))
