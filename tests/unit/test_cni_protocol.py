"""The CNI plugin's protocol handling that needs no agent: what is refused
before anything is asked of the node, and with which spec error code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dataplane.cli.runtime_cmds import install_cni
from dataplane.runtimes import cni
from dataplane.core import model

CONF = {"cniVersion": "1.1.0", "name": "ov", "type": "dataplane", "vni": 256, "node": "nowhere"}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/nonexistent"}


def run(conf, **env):
    raw = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    return cni.run({**ENV, **env}, raw)


@pytest.mark.parametrize("conf,env,code", [
    (b"{", {}, cni.E_DECODE),
    (b"[1, 2]", {}, cni.E_DECODE),
    (CONF, {"CNI_COMMAND": "FROB"}, cni.E_ENV),
    (CONF, {"CNI_COMMAND": ""}, cni.E_ENV),
    ({**CONF, "cniVersion": "0.4.0"}, {}, cni.E_VERSION),
    ({**CONF, "cniVersion": 1}, {}, cni.E_VERSION),
    ({k: v for k, v in CONF.items() if k != "vni"}, {}, cni.E_CONFIG),
    ({**CONF, "vni": 0}, {}, cni.E_CONFIG),
    ({**CONF, "vni": 1 << 24}, {}, cni.E_CONFIG),
    ({**CONF, "vni": True}, {}, cni.E_CONFIG),
    ({**CONF, "name": ""}, {}, cni.E_CONFIG),
    ({**CONF, "ipam": "host-local"}, {}, cni.E_CONFIG),
    ({**CONF, "node": "../etc"}, {}, cni.E_CONFIG),
    (CONF, {"CNI_CONTAINERID": ""}, cni.E_ENV),
    (CONF, {"CNI_CONTAINERID": "-bad"}, cni.E_ENV),
    (CONF, {"CNI_IFNAME": "a/b"}, cni.E_ENV),
    (CONF, {"CNI_IFNAME": "x" * 16}, cni.E_ENV),
    (CONF, {"CNI_NETNS": "relative/ns"}, cni.E_ENV),
    ({**CONF, "cniVersion": "1.0.0"}, {"CNI_COMMAND": "GC"}, cni.E_VERSION),
    ({**CONF, "cni.dev/valid-attachments": "all"}, {"CNI_COMMAND": "GC"}, cni.E_CONFIG),
    ({**CONF, "prevResult": None}, {"CNI_COMMAND": "CHECK"}, cni.E_CONFIG),
])
def test_refused_with_the_spec_code(conf, env, code):
    status, out = run(conf, **env)
    assert status == 1 and out["code"] == code and out["msg"], out


def test_agent_missing_is_try_again_and_status_unavailable():
    status, out = run(CONF)
    assert status == 1 and out["code"] == cni.E_TRY_AGAIN and "not running" in out["msg"]
    status, out = run(CONF, CNI_COMMAND="STATUS")
    assert status == 1 and out["code"] == cni.E_NOT_AVAILABLE


def test_version_answers_without_configuration():
    assert cni.run({"CNI_COMMAND": "VERSION"}, b"") == (0, {"cniVersion": "1.1.0",
                                                          "supportedVersions": ["1.0.0", "1.1.0"]})
    assert cni.run({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.0.0"}')[1]["cniVersion"] == "1.0.0"


def test_endpoint_ids_are_valid_names_and_distinct():
    ids = {cni.endpoint_id(n, c, i) for n in ("a", "b") for c in ("c1", "c2" * 40) for i in ("eth0", "net1")}
    assert len(ids) == 8
    for i in ids:
        assert model.parse_name(i) == i


def test_installed_plugin_speaks_on_stdout(tmp_path):
    path = install_cni(str(tmp_path))
    r = subprocess.run([path], input=b"", env={"CNI_COMMAND": "VERSION"}, capture_output=True)
    assert r.returncode == 0 and json.loads(r.stdout)["supportedVersions"] == cni.SUPPORTED
    r = subprocess.run([path], input=b"{", env={"CNI_COMMAND": "ADD"}, capture_output=True)
    assert r.returncode == 1 and json.loads(r.stdout)["code"] == cni.E_DECODE
    assert "bcc" not in subprocess.run([sys.executable, "-c", "import sys, dataplane.runtimes.cni; print(sorted(sys.modules))"],
                                       capture_output=True, text=True).stdout


IPS_AS_STRINGS = {"cniVersion": "1.1.0", "ips": ["10.1.0.5/24"], "interfaces": []}
BAD_CHECK = {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x", "mac": "02:42:0a:01:00:05"}],
             "ips": [{"address": "not-an-address", "interface": 0}]}


@pytest.mark.parametrize("conf,env", [
    ({**CONF, "prevResult": "a string"}, {}),
    ({**CONF, "prevResult": [1]}, {}),
    ({**CONF, "prevResult": IPS_AS_STRINGS}, {}),
    ({**CONF, "prevResult": {**IPS_AS_STRINGS, "ips": "10.1.0.5/24"}}, {}),
    ({**CONF, "prevResult": {**IPS_AS_STRINGS, "ips": [{"address": 5}]}}, {}),
    ({**CONF, "prevResult": BAD_CHECK}, {"CNI_COMMAND": "CHECK"}),
    ({**CONF, "prevResult": {**BAD_CHECK, "interfaces": "eth0"}}, {"CNI_COMMAND": "CHECK"}),
    ({**CONF, "prevResult": {**BAD_CHECK, "ips": [{"address": "10.1.0.5/24", "interface": "zero"}]}},
     {"CNI_COMMAND": "CHECK"}),
], ids=["prevResult a string", "prevResult a list", "ips as strings", "ips not a list", "address a number",
        "a bad address in CHECK", "interfaces not a list", "interface index not a number"])
def test_a_malformed_shape_is_a_spec_error_never_a_traceback(conf, env):
    status, out = run(conf, **env)
    assert status == 1 and isinstance(out["code"], int) and out["msg"], out


def test_ipam_output_that_is_not_json_is_a_spec_error(tmp_path):
    plugin = tmp_path / "junk-ipam"
    plugin.write_text("#!/bin/sh\necho 'this is not json'\n")
    plugin.chmod(0o755)
    status, out = run({**CONF, "ipam": {"type": "junk-ipam"}}, CNI_PATH=str(tmp_path))
    assert status == 1 and out["code"] == cni.E_DECODE and "junk-ipam" in out["msg"], out


@pytest.mark.parametrize("ping, code", [
    ({"synced": True, "connected": False, "registered": True}, None),    # a watch resuming: ADD works
    ({"synced": True, "connected": True, "registered": True}, None),
    ({"synced": True, "connected": False, "registered": False}, cni.E_NOT_AVAILABLE),   # the registry away
    ({"synced": True, "connected": True, "registered": False}, cni.E_NOT_AVAILABLE),    # a full etcd: no lease
    ({"synced": False, "connected": True, "registered": True}, cni.E_NOT_AVAILABLE),    # not synced yet
    ({"synced": True, "connected": True}, None),                                        # an older agent's ping
    ({"synced": True, "connected": False}, cni.E_NOT_AVAILABLE),
])
def test_status_follows_the_registry_answering_not_the_watch(monkeypatch, ping, code):
    """STATUS said 50 whenever the agent's watch was down: for seconds at every etcd member's
    restart or leader change, on every node at once (containerd asks at each CRI Status: the
    kubelet marks the node NotReady), while ADD, which goes to the registry itself, worked."""
    monkeypatch.setattr(cni, "_agent", lambda conf, op, **kw: ping)
    status, out = run(CONF, CNI_COMMAND="STATUS")
    assert (status, out and out["code"]) == ((0, None) if code is None else (1, code))


def test_the_agents_ping_says_whether_its_lease_keepalive_was_answered():
    import threading
    from types import SimpleNamespace
    from dataplane.agent import ops
    ev = threading.Event()
    ag = SimpleNamespace(me="h1", synced=threading.Event(), connected=ev, leases=SimpleNamespace(live=True))
    ag.synced.set()
    assert ops.Ops.ping(SimpleNamespace(ag=ag)) | {"pid": 0} == {"host": "h1", "synced": True, "connected": False,
                                                                 "registered": True, "pid": 0}
