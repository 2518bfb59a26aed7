"""Registry writes that handling an event calls for (taking back a move, registering a
runtime's endpoint again) are decided under the agent's lock and made without it, by
deferred.py's thread: the main loop waits on that lock, and each such write can take a
request timeout per member and the retry window after lost replies (review findings of
stops 47 and 48: every registry event and punt waited 5 s per write; then a 0.5-s window
still let one read wait 3 s per member, and a write given up was never tried again).
A real SQLite registry; only the node (veths, maps) is stood in for."""

from __future__ import annotations

import time

from dataplane.agent import deferred, local
from dataplane.core import state
from dataplane.registry import Unavailable, backoff
from tests.unit.test_view_ahead import registry_with_web_on_h2


def lose_every_commit(monkeypatch, kv) -> list:
    tries = []

    def commit(txn):
        tries.append(time.monotonic())
        raise Unavailable("etcd: no leader")
    monkeypatch.setattr(kv, "commit", commit)
    monkeypatch.setattr(backoff, "RETRY_PAUSE_S", 0.001)
    monkeypatch.setattr(backoff, "LOST_WINDOW_S", 0.2)
    return tries


def test_a_stuck_move_is_taken_back_without_the_lock_and_again_after_a_failure(tmp_path, monkeypatch):
    ag = registry_with_web_on_h2(tmp_path, monkeypatch)
    try:
        ag.reg.endpoint_move_begin("web", "h1")             # a move to h1 with no sandbox here
        ag.view.load(ag.reg.snapshot())
        tries = lose_every_commit(monkeypatch, ag.reg.kv)
        with ag.lock:
            local.settle_moves(ag)
        assert tries == [], "nothing is written under the agent's lock"
        assert list(ag.deferred) == ["web"]
        deferred.run(ag)                                    # the registry has no leader: kept for later
        assert tries and list(ag.deferred) == ["web"] and ag.deferred["web"].due > time.monotonic()
        n = len(tries)
        deferred.run(ag)
        assert len(tries) == n, "not tried again before RETRY_S"
        assert not ag.busy
        monkeypatch.undo()                                  # the registry answers again
        due_now(ag)
        deferred.run(ag)
        assert ag.reg.endpoint("web").moving_to is None and not ag.deferred
    finally:
        ag.reg.close()


def recheck(ag) -> None:
    """What the main loop does with the rechecks the writer's turns queued (inflight.working_on):
    the endpoint looked at again as the view has it."""
    while not ag.q.empty():
        kind, eid = ag.q.get()
        with ag.lock:
            if eid in ag.sandboxes or eid in ag.view.endpoints:
                local.endpoint_changed(ag, eid, ag.view.endpoints.get(eid))


def docker_web_on_h1(tmp_path, monkeypatch):
    """The agent of h1 with endpoint web on h1, a Docker container's (its interface the engine's)."""
    ag = registry_with_web_on_h2(tmp_path, monkeypatch)
    ag.reg.endpoint_rm("web")
    rec = ag.reg.endpoint_create("web", "n", "h1")
    ag.sandboxes["web"] = state.LocalEndpoint(name="web", vni=256, ip=rec.ip, mac=rec.mac, host_ifname="dpweb",
                                              sandbox={"runtime": "docker", "peer": "dpx"}, phase="ready")
    return ag


def test_a_move_of_a_runtimes_container_is_refused_without_the_lock(tmp_path, monkeypatch):
    ag = docker_web_on_h1(tmp_path, monkeypatch)
    try:
        ag.reg.endpoint_move_begin("web", "h2")             # another writer moves the container away
        ag.view.load(ag.reg.snapshot())
        tries = lose_every_commit(monkeypatch, ag.reg.kv)
        with ag.lock:
            local.endpoint_changed(ag, "web", ag.view.endpoints["web"])
        assert tries == [] and "was refused" in ag.conflicts["web"]
        deferred.run(ag)
        recheck(ag)
        assert "trying again" in ag.conflicts["web"], "the recheck leaves what the try said"
        monkeypatch.undo()
        due_now(ag)
        deferred.run(ag)
        recheck(ag)
        assert ag.reg.endpoint("web").moving_to is None, "the move is taken back: its commit fails"
        assert "was refused" in ag.conflicts["web"] and "trying again" not in ag.conflicts["web"]
    finally:
        ag.reg.close()


def test_a_runtimes_deleted_record_is_registered_again_without_the_lock(tmp_path, monkeypatch):
    ag = docker_web_on_h1(tmp_path, monkeypatch)
    try:
        ag.reg.endpoint_rm("web")                           # another writer deletes its record
        ag.view.load(ag.reg.snapshot())
        tries = lose_every_commit(monkeypatch, ag.reg.kv)
        with ag.lock:
            local.endpoint_changed(ag, "web", None)
        assert tries == [] and ag.conflicts["web"].endswith("registering it again")
        deferred.run(ag)
        recheck(ag)
        assert "cannot register it again yet" in ag.conflicts["web"] and "web" in ag.deferred
        monkeypatch.undo()
        due_now(ag)
        deferred.run(ag)
        recheck(ag)
        assert ag.reg.endpoint("web").host == "h1"
        assert ag.conflicts["web"] == "registry record deleted by another writer; registered again"
    finally:
        ag.reg.close()


def test_a_registration_refused_waits_long_and_is_tried_again(tmp_path, monkeypatch):
    """Its address is another endpoint's now (a Conflict): the writer's recheck found the record
    still missing and queued the same write again, at once, for ever (review finding); and a
    refusal given up for good stayed so when the address was freed (no event for this endpoint
    comes then). Now it waits FINAL_RETRY_S and is tried again while the container is here."""
    ag = docker_web_on_h1(tmp_path, monkeypatch)
    try:
        ip = ag.sandboxes["web"].ip
        ag.reg.endpoint_rm("web")
        ag.reg.endpoint_create("db", "n", "h2", ip=ip)      # the address goes to another endpoint
        ag.view.load(ag.reg.snapshot())
        with ag.lock:
            local.endpoint_event(ag, "web", None)
        deferred.run(ag)
        said = ag.conflicts["web"]
        recheck(ag)
        assert ag.conflicts["web"] == said and "in use on n by db" in said
        assert ag.deferred["web"].due > time.monotonic() + deferred.FINAL_RETRY_S - 5, "not at once again"
        deferred.run(ag)
        assert ag.reg.endpoint("db"), "not tried before it is due"
        ag.reg.endpoint_rm("db")                            # the address is free again
        due_now(ag)                                         # (FINAL_RETRY_S later)
        deferred.run(ag)
        assert ag.reg.endpoint("web").host == "h1" and not ag.deferred
    finally:
        ag.reg.close()


def test_a_defect_in_a_write_keeps_the_writer_and_the_write(tmp_path, monkeypatch):
    ag = docker_web_on_h1(tmp_path, monkeypatch)
    try:
        def broken():
            raise KeyError("network")
        with ag.lock:
            deferred.add(ag, "web", ("register",), broken)
        deferred.run(ag)
        assert ag.deferred["web"].key == ("register",) and not ag.busy
    finally:
        ag.reg.close()


def due_now(ag) -> None:
    """As when the wait after a failure is over."""
    with ag.lock:
        for eid in list(ag.deferred):
            deferred.event(ag, eid)


def test_a_runtimes_record_deleted_while_the_watch_was_lost_is_registered_again_at_the_resync(tmp_path,
                                                                                             monkeypatch):
    """The deletion's event never came (a compacted history: the agent read a snapshot). The
    resync's settle_moves passed over a sandbox with no record (review finding)."""
    ag = docker_web_on_h1(tmp_path, monkeypatch)
    try:
        ag.reg.endpoint_rm("web")
        ag.view.load(ag.reg.snapshot())
        with ag.lock:
            local.settle_moves(ag)
        deferred.run(ag)
        assert ag.reg.endpoint("web").host == "h1"
    finally:
        ag.reg.close()


def test_an_outage_ends_the_run_and_every_write_waits(tmp_path, monkeypatch):
    """During an outage each try holds its endpoint for the registry's timeouts: the writer
    going round its queue for as long as the outage lasted kept them all busy (review finding)."""
    ag = docker_web_on_h1(tmp_path, monkeypatch)
    try:
        tries = lose_every_commit(monkeypatch, ag.reg.kv)
        ran = []
        with ag.lock:
            deferred.add(ag, "web", ("register",), lambda: ag.reg.kv.commit(None))
            deferred.add(ag, "db", ("register",), lambda: ran.append("db"))
        deferred.run(ag)
        assert len(tries) == 1 and ran == [], "the run ended at the first outage; db waits too"
        assert all(entry.due > time.monotonic() for entry in ag.deferred.values())
    finally:
        ag.reg.close()


def test_a_write_held_by_an_operation_starts_no_writer(tmp_path, monkeypatch):
    ag = docker_web_on_h1(tmp_path, monkeypatch)
    try:
        with ag.lock:
            deferred.add(ag, "web", ("register",), lambda: None)
            ag.busy.add("web")
        deferred.start(ag)
        assert ag.writer is None, "a thread each turn for as long as the operation lasts"
    finally:
        ag.reg.close()


def test_what_adopt_said_stands_until_the_next_try(tmp_path, monkeypatch):
    """At the first sync settle_moves follows adopt: it reworded (and logged again) the conflict
    adopt had just set for a runtime's sandbox it could not register (review finding)."""
    ag = docker_web_on_h1(tmp_path, monkeypatch)
    try:
        ag.reg.endpoint_rm("web")
        ag.view.load(ag.reg.snapshot())
        said = "registry record deleted by another writer; cannot register it again: MAC in use"
        ag.conflicts["web"] = said
        with ag.lock:
            local.settle_moves(ag)
        assert ag.conflicts["web"] == said and "web" in ag.deferred
    finally:
        ag.reg.close()
