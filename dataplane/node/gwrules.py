"""A gateway's iptables rules (node/gateway.py): made with it, removed with it,
and put back when a firewall's reload or a flush took any away.

In FORWARD the DROP between routers must stay above both ACCEPTs: one network's
router must never reach another's (with FORWARD's policy ACCEPT the kernel would
route one subnet into the other). So rules are only ever inserted, never deleted
to be put back, and each insertion keeps that order: a missing (or misplaced)
DROP goes to the top, a missing ACCEPT just below our DROP. Below the ACCEPTs, a
DROP of whatever else would enter the subnet by its router ("closed": new
connections from the underlay or another bridge, which with FORWARD's policy
ACCEPT reached any sandbox's every port); it may only be below the ACCEPT of
replies and published ports, so a misplaced one is taken out and put back.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

from dataplane.core.errors import KernelError, ToolchainError
from dataplane.core.state import Gateway
from dataplane.kernel import netlink

COMMENT = "dataplane egress vni {vni}"
ROUTERS = "dpgw+"                 # every gateway's router side (gateway.names(): iptables' wildcard)
CHAINS = (("nat", "POSTROUTING"), ("filter", "FORWARD"))
TIMEOUT_S = 10                    # an iptables run; -w waits at most 5 s for the xtables lock
_OURS = re.compile(r'--comment "?dataplane egress vni (\d+)"?(?:\s|$)')


def rules(gw: Gateway) -> dict[str, tuple[str, str, list[str]]]:
    """kind -> (table, chain, rule): masquerade what leaves the subnet for elsewhere; let it
    be forwarded, and replies and published ports back, ahead of anything else in FORWARD (a
    policy of DROP, as Docker sets, would stop it); above those, nothing from a router goes
    to any router (another VNI's gateway: networks are isolated); below them, nothing else
    goes in by the router (the subnet is reached only through its published ports)."""
    c = ["-m", "comment", "--comment", COMMENT.format(vni=gw.vni)]
    return {"masquerade": ("nat", "POSTROUTING", ["-s", gw.subnet, "!", "-d", gw.subnet] + c + ["-j", "MASQUERADE"]),
            "drop": ("filter", "FORWARD", ["-i", gw.router, "-o", ROUTERS] + c + ["-j", "DROP"]),
            "replies": ("filter", "FORWARD", ["-o", gw.router, "-m", "conntrack", "--ctstate",
                                              "RELATED,ESTABLISHED,DNAT"] + c + ["-j", "ACCEPT"]),
            "out": ("filter", "FORWARD", ["-i", gw.router, "!", "-o", gw.router] + c + ["-j", "ACCEPT"]),
            "closed": ("filter", "FORWARD", ["-o", gw.router] + c + ["-j", "DROP"])}


def require_iptables() -> None:
    if not shutil.which("iptables"):
        raise ToolchainError("a network's gateway needs iptables, which is not installed "
                             "(Debian: apt-get install iptables)")


def iptables(ns, table: str, op: str, chain: str, rule: list[str]) -> subprocess.CompletedProcess:
    argv = ["iptables", "-w", "5", "-t", table, op, chain] + rule
    try:
        return netlink.ns_exec(ns, argv, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise KernelError(f"iptables -t {table} {op} {chain}: no answer within {TIMEOUT_S} s") from None
    except OSError as e:
        raise KernelError(f"iptables: {e}") from None


def listing(ns) -> dict[tuple[str, str], list[str]]:
    """The rules of the two chains we use, in order, ours and others' (iptables -S: one chain
    each, not the whole ruleset, which on a host with kube-proxy's rules takes 0.4 s to print);
    the i-th line is rule number i + 1."""
    require_iptables()
    out = {}
    for table, chain in CHAINS:
        r = iptables(ns, table, "-S", chain, [])
        if r.returncode:
            raise KernelError(f"iptables -t {table} -S {chain}: {r.stderr.strip()}")
        out[(table, chain)] = [line for line in r.stdout.splitlines() if line.startswith("-A ")]
    return out


def _vni(line: str) -> int | None:
    m = _OURS.search(line)
    return int(m.group(1)) if m else None


def _kind(line: str) -> str:
    if "-j MASQUERADE" in line:
        return "masquerade"
    if "-j DROP" in line:
        return "drop" if "-i " in line else "closed"
    return "replies" if "--ctstate" in line else "out"


def _ours(lines: list[str], vni: int) -> list[str]:
    """The VNI's rules among lines, by kind, in their order."""
    return [_kind(line) for line in lines if _vni(line) == vni]


def intact(lines: dict[tuple[str, str], list[str]], vni: int) -> bool:
    """All five of the VNI's rules are there (copies do not stand in for a missing one), its
    DROP between routers is above its ACCEPTs and its closing DROP below the replies' ACCEPT."""
    fwd = _ours(lines[("filter", "FORWARD")], vni)
    if set(fwd) | set(_ours(lines[("nat", "POSTROUTING")], vni)) != set(KINDS):
        return False
    return all(k == "drop" for k in fwd[:fwd.index("drop")]) and not closed_misplaced(lines[("filter", "FORWARD")], vni)


KINDS = ("masquerade", "drop", "replies", "out", "closed")


def closed_misplaced(forward: list[str], vni: int) -> bool:
    """A closing DROP of the VNI above its ACCEPT of replies and published ports (it would drop them)."""
    mine = _ours(forward, vni)
    return "closed" in mine and "replies" in mine and mine.index("closed") < mine.index("replies")


def inserts(forward: list[str], vni: int, missing: set[str]) -> list[tuple[str, int]]:
    """(kind, rule number) to insert, in turn, into FORWARD as forward lists it: a DROP between
    routers that is missing or below one of the VNI's ACCEPTs goes to the top; a missing ACCEPT
    just below the VNI's first such DROP, counted in the whole chain (other rules may come before
    ours); a missing closing DROP just below the VNI's last ACCEPT (ensure() takes a misplaced
    one out first)."""
    chain = [(_vni(line), _kind(line)) for line in forward]
    out = []
    # What the listing lacks is missing too: a firewall's reload between ensure()'s -C checks and
    # its -S leaves nothing to count from (an IndexError took the agent down, a review found).
    missing = set(missing) | {k for k in ("replies", "out", "closed") if (vni, k) not in chain}

    def put(kind: str, at: int) -> None:
        chain.insert(at - 1, (vni, kind))
        out.append((kind, at))

    def where(kinds: tuple[str, ...]) -> list[int]:
        return [i for i, (v, k) in enumerate(chain, 1) if v == vni and k in kinds]
    mine = [k for v, k in chain if v == vni]
    if "drop" in missing or "drop" not in mine or any(k != "drop" for k in mine[:mine.index("drop")]):
        put("drop", 1)                         # a copy left below it does no harm
    first = where(("drop",))[0]
    for kind in ("replies", "out"):
        if kind in missing:
            put(kind, first + 1)
    if "closed" in missing:
        put("closed", where(("replies", "out"))[-1] + 1)
    return out


def ensure(ns, gw: Gateway) -> bool:
    """Its rules, each inserted where missing, in an order that never lets a router reach
    another's; True if any was."""
    require_iptables()
    want = rules(gw)
    missing = {k for k, (table, chain, rule) in want.items() if iptables(ns, table, "-C", chain, rule).returncode}
    forward = listing(ns)[("filter", "FORWARD")]
    if "closed" not in missing and closed_misplaced(forward, gw.vni):
        _delete(ns, want["closed"])            # above the replies' ACCEPT it drops them: out, then back below
        missing.add("closed")
        forward = listing(ns)[("filter", "FORWARD")]
    todo = inserts(forward, gw.vni, missing)
    for kind, at in todo:
        _add(ns, want[kind], "-I", [str(at)])
    if "masquerade" in missing:
        _add(ns, want["masquerade"], "-A", [])
    return bool(todo) or "masquerade" in missing


def _add(ns, spec: tuple[str, str, list[str]], op: str, at: list[str]) -> None:
    table, chain, rule = spec
    r = iptables(ns, table, op, chain, at + rule)
    if r.returncode:
        raise KernelError(f"iptables -t {table} {op} {chain} {' '.join(at + rule)}: {r.stderr.strip()}")


def _delete(ns, spec: tuple[str, str, list[str]]) -> None:
    """Every copy of one rule (a few at most). iptables exits 1 when there is none left; any
    other failure (iptables-legacy's 4: the xtables lock held past -w) is raised, not taken for
    "gone". iptables-nft exits 1 for its kernel's refusals as well, so there "gone" is less sure."""
    table, chain, rule = spec
    for _ in range(8):
        r = iptables(ns, table, "-D", chain, rule)
        if r.returncode == 1:
            return
        if r.returncode:
            raise KernelError(f"iptables -t {table} -D {chain} {' '.join(rule)}: {r.stderr.strip()}")


def strays(lines: dict[tuple[str, str], list[str]], vnis) -> list[tuple[int, str, str, list[str]]]:
    """(VNI, table, chain, rule) of each rule tagged for a VNI that has no gateway here: what a
    removal that failed part-way (the xtables lock held, a crash) left behind, to take effect
    again for whatever later has that subnet or interface name."""
    out = []
    for (table, chain), found in lines.items():
        for line in found:
            vni = _vni(line)
            if vni is not None and vni not in vnis:
                out.append((vni, table, chain, shlex.split(line)[2:]))     # "-A CHAIN rule..."
    return out


def remove_strays(ns, vnis) -> list[int]:
    """strays() removed; the VNIs they were tagged for. Nothing without iptables (no rules of
    ours either)."""
    if not shutil.which("iptables"):
        return []
    try:
        lines = listing(ns)
    except KernelError:             # iptables that cannot list (no kernel support): none of ours to find
        return []
    removed = set()
    for vni, table, chain, rule in strays(lines, set(vnis)):
        try:
            _delete(ns, (table, chain, rule))
            removed.add(vni)
        except KernelError:         # the xtables lock held, say: nearly harmless, tried at the next sweep
            pass
    return sorted(removed)


def remove(ns, gw: Gateway) -> None:
    """Every copy of each of its rules."""
    for spec in rules(gw).values():
        _delete(ns, spec)
