"""Traffic between sandboxes, for the demo, the tests and the benchmarks:
ping, a byte-exact TCP transfer with a clean close, and iperf3."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

from dataplane.kernel import netlink

# Run inside the namespaces with this same interpreter: no extra tool, a FIN
# close (no RST on the wire), and the byte count checked at the receiver.
_SINK = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(10)
print("listening", flush=True)
c, _ = s.accept(); c.settimeout(10); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    n += len(b)
c.close(); print(n, flush=True)
"""
_SOURCE = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
c.sendall(b"x" * int(sys.argv[3])); c.shutdown(socket.SHUT_WR)
while c.recv(4096): pass
c.close()
"""


def ping(sandbox: str, ip: str, count: int = 3, interval: float = 0.2) -> tuple[int, str]:
    """(replies received, 'rtt avg X ms')."""
    r = netlink.ns_exec(sandbox, ["ping", "-c", str(count), "-i", str(interval), "-W", "1", ip],
                        capture_output=True, text=True)
    m = re.search(r"(\d+) received", r.stdout)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", r.stdout)
    return (int(m.group(1)) if m else 0), (f"rtt avg {rtt.group(1)} ms" if rtt else "no reply")


def tcp_transfer(server_ns: str, client_ns: str, ip: str, nbytes: int, port: int = 5300,
                 connect: str | None = None) -> int:
    """Send nbytes over one TCP connection; returns what the receiver counted. The server
    listens on ip; the client connects to connect (an address translated to ip) or to ip."""
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, sys.executable, "-c", _SINK, ip, str(port)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if srv.stdout.readline().strip() != "listening":
            raise RuntimeError(f"TCP sink in {server_ns} did not start: {srv.stderr.read()[-300:]}")
        netlink.ns_exec(client_ns, [sys.executable, "-c", _SOURCE, connect or ip, str(port), str(nbytes)],
                        check=True, capture_output=True, timeout=30)
        out, _ = srv.communicate(timeout=15)
        return int(out.strip() or 0)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


def wait_listening(netns: str, port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = netlink.ns_exec(netns, ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True)
        if r.stdout.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} in {netns}")


def iperf(server_ns: str, client_ns: str, ip: str, args: list[str], port: int = 5201) -> dict:
    """One iperf3 run (JSON result); the client starts once the server listens."""
    return iperf_processes(server_ns, client_ns, ip, 1, args, port)[0]


def iperf_processes(server_ns: str, client_ns: str, ip: str, n: int, args: list[str], port: int = 5201) -> list[dict]:
    """n iperf3 client processes at once (JSON results), each to its own server (ports
    port..port+n-1), started once the servers listen: n flows on as many threads. iperf3
    before 3.16 (Debian 12 has 3.12) serves -P n streams from one thread, so their sum is
    what that thread moves (here about half of what the path carries)."""
    srvs = [subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", ip, "-p", str(port + i)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(n)]
    clients = []
    try:
        for i in range(n):
            wait_listening(server_ns, port + i)
        clients = [subprocess.Popen(["ip", "netns", "exec", client_ns, "iperf3", "-c", ip, "-p", str(port + i),
                                     "-J", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for i in range(n)]
        outs = []
        for c in clients:
            stdout, stderr = c.communicate()
            out = json.loads(stdout or "{}")
            if c.returncode or "error" in out:
                raise RuntimeError(f"iperf3 failed: {out.get('error', stderr.strip())}")
            outs.append(out)
        return outs
    finally:
        for p in (*clients, *srvs):
            if p.poll() is None:
                p.kill()
            p.wait()


def nstat(ns: str, name: str) -> int:
    """The namespace's SNMP counter `name` as nstat names it (IcmpInEchos, TcpExtTCPSACKReorder):
    its absolute value, so a caller takes differences."""
    out = subprocess.run(["ip", "netns", "exec", ns, "nstat", "-az", name], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split(name)[1].split()[0])


def _counts(ns: str, dev: str, way: str) -> tuple[int, int]:
    link = json.loads(subprocess.check_output(["ip", "-n", ns, "-j", "-s", "link", "show", dev]))[0]
    return link["stats64"][way]["packets"], link["stats64"][way]["bytes"]


def rx_counts(ns: str, dev: str) -> tuple[int, int]:
    """(packets, bytes) dev has received: a size per packet over a run says whether GRO merged."""
    return _counts(ns, dev, "rx")


def tx_counts(ns: str, dev: str) -> tuple[int, int]:
    """(packets, bytes) dev has sent."""
    return _counts(ns, dev, "tx")
