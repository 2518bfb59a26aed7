"""One watch on one etcd member over gRPC (for kv_etcd.EtcdKV.watch): the
bidirectional Watch stream, used when this process opened its members'
channels (an agent: KV.open_channels); otherwise, or when no member's stream
can be opened, the gateway's watch (etcd_watch.py) does it.

Why: through the gateway a member marshals every event to JSON, once per
watcher, and passes it through a second, internal gRPC hop. Measured in the
bench's lab (3 agents, 1,000 endpoint writes/s, 20 s): the member serving
the three gateway watches allocated 1.4 GB and ran 11 garbage collections of
a ~200 MB heap against 0.5 GB and 4 for a member serving none, and took
half a CPU against an eighth; its collections coincided with some of the
stalls that set the updates' p99 (not all: docs/BENCHMARKS.md).

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
answers to progress requests move only head_rev).

Threads: the caller's thread reads the stream itself (gRPC's iterator, which
has no deadline). What gRPC sends comes from a generator that gRPC pulls in
a thread of its own; between requests that generator keeps the watch's
clocks: it sends progress requests while idle, starts the probe reads, and
when the member is silent past the deadline (or never answers the create)
it cancels the call, saying why, which ends the caller's read. An earlier
version read the stream from a thread of its own into a queue for the
caller: 101 us of the agent's CPU per event against 80 without the hand-off
(and 38 for the gateway's watch; three watch processes side by side on the
lab during 320 single-endpoint txns/s, /tmp script).
"""

from __future__ import annotations

import queue
import threading
import time

from dataplane.registry.etcd_grpc import GrpcUnavailable, _grpc, _messages
from dataplane.registry.etcd_watch import MemberWatch
from dataplane.registry.etcd_wire import RELOGIN, Unknown, Unsent, prefix_end
from dataplane.registry.kv import Compacted, Event, Refused, Unavailable

DELETE = 1          # mvccpb.Event.EventType
PROGRESS_ID = -1    # the watch_id of an answer to a progress request (etcd 3.4)


class GrpcWatch(MemberWatch):
    transport = "grpc"

    def __init__(self, kv, prefix: str, start_rev: int):
        """On the first member in kv's order whose channel is connected (waiting up to
        kv.connect_timeout for one that is connecting). GrpcUnavailable: none could
        open it; the caller watches through the gateway."""
        self.kv, self.prefix, self.last_rev, self.head_rev = kv, prefix, start_rev - 1, 0
        self._closed, self._live, self._first, self._ended = False, None, None, None   # _live: (call, requests)
        self._rpc_error = _grpc().RpcError
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
                self._drop()
                raise
            except (Unsent, Unknown, Unavailable) as e:
                errors.append(f"{kv.endpoint(i)}: {e}")
                self._drop()
                kv._failed(i)
        else:
            raise GrpcUnavailable(f"etcd watch over gRPC: no member opened it: {'; '.join(errors)}")
        kv._current = i

    def _open(self, i: int, relogin: bool = True) -> None:
        kv = self.kv
        self.member, self._token, self._ended, self._created = i, kv.token(i), None, False
        self._probing, self._probe_failed = False, None
        self.last_heard = self._asked = self._probed = self._since = time.monotonic()
        requests = queue.SimpleQueue()
        requests.put(self._create)
        call = kv._grpc.watch(i, self._requests(requests), self._token)
        self._live = call, requests
        resp = self._read(call)     # the create's answer; the generator cancels the call after kv.timeout
        self._created = True
        if not resp.canceled or resp.compact_revision:
            self._first = resp                   # created (a compacted start is said by __next__)
            return
        reason = resp.cancel_reason or "cancelled"
        if kv.user and relogin and any(w in reason for w in RELOGIN):
            self._drop()                          # a token this member no longer knows: log in, once
            kv._relogin(i, self._token)
            return self._open(i, relogin=False)
        kind = Refused if "permission denied" in reason or "user name is empty" in reason else Unavailable
        raise kind(f"etcd refused the watch at {kv.endpoint(i)}: {reason}")

    def _read(self, call):
        """The stream's next response; Unavailable (saying why) when it ends."""
        try:
            resp = next(call)
        except StopIteration:
            why = "the member ended the stream"
        except self._rpc_error as e:
            why = self._ended or f"the stream broke: {e.code().name}: {e.details()}"
        else:
            self.last_heard = time.monotonic()
            return resp
        if self._closed:
            raise StopIteration
        raise Unavailable(why)

    def _requests(self, requests: queue.SimpleQueue):
        """What gRPC sends on the stream (run by gRPC in a thread of its own): the
        create request, then progress requests; between them, the watch's clocks."""
        while True:
            now = time.monotonic()
            due = self._due(now)
            try:
                msg = requests.get(timeout=max(0.01, due - now))
            except queue.Empty:
                msg = self._tick(requests)
            if msg is None:
                return
            if msg is not False:
                yield msg

    def _due(self, now: float) -> float:
        kv = self.kv
        if not self._created:
            return self._since + kv.timeout
        due = min(self.last_heard + kv.watch_deadline_s, max(self.last_heard, self._asked) + kv.progress_interval_s)
        return min(due, self._probed + kv.probe_interval_s) if kv.probe_interval_s else due

    def _tick(self, requests: queue.SimpleQueue):
        """On the generator's clock: a progress request to send, False (nothing to
        send), or None after ending the stream (its reader then says why)."""
        kv, now, live = self.kv, time.monotonic(), self._live
        if self._closed or live is None or live[1] is not requests:
            return None                           # ended, or another stream replaced it (a relogin)
        if not self._created:
            if now - self._since >= kv.timeout:
                return self._kill(f"no answer to the watch's creation in {kv.timeout} s", failed=False)
            return False
        if why := self._stale(now):
            return self._kill(why)
        if self._probe_failed:
            return self._kill(f"the member fails reads: {self._probe_failed}")
        if kv.probe_interval_s and now - self._probed >= kv.probe_interval_s and not self._probing:
            self._probed, self._probing = now, True    # in a thread: progress requests go on meanwhile
            threading.Thread(target=self._probe, args=(self.member,), name="etcd-probe", daemon=True).start()
        if now - max(self.last_heard, self._asked) >= kv.progress_interval_s:
            self._asked = now
            return self._progress
        return False

    def _probe(self, member: int) -> None:
        try:
            if (failed := self._probe_read(member)) and member == self.member:
                self._probe_failed = failed
        finally:
            self._probing = False

    def _kill(self, why: str, failed: bool = True) -> None:
        """End the stream from the generator: the reader raises Unavailable(why)."""
        self._ended = why
        if failed:
            self.kv._failed(self.member)
        self._drop()
        return None

    def _drop(self) -> None:
        """Cancel the stream (this wakes the reader) and end what it sends. Safe
        from two threads at once (close() while the watch ends itself)."""
        live, self._live = self._live, None
        if live is not None:
            live[0].cancel()
            live[1].put(None)

    def __next__(self) -> list[Event]:
        try:
            return self._next()
        except BaseException:
            self._drop()           # whatever ended the watch, its stream and threads go with it
            raise

    def _next(self) -> list[Event]:
        while True:
            if self._closed:
                raise StopIteration
            if (res := self._first) is not None:
                self._first = None
            else:
                live = self._live
                if live is None:
                    raise StopIteration if self._closed else self._dead(self._ended or "the stream was ended")
                try:
                    res = self._read(live[0])
                except Unavailable as e:
                    raise self._dead(str(e)) from None
            rev = res.header.revision
            self.head_rev = max(self.head_rev, rev)
            if res.compact_revision:
                self._drop()
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
