"""A hostile or corrupt registry record never stops an agent: every way a
record or key can be wrong comes out of parsing as a UsageError (listed and
skipped), never as another exception that escapes the snapshot or the watch."""

from __future__ import annotations

import json

import pytest

from dataplane.core import model
from dataplane.core.errors import UsageError
from dataplane.registry.store import key, parse_item

NET = {"name": "n", "vni": 300, "subnet": "10.3.0.0/24", "gateway": "10.3.0.1", "mtu": 1450, "port": 4789}
HOSTILE = [
    ("networks", "n", json.dumps({**NET, "vni": 1e400}).encode(), "VNI 1e400 (JSON infinity)"),
    ("networks", "n", json.dumps({**NET, "mtu": 1e400}).encode(), "MTU 1e400"),
    ("networks", "n", json.dumps({**NET, "port": 1e400}).encode(), "port 1e400"),
    ("networks", "n", b'{"name": "n", "vni": Infinity, "subnet": "10.3.0.0/24", "gateway": "10.3.0.1", '
                      b'"mtu": 1450, "port": 4789}', "VNI Infinity"),
    ("networks", "n", json.dumps({**NET, "vni": float("nan")}).encode(), "VNI NaN"),
    ("networks", "n", json.dumps({**NET, "vni": 300.5}).encode(), "a fractional VNI"),
    ("networks", "n", json.dumps({**NET, "vni": True}).encode(), "a boolean VNI"),
    ("networks", "n", json.dumps({**NET, "vni": [300]}).encode(), "a list VNI"),
    ("networks", "n", json.dumps({**NET, "name": {"x": 1}}).encode(), "an object as a name"),
    ("hosts", "h", b"[" * 100000 + b"]" * 100000, "nesting 100,000 deep"),
    ("endpoints", "e", b"\xff\xfe not utf-8", "a value that is not UTF-8"),
    ("endpoints", "e", json.dumps({"id": "e", "network": "n", "host": "h", "mac": "02:42:0a:03:00:02",
                                   "ip": "10.3.0.2", "moving_to": 7}).encode(), "a number as moving_to"),
]


@pytest.mark.parametrize("kind,name,raw,what", HOSTILE, ids=[h[3] for h in HOSTILE])
def test_a_hostile_record_is_a_usage_error(kind, name, raw, what):
    with pytest.raises(UsageError):
        parse_item(key(kind, name), raw)


def test_a_key_that_is_not_utf8_is_a_usage_error():
    k = key("endpoints", b"e\xff".decode("utf-8", "surrogateescape"))
    with pytest.raises(UsageError):
        parse_item(k, b'{"id": "e"}')


@pytest.mark.parametrize("value", ["300", 300, "0x12c", 300.0])
def test_numbers_still_parse(value):
    assert model.parse_vni(value) == 300
