"""The KV contract on a real etcd (3.4+), through its JSON gateway with etcd3gw.

etcd3gw provides the session, API-path discovery and errors; the calls that
need the response header (revision) or a cancellable stream are made here on
its session: range, txn and watch. Several endpoints may be given; the client
moves to the next one when a call cannot connect.
"""

from __future__ import annotations

import base64
import json
import socket
import threading

from dataplane.registry.kv import KV, Compacted, Event, Item, Txn, Unavailable

TIMEOUT_S = 3.0


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text) if text else b""


def _range_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return _b64(bytes(raw))


class EtcdKV(KV):
    def __init__(self, endpoints: list[tuple[str, int]]):
        try:
            import etcd3gw  # noqa: PLC0415 - only the etcd backend needs it
            from etcd3gw import exceptions  # noqa: PLC0415
        except ImportError:
            raise Unavailable("etcd3gw is not installed: run scripts/bootstrap.sh") from None
        self._etcd3gw, self._exc = etcd3gw, exceptions
        self.endpoints = list(endpoints)
        self.url = "etcd://" + ",".join(f"{h}:{p}" for h, p in self.endpoints)
        self._lock = threading.Lock()
        self._current = 0
        self._client = self._make(0)

    def _make(self, i: int):
        host, port = self.endpoints[i]
        return self._etcd3gw.Etcd3Client(host=host, port=port, timeout=TIMEOUT_S, api_path="/v3/")

    def _post(self, path: str, payload: dict) -> dict:
        """POST to the current endpoint, trying each other one once on failure."""
        last = None
        for _ in range(len(self.endpoints)):
            client = self._client
            try:
                return client.post(client.get_url(path), json=payload)
            except (self._exc.ConnectionFailedError, self._exc.ConnectionTimeoutError) as e:
                last = e
                with self._lock:
                    self._current = (self._current + 1) % len(self.endpoints)
                    self._client = self._make(self._current)
            except self._exc.Etcd3Exception as e:
                raise Unavailable(f"etcd {path}: {e}") from None
        raise Unavailable(f"etcd unreachable at {self.url}: {last}")

    # --- reads ---------------------------------------------------------------

    @staticmethod
    def _items(resp: dict) -> tuple[int, list[Item]]:
        rev = int(resp["header"]["revision"])
        items = [Item(_unb64(kv["key"]).decode(), _unb64(kv.get("value", "")), int(kv["mod_revision"]),
                      int(kv["create_revision"]), int(kv.get("lease", 0))) for kv in resp.get("kvs", [])]
        return rev, items

    def range(self, prefix: str) -> tuple[int, list[Item]]:
        return self._items(self._post("/kv/range", {"key": _b64(prefix), "range_end": _range_end(prefix)}))

    def range_exact(self, key: str) -> tuple[int, list[Item]]:
        return self._items(self._post("/kv/range", {"key": _b64(key)}))

    # --- writes --------------------------------------------------------------

    def commit(self, txn: Txn) -> tuple[bool, int]:
        compare = [{"key": _b64(k), "target": "MOD", "result": "EQUAL", "mod_revision": str(rev)}
                   for k, rev in txn.compares]
        success = [{"request_put": {"key": _b64(k), "value": _b64(v), **({"lease": str(lease)} if lease else {})}}
                   for k, v, lease in txn.puts]
        success += [{"request_delete_range": {"key": _b64(k)}} for k in txn.deletes]
        resp = self._post("/kv/txn", {"compare": compare, "success": success})
        return bool(resp.get("succeeded")), int(resp["header"]["revision"])

    # --- leases --------------------------------------------------------------

    def lease_grant(self, ttl: int) -> int:
        return int(self._post("/lease/grant", {"TTL": ttl})["ID"])

    def lease_keepalive(self, lease: int) -> bool:
        resp = self._post("/lease/keepalive", {"ID": str(lease)})
        return int(resp.get("result", {}).get("TTL", -1)) > 0

    def lease_revoke(self, lease: int) -> None:
        try:
            self._post("/lease/revoke", {"ID": str(lease)})
        except Unavailable:
            pass  # expired already, or etcd gone: either way the keys go with the lease

    # --- watch ---------------------------------------------------------------

    def watch(self, prefix: str, start_rev: int):
        return _EtcdWatch(self, prefix, start_rev)


class _EtcdWatch:
    """One streaming watch; ends with Unavailable when the stream breaks."""

    def __init__(self, kv: EtcdKV, prefix: str, start_rev: int):
        client = kv._client
        req = {"create_request": {"key": _b64(prefix), "range_end": _range_end(prefix),
                                  "start_revision": str(start_rev)}}
        try:
            self._resp = client.session.post(client.get_url("/watch"), json=req, stream=True,
                                             timeout=(TIMEOUT_S, None))
        except Exception as e:  # requests' connection errors
            raise Unavailable(f"etcd watch at {kv.url}: {e}") from None
        self._lines = self._resp.iter_lines()
        self._closed = False

    def close(self) -> None:
        self._closed = True
        try:
            s = socket.fromfd(self._resp.raw.fileno(), socket.AF_INET, socket.SOCK_STREAM)
            s.shutdown(socket.SHUT_RDWR)
            s.close()
        except Exception:  # noqa: S110 - already closed
            pass
        self._resp.close()

    def __iter__(self):
        return self

    def __next__(self) -> list[Event]:
        while True:
            try:
                line = next(self._lines)
            except StopIteration:
                if self._closed:
                    raise
                raise Unavailable("etcd watch stream ended") from None
            except Exception as e:
                if self._closed:
                    raise StopIteration from None
                raise Unavailable(f"etcd watch stream broke: {e}") from None
            if not line.strip():
                continue
            msg = json.loads(line)
            if "error" in msg:
                raise Unavailable(f"etcd watch: {msg['error']}")
            res = msg.get("result", {})
            if int(res.get("compact_revision", 0) or 0):
                raise Compacted(f"etcd compacted history up to {res['compact_revision']}")
            if res.get("canceled"):
                raise Unavailable(f"etcd cancelled the watch: {res.get('cancel_reason', '')}")
            events = []
            for ev in res.get("events", []):
                kv = ev["kv"]
                value = None if ev.get("type") == "DELETE" else _unb64(kv.get("value", ""))
                events.append(Event(_unb64(kv["key"]).decode(), value, int(kv["mod_revision"])))
            if events:
                return events
