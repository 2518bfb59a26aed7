"""Commands fail in one line with a non-zero exit, never a traceback, when the node's state
cannot be read (not root, damaged) or the agent cannot be talked to (denied, silent)."""

from __future__ import annotations

import socket

import pytest

from dataplane.agent import client
from dataplane.cli.main import main
from dataplane.core import state


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "RUN_ROOT", str(tmp_path / "run"))
    monkeypatch.setattr(state, "LIB_ROOT", str(tmp_path / "lib"))
    return tmp_path


def saved_node(roots, vni: int = 10) -> None:
    """Node "host" as its state file has it: VNI vni served, no endpoint (nothing in the kernel)."""
    from dataplane.core.state import NodeConfig, NodeState, ServedNetwork, Uplink
    state.save(NodeState(node="host", netns=None, pin_dir=str(roots / "pins"),
                         config=NodeConfig(underlay="eth0", local_ip="192.0.2.1"),
                         uplink=Uplink(ifindex=2, mtu=1500, mac="02:00:00:00:00:01", gso_max=65536),
                         networks={vni: ServedNetwork(vni=vni, subnet="10.0.10.0/24", mtu=1450, slot=1)}))


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("dataplane: error: ") and err.count("\n") == 1, err
    return err


def test_a_state_that_cannot_be_read_or_is_damaged(roots, capsys):
    path = roots / "run" / "host" / "state.json"
    path.mkdir(parents=True)                 # open() fails as it does for a user who is not root
    assert main(["status"]) != 0
    assert "cannot read the state of node host" in one_line(capsys)
    path.rmdir()
    path.write_text("{")
    assert main(["status"]) == 1
    assert "is damaged" in one_line(capsys)
    boot = roots / "lib" / "host" / "node.json"
    boot.parent.mkdir(parents=True)
    boot.write_text("[]")
    assert main(["service", "install", "--unit-dir", str(roots / "units")]) == 1
    assert "node.json is damaged" in one_line(capsys)


class Denied(socket.socket):
    def connect(self, path):
        raise PermissionError(13, "Permission denied")


class Full(socket.socket):
    def connect(self, path):
        raise BlockingIOError(11, "Resource temporarily unavailable")


class Answering(socket.socket):
    """Connects and takes the request; answers ANSWER (bytes), or raises it."""
    ANSWER: bytes | Exception = b""

    def connect(self, path):
        pass

    def sendall(self, data):
        pass

    def recv(self, n):
        if isinstance(self.ANSWER, Exception):
            raise self.ANSWER
        return self.ANSWER


class Garbled(Answering):
    ANSWER = b"[]\n"


class Silent(Answering):
    ANSWER = TimeoutError("timed out")


def test_an_agent_that_cannot_be_talked_to(roots, capsys, monkeypatch):
    monkeypatch.setattr(client.socket, "socket", Denied)
    assert main(["agent", "status"]) == 5
    assert "cannot talk to the agent of node host: Permission denied" in one_line(capsys)
    for silent in (Silent, Full):        # Full: its listen backlog full, nobody accepting
        monkeypatch.setattr(client.socket, "socket", silent)
        assert main(["agent", "status"]) == 7
        assert "did not answer 'status'" in one_line(capsys)
    monkeypatch.setattr(client.socket, "socket", Garbled)
    assert main(["agent", "status"]) == 7
    assert "broken reply" in one_line(capsys)


def test_up_refuses_what_its_agent_would_before_making_anything(roots, capsys, monkeypatch, tmp_path):
    """A default host name over the name rules (a cloud VM's hostname) or a lease TTL out of
    range: exit 2 from `up` itself (before: everything was made, then the agent it started
    exited 2 and `up` rolled back, or a TTL of 0 was silently the default)."""
    from dataplane.node import vtep
    monkeypatch.setattr(vtep, "up", lambda *a, **kw: pytest.fail("up went on to make the node"))
    url = f"sqlite://{tmp_path}/reg.db"
    monkeypatch.setattr(socket, "gethostname", lambda: "aks-nodepool1-12345678-vmss000000x")
    assert main(["up", "--registry", url]) == 2
    assert "give --host-name" in one_line(capsys)
    for ttl in ("0", "1", "5000"):
        assert main(["up", "--registry", url, "--host-name", "h1", "--lease-ttl", ttl]) == 2
        assert "--lease-ttl" in one_line(capsys)
    from types import SimpleNamespace
    from dataplane.agent import process
    from dataplane.node import Node
    monkeypatch.setattr(Node, "state", lambda self: SimpleNamespace(host_name="h1", registry=url))
    monkeypatch.setattr(process, "running_pid", lambda node: 4242)
    assert main(["up", "--registry", url, "--host-name", "h2"]) == 4, "renamed under its running agent"
    assert "is host h1 in the registry and its agent runs" in one_line(capsys)


def test_down_of_a_vni_twice_is_idempotent(roots, capsys, monkeypatch):
    """`down --vni 20` when 20 is not (or no longer) up: exit 0, said, the rest of the node
    as it was (before: exit 3, "VNI 20 is not up on this node", although the help says idempotent)."""
    import json
    saved_node(roots)
    assert main(["down", "--vni", "20", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"was_up": True, "vnis": [], "not_up": [20]}
    assert list(state.load("host").networks) == [10]


def test_down_of_a_vni_on_a_node_not_up_keeps_its_saved_configuration(roots, capsys):
    """After a reboot, before `up --restore`: `down --vni 20` said "nothing was up", exit 0, and
    deleted the node's saved configuration: the unit then had nothing to restore, every VNI lost."""
    boot = {"vni": [10, 20], "underlay": "eth0"}
    state.save_boot("host", boot)
    assert main(["down", "--vni", "20"]) == 4
    said = one_line(capsys)
    assert "is not up" in said and "dataplane up --restore" in said, said
    assert state.load_boot("host") == boot
    state.remove_boot("host")
    assert main(["down", "--vni", "20"]) == 0, "nothing saved, nothing up: idempotent as before"


def test_a_registry_url_or_path_that_cannot_be_used_is_one_line(roots, capsys, monkeypatch, tmp_path):
    """`etcd://[::1` gave urlsplit's ValueError as a traceback, and a sqlite file under a file
    (or a directory a user may not make) makedirs' OSError, from every registry command."""
    from dataplane.node import vtep
    monkeypatch.setattr(vtep, "up", lambda *a, **kw: pytest.fail("up went on to make the node"))
    (tmp_path / "f").write_text("")
    up, ls = ["up", "--host-name", "h1"], ["network", "list"]
    for url, code, cmds in (("etcd://[::1", 2, (ls, up)), ("etcds://[::1]:2379?ca=x", 2, (ls, up)),
                            (f"sqlite://{tmp_path}/f/reg.db", 5, (ls, ["network", "create", "n", "--vni", "5"]))):
        for cmd in cmds:
            assert main([*cmd, "--registry", url]) == code, (cmd, url)
            assert "registry" in one_line(capsys)


def test_up_on_a_registry_network_of_another_port_is_refused(roots, capsys, monkeypatch, tmp_path):
    """`up --vni 5 --port 4790` over network vni5 of port 4789 said the VNI was up; its agent then
    unserved it ("port differs"), said only in its log. Refused as another subnet is, before anything."""
    from dataplane import registry
    from dataplane.node import vtep
    monkeypatch.setattr(vtep, "up", lambda *a, **kw: pytest.fail("up went on to make the node"))
    url = f"sqlite://{tmp_path}/reg.db"
    reg = registry.open_registry(url)
    reg.network_create("vni5", 5)
    assert main(["up", "--registry", url, "--host-name", "h1", "--vni", "5", "--port", "4790",
                 "--underlay", "lo"]) == 4
    assert "on UDP port 4789 in the registry" in one_line(capsys)
    assert [n.name for n in reg.networks()] == ["vni5"]
    reg.network_create("vni6", 6, port=4790)      # without --port the node's is 4789: refused as well
    assert main(["up", "--registry", url, "--host-name", "h1", "--vni", "6", "--underlay", "lo"]) == 4
    assert "on UDP port 4790 in the registry, not 4789" in one_line(capsys)
    import dataclasses
    saved_node(roots)                             # a running node serving VNI 10 (port 4789) from the registry
    reg.network_create("n10", 10, "10.0.10.0/24")
    state.save(dataclasses.replace(state.load("host"), registry=url, host_name="h1"))
    assert main(["up", "--registry", url, "--host-name", "h1", "--port", "4790"]) == 4
    assert "network n10 is on UDP port 4789, not 4790" in one_line(capsys)
    reg.close()


@pytest.mark.parametrize("size, said", [("DP_MAP_FOO=5", "unknown map size"), ("DP_MAP_FDB=0", "1 to"),
                                        ("DP_MAP_FDB=-1", "1 to"), ("DP_MAP_FDB=4294967296", "1 to"),
                                        ("DP_MAP_NH_CACHE=1000", "power of two")])
def test_a_bad_map_size_is_refused_before_anything_is_made(roots, capsys, monkeypatch, size, said):
    """An unknown name was exit 6 ("bcc, headers or bpffs missing"); a size of 0 or below, or a
    cache that is no power of two, failed only in bcc's compile, after the sysctls were set."""
    from dataplane.node import vtep
    monkeypatch.setattr(vtep.netlink, "link_info", lambda *a, **kw: pytest.fail("up went on to make the node"))
    assert main(["up", "--no-registry", "--vni", "5", "--underlay", "lo", "--map-size", size]) == 2
    assert said in one_line(capsys)
    assert state.load("host") is None


def test_options_given_as_zero_are_heard(roots, capsys, monkeypatch, tmp_path):
    """`up --restore --port 0` (and --fdb-age 0) went unheeded, where every other option given
    with --restore is refused; `agent run --lease-ttl 0` ran with the saved TTL; `stats --watch
    --vni junk` slept its first interval before it said the VNI was bad."""
    import dataclasses
    import time
    from dataplane.agent import restarts
    for opt in (["--port", "0"], ["--fdb-age", "0"], ["--no-xdp-guard"], ["--peer-check"]):
        assert main(["up", "--restore", *opt]) == 2
        assert f"drop {opt[0].replace('--no-', '--')}" in one_line(capsys)
    saved_node(roots)
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail("slept before checking --vni"))
    assert main(["stats", "--watch", "--interval", "5", "--vni", "junk"]) == 2
    assert "bad VNI" in one_line(capsys)
    monkeypatch.setattr(restarts, "under_supervisor", lambda: False)
    state.save(dataclasses.replace(state.load("host"), registry=f"sqlite://{tmp_path}/reg.db", lease_ttl=10))
    assert main(["agent", "run", "--lease-ttl", "0"]) == 2
    assert "lease" in one_line(capsys).lower()


def test_endpoint_add_with_a_network_and_another_vni_is_refused(roots, capsys, tmp_path):
    """`endpoint add x --network a --vni 99` put x on network a whatever its VNI (with a registry),
    or on VNI 99 whatever --network said (without one)."""
    from types import SimpleNamespace
    from dataplane.agent import ops
    from dataplane.core.errors import Conflict
    from dataplane.registry import open_registry
    reg = open_registry(f"sqlite://{tmp_path}/reg.db")
    reg.network_create("a", 5)
    try:
        with pytest.raises(Conflict, match="network a has VNI 5, not 99"):
            ops.Ops(SimpleNamespace(reg=reg))._network_for("a", 99)
        assert ops.Ops(SimpleNamespace(reg=reg))._network_for("a", 5).name == "a"
    finally:
        reg.close()
    saved_node(roots)
    assert main(["endpoint", "add", "x", "--vni", "10", "--network", "a"]) == 2
    assert "give --vni alone" in one_line(capsys)


def test_a_network_record_that_cannot_be_read_is_said_and_removed(roots, capsys, tmp_path):
    """Such a record (an older version's multicast subnet) was listed nowhere and `network rm`
    failed on it: `network list` names it with what removes it, and `network rm` does."""
    from dataplane.registry import open_registry
    from dataplane.registry.kv import Txn
    from dataplane.registry.records import key
    url = f"sqlite://{tmp_path}/reg.db"
    reg = open_registry(url)
    raw = b'{"name": "bad", "vni": 5, "subnet": "224.0.0.0/24", "gateway": "224.0.0.1", "mtu": 1450, "port": 4789}'
    assert reg.kv.commit(Txn().put(key("networks", "bad"), raw).put(key("vnis", 5), b"bad"))[0]
    reg.close()
    assert main(["network", "list", "--registry", url, "-o", "json"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "[]" and "`dataplane network rm bad` removes it" in err
    assert main(["network", "rm", "bad", "--registry", url]) == 0
    assert main(["network", "create", "n", "--vni", "5", "--registry", url]) == 0


def test_down_says_that_the_nodes_unit_is_still_enabled(roots, capsys, monkeypatch):
    """`systemctl stop dataplane`, then `dataplane down`: the unit stayed enabled, and at every
    boot its ExecStartPre had nothing to restore and it restarted every second, said nowhere.
    (The units now skip a node taken down: test_service_units.)"""
    from dataplane.agent import process
    wants = roots / "units" / "multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "dataplane.service").symlink_to("/nonexistent/dataplane.service")
    monkeypatch.setattr(process, "ENABLE_DIRS", (str(roots / "units"),))
    state.save_boot("host", {"underlay": "eth0"})
    assert main(["down"]) == 0
    assert "dataplane.service is still enabled" in capsys.readouterr().err
    assert state.load_boot("host") is None


def test_agent_run_on_a_node_without_a_registry_is_refused(roots, capsys):
    """It ran with the default registry: registered the host there and unserved the node's
    static VNIs that registry did not have. Refused; a unit left in place waits as a crash loop does."""
    from dataplane.agent import restarts
    saved_node(roots)
    assert main(["agent", "run"]) == 2
    assert "runs without a registry" in one_line(capsys)
    assert restarts._read("host")[0] == 1, "counted: under a unit the next starts wait"


def test_capture_and_monitor_arguments(roots, capsys, monkeypatch, tmp_path):
    """--vni 0x10 is VNI 16 to the end (before: a traceback after the capture, int("0x10"));
    --inner with no endpoint of the VNI here is refused (before: it waited on no socket until ^C
    and wrote an empty pcap); -c and --timeout of 0 or less are refused (before: 0 meant "never")."""
    import json
    from dataplane.node import capture
    saved_node(roots, vni=16)
    pcap = str(tmp_path / "c.pcap")
    real = capture.run
    monkeypatch.setattr(capture, "run", lambda node, vni, path, **kw: 0)
    assert main(["capture", "--vni", "0x10", "-w", pcap, "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["vni"] == 16
    monkeypatch.setattr(capture, "run", real)
    assert main(["capture", "--vni", "16", "--inner", "-w", pcap, "--timeout", "0.3"]) == 3
    assert "--inner has nothing to capture" in one_line(capsys)
    for cmd in (["capture", "--vni", "16", "-w", pcap], ["monitor"]):
        for limit in (["--timeout", "0"], ["-c", "0"], ["--timeout", "-1"]):
            assert main([*cmd, *limit]) == 2, limit
            assert "bad --" in one_line(capsys)


def test_a_namespace_that_does_not_exist_is_refused(roots, capsys, monkeypatch, tmp_path):
    """A misspelt --netns (before: ignored, so `network create` went to the default registry
    and exited 0, and `registry forget-host` could delete records there)."""
    from dataplane import registry
    url = f"sqlite://{tmp_path}/reg.db"
    monkeypatch.setattr(registry, "DEFAULT_URL", url)
    assert main(["--netns", "dpl-nosuch-ns1", "network", "create", "web", "--vni", "100"]) == 3
    assert "network namespace 'dpl-nosuch-ns1' does not exist" in one_line(capsys)
    assert main(["network", "list", "--registry", url, "-o", "json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"


def test_docker_plugin_socket_and_password_files(roots, capsys, monkeypatch, tmp_path):
    """A plugin socket under a file, or one another driver serves, and a password directory that
    is a file: one error line each (before: tracebacks, and the live socket was unlinked)."""
    from dataplane.registry import etcd_auth
    monkeypatch.setattr(client, "call", lambda *a, **kw: {})
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["docker-plugin", "--socket", str(blocker / "dp.sock")]) == 4
    assert "cannot serve the plugin socket" in one_line(capsys)
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(tmp_path / "dp.sock"))
    live.listen(1)
    try:
        assert main(["docker-plugin", "--socket", str(tmp_path / "dp.sock")]) == 4
        assert "another driver serves" in one_line(capsys)
        assert (tmp_path / "dp.sock").exists(), "the live socket is left alone"
    finally:
        live.close()
    from dataplane.core.errors import DataplaneError
    with pytest.raises(DataplaneError, match="password file of h1"):
        etcd_auth.password_file(str(blocker), "h1")


def test_a_restore_that_fails_under_systemd_waits_before_the_unit_tries_again(roots, capsys, monkeypatch):
    """ExecStartPre (`up --restore`) has no start counter and the unit restarts a second after
    a failure, for good: a damaged node.json was tried every second, a journal line each time.
    Under systemd it now waits before it fails; typed by hand it fails at once."""
    from types import SimpleNamespace
    from dataplane.agent import boot_wait
    waits = []
    monkeypatch.setattr(boot_wait, "time", SimpleNamespace(sleep=waits.append))
    monkeypatch.delenv("SYSTEMD_EXEC_PID", raising=False)
    boot = roots / "lib" / "host" / "node.json"
    boot.parent.mkdir(parents=True)
    boot.write_text("[]")
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    assert main(["up", "--restore", "--no-agent"]) == 1
    assert "node.json is damaged" in one_line(capsys) and waits == []
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef")
    assert main(["up", "--restore", "--no-agent"]) == 1
    assert len(waits) == 1 and waits[0] >= 5, f"waited {waits} before the unit's restart a second later"
    err = capsys.readouterr().err
    assert err.index("node.json is damaged") < err.index("waiting"), "the cause is said before the wait"
    monkeypatch.setenv("SYSTEMD_EXEC_PID", "1")      # a shell of a user service: inherited, not ours
    assert main(["up", "--restore", "--no-agent"]) == 1 and len(waits) == 1
