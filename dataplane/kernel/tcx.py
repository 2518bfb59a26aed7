"""Our tc programs at an interface's ingress through tcx, the kernel's
multi-program hook (BPF_PROG_ATTACH with BPF_TCX_INGRESS, kernel 6.6+), not
a clsact qdisc with a cls_bpf filter. The program runs straight from
sch_handle_ingress: no tc_run, no filter chain, no classifier. Measured on the
bench's 64-byte path (two attach points per frame): 3.5% less CPU per frame
for the whole machine (docs/DESIGN.md, "tcx"). An attachment made this way
lives until it is detached or its interface goes, as a tc filter did.

A program is known by its name (from_overlay, from_endpoint): attaching
replaces ours in place (BPF_F_REPLACE: no moment without one). `up` also
removes a cls_bpf filter an older version of ours left (drop_filter): it would
never run again, but `tc filter show` would list it. Every call runs in the
interface's namespace."""

from __future__ import annotations

import errno
import os

from dataplane.core.errors import KernelError
from dataplane.kernel import bpfsys, netlink, netns

TCX_INGRESS = 46     # enum bpf_attach_type


def _query(ifindex: int) -> list[int]:
    try:
        return bpfsys.prog_query(ifindex, TCX_INGRESS, f"list tcx programs of ifindex {ifindex}")
    except KernelError as e:
        if e.errno == errno.EINVAL:
            raise KernelError(f"{e}: this kernel has no tcx (Linux 6.6 or later is needed)", errno=e.errno) from None
        raise


def _listed(ifindex: int) -> list[tuple[int, dict]]:
    """(fd, bpfsys.prog_info) of each program at ifindex's tcx ingress; the caller closes the fds."""
    out: list[tuple[int, dict]] = []
    try:
        for pid in _query(ifindex):
            fd = bpfsys.prog_fd_by_id(pid)
            if fd is not None:
                out.append((fd, {}))             # listed first: a failing prog_info closes it too
                out[-1] = (fd, bpfsys.prog_info(fd))
    except BaseException:
        _close(out)
        raise
    return out


def _close(listed: list[tuple[int, dict]]) -> None:
    for fd, _ in listed:
        os.close(fd)


def _attach(ifindex: int, fd: int, name: str) -> None:
    want = bpfsys.prog_info(fd)["id"]
    listed = _listed(ifindex)
    try:
        old = [(o, info["id"]) for o, info in listed if info["name"] == name]
        if want in (i for _, i in old):
            stale = [o for o, i in old if i != want]
        else:
            bpfsys.prog_attach(ifindex, TCX_INGRESS, fd, f"attach {name} to ifindex {ifindex} (tcx)",
                               replace_fd=old[0][0] if old else None)
            stale = [o for o, _ in old[1:]]
        for o in stale:
            bpfsys.prog_detach(ifindex, TCX_INGRESS, o, f"detach an old {name} from ifindex {ifindex}")
    finally:
        _close(listed)


def _detach(ifindex: int, name: str) -> None:
    listed = _listed(ifindex)
    try:
        for fd, info in listed:
            if info["name"] == name:
                bpfsys.prog_detach(ifindex, TCX_INGRESS, fd, f"detach {name} from ifindex {ifindex}")
    finally:
        _close(listed)


def _names(ifindex: int) -> list[str]:
    listed = _listed(ifindex)
    _close(listed)
    return [info["name"] for _, info in listed]


def attach(ns: str | None, ifindex: int, prog_fd: int, name: str) -> None:
    """Attach at ifindex's ingress, or replace ours there in place."""
    netns.call_in_netns(ns, _attach, ifindex, prog_fd, name)


def drop_filter(ns: str | None, ifindex: int, name: str) -> None:
    """Remove the cls_bpf filter (and then an empty clsact) an older version of ours attached."""
    if name in netlink.tc_filter_names(ns, ifindex):
        netlink.tc_detach(ns, ifindex)
        if not netlink.tc_filter_names(ns, ifindex):
            netlink.clsact_delete(ns, ifindex)


def detach(ns: str | None, ifindex: int, name: str) -> None:
    """Remove ours from ifindex's ingress; nothing there (or no interface) is not an error."""
    try:
        netns.call_in_netns(ns, _detach, ifindex, name)
    except KernelError as e:
        if e.errno != errno.ENODEV:
            raise


def attached(ns: str | None, ifindex: int) -> list[str]:
    """Names of ours at ifindex's ingress either way: tcx, or a cls_bpf filter on a node an older
    version brought up and no `up` has reloaded since (state.NodeState.hook)."""
    return names(ns, ifindex) + netlink.tc_filter_names(ns, ifindex)


def count_attached(ns: str | None, ifindexes: list[int], name: str) -> int:
    """How many of ifindexes have `name` at their ingress either way (attached(), for every
    endpoint port at once): one visit to the namespace for all of them, and a tc filter read
    only for those without it at tcx. One at a time (two namespace visits and an rtnetlink
    socket per port), `dataplane status` took 1.35 s at 1,000 endpoints, most of it here
    (bench.ops; cProfile: 1.8 of 2.0 s under the profiler)."""
    have = netns.call_in_netns(ns, _with, list(ifindexes), name)
    rest = [i for i in ifindexes if i not in have]
    return len(have) + sum(name in found for found in netlink.tc_filter_names_of(ns, rest).values())


def _with(ifindexes: list[int], name: str) -> set[int]:
    """Those of ifindexes whose tcx ingress runs a program called name (in their namespace). A
    program's name is read once, however many ports run it; an interface gone has none."""
    named: dict[int, bool] = {}
    found = set()
    for ifindex in ifindexes:
        try:
            ids = _query(ifindex)
        except KernelError as e:
            if e.errno == errno.ENODEV:
                continue
            raise
        for pid in ids:
            if pid not in named:
                named[pid] = _name_of(pid) == name
            if named[pid]:
                found.add(ifindex)
                break
    return found


def _name_of(prog_id: int) -> str | None:
    fd = bpfsys.prog_fd_by_id(prog_id)
    if fd is None:                   # unloaded since the query
        return None
    try:
        return bpfsys.prog_info(fd)["name"]
    finally:
        os.close(fd)


def names(ns: str | None, ifindex: int) -> list[str]:
    """Names of the programs at ifindex's tcx ingress ([] when the interface is gone)."""
    try:
        return netns.call_in_netns(ns, _names, ifindex)
    except KernelError as e:
        if e.errno == errno.ENODEV:
            return []
        raise


def ids(ns: str | None, ifindex: int) -> list[int]:
    """Ids of the programs at ifindex's tcx ingress, in the order they run."""
    return netns.call_in_netns(ns, _query, ifindex)
