"""The overlay on a 3-member etcd cluster, under traffic (100 pings/s between
hosts) and churn (endpoints added and removed on every host at once), while
members die: the leader, a follower, two of three (no quorum). Forwarding
never stops, writes fail clearly while there is no quorum, and afterwards
every host's maps equal what the registry says (tests/integration/invariants.py)."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from dataplane.kernel import netlink
from lab import topology as lab
from lab.traffic import ping
from tests.integration import invariants
from tests.integration.conftest import dp, make_lab, sandbox, wait_for

HOSTS = {f"h{i}": f"dpl-h{i}" for i in (1, 2, 3)}


@pytest.fixture(scope="module")
def info():
    yield from make_lab(3, [256], per_host=1, registry="etcd", etcd_members=3, lease_ttl=3)


def url() -> str:
    return lab.registry_url("etcd")


class Traffic:
    """A ping stream at 100/s from one sandbox to another, in the background."""

    def __init__(self, src: str, dst_ip: str, seconds: float):
        self.count, self.received = int(seconds * 100), None
        self.t = threading.Thread(target=lambda: setattr(self, "received", ping(src, dst_ip, self.count, 0.01)[0]))

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.t.join(timeout=self.count / 100 + 30)


class Churn:
    """Every host adds and removes endpoints of its own, all at once, until stopped."""
    runs = 0

    def __init__(self):
        Churn.runs += 1
        self.tag = Churn.runs              # names of its own: a run may leave some endpoints behind
        self.stop, self.ok, self.failed = threading.Event(), 0, 0
        self.threads = [threading.Thread(target=self._run, args=(h,)) for h in HOSTS.values()]

    def _run(self, ns: str) -> None:
        k = 0
        while not self.stop.is_set():
            name = f"dpl-c{self.tag}{ns[-1]}-{k % 3}"
            verb = "add" if k % 2 == 0 else "rm"
            argv = ("--netns", ns, "endpoint", verb, name) + (("--vni", "256") if verb == "add" else ())
            r = dp(*argv, check=False, timeout=90)
            self.ok += r.returncode == 0
            self.failed += r.returncode != 0
            k += 1 if r.returncode == 0 or verb == "rm" else 0

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=120)


def converged(timeout: float = 40) -> None:
    ok = wait_for(lambda: not invariants.problems(url(), HOSTS), timeout=timeout, every=0.5)
    assert ok, "\n".join(invariants.problems(url(), HOSTS))


def leader() -> str:
    assert wait_for(lambda: any(m["leader"] for m in lab.etcd_members()), timeout=15), lab.etcd_members()
    return next(m["name"] for m in lab.etcd_members() if m["leader"])


@pytest.mark.parametrize("who", ["leader", "follower"])
def test_a_member_killed_under_traffic_and_churn(info, who):
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    converged()
    lead = leader()
    victim = lead if who == "leader" else next(m["name"] for m in lab.etcd_members() if m["name"] != lead)
    with Traffic(a["name"], b["ip"], 12) as t, Churn() as churn:
        time.sleep(2)
        lab.stop_etcd(lab.load(), victim, sig=signal.SIGKILL)
        time.sleep(4)
        assert leader() != victim, "the two left elected a leader"
        lab.start_etcd(lab.load(), victim)
        time.sleep(2)
    assert t.received == t.count, f"{t.count - t.received} of {t.count} pings lost"
    assert churn.ok >= 6, (churn.ok, churn.failed)
    converged()


def test_two_of_three_killed_no_quorum_then_back(info):
    a, b = sandbox(info, "h1", 256), sandbox(info, "h3", 256)
    converged()
    dead = [m["name"] for m in lab.etcd_members()][:2]
    with Traffic(a["name"], b["ip"], 15) as t:
        time.sleep(1)
        for name in dead:
            lab.stop_etcd(lab.load(), name, sig=signal.SIGKILL)
        t0 = time.monotonic()
        r = dp("--netns", "dpl-h1", "endpoint", "add", "dpl-nq", "--vni", "256", check=False, timeout=120)
        took = time.monotonic() - t0
        assert r.returncode != 0, "no write without quorum"
        assert "etcd" in r.stderr and "dataplane: error:" in r.stderr, r.stderr
        assert not netlink.ns_exists("dpl-h1.dpl-nq"), "nothing half-created"
        # Every agent says it has no registry, and keeps saying so: no watch is opened on the
        # member left (before, the gateway's watch opened on it and /healthz flickered to 200).
        from dataplane.agent import client
        hosts = [h["name"] for h in info["hosts"]]
        assert wait_for(lambda: not any(client.call(f"dpl-{h}", "ping")["connected"] for h in hosts), timeout=20)
        flicker = []
        for _ in range(15):
            flicker += [h for h in hosts if client.call(f"dpl-{h}", "ping")["connected"]]
            time.sleep(0.2)
        assert not flicker, f"connected without quorum: {flicker}"
        for name in dead:
            lab.start_etcd(lab.load(), name)
    assert t.received == t.count, f"{t.count - t.received} of {t.count} pings lost while etcd had no quorum"
    assert took < 60, f"the failed write took {took:.0f} s"
    converged()
    dp("--netns", "dpl-h1", "endpoint", "add", "dpl-nq", "--vni", "256")
    converged()
    dp("--netns", "dpl-h1", "endpoint", "rm", "dpl-nq")
    converged()


def test_a_stuck_member_is_left_and_the_watch_resumes_elsewhere(info):
    """SIGSTOP keeps the member's sockets open and silent: the agent watching
    through it must notice (its deadline is the lease TTL, 3 s here), move to
    another member and resume, not sit on the dead connection reporting itself
    connected while changes pass it by."""
    from dataplane.agent import client
    converged()
    on = client.call("dpl-h1", "status")["watch_member"]
    member = next(m for m in lab.etcd_members() if m["client_url"].endswith(on))
    t0 = time.monotonic()
    os_kill = __import__("os").kill
    os_kill(member["pid"], signal.SIGSTOP)
    try:
        assert wait_for(lambda: client.call("dpl-h1", "status")["watch_member"] not in (None, on), timeout=15), \
            client.call("dpl-h1", "status")
        moved_after = time.monotonic() - t0
        dp("--netns", "dpl-h2", "endpoint", "add", "dpl-stuck", "--vni", "256")
        st = client.call("dpl-h1", "status")
        assert st["connected"] and st["watch_lag_s"] is not None and st["watch_lag_s"] < 3, st
    finally:
        os_kill(member["pid"], signal.SIGCONT)
    assert moved_after < 10, f"the agent left the stuck member after {moved_after:.1f} s"
    converged()
    dp("--netns", "dpl-h2", "endpoint", "rm", "dpl-stuck")
    converged()


def test_a_restarted_agent_starts_from_its_view_on_disk_and_catches_up(info):
    """h1's agent stops (writing its registry view to disk); endpoints come and
    go meanwhile; started again it reads the view, not the registry, and the
    watch brings it up to date: its maps equal the registry. A history
    compacted past the view makes it read the registry whole instead."""
    import os
    from dataplane.agent import cache, client, process
    from dataplane.registry import open_registry

    def restart(between):
        process.stop("dpl-h1")
        assert os.path.exists(cache.path("dpl-h1")), "a stopping agent writes its view"
        between()
        process.spawn("dpl-h1", "dpl-h1", lab.registry_url("etcd", host="h1"), "h1", 3, quiet=True)
        return client.call("dpl-h1", "status")

    converged()
    dp("--netns", "dpl-h3", "endpoint", "add", "dpl-warm1", "--vni", "256")
    converged()
    st = restart(lambda: (dp("--netns", "dpl-h2", "endpoint", "add", "dpl-warm2", "--vni", "256"),
                          dp("--netns", "dpl-h3", "endpoint", "rm", "dpl-warm1")))
    assert st["warm_start"] and st["last_snapshot_ms"] == 0, st
    converged()

    def compact():
        reg = open_registry(url())
        try:
            rev = reg.kv.range_exact("/dataplane/none")[0]
            reg.kv._post("/kv/compaction", {"revision": str(rev), "physical": True})
        finally:
            reg.close()
    # Two changes, so that the history compacted away includes one the view lacks (etcd keeps
    # the compaction's own revision: a watch from the view's next revision would still work).
    st = restart(lambda: (dp("--netns", "dpl-h3", "endpoint", "add", "dpl-warm3", "--vni", "256"),
                          dp("--netns", "dpl-h2", "endpoint", "rm", "dpl-warm2"),
                          netlink.call_in_netns(lab.registry_netns(), compact)))
    assert not st["warm_start"] and st["last_snapshot_ms"] > 0, st
    converged()
    dp("--netns", "dpl-h3", "endpoint", "rm", "dpl-warm3")
    converged()


def test_a_cold_start_syncs_from_the_records_then_the_claims_settle_the_rest(info):
    """h1's agent started with no view on disk reads the records without the IPAM
    claims, syncs, then reads the claims: a record its MAC claim does not name, and the
    one of two records sharing a MAC that the claim does not name, end up installed
    nowhere, exactly as the registry's claims say (invariants.expected)."""
    import contextlib
    import os
    from dataplane.agent import cache, client, process
    from dataplane.registry import open_registry
    from dataplane.registry.kv import Txn
    from dataplane.registry.records import Endpoint, Host
    from dataplane.registry.store import key

    def registry(fn):
        def run():
            reg = open_registry(url())
            try:
                return fn(reg)
            finally:
                reg.close()
        return netlink.call_in_netns(lab.registry_netns(), run)

    net = registry(lambda reg: reg.network_by_vni(256))
    base = net.subnet.rsplit(".", 1)[0]
    stray = Endpoint.make("dpl-stray", net.name, "f9", "02:00:00:00:f9:01", f"{base}.201")
    twin_a = Endpoint.make("dpl-twin-a", net.name, "f9", "02:00:00:00:f9:02", f"{base}.202")
    twin_b = Endpoint.make("dpl-twin-b", net.name, "f9", "02:00:00:00:f9:02", f"{base}.203")
    claims = {key("macs", net.name, stray.mac): b"dpl-nobody", key("ipam", net.name, stray.ip): b"dpl-stray",
              key("macs", net.name, twin_a.mac): b"dpl-twin-a", key("ipam", net.name, twin_a.ip): b"dpl-twin-a",
              key("ipam", net.name, twin_b.ip): b"dpl-twin-b"}
    keys = list(claims) + [key("endpoints", e.id) for e in (stray, twin_a, twin_b)] + [key("hosts", "f9")]

    def plant(reg):
        t = Txn().put(key("hosts", "f9"), Host.make("f9", lab.vtep_ip(3)).to_json(), reg.kv.lease_grant(120))
        for e in (stray, twin_a, twin_b):
            t.put(key("endpoints", e.id), e.to_json())
        for k, v in claims.items():
            t.put(k, v)
        assert reg.kv.commit(t)[0]

    def clear(reg):
        t = Txn()
        for k in keys:
            t.delete(k)
        reg.kv.commit(t)

    converged()
    try:
        registry(plant)
        process.stop("dpl-h1")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(cache.path("dpl-h1"))
        process.spawn("dpl-h1", "dpl-h1", lab.registry_url("etcd", host="h1"), "h1", 3, quiet=True)
        st = client.call("dpl-h1", "status")
        assert not st["warm_start"] and st["last_snapshot_ms"] > 0, st
        assert wait_for(lambda: not client.call("dpl-h1", "status")["claims_pending"], timeout=20)
        st = client.call("dpl-h1", "status")
        assert st["last_claims_ms"] > 0, st
        for e in (stray, twin_b):
            assert "not claimed in the IPAM" in st["skipped_endpoints"].get(e.id, ""), st["skipped_endpoints"]
        # the claims cleared the verdicts they settled: twin_a is installed, no "not read yet" is left
        assert twin_a.id not in st["skipped_endpoints"], st["skipped_endpoints"]
        assert not [w for w in st["skipped_endpoints"].values() if "not read yet" in w], st["skipped_endpoints"]
        want, (have, issues) = invariants.expected(invariants.snapshot(url()), "h1")[256], invariants.actual("dpl-h1")
        assert not issues, issues
        assert have[256]["fdb"].get(twin_a.mac) == lab.vtep_ip(3) and stray.mac not in have[256]["fdb"], have[256]
        assert have[256]["neigh"].get(twin_a.ip) == twin_a.mac, have[256]
        assert stray.ip not in have[256]["neigh"] and twin_b.ip not in have[256]["neigh"], have[256]
        for part in ("fdb", "neigh", "flood"):
            assert have[256][part] == want[part], part
    finally:
        registry(clear)
    converged()
