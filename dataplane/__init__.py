"""dataplane: VXLAN overlay with an eBPF fast path."""

__version__ = "0.2.0"
