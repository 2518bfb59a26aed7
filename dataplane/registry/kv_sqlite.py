"""The KV contract on one SQLite file (WAL), for a single machine and the lab.

Several processes (one agent per simulated host, the CLI) share the file.
Writes run under BEGIN IMMEDIATE, so a compare-and-swap is atomic across
processes. A process has two connections: writes take turns on one, reads
and watches on the other, so a write waiting for another process's lock
(up to the busy timeout) holds up no read of this process (WAL readers
never wait for a writer). The change log (table events) is what watches poll; leases are
deadlines on the boot clock (lease_clock.py), and whichever process touches the store first
after a deadline deletes the lease's keys (and logs the deletions).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading

from dataplane.registry import lease_clock
from dataplane.registry.lease_clock import Clock
from dataplane.registry.kv import KV, Damaged, Item, Refused, Txn, Unavailable

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL,
                               create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, lease INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, rev INTEGER NOT NULL,
                                   key TEXT NOT NULL, value BLOB);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY AUTOINCREMENT, ttl INTEGER NOT NULL, deadline REAL NOT NULL,
                                   boot TEXT, bdeadline REAL, wall_set REAL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('rev', 1), ('compacted', 0);
CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease);
CREATE INDEX IF NOT EXISTS events_rev ON events (rev);
"""
KEEP_EVENTS = 500_000      # change-log rows kept for watchers that fall behind
BUSY_TIMEOUT_S = 30        # a write waits this long for another process's lock on the file


# SQLite's primary result codes (sqlite3.h) that no retry mends: someone must act.
_DAMAGED = {11, 26}                # SQLITE_CORRUPT, SQLITE_NOTADB
_REFUSED = {3, 8, 14, 23}          # SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_AUTH


def failure(path: str, e: sqlite3.Error) -> Unavailable:
    """What a SQLite error means to callers: Damaged or Refused for good (the CLI's exit 1 or 5,
    the CNI plugin's error, not 11), Unavailable (waited out, "try again") for the rest: a file
    another process holds locked, an I/O error, a full disk."""
    code = (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF
    if code in _DAMAGED:
        return Damaged(f"registry {path}: {e}: the file is damaged: restore it from a backup or remove it")
    if code in _REFUSED:
        try:
            ro = os.statvfs(os.path.dirname(path) or ".").f_flag & os.ST_RDONLY
        except OSError:
            ro = False
        return Refused(f"registry {path}: {e}" + (" (a read-only file system)" if ro else ""))
    return Unavailable(f"registry {path}: {e}")


class SqliteKV(KV):
    def __init__(self, path: str):
        self.url = f"sqlite://{path}"
        self.path = path
        d = os.path.dirname(path)
        try:
            os.makedirs(d or ".", mode=0o700, exist_ok=True)
        except OSError as e:       # a file where a directory must be, no permission: said, never a traceback
            raise Refused(f"registry {path}: cannot make its directory {d}: {e.strerror or e}") from None
        self._lock = threading.RLock()         # the write connection's
        self._rlock = threading.RLock()        # the read connection's
        self._db = self._rdb = None
        self._due = 0.0                        # the first lease deadline the last look found (boot clock)
        try:
            self._db = self._connect()
            with self._lock:
                self._db.executescript(SCHEMA)
                lease_clock.migrate(self._db)
            self._rdb = self._connect()
        except sqlite3.Error as e:
            self.close()
            raise failure(path, e) from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        for lock, db in ((self._lock, self._db), (self._rlock, self._rdb)):
            if db is not None:
                with lock:
                    db.close()

    # --- reads ---------------------------------------------------------------

    def _rev(self, db=None) -> int:
        return (db or self._db).execute("SELECT value FROM meta WHERE name='rev'").fetchone()[0]

    @contextlib.contextmanager
    def _reading(self):
        """One read transaction (one snapshot of the file) on the read connection, lapsed
        leases' keys deleted first if that can be done at once; yields the connection."""
        self._expire_if_due()
        with self._rlock:
            self._rdb.execute("BEGIN")
            try:
                yield self._rdb
            finally:
                self._rdb.execute("COMMIT")

    def _select(self, where: str, args) -> tuple[int, list[Item]]:
        try:
            with self._reading() as db:   # keys of a lease past its deadline are gone, deleted yet or not
                alive, now = Clock().alive()
                rows = db.execute(f"SELECT key, value, mod_rev, create_rev, lease FROM kv WHERE ({where}) "
                                  f"AND (lease = 0 OR lease IN (SELECT id FROM leases WHERE {alive})) "
                                  "ORDER BY key", (*args, *now)).fetchall()
                rev = self._rev(db)
        except sqlite3.Error as e:
            raise failure(self.path, e) from None
        return rev, [Item(k, bytes(v), m, c, lease) for k, v, m, c, lease in rows]

    def range(self, prefix: str) -> tuple[int, list[Item]]:
        # Keys are ASCII paths: [prefix, prefix + U+FFFF) covers every key under it.
        return self._select("key >= ? AND key < ?", (prefix, prefix + "\uffff"))

    def range_exact(self, key: str) -> tuple[int, list[Item]]:
        return self._select("key = ?", (key,))

    # --- writes --------------------------------------------------------------

    def _write(self, fn):
        """Run fn(cursor, new_rev) in one IMMEDIATE transaction; fn returns
        False to roll back (a failed compare). Returns (ok, revision)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    rev = self._rev() + 1
                    self._expire(rev)
                    ok = fn(rev)
                    if ok:
                        self._db.execute("UPDATE meta SET value=? WHERE name='rev'", (rev,))
                        self._db.execute("COMMIT")
                        return True, rev
                    self._db.execute("ROLLBACK")
                    return False, rev - 1
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise failure(self.path, e) from None

    def _log(self, rev: int, key: str, value) -> None:
        self._db.execute("INSERT INTO events (rev, key, value) VALUES (?, ?, ?)", (rev, key, value))

    def _delete_key(self, rev: int, key: str) -> None:
        if self._db.execute("DELETE FROM kv WHERE key=?", (key,)).rowcount:
            self._log(rev, key, None)

    def _expire(self, rev: int) -> bool:
        alive, now = Clock().alive()
        dead = [r[0] for r in self._db.execute(f"SELECT id FROM leases WHERE NOT {alive}", now)]
        for lease in dead:
            for (key,) in self._db.execute("SELECT key FROM kv WHERE lease=?", (lease,)).fetchall():
                self._delete_key(rev, key)
            self._db.execute("DELETE FROM leases WHERE id=?", (lease,))
        return bool(dead)

    def _expire_if_due(self) -> None:
        """Before a read: a lease past its deadline has its keys deleted (and the deletions
        logged for watches), if that can be done now. Never waited for: reads leave such
        keys out anyway, and the next write of any process deletes them."""
        with self._rlock:          # _due set in the order the reads were made: an older one never last
            first = self._rdb.execute(*Clock().due()).fetchone()[0]
            self._due = due = first if first is not None else float("inf")
        if due >= lease_clock.boot_s() or not self._lock.acquire(blocking=False):
            return                         # none due, or a write of ours under way (it expires them)
        try:
            self._db.execute("PRAGMA busy_timeout=0")
            try:
                self._write(lambda rev: True)      # _write expires first
            except Unavailable:
                pass                       # another process is writing: it expires them
            finally:
                self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        finally:
            self._lock.release()

    def commit(self, txn: Txn) -> tuple[bool, int]:
        def apply(rev: int) -> bool:
            for key, want in txn.compares:
                row = self._db.execute("SELECT mod_rev FROM kv WHERE key=?", (key,)).fetchone()
                if (row[0] if row else 0) != want:
                    return False
            for key, value, lease in txn.puts:
                if lease and not self._db.execute("SELECT 1 FROM leases WHERE id=?", (lease,)).fetchone():
                    raise Unavailable(f"lease {lease} has expired")
                self._db.execute(
                    "INSERT INTO kv (key, value, create_rev, mod_rev, lease) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value, mod_rev=excluded.mod_rev, "
                    "lease=excluded.lease", (key, value, rev, rev, lease))
                self._log(rev, key, value)
            for key in txn.deletes:
                self._delete_key(rev, key)
            self._trim()
            return True
        return self._write(apply)

    def _trim(self) -> None:
        last = self._db.execute("SELECT max(id) FROM events").fetchone()[0] or 0
        if last % 4096 == 0 and last > KEEP_EVENTS:
            cut = self._db.execute("SELECT rev FROM events WHERE id=?", (last - KEEP_EVENTS,)).fetchone()
            if cut:
                self._db.execute("DELETE FROM events WHERE rev <= ?", (cut[0],))
                self._db.execute("UPDATE meta SET value=? WHERE name='compacted'", (cut[0],))

    # --- leases --------------------------------------------------------------

    def lease_grant(self, ttl: int) -> int:
        out = []

        def grant(rev: int) -> bool:
            cur = self._db.execute(*Clock().grant(ttl))
            out.append(cur.lastrowid)
            return True
        self._write(grant)
        return out[0]

    def lease_keepalive(self, lease: int, timeout: float | None = None) -> bool:
        out = []

        def renew(rev: int) -> bool:
            cur = self._db.execute(*Clock().renew(lease))
            out.append(cur.rowcount == 1)
            return True
        self._write(renew)
        return out[0]

    def lease_revoke(self, lease: int) -> None:
        def revoke(rev: int) -> bool:
            for (key,) in self._db.execute("SELECT key FROM kv WHERE lease=?", (lease,)).fetchall():
                self._delete_key(rev, key)
            self._db.execute("DELETE FROM leases WHERE id=?", (lease,))
            return True
        self._write(revoke)

    # --- watch ---------------------------------------------------------------

    def watch(self, prefix: str, start_rev: int):
        from dataplane.registry.kv_sqlite_watch import SqliteWatch  # noqa: PLC0415 - it imports us
        return SqliteWatch(self, prefix, start_rev)

    def version(self) -> int:
        """SQLite's data_version of the read connection: it moves with every commit of any other
        connection to the file (this process's writes go through the other one)."""
        with self._rlock:
            return self._rdb.execute("PRAGMA data_version").fetchone()[0]

    def quiet(self, seen: int | None) -> tuple[bool, int]:
        """(Nothing committed to the file since version() read `seen` and no lease is due; the
        version now). A watch's poll is this alone while the file is quiet: an idle agent's
        polls took 2.2% of a CPU as full reads of the change log (/tmp script, 2026-12-06)."""
        now = self.version()
        return now == seen and lease_clock.boot_s() < self._due, now
