"""The C generator and counter (csrc/gen.c) between two namespaces this
test creates: exact counts, the packet bound, the rate bound, bad input."""

import json
import subprocess
import sys
import time

import pytest

from dataplane.kernel import netlink
from tests.conftest import require_privileges

A, B = "dpl-gen-a", "dpl-gen-b"


@pytest.fixture(scope="module")
def pair():
    require_privileges()
    for ns in (A, B):
        netlink.ns_create(ns)
        netlink.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")   # no stray ND/MLD frames to count
        netlink.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
    try:
        subprocess.run(["ip", "-n", A, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", B],
                       check=True)
        netlink.link_up(A, "eth0", "10.99.0.1", 24)
        netlink.link_up(B, "eth0", "10.99.0.2", 24)
        yield
    finally:
        for ns in (A, B):
            netlink.ns_delete(ns)


def run(ns, code):
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


SEND = """
import json
from bench.gen import frame64
from dataplane.core import cwire
mac = open('/sys/class/net/eth0/address').read().strip()
f = frame64(mac, '02:00:00:00:00:02', '10.99.0.1', '10.99.0.2')
st = cwire.gen_send('eth0', f, seconds=10, max_packets={n}, rate_pps={rate}, flows=4)
print(json.dumps(st._asdict()))
"""
COUNT = "from dataplane.core import cwire; print(cwire.gen_count('eth0', {s}).packets)"


def test_counts_exactly_what_was_sent_and_honours_the_bounds(pair):
    counter = subprocess.Popen(["ip", "netns", "exec", B, sys.executable, "-c", COUNT.format(s=3)],
                               stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    st = json.loads(run(A, SEND.format(n=1000, rate=4000)))
    got = int(counter.communicate(timeout=30)[0])
    assert st["packets"] == 1000 and st["bytes"] == 60 * 1000 and st["errors"] == 0
    assert st["seconds"] >= 0.2, "1000 packets at 4000/s take at least 0.25 s"
    assert got == 1000


def test_bad_arguments_are_refused(pair):
    out = run(A, "from dataplane.core import cwire\n"
                 "try:\n    cwire.gen_send('eth0', b'short', seconds=1)\nexcept Exception as e:\n    print(e)")
    assert "Invalid argument" in out
    out = run(A, "from dataplane.core import cwire\n"
                 "try:\n    cwire.gen_send('nope0', b'x' * 60, seconds=1)\nexcept Exception as e:\n    print(e)")
    assert "nope0" in out or "No such device" in out
