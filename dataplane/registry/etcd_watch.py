"""One watch on one etcd member through the JSON gateway (for kv_etcd.EtcdKV):
a WebSocket on /v3/watch, or, when the client logs in, a plain HTTP stream.
A process that opened its gRPC channels (an agent) watches over gRPC instead
(etcd_watch_grpc.py); this one serves the rest, and is that one's fallback.

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

With authentication the WebSocket is of no use: the proxy passes no
Authorization header but its own "Bearer <token>", which etcd takes for an
invalid token (etcd-io/etcd#19752, open; measured on 3.4.23), and without a
token the watch runs as the server certificate's CN. So a client that logs in
watches on the plain stream with its token: one complete create_request, then
events. No progress requests there: the probe read (every progress_interval_s)
stands in for them, and each one that succeeds counts as hearing the member.

last_rev moves with events and the server's own notifications (ordered with
events), not with answers to progress requests (kept in head_rev): before
etcd-io/etcd#15237 (newer than 3.4.23) those can run ahead of events not yet
sent (etcd-io/etcd#15220), and a resume after them would lose events.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import ssl
import struct
import time

from dataplane.registry.etcd_wire import RELOGIN, Unknown, Unsent, b64, range_end, tls_refusal, unb64
from dataplane.registry.kv import Compacted, Event, Refused, Unavailable, Watch

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class MemberWatch(Watch):
    """What a watch on one etcd member does the same way on either transport:
    needs kv, member, _closed and _drop() (end the connection, waking a reader)."""

    def close(self) -> None:
        self._closed = True
        self._drop()

    def _dead(self, why: str) -> Unavailable:
        self.kv._failed(self.member)
        self._drop()
        return Unavailable(f"etcd watch at {self.kv.endpoint(self.member)}: {why}")

    def _stale(self, now: float) -> str | None:
        """Why the member is to be left now (silent past the deadline, or another
        request to it failed since the watch began), or None."""
        if now - self.last_heard >= self.kv.watch_deadline_s:
            return f"heard nothing for {now - self.last_heard:.1f} s (stuck)"
        if self.kv._failed_at[self.member] > self._since:
            return "another request to this member failed"
        return None

    def _probe_read(self, member: int) -> str | None:
        """A linearizable read on the member (it fails on one cut off from its
        leader): None, or why it failed."""
        try:
            self.kv._send(member, "/kv/range", {"key": b64(self.prefix), "count_only": True})
        except (Unsent, Unknown, Unavailable) as e:
            return str(e)
        return None


class EtcdWatch(MemberWatch):
    transport = "gateway"

    def __init__(self, kv, prefix: str, start_rev: int, until: float | None = None):
        """until: end (Unavailable) at this monotonic time, to be resumed (kv_etcd.watch)."""
        self.kv, self.prefix, self.last_rev, self.head_rev = kv, prefix, start_rev - 1, 0
        self.stream = bool(kv.user)            # logged in: the plain HTTP stream (see above)
        self._closed, self._sock, self._buf, self._parts, self._body = False, None, bytearray(), [], bytearray()
        self._chunked, self._token = False, None
        self.until = until
        create = json.dumps({"create_request": {"key": b64(prefix), "range_end": range_end(prefix),
                                                "start_revision": str(start_rev), "progress_notify": True}}).encode()
        errors, tls_only = [], True
        for i in kv._order():
            try:
                self._open(i, create)
                break
            except Refused:
                self._drop()
                raise
            except (OSError, Unsent, Unknown, Unavailable) as e:
                errors.append(f"{kv.endpoint(i)}: {e}")
                tls_only = tls_only and bool(getattr(e, "tls", False) or isinstance(e, ssl.SSLError) and tls_refusal(
                    e, bool(kv.tls and kv.tls.cert)))
                self._drop()
                kv._failed(i)
        else:
            raise (Refused if tls_only else Unavailable)(f"etcd watch: no member answered: {'; '.join(errors)}")
        kv._current = i
        self.member = i
        self.last_heard = self._asked = self._probed = self._since = time.monotonic()

    def _open(self, i: int, create: bytes, relogin: bool = True) -> None:
        kv = self.kv
        host, port = kv.endpoints[i]
        # A member without a leader takes the create request all the same (the WebSocket's is not
        # even answered before we return): its linearizable read is asked first, or the caller would
        # count itself connected through a whole loss of quorum.
        try:
            kv._send(i, "/kv/range", {"key": b64(self.prefix), "count_only": True})
        except Refused:
            raise                        # a permission the user lacks: the watch would be refused too
        except (Unsent, Unknown, Unavailable) as e:
            if getattr(e, "tls", False):
                raise                    # a handshake that failed: the caller tells a refusal from an outage
            raise Unavailable(f"the member fails reads: {e}") from None
        self.member, self._buf, self._body = i, bytearray(), bytearray()
        self._token = kv.token(i) if self.stream else None
        self._sock = s = socket.create_connection((host, port), timeout=kv.connect_timeout)
        s.settimeout(kv.timeout)
        if kv.ssl_context:
            self._sock = s = kv.ssl_context.wrap_socket(s, server_hostname=host)
        if self.stream:
            # Accept: etcd 3.4 then knows the gateway sent it, and never takes its certificate's CN for a user.
            auth = f"Authorization: {self._token}\r\n" if self._token else ""
            # Grpc-Metadata-Hasleader: the member ends the stream when it loses its leader (the proxy in
            # front of the WebSocket passes no such header: there the probe reads stand in).
            s.sendall((f"POST /v3/watch HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}Accept: application/json\r\n"
                       "Grpc-Metadata-Hasleader: true\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {len(create)}\r\n\r\n").encode() + create)
            head = self._read_head()
            if not head.startswith(b"HTTP/1.1 200"):
                raise OSError(f"watch refused: {head.splitlines()[0].decode(errors='replace')} "
                              f"{bytes(self._buf[:200]).decode(errors='replace')}")
            self._chunked = b"\r\ntransfer-encoding: chunked" in head.lower()
            reason = self._created()
            if reason and relogin and any(w in reason for w in RELOGIN):
                self._drop()                  # a token this member no longer knows: log in, once
                kv._relogin(i, self._token)
                return self._open(i, create, relogin=False)
            if reason:
                kind = Refused if "permission denied" in reason or "user name is empty" in reason else OSError
                raise kind(f"etcd refused the watch at {kv.endpoint(i)}: {reason}")
            return
        key = b64(os.urandom(16))
        s.sendall((f"GET /v3/watch HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = self._read_head()
        accept = b64(hashlib.sha1(key.encode() + _WS_GUID).digest()).encode()
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            raise OSError(f"no WebSocket upgrade: {head.splitlines()[0].decode(errors='replace')}")
        self._send_frame(1, create)

    def _created(self) -> str | None:
        """Stream: read the answer to the create_request; why it was cancelled, or None."""
        while (payload := self._stream_payload()) is None or not payload.strip():
            if payload is None:
                data = self._sock.recv(65536)
                if not data:
                    raise OSError("the member closed the stream")
                self._buf += data
        try:
            msg = json.loads(payload)
        except ValueError:
            raise OSError(f"bad message {payload[:80]!r}") from None
        res = msg.get("result", {})
        if "error" in msg or not res.get("created"):
            return str(msg.get("error") or msg)
        return res.get("cancel_reason", "cancelled") if res.get("canceled") else None

    def _read_head(self) -> bytes:
        """The response's status line and headers; what follows stays in _buf."""
        while b"\r\n\r\n" not in self._buf:
            chunk = self._sock.recv(4096)
            if not chunk or len(self._buf) > 65536:
                raise OSError("connection closed before the response headers")
            self._buf += chunk
        head, _, rest = bytes(self._buf).partition(b"\r\n\r\n")
        self._buf = bytearray(rest)
        return head

    def _drop(self) -> None:
        """Close the socket (this wakes a reader); any use of it after this raises OSError."""
        with contextlib.suppress(OSError, AttributeError):   # not connected, closed, or never opened
            self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError, AttributeError):
            self._sock.close()

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

    def _ws_payload(self) -> bytes | None:
        """The next whole message of the WebSocket, or None until more arrives."""
        while (frame := self._frame()) is not None:
            fin, op, data = frame
            if op == 8:
                raise self._dead(f"the member closed the WebSocket: {data[2:].decode(errors='replace')}")
            if op in (0, 1, 2):   # continuation, text, binary: etcd splits long messages into frames
                self._parts.append(data)
                if fin:
                    payload, self._parts = b"".join(self._parts), []
                    return payload
        return None

    def _stream_payload(self) -> bytes | None:
        """The next line of the HTTP stream's body (chunked or not), or None until more arrives."""
        b = self._buf
        while self._chunked and (end := b.find(b"\r\n")) >= 0:
            try:
                size = int(bytes(b[:end]).split(b";")[0], 16)
            except ValueError:
                raise self._dead(f"bad chunk header {bytes(b[:40])!r}") from None
            if size == 0:
                raise self._dead("the member ended the stream")
            if len(b) < end + 2 + size + 2:
                break
            self._body += b[end + 2:end + 2 + size]
            del b[:end + 4 + size]
        body = self._body if self._chunked else b
        nl = body.find(b"\n")
        if nl < 0:
            return None
        line = bytes(body[:nl])
        del body[:nl + 1]
        return line

    def _probe_every(self) -> float:
        return self.kv.progress_interval_s if self.stream else self.kv.probe_interval_s

    def _tick(self) -> None:
        """Between reads: the deadline, the member's health, progress requests, probes."""
        kv, now = self.kv, time.monotonic()
        if self._closed:
            raise StopIteration
        if why := self._stale(now):
            raise self._dead(why)
        if self.until is not None and now >= self.until:
            self._drop()                       # the member is fine: not _dead
            raise Unavailable("a watch through the gateway ends, to be resumed over gRPC if it can")
        if not self.stream and now - max(self.last_heard, self._asked) >= kv.progress_interval_s:
            self._asked = now
            try:
                self._send_frame(1, b'{"progress_request":{}}')
            except OSError as e:
                raise self._dead(f"cannot ask for progress: {e}") from None
        every = self._probe_every()
        if every and now - self._probed >= every:
            self._probed = now
            if failed := self._probe_read(self.member):
                raise self._dead(f"the member fails reads: {failed}")
            if self.stream:
                self.last_heard = time.monotonic()

    def _recv(self) -> None:
        kv, why = self.kv, "the member closed the stream"
        due = min(self.last_heard + kv.watch_deadline_s, self._probed + (self._probe_every() or kv.watch_deadline_s),
                  self.until or math.inf)
        if not self.stream:
            due = min(due, max(self.last_heard, self._asked) + kv.progress_interval_s)
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
            payload = self._stream_payload() if self.stream else self._ws_payload()
            if payload is None:
                self._tick()
                self._recv()
            elif payload.strip():
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
                reason = res.get("cancel_reason", "")
                if any(w in reason for w in RELOGIN):
                    self.kv.forget_token(self._token)     # the next watch logs in again
                raise self._dead(f"etcd cancelled the watch: {reason}")
            events = [Event(unb64(ev["kv"]["key"]).decode(errors="surrogateescape"), None if ev.get("type") == "DELETE"
                            else unb64(ev["kv"].get("value", "")), int(ev["kv"]["mod_revision"]))
                      for ev in res.get("events", [])]
            if events:
                self.last_rev = max(self.last_rev, *(e.rev for e in events))
                return events
            if not res.get("created") and res.get("watch_id", "0") != "-1":
                self.last_rev = max(self.last_rev, rev)   # the server's own progress notification
