"""The compiled fast path, kept between loads: bcc's clang takes 4-6 s for bpf/ on every
`up`, reload and restore, and the instructions it makes depend only on the source, the
compile flags, bcc and the kernel. After a compile the instructions of each program are
stored with their map references as names (bcc writes map fds into them); a later load with
the same key opens or creates the pinned maps itself, writes their fds in and loads the
programs with bpf(2): the kernel's verifier checks them as it checked bcc's.

The cache is a directory of the user running us, root (DATAPLANE_BPF_CACHE, default
/var/cache/dataplane/bpf; "off" turns it off). One that another user owns or may write is not
used, nor an entry file that is not ours alone: whoever could write them could choose the code
our programs run. Anything wrong with an entry (unreadable, another format, other programs or
map layouts, refused by the verifier) means a compile (loader.py), and the entry is written again.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import hashlib
import json
import os
import stat
import time

from dataplane.core.errors import KernelError
from dataplane.core.notice import notice
from dataplane.kernel import bpfsys
from dataplane.kernel.maps import SPECS

FORMAT = 1
DEFAULT_DIR = "/var/cache/dataplane/bpf"
ENV = "DATAPLANE_BPF_CACHE"
KEEP = 8
_LD_IMM64 = 0x18                     # BPF_LD | BPF_IMM | BPF_DW: two instruction slots
_PSEUDO_MAP_FD = 1


class Uncacheable(Exception):
    """The compiled code holds something the cache cannot name again (a reference it does not know)."""


def directory() -> str | None:
    d = os.environ.get(ENV, DEFAULT_DIR)
    return None if d in ("", "off") else d


def key(source: bytes, cflags: list[str], toolchain: str, programs: dict[str, int]) -> str:
    """What the instructions depend on: the source, the flags, bcc's version (each bcc package is
    built against one clang), the kernel (release and build), and which functions are loaded as
    which program type."""
    h = hashlib.sha256()
    u = os.uname()
    for part in (str(FORMAT).encode(), source, "\0".join(cflags).encode(), toolchain.encode(),
                 f"{u.release} {u.version}".encode(), json.dumps(sorted(programs.items())).encode()):
        h.update(len(part).to_bytes(8, "little") + part)
    return h.hexdigest()


def _open_dir(d: str, warn: bool = True) -> int | None:
    """An fd of the cache directory if it is one (not a link) of ours (root's) that no one
    else may write; entries are then opened relative to it, so it cannot be swapped after the check."""
    try:
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    st = os.fstat(dfd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        os.close(dfd)
        if warn:
            notice(f"not using the compiled-program cache {d}: it must be root's, and no one else may write it")
        return None
    return dfd


def read(k: str) -> dict | None:
    d = directory()
    dfd = _open_dir(d) if d else None
    if dfd is None:
        return None
    try:
        with os.fdopen(os.open(f"{k}.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)) as f:
            st = os.fstat(f.fileno())
            # Ours alone too: a file left from a time the directory was open to others is not.
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022 or st.st_nlink != 1:
                notice(f"not using {d}/{k}.json: it must be a file of root's alone (no other owner, writer or name)")
                return None
            entry = json.load(f)
            try:
                os.utime(f.fileno())              # used: the last one _prune removes
            except OSError:
                pass
    except (OSError, ValueError):
        return None
    finally:
        os.close(dfd)
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("key") != k:
        return None
    return entry


def write(k: str, entry: dict) -> None:
    d = directory()
    if d is None:
        return
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
    except OSError as e:         # a cache that cannot be written only costs the next compile
        notice(f"cannot write the compiled-program cache in {d}: {e}")
        return
    dfd = _open_dir(d)
    if dfd is None:
        return
    tmp = f".new-{os.urandom(8).hex()}-{k}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
        with os.fdopen(fd, "w") as f:
            json.dump({**entry, "format": FORMAT, "key": k}, f)
        os.replace(tmp, f"{k}.json", src_dir_fd=dfd, dst_dir_fd=dfd)
        _prune(dfd)
    except OSError as e:
        notice(f"cannot write the compiled-program cache in {d}: {e}")
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
    finally:
        os.close(dfd)


def _prune(dfd: int) -> None:
    """Keep the KEEP entries used or written last (each version, map size or flag set is one),
    and no temporary file an interrupted write left an hour ago."""
    entries, stale = [], []
    for name in os.listdir(dfd):
        try:
            mtime = os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mtime
        except OSError:
            continue
        if name.endswith(".json"):
            entries.append((mtime, name))
        elif name.startswith(".new-") and mtime < time.time() - 3600:
            stale.append(name)
    for name in [n for _, n in sorted(entries, reverse=True)[KEEP:]] + stale:
        try:
            os.unlink(name, dir_fd=dfd)
        except OSError:
            pass


def forget(k: str) -> None:
    """Remove an entry that failed to load (best effort)."""
    d = directory()
    dfd = _open_dir(d, warn=False) if d else None
    if dfd is None:
        return
    try:
        os.unlink(f"{k}.json", dir_fd=dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def relocations(insns: bytes, fd_names: dict[int, str]) -> list[tuple[int, str]]:
    """(instruction index, map name) of every map fd bcc wrote into insns; Uncacheable for any
    other 64-bit load of a pseudo value (map values, BTF ids, functions): nothing else here needs one."""
    out = []
    i, n = 0, len(insns) // 8
    while i < n:
        code, regs = insns[8 * i], insns[8 * i + 1]
        if code == _LD_IMM64:
            src = regs >> 4
            if src == _PSEUDO_MAP_FD:
                fd = int.from_bytes(insns[8 * i + 4:8 * i + 8], "little", signed=True)
                if fd not in fd_names:
                    raise Uncacheable(f"instruction {i} loads fd {fd}, which is none of our maps")
                out.append((i, fd_names[fd]))
            elif src:
                raise Uncacheable(f"instruction {i} loads a pseudo value of kind {src}")
            i += 2
        else:
            i += 1
    return out


def _with_fds(insns: bytes, relocs: list[tuple[int, str]], fds: dict[str, int]) -> bytes:
    out = bytearray(insns)
    for i, name in relocs:
        out[8 * i + 4:8 * i + 8] = fds[name].to_bytes(4, "little", signed=True)
    return bytes(out)


def capture(progs: dict[str, tuple[int, bytes, str]], map_fds: dict[str, int], license: str,
            kern_version: int) -> dict:
    """The entry for programs bcc loaded: name -> (program type, instructions, kernel name);
    map_fds: every map of SPECS as bcc opened it."""
    fd_names = {fd: name for name, fd in map_fds.items()}
    maps = {}
    for name, fd in map_fds.items():
        info = bpfsys.map_info(fd)
        if info.map_flags:        # materialize creates maps with none (bpf/ sets none today)
            raise Uncacheable(f"map {name} has flags {info.map_flags:#x}")
        maps[name] = [info.type, info.key_size, info.value_size, info.max_entries, info.map_flags]
    out = {}
    for name, (ptype, insns, kname) in progs.items():
        relocs = relocations(insns, fd_names)
        out[name] = {"type": ptype, "kname": kname, "relocs": relocs,
                     "insns": base64.b64encode(_with_fds(insns, relocs, dict.fromkeys(map_fds, 0))).decode()}
    return {"license": license, "kern_version": kern_version, "maps": maps, "progs": out}


def _open_map(pin_dir: str, name: str, spec: list[int]) -> int:
    """The pinned map, or a new one pinned there (as BPF_TABLE_PINNED does); its layout checked."""
    path = os.path.join(pin_dir, name)
    if not os.path.exists(path):
        fd = bpfsys.map_create(*spec, name)
        try:
            bpfsys.obj_pin(fd, path)
            return fd
        except KernelError as e:               # another load pinned one meanwhile: use that
            os.close(fd)
            if e.errno != errno.EEXIST:
                raise
    fd = bpfsys.obj_get(path)
    try:
        info = bpfsys.map_info(fd)
        if [info.type, info.key_size, info.value_size, info.max_entries] != spec[:4]:
            raise Uncacheable(f"pinned map {path} does not have the cached layout")
    except BaseException:
        os.close(fd)
        raise
    return fd


def materialize(entry: dict, pin_dir: str, programs: dict[str, int], sizes: dict[str, int]):
    """(program fds, map fds) of a cached entry loaded into the kernel with pin_dir's maps.
    programs: name -> program type, as the caller loads them; sizes: the DP_MAP_* overrides.
    Nothing is created unless the entry has exactly these programs and this version's map
    layouts. On failure every fd opened is closed and the exception goes to the caller."""
    if {n: p["type"] for n, p in entry["progs"].items()} != programs:
        raise Uncacheable("the cached entry has other programs than this version loads")
    for name, spec in SPECS.items():
        # bpf/ sets no map flags: a map the entry would create with some stays until `down`.
        if list(entry["maps"].get(name, ())) != [*spec.layout(sizes), 0]:
            raise Uncacheable(f"the cached entry gives {name} another layout than this version's")
    maps: dict[str, int] = {}
    progs: dict[str, int] = {}
    try:
        for name in SPECS:
            maps[name] = _open_map(pin_dir, name, entry["maps"][name])
        for name, p in entry["progs"].items():
            insns = _with_fds(base64.b64decode(p["insns"]), [tuple(r) for r in p["relocs"]], maps)
            progs[name] = bpfsys.prog_load(p["type"], insns, entry["license"], entry["kern_version"], p["kname"])
    except BaseException:
        for fd in (*progs.values(), *maps.values()):
            os.close(fd)
        raise
    return progs, maps


def bcc_program(lib, module, name: str) -> bytes:
    """The instructions bcc compiled for one function (map fds written in)."""
    start = lib.bpf_function_start(module, name.encode())
    return ctypes.string_at(start, lib.bpf_function_size(module, name.encode()))
