"""Start and stop real etcd members (Debian's etcd-server) for the lab and the
tests: one member, or the members of one cluster, each with its own data
directory and addresses, optionally inside a network namespace, waited on
until they answer; and ask a member whether it is the leader. With tls (the
member's certificate, lab/certs.py) clients and peers speak TLS and must
present a certificate of the same CA (--client-cert-auth, --peer-client-cert-auth)."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request

from dataplane.kernel import netlink
from dataplane.core import procs
from dataplane.core.errors import ToolchainError
from dataplane.registry import etcd_access, etcd_auth, open_registry
from dataplane.registry.etcd_access import TlsFiles

START_TIMEOUT_S = 15.0


def _url(ip: str, port: int, tls: TlsFiles | None, path: str) -> tuple[str, ssl.SSLContext | None]:
    return f"{'https' if tls else 'http'}://{ip}:{port}{path}", tls.context() if tls else None


def _healthy(ip: str, port: int, tls: TlsFiles | None = None) -> bool:
    url, ctx = _url(ip, port, tls, "/health")
    try:
        with urllib.request.urlopen(url, timeout=0.5, context=ctx) as r:
            return json.loads(r.read()).get("health") == "true"
    except (OSError, ValueError):
        return False


def wait_healthy(ip: str, port: int, netns: str | None = None, timeout: float = START_TIMEOUT_S,
                 tls: TlsFiles | None = None) -> bool:
    """tls: a certificate the member accepts (its own will do: it is a client certificate too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if netlink.call_in_netns(netns, _healthy, ip, port, tls):
            return True
        time.sleep(0.1)
    return False


# Faster elections than etcd's defaults (100 ms / 1 s): a leader kill in the lab heals in about a second.
FAST_RAFT = ["--heartbeat-interval", "50", "--election-timeout", "500"]
# As README asks of an operator's members: etcd compacts nothing by default, and a history that
# reaches the quota makes it refuse every write (NOSPACE) until someone compacts and defragments.
COMPACTION = ["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1h"]


def start(data_dir: str, ip: str = "127.0.0.1", port: int = 2379, peer_port: int = 2380,
          netns: str | None = None, log_path: str | None = None, name: str = "dp",
          initial_cluster: str | None = None, wait: bool = True, tls: TlsFiles | None = None,
          extra: tuple[str, ...] = ()) -> int:
    """Start an etcd member (or restart it on its existing data dir, where it
    rejoins its cluster); returns its pid. initial_cluster "n1=http://ip:port,...":
    a member of that cluster (token "dpl"), else a cluster of its own. The
    members of a new cluster are started with wait=False, then wait_healthy each.
    tls: this member's certificate (server and client) and the CA it trusts;
    its peer URLs are then https:// too (initial_cluster must say so)."""
    binary = shutil.which("etcd")
    if not binary:
        raise ToolchainError("etcd is not installed: run scripts/bootstrap.sh (installs etcd-server)")
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    scheme = "https" if tls else "http"
    client, peer = f"{scheme}://{ip}:{port}", f"{scheme}://{ip}:{peer_port}"
    argv = [binary, "--name", name, "--data-dir", data_dir,
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", initial_cluster or f"{name}={peer}", "--initial-cluster-token", "dpl",
            "--log-level", "warn", "--logger", "zap", *FAST_RAFT, *COMPACTION, *tls_flags(tls), *extra]
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    log = open(log_path or os.path.join(data_dir, "..", os.path.basename(data_dir) + ".log"), "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    if wait and not wait_healthy(ip, port, netns, tls=tls):
        stop(proc.pid)
        raise ToolchainError(f"etcd did not become healthy on {client} within {START_TIMEOUT_S:.0f} s")
    return proc.pid


def tls_flags(tls: TlsFiles | None) -> list[str]:
    """Client and peer TLS, a certificate of the CA required of both."""
    if not tls:
        return []
    return ["--client-cert-auth", "--trusted-ca-file", tls.ca, "--cert-file", tls.cert, "--key-file", tls.key,
            "--peer-client-cert-auth", "--peer-trusted-ca-file", tls.ca, "--peer-cert-file", tls.cert,
            "--peer-key-file", tls.key]


def _status(ip: str, port: int, tls: TlsFiles | None = None) -> dict | None:
    url, ctx = _url(ip, port, tls, "/v3/maintenance/status")
    req = urllib.request.Request(url, data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=0.5, context=ctx) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def member_status(ip: str, port: int, netns: str | None = None, tls: TlsFiles | None = None) -> dict | None:
    """{"leader": whether this member leads its cluster, "raft_term": the election
    term it is in}, or None if it does not answer."""
    st = netlink.call_in_netns(netns, _status, ip, port, tls)
    if st is None:
        return None
    return {"leader": st.get("header", {}).get("member_id") == st.get("leader"),
            "raft_term": int(st.get("raftTerm") or st.get("header", {}).get("raft_term") or 0)}


def is_leader(ip: str, port: int, netns: str | None = None, tls: TlsFiles | None = None) -> bool | None:
    """True if this member leads its cluster, False if not, None if it does not answer."""
    st = member_status(ip, port, netns, tls)
    return None if st is None else st["leader"]


def stop(pid: int, timeout: float = 10.0) -> None:
    procs.terminate(pid, timeout)


def host_url(endpoints: list[tuple[str, int]], pki, host: str) -> str:
    """What host's agent is given: its client certificate, its etcd user and password file."""
    user = etcd_auth.host_user(host)
    return etcd_access.url(endpoints, pki.client(host), user, pki.password_file(user))


def admin_url(endpoints: list[tuple[str, int]], pki) -> str:
    """root, with the lab's own client certificate: for the lab and the tests' checks."""
    return etcd_access.url(endpoints, pki.client("admin"), "root", pki.password_file("root"))


def enable_auth(endpoints: list[tuple[str, int]], pki, hosts: list[str], netns: str | None = None) -> list[str]:
    """etcd's authentication on, a user and role per host (dataplane.registry.etcd_auth),
    from netns (a namespace that reaches the members). Passwords are made in pki's
    directory the first time."""
    def run():
        reg = open_registry(admin_url(endpoints, pki))
        try:
            users = {h: etcd_access.read_password(pki.password_file(etcd_auth.host_user(h))) for h in hosts}
            return etcd_auth.setup(reg.kv, etcd_access.read_password(pki.password_file("root")), users)
        finally:
            reg.close()
    return netlink.call_in_netns(netns, run)
