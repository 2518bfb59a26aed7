"""gwrules on `iptables -S` listings (tokens after "-A CHAIN"): the DROPs in a chain FORWARD
jumps to above DOCKER-USER, the ACCEPTs in one it jumps to just below it (an operator's rules
there apply to our sandboxes' way out; before, ours went above them; an operator's ACCEPT there
still cannot join networks or open a subnet to the world); intact() wants exactly
what is written and every jump in that order; script() writes each table in one transaction and
takes out what an older version put in FORWARD and POSTROUTING themselves."""

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
JUMPS = [gwrules._jump(ISOLATION), gwrules._jump(FORWARD)]
C = '-m comment --comment "dataplane egress vni {v}"'
OLD = {"nat": ['-s 10.1.0.0/24 ! -d 10.1.0.0/24 ' + C + ' -j MASQUERADE'],
       "filter": ['-i dpgw000100 -o dpgw+ ' + C + ' -j DROP',
                  '-o dpgw000100 -m conntrack --ctstate RELATED,ESTABLISHED,DNAT ' + C + ' -j ACCEPT',
                  '-i dpgw000100 ! -o dpgw000100 ' + C + ' -j ACCEPT', '-o dpgw000100 ' + C + ' -j DROP']}


def listing(gateways=(), forward=JUMPS, postrouting=(gwrules._jump(POSTROUTING),), chains=True):
    """What listing() reads on a node whose chains were written for gateways."""
    want = gwrules.wanted(gateways)
    return {"filter": {"FORWARD": [list(r) for r in forward], ISOLATION: want[ISOLATION] if chains else None,
                       FORWARD: want[FORWARD] if chains else None},
            "nat": {"POSTROUTING": [list(r) for r in postrouting], POSTROUTING: want[POSTROUTING] if chains else None}}


def inserted(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("-I ")]


def test_what_no_rule_below_may_open_is_apart_from_the_accepts_and_lets_published_ports_by():
    want = gwrules.wanted([GW2, GW])
    assert [(gwrules._vni(r), r[0], r[-1]) for r in want[ISOLATION]] == [
        (256, "-i", "DROP"), (304, "-i", "DROP"), (256, "-o", "DROP"), (304, "-o", "DROP")]
    assert all("dpgw+" in r for r in want[ISOLATION][:2]), "between routers"
    for rule, passes in ((want[ISOLATION][0], "DNAT"), (want[ISOLATION][2], "RELATED,ESTABLISHED,DNAT")):
        at = rule.index("--ctstate")
        assert rule[at - 1:at + 2] == ["!", "--ctstate", passes], "published ports (and replies) pass"
    assert [r[-1] for r in want[FORWARD]] == ["ACCEPT"] * 4, "the ACCEPTs alone below DOCKER-USER"


def test_intact_wants_every_jump_in_order_exact_contents_and_no_older_rules():
    assert gwrules.intact(listing([GW]), [GW])
    assert gwrules.intact(listing([GW], forward=[["-j", "X"], JUMPS[0], DOCKER, JUMPS[1]]), [GW]), \
        "others' rules above ours are theirs to place"
    for forward in (JUMPS[:1], JUMPS[1:], JUMPS[::-1]):
        assert not gwrules.intact(listing([GW], forward=forward), [GW]), forward
    assert not gwrules.intact(listing([GW], forward=[JUMPS[0], ["-i", "x"] + JUMPS[1][-2:]]), [GW]), \
        "an operator's conditional jump to our chain is not ours"
    assert not gwrules.intact(listing([GW], postrouting=[]), [GW]), "POSTROUTING's jump"
    assert not gwrules.intact(listing([GW], chains=False), [GW])
    assert not gwrules.intact(listing([GW]), [GW, GW2]), "a gateway's rules missing"
    assert not gwrules.intact(listing([GW, GW2]), [GW]), "a stray VNI's"
    swapped = listing([GW])
    swapped["filter"][FORWARD].reverse()
    assert not gwrules.intact(swapped, [GW]), "out of order"
    old = listing([GW], forward=JUMPS + [shlex.split(OLD["filter"][0].format(v=256))])
    assert not gwrules.intact(old, [GW]), "an older version's rule left in FORWARD"


def test_the_isolations_jump_goes_first_and_the_accepts_just_below_docker_user():
    s = gwrules.script(listing(forward=[["-j", "X"], DOCKER, ["-j", "Y"]], chains=False), [GW])
    assert inserted(s) == ['-I FORWARD 2 -m comment --comment "dataplane egress" -j DATAPLANE-ISOLATION',
                           '-I FORWARD 4 -m comment --comment "dataplane egress" -j DATAPLANE-FORWARD'], \
        "just above DOCKER-USER: someone's rule at the top stays there"
    s = gwrules.script(listing(forward=[["-j", "X"]], postrouting=(), chains=False), [GW])
    assert [line.split()[2] for line in inserted(s)] == ["1", "2"]
    assert '-A POSTROUTING -m comment --comment "dataplane egress" -j DATAPLANE-POSTROUTING' in s
    s = gwrules.script(listing([GW]), [GW, GW2])
    assert not inserted(s) and "-A POSTROUTING" not in s, "jumps that are there are not added again"


def test_after_docker_user_put_first_the_isolation_goes_back_above_and_the_accepts_below_both():
    s = gwrules.script(listing([GW], forward=[DOCKER, JUMPS[0]]), [GW])
    assert inserted(s) == ['-I FORWARD 1 -m comment --comment "dataplane egress" -j DATAPLANE-ISOLATION',
                           '-I FORWARD 3 -m comment --comment "dataplane egress" -j DATAPLANE-FORWARD']


def test_an_isolation_jump_below_the_accepts_or_docker_user_is_moved_above_in_one_transaction():
    """Docker's start puts DOCKER-USER's jump first: an operator's ACCEPT there would open what
    the isolation closes (a review found it), so the isolation's jump goes back above it."""
    iso = '-m comment --comment "dataplane egress" -j DATAPLANE-ISOLATION'
    for forward, at in (([["-j", "X"]] + JUMPS[::-1], 2), ([DOCKER] + JUMPS, 1),
                        ([["-j", "X"], DOCKER, JUMPS[0], JUMPS[0], JUMPS[1]], 2)):
        lines = listing([GW], forward=forward)
        assert not gwrules.intact(lines, [GW])
        s = gwrules.script(lines, [GW]).splitlines()
        moves = [line for line in s if line.endswith("DATAPLANE-ISOLATION")]
        assert moves == [f"-D FORWARD {iso}"] * forward.count(JUMPS[0]) + [f"-I FORWARD {at} {iso}"], moves
    assert gwrules.intact(listing([GW], forward=[["-j", "X"]] + JUMPS + [DOCKER]), [GW]), "others' rules above"


def test_one_transaction_per_table_flushes_and_fills_our_chains():
    s = gwrules.script(listing(chains=False), [GW]).splitlines()
    assert s[0:3] == ["*filter", f":{ISOLATION} - [0:0]", f":{FORWARD} - [0:0]"] and s.count("COMMIT") == 2
    body = [shlex.split(line)[2:] for line in s if line.startswith(f"-A {FORWARD}")]
    assert body == gwrules.wanted([GW])[FORWARD]


def test_an_older_versions_rules_are_removed_in_the_same_transaction_and_said():
    old_f = [shlex.split(x.format(v=256)) for x in OLD["filter"]]
    old_n = [shlex.split(x.format(v=256)) for x in OLD["nat"]]
    lines = listing(forward=[DOCKER] + old_f, postrouting=old_n, chains=False)
    s = gwrules.script(lines, [GW])
    filt = s[:s.index("COMMIT")]
    assert all(gwrules._line(["-D", "FORWARD"] + r) in filt for r in old_f)
    assert filt.index("-D FORWARD") > filt.index("-I FORWARD"), "the new rules are in before the old go"
    assert gwrules._line(["-D", "POSTROUTING"] + old_n[0]) in s[s.index("*nat"):]
    assert gwrules.said(lines, [GW]) == [
        "iptables rules of the gateway of VNI 256: moved into chains of their own "
        "(DATAPLANE-ISOLATION, DATAPLANE-FORWARD, DATAPLANE-POSTROUTING)"]


def test_what_is_mended_is_said_per_vni():
    assert gwrules.said(listing([GW, GW2]), [GW]) == ["iptables rules of VNI 304, which has no gateway here; removed"]
    assert gwrules.said(listing([GW], forward=JUMPS[:1]), [GW]) == [
        "iptables rules of the gateways were out of order, or their chains not jumped to; put back"]
    assert gwrules.said(listing(chains=False), [GW]) == [
        "iptables rules of the gateway of VNI 256 were missing or not as written; put back"]


def test_a_rule_someone_put_in_our_chain_is_said_without_raising():
    """Untagged, beside a stray VNI's: sorting None with a VNI raised TypeError (a review found
    it), which `down` did not catch."""
    lines = listing([GW, GW2])
    lines["filter"][FORWARD].append(["-s", "192.0.2.1/32", "-j", "ACCEPT"])
    assert gwrules.said(lines, [GW2]) == ["iptables rules of VNI 256, which has no gateway here; removed"]
    assert not gwrules.intact(lines, [GW, GW2]), "our chains are ours: it goes at the next write"
