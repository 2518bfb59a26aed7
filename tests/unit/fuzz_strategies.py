"""Hypothesis strategies shared by the fuzz tests (tests/unit/test_fuzz_*.py).

JSON of any shape, the values that break careless parsers (1e400, NaN, huge
integers, lone surrogates, a trailing newline, deep nesting, bytes that are
not UTF-8), and valid inputs with one or two fields mutated, so that a case
gets past the first check instead of dying at it. Every fuzz test runs with
FUZZ: derandomized (CI sees the same cases every run) and no example database.
"""

from __future__ import annotations

import copy
import json

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

# Field names of the inputs under test, so that random objects often carry a key a parser reads.
FIELDS = ["op", "args", "id", "name", "vni", "subnet", "gateway", "mtu", "port", "network", "host", "vtep", "mac",
          "ip", "moving_to", "sandbox", "netns", "ifname", "peer", "prefixlen", "routes", "dst", "gw",
          "cniVersion", "type", "ipam", "prevResult", "node", "interfaces", "ips", "address", "interface",
          "dns", "code", "msg", "details", "NetworkID", "EndpointID", "Interface", "Address", "MacAddress",
          "AddressIPv6", "Options", "IPv4Data", "IPv6Data", "Pool", "com.docker.network.generic",
          "cni.dev/valid-attachments", "containerID"]

HOSTILE = [None, True, False, 0, -1, 1, 255, 256, 4789, 1 << 24, 1 << 32, 1 << 64, -(1 << 63), 10 ** 400,
           0.5, -0.0, 300.0, 1e400, -1e400, float("nan"), 1e-300,
           "", " ", "\n", "\x00", "\ud800", "\udcff", "é", "٣", "²", "x" * 300, "1e400", "0x12c", "-1",
           "10.0.0.1", "10.0.0.1\n", "10.0.0.0/24", "10.0.0.1/24", "::1", "02:42:0a:00:00:02",
           "02:42:0a:00:00:02\n", "01:00:5e:00:00:01", "a/b", "../x", ".", "..", "eth0\n", "/run/netns/x\x00",
           [], {}, [[[]]], {"": None}, [None], ["10.0.0.0/24"], {"Pool": "10.0.0.0/24"}]

_chars = st.characters(categories=["Lu", "Ll", "Nd", "No", "Pc", "Pd", "Po", "Zs", "Cc", "Cs", "So"])
text = st.one_of(st.text(_chars, max_size=12), st.sampled_from([h for h in HOSTILE if isinstance(h, str)]),
                 st.sampled_from(FIELDS))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(1 << 70), 1 << 70),
                    st.floats(allow_nan=True, allow_infinity=True), text,
                    st.sampled_from([h for h in HOSTILE if not isinstance(h, (list, dict))]))
keys = st.one_of(st.sampled_from(FIELDS), text)
json_values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                           st.dictionaries(keys, kids, max_size=4)),
                           max_leaves=16)


def deep(n: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ * n + close * n


RAW = [b"", b" ", b"\n", b"{", b"}", b"[]", b"null", b"1e400", b"-1e400", b"Infinity", b"-Infinity", b"NaN",
       b"9" * 5000, b"\xff\xfe\x00", b"\xef\xbb\xbf{}", b"{\"a\": 1, \"a\": 2}", b'"\\ud800"', b"{\"\\udcff\": 1}",
       deep(1000), deep(100000), deep(50000, b'{"a":', b"}"), deep(300)]


def encodings(value) -> st.SearchStrategy[bytes]:
    """Ways one JSON value goes on the wire: plain, NaN/Infinity tokens kept,
    raw non-ASCII (lone surrogates as bytes that are not UTF-8), UTF-16."""
    def plain():
        return json.dumps(value).encode()

    def raw():
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")

    def utf16():
        return json.dumps(value).encode("utf-16")
    return st.sampled_from([plain, raw, utf16]).map(lambda f: f())


def as_bytes(values: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    """JSON-ish bytes: mostly an encoded value, else one of RAW or noise."""
    encoded = values.flatmap(encodings)
    return st.one_of(encoded, encoded, encoded, st.sampled_from(RAW), st.binary(max_size=64))


def _places(doc, path=()):
    """Every (path, container-key) in doc: dict keys and list indexes, at any depth."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield path + (k,)
            yield from _places(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield path + (i,)
            yield from _places(v, path + (i,))


def _twists(v) -> list:
    """Values close to v that a parser may take for it."""
    out = [str(v), [v], {"": v}, None]
    if isinstance(v, str):
        out += [v + "\n", " " + v, v.upper(), v + "\x00", v + "\ud800", v * 40, v[:-1], "-" + v, v + "/33"]
    if isinstance(v, bool):
        out += [int(v), not v]
    elif isinstance(v, int):
        small = abs(v) < 1 << 1000                  # float() of a larger int overflows
        out += [v + 1, v - 1, -v, v << 32, float(v) if small else 1e400, v + 0.5 if small else 0.5,
                True, 0, 10 ** 400, 1e400, float("nan")]
    return out


@st.composite
def mutated(draw, base):
    """base, or base with one or two places replaced, twisted, deleted, or a key added."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(0, 2))):
        places = list(_places(doc))
        action = draw(st.sampled_from(["replace", "twist", "twist", "delete", "add"]))
        if not places or action == "add":
            target = doc
            if places and draw(st.booleans()):
                target = _get(doc, draw(st.sampled_from(places)))
            if isinstance(target, dict):
                target[draw(keys)] = copy.deepcopy(draw(json_values))
            elif isinstance(target, list):
                target.append(copy.deepcopy(draw(json_values)))
            continue
        path = draw(st.sampled_from(places))
        parent, k = _get(doc, path[:-1]), path[-1]
        if action == "delete":
            del parent[k]
        elif action == "twist":
            parent[k] = copy.deepcopy(draw(st.sampled_from(_twists(parent[k]))))
        else:
            # a copy: a shared constant (HOSTILE's containers) mutated later would change what
            # the same choices draw next time (hypothesis: FlakyStrategyDefinition)
            parent[k] = copy.deepcopy(draw(st.one_of(json_values, st.sampled_from(HOSTILE))))
    return doc


def _get(doc, path):
    for k in path:
        doc = doc[k]
    return doc
