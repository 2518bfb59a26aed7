"""The SQLite registry's lease deadlines, on the boot clock.

Every process that shares the file runs on one machine, under one kernel: CLOCK_BOOTTIME (suspend
included) is one clock to all of them, and NTP does not step it. Deadlines in wall time did: a
clock stepped forward at an early boot (a machine without a battery-backed clock, a VM resumed)
ended every lease at once, and each host's record was deleted and written again; stepped back, a
dead host's lease was kept alive for as long as the step. The file outlives a reboot and the boot
clock does not, so a deadline names its boot (/proc/sys/kernel/random/boot_id): a lease of
another boot is over, its holder having died with that boot.

Older versions of the package may share the file during an upgrade (the CLI is new at once, an
agent once restarted). They write and read `deadline` in wall time, and we go on writing it. A
lease we renewed has `wall_set` equal to `deadline`; one an older version granted (no `boot`) or
renewed since (`deadline` moved) is judged on wall time as that version judges it.
"""

from __future__ import annotations

import functools
import sqlite3
import time

COLUMNS = (("boot", "TEXT"), ("bdeadline", "REAL"), ("wall_set", "REAL"))
OURS = "(boot IS NOT NULL AND deadline = wall_set)"
# Whether a lease row is alive (arguments: boot id, boot clock, wall clock).
_ALIVE = f"(CASE WHEN {OURS} THEN (boot = ? AND bdeadline >= ?) ELSE deadline >= ? END)"
# The boot-clock time of the first lease to end (0: one of another boot, over now); boot id, wall, boot.
_DUE = (f"SELECT MIN(CASE WHEN {OURS} THEN (CASE WHEN boot = ? THEN bdeadline ELSE 0 END) "
        "ELSE deadline - ? + ? END) FROM leases")
_GRANT = "INSERT INTO leases (ttl, deadline, wall_set, boot, bdeadline) VALUES (?, ?, ?, ?, ?)"
_RENEW = "UPDATE leases SET deadline = ? + ttl, wall_set = ? + ttl, boot = ?, bdeadline = ? + ttl WHERE id=?"


def _wall() -> float:
    return time.time()


def boot_s() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@functools.cache
def _boot_id() -> str | None:
    """This boot's id; None where it cannot be read, or where this process's boot clock is not
    the machine's (a time namespace that offsets it): such a process judges and writes leases in
    wall time, as an older version does. (Its own id for each process would make each take the
    others' leases for another boot's.)"""
    try:
        with open("/proc/self/timens_offsets") as f:
            if any(line.split()[0] == "boottime" and line.split()[1:] != ["0", "0"] for line in f if line.strip()):
                return None
    except OSError:
        pass                        # no time namespaces in this kernel
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


class Clock:
    """The readings one decision takes, read once, and the statements that use them: (SQL, arguments)."""

    def __init__(self):
        self.boot, self.b, self.w = _boot_id(), boot_s(), _wall()

    def alive(self) -> tuple[str, tuple]:
        """A condition on a `leases` row: it is alive."""
        if self.boot is None:
            return "(deadline >= ?)", (self.w,)
        return _ALIVE, (self.boot, self.b, self.w)

    def due(self) -> tuple[str, tuple]:
        """A query: the boot-clock time the first lease ends (None: no lease)."""
        if self.boot is None:
            return "SELECT MIN(deadline - ? + ?) FROM leases", (self.w, self.b)
        return _DUE, (self.boot, self.w, self.b)

    def grant(self, ttl: int) -> tuple[str, tuple]:
        if self.boot is None:
            return "INSERT INTO leases (ttl, deadline) VALUES (?, ?)", (ttl, self.w + ttl)
        return _GRANT, (ttl, self.w + ttl, self.w + ttl, self.boot, self.b + ttl)

    def renew(self, lease: int) -> tuple[str, tuple]:
        if self.boot is None:
            return "UPDATE leases SET deadline = ? + ttl WHERE id=?", (self.w, lease)
        return _RENEW, (self.w, self.w, self.boot, self.b, lease)


def migrate(db: sqlite3.Connection) -> None:
    """The lease table of an older version's file given the columns (once, under the write lock)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(leases)")}
    missing = [(n, t) for n, t in COLUMNS if n not in have]
    if not missing:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        have = {row[1] for row in db.execute("PRAGMA table_info(leases)")}   # another process may have
        for name, kind in COLUMNS:
            if name not in have:
                db.execute(f"ALTER TABLE leases ADD COLUMN {name} {kind}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
