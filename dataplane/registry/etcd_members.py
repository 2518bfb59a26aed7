"""Which etcd member a request goes to, and when a member counts as failed
(kv_etcd.EtcdKV inherits it).

A member marked failed is asked after the others for FAILED_RECENTLY_S, and a
watch on it is left ("another request to this member failed"). Only the member's
own failures mark it: one that never got the request, that says it has no leader
(cut off), or that said nothing and does not answer a serializable read now. A
member that answered that the request timed out or that the leader changed, or
that answers such a read at once, is healthy: the trouble is the leader's (a slow
disk, an election), every member would say the same, and leaving it would only
move every watch on it for nothing."""

from __future__ import annotations

import time

from dataplane.registry.etcd_wire import Unsent, b64

FAILED_RECENTLY_S = 10.0    # a member that failed this recently is asked after the others
ALIVE_TIMEOUT_S = 0.5       # for a member that timed out to answer a serializable read


class Members:
    """Needs of its class: endpoints, _current, _failed_at, _lock, _http(i, path, payload, token,
    timeout), token(i)."""

    def _order(self) -> list[int]:
        """Every member once, from the current one on (round robin), those that failed in the
        last FAILED_RECENTLY_S last: a stopped member costs a request its timeout once, not
        every side-by-side read of every snapshot."""
        start, n = self._current, len(self.endpoints)
        return sorted(((start + k) % n for k in range(n)), key=self._failed_recently)

    def _failed_recently(self, i: int) -> bool:
        return self._failed_at[i] > 0 and time.monotonic() - self._failed_at[i] < FAILED_RECENTLY_S

    def _spread(self, skip: int) -> list[int]:
        """_order() started `skip` members further on among those that did not fail recently
        (side-by-side reads each from another member, none first on one just found stuck)."""
        n = len(self.endpoints)
        bad = {i for i in range(n) if self._failed_recently(i)}      # read once: other threads mark failures
        order = [(self._current + k) % n for k in range(n)]
        ok, rest = [i for i in order if i not in bad], [i for i in order if i in bad]
        k = skip % len(ok) if ok else 0
        return ok[k:] + ok[:k] + rest

    def _failed(self, i: int) -> None:
        with self._lock:
            self._failed_at[i] = time.monotonic()
            if self._current == i:
                self._current = (i + 1) % len(self.endpoints)

    def _suspect(self, i: int, err: Exception, answered: bool = False) -> None:
        """A request to member i failed with err: _failed(i) if the failure is the member's own
        (see the module's text). answered: member i itself said err (an HTTP or gRPC status
        from etcd, not a timeout or a broken connection)."""
        if isinstance(err, Unsent) or "no leader" in str(err):
            self._failed(i)
        elif not (answered or getattr(err, "answered", False) or self._alive(i)):
            self._failed(i)

    def _alive(self, i: int) -> bool:
        """Member i answers a serializable read (served by the member alone, leader or not)
        within ALIVE_TIMEOUT_S."""
        try:
            resp = self._http(i, "/kv/range", {"key": b64("/"), "count_only": True, "serializable": True},
                              self.token(i), ALIVE_TIMEOUT_S)
        except Exception:     # noqa: BLE001 - Unsent, Unknown, a login refused: not shown alive
            return False
        return resp.status_code == 200
