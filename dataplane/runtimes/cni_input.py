"""The CNI plugin's input (cni.py): the network configuration and the CNI_* variables that name
one attachment, checked before anything is made."""

from __future__ import annotations

import re

from dataplane.core import model
from dataplane.core.errors import UsageError
from dataplane.runtimes.cni_ipam import E_CONFIG, E_DECODE, E_ENV, E_VERSION, CNIError, _env

SUPPORTED = ["1.0.0", "1.1.0"]

# The spec's pattern for network names and container ids (\Z: $ would let "abc\n" through).
_SPEC_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")


def _read_conf(raw: bytes) -> dict:
    try:
        conf = model.loads(raw)
    except (ValueError, RecursionError) as e:
        raise CNIError(E_DECODE, "network configuration is not valid JSON", str(e)) from None
    if not isinstance(conf, dict):
        raise CNIError(E_DECODE, "network configuration must be a JSON object")
    return conf


def _check_conf(conf: dict) -> int:
    ver = conf.get("cniVersion")
    if ver not in SUPPORTED:
        raise CNIError(E_VERSION, f"CNI version {ver!r} is not supported",
                       f"supported versions: {', '.join(SUPPORTED)}")
    if not isinstance(conf.get("name"), str) or not _SPEC_ID.match(conf["name"]):
        raise CNIError(E_CONFIG, f"bad network name {conf.get('name')!r}: letters, digits, _ . - expected")
    vni = conf.get("vni")
    if not isinstance(vni, int) or isinstance(vni, bool) or not 1 <= vni <= 0xFFFFFF:
        raise CNIError(E_CONFIG, f"bad vni {vni!r}: an integer 1..16777215 is required")
    if "ipam" in conf and not (isinstance(conf["ipam"], dict) and isinstance(conf["ipam"].get("type"), str)):
        raise CNIError(E_CONFIG, "ipam must be an object with a type")
    if conf.get("prevResult") is not None and not isinstance(conf["prevResult"], dict):
        raise CNIError(E_DECODE, "prevResult must be an object")
    if not isinstance(conf.get("ipMasq", False), bool):
        raise CNIError(E_CONFIG, f"bad ipMasq {conf['ipMasq']!r}: true or false")
    try:
        model.parse_name(conf.get("node", "host"), "node")
    except UsageError as e:
        raise CNIError(E_CONFIG, str(e)) from None
    return vni


def _attachment(env, need_netns: bool) -> tuple[str, str, str | None]:
    cid = _env(env, "CNI_CONTAINERID")
    if not _SPEC_ID.match(cid):
        raise CNIError(E_ENV, f"bad CNI_CONTAINERID {cid!r}")
    ifname = _env(env, "CNI_IFNAME")
    try:
        model.parse_ifname(ifname)
    except UsageError:
        raise CNIError(E_ENV, f"bad CNI_IFNAME {ifname!r}") from None
    netns = _env(env, "CNI_NETNS", required=need_netns)
    if netns is not None and not netns.startswith("/"):
        raise CNIError(E_ENV, f"bad CNI_NETNS {netns!r}: an absolute path expected")
    return cid, ifname, netns


def _refused(env) -> bool:
    """Names an ADD refuses before it asks the IPAM plugin (a DEL takes them all the same: the
    spec runs a delete after a failed add, and the endpoint id is a hash)."""
    try:
        _attachment(env, need_netns=False)
        return False
    except CNIError:
        return True
