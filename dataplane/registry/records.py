"""Registry records: networks, hosts, endpoints, and the keys they live
under (the layout is in store.py). Built only through the validators here,
whether from the CLI or from bytes read back from the store, so a malformed
record written by anyone is refused the same way."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass

import orjson

from dataplane.core import model
from dataplane.core.errors import UsageError

MTU_DEFAULT = 1500 - model.ENCAP_LEN
ID_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_ID = re.compile("^" + ID_RE + r"\Z")       # \Z: $ lets "id\n" through
PREFIX = "/dataplane/"


def key(*parts) -> str:
    return PREFIX + "/".join(str(p) for p in parts)


ROUTER_PREFIX = "dpgw."


def router_id(vni: int, host: str) -> str:
    """The endpoint record of host's gateway router's own address on the network of VNI vni
    (agent/routers.py): no sandbox's, and removed with its network."""
    return f"{ROUTER_PREFIX}{vni}.{host}"


def is_router(ep, vni: int | None) -> bool:
    """Is endpoint record ep (of the network of VNI vni) its host's gateway router's own address?"""
    return ep.id == router_id(vni, ep.host)


def parse_endpoint_id(value) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise UsageError(f"bad endpoint id {value!r}: use 1-64 of [A-Za-z0-9_.-], starting with a letter or digit")
    return value


def parse_mtu(value) -> int:
    mtu = model.parse_int(value, "MTU")
    if not 576 <= mtu <= model.MTU_MAX:
        raise UsageError(f"bad MTU {mtu}: must be 576..{model.MTU_MAX}")
    return mtu


def _loads(raw: bytes, what: str) -> dict:
    try:
        d = orjson.loads(raw)      # refuses NaN, 1e400, bad UTF-8 and nesting past 1024 (ValueError)
    except ValueError as e:
        raise UsageError(f"malformed {what} record: not JSON ({str(e).partition(':')[0]})") from None
    if not isinstance(d, dict):
        raise UsageError(f"malformed {what} record: not an object")
    return d


@dataclass(frozen=True)
class Network:
    name: str
    vni: int
    subnet: str
    gateway: str
    mtu: int = MTU_DEFAULT
    port: int = model.VXLAN_PORT
    internal: bool = False       # no way out: endpoints get no default route, no gateway (node/gateway.py)
    runtime: bool = False        # made by a runtime's request (network_ensure): released when no host uses it

    @classmethod
    def make(cls, name, vni, subnet=None, gateway=None, mtu=None, port=None, internal=False,
             runtime=False) -> "Network":
        vni = model.parse_vni(vni)
        net = model.parse_subnet(subnet) if subnet is not None else model.default_subnet(vni)
        if gateway is None:
            gw = next(net.hosts())
        else:
            gw = model.parse_ipv4(gateway, "gateway")
            if gw not in net or gw in (net.network_address, net.broadcast_address):
                raise UsageError(f"gateway {gw} is not a host address of {net}")
        return cls(name=model.parse_name(name, "network name"), vni=vni, subnet=str(net), gateway=str(gw),
                   mtu=parse_mtu(mtu if mtu is not None else MTU_DEFAULT),
                   port=model.parse_port(port if port is not None else model.VXLAN_PORT),
                   internal=_flag(internal, "internal"), runtime=_flag(runtime, "runtime"))

    @classmethod
    def from_json(cls, raw: bytes) -> "Network":
        d = _loads(raw, "network")
        try:
            return cls.make(d["name"], d["vni"], d["subnet"], d["gateway"], d["mtu"], d["port"],
                            d.get("internal", False), d.get("runtime", False))
        except KeyError as e:
            raise UsageError(f"malformed network record: no {e.args[0]}") from None

    @property
    def net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    def reserved(self) -> set[str]:
        n = self.net
        return {str(n.network_address), str(n.broadcast_address), self.gateway}

    def check_ip(self, ip) -> str:
        addr = model.parse_ipv4(ip, "endpoint address")
        if addr not in self.net or str(addr) in self.reserved():
            raise UsageError(f"address {addr} is not a free host address of {self.subnet} "
                             f"(network, broadcast and gateway {self.gateway} are reserved)")
        return str(addr)

    def to_json(self) -> bytes:
        d = asdict(self)
        for flag in ("internal", "runtime"):
            if not d[flag]:
                del d[flag]             # records without the flag read as before
        return json.dumps(d, sort_keys=True).encode()

    def to_dict(self) -> dict:
        return asdict(self)


def _flag(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"bad {what} {value!r}: true or false")
    return value


@dataclass(frozen=True)
class Host:
    name: str
    vtep: str
    port: int = model.VXLAN_PORT

    @classmethod
    def make(cls, name, vtep, port=None) -> "Host":
        return cls(name=model.parse_name(name, "host name"), vtep=str(model.parse_ipv4(vtep, "VTEP address")),
                   port=model.parse_port(port if port is not None else model.VXLAN_PORT))

    @classmethod
    def from_json(cls, raw: bytes) -> "Host":
        d = _loads(raw, "host")
        try:
            return cls.make(d["name"], d["vtep"], d["port"])
        except KeyError as e:
            raise UsageError(f"malformed host record: no {e.args[0]}") from None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Endpoint:
    id: str
    network: str
    host: str
    mac: str
    ip: str
    # A move in progress: the host making its copy of the sandbox. Traffic still
    # goes to `host`; the move commits by setting host to it (and this to None).
    moving_to: str | None = None

    @classmethod
    def make(cls, id, network, host, mac, ip, moving_to=None) -> "Endpoint":
        return cls(id=parse_endpoint_id(id), network=model.parse_name(network, "network name"),
                   host=model.parse_name(host, "host name"), mac=model.parse_mac(mac),
                   ip=model.parse_ipv4_str(ip, "endpoint address"),
                   moving_to=None if moving_to is None else model.parse_name(moving_to, "host name"))

    @classmethod
    def from_json(cls, raw: bytes) -> "Endpoint":
        fast = endpoint_canonical(raw)
        return fast if fast is not None else cls.from_json_checked(raw)

    @classmethod
    def from_json_checked(cls, raw: bytes) -> "Endpoint":
        """from_json the general way: any JSON, every field through its validator."""
        d = _loads(raw, "endpoint")
        try:
            return cls.make(d["id"], d["network"], d["host"], d["mac"], d["ip"], d.get("moving_to"))
        except KeyError as e:
            raise UsageError(f"malformed endpoint record: no {e.args[0]}") from None

    def to_json(self) -> bytes:
        d = asdict(self)
        if d["moving_to"] is None:
            del d["moving_to"]          # records without a move read as before
        return json.dumps(d, sort_keys=True).encode()

    def to_dict(self) -> dict:
        return asdict(self)


_CANONICAL_ENDPOINT = re.compile(
    rf'\{{"host": "(?P<host>{model.NAME_RE})", "id": "(?P<id>{ID_RE})", '
    rf'"ip": "(?P<ip>(?P<a>{model.OCTET_RE})(?:\.{model.OCTET_RE}){{3}})", '
    r'"mac": "(?P<mac>[0-9a-f][02468ace](?::[0-9a-f]{2}){5})", '
    rf'(?:"moving_to": "(?P<moving_to>{model.NAME_RE})", )?"network": "(?P<network>{model.NAME_RE})"\}}\Z')


def endpoint_canonical(raw: bytes) -> "Endpoint | None":
    """An endpoint record exactly as to_json writes it, with every field already
    in its checked form, read by one regular expression: 3x faster than
    from_json's general way, which a cold start pays 100,000 times. None for
    anything else (from_json then reads it, or says what is wrong). It accepts
    only what the general way accepts, and makes the same record
    (tests/unit/test_fuzz_records.py checks that)."""
    try:
        m = _CANONICAL_ENDPOINT.match(raw.decode("ascii"))
    except UnicodeDecodeError:
        return None
    if m is None:
        return None
    eid, network, host, mac, ip, moving_to, a = m.group("id", "network", "host", "mac", "ip", "moving_to", "a")
    a = int(a)
    if 224 <= a <= 239 or a == 127 or ip in ("0.0.0.0", "255.255.255.255") or mac == "00:00:00:00:00:00":
        return None
    return Endpoint(eid, network, host, mac, ip, moving_to)

