"""gwrules on `iptables -S` listings (tokens after "-A CHAIN"): the DROPs in a chain of mangle's
FORWARD (before filter's, where no one's ACCEPT, an operator's in DOCKER-USER included, can
open what they close), the ACCEPTs in one filter's FORWARD jumps to just below DOCKER-USER (an
operator's rules there apply to our sandboxes' way out; before, ours went above them);
intact() wants exactly what is written and every jump; script() writes each table in one
transaction, mangle's first, and takes out what an older version put in FORWARD and
POSTROUTING themselves."""

from __future__ import annotations

import shlex

from dataplane.core.state import Gateway
from dataplane.node import gwrules
from dataplane.node.gwrules import FORWARD, ISOLATION, POSTROUTING

GW = Gateway(vni=256, ip="10.1.0.1", mac="02:00:0a:01:00:01", subnet="10.1.0.0/24",
             router="dpgw000100", port="dpgp000100")
GW2 = Gateway(vni=304, ip="10.34.0.1", mac="02:00:0a:22:00:01", subnet="10.34.0.0/24",
              router="dpgw000130", port="dpgp000130")
DOCKER = ["-j", "DOCKER-USER"]
C = '-m comment --comment "dataplane egress vni {v}"'
OLD = {"nat": ['-s 10.1.0.0/24 ! -d 10.1.0.0/24 ' + C + ' -j MASQUERADE'],
       "filter": ['-i dpgw000100 -o dpgw+ ' + C + ' -j DROP',
                  '-o dpgw000100 -m conntrack --ctstate RELATED,ESTABLISHED,DNAT ' + C + ' -j ACCEPT',
                  '-i dpgw000100 ! -o dpgw000100 ' + C + ' -j ACCEPT', '-o dpgw000100 ' + C + ' -j DROP']}
JUMP = {c: gwrules._jump(c) for c in (ISOLATION, FORWARD, POSTROUTING)}
GUARD = ["-o", "ul0", "-p", "udp", "--dport", "4789", "-j", "DROP"]     # node/vxlanguard.py's, say


def listing(gateways=(), mangle=(GUARD, JUMP[ISOLATION]), forward=(JUMP[FORWARD],), postrouting=(JUMP[POSTROUTING],),
            chains=True):
    """What listing() reads on a node whose chains were written for gateways."""
    want = gwrules.wanted(gateways, [])
    return {"mangle": {"FORWARD": [list(r) for r in mangle], ISOLATION: want[ISOLATION] if chains else None},
            "filter": {"FORWARD": [list(r) for r in forward], FORWARD: want[FORWARD] if chains else None},
            "nat": {"POSTROUTING": [list(r) for r in postrouting], POSTROUTING: want[POSTROUTING] if chains else None}}


def inserted(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith(("-I ", "-A FORWARD", "-A POSTROUTING"))]


def test_what_no_rule_may_open_is_apart_from_the_accepts_and_lets_published_ports_by():
    want = gwrules.wanted([GW2, GW], [])
    assert [(gwrules._vni(r), r[0], r[-1]) for r in want[ISOLATION]] == [
        (256, "-i", "DROP"), (304, "-i", "DROP"), (256, "-o", "DROP"), (304, "-o", "DROP"), (None, "-i", "DROP")]
    assert all("dpgw+" in r for r in want[ISOLATION][:2]), "between routers"
    for rule, passes in ((want[ISOLATION][0], "DNAT"), (want[ISOLATION][2], "DNAT")):
        at = rule.index("--ctstate")
        assert rule[at - 1:at + 2] == ["!", "--ctstate", passes], "published ports (and replies) pass"
    assert want[ISOLATION][2][-8:-6] == ["--ctdir", "ORIGINAL"], \
        "into a router: by direction, so what a gap in our rules let in does not live on as ESTABLISHED"
    assert [r[-1] for r in want[FORWARD]] == ["ACCEPT"] * 4, "the ACCEPTs alone in filter"
    assert gwrules.HOOKS["mangle"] == ("FORWARD", (ISOLATION,)), "the DROPs in mangle, before filter's ACCEPTs"


def test_intact_wants_every_jump_exact_contents_and_no_older_rules():
    assert gwrules.intact(listing([GW]), [GW], [])
    assert gwrules.intact(listing([GW], forward=[["-j", "X"], JUMP[FORWARD], DOCKER]), [GW], []), \
        "others' rules above ours are theirs to place"
    for where in ("mangle", "forward", "postrouting"):
        assert not gwrules.intact(listing([GW], **{where: []}), [GW], []), where
    assert not gwrules.intact(listing([GW], forward=[["-i", "x"] + JUMP[FORWARD][-2:]]), [GW], []), \
        "an operator's conditional jump to our chain is not ours"
    assert not gwrules.intact(listing([GW], chains=False), [GW], [])
    assert not gwrules.intact(listing([GW]), [GW, GW2], []), "a gateway's rules missing"
    assert not gwrules.intact(listing([GW, GW2]), [GW], []), "a stray VNI's"
    swapped = listing([GW])
    swapped["filter"][FORWARD].reverse()
    assert not gwrules.intact(swapped, [GW], []), "out of order"
    old = listing([GW], forward=[JUMP[FORWARD], shlex.split(OLD["filter"][0].format(v=256))])
    assert not gwrules.intact(old, [GW], []), "an older version's rule left in FORWARD"


def test_the_accepts_jump_goes_just_below_docker_user_and_the_isolations_first_in_mangle():
    s = gwrules.script(listing(mangle=[GUARD], forward=[["-j", "X"], DOCKER, ["-j", "Y"]], postrouting=[],
                               chains=False), [GW], [])
    assert inserted(s) == ['-I FORWARD 1 -m comment --comment "dataplane egress" -j DATAPLANE-ISOLATION',
                           '-I FORWARD 3 -m comment --comment "dataplane egress" -j DATAPLANE-FORWARD',
                           '-A POSTROUTING -m comment --comment "dataplane egress" -j DATAPLANE-POSTROUTING'], s
    assert s.index("*mangle") < s.index("*filter") < s.index("*nat"), "the DROPs are in before the ACCEPTs"
    s = gwrules.script(listing(forward=[["-j", "X"]], chains=False), [GW], [])
    assert inserted(s) == ['-I FORWARD 1 -m comment --comment "dataplane egress" -j DATAPLANE-FORWARD']
    s = gwrules.script(listing([GW], forward=[DOCKER, JUMP[FORWARD]]), [GW, GW2], [])
    assert not inserted(s), "jumps that are there stay where they are (Docker's start put its own first)"


def test_one_transaction_per_table_flushes_and_fills_our_chain():
    s = gwrules.script(listing(chains=False), [GW], []).splitlines()
    assert s[0:2] == ["*mangle", f":{ISOLATION} - [0:0]"] and s.count("COMMIT") == 3
    body = [shlex.split(line)[2:] for line in s if line.startswith(f"-A {FORWARD}")]
    assert body == gwrules.wanted([GW], [])[FORWARD]


def test_an_older_versions_rules_are_removed_in_the_same_transaction_and_said():
    old_f = [shlex.split(x.format(v=256)) for x in OLD["filter"]]
    old_n = [shlex.split(x.format(v=256)) for x in OLD["nat"]]
    lines = listing(forward=[DOCKER] + old_f, postrouting=old_n, chains=False)
    s = gwrules.script(lines, [GW], [])
    filt = s[s.index("*filter"):s.index("*nat")]
    assert all(gwrules._line(["-D", "FORWARD"] + r) in filt for r in old_f)
    assert filt.index("-D FORWARD") > filt.index("-I FORWARD"), "the new rules are in before the old go"
    assert gwrules._line(["-D", "POSTROUTING"] + old_n[0]) in s[s.index("*nat"):]
    assert gwrules.said(lines, [GW]) == [
        "iptables rules of the gateway of VNI 256: moved into chains of their own "
        "(DATAPLANE-ISOLATION, DATAPLANE-FORWARD, DATAPLANE-POSTROUTING)"]


def test_what_is_mended_is_said_per_vni():
    assert gwrules.said(listing([GW, GW2]), [GW]) == ["iptables rules of VNI 304, which has no gateway here; removed"]
    assert gwrules.said(listing([GW], mangle=[GUARD]), [GW]) == [
        "iptables rules of the gateways were out of order, or their chains not jumped to; put back"]
    assert gwrules.said(listing(chains=False), [GW]) == [
        "iptables rules of the gateway of VNI 256 were missing or not as written; put back"]


def test_an_older_agents_rules_put_back_beside_ours_are_said_so():
    lines = listing([GW], forward=[JUMP[FORWARD], shlex.split(OLD["filter"][0].format(v=256))])
    assert gwrules.said(lines, [GW]) == ["iptables rules an older version put back for the gateway of VNI 256 "
                                         "removed (is an agent of that version still running?)"]
    assert gwrules._line(["-D", "FORWARD"] + shlex.split(OLD["filter"][0].format(v=256))) in gwrules.script(lines, [GW], [])


def test_a_rule_someone_put_in_our_chain_is_said_without_raising():
    """Untagged, beside a stray VNI's: sorting None with a VNI raised TypeError (a review found
    it), which `down` did not catch."""
    lines = listing([GW, GW2])
    lines["filter"][FORWARD].append(["-s", "192.0.2.1/32", "-j", "ACCEPT"])
    assert gwrules.said(lines, [GW2]) == ["iptables rules of VNI 256, which has no gateway here; removed"]
    assert not gwrules.intact(lines, [GW, GW2], []), "our chains are ours: it goes at the next write"


def test_a_sandboxs_new_connections_leave_only_by_the_nodes_ways_out():
    """filter's ACCEPT out of a router (`-i dpgwX ! -o dpgwX`), jumped to above Docker's rules,
    let a sandbox into docker0's containers on ports never published, other bridges, past ufw's
    forward policy. In mangle now: to a way out it goes on; else replies and DNAT only."""
    want = gwrules.wanted([GW], ["eth0", "ul0"])[ISOLATION]
    tail = want[-3:]
    assert [r[:4] + r[-2:] for r in tail[:2]] == [["-i", "dpgw+", "-o", "eth0", "-j", "RETURN"],
                                                 ["-i", "dpgw+", "-o", "ul0", "-j", "RETURN"]]
    assert tail[2][:2] == ["-i", "dpgw+"] and tail[2][-2:] == ["-j", "DROP"]
    at = tail[2].index("--ctstate")
    assert tail[2][at - 1:at + 2] == ["!", "--ctstate", "RELATED,ESTABLISHED,DNAT"]
    assert gwrules.wanted([], ["eth0"])[ISOLATION] == [], "no gateway: nothing of ours"
    lines = listing([GW])
    assert not gwrules.intact(lines, [GW], ["eth1"]), "a default route moved: written again"


def test_ways_out_that_moved_are_said_as_such_not_as_a_repair():
    """A default route that moved makes the rules differ: written again and said as WAYS_MOVED,
    which the agent logs without counting a repair; the closing DROP taken away by hand is a
    repair as before. (A RETURN taken away reads as a way out gone: the same rewrite.)"""
    lines = listing([GW])
    lines["mangle"][ISOLATION] = gwrules.wanted([GW], ["eth0", "ul0"])[ISOLATION]
    assert gwrules.said(lines, [GW], ["eth0", "ul0"]) == ["iptables rules of the gateways were out of order, "
                                                          "or their chains not jumped to; put back"]
    moved = gwrules.said(lines, [GW], ["eth1", "ul0"])
    assert moved == [f"{gwrules.WAYS_MOVED} (eth1, ul0; forwarding kept to the gateways on none): a default "
                     "route changed"], moved
    lines["mangle"][ISOLATION] = lines["mangle"][ISOLATION][:-1]
    assert gwrules.said(lines, [GW], ["eth0", "ul0"]) == [
        "iptables rules of the gateways were out of order, or their chains not jumped to; put back"], "a rule taken away"


def test_a_way_out_whose_forwarding_we_turned_on_is_kept_to_the_routers():
    """node/forwarding.py turns forwarding on for a default route's interface (the world's
    replies to sandboxes arrive there); on, it forwarded whatever arrived there: the host routed
    for anyone on that network. ISOLATION keeps it to the routers while it is on by our doing."""
    want = gwrules.wanted([GW], ["eth1", "ul0"], ["eth1"])[ISOLATION]
    assert want[-1] == ["-i", "eth1", "!", "-o", "dpgw+", "-m", "comment", "--comment", "dataplane egress",
                        "-j", "DROP"]
    assert gwrules.wanted([], ["eth1"], ["eth1"])[ISOLATION] == [], "no gateway: nothing of ours"
    lines = listing([GW])
    lines["mangle"][ISOLATION] = gwrules.wanted([GW], ["eth1", "ul0"])[ISOLATION]
    assert not gwrules.intact(lines, [GW], ["eth1", "ul0"], ["eth1"])
    assert gwrules.said(lines, [GW], ["eth1", "ul0"], ["eth1"]) == [
        f"{gwrules.WAYS_MOVED} (eth1, ul0; forwarding kept to the gateways on eth1): a default route changed"]
    lines["mangle"][ISOLATION] = want
    assert gwrules.intact(lines, [GW], ["eth1", "ul0"], ["eth1"])
    assert gwrules.said(lines, [GW], ["eth1", "ul0"], [])[0].startswith(gwrules.WAYS_MOVED), "confinement lifted"
