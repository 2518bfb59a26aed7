"""gwrules reads `iptables -S` lines: intact() wants all five of a VNI's rules, copies not
standing in for a missing one, its DROP between routers above its ACCEPTs and its closing DROP
below the replies' ACCEPT, another VNI's rules (25 against 256) apart; inserts() puts a missing
ACCEPT just below the VNI's DROP counted in the whole chain, a missing closing DROP below its
last ACCEPT."""

from __future__ import annotations

from dataplane.node import gwrules

C = '-m comment --comment "dataplane egress vni {v}"'
MASQ = '-A POSTROUTING -s 10.1.0.0/24 ! -d 10.1.0.0/24 ' + C + ' -j MASQUERADE'
DROP = '-A FORWARD -i dpgw000100 -o dpgw+ ' + C + ' -j DROP'
REPLIES = '-A FORWARD -o dpgw000100 -m conntrack --ctstate RELATED,ESTABLISHED,DNAT ' + C + ' -j ACCEPT'
OUT = '-A FORWARD -i dpgw000100 ! -o dpgw000100 ' + C + ' -j ACCEPT'
CLOSED = '-A FORWARD -o dpgw000100 ' + C + ' -j DROP'


def lines(nat, fwd, v=256):
    return {("nat", "POSTROUTING"): [x.format(v=v) for x in nat],
            ("filter", "FORWARD"): [OTHER] + [x.format(v=v) for x in fwd]}


def test_all_five_in_order_are_intact():
    assert gwrules.intact(lines([MASQ], [DROP, REPLIES, OUT, CLOSED]), 256)
    assert gwrules.intact(lines([MASQ], [DROP, OUT, REPLIES, DROP, CLOSED]), 256)   # order of the ACCEPTs, a copy
    assert not gwrules.intact(lines([MASQ], [DROP, REPLIES, OUT]), 256), "the closing DROP is one of them"


def test_a_missing_rule_is_not_made_up_by_a_copy():
    assert not gwrules.intact(lines([], [DROP, REPLIES, OUT, CLOSED]), 256)
    assert not gwrules.intact(lines([MASQ], [DROP, DROP, OUT, CLOSED]), 256)
    assert not gwrules.intact(lines([MASQ, MASQ], [REPLIES, OUT, OUT, CLOSED]), 256)


def test_an_accept_above_the_drop_is_not_intact():
    assert not gwrules.intact(lines([MASQ], [OUT, DROP, REPLIES, CLOSED]), 256)


def test_a_closing_drop_above_the_replies_accept_is_not_intact():
    """It would drop the replies and published ports: ensure() takes it out and puts it back below."""
    assert not gwrules.intact(lines([MASQ], [DROP, CLOSED, REPLIES, OUT]), 256)
    assert gwrules.closed_misplaced(lines([], [DROP, CLOSED, REPLIES])[("filter", "FORWARD")], 256)
    assert not gwrules.closed_misplaced(lines([], [DROP, REPLIES, CLOSED])[("filter", "FORWARD")], 256)


def test_another_vnis_rules_are_not_ours():
    theirs = lines([MASQ], [DROP, REPLIES, OUT, CLOSED], v=25)
    assert not gwrules.intact(theirs, 256) and gwrules.intact(theirs, 25)
    both = {k: lines([MASQ], [DROP, REPLIES, OUT, CLOSED], v=25)[k] + lines([MASQ], [DROP, REPLIES, OUT, CLOSED])[k]
            for k in theirs}
    assert gwrules.intact(both, 256) and gwrules.intact(both, 25)


OTHER = '-A FORWARD -j DOCKER-USER'


def test_a_missing_accept_goes_just_below_the_drop_counted_in_the_whole_chain():
    """Other rules above ours (Docker's jump, another VNI's gateway inserted later): the rule
    number of our DROP in the chain, not among our own lines; counted among ours, the ACCEPT
    went in at 2, above our DROP at 3."""
    fwd = [OTHER, DROP.format(v=257), DROP.format(v=256), REPLIES.format(v=256), CLOSED.format(v=256)]
    assert gwrules.inserts(fwd, 256, {"out"}) == [("out", 4)]
    assert gwrules.inserts(fwd, 256, {"out", "replies"}) == [("replies", 4), ("out", 4)]


def test_a_missing_or_misplaced_drop_goes_to_the_top_and_the_accepts_below_it():
    fwd = [OTHER, OUT.format(v=256), REPLIES.format(v=256), CLOSED.format(v=256)]
    assert gwrules.inserts(fwd, 256, {"drop"}) == [("drop", 1)]
    fwd = [OTHER, OUT.format(v=256), DROP.format(v=256), CLOSED.format(v=256)]   # an ACCEPT above the DROP
    assert gwrules.inserts(fwd, 256, {"replies"}) == [("drop", 1), ("replies", 2)]
    assert gwrules.inserts([OTHER], 256, {"drop", "replies", "out", "closed"}) == [
        ("drop", 1), ("replies", 2), ("out", 2), ("closed", 4)]
    assert gwrules.inserts([OTHER] + [x.format(v=256) for x in (DROP, REPLIES, OUT, CLOSED)], 256, set()) == []


def test_a_missing_closing_drop_goes_below_the_vnis_last_accept():
    fwd = [OTHER, DROP.format(v=256), REPLIES.format(v=256), OUT.format(v=256), OTHER]
    assert gwrules.inserts(fwd, 256, {"closed"}) == [("closed", 5)]
    assert gwrules.inserts([OTHER], 256, {"drop", "replies", "out", "closed"}) == [
        ("drop", 1), ("replies", 2), ("out", 2), ("closed", 4)]


def test_rules_tagged_for_a_vni_without_a_gateway_are_strays():
    """A removal that failed part-way left them, to take effect again for whatever later has that
    subnet or interface name: the start-up sweep and `up` remove them (gateway.repair)."""
    found = gwrules.strays(lines([MASQ], [DROP, REPLIES, OUT, CLOSED], v=25), {256})
    assert [(v, t, c) for v, t, c, _ in found] == [(25, "nat", "POSTROUTING")] + [(25, "filter", "FORWARD")] * 4
    assert found[0][3][-2:] == ["-j", "MASQUERADE"] and "dataplane egress vni 25" in found[0][3]
    assert gwrules.strays(lines([MASQ], [DROP, REPLIES, OUT, CLOSED]), {256}) == []


def test_a_listing_that_lacks_what_the_checks_found_is_missing_too():
    """A firewall's reload between ensure()'s -C checks and its -S listing: the closing DROP alone
    was counted missing, with no ACCEPT in the listing to put it under, and an IndexError took the
    agent down. What the listing lacks is inserted too, in order."""
    assert gwrules.inserts([OTHER], 256, {"closed"}) == [("drop", 1), ("replies", 2), ("out", 2), ("closed", 4)]
    assert gwrules.inserts([OTHER, DROP.format(v=256)], 256, {"closed"}) == [
        ("replies", 3), ("out", 3), ("closed", 5)]
