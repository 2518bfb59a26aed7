"""Start, find and stop a node's agent process (`dataplane up` and `down` use it).

The agent runs as `dataplane [--netns NS] agent ...` in its own session, with
its log in the node's run directory, so it outlives the command that
started it and a restart never touches the programs or maps.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

from dataplane.agent import client
from dataplane.core import procs, state
from dataplane.core.errors import Conflict, DataplaneError, KernelError, NotFound
from dataplane.core.notice import notice
from dataplane.registry.kv import Refused

READY_TIMEOUT_S = 60.0


def agent_file(node: str) -> str:
    """The running agent's pid, host name, registry and lease."""
    return os.path.join(state.node_dir(node), "agent.json")


def log_path(node: str) -> str:
    return os.path.join(state.node_dir(node), "agent.log")


def running_pid(node: str) -> int | None:
    try:
        with open(agent_file(node)) as f:
            pid = int(json.load(f)["pid"])
    except (OSError, ValueError, KeyError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
    except OSError:
        return None
    # Any dataplane `agent run` for this node: `up` starts `python -m dataplane.cli`, a systemd unit
    # the console script (.../bin/dataplane) or `python -m dataplane`. Only the first was taken for
    # an agent: `down` then never stopped a unit's agent, and `up` started a second one.
    ns = cmd[cmd.index(b"--netns") + 1] if b"--netns" in cmd[:-1] else None
    ns = next((a[len(b"--netns="):] for a in cmd if a.startswith(b"--netns=")), ns)     # as argparse takes it too
    # "host": the host node's agent, or that of a node an older version let into a namespace named
    # "host" (the two share the agent file; node.base refuses a second one), which `down` must stop.
    ours = ns in ((None, b"host") if node == "host" else (node.encode(),))
    return pid if ours and b"agent" in cmd and b"run" in cmd and b"dataplane" in b" ".join(cmd) else None


# How to restart a node's agent, for the messages that ask for it.
RESTART = "(`systemctl restart dataplane`; without systemd, stop its pid and run `dataplane up` again)"

UNIT_DIR = "/etc/systemd/system"          # where `dataplane service install` writes by default
ENABLE_DIRS = (UNIT_DIR, "/run/systemd/system")      # where `systemctl enable [--runtime]` links


def enabled(names, unit_dir: str = UNIT_DIR) -> list[str]:
    """Those of the unit names that `systemctl enable` linked (a *.wants link in unit_dir or
    ENABLE_DIRS, wherever the unit file is)."""
    dirs = dict.fromkeys([unit_dir, *ENABLE_DIRS])
    return sorted({n for n in names for d in dirs if glob.glob(os.path.join(glob.escape(d), "*.wants", n))})


def installed_unit_mismatch(node: str, registry: bool, unit_dir: str = UNIT_DIR) -> str | None:
    """What is wrong with the node's installed unit for a node with (or without) a registry, if
    anything: the kind of unit is chosen at install time, and a node given a registry since kept
    a unit that starts no agent at boot (or the reverse, one whose agent falls back to the
    default registry)."""
    try:
        with open(f"{unit_dir}/{unit_name(node)}") as f:
            runs_agent = "agent run" in f.read()
    except OSError:
        return None
    if runs_agent == registry:
        return None
    return (f"the installed {unit_name(node)} is for a node {'without' if registry else 'with'} a registry: "
            f"at boot it would {'start no agent' if registry else 'start an agent'}; run `dataplane service "
            f"install` again")


def unit_name(node: str) -> str:
    """The systemd unit `dataplane service install` writes for the node's agent."""
    return "dataplane.service" if node == "host" else f"dataplane-{node}.service"


def supervisor(node: str, pid: int) -> str | None:
    """The node's unit (unit_name) if process pid runs in its cgroup (v1's name=systemd or v2's
    line alike), else None."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            units = {line.rstrip().rsplit("/", 1)[-1] for line in f}
    except OSError:
        return None
    return unit_name(node) if unit_name(node) in units else None


def spawn(node: str, netns: str | None, registry: str, host_name: str, lease_ttl: int,
          quiet: bool = False) -> int:
    """Start the agent unless it runs; wait until it has synced once. Returns its pid."""
    pid = running_pid(node)
    if pid:
        return pid
    argv = [sys.executable, "-m", "dataplane.cli"] + (["--netns", netns] if netns else [])
    argv += ["agent", "run", "--registry", registry, "--host-name", host_name, "--lease-ttl", str(lease_ttl)]
    os.makedirs(state.node_dir(node), exist_ok=True)
    with open(log_path(node), "ab") as log:
        # Not a supervisor's child: a unit's NOTIFY_SOCKET (`up` run from one) is not its to write to.
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd="/", env=env)
    notice(f"agent for {node} started (pid {proc.pid}); waiting for its first sync...", quiet)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = {Conflict.exit_code: Conflict, Refused.exit_code: Refused}.get(proc.returncode)
            if said:                                # refused to start, or refused by etcd: say why, as it did
                raise said(_tail(node).removeprefix("dataplane: error: "))
            raise KernelError(f"the agent exited with status {proc.returncode}: {_tail(node)}")
        try:
            if client.call(node, "ping", timeout=2)["synced"]:
                return proc.pid
        except (NotFound, DataplaneError, OSError, ValueError):
            pass
        time.sleep(0.05)
    stop(node)
    raise KernelError(f"the agent did not sync within {READY_TIMEOUT_S:.0f} s: {_tail(node)}")


def log_tail(node: str) -> str:
    """The agent log's last line."""
    return _tail(node)


def _tail(node: str) -> str:
    try:
        with open(log_path(node)) as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1] if lines else "(no log)"
    except OSError:
        return "(no log)"


def stop(node: str, leave: bool = False, timeout: float = 10.0) -> bool:
    """Stop the agent; with leave, it first removes this host from the registry.
    False if none was running."""
    pid = running_pid(node)
    if not pid:
        return False
    left = False
    if leave:
        try:
            client.call(node, "leave", timeout=5)
            left = True     # it exits by itself once it has left the registry
        except (DataplaneError, OSError, ValueError):
            pass
    procs.terminate(pid, timeout, first=None if left else signal.SIGTERM)
    return True
