"""The multi-host demo: three hosts, VNIs 256 and 257, real traffic, a tshark
read of the wire, the counters, and a clean teardown. Exit status 1 if any
check fails."""

from __future__ import annotations

import os
import shutil
import sys
import time

from dataplane.agent import client
from lab import capture, topology as lab
from dataplane.kernel import netlink
from lab.traffic import iperf, ping, tcp_transfer
from dataplane.node import Node, readout


class Demo:
    def __init__(self):
        self.failed = 0

    def check(self, ok: bool, what: str) -> bool:
        print(f"[{' ok ' if ok else 'FAIL'}] {what}", flush=True)
        self.failed += not ok
        return ok


def _sbx(info: dict, host: str, vni: int) -> dict:
    return next(s for s in info["sandboxes"] if s["host"] == host and s["vni"] == vni)


def run(keep: bool = False, registry: str = "etcd", etcd_tls: bool | None = None, pcap_out: str | None = None) -> int:
    """pcap_out: where to keep the underlay capture; without it the capture is removed."""
    d = Demo()
    if pcap_out is not None and not _writable(pcap_out):
        print(f"demo: cannot write the capture to {pcap_out!r}: not a file in a writable directory", file=sys.stderr)
        return 2
    lab.down()
    t0 = time.monotonic()
    cap = None
    try:
        lab.up(3, [256, 257], per_host=1, registry=registry, etcd_tls=etcd_tls)
        print(f"lab up in {time.monotonic() - t0:.1f}s: 3 hosts (VTEPs 198.18.0.1-3), VNIs 256 and 257, one sandbox "
              f"per host and VNI; registry: {registry}"
              + (" (a real etcd on 198.18.0.251, one agent per host)" if registry == "etcd" else ""))
        info = lab.ls()
        a, b, c = (_sbx(info, h, 256) for h in ("h1", "h2", "h3"))
        x = _sbx(info, "h2", 257)
        cap = capture.Capture(lab.UNDERLAY_NS, lab.BRIDGE, "udp port 4789")
        try:
            for dst in (b, c):
                got, rtt = ping(a["name"], dst["ip"])
                d.check(got == 3, f"ping {a['name']} -> {dst['name']} ({dst['ip']}, another host, VNI 256): {got}/3, {rtt}")
            got = tcp_transfer(b["name"], a["name"], b["ip"], 1 << 20)
            d.check(got == 1 << 20, f"TCP transfer h1 -> h2 on VNI 256 (captured): {got} of {1 << 20} bytes received")
        finally:
            pcap = cap.stop()

        before = _rx(Node("dpl-h2"), 257)
        netlink.ns_exec(a["name"], ["ip", "route", "add", "10.1.1.0/24", "dev", "eth0"], check=True)
        got, _ = ping(a["name"], x["ip"], count=2)
        netlink.ns_exec(a["name"], ["ip", "route", "del", "10.1.1.0/24", "dev", "eth0"])
        after = _rx(Node("dpl-h2"), 257)
        d.check(got == 0 and after == before,
                f"isolation: {a['name']} (VNI 256) cannot reach {x['name']} (VNI 257, {x['ip']}) even with an on-link route; "
                f"VNI 257 on h2 received {after - before} frames")

        if registry != "none":
            registry_step(d, a)
        if lab.load()["params"].get("etcd_tls"):
            tls_step(d)

        res = iperf(b["name"], a["name"], b["ip"], ["-t", "2"])
        gbps = res["end"]["sum_received"]["bits_per_second"] / 1e9
        d.check(gbps > 0, f"TCP h1 -> h2 over VXLAN VNI 256 for 2 s: {gbps:.2f} Gbit/s (single stream, iperf3)")

        rows = capture.decode(pcap)
        protos = capture.inner_protocols(pcap)
        capture_report(d, rows, protos, arp_on_wire=registry == "none")
        if registry != "none":
            arp = sum(s["arp_replies"] for s in readout.stats(Node("dpl-h1")))
            d.check(arp > 0, f"ARP answered on h1 from the registry's entries ({arp} replies), not resolved across the wire")

        print("\ncounters (dataplane --netns dpl-hN stats):")
        for h in info["hosts"]:
            for s in readout.stats(Node(h["netns"])):
                if s["vni"]:
                    print(f"  {h['name']} VNI {s['vni']}: tx {s['tx_packets']} pkts/{s['tx_bytes']} B, "
                          f"rx {s['rx_packets']} pkts/{s['rx_bytes']} B, flooded {s['flooded']}, "
                          f"arp replies {s['arp_replies']}, drops {s['drops'] or 'none'}")
    finally:
        try:
            if cap is not None:
                _keep_capture(d, cap, pcap_out)
        finally:
            if not keep:
                lab.down()
                d.check(not [n for n in netlink.ns_list() if n.startswith(lab.PREFIX)], "lab down: no lab namespace left")
    print(f"\ndemo {'passed' if not d.failed else f'FAILED ({d.failed} checks)'}")
    return 1 if d.failed else 0


def _writable(path: str) -> bool:
    """path names a file this process can write (or make), not a directory."""
    if not path or os.path.isdir(path):
        return False
    if os.path.exists(path):
        return os.access(path, os.W_OK)
    return os.access(os.path.dirname(os.path.abspath(path)), os.W_OK)


def _keep_capture(d: Demo, cap: capture.Capture, pcap_out: str | None) -> None:
    """Copy the capture to pcap_out (said where), then remove the temporary file."""
    try:
        if pcap_out:
            cap.stop()
            try:
                shutil.copyfile(cap.path, pcap_out)
                print(f"\ncapture kept: {os.path.abspath(pcap_out)} (Wireshark decodes UDP 4789 as VXLAN)")
            except OSError as e:
                d.check(False, f"keep the capture in {pcap_out}: {e}")
    finally:
        cap.remove()


def _rx(node: Node, vni: int) -> int:
    return next((s["rx_packets"] for s in readout.stats(node) if s["vni"] == vni), 0)


def registry_step(d: Demo, a: dict) -> None:
    """A new endpoint on h3, announced only through the registry, reached from h1."""
    t0 = time.monotonic()
    ep = client.call("dpl-h3", "endpoint_add", id="dpl-h3-new", vni=256)
    mac = ep["mac"]
    while time.monotonic() - t0 < 5 and not any(r["mac"] == mac for r in readout.fdb(Node("dpl-h1"))):
        time.sleep(0.005)
    took = (time.monotonic() - t0) * 1000
    got, rtt = ping(a["name"], ep["ip"])
    d.check(got == 3, f"endpoint dpl-h3-new ({ep['ip']}) added on h3 only: in h1's FDB {took:.0f} ms later "
            f"(sandbox creation included), ping from h1 {got}/3")
    client.call("dpl-h3", "endpoint_rm", id="dpl-h3-new")


def tls_step(d: Demo) -> None:
    """etcd over TLS with authentication: a client without a certificate is refused, and
    host h1's etcd user cannot write host h2's record (asked from the underlay, as a host would)."""
    from lab import certs  # noqa: PLC0415 - only with --etcd-tls
    from dataplane.registry import Refused, etcd_access, etcd_auth, open_registry
    from dataplane.registry.etcd_access import TlsFiles
    from dataplane.registry.kv import Txn
    from dataplane.registry.records import key

    pki, eps = certs.Pki(lab.PKI_DIR), [(m["ip"], lab.ETCD_PORT) for m in lab.load()["etcd"]]
    user = etcd_auth.host_user("h1")

    def attempt(url: str, fn) -> str:
        reg = open_registry(url)
        try:
            fn(reg)
            return "accepted"
        except Refused as e:
            return f"refused: {e}"
        finally:
            reg.close()

    def run():
        return (attempt(etcd_access.url(eps, TlsFiles(pki.ca.cert), user, pki.password_file(user)), lambda r: r.snapshot()),
                attempt(lab.registry_url("etcd", host="h1"),
                        lambda r: r.kv.commit(Txn().put(key("hosts", "h2"), b'{"name": "h2", "vtep": "198.18.0.66"}'))))
    nocert, cross = netlink.call_in_netns(lab.registry_netns(), run)
    d.check(nocert.startswith("refused"), f"etcd (TLS, client certificates) and a client without a certificate: {nocert}")
    d.check(cross.startswith("refused") and "not permitted" in cross,
            f"host h1's etcd user writes host h2's record: {cross}")


def capture_report(d: Demo, rows: list[dict], protos: list[str], arp_on_wire: bool = True) -> None:
    vx = [r for r in rows if r["vxlan.vni"]]
    d.check(bool(vx) and all(r["vxlan.vni"] == "256" for r in vx),
            f"tshark: {len(vx)} underlay frames decoded as VXLAN, all VNI 256")
    inners = ("arp", "ip:icmp", "ip:tcp") if arp_on_wire else ("ip:icmp", "ip:tcp")
    d.check(all(any(f":vxlan:eth:ethertype:{inner}" in p for p in protos) for inner in inners),
            f"tshark: inner {', '.join(i.split(':')[-1].upper() for i in inners)} inside the VXLAN frames")
    bad = capture.problems(rows)
    notes = capture.flow_notes(rows)
    d.check(not bad, "tshark: flags 0x08 (I bit), outer IPv4 checksum good, DF set, nothing malformed, "
            "no expert warning on any frame" + ("" if not bad else ": " + "; ".join(bad[:5]))
            + (f" (TCP sequence analysis: {len(notes)} notes, e.g. {notes[0]})" if notes else ""))


if __name__ == "__main__":
    sys.exit(run())
