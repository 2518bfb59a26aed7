"""The remote entries' maps read back as strings, a column at a time.

An agent start reads back every static FDB and neighbour entry (200,000 at
100,000 remote endpoints) to diff the registry against. Decoding them one
entry at a time in Python (a slice, an int, a hex string, an address per
field) took ~0.3 s of CPU, under the GIL, while the registry read beside it
was parsing; here each chunk of 4096 entries is split into columns by
struct.iter_unpack (layouts from the ABI's offsets, never written out by hand)
and the columns zipped into dicts.
"""

from __future__ import annotations

import ctypes
import socket
import struct

from dataplane.core import abi

_S = abi.load().structs


def layout(struct_name: str, *fields: tuple[str, str]) -> struct.Struct:
    """A struct.Struct reading the named fields (name, format code) of an ABI struct in
    native byte order, in the order given (which must be the fields' order), skipping the rest."""
    t, fmt, pos = _S[struct_name], "=", 0
    for name, code in fields:
        f = getattr(t, name)
        if f.offset < pos or struct.calcsize("=" + code) != f.size:
            raise AssertionError(f"{struct_name}.{name}: layout does not match {code!r} at {f.offset}")
        fmt += (f"{f.offset - pos}x" if f.offset > pos else "") + code
        pos = f.offset + f.size
    size = ctypes.sizeof(t)
    return struct.Struct(fmt + (f"{size - pos}x" if size > pos else ""))


_MAC_KEY = layout("dp_mac_key", ("vni", "I"), ("mac", "6s"))
_FDB = layout("dp_fdb_entry", ("vtep", "4s"))
_IP_KEY = layout("dp_ip_key", ("vni", "I"), ("ip", "4s"))
_MAC = layout("dp_mac", ("mac", "6s"))


def _group(out: dict, vnis: list[int], keys: list[str], values: list[str]) -> None:
    """out[vni][key] = value for the rows: one dict update when the chunk is all one VNI."""
    if vnis.count(vnis[0]) == len(vnis):
        out.setdefault(vnis[0], {}).update(zip(keys, values))
        return
    for vni, k, v in zip(vnis, keys, values):
        out.setdefault(vni, {})[k] = v


def fdb(m) -> dict[int, dict[str, str]]:
    """dp_fdb (static entries; what traffic teaches is in dp_learned) as vni -> MAC -> VTEP address."""
    out: dict[int, dict[str, str]] = {}
    names: dict[bytes, str] = {}          # few VTEPs, many entries: each address formatted once
    for kb, vb in m.dp_fdb.raw_chunks():
        vnis, macs = zip(*_MAC_KEY.iter_unpack(kb))
        vteps = [names.get(a) or names.setdefault(a, socket.inet_ntoa(a)) for (a,) in _FDB.iter_unpack(vb)]
        _group(out, list(vnis), [b.hex(":") for b in macs], vteps)
    return out


def neigh(m) -> dict[int, dict[str, str]]:
    """dp_neigh as vni -> address -> MAC (this node's own endpoints' entries included)."""
    out: dict[int, dict[str, str]] = {}
    ntoa = socket.inet_ntoa
    for kb, vb in m.dp_neigh.raw_chunks():
        vnis, ips = zip(*_IP_KEY.iter_unpack(kb))
        _group(out, list(vnis), [ntoa(a) for a in ips], [b.hex(":") for (b,) in _MAC.iter_unpack(vb)])
    return out
