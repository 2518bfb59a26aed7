"""The SQLite registry's watch sleeps while the file is quiet and wakes when it is written
(inotify), at a lease deadline, or when closed; without inotify it polls as before. An idle
agent's 5-ms polls were most of its CPU (bench.ops: 2.7% of a CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from dataplane.registry import kv_sqlite_watch, open_registry
from dataplane.registry.filewake import FileWake
from dataplane.registry.kv import Txn
from dataplane.registry.store import PREFIX

# Another process writes n keys, one commit each, a few ms apart.
_WRITER = """
import sys, time
from dataplane.registry import open_registry
from dataplane.registry.kv import Txn
reg = open_registry(sys.argv[1])
for i in range(int(sys.argv[2])):
    reg.kv.commit(Txn(puts=[(sys.argv[3] + str(i), b"1", 0)]))
    time.sleep(float(sys.argv[4]))
reg.close()
"""


def _write_elsewhere(url: str, n: int, gap_s: float = 0.0, prefix: str = PREFIX + "w/") -> None:
    subprocess.run([sys.executable, "-c", _WRITER, url, str(n), prefix, str(gap_s)], check=True, timeout=60)


class _Reader:
    def __init__(self, watch):
        self.watch, self.keys = watch, []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        for batch in self.watch:
            self.keys += [(e.key, e.value) for e in batch]

    def wait_for(self, want, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if want <= set(self.keys):
                return True
            time.sleep(0.01)
        return False

    def stop(self):
        self.watch.close()
        self.thread.join(5)
        assert not self.thread.is_alive(), "the watch did not end when closed"


def _looks(kv) -> list:
    """Counts the watch's looks at the file (kv.quiet, one per wake-up)."""
    looks, quiet = [], kv.quiet
    kv.quiet = lambda seen: (looks.append(1), quiet(seen))[1]
    return looks


def test_an_idle_watch_sleeps_and_a_write_of_another_process_wakes_it(tmp_path, monkeypatch):
    monkeypatch.setattr(kv_sqlite_watch, "IDLE_S", 60.0)     # only a write can wake it in time
    url = f"sqlite://{tmp_path}/registry.db"
    reg = open_registry(url)
    try:
        looks = _looks(reg.kv)
        r = _Reader(reg.kv.watch(PREFIX, reg.kv.range(PREFIX)[0] + 1))
        time.sleep(0.2)                                  # past SETTLE_S
        before = len(looks)
        time.sleep(0.5)                                  # a 5-ms poll would look 100 times
        assert len(looks) - before <= 1, f"{len(looks) - before} looks at a quiet file"
        _write_elsewhere(url, 1)
        assert r.wait_for({(PREFIX + "w/0", b"1")}), "a write of another process did not wake the watch"
        r.stop()
    finally:
        reg.close()


def test_every_write_of_a_burst_reaches_the_watch(tmp_path, monkeypatch):
    """A wake-up comes when the -wal file is written, before the commit is published in the
    -shm index: the watch must keep looking, not go back to sleep on a commit it cannot see."""
    monkeypatch.setattr(kv_sqlite_watch, "IDLE_S", 60.0)
    url = f"sqlite://{tmp_path}/registry.db"
    reg = open_registry(url)
    try:
        r = _Reader(reg.kv.watch(PREFIX, reg.kv.range(PREFIX)[0] + 1))
        for gap in (0.0, 0.02, 0.1):
            prefix = f"{PREFIX}burst{gap}/"
            _write_elsewhere(url, 20, gap, prefix)
            want = {(prefix + str(i), b"1") for i in range(20)}
            assert r.wait_for(want), f"missed {sorted(want - set(r.keys))}"
        r.stop()
    finally:
        reg.close()


def test_a_commit_published_just_after_its_wake_up_is_not_missed(tmp_path, monkeypatch):
    """For 10 ms from the first look that would see it, the watch is made to see the file as it
    was (the commit not yet in the WAL index, as a reader can meet it for a moment after the
    wake-up): it must look again within SETTLE_S, not sleep on the commit it was woken for."""
    monkeypatch.setattr(kv_sqlite_watch, "IDLE_S", 60.0)
    url = f"sqlite://{tmp_path}/registry.db"
    reg = open_registry(url)
    try:
        quiet, hide, hidden = reg.kv.quiet, threading.Event(), []

        def late(seen):
            q, v = quiet(seen)
            if hide.is_set() and not q:
                hidden.append(time.monotonic())
                if time.monotonic() - hidden[0] < 0.01:
                    return True, seen
            return q, v
        reg.kv.quiet = late
        r = _Reader(reg.kv.watch(PREFIX, reg.kv.range(PREFIX)[0] + 1))
        time.sleep(0.2)
        hide.set()
        _write_elsewhere(url, 1)
        assert r.wait_for({(PREFIX + "w/0", b"1")}), "the watch slept on a commit it had been woken for"
        assert hidden, "the test hid nothing"
        r.stop()
    finally:
        reg.close()


def test_close_wakes_a_sleeping_watch(tmp_path, monkeypatch):
    monkeypatch.setattr(kv_sqlite_watch, "IDLE_S", 60.0)
    reg = open_registry(f"sqlite://{tmp_path}/registry.db")
    try:
        r = _Reader(reg.kv.watch(PREFIX, reg.kv.range(PREFIX)[0] + 1))
        time.sleep(0.2)
        r.stop()
    finally:
        reg.close()


def test_without_inotify_the_watch_polls(tmp_path, monkeypatch):
    def refused(*_):
        raise OSError(24, "inotify_init1")
    monkeypatch.setattr(kv_sqlite_watch, "FileWake", refused)
    url = f"sqlite://{tmp_path}/registry.db"
    reg = open_registry(url)
    try:
        r = _Reader(reg.kv.watch(PREFIX, reg.kv.range(PREFIX)[0] + 1))
        _write_elsewhere(url, 3)
        assert r.wait_for({(PREFIX + f"w/{i}", b"1") for i in range(3)})
        r.stop()
    finally:
        reg.close()


def test_a_registry_named_through_a_symlink_is_watched_where_the_file_is(tmp_path, monkeypatch):
    """SQLite follows the link and writes -wal beside the real file: that directory is watched."""
    monkeypatch.setattr(kv_sqlite_watch, "IDLE_S", 60.0)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "registry.db").symlink_to(tmp_path / "real" / "registry.db")
    url = f"sqlite://{tmp_path}/link/registry.db"
    reg = open_registry(url)
    try:
        r = _Reader(reg.kv.watch(PREFIX, reg.kv.range(PREFIX)[0] + 1))
        time.sleep(0.2)
        _write_elsewhere(url, 1)
        assert r.wait_for({(PREFIX + "w/0", b"1")}), "a write through the link did not wake the watch"
        r.stop()
    finally:
        reg.close()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_filewake_leaves_no_descriptor_when_it_cannot_be_made(tmp_path, monkeypatch):
    before = _fds()

    def refused(*_):
        raise OSError(24, "Too many open files")
    monkeypatch.setattr(os, "eventfd", refused)
    with pytest.raises(OSError):
        FileWake(str(tmp_path), {"x"})
    monkeypatch.undo()
    with pytest.raises(OSError):
        FileWake(str(tmp_path / "none"), {"x"})           # no such directory
    assert _fds() == before


def test_filewake_wakes_on_a_dropped_event_queue_and_says_when_its_watch_is_gone(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    w = FileWake(str(d), {"registry.db-wal"})
    try:
        limit = int(open("/proc/sys/fs/inotify/max_queued_events").read())
        other = d / "other"
        for _ in range(limit + 10):       # none named: only the overflow can wake it
            other.touch()
            with open(other, "w"):
                pass
        assert w.wait(1.0), "an overflowed queue did not count as a write"
        assert not w.lost
        other.unlink()
        d.rmdir()
        assert w.wait(1.0) and w.lost
    finally:
        w.close()
