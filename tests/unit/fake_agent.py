"""A recording stand-in for dataplane.agent.client, for the fuzz tests of the
runtimes (test_fuzz_docker.py, test_fuzz_cni.py). It answers the runtime
operations the way agent/runtime_ops.py does, refusing what the real agent
refuses with the same validators (model.parse_*, records), and keeps the
networks and endpoints it "created", so a test can see what a request left
behind. It stands at the runtimes' only door to the agent: the parsing under
test is the runtime's own."""

from __future__ import annotations

import ipaddress
import json

from dataplane.agent import apitypes, client, ops, runtime_ops
from dataplane.core import model
from dataplane.core.errors import Conflict, NotFound, UsageError
from dataplane.registry.records import Network, parse_mtu


# The real operations' schemas (agent/apitypes.py): what the agent would refuse before any handler.
SCHEMAS = {op: apitypes.schema(fn) for op, fn in {**ops.Ops(None).handlers(),
                                                   **runtime_ops.RuntimeOps(None).handlers()}.items()}


class FakeAgent:
    AgentNotRunning = client.AgentNotRunning

    def __init__(self, networks=(), endpoints=()):
        self.networks = {n.vni: n for n in networks}
        self.endpoints = {e["name"]: e for e in endpoints}
        self.reserved: set[tuple[int, str]] = set()        # (vni, address) this host reserved
        self.calls: list[tuple[str, dict]] = []

    def call(self, node: str, op: str, timeout: float = 60.0, **args):
        self.calls.append((op, args))
        model.parse_name(node, "node")
        # As the real agent's server would take them: through JSON, then its typed schema.
        apitypes.check(op, SCHEMAS[op], json.loads(json.dumps(args)))
        return getattr(self, op)(**args)

    def created(self) -> tuple:
        """What exists: compare before and after a request."""
        return sorted(self.networks), sorted(self.endpoints), sorted(self.reserved)

    # --- the operations (signatures as in agent/runtime_ops.py) ------------------

    def ping(self) -> dict:
        return {"host": "h1", "synced": True, "connected": True}

    def network_ensure(self, vni=None, subnet=None, name=None, mtu=None, gateway=None) -> dict:
        vni = model.parse_vni(vni) if vni is not None else None
        if mtu is not None:
            parse_mtu(mtu)
        want = model.parse_subnet(subnet) if subnet is not None else None
        if name is not None:
            model.parse_name(name, "network name")
        net = self.networks.get(vni) if vni is not None else next(
            (n for n in self.networks.values() if n.name == name), None)
        created = net is None
        if created:
            v = vni if vni is not None else max([4095, *self.networks]) + 1
            net = Network.make(name or f"vni{v}", v, subnet=str(want) if want else None, gateway=gateway)
            self.networks[v] = net
        elif want is not None and net.net != want:
            raise Conflict(f"VNI {net.vni} has subnet {net.subnet}, not {want}")
        return {**net.to_dict(), "created": created}

    def network_release(self, vni) -> dict:
        vni = model.parse_vni(vni)
        if any(e["vni"] == vni for e in self.endpoints.values()):
            return {"vni": vni, "removed": False, "in_use": True}
        return {"vni": vni, "removed": self.networks.pop(vni, None) is not None}

    def endpoint_attach(self, id, vni, sandbox, ip=None, mac=None, prefixlen=None, routes=(), reserved=False) -> dict:
        model.parse_name(id, "endpoint id")
        model.parse_sandbox(sandbox)
        if prefixlen is not None and not (isinstance(prefixlen, int) and 8 <= prefixlen <= 30):
            raise UsageError(f"bad prefix length {prefixlen!r}")
        _check_routes(routes)              # the real agent fails on these in netlink, then rolls back
        net = self.networks[self.network_ensure(vni=vni)["vni"]]
        if id in self.endpoints:
            raise Conflict(f"endpoint {id} exists already")
        addr = net.check_ip(ip) if ip is not None else str(next(
            h for h in net.net.hosts() if str(h) != net.gateway
            and str(h) not in {e["ip"] for e in self.endpoints.values()}))
        mac = model.parse_mac(mac) if mac is not None else model.mac_for_ip(ipaddress.IPv4Address(addr))
        for e in self.endpoints.values():
            if e["vni"] == net.vni and (e["ip"] == addr or e["mac"] == mac):
                raise Conflict(f"address {addr} or MAC {mac} is in use")
        if (net.vni, addr) in self.reserved and reserved is not True:
            raise Conflict(f"address {addr} is in use by a reservation of host h1")
        self.reserved.discard((net.vni, addr))
        ep = {"name": id, "vni": net.vni, "ip": addr, "mac": mac, "host_ifname": "dp" + id[-10:],
              "sandbox": dict(sandbox)}
        self.endpoints[id] = ep
        return {**ep, "network": net.name, "subnet": net.subnet, "gateway": net.gateway, "host": "h1"}

    def endpoint_detach(self, id, keep_address=False) -> dict:
        model.parse_name(id, "endpoint id")
        ep = self.endpoints.pop(id, None)
        if ep is not None and keep_address is True:
            self.reserved.add((ep["vni"], ep["ip"]))
        return {"id": id, "removed": ep is not None}

    def endpoint_check(self, id, ip=None, mac=None, routes=()) -> dict:
        model.parse_name(id, "endpoint id")
        ep = self.endpoints.get(id)
        if ep is None:
            raise NotFound(f"endpoint {id} is not on this host")
        for what, want, have in (("address", ip, ep["ip"]), ("MAC", mac, ep["mac"])):
            if want is not None and str(want).lower() != have:
                raise Conflict(f"endpoint {id} has {what} {have}, not {want}")
        return ep

    def endpoint_local(self, runtime=None) -> list[dict]:
        return [e for e in self.endpoints.values() if runtime is None or e["sandbox"].get("runtime") == runtime]

    # --- address reservations (one registry network per subnet here, unless a VNI is named) ---

    def _pool(self, subnet, vni=None, create=False) -> Network | None:
        want = model.parse_subnet(subnet)
        if vni is not None:
            net = self.networks[self.network_ensure(vni=vni, subnet=str(want))["vni"]] if create else \
                self.networks.get(model.parse_vni(vni))
        else:
            net = next((n for n in self.networks.values() if n.net == want), None)
        if net is not None and net.net != want:
            raise Conflict(f"VNI {net.vni} has subnet {net.subnet}, not {want}")
        return net

    def address_pool(self, subnet, vni=None) -> dict:
        net, want = self._pool(subnet, vni), model.parse_subnet(subnet)
        return {"subnet": str(want), "prefixlen": want.prefixlen, "network": net.name if net else None,
                "vni": net.vni if net else vni, "gateway": net.gateway if net else str(next(want.hosts()))}

    def address_reserve(self, subnet, vni=None, ip=None) -> dict:
        created = vni is not None and model.parse_vni(vni) not in self.networks
        net = self._pool(subnet, vni, create=True)
        if net is None:
            raise NotFound(f"no registry network has subnet {subnet}")
        try:
            return self._reserve(net, ip, created)
        except Exception:
            if created:                    # the real agent removes a network it made for nothing
                self.networks.pop(net.vni)
            raise

    def _reserve(self, net: Network, ip, created: bool) -> dict:
        used = {a for v, a in self.reserved if v == net.vni} | {e["ip"] for e in self.endpoints.values()
                                                               if e["vni"] == net.vni}
        if ip is not None:
            addr = net.check_ip(ip)
            if addr in used:
                raise Conflict(f"address {addr} is in use on {net.name}")
        else:
            addr = next((str(h) for h in net.net.hosts() if str(h) not in used | net.reserved()), None)
            if addr is None:
                raise Conflict(f"no free address in {net.subnet} (network {net.name})")
        self.reserved.add((net.vni, addr))
        return {"ip": addr, "prefixlen": net.net.prefixlen, "network": net.name, "vni": net.vni, "created": created}

    def address_release(self, subnet, ip, vni=None) -> dict:
        ip = str(model.parse_ipv4(ip))
        net = self._pool(subnet, vni)
        if net is None or (net.vni, ip) not in self.reserved:
            return {"released": False}
        self.reserved.discard((net.vni, ip))
        return {"released": True, "network": net.name}

    def address_list(self) -> list[dict]:
        return [{"network": self.networks[v].name, "ip": a, "host": "h1", "at": 0} for v, a in sorted(self.reserved)]


def _check_routes(routes) -> None:
    if not isinstance(routes, (list, tuple)):
        raise UsageError(f"bad routes {routes!r}")
    for r in routes:
        if not isinstance(r, dict) or not isinstance(r.get("dst"), str):
            raise UsageError(f"bad route {r!r}")
        try:
            ipaddress.IPv4Network(r["dst"])
        except ValueError:
            raise UsageError(f"bad route {r!r}") from None
