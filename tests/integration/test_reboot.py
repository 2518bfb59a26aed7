"""A lab host reboots: every process of it dies at once (agent, Docker driver,
dockerd, containers), and what a reboot wipes goes (pins, our links and tc
filters, /run/dataplane/<host>); only /var/lib survives. Then the commands of
the systemd units that `dataplane service install` wrote run again, as systemd
would run them at boot: the node comes back from /var/lib, the agent says
READY=1 (sd_notify) only once synced, the socket-activated Docker driver
serves Docker's existing network, and the engine's restarted containers ping
across hosts again."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile

import pytest

from dataplane.agent import client, process
from dataplane.kernel import netlink, tcx
from lab import topology as lab
from tests.integration.conftest import make_lab, wait_for
from tests.runtimes import IMAGE, running_engines

H1, H2 = lab.host_ns(1), lab.host_ns(2)


@pytest.fixture(scope="module")
def info():
    yield from make_lab(2, [256], per_host=0, registry="etcd")


@pytest.fixture(scope="module")
def engines(info):
    yield from running_engines([H1, H2])


def unit_commands(unit_dir: str, name: str) -> dict[str, list[str]]:
    cmds = {}
    with open(os.path.join(unit_dir, name)) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            if key in ("ExecStartPre", "ExecStart"):
                cmds[key] = shlex.split(value)
    return cmds


def crash_host(ns: str, engine) -> None:
    engine.crash()                                   # dockerd, containerd, shims, containers, driver
    pid = process.running_pid(ns)
    if pid:
        os.kill(pid, 9)
        assert wait_for(lambda: process.running_pid(ns) is None)
    shutil.rmtree(f"/sys/fs/bpf/dataplane/{ns}")     # what a reboot wipes
    for name in netlink.link_names(ns):
        if name.startswith("dp"):
            netlink.link_delete(ns, name)
    tcx.detach(ns, netlink.link_index(ns, lab.UPLINK), "from_overlay")
    shutil.rmtree(f"/run/dataplane/{ns}")


def test_a_rebooted_host_comes_back_with_its_docker_networks(info, engines):
    e1, e2 = engines
    for i, e in enumerate(engines, 1):
        e.docker("network", "create", "-d", "dataplane", "-o", "vni=300", "--subnet", "10.30.0.0/24",
                 "--ip-range", f"10.30.0.{16 * i}/28", "net1")
    e1.docker("run", "-d", "--restart", "always", "--name", "c1", "--net", "net1", IMAGE, "sleep", "3600")
    e2.docker("run", "-d", "--restart", "always", "--name", "c2", "--net", "net1", IMAGE, "sleep", "3600")
    ip2 = e2.ip_of("c2")
    assert e1.docker("exec", "c1", "ping", "-c", "2", "-W", "2", ip2, check=False).returncode == 0

    units = tempfile.mkdtemp(prefix="dp-units-")
    try:
        r = subprocess.run([sys.executable, "-m", "dataplane.cli", "--netns", H1, "service", "install", "--docker",
                            "--unit-dir", units], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        node_unit = unit_commands(units, f"dataplane-{H1}.service")
        driver_unit = unit_commands(units, f"dataplane-{H1}-docker.service")

        crash_host(H1, e1)
        assert not tcx.names(H1, netlink.link_index(H1, lab.UPLINK)), "the fast path is gone"

        # systemd at boot: ExecStartPre, then ExecStart with NOTIFY_SOCKET (Type=notify).
        r = subprocess.run(node_unit["ExecStartPre"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify_path = os.path.join(units, "notify")
        notify.bind(notify_path)
        notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)   # the sender's pid, as systemd reads it
        notify.settimeout(60)
        log = open(os.path.join(units, "agent.log"), "ab")
        agent = None
        try:
            agent = subprocess.Popen(node_unit["ExecStart"], env={**os.environ, "NOTIFY_SOCKET": notify_path,
                                                                  "WATCHDOG_USEC": "2000000"},   # (WatchdogSec=2)
                                     stdout=log, stderr=log, start_new_session=True, cwd="/")
            # NotifyAccess=main: only the agent may speak, and its first word is READY=1. (Forked
            # helpers once inherited its SIGTERM handler and said STOPPING=1: test_agent_signals.)
            data, anc, _, _ = notify.recvmsg(4096, socket.CMSG_SPACE(12))
            pid = next(struct.unpack("3i", d)[0] for lvl, typ, d in anc
                       if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS)
            msg = data.decode()
            with open(os.path.join(units, "agent.log"), errors="replace") as f:
                said = f.read()[-1500:]
            assert pid == agent.pid, f"pid {pid}, not the agent ({agent.pid}), said {msg!r}; the agent said:\n{said}"
            assert "READY=1" in msg, f"{msg!r}; the agent said:\n{said}"
            assert client.call(H1, "ping")["synced"], "READY=1 only once synced"
            # Its main loop pings systemd's watchdog at half the period systemd gives it.
            assert notify.recv(4096).decode() == "WATCHDOG=1", "a watchdog ping within the period"
            e1.start_driver(driver_unit["ExecStart"])     # socket-activated, as dataplane-...-docker.socket does
            e1.start_engine()                              # restarts c1 (--restart always)
            assert wait_for(lambda: e1.docker("inspect", "-f", "{{.State.Running}}", "c1",
                                              check=False).stdout.strip() == "true", timeout=60)
            ok = wait_for(lambda: e1.docker("exec", "c1", "ping", "-c", "1", "-W", "1", ip2,
                                            check=False).returncode == 0, timeout=30)
            assert ok, e1.driver_log()[-2000:]
            ip1 = e1.ip_of("c1")
            assert e2.docker("exec", "c2", "ping", "-c", "2", "-W", "2", ip1, check=False).returncode == 0
            assert "not a dataplane network" not in e1.driver_log()
        finally:
            if agent is not None:
                agent.terminate()
                agent.wait(timeout=20)
            notify.close()
    finally:
        shutil.rmtree(units, ignore_errors=True)
