"""Docker remote IPAM driver backed by the registry (libnetwork's ipam.md),
served by the network driver's process on the same socket.

`docker network create -d dataplane --ipam-driver dataplane --subnet S -o vni=N`
on several engines: each address is reserved in the registry (registry/reserve.py)
when Docker asks for it, so no two engines ever hand out the same one; no
disjoint --ip-range per engine is needed.

- A pool is a subnet (--subnet is required: Docker's default pools differ from
  engine to engine). PoolID is "<subnet>", or "<subnet>;vni=<N>" with
  `--ipam-opt vni=N`. Docker asks for the pool before the network driver's
  CreateNetwork, so the registry network may not exist yet: a pool is tied to
  it at each address request, by the VNI of the PoolID, else of this engine's
  dataplane networks on that subnet (the network driver's map), else by the one
  registry network with that subnet.
- The gateway is the registry network's (else the subnet's first host address,
  which the network the driver creates will have); it is returned with the
  pool, never reserved.
- RequestAddress reserves (the given address, or the lowest free one) under
  this host's lease; CreateEndpoint makes the reservation the endpoint's claim;
  DeleteEndpoint makes it a reservation again; ReleaseAddress deletes it.
- IPv6 pools and --ip-range (SubPool) are refused.
"""

from __future__ import annotations

import ipaddress
import time

from dataplane.core import model
from dataplane.core.errors import Conflict, UsageError
from dataplane.runtimes import gateway_arg

ADDRESS_SPACE = "dataplane"                  # both defaults: the registry is one space for all hosts
GATEWAY = "com.docker.network.gateway"       # libnetwork's netlabel.Gateway
ADDRESS_TYPE = "RequestAddressType"          # ipamapi.RequestAddressType
VNI_OPTION = "vni"
AUX_WINDOW_S = 60.0      # RequestPool to CreateNetwork: one `docker network create`


def pool_id(subnet: str, vni: int | None) -> str:
    return subnet if vni is None else f"{subnet};vni={vni}"


def parse_pool_id(value) -> tuple[str, int | None]:
    if not isinstance(value, str) or not value:
        raise UsageError(f"bad PoolID {value!r}: not one this driver gave")
    subnet, sep, rest = value.partition(";")
    if sep and not rest.startswith("vni="):
        raise UsageError(f"bad PoolID {value!r}: not one this driver gave")
    return str(model.parse_subnet(subnet)), (model.parse_vni(rest[4:]) if sep else None)


def _text(req: dict, field: str) -> str | None:
    """An optional string field; None if empty or absent."""
    value = req.get(field)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise UsageError(f"bad {field}: a string expected, not {type(value).__name__}")
    return value


def _options(req: dict) -> dict:
    opts = req.get("Options") or {}
    if not isinstance(opts, dict):
        raise UsageError(f"bad Options: an object expected, not {type(opts).__name__}")
    return opts


class Ipam:
    """The IPAM protocol's operations; each takes the request object, returns the reply.
    driver: the network driver (docker.Driver), for its agent client and network map."""

    def __init__(self, driver):
        self.driver = driver

    def capabilities(self, req) -> dict:
        # No replay: the registry keeps the reservations across Docker's restarts.
        return {"RequiresMACAddress": False, "RequiresRequestReplay": False}

    def address_spaces(self, req) -> dict:
        return {"LocalDefaultAddressSpace": ADDRESS_SPACE, "GlobalDefaultAddressSpace": ADDRESS_SPACE}

    def request_pool(self, req) -> dict:
        if req.get("V6"):
            raise UsageError("IPv6 is not supported by the dataplane IPAM driver: create the network without --ipv6")
        pool = _text(req, "Pool")
        if pool is None:
            raise UsageError("the dataplane IPAM driver needs the network's subnet (docker network create --subnet): "
                             "Docker's default pools differ from engine to engine")
        if ":" in pool:
            raise UsageError(f"IPv6 pool {pool} is not supported by the dataplane IPAM driver")
        if _text(req, "SubPool") is not None:
            raise UsageError("--ip-range is not needed with --ipam-driver dataplane (the registry gives each address "
                             "once across all hosts): leave it out")
        opts = _options(req)
        unknown = sorted(k for k in opts if k != VNI_OPTION and not str(k).startswith("com.docker."))
        if unknown:
            raise UsageError(f"unknown IPAM option {unknown[0]!r}: the dataplane IPAM driver takes --ipam-opt vni=N")
        vni = model.parse_vni(opts[VNI_OPTION]) if VNI_OPTION in opts else None
        subnet = model.parse_subnet(pool)
        info = self.driver._agent("address_pool", subnet=str(subnet), vni=vni)
        self.driver.pool_vnis[str(subnet)] = vni         # CreateNetwork, next, is not told it
        self.driver.pools_new[str(subnet)] = time.monotonic()
        return {"PoolID": pool_id(str(subnet), vni), "Pool": str(subnet),
                "Data": {GATEWAY: f"{info['gateway']}/{subnet.prefixlen}"}}

    def release_pool(self, req) -> dict:
        subnet, _ = parse_pool_id(req.get("PoolID"))   # nothing is held per pool: addresses go one by one
        self.driver.pools_new.pop(subnet, None)        # (a CreateNetwork that failed: Docker rolls back)
        self.driver.pool_gateways.pop(subnet, None)
        return {}

    def request_address(self, req) -> dict:
        self.driver.detach_pending()      # an address a failed DeleteEndpoint held is free again first
        subnet, vni = parse_pool_id(req.get("PoolID"))
        want = _text(req, "Address")
        want = str(model.parse_ipv4(want)) if want is not None else None
        prefixlen = ipaddress.IPv4Network(subnet).prefixlen
        if _options(req).get(ADDRESS_TYPE) == GATEWAY:       # --gateway: the registry's, or a new network's
            pool = self.driver._agent("address_pool", subnet=subnet, vni=self._vni(subnet, vni))
            gw = pool["gateway"]
            if want is not None and pool["network"] is None and vni is not None and gateway_arg(subnet, want):
                gw = want                # CreateNetwork makes the network with it (runtimes.gateway_arg),
                self.driver.pool_gateways[subnet] = want       # or an --aux-address's reservation does
            if want is not None and want != gw:
                raise Conflict(f"the gateway of {subnet} is {gw} in the registry: give --gateway {gw}, or none")
            return {"Address": f"{gw}/{prefixlen}", "Data": {}}
        nets = [n for n in self.driver._load().values() if isinstance(n, dict)]
        # Between RequestPool and CreateNetwork Docker asks for the --aux-addresses, once for good
        # (no replay): kept under no lease. Under the host's, a reboot let other engines hand them out.
        # (A window, not for ever: with another network driver CreateNetwork never comes here.)
        asked = self.driver.pools_new.get(subnet)
        aux = asked is not None and time.monotonic() - asked < AUX_WINDOW_S
        if aux and vni is None:          # the network's -o vni is not known yet: reserved in a guess
            raise UsageError("an --aux-address with --ipam-driver dataplane needs --ipam-opt vni=N: Docker asks "
                             "for it before the network (and its -o vni) exists")
        vni = self._vni(subnet, vni)
        # If the registry network is gone (released elsewhere), made again as this engine's
        # Docker network on the VNI has it: its name and MTU.
        known = next((n for n in nets if n.get("vni") == vni and vni is not None), {})
        extra = {"keep": True, **gateway_arg(subnet, self.driver.pool_gateways.get(subnet))} if aux else {}
        try:
            got = self.driver._agent("address_reserve", subnet=subnet, vni=vni, ip=want, name=known.get("name"),
                                     mtu=known.get("mtu"), **extra)
        except UsageError as e:          # an agent older than keep and gateway (not restarted since an upgrade):
            if not extra or "unknown argument" not in str(e):      # under the lease, as it did
                raise
            got = self.driver._agent("address_reserve", subnet=subnet, vni=vni, ip=want, name=known.get("name"),
                                     mtu=known.get("mtu"))
        if got["created"]:
            self.driver.note_created(got["vni"])
        return {"Address": f"{got['ip']}/{prefixlen}", "Data": {}}

    def release_address(self, req) -> dict:
        subnet, vni = parse_pool_id(req.get("PoolID"))
        ip = _text(req, "Address")
        if ip is None:
            raise UsageError("ReleaseAddress names no Address")
        self.driver._agent("address_release", subnet=subnet, ip=str(model.parse_ipv4(ip)),
                           vni=self._vni(subnet, vni))
        return {}

    def _vni(self, subnet: str, vni: int | None) -> int | None:
        """The pool's VNI: the PoolID's, else that of this engine's dataplane networks
        with this subnet and this IPAM, if they agree on one; None: ask the registry."""
        if vni is not None:
            return vni
        vnis = sorted({n["vni"] for n in self.driver._load().values()
                       if isinstance(n, dict) and n.get("ipam") and n.get("subnet") == subnet})
        if len(vnis) > 1:
            raise Conflict(f"this engine's dataplane networks on {subnet} have VNIs {', '.join(map(str, vnis))}: "
                           "create them with --ipam-opt vni=N too")
        return vnis[0] if vnis else None

    def routes(self) -> dict:
        return {
            "/IpamDriver.GetCapabilities": self.capabilities,
            "/IpamDriver.GetDefaultAddressSpaces": self.address_spaces,
            "/IpamDriver.RequestPool": self.request_pool,
            "/IpamDriver.ReleasePool": self.release_pool,
            "/IpamDriver.RequestAddress": self.request_address,
            "/IpamDriver.ReleaseAddress": self.release_address,
        }
