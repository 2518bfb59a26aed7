"""A view loaded without the IPAM claims (an agent's cold start: Registry.snapshot(claims=False)).

Until the claims are read, the records claim for themselves (view.provisional_claims):
a MAC or an address one record claims is installed as the claims would have it, one two
records claim is installed for neither. load_claims() then puts the claims read in place,
keeping what the watch's events wrote after the read's revision, and the verdicts are
the claims' again.
"""

from __future__ import annotations

import dataclasses

import pytest

from dataplane.agent.reconcile import desired
from dataplane.agent.view import CLASH, RegistryView, provisional_claims
from dataplane.registry import Snapshot
from dataplane.registry.kv import Event
from dataplane.registry.store import key
from tests.unit.test_reconcile import BLUE, H1, H2, H3, RED, WEB1, WEB2, ep, facts

TWIN = dataclasses.replace(ep("twin", BLUE, "h3", 13), mac=WEB1.mac)     # WEB1's MAC, its own address
HOSTS = {h.name: h for h in (H1, H2, H3)}


def pending(*endpoints, rev=10) -> RegistryView:
    """A view loaded from a snapshot of these records, read without the claims."""
    v = RegistryView()
    v.load(Snapshot(rev=rev, networks={n.name: n for n in (BLUE, RED)}, hosts=dict(HOSTS),
                    endpoints={e.id: e for e in endpoints}, claims_read=False))
    return v


def claims_of(*endpoints, rev=10, **extra) -> Snapshot:
    """The claims as the registry holds them at rev: each endpoint's two, then extra ("kind/name": id)."""
    s = Snapshot(rev=rev)
    for e in endpoints:
        s.macs[f"{e.network}/{e.mac}"] = e.id
        s.ipam[f"{e.network}/{e.ip}"] = e.id
    for k, v in extra.items():
        kind, _, name = k.partition("/")
        getattr(s, kind)[name] = v
    return s


def claim_event(kind: str, name: str, owner: str | None, rev: int) -> Event:
    return Event(key(kind, name), None if owner is None else owner.encode(), rev)


def test_the_records_claim_for_themselves_and_two_records_claim_for_neither():
    macs, ipam = provisional_claims({e.id: e for e in (WEB1, WEB2, TWIN)})
    assert macs == {f"blue/{WEB1.mac}": CLASH, f"blue/{WEB2.mac}": "web2"}
    assert ipam == {f"blue/{WEB1.ip}": "web1", f"blue/{WEB2.ip}": "web2", f"blue/{TWIN.ip}": "twin"}


def test_a_clash_is_installed_for_neither_until_the_claims_say_which():
    v = pending(WEB1, WEB2, TWIN)
    assert v.claims_pending
    got = desired(v, facts())
    assert got.entries[100].fdb == {WEB2.mac: H2.vtep}
    assert set(got.skipped) == {"web1", "twin"}
    assert all("not read yet" in why for why in got.skipped.values()), got.skipped
    v.load_claims(claims_of(WEB1, WEB2, **{f"ipam/blue/{TWIN.ip}": "twin"}))
    assert not v.claims_pending
    got = desired(v, facts())
    assert got.entries[100].fdb == {WEB1.mac: H2.vtep, WEB2.mac: H2.vtep}   # the MAC's claim names web1
    assert list(got.skipped) == ["twin"] and "not claimed in the IPAM" in got.skipped["twin"]


def test_a_record_its_claims_do_not_name_is_installed_only_until_they_are_read():
    v = pending(WEB1, WEB2)
    assert desired(v, facts()).entries[100].fdb == {WEB1.mac: H2.vtep, WEB2.mac: H2.vtep}
    v.load_claims(claims_of(WEB2, **{f"macs/blue/{WEB1.mac}": "gone"}))
    got = desired(v, facts())
    assert got.entries[100].fdb == {WEB2.mac: H2.vtep}
    assert "not claimed in the IPAM" in got.skipped["web1"]


def test_claims_written_after_the_read_keep_the_events_value_and_older_ones_take_the_reads():
    v = pending(WEB1, WEB2, rev=10)
    v.apply(claim_event("macs", f"blue/{WEB1.mac}", None, 11))        # before the read (at 12): the read's
    v.apply(claim_event("macs", f"blue/{WEB2.mac}", "other", 13))     # after the read: kept
    v.apply(claim_event("ipam", f"blue/{WEB2.ip}", None, 14))         # a deletion after the read: kept
    v.load_claims(claims_of(WEB1, WEB2, rev=12))
    assert v.macs == {f"blue/{WEB1.mac}": "web1", f"blue/{WEB2.mac}": "other"}
    assert v.ipam == {f"blue/{WEB1.ip}": "web1"}
    assert v.touched == {}


def test_claim_events_the_read_already_holds_are_not_applied_again_after_it():
    v = pending(WEB1, WEB2, rev=10)
    v.load_claims(claims_of(WEB1, WEB2, rev=14))
    assert v.apply(claim_event("macs", f"blue/{WEB1.mac}", "web9", 12)) == set()     # history before 14
    assert v.macs[f"blue/{WEB1.mac}"] == "web1"
    v.apply(claim_event("macs", f"blue/{WEB1.mac}", None, 15))                       # after it: applied
    assert f"blue/{WEB1.mac}" not in v.macs


def test_a_punts_lookup_ahead_of_the_watch_counts_at_its_claims_revision():
    """remember(): a punt looked web1 up by its MAC claim (mod revision 12). A claims read
    before 12 keeps the looked-up claim; the address claim, not read, is the read's."""
    v = pending(WEB2)
    v.remember(WEB1, H2, (key("macs", f"blue/{WEB1.mac}"), 12))
    v.load_claims(claims_of(WEB2, rev=11, **{f"ipam/blue/{WEB1.ip}": "web7"}))
    assert v.macs[f"blue/{WEB1.mac}"] == "web1" and v.ipam[f"blue/{WEB1.ip}"] == "web7"
    assert desired(v, facts()).entries[100].fdb == {WEB2.mac: H2.vtep}    # the address is web7's
    v = pending(WEB2)
    v.remember(WEB1, H2, (key("macs", f"blue/{WEB1.mac}"), 12))
    v.load_claims(claims_of(WEB2, rev=13, **{f"macs/blue/{WEB1.mac}": "web8"}))   # changed since
    assert v.macs[f"blue/{WEB1.mac}"] == "web8"


def test_claims_that_come_after_a_full_snapshot_are_dropped():
    """sync.load_claims: a resync (a snapshot with claims) came first; the read changes nothing."""
    import threading
    from types import SimpleNamespace

    from dataplane.agent import sync
    v = RegistryView()
    v.load(claims_of(WEB1, rev=20))
    ag = SimpleNamespace(lock=threading.Lock(), view=v, bad=[], counters={"bad_records": 0}, last_claims_s=0.1,
                         reconcile=lambda: pytest.fail("reconciled for claims that came too late"))
    sync.load_claims(ag, claims_of(WEB2, rev=15))
    assert v.macs == {f"blue/{WEB1.mac}": "web1"} and ag.counters["bad_records"] == 0


def test_a_view_loaded_with_its_claims_is_not_pending():
    v = RegistryView()
    v.load(claims_of(WEB1, rev=3))
    assert not v.claims_pending
    v.apply(claim_event("macs", f"blue/{WEB1.mac}", None, 4))
    assert v.touched == {} and v.macs == {}
