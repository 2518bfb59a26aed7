"""The bpf(2) calls the control plane needs, over ctypes: pinned objects, map
elements and object info (BPF_PROG_TEST_RUN is in the C helper, cwire.py). No bcc here, so reading maps
never needs a compiler."""

from __future__ import annotations

import ctypes
import errno
import os
from functools import lru_cache

from dataplane.core.errors import KernelError, NotFound

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
SYS_BPF = 321  # x86_64

MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 1, 2, 3, 4
OBJ_PIN, OBJ_GET, OBJ_GET_INFO_BY_FD = 6, 7, 15
MAP_LOOKUP_BATCH, MAP_UPDATE_BATCH, MAP_DELETE_BATCH = 24, 26, 27
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2

MAP_TYPES = {"hash": 1, "array": 2, "prog": 3, "percpu_hash": 5, "percpu_array": 6, "lru_hash": 9, "ringbuf": 27}


class _Attr(ctypes.Structure):
    _fields_ = [("raw", ctypes.c_uint8 * 128)]


def _call(cmd: int, attr: ctypes.Structure, what: str, ok=()) -> int:
    ret = _libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        if err in ok:
            return -err
        raise KernelError(f"{what}: {os.strerror(err)} (errno {err})", errno=err)
    return ret


class _ElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _BatchAttr(ctypes.Structure):
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64), ("keys", ctypes.c_uint64),
                ("values", ctypes.c_uint64), ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _ObjAttr(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32), ("file_flags", ctypes.c_uint32)]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


class MapInfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("name", ctypes.c_char * 16), ("pad", ctypes.c_uint8 * 64)]


def obj_get(path: str) -> int:
    p = ctypes.create_string_buffer(path.encode())
    attr = _ObjAttr(pathname=ctypes.addressof(p))
    ret = _call(OBJ_GET, attr, f"open pinned {path}", ok=(errno.ENOENT,))
    if ret < 0:
        raise NotFound(f"pinned object {path} not found (is the node up?)")
    return ret


def obj_pin(fd: int, path: str) -> None:
    p = ctypes.create_string_buffer(path.encode())
    _call(OBJ_PIN, _ObjAttr(pathname=ctypes.addressof(p), bpf_fd=fd), f"pin {path}")


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    _call(OBJ_GET_INFO_BY_FD, attr, f"info of fd {fd}")
    return info


def prog_info(fd: int) -> dict:
    """id, name, load time (CLOCK_BOOTTIME ns), and run time/count (with kernel.bpf_stats_enabled)
    of a program: fields of struct bpf_prog_info at their uapi offsets."""
    buf = (ctypes.c_uint8 * 256)()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(buf), info=ctypes.addressof(buf))
    _call(OBJ_GET_INFO_BY_FD, attr, f"info of fd {fd}")
    raw = bytes(buf)
    u32 = lambda off: int.from_bytes(raw[off:off + 4], "little")  # noqa: E731
    u64 = lambda off: int.from_bytes(raw[off:off + 8], "little")  # noqa: E731
    return {"type": u32(0), "id": u32(4), "tag": raw[8:16].hex(), "load_time_ns": u64(40),
            "name": raw[64:80].split(b"\0")[0].decode(errors="replace"), "run_time_ns": u64(192), "run_cnt": u64(200)}


def prog_map_ids(fd: int, most: int = 64) -> list[int]:
    """Ids of the maps a program uses (bpf_prog_info's nr_map_ids and map_ids)."""
    ids = (ctypes.c_uint32 * most)()
    buf = (ctypes.c_uint8 * 64)()
    ctypes.c_uint32.from_buffer(buf, 52).value = most
    ctypes.c_uint64.from_buffer(buf, 56).value = ctypes.addressof(ids)
    _call(OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=fd, info_len=64, info=ctypes.addressof(buf)), f"maps of fd {fd}")
    return list(ids[:min(int.from_bytes(bytes(buf[52:56]), "little"), most)])


@lru_cache(maxsize=1)
def possible_cpus() -> int:
    text = open("/sys/devices/system/cpu/possible").read().strip()
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def _ptr(obj) -> int:
    return ctypes.addressof(obj)


def lookup(fd: int, key, value) -> bool:
    attr = _ElemAttr(map_fd=fd, key=_ptr(key), value=_ptr(value))
    return _call(MAP_LOOKUP_ELEM, attr, f"lookup in map fd {fd}", ok=(errno.ENOENT,)) >= 0


def update(fd: int, key, value, flags: int = BPF_ANY, what: str = "map") -> None:
    attr = _ElemAttr(map_fd=fd, key=_ptr(key), value=_ptr(value), flags=flags)
    ret = _call(MAP_UPDATE_ELEM, attr, f"update {what}", ok=(errno.E2BIG, errno.ENOMEM))
    if ret < 0:
        raise MapFull(f"update {what}: map is full (raise its size with --map-size)")


class MapFull(KernelError):
    """An update found the map at max_entries."""


def update_batch(fd: int, keys, values, count: int, what: str = "map") -> None:
    """Write count elements in one call; keys and values are ctypes arrays."""
    if count == 0:
        return
    attr = _BatchAttr(keys=_ptr(keys), values=_ptr(values), count=count, map_fd=fd)
    ret = _call(MAP_UPDATE_BATCH, attr, f"batch update {what}", ok=(errno.E2BIG, errno.ENOMEM))
    if ret < 0:
        raise MapFull(f"update {what}: map is full after {attr.count} of {count} entries "
                      "(raise its size with --map-size)")


def delete_batch(fd: int, keys, count: int, what: str = "map") -> int:
    """Delete count keys, a batch call at a time: the kernel stops a batch at the first key
    already gone (an LRU map evicts exactly the old entries ageing deletes; another writer may
    have deleted one), and the batch goes on after it. How many were deleted here."""
    size = ctypes.sizeof(keys) // len(keys) if count else 0
    start, deleted = 0, 0
    while start < count:
        attr = _BatchAttr(keys=_ptr(keys) + start * size, count=count - start, map_fd=fd)
        if _call(MAP_DELETE_BATCH, attr, f"batch delete {what}", ok=(errno.ENOENT,)) >= 0:
            return deleted + count - start
        deleted += attr.count              # deleted before the missing one, which is skipped
        start += attr.count + 1
    return deleted


def _batches(fd: int, key_size: int, value_size: int, chunk: int):
    """A hash map's entries chunk by chunk with BPF_MAP_LOOKUP_BATCH, a syscall per
    chunk: (keys buffer, values buffer, how many) each time; the buffers are reused."""
    keys, vals = (ctypes.c_uint8 * (key_size * chunk))(), (ctypes.c_uint8 * (value_size * chunk))()
    cursor, out = (ctypes.c_uint8 * 8)(), (ctypes.c_uint8 * 8)()
    first = True
    while True:
        attr = _BatchAttr(in_batch=0 if first else _ptr(cursor), out_batch=_ptr(out), keys=_ptr(keys),
                          values=_ptr(vals), count=chunk, map_fd=fd)
        ret = _call(MAP_LOOKUP_BATCH, attr, f"batch lookup in map fd {fd}", ok=(errno.ENOENT,))
        yield keys, vals, attr.count
        if ret < 0:
            return
        ctypes.memmove(cursor, out, 8)
        first = False


def count(fd: int, key_size: int, value_size: int, chunk: int = 4096) -> int:
    """Entries in a hash map (metrics read this at every scrape: a syscall per chunk, not per entry)."""
    return sum(n for _, _, n in _batches(fd, key_size, value_size, chunk))


def dump_raw(fd: int, key_size: int, value_size: int, chunk: int = 4096):
    """Every (key, value) of a hash map as bytes."""
    for kb, vb in dump_chunks(fd, key_size, value_size, chunk):
        for i in range(len(kb) // key_size):
            yield kb[i * key_size:(i + 1) * key_size], vb[i * value_size:(i + 1) * value_size]


def dump_chunks(fd: int, key_size: int, value_size: int, chunk: int = 4096):
    """A hash map's entries a chunk at a time: (keys, values), each the chunk's
    entries back to back as one bytes (for columnar decoding: node/readback.py)."""
    for keys, vals, n in _batches(fd, key_size, value_size, chunk):
        if n:
            yield bytes(keys)[:n * key_size], bytes(vals)[:n * value_size]


def dump(fd: int, key_type, value_type, chunk: int = 4096):
    """dump_raw's entries as the ABI's ctypes."""
    for k, v in dump_raw(fd, ctypes.sizeof(key_type), ctypes.sizeof(value_type), chunk):
        yield key_type.from_buffer_copy(k), value_type.from_buffer_copy(v)


def delete(fd: int, key) -> bool:
    attr = _ElemAttr(map_fd=fd, key=_ptr(key))
    return _call(MAP_DELETE_ELEM, attr, f"delete in map fd {fd}", ok=(errno.ENOENT,)) >= 0


def next_key(fd: int, key, next_key_buf) -> bool:
    attr = _ElemAttr(map_fd=fd, key=_ptr(key) if key is not None else 0, value=_ptr(next_key_buf))
    return _call(MAP_GET_NEXT_KEY, attr, f"iterate map fd {fd}", ok=(errno.ENOENT,)) >= 0


# Program attachment by interface (tcx, kernel 6.6+): struct bpf_attr's query and
# attach/detach members, at their uapi offsets.
PROG_ATTACH, PROG_DETACH, PROG_GET_FD_BY_ID, PROG_QUERY = 8, 9, 13, 16
BPF_F_REPLACE = 1 << 2


class _AttachAttr(ctypes.Structure):
    _fields_ = [("target_ifindex", ctypes.c_uint32), ("attach_bpf_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("replace_bpf_fd", ctypes.c_uint32), ("relative_fd", ctypes.c_uint32),
                ("expected_revision", ctypes.c_uint64)]


class _QueryAttr(ctypes.Structure):
    _fields_ = [("target_ifindex", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("query_flags", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("prog_ids", ctypes.c_uint64), ("count", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("prog_attach_flags", ctypes.c_uint64), ("link_ids", ctypes.c_uint64),
                ("link_attach_flags", ctypes.c_uint64), ("revision", ctypes.c_uint64)]


def prog_query(ifindex: int, attach_type: int, what: str, most: int = 64) -> list[int]:
    """Ids of the programs attached at (ifindex, attach_type) in the calling thread's namespace."""
    ids = (ctypes.c_uint32 * most)()
    attr = _QueryAttr(target_ifindex=ifindex, attach_type=attach_type, prog_ids=_ptr(ids), count=most)
    _call(PROG_QUERY, attr, what)
    return list(ids[:min(attr.count, most)])


def prog_attach(ifindex: int, attach_type: int, fd: int, what: str, replace_fd: int | None = None) -> None:
    attr = _AttachAttr(target_ifindex=ifindex, attach_bpf_fd=fd, attach_type=attach_type)
    if replace_fd is not None:
        attr.attach_flags, attr.replace_bpf_fd = BPF_F_REPLACE, replace_fd
    _call(PROG_ATTACH, attr, what)


def prog_detach(ifindex: int, attach_type: int, fd: int, what: str) -> bool:
    """False when that program was not attached there (or the interface is gone)."""
    attr = _AttachAttr(target_ifindex=ifindex, attach_bpf_fd=fd, attach_type=attach_type)
    return _call(PROG_DETACH, attr, what, ok=(errno.ENOENT, errno.ENODEV)) >= 0


def prog_fd_by_id(prog_id: int) -> int | None:
    """A new fd of program prog_id (the caller closes it), None if it is gone meanwhile."""
    attr = _AttachAttr(target_ifindex=prog_id)      # prog_id is the first u32 of that member
    ret = _call(PROG_GET_FD_BY_ID, attr, f"open program id {prog_id}", ok=(errno.ENOENT,))
    return ret if ret >= 0 else None


def prog_name_by_id(prog_id: int) -> str | None:
    """The name of program prog_id (the kernel's 15 characters), None if it is gone."""
    fd = prog_fd_by_id(prog_id)
    if fd is None:
        return None
    try:
        return prog_info(fd)["name"]
    finally:
        os.close(fd)


# Creating maps and loading programs without bcc: the compiled-program cache (progcache.py)
# loads the instructions bcc produced before. struct bpf_attr's members at their uapi offsets.
MAP_CREATE, PROG_LOAD = 0, 5
OBJ_NAME_LEN = 16


class _MapCreateAttr(ctypes.Structure):
    _fields_ = [("map_type", ctypes.c_uint32), ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32), ("inner_map_fd", ctypes.c_uint32),
                ("numa_node", ctypes.c_uint32), ("map_name", ctypes.c_char * OBJ_NAME_LEN),
                ("pad", ctypes.c_uint8 * 68)]


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32), ("insns", ctypes.c_uint64),
                ("license", ctypes.c_uint64), ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
                ("prog_name", ctypes.c_char * OBJ_NAME_LEN), ("prog_ifindex", ctypes.c_uint32),
                ("expected_attach_type", ctypes.c_uint32), ("pad", ctypes.c_uint8 * 56)]


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, flags: int, name: str) -> int:
    attr = _MapCreateAttr(map_type=map_type, key_size=key_size, value_size=value_size, max_entries=max_entries,
                          map_flags=flags, map_name=name.encode()[:OBJ_NAME_LEN - 1])
    return _call(MAP_CREATE, attr, f"create map {name}")


def prog_load(prog_type: int, insns: bytes, license: str, kern_version: int, name: str) -> int:
    """fd of a new program; a verifier refusal raises KernelError with the log's last lines."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    attr = _ProgLoadAttr(prog_type=prog_type, insn_cnt=len(insns) // 8, insns=ctypes.addressof(code),
                         license=ctypes.addressof(lic), kern_version=kern_version,
                         prog_name=name.encode()[:OBJ_NAME_LEN - 1])
    first = _call(PROG_LOAD, attr, f"load program {name}", ok=(errno.EACCES, errno.EINVAL))
    if first >= 0:
        return first
    log = ctypes.create_string_buffer(1 << 20)     # again, for the verifier's reasons
    attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
    ret = _call(PROG_LOAD, attr, f"load program {name}", ok=(errno.EACCES, errno.EINVAL, errno.ENOSPC))
    if ret >= 0:
        return ret
    tail = " | ".join(log.value.decode(errors="replace").strip().splitlines()[-3:])
    raise KernelError(f"load program {name}: {os.strerror(-first)}: {tail}", errno=-first)
