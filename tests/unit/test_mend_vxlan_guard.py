"""Housekeeping's mending of node/vxlanguard.py's rule judges by the state under the node's
lock (review finding): the tick reads the state at its start, and an `up --no-vxlan-guard`
that removed the rule before the mend ran had the rule put back from the tick's old copy,
for good (later ticks see the guard off and leave it), while status said the guard was off."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from dataplane.agent import housekeeping


def test_a_guard_turned_off_since_the_tick_began_is_not_put_back(monkeypatch):
    made = []
    monkeypatch.setattr(housekeeping.vxlanguard, "ensure", lambda ns, underlay, port: made.append(port) or True)
    monkeypatch.setattr(housekeeping.vxlanguard, "present", lambda ns, underlay, port: False)   # flushed
    monkeypatch.setattr(housekeeping.vxlanguard.shutil, "which", lambda name: "/usr/sbin/iptables")
    monkeypatch.setattr(housekeeping.state, "locked", lambda name: contextlib.nullcontext())
    cfg = lambda on: SimpleNamespace(config=SimpleNamespace(vxlan_guard=on, underlay="ul0", port=4789))  # noqa: E731
    saved = cfg(False)                                   # `up --no-vxlan-guard` ran after the tick read
    ag = SimpleNamespace(node=SimpleNamespace(name="t", netns=None, state=lambda: saved), counters={"repairs": 0})
    housekeeping._mend_vxlan_guard(ag, cfg(True))
    assert made == [] and ag.counters["repairs"] == 0
    saved = cfg(True)                                    # on, and the rule missing: put back
    housekeeping._mend_vxlan_guard(ag, cfg(True))
    assert made == [4789] and ag.counters["repairs"] == 1


def test_a_rule_in_place_is_checked_without_the_nodes_lock(monkeypatch):
    """`up` holds the node's lock for seconds (a compile), and the main loop runs housekeeping."""
    monkeypatch.setattr(housekeeping.vxlanguard, "present", lambda ns, underlay, port: True)
    monkeypatch.setattr(housekeeping.vxlanguard.shutil, "which", lambda name: "/usr/sbin/iptables")
    monkeypatch.setattr(housekeeping.state, "locked", lambda name: pytest.fail("took the node's lock"))
    st = SimpleNamespace(config=SimpleNamespace(vxlan_guard=True, underlay="ul0", port=4789))
    housekeeping._mend_vxlan_guard(SimpleNamespace(node=SimpleNamespace(name="t", netns=None)), st)
