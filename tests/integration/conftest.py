"""A live lab: host namespaces on an underlay bridge, each a dataplane node.
Built once per module, always torn down, and checked to leave nothing behind."""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import require_privileges

DATAPLANE = [sys.executable, "-m", "dataplane.cli"]
LAB = [sys.executable, "-m", "lab"]     # the checkout's lab (tests run from the repository root)


LOG_TAIL = 40


def lab_logs() -> list[tuple[str, str]]:
    """The last lines of the live lab's etcd and agent logs (warnings and errors of etcd only)."""
    from dataplane.agent import process as agentctl
    from lab import topology as lab
    live = lab.load() or {}
    paths = [(f"etcd {m['name']}", os.path.join(lab.REGISTRY_DIR, f"{m['name']}.log")) for m in live.get("etcd") or []]
    paths += [(f"agent {h['netns']}", agentctl.log_path(h["netns"])) for h in live.get("hosts") or []]
    out = []
    for name, path in paths:
        try:
            with open(path, errors="replace") as f:
                lines = collections.deque((ln for ln in f if not (name.startswith("etcd") and '"level":"info"' in ln)),
                                          maxlen=LOG_TAIL)
        except OSError:
            continue
        out.append((f"{name} log (last {LOG_TAIL} lines)", "".join(lines)))
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A lab test that fails carries the lab's logs in its report: they go when the lab is torn down."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.when in ("setup", "call"):
        try:
            for title, text in lab_logs():
                rep.sections.append((title, text))
        except Exception as e:  # the report must not fail for want of a log
            rep.sections.append(("lab logs", f"not read: {e}"))


def dp(*args, check=True, **kw) -> subprocess.CompletedProcess:
    """`dataplane ARGS`, or `python -m lab ARGS` when the first is "lab"."""
    argv = LAB + list(args[1:]) if args[:1] == ("lab",) else DATAPLANE + list(args)
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and r.returncode:
        raise AssertionError(f"{' '.join(argv[2:])} exited {r.returncode}: {r.stderr}")
    return r


def dp_json(*args):
    return json.loads(dp(*args, "-o", "json").stdout)


def leftovers() -> list[str]:
    from dataplane.kernel import loader as fastpath, netlink
    from lab import topology as lab
    from dataplane.core import state
    out = [f"netns {n}" for n in netlink.ns_list() if n.startswith(lab.PREFIX)]
    if os.path.isdir(fastpath.PIN_ROOT):
        out += [f"pin {p}" for p in os.listdir(fastpath.PIN_ROOT) if p.startswith(lab.PREFIX)]
    if os.path.exists(lab.LAB_FILE):
        out.append(lab.LAB_FILE)
    if os.path.isdir(state.RUN_ROOT):
        out += [f"state {p}" for p in os.listdir(state.RUN_ROOT) if p.startswith(lab.PREFIX)]
    if os.path.isdir(state.LIB_ROOT):
        out += [f"boot state {p}" for p in os.listdir(state.LIB_ROOT) if p.startswith(lab.PREFIX)]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ")
        except OSError:
            continue
        if b"--netns dpl-h" in cmd or lab.REGISTRY_DIR.encode() in cmd:
            out.append(f"process {pid}: {cmd.decode(errors='replace')[:80]}")
    return out


TICK_S = 2      # the agents' housekeeping period in a lab made with fdb_age=TICK_S * 4 (a quarter of it)


def make_lab(hosts, vnis, **kw):
    require_privileges()
    from lab import topology as lab
    lab.down()
    try:
        lab.up(hosts, vnis, **kw)
        yield lab.ls()
    finally:
        lab.down()
        left = leftovers()
        assert not left, f"lab down left: {left}"


def wait_for(cond, timeout=10.0, every=0.05):
    """Poll cond until true or timeout; its last value."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(every)
    return cond()


def sandbox(info, host, vni):
    return next(s for s in info["sandboxes"] if s["host"] == host and s["vni"] == vni)


def stats(netns, vni):
    from dataplane.node import Node, readout
    return next(s for s in readout.stats(Node(netns)) if s["vni"] == vni)


def in_ns(netns: str, code: str, *args) -> subprocess.CompletedProcess:
    """Run Python (with scapy) inside a namespace."""
    return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code, *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def ended_by(p: subprocess.Popen, sig: int, after: float = 0.5, timeout: float = 30) -> tuple[str, str]:
    """Signal p after a moment (what it was to see has happened), then its output."""
    import time
    time.sleep(after)
    p.send_signal(sig)
    return p.communicate(timeout=timeout)


def reaped(p: subprocess.Popen):
    """A context in which p is killed if it is still running at the end (a failed test)."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        try:
            yield p
        finally:
            if p.poll() is None:
                p.kill()
    return ctx()


# Fetches a URL from the namespace it runs in; prints the HTTP status, then the body.
FETCH = """
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=10)
    code, body = r.status, r.read()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
sys.stdout.write(f"{code}\\n"); sys.stdout.flush(); sys.stdout.buffer.write(body)
"""


def scrape(url: str) -> tuple[int, str]:
    """(HTTP status, body) of url, fetched from the lab's underlay namespace as Prometheus would."""
    from lab import topology as lab
    r = in_ns(lab.UNDERLAY_NS, FETCH, url)
    assert r.returncode == 0, r.stderr
    code, _, body = r.stdout.partition("\n")
    return int(code), body


def value(body: str, name: str, **labels) -> float | None:
    for line in body.splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? (\S+)$", line)
        if m and m.group(1) == name and all(f'{k}="{v}"' in (m.group(2) or "") for k, v in labels.items()):
            return float(m.group(3))
    return None
