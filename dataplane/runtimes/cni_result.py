"""What a CNI result says (the IPAM plugin's, or a chain's prevResult), checked for shape
before anything is made, and what the container gets of it."""

from __future__ import annotations

import ipaddress

from dataplane.runtimes.cni_ipam import E_CONFIG, E_DECODE, CNIError

# What the container's routes are made of (kernel/links.py): a destination and a next hop, in the
# main table. The spec's other route fields (1.1.0: mtu, advmss, priority, table, scope) are
# refused by name, not dropped while the result lists them.
ROUTE_FIELDS = ("dst", "gw")


def objects(result: dict | None, key: str, field: str | None = None) -> list[dict]:
    """result[key] checked for shape: a list of objects (each with a string `field`); [] if absent."""
    items = (result or {}).get(key)
    if items is not None and not (isinstance(items, list) and all(
            isinstance(i, dict) and (field is None or isinstance(i.get(field), str)) for i in items)):
        raise CNIError(E_DECODE, f"{key} must be a list of objects" + (f" with a {field} string" if field else ""))
    return items or []


def shape(result: dict | None) -> tuple[list, list, list]:
    """A result's interfaces, ips and routes (and dns) checked for shape, before anything is made."""
    if not isinstance((result or {}).get("dns") or {}, dict):
        raise CNIError(E_DECODE, "dns must be an object")
    return (objects(result, "interfaces", "name"), objects(result, "ips", "address"),
            objects(result, "routes", "dst"))


def v4_routes(routes: list, strict: bool = True) -> list:
    """What the container gets of a result's routes: the IPv4 ones (the network carries IPv4;
    a dual-stack IPAM's IPv6 routes are left out, as its IPv6 addresses are: they reached the
    agent and failed the ADD with an internal error). A dst that is no network: E_DECODE; a
    field other than dst and gw (table, priority, mtu...): E_CONFIG, named (before, the route
    went into the main table without it, and the result listed it as given); not strict (a
    chain's prevResult, which an earlier plugin made and may have installed so): left out, to be
    reported as given (a route of table 100 went into the main table while the result said 100)."""
    out = []
    for r in routes:
        try:
            dst = ipaddress.ip_network(r["dst"], strict=False)
        except (TypeError, ValueError):
            raise CNIError(E_DECODE, f"route destination {r['dst']!r} is not a network") from None
        if dst.version == 4:
            extra = extra_fields(r)
            if extra and strict:
                raise CNIError(E_CONFIG, f"route {r['dst']}: field {extra[0]!r} ({r[extra[0]]!r}) is not supported "
                                         "by the dataplane plugin (a route is a dst and a gw, in the main table)")
            if not extra:
                out.append(r)
    return out


def extra_fields(route: dict) -> list:
    """A route's fields beyond dst and gw (1.1.0's table, priority, mtu, advmss, scope)."""
    return sorted(k for k in route if k not in ROUTE_FIELDS)


def via(routes: list, gateway) -> list:
    """routes, each without "gw" given gateway as its next hop, as the reference plugins install
    them (the spec, Routes: a gateway in ips may be used). Before, it went in with none: a
    default route so made reached nothing."""
    try:
        gw = str(ipaddress.IPv4Address(gateway)) if isinstance(gateway, str) else None
    except ValueError:
        gw = None
    return [r if r.get("gw") or not gw else {**r, "gw": gw} for r in routes]


def first_ipv4(result: dict | None):
    for ip in objects(result, "ips", "address"):
        try:
            iface = ipaddress.ip_interface(ip["address"])
        except ValueError:
            continue
        if iface.version == 4:
            return iface, ip
    return None, None
