"""One watch on one etcd member over gRPC (for kv_etcd.EtcdKV.watch): the
bidirectional Watch stream, used when this process opened its members'
channels (an agent: KV.open_channels); otherwise, or when no member's stream
can be opened, the gateway's watch (etcd_watch.py) does it.

Why: through the gateway a member marshals every event to JSON, once per
watcher, and passes it through a second, internal gRPC hop. Measured in the
bench's lab (3 agents, 1,000 endpoint writes/s, 20 s): the member serving
the three gateway watches allocated 1.4 GB and ran 11 garbage collections of
a ~200 MB heap against 0.5 GB and 4 for a member serving none, and took
half a CPU against an eighth; its collections were the stalls that set the
updates' p99.

What the gateway's watch needs work-arounds for is plain here:
- Progress requests (answered at once with the member's revision, watch_id
  -1) go on the same stream whether or not the client logs in: the token is
  the stream's "token" metadata, so the stream stands in for the WebSocket
  and the plain HTTP stream alike. Idle for progress_interval_s the watch
  asks; hearing nothing for watch_deadline_s raises Unavailable.
- "hasleader" metadata: a member that has lost its leader refuses to open
  the stream, and ends an open one after three election timeouts without
  one ("etcdserver: no leader"). The probe read every probe_interval_s
  stays, as on the gateway, for a member cut off in any other way.
- A watch created with a token the member no longer knows is cancelled
  with "invalid auth token" (etcd 3.4.22 on; RELOGIN's words): log in again
  and create it once more. "permission denied" is a real refusal: Refused.

last_rev and head_rev move as on the gateway (etcd_watch.py says why
answers to progress requests move only head_rev). Responses arrive on a
thread of this watch's own, so a read can be given a deadline: gRPC's
iterator has none. That thread holds the stream: any error out of the
watch ends the stream too, and close() may race the watch's own end.
"""

from __future__ import annotations

import queue
import threading
import time

from dataplane.registry.etcd_grpc import GrpcUnavailable, _messages
from dataplane.registry.etcd_wire import RELOGIN, Unknown, Unsent, b64, prefix_end
from dataplane.registry.kv import Compacted, Event, Refused, Unavailable, Watch

DELETE = 1          # mvccpb.Event.EventType
PROGRESS_ID = -1    # the watch_id of an answer to a progress request (etcd 3.4)


def _requests(q: queue.SimpleQueue):
    """What gRPC sends on the stream: q's messages until None."""
    while (msg := q.get()) is not None:
        yield msg


def _read(call, out: queue.SimpleQueue) -> None:
    """The stream's responses into out; then the error that ended it."""
    try:
        for resp in call:
            out.put(resp)
        out.put(Unavailable("the member ended the stream"))
    except Exception as e:  # noqa: BLE001 - grpc.RpcError, or anything else that ended the stream
        out.put(e)


class GrpcWatch(Watch):
    transport = "grpc"

    def __init__(self, kv, prefix: str, start_rev: int):
        """On the first member in kv's order whose channel is connected (waiting up to
        kv.connect_timeout for one that is connecting). GrpcUnavailable: none could
        open it; the caller watches through the gateway."""
        self.kv, self.prefix, self.last_rev, self.head_rev = kv, prefix, start_rev - 1, 0
        self._closed, self._live, self._out, self._first = False, None, None, None   # _live: (call, requests)
        m = _messages()
        self._progress = m["WatchRequest"](progress_request=m["WatchProgressRequest"]())
        self._create = m["WatchRequest"](create_request=m["WatchCreateRequest"](
            key=prefix.encode(), range_end=prefix_end(prefix), start_revision=start_rev, progress_notify=True))
        errors = []
        for i in kv._order():
            if not kv._grpc.tracked(i) or not kv._grpc.connect(i, kv.connect_timeout):
                errors.append(f"{kv.endpoint(i)}: not connected")
                continue
            try:
                self._open(i)
                break
            except Refused:
                self._end()
                raise
            except (Unsent, Unknown, Unavailable) as e:
                errors.append(f"{kv.endpoint(i)}: {e}")
                self._end()
                kv._failed(i)
        else:
            raise GrpcUnavailable(f"etcd watch over gRPC: no member opened it: {'; '.join(errors)}")
        kv._current = i
        self.last_heard = self._asked = self._probed = self._since = time.monotonic()

    def _open(self, i: int, relogin: bool = True) -> None:
        kv = self.kv
        self.member, self._token = i, kv.token(i)
        requests, self._out = queue.SimpleQueue(), queue.SimpleQueue()
        requests.put(self._create)
        call = kv._grpc.watch(i, _requests(requests), self._token)
        self._live = call, requests
        threading.Thread(target=_read, args=(call, self._out), name="etcd-watch", daemon=True).start()
        try:
            resp = self._out.get(timeout=kv.timeout)
        except queue.Empty:
            raise Unavailable(f"no answer to the watch's creation in {kv.timeout} s") from None
        if isinstance(resp, Exception):
            raise Unavailable(self._why(resp))
        if not resp.canceled or resp.compact_revision:
            self._first = resp                   # created (a compacted start is said by __next__)
            return
        reason = resp.cancel_reason or "cancelled"
        if kv.user and relogin and any(w in reason for w in RELOGIN):
            self._end()                          # a token this member no longer knows: log in, once
            kv._relogin(i, self._token)
            return self._open(i, relogin=False)
        kind = Refused if "permission denied" in reason or "user name is empty" in reason else Unavailable
        raise kind(f"etcd refused the watch at {kv.endpoint(i)}: {reason}")

    @staticmethod
    def _why(e: Exception) -> str:
        code = getattr(e, "code", None)
        if callable(code):
            return f"{code().name}: {e.details()}"
        return str(e)

    def _end(self) -> None:
        """Cancel the stream (this wakes the reader) and end what it sends. Safe
        from two threads at once (close() while the watch ends itself)."""
        live, self._live = self._live, None
        if live is not None:
            live[0].cancel()
            live[1].put(None)

    def close(self) -> None:
        self._closed = True
        self._end()

    def _dead(self, why: str) -> Unavailable:
        self.kv._failed(self.member)
        self._end()
        return Unavailable(f"etcd watch at {self.kv.endpoint(self.member)}: {why}")

    def _tick(self) -> None:
        """Between responses: the deadline, the member's health, progress requests, probes."""
        kv, now = self.kv, time.monotonic()
        if self._closed:
            raise StopIteration
        if now - self.last_heard >= kv.watch_deadline_s:
            raise self._dead(f"heard nothing for {now - self.last_heard:.1f} s (stuck)")
        if kv._failed_at[self.member] > self._since:
            raise self._dead("another request to this member failed")
        if now - max(self.last_heard, self._asked) >= kv.progress_interval_s:
            self._asked = now
            live = self._live
            if live is not None:
                live[1].put(self._progress)
        if kv.probe_interval_s and now - self._probed >= kv.probe_interval_s:
            self._probed = now
            try:
                kv._send(self.member, "/kv/range", {"key": b64(self.prefix), "count_only": True})
            except (Unsent, Unknown, Unavailable) as e:
                raise self._dead(f"the member fails reads: {e}") from None

    def _response(self):
        if (first := self._first) is not None:
            self._first = None
            return first
        kv = self.kv
        while True:
            due = min(self.last_heard + kv.watch_deadline_s, max(self.last_heard, self._asked) + kv.progress_interval_s)
            if kv.probe_interval_s:
                due = min(due, self._probed + kv.probe_interval_s)
            try:
                item = self._out.get(timeout=max(0.01, due - time.monotonic()))
            except queue.Empty:
                self._tick()
                continue
            if self._closed:
                raise StopIteration
            if isinstance(item, Exception):
                raise self._dead(f"the stream broke: {self._why(item)}")
            self.last_heard = time.monotonic()
            return item

    def __next__(self) -> list[Event]:
        try:
            return self._next()
        except BaseException:
            self._end()           # whatever ended the watch, its stream and threads go with it
            raise

    def _next(self) -> list[Event]:
        while True:
            if self._closed:
                raise StopIteration
            res = self._response()
            rev = res.header.revision
            self.head_rev = max(self.head_rev, rev)
            if res.compact_revision:
                self._end()
                raise Compacted(f"etcd compacted history up to {res.compact_revision}")
            if res.canceled:
                reason = res.cancel_reason
                if any(w in reason for w in RELOGIN):
                    self.kv.forget_token(self._token)     # the next watch logs in again
                raise self._dead(f"etcd cancelled the watch: {reason}")
            if res.events:
                events = [Event(ev.kv.key.decode(errors="surrogateescape"),
                                None if ev.type == DELETE else ev.kv.value, ev.kv.mod_revision)
                          for ev in res.events]
                self.last_rev = max(self.last_rev, events[-1].rev)     # in revision order
                return events
            if not res.created and res.watch_id != PROGRESS_ID:
                self.last_rev = max(self.last_rev, rev)   # the server's own progress notification
