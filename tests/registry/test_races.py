"""Races and lost replies, made deterministic: the test wraps reg.kv in an
Interleave, which runs a competing write (through a second connection, as
another agent would) just before the first commit, and can lose that
commit's reply. Both backends, like the rest of the suite."""

from __future__ import annotations

import ipaddress

import pytest

from dataplane.core import model
from dataplane.core.errors import Conflict, NotFound
from dataplane.registry import Endpoint, Host, open_registry
from dataplane.registry.kv import Txn, Unavailable
from dataplane.registry.store import PREFIX, key


class Interleave:
    """Stands in for a Registry's kv. Its first commit runs before() first;
    lose="applied" then commits and raises Unavailable (the reply was lost),
    lose="dropped" raises Unavailable without committing (the request was
    lost); after() runs once the real commit is done. Later commits pass."""

    def __init__(self, kv, before=None, lose=None, after=None):
        self.kv, self.before, self.lose, self.after = kv, before, lose, after
        self.commits = 0

    def __getattr__(self, name):
        return getattr(self.kv, name)

    def commit(self, txn):
        self.commits += 1
        if self.commits > 1:
            return self.kv.commit(txn)
        if self.before:
            self.before()
        if self.lose == "dropped":
            raise Unavailable("test: the request was lost")
        result = self.kv.commit(txn)
        if self.after:
            self.after()
        if self.lose == "applied":
            raise Unavailable("test: the reply was lost")
        return result


@pytest.fixture
def other(registry_url):
    """A second connection to the same registry: the competing writer."""
    r = open_registry(registry_url)
    yield r
    r.close()


def keys(reg, *kinds) -> list[str]:
    _, items = reg.kv.range(PREFIX)
    return sorted(i.key for i in items if i.key[len(PREFIX):].split("/")[0] in kinds)


def endpoint_keys(reg) -> list[str]:
    return keys(reg, "endpoints", "ipam", "macs")


# --- host names -------------------------------------------------------------------

def test_host_name_held_by_another_vtep_is_refused(reg, other):
    lease1 = reg.kv.lease_grant(30)
    reg.host_register(Host.make("h1", "198.18.0.1"), lease1)
    with pytest.raises(Conflict, match=r"^host name h1 is registered by VTEP 198\.18\.0\.1; "
                                       r"this host is VTEP 198\.18\.0\.2: give each host its own --host-name$"):
        other.host_register(Host.make("h1", "198.18.0.2"), other.kv.lease_grant(30))
    assert reg.hosts() == [Host.make("h1", "198.18.0.1")]
    assert reg.kv.get(key("hosts", "h1")).lease == lease1, "the first host's record is intact"


def test_host_reregistered_by_its_own_vtep_takes_the_new_lease(reg, other):
    """An agent restart: same name, same VTEP, a new lease. Also when the
    record is rewritten under us between our read and our commit."""
    me = Host.make("h1", "198.18.0.1")
    lease1, lease2, lease3 = (reg.kv.lease_grant(30) for _ in range(3))
    reg.host_register(me, lease1)
    reg.host_register(me, lease2)
    assert reg.kv.get(key("hosts", "h1")).lease == lease2
    reg.kv = Interleave(reg.kv, before=lambda: other.kv.commit(Txn().put(key("hosts", "h1"), me.to_json(), lease2)))
    reg.host_register(me, lease3)
    assert reg.kv.commits >= 2, "the first commit's compare failed; the read and commit were retried"
    assert reg.kv.get(key("hosts", "h1")).lease == lease3
    reg.kv.lease_revoke(lease1)
    reg.kv.lease_revoke(lease2)
    assert reg.hosts() == [me]


def test_host_name_created_by_another_vtep_mid_register_is_refused(reg, other):
    """The other host's create lands between our read and our commit: we must
    not overwrite it."""
    theirs = Host.make("h1", "198.18.0.2")
    lease = other.kv.lease_grant(30)
    reg.kv = Interleave(reg.kv, before=lambda: other.host_register(theirs, lease))
    with pytest.raises(Conflict, match="host name h1 is registered by VTEP 198.18.0.2; this host is VTEP 198.18.0.1"):
        reg.host_register(Host.make("h1", "198.18.0.1"), reg.kv.lease_grant(30))
    assert reg.hosts() == [theirs]
    assert reg.kv.get(key("hosts", "h1")).lease == lease


# --- networks against endpoints -----------------------------------------------------

def test_endpoint_create_fails_if_its_network_goes_before_the_commit(reg, other):
    reg.network_create("n", 310)
    reg.kv = Interleave(reg.kv, before=lambda: other.network_rm("n"))
    with pytest.raises((NotFound, Conflict), match="network n"):
        reg.endpoint_create("a", "n", "h1")
    assert endpoint_keys(reg) == [], "no endpoint or claim outlives its network"
    assert keys(reg, "networks", "vnis", "netuse") == []


def test_network_rm_refuses_an_endpoint_created_before_its_commit(reg, other):
    reg.network_create("n", 311)
    reg.kv = Interleave(reg.kv, before=lambda: other.endpoint_create("a", "n", "h1"))
    with pytest.raises(Conflict, match="network n is in use"):
        reg.network_rm("n")
    assert reg.network("n").vni == 311
    assert reg.network_by_vni(311).name == "n"
    assert reg.endpoint("a").network == "n"


def test_network_rm_still_removes_and_leaves_no_fence(reg):
    reg.network_create("n", 312)
    reg.endpoint_create("a", "n", "h1")
    reg.endpoint_rm("a")
    reg.network_rm("n")
    _, items = reg.kv.range(PREFIX)
    assert items == []
    reg.network_create("n", 312, "10.5.0.0/24")     # same name again, other subnet
    assert reg.endpoint_create("a", "n", "h1").ip == "10.5.0.2"


# --- lost replies --------------------------------------------------------------------

@pytest.mark.parametrize("lose", ["applied", "dropped"])
@pytest.mark.parametrize("given", [{}, {"ip": "10.1.57.20", "mac": "02:00:00:00:00:20"}], ids=["auto", "given"])
def test_endpoint_create_retried_after_a_lost_reply_returns_the_endpoint(reg, lose, given):
    reg.network_create("n", 313)
    reg.kv = Interleave(reg.kv, lose=lose)
    ep = reg.endpoint_create("a", "n", "h1", **given)
    assert reg.kv.commits == 2
    assert ep == reg.endpoint("a")
    if given:
        assert (ep.ip, ep.mac) == (given["ip"], given["mac"])
    snap = reg.snapshot()
    assert list(snap.endpoints) == ["a"]
    assert snap.ipam == {f"n/{ep.ip}": "a"} and snap.macs == {f"n/{ep.mac}": "a"}
    assert reg.endpoint_create("b", "n", "h1").ip != ep.ip


def test_endpoint_create_after_a_lost_request_still_refuses_someone_elses_endpoint(reg, other):
    reg.network_create("n", 314)
    reg.kv = Interleave(reg.kv, before=lambda: other.endpoint_create("a", "n", "h2"), lose="dropped")
    with pytest.raises(Conflict, match="endpoint a exists"):
        reg.endpoint_create("a", "n", "h1")
    assert reg.endpoint("a").host == "h2"
    assert len(endpoint_keys(reg)) == 3


def test_endpoint_move_retried_after_a_lost_reply_returns_the_record(reg):
    reg.network_create("n", 315)
    ep = reg.endpoint_create("a", "n", "h1")
    reg.endpoint_move_begin("a", "h2")                 # a commit needs its mark
    reg.kv = Interleave(reg.kv, lose="applied")
    moved = reg.endpoint_move("a", "h2")
    assert moved == Endpoint.make("a", "n", "h2", ep.mac, ep.ip) == reg.endpoint("a")


def test_endpoint_rm_retried_after_a_lost_reply_returns_the_old_record(reg):
    reg.network_create("n", 316)
    ep = reg.endpoint_create("a", "n", "h1")
    reg.kv = Interleave(reg.kv, lose="applied")
    assert reg.endpoint_rm("a") == ep
    assert endpoint_keys(reg) == []


def test_endpoint_rm_after_a_lost_reply_leaves_a_new_endpoint_of_that_id(reg, other):
    """Our delete applied, its reply was lost, and the id was taken again
    before we retried: the new endpoint is not ours to delete."""
    reg.network_create("n", 317)
    ep = reg.endpoint_create("a", "n", "h1")
    reg.kv = Interleave(reg.kv, lose="applied", after=lambda: other.endpoint_create("a", "n", "h2"))
    assert reg.endpoint_rm("a") == ep
    again = reg.endpoint("a")
    assert again.host == "h2"
    assert len(endpoint_keys(reg)) == 3


# --- networks -----------------------------------------------------------------------

def test_a_network_create_whose_reply_was_lost_is_done_once(reg):
    """The create applied and its reply was lost: the retry finds exactly the network it sent
    and returns it (before: Unavailable to the caller, whose retry found "network exists",
    or, for a runtime picking a free VNI, created a second network with the same subnet)."""
    reg.kv = Interleave(reg.kv, lose="applied")
    net = reg.network_create("lost", 310, "10.31.0.0/24")
    assert net.name == "lost" and [n.name for n in reg.networks()] == ["lost"]
    reg.kv = reg.kv.kv
    reg.kv = Interleave(reg.kv, lose="dropped")        # the request itself lost: sent again
    assert reg.network_create("dropped", 311).vni == 311


def test_a_network_rm_whose_reply_was_lost_is_done(reg):
    reg.network_create("gone", 312)
    reg.kv = Interleave(reg.kv, lose="applied")
    assert reg.network_rm("gone").name == "gone"
    assert reg.networks() == []


def test_a_network_another_writer_made_is_still_a_conflict_after_a_lost_reply(reg, other):
    """Only our own write counts as done: the same name made by another writer first (our
    commit then fails its compare) is a Conflict, lost reply or not."""
    reg.kv = Interleave(reg.kv, before=lambda: other.network_create("taken", 313, "10.31.3.0/24"), lose="dropped")
    with pytest.raises(Conflict, match="network taken exists"):
        reg.network_create("taken", 314, "10.31.4.0/24")


def test_a_host_record_already_right_is_not_put_again(reg):
    """After an outage the agent registers again (keep=True): a record with the same bytes and
    lease is left alone, no event for every host to apply; its first registration always puts."""
    me = Host.make("h1", "198.18.0.1")
    lease = reg.kv.lease_grant(30)
    r1 = reg.host_register(me, lease)
    assert reg.host_register(me, lease, keep=True) == r1
    assert reg.kv.range(PREFIX)[0] == r1, "nothing written"
    r2 = reg.host_register(me, lease)
    assert r2 > r1, "a start puts"
    lease2 = reg.kv.lease_grant(30)
    assert reg.host_register(me, lease2, keep=True) > r2, "another lease: put"


def test_a_refusal_is_not_retried_as_a_lost_reply(reg):
    """Refused (a permission, a certificate, a read-only or damaged SQLite file) is an
    Unavailable, but no reply was lost: raised at once, not sent again for LOST_WINDOW_S."""
    from dataplane.registry import Refused
    calls = []

    class Refusing:
        def __init__(self, kv):
            self.kv = kv

        def __getattr__(self, name):
            return getattr(self.kv, name)

        def commit(self, txn):
            calls.append(txn)
            raise Refused("test: permission denied")
    reg.network_create("n", 320)
    reg.network_create("k", 322)
    reg.endpoint_create("e0", "k", "h1")
    reg.kv = Refusing(reg.kv)
    for write in (lambda: reg.network_create("m", 321), lambda: reg.network_rm("n"),
                  lambda: reg.endpoint_create("e", "n", "h1"), lambda: reg.endpoint_rm("e0"),
                  lambda: reg.endpoint_move_begin("e0", "h2")):    # these two retried it for 5 s
        calls.clear()
        with pytest.raises(Refused):
            write()
        assert len(calls) == 1


# --- address allocation by hosts in turn ------------------------------------------------

class CountRanges:
    """Stands in for a Registry's kv, counting range reads under a prefix."""

    def __init__(self, kv, prefix):
        self.kv, self.prefix, self.ranges = kv, prefix, 0

    def __getattr__(self, name):
        return getattr(self.kv, name)

    def range(self, prefix, *a, **kw):
        self.ranges += prefix.startswith(self.prefix)
        return self.kv.range(prefix, *a, **kw)


def test_hosts_allocating_in_turn_do_not_rescan_the_networks_claims(reg, other):
    """Each host's cache of used addresses misses what the other took since its last add: the
    address it tries is taken, once per add. That one is marked and the next tried; the old
    code read every claim of the network again each time (a scan of them all per add)."""
    reg.network_create("n", 315, "10.6.0.0/24")
    got = [reg.endpoint_create("a", "n", "h1").ip]          # the cache is read once here
    reg.kv = CountRanges(reg.kv, key("ipam", "n"))
    for i in range(10):
        got.append(other.endpoint_create(f"b{i}", "n", "h2").ip)
        got.append(reg.endpoint_create(f"c{i}", "n", "h1").ip)
    assert got == [f"10.6.0.{n}" for n in range(2, 23)], "not the lowest free address each time"
    assert reg.kv.ranges == 0, f"the network's claims were read {reg.kv.ranges} times"


def test_a_second_clash_in_one_create_reads_the_claims_again(reg, other):
    """Two addresses taken behind our cache's back: the first is marked, the second clash
    re-reads the network's claims, and the lowest free address is still what we get."""
    reg.network_create("n", 316, "10.7.0.0/24")
    assert reg.endpoint_create("a", "n", "h1").ip == "10.7.0.2"
    for i in range(3):
        other.endpoint_create(f"b{i}", "n", "h2")               # .3, .4, .5 behind reg's back
    reg.kv = CountRanges(reg.kv, key("ipam", "n"))
    assert reg.endpoint_create("c", "n", "h1").ip == "10.7.0.6"
    assert reg.kv.ranges == 1


def test_addresses_freed_behind_our_cache_are_found_when_it_runs_out(reg, other):
    """Our cache saw the network full; another host then freed every address. The cached scan
    finds nothing: the claims are read again, not "no free address" said."""
    reg.network_create("n", 317, "10.8.0.0/28")          # .2-.14 for endpoints (.1: the gateway)
    for i in range(13):
        other.endpoint_create(f"b{i}", "n", "h2")
    with pytest.raises(Conflict, match="no free address"):
        reg.endpoint_create("x", "n", "h1")               # full, read fresh: true
    for i in range(13):
        other.endpoint_rm(f"b{i}")
    assert reg.endpoint_create("y", "n", "h1").ip == "10.8.0.2"


def test_an_address_whose_mac_is_held_stays_out_of_the_scan_after_a_reread(reg, other):
    """.5 is free but its derived MAC is held (an endpoint made with that MAC); two addresses
    taken behind our cache's back make the create read the claims again, which bring .5 back
    as free: it must not be tried again (the old code tried it until its 64 attempts ran out)."""
    reg.network_create("n", 318, "10.9.0.0/24")
    assert reg.endpoint_create("a", "n", "h1").ip == "10.9.0.2"
    other.endpoint_create("b0", "n", "h2")                # .3
    other.endpoint_create("b1", "n", "h2")                # .4
    other.endpoint_create("sq", "n", "h2", ip="10.9.0.20", mac=model.mac_for_ip(ipaddress.IPv4Address("10.9.0.5")))
    assert reg.endpoint_create("c", "n", "h1").ip == "10.9.0.6"


class Befores:
    """Stands in for a Registry's kv: befores[i]() runs just before its (i+1)th commit."""

    def __init__(self, kv, *befores):
        self.kv, self.befores, self.commits = kv, list(befores), 0

    def __getattr__(self, name):
        return getattr(self.kv, name)

    def commit(self, txn):
        if self.commits < len(self.befores):
            self.befores[self.commits]()
        self.commits += 1
        return self.kv.commit(txn)


def test_a_network_created_again_mid_create_forgets_what_the_old_one_held(reg, other):
    """Our first try clashed on .2 (held by another host); the network is then removed and
    created again, smaller, with .2 its only address and free: the create must take it."""
    reg.network_create("n", 319, "10.2.0.0/29")

    def recreate():
        other.endpoint_rm("b")
        other.network_rm("n")
        other.network_create("n", 319, "10.2.0.0/30")
    reg.kv = Befores(reg.kv, lambda: other.endpoint_create("b", "n", "h2"), recreate)
    assert reg.endpoint_create("a", "n", "h1").ip == "10.2.0.2"
