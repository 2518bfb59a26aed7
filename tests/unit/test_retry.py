"""converge.retry: each failing VNI on a backoff of its own, an attempt that raises waits its
turn like one that fails, and a healed VNI's next failure starts over at 1 s."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from dataplane.agent import converge
from dataplane.core.errors import KernelError


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(converge.time, "monotonic", lambda: now[0])
    return now


def agent(calls, fail=None):
    ag = SimpleNamespace(vni_errors={}, retries={}, _routed={"192.0.2.9": False, "192.0.2.1": True},
                         remote=SimpleNamespace(short=set()), synced=threading.Event(), lock=threading.RLock())
    ag.synced.set()
    return ag


def test_each_vni_backs_off_on_its_own_and_a_raising_attempt_waits_its_turn(clock, monkeypatch):
    calls = []

    def whole(ag, vnis):
        calls.append(sorted(vnis))
        raise KernelError("netlink: no buffer space")
    monkeypatch.setattr(converge, "whole", whole)
    ag = agent(calls)
    ag.vni_errors[300] = "carries at most 1450"
    converge.retry(ag)                       # seen failing: first tried 1 s from now
    for _ in range(7):                       # 300 fails at 1, 2, 4, 8, 16, 32, then every 60 s
        clock[0] += 64
        with pytest.raises(KernelError):
            converge.retry(ag)
        converge.retry(ag)                   # at once again: not due
    assert calls == [[300]] * 7 and ag.retries[300][0] == converge.RETRY_MAX_S
    assert "192.0.2.9" not in ag._routed and ag._routed["192.0.2.1"], "unroutable peers asked again"
    ag.vni_errors[301] = "VTEP 192.0.2.9 not reached through the uplink"
    converge.retry(ag)
    clock[0] += 1
    with pytest.raises(KernelError):
        converge.retry(ag)
    assert calls[-1] == [301], "a new failure is tried after 1 s, alone, whatever the others' backoff"


def test_a_healed_vni_starts_over_and_a_short_vni_is_retried(clock, monkeypatch):
    calls = []

    def whole(ag, vnis):
        calls.append(sorted(vnis))
        for v in vnis:
            ag.vni_errors.pop(v, None)
            ag.remote.short.discard(v)
    monkeypatch.setattr(converge, "whole", whole)
    ag = agent(calls)
    ag.remote.short.add(256)                # entries a full map refused: no vni_error, retried all the same
    converge.retry(ag)
    clock[0] += 1
    converge.retry(ag)
    assert calls == [[256]] and not ag.retries
    ag.synced.clear()
    ag.vni_errors[256] = "x"
    clock[0] += 5
    converge.retry(ag)
    assert calls == [[256]], "nothing before the first sync"
