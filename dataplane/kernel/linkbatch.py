"""Many interfaces deleted at once (`down` with its endpoints' ports).

Deleted one at a time, each interface pays for its own unregistration's waits
(unregister_netdevice_many: synchronize_net, then rcu_barrier): plain veths here went at 16 ms
each one by one and 0.9 ms each as one batch (25: 403 ms against 23 ms, /tmp script). A port
with a tcx program costs one RCU grace period more however it goes (100 such veths as one
batch: 1.23 s; DESIGN, "tcx"). `down` of 1,000 endpoints took 53 s one at a time and 28 s in
batches (bench.ops). An RTM_DELLINK naming a link group instead of an interface unregisters
every interface of the group as one batch (rtnl_group_dellink). Each batch's group is a number
no interface of the namespace had when we looked and no earlier batch drew, given to ours just
before the request.

A batch holds RTNL, the lock of all network configuration on the machine, for all of it:
BATCH ports at a time keeps that under about a second, where one batch of 1,000 tcx ports
held it for 15-27 s (no link, address or route could change meanwhile, anywhere)."""

from __future__ import annotations

import errno
import random

from dataplane.kernel.netlink import _kerr, _nlerror, ipr

BATCH = 32


def _draw() -> int:
    return random.randrange(1 << 20, 1 << 31)


def delete(netns: str | None, ifnames: list[str]) -> list[str]:
    """Delete those of ifnames that exist in netns, BATCH at a time; the names that were there.
    One by one where a batch is refused (an interface of the group without dellink)."""
    with ipr(netns) as s:
        try:
            links = s.get_links()
        except _nlerror() as e:
            raise _kerr("read interfaces", e) from None
        index = {ln.get_attr("IFLA_IFNAME"): ln["index"] for ln in links}
        taken = {ln.get_attr("IFLA_GROUP") for ln in links}
        doomed = [(name, index[name]) for name in dict.fromkeys(ifnames) if name in index]
        for i in range(0, len(doomed), BATCH):
            _batch(s, doomed[i:i + BATCH], taken)
    return [name for name, _ in doomed]


def _batch(s, doomed: list[tuple[str, int]], taken: set) -> None:
    if len(doomed) > 1 and _as_group(s, doomed, taken):
        return
    for name, ifindex in doomed:                 # one port, or a batch refused: one by one
        try:
            s.link("del", index=ifindex)
        except _nlerror() as e:
            if e.code != errno.ENODEV:
                raise _kerr(f"delete interface {name}", e) from None


def _as_group(s, doomed: list[tuple[str, int]], taken: set) -> bool:
    """The ports into a group drawn for this batch alone (a port gone already is passed over),
    then the group deleted; False if the kernel refused."""
    group = next(g for g in iter(_draw, None) if g not in taken)
    taken.add(group)
    grouped = 0
    try:
        for _, ifindex in doomed:
            try:
                s.link("set", index=ifindex, group=group)
                grouped += 1
            except _nlerror() as e:
                if e.code != errno.ENODEV:
                    raise
        if grouped:
            s.link("del", group=group)
    except _nlerror():
        return False
    return True
