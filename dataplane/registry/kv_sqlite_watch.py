"""A watch on the SQLite registry (kv_sqlite.py): its change log read as the file changes."""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time

from dataplane.registry import lease_clock
from dataplane.registry.filewake import FileWake
from dataplane.registry.kv import Compacted, Event, Watch
from dataplane.registry.kv_sqlite import SqliteKV, failure

POLL_S = 0.005             # between looks while the file is busy
SETTLE_S = 0.05            # busy: this long after the last write seen or change read
IDLE_S = 1.0               # quiet: the longest sleep between looks (a write wakes it; see _rest)


class SqliteWatch(Watch):
    """Yields one list of events per revision batch. While the file is busy it looks every
    POLL_S; once quiet for SETTLE_S it sleeps until a write to the file (inotify), the first
    lease deadline or IDLE_S, whichever comes first. Without inotify it looks every POLL_S."""

    def __init__(self, kv: SqliteKV, prefix: str, start_rev: int):
        self.kv, self.prefix, self.next_rev = kv, prefix, start_rev
        self.last_rev, self.last_heard = start_rev - 1, time.monotonic()
        self.seen: int | None = None           # kv.version() before the last full poll
        self._closed = threading.Event()
        self._stirred = 0.0                    # monotonic time of the last write seen or change read
        real = os.path.realpath(kv.path)       # SQLite puts -wal beside the file a link names
        base = os.path.basename(real)
        try:
            self._wake: FileWake | None = FileWake(os.path.dirname(real), {base, base + "-wal", base + "-journal"})
        except (OSError, AttributeError):      # no inotify (or too many watches): look every POLL_S
            self._wake = None

    def close(self) -> None:
        self._closed.set()
        w = self._wake             # read once: the watching thread may set it to None
        if w is not None:
            w.wake()

    def __iter__(self):
        return self

    def _rest(self) -> None:
        """Wait before the next look. A write wakes the sleep before SQLite has published the
        commit in the WAL index (-shm, a shared mapping inotify does not see), so the looks go on
        every POLL_S for SETTLE_S after each wake-up."""
        w = self._wake
        if w is None or w.lost:
            self._closed.wait(POLL_S)
            return
        busy = time.monotonic() - self._stirred < SETTLE_S   # busy: events read as they come
        due = self.kv._due - lease_clock.boot_s()
        if w.wait(POLL_S if busy else math.ceil(min(IDLE_S, max(due, 0.0)) * 1000) / 1000):
            self._stirred = time.monotonic()

    def __next__(self) -> list[Event]:
        try:
            return self._next()
        except BaseException:
            if self._wake is not None:     # the watch has ended: closed here, by its own thread
                self._wake.close()
                self._wake = None
            raise

    def _next(self) -> list[Event]:
        kv = self.kv
        while not self._closed.is_set():
            try:
                quiet, version = kv.quiet(self.seen)
                if quiet:                  # seen was read before the last full poll's snapshot
                    self.last_heard = time.monotonic()
                    self._rest()
                    continue
                with kv._reading() as db:  # one snapshot: the compaction mark, the head and the rows up to it
                    compacted = db.execute("SELECT value FROM meta WHERE name='compacted'").fetchone()[0]
                    if self.next_rev <= compacted:
                        raise Compacted(f"revision {self.next_rev} is compacted (kept from {compacted + 1})")
                    head = kv._rev(db)
                    rows = db.execute(
                        "SELECT rev, key, value FROM events WHERE rev >= ? AND rev <= ? "
                        "AND key >= ? AND key < ? ORDER BY id",
                        (self.next_rev, head, self.prefix, self.prefix + "\uffff")).fetchall()
            except sqlite3.Error as e:
                raise failure(kv.path, e) from None
            self.next_rev, self.seen = head + 1, version      # seen only once the poll has read all
            self.last_rev, self.last_heard = max(self.last_rev, head), time.monotonic()   # each poll hears the file
            self._stirred = self.last_heard
            if rows:
                return [Event(k, bytes(v) if v is not None else None, r) for r, k, v in rows]
            self._rest()
        raise StopIteration
