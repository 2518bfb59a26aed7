"""Real etcd processes for the failover tests: one member or a 3-member cluster
on loopback, each with its own ports and data dir, always killed on exit
(resumed first if a test left it SIGSTOPped)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess

import pytest

from tests.conftest import IN_CI

FAST_RAFT = ["--heartbeat-interval", "50", "--election-timeout", "500"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@contextlib.contextmanager
def cluster(tmp_path, size: int = 3, extra: list[str] | None = None):
    """Start `size` members (one cluster); yields the Members; kills them all on exit."""
    from lab.etcd import wait_healthy
    require_etcd()
    names = [f"m{i}" for i in range(size)]
    ports = {n: (free_port(), free_port()) for n in names}
    initial = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in names)
    token = f"dp-test-{os.getpid()}-{ports[names[0]][0]}"   # one per cluster
    members: list[Member] = []
    try:
        for n in names:
            client, peer = f"http://127.0.0.1:{ports[n][0]}", f"http://127.0.0.1:{ports[n][1]}"
            argv = ["etcd", "--name", n, "--data-dir", str(tmp_path / f"{n}.data"),
                    "--listen-client-urls", client, "--advertise-client-urls", client,
                    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--initial-cluster-token", token,
                    "--log-level", "warn", "--logger", "zap", *FAST_RAFT, *(extra or [])]
            with open(tmp_path / f"{n}.log", "ab") as log:
                proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            members.append(Member(n, ports[n][0], ports[n][1], proc))
        for m in members:
            if not wait_healthy("127.0.0.1", m.port, timeout=20):
                raise RuntimeError(f"etcd member {m.name} did not become healthy; see {tmp_path}/{m.name}.log")
        yield members
    finally:
        for m in members:
            m.kill()
