"""The agent's local API has a typed schema (agent/apitypes.py, after VPP's papi): each
operation's parameters and their JSON types are its handler's annotations, checked before the
handler runs. Before, only the names were checked (`inspect.signature(...).bind`): a list for a
VNI or an object for an id reached the handler, and came back as its internal error ("failed:
TypeError", exit 1) or was taken as something else, not as the caller's usage error."""

from __future__ import annotations

import inspect

import pytest

from dataplane.agent import apitypes, ops, runtime_ops
from dataplane.agent import server as api_server


def handlers() -> dict:
    """The real operations, bound to no agent: nothing here may reach one."""
    return {**ops.Ops(None).handlers(), **runtime_ops.RuntimeOps(None).handlers()}


@pytest.fixture
def srv(tmp_path):
    s = api_server.Server(str(tmp_path / "run" / "agent.sock"), handlers())
    yield s
    s.server_close()


def test_every_parameter_of_every_operation_has_a_json_type():
    for op, fn in handlers().items():
        for name, p in apitypes.schema(fn).items():
            assert p.hint is not inspect.Parameter.empty, f"{op}: {name} has no type"
            apitypes.describe(p.hint)
            apitypes.fits(None, p.hint)          # raises for a type with no JSON form


@pytest.mark.parametrize("op,args,says", [
    ("endpoint_attach", {"id": "e1", "vni": [256], "sandbox": {"peer": "x"}}, "vni must be an integer or a string"),
    ("endpoint_attach", {"id": {"a": 1}, "vni": 256, "sandbox": None}, "id must be a string, not dict"),
    ("endpoint_attach", {"id": "e1", "vni": 256, "sandbox": "netns"}, "sandbox must be an object or null"),
    ("endpoint_attach", {"id": "e1", "vni": 256, "sandbox": None, "prefixlen": True}, "prefixlen must be"),
    ("endpoint_attach", {"id": "e1", "vni": 256, "sandbox": None, "routes": ["0.0.0.0/0"]},
     "routes must be a list of objects"),
    ("endpoint_detach", {"id": "e1", "keep_address": "yes"}, "keep_address must be a boolean"),
    ("endpoint_rm", {"id": 7}, "id must be a string, not int"),
    ("network_release", {}, "missing argument 'vni'"),
    ("ping", {"verbose": True}, "unknown argument 'verbose'"),
])
def test_a_wrong_type_is_the_callers_usage_error_and_never_runs(srv, op, args, says):
    r = srv.dispatch(op, args)
    assert r["ok"] is False and r["code"] == 2 and says in r["error"] and r["error"].startswith(op), r


def test_values_of_the_right_types_reach_the_handler(srv):
    """Past the check, a handler runs: here it meets no agent (None), its own internal error."""
    r = srv.dispatch("endpoint_rm", {"id": "e1"})
    assert r["ok"] is False and r["code"] == 1 and "AttributeError" in r["error"], r
    assert apitypes.fits(256, int | str) and apitypes.fits("256", int | str) and not apitypes.fits(True, int | str)
    assert apitypes.fits([{"dst": "0.0.0.0/0"}], list[dict]) and not apitypes.fits([1], list[dict])


def test_a_whole_number_sent_as_a_json_float_is_an_integer(srv):
    """JSON does not tell 1450 from 1450.0 (a CNI config's "mtu" may come either way), nor does
    model.parse_int: a review found the first schema refusing it."""
    assert apitypes.fits(1450.0, int | str | None) and not apitypes.fits(1450.5, int | str | None)
    r = srv.dispatch("network_ensure", {"vni": 256, "mtu": 1450.0})
    assert r["code"] == 1 and "AttributeError" in r["error"], "past the check (to no agent)"


def test_extra_keywords_and_types_with_no_json_form():
    def more(a: int, **rest: str) -> None:
        pass

    params = apitypes.schema(more)
    apitypes.check("more", params, {"a": 1, "b": "x"})
    with pytest.raises(Exception, match="b must be a string"):
        apitypes.check("more", params, {"a": 1, "b": 2})

    def odd(a: float) -> None:
        pass

    with pytest.raises(TypeError, match="no JSON form"):      # at the server's start, not at a request
        apitypes.schema(odd)
