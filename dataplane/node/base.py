"""Where a node lives: its name, namespace and pin directory, its state and maps.

A node is one VTEP: the host network namespace this process runs in, or a
named one (the lab's simulated hosts). Its maps are pinned under
/sys/fs/bpf/dataplane/<node>/; what it created is in its state (core/state.py).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from dataplane.core import model, state
from dataplane.core.errors import Conflict, NotFound, NotPermitted, UsageError
from dataplane.core.state import NodeState
from dataplane.kernel import loader
from dataplane.kernel.maps import NodeMaps

HOST_NODE = "host"


def node_netns(netns: str) -> str:
    """A namespace a node may be brought up in (the node takes its name): a valid name, and not the
    host node's, whose pins, state, agent socket and systemd unit it would share. The CLI asks
    this of every command but `down`, which removes a node an older version let in."""
    model.parse_name(netns, "namespace")
    if netns == HOST_NODE:
        raise UsageError(f"a namespace named {HOST_NODE!r} cannot be a node: that is the name of the host's own "
                         f"node (no --netns); rename the namespace (a node an older version brought up there: "
                         f"`dataplane --netns {HOST_NODE} down` first)")
    return netns


def require_root() -> None:
    if os.geteuid() != 0:
        raise NotPermitted("dataplane needs root (BPF, tc and network namespaces)")


class Node:
    def __init__(self, netns: str | None = None, name: str | None = None):
        if netns is not None:
            model.parse_name(netns, "namespace")
        self.netns = netns
        self.name = name or netns or HOST_NODE
        self.pin_dir = os.path.join(loader.PIN_ROOT, self.name)

    def state(self) -> NodeState | None:
        return self._mine(state.load(self.name))

    def _mine(self, st: NodeState | None) -> NodeState | None:
        """st, if it is this node's: the host node and a namespace named "host" (an older version let
        one be brought up) share a name, and acting on the other's state would remove interfaces
        and programs of the wrong namespace."""
        if st is not None and st.netns != self.netns:
            where = f"namespace {st.netns!r}" if st.netns else "the host's own namespace"
            raise Conflict(f"node {self.name}'s state is of {where}: `dataplane "
                           f"{'--netns ' + st.netns + ' ' if st.netns else ''}down` removes it")
        return st

    def require_up(self, shared: bool = False) -> NodeState:
        """The node's state (NotFound if it is not up). shared: to read only (state.load_shared:
        one parse per version of the file, the same object for every such caller); else a
        private copy."""
        st = self._mine(state.load_shared(self.name)) if shared else self.state()
        if not st:
            where = f" in namespace {self.netns}" if self.netns else ""
            raise NotFound(f"dataplane is not up{where}: run `dataplane up --vni N` first")
        return st

    def maps(self) -> NodeMaps:
        return NodeMaps(self.pin_dir)

    @contextmanager
    def changing(self):
        """(state, maps) under the node's lock; the state is saved if the block succeeds."""
        with state.locked(self.name):
            st = self.require_up()
            with self.maps() as m:
                yield st, m
            state.save(st)
