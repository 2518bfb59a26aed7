"""What a runtime asks of one attachment beyond the network's configuration: a MAC and an
address, through runtimeConfig (the `mac` and `ips` capabilities, passed to a plugin whose
configuration declares them), `args.cni` or CNI_ARGS (`MAC=`, `IP=`), as the CNI conventions
say. Where more than one says, runtimeConfig wins, then args, then CNI_ARGS (the reference
bridge plugin's order). An address asked for is ours to give only without an `ipam` section:
an IPAM plugin reads the same keys itself (host-local does)."""

from __future__ import annotations

import ipaddress

from dataplane.core import model
from dataplane.core.errors import UsageError
from dataplane.runtimes.cni_ipam import E_CONFIG, CNIError


def env_args(env) -> dict[str, str]:
    """CNI_ARGS' KEY=VALUE pairs (";" between them; the last of a key wins). Keys we do not know
    are left alone, with or without IgnoreUnknown: Kubernetes passes K8S_POD_NAME and others to
    every plugin."""
    out = {}
    for pair in (env.get("CNI_ARGS") or "").split(";"):
        key, eq, value = pair.partition("=")
        if eq and key:
            out[key] = value
    return out


def _said(conf: dict, env, key: str, env_key: str):
    """runtimeConfig's, else args.cni's, else CNI_ARGS' value for key (None: not asked)."""
    args = conf.get("args")
    for where in (conf.get("runtimeConfig"), args.get("cni") if isinstance(args, dict) else None):
        if isinstance(where, dict) and where.get(key) not in (None, "", []):
            return where[key]
    return env_args(env).get(env_key) or None


def mac(conf: dict, env) -> str | None:
    value = _said(conf, env, "mac", "MAC")
    if value is None:
        return None
    try:
        return model.parse_mac(value)
    except UsageError as e:
        raise CNIError(E_CONFIG, f"the MAC asked for: {e}") from None


def ip(conf: dict, env) -> str | None:
    """The first IPv4 address asked for (runtimeConfig and args give a list of addresses with or
    without a prefix; CNI_ARGS' IP= one, or several with commas)."""
    value = _said(conf, env, "ips", "IP")
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise CNIError(E_CONFIG, f"bad ips asked for: {value!r}: a list of addresses expected")
    try:
        addrs = [ipaddress.ip_interface(i.strip()).ip for i in items]
    except ValueError as e:
        raise CNIError(E_CONFIG, f"bad address asked for: {e}") from None
    v4 = [a for a in addrs if a.version == 4]
    return str(v4[0]) if v4 else None
