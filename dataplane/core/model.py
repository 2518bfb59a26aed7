"""The one place where user input is validated, and the values it is checked against.

Everything that reaches the fast path or the kernel passes through a parse_*
function here first, so a bad value is refused before anything is created.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from functools import lru_cache

from dataplane.core import abi
from dataplane.core.errors import UsageError

_A = abi.load().constants
VNI_MAX = _A["DP_VNI_MAX"]
VXLAN_PORT = _A["DP_VXLAN_PORT"]
ENCAP_LEN = _A["DP_ENCAP_LEN"]
FDB_AGE_DEFAULT_S = _A["DP_FDB_AGE_DEFAULT_S"]
SRC_PORT_MIN = _A["DP_SRC_PORT_MIN"]
SRC_PORT_MAX = _A["DP_SRC_PORT_MAX"]

# \Z, not $: $ also matches before a trailing newline, and "web1\n" is not a name.
NAME_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,30}"      # network, host, sandbox names (parse_name)
_NAME = re.compile("^" + NAME_RE + r"\Z")
_IFNAME = re.compile(r"^[^/\s:\x00\ud800-\udfff]{1,15}\Z")
_MAC = re.compile(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}\Z")


def parse_int(value, what: str, base: int = 10) -> int:
    """A whole number from a string or JSON: not a bool, a fraction, an infinity or NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f"bad {what} {value!r}: not a whole number")
    try:
        if isinstance(value, str):
            return int(value, base)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    except (ValueError, OverflowError):
        raise UsageError(f"bad {what} {value!r}: not a whole number") from None


def _finite(s: str) -> float:
    f = float(s)
    if not math.isfinite(f):
        raise ValueError(f"{s} is not a JSON number")
    return f


def loads(raw: bytes | str):
    """JSON from outside, as JSON means it: NaN, Infinity and numbers that overflow to
    infinity (1e400) raise ValueError, so what is echoed back stays JSON (Go parsers refuse them)."""
    return json.loads(raw, parse_float=_finite, parse_constant=_finite)


def parse_vni(value) -> int:
    vni = parse_int(value, "VNI", 0)
    if not 1 <= vni <= VNI_MAX:
        raise UsageError(f"bad VNI {vni}: must be 1..{VNI_MAX}")
    return vni


def parse_port(value, what: str = "UDP port") -> int:
    port = parse_int(value, what)
    if not 1 <= port <= 65535:
        raise UsageError(f"bad {what} {port}: must be 1..65535")
    return port


def parse_ipv4(value, what: str = "address") -> ipaddress.IPv4Address:
    try:
        ip = ipaddress.IPv4Address(str(value))
    except ValueError:
        raise UsageError(f"bad {what} {value!r}: not an IPv4 address") from None
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip == ipaddress.IPv4Address("255.255.255.255"):
        raise UsageError(f"bad {what} {ip}: must be a unicast address")
    return ip


OCTET_RE = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"   # a decimal octet, no leading zero (one group)
_IPV4 = re.compile(r"\.".join([OCTET_RE] * 4) + r"\Z")


def parse_ipv4_str(value, what: str = "address") -> str:
    """parse_ipv4's verdict as a string, without building an IPv4Address: the
    registry reads 100,000 endpoint addresses at start-up (5x faster)."""
    m = _IPV4.match(value) if isinstance(value, str) else None
    if m is None:
        return str(parse_ipv4(value, what))          # its error message
    a, b, c, d = (int(x) for x in m.groups())
    if 224 <= a <= 239 or a == 127 or (a | b | c | d) == 0 or (a & b & c & d) == 255:
        raise UsageError(f"bad {what} {value}: must be a unicast address")
    return value


def parse_subnet(value) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as e:
        raise UsageError(f"bad subnet {value!r}: {e}") from None
    if net.prefixlen > 30:
        raise UsageError(f"bad subnet {net}: needs at least 4 addresses (/30)")
    if any(net.overlaps(n) for n in _NOT_UNICAST):      # its gateway or endpoints could never be read back
        raise UsageError(f"bad subnet {net}: must not overlap {', '.join(map(str, _NOT_UNICAST))}")
    return net


_NOT_UNICAST = tuple(ipaddress.IPv4Network(n)
                     for n in ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "255.255.255.255/32"))


def parse_mac(value) -> str:
    if not isinstance(value, str) or not _MAC.match(value):
        raise UsageError(f"bad MAC {value!r}: expected xx:xx:xx:xx:xx:xx")
    raw = bytes.fromhex(value.replace(":", ""))
    if raw[0] & 1 or raw == bytes(6):
        raise UsageError(f"bad MAC {value}: must be unicast and non-zero")
    return value.lower()


def parse_name(value, what: str = "name") -> str:
    if not isinstance(value, str):
        raise UsageError(f"bad {what} {value!r}: use 1-31 of [A-Za-z0-9_.-], starting with a letter or digit")
    return _parse_name(value, what)


@lru_cache(maxsize=4096)          # registry records repeat a few network and host names 100,000 times
def _parse_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise UsageError(f"bad {what} {value!r}: use 1-31 of [A-Za-z0-9_.-], starting with a letter or digit")
    return value


def parse_ifname(value) -> str:
    """A name the kernel takes (dev_valid_name): 1-15 bytes of UTF-8, no '/', ':',
    whitespace or NUL, not '.' or '..'."""
    if not isinstance(value, str) or not _IFNAME.match(value) or value in (".", "..") or len(value.encode()) > 15:
        raise UsageError(f"bad interface name {value!r}")
    return value


def parse_lease_ttl(value) -> int:
    ttl = parse_int(value, "lease TTL")
    if not 2 <= ttl <= 3600:
        raise UsageError(f"bad lease TTL {ttl} (--lease-ttl, or the one the node was brought up with): "
                         "must be 2..3600 seconds")
    return ttl


def parse_age(value) -> int:
    age = parse_int(value, "FDB age")
    if not 1 <= age <= 86400:
        raise UsageError(f"bad FDB age {age}: must be 1..86400 seconds")
    return age


MTU_MAX = 9000 - ENCAP_LEN     # the largest network MTU (a 9000-byte jumbo underlay)
def parse_host_port(text, what: str = "address") -> tuple[str, int]:
    """'IPv4:PORT' to listen on, as (address, port): loopback and 0.0.0.0 are fine here."""
    host, _, port = str(text).rpartition(":")
    try:
        addr = ipaddress.IPv4Address(host)
    except ValueError:
        raise UsageError(f"bad {what} {text!r}: IPv4-ADDRESS:PORT expected") from None
    return str(addr), parse_port(port)


STORM_RATE_DEFAULT = 1000      # broadcast/unknown frames per second one endpoint may flood
STORM_BURST_DEFAULT = 200      # ... and at once
# Floods from the underlay: local copies per second one network may make of them (flood.h; 2-3% of
# a CPU here into sandboxes that drop them, BENCHMARKS "Floods from the underlay"), and a burst of
# OVERLAY_STORM_BURST_S of them at once.
OVERLAY_STORM_RATE_DEFAULT = 100_000
OVERLAY_HOST_RATE_DEFAULT = 400_000      # ... and all networks of the host together
OVERLAY_STORM_BURST_S = 0.1
# Learning: MACs new to a network's learned entries per second (fdb.h), and
# as many at once.
LEARN_RATE_DEFAULT = 1000


def parse_storm(value, what: str = "storm-control rate", unit: str = "frames") -> int:
    """Frames, or copies (per second for a rate); 0 turns storm control off."""
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"bad {what} {value!r}: a whole number of {unit} expected") from None
    if not 0 <= n <= 10_000_000:
        raise UsageError(f"bad {what} {n}: must be 0..10000000 {unit}")
    return n


def default_subnet(vni: int) -> ipaddress.IPv4Network:
    """10.<vni bits 8-15>.<vni bits 0-7>.0/24: distinct for VNIs that differ in their low 16 bits."""
    return ipaddress.IPv4Network(f"10.{(vni >> 8) & 0xFF}.{vni & 0xFF}.0/24")


def mac_for_ip(ip: ipaddress.IPv4Address | str) -> str:
    """Docker's convention: 02:42 followed by the IPv4 address (locally administered)."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_str(raw) -> str:
    return bytes(raw).hex(":")


def parse_sandbox(sb) -> dict | None:
    """An endpoint's sandbox (state.LocalEndpoint.sandbox), validated; a copy of it."""
    if sb is None:
        return None
    if not isinstance(sb, dict) or ("netns" in sb) == ("peer" in sb):
        raise UsageError("sandbox must name either a netns (with ifname) or a peer interface")
    if "netns" in sb:
        if not isinstance(sb["netns"], str) or not sb["netns"].startswith("/") or "\x00" in sb["netns"]:
            raise UsageError(f"bad sandbox netns {sb['netns']!r}: an absolute path expected")
        parse_ifname(sb.get("ifname"))
    else:
        parse_ifname(sb["peer"])
    return dict(sb)
