"""`dataplane`: argument parsing, logging and exit codes; each command's work
is in the node and agent layers (node_cmds, registry_cmds, runtime_cmds)."""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import logging
import os
import signal
import sys

from dataplane import __version__
from dataplane.agent import client
from dataplane.cli import node_cmds, observe_cmds, registry_cmds, runtime_cmds, secret_cmds, service_cmds
from dataplane.core import model
from dataplane.core.errors import DataplaneError, NotFound
from dataplane.kernel import netlink
from dataplane.node.base import node_netns


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dataplane", description="VXLAN overlay for containers with an eBPF fast path")
    p.add_argument("--netns", help="operate on the node inside this network namespace (default: this host)")
    p.add_argument("--version", action="version", version=f"dataplane {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    node_cmds.register(sub)
    observe_cmds.register(sub)
    registry_cmds.register(sub)
    runtime_cmds.register(sub)
    secret_cmds.register(sub)
    service_cmds.register(sub)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    # SIGUSR1 prints every thread's stack to stderr and goes on: how to see where a command hangs
    with contextlib.suppress(OSError, ValueError, AttributeError):     # no stderr file: no stacks
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    daemon = args.cmd in ("agent", "docker-plugin")
    if not daemon:
        client.PROGRESS_AFTER_S = 1.0    # a progress line on anything that takes more than a second
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "    # journald stamps lines itself
    logging.basicConfig(level=logging.INFO if daemon else logging.WARNING,
                        format=stamp + "%(levelname)s %(name)s: %(message)s" if daemon
                        else "dataplane: %(levelname)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        if args.netns:                   # `down` may still remove a node an older version let in
            node_netns(args.netns) if args.cmd != "down" else model.parse_name(args.netns, "namespace")
        if args.netns and netlink.ns_exists(args.netns):
            # Act as a process of that host: registry traffic leaves from its namespace.
            netlink.enter_netns(args.netns)
        elif args.netns and args.cmd not in ("down", "service", "up"):   # up says so itself; down cleans up
            raise NotFound(f"network namespace {args.netns!r} does not exist")
        rc = args.func(args)
    except DataplaneError as e:
        print(f"dataplane: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:             # `dataplane endpoint list | head`: the reader has what it wanted
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit's flush
        return 141                      # as a process killed by SIGPIPE says
    return rc or 0
