"""What the CLI's `up`, `down` and `network` commands do beyond one node:
the registry networks they name, and the agent process. Nothing is left
half-created: networks a failed `up` made are removed again."""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager

from dataplane.agent import boot_wait, client, metrics_web, process, units
from dataplane.agent.main import LEASE_TTL_DEFAULT
from dataplane.core import model, state
from dataplane.core.errors import Conflict, DataplaneError, NotFound, UsageError
from dataplane.core.notice import after, notice
from dataplane.core.state import NodeState
from dataplane.node import Node, choices, monitor, peers, require_root, vtep
from dataplane.node.sweep import is_repair, sweep
from dataplane import registry
from dataplane.registry.kv import Txn
from dataplane.registry.records import ROUTER_PREFIX, Host, key

log = logging.getLogger("dataplane")
UNDERLAY_WAIT_S = 60.0       # `up --restore` waits this long for the underlay's address
LEAVE_WAIT_S = 30.0        # an agent leaving removes its endpoints' records one by one; then it is stopped


@contextmanager
def opened(url: str | None, node: Node | None = None):
    """The registry at url, else the node's, else the default; closed after use."""
    if not url:
        st = node.state() if node else None
        url = (st.registry if st else None) or registry.DEFAULT_URL
    # A registry that does not answer (a black-holed member) took seconds to say so, silently.
    with after(client.PROGRESS_AFTER_S, f"waiting for the registry at {url}"):
        reg = registry.open_registry(url)
        try:
            yield reg
        finally:
            reg.close()


def registry_mode(node: Node, url: str | None, no_registry: bool) -> str | None:
    """The registry URL `up` runs with (None: no registry): a re-run keeps the node's mode."""
    old = node.state()
    if no_registry and old and old.registry:
        raise Conflict(f"node {node.name} runs with registry {old.registry}; run `dataplane down` first")
    if url or no_registry:
        url = None if no_registry else url
    else:
        url = old.registry if old else registry.DEFAULT_URL
    if old and bool(url) != bool(old.registry):
        raise Conflict(f"node {node.name} is up {'with' if old.registry else 'without'} a registry; "
                       "run `dataplane down` first")
    if url:
        registry.parse_url(url)
    return url


def up(node: Node, url: str | None, vnis, subnet=None, port=None, host_name=None, lease_ttl=None,
       agent: bool = True, **node_args) -> NodeState:
    """The node up, each --vni a registry network, and the agent running and synced."""
    require_root()
    vnis = [model.parse_vni(v) for v in vnis or []]
    if subnet is not None and len(vnis) != 1:
        raise UsageError("--subnet applies to exactly one --vni")
    if url:                            # what the agent would refuse at its start, refused before anything is made
        old = node.state()
        if lease_ttl is not None:
            model.parse_lease_ttl(lease_ttl)
        name = choices.host_name_for(node, host_name, old.host_name if old else None)
        if old and old.host_name and name != old.host_name and process.running_pid(node.name):
            raise Conflict(f"node {node.name} is host {old.host_name} in the registry and its agent runs: "
                           "`dataplane down` first to rename it")
    metrics_web.up_checks(node, node_args, bool(url), agent_runs=bool(url and process.running_pid(node.name)))
    created, mtus = [], {}
    if url and (vnis or port is not None):    # the port the node will use, given or not: the networks' own
        old = node.state()
        node_port = model.parse_port(port) if port is not None else (old.config.port if old else model.VXLAN_PORT)
        mtu = choices.uplink_mtu(node, node_args.get("underlay")) - model.ENCAP_LEN
        with opened(url) as reg:
            served = [n for n in (reg.networks() if old else ()) if n.vni in old.networks and n.port != node_port]
            if served:                   # a new port for the node: those it serves would go, said nowhere
                raise Conflict(f"network {served[0].name} is on UDP port {served[0].port}, not {node_port}")
            subnet = _ensure_networks(reg, vnis, subnet, node_port, min(mtu, model.MTU_MAX), created, mtus)
    was_up = node.state() is not None
    try:
        st = vtep.up(node, vnis, subnet=subnet, port=port, registry=url, host_name=host_name,
                     lease_ttl=lease_ttl, mtus=mtus, **node_args)
        if was_up:
            for line in sweep(node):        # a crash since the last up left this behind
                log.warning("repaired: %s", line) if is_repair(line) else log.info("%s", line)
            monitor.clear_if_abandoned(node)   # a monitor killed outright (a node without an agent too)
        if st.registry and agent:
            spawn_agent(node, st)
            st = node.require_up()
    except BaseException:
        if not was_up:                 # nothing half-created: the node goes again,
            vtep.down(node, quiet=True)
        _drop_networks(url, created)   # and so do the registry networks it made
        raise
    persist(node)
    _check_unit(node, st)
    return st


def _ensure_networks(reg, vnis: list[int], subnet, port, mtu: int, created: list[str], mtus: dict):
    """Each --vni is a registry network (vni<N> unless one has that VNI; a new one
    gets mtu, what this host's underlay carries); the subnet to serve when there is one VNI.
    mtus gets each network's MTU: `up` refuses one its uplink cannot carry."""
    try:
        for vni in vnis:
            net = reg.network_by_vni(vni)
            if net is None:
                net = reg.network_create(f"vni{vni}", vni, subnet=subnet, port=port, mtu=mtu)
                created.append(net.name)
            if subnet and net.subnet != str(model.parse_subnet(subnet)):
                raise Conflict(f"VNI {vni} is network {net.name} with subnet {net.subnet} in the registry")
            if net.port != port:         # its agent unserved it, said in its log only
                raise Conflict(f"VNI {vni} is network {net.name} on UDP port {net.port} in the registry, "
                               f"not {port}")
            subnet = subnet or (net.subnet if len(vnis) == 1 else None)
            mtus[vni] = net.mtu
    except BaseException:
        for name in created:
            _quiet_rm(reg, name)
        created.clear()
        raise
    return subnet


def _drop_networks(url: str | None, names: list[str]) -> None:
    if url and names:
        with opened(url) as reg:
            for name in names:
                _quiet_rm(reg, name)


def _quiet_rm(reg, name: str) -> None:
    try:
        reg.network_rm(name)
    except DataplaneError:
        pass


def down(node: Node, vnis=None) -> bool:
    """Stop the agent (it leaves the registry first), then take the node down;
    a node taken down does not come back at boot."""
    st = node.state()
    if vnis and not st and state.load_boot(node.name) is not None:      # it deleted the node's saved configuration
        raise Conflict(f"node {node.name} is not up (after a reboot, before `up --restore`?): its saved configuration "
                       "is kept; run `dataplane up --restore`, then `down --vni`, or `dataplane down` to forget it")
    if vnis and st and st.registry:
        raise UsageError("with a registry a node serves every registry network: "
                         "remove the network with `dataplane network rm`, or the node with `dataplane down`")
    if not vnis:
        pid = process.running_pid(node.name)
        unit = process.supervisor(node.name, pid) if pid else None
        if unit:                         # it would start again, and fail on a node taken down, for good
            raise Conflict(f"the agent of node {node.name} runs under systemd ({unit}), which would start it "
                           f"again: `systemctl disable --now {unit}` first, then `dataplane down`")
        lease = _agent_lease(node)       # read first: an agent that leaves removes its file
        if pid:                          # the endpoints' records go one by one: seconds, more with etcd away
            notice(f"agent of node {node.name}: leaving the registry (at most {LEAVE_WAIT_S:.0f} s)...")
        ran = process.stop(node.name, leave=True, timeout=LEAVE_WAIT_S)
        if st and st.registry:
            _left_behind(node, st, lease, ran)
    was_up = vtep.down(node, vnis)
    if vnis and node.state():
        persist(node)
    else:
        state.remove_boot(node.name)
        for unit in process.enabled([process.unit_name(node.name)]):    # (said nowhere: at boot it looped)
            notice(f"{unit} is still enabled (one an older version installed, without ConditionPathExists, "
                   f"restarts every second with nothing to restore): `systemctl disable {unit}`")
    return was_up


def _agent_lease(node: Node) -> int:
    try:
        with open(process.agent_file(node.name)) as f:
            return int(json.load(f).get("lease") or 0)
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def _left_behind(node: Node, st: NodeState, lease: int, ran: bool) -> None:
    """After the agent stopped: what it left of this host in the registry, removed. An agent
    leaves by itself, but one that had died, or was killed half-way (stopping waits
    LEAVE_WAIT_S), left its endpoints and their claims, and the host record until its lease
    ran out; `down` removes the node's state, so no agent came back for them and they stayed
    for good (only `registry forget-host` took them). An agent that ran and whose host record
    is gone left whole (revoking its lease is its last step): nothing more is read. Else the
    host record goes (its lease revoked, or the record itself if it still names our VTEP),
    then the rest as forget-host takes it (a read of every endpoint). A registry that cannot
    be reached is said, with what to run later."""
    me = st.host_name
    try:
        with opened(st.registry, node) as reg:
            item = reg.kv.get(key("hosts", me))
            if ran and item is None:
                return
            if item is not None and lease:
                reg.kv.lease_revoke(lease)
                item = reg.kv.get(key("hosts", me))
            if item is not None:
                vtep = Host.from_json(item.value).vtep
                if vtep != st.config.local_ip:
                    log.warning("down: host %s in registry %s is VTEP %s, not this node's %s: another machine "
                                "has this host name? Its records are left alone", me, st.registry, vtep,
                                st.config.local_ip)
                    return
                reg.kv.commit(Txn().unchanged(item.key, item.mod_rev).delete(item.key))
            out = reg.host_forget(me)
    except (DataplaneError, OSError) as e:
        log.warning("down: host %s's records stay in registry %s (%s): once it answers, run "
                    "`dataplane registry forget-host %s --registry %s`", me, st.registry, e, me, st.registry)
        return
    left = [e for e in out["endpoints_removed"] if not e.startswith(ROUTER_PREFIX)]   # (its gateways' own too)
    if left or out["reservations_released"]:
        log.warning("down: the agent had left %d endpoint(s) and %d reservation(s) of host %s in the registry; "
                    "removed", len(left), out["reservations_released"], me)


def persist(node: Node) -> None:
    """What brings this node back after a reboot (`up --restore`), from what it is now."""
    st = node.require_up()
    c = st.config
    state.save_boot(node.name, {
        "underlay": c.underlay, "local_ip": c.local_ip, "port": c.port, "peer_check": c.peer_check,
        "rx_gro": c.rx_gro, "vxlan_guard": c.vxlan_guard, "xdp_guard": c.xdp_guard, "fdb_age": c.fdb_age_s,
        "map_sizes": st.map_sizes,
        "meters": {f: getattr(c, f) for f in choices.METER_FIELDS}, "metrics_address": c.metrics_address,
        "metrics_web_config": c.metrics_web_config,
        "storm": [c.storm_rate, c.storm_burst, c.overlay_storm_rate],   # what an older version's restore reads
        "registry": st.registry, "host_name": st.host_name, "lease_ttl": st.lease_ttl,
        # Without a registry the node's own VNIs and peers; with one, the registry has them.
        "networks": {} if st.registry else {str(v): n.subnet for v, n in st.networks.items()},
        "peers": {str(v): ips for v, ips in st.peers.items() if ips}})


def boot_meters(b: dict) -> dict:
    """The meters of a boot file: "meters", else the "storm" list of an older version (storm control's
    two; three at 8389aaf). Meters a later version wrote that this one does not know are left out
    with a notice: refusing them would fail the unit's restore for good."""
    if "meters" not in b:
        return dict(zip(("storm_rate", "storm_burst", "overlay_storm_rate"), b.get("storm") or ()))
    unknown = sorted(set(b["meters"]) - set(choices.METER_FIELDS))
    if unknown:
        notice(f"the saved configuration has settings this version does not know, left out: {', '.join(unknown)}")
    return {k: v for k, v in b["meters"].items() if k in choices.METER_FIELDS}


def restore(node: Node, agent: bool = True, underlay: str | None = None, local_ip: str | None = None) -> NodeState:
    """Bring the node back as it was last brought up (at boot: nothing of it is left
    but /var/lib/dataplane); agent=False leaves starting the agent to a supervisor.
    underlay, local_ip: where the underlay is now, if it moved (an interface renamed, a new
    address), saved for the next boot; everything else as saved (before, a moved underlay
    left `down` and an `up` with every option typed again as the only way back)."""
    b = state.load_boot(node.name)
    if b is None:
        raise NotFound(f"nothing to restore for node {node.name}: it was never brought up, or was taken down")
    moved = bool(underlay or local_ip)
    if moved and node.state() is not None:     # vtep.up would change a running node's address under its agent
        raise Conflict(f"node {node.name} is up: --underlay and --local-ip with --restore bring back a node whose "
                       "underlay moved while it was down (after a reboot); a running one moves with `dataplane "
                       "down` and `up`")
    underlay = model.parse_ifname(underlay) if underlay else b["underlay"]
    local_ip = str(model.parse_ipv4(local_ip, "local address")) if local_ip else b["local_ip"]
    nets = {int(v): s for v, s in b["networks"].items()}
    if not moved:                              # given by hand: checked at once (vtep.up), no wait
        boot_wait.underlay(node, underlay, local_ip, UNDERLAY_WAIT_S)
    st = vtep.up(node, sorted(nets), subnet=nets or None, underlay=underlay, local_ip=local_ip,
                 port=b["port"], peer_check=b["peer_check"], rx_gro=b.get("rx_gro", True),
                 vxlan_guard=b.get("vxlan_guard", True),
                 xdp_guard=b["xdp_guard"], fdb_age=b["fdb_age"],
                 map_sizes=b["map_sizes"], meters=boot_meters(b), registry=b["registry"],
                 metrics_address=b.get("metrics_address"), metrics_web_config=b.get("metrics_web_config"),
                 host_name=b["host_name"], lease_ttl=b["lease_ttl"])
    for vni, ips in b["peers"].items():
        for ip in ips:
            peers.add(node, ip, [vni])
    if moved:
        persist(node)                          # (after the peers: it saves the node's)
    for line in sweep(node):
        log.warning("repaired: %s", line) if is_repair(line) else log.info("%s", line)
    if st.registry and agent:
        spawn_agent(node, st)
    elif st.registry:
        _hand_agent_over(node)
    _check_unit(node, st)                      # at boot: in the journal, where the operator looks
    return node.require_up()


def _check_unit(node: Node, st: NodeState, unit_dir: str = process.UNIT_DIR) -> None:
    """Say so if the node's installed unit is of the other kind (process.installed_unit_mismatch),
    or its units are not what this version writes (units.stale)."""
    wrong = process.installed_unit_mismatch(node.name, bool(st.registry), unit_dir)
    old = [] if wrong else units.stale(node.name, bool(st.registry), unit_dir)
    if wrong or old:
        how = f"`dataplane{'' if node.name == 'host' else ' --netns ' + node.name} service install" \
              f"{' --docker' if units.docker_names(node.name) & set(old) else ''}`"
        notice(wrong or f"{', '.join(old)} differ{'s' if len(old) == 1 else ''} from what this version writes "
               f"(an older version installed {'them' if len(old) > 1 else 'it'}): run {how} again, then "
               f"`systemctl daemon-reload`")


def _hand_agent_over(node: Node) -> None:
    """`up --restore --no-agent` as the node's unit's ExecStartPre (run in the unit's cgroup): an
    agent that `up` started is stopped, without leaving the registry, so that the unit's own can
    take the node (one agent per node: it failed on the lock, and Restart=always repeated that
    until systemd gave up, the host left with an agent nothing supervised). Its lease is kept
    for the next. Run by hand, `--no-agent` leaves a running agent alone."""
    if not process.supervisor(node.name, os.getpid()):
        return
    pid = process.running_pid(node.name)
    if pid and not process.supervisor(node.name, pid):
        notice(f"stopping the agent of node {node.name} that `up` started (pid {pid}): its supervisor "
               "starts the node's agent from now on")
        process.stop(node.name, leave=False)


def spawn_agent(node: Node, st: NodeState, quiet: bool = False) -> int:
    """The node's agent, started as its state says (registry, host name, lease) unless it runs;
    returns once it has synced. Its pid."""
    return process.spawn(node.name, node.netns, st.registry, st.host_name, st.lease_ttl or LEASE_TTL_DEFAULT,
                         quiet)
