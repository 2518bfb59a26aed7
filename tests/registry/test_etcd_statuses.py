"""How the client takes a member's HTTP error statuses (review finding of stop 47): 500 (an
internal error, outcome unknown) and 429 (too many requests, refused before anything was
applied) were Unavailable outright, so a read failed that the next member would have served.
Now a read goes on to the next member after either; a write goes on after 429 only. The
failing member is a stand-in that answers every request with that status, as etcd's gateway
words its errors; the member behind it is a real etcd."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading

import pytest

from dataplane.registry import parse_url
from dataplane.registry.kv import Txn, Unavailable
from tests.registry.etcdproc import cluster


@contextlib.contextmanager
def failing_member(status: int, message: str):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):      # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"error": message, "message": message, "code": 13 if status == 500 else 8}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status,message", [(500, "etcdserver: unexpected error"),
                                            (429, "etcdserver: too many requests")])
def test_a_read_goes_on_to_the_next_member(tmp_path, status, message):
    from dataplane.registry.kv_etcd import EtcdKV
    with cluster(tmp_path, size=1) as members, failing_member(status, message) as bad:
        good = EtcdKV(parse_url(f"etcd://127.0.0.1:{members[0].port}")[1])
        both = parse_url(f"etcd://127.0.0.1:{bad},127.0.0.1:{members[0].port}")[1]
        reader, writer = EtcdKV(both), EtcdKV(both)         # each asks the failing member first
        try:
            good.commit(Txn().put("/dataplane/networks/n", b"{}"))
            assert [it.key for it in reader.range("/dataplane/networks/")[1]] == ["/dataplane/networks/n"]
            if status == 429:                               # refused unapplied: sent to the next member
                assert writer.commit(Txn().put("/dataplane/networks/m", b"{}"))[0]
            else:                                           # applied or not: not sent again elsewhere
                with pytest.raises(Unavailable, match="outcome unknown"):
                    writer.commit(Txn().put("/dataplane/networks/m", b"{}"))
        finally:
            for kv in (reader, writer, good):
                kv.close()
