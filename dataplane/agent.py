"""The per-host agent: keeps one node's maps equal to the registry.

Threads: the watcher (snapshot, then watch from the snapshot's revision;
on any break it starts over with a fresh snapshot), the lease keeper (host
liveness), the punt reader (misses from the fast path, see slowpath.py),
the API server, and the main loop, which alone applies changes:
it mirrors the registry, and for every VNI a change touched it rewrites
the remote FDB/neighbour entries and the flood list (as a diff, see
remote.py). The programs and pinned maps are the node's; the agent can stop
and start at any time while they keep forwarding.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time

from . import api, model, netlink, slowpath, state
from .errors import Conflict, DataplaneError, NotFound, UsageError
from .node import Node, flood_list
from .registry import Compacted, Host, Snapshot, Unavailable, change, open_registry
from .registry.store import key, split_key
from .runtime_ops import RuntimeOps
from .remote import RemoteTable, age_learned, forget_learned_vtep, local_neigh_keys

LEASE_TTL_DEFAULT = 10
RETRY_S = 0.5


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} agent: {msg}", file=sys.stderr, flush=True)


def agent_file(node: str) -> str:
    return os.path.join(state.node_dir(node), "agent.json")


class Agent:
    def __init__(self, node: Node, registry_url: str, host_name: str, lease_ttl: int = LEASE_TTL_DEFAULT):
        self.node = node
        self.url = registry_url
        self.me = model.parse_name(host_name, "host name")
        if not 2 <= int(lease_ttl) <= 3600:
            raise UsageError("--lease-ttl must be 2..3600 s")
        self.ttl = int(lease_ttl)
        self.reg = open_registry(registry_url)
        self.lock = threading.RLock()
        self.q: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.leaving = False
        self.connected = threading.Event()
        self.synced = threading.Event()
        self.lease = 0
        self._watch = None
        # the registry, as last seen
        self.rev = 0
        self.networks: dict = {}
        self.hosts: dict = {}
        self.endpoints: dict = {}
        self.macs: dict = {}          # IPAM claims: who holds a MAC / an address
        self.ipam: dict = {}
        self.skipped: set[str] = set()
        self.counters = {"events": 0, "resyncs": 0, "bad_records": 0, "aged": 0, "errors": 0}
        # misses punted by the fast path: resolved (sent to the owner's VTEP; looked_up: the
        # registry knew what our view did not yet; repaired: the map had lost an entry we
        # had installed), local, unresolved (flooded), stale
        self.punts = {"received": 0, "resolved": 0, "looked_up": 0, "repaired": 0, "local": 0,
                      "unresolved": 0, "flooded": 0, "stale": 0, "send_errors": 0}
        self.last_sync_s = 0.0
        self.last_snapshot_s = 0.0
        self.remote: RemoteTable | None = None
        self.maps = None

    # --- lifecycle -------------------------------------------------------------

    def run(self) -> None:
        st = self.node.state()
        if not st:
            raise NotFound(f"node {self.node.name} is not up: run `dataplane up` first")
        self.vtep = Host.make(self.me, st["config"]["local_ip"], st["config"]["port"])
        self.maps = self.node._maps()
        self.remote = RemoteTable(self.maps, local_neigh_keys(st))
        self.sender = slowpath.Sender(self.maps, st["config"])
        self.punt_reader = slowpath.PuntReader(self.maps.pin_dir)
        self.server = api.Server(api.socket_path(self.node.name), self._handlers())
        self.server.start()
        self._save_file()
        threading.Thread(target=self._keep_lease, name="lease", daemon=True).start()
        threading.Thread(target=self._watcher, name="watch", daemon=True).start()
        threading.Thread(target=self._read_punts, name="punts", daemon=True).start()
        log(f"host {self.me} VTEP {self.vtep.vtep} registry {self.url} lease ttl {self.ttl}s")
        try:
            self._main_loop()
        finally:
            self.stopping.set()
            try:
                self.node.set_punt_miss(False)   # nobody drains the ring now: flood misses again
            except DataplaneError as e:
                log(f"could not stop punting: {e}")
            if self._watch:
                self._watch.close()
            self.server.stop()
            if self.leaving:
                self._leave()
            self.punt_reader.close()
            self.sender.close()
            self.maps.close()
            self.reg.close()
            log("stopped" + (" (left the registry)" if self.leaving else ""))

    def stop(self, leave: bool = False) -> None:
        self.leaving = self.leaving or leave
        self.stopping.set()
        self.q.put(("stop", None))

    def _save_file(self) -> None:
        with open(agent_file(self.node.name), "w") as f:
            json.dump({"pid": os.getpid(), "host": self.me, "registry": self.url, "lease": self.lease}, f)

    def _old_lease(self) -> int:
        try:
            with open(agent_file(self.node.name)) as f:
                return int(json.load(f).get("lease") or 0)
        except (OSError, ValueError):
            return 0

    # --- lease: host liveness ----------------------------------------------------

    def _register(self) -> None:
        """Keep the previous agent's lease if it is alive (a restart is not a death)."""
        old = self.lease or self._old_lease()
        if old and self.reg.kv.lease_keepalive(old):
            self.lease = old
        else:
            self.lease = self.reg.kv.lease_grant(self.ttl)
        item = self.reg.kv.get(key("hosts", self.me))
        if item is not None and item.lease != self.lease:
            other = Host.from_json(item.value)
            if other.vtep != self.vtep.vtep:
                raise Conflict(f"host name {self.me} is registered with VTEP {other.vtep}")
        self.reg.host_register(self.vtep, self.lease)
        self._save_file()

    def _keep_lease(self) -> None:
        registered = False
        while not self.stopping.is_set():
            try:
                if not registered or not self.reg.kv.lease_keepalive(self.lease):
                    self._register()
                    log(f"registered host {self.me} (lease {self.lease:x})")
                registered = True
            except Unavailable as e:
                if registered:
                    log(f"registry unreachable, forwarding on last known state: {e}")
                registered = False
                self.connected.clear()
                if self._watch:
                    self._watch.close()
            except DataplaneError as e:
                log(f"cannot register: {e}")
                self.counters["errors"] += 1
            self.stopping.wait(self.ttl / 3 if registered else RETRY_S)

    # --- watcher: snapshot + watch, forever ----------------------------------------

    def _watcher(self) -> None:
        while not self.stopping.is_set():
            try:
                t0 = time.monotonic()
                snap = self.reg.snapshot()
                self.last_snapshot_s = time.monotonic() - t0
                self.connected.set()
                self.q.put(("snapshot", snap))
                self._watch = self.reg.watch(snap.rev + 1)
                for batch in self._watch:
                    self.q.put(("events", batch))
            except (Unavailable, Compacted) as e:
                if self.connected.is_set():
                    log(f"watch ended ({e}); will resync")
                self.connected.clear()
            except Exception as e:  # never let the watcher die
                log(f"watch failed: {type(e).__name__}: {e}")
                self.connected.clear()
            self.stopping.wait(RETRY_S)

    # --- main loop -----------------------------------------------------------------

    def _main_loop(self) -> None:
        st = self.node.state()
        age_every = max(1.0, min(10.0, st["config"]["fdb_age_s"] / 4))
        next_age = time.monotonic() + age_every
        first = True
        while not self.stopping.is_set():
            try:
                kind, data = self.q.get(timeout=max(0.05, next_age - time.monotonic()))
            except queue.Empty:
                kind, data = "tick", None
            try:
                if kind == "snapshot":
                    self._apply_snapshot(data, adopt=first)
                    if first:
                        self.node.set_punt_miss(True)   # synced: misses come to us from now on
                    first = False
                elif kind == "punts":
                    self._handle_punts(data)
                elif kind == "events":
                    batch = list(data)
                    while True:   # drain what queued up meanwhile: one reconcile for all
                        try:
                            k2, d2 = self.q.get_nowait()
                        except queue.Empty:
                            break
                        if k2 != "events":
                            self.q.put((k2, d2))
                            break
                        batch += d2
                    self._apply_events(batch)
            except DataplaneError as e:
                self.counters["errors"] += 1
                log(f"error: {e}")
            if time.monotonic() >= next_age:
                next_age = time.monotonic() + age_every
                self._age()

    # --- slow path: misses punted by the fast path ---------------------------------

    def _read_punts(self) -> None:
        while not self.stopping.is_set():
            try:
                batch = self.punt_reader.read(0.2)
            except Exception as e:  # never let the reader die
                log(f"reading punts failed: {type(e).__name__}: {e}")
                self.stopping.wait(RETRY_S)
                continue
            if batch:
                self.q.put(("punts", batch))

    def _handle_punts(self, batch) -> None:
        st = self.node.state()
        with self.lock:
            for p in batch:
                self.punts["received"] += 1
                if p.age_ns > slowpath.STALE_NS:
                    self.punts["stale"] += 1
                    continue
                net = next((n for n in self.networks.values() if n.vni == p.vni), None)
                ep = self._punt_owner(net, p) if net else None
                host = self.hosts.get(ep.host) if ep else None
                if ep is not None and ep.host == self.me:
                    self.punts["local"] += 1      # ours, its sandbox is being set up: nothing to send
                elif host is not None:
                    self.punts["resolved"] += 1
                    self.punts["repaired"] += self.remote.repair(p.vni, ep.mac, host.vtep, ep.ip)
                    self._send(p.vni, host.vtep, p.frame)
                else:
                    self.punts["unresolved"] += 1  # nobody in the registry: flood as the fast path would
                    for vtep in flood_list(st, p.vni):
                        self.punts["flooded"] += self._send(p.vni, vtep, p.frame)

    def _punt_owner(self, net, p):
        """The endpoint a punted frame is for: from our view of the registry,
        else from the registry itself (our watch may not have caught up)."""
        mac = p.dst_mac if p.reason == slowpath.UNKNOWN_DST else None
        ip = p.arp_target
        for e in self.endpoints.values():
            if e.network == net.name and (e.mac == mac or e.ip == ip):
                return e
        try:
            claim = self.reg.kv.get(key("macs", net.name, mac) if mac else key("ipam", net.name, ip or "-"))
            if claim is None:
                return None
            ep = self.reg.endpoint(claim.value.decode())
            hitem = self.reg.kv.get(key("hosts", ep.host))
            if hitem is None or ep.network != net.name:
                return None
            host = Host.from_json(hitem.value)
        except (Unavailable, DataplaneError) as e:
            log(f"punt: registry lookup failed: {e}")
            return None
        # The watch brings these same records later; install them now.
        self.endpoints[ep.id], self.hosts[host.name] = ep, host
        self.macs[f"{net.name}/{ep.mac}"] = self.ipam[f"{net.name}/{ep.ip}"] = ep.id
        self._reconcile(vnis={net.vni})
        self.punts["looked_up"] += 1
        return ep

    def _send(self, vni: int, vtep: str, frame: bytes) -> int:
        try:
            self.sender.send(vni, vtep, frame)
            return 1
        except OSError as e:
            self.punts["send_errors"] += 1
            log(f"punt: sending to {vtep} failed: {e}")
            return 0

    def _age(self) -> None:
        st = self.node.state()
        if st:
            with self.lock:
                n = age_learned(self.maps, st["config"]["fdb_age_s"] * 1_000_000_000, time.monotonic_ns())
            if n:
                self.counters["aged"] += n
                log(f"aged out {n} learned FDB entries")

    def _apply_snapshot(self, snap: Snapshot, adopt: bool) -> None:
        t0 = time.monotonic()
        with self.lock:
            for bad in snap.bad:
                log(f"skipped bad record {bad}")
            self.counters["bad_records"] += len(snap.bad)
            self.rev = snap.rev
            self.networks, self.hosts, self.endpoints = snap.networks, snap.hosts, snap.endpoints
            self.macs, self.ipam = snap.macs, snap.ipam
            self.counters["resyncs"] += 1
            if adopt:
                self._adopt_local()
            self._reconcile(all_vnis=True)
        self.last_sync_s = time.monotonic() - t0
        self.synced.set()
        log(f"synced revision {snap.rev}: {len(self.networks)} networks, {len(self.hosts)} hosts, "
            f"{len(self.endpoints)} endpoints in {self.last_sync_s * 1000:.0f} ms")

    def _apply_events(self, events) -> None:
        dirty: set[int] = set()
        with self.lock:
            for ev in events:
                self.rev = max(self.rev, ev.rev)
                self.counters["events"] += 1
                try:
                    ch = change(ev)
                except UsageError as e:
                    self.counters["bad_records"] += 1
                    log(f"skipped bad record {ev.key}: {e}")
                    ch = None
                    kind, name = split_key(ev.key)
                    table = getattr(self, kind, None) if kind in ("networks", "hosts", "endpoints") else None
                    if table is not None and name in table:   # a record turned bad: treat it as gone
                        dirty |= self._forget(kind, name)
                if ch is None:
                    continue
                gone = self.hosts.get(ch.name) if ch.kind == "hosts" else None
                dirty |= self._forget(ch.kind, ch.name)
                if gone is not None and (ch.record is None or ch.record.vtep != gone.vtep):
                    n = forget_learned_vtep(self.maps, gone.vtep)
                    log(f"host {gone.name} ({gone.vtep}) left" + (f"; dropped {n} learned entries" if n else ""))
                if ch.record is not None:
                    getattr(self, ch.kind)[ch.name] = ch.record
                    dirty |= self._touches(ch.kind, ch.record)
                if ch.kind == "endpoints":
                    self._local_endpoint_changed(ch.name, ch.record)
            if dirty:
                self._reconcile(vnis=dirty)

    def _forget(self, kind: str, name: str) -> set[int]:
        rec = getattr(self, kind).pop(name, None)
        return self._touches(kind, rec) if rec is not None else set()

    def _touches(self, kind: str, rec) -> set[int]:
        if kind in ("macs", "ipam"):
            ep = self.endpoints.get(rec)
            net = self.networks.get(ep.network) if ep else None
            return {net.vni} if net else set()
        if kind == "networks":
            return {rec.vni}
        if kind == "hosts":
            nets = {e.network for e in self.endpoints.values() if e.host == rec.name}
            return {n.vni for n in self.networks.values() if n.name in nets}
        net = self.networks.get(rec.network)
        return {net.vni} if net else set()

    # --- reconcile -------------------------------------------------------------

    def _reconcile(self, vnis=(), all_vnis: bool = False) -> None:
        st = self.node.state()
        by_vni = {n.vni: n for n in self.networks.values() if n.port == st["config"]["port"]}
        for n in self.networks.values():
            if n.port != st["config"]["port"] and str(n.vni) not in st["networks"]:
                log(f"network {n.name}: port {n.port} differs from this VTEP's {st['config']['port']}; not served")
        if all_vnis:
            vnis = set(by_vni) | {int(v) for v in st["networks"]} | self.remote.vnis()
        for vni in sorted(vnis):
            net = by_vni.get(vni)
            if net is None:
                self.remote.apply(vni, {}, {})
                if str(vni) in st["networks"] and not any(e["vni"] == vni for e in st["endpoints"].values()):
                    self.node.network_rm(vni)
                    log(f"VNI {vni} left the registry: no longer served")
                continue
            if str(vni) not in st["networks"]:
                self.node.network_add(vni, net.subnet, net.mtu)
                st = self.node.state()
            fdb, neigh, vteps = {}, {}, set()
            local = [e for e in st["endpoints"].values() if e["vni"] == vni]
            owner = {("mac", e["mac"]): e["name"] for e in local} | {("ip", e["ip"]): e["name"] for e in local}
            for e in sorted(self.endpoints.values(), key=lambda e: e.id):
                if e.network != net.name or e.host == self.me:
                    continue
                h = self.hosts.get(e.host)
                if h is None:
                    continue          # its host is dead or gone
                clash = owner.get(("mac", e.mac)) or owner.get(("ip", e.ip))
                unclaimed = (self.macs.get(f"{net.name}/{e.mac}") != e.id
                             or self.ipam.get(f"{net.name}/{e.ip}") != e.id)
                if clash or unclaimed:   # written around the IPAM: the claim holder keeps it
                    if e.id not in self.skipped:
                        self.skipped.add(e.id)
                        self.counters["bad_records"] += 1
                        log(f"endpoint {e.id}: MAC {e.mac} / address {e.ip} on {net.name} "
                            f"{'clashes with ' + clash if clash else 'is not claimed in the IPAM'}; skipped")
                    continue
                self.skipped.discard(e.id)
                owner[("mac", e.mac)] = owner[("ip", e.ip)] = e.id
                fdb[e.mac] = h.vtep
                neigh[e.ip] = e.mac
                vteps.add(h.vtep)
            self.remote.apply(vni, fdb, neigh)
            flood = sorted(vteps)
            if st.get("registry_peers", {}).get(str(vni), []) != flood:
                self.node.set_registry_peers(vni, flood)

    # --- local endpoints ---------------------------------------------------------

    def _adopt_local(self) -> None:
        """At start: the node's sandboxes are registered; registry entries for
        this host without a sandbox (left by a crash) are removed."""
        st = self.node.state()
        for name, ep in st["endpoints"].items():
            rec = self.endpoints.get(name)
            if rec is None:
                net = next((n for n in self.networks.values() if n.vni == ep["vni"]), None)
                if net is None:
                    log(f"endpoint {name}: VNI {ep['vni']} has no network in the registry")
                    continue
                try:
                    self.endpoints[name] = self.reg.endpoint_create(name, net.name, self.me, ep["ip"], ep["mac"])
                    log(f"registered existing endpoint {name}")
                except DataplaneError as e:
                    log(f"endpoint {name}: cannot register: {e}")
        for rec in list(self.endpoints.values()):
            if rec.host == self.me and rec.id not in st["endpoints"]:
                try:
                    self.reg.endpoint_rm(rec.id)
                    del self.endpoints[rec.id]
                    log(f"removed stale registry endpoint {rec.id} (no sandbox here)")
                except DataplaneError as e:
                    log(f"endpoint {rec.id}: cannot remove stale record: {e}")

    def _local_endpoint_changed(self, name: str, rec) -> None:
        """Our sandbox was moved to another host (or removed) by someone else."""
        st = self.node.state()
        if name in st["endpoints"] and (rec is None or rec.host != self.me):
            try:
                self.node.endpoint_rm(name)
                log(f"endpoint {name} moved to {rec.host if rec else '(removed)'}: sandbox removed here")
            except DataplaneError as e:
                log(f"endpoint {name}: {e}")

    # --- API -----------------------------------------------------------------------

    def _handlers(self) -> dict:
        return {"ping": self.api_ping, "status": self.api_status, "endpoint_add": self.api_endpoint_add,
                "endpoint_rm": self.api_endpoint_rm, "endpoint_move": self.api_endpoint_move,
                "endpoint_list": self.api_endpoint_list, "peer_list": self.api_peer_list,
                "leave": self.api_leave, **RuntimeOps(self).handlers()}

    def api_ping(self) -> dict:
        return {"host": self.me, "synced": self.synced.is_set(), "connected": self.connected.is_set(),
                "pid": os.getpid()}

    def api_status(self) -> dict:
        with self.lock:
            return {**self.api_ping(), "registry": self.url, "revision": self.rev, "lease": self.lease,
                    "lease_ttl": self.ttl, "networks": len(self.networks), "hosts": sorted(self.hosts),
                    "endpoints": len(self.endpoints), "installed": self.remote.counts(),
                    "last_sync_ms": round(self.last_sync_s * 1000, 1),
                    "last_snapshot_ms": round(self.last_snapshot_s * 1000, 1), "map_error": self.remote.last_error,
                    **self.counters, "punts": dict(self.punts), "rss_kib": _rss_kib(),
                    "rss_peak_kib": _rss_kib("VmHWM")}

    def _network_for(self, network=None, vni=None):
        if network is not None:
            return self.reg.network(network)
        net = self.reg.network_by_vni(vni)
        if net is None:
            raise NotFound(f"no network has VNI {vni}: create one with `dataplane network create`")
        return net

    def api_endpoint_add(self, id, network=None, vni=None, ip=None, mac=None) -> dict:
        model.parse_name(id, "endpoint name")   # it names the sandbox namespace too
        net = self._network_for(network, vni)
        with self.lock:
            if str(net.vni) not in self.node.state()["networks"]:
                self.node.network_add(net.vni, net.subnet, net.mtu)
            rec = self.reg.endpoint_create(id, net.name, self.me, ip=ip, mac=mac)
            try:
                ep = self.node.endpoint_add(id, net.vni, ip=rec.ip, mac=rec.mac)
            except BaseException:
                self.reg.endpoint_rm(id)
                raise
            self.endpoints[id] = rec
        return {**ep, "network": net.name, "host": self.me}

    def api_endpoint_rm(self, id) -> dict:
        with self.lock:
            rec = self.reg.endpoint(id)
            if rec.host != self.me:
                raise Conflict(f"endpoint {id} lives on host {rec.host}; remove it there")
            if id in self.node.state()["endpoints"]:
                self.node.endpoint_rm(id)
            self.reg.endpoint_rm(id)
            self.endpoints.pop(id, None)
        return rec.to_dict()

    def api_endpoint_move(self, id) -> dict:
        """Bring an endpoint (same MAC and address) to this host."""
        rec = self.reg.endpoint(id)
        if rec.host == self.me:
            raise Conflict(f"endpoint {id} is on this host already")
        net = self.reg.network(rec.network)
        # Break before make: the old host removes its sandbox when it sees the
        # record move. (In the lab all hosts share one kernel, so the sandbox
        # namespace name is free only once the old one is gone.)
        moved = self.reg.endpoint_move(id, self.me)
        deadline = time.monotonic() + 10
        while netlink.ns_exists(id) and time.monotonic() < deadline:
            time.sleep(0.02)
        with self.lock:
            if str(net.vni) not in self.node.state()["networks"]:
                self.node.network_add(net.vni, net.subnet, net.mtu)
            ep = self.node.endpoint_add(id, net.vni, ip=rec.ip, mac=rec.mac)
            self.endpoints[id] = moved
        return {**ep, "network": net.name, "host": self.me, "from": rec.host}

    def api_endpoint_list(self) -> list[dict]:
        with self.lock:
            nets = {n.name: n.vni for n in self.networks.values()}
            return [{**e.to_dict(), "vni": nets.get(e.network), "local": e.host == self.me,
                     "alive": e.host in self.hosts} for e in sorted(self.endpoints.values(), key=lambda e: e.id)]

    def api_peer_list(self) -> list[dict]:
        st = self.node.state()
        rows = [{"vni": int(v), "peer": ip, "source": "static"} for v, lst in st["peers"].items() for ip in lst]
        rows += [{"vni": int(v), "peer": ip, "source": "registry"}
                 for v, lst in st.get("registry_peers", {}).items() for ip in lst]
        return sorted(rows, key=lambda r: (r["vni"], r["peer"]))

    def api_leave(self) -> dict:
        self.stop(leave=True)
        return {"host": self.me}

    def _leave(self) -> None:
        """`dataplane down`: this host's endpoints and host record leave the registry."""
        try:
            for rec in self.reg.endpoints(host=self.me):
                self.reg.endpoint_rm(rec.id)
            if self.lease:
                self.reg.kv.lease_revoke(self.lease)
        except DataplaneError as e:
            log(f"could not leave the registry cleanly: {e}")
        try:
            os.unlink(agent_file(self.node.name))
        except FileNotFoundError:
            pass


def _rss_kib(field: str = "VmRSS") -> int:
    """Resident memory now (VmRSS) or at its peak so far (VmHWM), KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def install_signal_handlers(agent: Agent) -> None:
    def handler(signum, frame):
        agent.stop(leave=False)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
