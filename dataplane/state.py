"""What a node has created, on disk, so that `down` can undo it and the CLI
can list it; one JSON file and one lock per node under /run/dataplane/<node>/."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager

RUN_ROOT = "/run/dataplane"


def node_dir(node: str) -> str:
    return os.path.join(RUN_ROOT, node)


@contextmanager
def locked(node: str):
    """Serialise commands on one node (two `endpoint add` at once must not race on slots)."""
    d = node_dir(node)
    os.makedirs(d, exist_ok=True)
    fd = os.open(os.path.join(d, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def load(node: str) -> dict | None:
    try:
        with open(os.path.join(node_dir(node), "state.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def save(node: str, state: dict) -> None:
    d = node_dir(node)
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, "state.json.new")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(d, "state.json"))


def remove(node: str) -> None:
    if not node or "/" in node:
        raise ValueError(f"bad node name {node!r}")
    shutil.rmtree(node_dir(node), ignore_errors=True)
    prune()


def prune() -> None:
    """Remove /run/dataplane once nothing is left in it."""
    try:
        os.rmdir(RUN_ROOT)
    except OSError:
        pass
