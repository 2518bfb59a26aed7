"""The SQLite registry's leases on the boot clock (registry/lease_clock.py). Wall time is what
NTP steps at an early boot: the tests step it for this process (time.time), as a step would for
every process on the machine, and read the file through a second connection too. Before, a step
forward ended every lease at once and a step back kept a dead host's lease alive for as long as
the step."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import pytest

from dataplane.registry import lease_clock
from dataplane.registry.kv import Txn
from dataplane.registry.kv_sqlite import SqliteKV

HOUR = 3600.0


@pytest.fixture
def kv(tmp_path):
    k = SqliteKV(str(tmp_path / "reg.db"))
    yield k
    k.close()


def _step(monkeypatch, seconds: float) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + seconds)


def _leased(kv: SqliteKV, ttl: int, key: str = "hosts/h1") -> int:
    lease = kv.lease_grant(ttl)
    assert kv.commit(Txn().put(key, b"alive", lease))[0]
    return lease


def _keys(path) -> list[str]:
    other = SqliteKV(str(path))        # another process's view of the file
    try:
        return [i.key for i in other.range("hosts/")[1]]
    finally:
        other.close()


def test_a_wall_clock_stepped_forward_ends_no_lease(kv, tmp_path, monkeypatch):
    lease = _leased(kv, 10)
    _step(monkeypatch, HOUR)
    assert _keys(tmp_path / "reg.db") == ["hosts/h1"]
    assert kv.lease_keepalive(lease)
    assert [i.key for i in kv.range("hosts/")[1]] == ["hosts/h1"]


def test_a_wall_clock_stepped_back_keeps_no_dead_lease(kv, tmp_path, monkeypatch):
    _leased(kv, 1)
    _step(monkeypatch, -HOUR)
    time.sleep(1.3)                    # the TTL passes; nobody renews
    assert _keys(tmp_path / "reg.db") == []
    assert kv.range("hosts/")[1] == []


def test_a_lease_of_another_boot_is_over(kv, tmp_path, monkeypatch):
    _leased(kv, 600)
    lease_clock._boot_id.cache_clear()
    monkeypatch.setattr(lease_clock, "_boot_id", lambda: "another-boot")
    assert _keys(tmp_path / "reg.db") == [], "its holder died with its boot"


def test_an_older_versions_leases_are_judged_on_wall_time(kv, tmp_path):
    """During an upgrade an older CLI or agent shares the file: its grants and renewals write
    `deadline` (wall time) alone, and are honoured as that version honours them."""
    db = sqlite3.connect(str(tmp_path / "reg.db"), isolation_level=None)
    try:
        old = db.execute("INSERT INTO leases (ttl, deadline) VALUES (?, ?)", (60, time.time() + 60)).lastrowid
        assert kv.commit(Txn().put("hosts/old", b"x", old))[0]
        ours = _leased(kv, 1, "hosts/new")
        # An older agent renewing a lease it holds (granted by this version before a downgrade).
        db.execute("UPDATE leases SET deadline = ? + ttl WHERE id=?", (time.time() + 60, ours))
        time.sleep(1.3)
        assert _keys(tmp_path / "reg.db") == ["hosts/new", "hosts/old"]
        db.execute("UPDATE leases SET deadline = ? WHERE id=?", (time.time() - 1, old))
        assert _keys(tmp_path / "reg.db") == ["hosts/new"]
    finally:
        db.close()


def test_an_older_versions_file_gets_the_columns_and_keeps_its_leases(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(str(path), isolation_level=None)
    db.executescript("""
        CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
                         mod_rev INTEGER NOT NULL, lease INTEGER NOT NULL);
        CREATE TABLE leases (id INTEGER PRIMARY KEY AUTOINCREMENT, ttl INTEGER NOT NULL, deadline REAL NOT NULL);
        CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO meta VALUES ('rev', 5), ('compacted', 0);""")
    db.execute("INSERT INTO leases (ttl, deadline) VALUES (30, ?)", (time.time() + 30,))
    db.execute("INSERT INTO kv VALUES ('hosts/h9', x'00', 4, 4, 1)")
    db.close()
    assert _keys(path) == ["hosts/h9"]
    kv = SqliteKV(str(path))
    try:
        assert kv.lease_keepalive(1), "renewed by this version, on the boot clock from now on"
        cols = [r[1] for r in kv._db.execute("PRAGMA table_info(leases)")]
        assert cols[-3:] == ["boot", "bdeadline", "wall_set"]
        assert kv._db.execute("SELECT boot FROM leases WHERE id=1").fetchone()[0] == lease_clock._boot_id()
    finally:
        kv.close()


def test_a_process_that_cannot_read_the_boot_id_judges_on_wall_time_and_takes_no_lease(kv, tmp_path, monkeypatch):
    """Without a boot id (no procfs, or a boot clock a time namespace offsets) a process writes and
    judges leases in wall time, as an older version does: with an id of its own it would have
    taken every other process's leases for another boot's, and deleted them."""
    _leased(kv, 600, "hosts/known")
    monkeypatch.setattr(lease_clock, "_boot_id", lambda: None)
    assert _keys(tmp_path / "reg.db") == ["hosts/known"]
    _leased(kv, 600, "hosts/unknown")
    monkeypatch.undo()
    assert _keys(tmp_path / "reg.db") == ["hosts/known", "hosts/unknown"]


def test_a_time_namespace_that_offsets_the_boot_clock_is_no_boot_of_its_own():
    from tests.conftest import require_privileges
    require_privileges()
    r = subprocess.run(["unshare", "--time", "--boottime", "100000", sys.executable, "-c",
                        "from dataplane.registry import lease_clock; print(lease_clock._boot_id())"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "None", (r.stdout, r.stderr)
    assert lease_clock._boot_id() not in (None, "None")


def test_a_watch_reports_a_lapsed_lease_on_time_after_a_step_back(kv, monkeypatch):
    """Nobody writes or reads: the watch's own looks find the deadline passed (the file quiet and
    the watch asleep until then), on the boot clock; in wall time stepped back an hour, an hour on."""
    from dataplane.registry import kv_sqlite_watch
    from tests.registry.test_sqlite_readers import _wait_for_key
    monkeypatch.setattr(kv_sqlite_watch, "IDLE_S", 60.0)
    rev = kv.range("hosts/")[0]
    _leased(kv, 1)
    _step(monkeypatch, -HOUR)
    assert _wait_for_key(kv.watch("hosts/", rev + 1), "hosts/h1", deleted=True)
