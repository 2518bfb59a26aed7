"""The registry on an etcd run as the lab runs it with TLS (issue 15, items 7
and 9): certificates from lab/certs.py, --client-cert-auth for clients and
peers, authentication on with a user and role per host. A host with its
certificate and password reads, writes, leases and watches; a client
without a certificate, with one of another CA, without a login or with a
wrong password is refused with one clear line; a host cannot write another
host's record; an expired token is replaced without the caller noticing."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from dataplane.registry import Host, Refused, open_registry
from dataplane.registry.etcd_access import TlsFiles, url as etcd_url
from dataplane.registry.kv import Txn, Unavailable
from dataplane.registry.store import key
from tests.registry.conftest import watching
from tests.registry.etcdproc import cluster, stop_member
from tests.registry.test_etcd_watch import Drain


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    with cluster(tmp_path_factory.mktemp("tls"), size=1, tls=True, hosts=("h1", "h2")) as sec:
        yield sec


@pytest.fixture
def regs(secure):
    """h1's and h2's registries, each logged in as its host."""
    opened = [open_registry(secure.url(h), watch_deadline_s=3.0) for h in ("h1", "h2")]
    yield opened
    for r in opened:
        r.close()


def test_a_host_with_its_certificate_and_password_reads_writes_leases_and_watches(regs):
    h1, h2 = regs
    h1.network_create("tls1", 301)
    d = Drain(h1.watch(h1.snapshot().rev + 1))
    try:
        assert d.watch.stream, "a client that logs in watches on the plain HTTP stream (etcd#19752)"
        lease = h2.kv.lease_grant(10)
        h2.host_register(Host.make("h2", "198.18.0.2"), lease)
        assert h2.kv.lease_keepalive(lease)
        ep = h2.endpoint_create("tls-e1", "tls1", "h2")
        got = {e.key for e in d.wait_for(5)}
        assert {key("hosts", "h2"), key("endpoints", "tls-e1"), key("ipam", "tls1", ep.ip)} <= got, got
        snap = h1.snapshot()
        assert snap.endpoints["tls-e1"].host == "h2" and snap.hosts["h2"].vtep == "198.18.0.2"
        h1.endpoint_move_begin("tls-e1", "h1")         # endpoints are shared: any host moves them
        h1.endpoint_move("tls-e1", "h1")
        h2.endpoint_rm("tls-e1")
        h2.kv.lease_revoke(lease)                      # its own record goes with its lease
        # begin, move, the endpoint's three keys, the host record: six events
        assert d.wait_for(len(got) + 6) and d.error is None
        deleted = [e.key for e in d.events if e.value is None]
        assert key("endpoints", "tls-e1") in deleted and key("hosts", "h2") in deleted
        assert "h2" not in h1.snapshot().hosts
    finally:
        d.stop()
        h1.network_rm("tls1")


def test_a_watch_outside_the_hosts_grant_is_refused(regs, transport, caplog):
    h1, _ = regs
    watching(h1.kv, transport)
    with caplog.at_level("INFO", logger="dataplane.registry"), pytest.raises(Refused, match="permission denied"):
        h1.kv.watch("/elsewhere/", 1)
    assert h1.kv.transport_counts()["grpc_watches"] == 0
    assert "through the gateway" not in caplog.text, "refused by gRPC itself, not by the fallback"


def test_an_idle_logged_in_watch_stays_up_and_resumes(secure, regs, transport):
    """Heard from while idle: on the gateway's plain stream by its probe reads, over
    gRPC by the answers to its progress requests. A 6-s deadline (progress asked every 2 s):
    on the Intel Xeon guest of 2026-12-06, with 3 s and a request a second, the member left
    a gRPC watch unanswered for 3 s in about half the runs that followed the gateway's (at
    a2aa667 too); the agent's deadline is at least 10 s by default."""
    h2 = regs[1]
    h1 = open_registry(secure.url("h1"), watch_deadline_s=6.0)
    watching(h1.kv, transport)
    rev = h1.snapshot().rev
    d = Drain(h1.watch(rev + 1))
    try:
        assert d.watch.transport == transport
        time.sleep(7.0)                                # over the deadline: the probes keep it heard from
        # Heard from within two progress periods (2 s each): unheard, it would read 7 s. (< 2.0 read
        # 2.003 once, a loaded CPU's reply a few ms after the period.)
        assert d.thread.is_alive() and d.error is None and d.watch.lag_s() < 4.0
        h2.network_create("tls2", 302)
        assert [e.key for e in d.wait_for(2)][:2] == [key("networks", "tls2"), key("vnis", 302)]
        resume = d.watch.resume_rev()
    finally:
        t0 = time.monotonic()
        d.stop()
    assert not d.thread.is_alive() and time.monotonic() - t0 < 2, "close() did not wake the stream's reader"
    h2.network_rm("tls2")
    again = Drain(h1.watch(resume))
    try:
        gone = again.wait_for(2)
        assert {e.key for e in gone} == {key("networks", "tls2"), key("vnis", 302)} and all(e.value is None for e in gone)
    finally:
        again.stop()
        h1.close()


def _refused_url(secure, tmp_path, case: str) -> str:
    from lab import certs
    pki, h1 = secure.pki, "dataplane-host-h1"
    other = certs.Pki(str(tmp_path / "other"))
    if case in ("another CA's certificate", "members not signed by the CA"):
        certs.make_ca(other.dir)
        certs.make_cert(other.dir, other.ca, "client-h1", "/O=dataplane/OU=h1")
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    mine = pki.client("h1")
    return {
        "no client certificate": etcd_url(secure.endpoints, TlsFiles(pki.ca.cert), h1, pki.password_file(h1)),
        "another CA's certificate": etcd_url(secure.endpoints, TlsFiles(pki.ca.cert, other.client("h1").cert,
                                                                        other.client("h1").key), h1, pki.password_file(h1)),
        "members not signed by the CA": etcd_url(secure.endpoints, TlsFiles(other.ca.cert, mine.cert, mine.key),
                                                 h1, pki.password_file(h1)),
        "no login": etcd_url(secure.endpoints, mine),
        "a wrong password": etcd_url(secure.endpoints, mine, h1, str(wrong)),
        "another host's password": etcd_url(secure.endpoints, mine, h1, pki.password_file("dataplane-host-h2")),
        "a user that does not exist": etcd_url(secure.endpoints, mine, "mallory", pki.password_file(h1)),
    }[case]


@pytest.mark.parametrize("case, why", [
    ("no client certificate", "TLS with .* failed"),
    ("another CA's certificate", "TLS with .* failed"),
    ("members not signed by the CA", "TLS with .* failed: .*certificate"),
    ("no login", "authentication on: add user="),
    ("a wrong password", "refused the login of user dataplane-host-h1"),
    ("another host's password", "refused the login of user dataplane-host-h1"),
    ("a user that does not exist", "refused the login of user mallory"),
])
def test_a_client_without_valid_credentials_is_refused_cleanly(secure, tmp_path, case, why):
    url = _refused_url(secure, tmp_path, case)
    # etcd refuses a certificate of another CA with an alert or by closing the connection, whichever
    # comes first; a close could be a member going down, so that one is Unavailable, not Refused.
    refused = Unavailable if case == "another CA's certificate" else Refused
    reg = open_registry(url)
    try:
        with pytest.raises(refused, match=why):
            reg.snapshot()
        with pytest.raises(refused):
            reg.kv.commit(Txn().put(key("networks", "evil"), b"{}"))
        if case != "no login":            # without a login the watch is a WebSocket: refused as it starts
            with pytest.raises(refused):
                reg.watch(1)
    finally:
        reg.close()
    # The CLI says it in one line, with the exit code of a refusal (5), no traceback.
    r = subprocess.run([sys.executable, "-m", "dataplane.cli", "network", "list", "--registry", url],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode in {refused.exit_code, Refused.exit_code} and r.stderr.startswith("dataplane: error: "), r
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr, r


def test_a_host_cannot_write_another_hosts_record(regs):
    h1, h2 = regs
    lease2 = h2.kv.lease_grant(10)
    h2.host_register(Host.make("h2", "198.18.0.2"), lease2)
    before = h1.kv.get(key("hosts", "h2"))
    with pytest.raises(Refused, match="dataplane-host-h1 is not permitted"):
        h1.host_register(Host.make("h2", "198.18.0.2"), h1.kv.lease_grant(10))   # same VTEP: only the role stops it
    for txn in (Txn().put(key("hosts", "h2"), b'{"name": "h2", "vtep": "198.18.0.66"}'),
                Txn().delete(key("hosts", "h2")),
                Txn().put(key("hosts", "h10"), b"{}"),      # the grant is that exact key, not a prefix
                Txn().put("/elsewhere/x", b"1")):
        with pytest.raises(Refused, match="not permitted"):
            h1.kv.commit(txn)
    with pytest.raises(Refused, match="not permitted"):
        h1.kv._post("/lease/revoke", {"ID": str(lease2)})   # h2's record is on it
    with pytest.raises(Refused, match="not permitted"):
        h1.kv.range("/elsewhere/")
    assert h1.kv.get(key("hosts", "h2")) == before
    h1.host_register(Host.make("h1", "198.18.0.1"), h1.kv.lease_grant(10))     # its own: yes
    assert set(h2.snapshot().hosts) >= {"h1", "h2"}
    h2.kv.lease_revoke(lease2)


def test_an_expired_token_is_replaced_for_requests_txns_and_watches(tmp_path, transport):
    with cluster(tmp_path, size=1, tls=True, hosts=("h1",), extra=["--auth-token-ttl", "1"]) as sec:
        reg = open_registry(sec.url("h1"), watch_deadline_s=3.0)
        watching(reg.kv, transport)
        try:
            reg.snapshot()
            first = reg.kv._token
            if transport == "gateway":                 # (over gRPC: test_etcd_grpc_txn.py)
                time.sleep(2.5)                        # etcd forgets a simple token idle for its TTL
            reg.network_create("ttl1", 310)            # a txn: refused before applying, so sent again
            assert transport == "grpc" or reg.kv._token not in (None, first)
            assert [n.name for n in reg.networks()] == ["ttl1"]
            rev, stale = reg.snapshot().rev, reg.kv._token
            time.sleep(2.5)
            d = Drain(reg.watch(rev + 1))              # created with the stale token: refused, logged in, again
            try:
                assert d.watch.transport == transport
                assert reg.kv._token not in (None, stale)
                time.sleep(2.5)                        # the token expires again: a running watch is not asked
                reg.network_rm("ttl1")
                assert len(d.wait_for(2)) == 2 and d.error is None
            finally:
                d.stop()
        finally:
            reg.close()


def test_auth_setup_from_the_cli_turns_authentication_on_and_is_idempotent(tmp_path):
    with cluster(tmp_path, size=1, tls=True, auth=False, hosts=("h1", "h2")) as sec:
        plain = open_registry(etcd_url(sec.endpoints, sec.pki.client("h1")))   # no login: auth is off yet
        plain.network_create("pre", 320)
        plain.close()
        argv = [sys.executable, "-m", "dataplane.cli", "registry", "auth-setup", "--registry", sec.url(),
                "--password-dir", str(tmp_path / "pw"), "h1", "h2"]
        for _ in range(2):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
        assert "authentication enabled" not in r.stdout         # the second run found it on
        assert oct(os.stat(tmp_path / "pw" / "h1.password").st_mode & 0o777) == "0o600"
        url = etcd_url(sec.endpoints, sec.pki.client("h1"), "dataplane-host-h1", str(tmp_path / "pw" / "h1.password"))
        assert url.split("&", 3)[3] in r.stdout                 # it tells each host what to add to its URL
        reg = open_registry(url)
        try:
            assert [n.name for n in reg.networks()] == ["pre"]
            reg.host_register(Host.make("h1", "198.18.0.1"), reg.kv.lease_grant(5))
            with pytest.raises(Refused):
                reg.kv.commit(Txn().put(key("hosts", "h2"), b"{}"))
        finally:
            reg.close()
        with pytest.raises(Refused, match="authentication on"):
            open_registry(etcd_url(sec.endpoints, sec.pki.client("h1"))).snapshot()


def test_a_watch_on_a_stopped_member_ends_within_the_deadline_when_logged_in(tmp_path, transport):
    import signal
    with cluster(tmp_path, size=1, tls=True, hosts=("h1",)) as sec:
        reg = open_registry(sec.url("h1"), watch_deadline_s=1.5)
        d = Drain(watching(reg.kv, transport).watch("/dataplane/", reg.snapshot().rev + 1))
        m = sec.members[0]
        try:
            assert d.watch.transport == transport
            time.sleep(0.8)
            stop_member(m.pid)
            stopped = time.monotonic()
            d.thread.join(6)
            assert not d.thread.is_alive() and isinstance(d.error, Unavailable)
            assert d.ended_at - stopped <= 1.5 + reg.kv.timeout + 0.5, d.error
        finally:
            os.kill(m.pid, signal.SIGCONT)
            d.stop()
            reg.close()



def test_the_labs_launcher_runs_a_tls_member_as_the_lab_does(tmp_path):
    """lab/etcd.start with a member certificate (the lab's path, here on loopback
    instead of a namespace): healthy, leader over TLS, auth on, a host's URL works."""
    from lab import certs, etcd
    from dataplane.registry import etcd_auth
    from tests.registry.etcdproc import free_port, require_etcd
    require_etcd()
    pki = certs.make_pki(str(tmp_path / "pki"), {"e1": ("127.0.0.1",)}, ["h1", "admin"],
                         ["root", etcd_auth.host_user("h1")])
    port = free_port()
    pid = etcd.start(str(tmp_path / "e1"), "127.0.0.1", port, free_port(), name="e1", tls=pki.member("e1"))
    try:
        assert etcd.is_leader("127.0.0.1", port, tls=pki.member("e1")) is True
        assert etcd.is_leader("127.0.0.1", port) is None          # plain HTTP gets no answer
        done = etcd.enable_auth([("127.0.0.1", port)], pki, ["h1"])
        assert done[-1] == "authentication enabled"
        reg = open_registry(etcd.host_url([("127.0.0.1", port)], pki, "h1"))
        try:
            reg.host_register(Host.make("h1", "198.18.0.1"), reg.kv.lease_grant(5))
            assert "h1" in reg.snapshot().hosts
        finally:
            reg.close()
        assert etcd.wait_healthy("127.0.0.1", port, tls=pki.member("e1"), timeout=5)
    finally:
        etcd.stop(pid)


def test_tls_without_a_login_watches_on_a_websocket_over_tls(tmp_path):
    """etcds:// with certificates but no user (an etcd without authentication):
    the WebSocket watch, its progress requests answered, over TLS; close() ends it."""
    with cluster(tmp_path, size=1, tls=True, auth=False, hosts=("h1",)) as sec:
        reg = open_registry(etcd_url(sec.endpoints, sec.pki.client("h1")), watch_deadline_s=1.5)
        d = Drain(reg.watch(reg.snapshot().rev + 1))
        try:
            assert not d.watch.stream
            time.sleep(2.0)                           # idle past the deadline: progress answers keep it heard
            assert d.thread.is_alive() and d.error is None and d.watch.lag_s() < 1.0
            reg.network_create("ws1", 330)
            assert [e.key for e in d.wait_for(2)][:2] == [key("networks", "ws1"), key("vnis", 330)]
        finally:
            t0 = time.monotonic()
            d.stop()
            assert not d.thread.is_alive() and time.monotonic() - t0 < 2, "close() did not wake the TLS reader"
            reg.close()


def test_a_logged_in_host_fails_over_when_its_member_dies(tmp_path):
    """3 members with TLS and authentication: the token the client got on one member
    is good on the others (etcd 3.4 replicates simple tokens through raft); its
    member killed, requests go on through another and the watch resumes there."""
    with cluster(tmp_path, size=3, tls=True, hosts=("h1",)) as sec:
        from lab import etcd
        reg = open_registry(etcd.host_url(sec.endpoints, sec.pki, "h1"), watch_deadline_s=2.0)
        try:
            reg.kv.timeout = 1.5
            d = Drain(reg.watch(reg.snapshot().rev + 1))
            reg.network_create("fo1", 340)
            assert len(d.wait_for(2)) == 2
            victim = sec.members[d.watch.member]
            token = reg.kv._token
            victim.kill()
            d.thread.join(8)
            assert isinstance(d.error, Unavailable), "the watch outlived its member"
            from tests.registry.test_etcd_failover import _until_ok   # the leader may be the victim: an election
            _until_ok(lambda: reg.network_create("fo2", 341, exist_ok=True))   # through another member, same token
            d2 = Drain(reg.watch(d.watch.resume_rev()))
            assert [e.key for e in d2.wait_for(2)][:2] == [key("networks", "fo2"), key("vnis", 341)]
            assert sec.members[d2.watch.member] is not victim and reg.kv._token == token
            d2.stop()
        finally:
            reg.close()


def test_a_logged_in_watch_at_a_compacted_revision_raises_compacted(secure, regs):
    from dataplane.registry import Compacted
    h1, _ = regs
    first = h1.network_create("cp1", 350) and h1.snapshot().rev
    h1.network_rm("cp1")
    now = h1.snapshot().rev
    admin = open_registry(secure.url())
    try:
        admin.kv._post("/kv/compaction", {"revision": str(now), "physical": True})
    finally:
        admin.close()
    w = h1.watch(first)
    with pytest.raises(Compacted, match=str(now)):
        next(w)
    w.close()


def test_tls_files_missing_for_a_moment_make_the_registry_unavailable_not_broken(secure, tmp_path):
    """A CA, certificate or key file that cannot be read for a moment (being rotated): every
    request is Unavailable, which the agent waits out, and works again once the file is back.
    requests raised a plain OSError there, which the lease keeper did not catch: its thread
    ended, no keepalive was sent again, and the host was seen dead a TTL later."""
    import shutil
    from lab import certs  # noqa: F401 - the Pki's files are what the lab writes
    pki, h1 = secure.pki, "dataplane-host-h1"
    mine = pki.client("h1")
    files = {}
    for name, path in (("ca", pki.ca.cert), ("cert", mine.cert), ("key", mine.key)):
        files[name] = str(tmp_path / name)
        shutil.copy(path, files[name])
    url = etcd_url(secure.endpoints, TlsFiles(files["ca"], files["cert"], files["key"]), h1, pki.password_file(h1))
    reg = open_registry(url)
    try:
        lease = reg.kv.lease_grant(30)
        for name in ("ca", "cert"):
            os.rename(files[name], files[name] + ".away")
            reg.kv.open_channels()                        # gRPC: not used for now, no error
            with pytest.raises(Unavailable, match="cannot use the TLS files"):
                reg.kv.lease_keepalive(lease)
            with pytest.raises(Unavailable):
                reg.kv.get(key("networks", "x"))
            os.rename(files[name] + ".away", files[name])
            assert reg.kv.lease_keepalive(lease)
    finally:
        reg.close()


def test_a_watch_starts_again_once_the_tls_files_are_rotated(secure, regs, tmp_path, transport):
    """The certificate files are replaced (a rotation: here from another CA's, which the members
    refuse, to the right ones). Requests read the files anew each time; the watch's SSL context
    and the gRPC channels were made once, from the old files, so a new watch never started
    again while the lease kept the host alive."""
    import shutil
    from lab import certs
    pki, h1 = secure.pki, "dataplane-host-h1"
    other = certs.Pki(str(tmp_path / "other"))
    certs.make_ca(other.dir)
    certs.make_cert(other.dir, other.ca, "client-h1", "/O=dataplane/OU=h1")
    files = {"ca": str(tmp_path / "ca"), "cert": str(tmp_path / "cert"), "key": str(tmp_path / "key")}
    shutil.copy(pki.ca.cert, files["ca"])
    shutil.copy(other.client("h1").cert, files["cert"])
    shutil.copy(other.client("h1").key, files["key"])
    reg = open_registry(etcd_url(secure.endpoints, TlsFiles(files["ca"], files["cert"], files["key"]), h1,
                                 pki.password_file(h1)), watch_deadline_s=3.0)
    watching(reg.kv, transport)
    try:
        with pytest.raises(Unavailable):
            reg.snapshot()                               # refused: another CA's certificate
        mine = pki.client("h1")
        for name, src in (("cert", mine.cert), ("key", mine.key)):
            shutil.copy(src, files[name] + ".new")
            os.replace(files[name] + ".new", files[name])
        rev = reg.snapshot().rev                         # requests read the new files
        d = Drain(reg.watch(rev + 1))
        try:
            regs[0].network_create("rot1", 311)
            assert len(d.wait_for(2)) == 2 and d.error is None, "no watch after the rotation"
        finally:
            d.stop()
        regs[0].network_rm("rot1")
    finally:
        reg.close()
