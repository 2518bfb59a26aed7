"""The gRPC half of the etcd client (kv_etcd.EtcdKV inherits it): bulk reads
for snapshots, and txns once a member's channel is connected and followed,
over etcd_grpc.Channels; whatever gRPC cannot say for sure goes back to the
gateway's paths, which class failures as they always have."""

from __future__ import annotations

import contextlib

from dataplane.registry.etcd_grpc import GrpcFailed, GrpcUnavailable
from dataplane.registry.etcd_wire import BULK_TIMEOUT_S, NOSPACE, RELOGIN, Unknown, Unsent, out_of_space, prefix_end
from dataplane.registry.kv import Refused, Row, Txn, Unavailable

# gRPC statuses after which a txn may have been applied: never sent again, elsewhere or not.
UNKNOWN_OUTCOME = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN", "INTERNAL", "DATA_LOSS")


class GrpcPaths:
    """Needs of its class: _grpc (Channels), use_grpc, grpc_commits, user, timeout,
    endpoints, _current, _order(), _spread(k), endpoint(i), token(i), _relogin(i, stale), _failed(i),
    cluster_id."""

    def _grpc_range(self, k: int, prefix: str, rev: int | None) -> tuple[int, list[Row]]:
        i = self._spread(k)[0]
        try:
            token = self.token(i)
        except (Unsent, Unknown, Unavailable) as e:   # the gateway's read says it as it should (Refused, ...)
            raise GrpcUnavailable(f"login at {self.endpoint(i)}: {e}") from None
        try:
            got, cluster, items = self._grpc.range(i, prefix.encode(), prefix_end(prefix), rev or 0, token,
                                                   BULK_TIMEOUT_S)
        except GrpcUnavailable as e:
            if e.code in ("DEADLINE_EXCEEDED", "UNAVAILABLE"):
                self._failed(i)          # stuck or gone: the gateway's read (and the next ones) go elsewhere
            raise
        self.cluster_id = cluster
        return got, items

    def transport_counts(self) -> dict:
        return {"grpc_commits": self.grpc_commits, "grpc_read_fallbacks": self.grpc_fallbacks,
                "grpc_watches": self.grpc_watches}

    def open_channels(self, wait_s: float = 0.0) -> None:
        """A gRPC channel to every member, connecting in the background and followed
        (Channels.track): a process that writes often (an agent) then commits over
        gRPC (see commit). wait_s: wait that long at most for the first member's."""
        if self.use_grpc:
            with contextlib.suppress(GrpcUnavailable):
                for i in range(len(self.endpoints)):
                    self._grpc.track(i)
                if wait_s > 0:
                    self._grpc.connect(self._current, wait_s)

    def _grpc_commit(self, i: int, txn: Txn) -> tuple[bool, int] | None:
        """commit on member i over gRPC; None: not sent, the gateway is to send it.
        What was sent and failed is classed as the gateway's answer would be."""
        where = f"etcd txn at {self.endpoint(i)}"
        for relogin in (True, False):
            try:
                token = self.token(i)
            except (Unsent, Unknown, Unavailable):
                return None                   # the gateway's path logs in and says why it cannot
            try:
                ok, rev, cluster = self._grpc.txn(i, txn.compares, txn.puts, txn.deletes, token, self.timeout)
            except GrpcFailed as e:
                if self.user and relogin and (e.code == "UNAUTHENTICATED" or any(w in e.details for w in RELOGIN)):
                    try:
                        self._relogin(i, token)       # refused tokens are refused before anything is applied
                    except (Unsent, Unknown):
                        return None
                    continue
                if e.code == "PERMISSION_DENIED" and self.user:
                    raise Refused(f"{where}: user {self.user} is not permitted: {e.details}") from None
                if NOSPACE in e.details:
                    raise out_of_space(where, e.details) from None
                if e.code in UNKNOWN_OUTCOME:
                    self._failed(i)
                    raise Unavailable(f"{where}, outcome unknown: {e}") from None
                # The rest are etcd's refusals before anything is applied (a request too large, no
                # space, too many requests; no login, which gRPC answers for the certificate's
                # Common Name; a proxy's UNIMPLEMENTED): the gateway sends it again and classes
                # the answer as it always has (Refused with its hint, ...).
                return None
            self.cluster_id = cluster
            self.grpc_commits += 1
            return ok, rev
        return None
