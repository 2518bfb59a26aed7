"""Start and stop a real single-member etcd (Debian's etcd-server) for the lab
and the tests: its own data directory, its own addresses, optionally inside a
network namespace, waited on until it answers."""

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


def start(data_dir: str, ip: str = "127.0.0.1", port: int = 2379, peer_port: int = 2380,
          netns: str | None = None, log_path: str | None = None) -> int:
    """Start etcd (or restart it on an existing data dir); returns its pid."""
    binary = shutil.which("etcd")
    if not binary:
        raise ToolchainError("etcd is not installed: run scripts/bootstrap.sh (installs etcd-server)")
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    client, peer = f"http://{ip}:{port}", f"http://{ip}:{peer_port}"
    argv = [binary, "--name", "dp", "--data-dir", data_dir,
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"dp={peer}", "--log-level", "warn", "--logger", "zap"]
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    log = open(log_path or os.path.join(data_dir, "..", os.path.basename(data_dir) + ".log"), "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    if not wait_healthy(ip, port, netns):
        stop(proc.pid)
        raise ToolchainError(f"etcd did not become healthy on {client} within {START_TIMEOUT_S:.0f} s")
    return proc.pid


def stop(pid: int, timeout: float = 10.0) -> None:
    procs.terminate(pid, timeout)
