"""A node without a registry (static peers, learned MACs) comes back after a reboot through
the one unit `dataplane service install` writes for it: no agent, only `up --restore`.
The reboot is what it does to a lab host: pins, our links and tc filters, /run/dataplane
and the host's own sandbox namespace go; /var/lib stays."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from dataplane.kernel import netlink, tcx
from lab import topology as lab
from lab.traffic import ping
from tests.integration.conftest import make_lab, sandbox
from tests.integration.test_reboot import unit_commands

H1 = lab.host_ns(1)


@pytest.fixture(scope="module")
def info():
    yield from make_lab(2, [256], per_host=1, registry="none")


def dp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dataplane.cli", "--netns", H1, *args],
                          capture_output=True, text=True, timeout=120)


def reboot(ns: str, sandbox_ns: str) -> None:
    shutil.rmtree(f"/sys/fs/bpf/dataplane/{ns}")
    for name in netlink.link_names(ns):
        if name.startswith("dp"):
            netlink.link_delete(ns, name)
    tcx.detach(ns, netlink.link_index(ns, lab.UPLINK), "from_overlay")
    shutil.rmtree(f"/run/dataplane/{ns}")
    netlink.ns_delete(sandbox_ns)


def test_a_node_without_a_registry_comes_back_from_its_unit(info):
    old, far = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    units = tempfile.mkdtemp(prefix="dp-units-")
    name = lab.sandbox_name(1, 256, 9)
    try:
        r = dp("service", "install", "--unit-dir", units)
        assert r.returncode == 0, r.stderr
        start = unit_commands(units, f"dataplane-{H1}.service")["ExecStart"]

        reboot(H1, old["netns"])
        assert not tcx.names(H1, netlink.link_index(H1, lab.UPLINK)), "the fast path is gone"
        # The underlay gets its address late (DHCP after network-online.target): the restore
        # waits for it, where it failed at once ("not an address of"), and for good (the unit's
        # start limit, or no Restart for this oneshot unit).
        addr = f"{lab.vtep_ip(1)}/{lab.VTEP_NET.prefixlen}"
        netlink.ns_exec(H1, ["ip", "addr", "del", addr, "dev", lab.UPLINK], check=True)
        boot = subprocess.Popen(start, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # systemd at boot
        try:
            time.sleep(2)
        finally:
            netlink.ns_exec(H1, ["ip", "addr", "add", addr, "dev", lab.UPLINK], check=True)
        _, err = boot.communicate(timeout=120)
        assert boot.returncode == 0 and "waiting up to" in err, err
        assert "from_overlay" in tcx.names(H1, netlink.link_index(H1, lab.UPLINK))

        # A sandbox made after the boot reaches the other host's: VNI, subnet and peers came back.
        r = dp("endpoint", "add", name, "--vni", "256", "--ip", lab.sandbox_ip(256, 1, 9))
        assert r.returncode == 0, r.stderr
        got, _ = ping(f"{H1}.{name}", far["ip"])
        assert got == 3
    finally:
        dp("endpoint", "rm", name)
        shutil.rmtree(units, ignore_errors=True)
