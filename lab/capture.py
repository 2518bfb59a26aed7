"""Underlay captures and their decoding by tshark (Wireshark's dissectors),
for the demo and the wire-format tests."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time

from dataplane.core.errors import DataplaneError

FIELDS = ("frame.number", "frame.len", "ip.src", "ip.dst", "ip.checksum.status", "ip.flags.df",
          "udp.srcport", "udp.dstport", "vxlan.flags", "vxlan.vni", "_ws.col.Protocol",
          "_ws.malformed", "_ws.expert.severity", "_ws.expert.group", "_ws.expert.message")
# Multi-valued fields (a frame can carry several expert items) are joined with this.
AGG = "\x1e"
PI_WARN = 0x00600000
PI_SEQUENCE = 0x02000000  # TCP sequence analysis: about the flow (reordering, loss), not the frame


class Capture:
    """tcpdump on one interface of one namespace, writing a pcap file."""

    def __init__(self, netns: str, ifname: str, bpf_filter: str = "udp"):
        fd, self.path = tempfile.mkstemp(prefix="dataplane-", suffix=".pcap")
        os.close(fd)
        # A 64 MiB kernel buffer: a 1 MiB TCP burst on 2 vCPUs must not lose frames to the capture.
        argv = ["ip", "netns", "exec", netns, "tcpdump", "-i", ifname, "-B", "65536", "-n", "-w", self.path]
        argv += bpf_filter.split()
        self.proc = None
        try:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 5
            line = ""
            while time.monotonic() < deadline:  # tcpdump says "listening on" once its socket is open
                line = self.proc.stderr.readline()
                if "listening on" in line or self.proc.poll() is not None:
                    break
            if self.proc.poll() is not None:
                raise DataplaneError(f"tcpdump on {netns}/{ifname} failed: {line.strip()}")
        except BaseException:          # failed or interrupted: no tcpdump and no file left
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.unlink(self.path)
            raise

    def stop(self) -> str:
        if self.proc.poll() is None:
            time.sleep(0.2)
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.path

    def remove(self) -> None:
        self.stop()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def decode(pcap: str, vxlan_port: int = 4789, checksums: bool = False) -> list[dict]:
    """One dict per frame with the FIELDS above, as tshark dissects them, outer IPv4
    checksum verified; with checksums, every UDP and TCP checksum too (for a capture
    where the sender filled them in: over veth an offloaded one is never computed)."""
    argv = ["tshark", "-r", pcap, "-n", "-o", "ip.check_checksum:TRUE", "-T", "fields",
            "-E", "separator=\t", "-E", "occurrence=a", "-E", f"aggregator={AGG}"]
    if checksums:
        argv += ["-o", "udp.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE"]
    if vxlan_port != 4789:
        argv += ["-d", f"udp.port=={vxlan_port},vxlan"]
    for f in FIELDS:
        argv += ["-e", f]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode:
        raise DataplaneError(f"tshark failed: {r.stderr.strip()}")
    rows = []
    for line in r.stdout.split("\n"):  # not splitlines(): it also splits at AGG
        if not line:
            continue
        vals = line.split("\t")
        vals += [""] * (len(FIELDS) - len(vals))
        row = dict(zip(FIELDS, vals))
        for f in FIELDS:  # the outer header's value comes first; only expert items stay lists
            if not f.startswith("_ws.expert"):
                row[f] = row[f].split(AGG)[0]
        rows.append(row)
    return rows


def during(netns: str, ifname: str, bpf_filter: str, fn, checksums: bool = False) -> tuple[list[dict], list[str]]:
    """Capture while fn() runs: each frame as decode() and as inner_protocols()
    read it. The pcap file is gone afterwards, whatever fn did."""
    cap = Capture(netns, ifname, bpf_filter)
    try:
        fn()
        pcap = cap.stop()
        return decode(pcap, checksums=checksums), inner_protocols(pcap)
    finally:
        cap.remove()


def inner_protocols(pcap: str) -> list[str]:
    """The protocol stack of each frame (frame.protocols), e.g. eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:icmp."""
    r = subprocess.run(["tshark", "-r", pcap, "-n", "-T", "fields", "-e", "frame.protocols"],
                       capture_output=True, text=True)
    if r.returncode:
        raise DataplaneError(f"tshark failed: {r.stderr.strip()}")
    return r.stdout.split()


def expert(row: dict) -> list[tuple[int, int, str]]:
    """(severity, group, message) of each expert item tshark attached to the frame."""
    if not row["_ws.expert.severity"]:
        return []
    sev = row["_ws.expert.severity"].split(AGG)
    grp = row["_ws.expert.group"].split(AGG)
    msg = row["_ws.expert.message"].split(AGG)
    return [(int(s, 0), int(g, 0), m) for s, g, m in zip(sev, grp, msg)]


def flow_notes(rows: list[dict]) -> list[str]:
    """TCP sequence-analysis warnings (out-of-order, retransmission, D-SACK):
    what the flow did, which says nothing about how each frame is encoded."""
    return [f"frame {r['frame.number']}: {m}" for r in rows for s, g, m in expert(r)
            if s >= PI_WARN and g == PI_SEQUENCE]


def problems(rows: list[dict]) -> list[str]:
    """What a careful reader of the capture would object to in the frames
    themselves: malformed, bad checksum, wrong flags, any warning or error
    that is not TCP sequence analysis (see flow_notes)."""
    out = []
    for r in rows:
        n = r["frame.number"]
        if r["_ws.malformed"]:
            out.append(f"frame {n}: malformed")
        for sev, grp, msg in expert(r):
            # 0xffff for a sum of zero: one's complement's other zero, which RFC 1624 (3)
            # accepts and skb_checksum_help writes (CSUM_MANGLED_0); every receiver takes it.
            if sev >= PI_WARN and grp != PI_SEQUENCE and not msg.endswith("instead of 0x0000 (see RFC 1624)"):
                out.append(f"frame {n}: expert {msg}")
        if r["vxlan.vni"]:
            if int(r["vxlan.flags"], 0) != 0x0800:
                out.append(f"frame {n}: VXLAN flags {r['vxlan.flags']} (want 0x0800, I bit only)")
            if r["ip.checksum.status"] != "1":
                out.append(f"frame {n}: outer IPv4 checksum status {r['ip.checksum.status']} (1 = good)")
            if r["ip.flags.df"] not in ("1", "True"):
                out.append(f"frame {n}: outer DF not set")
    return out
