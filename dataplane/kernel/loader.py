"""Compile, load and pin the BPF programs (the only module that imports bcc).

Maps are pinned where the programs name them (BPF_TABLE_PINNED; progcache opens or
creates the same pins when it loads what bcc compiled before), so a reload binds to the
same state; programs are pinned here so that later commands (endpoint add) can attach
them without loading again.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess

from dataplane.core import abi
from dataplane.kernel import bpfsys
from dataplane.kernel.bundle import bundle
from dataplane.core.errors import KernelError, NotPermitted, ToolchainError, UsageError
from dataplane.core.notice import notice
from dataplane.kernel import progcache
from dataplane.kernel.maps import RETIRED, SIZE_CONSTS, SPECS, check_pinned_layout, new_generations, unpin

BPFFS = "/sys/fs/bpf"
PIN_ROOT = f"{BPFFS}/dataplane"

TC_PROGRAMS = ("from_endpoint", "from_overlay", "gro_sink", "flood_endpoint", "flood_overlay", "flood_remote_vteps",
               "dp_clock")
XDP_PROGRAMS = ("xdp_guard",)
SCHED_CLS, XDP = 3, 6      # BPF_PROG_TYPE_*
PROG_TYPES = {**dict.fromkeys(TC_PROGRAMS, SCHED_CLS), **dict.fromkeys(XDP_PROGRAMS, XDP)}
_TAIL = abi.load().enums["dp_tail"]
TAIL_SLOTS = {"flood_endpoint": _TAIL.DP_TAIL_FLOOD_ENDPOINT, "flood_overlay": _TAIL.DP_TAIL_FLOOD_OVERLAY,
              "flood_remote_vteps": _TAIL.DP_TAIL_FLOOD_REMOTE}


def prog_pin(pin_dir: str, name: str) -> str:
    return os.path.join(pin_dir, f"prog_{name}")


def ensure_bpffs() -> None:
    if os.path.ismount(BPFFS):
        return
    if os.geteuid() != 0:
        raise NotPermitted("bpffs is not mounted on /sys/fs/bpf and only root can mount it")
    r = subprocess.run(["mount", "-t", "bpf", "bpf", BPFFS], capture_output=True, text=True)
    if r.returncode:
        raise ToolchainError(f"cannot mount bpffs on {BPFFS}: {r.stderr.strip()}")


def _bcc():
    try:
        import bcc  # noqa: PLC0415 - imported late so listing commands work without it
    except ImportError:
        raise ToolchainError("bcc is not importable: run scripts/bootstrap.sh (installs python3-bpfcc)") from None
    return bcc


class Loaded:
    """Program fds of one load; keep it alive until they are attached and pinned."""

    def __init__(self, bpf, fds: dict[str, int], map_fds: tuple[int, ...] = ()):
        self._bpf = bpf            # bcc's module (a compile), or None (loaded from progcache)
        self.fds = fds
        self._map_fds = map_fds

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
        else:
            for fd in (*self.fds.values(), *self._map_fds):
                os.close(fd)
        self.fds, self._map_fds = {}, ()


MAX_MAP_ENTRIES = (1 << 32) - 1     # max_entries is a u32: no bound of ours (a node saved with more must restore)
POWER_OF_TWO = ("DP_MAP_NH_CACHE", "DP_MAP_LOCAL_COPIES")     # slot = hash & (N - 1): bpf/lib/maps.h asserts it


def check_map_sizes(sizes: dict) -> None:
    """`up --map-size`'s, before anything is made: an unknown name was a toolchain error (exit 6)
    and a size of 0 or below failed only in bcc's compile, after the node's sysctls were set."""
    unknown = set(sizes) - set(SIZE_CONSTS)
    if unknown:
        raise UsageError(f"unknown map size constants: {sorted(unknown)} (known: {', '.join(SIZE_CONSTS)})")
    for name, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_MAP_ENTRIES:
            raise UsageError(f"--map-size {name}={n}: 1 to {MAX_MAP_ENTRIES} entries")
        if name in POWER_OF_TWO and n & (n - 1):
            raise UsageError(f"--map-size {name}={n}: must be a power of two")


def _cflags(sizes: dict[str, int]) -> list[str]:
    """The compile flags but the pin directory's (-DDP_PIN_DIR, added at the compile)."""
    cflags = ["-Wno-unused-function", "-Wno-incompatible-pointer-types-discards-qualifiers"]
    cflags += [f"-D{k}={int(v)}" for k, v in sorted(sizes.items())]
    # Benchmarks only (bench/monitor_cost.py): e.g. -DDP_NO_MONITOR. Only -D flags are taken.
    cflags += [f for f in os.environ.get("DP_BPF_CFLAGS", "").split() if f.startswith("-DDP_")]
    return cflags


def cache_key(source: bytes, cflags: list[str], bcc_version: str) -> str:
    """progcache's key of this load. cflags leave out the pin directory: it is only where maps
    are opened, not part of what the code is, so every node of a machine shares one entry."""
    return progcache.key(source, cflags, f"bcc {bcc_version}", PROG_TYPES)


def load(pin_dir: str, map_sizes: dict[str, int] | None = None, quiet: bool = False) -> Loaded:
    """Compile bpf/ (or take the programs compiled earlier from progcache), bind to (or
    create) the pinned maps in pin_dir, load every program, fill the tail-call table and
    pin the programs (replacing old pins)."""
    sizes = dict(map_sizes or {})
    check_map_sizes(sizes)
    ensure_bpffs()
    os.makedirs(pin_dir, exist_ok=True)
    remade = check_pinned_layout(pin_dir, sizes)
    bcc = _bcc()
    if remade:              # as late as the load allows: bcc binds to the pins when it compiles
        unpin(pin_dir, remade)
        notice(f"made anew in this version's layout (settings, caches and meter state only): "
               f"{', '.join(remade)}", quiet)
    retired = [n for n in RETIRED if os.path.exists(os.path.join(pin_dir, n))]
    if retired:             # nothing of this version reads them; programs still attached hold their own fd
        unpin(pin_dir, retired)
        notice(f"removed pins of maps no longer used: {', '.join(retired)}", quiet)
    cflags = _cflags(sizes)
    source = bundle().encode()          # read once: the key and the compile are of the same text
    key = cache_key(source, cflags, getattr(bcc, "__version__", "?"))
    entry = progcache.read(key)
    if entry is not None:
        try:
            progs, maps = progcache.materialize(entry, pin_dir, PROG_TYPES, sizes)
        except (progcache.Uncacheable, KernelError, KeyError, TypeError, ValueError, AttributeError) as e:
            # What is wrong with an entry costs a compile, said even when quiet (an entry that
            # keeps failing would otherwise cost one at every load unnoticed), and it goes.
            if isinstance(e, KernelError) and e.errno in (errno.EPERM, errno.ENOMEM):
                raise                    # not the entry's fault: a compile would meet it too
            notice(f"the fast path compiled earlier did not load ({e}); compiling it again")
            progcache.forget(key)
        else:
            notice("loading the fast path (compiled earlier)...", quiet)
            return _install(pin_dir, Loaded(None, progs, tuple(maps.values())))
    notice("compiling and loading the fast path (bcc)...", quiet)
    try:
        b = bcc.BPF(text=source, cflags=[f'-DDP_PIN_DIR="{pin_dir}"', *cflags])
    except Exception as e:
        raise ToolchainError(f"compiling bpf/ failed: {e}") from None
    fds: dict[str, int] = {}
    try:
        for name, ptype in PROG_TYPES.items():
            fds[name] = b.load_func(name.encode(), ptype).fd
    except Exception as e:
        b.cleanup()
        raise ToolchainError(f"loading the fast path failed: {e}") from None
    loaded = Loaded(b, fds)
    try:
        _keep(key, b, fds)
    except Exception as e:        # best effort: a failure costs the next compile, not this load
        notice(f"the compiled fast path is not cached: {e}")
    return _install(pin_dir, loaded)


def _keep(key: str, b, fds: dict[str, int]) -> None:
    """Store what bcc compiled in progcache."""
    if progcache.directory() is None:
        return
    from bcc.libbcc import lib  # noqa: PLC0415 - bcc is importable: it just compiled
    progs = {n: (PROG_TYPES[n], progcache.bcc_program(lib, b.module, n), bpfsys.prog_info(fd)["name"])
             for n, fd in fds.items()}
    map_fds = {n: lib.bpf_table_fd(b.module, n.encode()) for n in SPECS}
    if min(map_fds.values()) < 0:
        raise progcache.Uncacheable("bcc has not every map of SPECS")
    entry = progcache.capture(progs, map_fds, lib.bpf_module_license(b.module).decode(),
                              lib.bpf_module_kern_version(b.module))
    progcache.write(key, entry)


def _install(pin_dir: str, loaded: Loaded) -> Loaded:
    """Fill the tail-call table and pin the programs (atomically replacing the old pins)."""
    fds = loaded.fds
    try:
        tail = bpfsys.obj_get(os.path.join(pin_dir, "dp_tail"))
        try:
            for name, slot in TAIL_SLOTS.items():
                bpfsys.update(tail, ctypes.c_uint32(int(slot)), ctypes.c_uint32(fds[name]), what="dp_tail")
        finally:
            os.close(tail)
        for name, fd in fds.items():
            path = prog_pin(pin_dir, name)
            tmp = path + "_new"  # bpffs refuses names with a dot
            if os.path.exists(tmp):
                os.unlink(tmp)
            bpfsys.obj_pin(fd, tmp)
            os.replace(tmp, path)  # bpffs renames atomically: no moment without a pin
        new_generations(pin_dir)
    except Exception as e:
        loaded.close()
        if isinstance(e, ToolchainError):
            raise
        raise ToolchainError(f"loading the fast path failed: {e}") from None
    return loaded


def open_prog(pin_dir: str, name: str) -> int:
    """fd of a pinned program; the caller closes it."""
    return bpfsys.obj_get(prog_pin(pin_dir, name))


def remove_pins(pin_dir: str) -> None:
    """Remove a node's pinned programs and maps (and the root once empty)."""
    shutil.rmtree(pin_dir, ignore_errors=True)
    try:
        os.rmdir(PIN_ROOT)
    except OSError:
        pass
