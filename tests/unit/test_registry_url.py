"""Registry URLs for etcd over TLS (dataplane/registry/etcd_access.py): every
mistake an operator can make in one is a one-line usage error before anything
connects or is created, and the role a host gets in etcd (etcd_auth.py)
writes its own host record only. No etcd here: tests/registry runs one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from dataplane.core.errors import UsageError
from dataplane.registry import etcd_access, etcd_auth, open_registry, parse_url
from dataplane.registry.etcd_access import TlsFiles
from dataplane.registry.records import PREFIX, key


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A CA, a client certificate, another key, and a password file."""
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    from lab import certs
    d = tmp_path_factory.mktemp("pki with space")
    ca = certs.make_ca(str(d))
    mine = certs.make_cert(str(d), ca, "client-h1", "/O=dataplane/OU=h1")
    other = certs.make_cert(str(d), ca, "client-h2", "/O=dataplane/OU=h2")
    pw = d / "h1&co.password"
    pw.write_text("s3cret\n")
    empty = d / "empty.password"
    empty.write_text("\n")
    return {"ca": ca.cert, "cert": mine.cert, "key": mine.key, "other_key": other.key, "pw": str(pw),
            "empty": str(empty), "dir": d}


def test_a_url_round_trips_with_awkward_paths(files):
    tls = TlsFiles(files["ca"], files["cert"], files["key"])
    url = etcd_access.url([("198.18.0.251", 2379), ("198.18.0.252", 2379)], tls, "dataplane-host-h1", files["pw"])
    kind, access = parse_url(url)
    assert kind == "etcds" and access.tls == tls and access.user == "dataplane-host-h1"
    assert access.endpoints == [("198.18.0.251", 2379), ("198.18.0.252", 2379)]
    assert access.password() == "s3cret"           # the line, without its newline
    assert "s3cret" not in url and "s3cret" not in repr(access)
    assert parse_url("etcd://10.0.0.1:2379,10.0.0.2:2379") == ("etcd", [("10.0.0.1", 2379), ("10.0.0.2", 2379)])


@pytest.mark.parametrize("query, why", [
    ("", "needs ca=FILE"),
    ("ca=ca.crt", "absolute path"),
    ("ca=/nonexistent/ca.crt", "cannot read it"),
    ("ca={ca}&ca={ca}", "given twice"),
    ("ca={ca}&tls=on", "unknown option 'tls'"),
    ("ca={ca}&cert={cert}", "cert= and key= go together"),
    ("ca={ca}&user=h1", "user= and password-file= go together"),
    ("ca={ca}&user=&password-file={pw}", "user= is empty"),
    ("ca={ca}&user=h1&password-file={empty}", "is empty"),
    ("ca={ca}&cert={cert}&key={other_key}", "KEY_VALUES_MISMATCH"),
    ("ca={pw}", "NO_CERTIFICATE_OR_CRL_FOUND"),
])
def test_every_mistake_in_an_etcds_url_is_a_usage_error(files, query, why):
    url = "etcds://127.0.0.1:2379?" + query.format(**{k: str(v).replace("&", "%26") for k, v in files.items()})
    with pytest.raises(UsageError, match=why):
        parse_url(url)
    with pytest.raises(UsageError, match=why):
        open_registry(url)                          # before any connection is tried


@pytest.mark.parametrize("url, why", [
    ("etcd://127.0.0.1:2379?ca=/x", "need etcds://"),
    ("etcds://root:pw@127.0.0.1:2379?ca=/x", "no user or password before the host"),
    ("etcds://127.0.0.1?ca=/x", "HOST:PORT"),
    ("etcdtls://127.0.0.1:2379", "etcds://host:port"),
])
def test_misshapen_urls_are_usage_errors(url, why):
    with pytest.raises(UsageError, match=why):
        parse_url(url)


def test_an_unreadable_password_file_is_a_usage_error(files):
    """A directory where the file should be: unreadable even for root (chmod 0 is not, so
    that case could never run in CI)."""
    unreadable = files["dir"] / "a-directory.password"
    unreadable.mkdir()
    with pytest.raises(UsageError, match="cannot read it"):
        parse_url(f"etcds://127.0.0.1:2379?ca={files['ca']}&user=h1&password-file={unreadable}")


@pytest.mark.parametrize("argv", [
    ["network", "list", "--registry", "etcds://127.0.0.1:9?ca=/nonexistent/ca.crt"],
    ["--netns", "dputest-none", "up", "--registry", "etcds://127.0.0.1:9?ca=/nonexistent/ca.crt"],
    ["registry", "auth-setup", "--registry", "etcd://127.0.0.1:9", "--password-dir", "/nonexistent/pw", "h1"],
])
def test_the_cli_reports_a_bad_registry_url_in_one_line_and_makes_nothing(argv):
    r = subprocess.run([sys.executable, "-m", "dataplane.cli", *argv], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("dataplane: error: ") and len(r.stderr.splitlines()) == 1, r
    assert not os.path.exists("/run/dataplane/dputest-none") and not os.path.exists("/nonexistent/pw")


def test_a_hosts_role_writes_its_own_record_and_the_shared_ones_only():
    perms = etcd_auth.host_permissions("h1")
    assert ("READ", PREFIX, "/dataplane0") in perms
    writes = [(k, end) for kind, k, end in perms if kind == "READWRITE"]
    assert (key("hosts", "h1"), None) in writes            # that one key: not hosts/h1*, which holds h10
    assert not any(k.startswith(key("hosts")) and end for k, end in writes)
    assert not any(k <= key("hosts", "h2") < (end or k + "\0") for k, end in writes)
    shared = {k[len(PREFIX):] for k, end in writes if end}
    assert shared == {"networks/", "vnis/", "netuse/", "endpoints/", "ipam/", "macs/"}
    assert etcd_auth.host_user("h1") == "dataplane-host-h1"
    with pytest.raises(UsageError):
        etcd_auth.host_user("../h1")


def test_a_password_file_is_made_once_and_private(tmp_path):
    p = etcd_auth.password_file(str(tmp_path / "pw"), "h1")
    first = open(p).read()
    assert oct(os.stat(p).st_mode & 0o777) == "0o600" and len(first.strip()) >= 24
    assert etcd_auth.password_file(str(tmp_path / "pw"), "h1") == p and open(p).read() == first


def test_spread_lists_every_member_once_with_the_failed_last():
    """_spread(k): the healthy members rotated by k, then those that failed recently; each
    member exactly once, whatever other threads mark meanwhile."""
    import time

    from dataplane.registry import parse_url
    from dataplane.registry.kv_etcd import EtcdKV
    kv = EtcdKV(parse_url("etcd://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")[1])
    try:
        kv._failed_at[0] = time.monotonic()
        kv._current = 0
        assert kv._order() == [1, 2, 0]
        assert kv._spread(0) == [1, 2, 0] and kv._spread(1) == [2, 1, 0]
        for k in range(5):
            assert sorted(kv._spread(k)) == [0, 1, 2]
    finally:
        kv.close()
