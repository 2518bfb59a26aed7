"""The Docker IPAM driver (runtimes/docker_ipam.py) through the plugin's HTTP
server, as Docker calls it, on two engines h1 and h2 whose agents are the
real API operations (agent/runtime_ops.py) over one real SQLite registry;
only the node (veths, maps) is stood in for. Then what the agent makes of a
reservation it sees in the registry: nothing to install, nothing bad."""

from __future__ import annotations

import http.client
import json
import socket
import queue
import threading
import time
from types import SimpleNamespace

import pytest

from dataplane.agent import inflight, reconcile, runtime_ops
from dataplane.agent.view import RegistryView
from dataplane.core import state
from dataplane.core.errors import DataplaneError
from dataplane.registry import open_registry
from dataplane.registry.kv import Event
from dataplane.registry.records import Endpoint, Host, Network
from dataplane.registry.reserve import reservation_value
from dataplane.registry.store import key
from dataplane.runtimes import docker, docker_ipam, docker_server

SUBNET = "10.30.0.0/24"
GEN = docker.GENERIC


class Agent:
    """One host's agent: RuntimeOps on a real registry, with a node that only keeps a dict."""

    def __init__(self, url: str, me: str):
        self.reg = open_registry(url)
        self.me, self.lock, self.conflicts, self.q = me, threading.RLock(), {}, queue.Queue()
        inflight.attach(self)
        self.leases = SimpleNamespace(lease=self.reg.kv.lease_grant(60))
        self.reg.host_register(Host.make(me, "198.18.0." + me[1:]), self.leases.lease)
        self.local = SimpleNamespace(endpoints={})
        self.node = SimpleNamespace(require_up=lambda shared=False: self.local)
        self.view = RegistryView()
        self.handlers = runtime_ops.RuntimeOps(self).handlers()

    def call(self, op: str, args: dict):
        args = json.loads(json.dumps(args))            # what the socket carries
        return json.loads(json.dumps(self.handlers[op](**args)))


class FakeNode:
    """runtime_ops' door to the node: endpoints kept in the calling agent's dict."""

    def __init__(self, agents):
        self.agents = agents

    def add(self, node, name, vni, ip=None, mac=None, sandbox=None, prefixlen=None, routes=()):
        ep = state.LocalEndpoint(name=name, vni=vni, ip=ip, mac=mac, host_ifname="dp" + name[-10:], sandbox=sandbox)
        node.require_up().endpoints[name] = ep
        return ep

    def remove(self, node, name):
        node.require_up().endpoints.pop(name)


@pytest.fixture
def engines(tmp_path, monkeypatch):
    """{"h1": (server, agent), "h2": ...}: each engine's plugin socket and its host's agent."""
    url = f"sqlite://{tmp_path}/registry.db"
    agents = {h: Agent(url, h) for h in ("h1", "h2")}
    fake = FakeNode(agents)
    monkeypatch.setattr(runtime_ops, "endpoints", SimpleNamespace(add=fake.add, remove=fake.remove))
    monkeypatch.setattr(runtime_ops, "networks", SimpleNamespace(max_mtu=lambda st: 1450))
    monkeypatch.setattr(runtime_ops, "serve", lambda ag, net: None)
    monkeypatch.setattr(docker, "client", SimpleNamespace(
        call=lambda node, op, timeout=60.0, **args: agents[node].call(op, args)))
    monkeypatch.setattr(docker_server._Handler, "log_message", lambda self, *a: None)
    out, servers = {}, []
    for h, ag in agents.items():
        monkeypatch.setattr(docker.state, "LIB_ROOT", str(tmp_path / "lib"))
        d = docker.Driver(h)
        srv = docker_server.Server(str(tmp_path / f"{h}.sock"), d)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(srv)
        out[h] = SimpleNamespace(path=srv.path, agent=ag, driver=d)
    yield out
    for srv in servers:
        srv.shutdown()
        srv.server_close()
    for ag in agents.values():
        ag.reg.close()


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("docker", timeout=10)
        self.unix_path = path

    def connect(self):
        for attempt in range(50):       # the listen backlog is 5: Docker's client retries a refused connect too
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(10)
            try:
                self.sock.connect(self.unix_path)
                return
            except BlockingIOError:
                self.sock.close()
                time.sleep(0.02 * attempt)
        raise TimeoutError(f"{self.unix_path}: no connection")


def post(engine, path: str, body: dict | None = None) -> tuple[int, dict]:
    c = UnixHTTP(engine.path)
    try:
        c.request("POST", path, json.dumps(body or {}), {"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


def ok(engine, path: str, body: dict | None = None) -> dict:
    status, reply = post(engine, path, body)
    assert status == 200 and "Err" not in reply, (path, status, reply)
    return reply


def refused(engine, path: str, body: dict, status: int, match: str) -> None:
    got, reply = post(engine, path, body)
    assert (got, match in reply.get("Err", "")) == (status, True), (got, reply)


def create_network(engine, nid: str, vni: int = 256, subnet: str = SUBNET, ipam_opts=None) -> str:
    """What `docker network create -d dataplane --ipam-driver dataplane --subnet S -o vni=N` sends: the pool's id."""
    spaces = ok(engine, "/IpamDriver.GetDefaultAddressSpaces")
    pool = ok(engine, "/IpamDriver.RequestPool", {"AddressSpace": spaces["LocalDefaultAddressSpace"], "Pool": subnet,
                                                  "SubPool": "", "Options": ipam_opts or {}, "V6": False})
    ok(engine, "/NetworkDriver.CreateNetwork", {
        "NetworkID": nid, "Options": {GEN: {"vni": str(vni)}},
        "IPv4Data": [{"AddressSpace": spaces["LocalDefaultAddressSpace"], "Pool": pool["Pool"],
                      "Gateway": pool["Data"][docker_ipam.GATEWAY]}], "IPv6Data": []})
    return pool["PoolID"]


def run(engine, nid: str, pool: str, eid: str, ip: str | None = None) -> str:
    """What `docker run --net` sends: the address asked for, then the endpoint made with it."""
    addr = ok(engine, "/IpamDriver.RequestAddress", {"PoolID": pool, "Address": ip or "", "Options": {}})["Address"]
    ok(engine, "/NetworkDriver.CreateEndpoint", {"NetworkID": nid, "EndpointID": eid, "Options": {},
                                                  "Interface": {"Address": addr, "AddressIPv6": "", "MacAddress": ""}})
    return addr


def stop(engine, nid: str, pool: str, eid: str, addr: str) -> None:
    """What removing the container sends: DeleteEndpoint, then ReleaseAddress."""
    ok(engine, "/NetworkDriver.DeleteEndpoint", {"NetworkID": nid, "EndpointID": eid})
    ok(engine, "/IpamDriver.ReleaseAddress", {"PoolID": pool, "Address": addr.split("/")[0]})


def claims(engine) -> dict:
    return engine.agent.reg.snapshot().ipam


def test_the_plugin_is_both_drivers_and_asks_for_no_replay(engines):
    e = engines["h1"]
    assert ok(e, "/Plugin.Activate")["Implements"] == ["NetworkDriver", "IpamDriver"]
    assert ok(e, "/IpamDriver.GetCapabilities") == {"RequiresMACAddress": False, "RequiresRequestReplay": False}
    assert ok(e, "/IpamDriver.GetDefaultAddressSpaces") == {"LocalDefaultAddressSpace": "dataplane",
                                                           "GlobalDefaultAddressSpace": "dataplane"}


def test_two_engines_starting_containers_at_once_never_get_one_address(engines):
    pools = {h: create_network(e, nid=h * 32) for h, e in engines.items()}
    got, errors = {}, []

    def engine(h, i):
        try:
            got[(h, i)] = run(engines[h], h * 32, pools[h], f"{h}{i:02d}" + "e" * 60)
        except Exception as e:  # reported below
            errors.append(e)
    threads = [threading.Thread(target=engine, args=(h, i)) for h in engines for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(got.values())) == 24 and all(a.endswith("/24") for a in got.values())
    held = claims(engines["h1"])
    assert sorted(held) == sorted(f"vni256/{a.split('/')[0]}" for a in got.values())
    assert all(v.startswith("dk-") for v in held.values()), "every reservation became its endpoint's claim"
    assert engines["h1"].agent.reg.reservations() == []


def test_dockers_order_leaves_nothing_behind(engines):
    e = engines["h1"]
    nid, eid = "a" * 64, "b" * 64
    pool = create_network(e, nid)
    assert pool == SUBNET
    addr = run(e, nid, pool, eid)
    assert addr == "10.30.0.2/24"
    assert claims(e) == {"vni256/10.30.0.2": docker.endpoint_id(eid)}
    ok(e, "/NetworkDriver.DeleteEndpoint", {"NetworkID": nid, "EndpointID": eid})
    assert [r["ip"] for r in e.agent.call("address_list", {})] == ["10.30.0.2"], \
        "between DeleteEndpoint and ReleaseAddress the address is still Docker's"
    assert run(engines["h2"], nid, create_network(engines["h2"], nid), "c" * 64) == "10.30.0.3/24"
    ok(e, "/IpamDriver.ReleaseAddress", {"PoolID": pool, "Address": "10.30.0.2"})
    ok(e, "/IpamDriver.ReleaseAddress", {"PoolID": pool, "Address": "10.30.0.2"})     # again: nothing to do
    assert e.agent.call("address_list", {}) == []
    assert list(claims(e).values()) == [docker.endpoint_id("c" * 64)]


def test_a_given_address_is_reserved_exactly_or_refused(engines):
    h1, h2 = engines["h1"], engines["h2"]
    pools = {h: create_network(e, "n" * 64) for h, e in engines.items()}
    assert run(h1, "n" * 64, pools["h1"], "d" * 64, ip="10.30.0.50") == "10.30.0.50/24"
    refused(h2, "/IpamDriver.RequestAddress", {"PoolID": pools["h2"], "Address": "10.30.0.50"}, 409,
            "address 10.30.0.50 is in use on vni256 by dk-dddddddddddddddddddddddd")
    ok(h2, "/IpamDriver.RequestAddress", {"PoolID": pools["h2"], "Address": "10.30.0.51"})
    refused(h1, "/IpamDriver.RequestAddress", {"PoolID": pools["h1"], "Address": "10.30.0.51"}, 409,
            "address 10.30.0.51 is in use on vni256 by a reservation of host h2")
    refused(h1, "/IpamDriver.RequestAddress", {"PoolID": pools["h1"], "Address": "10.31.0.5"}, 400,
            "not a free host address of 10.30.0.0/24")


def test_the_gateway_is_the_registrys_and_never_reserved(engines):
    e = engines["h1"]
    e.agent.reg.network_create("ops", 300, "10.33.0.0/24", gateway="10.33.0.254")   # `dataplane network create`
    pool = ok(e, "/IpamDriver.RequestPool", {"AddressSpace": "dataplane", "Pool": "10.33.0.0/24", "Options": {}})
    assert pool == {"PoolID": "10.33.0.0/24", "Pool": "10.33.0.0/24", "Data": {docker_ipam.GATEWAY: "10.33.0.254/24"}}
    gw = {"RequestAddressType": docker_ipam.GATEWAY}
    assert ok(e, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Options": gw})["Address"] == "10.33.0.254/24"
    ok(e, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "10.33.0.254", "Options": gw})
    refused(e, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "10.33.0.1", "Options": gw}, 409,
            "the gateway of 10.33.0.0/24 is 10.33.0.254 in the registry: give --gateway 10.33.0.254, or none")
    new = ok(e, "/IpamDriver.RequestPool", {"AddressSpace": "dataplane", "Pool": "10.34.0.0/16"})
    assert new["Data"] == {docker_ipam.GATEWAY: "10.34.0.1/16"}, "no network yet: the one network_ensure makes"
    assert claims(e) == {}
    ok(e, "/IpamDriver.ReleaseAddress", {"PoolID": pool["PoolID"], "Address": "10.33.0.254"})
    assert e.agent.reg.network("ops").gateway == "10.33.0.254"


def test_a_new_network_takes_the_gateway_docker_was_given(engines):
    """`--ipam-driver dataplane --ipam-opt vni=800 --subnet 10.80.0.0/24 --gateway 10.80.0.254`:
    no registry network yet, and the IPAM refused .254 as "the gateway ... is .1 in the registry"."""
    e = engines["h1"]
    pool = ok(e, "/IpamDriver.RequestPool", {"AddressSpace": "dataplane", "Pool": "10.80.0.0/24",
                                             "Options": {"vni": "800"}})
    gw = {"RequestAddressType": docker_ipam.GATEWAY}
    got = ok(e, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "10.80.0.254", "Options": gw})
    assert got["Address"] == "10.80.0.254/24"
    ok(e, "/NetworkDriver.CreateNetwork", {"NetworkID": "g" * 64, "Options": {GEN: {}},
                                           "IPv4Data": [{"AddressSpace": "dataplane", "Pool": "10.80.0.0/24",
                                                         "Gateway": got["Address"]}]})
    assert e.agent.reg.network_by_vni(800).gateway == "10.80.0.254"
    refused(e, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "10.80.0.9", "Options": gw},
            409, "give --gateway 10.80.0.254")            # once it exists, its own


def test_a_new_networks_gateway_holds_with_an_aux_address_too(engines, monkeypatch):
    """`--gateway .254 --aux-address ...` on a new network: the aux address made the network first,
    with gateway .1, and CreateNetwork kept it; the registry said .1, Docker .254. And a plugin
    upgraded before its agent: the agent refuses keep and gateway, the address is reserved as before."""
    from dataplane.core.errors import UsageError
    e = engines["h1"]
    gw = {"RequestAddressType": docker_ipam.GATEWAY}

    def create(nid, subnet, vni):
        pool = ok(e, "/IpamDriver.RequestPool", {"AddressSpace": "dataplane", "Pool": subnet,
                                                 "Options": {"vni": str(vni)}})
        got = ok(e, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": subnet[:-4] + "254",
                                                   "Options": gw})
        ok(e, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": subnet[:-4] + "5"})
        ok(e, "/NetworkDriver.CreateNetwork", {"NetworkID": nid, "Options": {GEN: {}}, "IPv4Data": [
            {"AddressSpace": "dataplane", "Pool": subnet, "Gateway": got["Address"]}]})
    create("g" * 64, "10.80.0.0/24", 800)
    assert e.agent.reg.network_by_vni(800).gateway == "10.80.0.254"
    real = docker.client.call

    def older(node, op, timeout=60.0, **args):
        if op == "address_reserve" and {"keep", "gateway"} & set(args):
            raise UsageError(f"address_reserve: unknown argument {sorted(args)[0]!r}")
        return real(node, op, **args)
    monkeypatch.setattr(docker, "client", SimpleNamespace(call=older))
    create("h" * 64, "10.81.0.0/24", 801)
    assert [(r["ip"], r["host"]) for r in e.agent.reg.reservations(network="vni801")] == [("10.81.0.5", "h1")]


@pytest.mark.parametrize("body, match", [
    ({"Pool": ""}, "needs the network's subnet (docker network create --subnet)"),
    ({"Pool": SUBNET, "V6": True}, "IPv6 is not supported"),
    ({"Pool": "fd00::/64"}, "IPv6 pool fd00::/64 is not supported"),
    ({"Pool": SUBNET, "SubPool": "10.30.0.16/28"}, "--ip-range is not needed with --ipam-driver dataplane"),
    ({"Pool": SUBNET, "Options": {"color": "red"}}, "unknown IPAM option 'color'"),
    ({"Pool": SUBNET, "Options": {"vni": "0"}}, "bad VNI 0"),
    ({"Pool": "10.30.0.1/24"}, "bad subnet"),
])
def test_pools_the_driver_cannot_serve_are_refused_with_a_reason(engines, body, match):
    refused(engines["h1"], "/IpamDriver.RequestPool", {"AddressSpace": "dataplane", **body}, 400, match)


def test_a_full_subnet_says_so(engines):
    e = engines["h1"]
    pool = create_network(e, "f" * 64, subnet="10.30.0.0/29")
    assert [run(e, "f" * 64, pool, f"{i}" * 64) for i in range(5)] == [f"10.30.0.{i}/29" for i in range(2, 7)]
    refused(e, "/IpamDriver.RequestAddress", {"PoolID": pool}, 409, "no free address in 10.30.0.0/29 (network vni256)")


def test_a_registry_network_another_host_released_is_made_again_by_the_next_address(engines):
    h1, h2 = engines["h1"], engines["h2"]
    pools = {h: create_network(e, "r" * 64) for h, e in engines.items()}     # h1's made the registry network
    ok(h1, "/NetworkDriver.DeleteNetwork", {"NetworkID": "r" * 64})      # h1's engine removes its network
    ok(h1, "/IpamDriver.ReleasePool", {"PoolID": pools["h1"]})
    assert h2.agent.reg.network_by_vni(256) is None
    assert run(h2, "r" * 64, pools["h2"], "e" * 64) == "10.30.0.2/24"
    assert h2.agent.reg.network_by_vni(256).subnet == SUBNET
    stop(h2, "r" * 64, pools["h2"], "e" * 64, "10.30.0.2")
    ok(h2, "/NetworkDriver.DeleteNetwork", {"NetworkID": "r" * 64})
    assert h2.agent.reg.network_by_vni(256) is None, "re-made by h2's driver: released by it too"


def test_an_aux_address_with_ipam_opt_vni_makes_the_network_and_goes_with_it(engines):
    """--aux-address is asked for before CreateNetwork: with --ipam-opt vni=N the IPAM
    makes the registry network; DeleteNetwork (before Docker's ReleaseAddress) drops it."""
    e = engines["h1"]
    pool = ok(e, "/IpamDriver.RequestPool", {"AddressSpace": "dataplane", "Pool": SUBNET, "Options": {"vni": "256"}})
    assert pool["PoolID"] == "10.30.0.0/24;vni=256"
    assert ok(e, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "10.30.0.9"})["Address"] \
        == "10.30.0.9/24"
    ok(e, "/NetworkDriver.CreateNetwork", {"NetworkID": "x" * 64, "Options": {GEN: {"vni": "256"}},
                                           "IPv4Data": [{"AddressSpace": "dataplane", "Pool": SUBNET}]})
    assert e.driver._load()["x" * 64]["created"] is True
    ok(e, "/NetworkDriver.DeleteNetwork", {"NetworkID": "x" * 64})
    ok(e, "/IpamDriver.ReleaseAddress", {"PoolID": pool["PoolID"], "Address": "10.30.0.9"})
    ok(e, "/IpamDriver.ReleasePool", {"PoolID": pool["PoolID"]})
    assert e.agent.reg.network_by_vni(256) is None and e.agent.reg.reservations() == []


def test_an_address_before_any_network_names_its_vni_is_refused(engines):
    refused(engines["h1"], "/IpamDriver.RequestAddress", {"PoolID": SUBNET, "Address": "10.30.0.9"}, 404,
            "no registry network has subnet 10.30.0.0/24")


def test_one_subnet_on_two_vnis_needs_the_vni_in_the_pool(engines):
    e = engines["h1"]
    for nid, vni in (("p" * 64, 256), ("q" * 64, 257)):
        create_network(e, nid, vni=vni)
    refused(e, "/IpamDriver.RequestAddress", {"PoolID": SUBNET}, 409,
            "this engine's dataplane networks on 10.30.0.0/24 have VNIs 256, 257: create them with --ipam-opt vni=N")
    assert run(e, "q" * 64, "10.30.0.0/24;vni=257", "g" * 64) == "10.30.0.2/24"
    assert claims(e) == {"vni257/10.30.0.2": docker.endpoint_id("g" * 64)}


def test_a_network_with_dockers_own_ipam_is_as_before(engines):
    """No reservation taken over at CreateEndpoint, none left at DeleteEndpoint."""
    e = engines["h1"]
    ok(e, "/NetworkDriver.CreateNetwork", {"NetworkID": "o" * 64, "Options": {GEN: {"vni": "256"}},
                                           "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": SUBNET}]})
    assert e.driver._load()["o" * 64]["ipam"] is False
    e.agent.reg.address_reserve("vni256", "h1", e.agent.leases.lease, ip="10.30.0.7")
    refused(e, "/NetworkDriver.CreateEndpoint", {"NetworkID": "o" * 64, "EndpointID": "k" * 64,
                                                  "Interface": {"Address": "10.30.0.7/24"}}, 200,
            "disjoint address ranges")
    ok(e, "/NetworkDriver.CreateEndpoint", {"NetworkID": "o" * 64, "EndpointID": "k" * 64,
                                            "Interface": {"Address": "10.30.0.8/24"}})
    ok(e, "/NetworkDriver.DeleteEndpoint", {"NetworkID": "o" * 64, "EndpointID": "k" * 64})
    assert list(claims(e)) == ["vni256/10.30.0.7"] and len(e.agent.reg.reservations()) == 1


@pytest.mark.parametrize("path, body, status", [
    ("/IpamDriver.RequestAddress", {"PoolID": ["x"]}, 400),
    ("/IpamDriver.RequestAddress", {"PoolID": "10.30.0.0/24;color=red"}, 400),
    ("/IpamDriver.ReleaseAddress", {"PoolID": SUBNET}, 400),
    ("/IpamDriver.ReleasePool", {"PoolID": 7}, 400),
    ("/IpamDriver.Nope", {}, 400),
])
def test_ipam_errors_are_a_failure_status_with_err(engines, path, body, status):
    """Docker reads an IPAM reply's error from "Error", so a 200 with "Err" would be a
    success with no address; any other status is a failure carrying Err's text."""
    got, reply = post(engines["h1"], path, body)
    assert got == status and reply["Err"].startswith("dataplane: ")


def test_the_agent_not_registered_yet_is_a_failure_not_an_address(engines):
    e = engines["h1"]
    pool = create_network(e, "t" * 64)
    e.agent.leases.lease = 0
    refused(e, "/IpamDriver.RequestAddress", {"PoolID": pool}, 500, "is not registered in the registry yet")


# --- what the agent makes of a reservation --------------------------------------------

NET = Network(name="blue", vni=100, subnet="10.0.100.0/24", gateway="10.0.100.1", mtu=1450, port=4789)
H2 = Host(name="h2", vtep="192.0.2.2", port=4789)
WEB = Endpoint(id="web", network="blue", host="h2", mac="02:00:00:00:64:0b", ip="10.0.100.11")


def test_a_reservation_in_the_view_installs_nothing_and_is_no_bad_record():
    view = RegistryView(rev=1, networks={"blue": NET}, hosts={"h2": H2}, endpoints={"web": WEB},
                        macs={f"blue/{WEB.mac}": "web"}, ipam={f"blue/{WEB.ip}": "web"})
    facts = reconcile.LocalFacts(me="h1", port=4789, served=frozenset({100}), local={})
    before = reconcile.desired(view, facts)
    bad = []
    dirty = view.apply(Event(key("ipam", "blue", "10.0.100.12"), reservation_value("h2"), 2),
                       on_bad=lambda k, why: bad.append((k, why)))
    assert bad == [] and dirty == set()
    after = reconcile.desired(view, facts)
    assert after.entries == before.entries and after.skipped == {}
    coarse, fine = view.take_changes()
    p = reconcile.patch(view, facts, 100, fine[100])
    assert (p.fdb, p.neigh, p.skipped) == ({}, {"10.0.100.12": None}, {})


def test_the_endpoint_id_charset_cannot_spell_a_reservation():
    value = reservation_value("h1").decode()
    with pytest.raises(DataplaneError):
        Endpoint.make(value, "blue", "h1", "02:00:00:00:00:01", "10.0.100.2")


def releases_refused(monkeypatch):
    """network_release fails as it does while the agent restarts; the real call is returned."""
    from dataplane.agent.client import AgentNotRunning
    real = docker.client.call

    def restarting(node, op, timeout=60.0, **args):
        if op == "network_release":
            raise AgentNotRunning(f"the agent of node {node} is not running")
        return real(node, op, **args)
    monkeypatch.setattr(docker, "client", SimpleNamespace(call=restarting))
    return real


def test_a_release_the_agent_could_not_take_is_done_at_a_later_request(engines, monkeypatch):
    """DeleteNetwork while the agent restarts: Docker only logs the error and forgets the
    network, so the registry network this driver made was never released. It is kept as
    pending (in /var/lib, durably) and released at the next request the driver serves."""
    e = engines["h1"]
    create_network(e, "d" * 64)
    assert e.driver._load()["d" * 64]["created"] and e.agent.reg.network_by_vni(256) is not None
    real = releases_refused(monkeypatch)
    status, reply = post(e, "/NetworkDriver.DeleteNetwork", {"NetworkID": "d" * 64})
    assert "not running" in reply.get("Err", ""), reply                # the network driver's Err, at 200
    assert "d" * 64 not in e.driver._load() and e.agent.reg.network_by_vni(256) is not None
    monkeypatch.setattr(docker, "client", SimpleNamespace(call=real))      # the agent is back
    create_network(e, "f" * 64, vni=300, subnet="10.31.0.0/24")          # any later request
    assert e.agent.reg.network_by_vni(256) is None, "released at last"
    assert e.driver._pending() == []


def test_a_pending_release_is_done_at_the_next_container_too(engines, monkeypatch):
    """Pending releases were tried at CreateNetwork and DeleteNetwork only: on an engine that
    then only ran containers the registry network stayed, its VNI and subnet taken."""
    e = engines["h1"]
    create_network(e, "d" * 64)
    pool = create_network(e, "f" * 64, vni=300, subnet="10.31.0.0/24")
    real = releases_refused(monkeypatch)
    post(e, "/NetworkDriver.DeleteNetwork", {"NetworkID": "d" * 64})
    monkeypatch.setattr(docker, "client", SimpleNamespace(call=real))      # the agent is back
    run(e, "f" * 64, pool, "c" * 64)                                      # a container, nothing else
    assert e.agent.reg.network_by_vni(256) is None and e.driver._pending() == []


def test_one_release_that_keeps_failing_holds_up_no_other(engines, monkeypatch):
    """A pending release the agent keeps refusing (here VNI 256's) stopped every later one:
    the loop ended at its first failure, and DeleteNetwork of another network answered with
    256's error and left its own registry network behind. Now each is tried; a request is
    failed only by the release of the network it deleted."""
    from dataplane.core.errors import Conflict
    e = engines["h1"]
    create_network(e, "d" * 64)
    create_network(e, "f" * 64, vni=300, subnet="10.31.0.0/24")
    real = docker.client.call

    def refusing(node, op, timeout=60.0, **args):
        if op == "network_release" and args["vni"] == 256:
            raise Conflict("network vni256 has endpoints on h2: remove them first")
        return real(node, op, **args)
    monkeypatch.setattr(docker, "client", SimpleNamespace(call=refusing))
    _, reply = post(e, "/NetworkDriver.DeleteNetwork", {"NetworkID": "d" * 64})
    assert "remove them first" in reply.get("Err", ""), reply
    _, reply = post(e, "/NetworkDriver.DeleteNetwork", {"NetworkID": "f" * 64})
    assert "Err" not in reply or not reply["Err"], reply
    assert e.agent.reg.network_by_vni(300) is None, "its own network released"
    assert e.driver._pending() == [256], "the other still pending"


def test_a_network_this_host_cannot_serve_is_not_left_created(tmp_path, monkeypatch):
    """network_ensure made the registry network, then serving it here was refused (an MTU the
    underlay cannot carry): the network stayed with that MTU, so every host's next request with
    a corrected one got "MTU 8950, not 1450" (Docker and CNI alike). It is now taken back."""
    from dataplane.core.errors import UsageError
    ag = Agent(f"sqlite://{tmp_path}/registry.db", "h1")

    def refuse(agent, net):
        raise UsageError(f"network {net.name}: MTU {net.mtu}, but this uplink carries at most 1450")
    monkeypatch.setattr(runtime_ops, "serve", refuse)
    try:
        with pytest.raises(UsageError, match="at most 1450"):
            ag.call("network_ensure", {"vni": 300, "subnet": "10.3.0.0/24", "mtu": 8950})
        assert ag.reg.network_by_vni(300) is None
        ag.reg.network_create("kept", 301, subnet="10.4.0.0/24", mtu=8950)   # made by someone else: stays
        with pytest.raises(UsageError):
            ag.call("network_ensure", {"vni": 301})
        assert ag.reg.network_by_vni(301) is not None
    finally:
        ag.reg.close()


def test_a_registry_network_two_docker_networks_share_goes_with_the_last(engines):
    """Whether the registry network may be released was kept per Docker network (made by this
    one's request, or not): the second Docker network on the VNI never released it."""
    e = engines["h1"]
    create_network(e, "a" * 64)             # makes the registry network
    create_network(e, "b" * 64)             # maps onto it
    ok(e, "/NetworkDriver.DeleteNetwork", {"NetworkID": "a" * 64})
    assert e.agent.reg.network_by_vni(256) is not None, "the other Docker network still maps to it"
    ok(e, "/NetworkDriver.DeleteNetwork", {"NetworkID": "b" * 64})
    assert e.agent.reg.network_by_vni(256) is None


def test_a_registry_network_is_released_by_the_last_host_that_uses_it(engines):
    """h1's engine made it and let go first, while h2's container still used it (in use: kept);
    h2's engine, whose request had not made it, never released it when it let go last."""
    h1, h2 = engines["h1"], engines["h2"]
    create_network(h1, "a" * 64)
    pool = create_network(h2, "c" * 64)
    addr = run(h2, "c" * 64, pool, "e" * 64)
    ok(h1, "/NetworkDriver.DeleteNetwork", {"NetworkID": "a" * 64})
    assert h1.agent.reg.network_by_vni(256) is not None, "h2's container uses it"
    stop(h2, "c" * 64, pool, "e" * 64, addr)
    ok(h2, "/NetworkDriver.DeleteNetwork", {"NetworkID": "c" * 64})
    assert h2.agent.reg.network_by_vni(256) is None, "released by the last host"
    assert h2.agent.reg.network_create("again", 256, subnet="10.40.0.0/24").subnet == "10.40.0.0/24"


def test_an_operators_network_is_never_released_by_docker(engines):
    e = engines["h1"]
    e.agent.reg.network_create("ops", 256, subnet=SUBNET)       # `dataplane network create`
    create_network(e, "a" * 64)
    ok(e, "/NetworkDriver.DeleteNetwork", {"NetworkID": "a" * 64})
    assert e.agent.reg.network_by_vni(256) is not None


def test_a_network_released_elsewhere_is_made_again_as_it_was(engines):
    """h1's engine released the registry network while h2's Docker network still mapped to it
    (no containers anywhere); h2's next container made it again from the VNI alone: named
    vni256, with h2's MTU, so h1's next `-o network=blue -o mtu=1400` was refused."""
    h1, h2 = engines["h1"], engines["h2"]
    spaces = ok(h1, "/IpamDriver.GetDefaultAddressSpaces")["LocalDefaultAddressSpace"]

    def create(e, nid):
        pool = ok(e, "/IpamDriver.RequestPool", {"AddressSpace": spaces, "Pool": SUBNET, "SubPool": "",
                                                 "Options": {}, "V6": False})
        ok(e, "/NetworkDriver.CreateNetwork", {
            "NetworkID": nid, "Options": {GEN: {"vni": "256", "network": "blue", docker.MTU_OPTION: "1400"}},
            "IPv4Data": [{"AddressSpace": spaces, "Pool": pool["Pool"], "Gateway": pool["Data"][docker_ipam.GATEWAY]}],
            "IPv6Data": []})
        return pool["PoolID"]
    create(h1, "a" * 64)
    pool = create(h2, "c" * 64)
    ok(h1, "/NetworkDriver.DeleteNetwork", {"NetworkID": "a" * 64})
    assert h1.agent.reg.network_by_vni(256) is None, "released: no container anywhere"
    run(h2, "c" * 64, pool, "e" * 64)
    again = h2.agent.reg.network_by_vni(256)
    assert (again.name, again.mtu) == ("blue", 1400)


def test_ipam_opt_vni_alone_puts_every_engines_network_on_that_vni(engines):
    """`--ipam-driver dataplane --ipam-opt vni=300` without `-o vni`: CreateNetwork is not told
    the pool's VNI, so each engine's network took an automatic VNI of its own (h1 4096, h2 4097:
    containers apart) while the addresses were reserved in VNI 300. Differing VNIs are refused."""
    vnis = {}
    for h, nid in (("h1", "d1"), ("h2", "d2")):
        e = engines[h]
        spaces = ok(e, "/IpamDriver.GetDefaultAddressSpaces")
        space = spaces["LocalDefaultAddressSpace"]
        pool = ok(e, "/IpamDriver.RequestPool", {"AddressSpace": space, "Pool": SUBNET, "SubPool": "",
                                                 "Options": {"vni": "300"}, "V6": False})
        v4 = {"AddressSpace": space, "Pool": pool["Pool"], "Gateway": pool["Data"][docker_ipam.GATEWAY]}
        body = {"NetworkID": nid, "Options": {GEN: {}}, "IPv6Data": [], "IPv4Data": [v4]}
        if h == "h2":
            refused(e, "/NetworkDriver.CreateNetwork", {**body, "Options": {GEN: {"vni": "301"}}}, 200,
                    "-o vni=301 and --ipam-opt vni=300 differ")
        ok(e, "/NetworkDriver.CreateNetwork", body)
        vnis[h] = e.driver._network(nid)["vni"]
        run(e, nid, pool["PoolID"], "ep" + h)
    assert vnis == {"h1": 300, "h2": 300}
    assert sorted(n.vni for n in engines["h1"].agent.reg.networks()) == [300]


def test_an_aux_address_outlives_its_hosts_lease(engines):
    """Docker asks for --aux-addresses once (no replay). Under the host's lease their reservations
    went at a reboot (the lease lapses), and any engine could then hand them to a container.
    Reserved between RequestPool and CreateNetwork, they are kept under no lease; a container's
    address asked for later still lives under the lease until its endpoint takes it over."""
    h1, h2 = engines["h1"], engines["h2"]
    pool = ok(h1, "/IpamDriver.RequestPool", {"AddressSpace": "dataplane", "Pool": SUBNET, "Options": {"vni": "256"}})
    ok(h1, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "10.30.0.9"})
    ok(h1, "/NetworkDriver.CreateNetwork", {"NetworkID": "x" * 64, "Options": {GEN: {"vni": "256"}},
                                            "IPv4Data": [{"AddressSpace": "dataplane", "Pool": SUBNET}]})
    later = ok(h1, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": ""})["Address"]
    h1.agent.reg.kv.lease_revoke(h1.agent.leases.lease)             # h1 rebooted: its lease lapsed
    assert [(r["ip"], r["host"]) for r in h1.agent.reg.reservations()] == [("10.30.0.9", "h1")], later
    refused(h2, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "10.30.0.9"}, 409, "in use")
    ok(h1, "/IpamDriver.ReleaseAddress", {"PoolID": pool["PoolID"], "Address": "10.30.0.9"})
    assert h1.agent.reg.reservations() == [], "released by Docker as before"


def test_a_host_that_leaves_takes_its_aux_addresses_along(engines, tmp_path, monkeypatch):
    """`dataplane down` revoked the lease; a reservation under none stayed, and kept its network
    "in use" on every host (not released) until `registry forget-host`."""
    from dataplane.agent import local
    h1 = engines["h1"]
    monkeypatch.setattr(state, "RUN_ROOT", str(tmp_path / "run"))
    pool = ok(h1, "/IpamDriver.RequestPool", {"AddressSpace": "dataplane", "Pool": SUBNET, "Options": {"vni": "256"}})
    ok(h1, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "10.30.0.9"})
    ok(h1, "/NetworkDriver.CreateNetwork", {"NetworkID": "x" * 64, "Options": {GEN: {}},
                                            "IPv4Data": [{"AddressSpace": "dataplane", "Pool": SUBNET}]})
    ag = h1.agent
    local.leave(SimpleNamespace(reg=ag.reg, me="h1", leases=ag.leases, node=SimpleNamespace(name="h1")))
    assert ag.reg.reservations() == []


def test_an_aux_address_without_ipam_opt_vni_is_refused_not_guessed(engines, monkeypatch):
    """Docker asks for an --aux-address before CreateNetwork, which alone is told `-o vni`: on a new
    subnet the IPAM said "name its VNI (-o vni=N ...)", given; with another network on the subnet
    (VNI 300) it reserved the address there, and containers of the new network were handed it."""
    e = engines["h1"]
    e.agent.reg.network_create("other", 300, SUBNET)
    pool = ok(e, "/IpamDriver.RequestPool", {"AddressSpace": "dataplane", "Pool": SUBNET, "Options": {}})
    refused(e, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "10.30.0.9"}, 400,
            "needs --ipam-opt vni=N")
    assert e.agent.reg.reservations() == []
    ok(e, "/IpamDriver.ReleasePool", {"PoolID": pool["PoolID"]})         # Docker's rollback
    # A network of this engine on the subnet (VNI 300): its containers' addresses are no aux ones,
    ok(e, "/IpamDriver.RequestPool", {"AddressSpace": "dataplane", "Pool": SUBNET, "Options": {}})
    ok(e, "/NetworkDriver.CreateNetwork", {"NetworkID": "y" * 64, "Options": {GEN: {"vni": "300"}},
                                           "IPv4Data": [{"AddressSpace": "dataplane", "Pool": SUBNET}]})
    assert ok(e, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": ""})["Address"] == "10.30.0.2/24"
    # but a second network on it (-o vni=400) with an aux address was reserved in VNI 300's (a review):
    ok(e, "/IpamDriver.RequestPool", {"AddressSpace": "dataplane", "Pool": SUBNET, "Options": {}})
    refused(e, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "10.30.0.9"}, 400,
            "needs --ipam-opt vni=N")
    monkeypatch.setattr(docker_ipam, "AUX_WINDOW_S", 0.0)                # no CreateNetwork came (another driver)
    assert ok(e, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": ""})["Address"] == "10.30.0.3/24"


def test_an_aux_address_before_a_named_network_says_how_and_leaves_nothing(engines):
    """`--ipam-opt vni=500 --aux-address r=10.30.0.5 -o network=foo`: the aux address made network
    vni500 (no name, this host's MTU), CreateNetwork refused it ("not foo"), Docker's rollback left
    it, and every later try failed the same way until `dataplane network rm vni500`."""
    e = engines["h1"]

    def create(nid):
        pool = ok(e, "/IpamDriver.RequestPool", {"AddressSpace": "dataplane", "Pool": SUBNET,
                                                 "Options": {"vni": "500"}})
        ok(e, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "10.30.0.5"})
        return post(e, "/NetworkDriver.CreateNetwork", {
            "NetworkID": nid, "Options": {GEN: {"network": "foo"}},
            "IPv4Data": [{"AddressSpace": "dataplane", "Pool": SUBNET}]})[1], pool["PoolID"]
    reply, pool = create("z" * 64)
    assert "dataplane network create NAME --vni 500" in reply.get("Err", ""), reply
    ok(e, "/IpamDriver.ReleaseAddress", {"PoolID": pool, "Address": "10.30.0.5"})   # Docker's rollback
    ok(e, "/IpamDriver.ReleasePool", {"PoolID": pool})
    assert e.agent.reg.networks() == [] and e.agent.reg.reservations() == []
    e.agent.reg.network_create("foo", 500, SUBNET)                                  # as the error says
    reply, pool = create("z" * 64)
    assert reply == {}, reply
    assert e.driver._network("z" * 64)["name"] == "foo"
