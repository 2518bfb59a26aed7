"""The KV contract on a real etcd (3.4+), through its JSON gateway with etcd3gw.

Requests go out on etcd3gw's session of each member, every one bounded by
timeouts. With several members, a request starts at the member that last
answered and moves round robin to the next when one refuses, times out or has
no leader; a txn moves on only if it surely never reached the member, else
its outcome is unknown: Unavailable (and the next call starts further on).
The watch is a WebSocket kept honest by progress requests (see _EtcdWatch).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json

from orjson import loads as _loads   # a snapshot of 100,000 endpoints is ~60 MB of JSON: 3x json's speed
import os
import socket
import struct
import threading
import time

from dataplane.registry.kv import KV, Compacted, Event, Item, Txn, Unavailable, Watch

TIMEOUT_S = 3.0             # to read one answer (and a WebSocket handshake)
CONNECT_TIMEOUT_S = 1.0     # to open a TCP connection to one member
WATCH_DEADLINE_S = 15.0     # a watch that hears nothing for this long is dead
PROBE_KEY = "\x00dataplane-probe"
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text) if text else b""


def _range_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return _b64(bytes(raw))


class _Unsent(Exception):
    """The request never reached the member (refused, unreachable, connect timeout)."""


class _Unknown(Exception):
    """The member may have got the request but did not answer it (timeout, reset, no leader)."""


class EtcdKV(KV):
    def __init__(self, endpoints: list[tuple[str, int]], timeout: float = TIMEOUT_S,
                 connect_timeout: float = CONNECT_TIMEOUT_S, watch_deadline_s: float = WATCH_DEADLINE_S,
                 progress_interval_s: float | None = None, probe_interval_s: float | None = None):
        """A watch that hears nothing for watch_deadline_s raises Unavailable; idle, it asks
        for progress every progress_interval_s (deadline/3), and every probe_interval_s (the
        deadline; 0: never) makes a linearizable read on its member (alive, has a leader)."""
        try:
            import etcd3gw  # noqa: PLC0415 - only the etcd backend needs it
            import requests  # noqa: PLC0415 - etcd3gw's own HTTP client
        except ImportError:
            raise Unavailable("etcd3gw is not installed: run scripts/bootstrap.sh") from None
        if not endpoints:
            raise Unavailable("no etcd endpoints given")
        self._rq = requests.exceptions
        self.endpoints = list(endpoints)
        self.url = "etcd://" + ",".join(f"{h}:{p}" for h, p in self.endpoints)
        self.timeout, self.connect_timeout, self.watch_deadline_s = timeout, connect_timeout, watch_deadline_s
        self.progress_interval_s = float(progress_interval_s or self.watch_deadline_s / 3)
        self.probe_interval_s = float(self.watch_deadline_s if probe_interval_s is None else probe_interval_s)
        self._lock = threading.Lock()
        self._clients = [etcd3gw.Etcd3Client(host=h, port=p, timeout=self.timeout, api_path="/v3/")
                         for h, p in self.endpoints]
        self._current = 0                              # the member to try first
        self._failed_at = [0.0] * len(self.endpoints)  # monotonic time of each member's last failure

    def endpoint(self, i: int | None = None) -> str:
        """host:port of member i (default: the one requests go to first now)."""
        host, port = self.endpoints[self._current if i is None else i]
        return f"{host}:{port}"

    def close(self) -> None:
        for c in self._clients:
            c.session.close()

    def _order(self) -> list[int]:
        """Every member once, from the current one on (round robin)."""
        start, n = self._current, len(self.endpoints)
        return [(start + k) % n for k in range(n)]

    def _failed(self, i: int) -> None:
        with self._lock:
            self._failed_at[i] = time.monotonic()
            if self._current == i:
                self._current = (i + 1) % len(self.endpoints)

    def _send(self, i: int, path: str, payload: dict) -> dict:
        """One request to member i, bounded by connect_timeout + timeout."""
        c, rq = self._clients[i], self._rq
        try:
            resp = c.session.post(c.get_url(path), json=payload, timeout=(self.connect_timeout, self.timeout))
        except rq.RequestException as e:   # urllib3's NewConnectionError: refused, unreachable
            reason = type(getattr(e.args[0] if e.args else None, "reason", None)).__name__
            unsent = isinstance(e, rq.ConnectTimeout) or reason == "NewConnectionError"
            raise (_Unsent if unsent else _Unknown)(str(e)) from None
        if resp.status_code == 200:
            return _loads(resp.content)
        if resp.status_code in (408, 503, 504):   # gRPC Unavailable/DeadlineExceeded: no leader, timed out
            raise _Unknown(f"HTTP {resp.status_code}: {resp.text.strip()}")
        raise Unavailable(f"etcd {path} at {self.endpoint(i)}: HTTP {resp.status_code}: {resp.text.strip()}")

    def _post(self, path: str, payload: dict, idempotent: bool = True) -> dict:
        """POST to the members in turn until one answers. A request that is not
        idempotent moves on only if it never reached the member it tried."""
        last: Exception | None = None
        for i in self._order():
            try:
                out = self._send(i, path, payload)
            except (_Unsent, _Unknown) as e:
                last = e
                self._failed(i)
                if isinstance(e, _Unknown) and not idempotent:
                    raise Unavailable(f"etcd {path} at {self.endpoint(i)}, outcome unknown: {e}") from None
                continue
            self._current = i
            return out
        raise Unavailable(f"etcd unreachable at {self.url}: {last}")

    @staticmethod
    def _items(resp: dict) -> tuple[int, list[Item]]:
        rev = int(resp["header"]["revision"])
        # A key that is not UTF-8 is kept (escaped): parse_item lists it as a bad record.
        items = [Item(_unb64(kv["key"]).decode(errors="surrogateescape"), _unb64(kv.get("value", "")),
                      int(kv["mod_revision"]), int(kv["create_revision"]), int(kv.get("lease", 0)))
                 for kv in resp.get("kvs", [])]
        return rev, items

    def range(self, prefix: str) -> tuple[int, list[Item]]:
        return self._items(self._post("/kv/range", {"key": _b64(prefix), "range_end": _range_end(prefix)}))

    def range_exact(self, key: str) -> tuple[int, list[Item]]:
        return self._items(self._post("/kv/range", {"key": _b64(key)}))

    def commit(self, txn: Txn) -> tuple[bool, int]:
        compare = [{"key": _b64(k), "target": "MOD", "result": "EQUAL", "mod_revision": str(rev)}
                   for k, rev in txn.compares]
        success = [{"request_put": {"key": _b64(k), "value": _b64(v), **({"lease": str(lease)} if lease else {})}}
                   for k, v, lease in txn.puts]
        success += [{"request_delete_range": {"key": _b64(k)}} for k in txn.deletes]
        resp = self._post("/kv/txn", {"compare": compare, "success": success}, idempotent=False)
        return bool(resp.get("succeeded")), int(resp["header"]["revision"])

    def lease_grant(self, ttl: int) -> int:
        # Retried on another member even if the outcome is unknown: a lost grant just expires.
        return int(self._post("/lease/grant", {"TTL": ttl})["ID"])

    def lease_keepalive(self, lease: int) -> bool:
        resp = self._post("/lease/keepalive", {"ID": str(lease)})
        return int(resp.get("result", {}).get("TTL", -1)) > 0

    def lease_revoke(self, lease: int) -> None:
        with contextlib.suppress(Unavailable):   # expired already, or etcd gone: the keys go with the lease
            self._post("/lease/revoke", {"ID": str(lease)})

    def watch(self, prefix: str, start_rev: int) -> Watch:
        return _EtcdWatch(self, prefix, start_rev)


class _EtcdWatch(Watch):
    """One watch on one member, as a WebSocket on /v3/watch.

    Verified on etcd 3.4.23: as a plain HTTP stream, /v3/watch answers only once
    the request body has ended (a chunked body left open gets nothing), so no
    {"progress_request": {}} can follow the create_request. Over WebSocket
    (etcd wraps the gateway in grpc-websocket-proxy) each text message is one
    message of the bidirectional stream: progress requests are answered at once
    (watch_id "-1", the member's revision). progress_notify is asked too, but
    etcd sends those only every --experimental-watch-progress-notify-interval
    (10 min by default). Idle for progress_interval_s, the watch asks for
    progress; hearing nothing for watch_deadline_s raises Unavailable. Every
    probe_interval_s a linearizable read on the member checks it has a leader:
    a member cut off still answers progress requests, and the proxy does not
    pass Grpc-Metadata-Hasleader (the plain stream does).

    last_rev moves with events and the server's own notifications (ordered with
    events), not with answers to progress requests (kept in head_rev): before
    etcd-io/etcd#15237 (newer than 3.4.23) those can run ahead of events not yet
    sent (etcd-io/etcd#15220), and a resume after them would lose events.
    """

    def __init__(self, kv: EtcdKV, prefix: str, start_rev: int):
        self.kv, self.last_rev, self.head_rev = kv, start_rev - 1, 0
        self._closed, self._sock, self._buf, self._parts = False, None, bytearray(), []
        create = {"create_request": {"key": _b64(prefix), "range_end": _range_end(prefix),
                                     "start_revision": str(start_rev), "progress_notify": True}}
        errors = []
        for i in kv._order():
            try:
                self._open(i)
                self._send_frame(1, json.dumps(create).encode())
                break
            except OSError as e:
                errors.append(f"{kv.endpoint(i)}: {e}")
                self._drop()
                kv._failed(i)
        else:
            raise Unavailable(f"etcd watch: no member answered: {'; '.join(errors)}")
        kv._current = i
        self.member = i
        self.last_heard = self._asked = self._probed = self._since = time.monotonic()

    def _open(self, i: int) -> None:
        host, port = self.kv.endpoints[i]
        self._buf = bytearray()
        self._sock = s = socket.create_connection((host, port), timeout=self.kv.connect_timeout)
        s.settimeout(self.kv.timeout)
        key = _b64(os.urandom(16))
        s.sendall((f"GET /v3/watch HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        while b"\r\n\r\n" not in self._buf:
            chunk = s.recv(4096)
            if not chunk or len(self._buf) > 65536:
                raise OSError("connection closed during the WebSocket handshake")
            self._buf += chunk
        head, _, rest = bytes(self._buf).partition(b"\r\n\r\n")
        accept = _b64(hashlib.sha1(key.encode() + _WS_GUID).digest()).encode()
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            raise OSError(f"no WebSocket upgrade: {head.splitlines()[0].decode(errors='replace')}")
        self._buf = bytearray(rest)

    def _drop(self) -> None:
        """Close the socket (this wakes a reader); any use of it after this raises OSError."""
        with contextlib.suppress(OSError, AttributeError):   # not connected, closed, or never opened
            self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(AttributeError):
            self._sock.close()

    def close(self) -> None:
        self._closed = True
        self._drop()

    def _dead(self, why: str) -> Unavailable:
        self.kv._failed(self.member)
        self._drop()
        return Unavailable(f"etcd watch at {self.kv.endpoint(self.member)}: {why}")

    def _send_frame(self, op: int, data: bytes) -> None:
        """One masked frame (client frames must be masked); our messages are < 64 KiB."""
        mask, n = os.urandom(4), len(data)
        head = bytes([0x80 | op]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
        self._sock.sendall(head + mask + bytes(b ^ mask[k & 3] for k, b in enumerate(data)))

    def _frame(self) -> tuple[bool, int, bytes] | None:
        """(fin, opcode, payload) of the next whole frame in the buffer, or None."""
        b = self._buf
        off = 2 if len(b) < 2 or b[1] & 0x7F < 126 else 4 if b[1] & 0x7F == 126 else 10
        if len(b) < off:
            return None
        n = b[1] & 0x7F if off == 2 else int.from_bytes(b[2:off], "big")
        if b[1] & 0x80:
            raise self._dead("the server sent a masked frame")
        if len(b) < off + n:
            return None
        fin, op, data = bool(b[0] & 0x80), b[0] & 0x0F, bytes(b[off:off + n])
        del b[:off + n]
        return fin, op, data

    def _tick(self) -> None:
        """Between reads: the deadline, the member's health, progress requests, probes."""
        kv, now = self.kv, time.monotonic()
        if self._closed:
            raise StopIteration
        if now - self.last_heard >= kv.watch_deadline_s:
            raise self._dead(f"heard nothing for {now - self.last_heard:.1f} s (stuck)")
        if kv._failed_at[self.member] > self._since:
            raise self._dead("another request to this member failed")
        if now - max(self.last_heard, self._asked) >= kv.progress_interval_s:
            self._asked = now
            try:
                self._send_frame(1, b'{"progress_request":{}}')
            except OSError as e:
                raise self._dead(f"cannot ask for progress: {e}") from None
        if kv.probe_interval_s and now - self._probed >= kv.probe_interval_s:
            self._probed = now
            try:
                kv._send(self.member, "/kv/range", {"key": _b64(PROBE_KEY), "count_only": True})
            except (_Unsent, _Unknown, Unavailable) as e:
                raise self._dead(f"the member fails reads: {e}") from None

    def _recv(self) -> None:
        kv, why = self.kv, "the member closed the stream"
        due = min(self.last_heard + kv.watch_deadline_s, max(self.last_heard, self._asked) + kv.progress_interval_s,
                  self._probed + (kv.probe_interval_s or kv.watch_deadline_s))
        try:
            self._sock.settimeout(max(0.01, due - time.monotonic()))
            data = self._sock.recv(65536)
        except socket.timeout:
            return
        except OSError as e:
            data, why = b"", f"the stream broke: {e}"
        if not data:
            if self._closed:
                raise StopIteration
            raise self._dead(why)
        self._buf += data
        self.last_heard = time.monotonic()

    def _message(self) -> dict:
        while True:
            frame = self._frame()
            if frame is None:
                self._tick()
                self._recv()
            elif frame[1] == 8:
                raise self._dead(f"the member closed the WebSocket: {frame[2][2:].decode(errors='replace')}")
            elif frame[1] in (0, 1, 2):   # continuation, text, binary: etcd splits long messages into frames
                self._parts.append(frame[2])
                if frame[0]:
                    payload, self._parts = b"".join(self._parts), []
                    try:
                        return json.loads(payload)
                    except ValueError:
                        raise self._dead(f"bad message {payload[:80]!r}") from None

    def __next__(self) -> list[Event]:
        while True:
            msg = self._message()
            if "error" in msg:
                raise self._dead(str(msg["error"]))
            res = msg.get("result", {})
            rev = int(res.get("header", {}).get("revision", 0) or 0)
            self.head_rev = max(self.head_rev, rev)
            if int(res.get("compact_revision", 0) or 0):
                self._drop()
                raise Compacted(f"etcd compacted history up to {res['compact_revision']}")
            if res.get("canceled"):
                raise self._dead(f"etcd cancelled the watch: {res.get('cancel_reason', '')}")
            events = [Event(_unb64(ev["kv"]["key"]).decode(errors="surrogateescape"), None if ev.get("type") == "DELETE"
                            else _unb64(ev["kv"].get("value", "")), int(ev["kv"]["mod_revision"]))
                      for ev in res.get("events", [])]
            if events:
                self.last_rev = max(self.last_rev, *(e.rev for e in events))
                return events
            if not res.get("created") and res.get("watch_id", "0") != "-1":
                self.last_rev = max(self.last_rev, rev)   # the server's own progress notification
