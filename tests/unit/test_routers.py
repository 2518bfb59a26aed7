"""A gateway router's host address (agent/routers.py): counted among this host's own by
reconcile and by the neighbour entries' writer, held only over programs that handle its MAC,
keeping no VNI served, and taken from the top of the subnet."""

from __future__ import annotations

from types import SimpleNamespace

from dataplane.agent import apply, routers
from dataplane.agent.reconcile import LocalFacts, desired
from dataplane.core.state import Gateway, NodeState
from dataplane.registry.records import Endpoint, router_id
from tests.unit.test_reconcile import BLUE, H2, ME, PORT, WEB1, ep, world

ROUTER = (router_id(BLUE.vni, ME), "02:42:0a:00:64:fe", "10.0.100.254")


def test_a_remote_record_holding_the_routers_address_is_not_installed_over_it():
    """A record of another host with the address (freed and taken while the views catch up)
    would have its entries written over the router's own, the neighbour entry last."""
    clash = ep("late", BLUE, "h2", 254)
    facts = LocalFacts(me=ME, port=PORT, served=frozenset({100}), local={}, routers={100: [ROUTER]})
    d = desired(world(WEB1, clash), facts, {100})
    assert d.skipped == {"late": f"MAC {clash.mac} / address {clash.ip} on blue clashes with {ROUTER[0]}"}
    assert d.entries[100].neigh == {WEB1.ip: WEB1.mac}


def test_a_router_keeps_no_vni_served_that_left_the_registry():
    """The gateway goes with its VNI; counted as a local endpoint, its address would have kept
    the VNI (and so the gateway) for good."""
    facts = LocalFacts(me=ME, port=PORT, served=frozenset({100}), local={}, routers={100: [ROUTER]})
    assert desired(world(networks=()), facts, {100}).unserve == {100}


def _state(alias: bool) -> NodeState:
    return NodeState(node="n", netns=None, pin_dir="/nowhere", config=None, uplink=None, router_alias=alias,
                     gateways={100: Gateway(100, "10.0.100.1", "02:42:0a:00:64:01", "10.0.100.0/24", "dpgw", "dpgp")},
                     router_ips={100: "10.0.100.254"})


def test_the_routers_address_is_own_only_over_programs_that_handle_it():
    """An agent restarted after an upgrade runs over the programs the older version attached,
    which would send frames to the address's MAC to no interface: the router keeps its old
    addresses until this version's `up` has attached its own (router_alias)."""
    assert apply.own_ips(_state(alias=True), 100) == {"10.0.100.254"}
    assert apply.own_ips(_state(alias=False), 100) == frozenset()
    assert _state(alias=True).router_ip(200) is None


def test_a_routers_address_is_taken_from_the_top_of_the_subnet():
    """Away from where the registry's allocation starts and where a CNI host-local range
    most likely is; the address it had first."""
    v = world(Endpoint(id="x", network="blue", host=H2.name, mac="02:00:00:00:64:fe", ip="10.0.100.254"))
    assert routers._from_the_top(v, BLUE, None)[:3] == ["10.0.100.253", "10.0.100.252", "10.0.100.251"]
    assert routers._from_the_top(v, BLUE, "10.0.100.7")[:2] == ["10.0.100.7", "10.0.100.253"]
    assert len(routers._from_the_top(v, BLUE, None)) == routers.TRIES


def _agent(tmp_path, monkeypatch, router_alias=True):
    """test_view_ahead's agent on a real SQLite registry, with a node that has VNI 100's gateway
    and whose set_address is recorded (the kernel side is test_egress's)."""
    from tests.unit.test_view_ahead import Agent
    ag = Agent(f"sqlite://{tmp_path}/registry.db", "h1")
    net = ag.reg.network_create("blue", 100, "10.0.100.0/28")
    st = _state(router_alias)
    st.router_ips.clear()
    ag.node = SimpleNamespace(require_up=lambda shared=False: st)
    ag.applied = []

    def set_address(node, vni, ip):
        ag.applied.append((vni, ip))
        st.router_ips[vni] = ip
        return True
    monkeypatch.setattr(routers.gateway, "set_address", set_address)
    return ag, net, st


def test_a_gateway_gets_the_highest_free_address_and_keeps_it(tmp_path, monkeypatch):
    ag, net, st = _agent(tmp_path, monkeypatch)
    try:
        ag.reg.endpoint_create("web", "blue", "h2", ip="10.0.100.14")     # the top one is taken
        ag.view.load(ag.reg.snapshot())
        routers.register(ag, net)
        assert ag.applied == [(100, "10.0.100.13")]
        assert ag.reg.endpoint(router_id(100, "h1")).mac == "02:42:0a:00:64:0d"
        routers.register(ag)                                    # nothing to do: no second write
        assert ag.applied == [(100, "10.0.100.13")]
        ag.reg.endpoint_rm(router_id(100, "h1"))                # an operator's `endpoint rm`
        ag.view.load(ag.reg.snapshot())
        routers.register(ag)
        assert ag.reg.endpoint(router_id(100, "h1")).ip == "10.0.100.13", "the address it had, again"
    finally:
        ag.reg.close()


def test_a_record_of_that_name_that_is_not_ours_is_refused_once(tmp_path, monkeypatch, caplog):
    ag, net, st = _agent(tmp_path, monkeypatch)
    try:
        ag.reg.endpoint_create(router_id(100, "h1"), "blue", "h2")    # somebody else's, under our name
        ag.view.load(ag.reg.snapshot())
        routers.register(ag)
        routers.register(ag)
        assert ag.applied == [] and st.router_ips == {}
        said = [r.message for r in caplog.records if "not this host's router's" in r.message]
        assert len(said) == 1, said
    finally:
        ag.reg.close()
