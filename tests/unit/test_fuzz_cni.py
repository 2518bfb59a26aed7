"""The CNI plugin (runtimes/cni.py) fuzzed through run(env, stdin): network
configurations and prevResults of any shape, valid ones with a field or two
twisted, CNI_* variables twisted, and whatever the IPAM plugin prints. The
agent is the recording fake of fake_agent.py and the IPAM plugin a fake
subprocess.run; the parsing under test is the plugin's own.

run() never raises; its answer is the spec's: a result (ADD), nothing (DEL,
CHECK, STATUS, GC), or an error object {"cniVersion", "code": int, "msg":
str}, all printable as strict JSON. A failed ADD leaves no endpoint and no
address taken from the IPAM plugin, and input the spec calls invalid (network
name, container id, interface name, netns, vni, the shape of prevResult) asks
the agent to create or remove nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
from types import SimpleNamespace

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dataplane.registry.records import Network
from dataplane.runtimes import cni, cni_ipam
from tests.unit.fake_agent import FakeAgent
from tests.unit.fuzz_strategies import FUZZ, HOSTILE, as_bytes, json_values, mutated

CONF = {"cniVersion": "1.1.0", "name": "ov", "type": "dataplane", "vni": 256, "node": "h1"}
PREV = {"cniVersion": "1.1.0", "interfaces": [{"name": "dp1"}, {"name": "eth0", "sandbox": "/run/netns/x",
                                                                 "mac": "02:42:0a:01:00:05"}],
        "ips": [{"address": "10.1.0.5/24", "interface": 1, "gateway": "10.1.0.1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}], "dns": {"nameservers": ["10.1.0.1"]}}
CHAINED = {**PREV, "interfaces": [{"name": "br0"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
           "ips": [{"address": "10.1.0.6/24", "interface": 1, "gateway": "10.1.0.1"}]}    # an ADD after another plugin
CONFS = [CONF, {**CONF, "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}}, {**CONF, "prevResult": CHAINED},
         {**CONF, "cni.dev/valid-attachments": [{"containerID": "abc123", "ifname": "eth0"}]}]
IPAM_RESULT = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.7/24", "gateway": "10.1.0.1"}],
               "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}], "dns": {"nameservers": ["10.1.0.1"]}}
IPAM_ERROR = {"cniVersion": "1.0.0", "code": 11, "msg": "no addresses left", "details": "range full"}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0"}
ENV_TWISTS = {"CNI_CONTAINERID": ["", "-abc", "abc\n", "a b", "abc/../x", "x" * 300, "\udcff", "abc123", "new456"],
              "CNI_IFNAME": ["", "eth0\n", "a/b", ".", "..", "x" * 16, "é" * 8, "eth\udcff", "eth:0", "net1"],
              "CNI_NETNS": ["", "relative", "/run/netns/y", "/\udcff", "/run/netns/x\n"]}
COMMANDS = ["ADD"] * 8 + ["DEL", "DEL", "CHECK", "CHECK", "CHECK", "STATUS", "GC", "GC", "VERSION", "FROB", ""]
SPEC_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")      # the spec's pattern for network names and container ids
CREATES = ("network_ensure", "endpoint_attach", "endpoint_detach")
EXISTING = cni.endpoint_id("ov", "abc123", "eth0")


class FakeIpam:
    """subprocess.run for the IPAM plugin: ADD prints what the test drew, DEL and CHECK succeed."""
    TimeoutExpired = subprocess.TimeoutExpired

    def __init__(self, add: tuple[int, bytes]):
        self.add, self.calls = add, []

    def run(self, argv, input, env, capture_output, timeout):
        self.calls.append(env["CNI_COMMAND"])
        rc, out = self.add if env["CNI_COMMAND"] == "ADD" else (0, b"")
        return subprocess.CompletedProcess(argv, rc, out, b"")

    def leaked(self) -> bool:
        """An address handed out by a successful ADD and not given back."""
        taken = self.add[0] == 0 and "ADD" in self.calls
        return taken and "DEL" not in self.calls[self.calls.index("ADD"):]


@pytest.fixture(scope="module")
def plugins(tmp_path_factory):
    d = tmp_path_factory.mktemp("cni")
    (d / "host-local").write_text("#!/bin/sh\nexit 99\n")       # found by _find_plugin, never run
    os.chmod(d / "host-local", 0o755)
    w = SimpleNamespace(path=str(d), agent=None, ipam=None)
    mp = pytest.MonkeyPatch()
    mp.setattr(cni, "client", SimpleNamespace(call=lambda *a, **kw: w.agent.call(*a, **kw),
                                              AgentNotRunning=FakeAgent.AgentNotRunning))
    mp.setattr(cni_ipam, "subprocess", SimpleNamespace(run=lambda *a, **kw: w.ipam.run(*a, **kw),
                                                  TimeoutExpired=subprocess.TimeoutExpired))
    yield w
    mp.undo()


def fresh_agent() -> FakeAgent:
    return FakeAgent(networks=[Network.make("vni256", 256, "10.1.0.0/24")],
                     endpoints=[{"name": EXISTING, "vni": 256, "ip": "10.1.0.5", "mac": "02:42:0a:01:00:05",
                                 "host_ifname": "dp1", "sandbox": {"netns": "/run/netns/x", "ifname": "eth0",
                                                                   "runtime": "cni", "network": "ov",
                                                                   "container_id": "abc123"}}])


def ifname_ok(v) -> bool:
    try:
        raw = v.encode()
    except UnicodeEncodeError:
        return False
    return 1 <= len(raw) <= 15 and not re.search(r"[/:\s\x00]", v) and v not in (".", "..")


def objects(d: dict, key: str, field: str | None = None) -> bool:
    v = d.get(key)
    return v is None or isinstance(v, list) and all(
        isinstance(x, dict) and (field is None or isinstance(x.get(field), str)) for x in v)


def spec_problem(conf, env: dict) -> str | None:
    """Why the spec (or the plugin's documented keys) makes this input invalid; None if it does not.
    GC reads no CNI_CONTAINERID, CNI_IFNAME or CNI_NETNS; only ADD reads into prevResult."""
    cmd = env.get("CNI_COMMAND")
    if not isinstance(conf, dict):
        return "configuration is not an object"
    if conf.get("cniVersion") not in cni.SUPPORTED:
        return "version"
    if not isinstance(conf.get("name"), str) or not SPEC_ID.fullmatch(conf["name"]):
        return "network name"
    vni = conf.get("vni")
    if type(vni) is not int or not 1 <= vni < 1 << 24:
        return "vni"
    if not isinstance(conf.get("node", "host"), str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,30}",
                                                                         conf.get("node", "host")):
        return "node"
    if "ipam" in conf and not (isinstance(conf["ipam"], dict) and isinstance(conf["ipam"].get("type"), str)):
        return "ipam"
    prev = conf.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        return "prevResult"
    if cmd == "ADD" and prev and not (objects(prev, "interfaces", "name") and objects(prev, "ips", "address")
                                      and (not prev.get("routes") or objects(prev, "routes", "dst"))):
        return "prevResult"
    if cmd == "GC":
        return None
    if cmd == "DEL":               # it takes names its ADD refused (names_refused): only their absence is wrong
        return None if env.get("CNI_CONTAINERID") and env.get("CNI_IFNAME") else "CNI_CONTAINERID or CNI_IFNAME"
    if not SPEC_ID.fullmatch(env.get("CNI_CONTAINERID") or ""):
        return "CNI_CONTAINERID"
    if not ifname_ok(env.get("CNI_IFNAME") or ""):
        return "CNI_IFNAME"
    if cmd != "DEL" and not (env.get("CNI_NETNS") or "").startswith("/"):
        return "CNI_NETNS"
    return None


def names_refused(env: dict) -> bool:
    """Names an ADD refuses before it asks the IPAM plugin (a DEL of them gives no address back)."""
    netns = env.get("CNI_NETNS")
    return (not SPEC_ID.fullmatch(env.get("CNI_CONTAINERID") or "") or not ifname_ok(env.get("CNI_IFNAME") or "")
            or (bool(netns) and not netns.startswith("/")))


@st.composite
def invocations(draw):
    cmd = draw(st.sampled_from(COMMANDS))
    env = dict(ENV, CNI_COMMAND=cmd, CNI_CONTAINERID="new456" if cmd == "ADD" else "abc123")
    for var, twists in ENV_TWISTS.items():
        if draw(st.integers(0, 5)) == 0:
            env[var] = draw(st.sampled_from(twists))
    conf = draw(st.sampled_from(CONFS[:3] if cmd == "ADD" else CONFS))
    conf = draw(mutated({**conf, "prevResult": PREV} if cmd == "CHECK" else conf))
    raw = draw(st.sampled_from([json.dumps(conf).encode()] * 5 + [None, None]))
    raw = raw or draw(st.one_of(as_bytes(st.just(conf)), as_bytes(json_values)))
    ipam_add = draw(st.one_of(mutated(IPAM_RESULT).map(lambda r: (0, json.dumps(r).encode())),
                              mutated(IPAM_RESULT).map(lambda r: (0, json.dumps(r).encode())),
                              mutated(IPAM_ERROR).map(lambda r: (1, json.dumps(r).encode())),
                              st.tuples(st.sampled_from([0, 1, 2]), as_bytes(json_values))))
    return env, raw, ipam_add


def assert_spec_answer(cmd: str, status: int, out) -> None:
    json.dumps(out, allow_nan=False)           # the runtime's JSON parser takes no NaN or Infinity
    if status == 1:
        assert {"cniVersion", "code", "msg"} <= set(out), out
        assert type(out["code"]) is int and out["code"] > 0 and isinstance(out["msg"], str) and out["msg"], out
        assert isinstance(out.get("details", ""), str), out
    elif cmd == "ADD":
        assert status == 0 and isinstance(out["cniVersion"], str), out
        faces, ips = out["interfaces"], out["ips"]
        assert all(isinstance(f, dict) and isinstance(f["name"], str) for f in faces), out
        assert all(isinstance(ip, dict) and isinstance(ip["address"], str) for ip in ips), out
        assert faces[ips[-1]["interface"]]["name"] == faces[-1]["name"], out      # ours: the container side
        assert all(isinstance(r, dict) and isinstance(r["dst"], str) for r in out.get("routes", [])), out
        assert isinstance(out.get("dns", {}), dict) and isinstance(ips[-1].get("gateway", ""), str), out
    elif cmd == "VERSION":
        assert status == 0 and out["supportedVersions"] == cni.SUPPORTED
    else:
        assert status == 0 and out is None, (cmd, out)


def run_and_check(plugins, env: dict, raw: bytes, ipam_add: tuple[int, bytes]) -> tuple[int, dict | None]:
    env = dict(env, CNI_PATH=plugins.path)
    plugins.agent, plugins.ipam = fresh_agent(), FakeIpam(ipam_add)
    before = plugins.agent.created()
    status, out = cni.run(env, raw)
    cmd = env["CNI_COMMAND"]
    assert_spec_answer(cmd, status, out)
    try:
        conf = json.loads(raw)
    except (ValueError, RecursionError):
        conf = None
    calls = [op for op, _ in plugins.agent.calls]
    if cmd in ("ADD", "DEL", "CHECK", "GC") and spec_problem(conf, env):
        assert not set(calls) & set(CREATES) and plugins.ipam.calls == [], (spec_problem(conf, env), calls)
    if cmd == "DEL" and spec_problem(conf, env) is None and names_refused(env):
        assert status == 0 and plugins.ipam.calls == [] and set(calls) <= {"endpoint_detach"}, (out, calls)
    if cmd == "ADD" and status == 1:
        assert plugins.agent.created()[1] == before[1], "a failed ADD left an endpoint"
        assert not plugins.ipam.leaked(), "a failed ADD kept the address the IPAM plugin gave"
    if cmd == "ADD" and status == 0:
        assert cni.endpoint_id(conf["name"], env["CNI_CONTAINERID"], env["CNI_IFNAME"]) in plugins.agent.endpoints
    return status, out


@FUZZ
@given(inv=invocations())
def test_the_plugin_answers_the_spec_and_a_failure_leaves_nothing(plugins, inv):
    run_and_check(plugins, *inv)


ADD = dict(ENV, CNI_COMMAND="ADD", CNI_CONTAINERID="new456")
IPAM_CONF = CONFS[1]
READ_KEYS = ["interfaces", "ips", "routes", "dns", "cniVersion"]


@FUZZ
@example(value=5, key="interfaces", where="prevResult")          # the endpoint was made, then list(5) raised
@example(value=[1], key="ips", where="both")
@example(value=[{"gw": 1}], key="routes", where="ipam result")
@given(value=st.one_of(json_values, st.sampled_from(HOSTILE)), key=st.sampled_from(READ_KEYS),
       where=st.sampled_from(["prevResult", "ipam result", "both"]))
def test_any_value_under_a_key_of_prev_result_or_the_ipam_result_is_answered(plugins, value, key, where):
    prev = {**CHAINED, key: value} if where != "ipam result" else CHAINED
    ipam = {**IPAM_RESULT, key: value} if where != "prevResult" else IPAM_RESULT
    conf = {**IPAM_CONF, "prevResult": prev} if where != "prevResult" else {**CONF, "prevResult": prev}
    status, _ = run_and_check(plugins, ADD, json.dumps(conf).encode(), (0, json.dumps(ipam).encode()))
    check = dict(ENV, CNI_COMMAND="CHECK", CNI_CONTAINERID="abc123")
    run_and_check(plugins, check, json.dumps({**CONF, "prevResult": {**PREV, key: value}}).encode(), (0, b""))


@FUZZ
@example(value="ov\ud800", where="name")        # network created, then the id's hash raised UnicodeEncodeError
@example(value="-1", where="name")
@given(value=st.one_of(json_values, st.sampled_from(HOSTILE)),
       where=st.sampled_from(["prevResult", "ipam", "vni", "name", "node", "cniVersion", cni.VALID_ATTACHMENTS]))
def test_any_value_in_a_key_the_plugin_reads_is_answered(plugins, value, where):
    for cmd in ("ADD", "CHECK", "DEL", "GC"):
        env = dict(ENV, CNI_COMMAND=cmd, CNI_CONTAINERID="new456" if cmd == "ADD" else "abc123")
        run_and_check(plugins, env, json.dumps({**CONF, where: value}).encode(),
                      (0, json.dumps(IPAM_RESULT).encode()))


ipam_outputs = st.one_of(mutated(IPAM_RESULT).map(lambda r: (0, r)), mutated(IPAM_ERROR).map(lambda r: (1, r)),
                         st.tuples(st.sampled_from([0, 1]), json_values))


@FUZZ
@example(out=(0, None), encode="plain", data=None)                       # no DEL: the address stayed taken
@example(out=(0, {"ips": [{"address": "10.1.0.7/24"}]}), encode="nan", data=None)     # not JSON: no DEL either
@example(out=(1, {"code": "11", "msg": "x", "details": ["y"]}), encode="plain", data=None)   # code "11" echoed
@given(out=ipam_outputs, encode=st.sampled_from(["plain", "nan", "bytes"]), data=st.data())
def test_whatever_the_ipam_plugin_prints_is_answered_and_its_address_given_back(plugins, out, encode, data):
    rc, value = out
    raw = {"plain": lambda: json.dumps(value).encode(),
           "nan": lambda: json.dumps(value).replace("1", "1e400", 1).encode(),
           "bytes": lambda: data.draw(as_bytes(st.just(value)))}[encode]()
    run_and_check(plugins, ADD, json.dumps(IPAM_CONF).encode(), (rc, raw))
