"""Real etcd processes for the failover tests: one member or a 3-member cluster
on loopback, each with its own ports and data dir, always killed on exit
(resumed first if a test left it SIGSTOPped). With tls, the members run as
the lab runs them (lab/certs.py, lab/etcd.py): TLS with client certificates
for clients and peers, and with auth, etcd's authentication with a user and
role per host."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess

import pytest

from tests.conftest import IN_CI
from tests.ports import free_port

FAST_RAFT = ["--heartbeat-interval", "50", "--election-timeout", "500"]


def stop_member(pid: int, timeout: float = 5.0) -> None:
    """SIGSTOP a member and wait until every thread of it has stopped: kill() returns at once, and a
    member still running for a moment could take the request sent next (and apply a txn whose
    outcome the test takes for unapplied: test_etcd_grpc_txn's unknown outcome, a CI flake)."""
    import time
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:      # a thread that exited
                continue
        if states and all(st in ("T", "t") for st in states):
            return
        time.sleep(0.01)
    raise AssertionError(f"etcd member {pid} did not stop within {timeout} s")


def require_etcd() -> None:
    if not shutil.which("etcd"):
        if IN_CI:
            pytest.fail("CI=true but etcd is not installed", pytrace=False)
        pytest.skip("etcd not installed")


class Member:
    def __init__(self, name: str, port: int, peer_port: int, proc: subprocess.Popen):
        self.name, self.port, self.peer_port, self.proc = name, port, peer_port, proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def endpoint(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
                self.proc.kill()
        self.proc.wait(timeout=10)


class Secure:
    """A TLS cluster's files and URLs: url(host) is what host's agent gets,
    url() the administrator's (root, with the "admin" client certificate)."""

    def __init__(self, pki, members: list[Member], hosts: list[str]):
        self.pki, self.members, self.hosts = pki, members, hosts

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [m.endpoint for m in self.members]

    def url(self, host: str | None = None) -> str:
        from lab import etcd
        return etcd.host_url(self.endpoints, self.pki, host) if host else etcd.admin_url(self.endpoints, self.pki)


@contextlib.contextmanager
def cluster(tmp_path, size: int = 3, extra: list[str] | None = None, tls: bool = False, auth: bool = True,
            hosts: tuple[str, ...] = ("h1", "h2")):
    """Start `size` members (one cluster); yields the Members (with tls, a Secure);
    kills them all on exit. tls: certificates made for them, the hosts and "admin";
    auth (with tls): authentication on, a user per host."""
    from lab import certs, etcd
    from dataplane.registry import etcd_auth
    require_etcd()
    names = [f"m{i}" for i in range(size)]
    ports = {n: (free_port(), free_port()) for n in names}
    scheme = "https" if tls else "http"
    initial = ",".join(f"{n}={scheme}://127.0.0.1:{ports[n][1]}" for n in names)
    token = f"dp-test-{os.getpid()}-{ports[names[0]][0]}"   # one per cluster
    pki = certs.make_pki(str(tmp_path / "pki"), {n: ("127.0.0.1",) for n in names}, [*hosts, "admin"],
                         ["root", *map(etcd_auth.host_user, hosts)]) if tls else None
    members: list[Member] = []
    try:
        for n in names:
            client, peer = f"{scheme}://127.0.0.1:{ports[n][0]}", f"{scheme}://127.0.0.1:{ports[n][1]}"
            argv = ["etcd", "--name", n, "--data-dir", str(tmp_path / f"{n}.data"),
                    "--listen-client-urls", client, "--advertise-client-urls", client,
                    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--initial-cluster-token", token,
                    "--log-level", "warn", "--logger", "zap", *FAST_RAFT,
                    *etcd.tls_flags(pki.member(n) if tls else None), *(extra or [])]
            with open(tmp_path / f"{n}.log", "ab") as log:
                proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            members.append(Member(n, ports[n][0], ports[n][1], proc))
        for m in members:
            if not etcd.wait_healthy("127.0.0.1", m.port, timeout=20, tls=pki.member(m.name) if tls else None):
                raise RuntimeError(f"etcd member {m.name} did not become healthy; see {tmp_path}/{m.name}.log")
        if not tls:
            yield members
            return
        if auth:
            etcd.enable_auth([m.endpoint for m in members], pki, list(hosts))
        yield Secure(pki, members, list(hosts))
    finally:
        for m in members:
            m.kill()
