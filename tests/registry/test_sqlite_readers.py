"""A write of this process that waits for another process's lock on the SQLite file
holds up none of this process's reads or watches (kv_sqlite.py: a connection for
writes, one for reads). Before, one connection and one lock served them all, so an
agent whose `endpoint add` waited to write also stopped reading: punt lookups, the
watch (which then looked stuck), the snapshot."""

from __future__ import annotations

import threading
import time

from dataplane.registry import Unavailable, open_registry
from dataplane.registry.kv import Txn
from dataplane.registry.store import PREFIX


def test_a_waiting_write_holds_up_no_read_or_watch(tmp_path):
    url = f"sqlite://{tmp_path}/registry.db"
    reg, other = open_registry(url), open_registry(url)
    try:
        reg.network_create("n1", 300, subnet="10.30.0.0/24")
        rev = reg.kv.range(PREFIX)[0]
        watch = reg.kv.watch(PREFIX, rev + 1)
        reg.kv._db.execute("PRAGMA busy_timeout=4000")
        other.kv._db.execute("BEGIN IMMEDIATE")          # another process's write under way
        waited = []

        def write():
            t0 = time.monotonic()
            try:
                reg.kv.commit(Txn(puts=[(PREFIX + "x", b"1", 0)]))
            except Unavailable:
                pass
            waited.append(time.monotonic() - t0)
        t = threading.Thread(target=write)
        t.start()
        try:
            time.sleep(0.3)
            t0 = time.monotonic()
            assert reg.network("n1").vni == 300
            read_s = time.monotonic() - t0
            assert read_s < 1.0, f"the read waited {read_s:.1f} s on this process's own waiting write"
            assert t.is_alive(), "the write did not wait: the test proves nothing"
            other.kv._db.execute("ROLLBACK")             # let the write go: the watch then sees it
            events = next(watch)
            assert [e.key for e in events] == [PREFIX + "x"]
        finally:
            if other.kv._db.in_transaction:
                other.kv._db.execute("ROLLBACK")
            t.join(10)
            watch.close()
        assert waited and waited[0] >= 0.3
    finally:
        other.close()
        reg.close()
