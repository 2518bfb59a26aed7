"""One VTEP ("node"): up/down (vtep), the VNIs it serves (networks), its
endpoints, static peers, next hops, MAC/neighbour entries (fdb) and the
read-outs. Each module is the only writer of the maps its docstring names."""

from dataplane.node.base import HOST_NODE, Node, require_root

__all__ = ["HOST_NODE", "Node", "require_root"]
