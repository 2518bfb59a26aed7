"""No VXLAN forwarded onto the underlay: a rule in the node's namespace that drops UDP to the
node's VXLAN port that the host forwards out of its uplink.

Whatever a container sends to the world leaves masqueraded as the host, whose address is its
VTEP. A datagram to a peer VTEP's VXLAN port so sent arrived there from this host's VTEP: the
peer check and the owner check (an inner source MAC the registry places on this host) passed,
and the inner frame went into whichever VNI it named. The fast path drops this for our own
gateways (bpf/lib/router.h, counted), but a Docker container leaves through docker_gwbridge
and any other bridge's container through its own NAT, which no program of ours sees.

The rule is in mangle's FORWARD chain, which the kernel runs before filter's: Docker and
firewalls insert their ACCEPTs at the top of filter's FORWARD, which a DROP there could sit
below. Conntrack has reassembled fragments by then. Our own VXLAN is not forwarded (tc
redirects it; the node's vxlan device sends through OUTPUT). What it costs: a container
cannot reach a VXLAN endpoint in the world on that port, and a host that routes other
machines' VXLAN to our peers' port would have it dropped.
"""

from __future__ import annotations

import logging
import shutil

from dataplane.core.errors import KernelError
from dataplane.node.gwrules import forget_mangle_forward, iptables

log = logging.getLogger("dataplane")
COMMENT = "dataplane: no VXLAN forwarded onto the underlay"


def rule(underlay: str, port: int) -> list[str]:
    return ["-o", underlay, "-p", "udp", "--dport", str(port), "-m", "comment", "--comment", COMMENT, "-j", "DROP"]


def present(ns, underlay: str, port: int) -> bool:
    return iptables(ns, "mangle", "-C", "FORWARD", rule(underlay, port)).returncode == 0


def missing(ns, underlay: str, port: int) -> bool:
    """iptables is there and the rule is not (a check without a change, no lock needed)."""
    return shutil.which("iptables") is not None and not present(ns, underlay, port)


def ensure(ns, underlay: str, port: int) -> bool | None:
    """The rule, inserted first if missing; True if it was, None without iptables (the host
    then has no iptables NAT to forward containers' traffic through either: `up` says so)."""
    if not shutil.which("iptables"):
        return None
    if present(ns, underlay, port):
        return False
    r = iptables(ns, "mangle", "-I", "FORWARD", ["1"] + rule(underlay, port))
    if r.returncode:
        raise KernelError(f"iptables -t mangle -I FORWARD (no VXLAN onto the underlay): {r.stderr.strip()}")
    return True


def at_up(ns, underlay: str, port: int) -> None:
    """ensure(), for `up`: what keeps the rule from being made is said, and the node still serves
    (no iptables, or no mangle table in this kernel)."""
    try:
        if ensure(ns, underlay, port) is None:
            log.warning("iptables is not installed: VXLAN that containers send through the host's NAT is not "
                        "kept off the underlay (Debian: apt-get install iptables)")
    except KernelError as e:
        log.warning("%s", e)


def remove(ns, underlay: str, port: int) -> None:
    """The rule, and mangle's FORWARD chain if nothing else is left in it: with iptables-nft an
    empty base chain still hooks every forwarded packet (iptables-legacy refuses to delete a
    built-in chain: then it stays)."""
    if not shutil.which("iptables"):
        return
    for _ in range(8):
        if iptables(ns, "mangle", "-D", "FORWARD", rule(underlay, port)).returncode:
            break
    forget_mangle_forward(ns)
