"""The agent's API server (agent/server.py) fuzzed through its own request
handler on a socket pair: any bytes, any JSON, valid requests with one field
twisted, several lines on one connection. Every complete line gets exactly one
answer, an object {"ok": true, "result": ...} or {"ok": false, "error": str,
"code": int}; nothing escapes the handler; and a handler runs only for a
well-formed request whose arguments fit its signature and the JSON types of
its annotations (so a malformed request never reaches endpoint_add, the
handler here that creates)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataplane.agent import server as api_server
from dataplane.agent.client import MAX_LINE
from dataplane.core.errors import Conflict
from tests.unit.conversation import converse
from tests.unit.fuzz_strategies import FUZZ, RAW, as_bytes, json_values, keys, mutated

CALLS: list[tuple[str, dict]] = []


def ping() -> dict:
    CALLS.append(("ping", {}))
    return {"host": "h1"}


def endpoint_add(id: str, network: str | None = None, vni: int | str | None = None, ip: str | None = None,
                 mac=None) -> dict:
    CALLS.append(("endpoint_add", {"id": id, "network": network, "vni": vni, "ip": ip, "mac": mac}))
    return {"id": "created"}


def endpoint_rm(id) -> dict:
    CALLS.append(("endpoint_rm", {"id": id}))
    raise Conflict(f"endpoint {id!r} lives elsewhere")      # a handler's own DataplaneError


def status(verbose=False) -> dict:
    CALLS.append(("status", {"verbose": verbose}))
    return {"n": len(str(verbose)) + "x"}                    # the handler's bug: an internal error


HANDLERS = {"ping": ping, "endpoint_add": endpoint_add, "endpoint_rm": endpoint_rm, "status": status}
# Written out, not read with inspect: the oracle must not share the server's logic.
PARAMS = {"ping": (set(), set()), "endpoint_add": ({"id"}, {"network", "vni", "ip", "mac"}),
          "endpoint_rm": ({"id"}, set()), "status": (set(), {"verbose"})}
# The JSON types endpoint_add's annotations allow (agent/apitypes.py); mac has none: any value.
TYPES = {"id": lambda v: isinstance(v, str), "network": lambda v: v is None or isinstance(v, str),
         "vni": lambda v: v is None or isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)),
         "ip": lambda v: v is None or isinstance(v, str)}
DEFAULTS = {"endpoint_add": dict.fromkeys(PARAMS["endpoint_add"][1]), "status": {"verbose": False}}
GOOD = [{"op": "ping"}, {"op": "ping", "args": {}},
        {"op": "endpoint_add", "args": {"id": "web1", "vni": 300, "ip": "10.3.0.2"}},
        {"op": "endpoint_add", "args": {"id": "web1", "network": "n1", "mac": "02:42:0a:03:00:02"}},
        {"op": "endpoint_rm", "args": {"id": "web1"}}, {"op": "status", "args": {"verbose": True}}]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = api_server.Server(str(tmp_path_factory.mktemp("api") / "run" / "agent.sock"), HANDLERS)
    yield s
    s.server_close()


def expected_call(line: bytes):
    """(op, args) if this line is a request the agent must run, else None."""
    try:
        req = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(req, dict) or not isinstance(req.get("op"), str) or req["op"] not in PARAMS:
        return None
    args = req.get("args") or {}
    if not isinstance(args, dict):
        return None
    required, optional = PARAMS[req["op"]]
    if not required <= set(args) <= required | optional:
        return None
    if req["op"] == "endpoint_add" and not all(TYPES.get(k, lambda v: True)(v) for k, v in args.items()):
        return None
    return req["op"], args


def exchange(srv, payload: bytes) -> list:
    """Run the server's handler on payload (the client then hangs up); its answers."""
    out = converse(lambda sock: api_server._Handler(sock, "", srv), payload)
    assert out == b"" or out.endswith(b"\n"), out[-100:]
    return [json.loads(x) for x in out.splitlines()]


def lines_of(payload: bytes) -> list[bytes]:
    """As readline() cuts them: at b"\n" only; the last may be unterminated."""
    *done, rest = payload.split(b"\n")
    return [x + b"\n" for x in done] + ([rest] if rest else [])


requests = st.one_of(st.sampled_from(GOOD).flatmap(mutated),
                     st.fixed_dictionaries({"op": st.sampled_from(sorted(HANDLERS) + ["leave", ""])},
                                           optional={"args": st.dictionaries(keys, json_values, max_size=4)}),
                     json_values)
line = st.one_of(as_bytes(requests).map(lambda b: b.replace(b"\n", b" ") + b"\n"),
                 st.sampled_from(RAW).map(lambda b: b + b"\n"),
                 st.binary(max_size=40))


@FUZZ
@given(payload=st.lists(line, min_size=1, max_size=4).map(b"".join))
def test_every_line_is_answered_and_only_good_requests_run(srv, payload):
    CALLS.clear()
    replies = exchange(srv, payload)
    lines = lines_of(payload)
    # One answer per line; an unterminated last piece is answered too (as an error), then the connection ends.
    assert len(replies) == len(lines), (lines, replies)
    want = [expected_call(x) if x.endswith(b"\n") else None for x in lines]
    assert CALLS == [(op, {**DEFAULTS.get(op, {}), **args}) for op, args in filter(None, want)]
    for w, reply in zip(want, replies):
        assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
        if reply["ok"]:
            assert w is not None and w[0] in ("ping", "endpoint_add") and "result" in reply
        else:
            assert isinstance(reply["error"], str) and reply["error"] and type(reply["code"]) is int, reply
            assert reply["code"] == (4 if w and w[0] == "endpoint_rm" else 1 if w else 2), (w, reply)


@pytest.mark.parametrize("raw", [b"[" * 100000 + b"]" * 100000, b'{"op": ' * 60000 + b"1" + b"}" * 60000,
                                 b'{"op": "ping", "args": ' + b"[" * 200000 + b"]" * 200000 + b"}"])
def test_a_request_nested_too_deep_is_a_usage_error(srv, raw):
    CALLS.clear()
    assert len(raw) < MAX_LINE
    replies = exchange(srv, raw + b"\n" + json.dumps({"op": "ping"}).encode() + b"\n")
    assert replies[0]["ok"] is False and replies[0]["code"] == 2, replies
    assert replies[1]["ok"] is True and CALLS == [("ping", {})], "the connection goes on after it"
