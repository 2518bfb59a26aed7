"""The agent's HTTP server for /metrics (metrics.py's collector) and /healthz, over TLS and
behind passwords where a web config (metrics_web.py, metrics_served.py) says."""

from __future__ import annotations

import collections
import logging
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import generate_latest

from dataplane.agent import metrics_served
from dataplane.agent.metrics import registry_for
from dataplane.core import model
from dataplane.core.errors import UsageError

log = logging.getLogger("dataplane.agent")


def serve(agent, address: str, web_config: str = "") -> "Server | None":
    """Start serving on address ("": nowhere), with web_config's TLS and passwords if given
    (metrics_web.py); a failure is logged, never fatal, and kept in agent.metrics_error for
    `status` (it was in the log only: up exited 0, status said nothing, and Prometheus alerted
    that a healthy agent was down). A web config that cannot be read serves nothing: never
    plain HTTP in its stead."""
    agent.metrics_error = None
    if not address:
        return None
    try:
        srv = Server(agent, address, web_config)
    except Exception as e:  # noqa: BLE001 - whatever it is, the agent goes on without /metrics
        log.error("%s", e)
        agent.metrics_error = str(e)
        return None
    srv.start()
    return srv


SCRAPE_WAIT_S = 10.0             # Prometheus' default scrape timeout
MAX_CONNECTIONS = 32
PER_ADDRESS = 8


class _Refused(ConnectionError):
    """The web config cannot be read (or reads weaker than at the start): every connection refused."""


class _HTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS at once and PER_ADDRESS from one address:
    past that a new one is closed at once (a flood of connections held a thread each, without
    bound; one address alone could shut Prometheus out). Daemon threads: stopping joins none."""
    daemon_threads = True

    def __init__(self, *args, **kw):
        self.slots, self.by_address, self.counting = MAX_CONNECTIONS, collections.Counter(), threading.Lock()
        super().__init__(*args, **kw)

    def verify_request(self, request, client_address) -> bool:
        with self.counting:
            if self.slots > 0 and self.by_address[client_address[0]] < PER_ADDRESS:
                self.slots -= 1
                self.by_address[client_address[0]] += 1
                return True
        log.debug("metrics: too many connections under way: one from %s closed", client_address[0])
        return False

    def _release(self, client_address) -> None:
        with self.counting:
            self.slots += 1
            self.by_address[client_address[0]] -= 1
            if self.by_address[client_address[0]] <= 0:
                del self.by_address[client_address[0]]

    def process_request(self, request, client_address):
        try:
            super().process_request(request, client_address)
        except BaseException:                # no thread: its slot is not taken
            self._release(client_address)
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(client_address)

    def handle_error(self, request, client_address):
        e = sys.exc_info()[1]
        if isinstance(e, (ssl.SSLError, ConnectionError, TimeoutError)):   # logged where seen, or a client gone
            log.debug("metrics: connection from %s: %s", client_address[0], e)
        else:
            log.exception("metrics: request from %s failed", client_address[0])


class _Every:
    """A log line at most every `period` seconds, with the count of those left out."""

    def __init__(self, period: float = 60.0):
        self.period, self.last, self.left, self.lock = period, -period, 0, threading.Lock()

    def __call__(self, msg: str, *args) -> None:
        with self.lock:
            now = time.monotonic()
            if now - self.last < self.period:
                self.left += 1
                return
            left, self.left, self.last = self.left, 0, now
        log.info(msg + (f" ({left} more since the last such line)" if left else ""), *args)


class Server:
    """GET /metrics (text format 0.0.4) and /healthz (200 only when synced and
    connected to the registry), on a thread of its own; over TLS and behind
    passwords as web_config (a file, metrics_web.py) says."""

    def __init__(self, agent, address: str, web_config: str = ""):
        host, port = model.parse_host_port(address, "metrics address")
        web = self.web = metrics_served.Served(web_config) if web_config else None
        said = _Every()
        registry = registry_for(agent)
        scraping = self.scraping = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            timeout = 10
            web_cfg = None

            def setup(self):
                if web is not None:         # the handshake here, in the connection's thread: never in accept's
                    self.web_cfg = web.current()
                    if self.web_cfg is None:
                        raise _Refused(web.error)
                    if self.web_cfg.ctx is not None:
                        self.request.settimeout(self.timeout)
                        try:
                            self.request = self.web_cfg.ctx.wrap_socket(self.request, server_side=True)
                        except (ssl.SSLError, ConnectionError, TimeoutError) as e:
                            said("metrics: TLS handshake from %s failed: %s", self.client_address[0], e)
                            raise
                super().setup()

            def finish(self):
                try:
                    super().finish()
                finally:
                    if isinstance(self.request, ssl.SSLSocket):
                        self.request.close()

            def do_GET(self):  # noqa: N802 - the http.server API
                try:
                    ok = web is None or web.allowed(self.web_cfg, self.headers.get("Authorization"))
                except metrics_served.Busy:
                    return self._answer(b"too many password checks under way\n", 503, "text/plain")
                if not ok:
                    return self._answer(b"unauthorized\n", 401, "text/plain",
                                        {"WWW-Authenticate": 'Basic realm="dataplane metrics"'})
                if self.path.split("?")[0] == "/metrics":
                    # One scrape at a time (the agent's lock only for a copy). One stuck in a netlink or
                    # namespace call held every later one, a thread each, for good: they give up.
                    if scraping.acquire(timeout=SCRAPE_WAIT_S):
                        try:
                            body, code = generate_latest(registry), 200
                        finally:
                            scraping.release()
                        ctype = "text/plain; version=0.0.4; charset=utf-8"
                    else:
                        body, code, ctype = b"a scrape is under way\n", 503, "text/plain"
                elif self.path.split("?")[0] == "/healthz":
                    # The registry takes the lease's keepalives (lease.py): not the watch, down for
                    # seconds at every etcd member's restart (a liveness probe restarted healthy
                    # agents), and up through a full etcd that refused the lease (200 while other
                    # hosts were about to drop this one).
                    ok = agent.synced.is_set() and bool(getattr(agent.leases, "live", False))
                    body, code, ctype = (b"ok\n" if ok else b"not synced or registry unreachable\n",
                                         200 if ok else 503, "text/plain")
                else:
                    body, code, ctype = b"not found\n", 404, "text/plain"
                self._answer(body, code, ctype)

            def do_HEAD(self):  # noqa: N802 - load balancers' health checks (501 before)
                self.head_only = True
                self.do_GET()

            def _answer(self, body: bytes, code: int, ctype: str, headers: dict | None = None) -> None:
                self.send_response(code)
                for name, value in {"Content-Type": ctype, "Content-Length": str(len(body)), **(headers or {})}.items():
                    self.send_header(name, value)
                self.end_headers()
                if not getattr(self, "head_only", False):
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        try:
            self.httpd = _HTTPServer((host, port), Handler)
        except OSError as e:
            raise UsageError(f"cannot serve metrics on {address}: {e}") from None
        self.address = f"{host}:{self.httpd.server_address[1]}"
        self.asked = address                    # as configured (status compares it with the node's)
        self.web_config = web_config

    def start(self) -> None:
        threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True).start()
        scheme = "https" if self.web and self.web.cfg.ctx else "http"
        log.info("metrics on %s://%s/metrics%s", scheme, self.address,
                 f" (web config {self.web_config})" if self.web else "")

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
