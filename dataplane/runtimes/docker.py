"""Docker remote network driver (libnetwork's remote protocol: JSON over HTTP
on a unix socket Docker discovers in /run/docker/plugins/).

`docker network create -d dataplane -o vni=256 --subnet 10.30.0.0/24 net1`
maps the Docker network to the registry network with VNI 256 (created if
missing, the same subnet required on every host); `docker run --net net1`
gets a veth whose host side the fast path serves. It runs beside the agent
(`dataplane docker-plugin`) and only calls the agent's API: no bcc here.

Scope is "local" (each engine has its own network object and IPAM) and
connectivity "global" (the VNI spans hosts). Docker's local IPAM cannot know
other hosts' addresses, so engines sharing a VNI need disjoint --ip-range
(or --ip); the registry refuses a clash with a message that says so. The same
process is also an IPAM driver backed by the registry (docker_ipam.py):
with `--ipam-driver dataplane` no ranges are needed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading

from dataplane.agent import client
from dataplane.core import model, state
from dataplane.core.errors import Conflict, DataplaneError, NotFound, UsageError
from dataplane.runtimes import docker_ipam, gateway_arg
from dataplane.runtimes.docker_pending import Pending

log = logging.getLogger("dataplane.docker")

GENERIC = "com.docker.network.generic"
INTERNAL = "com.docker.network.internal"     # libnetwork's label for `docker network create --internal`
MTU_OPTION = "com.docker.network.driver.mtu"     # Docker's own name for it, as its overlay driver takes
OPTIONS = ("vni", "network", MTU_OPTION)
# Docker's own, left in the generic map unless its API's EnableIPv6/EnableIPv4 was set (-o, or a
# daemon's default-network-opts): taken when they say what the driver does anyway.
DOCKER_OWN = {"com.docker.network.enable_ipv6": (False, "IPv6 is not supported by the dataplane driver yet"),
              "com.docker.network.enable_ipv4": (True, "a network without IPv4 is not supported")}
PLUGIN_DIR = "/run/docker/plugins"


def endpoint_id(docker_eid: str) -> str:
    return "dk-" + docker_eid[:24]


def peer_ifname(docker_eid: str) -> str:
    return "dkp" + docker_eid[:12]


def _id(req: dict, field: str) -> str:
    """A Docker id from the request: refused before the agent is asked anything if it is no string."""
    value = req[field]
    if not isinstance(value, str) or not value:
        raise UsageError(f"bad {field}: a non-empty string expected, not {type(value).__name__}")
    return value


class Driver(Pending):
    """The protocol's operations; each takes the request object, returns the reply."""

    def __init__(self, node: str):
        self.node = node
        self.lock = threading.Lock()
        # Docker never repeats CreateNetwork (not after our restart, not after a reboot):
        # the map of its network ids to VNIs must outlive both.
        self.path = os.path.join(state.lib_dir(node), "docker-networks.json")
        # Registry networks to release: Docker forgets a network whose DeleteNetwork failed
        # (it only logs), so a release the agent could not take is kept here and tried again.
        self.releases_path = os.path.join(state.lib_dir(node), "docker-releases.json")
        self.ipam_created: set[int] = set()    # VNIs the IPAM created a registry network for, not mapped yet
        self.pool_vnis: dict[str, int | None] = {}     # subnet -> the VNI its last RequestPool named (--ipam-opt)
        # subnet -> when RequestPool asked for it, until its CreateNetwork: the addresses asked for
        # meanwhile are --aux-addresses (docker_ipam.AUX_WINDOW_S)
        self.pools_new: dict[str, float] = {}
        self.pool_gateways: dict[str, str] = {}    # subnet -> the --gateway a new network is to have
        # Endpoints to detach: Docker ignores a DeleteEndpoint error (it logs it, frees the address
        # in its IPAM and never asks again), and forgets an endpoint whose CreateEndpoint failed;
        # one the agent could not take, or may have made, is detached at a later request.
        self.detach_path = os.path.join(state.lib_dir(node), "docker-detaches.json")
        self.inflight: set[str] = set()

    # --- Docker network id -> VNI, kept across restarts of this process ------

    def _load(self) -> dict:
        try:
            with open(self.path) as f:
                nets = json.load(f)
        except FileNotFoundError:
            return {}
        except ValueError as e:          # refused, never read as empty and then overwritten
            raise DataplaneError(f"{self.path} is corrupt ({e}): repair or remove it") from None
        if not isinstance(nets, dict):
            raise DataplaneError(f"{self.path} is corrupt (not an object): repair or remove it")
        return nets

    def _save(self, nets: dict) -> None:
        state.write_json(self.path, nets, durable=True)     # Docker never repeats a CreateNetwork

    def _network(self, nid: str) -> dict:
        net = self._load().get(nid)
        if net is None:
            raise NotFound(f"network {nid[:12]} is not a dataplane network on this host")
        return net

    def _agent(self, op: str, **args):
        return client.call(self.node, op, **args)

    def note_created(self, vni: int) -> None:
        """The IPAM created VNI's registry network (docker_ipam.py): it is this
        driver's to release, like one create_network or create_endpoint made."""
        with self.lock:
            nets = self._load()
            mine = [n for n in nets.values() if n.get("vni") == vni]
            for n in mine:
                n["created"] = True
            if mine:
                self._save(nets)
            else:                        # Docker asks the IPAM before CreateNetwork
                self.ipam_created.add(vni)

    # --- protocol ----------------------------------------------------------------

    def activate(self, req) -> dict:
        return {"Implements": ["NetworkDriver", "IpamDriver"]}

    def capabilities(self, req) -> dict:
        return {"Scope": "local", "ConnectivityScope": "global"}

    def create_network(self, req) -> dict:
        nid = _id(req, "NetworkID")
        self.detach_pending()            # first: a leftover endpoint keeps its network "in use" to a release
        self.release_pending()
        opts = dict((req.get("Options") or {}).get(GENERIC) or {})
        for opt, (want, why) in DOCKER_OWN.items():
            if opt in opts and (str(opts.pop(opt)).lower() in ("1", "t", "true")) != want:
                raise UsageError(f"{why} (-o {opt})")
        unknown = sorted(set(opts) - set(OPTIONS))
        if unknown:
            raise UsageError(f"unknown option {unknown[0]!r}: the dataplane driver takes "
                             + ", ".join(f"-o {o}=..." for o in OPTIONS))
        vni = model.parse_vni(opts["vni"]) if "vni" in opts else None
        name = model.parse_name(opts["network"], "network name") if "network" in opts else None
        if req.get("IPv6Data"):
            raise UsageError("IPv6 is not supported by the dataplane driver yet: create the network without --ipv6")
        pools = req.get("IPv4Data") or []
        if len(pools) != 1 or not pools[0].get("Pool"):
            raise UsageError("give exactly one IPv4 subnet (--subnet)")
        subnet = str(ipaddress.IPv4Network(pools[0]["Pool"]))
        # Docker's IPAM keeps its gateway (--gateway, else the first address of the subnet or of
        # --ip-range) from its containers: a registry network made here takes it, or Docker handed
        # the registry's gateway to a container. One that exists keeps its own (engines with
        # disjoint --ip-ranges have different ones): CreateEndpoint says what to do if they clash.
        gw = str(ipaddress.IPv4Interface(pools[0]["Gateway"]).ip) if pools[0].get("Gateway") else None
        ipam = pools[0].get("AddressSpace") == docker_ipam.ADDRESS_SPACE
        # --ipam-opt vni=N reaches the IPAM alone: each engine's network took a VNI of its own.
        pool_vni = self.pool_vnis.get(subnet) if ipam else None
        self.pools_new.pop(subnet, None)
        self.pool_gateways.pop(subnet, None)
        if pool_vni is not None and vni not in (None, pool_vni):
            raise UsageError(f"-o vni={vni} and --ipam-opt vni={pool_vni} differ: give one of them")
        vni = pool_vni if vni is None else vni
        try:
            net = self._agent("network_ensure", vni=vni, subnet=subnet, name=name, mtu=opts.get(MTU_OPTION),
                              **gateway_arg(subnet, gw))
        except Conflict as e:
            if vni is None or vni not in self.ipam_created:
                raise
            self._ipam_made_too_soon(vni, subnet, e)
        with self.lock:
            nets = self._load()
            # A registry network a runtime made (on any host: the record says so) is released by
            # whichever host's engine lets go of it last. Kept per Docker network of this engine as
            # "made here", a second Docker network on the VNI, or one on another host, never
            # released it, and the VNI's settings stayed taken for good.
            created = net["created"] or net.get("runtime", False) or net["vni"] in self.ipam_created
            self.ipam_created.discard(net["vni"])
            nets[nid] = {"vni": net["vni"], "subnet": net["subnet"], "name": net["name"], "mtu": net["mtu"],
                         "gateway": net["gateway"], "created": created,
                         "internal": bool((req.get("Options") or {}).get(INTERNAL)),
                         "ipam": ipam}
            self._save(nets)
        return {}

    def _ipam_made_too_soon(self, vni: int, subnet: str, e: Conflict):
        """The IPAM made VNI's registry network for an --aux-address, asked for before CreateNetwork's
        -o network and -o mtu were known, with neither: it goes again (it refused every later try)."""
        self.ipam_created.discard(vni)
        try:
            self._agent("network_release", vni=vni)
        except DataplaneError as err:
            log.warning("VNI %d: the registry network the IPAM made is left: %s", vni, err)
        raise Conflict(f"{e}: it was made for an --aux-address, before this network's options were known; make "
                       f"it first (dataplane network create NAME --vni {vni} --subnet {subnet} [--mtu M]), or "
                       f"leave -o network and -o {MTU_OPTION} out") from None

    def delete_network(self, req) -> dict:
        with self.lock:
            nets = self._load()
            net = nets.pop(_id(req, "NetworkID"), None)
            # Release only a registry network this driver made: one an operator made
            # (`dataplane network create`) outlives the Docker networks mapped onto it.
            if net is not None and net["created"] and not any(n["vni"] == net["vni"] for n in nets.values()):
                state.write_json(self.releases_path, sorted(set(self._pending()) | {net["vni"]}), durable=True)
            self._save(nets)
        self.detach_pending()
        self.release_pending(loud=net["vni"] if net is not None else None)
        return {}

    def create_endpoint(self, req) -> dict:
        nid, eid = _id(req, "NetworkID"), _id(req, "EndpointID")
        self.detach_pending()
        self.release_pending()           # (not only at network requests: engines that only run containers)
        net = self._network(nid)
        iface = req.get("Interface") or {}
        if iface.get("AddressIPv6"):
            raise UsageError("IPv6 addresses are not supported by the dataplane driver yet")
        if not iface.get("Address"):
            raise UsageError("Docker gave the endpoint no IPv4 address")
        addr = ipaddress.IPv4Interface(iface["Address"])
        # another host's engine may have released the registry network meanwhile
        # Made again as it was (name, MTU): a release elsewhere took it, and made from the VNI
        # alone it became vni<N> with this host's MTU, refused to the hosts that still had the old.
        made = self._agent("network_ensure", vni=net["vni"], subnet=net["subnet"], name=net["name"],
                           mtu=net.get("mtu"), **gateway_arg(net["subnet"], net.get("gateway")))
        if made["created"] or (made.get("runtime") and not net["created"]):
            with self.lock:
                nets = self._load()
                if nid in nets:
                    nets[nid]["created"] = True
                    self._save(nets)
        ours = bool(net.get("ipam"))    # the address is this host's reservation: the endpoint takes it over
        try:
            with self.attaching(endpoint_id(eid)):
                ep = self._agent("endpoint_attach", id=endpoint_id(eid), vni=net["vni"], ip=str(addr.ip),
                                 mac=iface.get("MacAddress") or None, prefixlen=addr.network.prefixlen,
                                 sandbox={"peer": peer_ifname(eid), "runtime": "docker",
                                          "network": nid, "endpoint_id": eid}, **({"reserved": True} if ours else {}))
        except UsageError as e:
            if str(addr.ip) == made["gateway"]:
                raise UsageError(f"{e}: Docker gave a container the address registry network {made['name']} "
                                 f"holds as its gateway; create the Docker network with --gateway "
                                 f"{made['gateway']}, or an --ip-range without it") from None
            raise
        except Conflict as e:
            if str(e).startswith("MAC ") and iface.get("MacAddress"):     # not the address: retrying cannot help
                raise Conflict(f"{e}: `docker run --mac-address` gave another endpoint's MAC on VNI {net['vni']}; "
                               "give another, or none (one is derived from the address)") from None
            if "in use" in str(e) and ours:
                raise Conflict(f"{e}: this host's reservation of {addr.ip} was lost meanwhile (its registry "
                               "lease lapsed?); try again") from None
            if "in use" in str(e):      # Docker derives the MAC from the address: either clashes
                raise Conflict(f"{e}: engines on several hosts that share VNI {net['vni']} need disjoint "
                               "address ranges (docker network create --ip-range, or docker run --ip)") from None
            raise
        return {} if iface.get("MacAddress") else {"Interface": {"MacAddress": ep["mac"]}}

    def _local(self, eid: str) -> dict:
        want = endpoint_id(eid)
        for ep in self._agent("endpoint_local", runtime="docker"):
            if ep["name"] == want:
                return ep
        raise NotFound(f"endpoint {eid[:12]} is not on this host")

    def endpoint_info(self, req) -> dict:
        ep = self._local(_id(req, "EndpointID"))
        return {"Value": {"vni": str(ep["vni"]), "ip": ep["ip"], "mac": ep["mac"], "veth": ep["host_ifname"]}}

    def join(self, req) -> dict:
        ep = self._local(_id(req, "EndpointID"))
        # The overlay is one L2 segment with no router of ours. Egress and published ports are
        # Docker's own: with the gateway service, libnetwork gives the container a second
        # interface on docker_gwbridge (NAT, -p), as it does for its overlay driver; the
        # overlay's subnet stays on eth0, so east-west traffic never takes the gateway.
        # `--internal` networks get none.
        internal = self._load().get(req.get("NetworkID"), {}).get("internal", False)
        return {"InterfaceName": {"SrcName": ep["sandbox"]["peer"], "DstPrefix": "eth"},
                "DisableGatewayService": bool(internal)}

    def leave(self, req) -> dict:
        self._local(_id(req, "EndpointID"))
        return {}

    def delete_endpoint(self, req) -> dict:
        eid, nid = _id(req, "EndpointID"), req.get("NetworkID")
        # With our IPAM the address stays reserved until Docker's ReleaseAddress, which follows.
        ours = isinstance(nid, str) and bool(self._load().get(nid, {}).get("ipam"))
        self.detach_pending()
        try:
            self._agent("endpoint_detach", id=endpoint_id(eid), **({"keep_address": True} if ours else {}))
        except UsageError:
            raise
        except DataplaneError:          # Docker only logs it, and never asks again
            self._note_detach(endpoint_id(eid), pending=True, removed_only=False)
            raise
        return {}

    def nothing(self, req) -> dict:
        return {}

    def routes(self) -> dict:
        return {
            **docker_ipam.Ipam(self).routes(),
            "/Plugin.Activate": self.activate,
            "/NetworkDriver.GetCapabilities": self.capabilities,
            "/NetworkDriver.CreateNetwork": self.create_network,
            "/NetworkDriver.DeleteNetwork": self.delete_network,
            "/NetworkDriver.CreateEndpoint": self.create_endpoint,
            "/NetworkDriver.EndpointOperInfo": self.endpoint_info,
            "/NetworkDriver.DeleteEndpoint": self.delete_endpoint,
            "/NetworkDriver.Join": self.join,
            "/NetworkDriver.Leave": self.leave,
            "/NetworkDriver.DiscoverNew": self.nothing,
            "/NetworkDriver.DiscoverDelete": self.nothing,
            "/NetworkDriver.ProgramExternalConnectivity": self.nothing,
            "/NetworkDriver.RevokeExternalConnectivity": self.nothing,
            "/NetworkDriver.AllocateNetwork": self.nothing,
            "/NetworkDriver.FreeNetwork": self.nothing,
        }
