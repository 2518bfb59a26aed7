"""A node's own record of what it created: typed, and read and written only here.

One JSON file and one lock per node under /run/dataplane/<node>/. `up` writes
it, every later command reads it, and `down` undoes what it lists. These are
the *node's* networks and endpoints (what this VTEP serves and hosts); the
registry's records, shared by every host, are dataplane.registry.records.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import orjson

from . import model
from .errors import DataplaneError, NotFound, file_errors

RUN_ROOT = "/run/dataplane"          # what the running node made: gone at a reboot, like the pins and links
LIB_ROOT = "/var/lib/dataplane"      # what must outlive a reboot: how to bring the node back, the Docker map
VIEW_CACHE = "registry-view.json"    # under lib_dir: the agent's registry view, for a warm start (agent/cache.py)


@dataclass
class NodeConfig:
    """What the operator chose at `up` (the fast path's dp_config is made from it)."""
    underlay: str
    local_ip: str
    port: int = model.VXLAN_PORT
    peer_check: bool = True      # decapsulate only from the VNI's peers (registry or static): on by default
    xdp_guard: bool = False
    rx_gro: bool = True          # node/rxgro.py: dpgro0 holds the port for the uplink's GRO
    vxlan_guard: bool = True     # node/vxlanguard.py: no containers' VXLAN forwarded onto the underlay
    fdb_age_s: int = model.FDB_AGE_DEFAULT_S
    storm_rate: int = model.STORM_RATE_DEFAULT     # broadcast/unknown frames/s per endpoint; 0: no limit
    storm_burst: int = model.STORM_BURST_DEFAULT
    overlay_storm_rate: int = model.OVERLAY_STORM_RATE_DEFAULT   # local copies/s per network of floods from
                                                                 # the underlay; 0: no limit
    overlay_storm_host_rate: int = model.OVERLAY_HOST_RATE_DEFAULT   # the same, all networks together
    overlay_storm_peer_rate: int | None = None   # the same, one peer in one network; None: half the network's
    learn_rate: int = model.LEARN_RATE_DEFAULT     # new MACs learned per second per network; 0: no limit
    metrics_address: str = "127.0.0.1:9469"        # the agent's /metrics and /healthz; "": none
    metrics_web_config: str = ""                   # their TLS and passwords (agent/metrics_web.py); "": none
    src_port_min: int = model.SRC_PORT_MIN
    src_port_max: int = model.SRC_PORT_MAX


@dataclass
class Uplink:
    """The underlay interface as `up` found it."""
    ifindex: int
    mtu: int
    mac: str
    gso_max: int                 # gso_ipv4_max_size: endpoints inherit it (BIG TCP)


@dataclass
class ServedNetwork:
    """A VNI this node serves."""
    vni: int
    subnet: str
    mtu: int
    slot: int                    # its counters' index in dp_stats (1..DP_MAP_NETWORKS-1)


@dataclass
class Gateway:
    """A VNI's way out of the overlay on this node (node/gateway.py): the router side
    holds the network's gateway address; the fast path serves the port side."""
    vni: int
    ip: str                      # the network's gateway address
    mac: str
    subnet: str
    router: str                  # interface with the address, in the node's namespace
    port: str                    # its veth peer, where from_endpoint runs
    ifindex: int = 0             # the port's


@dataclass
class LocalEndpoint:
    """An endpoint whose veth is on this node."""
    name: str                    # the endpoint's id (the registry's)
    vni: int
    ip: str
    mac: str
    host_ifname: str
    ifindex: int = 0
    # Who owns the container side when we did not create it: {"netns": PATH,
    # "ifname": IF} (CNI: moved into the runtime's namespace) or {"peer": IF}
    # (Docker: left in the host namespace for the engine to move), plus the
    # runtime's own keys (container id, network name) for CHECK and GC.
    # None: the namespace `netns` is ours, made and removed with the endpoint.
    sandbox: dict | None = None
    netns: str | None = None     # our sandbox's namespace (see node.endpoints.own_netns)
    # "creating": the intent, saved before anything is made; "ready" once all of it is.
    # A crash in between leaves "creating", and the next start sweeps it away.
    phase: str = "ready"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class NodeState:
    node: str
    netns: str | None
    pin_dir: str
    config: NodeConfig
    uplink: Uplink
    networks: dict[int, ServedNetwork] = field(default_factory=dict)
    endpoints: dict[str, LocalEndpoint] = field(default_factory=dict)
    peers: dict[int, list[str]] = field(default_factory=dict)           # static (--peer)
    registry_peers: dict[int, list[str]] = field(default_factory=dict)  # the agent's
    flooded: dict[int, list[str]] = field(default_factory=dict)         # the flood list dp_vteps holds
    # VTEPs that left a VNI's registry flood list (their host's lease lapsed, say during an agent
    # restart longer than the TTL) and stay accepted peers until the wall time given.
    parted: dict[int, dict[str, float]] = field(default_factory=dict)
    map_sizes: dict[str, int] = field(default_factory=dict)
    registry: str | None = None
    host_name: str | None = None
    lease_ttl: int | None = None
    restore_forwarding: str | None = None   # the uplink's forwarding sysctl before `up`
    gateways: dict[int, Gateway] = field(default_factory=dict)          # vni -> its way out (egress)
    ways_forwarding: dict[str, str] = field(default_factory=dict)      # node/forwarding.py: values before
    # vni -> the host's own address in the subnet, on the gateway's router (node/gateway.py). Here,
    # not in Gateway: an older version makes a Gateway of exactly the fields it knows. Put on the
    # router only while router_alias says the attached programs handle its MAC (DP_LOCAL_ALIAS):
    # this version's `up` loaded them (an agent restarted after an upgrade runs over the old ones).
    router_ips: dict[int, str] = field(default_factory=dict)
    router_alias: bool = False
    # How `up` attached the programs: "tcx", or "tc" (a cls_bpf filter) on a node an older version
    # brought up, whose pinned programs still end a consumed frame with TC_ACT_STOLEN: a new
    # agent attaching those at tcx would hand such frames to the host stack (kernel/tcx.py).
    hook: str = "tc"
    rx_gro: str = ""                        # node/rxgro.py: "on", or "off: why"
    # Which of endpoints._create's sandbox-end settings all endpoints have (ENDS_MADE there; was the bool
    # tunnel_gso_swept, 1), applied once by sweep.py to those an older version made. Here, not per
    # endpoint: an older agent still running reads this file, and ignores only keys of the node's own.
    ends_swept: int = 0

    def local_endpoints(self, vni: int) -> list[LocalEndpoint]:
        """The VNI's endpoints that exist in full (not those being created)."""
        return [e for e in self.endpoints.values() if e.vni == vni and e.phase == "ready"]

    def router_ip(self, vni: int) -> str | None:
        """The host address the VNI's gateway router holds here, if any (router_ips)."""
        return self.router_ips.get(vni) if self.router_alias and vni in self.gateways else None

    @classmethod
    def from_json(cls, d: dict) -> NodeState:
        ints = lambda m: {int(k): v for k, v in (m or {}).items()}  # noqa: E731 - JSON keys are strings
        return cls(
            node=d["node"], netns=d.get("netns"), pin_dir=d["pin_dir"],
            config=NodeConfig(**{k: v for k, v in d["config"].items() if k in NodeConfig.__dataclass_fields__}),
            uplink=Uplink(**d["uplink"]),
            networks={v: ServedNetwork(**n) for v, n in ints(d.get("networks")).items()},
            endpoints={k: _endpoint(e) for k, e in (d.get("endpoints") or {}).items()},
            peers=ints(d.get("peers")), registry_peers=ints(d.get("registry_peers")),
            flooded=ints(d.get("flooded")), parted=ints(d.get("parted")), map_sizes=dict(d.get("map_sizes") or {}),
            registry=d.get("registry"), host_name=d.get("host_name"), lease_ttl=d.get("lease_ttl"),
            restore_forwarding=d.get("restore_forwarding"), ways_forwarding=dict(d.get("ways_forwarding") or {}),
            gateways={v: Gateway(**g) for v, g in ints(d.get("gateways")).items()},
            router_ips=ints(d.get("router_ips")), router_alias=d.get("router_alias", False), hook=d.get("hook", "tc"),
            rx_gro=d.get("rx_gro", ""), ends_swept=d.get("ends_swept", int(bool(d.get("tunnel_gso_swept")))))


_EP_FIELDS = frozenset(LocalEndpoint.__dataclass_fields__)


def _endpoint(e: dict) -> LocalEndpoint:
    """An entry with this version's fields exactly (the usual case) becomes the object's own
    dict, without __init__ (0.16 against 0.68 ms at 1,000 endpoints); keys of a newer version's
    fields are left out, and an older version's entry takes the defaults of what it lacks."""
    if e.keys() == _EP_FIELDS:
        ep = object.__new__(LocalEndpoint)
        ep.__dict__ = e
        return ep
    try:
        return LocalEndpoint(**e)
    except TypeError:
        return LocalEndpoint(**{f: v for f, v in e.items() if f in _EP_FIELDS})


def node_dir(node: str) -> str:
    return os.path.join(RUN_ROOT, node)


def _path(node: str) -> str:
    return os.path.join(node_dir(node), "state.json")


def hold(node: str, name: str) -> int | None:
    """Take the node's lock `name` for as long as this process lives (the fd is
    never closed; the kernel lets go when the process dies, even by SIGKILL).
    None if another process holds it."""
    d = node_dir(node)
    os.makedirs(d, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(d, name), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextmanager
def locked(node: str):
    """Serialise commands on one node (two `endpoint add` at once must not race on slots)."""
    d = node_dir(node)
    os.makedirs(d, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(d, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(path: str, what: str) -> bytes | None:
    """The file's bytes; None if it is not there. Unreadable (not root): the DataplaneError of its cause."""
    try:
        with file_errors(f"cannot read {what}"), open(path, "rb") as f:
            return f.read()
    except NotFound:
        return None


def load(node: str) -> NodeState | None:
    """The node's state; None if it is not up. Unreadable (not root) or damaged: a DataplaneError."""
    raw = _read(_path(node), f"the state of node {node}")
    return None if raw is None else _parse(node, raw)    # parsed anew: nothing shared between loads


_shared: dict[str, tuple[bytes, NodeState]] = {}


def load_shared(node: str) -> NodeState | None:
    """The node's state to read, never to change: one parse per version of the file, shared by
    every caller in this process until the file's bytes change (whoever wrote it). At 1,000
    endpoints a parse takes 1.2 ms and an endpoint add made about nine, between the agent's
    handler and its main loop, all under the agent's lock (DESIGN, "An endpoint add's fixed
    cost"). What is to be changed and saved comes from load() (Node.changing)."""
    raw = _read(_path(node), f"the state of node {node}")
    if raw is None:
        return None
    hit = _shared.get(node)
    if hit is not None and hit[0] == raw:
        return hit[1]
    st = _parse(node, raw)
    _shared[node] = (raw, st)
    return st


def _parse(node: str, raw: bytes) -> NodeState:
    try:
        return NodeState.from_json(orjson.loads(raw))
    except (ValueError, KeyError, TypeError) as e:
        raise DataplaneError(f"the state of node {node} is damaged ({_path(node)}: {type(e).__name__}: {e}): "
                             "move the file aside, then `dataplane up` makes the node again (the sandboxes "
                             "the old state knew of are left to remove by hand)") from None


def save(st: NodeState) -> None:
    write_json(_path(st.node), st)       # orjson walks the dataclasses itself (no asdict copy)


def lib_dir(node: str) -> str:
    return os.path.join(LIB_ROOT, node)


def write_json(path: str, obj, durable: bool = False) -> None:
    """Atomically, 0600, the directory 0700: a torn or world-readable file is never seen.
    obj: JSON types or dataclasses of them (int keys become strings, as json does).
    orjson, not json + asdict: a node's state is written on every change, and with
    1,000 endpoints the pure-Python dump was a quarter of an agent's endpoint_add.
    durable: what must outlive a power cut (under LIB_ROOT) is on disk, name included,
    before this returns (the file, then its directory, synced): a rename alone may reach
    the disk before the data, leaving an empty file after the cut."""
    data = orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    d = os.path.dirname(path)
    os.makedirs(d, mode=0o700, exist_ok=True)
    tmp = path + ".new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def save_boot(node: str, args: dict) -> None:
    """What `up` was asked, so that `up --restore` (at boot) brings the node back."""
    write_json(os.path.join(lib_dir(node), "node.json"), args, durable=True)


def load_boot(node: str) -> dict | None:
    """How `up` was last asked for node (None: never, or taken down since)."""
    path = os.path.join(lib_dir(node), "node.json")
    raw = _read(path, f"how node {node} was brought up")
    if raw is None:
        return None
    try:
        out = json.loads(raw)
        if isinstance(out, dict):
            return out
    except ValueError:
        pass
    raise DataplaneError(f"{path} is damaged: `dataplane up` with the node's options writes it again")


def remove_boot(node: str) -> None:
    """`down`: the node is not to come back at boot, nor its agent to start from its
    registry view (the Docker map stays: Docker keeps its networks)."""
    for name in ("node.json", VIEW_CACHE):
        try:
            os.unlink(os.path.join(lib_dir(node), name))
        except FileNotFoundError:
            pass
    for d in (lib_dir(node), LIB_ROOT):      # what is left empty goes too
        try:
            os.rmdir(d)
        except OSError:
            break


def remove(node: str) -> None:
    if not node or "/" in node:
        raise ValueError(f"bad node name {node!r}")
    shutil.rmtree(node_dir(node), ignore_errors=True)
    prune()


def prune() -> None:
    """Remove /run/dataplane once nothing is left in it."""
    try:
        os.rmdir(RUN_ROOT)
    except OSError:
        pass
