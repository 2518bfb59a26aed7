"""The key-value contract both registry backends keep (etcd's model, kept small).

Every write bumps one store-wide revision; a watch replays the changes after
a revision in order; a lease makes keys vanish when its holder stops renewing
it. The registry (store.py) is written only against this, so the SQLite
file and a real etcd pass the same tests.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from dataplane.core.errors import DataplaneError


class Unavailable(DataplaneError):
    """The store cannot be reached (etcd down, file unreadable)."""

    exit_code = 7


class Full(Unavailable):
    """etcd is out of space (its NOSPACE alarm): it refuses every write, on every member, until
    an operator compacts its history, defragments the members and disarms the alarm. Reads,
    watches and lease renewals go on, so an agent keeps serving; a write fails at once with
    what to do, not after retrying for backoff.LOST_WINDOW_S."""


def transient(e: Exception) -> bool:
    """The store could not take a request now (unreachable, no leader, a reply lost): worth
    trying again soon. Not a refusal, not a full store: those wait for an operator."""
    return isinstance(e, Unavailable) and not isinstance(e, (Refused, Full))


class Refused(Unavailable):
    """The store answered and said no: a TLS handshake it failed, a login it
    refused, a permission the user lacks. Retrying the same thing cannot help
    (an Unavailable still, so callers that wait out outages wait this out too)."""

    exit_code = 5


class Damaged(Refused):
    """The store's own data is broken (a SQLite file that is not a database, or corrupt):
    restore it from a backup or remove it."""

    exit_code = 1


class Compacted(DataplaneError):
    """A watch asked for history the store no longer keeps: resync from a snapshot."""


class Item(NamedTuple):
    """One key as read (a tuple: a snapshot builds 300,000 of them, 4x faster than a dataclass)."""
    key: str
    value: bytes
    mod_rev: int
    create_rev: int
    lease: int = 0


# One key of a bulk read (KV.range_many): (key, value), the key's bytes as stored
# (not necessarily UTF-8). A plain tuple: half the cost of a NamedTuple to make.
Row = tuple[bytes, bytes]


@dataclass(frozen=True)
class Event:
    key: str
    value: bytes | None      # None: the key was deleted
    rev: int


@dataclass
class Txn:
    """Compare-and-swap: if every compare holds, apply puts and deletes atomically.
    A compare is (key, mod_rev): 0 means "the key must not exist"."""
    compares: list[tuple[str, int]] = field(default_factory=list)
    puts: list[tuple[str, bytes, int]] = field(default_factory=list)   # key, value, lease (0: none)
    deletes: list[str] = field(default_factory=list)

    def absent(self, key: str) -> "Txn":
        self.compares.append((key, 0))
        return self

    def unchanged(self, key: str, mod_rev: int) -> "Txn":
        self.compares.append((key, mod_rev))
        return self

    def put(self, key: str, value: bytes, lease: int = 0) -> "Txn":
        self.puts.append((key, value, lease))
        return self

    def delete(self, key: str) -> "Txn":
        self.deletes.append(key)
        return self


class KV:
    """Interface; see kv_sqlite.SqliteKV and kv_etcd.EtcdKV."""

    url: str
    ranges_apart = False    # range_many reads each prefix on its own (else their common prefix, once)

    def range(self, prefix: str) -> tuple[int, list[Item]]:
        """Every key under prefix and the revision they were read at."""
        raise NotImplementedError

    def get(self, key: str) -> Item | None:
        _, items = self.range_exact(key)
        return items[0] if items else None

    def range_exact(self, key: str) -> tuple[int, list[Item]]:
        raise NotImplementedError

    def range_many(self, prefixes: list[str], then=None) -> tuple[int, list]:
        """Every key under each prefix, all read at one revision, as Rows (key and
        value only: the cheapest thing to make 300,000 of, which is what a
        snapshot reads); with then, then(i, rows) of prefix i in place of its
        rows (etcd calls it as each read arrives, beside the reads still under
        way). Here: one range over their common prefix, split."""
        common = os.path.commonprefix(list(prefixes))
        rev, items = self.range(common)
        parts = [[(it.key.encode(errors="surrogateescape"), it.value) for it in items if it.key.startswith(p)]
                 for p in prefixes]
        return rev, [then(i, part) for i, part in enumerate(parts)] if then else parts

    def commit(self, txn: Txn) -> tuple[bool, int]:
        """(succeeded, revision after)."""
        raise NotImplementedError

    def lease_grant(self, ttl: int) -> int:
        raise NotImplementedError

    def lease_keepalive(self, lease: int, timeout: float | None = None) -> bool:
        """False when the lease has expired (its keys are gone). timeout: how long one
        server may take to answer before the next is asked (a short TTL wants it short)."""
        raise NotImplementedError

    def lease_revoke(self, lease: int) -> None:
        raise NotImplementedError

    def watch(self, prefix: str, start_rev: int) -> "Watch":
        """A Watch: iterate for lists of Events (empty list on idle ticks); raises
        Compacted or Unavailable, never blocks forever on a dead store.
        close() ends it from another thread. To resume after Unavailable without
        a resync, watch again from the old watch's resume_rev(); Compacted then
        means that history is gone: take a snapshot."""
        raise NotImplementedError

    def transport_counts(self) -> dict:
        """How requests went, for `agent status` and the metrics (etcd: over gRPC or
        through the gateway). Nothing here."""
        return {}

    def open_channels(self, wait_s: float = 0.0) -> None:
        """For a process that writes often (an agent): connect whatever makes its
        writes cheaper, in the background (etcd: gRPC channels), waiting at most
        wait_s for it. Nothing here."""

    def close(self) -> None:
        pass


class Watch:
    """What KV.watch returns. Besides iteration it tells how current it is:

    last_rev    every event at or below it has been delivered (starts at
                start_rev - 1); resume with kv.watch(prefix, last_rev + 1)
    last_heard  time.monotonic() of the last message from the store (events,
                progress notifications, answers to progress requests; for
                SQLite, each poll of the file)

    Both are plain attributes, safe to read from another thread.
    """

    last_rev: int = 0
    last_heard: float = 0.0
    transport: str | None = None     # etcd: "grpc" or "gateway" (for `agent status`)

    def resume_rev(self) -> int:
        """The start_rev for a new watch that continues this one: no loss, no repeat."""
        return self.last_rev + 1

    def lag_s(self, now: float | None = None) -> float:
        """Seconds since the store was last heard from on this watch (watch_lag_s)."""
        return max(0.0, (time.monotonic() if now is None else now) - self.last_heard)

    def close(self) -> None:
        pass

    def __iter__(self):
        return self

    def __next__(self) -> list[Event]:
        raise NotImplementedError
