"""The Docker driver when a step fails or Docker says what it wants (from a review against
libnetwork's remote protocol): Docker ignores a DeleteEndpoint error and never sends it again,
gives up on an endpoint whose CreateEndpoint failed without deleting it, re-sends a request the
plugin's restart cut off, and passes its gateway and some options of its own. Same harness as
test_docker_ipam: the real agent operations over one SQLite registry. Each test failed on the
code before."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dataplane.agent.client import AgentNotRunning, AgentSilent
from dataplane.runtimes import docker
from tests.unit.test_docker_ipam import GEN, SUBNET, claims, create_network, engines, ok, post, run  # noqa: F401

NID, EID, EID2 = "n" * 64, "a" * 64, "b" * 64


def _docker_net(e, nid: str = NID, gateway: str | None = None, **opts) -> None:
    """A network with Docker's own IPAM (what `docker network create -d dataplane --subnet` sends)."""
    data = {"AddressSpace": "LocalDefault", "Pool": SUBNET, **({"Gateway": gateway} if gateway else {})}
    ok(e, "/NetworkDriver.CreateNetwork", {"NetworkID": nid, "Options": {GEN: {"vni": "256", **opts}},
                                           "IPv4Data": [data]})


def _endpoint(e, eid: str, addr: str = "10.30.0.2/24", nid: str = NID) -> tuple[int, dict]:
    return post(e, "/NetworkDriver.CreateEndpoint", {"NetworkID": nid, "EndpointID": eid, "Options": {},
                                                     "Interface": {"Address": addr, "MacAddress": ""}})


def _failing(monkeypatch, op: str, exc, after: bool = False):
    """The agent's op raises exc (after: once it has done the op, as an agent whose answer is lost)."""
    real = docker.client.call

    def call(node, what, /, timeout=60.0, **args):
        if what == op:
            if after:
                real(node, what, **args)
            raise exc
        return real(node, what, **args)
    monkeypatch.setattr(docker, "client", SimpleNamespace(call=call))
    return real


def test_a_delete_endpoint_the_agent_could_not_take_is_done_at_a_later_request(engines, monkeypatch):
    """`docker rm` while the agent restarts: Docker logs the DeleteEndpoint error, frees the address
    in its own IPAM and hands it to the next container, whose CreateEndpoint the registry then
    refused ("in use"), on every `docker run`, for good: the veth, entries and claim stayed."""
    e = engines["h1"]
    _docker_net(e)
    assert _endpoint(e, EID) == (200, {"Interface": {"MacAddress": "02:42:0a:1e:00:02"}})
    real = _failing(monkeypatch, "endpoint_detach", AgentNotRunning("the agent of node h1 is not running"))
    status, reply = post(e, "/NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID})
    assert "not running" in reply.get("Err", ""), reply
    monkeypatch.setattr(docker, "client", SimpleNamespace(call=real))           # the agent is back
    status, reply = _endpoint(e, EID2)                                           # Docker's next: same address
    assert status == 200 and "Err" not in reply, reply
    assert list(e.agent.local.endpoints) == [docker.endpoint_id(EID2)]


def test_with_the_ipam_driver_the_address_is_not_lost(engines, monkeypatch):
    """With `--ipam-driver dataplane` the ReleaseAddress that follows skipped the address an
    endpoint still claimed: lost for good. The later detach frees it."""
    e = engines["h1"]
    pool = create_network(e, NID)
    addr = run(e, NID, pool, EID)
    real = _failing(monkeypatch, "endpoint_detach", AgentNotRunning("the agent of node h1 is not running"))
    post(e, "/NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID})
    monkeypatch.setattr(docker, "client", SimpleNamespace(call=real))
    ok(e, "/IpamDriver.ReleaseAddress", {"PoolID": pool, "Address": addr.split("/")[0]})
    assert run(e, NID, pool, EID2) == addr, "the lowest address again: freed"
    assert docker.endpoint_id(EID) not in e.agent.local.endpoints


def test_an_endpoint_whose_create_was_in_doubt_goes(engines, monkeypatch):
    """The agent attached it but its answer was lost: Docker gave up on the endpoint (no
    DeleteEndpoint follows a failed CreateEndpoint) and it stayed, address and all."""
    e = engines["h1"]
    _docker_net(e)
    real = _failing(monkeypatch, "endpoint_attach", AgentSilent("the agent did not answer"), after=True)
    status, reply = _endpoint(e, EID)
    assert "did not answer" in reply.get("Err", ""), reply
    monkeypatch.setattr(docker, "client", SimpleNamespace(call=real))
    assert _endpoint(e, EID2)[0] == 200 and list(e.agent.local.endpoints) == [docker.endpoint_id(EID2)]
    assert e.driver._detaches() == {}


def test_an_attach_still_on_its_way_is_detached_once_it_is_made(engines, monkeypatch):
    """Its answer lost before the agent made it (still waiting on the registry, say): a detach then
    finds nothing, and taken off the list at that, the endpoint made a moment later stayed."""
    e = engines["h1"]
    _docker_net(e)
    real = _failing(monkeypatch, "endpoint_attach", AgentSilent("the agent did not answer"))
    _endpoint(e, EID)
    monkeypatch.setattr(docker, "client", SimpleNamespace(call=real))
    e.driver.detach_pending()
    assert list(e.driver._detaches()) == [docker.endpoint_id(EID)], "found absent: kept"
    e.agent.call("endpoint_attach", {"id": docker.endpoint_id(EID), "vni": 256, "ip": "10.30.0.2", "prefixlen": 24,
                                     "sandbox": {"peer": docker.peer_ifname(EID), "runtime": "docker",
                                                 "network": NID, "endpoint_id": EID}})     # the agent gets there
    e.driver.detach_pending()
    assert e.driver._detaches() == {} and not e.agent.local.endpoints


def test_an_endpoint_a_plugin_died_attaching_goes(engines, monkeypatch):
    """The plugin died (or was restarted) while the agent made the endpoint: nothing was noted, and
    dockerd's retry of the request comes without its body (its buffer was read by the first try),
    so Docker forgot the endpoint. The attach is on the list before the agent is asked."""
    e = engines["h1"]
    _docker_net(e)
    real = _failing(monkeypatch, "endpoint_attach", SystemExit("killed"), after=True)      # the process goes
    with pytest.raises(SystemExit):
        e.driver.create_endpoint({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.30.0.2/24"}})
    assert list(e.agent.local.endpoints) == [docker.endpoint_id(EID)]
    monkeypatch.setattr(docker, "client", SimpleNamespace(call=real))
    docker.Driver("h1").detach_pending()                                            # the plugin, started again
    assert not e.agent.local.endpoints


def test_dockers_gateway_is_the_networks(engines):
    """`--gateway` was ignored: the registry network took the first address as its gateway,
    which Docker's IPAM then gave to a container, refused as "reserved" on every run."""
    e = engines["h1"]
    _docker_net(e, gateway="10.30.0.254/24")
    assert e.agent.reg.network_by_vni(256).gateway == "10.30.0.254"
    assert _endpoint(e, EID, addr="10.30.0.1/24")[0] == 200
    # Another Docker network on the VNI whose gateway differs (an engine with its own --ip-range,
    # whose first address is Docker's gateway there): taken; the registry network keeps its own,
    # and an address Docker gives that is the registry's gateway is refused with what to do.
    ok(e, "/NetworkDriver.CreateNetwork", {
        "NetworkID": "m" * 64, "Options": {GEN: {"vni": "256"}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": SUBNET, "Gateway": "10.30.0.16/24"}]})
    assert e.agent.reg.network_by_vni(256).gateway == "10.30.0.254"
    status, reply = _endpoint(e, EID2, addr="10.30.0.254/24", nid="m" * 64)
    assert "--gateway 10.30.0.254" in reply.get("Err", ""), reply


@pytest.mark.parametrize("opt, value, err", [("com.docker.network.enable_ipv6", "false", None),
                                             ("com.docker.network.enable_ipv4", "true", None),
                                             ("com.docker.network.enable_ipv6", "true", "IPv6"),
                                             ("com.docker.network.enable_ipv4", "false", "IPv4")])
def test_dockers_own_options_in_the_generic_map(engines, opt, value, err):
    """`-o com.docker.network.enable_ipv6=false` (or a daemon's default-network-opts) reaches the
    driver in the generic options: "unknown option" before."""
    status, reply = post(engines["h1"], "/NetworkDriver.CreateNetwork", {
        "NetworkID": NID, "Options": {GEN: {"vni": "256", opt: value}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": SUBNET}]})
    assert (reply.get("Err") is None) if err is None else err in reply.get("Err", ""), reply
    assert not claims(engines["h1"])


def test_the_default_gateway_is_not_sent_to_an_agent_that_may_not_know_the_argument(engines, monkeypatch):
    """An agent older than network_ensure's gateway refuses the argument ("unknown argument"):
    during an upgrade every CreateNetwork from the new plugin failed. Docker's default gateway,
    the subnet's first address, is what a network gets without it, so it is not sent."""
    e, sent = engines["h1"], []
    real = docker.client.call

    def call(node, op, /, timeout=60.0, **args):
        sent.append((op, set(args)))
        return real(node, op, **args)
    monkeypatch.setattr(docker, "client", SimpleNamespace(call=call))
    _docker_net(e, gateway="10.30.0.1/24")
    _endpoint(e, EID)
    assert all("gateway" not in args for op, args in sent if op == "network_ensure") and len(sent) >= 2


def test_an_attach_that_ends_while_pending_detaches_run_is_left_alone(engines, monkeypatch):
    """Requests run on threads of their own, each running the pending detaches first, from one
    read of the list: an attach that succeeded (its entry taken off, no longer under way) while
    another request went down that list was detached all the same, though Docker had been told
    it exists. Here a pending detach ahead of it on the list lets the attach end first."""
    import threading
    e = engines["h1"]
    _docker_net(e)
    e.driver._note_detach("dk-0000000000000000000000", pending=True)       # ahead of A's in the list
    real, in_attach, go = docker.client.call, threading.Event(), threading.Event()

    def call(node, op, /, timeout=60.0, **args):
        if op == "endpoint_attach":
            in_attach.set()
            go.wait(10)
        if op == "endpoint_detach" and args["id"] == "dk-0000000000000000000000":
            if threading.current_thread() is a:
                raise AgentNotRunning("the agent is not running")     # stays on the list for the other request
            go.set()
            a.join(10)                          # A's attach has ended meanwhile
        return real(node, op, **args)
    monkeypatch.setattr(docker, "client", SimpleNamespace(call=call))
    a = threading.Thread(target=e.driver.create_endpoint,
                         args=({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.30.0.2/24"}},))
    a.start()
    assert in_attach.wait(10)
    e.driver.detach_pending()                  # another request's, which read the list with A's entry on it
    assert list(e.agent.local.endpoints) == [docker.endpoint_id(EID)], "A's endpoint was detached"


def test_a_network_removed_after_a_failed_delete_endpoint_goes_from_the_registry(engines, monkeypatch):
    """`docker rm` while the agent restarts, then `docker network rm`: the release ran before the
    pending detach, found the leftover endpoint ("in use"), counted that as done, and the registry
    network this driver made stayed for good, its VNI and subnet taken. Detaches go first now."""
    e = engines["h1"]
    _docker_net(e)
    assert _endpoint(e, EID)[0] == 200
    real = _failing(monkeypatch, "endpoint_detach", AgentNotRunning("the agent of node h1 is not running"))
    assert "not running" in post(e, "/NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID})[1]["Err"]
    monkeypatch.setattr(docker, "client", SimpleNamespace(call=real))           # the agent is back
    ok(e, "/NetworkDriver.DeleteNetwork", {"NetworkID": NID})
    assert e.agent.reg.networks() == [] and e.agent.local.endpoints == {}


@pytest.mark.parametrize("ipam", [False, True])
def test_a_mac_address_another_endpoint_has_is_said_as_such(engines, ipam):
    """`docker run --mac-address` with another container's MAC was told its address reservation
    was lost ("try again"), or that engines need disjoint --ip-ranges: neither helps."""
    e, mac = engines["h1"], "02:aa:00:00:00:01"
    if ipam:
        pool = create_network(e, NID)
        addrs = [ok(e, "/IpamDriver.RequestAddress", {"PoolID": pool, "Address": "", "Options": {}})["Address"]
                 for _ in range(2)]
    else:
        _docker_net(e)
        addrs = ["10.30.0.2/24", "10.30.0.3/24"]
    for n, (eid, addr) in enumerate(((EID, addrs[0]), (EID2, addrs[1]))):
        status, reply = post(e, "/NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": eid, "Options": {},
                                                                 "Interface": {"Address": addr, "MacAddress": mac}})
        if n == 0:
            assert status == 200 and "Err" not in reply, reply
    assert "--mac-address" in reply["Err"] and "try again" not in reply["Err"] and "ip-range" not in reply["Err"], reply
