"""Bulk reads and transactions over etcd's gRPC API: the same Range and Txn
as the JSON gateway (kv_etcd.py), without the gateway. A member's gateway
marshals a whole range to JSON (~12 MB/s: 60 MB for 100,000 endpoints and
their claims) before it sends a byte, and every request through it costs the
member a JSON round and a second, internal gRPC hop; over gRPC the member
sends protobuf and we parse it in C (upb). Ranges for snapshots go this way,
and txns and the watch once a member's channel is connected (kv_etcd.commit,
etcd_watch_grpc.py); leases and small reads stay on the gateway, whose failure
handling and login they share. The few messages needed are described here (field numbers from
etcd's rpc.proto and kv.proto) rather than generated: no protoc, no
generated code to keep.

The client's TLS files and login token are the gateway client's: etcd takes
a token as the "token" metadata on gRPC as it takes the Authorization header
on the gateway. Anything gRPC cannot do (a proxy that speaks only HTTP/1.1,
grpcio missing) raises GrpcUnavailable and the caller goes through the
gateway instead.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

from dataplane.registry.kv import Row

_lock = threading.Lock()
_msgs: dict = {}
IDLE_MS = 30 * 60 * 1000     # a channel with no call for this long goes idle (gRPC's default, said here)


def _grpc():
    """grpc, imported with gRPC's fork handlers off. The agent forks while gRPC's
    threads run (cache.fork_save writes the registry view from a forked child; until
    2026-12-06 pyroute2 also made each sandbox's namespace in one), and with
    the handlers on, that child died of SIGABRT now and then ("child process is
    dead, status: -6" from endpoint_add; every lab start of test_etcd_cluster.py
    failed so). The children never use gRPC. Read by grpc when it is first imported:
    optional, without it (not installed) the gateway does everything."""
    os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
    import grpc  # noqa: PLC0415
    return grpc


class GrpcUnavailable(Exception):
    """gRPC could not be used for this read: read through the gateway. code: the gRPC status
    name when the member was asked and failed ("DEADLINE_EXCEEDED", ...), else None."""

    def __init__(self, why: str, code: str | None = None):
        super().__init__(why)
        self.code = code


class GrpcFailed(Exception):
    """A request gRPC carried and etcd (or the connection) failed: code is the
    gRPC status name ("UNAVAILABLE", "PERMISSION_DENIED", ...), details etcd's words."""

    def __init__(self, code: str, details: str):
        super().__init__(f"{code}: {details}")
        self.code, self.details = code, details


def _messages() -> dict:
    """The Range and Txn message classes by name, built once from descriptors."""
    with _lock:
        if _msgs:
            return _msgs
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: PLC0415
        F = descriptor_pb2.FieldDescriptorProto
        fdp = descriptor_pb2.FileDescriptorProto(name="dataplane/etcd_range.proto", package="dataplane_etcd",
                                                 syntax="proto3")

        def message(name: str, fields) -> None:
            m = fdp.message_type.add(name=name)
            for fname, number, ftype, *rest in fields:
                f = m.field.add(name=fname, number=number, type=ftype,
                                label=F.LABEL_REPEATED if rest and rest[0] == "repeated" else F.LABEL_OPTIONAL)
                if ftype in (F.TYPE_MESSAGE, F.TYPE_ENUM):
                    f.type_name = f".dataplane_etcd.{rest[-1]}"
        message("ResponseHeader", [("cluster_id", 1, F.TYPE_UINT64), ("member_id", 2, F.TYPE_UINT64),
                                   ("revision", 3, F.TYPE_INT64), ("raft_term", 4, F.TYPE_UINT64)])
        message("KeyValue", [("key", 1, F.TYPE_BYTES), ("create_revision", 2, F.TYPE_INT64),
                             ("mod_revision", 3, F.TYPE_INT64), ("version", 4, F.TYPE_INT64),
                             ("value", 5, F.TYPE_BYTES), ("lease", 6, F.TYPE_INT64)])
        message("RangeRequest", [("key", 1, F.TYPE_BYTES), ("range_end", 2, F.TYPE_BYTES),
                                 ("limit", 3, F.TYPE_INT64), ("revision", 4, F.TYPE_INT64),
                                 ("serializable", 7, F.TYPE_BOOL)])
        message("RangeResponse", [("header", 1, F.TYPE_MESSAGE, "ResponseHeader"),
                                  ("kvs", 2, F.TYPE_MESSAGE, "repeated", "KeyValue"),
                                  ("more", 3, F.TYPE_BOOL), ("count", 4, F.TYPE_INT64)])
        for enum, values in (("CompareResult", ("EQUAL", "GREATER", "LESS", "NOT_EQUAL")),
                             ("CompareTarget", ("VERSION", "CREATE", "MOD", "VALUE", "LEASE"))):
            e = fdp.enum_type.add(name=enum)
            for number, vname in enumerate(values):
                e.value.add(name=f"{enum}_{vname}", number=number)
        message("Compare", [("result", 1, F.TYPE_ENUM, "CompareResult"), ("target", 2, F.TYPE_ENUM, "CompareTarget"),
                            ("key", 3, F.TYPE_BYTES), ("mod_revision", 6, F.TYPE_INT64)])
        message("PutRequest", [("key", 1, F.TYPE_BYTES), ("value", 2, F.TYPE_BYTES), ("lease", 3, F.TYPE_INT64)])
        message("DeleteRangeRequest", [("key", 1, F.TYPE_BYTES)])
        message("RequestOp", [("request_put", 2, F.TYPE_MESSAGE, "PutRequest"),
                              ("request_delete_range", 3, F.TYPE_MESSAGE, "DeleteRangeRequest")])
        message("TxnRequest", [("compare", 1, F.TYPE_MESSAGE, "repeated", "Compare"),
                               ("success", 2, F.TYPE_MESSAGE, "repeated", "RequestOp")])
        message("TxnResponse", [("header", 1, F.TYPE_MESSAGE, "ResponseHeader"), ("succeeded", 2, F.TYPE_BOOL)])
        message("WatchCreateRequest", [("key", 1, F.TYPE_BYTES), ("range_end", 2, F.TYPE_BYTES),
                                       ("start_revision", 3, F.TYPE_INT64), ("progress_notify", 4, F.TYPE_BOOL)])
        message("WatchProgressRequest", [])
        message("WatchRequest", [("create_request", 1, F.TYPE_MESSAGE, "WatchCreateRequest"),
                                 ("progress_request", 3, F.TYPE_MESSAGE, "WatchProgressRequest")])
        message("Event", [("type", 1, F.TYPE_INT32), ("kv", 2, F.TYPE_MESSAGE, "KeyValue")])   # type 1: DELETE
        message("WatchResponse", [("header", 1, F.TYPE_MESSAGE, "ResponseHeader"), ("watch_id", 2, F.TYPE_INT64),
                                  ("created", 3, F.TYPE_BOOL), ("canceled", 4, F.TYPE_BOOL),
                                  ("compact_revision", 5, F.TYPE_INT64), ("cancel_reason", 6, F.TYPE_STRING),
                                  ("events", 11, F.TYPE_MESSAGE, "repeated", "Event")])
        pool = descriptor_pool.DescriptorPool()
        pool.Add(fdp)
        for name in ("RangeRequest", "RangeResponse", "Compare", "PutRequest", "DeleteRangeRequest", "RequestOp",
                     "TxnRequest", "TxnResponse", "WatchCreateRequest", "WatchProgressRequest", "WatchRequest",
                     "WatchResponse"):
            _msgs[name] = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"dataplane_etcd.{name}"))
        return _msgs


class Channels:
    """One gRPC channel per member, made on first use."""

    def __init__(self, endpoints: list[tuple[str, int]], tls=None):
        self.endpoints, self.tls = endpoints, tls
        self._channels: dict[int, object] = {}
        self._states: dict[int, str] = {}       # member -> its channel's connectivity ("READY", ...)
        self._track: dict[int, object] = {}     # member -> the callback that keeps _states
        self._stamp = None                      # the TLS files' TlsFiles.stamp() when the channels were made
        self._want: set[int] = set()            # members track() was asked for: tracked again after a drop
        self._lock = threading.Lock()

    def channel(self, i: int):
        try:
            grpc = _grpc()
        except ImportError:
            raise GrpcUnavailable("grpcio is not installed") from None
        with self._lock:
            if self.tls and self._channels and self.tls.stamp() != self._stamp:
                self._drop()             # the TLS files changed (rotated): channels made from the new ones
            ch = self._channels.get(i)
            if ch is None:
                if self.tls and not self._channels:
                    self._stamp = self.tls.stamp()      # before the files are read
                host, port = self.endpoints[i]
                opts = [("grpc.max_receive_message_length", -1), ("grpc.enable_http_proxy", 0),
                        ("grpc.client_idle_timeout_ms", IDLE_MS)]
                if self.tls:
                    creds = grpc.ssl_channel_credentials(
                        root_certificates=_read(self.tls.ca), private_key=_read(self.tls.key),
                        certificate_chain=_read(self.tls.cert))
                    ch = grpc.secure_channel(f"{host}:{port}", creds, options=opts)
                else:
                    ch = grpc.insecure_channel(f"{host}:{port}", options=opts)
                self._channels[i] = ch
            return ch

    def track(self, i: int) -> None:
        """Follow member i's connectivity (for ready()), connecting now: for a process
        that writes often. A thread of gRPC's polls it until close()."""
        ch = self.channel(i)
        with self._lock:
            self._want.add(i)
            if i not in self._track and self._channels.get(i) is ch:    # not dropped meanwhile
                self._track[i] = lambda state, i=i: self._states.__setitem__(i, state.name)
                ch.subscribe(self._track[i], try_to_connect=True)

    def ready(self, i: int) -> bool:
        """Member i's channel is tracked and connected now (no wait). One that went idle
        (no call for IDLE_MS) is asked to connect again, for the next caller."""
        self._follow_again(i)
        state = self._states.get(i)
        if state == "IDLE":
            with self._lock:
                ch, cb = self._channels.get(i), self._track.get(i)
                if ch is not None and cb is not None:
                    self._states[i] = "CONNECTING"
                    ch.unsubscribe(cb)
                    ch.subscribe(cb, try_to_connect=True)
        return state == "READY"

    def connect(self, i: int, timeout: float) -> bool:
        """Make member i's channel and wait until it is connected (TLS done), so a
        read that follows does not pay for it. False if it could not be made in time."""
        future = None
        try:
            grpc = _grpc()
            future = grpc.channel_ready_future(self.channel(i))
            future.result(timeout=timeout)
            return True
        except Exception:  # noqa: BLE001 - the read itself says why, if it fails too
            if future is not None:
                future.cancel()           # unsubscribes it; the channel keeps its own state
            return False

    def range(self, i: int, key: bytes, range_end: bytes, revision: int, token: str | None,
              timeout: float) -> tuple[int, str, list[Row]]:
        """(revision, cluster id, items) of [key, range_end) on member i."""
        grpc = _grpc()
        m = _messages()
        call = self.channel(i).unary_unary("/etcdserverpb.KV/Range",
                                           request_serializer=m["RangeRequest"].SerializeToString,
                                           response_deserializer=m["RangeResponse"].FromString)
        try:
            resp = call(m["RangeRequest"](key=key, range_end=range_end, revision=revision or 0), timeout=timeout,
                        metadata=[("token", token)] if token else None)
        except grpc.RpcError as e:
            raise GrpcUnavailable(f"{e.code().name}: {e.details()}", e.code().name) from None
        return resp.header.revision, str(resp.header.cluster_id), [(kv.key, kv.value) for kv in resp.kvs]

    def txn(self, i: int, compares, puts, deletes, token: str | None, timeout: float) -> tuple[bool, int, str]:
        """(succeeded, revision, cluster id) of a compare-and-swap on member i:
        every compare is (key, mod_revision) EQUAL (0: absent), puts (key, value,
        lease), deletes keys. Raises GrpcFailed with etcd's status."""
        grpc = _grpc()
        m = _messages()
        call = self.channel(i).unary_unary("/etcdserverpb.KV/Txn", request_serializer=m["TxnRequest"].SerializeToString,
                                           response_deserializer=m["TxnResponse"].FromString)
        op, put, delete, cmp = m["RequestOp"], m["PutRequest"], m["DeleteRangeRequest"], m["Compare"]
        req = m["TxnRequest"](
            compare=[cmp(result=0, target=2, key=k.encode(), mod_revision=rev) for k, rev in compares],  # EQUAL, MOD
            success=[op(request_put=put(key=k.encode(), value=v, lease=lease)) for k, v, lease in puts] +
                    [op(request_delete_range=delete(key=k.encode())) for k in deletes])
        try:
            resp = call(req, timeout=timeout, metadata=[("token", token)] if token else None)
        except grpc.RpcError as e:
            raise GrpcFailed(e.code().name, e.details() or "") from None
        return resp.succeeded, resp.header.revision, str(resp.header.cluster_id)

    def tracked(self, i: int) -> bool:
        """Member i's channel is followed (track): this process opened its channels (a channel
        made again after the TLS files changed is followed again here)."""
        self._follow_again(i)
        return i in self._track

    def _follow_again(self, i: int) -> None:
        """Member i was tracked, and its channel was made again since (the TLS files changed):
        follow the new one (ready() and tracked() ask)."""
        if i in self._want and i not in self._track:
            with contextlib.suppress(GrpcUnavailable):
                self.track(i)

    def watch(self, i: int, requests, token: str | None):
        """A Watch stream on member i: sends what the iterator requests yields (the
        messages of _messages()["WatchRequest"]); iterate the call for WatchResponses,
        cancel() ends it. "hasleader" asks the member to end it when it has no leader."""
        m = _messages()
        call = self.channel(i).stream_stream("/etcdserverpb.Watch/Watch",
                                             request_serializer=m["WatchRequest"].SerializeToString,
                                             response_deserializer=m["WatchResponse"].FromString)
        return call(requests, metadata=[("hasleader", "true")] + ([("token", token)] if token else []))

    def close(self) -> None:
        with self._lock:
            self._want.clear()
            self._drop()

    def _drop(self) -> None:
        """Close every channel (under _lock): a stream on one ends, and its owner makes a new one."""
        for i, cb in self._track.items():
            if i in self._channels:
                self._channels[i].unsubscribe(cb)
        # gRPC's polling thread may be between its last look at the callbacks and its next
        # look at the channel: closed under it, it dies with "Channel closed!" (grpc#29848).
        # It ends within its 0.2 s poll once no callback is left.
        deadline = time.monotonic() + 0.5
        for i in self._track:
            state = getattr(self._channels.get(i), "_connectivity_state", None)
            while state is not None and getattr(state, "polling", False) and time.monotonic() < deadline:
                time.sleep(0.01)
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()
        self._states.clear()
        self._track.clear()


def _read(path: str | None) -> bytes | None:
    """A TLS file; one that cannot be read now (being rotated) leaves gRPC unused for now:
    the gateway's request reports it, and the next channel reads it again."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise GrpcUnavailable(f"cannot read {path}: {e.strerror or e}") from None
