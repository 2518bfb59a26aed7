"""The metrics web config (agent/metrics_web.py): TLS, client certificates and passwords on the
agent's real HTTP server, with certificates openssl makes (lab/certs.py); what a bad file says;
and a rotated certificate or password taken without a restart."""

from __future__ import annotations

import base64
import http.client
import os
import ssl
import subprocess
import threading
import time
from types import SimpleNamespace

import bcrypt
import pytest

from dataplane.agent import metrics_http, metrics_web
from dataplane.core.errors import UsageError
from lab import certs
from tests.ports import free_port


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    ca = certs.make_ca(d, "ca", "metrics test CA")
    server = certs.make_cert(d, ca, "server", "/CN=metrics", ips=("127.0.0.1",), server=True)
    client = certs.make_cert(d, ca, "client", "/O=dataplane/OU=prometheus")
    other_ca = certs.make_ca(d, "other", "another CA")
    stranger = certs.make_cert(d, other_ca, "stranger", "/O=elsewhere/OU=prometheus")
    encrypted = os.path.join(d, "encrypted.key")
    subprocess.run(["openssl", "pkey", "-in", server.key, "-out", encrypted, "-aes256", "-passout", "pass:x"],
                   check=True, capture_output=True)
    return SimpleNamespace(dir=d, ca=ca, server=server, client=client, other_ca=other_ca, stranger=stranger,
                           encrypted_key=encrypted)


def _write(path, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def _config(pki, tmp_path, users: dict | None = None, auth: str = "RequireAndVerifyClientCert",
            name: str = "web.yml", server=None) -> str:
    server = server or pki.server
    lines = ["tls_server_config:", f"  cert_file: {server.cert}", f"  key_file: {server.key}",
             f"  client_auth_type: {auth}"] + ([f"  client_ca_file: {pki.ca.cert}"] if auth != "NoClientCert" else [])
    if users:
        lines += ["basic_auth_users:"] + [f"  {u}: '{_hash(p)}'" for u, p in users.items()]
    return _write(tmp_path / name, "\n".join(lines) + "\n")


@pytest.fixture
def serve():
    made = []

    def start(web_config: str):
        ag = SimpleNamespace(lock=threading.RLock(), synced=threading.Event(), connected=threading.Event(),
                             leases=SimpleNamespace(live=True))
        ag.synced.set()
        ag.connected.set()
        srv = metrics_http.Server(ag, f"127.0.0.1:{free_port()}", web_config)
        srv.start()
        made.append(srv)
        return srv
    yield start
    for srv in made:
        srv.stop()


def _get(srv, pki, cert=None, auth: tuple[str, str] | None = None, ca=None) -> int:
    """GET /healthz over TLS: the status code (an SSL error raises)."""
    ctx = ssl.create_default_context(cafile=(ca or pki.ca).cert)
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    host, port = srv.address.split(":")
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=5)
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        conn.request("GET", "/healthz", headers=headers)
        r = conn.getresponse()
        if r.status == 401:
            assert r.getheader("WWW-Authenticate", "").startswith("Basic "), r.getheaders()
        return r.status
    finally:
        conn.close()


def test_client_certificate_and_password_are_both_needed(pki, tmp_path, serve, monkeypatch):
    srv = serve(_config(pki, tmp_path, {"prometheus": "s3cret"}))
    hashed = []
    real = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda pw, h: hashed.append(pw) or real(pw, h))
    assert _get(srv, pki, pki.client, ("prometheus", "s3cret")) == 200
    assert _get(srv, pki, pki.client, ("prometheus", "s3cret")) == 200
    assert hashed == [b"s3cret"], "the second time from the cache"
    assert _get(srv, pki, pki.client) == 401, "no password"
    assert _get(srv, pki, pki.client, ("prometheus", "wrong")) == 401
    assert _get(srv, pki, pki.client, ("prometheus", "wrong")) == 401
    assert hashed == [b"s3cret", b"wrong"], "a wrong password is remembered too"
    assert _get(srv, pki, pki.client, ("nobody", "s3cret")) == 401
    assert _get(srv, pki, pki.client, ("prometheus", "x" * 100)) == 401, "over bcrypt's 72 bytes"
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _get(srv, pki, None, ("prometheus", "s3cret"))          # no client certificate
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _get(srv, pki, pki.stranger, ("prometheus", "s3cret"))  # one another CA signed


def test_plain_http_gets_nothing_from_a_tls_server(pki, tmp_path, serve):
    srv = serve(_config(pki, tmp_path, auth="NoClientCert"))
    host, port = srv.address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        conn.request("GET", "/metrics")
        conn.getresponse()
    conn.close()
    assert _get(srv, pki) == 200, "NoClientCert: TLS without a client certificate"


def test_a_new_password_and_certificate_are_taken_without_a_restart(pki, tmp_path, serve):
    server = certs.make_cert(str(tmp_path), pki.ca, "mine", "/CN=metrics", ips=("127.0.0.1",), server=True)
    path = _config(pki, tmp_path, {"prometheus": "old"}, server=server)
    srv = serve(path)
    assert _get(srv, pki, pki.client, ("prometheus", "old")) == 200
    _config(pki, tmp_path, {"prometheus": "new-password"}, server=server)
    assert _get(srv, pki, pki.client, ("prometheus", "old")) == 401, "the cached old password is forgotten"
    assert _get(srv, pki, pki.client, ("prometheus", "new-password")) == 200
    # A renewal in place: a certificate from another CA written over the same two files.
    fresh = certs.make_cert(str(tmp_path), pki.other_ca, "fresh", "/CN=metrics", ips=("127.0.0.1",), server=True)
    for src, dst in ((fresh.cert, server.cert), (fresh.key, server.key)):
        with open(src) as f:
            _write(dst, f.read())
    assert _get(srv, pki, pki.client, ("prometheus", "new-password"), ca=pki.other_ca) == 200


def test_a_web_config_that_reads_wrong_or_weaker_refuses_until_it_is_right(pki, tmp_path, serve):
    """Fails closed, as the exporter toolkit does: a file caught half written (empty) or broken
    refuses every connection, and so does one weaker than at the start, which would otherwise
    have served the metrics without a password, or in plain HTTP."""
    path = _config(pki, tmp_path, {"prometheus": "pw"})
    srv = serve(path)
    good = open(path).read()
    for text, why in (("", "the file is empty"), ("tls_server_config: [\n", "not YAML"),
                      (good.split("basic_auth_users")[0], "weaker than it was")):
        _write(path, text)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _get(srv, pki, pki.client, ("prometheus", "pw"))
        assert why in srv.web.error, srv.web.error
    _write(path, good)
    assert _get(srv, pki, pki.client, ("prometheus", "pw")) == 200, "taken again once it reads right"
    assert srv.web.error is None


def test_a_web_config_the_agent_cannot_read_at_its_start_serves_nothing(pki, tmp_path):
    ag = SimpleNamespace(lock=threading.RLock(), synced=threading.Event(), connected=threading.Event())
    address = f"127.0.0.1:{free_port()}"
    assert metrics_http.serve(ag, address, _write(tmp_path / "web.yml", "")) is None
    assert "the file is empty" in ag.metrics_error
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection(*address.split(":"), timeout=5).request("GET", "/metrics")


def test_relative_names_are_from_the_files_directory(pki, tmp_path):
    d = tmp_path / "etc"
    d.mkdir()
    for src, dst in ((pki.server.cert, "m.crt"), (pki.server.key, "m.key")):
        with open(src) as f:
            _write(d / dst, f.read())
    cfg = metrics_web.load(_write(d / "web.yml", "tls_server_config:\n  cert_file: m.crt\n  key_file: m.key\n"))
    assert cfg.tls["cert_file"] == str(d / "m.crt") and cfg.tls["client_auth_type"] == "NoClientCert"


BAD = {
    "rate_limit:\n  burst: 2\n": "rate_limit not supported",
    "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  cipher_suites: [x]\n":
        "cipher_suites not supported",
    "tls_server_config:\n  cert_file: {crt}\n": "needs cert_file and key_file",
    "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  client_auth_type: RequireAnyClientCert\n":
        "client_auth_type 'RequireAnyClientCert'",
    "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  client_auth_type: RequireAndVerifyClientCert\n":
        "needs client_ca_file",
    "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  client_auth_type: NoClientCert\n"
    "  client_ca_file: {crt}\n": "that CA would check nobody",
    "tls_server_config:\n  cert_file: {crt}\n  key_file: {enc}\n": "the key has a passphrase",
    "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\nbasic_auth_users:\n  yes: '{hash}'\n":
        "the user name True must be quoted",
    "tls_server_config:\n  1: x\n": "1 not supported",
    "1: x\nrate_limit: 2\n": "1, rate_limit not supported",
    "": "the file is empty",
    "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  min_version: TLS13\n  max_version: TLS12\n":
        "min_version above max_version",
    "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\nbasic_auth_users:\n  p: '{costly}'\n":
        "has cost 31",
    "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\nbasic_auth_users:\n  p: '{v2}'\n":
        "is no bcrypt hash",
    "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\nbasic_auth_users:\n  p: |\n    {hash}\n":
        "the password of 'p' is no bcrypt hash",     # a block scalar's last newline: it never matched
    "tls_server_config:\n": "must be a mapping",
    "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n  min_version: TLS10\n": "min_version 'TLS10'",
    "tls_server_config:\n  cert_file: {crt}\n  key_file: {crt}\n": "PEM",
    "tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\nbasic_auth_users:\n  p: plaintext\n":
        "no bcrypt hash",
    "basic_auth_users:\n  p: '{hash}'\n": "would send the passwords in clear",
    "- a list\n": "a mapping",
    "tls_server_config: [\n": "not YAML",
}


@pytest.mark.parametrize("text", list(BAD))
def test_a_bad_web_config_says_what_is_wrong(pki, tmp_path, text):
    path = _write(tmp_path / "web.yml", text.format(crt=pki.server.cert, key=pki.server.key, hash=_hash("p"),
                                                    enc=pki.encrypted_key, costly="$2b$31$" + "a" * 53,
                                                    v2="$2$10$" + "a" * 53))
    with pytest.raises(UsageError, match="metrics web config .*web.yml") as e:
        metrics_web.load(path)
    assert BAD[text] in str(e.value), str(e.value)


def test_a_file_that_is_no_utf8_is_named(tmp_path):
    path = tmp_path / "web.yml"
    path.write_bytes(b"tls_server_config:\n  cert_file: \xff\xfe\n")
    with pytest.raises(UsageError, match="not YAML"):
        metrics_web.load(str(path))


def test_a_missing_file_is_named():
    with pytest.raises(UsageError, match="/nonexistent/web.yml: No such file"):
        metrics_web.load("/nonexistent/web.yml")


def test_up_says_when_the_metrics_are_open_to_anyone(pki, tmp_path, capsys):
    fresh = SimpleNamespace(state=lambda: None)           # a node not up yet

    def said(registry=True, **args) -> str:
        metrics_web.up_checks(fresh, args, registry, agent_runs=False)
        return capsys.readouterr().err
    assert "plain HTTP to anyone" in said(metrics_address="10.0.0.1:9469")
    assert said(metrics_address="10.0.0.1:9469", registry=False) == "", "no registry: no agent serves them"
    assert said(metrics_address="127.0.0.1:9469") == ""
    open_tls = _config(pki, tmp_path, auth="NoClientCert")
    assert "TLS, but anyone who reaches that address may read them" in said(
        metrics_address="10.0.0.1:9469", metrics_web_config=open_tls)
    assert said(metrics_address="10.0.0.1:9469", metrics_web_config=_config(pki, tmp_path, name="m.yml")) == ""
    if_given = _config(pki, tmp_path, auth="VerifyClientCertIfGiven", name="g.yml")
    assert "anyone who reaches that address may read them" in said(metrics_address="10.0.0.1:9469",
                                                                   metrics_web_config=if_given)


def test_what_status_says_of_the_agents_metrics():
    from dataplane.cli.observe_cmds import _metrics_errors
    c = SimpleNamespace(metrics_address="10.0.0.1:9469", metrics_web_config="/etc/dataplane/web.yml")
    older = {"metrics_served": "10.0.0.1:9469", "metrics_error": None}     # an agent from before the setting
    assert _metrics_errors(c, older) == ["metrics: configured with web config /etc/dataplane/web.yml, the agent "
                                         "serves with none: restart the agent (`systemctl restart dataplane`; "
                                         "without systemd, stop its pid and run `dataplane up` again)"]
    both = {**older, "metrics_web_config_served": "/etc/other.yml", "metrics_web_error": "metrics web config x: bad"}
    said = _metrics_errors(c, both)
    assert said[0] == "metrics: metrics web config x: bad" and "serves with /etc/other.yml" in said[1], said
    assert _metrics_errors(c, {**older, "metrics_web_config_served": c.metrics_web_config}) == []


def test_a_web_config_never_gets_weaker_than_it_has_been(pki, tmp_path, serve):
    """Passwords added while the agent runs are the floor from then on: a file that drops them
    again (or is caught half written) refuses, as one weaker than at the start does."""
    path = _config(pki, tmp_path)
    srv = serve(path)
    assert _get(srv, pki, pki.client) == 200
    _config(pki, tmp_path, {"prometheus": "pw"})
    assert _get(srv, pki, pki.client) == 401 and _get(srv, pki, pki.client, ("prometheus", "pw")) == 200
    _config(pki, tmp_path)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _get(srv, pki, pki.client)
    assert "weaker than it was" in srv.web.error


def test_a_header_that_is_no_base64_or_no_ascii_is_a_401(pki, tmp_path, serve):
    srv = serve(_config(pki, tmp_path, {"prometheus": "pw"}))
    host, port = srv.address.split(":")
    for header in ("Basic é", "Basic !!!", "Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "Bearer x"):
        ctx = ssl.create_default_context(cafile=pki.ca.cert)
        ctx.load_cert_chain(pki.client.cert, pki.client.key)
        conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=5)
        conn.putrequest("GET", "/healthz")
        conn.putheader("Authorization", header.encode("latin-1"))
        conn.endheaders()
        assert conn.getresponse().status == 401, header
        conn.close()


def test_password_checks_that_wait_too_long_are_a_503(pki, tmp_path, serve, monkeypatch):
    from dataplane.agent import metrics_served
    monkeypatch.setattr(metrics_served, "BCRYPT_WAIT_S", 0.2)
    srv = serve(_config(pki, tmp_path, {"prometheus": "pw"}))
    with srv.web._bcrypt:                      # another client's check, under way
        assert _get(srv, pki, pki.client, ("prometheus", "pw")) == 503
    assert _get(srv, pki, pki.client, ("prometheus", "pw")) == 200, "nothing remembered of the 503"


def test_connections_past_the_limit_are_closed_at_once(pki, tmp_path, serve, monkeypatch):
    import socket
    monkeypatch.setattr(metrics_http, "MAX_CONNECTIONS", 2)
    srv = serve(_config(pki, tmp_path, auth="NoClientCert"))
    host, port = srv.address.split(":")
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(2)]   # handshakes never begun
    try:
        time.sleep(0.2)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _get(srv, pki)
    finally:
        for s in idle:
            s.close()
    time.sleep(0.2)
    assert _get(srv, pki) == 200, "their slots are free again"


def test_one_address_cannot_take_every_connection(pki, tmp_path, serve, monkeypatch):
    import socket
    monkeypatch.setattr(metrics_http, "PER_ADDRESS", 2)
    srv = serve(_config(pki, tmp_path, auth="NoClientCert"))
    host, port = srv.address.split(":")
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(2)]
    try:
        time.sleep(0.2)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _get(srv, pki)                               # a third from 127.0.0.1
        other = socket.create_connection((host, int(port)), timeout=5, source_address=("127.0.0.2", 0))
        ctx = ssl.create_default_context(cafile=pki.ca.cert)
        with ctx.wrap_socket(other, server_hostname=host) as tls:
            tls.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert tls.recv(64).startswith(b"HTTP/1.0 200"), "another address still gets in"
    finally:
        for s in idle:
            s.close()


def test_status_says_a_web_config_reads_wrong_before_any_scrape(pki, tmp_path, serve):
    from dataplane.agent import ops
    path = _config(pki, tmp_path)
    srv = serve(path)
    ag = SimpleNamespace(metrics=srv, metrics_error=None)
    assert ops._metrics(ag)["metrics_web_error"] is None
    _write(path, "")
    assert "the file is empty" in ops._metrics(ag)["metrics_web_error"], "no connection has tried it yet"
