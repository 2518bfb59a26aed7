"""What `up --restore` waits for at boot, rather than fail at once and be restarted every second.

The underlay may get its address after network-online.target (DHCP on an allow-hotplug
interface, which that target does not wait for), and a node's network namespace (`--netns`)
is made again after a reboot by whatever made it (/run/netns is a tmpfs): the unit's
ExecStartPre failed at once and was restarted every second until it was there, and for good
if it never came (ExecStartPre has no start counter: restarts.py is the agent's). Waited for
under systemd only (under_systemd): typed by hand, a namespace that is not there is said at once.
Any other failure waits there before it is reported (before_failing)."""

from __future__ import annotations

import os
import time

from dataplane.core.errors import DataplaneError, NotFound
from dataplane.core.notice import notice
from dataplane.kernel import netlink


def underlay(node, ifname: str, local_ip: str, wait_s: float) -> None:
    """Until ifname has local_ip in the node's namespace (and, under systemd, the namespace is
    there); NotFound after wait_s, saying what is missing and how to go on if it moved."""
    deadline, said = time.monotonic() + wait_s, ""
    while True:
        if node.netns and not netlink.ns_exists(node.netns):
            if not under_systemd():
                return                                # vtep.up says what is wrong at once
            lacks, why = f"there is no network namespace {node.netns}", "whatever makes it has not yet, at boot"
        else:
            try:
                if local_ip in netlink.link_info(node.netns, ifname)["ipv4"]:
                    return
                lacks = f"{ifname} has no address {local_ip}"
            except DataplaneError:
                lacks = f"there is no interface {ifname}"    # (yet)
            why = "the underlay may come up late at boot"
        if time.monotonic() >= deadline:
            raise NotFound(f"{lacks} after {wait_s:g} s: if the underlay moved (a renamed interface, a new "
                           f"address), bring the node back with `dataplane up --restore --underlay IF "
                           f"[--local-ip ADDR]`")
        if said != lacks:
            notice(f"waiting up to {wait_s:g} s: {lacks} ({why})")
            said = lacks
        time.sleep(0.25)


RESTORE_RETRY_S = 10.0


def under_systemd() -> bool:
    """Started by systemd itself: SYSTEMD_EXEC_PID is this process (systemd 248+); a shell of a
    user service (a terminal's) or `sudo -E` inherits INVOCATION_ID and a pid not its own."""
    exec_pid = os.environ.get("SYSTEMD_EXEC_PID")
    return exec_pid == str(os.getpid()) if exec_pid else bool(os.environ.get("INVOCATION_ID"))


def before_failing(why: BaseException) -> None:
    """Under systemd, a failed `up --restore` says why and waits before it exits: the unit
    restarts it a second after and never gives up (units.py), and ExecStartPre has no start
    counter, so a lasting failure (a damaged node.json, an underlay that never came) was tried
    again every second, for good, a journal line each time. Typed by hand, it fails at once."""
    if under_systemd():
        notice(f"up --restore failed ({why}); waiting {RESTORE_RETRY_S:g} s before the unit tries again")
        time.sleep(RESTORE_RETRY_S)
