"""Start and stop real etcd members (Debian's etcd-server) for the lab and the
tests: one member, or the members of one cluster, each with its own data
directory and addresses, optionally inside a network namespace, waited on
until they answer; and ask a member whether it is the leader."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request

from dataplane.kernel import netlink
from dataplane.core import procs
from dataplane.core.errors import ToolchainError

START_TIMEOUT_S = 15.0


def _healthy(ip: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/health", timeout=0.5) as r:
            return json.loads(r.read()).get("health") == "true"
    except (OSError, ValueError):
        return False


def wait_healthy(ip: str, port: int, netns: str | None = None, timeout: float = START_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if netlink.call_in_netns(netns, _healthy, ip, port):
            return True
        time.sleep(0.1)
    return False


# Faster elections than etcd's defaults (100 ms / 1 s): a leader kill in the lab heals in about a second.
FAST_RAFT = ["--heartbeat-interval", "50", "--election-timeout", "500"]


def start(data_dir: str, ip: str = "127.0.0.1", port: int = 2379, peer_port: int = 2380,
          netns: str | None = None, log_path: str | None = None, name: str = "dp",
          initial_cluster: str | None = None, wait: bool = True) -> int:
    """Start an etcd member (or restart it on its existing data dir, where it
    rejoins its cluster); returns its pid. initial_cluster "n1=http://ip:port,...":
    a member of that cluster (token "dpl"), else a cluster of its own. The
    members of a new cluster are started with wait=False, then wait_healthy each."""
    binary = shutil.which("etcd")
    if not binary:
        raise ToolchainError("etcd is not installed: run scripts/bootstrap.sh (installs etcd-server)")
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    client, peer = f"http://{ip}:{port}", f"http://{ip}:{peer_port}"
    argv = [binary, "--name", name, "--data-dir", data_dir,
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", initial_cluster or f"{name}={peer}", "--initial-cluster-token", "dpl",
            "--log-level", "warn", "--logger", "zap", *FAST_RAFT]
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    log = open(log_path or os.path.join(data_dir, "..", os.path.basename(data_dir) + ".log"), "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    if wait and not wait_healthy(ip, port, netns):
        stop(proc.pid)
        raise ToolchainError(f"etcd did not become healthy on {client} within {START_TIMEOUT_S:.0f} s")
    return proc.pid


def _status(ip: str, port: int) -> dict | None:
    req = urllib.request.Request(f"http://{ip}:{port}/v3/maintenance/status", data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=0.5) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def is_leader(ip: str, port: int, netns: str | None = None) -> bool | None:
    """True if this member leads its cluster, False if not, None if it does not answer."""
    st = netlink.call_in_netns(netns, _status, ip, port)
    if st is None:
        return None
    return st.get("header", {}).get("member_id") == st.get("leader")


def stop(pid: int, timeout: float = 10.0) -> None:
    procs.terminate(pid, timeout)
