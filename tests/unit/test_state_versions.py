"""The node's state file is read by more than one version at a time: after an upgrade
without a reboot, the older agent still runs until it is restarted and reads what the
new `up` wrote. Versions up to ac89e98 build each endpoint with LocalEndpoint(**entry),
so a new key in an endpoint entry makes that agent call the whole state damaged; keys
of the node's own (read one by one with .get) they ignore."""

from __future__ import annotations

from dataclasses import asdict

from dataplane.core.state import LocalEndpoint, NodeConfig, NodeState, Uplink

# What ac89e98 and the versions before it know of an endpoint entry.
KNOWN_TO_OLDER_AGENTS = {"name", "vni", "ip", "mac", "host_ifname", "ifindex", "sandbox", "netns", "phase"}


def node() -> NodeState:
    st = NodeState(node="n1", netns=None, pin_dir="/sys/fs/bpf/x", config=NodeConfig(underlay="eth0", local_ip="10.0.0.1"),
                   uplink=Uplink(ifindex=2, mtu=1500, mac="02:00:00:00:00:01", gso_max=65536))
    st.endpoints["a"] = LocalEndpoint(name="a", vni=256, ip="10.1.0.2", mac="02:00:00:00:00:02", host_ifname="dp0123456789")
    return st


def test_endpoint_entries_keep_the_keys_older_agents_read():
    """A fact about every endpoint that a version adds belongs in NodeState (as
    ends_swept does), or older agents still running fail to read the state."""
    assert set(asdict(node().endpoints["a"])) == KNOWN_TO_OLDER_AGENTS


def test_keys_of_a_newer_version_are_ignored():
    d = asdict(node())
    d["from_the_future"] = 1
    d["config"]["from_the_future"] = 1
    d["endpoints"]["a"]["from_the_future"] = 1
    st = NodeState.from_json(d)
    assert asdict(st.endpoints["a"]) == asdict(node().endpoints["a"])
    assert st.ends_swept == 0, "a state without the key is an older version's"


def test_sandbox_ends_an_older_version_swept_are_read_as_its_version():
    """tunnel_gso_swept (stops 55-57) meant the first of endpoints._create's settings: the
    sweep still gives those endpoints the second (gso_max_segs)."""
    from dataplane.node import endpoints
    d = asdict(node())
    del d["ends_swept"]
    assert NodeState.from_json({**d, "tunnel_gso_swept": True}).ends_swept == 1 < endpoints.ENDS_MADE
    assert NodeState.from_json({**d, "tunnel_gso_swept": False}).ends_swept == 0


def test_an_entry_read_back_is_the_endpoint_written_whatever_its_version():
    """from_json takes an entry with exactly this version's fields as it is; one with a field
    missing (an older version's) gets the default, one with an extra key loses it."""
    ep = node().endpoints["a"]
    ep.sandbox = {"netns": "/proc/1/ns/net", "ifname": "eth1"}
    full = asdict(ep)
    older = {k: v for k, v in full.items() if k not in ("netns", "phase")}
    for entry, want in ((full, ep), (older, LocalEndpoint(**older)), ({**full, "later": 1}, ep)):
        got = NodeState.from_json({**asdict(node()), "endpoints": {"a": dict(entry)}}).endpoints["a"]
        assert type(got) is LocalEndpoint and got == want and asdict(got) == asdict(want)
        assert got.to_dict() == asdict(want) and not hasattr(got, "later")
