"""Reader of a pinned BPF ring buffer (BPF_MAP_TYPE_RINGBUF) by mmap, with
no bcc: the agent drains the fast path's punts with it.

Kernel layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position
(ours to write); page 1 the producer position; the data area (size bytes)
follows, mapped twice so a record never wraps. Each record starts with an
8-byte header: u32 length with BUSY (bit 31) and DISCARD (bit 30) flags,
then u32 page offset; records are 8-byte aligned."""

from __future__ import annotations

import mmap
import os
import select
import struct

from dataplane.kernel import bpfsys

BUSY = 1 << 31
DISCARD = 1 << 30
HDR = 8


class RingReader:
    def __init__(self, path: str):
        self.fd = bpfsys.obj_get(path)
        try:
            info = bpfsys.map_info(self.fd)
            if info.type != bpfsys.MAP_TYPES["ringbuf"]:
                raise ValueError(f"{path} is not a ring buffer (map type {info.type})")
            self.size = info.max_entries
            page = mmap.PAGESIZE
            self.cons = mmap.mmap(self.fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self.prod = mmap.mmap(self.fd, page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except Exception:
            os.close(self.fd)
            raise
        self.page = page
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLIN)

    def _pos(self, m: mmap.mmap, off: int = 0) -> int:
        return struct.unpack_from("<Q", m, off)[0]

    def read(self, timeout_s: float | None = None, limit: int = 256) -> list[bytes]:
        """Records available now, or after waiting up to timeout_s for one."""
        out = self._drain(limit)
        if out or timeout_s == 0:
            return out
        self.poller.poll(None if timeout_s is None else int(timeout_s * 1000))
        return self._drain(limit)

    def _drain(self, limit: int) -> list[bytes]:
        out = []
        cons = self._pos(self.cons)
        prod = self._pos(self.prod)
        mask = self.size - 1
        while cons < prod and len(out) < limit:
            at = self.page + (cons & mask)
            length, _ = struct.unpack_from("<II", self.prod, at)
            if length & BUSY:
                break                      # reserved, not yet submitted
            n = length & ~(BUSY | DISCARD)
            if not length & DISCARD:
                out.append(bytes(self.prod[at + HDR:at + HDR + n]))
            cons += (n + HDR + 7) & ~7
            struct.pack_into("<Q", self.cons, 0, cons)   # give the space back
        return out

    def close(self) -> None:
        self.cons.close()
        self.prod.close()
        os.close(self.fd)
