"""Map keys and address encodings shared by everything that writes the maps."""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import sys

from dataplane.core import abi, model

_S = abi.load().structs


def be32(ip) -> int:
    """A __be32 field's value: the address bytes read in host order."""
    return int.from_bytes(ipaddress.IPv4Address(str(ip)).packed, sys.byteorder)


def ip_str(value: int) -> str:
    return socket.inet_ntoa(int(value).to_bytes(4, sys.byteorder))


def mac_key(vni: int, mac: str):
    k = _S["dp_mac_key"](vni=vni)
    ctypes.memmove(k.mac, model.mac_bytes(mac), 6)
    return k


def ip_key(vni: int, ip: str):
    return _S["dp_ip_key"](vni=vni, ip=be32(ip))


def slot_key(vni: int, i: int):
    return _S["dp_slot_key"](vni=vni, index=i)


def mac_value(mac: str):
    v = _S["dp_mac"]()
    ctypes.memmove(v.mac, model.mac_bytes(mac), 6)
    return v
