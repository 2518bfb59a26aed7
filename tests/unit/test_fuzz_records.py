"""Fuzzed registry records and the model's parse_* validators: whatever the
bytes or the JSON (1e400, NaN, huge integers, deep nesting, not UTF-8, lone
surrogates, wrong types, one field of a good record twisted), a parser either
refuses with UsageError (the documented error: parse_item's callers list the
record as bad and skip it) or returns a value that keeps every promise its
docstring makes. No other exception ever escapes."""

from __future__ import annotations

import ipaddress
import json
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dataplane.core import model
from dataplane.core.errors import UsageError
from dataplane.registry import records
from dataplane.registry.records import Endpoint, Host, Network
from dataplane.registry.store import key, parse_item
from tests.unit.fuzz_strategies import FUZZ, HOSTILE, as_bytes, json_values, mutated, text

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,30}")
ENDPOINT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAC = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2}")
IFNAME_BAD = re.compile(r"[/:\s]")

NET = {"name": "n1", "vni": 300, "subnet": "10.3.0.0/24", "gateway": "10.3.0.1", "mtu": 1450, "port": 4789}
HOST = {"name": "h1", "vtep": "198.18.0.1", "port": 4789}
EP = {"id": "web1", "network": "n1", "host": "h1", "mac": "02:42:0a:03:00:02", "ip": "10.3.0.2", "moving_to": "h2"}
GOOD = {"networks": (Network, NET), "hosts": (Host, HOST), "endpoints": (Endpoint, EP)}


def whole(v, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v <= hi


def unicast(s: str) -> bool:
    ip = ipaddress.IPv4Address(s)
    return str(ip) == s and not (ip.is_multicast or ip.is_unspecified or ip.is_loopback) and s != "255.255.255.255"


def assert_sound(rec) -> None:
    """Every field as the validators promise, and the record survives its own round trip."""
    if isinstance(rec, Network):
        net = ipaddress.IPv4Network(rec.subnet)
        assert NAME.fullmatch(rec.name) and whole(rec.vni, 1, model.VNI_MAX), rec
        assert str(net) == rec.subnet and net.prefixlen <= 30, rec
        assert unicast(rec.gateway) and ipaddress.IPv4Address(rec.gateway) in set(net.hosts()) | {net[1]}, rec
        assert whole(rec.mtu, 576, 9000 - model.ENCAP_LEN) and whole(rec.port, 1, 65535), rec
    elif isinstance(rec, Host):
        assert NAME.fullmatch(rec.name) and unicast(rec.vtep) and whole(rec.port, 1, 65535), rec
    else:
        assert ENDPOINT_ID.fullmatch(rec.id) and NAME.fullmatch(rec.network) and NAME.fullmatch(rec.host), rec
        assert MAC.fullmatch(rec.mac) and unicast(rec.ip), rec
        assert rec.moving_to is None or NAME.fullmatch(rec.moving_to), rec
    assert type(rec).from_json(rec.to_json()) == rec


kinds = st.sampled_from(["networks", "hosts", "endpoints", "macs", "ipam", "vnis", "netuse", "other", ""])
good_records = st.sampled_from(sorted(GOOD)).flatmap(lambda k: mutated(GOOD[k][1]))


@FUZZ
@given(kind=kinds, name=st.one_of(st.sampled_from(["n1", "h1", "web1"]), text),
       raw=st.one_of(as_bytes(good_records), as_bytes(good_records), as_bytes(json_values), st.none()))
def test_parse_item_refuses_with_usage_error_or_gives_a_sound_record(kind, name, raw):
    try:
        out = parse_item(key(kind, name), raw)
    except UsageError:
        return
    if out is None:
        assert kind not in GOOD and kind not in ("macs", "ipam")
        return
    k, n, rec = out
    assert (k, n) == (kind, name)
    if k in ("macs", "ipam"):
        assert rec is None or isinstance(rec, str)
    elif rec is not None:
        assert_sound(rec)
        assert (rec.id if k == "endpoints" else rec.name) == name


@FUZZ
@given(kind=st.sampled_from(sorted(GOOD)), data=st.data())
def test_from_json_refuses_with_usage_error_or_gives_a_sound_record(kind, data):
    cls, base = GOOD[kind]
    raw = data.draw(st.one_of(as_bytes(mutated(base)), as_bytes(mutated(base)), as_bytes(json_values)))
    try:
        rec = cls.from_json(raw)
    except UsageError:
        return
    assert_sound(rec)


@FUZZ
@example(ep={**EP, "mac": "02:42:0A:03:00:02"})       # the checked way lowers it: not canonical
@example(ep={**EP, "mac": "03:42:0a:03:00:02"})       # multicast
@example(ep={**EP, "mac": "00:00:00:00:00:00"})
@example(ep={**EP, "ip": "127.0.0.1"})
@example(ep={**EP, "ip": "224.0.0.1"})
@example(ep={**EP, "ip": "239.255.255.255"})
@example(ep={**EP, "ip": "0.0.0.0"})
@example(ep={**EP, "ip": "255.255.255.255"})
@example(ep={**EP, "ip": "010.3.0.2"})
@example(ep={**EP, "id": "a" * 64, "host": "b" * 31, "network": "c" * 31})
@example(ep={**EP, "id": "a" * 65})
@example(ep={**EP, "host": "b" * 32})
@example(ep={**EP, "moving_to": None})
@example(ep={**EP, "moving_to": "-h"})
@given(ep=mutated(EP))
def test_the_canonical_endpoint_reader_agrees_with_the_checked_one(ep):
    """Endpoint.from_json reads a record in to_json's exact form with one regular
    expression: whatever it accepts, the checked way accepts as the same record."""
    raw = json.dumps(ep, sort_keys=True).encode()
    fast = records.endpoint_canonical(raw)
    try:
        checked = Endpoint.from_json_checked(raw)
    except UsageError:
        assert fast is None, raw
        return
    assert fast is None or fast == checked, raw
    if fast is None and checked.to_json() == raw:
        pytest.fail(f"a canonical record took the slow way: {raw!r}")


def test_the_good_records_are_good():
    for cls, base in GOOD.values():
        assert_sound(cls.from_json(json.dumps(base).encode()))


# --- the model's validators, one promise each ---------------------------------

def _sound_sandbox(sb, out):
    assert out == sb and out is not sb
    ifname = sb.get("ifname") if "netns" in sb else sb["peer"]
    assert "netns" not in sb or sb["netns"].startswith("/") and "\x00" not in sb["netns"]
    assert _sound_ifname(ifname)


def _sound_ifname(v) -> bool:
    try:
        raw = v.encode()
    except UnicodeEncodeError:          # a lone surrogate: no netlink library can send it
        return False
    return 1 <= len(raw) <= 15 and not IFNAME_BAD.search(v) and "\x00" not in v and v not in (".", "..")


PROMISES = {
    "parse_vni": (model.parse_vni, lambda v, out: whole(out, 1, model.VNI_MAX)),
    "parse_port": (model.parse_port, lambda v, out: whole(out, 1, 65535)),
    "parse_int": (lambda v: model.parse_int(v, "n"),
                  lambda v, out: type(out) is int and (isinstance(v, str) or out == v)),
    "parse_age": (model.parse_age, lambda v, out: whole(out, 1, 86400) and (isinstance(v, str) or out == v)),
    "parse_ipv4": (model.parse_ipv4, lambda v, out: unicast(str(out))),
    "parse_subnet": (model.parse_subnet, lambda v, out: isinstance(out, ipaddress.IPv4Network) and out.prefixlen <= 30),
    "parse_mac": (model.parse_mac, lambda v, out: MAC.fullmatch(out) and out == v.lower()),
    "parse_name": (model.parse_name, lambda v, out: NAME.fullmatch(out) and out == v),
    "parse_endpoint_id": (records.parse_endpoint_id, lambda v, out: ENDPOINT_ID.fullmatch(out) and out == v),
    "parse_mtu": (records.parse_mtu, lambda v, out: whole(out, 576, 9000 - model.ENCAP_LEN)),
    "parse_ifname": (model.parse_ifname, lambda v, out: out == v and _sound_ifname(out)),
    "parse_sandbox": (model.parse_sandbox, lambda v, out: out is None and v is None or _sound_sandbox(v, out) is None),
}
SANDBOXES = [{"netns": "/run/netns/x", "ifname": "eth0"}, {"peer": "dkp0123"}]


@pytest.mark.parametrize("fn", sorted(PROMISES))
@FUZZ
@example(value="02:42:0a:03:00:02\n")      # $ matched before the newline: names, ids, MACs took one
@example(value=float("inf"))                 # parse_age: OverflowError
@example(value="é" * 8)                      # parse_ifname: 16 bytes, more than IFNAMSIZ holds
@example(value={"peer": "dkp0\udcff"})
@given(value=st.one_of(json_values, st.sampled_from(HOSTILE), st.sampled_from(SANDBOXES).flatmap(mutated),
                       st.sampled_from(["300", "0x12c", "4789", "1450", "10.3.0.2", "10.3.0.0/24", "02:42:0a:03:00:02",
                                        "web1", "eth0", "é" * 8, "\udcff", "3600"]).flatmap(
                           lambda s: st.sampled_from([s, s + "\n", " " + s, s + "\x00", s.upper(), s[:-1]]))))
def test_a_validator_refuses_with_usage_error_or_keeps_its_promise(fn, value):
    parse, promise = PROMISES[fn]
    try:
        out = parse(value)
    except UsageError:
        return
    assert promise(value, out), (value, out)


@FUZZ
@given(raw=as_bytes(json_values))
def test_model_loads_gives_strict_json_or_value_error(raw):
    try:
        value = model.loads(raw)
    except (ValueError, RecursionError):      # what json.loads raises too: its callers catch both
        return
    json.dumps(value, allow_nan=False)
