"""The systemd units `dataplane service install` writes (cli/service_cmds.py), and whether
those installed are what this version writes (agent/control.py says so at `up --restore`,
at boot in the journal: units an older version installed kept, say, Requires= and PartOf= on
the Docker driver, which took its socket down for good at a `systemctl stop dataplane`, and
lacked ConditionPathExists=, until the operator happened to run `service install` again)."""

from __future__ import annotations

import os
import re
import sys

from dataplane.agent import process
from dataplane.core import state

PLUGIN_SOCKET = "/run/docker/plugins/dataplane.sock"


def command() -> str:
    """How a unit starts us: the installed console script, else this interpreter."""
    script = os.path.join(os.path.dirname(sys.executable), "dataplane")
    return script if os.access(script, os.X_OK) else f"{sys.executable} -m dataplane"


def units(netns: str | None = None, docker: bool = False, registry: bool = True) -> dict[str, str]:
    """File name -> contents. A node in a namespace (--netns) gets its own unit names.
    registry=False: the node runs no agent; its unit brings it back at boot and exits."""
    dp = command() + (f" --netns {netns}" if netns else "")
    suffix = f"-{netns}" if netns else ""
    node_unit = process.unit_name(netns or "host")      # as `down` and ExecStartPre look for it
    head = f"""[Unit]
Description=dataplane VXLAN overlay: node{' ' + netns if netns else ''}{' and its agent' if registry else ''}
Documentation=https://example.invalid/dataplane/docs/DESIGN.md
Wants=network-online.target
After=network-online.target
# A node taken down (`dataplane down`) is skipped: it restarted every second for good, at every boot.
ConditionPathExists={os.path.join(state.lib_dir(netns or "host"), "node.json")}
# Never given up on: at boot the underlay may get its address late (DHCP, allow-hotplug, which
# network-online.target does not wait for), and systemd's default (5 starts in 10 s) left the node
# failed for good. `up --restore` itself waits a while for it; an agent that keeps dying waits
# longer before each start (agent/restarts.py).
StartLimitIntervalSec=0

[Service]
"""
    if not registry:
        return {node_unit: head + f"""Type=oneshot
RemainAfterExit=yes
# No registry, so no agent: programs, maps and peers are restored, then the kernel forwards.
ExecStart={dp} up --restore --no-agent
Restart=on-failure
RestartSec=5
TimeoutStartSec=120

[Install]
WantedBy=multi-user.target
"""}
    out = {node_unit: head + f"""Type=notify
NotifyAccess=main
# Programs, maps and sandboxes outlive the agent: only the agent restarts.
ExecStartPre={dp} up --restore --no-agent
ExecStart={dp} agent run
Restart=always
RestartSec=1
KillMode=process
TimeoutStartSec=120
# The main loop pings it (WATCHDOG=1) every minute: a stuck agent is killed and restarted.
WatchdogSec=120

[Install]
WantedBy=multi-user.target
"""}
    if docker:
        out[f"dataplane{suffix}-docker.socket"] = f"""[Unit]
Description=dataplane Docker network driver socket

[Socket]
ListenStream={PLUGIN_SOCKET}
SocketMode=0600

[Install]
WantedBy=sockets.target
"""
        out[f"dataplane{suffix}-docker.service"] = f"""[Unit]
Description=dataplane Docker network driver
# Wants, not Requires: `systemctl stop` or a restart of the node's unit (its agent) stopped the
# driver and, through the socket's PartOf, the socket, which a start did not bring back: Docker
# said "plugin not found" until a reboot. The driver waits out an agent that is away.
Wants={node_unit}
Requires=dataplane{suffix}-docker.socket
After={node_unit} dataplane{suffix}-docker.socket
# At shutdown Docker stops first, its containers' DeleteEndpoint calls answered while it does.
Before=docker.service
StartLimitIntervalSec=0

[Service]
ExecStart={dp} docker-plugin
Restart=always
RestartSec=1
"""
    return out


# An Exec line's command (the console script's path, or an interpreter's `-m dataplane`) is
# where this copy is installed, not what the unit does: left out of the comparison.
_EXEC = re.compile(r"^(Exec\w*=).*?((?: --netns \S+)? (?:up|agent|docker-plugin)(?: .*)?)$")


def _what_it_does(text: str) -> list[str]:
    return [_EXEC.sub(r"\1\2", line) for line in text.splitlines()]


def stale(node: str, registry: bool, unit_dir: str = process.UNIT_DIR) -> list[str]:
    """The node's installed units (its own, and its Docker driver's where installed) whose text
    differs from what this version writes for a node with (or without) a registry, but for
    where the command is installed."""
    netns = None if node == "host" else node
    out = []
    for name, text in units(netns, docker=True, registry=registry).items():
        try:
            with open(os.path.join(unit_dir, name), encoding="utf-8") as f:
                have = f.read()
        except (OSError, ValueError):    # (not text: not ours to compare, as one not there)
            continue
        if _what_it_does(have) != _what_it_does(text):
            out.append(name)
    return out


def docker_names(node: str) -> set[str]:
    """The node's Docker driver units' names (a socket and a service)."""
    netns = None if node == "host" else node
    return set(units(netns, docker=True)) - set(units(netns))
