"""The kernel: netlink (links, tc, namespaces, the raw GSO attributes), bpf syscalls, pinned
maps, the ring buffer, and the loader (the only module that imports bcc)."""
