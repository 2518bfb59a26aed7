"""dataplane: VXLAN overlay with an eBPF fast path."""
