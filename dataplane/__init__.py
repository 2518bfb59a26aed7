"""dataplane: VXLAN overlay with an eBPF fast path."""

from dataplane.core.version import VERSION as __version__  # noqa: F401
