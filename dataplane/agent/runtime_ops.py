"""Agent API operations for container runtimes (the Docker driver and the CNI
plugin): registry networks on demand, endpoints whose container side lives in
the runtime's namespace, the checks and listings CHECK and GC need, and the
address reservations of the Docker IPAM driver (registry/reserve.py).

The runtime clients never touch BPF or netlink themselves: they call these
over the agent's socket (api.py), so they stay small and import no bcc.
"""

from __future__ import annotations

import contextlib
import ipaddress
from types import SimpleNamespace

from dataplane.agent import converge, inflight, local
from dataplane.agent.inflight import runtime_turn, working_on
from dataplane.agent.ops import register_endpoint, register_then_create, serve, unregister
from dataplane.core import model
from dataplane.core.errors import Conflict, DataplaneError, KernelError, NotFound, UsageError
from dataplane.kernel import netlink, tcx
from dataplane.node import endpoints, networks
from dataplane.registry.records import is_router, parse_mtu

# VNIs the agent hands out when a runtime names none (Docker's overlay starts at 4096 too).
AUTO_VNI_FIRST = 4096
AUTO_VNI_LAST = 8191


class RuntimeOps:
    def __init__(self, agent):
        self.ag = agent

    def handlers(self) -> dict:
        return {"network_ensure": self.network_ensure, "network_release": self.network_release,
                "endpoint_attach": self.endpoint_attach, "endpoint_detach": self.endpoint_detach,
                "endpoint_check": self.endpoint_check, "endpoint_local": self.endpoint_local,
                "address_pool": self.address_pool, "address_reserve": self.address_reserve,
                "address_release": self.address_release, "address_list": self.address_list}

    # --- networks ------------------------------------------------------------

    def network_ensure(self, vni: int | str | None = None, subnet: str | None = None, name: str | None = None,
                       mtu: int | str | None = None, gateway: str | None = None) -> dict:
        """The registry network with this VNI (or name), created if missing, with
        mtu or what this host's underlay carries (and gateway, if given: an existing one keeps
        its own). An existing one must have the same subnet (and mtu, if given): runtimes that
        disagree on it would hand out clashing addresses, or send frames the other side cannot take."""
        reg = self.ag.reg
        vni = model.parse_vni(vni) if vni is not None else None
        want = model.parse_subnet(subnet) if subnet is not None else None
        gateway = str(model.parse_ipv4(gateway, "gateway")) if gateway is not None else None
        mtu = parse_mtu(mtu) if mtu is not None else None
        if name is not None:
            model.parse_name(name, "network name")
        with self.ag.oplock:                    # not the agent's lock: its main loop never waits on the registry
            for _ in range(3):
                net = reg.network_by_vni(vni) if vni is not None else self._by_name(name)
                created = net is None
                if created:
                    v = vni if vni is not None else self._free_vni()
                    try:
                        net = reg.network_create(name or f"vni{v}", v, subnet=str(want) if want else None,
                                                 gateway=gateway, runtime=True,
                                                 mtu=mtu or networks.max_mtu(self.ag.node.require_up()))
                    except Conflict:
                        continue            # another host created it first: read it
                if want is not None and ipaddress.IPv4Network(net.subnet) != want:
                    raise Conflict(f"VNI {net.vni} is network {net.name} with subnet {net.subnet}, "
                                   f"not {want}: use the same subnet on every host")
                if mtu is not None and net.mtu != mtu:
                    raise Conflict(f"VNI {net.vni} is network {net.name} with MTU {net.mtu}, not {mtu}")
                if name is not None and vni is not None and net.name != name:
                    raise Conflict(f"VNI {net.vni} is network {net.name}, not {name}")
                try:
                    with self.ag.lock:
                        serve(self.ag, net)
                except DataplaneError:
                    if created:            # refused here (an MTU the underlay cannot carry): a network
                        with contextlib.suppress(Conflict, NotFound):     # left would pin its settings
                            reg.network_rm(net.name)                    # for every host's next request
                    raise
                return {**net.to_dict(), "created": created}
        raise Conflict(f"network for VNI {vni} changed while it was being created; try again")

    def _by_name(self, name):
        if name is None:
            return None
        try:
            return self.ag.reg.network(name)
        except NotFound:
            return None

    def _free_vni(self) -> int:
        used = {n.vni for n in self.ag.reg.networks()}
        for v in range(AUTO_VNI_FIRST, AUTO_VNI_LAST + 1):
            if v not in used:
                return v
        raise Conflict(f"no free VNI in {AUTO_VNI_FIRST}..{AUTO_VNI_LAST}: give one")

    def network_release(self, vni: int | str) -> dict:
        """A runtime that created this VNI's registry network is done with it
        here: remove the network if no endpoint anywhere uses it (another
        host's runtime re-creates it on its next endpoint). Networks made by
        `dataplane network create` or `up` are never released this way."""
        vni = model.parse_vni(vni)
        with self.ag.oplock:
            net = self.ag.reg.network_by_vni(vni)
            if net is None:
                return {"vni": vni, "removed": False}
            return self._release(vni, net)

    def _release(self, vni: int, net) -> dict:
        """network_release's registry part, on ag.oplock and then the network's own lock: a
        reservation of ours on it (which no fence compare sees) is not made meanwhile."""
        with inflight.network_lock(self.ag, net.name):
            # This host's runtime is done with the network: its reservations there go (Docker
            # releases aux addresses only after DeleteNetwork). Another host's keep it in use.
            self.ag.reg.reservations_drop(net.name, self.ag.me)
            users = [e for e in self.ag.reg.endpoints(network=net.name) if not is_router(e, vni)]
            if users or self.ag.reg.reservations(network=net.name):         # (routers go with it)
                return {"vni": vni, "removed": False, "in_use": True}
            try:
                self.ag.reg.network_rm(net.name)
            except (Conflict, NotFound):
                return {"vni": vni, "removed": False, "in_use": True}
            return {"vni": vni, "removed": True, "network": net.name}

    # --- endpoints -----------------------------------------------------------

    def endpoint_attach(self, id: str, vni: int | str, sandbox: dict | None, ip: str | None = None,
                        mac: str | None = None, prefixlen: int | None = None, routes: list[dict] = (),
                        reserved: bool = False) -> dict:
        """Register and create an endpoint whose container side is in sandbox
        (state.LocalEndpoint.sandbox, as model.parse_sandbox accepts it). Nothing is left behind if any step fails.
        reserved: ip may be this host's reservation (address_reserve), taken over."""
        model.parse_name(id, "endpoint id")
        model.parse_sandbox(sandbox)           # refused before anything is registered
        if prefixlen is not None and not (isinstance(prefixlen, int) and 8 <= prefixlen <= 30):
            raise UsageError(f"bad prefix length {prefixlen!r}")
        ag = self.ag

        def create(rec):
            with ag.lock:            # served again: a reconcile during the write may have let it go
                serve(ag, SimpleNamespace(**net))
                ep = endpoints.add(ag.node, id, net["vni"], ip=rec.ip, mac=rec.mac, sandbox=sandbox,
                                   prefixlen=prefixlen, routes=routes)
                local.wrote(ag, id, rec)
                return ep
        # From the start: a DEL that came after (the runtime's, after an ADD in doubt) waits, then
        # removes what this makes; one that came before has its turn first (runtime_turn).
        with runtime_turn(ag, id), working_on(ag, id):
            net = self.network_ensure(vni=vni)
            rec, ep = register_then_create(
                lambda: register_endpoint(ag, id, net["name"], ag.me, ip=ip, mac=mac, reserved=reserved is True),
                unregister(ag, id), create)
        return {**ep.to_dict(), "network": net["name"], "subnet": net["subnet"], "gateway": net["gateway"],
                "host": self.ag.me}

    def endpoint_detach(self, id: str, keep_address: bool = False) -> dict:
        """Remove the endpoint here and from the registry, whatever part of it
        exists; {"removed": false} if nothing did (DEL must be idempotent).
        keep_address: its address becomes this host's reservation, which the
        runtime releases itself (address_release), as Docker's IPAM does."""
        model.parse_name(id, "endpoint id")
        removed = False
        with runtime_turn(self.ag, id), working_on(self.ag, id):
            with self.ag.lock:
                self.ag.conflicts.pop(id, None)
                here = self.ag.node.require_up().endpoints.get(id)
                if here is not None:
                    endpoints.remove(self.ag.node, id)
                    removed = True
            try:
                rec = self.ag.reg.endpoint(id)
            except NotFound:
                rec = None
            out = {"id": id, "removed": removed}
            if rec is not None and rec.host != self.ag.me:
                # Another writer gave the record to another host (a conflict): the runtime's
                # interface here is gone, the other host's record is not ours to delete, nor
                # to drop from the view (no event would bring it back).
                out["registry"] = f"record left: it names host {rec.host}"
                if here is not None:           # its entries were left out while the sandbox was here
                    with self.ag.lock:
                        local.note_gone(self.ag, here)
                        converge.pending(self.ag)
                return out
            if rec is not None:
                lease = self.ag.leases.lease
                self.ag.reg.endpoint_rm(id, reserve=(self.ag.me, lease) if keep_address is True and lease else None)
                out["removed"] = True
                local.wrote(self.ag, id, None)
            else:
                with self.ag.lock:
                    self.ag.view.endpoints.pop(id, None)
        return out

    def endpoint_check(self, id: str, ip: str | None = None, mac: str | None = None, routes: list[dict] = ()) -> dict:
        """Everything the endpoint needs is in place: registry record, host
        veth with the fast path attached, map entries, and (CNI) the container
        side with its MAC, address and routes (the result's, [{"dst", "gw"?}]).
        Raises naming the first thing missing."""
        model.parse_name(id, "endpoint id")
        ep = self.ag.node.require_up().endpoints.get(id)
        if ep is None:
            raise NotFound(f"endpoint {id} is not on this host")
        rec = self.ag.reg.endpoint(id)
        if rec.host != self.ag.me:
            raise Conflict(f"endpoint {id} is registered on host {rec.host}")
        for what, want, have in (("address", ip, ep.ip), ("MAC", mac, ep.mac)):
            if want is not None and str(want).lower() != have:
                raise Conflict(f"endpoint {id} has {what} {have}, not {want}")
        sb = ep.sandbox or {}
        if "netns" in sb and not netlink.ns_path_exists(sb["netns"]):   # (first: its veth went with it)
            raise NotFound(f"network namespace {sb['netns']} does not exist")
        host_if = netlink.link_info(self.ag.node.netns, ep.host_ifname)
        if host_if["index"] != ep.ifindex:
            raise KernelError(f"interface {ep.host_ifname} was re-created (index {host_if['index']})")
        if "from_endpoint" not in tcx.attached(self.ag.node.netns, ep.ifindex):
            raise KernelError(f"the fast path is not attached to {ep.host_ifname}")
        if not endpoints.in_maps(self.ag.node, ep):
            raise KernelError(f"endpoint {id} is missing from the fast path's maps")
        if "netns" in sb:
            inner = netlink.link_info(sb["netns"], sb["ifname"])
            if inner["mac"] != ep.mac or ep.ip not in inner["ipv4"] or not inner["up"]:
                raise KernelError(f"{sb['ifname']} in {sb['netns']} is {inner['mac']} {inner['ipv4']}, "
                                  f"not {ep.mac} {ep.ip} (up)")
            try:
                missing = netlink.routes_missing(sb["netns"], routes)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise UsageError(f"bad routes {routes!r}: {e}") from None
            if missing:
                raise KernelError(f"{sb['netns']} has no route to {', '.join(missing)}")
        return ep.to_dict()

    def endpoint_local(self, runtime: str | None = None) -> list[dict]:
        """This host's endpoints (those a runtime made, if runtime is given)."""
        eps = self.ag.node.require_up().endpoints.values()
        return [e.to_dict() for e in eps if runtime is None or (e.sandbox or {}).get("runtime") == runtime]

    # --- address reservations (runtimes/docker_ipam.py) ----------------------------

    def _pool_networks(self, subnet, vni=None) -> list:
        """The registry networks a pool may be: the one with its VNI (if the runtime
        knows it), else those with its subnet."""
        want = model.parse_subnet(subnet)
        if vni is None:
            return self.ag.reg.networks_with_subnet(want)
        net = self.ag.reg.network_by_vni(model.parse_vni(vni))
        if net is not None and ipaddress.IPv4Network(net.subnet) != want:
            raise Conflict(f"VNI {net.vni} is network {net.name} with subnet {net.subnet}, not {want}: "
                           "use the same subnet on every host")
        return [net] if net is not None else []

    def _pool_network(self, subnet, vni=None):
        nets = self._pool_networks(subnet, vni)
        if len(nets) > 1:
            raise Conflict(f"registry networks {', '.join(n.name for n in nets)} all have subnet "
                           f"{nets[0].subnet}: name the VNI (docker network create --ipam-opt vni=N)")
        return nets[0] if nets else None

    def address_pool(self, subnet: str, vni: int | str | None = None) -> dict:
        """What a pool is: its registry network (None if there is none yet, or
        several) and its gateway (the network's; else the first host address,
        which network_ensure gives a network it creates)."""
        want = model.parse_subnet(subnet)
        nets = self._pool_networks(want, vni)
        net = nets[0] if len(nets) == 1 else None
        return {"subnet": str(want), "prefixlen": want.prefixlen, "network": net.name if net else None,
                "vni": net.vni if net else (model.parse_vni(vni) if vni is not None else None),
                "gateway": net.gateway if net else str(next(want.hosts()))}

    def address_reserve(self, subnet: str, vni: int | str | None = None, ip: str | None = None, name: str | None = None,
                        mtu: int | str | None = None, keep: bool = False, gateway: str | None = None) -> dict:
        """Reserve ip (None: the lowest free one) for this host in the pool's
        network, under this host's lease (keep: under none, reserve.py). With a VNI the network is
        created if missing (another host's runtime may have released it), as name, mtu and gateway say."""
        want = model.parse_subnet(subnet)
        created = False
        if vni is not None:
            d = self.network_ensure(vni=vni, subnet=str(want), name=name, mtu=mtu, gateway=gateway)
            name, vni_of, created = d["name"], d["vni"], d["created"]
        else:
            net = self._pool_network(want)
            if net is None:
                raise NotFound(f"no registry network has subnet {want}: name its VNI "
                               "(docker network create -o vni=N, or --ipam-opt vni=N)")
            name, vni_of = net.name, net.vni
        try:
            lease = self.ag.leases.lease
            if not lease:
                raise DataplaneError(f"host {self.ag.me} is not registered in the registry yet: try again")
            with inflight.network_lock(self.ag, name):
                addr = self.ag.reg.address_reserve(name, self.ag.me, lease, ip=ip, keep=keep is True)
        except DataplaneError:
            if created:                  # nobody knows of it yet: not left behind
                with contextlib.suppress(DataplaneError):
                    self.ag.reg.network_rm(name)
            raise
        return {"ip": addr, "prefixlen": want.prefixlen, "network": name, "vni": vni_of, "created": created}

    def address_release(self, subnet: str, ip: str, vni: int | str | None = None) -> dict:
        """Release this host's reservation of ip; {"released": false} if there is
        none (the address is free, an endpoint's, the gateway, or another host's)."""
        ip = str(model.parse_ipv4(ip))
        reg, me = self.ag.reg, self.ag.me

        def ours(net) -> bool:
            r = reg.reservation(net.name, ip)
            return r is not None and r.host == me
        # Several networks with the subnet (no VNI known): the one where we hold ip, if only one.
        nets = [n for n in self._pool_networks(subnet, vni) if ours(n)]
        if len(nets) > 1:
            raise Conflict(f"this host holds {ip} in registry networks {', '.join(n.name for n in nets)}: "
                           "name the VNI (--ipam-opt vni=N)")
        if not nets:
            return {"released": False}
        with inflight.network_lock(self.ag, nets[0].name):
            return {"released": reg.address_release(nets[0].name, ip, me), "network": nets[0].name}

    def address_list(self) -> list[dict]:
        """This host's reservations: [{network, ip, host, at}]."""
        return self.ag.reg.reservations(host=self.ag.me)
