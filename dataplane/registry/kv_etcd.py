"""The KV contract on a real etcd (3.4+), through its JSON gateway with etcd3gw.

Requests go out on etcd3gw's session of each member, every one bounded by
timeouts. With several members, a request starts at the member that last
answered and moves round robin to the next when one refuses, times out or has
no leader; a txn moves on only if it surely never reached the member, else
its outcome is unknown: Unavailable (and the next call starts further on).
Snapshots' ranges, and txns and the watch once this process opened its
members' channels (an agent), go over gRPC (kv_etcd_grpc.py, etcd_grpc.py,
etcd_watch_grpc.py), with the same classing of failures; the gateway's watch
is etcd_watch.py.

etcds:// (etcd_access.py): TLS verified against the CA file, with this
host's client certificate, and with a user, a token from /v3/auth/authenticate
in the Authorization header of every request. A token etcd no longer knows
(simple tokens expire after --auth-token-ttl idle on each member, and die with
a restart) is replaced by a new login and the request sent again: refused
tokens are refused before anything is applied, so this holds for a txn too.
What etcd refuses for good (a login, a permission, a TLS handshake) is Refused.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from binascii import a2b_base64 as a2b   # base64.b64decode without its wrapper

from orjson import loads as _loads   # a snapshot of 100,000 endpoints is ~60 MB of JSON: 3x json's speed

from dataplane.registry.etcd_access import ReloadingContext, TlsFiles
from dataplane.registry.etcd_grpc import Channels, GrpcUnavailable
from dataplane.registry.etcd_watch import EtcdWatch
from dataplane.registry.etcd_watch_grpc import GrpcWatch
from dataplane.registry.etcd_wire import (BULK_TIMEOUT_S, NOSPACE, RELOGIN, Unknown, Unsent, b64, out_of_space,
                                          range_end, tls_failure, tls_refusal)
from dataplane.registry.kv import KV, Item, Refused, Txn, Unavailable, Watch
from dataplane.registry.kv_etcd_grpc import GrpcPaths

TIMEOUT_S = 3.0             # to read one answer (and a WebSocket handshake)
CONNECT_TIMEOUT_S = 1.0     # to open a TCP connection to one member
WATCH_DEADLINE_S = 15.0     # a watch that hears nothing for this long is dead
FAILED_RECENTLY_S = 10.0    # a member that failed this recently is asked after the others
GATEWAY_FALLBACK_S = 300.0  # a watch through the gateway because gRPC failed: ended after this, to try again
log = logging.getLogger("dataplane.registry")


class EtcdKV(GrpcPaths, KV):
    ranges_apart = True     # range_many: each prefix from its own member, side by side

    def __init__(self, endpoints: list[tuple[str, int]], timeout: float = TIMEOUT_S,
                 connect_timeout: float = CONNECT_TIMEOUT_S, watch_deadline_s: float = WATCH_DEADLINE_S,
                 progress_interval_s: float | None = None, probe_interval_s: float | None = None,
                 tls: TlsFiles | None = None, user: str | None = None, password: str | None = None):
        """A watch that hears nothing for watch_deadline_s raises Unavailable; idle, it asks
        for progress every progress_interval_s (deadline/3), and every probe_interval_s (the
        deadline; 0: never) makes a linearizable read on its member (alive, has a leader).
        tls: https with these files; user and password: log in (etcd's authentication)."""
        try:
            import etcd3gw  # noqa: PLC0415 - only the etcd backend needs it
            import requests  # noqa: PLC0415 - etcd3gw's own HTTP client
        except ImportError:
            raise Unavailable("etcd3gw is not installed: run scripts/bootstrap.sh") from None
        if not endpoints:
            raise Unavailable("no etcd endpoints given")
        self._rq = requests.exceptions
        self.endpoints = list(endpoints)
        self.tls, self._ssl = tls, ReloadingContext(tls) if tls else None
        self.user, self._password = user, password
        self._token: str | None = None
        self._auth_off = False                         # logged in to an etcd whose authentication is off
        self._login_lock = threading.Lock()
        self.url = ("etcds://" if tls else "etcd://") + ",".join(f"{h}:{p}" for h, p in self.endpoints)
        self.timeout, self.connect_timeout, self.watch_deadline_s = timeout, connect_timeout, watch_deadline_s
        self.progress_interval_s = float(progress_interval_s or self.watch_deadline_s / 3)
        self.probe_interval_s = float(self.watch_deadline_s if probe_interval_s is None else probe_interval_s)
        self._lock = threading.Lock()
        extra = dict(protocol="https", ca_cert=tls.ca, cert_cert=tls.cert, cert_key=tls.key) if tls else {}
        self._clients = [etcd3gw.Etcd3Client(host=h, port=p, timeout=self.timeout, api_path="/v3/", **extra)
                         for h, p in self.endpoints]
        self._current = 0                              # the member to try first
        self.cluster_id: str | None = None             # from the answers' headers (agent/cache.py keys on it)
        self._grpc = Channels(self.endpoints, tls)      # bulk reads (etcd_grpc.py)
        self.use_grpc, self.grpc_fallbacks = True, 0    # bulk reads gRPC failed, done by the gateway
        self.grpc_commits = 0                           # txns committed over gRPC (commit)
        self.grpc_watches = 0                           # watches opened over gRPC (watch)
        self._failed_at = [0.0] * len(self.endpoints)  # monotonic time of each member's last failure

    def endpoint(self, i: int | None = None) -> str:
        """host:port of member i (default: the one requests go to first now)."""
        host, port = self.endpoints[self._current if i is None else i]
        return f"{host}:{port}"

    def close(self) -> None:
        for c in self._clients:
            c.session.close()
        self._grpc.close()

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

    def _http(self, i: int, path: str, payload: dict, token: str | None, timeout: float | None = None):
        """One POST to member i, bounded by connect_timeout + timeout: the response."""
        c, rq = self._clients[i], self._rq
        try:
            # verify given per request: requests lets $REQUESTS_CA_BUNDLE override the session's (psf/requests#3829)
            return c.session.post(c.get_url(path), json=payload,
                                  timeout=(self.connect_timeout, timeout or self.timeout),
                                  headers={"Authorization": token} if token else None,
                                  **({"verify": self.tls.ca} if self.tls else {}))
        except rq.RequestException as e:   # urllib3's NewConnectionError: refused, unreachable
            err = tls_failure(e)           # the handshake failed: nothing was sent
            if err is not None:
                final = tls_refusal(err, bool(self.tls and self.tls.cert))
                raise Unsent(f"TLS with {self.endpoint(i)} failed: " + (final or "the member closed the handshake "
                             "(it does not take our certificate, or it is going down)"), tls=bool(final)) from None
            reason = type(getattr(e.args[0] if e.args else None, "reason", None)).__name__
            unsent = isinstance(e, rq.ConnectTimeout) or reason == "NewConnectionError"
            raise (Unsent if unsent else Unknown)(str(e)) from None
        except OSError as e:               # before sending: a CA, certificate or key file unreadable (rotated)
            raise Unsent(f"{self.endpoint(i)}: cannot use the TLS files: {e}") from None

    def _send(self, i: int, path: str, payload: dict, relogin: bool = True, timeout: float | None = None) -> dict:
        """One request to member i (logged in first if need be). A login that fails
        leaves the request unsent, whatever became of the login."""
        try:
            token = self.token(i)
        except Unknown as e:
            raise Unsent(f"login at {self.endpoint(i)}: {e}") from None
        resp = self._http(i, path, payload, token, timeout)
        if resp.status_code == 200:
            out = _loads(resp.content)
            self.cluster_id = out.get("header", {}).get("cluster_id", self.cluster_id)
            return out
        why = _error(resp)
        if NOSPACE in why:                  # on every member alike: no use trying the next
            raise out_of_space(f"etcd {path} at {self.endpoint(i)}", why)
        if resp.status_code in (408, 500, 503, 504):   # no leader, timed out; 500: an internal error, applied or not
            raise Unknown(f"HTTP {resp.status_code}: {why}")
        if resp.status_code == 429:         # too many requests: refused before anything was applied (next member)
            raise Unsent(f"{self.endpoint(i)}: HTTP 429: {why}")
        if self.user and relogin and any(w in why for w in RELOGIN):
            try:
                self._relogin(i, token)
            except Unknown as e:
                raise Unsent(f"login at {self.endpoint(i)}: {e}") from None
            return self._send(i, path, payload, relogin=False, timeout=timeout)
        where = f"etcd {path} at {self.endpoint(i)}"
        if "CommonName" in why:
            raise Refused(f"{where}: {why}: with authentication on, etcd's JSON gateway takes no client "
                          "certificate with a Common Name; make it with none (the host in OU)")
        if resp.status_code == 403:
            raise Refused(f"{where}: user {self.user or '(none)'} is not permitted: {why}")
        if "user name is empty" in why:
            raise Refused(f"{where}: etcd has authentication on: add user=NAME&password-file=FILE to the URL")
        raise Unavailable(f"{where}: HTTP {resp.status_code}: {why}")

    # --- authentication ----------------------------------------------------------

    def token(self, i: int) -> str | None:
        """The token to send (logging in on member i first if there is none yet)."""
        if self.user and self._token is None and not self._auth_off:
            self._relogin(i, None)
        return self._token

    def _relogin(self, i: int, stale: str | None) -> None:
        """Replace the token stale (None: there is none) by logging in on member i,
        unless another thread did already."""
        with self._login_lock:
            if self._token != stale:
                return
            resp = self._http(i, "/auth/authenticate", {"name": self.user, "password": self._password}, None)
            why = "" if resp.status_code == 200 else _error(resp)
            if resp.status_code == 200:
                self._token, self._auth_off = _loads(resp.content)["token"], False
            elif "authentication is not enabled" in why:
                self._token, self._auth_off = None, True   # set-up in progress: logins start once it is on
            elif "authentication failed" in why or "CommonName" in why:
                raise Refused(f"etcd at {self.endpoint(i)} refused the login of user {self.user}: {why}")
            elif resp.status_code in (408, 429, 500, 503, 504):    # as _send: the next member is asked
                raise Unknown(f"login: HTTP {resp.status_code}: {why}")
            else:
                raise Unavailable(f"etcd login at {self.endpoint(i)}: HTTP {resp.status_code}: {why}")

    @property
    def ssl_context(self):
        """The gateway watch's TLS context, as the files are now (etcd_access.ReloadingContext)."""
        return self._ssl.get() if self._ssl else None

    @property
    def auth_off(self) -> bool:
        """Logged in (user given) to an etcd whose authentication is off: requests go without a token."""
        return self._auth_off

    def forget_token(self, token: str | None) -> None:
        """A watch was refused this token: the next request logs in again."""
        with self._login_lock:
            if token is not None and self._token == token:
                self._token = None

    # --- requests --------------------------------------------------------------

    def _post(self, path: str, payload: dict, idempotent: bool = True, skip: int = 0,
              timeout: float | None = None) -> dict:
        """POST to the members in turn until one answers. A request that is not
        idempotent moves on only if it never reached the member it tried.
        skip: start that many members further on (side-by-side reads)."""
        last: Exception | None = None
        tls_only = True
        for i in self._spread(skip):
            try:
                out = self._send(i, path, payload, timeout=timeout)
            except (Unsent, Unknown) as e:
                last, tls_only = e, tls_only and getattr(e, "tls", False)
                self._failed(i)
                if isinstance(e, Unknown) and not idempotent:
                    raise Unavailable(f"etcd {path} at {self.endpoint(i)}, outcome unknown: {e}") from None
                continue
            self._current = i
            return out
        if tls_only:       # every member refused our certificate or we refused theirs
            hint = "check the URL's ca=, cert= and key=" if self.tls and self.tls.cert else \
                "no client certificate given (cert=, key=): etcd run with --client-cert-auth wants one"
            raise Refused(f"etcd at {self.url}: {last} ({hint})")
        raise Unavailable(f"etcd unreachable at {self.url}: {last}")

    @staticmethod
    def _items(resp: dict) -> tuple[int, list[Item]]:
        rev = int(resp["header"]["revision"])
        # A key that is not UTF-8 is kept (escaped): parse_item lists it as a bad record.
        items = [Item(a2b(kv["key"]).decode(errors="surrogateescape"), a2b(kv.get("value", "")),
                      int(kv["mod_revision"]), int(kv["create_revision"]), int(kv.get("lease", 0)))
                 for kv in resp.get("kvs", ())]
        return rev, items

    def range(self, prefix: str) -> tuple[int, list[Item]]:
        return self._items(self._post("/kv/range", {"key": b64(prefix), "range_end": range_end(prefix)}))

    def range_many(self, prefixes: list[str], then=None) -> tuple[int, list]:
        """The first prefix read as usual; the others at its revision, side by side,
        each from another member: over gRPC (etcd_grpc.py), else through the gateway
        (which marshals about 12 MB/s of JSON before it sends a byte)."""
        def read(k: int, prefix: str, rev: int | None) -> tuple[int, list[Item]]:
            why = None
            if self.use_grpc:
                try:
                    return self._grpc_range(k, prefix, rev)
                except GrpcUnavailable as e:     # this read goes through the gateway; the next tries gRPC again
                    why = e
            at = {"revision": str(rev)} if rev else {}
            resp = self._post("/kv/range", {"key": b64(prefix), "range_end": range_end(prefix), **at},
                              skip=k, timeout=BULK_TIMEOUT_S)
            out = int(resp["header"]["revision"]), [(a2b(kv["key"]), a2b(kv.get("value", "")))
                                                     for kv in resp.get("kvs", ())]
            if why is not None:               # said only when the gateway did what gRPC could not
                self.grpc_fallbacks += 1
                (log.warning if self.grpc_fallbacks == 1 else log.debug)(
                    "etcd gRPC read failed (%s): read through the JSON gateway", why)
            return out
        then = then or (lambda i, items: items)
        order = self._order()     # the other reads' connections are made while the first read is under way
        if self.use_grpc:         # (not waited for: a member that is down must not hold up the snapshot)
            for i in sorted({self._spread(k)[0] for k in range(1, len(prefixes))} - {order[0]}):
                threading.Thread(target=self._grpc.connect, args=(i, self.connect_timeout), daemon=True).start()
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(prefixes) - 1)) as pool:
            rev, first = read(0, prefixes[0], None)
            rest = list(pool.map(lambda kp: then(kp[0] + 1, read(kp[0] + 1, kp[1], rev)[1]), enumerate(prefixes[1:])))
        return rev, [then(0, first)] + rest

    def range_exact(self, key: str) -> tuple[int, list[Item]]:
        return self._items(self._post("/kv/range", {"key": b64(key)}))

    def commit(self, txn: Txn) -> tuple[bool, int]:
        """Over gRPC when the first member to try has a connected channel (a member's
        gateway costs it a JSON round and a second, internal gRPC hop per request:
        measured under 1,000 endpoint writes/s, the etcd leader's CPU 52% -> 41% and
        the commit's median 54 -> 30 ms); else, and whenever gRPC cannot say what
        became of the txn's login, through the gateway."""
        i = self._current
        if self.use_grpc and self._grpc.ready(i):
            done = self._grpc_commit(i, txn)
            if done is not None:
                return done
        compare = [{"key": b64(k), "target": "MOD", "result": "EQUAL", "mod_revision": str(rev)}
                   for k, rev in txn.compares]
        success = [{"request_put": {"key": b64(k), "value": b64(v), **({"lease": str(lease)} if lease else {})}}
                   for k, v, lease in txn.puts]
        success += [{"request_delete_range": {"key": b64(k)}} for k in txn.deletes]
        resp = self._post("/kv/txn", {"compare": compare, "success": success}, idempotent=False)
        return bool(resp.get("succeeded")), int(resp["header"]["revision"])

    def lease_grant(self, ttl: int) -> int:
        # Retried on another member even if the outcome is unknown: a lost grant just expires.
        return int(self._post("/lease/grant", {"TTL": ttl})["ID"])

    def lease_keepalive(self, lease: int, timeout: float | None = None) -> bool:
        resp = self._post("/lease/keepalive", {"ID": str(lease)}, timeout=timeout)
        return int(resp.get("result", {}).get("TTL", -1)) > 0

    def lease_revoke(self, lease: int) -> None:
        with contextlib.suppress(Unavailable):   # expired already, or etcd gone: the keys go with the lease
            self._post("/lease/revoke", {"ID": str(lease)})

    def watch(self, prefix: str, start_rev: int) -> Watch:
        """Over gRPC once this process opened its channels (open_channels), else, or
        if no member opens it there, through the gateway."""
        if self.use_grpc and any(self._grpc.tracked(i) for i in range(len(self.endpoints))):
            try:
                w = GrpcWatch(self, prefix, start_rev)
                self.grpc_watches += 1
                return w
            except GrpcUnavailable as e:
                log.info("%s; watching through the gateway for now", e)
                # ends after a while, to be resumed over gRPC if it can
                return EtcdWatch(self, prefix, start_rev, until=time.monotonic() + GATEWAY_FALLBACK_S)
        return EtcdWatch(self, prefix, start_rev)


def _error(resp) -> str:
    """The gateway's error message ({"error": ..., "message": ..., "code": N}), else the body."""
    try:
        body = _loads(resp.content)
        return str(body.get("message") or body.get("error") or body)
    except ValueError:
        return resp.text.strip()[:300]
