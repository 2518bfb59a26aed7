"""A write of this process that waits for another process's lock on the SQLite file
holds up none of this process's reads or watches (kv_sqlite.py: a connection for
writes, one for reads), also when a lease has lapsed meanwhile. Before, one
connection and one lock served them all, so an agent whose `endpoint add` waited to
write also stopped reading: punt look-ups, the watch (which then looked stuck), the
snapshot."""

from __future__ import annotations

import contextlib
import threading
import time

from dataplane.registry import Unavailable, kv_sqlite_watch, open_registry
from dataplane.registry.kv import Txn
from dataplane.registry.store import PREFIX


@contextlib.contextmanager
def write_waiting(url, reg):
    """For the with-block: another process's write holds the file's write lock, and a write
    of reg's waits (up to 4 s) for it; yields that write's thread."""
    other = open_registry(url)
    other.kv._db.execute("BEGIN IMMEDIATE")
    reg.kv._db.execute("PRAGMA busy_timeout=4000")

    def write():
        try:
            reg.kv.commit(Txn(puts=[(PREFIX + "x", b"1", 0)]))
        except Unavailable:
            pass
    t = threading.Thread(target=write)
    t.start()
    try:
        time.sleep(0.3)
        yield t
    finally:
        other.kv._db.execute("ROLLBACK")
        other.close()
        t.join(10)


def _timed(fn):
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


def test_a_waiting_write_holds_up_no_read_or_watch(tmp_path):
    url = f"sqlite://{tmp_path}/registry.db"
    reg = open_registry(url)
    try:
        rev = reg.kv.range(PREFIX)[0]
        reg.network_create("n1", 300, subnet="10.30.0.0/24")     # an event for the watch to bring
        watch = reg.kv.watch(PREFIX, rev + 1)
        with write_waiting(url, reg) as t:
            net, read_s = _timed(lambda: reg.network("n1"))
            events, watch_s = _timed(lambda: next(watch))
            assert t.is_alive(), "the write did not wait: the test proves nothing"
        assert net.vni == 300 and read_s < 1.0, f"the read waited {read_s:.1f} s on this process's waiting write"
        assert events and watch_s < 1.0, f"the watch waited {watch_s:.1f} s"
    finally:
        reg.close()


def test_a_lapsed_lease_is_left_out_of_reads_without_waiting_to_delete_it(tmp_path):
    """Reads used to delete a lapsed lease's keys first, a write: behind a waiting write of
    this process (a keepalive, say: a long stall lapses leases for sure) they waited again."""
    url = f"sqlite://{tmp_path}/registry.db"
    reg = open_registry(url)
    try:
        lease = reg.kv.lease_grant(1)
        _, rev = reg.kv.commit(Txn(puts=[(PREFIX + "leased", b"1", lease), (PREFIX + "kept", b"1", 0)]))
        time.sleep(1.2)                                  # lapsed; nobody wrote since
        with write_waiting(url, reg) as t:
            (_, items), read_s = _timed(lambda: reg.kv.range(PREFIX))
            assert t.is_alive(), "the write did not wait: the test proves nothing"
        assert read_s < 1.0, f"the read waited {read_s:.1f} s"
        assert [i.key for i in items] == [PREFIX + "kept"], "a lapsed lease's key was read"
        # a write (the one that waited, or this one) deleted it, and said so
        reg.kv.commit(Txn(puts=[(PREFIX + "y", b"1", 0)]))
        w = reg.kv.watch(PREFIX, rev + 1)
        keys = []
        while (PREFIX + "y", b"1") not in keys:
            keys += [(e.key, e.value) for e in next(w)]
        w.close()
        assert (PREFIX + "leased", None) in keys, keys
    finally:
        reg.close()


def _wait_for_key(watch, key: str, deleted: bool, timeout: float = 5.0) -> bool:
    """Next events of watch until one for key (deleted or written); False after timeout."""
    result = {}

    def read():
        for batch in watch:
            if any(e.key == key and (e.value is None) == deleted for e in batch):
                result["seen"] = True
                return
    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    watch.close()
    return bool(result)


def test_an_idle_watch_reads_only_the_version_and_still_hears_every_write(tmp_path):
    """While nothing is committed, a watch's poll is SQLite's data_version alone, not a read of
    the change log (an idle agent's polls were 2.2% of a CPU); a write of this process (the other
    connection) or of another process still reaches it."""
    url = f"sqlite://{tmp_path}/registry.db"
    reg, other = open_registry(url), open_registry(url)
    try:
        rev = reg.kv.range(PREFIX)[0]
        reads = []
        reading = reg.kv._reading
        reg.kv._reading = lambda: (reads.append(1), reading())[1]
        w = reg.kv.watch(PREFIX, rev + 1)
        got = []
        t = threading.Thread(target=lambda: [got.extend(b) for b in w], daemon=True)
        t.start()
        time.sleep(0.1)
        before = len(reads)
        time.sleep(0.3)                               # about 60 polls
        assert len(reads) == before, f"{len(reads) - before} reads of the change log while nothing changed"
        for kv, name in ((reg.kv, "mine"), (other.kv, "theirs")):
            kv.commit(Txn(puts=[(PREFIX + name, b"1", 0)]))
            deadline = time.monotonic() + 5
            while PREFIX + name not in [e.key for e in got] and time.monotonic() < deadline:
                time.sleep(0.01)
            assert PREFIX + name in [e.key for e in got], f"the watch missed {name} write"
        w.close()
        t.join(5)
    finally:
        reg.close()
        other.close()


def test_a_lapsed_lease_is_deleted_and_reported_by_the_watch_alone(tmp_path, monkeypatch):
    """Nobody writes or reads after a lease is granted: the watch's own looks notice the deadline
    pass, delete the lease's keys and bring the deletion (a quiet file does not hide it, and a
    watch asleep on the file wakes at the deadline, not only at its longest sleep)."""
    monkeypatch.setattr(kv_sqlite_watch, "IDLE_S", 60.0)
    url = f"sqlite://{tmp_path}/registry.db"
    reg = open_registry(url)
    try:
        rev = reg.kv.range(PREFIX)[0]
        lease = reg.kv.lease_grant(1)
        reg.kv.commit(Txn(puts=[(PREFIX + "leased", b"1", lease)]))
        assert _wait_for_key(reg.kv.watch(PREFIX, rev + 1), PREFIX + "leased", deleted=True)
    finally:
        reg.close()
