"""The gateways' iptables rules (node/gateway.py): in chains of our own, written whole and at
once, and put back when a firewall's reload or a flush took any away.

mangle's DATAPLANE-ISOLATION holds what no rule may open, for every gateway of the node: the
DROPs between routers (one network's router never reaches another's: with FORWARD's policy
ACCEPT the kernel would route one subnet into the other), and the DROPs of whatever would go in
by a router other than replies and published ports (the subnet is closed to the underlay and
the host's other bridges). Published ports (DNAT) pass, as from anywhere. mangle's FORWARD runs
before filter's, where Docker, ufw, Calico and an operator's DOCKER-USER put their ACCEPTs: none
of them can open what these close, wherever their rules sit (node/vxlanguard.py's rule is there
for the same reason).
It also keeps a sandbox's new connections to the node's ways out: the interfaces of its default
routes and its uplink (ways_out). Without that, filter's ACCEPT out of the router, jumped to above
Docker's rules, let a sandbox into docker0's containers on ports never published (Docker <= 27
drops them by FORWARD's policy), into other bridges (libvirt's, podman's), past ufw's forward
policy. Replies and published ports (DNAT) pass, to any interface.
filter's DATAPLANE-FORWARD holds each gateway's ACCEPTs (out of the router; replies and
published ports back); FORWARD jumps to it just below Docker's DOCKER-USER (an operator's rules
there, for every container, apply to our sandboxes' way out too), else first.
nat's DATAPLANE-POSTROUTING masquerades what leaves a subnet, and a sandbox's connection to a
published port that DNAT sends back into its own subnet (hairpin: the target's reply must come
back through the router, which undoes the DNAT); POSTROUTING's jump is appended.

Each table's chains go in as one `iptables-restore --noflush` transaction (a declared chain is
flushed and refilled at once), with any missing jump and the removal of an older version's
rules (which sat in filter's FORWARD and nat's POSTROUTING themselves), mangle's first: no
moment is without the DROPs, and no other writer's insertion falls between our rules. With no
gateway left, the jumps and chains go.
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
JUMP_COMMENT = "dataplane egress"
ROUTERS = "dpgw+"                 # every gateway's router side (gateway.names(): iptables' wildcard)
ISOLATION, FORWARD, POSTROUTING = "DATAPLANE-ISOLATION", "DATAPLANE-FORWARD", "DATAPLANE-POSTROUTING"
HOOKS = {"mangle": ("FORWARD", (ISOLATION,)), "filter": ("FORWARD", (FORWARD,)),     # in this order
         "nat": ("POSTROUTING", (POSTROUTING,))}
DOCKER_USER = "DOCKER-USER"
TIMEOUT_S = 10                    # an iptables run; -w waits at most 5 s for the xtables lock
_OURS = re.compile(r"dataplane egress vni (\d+)")


def rules(gw: Gateway) -> dict[str, list[str]]:
    """kind -> its rule, in the order `iptables -S` prints it (wanted() says which chain)."""
    c = ["-m", "comment", "--comment", COMMENT.format(vni=gw.vni)]
    return {"masquerade": ["-s", gw.subnet, "!", "-d", gw.subnet] + c + ["-j", "MASQUERADE"],
            "hairpin": ["-s", gw.subnet, "-d", gw.subnet, "-o", gw.router, "-m", "conntrack", "--ctstate", "DNAT"]
            + c + ["-j", "MASQUERADE"],
            "drop": ["-i", gw.router, "-o", ROUTERS, "-m", "conntrack", "!", "--ctstate", "DNAT"] + c + ["-j", "DROP"],
            "replies": ["-o", gw.router, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED,DNAT"] + c
            + ["-j", "ACCEPT"],
            "out": ["-i", gw.router, "!", "-o", gw.router] + c + ["-j", "ACCEPT"],
            # Into the router only replies (the reply direction) and published ports: by direction,
            # not state, so a connection opened while our rules were flushed (the gap until the
            # agent's tick) does not live on as ESTABLISHED once they are back.
            # (in the order `iptables -S` prints the match's options: intact() compares the tokens)
            "closed": ["-o", gw.router, "-m", "conntrack", "!", "--ctstate", "DNAT", "--ctdir", "ORIGINAL"] + c
            + ["-j", "DROP"]}


def ways_out(ns) -> list[str]:
    """Where a sandbox's new connection may leave the node: the interfaces of its IPv4 default
    routes, and its uplink (other hosts, the underlay's network), sorted."""
    from dataplane.core import state  # noqa: PLC0415
    st = state.load(ns or "host")
    return sorted(set(netlink.default_route_ifnames(ns)) | ({st.config.underlay} if st else set()))


def kept_out(ways: list[str]) -> list[list[str]]:
    """ISOLATION's last rules: out of a router to a way out goes on to filter; else only replies
    and published ports (no VNI in the comment: the node's, not a gateway's)."""
    c = ["-m", "comment", "--comment", JUMP_COMMENT]
    return [["-i", ROUTERS, "-o", w] + c + ["-j", "RETURN"] for w in ways] + [
        ["-i", ROUTERS, "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT"] + c + ["-j", "DROP"]]


def confine(ways) -> list[list[str]]:
    """ISOLATION's rules for the ways out whose forwarding we turned on (node/forwarding.py):
    what arrives there is forwarded only to a router (the world's replies to sandboxes, their
    published ports), as nothing was before; else the host routed for anything on that network."""
    c = ["-m", "comment", "--comment", JUMP_COMMENT]
    return [["-i", w, "!", "-o", ROUTERS] + c + ["-j", "DROP"] for w in sorted(ways)]


def wanted(gateways, ways: list[str], confined=()) -> dict[str, list[list[str]]]:
    """Our chain -> its rules, in order (by VNI), for the node's ways out (ways_out(); no default,
    for a caller that forgot them would write rules that let no sandbox's connection out) and
    those of them confined (confine())."""
    each = [rules(gw) for gw in sorted(gateways, key=lambda g: g.vni)]
    return {ISOLATION: [r[k] for k in ("drop", "closed") for r in each]
            + (kept_out(ways) + confine(confined) if each else []),
            FORWARD: [r[k] for r in each for k in ("replies", "out")],
            POSTROUTING: [r[k] for r in each for k in ("masquerade", "hairpin")]}


def require_iptables() -> None:
    if not shutil.which("iptables"):
        raise ToolchainError("a network's gateway needs iptables, which is not installed "
                             "(Debian: apt-get install iptables)")


def _run(ns, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return netlink.ns_exec(ns, argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise KernelError(f"{' '.join(argv[:5])}: no answer within {TIMEOUT_S} s") from None
    except OSError as e:
        raise KernelError(f"{argv[0]}: {e}") from None


def iptables(ns, table: str, op: str, chain: str, rule: list[str]) -> subprocess.CompletedProcess:
    """One iptables command (node/vxlanguard.py's rule too)."""
    return _run(ns, ["iptables", "-w", "5", "-t", table, op, chain] + rule)


def listing(ns) -> dict[str, dict[str, list[list[str]] | None]]:
    """table -> chain -> its rules (tokens after "-A CHAIN", in order), for the hook chains and
    ours (None: the chain does not exist). `iptables -S` of one chain each, not the whole
    ruleset, which on a host with kube-proxy's rules takes 0.4 s to print."""
    require_iptables()
    out: dict = {}
    for table, (hook, ours) in HOOKS.items():
        out[table] = {}
        for chain in (hook, *ours):
            r = iptables(ns, table, "-S", chain, [])
            if r.returncode == 1 and chain != hook:     # no such chain (iptables-nft: "incompatible")
                out[table][chain] = None
                continue
            if r.returncode:                            # 4: the xtables lock held past -w
                raise KernelError(f"iptables -t {table} -S {chain}: {r.stderr.strip()}")
            out[table][chain] = [shlex.split(line)[2:] for line in r.stdout.splitlines() if line.startswith("-A ")]
    return out


def _vni(rule: list[str]) -> int | None:
    """The VNI a rule is tagged for, if it is a gateway's."""
    for i, tok in enumerate(rule[:-1]):
        if tok == "--comment":
            m = _OURS.fullmatch(rule[i + 1])
            return int(m.group(1)) if m else None
    return None


def _jump(chain: str) -> list[str]:
    return ["-m", "comment", "--comment", JUMP_COMMENT, "-j", chain]


def _at(rules: list[list[str]], chain: str) -> list[int]:
    """Rule numbers of our jumps to chain (exactly ours: an operator's `-i x -j CHAIN` is not)."""
    return [i for i, r in enumerate(rules, 1) if r == _jump(chain)]


def legacy(lines) -> dict[str, list[list[str]]]:
    """table -> rules an older version put in the hook chain itself (tagged with a VNI)."""
    return {t: [r for r in lines[t][hook] if _vni(r) is not None] for t, (hook, _) in HOOKS.items()}


def intact(lines, gateways, ways: list[str], confined=()) -> bool:
    """Our chains hold exactly what the gateways want, in order, for the node's ways out (a
    default route moved: written again); the hooks jump to each; no older version's rule is
    left in the hooks."""
    want = wanted(gateways, ways, confined)
    for table, (hook, ours) in HOOKS.items():
        if any(lines[table][c] != want[c] or not _at(lines[table][hook], c) for c in ours):
            return False
    return not any(legacy(lines).values())


def _line(tokens: list[str]) -> str:
    """One line of iptables-restore's input: it takes double quotes, not shlex's single ones
    (nor a quoted "!"). Only a comment of ours has a space."""
    return " ".join(f'"{t}"' if " " in t or not t else t for t in tokens)


def _jumps_to_add(table: str, hook: list[list[str]]) -> list[str]:
    """Restore lines for our missing jump in the table's hook: the isolation's first in mangle's
    FORWARD, the ACCEPTs' just below DOCKER-USER's in filter's (else first), POSTROUTING's
    appended. Where a jump is, it stays: others' rules above it (Calico's, which want the top
    too) are theirs to place."""
    chain = HOOKS[table][1][0]
    if _at(hook, chain):
        return []
    if table == "nat":
        return [_line(["-A", "POSTROUTING"] + _jump(chain))]
    docker = [i for i, r in enumerate(hook, 1) if r[-2:] == ["-j", DOCKER_USER]] if table == "filter" else []
    return [_line(["-I", "FORWARD", str(docker[0] + 1 if docker else 1)] + _jump(chain))]


def script(lines, gateways, ways: list[str], confined=()) -> str:
    """iptables-restore --noflush input: each table's chains declared (flushed) and filled, its
    missing jumps inserted, an older version's rules removed; one COMMIT (one transaction) each."""
    want, old, out = wanted(gateways, ways, confined), legacy(lines), []
    for table, (hook, ours) in HOOKS.items():
        out += [f"*{table}"] + [f":{c} - [0:0]" for c in ours]
        out += [_line(["-A", c] + r) for c in ours for r in want[c]]
        out += _jumps_to_add(table, lines[table][hook])
        out += [_line(["-D", hook] + r) for r in old[table]]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


WAYS_MOVED = "iptables rules of the gateways follow the node's ways out now"


def said(lines, gateways, ways: list[str] | None = None, confined=()) -> list[str]:
    """What sync() finds to mend, per VNI, in words (for logs and the sweep's report); with ways,
    whether the node's ways out moved, or those confined (a default route's interface, forwarding
    turned on there: WAYS_MOVED, not a repair)."""
    want, mine = {g.vni for g in gateways}, wanted(gateways, [])    # per-VNI rules: no ways out
    ours: dict[int, list] = {}
    for table, (_, chains) in HOOKS.items():
        for r in (r for c in chains for r in lines[table][c] or []):
            ours.setdefault(_vni(r), []).append(tuple(r))
    old = {_vni(r) for rs in legacy(lines).values() for r in rs}
    out = [f"iptables rules of VNI {v}, which has no gateway here; removed"
           for v in sorted(v for v in (set(ours) | old) - want if v is not None)]
    for v in sorted(want):
        if v in old and v not in ours:
            out.append(f"iptables rules of the gateway of VNI {v}: moved into chains of their own "
                       f"({', '.join(c for _, cs in HOOKS.values() for c in cs)})")
        elif v in old:
            out.append(f"iptables rules an older version put back for the gateway of VNI {v} removed "
                       f"(is an agent of that version still running?)")
        elif sorted(ours.get(v, [])) != sorted(tuple(r) for c in mine for r in mine[c] if _vni(r) == v):
            out.append(f"iptables rules of the gateway of VNI {v} were missing or not as written; put back")
    node_s = [r for r in lines["mangle"][ISOLATION] or [] if _vni(r) is None]
    kept = [r for r in node_s if r[:2] == ["-i", ROUTERS]]
    had = [r[r.index("-o") + 1] for r in kept if "-o" in r]       # whole, as written for other ways
    was = [r[1] for r in node_s if r[:2] != ["-i", ROUTERS] and r[:1] == ["-i"]]
    if want and ways is not None and kept and kept == kept_out(had) and node_s == kept + confine(was) and \
            (had != ways or was != sorted(confined)):
        out.append(f"{WAYS_MOVED} ({', '.join(ways) or 'none'}; forwarding kept to the gateways on "
                   f"{', '.join(sorted(confined)) or 'none'}): a default route changed")
    elif want and not out:
        out.append("iptables rules of the gateways were out of order, or their chains not jumped to; put back")
    return out


def sync(ns, gateways, confined=()) -> list[str]:
    """Our chains and jumps as the gateways want them (none: gone); what was mended, in words."""
    gateways = list(gateways)
    if not gateways:
        return clear(ns)
    require_iptables()
    lines, ways = listing(ns), ways_out(ns)
    if intact(lines, gateways, ways, confined):
        return []
    _restore(ns, script(lines, gateways, ways, confined).splitlines(), "of the gateways' rules")
    return said(lines, gateways, ways, confined)


def clear(ns) -> list[str]:
    """No gateway here: our jumps and an older version's rules removed, our chains flushed (each
    table in one transaction), then the chains deleted where nothing else jumps to them (an
    operator's rule may: they stay, empty). Nothing without iptables (no rules of ours either)."""
    if not shutil.which("iptables"):
        return []
    lines = listing(ns)
    gone, old, flush, drop = said(lines, []), legacy(lines), [], []
    for table, (hook, ours) in HOOKS.items():
        made = [c for c in ours if lines[table][c] is not None]
        jumps = [_jump(c) for c in ours for _ in _at(lines[table][hook], c)]
        if jumps or made or old[table]:
            flush += [f"*{table}"] + [_line(["-D", hook] + r) for r in jumps + old[table]]
            flush += [f"-F {c}" for c in made] + ["COMMIT"]
        if made:
            drop.append([f"*{table}"] + [f"-X {c}" for c in made] + ["COMMIT"])
    if not flush:
        return []
    _restore(ns, flush, "removing the gateways' rules")
    for one in drop:                # a table at a time: one that fails stops none of the others
        try:
            _restore(ns, one, "deleting the gateways' chains")
        except KernelError:
            pass                    # still jumped to by someone else's rule: left empty
    forget_mangle_forward(ns)
    return gone


def forget_mangle_forward(ns) -> None:
    """mangle's FORWARD deleted if no rule is left in it (our isolation's jump and
    node/vxlanguard.py's rule share it): with iptables-nft an empty base chain still hooks every
    forwarded packet (iptables-legacy refuses to delete a built-in chain: then it stays)."""
    left = iptables(ns, "mangle", "-S", "FORWARD", [])
    if left.returncode == 0 and not [line for line in left.stdout.splitlines() if line.startswith("-A ")]:
        iptables(ns, "mangle", "-X", "FORWARD", [])


def _restore(ns, lines: list[str], what: str) -> None:
    r = _run(ns, ["iptables-restore", "-w", "5", "--noflush"], "\n".join(lines) + "\n")
    if r.returncode:
        raise KernelError(f"iptables-restore {what}: {r.stderr.strip()}")
