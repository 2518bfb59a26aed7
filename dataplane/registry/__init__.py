"""Endpoint registry: `open_registry(url)` for sqlite:///path, etcd://host:port[,host:port]
or etcds://host:port[,...]?ca=...&cert=...&key=...&user=...&password-file=... (etcd_access.py)."""

from __future__ import annotations

import os

from dataplane.core.errors import UsageError
from dataplane.registry import etcd_access
from dataplane.registry.kv import Compacted, Damaged, Full, Refused, Unavailable
from dataplane.registry.records import Endpoint, Host, Network
from dataplane.registry.store import Change, Registry, Snapshot, change

BUILTIN_URL = "sqlite:///var/lib/dataplane/registry.db"
DEFAULT_URL = os.environ.get("DATAPLANE_REGISTRY") or BUILTIN_URL

__all__ = ["DEFAULT_URL", "Change", "Compacted", "Endpoint", "Host", "Network", "Registry", "Snapshot",
           "Damaged", "Full", "Refused", "Unavailable", "change", "open_registry", "parse_url"]


def parse_url(url: str) -> tuple[str, object]:
    """("sqlite", path), ("etcd", [(host, port), ...]) or ("etcds", EtcdAccess), every
    file an etcds URL names read; UsageError otherwise."""
    parts = etcd_access.split(url or "")
    if parts.scheme == "sqlite":
        path = parts.path
        if parts.netloc or not path.startswith("/") or path.endswith("/"):
            raise UsageError(f"bad registry {url!r}: expected sqlite:///absolute/path.db")
        return "sqlite", path
    if parts.scheme == "etcd":
        return "etcd", etcd_access.parse(url).endpoints
    if parts.scheme == "etcds":
        return "etcds", etcd_access.parse(url)
    raise UsageError(f"bad registry {url!r}: use sqlite:///path, etcd://host:port or etcds://host:port?ca=...")


def open_registry(url: str | None = None, watch_deadline_s: float | None = None) -> Registry:
    """watch_deadline_s (etcd): a watch silent for that long is dead (the agent passes its
    lease TTL, at most agent.main.WATCH_DEADLINE_MAX_S: the other members keep the lease alive
    while the watch's member is gone)."""
    kind, where = parse_url(url or DEFAULT_URL)
    if kind == "sqlite":
        from dataplane.registry.kv_sqlite import SqliteKV  # noqa: PLC0415
        return Registry(SqliteKV(where))
    from dataplane.registry.kv_etcd import EtcdKV  # noqa: PLC0415
    kw = {} if watch_deadline_s is None else {"watch_deadline_s": watch_deadline_s}
    if kind == "etcds":
        kw.update(tls=where.tls, user=where.user, password=where.password())
        where = where.endpoints
    return Registry(EtcdKV(where, **kw))
