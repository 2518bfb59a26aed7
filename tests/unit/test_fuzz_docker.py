"""The Docker remote driver (runtimes/docker.py) and IPAM driver
(runtimes/docker_ipam.py) fuzzed through their HTTP handler on a socket pair,
with a recording fake at its door to the agent (fake_agent.py): request
lines, headers and Content-Length of any shape, bodies of any bytes or JSON,
and valid libnetwork requests with one or two fields twisted. Nothing escapes
the handler; every request gets an HTTP error or a JSON object (the network
driver's at 200, the IPAM's failures at 4xx/5xx); a request answered with
{"Err": ...} leaves no network, endpoint, reservation or network-id mapping
behind; and a request whose ids are not strings asks the agent for nothing."""

from __future__ import annotations

import ipaddress
import json
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.registry.records import Network
from dataplane.runtimes import docker, docker_ipam, docker_server
from tests.unit.conversation import converse
from tests.unit.fake_agent import FakeAgent
from tests.unit.fuzz_strategies import FUZZ, RAW, as_bytes, json_values, mutated

NID, NID2 = "a1" * 32, "b2" * 32
EID, EID2 = "0123456789abcdef" * 4, "fedcba9876543210" * 4
MAPPED = {NID: {"vni": 300, "subnet": "10.3.0.0/24", "name": "vni300", "created": True, "ipam": True}}
POOL = "10.3.0.0/24"
JOINED = {"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/var/run/docker/netns/1", "Options": {}}
GOOD = {
    "/NetworkDriver.CreateNetwork": {"NetworkID": NID2, "Options": {docker.GENERIC: {"vni": "301"}},
                                     "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.31.0.0/24",
                                                   "Gateway": "10.31.0.1/24"}], "IPv6Data": []},
    "/NetworkDriver.CreateEndpoint": {"NetworkID": NID, "EndpointID": EID2, "Options": {},
                                      "Interface": {"Address": "10.3.0.5/24", "AddressIPv6": "", "MacAddress": ""}},
    "/NetworkDriver.DeleteNetwork": {"NetworkID": NID},
    "/NetworkDriver.DeleteEndpoint": {"NetworkID": NID, "EndpointID": EID},
    "/NetworkDriver.EndpointOperInfo": {"NetworkID": NID, "EndpointID": EID},
    "/NetworkDriver.Join": JOINED, "/NetworkDriver.Leave": {"NetworkID": NID, "EndpointID": EID},
    "/Plugin.Activate": {}, "/NetworkDriver.GetCapabilities": {}, "/NetworkDriver.DiscoverNew": {},
    "/IpamDriver.RequestPool": {"AddressSpace": "dataplane", "Pool": "10.31.0.0/24", "SubPool": "",
                                "Options": {"vni": "301"}, "V6": False},
    "/IpamDriver.RequestAddress": {"PoolID": POOL, "Address": "", "Options": {}},
    "/IpamDriver.ReleaseAddress": {"PoolID": POOL, "Address": "10.3.0.7"},
    "/IpamDriver.ReleasePool": {"PoolID": POOL},
    "/IpamDriver.GetCapabilities": {}, "/IpamDriver.GetDefaultAddressSpaces": {},
}
IPAM_FAILURES = {400, 404, 409, 500}       # the IPAM's {"Err": ...} replies (Docker reads no Err at 200 there)
# The operations that create, most often; then the rest, and paths the driver does not serve.
PATHS = (["/NetworkDriver.CreateNetwork", "/NetworkDriver.CreateEndpoint"] * 5 + ["/NetworkDriver.Join"] * 2
         + ["/IpamDriver.RequestAddress", "/IpamDriver.RequestPool"] * 3
         + sorted(GOOD) + ["/NetworkDriver.Nope", "/IpamDriver.Nope", "/", "*", "/Plugin.Activate/../x"])
READS = {"/NetworkDriver.CreateNetwork": ("NetworkID",), "/NetworkDriver.DeleteNetwork": ("NetworkID",),
         "/NetworkDriver.CreateEndpoint": ("NetworkID", "EndpointID"), "/NetworkDriver.DeleteEndpoint": ("EndpointID",),
         "/NetworkDriver.EndpointOperInfo": ("EndpointID",), "/NetworkDriver.Join": ("EndpointID",),
         "/NetworkDriver.Leave": ("EndpointID",), "/IpamDriver.RequestAddress": ("PoolID",),
         "/IpamDriver.ReleaseAddress": ("PoolID",), "/IpamDriver.ReleasePool": ("PoolID",)}
ERRORS = {400, 404, 408, 413, 414, 431, 501, 505}       # what send_error may answer before the body is read


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One driver, reset before each example: its network map holds NID (VNI 300) and
    the fake agent has that network and an endpoint for EID on it."""
    mp = pytest.MonkeyPatch()
    mp.setattr(docker.state, "LIB_ROOT", str(tmp_path_factory.mktemp("lib")))   # never the host's own
    d = docker.Driver("h1")
    w = SimpleNamespace(driver=d, server=SimpleNamespace(routes=d.routes()), agent=None)
    mp.setattr(docker, "client", SimpleNamespace(call=lambda *a, **kw: w.agent.call(*a, **kw)))
    mp.setattr(docker_server._Handler, "log_message", lambda self, *a: None)
    yield w
    mp.undo()


def reset(w) -> None:
    w.driver._save(json.loads(json.dumps(MAPPED)))
    w.agent = FakeAgent(networks=[Network.make("vni300", 300, "10.3.0.0/24")],
                        endpoints=[{"name": docker.endpoint_id(EID), "vni": 300, "ip": "10.3.0.2",
                                    "mac": "02:42:0a:03:00:02", "host_ifname": "dp0",
                                    "sandbox": {"peer": docker.peer_ifname(EID), "runtime": "docker",
                                                "network": NID, "endpoint_id": EID}}])


def exchange(w, raw: bytes) -> list[tuple[int, bytes]]:
    """Run the driver's handler on raw (the client then hangs up): [(status, body)]."""
    # reset_ok: it hung up on bytes it did not read, having answered first
    out = converse(lambda sock: docker_server._Handler(sock, "docker", w.server), raw, reset_ok=True)
    return responses(out)


def responses(out: bytes) -> list[tuple[int, bytes]]:
    got = []
    while out:
        if not out.startswith(b"HTTP/1."):          # the answer to an HTTP/0.9 request line: a body only
            return got + [(None, out)]
        head, sep, out = out.partition(b"\r\n\r\n")
        assert sep, head[:200]
        status_line, *headers = head.split(b"\r\n")
        status = int(status_line.split()[1])
        n = int(dict(h.split(b": ", 1) for h in headers).get(b"Content-Length", 0 if status < 200 else None))
        if status >= 200:                          # not "100 Continue"
            got.append((status, out[:n]))
        out = out[n:]
    return got


def http(method: str, path: str, version: str, headers: list[str], body: bytes) -> bytes:
    return (f"{method} {path} {version}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode("latin-1") + body


def post(path: str, body: bytes, headers=("Host: docker",)) -> bytes:
    return http("POST", path, "HTTP/1.1", [*headers, f"Content-Length: {len(body)}"], body)


@settings(FUZZ, max_examples=500)
@given(path=st.sampled_from(PATHS), data=st.data())
def test_a_request_is_answered_and_a_refused_one_leaves_nothing(world, path, data):
    good = mutated(GOOD.get(path, {}))
    body = data.draw(st.one_of(good.map(lambda d: json.dumps(d).encode()), good.map(lambda d: json.dumps(d).encode()),
                               good.map(lambda d: json.dumps(d).encode()), as_bytes(good), as_bytes(json_values)))
    reset(world)
    before, mapped = world.agent.created(), world.driver._load()
    [(status, answer)] = exchange(world, post(path, body))
    reply = json.loads(answer)
    assert isinstance(reply, dict)
    if len(body) > docker_server.MAX_BODY:
        assert status == 413
    elif path.startswith("/IpamDriver.") and "Err" in reply:
        assert status in IPAM_FAILURES
    else:
        assert status == 200
    try:
        req = json.loads(body)
    except (ValueError, RecursionError):
        req = None
    if "Err" in reply:
        assert isinstance(reply["Err"], str) and reply["Err"]
        assert world.agent.created() == before, "a refused request left a network or an endpoint behind"
        if path != "/NetworkDriver.DeleteNetwork":
            assert world.driver._load() == mapped, "a refused request changed the network map"
    if isinstance(req, dict) and any(not isinstance(req.get(f, ""), str) for f in READS.get(path, ())):
        assert "Err" in reply and not [c for c in world.agent.calls if c[0] != "endpoint_local"], world.agent.calls
    elif "Err" in reply:
        pass
    elif path == "/NetworkDriver.CreateNetwork":
        assert req["NetworkID"] in world.driver._load()
    elif path == "/NetworkDriver.CreateEndpoint":
        assert docker.endpoint_id(req["EndpointID"]) in world.agent.endpoints
        assert reply == {} or isinstance(reply["Interface"]["MacAddress"], str)
    elif path == "/NetworkDriver.Join":
        assert isinstance(reply["InterfaceName"]["SrcName"], str)
    elif path == "/IpamDriver.RequestAddress":
        addr = ipaddress.IPv4Interface(reply["Address"])
        gateway = (req.get("Options") or {}).get(docker_ipam.ADDRESS_TYPE) == docker_ipam.GATEWAY
        assert gateway or (300, str(addr.ip)) in world.agent.reserved or any(
            v != 300 and a == str(addr.ip) for v, a in world.agent.reserved), "an address given is reserved"
    elif path == "/IpamDriver.RequestPool":
        assert isinstance(reply["PoolID"], str) and ipaddress.IPv4Network(reply["Pool"])


lengths = st.sampled_from(["", "-1", "+2", " 2", "2 ", "0x10", "²", "¹³", "1" * 5000, "0" * 5000 + "2",
                           "0" * 30 + "2", "1048577", "99999999999999999999", "3", "0"])
junk_header = st.one_of(st.sampled_from(["Content-Type: application/json", "Connection: close", "Expect: 100-continue",
                                         "Connection: keep-alive", "Transfer-Encoding: chunked", ": x", "X",
                                         "a" * 70000, "Content-Length: 1", "Content-Length: -1"]),
                        st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=30),
                        st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
                                min_size=1, max_size=10).map(lambda k: f"X-{k}: v"))
request_line = st.tuples(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "BREW", "POST\x00", ""]),
                         st.sampled_from(PATHS + ["", "/x y", "/\xff"]),
                         st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1.1", "HTTP/a"]))


@st.composite
def framed(draw):
    """One request of the connection: its request line, headers and Content-Length, any of them wrong."""
    (method, path, version) = draw(request_line)
    body = draw(st.one_of(mutated(GOOD.get(path, {})).map(lambda d: json.dumps(d).encode()),
                          st.sampled_from(RAW[:16]), st.binary(max_size=20)))
    length = draw(st.one_of(st.just(str(len(body))), lengths))
    headers = draw(st.lists(junk_header, max_size=2)) + ([f"Content-Length: {length}"] if draw(st.booleans()) else [])
    return http(method, path, version, draw(st.permutations(headers)), body)


@FUZZ
@given(parts=st.lists(framed(), min_size=1, max_size=3), noise=st.binary(max_size=40))
def test_any_bytes_on_the_connection_are_answered_without_an_exception(world, parts, noise):
    reset(world)
    before = world.agent.created()
    answers = exchange(world, b"".join(parts) + noise)
    for status, data in answers:
        assert status in (200, *IPAM_FAILURES) and replied(data) or status in ERRORS | {None}, (status, data[:200])
    if not any(replied(data) for _, data in answers):      # refused before any handler ran
        assert world.agent.calls == [] and world.agent.created() == before


def replied(data: bytes) -> bool:
    """A handler's JSON reply (not send_error's page)."""
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:
        return False


@pytest.mark.parametrize("path,body", [
    ("/NetworkDriver.CreateNetwork", {**GOOD["/NetworkDriver.CreateNetwork"], "NetworkID": [NID2]}),
    ("/NetworkDriver.CreateEndpoint", {**GOOD["/NetworkDriver.CreateEndpoint"], "EndpointID": [EID2]}),
    ("/NetworkDriver.CreateEndpoint", {**GOOD["/NetworkDriver.CreateEndpoint"], "EndpointID": 5}),
    ("/IpamDriver.RequestAddress", {**GOOD["/IpamDriver.RequestAddress"], "PoolID": [POOL]}),
    ("/IpamDriver.ReleaseAddress", {**GOOD["/IpamDriver.ReleaseAddress"], "PoolID": {"x": 1}}),
])
def test_an_id_that_is_no_string_asks_the_agent_nothing(world, path, body):
    """Found by the fuzzing above: the network was created, then the id failed as a dict key (or in a
    string concatenation) and Docker was told the request failed."""
    reset(world)
    [(status, answer)] = exchange(world, post(path, json.dumps(body).encode()))
    assert "Err" in json.loads(answer) and world.agent.calls == []


@pytest.mark.parametrize("length,status", [("²", 400), ("¹³", 400), ("1" * 5000, 413), ("0" * 5000 + "2", 200)])
def test_a_content_length_int_cannot_read_is_answered_not_a_dropped_connection(world, length, status):
    """str.isdigit() takes "²" (byte 0xb2) and 5000 digits; int() raised ValueError out of do_POST."""
    reset(world)
    raw = http("POST", "/Plugin.Activate", "HTTP/1.1", [f"Content-Length: {length}"], b"{}")
    assert [s for s, _ in exchange(world, raw)] == [status]
