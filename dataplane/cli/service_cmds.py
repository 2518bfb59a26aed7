"""`dataplane service install|uninstall`: systemd units that bring a node back
at boot and keep its agent running. dataplane.service restores the node from
/var/lib/dataplane (`up --restore --no-agent`) and runs the agent as its main
process (Type=notify: ready after its first sync; Restart=always). A node
without a registry runs no agent: its unit only restores it (Type=oneshot).
With --docker, the Docker driver is socket-activated on Docker's plugin path."""

from __future__ import annotations

import contextlib
import errno
import glob
import os

from dataplane.agent import process
from dataplane.agent.units import PLUGIN_SOCKET, units
from dataplane.cli.output import add_output, say
from dataplane.core import model, state
from dataplane.core.errors import NotFound, UsageError, file_errors

def cmd_install(args):
    if args.netns:
        model.parse_name(args.netns, "namespace")
    node = args.netns or "host"
    boot = state.load_boot(node)
    if boot is None:
        raise NotFound(f"node {node} was never brought up here, or was taken down: the units bring back what "
                       "`dataplane up` made (run it first)")
    if args.docker and not boot.get("registry"):
        raise UsageError(f"node {node} has no registry (`up --no-registry`): the Docker driver works through "
                         "the agent, which a node without a registry does not run")
    mine = f"dataplane{'-' + args.netns if args.netns else ''}-docker.socket"
    found = glob.glob(os.path.join(glob.escape(args.unit_dir), "dataplane*-docker.socket"))
    others = [os.path.basename(p) for p in found if os.path.basename(p) != mine]
    if args.docker and others:           # one listening path: the other node's socket failed to bind, or lost it
        raise UsageError(f"{others[0]} already serves Docker's driver `dataplane` at {PLUGIN_SOCKET}: one node "
                         "per host can (`dataplane --netns NS service uninstall` of that one first)")
    files = {os.path.join(args.unit_dir, name): text
             for name, text in units(args.netns, args.docker, registry=bool(boot.get("registry"))).items()}
    with file_errors("cannot write the units"):
        os.makedirs(args.unit_dir, exist_ok=True)
        for path in files:           # what a rename cannot replace, found before anything is written
            if os.path.isdir(path):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        staged = []
        try:                       # every unit written aside first: a failure leaves none of them
            for path, text in files.items():
                with open(path + ".new", "w") as f:
                    staged.append(path + ".new")
                    f.write(text)
        except OSError:
            for tmp in staged:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise
        for path in files:
            os.replace(path + ".new", path)
    written = list(files)
    first = os.path.basename(written[0])
    hint = f"now: systemctl daemon-reload && systemctl enable --now {first}"
    if args.docker:
        hint += f" {os.path.basename(written[1])}"
    say(args, "\n".join(f"wrote {p}" for p in written) + "\n" + hint, {"written": written})


def cmd_uninstall(args):
    removed = []
    names = list(units(args.netns, docker=True))
    enabled = process.enabled(names, args.unit_dir)
    if enabled:                # its file gone, `systemctl disable` would fail, the agent left unsupervised
        raise UsageError(f"{', '.join(enabled)} enabled: run `systemctl disable --now {' '.join(enabled)}` "
                         "first, then uninstall (and `systemctl daemon-reload` after)")
    with file_errors("cannot remove the units"):
        for name in names:
            path = os.path.join(args.unit_dir, name)
            if os.path.lexists(path):
                os.unlink(path)
                removed.append(path)
    say(args, "\n".join(f"removed {p}" for p in removed) or "nothing installed", {"removed": removed})


def register(sub) -> None:
    sv = sub.add_parser("service", help="systemd units: the node back at boot, its agent supervised").add_subparsers(
        dest="sub", required=True)
    for verb, fn, what in (("install", cmd_install, "write the units (the node must have been brought up once)"),
                           ("uninstall", cmd_uninstall, "remove the units")):
        a = sv.add_parser(verb, help=what)
        a.add_argument("--unit-dir", default=process.UNIT_DIR, help="where units go (default: %(default)s)")
        if verb == "install":
            a.add_argument("--docker", action="store_true",
                           help=f"also the Docker driver, socket-activated on {PLUGIN_SOCKET}")
        add_output(a)
        a.set_defaults(func=fn)


