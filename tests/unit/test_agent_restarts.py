"""An agent that keeps dying under systemd waits longer before each new start (agent/restarts.py):
it was restarted every second, for good. The count is a real file in the node's run directory."""

import json
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


def _start(node, supervised=True) -> float:
    waited = []
    got = restarts.pause(restarts.count(node), waited.append, supervised=supervised)
    assert waited == ([got] if got else [])
    return got


def test_starts_in_a_row_wait_longer_up_to_a_bound(node):
    got = [_start(node) for _ in range(10)]
    assert got[:restarts.FREE] == [0.0] * restarts.FREE
    assert got[restarts.FREE:restarts.FREE + 4] == [2.0, 4.0, 8.0, 16.0]
    assert got[-1] == restarts.MAX_WAIT_S and max(got) == restarts.MAX_WAIT_S


def test_a_crash_loop_of_days_never_overflows_the_wait(node):
    """2.0 ** n overflowed at n = 1027 (some nine hours of 30-s waits): every start after that
    failed at once, for good. The count is kept at CAP; a file with any number in it is read so."""
    for n in (1027, 10 ** 6):
        with open(os.path.join(state.node_dir(node), "agent-starts"), "w") as f:
            json.dump({"n": n, "at": restarts._now()}, f)
        assert _start(node) == restarts.MAX_WAIT_S
    assert restarts.wait_for(10 ** 9) == restarts.MAX_WAIT_S


def test_a_healthy_run_starts_the_count_over(node):
    for _ in range(6):
        _start(node)
    ag = SimpleNamespace(node=SimpleNamespace(name=node), synced=SimpleNamespace(is_set=lambda: True), started=0.0)
    restarts.note_uptime(ag, restarts.HEALTHY_S - 1)
    assert _start(node) > 0, "not up long enough yet"
    restarts.note_uptime(ag, restarts.HEALTHY_S)
    assert _start(node) == 0.0


def test_a_start_long_after_the_last_starts_over(node, monkeypatch):
    for _ in range(8):
        _start(node)
    later = restarts._now() + restarts.STALE_S + 1
    monkeypatch.setattr(restarts, "_now", lambda: later)
    assert restarts.count(node) == 1, "yesterday's crash loop, or restarts spread out by hand"


def test_started_by_hand_it_counts_but_never_waits(node):
    for _ in range(8):
        assert restarts.pause(restarts.count(node), pytest.fail, supervised=False) == 0.0
    assert _start(node) == restarts.MAX_WAIT_S


def test_a_node_taken_down_is_not_made_again(node):
    os.rmdir(state.node_dir(node))
    _start(node)
    assert not os.path.exists(state.node_dir(node))


def test_a_stop_asked_for_once_synced_ends_the_row(node):
    """`systemctl restart` four times in a few minutes made the fourth start wait: a SIGTERM after
    the first sync is no crash. One before it (the unit's start timeout) still counts."""
    import signal
    import threading
    from dataplane.agent import signals
    synced = threading.Event()
    ag = SimpleNamespace(node=SimpleNamespace(name=node), synced=synced, stop=lambda leave: None)
    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        signals.install_signal_handlers(ag)
        for _ in range(4):
            _start(node)
        os.kill(os.getpid(), signal.SIGTERM)            # before the first sync: counted on
        assert restarts.count(node) == 5
        synced.set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert restarts.count(node) == 1
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])


def test_a_start_refused_beside_a_running_agent_is_taken_back(node):
    for _ in range(2):
        restarts.count(node)
    restarts.count(node)                        # `agent run` typed by hand: another agent holds the node
    restarts.uncount(node)
    assert restarts.count(node) == 3


class _Agent:
    """Stands in for Agent in `agent run`: fails as told, before or after its wait."""
    fail: Exception = OSError(28, "No space left on device")
    waits_first = False
    waited: list = []

    def __init__(self, node, *args):
        self.node, self.stopping = node, SimpleNamespace(wait=_Agent.waited.append, is_set=lambda: False)

    def run(self):
        if self.waits_first:
            restarts.pause_holding(self)
        raise self.fail


@pytest.mark.parametrize("fail, waits_first, supervised, waited", [
    (OSError(28, "No space left on device"), False, True, [restarts.MAX_WAIT_S]),   # the agent file not written
    (OSError(28, "No space left on device"), False, False, []),                     # by hand: never waits
    (RuntimeError("a defect after its wait"), True, True, []),        # waited once already, in Agent.run
])
def test_an_agent_that_fails_before_its_wait_waits_in_agent_run(node, monkeypatch, fail, waits_first,
                                                                 supervised, waited):
    """An error writing the agent file (/run full) came before Agent.run's wait and went back to
    the unit at once: restarted every second, for good. Now `agent run` waits as for a crash loop."""
    import time
    from dataplane.agent import main, signals
    from dataplane.cli import node_cmds
    monkeypatch.setattr(_Agent, "fail", fail)
    monkeypatch.setattr(_Agent, "waits_first", waits_first)
    monkeypatch.setattr(_Agent, "waited", [])
    monkeypatch.setattr(main, "Agent", _Agent)
    monkeypatch.setattr(signals, "install_signal_handlers", lambda ag: None)
    st = SimpleNamespace(registry="sqlite:///nowhere.db", host_name="h", lease_ttl=10)
    monkeypatch.setattr(node_cmds, "node_of", lambda args: SimpleNamespace(name=node, state=lambda: st))
    monkeypatch.setattr(restarts, "under_supervisor", lambda: supervised)
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    with open(os.path.join(state.node_dir(node), "agent-starts"), "w") as f:
        json.dump({"n": restarts.CAP, "at": restarts._now()}, f)     # a crash loop of long standing
    args = SimpleNamespace(registry=None, host_name=None, lease_ttl=None)
    with pytest.raises(type(fail)):
        node_cmds.cmd_agent_run(args)
    assert slept == waited
    assert _Agent.waited == ([restarts.MAX_WAIT_S] if waits_first else [])
