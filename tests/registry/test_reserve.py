"""Address reservations (registry/reserve.py), both backends: a reservation
holds its address against endpoints and other reservations, from any host and
at the same moment; the reserving host's endpoint takes it over; a release
frees only a reservation of its host, never an endpoint's claim; and a dead
host's reservations go with its lease."""

from __future__ import annotations

import threading
import time

import pytest

from dataplane.core.errors import Conflict, DataplaneError, UsageError
from dataplane.registry import change, open_registry
from dataplane.registry.reserve import parse_reservation
from dataplane.registry.store import key
from tests.registry.test_races import Interleave

IN_USE = r"address 10\.40\.0\.2 is in use on n by a reservation of host h1"


@pytest.fixture
def other(registry_url):
    """A second connection to the same registry, as another host's agent has."""
    r = open_registry(registry_url)
    yield r
    r.close()


def claim(reg, ip: str, network: str = "n"):
    return reg.kv.get(key("ipam", network, ip))


def test_a_reservation_holds_its_address_against_every_other_writer(reg, other):
    reg.network_create("n", 400, "10.40.0.0/29")          # .1 is the gateway; .2-.6 are free
    l1, l2 = reg.kv.lease_grant(30), other.kv.lease_grant(30)
    assert reg.address_reserve("n", "h1", l1) == "10.40.0.2"
    with pytest.raises(Conflict, match=IN_USE):
        other.endpoint_create("a", "n", "h2", ip="10.40.0.2")
    with pytest.raises(Conflict, match=IN_USE):
        other.endpoint_create("a", "n", "h2", ip="10.40.0.2", reserved=True)   # not its host's
    with pytest.raises(Conflict, match=IN_USE):
        reg.endpoint_create("a", "n", "h1", ip="10.40.0.2")                   # not asked to take it over
    with pytest.raises(Conflict, match=IN_USE):
        other.address_reserve("n", "h2", l2, ip="10.40.0.2")
    assert other.endpoint_create("a", "n", "h2").ip == "10.40.0.3", "allocation skips it"
    assert other.address_reserve("n", "h2", l2) == "10.40.0.4"
    r = parse_reservation(claim(reg, "10.40.0.2").value)
    assert r.host == "h1" and abs(r.at - time.time()) < 60
    assert claim(reg, "10.40.0.2").lease == l1


def test_a_reservation_is_no_endpoint_and_no_bad_record(reg):
    reg.network_create("n", 400, "10.40.0.0/29")
    rev = reg.snapshot().rev
    reg.address_reserve("n", "h1", reg.kv.lease_grant(30))
    snap = reg.snapshot()
    assert snap.bad == [] and snap.endpoints == {}
    assert parse_reservation(snap.ipam["n/10.40.0.2"]).host == "h1"
    w = reg.watch(rev + 1)
    batch = next(b for b in w if b)
    w.close()
    ch = change(batch[0])
    assert (ch.kind, ch.name) == ("ipam", "n/10.40.0.2") and parse_reservation(ch.record).host == "h1"


@pytest.mark.parametrize("ip, msg", [("10.40.0.1", "gateway 10.40.0.1 are reserved"),
                                     ("10.40.0.7", "not a free host address"), ("10.41.0.2", "not a free host"),
                                     ("x", "bad endpoint address")])
def test_the_gateway_and_addresses_outside_the_subnet_are_refused(reg, ip, msg):
    reg.network_create("n", 400, "10.40.0.0/29")
    with pytest.raises(UsageError, match=msg):
        reg.address_reserve("n", "h1", reg.kv.lease_grant(30), ip=ip)
    assert reg.reservations() == []


def test_an_exhausted_subnet_says_so(reg):
    reg.network_create("n", 400, "10.40.0.0/29")
    lease = reg.kv.lease_grant(30)
    assert [reg.address_reserve("n", "h1", lease) for _ in range(5)] == [f"10.40.0.{i}" for i in range(2, 7)]
    with pytest.raises(Conflict, match=r"^no free address in 10\.40\.0\.0/29 \(network n\)$"):
        reg.address_reserve("n", "h1", lease)


def test_an_address_another_host_freed_is_found_past_a_stale_cache(reg, other):
    reg.network_create("n", 400, "10.40.0.0/29")
    lease = reg.kv.lease_grant(30)
    for _ in range(5):
        reg.address_reserve("n", "h1", lease)
    other.address_release("n", "10.40.0.4", "h1")    # h1's agent on another connection, say
    assert reg.address_reserve("n", "h1", lease) == "10.40.0.4"


def test_no_lease_no_reservation(reg):
    reg.network_create("n", 400, "10.40.0.0/29")
    with pytest.raises(DataplaneError, match="not registered"):
        reg.address_reserve("n", "h1", 0)


def test_concurrent_reservations_and_endpoints_of_two_hosts_never_share_an_address(registry_url):
    """Two hosts' agents (own connections) reserve and allocate at once."""
    setup = open_registry(registry_url)
    setup.network_create("n", 401, "10.41.0.0/24")
    got, errors = {}, []

    def host(tag):
        r = open_registry(registry_url)
        try:
            lease = r.kv.lease_grant(60)
            got[tag] = [r.address_reserve("n", tag, lease) if i % 3 else r.endpoint_create(f"{tag}{i}", "n", tag).ip
                        for i in range(45)]
        except Exception as e:  # reported below
            errors.append(e)
        finally:
            r.close()
    threads = [threading.Thread(target=host, args=(t,)) for t in ("h1", "h2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ips = got["h1"] + got["h2"]
    assert len(set(ips)) == 90
    snap = setup.snapshot()
    assert sorted(snap.ipam) == sorted(f"n/{ip}" for ip in ips)
    assert len(setup.reservations(host="h1")) == len(setup.reservations(host="h2")) == 30
    setup.close()


def test_the_reserving_hosts_endpoint_takes_the_reservation_over_and_off_the_lease(reg):
    reg.network_create("n", 400, "10.40.0.0/29")
    lease = reg.kv.lease_grant(30)
    ip = reg.address_reserve("n", "h1", lease)
    ep = reg.endpoint_create("a", "n", "h1", ip=ip, reserved=True)
    assert (ep.ip, claim(reg, ip).value, claim(reg, ip).lease) == (ip, b"a", 0)
    reg.kv.lease_revoke(lease)                       # the host dies: its endpoint's claim stays
    snap = reg.snapshot()
    assert snap.ipam == {f"n/{ip}": "a"} and snap.macs == {f"n/{ep.mac}": "a"} and list(snap.endpoints) == ["a"]
    assert reg.reservations() == []


def test_reserved_without_a_reservation_takes_a_free_address_as_ever(reg):
    reg.network_create("n", 400, "10.40.0.0/29")
    lease = reg.kv.lease_grant(30)
    ip = reg.address_reserve("n", "h1", lease)
    reg.kv.lease_revoke(lease)                       # lapsed before the endpoint came
    assert reg.endpoint_create("a", "n", "h1", ip=ip, reserved=True).ip == ip


def test_a_release_frees_only_its_hosts_reservation(reg, other):
    reg.network_create("n", 400, "10.40.0.0/29")
    ip = reg.address_reserve("n", "h1", reg.kv.lease_grant(30))
    assert other.address_release("n", ip, "h2") is False, "another host's reservation is not ours"
    assert reg.address_release("n", ip, "h1") is True
    assert claim(reg, ip) is None
    assert reg.address_release("n", ip, "h1") is False, "released twice: nothing to do"
    assert other.address_reserve("n", "h2", other.kv.lease_grant(30)) == ip, "free again"


def test_a_release_never_deletes_an_endpoints_claim(reg):
    reg.network_create("n", 400, "10.40.0.0/29")
    lease = reg.kv.lease_grant(30)
    ip = reg.address_reserve("n", "h1", lease)
    reg.endpoint_create("a", "n", "h1", ip=ip, reserved=True)
    assert reg.address_release("n", ip, "h1") is False
    assert claim(reg, ip).value == b"a" and reg.endpoint("a").ip == ip
    plain = reg.endpoint_create("b", "n", "h1")
    assert reg.address_release("n", plain.ip, "h1") is False and claim(reg, plain.ip).value == b"b"


def test_dockers_order_reserve_create_delete_release(reg, other):
    """RequestAddress, CreateEndpoint, DeleteEndpoint, ReleaseAddress: between the
    last two the address is still the engine's, held as a reservation again."""
    reg.network_create("n", 400, "10.40.0.0/29")
    lease = reg.kv.lease_grant(30)
    ip = reg.address_reserve("n", "h1", lease)
    ep = reg.endpoint_create("a", "n", "h1", ip=ip, reserved=True)
    assert reg.endpoint_rm("a", reserve=("h1", lease)) == ep
    assert parse_reservation(claim(reg, ip).value).host == "h1" and claim(reg, ip).lease == lease
    assert reg.kv.get(key("endpoints", "a")) is None and reg.kv.get(key("macs", "n", ep.mac)) is None
    assert other.address_reserve("n", "h2", other.kv.lease_grant(30)) != ip, "still held"
    assert reg.address_release("n", ip, "h1") is True and claim(reg, ip) is None


def test_a_dead_hosts_reservations_go_with_its_lease(reg, other):
    reg.network_create("n", 400, "10.40.0.0/29")
    short, revoked = reg.kv.lease_grant(2), reg.kv.lease_grant(30)
    assert [reg.address_reserve("n", "h1", short) for _ in range(2)] == ["10.40.0.2", "10.40.0.3"]
    assert reg.address_reserve("n", "h3", revoked) == "10.40.0.4"
    reg.kv.lease_revoke(revoked)                     # `dataplane down`: the agent leaves
    assert [r["host"] for r in reg.reservations()] == ["h1", "h1"]
    deadline = time.monotonic() + 10                 # h1 stops renewing: gone within its TTL
    while reg.reservations() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert reg.reservations() == []
    assert other.address_reserve("n", "h2", other.kv.lease_grant(30)) == "10.40.0.2"


def test_reservations_are_listed_and_dropped_per_host_and_network(reg):
    reg.network_create("n", 400, "10.40.0.0/29")
    reg.network_create("m", 402, "10.42.0.0/29")
    l1, l2 = reg.kv.lease_grant(30), reg.kv.lease_grant(30)
    reg.address_reserve("n", "h1", l1)
    reg.address_reserve("n", "h2", l2)
    reg.address_reserve("m", "h1", l1)
    reg.endpoint_create("a", "n", "h1")
    assert [(r["network"], r["ip"]) for r in reg.reservations(host="h1")] == [("m", "10.42.0.2"), ("n", "10.40.0.2")]
    assert reg.reservations_drop("n", "h1") == 1
    assert [(r["network"], r["host"]) for r in reg.reservations()] == [("m", "h1"), ("n", "h2")]
    assert reg.endpoint("a").network == "n"
    assert reg.reservation("n", "10.40.0.3").host == "h2" and reg.reservation("n", "10.40.0.4") is None


@pytest.mark.parametrize("lose", ["applied", "dropped"])
@pytest.mark.parametrize("given", [None, "10.40.0.5"], ids=["auto", "given"])
def test_a_reservation_retried_after_a_lost_reply_is_made_once(reg, lose, given):
    reg.network_create("n", 400, "10.40.0.0/29")
    lease = reg.kv.lease_grant(30)
    reg.kv = Interleave(reg.kv, lose=lose)
    ip = reg.address_reserve("n", "h1", lease, ip=given)
    assert reg.kv.commits == (1 if lose == "applied" else 2)   # applied: the retry finds it, commits nothing
    assert ip == (given or "10.40.0.2")
    assert [r["ip"] for r in reg.reservations()] == [ip]


def test_a_reservation_and_an_endpoint_racing_for_one_address_never_both_win(reg, other):
    reg.network_create("n", 400, "10.40.0.0/29")
    reg.kv = Interleave(reg.kv, before=lambda: other.endpoint_create("a", "n", "h2", ip="10.40.0.2"))
    with pytest.raises(Conflict, match=r"address 10\.40\.0\.2 is in use on n by a$"):
        reg.address_reserve("n", "h1", reg.kv.lease_grant(30), ip="10.40.0.2")
    assert claim(reg, "10.40.0.2").value == b"a"


def test_a_release_whose_reply_was_lost_says_it_released(reg, monkeypatch):
    """The delete applied and its reply was lost: the retry read nothing there and answered
    "nothing to release", so forget-host undercounted what it released."""
    from dataplane.registry.kv import Unavailable
    reg.network_create("n", 340, subnet="10.40.0.0/24")
    lease = reg.kv.lease_grant(60)
    ip = reg.address_reserve("n", "h1", lease)
    real, lost = reg.kv.commit, []

    def commit(txn):
        out = real(txn)
        if not lost:
            lost.append(txn)
            raise Unavailable("the reply was lost")
        return out
    monkeypatch.setattr(reg.kv, "commit", commit)
    assert reg.address_release("n", ip, "h1") is True
    assert claim(reg, ip) is None


def test_a_release_whose_compare_failed_tries_again(reg, monkeypatch):
    """The claim changed between the read and the delete (its compare failed): read again and
    released. 6bfb306 counted such a failure in a name it never set (a NameError)."""
    reg.network_create("n", 341, subnet="10.41.0.0/24")
    ip = reg.address_reserve("n", "h1", reg.kv.lease_grant(60))
    real, failed = reg.kv.commit, []

    def commit(txn):
        if not failed:
            failed.append(txn)
            return False, 0                      # as if another writer touched the claim first
        return real(txn)
    monkeypatch.setattr(reg.kv, "commit", commit)
    assert reg.address_release("n", ip, "h1") is True
    assert claim(reg, ip) is None and failed
