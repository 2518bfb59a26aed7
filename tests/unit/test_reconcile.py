"""reconcile.desired(): what the maps should hold, as a pure function of the
registry view and the node's own facts, checked on tables of cases; and
RegistryView.apply(): which VNIs a watch event makes dirty.

The world every case starts from: this node is h1; h2, h3 and h4 are live
hosts; networks blue (VNI 100) and red (VNI 200) on the node's UDP port.
"""

from __future__ import annotations

import builtins
import copy
import dataclasses
import os
import re
import socket
import subprocess
import time

import pytest

from dataplane.agent.reconcile import Desired, LocalFacts, VniEntries, desired
from dataplane.agent.view import RegistryView
from dataplane.core.errors import UsageError
from dataplane.registry.kv import Event
from dataplane.registry.records import Endpoint, Host, Network
from dataplane.registry.store import key

PORT = 4789
OTHER_PORT = 8472

ME = "h1"
H1 = Host(name="h1", vtep="192.0.2.1", port=PORT)
H2 = Host(name="h2", vtep="192.0.2.2", port=PORT)
H3 = Host(name="h3", vtep="192.0.2.3", port=PORT)
H4 = Host(name="h4", vtep="192.0.2.4", port=PORT)

BLUE = Network(name="blue", vni=100, subnet="10.0.100.0/24", gateway="10.0.100.1", mtu=1450, port=PORT)
RED = Network(name="red", vni=200, subnet="10.0.200.0/24", gateway="10.0.200.1", mtu=1450, port=PORT)
GREEN = Network(name="green", vni=300, subnet="10.0.30.0/24", gateway="10.0.30.1", mtu=1450, port=PORT)
GREY = Network(name="grey", vni=400, subnet="10.0.40.0/24", gateway="10.0.40.1", mtu=1450, port=OTHER_PORT)


def ep(id: str, net: Network, host: str, n: int) -> Endpoint:
    """Endpoint n of a network: MAC 02:00:00:00:<vni>:<n>, address <subnet>.<n>."""
    prefix = net.subnet.rsplit(".", 1)[0]
    return Endpoint(id=id, network=net.name, host=host, mac=f"02:00:00:00:{net.vni % 256:02x}:{n:02x}",
                    ip=f"{prefix}.{n}")


WEB1 = ep("web1", BLUE, "h2", 11)
WEB2 = ep("web2", BLUE, "h2", 12)
DB1 = ep("db1", RED, "h3", 21)
DB2 = ep("db2", RED, "h4", 22)
LOCAL_WEB = ep("web-local", BLUE, ME, 10)     # this node's own endpoint on blue


def claim(view: RegistryView, e: Endpoint) -> None:
    view.macs[f"{e.network}/{e.mac}"] = e.id
    view.ipam[f"{e.network}/{e.ip}"] = e.id


def world(*endpoints: Endpoint, networks=(BLUE, RED), hosts=(H1, H2, H3, H4)) -> RegistryView:
    """A view holding these records, every endpoint claimed in the IPAM."""
    v = RegistryView(rev=1, networks={n.name: n for n in networks}, hosts={h.name: h for h in hosts})
    for e in endpoints:
        v.endpoints[e.id] = e
        claim(v, e)
    return v


def facts(served=(100, 200), local=None, unroutable=(), port=PORT) -> LocalFacts:
    return LocalFacts(me=ME, port=port, served=frozenset(served), local=dict(local or {}),
                      unroutable=frozenset(unroutable))


def local_of(*endpoints: Endpoint) -> dict[int, list[tuple[str, str, str]]]:
    vni = {BLUE.name: BLUE.vni, RED.name: RED.vni}
    out: dict[int, list[tuple[str, str, str]]] = {}
    for e in endpoints:
        out.setdefault(vni[e.network], []).append((e.id, e.mac, e.ip))
    return out


def entries(*placed: tuple[Endpoint, Host], flood: list[Host]) -> VniEntries:
    """Expected entries: each endpoint's MAC at its host's VTEP, its address at its MAC."""
    return VniEntries(fdb={e.mac: h.vtep for e, h in placed}, neigh={e.ip: e.mac for e, h in placed},
                      flood=[h.vtep for h in flood])


# --- changes applied to the base world, as the watch would bring them -------------

def moved(e: Endpoint, host: str) -> Endpoint:
    return dataclasses.replace(e, host=host)


def without_endpoint(view: RegistryView, e: Endpoint) -> RegistryView:
    del view.endpoints[e.id]
    del view.macs[f"{e.network}/{e.mac}"]
    del view.ipam[f"{e.network}/{e.ip}"]
    return view


def without_host(view: RegistryView, h: Host) -> RegistryView:
    del view.hosts[h.name]
    return view


# --- entries ------------------------------------------------------------------------

ENTRY_CASES = [
    pytest.param(world(WEB1, WEB2), facts(), None,
                 {100: entries((WEB1, H2), (WEB2, H2), flood=[H2])},
                 id="two endpoints on another live host are reached through its VTEP, the only one flooded"),
    pytest.param(world(moved(WEB1, "h3")), facts(), None,
                 {100: entries((WEB1, H3), flood=[H3])},
                 id="an endpoint moved from h2 to h3 is reached through h3 and h2 leaves the flood list"),
    pytest.param(world(moved(WEB1, "h3"), WEB2), facts(), None,
                 {100: entries((WEB1, H3), (WEB2, H2), flood=[H2, H3])},
                 id="an endpoint moved from h2 to h3 while h2 keeps another in the VNI floods to both"),
    pytest.param(world(moved(WEB1, "h3"), ep("db9", RED, "h2", 29)), facts(), None,
                 {100: entries((WEB1, H3), flood=[H3])},
                 id="a moved endpoint's old host with endpoints only in another VNI is not flooded in this one"),
    pytest.param(without_endpoint(world(WEB1, moved(WEB2, "h3")), WEB1), facts(), None,
                 {100: entries((WEB2, H3), flood=[H3])},
                 id="a deleted endpoint leaves no entry and its VTEP leaves the flood list"),
    pytest.param(without_endpoint(world(WEB1), WEB1), facts(), None,
                 {100: VniEntries()},
                 id="the last endpoint of a VNI deleted leaves the VNI with no entries at all"),
    pytest.param(without_host(world(WEB1, WEB2, DB1), H2), facts(), None,
                 {100: VniEntries(), 200: entries((DB1, H3), flood=[H3])},
                 id="a dead host (no host record) gives no entries for its endpoints"),
    pytest.param(world(LOCAL_WEB, WEB1), facts(local=local_of(LOCAL_WEB)), None,
                 {100: entries((WEB1, H2), flood=[H2])},
                 id="an endpoint on this host gives no remote entry and this host is not flooded"),
    pytest.param(world(LOCAL_WEB), facts(), None,
                 {100: VniEntries()},
                 id="a registry endpoint naming this host gives no entry even before the node has it"),
    pytest.param(world(WEB1, DB1, DB2), facts(), None,
                 {100: entries((WEB1, H2), flood=[H2]), 200: entries((DB1, H3), (DB2, H4), flood=[H3, H4])},
                 id="each VNI gets only its own network's endpoints"),
]


@pytest.mark.parametrize("view,f,vnis,want", ENTRY_CASES)
def test_entries(view, f, vnis, want):
    got = desired(view, f, vnis)
    for vni, w in want.items():
        assert got.entries[vni] == w, f"VNI {vni}"
    assert got.skipped == {}
    assert got.errors == {}


# --- endpoints refused --------------------------------------------------------------

def unclaimed(e: Endpoint, macs="missing", ipam="keep") -> RegistryView:
    """A world with LOCAL_WEB, WEB2 and e, e's claims altered: "missing" or "other"."""
    v = world(LOCAL_WEB, WEB2, e)
    for table, k, how in ((v.macs, f"{e.network}/{e.mac}", macs), (v.ipam, f"{e.network}/{e.ip}", ipam)):
        if how == "missing":
            del table[k]
        elif how == "other":
            table[k] = WEB2.id
    return v


TWIN_MAC = dataclasses.replace(WEB1, id="web1-twin", ip="10.0.100.99")   # WEB1's MAC (world() after it: WEB1 claims it)
CLASH_MAC = dataclasses.replace(WEB1, mac=LOCAL_WEB.mac)
CLASH_IP = dataclasses.replace(WEB1, ip=LOCAL_WEB.ip)

SKIP_CASES = [
    pytest.param(world(LOCAL_WEB, CLASH_MAC, WEB2), CLASH_MAC, r"clashes with web-local",
                 entries((WEB2, H2), flood=[H2]),
                 id="an endpoint whose MAC is a local endpoint's is skipped as clashing with it"),
    pytest.param(world(LOCAL_WEB, CLASH_IP, WEB2), CLASH_IP, r"clashes with web-local",
                 entries((WEB2, H2), flood=[H2]),
                 id="an endpoint whose address is a local endpoint's is skipped as clashing with it"),
    pytest.param(unclaimed(WEB1, macs="missing"), WEB1, r"not claimed",
                 entries((WEB2, H2), flood=[H2]),
                 id="an endpoint whose MAC has no claim in the IPAM is skipped"),
    pytest.param(unclaimed(WEB1, macs="keep", ipam="missing"), WEB1, r"not claimed",
                 entries((WEB2, H2), flood=[H2]),
                 id="an endpoint whose address has no claim in the IPAM is skipped"),
    pytest.param(unclaimed(WEB1, macs="other"), WEB1, r"not claimed",
                 entries((WEB2, H2), flood=[H2]),
                 id="an endpoint whose MAC is claimed by another endpoint is skipped"),
    pytest.param(unclaimed(WEB1, macs="keep", ipam="other"), WEB1, r"not claimed",
                 entries((WEB2, H2), flood=[H2]),
                 id="an endpoint whose address is claimed by another endpoint is skipped"),
    pytest.param(world(LOCAL_WEB, TWIN_MAC, WEB1, WEB2), TWIN_MAC, r"not claimed in the IPAM",
                 entries((WEB1, H2), (WEB2, H2), flood=[H2]),
                 id="a second endpoint with a placed endpoint's MAC is skipped and the first keeps it"),
    pytest.param(world(LOCAL_WEB, moved(CLASH_MAC, "h3"), WEB2), CLASH_MAC, r"clashes with web-local",
                 entries((WEB2, H2), flood=[H2]),
                 id="a skipped endpoint's host is not flooded for it"),
]


@pytest.mark.parametrize("view,bad,why,want", SKIP_CASES)
def test_refused_endpoint_is_skipped_with_a_reason(view, bad, why, want):
    got = desired(view, facts(local=local_of(LOCAL_WEB)))
    assert set(got.skipped) == {bad.id}
    assert re.search(why, got.skipped[bad.id]), got.skipped[bad.id]
    assert got.entries[100] == want
    assert got.errors == {}


# --- VTEPs the uplink does not route ------------------------------------------------

def test_unroutable_peer_fails_only_its_vni():
    """h2 unroutable: blue, which has an endpoint there, is served in part and
    says why; red, computed in the same call, is complete."""
    view = world(WEB1, moved(WEB2, "h3"), DB1, DB2)
    got = desired(view, facts(unroutable={H2.vtep}))
    assert got.entries[100] == entries((WEB2, H3), flood=[H3])
    assert set(got.errors) == {100}
    assert H2.vtep in got.errors[100]
    assert got.entries[200] == entries((DB1, H3), (DB2, H4), flood=[H3, H4])
    assert got.skipped == {}


@pytest.mark.parametrize("unroutable,want_errors", [
    pytest.param({H4.vtep}, {200}, id="an unroutable VTEP fails only the VNIs that have endpoints behind it"),
    pytest.param({"198.51.100.7"}, set(), id="an unroutable VTEP with no endpoints fails no VNI"),
    pytest.param({H2.vtep, H4.vtep}, {100, 200}, id="two unroutable VTEPs each fail their own VNI"),
])
def test_unroutable_errors_name_the_vtep(unroutable, want_errors):
    got = desired(world(WEB1, DB1, DB2), facts(unroutable=unroutable))
    assert set(got.errors) == want_errors
    for vni in want_errors:
        assert any(v in got.errors[vni] for v in unroutable), got.errors[vni]
        assert all(vtep not in unroutable for vtep in got.entries[vni].flood)
        assert all(vtep not in unroutable for vtep in got.entries[vni].fdb.values())


# --- which VNIs to serve ------------------------------------------------------------

SERVE_CASES = [
    pytest.param(world(WEB1, networks=(BLUE, RED, GREEN)), facts(served={100, 200}),
                 {300: GREEN}, set(), {},
                 id="a registry network the node does not serve yet is to be served"),
    pytest.param(world(WEB1, networks=(BLUE, RED)), facts(served={100, 200}),
                 {}, set(), {},
                 id="networks already served are neither served again nor unserved"),
    pytest.param(world(WEB1, networks=(BLUE,)), facts(served={100, 200}),
                 {}, {200}, {},
                 id="a served VNI gone from the registry with no local endpoint is unserved"),
    pytest.param(world(WEB1, networks=(BLUE,)), facts(served={100, 200}, local={200: []}),
                 {}, {200}, {},
                 id="a served VNI gone from the registry with an empty local list is unserved"),
    pytest.param(world(WEB1, networks=(BLUE,)),
                 facts(served={100, 200}, local={200: [("db-local", "02:00:00:00:c8:05", "10.0.200.5")]}),
                 {}, set(), {},
                 id="a served VNI gone from the registry keeps being served while a local endpoint is on it"),
    pytest.param(world(WEB1, networks=(BLUE, RED, GREY)), facts(served={100, 200}),
                 {}, set(), {"grey": OTHER_PORT},
                 id="a network on another UDP port is not served and is listed with its port"),
]


@pytest.mark.parametrize("view,f,serve,unserve,other_port", SERVE_CASES)
def test_serve_and_unserve(view, f, serve, unserve, other_port):
    got = desired(view, f)
    assert got.serve == serve
    assert got.unserve == unserve
    assert got.other_port == other_port
    for vni in unserve:
        assert got.entries[vni] == VniEntries(), "an unserved VNI's remote entries are all to go"
    for vni in serve:
        assert vni in got.entries
    if other_port:
        assert GREY.vni not in got.entries and GREY.vni not in got.serve


def test_new_network_comes_with_its_entries():
    view = world(WEB1, ep("g1", GREEN, "h3", 5), networks=(BLUE, RED, GREEN))
    got = desired(view, facts(served={100, 200}))
    assert got.serve == {300: GREEN}
    assert got.entries[300] == entries((view.endpoints["g1"], H3), flood=[H3])


# --- scope --------------------------------------------------------------------------

@pytest.mark.parametrize("vnis,want", [
    pytest.param({100}, {100}, id="vnis of one VNI gives entries for that VNI only"),
    pytest.param({200}, {200}, id="vnis of the other VNI gives entries for it only"),
    pytest.param({100, 200}, {100, 200}, id="vnis of two VNIs gives both"),
    pytest.param(set(), set(), id="an empty vnis gives nothing"),
    pytest.param(None, {100, 200, 300}, id="no vnis gives every VNI the registry or the node knows"),
])
def test_scope(vnis, want):
    view = world(WEB1, DB1, DB2, networks=(BLUE, RED))
    got = desired(view, facts(served={100, 300}), vnis)
    assert set(got.entries) == want
    assert set(got.serve) == {200} & want
    assert got.unserve == {300} & want
    if 100 in want:
        assert got.entries[100] == entries((WEB1, H2), flood=[H2])
    if 200 in want:
        assert got.entries[200] == entries((DB1, H3), (DB2, H4), flood=[H3, H4])


def test_scope_leaves_out_other_vnis_skips_and_errors():
    view = world(LOCAL_WEB, CLASH_IP, DB1, DB2)
    got = desired(view, facts(local=local_of(LOCAL_WEB), unroutable={H3.vtep}), {100})
    assert set(got.entries) == {100}
    assert set(got.skipped) == {CLASH_IP.id}
    assert got.errors == {}, "red's unroutable h3 is out of scope"


# --- purity -------------------------------------------------------------------------

def busy_world() -> tuple[RegistryView, LocalFacts]:
    """Every kind of case at once: local, skipped, unroutable, serve, unserve, other port."""
    view = world(LOCAL_WEB, WEB1, moved(WEB2, "h3"), dataclasses.replace(CLASH_IP, id="dup"),
                 DB1, DB2, ep("g1", GREEN, "h4", 5), networks=(BLUE, RED, GREEN, GREY))
    del view.ipam[f"{WEB1.network}/{WEB1.ip}"]
    f = facts(served={100, 200, 500}, local=local_of(LOCAL_WEB), unroutable={H4.vtep})
    return view, f


def test_desired_is_deterministic_and_leaves_its_inputs_alone():
    view, f = busy_world()
    view_before, facts_before = copy.deepcopy(view), copy.deepcopy(f)
    first = desired(view, f)
    second = desired(view, f)
    assert first == second
    assert view == view_before
    assert f == facts_before
    # enough happened for the comparison to mean something
    assert first.serve and first.unserve and first.skipped and first.errors and first.other_port


def test_desired_does_not_depend_on_insertion_order():
    view, f = busy_world()
    reverse = copy.deepcopy(view)
    for table in ("networks", "hosts", "endpoints", "macs", "ipam"):
        setattr(reverse, table, dict(reversed(list(getattr(view, table).items()))))
    assert desired(reverse, f) == desired(view, f)


def test_desired_does_no_io(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("desired() did I/O or read the clock")

    view, f = busy_world()
    want = desired(view, f)
    with monkeypatch.context() as m:
        for mod, name in ((builtins, "open"), (os, "open"), (socket, "socket"), (subprocess, "Popen"),
                          (time, "time"), (time, "monotonic"), (time, "monotonic_ns"), (time, "sleep")):
            m.setattr(mod, name, refuse)
        got = desired(view, f)
    assert got == want


def test_desired_returns_a_desired():
    got = desired(RegistryView(), facts(served=()))
    assert got == Desired()


# --- RegistryView.apply -------------------------------------------------------------

class Ear:
    """Records the callbacks apply() makes."""

    def __init__(self):
        self.bad: list[tuple[str, str]] = []
        self.gone: list[Host] = []

    def on_bad(self, k, why):
        self.bad.append((k, why))

    def on_host_gone(self, h):
        self.gone.append(h)


def put(kind: str, name: str, rec, rev: int = 10) -> Event:
    return Event(key=key(kind, name), value=rec.to_json(), rev=rev)


def put_raw(kind: str, name: str, raw: bytes, rev: int = 10) -> Event:
    return Event(key=key(kind, name), value=raw, rev=rev)


def delete(kind: str, name: str, rev: int = 10) -> Event:
    return Event(key=key(kind, name), value=None, rev=rev)


def claim_event(table: str, net: Network, what: str, ep_id: str | None, rev: int = 10) -> Event:
    return Event(key=key(table, net.name, what), value=ep_id.encode() if ep_id else None, rev=rev)


APPLY_CASES = [
    pytest.param(put("endpoints", "web3", ep("web3", BLUE, "h3", 13)), {100},
                 id="a new endpoint dirties its network's VNI"),
    pytest.param(put("endpoints", "web1", moved(WEB1, "h3")), {100},
                 id="an endpoint moved to another host dirties its VNI"),
    pytest.param(put("endpoints", "web1", dataclasses.replace(WEB1, network="red", ip="10.0.200.11")), {100, 200},
                 id="an endpoint moved to another network dirties both VNIs"),
    pytest.param(delete("endpoints", "web1"), {100},
                 id="a deleted endpoint dirties its VNI"),
    pytest.param(delete("endpoints", "nobody"), set(),
                 id="deleting an endpoint never seen dirties nothing"),
    pytest.param(put("endpoints", "x1", ep("x1", GREEN, "h3", 5)), set(),
                 id="an endpoint of a network not in the view dirties nothing"),
    pytest.param(put("networks", "green", GREEN), {300},
                 id="a new network dirties its VNI"),
    pytest.param(delete("networks", "red"), {200},
                 id="a deleted network dirties its VNI"),
    pytest.param(put("hosts", "h4", H4), {200},
                 id="a host coming back dirties the VNIs of its endpoints"),
    pytest.param(put("hosts", "h9", Host(name="h9", vtep="192.0.2.9", port=PORT)), set(),
                 id="a new host with no endpoints dirties nothing"),
    pytest.param(delete("hosts", "h2"), {100},
                 id="a dead host dirties the VNIs of its endpoints"),
    pytest.param(claim_event("macs", BLUE, WEB1.mac, None), {100},
                 id="a MAC claim released dirties its endpoint's VNI"),
    pytest.param(claim_event("ipam", RED, "10.0.200.50", "db1"), {200},
                 id="an address claim taken dirties the claiming endpoint's VNI"),
    pytest.param(put_raw("vnis", "100", b"blue"), set(),
                 id="a key the agent does not mirror dirties nothing"),
]


def base_view() -> RegistryView:
    v = world(WEB1, WEB2, DB1, DB2)
    del v.hosts["h4"]                         # h4 is dead: DB2 waits for it
    return v


@pytest.mark.parametrize("ev,dirty", APPLY_CASES)
def test_apply_returns_dirty_vnis(ev, dirty):
    view, ear = base_view(), Ear()
    assert view.apply(ev, ear.on_bad, ear.on_host_gone) == dirty
    assert ear.bad == []
    assert view.rev == ev.rev


@pytest.mark.parametrize("ev,table,name,want", [
    pytest.param(put("endpoints", "web1", moved(WEB1, "h3")), "endpoints", "web1", moved(WEB1, "h3"),
                 id="a put replaces the record"),
    pytest.param(delete("endpoints", "web1"), "endpoints", "web1", None, id="a deletion removes the record"),
    pytest.param(put("hosts", "h4", H4), "hosts", "h4", H4, id="a host put adds it"),
    pytest.param(claim_event("macs", BLUE, WEB1.mac, "web2"), "macs", f"blue/{WEB1.mac}", "web2",
                 id="a claim put records the claiming endpoint id"),
    pytest.param(claim_event("ipam", BLUE, WEB1.ip, None), "ipam", f"blue/{WEB1.ip}", None,
                 id="a claim deletion removes it"),
])
def test_apply_updates_the_view(ev, table, name, want):
    view = base_view()
    view.apply(ev)
    assert getattr(view, table).get(name) == want


@pytest.mark.parametrize("ev,table,name,dirty", [
    pytest.param(put_raw("endpoints", "web1", b"not json"), "endpoints", "web1", {100},
                 id="an endpoint record that is not JSON is reported and treated as deleted"),
    pytest.param(put_raw("endpoints", "web1", b'{"id": "web1", "network": "blue"}'), "endpoints", "web1", {100},
                 id="an endpoint record missing fields is reported and treated as deleted"),
    pytest.param(put("endpoints", "web1", dataclasses.replace(WEB1, id="web7")), "endpoints", "web1", {100},
                 id="an endpoint record naming another id is reported and treated as deleted"),
    pytest.param(put_raw("endpoints", "web1", WEB1.to_json().replace(b"10.0.100.11", b"10.0.100.300")),
                 "endpoints", "web1", {100},
                 id="an endpoint record with a bad address is reported and treated as deleted"),
    pytest.param(put_raw("networks", "red", b"[]"), "networks", "red", {200},
                 id="a network record that is not an object is reported and treated as deleted"),
    pytest.param(put_raw("hosts", "h2", b'{"name": "h2", "vtep": "224.0.0.1", "port": 4789}'), "hosts", "h2", {100},
                 id="a host record with a multicast VTEP is reported and treated as deleted"),
    pytest.param(put_raw("endpoints", "nobody", b"{"), "endpoints", "nobody", set(),
                 id="a malformed record never seen before is reported and dirties nothing"),
])
def test_apply_malformed_record(ev, table, name, dirty):
    view, ear = base_view(), Ear()
    assert view.apply(ev, ear.on_bad, ear.on_host_gone) == dirty
    assert [k for k, _ in ear.bad] == [ev.key]
    assert ear.bad[0][1], "on_bad hears why"
    assert name not in getattr(view, table)
    assert view.rev == ev.rev


def test_apply_malformed_record_without_on_bad_is_quiet():
    view = base_view()
    assert view.apply(put_raw("endpoints", "web1", b"not json")) == {100}
    assert "web1" not in view.endpoints


def test_records_refuse_what_apply_must_treat_as_bad():
    """The validators apply() relies on: from_json refuses what the constructors would not check."""
    with pytest.raises(UsageError):
        Endpoint.from_json(b'{"id": "web1", "network": "blue", "host": "h2", "mac": "01:00:5e:00:00:01", '
                           b'"ip": "10.0.100.11"}')
    with pytest.raises(UsageError):
        Host.from_json(b'{"name": "h2", "vtep": "192.0.2.2"}')
    with pytest.raises(UsageError):
        Network.from_json(b'{"name": "blue", "vni": 0, "subnet": "10.0.100.0/24", "gateway": "10.0.100.1", '
                          b'"mtu": 1450, "port": 4789}')
    assert Endpoint.from_json(WEB1.to_json()) == WEB1
    assert Host.from_json(H2.to_json()) == H2
    assert Network.from_json(BLUE.to_json()) == BLUE


@pytest.mark.parametrize("ev,gone", [
    pytest.param(delete("hosts", "h2"), [H2], id="a host deleted (its lease expired) is reported gone"),
    pytest.param(put("hosts", "h2", dataclasses.replace(H2, vtep="192.0.2.22")), [H2],
                 id="a host whose VTEP changed is reported gone with its old record"),
    pytest.param(put("hosts", "h2", H2), [], id="a host put again with the same VTEP is not reported gone"),
    pytest.param(delete("hosts", "h4"), [], id="deleting a host not in the view reports nothing"),
    pytest.param(put("hosts", "h4", H4), [], id="a host coming up is not reported gone"),
])
def test_apply_host_gone(ev, gone):
    view, ear = base_view(), Ear()
    view.apply(ev, ear.on_bad, ear.on_host_gone)
    assert ear.gone == gone
    assert ear.bad == []


def test_apply_host_gone_then_desired_drops_its_entries():
    view, ear = base_view(), Ear()
    dirty = view.apply(delete("hosts", "h2"), ear.on_bad, ear.on_host_gone)
    got = desired(view, facts(), dirty)
    assert got.entries == {100: VniEntries()}


def test_apply_keeps_the_highest_revision():
    view = base_view()
    view.apply(put("hosts", "h4", H4, rev=20))
    view.apply(delete("hosts", "h9", rev=15))
    assert view.rev == 20
