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
        if f"errno {errno.EINVAL}" in str(e):
            raise KernelError(f"{e}: this kernel has no tcx (Linux 6.6 or later is needed)") from None
        raise


def _ours(ifindex: int, name: str) -> list[int]:
    """fds of the programs called name at ifindex's tcx ingress; the caller closes them."""
    fds = []
    try:
        for pid in _query(ifindex):
            fd = bpfsys.prog_fd_by_id(pid)
            if fd is None:
                continue
            fds.append(fd)
            if bpfsys.prog_info(fd)["name"] != name:
                os.close(fds.pop())
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _attach(ifindex: int, fd: int, name: str) -> None:
    want = bpfsys.prog_info(fd)["id"]
    old = _ours(ifindex, name)
    try:
        ids = [bpfsys.prog_info(o)["id"] for o in old]
        if want in ids:
            stale = [o for o, i in zip(old, ids) if i != want]
        else:
            bpfsys.prog_attach(ifindex, TCX_INGRESS, fd, f"attach {name} to ifindex {ifindex} (tcx)",
                               replace_fd=old[0] if old else None)
            stale = old[1:]
        for o in stale:
            bpfsys.prog_detach(ifindex, TCX_INGRESS, o, f"detach an old {name} from ifindex {ifindex}")
    finally:
        for o in old:
            os.close(o)


def _detach(ifindex: int, name: str) -> None:
    fds = _ours(ifindex, name)
    try:
        for fd in fds:
            bpfsys.prog_detach(ifindex, TCX_INGRESS, fd, f"detach {name} from ifindex {ifindex}")
    finally:
        for fd in fds:
            os.close(fd)


def _names(ifindex: int) -> list[str]:
    out = []
    for pid in _query(ifindex):
        fd = bpfsys.prog_fd_by_id(pid)
        if fd is not None:
            try:
                out.append(bpfsys.prog_info(fd)["name"])
            finally:
                os.close(fd)
    return out


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
        if f"errno {errno.ENODEV}" not in str(e):
            raise


def attached(ns: str | None, ifindex: int) -> list[str]:
    """Names of ours at ifindex's ingress either way: tcx, or a cls_bpf filter on a node an older
    version brought up and no `up` has reloaded since (state.NodeState.hook)."""
    return names(ns, ifindex) + netlink.tc_filter_names(ns, ifindex)


def names(ns: str | None, ifindex: int) -> list[str]:
    """Names of the programs at ifindex's tcx ingress ([] when the interface is gone)."""
    try:
        return netns.call_in_netns(ns, _names, ifindex)
    except KernelError as e:
        if f"errno {errno.ENODEV}" in str(e):
            return []
        raise
