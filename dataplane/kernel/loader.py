"""Compile, load and pin the BPF programs (the only module that imports bcc).

Maps are pinned by the programs themselves (BPF_TABLE_PINNED), so a reload
binds to the same state; programs are pinned here so that later commands
(endpoint add) can attach them without compiling again.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys

from dataplane.core import abi
from dataplane.kernel import bpfsys
from dataplane.kernel.bundle import bundle
from dataplane.core.errors import NotPermitted, ToolchainError
from dataplane.kernel.maps import SIZE_CONSTS, check_pinned_layout, new_generations

BPFFS = "/sys/fs/bpf"
PIN_ROOT = f"{BPFFS}/dataplane"

TC_PROGRAMS = ("from_endpoint", "from_overlay", "flood_endpoint", "flood_overlay", "flood_remote_vteps", "dp_clock")
XDP_PROGRAMS = ("xdp_guard",)
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

    def __init__(self, bpf, fds: dict[str, int]):
        self._bpf = bpf
        self.fds = fds

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None


def check_map_sizes(sizes: dict) -> None:
    unknown = set(sizes) - set(SIZE_CONSTS)
    if unknown:
        raise ToolchainError(f"unknown map size constants: {sorted(unknown)} (known: {', '.join(SIZE_CONSTS)})")


def load(pin_dir: str, map_sizes: dict[str, int] | None = None, quiet: bool = False) -> Loaded:
    """Compile bpf/, bind to (or create) the pinned maps in pin_dir, load every
    program, fill the tail-call table and pin the programs (replacing old pins)."""
    sizes = dict(map_sizes or {})
    check_map_sizes(sizes)
    ensure_bpffs()
    os.makedirs(pin_dir, exist_ok=True)
    check_pinned_layout(pin_dir, sizes)
    bcc = _bcc()
    cflags = [f'-DDP_PIN_DIR="{pin_dir}"', "-Wno-unused-function", "-Wno-incompatible-pointer-types-discards-qualifiers"]
    cflags += [f"-D{k}={int(v)}" for k, v in sorted(sizes.items())]
    # Benchmarks only (bench/monitor_cost.py): e.g. -DDP_NO_MONITOR. Only -D flags are taken.
    cflags += [f for f in os.environ.get("DP_BPF_CFLAGS", "").split() if f.startswith("-DDP_")]
    if not quiet:
        print("dataplane: compiling and loading the fast path (bcc)...", file=sys.stderr, flush=True)
    try:
        b = bcc.BPF(text=bundle().encode(), cflags=cflags)
    except Exception as e:
        raise ToolchainError(f"compiling bpf/ failed: {e}") from None
    fds: dict[str, int] = {}
    try:
        for name in TC_PROGRAMS:
            fds[name] = b.load_func(name.encode(), bcc.BPF.SCHED_CLS).fd
        for name in XDP_PROGRAMS:
            fds[name] = b.load_func(name.encode(), bcc.BPF.XDP).fd
        tail = b[b"dp_tail"]
        for name, slot in TAIL_SLOTS.items():
            tail[ctypes.c_int(int(slot))] = ctypes.c_int(fds[name])
        for name, fd in fds.items():
            path = prog_pin(pin_dir, name)
            tmp = path + "_new"  # bpffs refuses names with a dot
            if os.path.exists(tmp):
                os.unlink(tmp)
            bpfsys.obj_pin(fd, tmp)
            os.replace(tmp, path)  # bpffs renames atomically: no moment without a pin
        new_generations(pin_dir)
    except Exception as e:
        b.cleanup()
        if isinstance(e, ToolchainError):
            raise
        raise ToolchainError(f"loading the fast path failed: {e}") from None
    return Loaded(b, fds)


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
