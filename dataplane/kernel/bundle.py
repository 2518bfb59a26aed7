"""Joins the BPF sources into the single text bcc compiles.

bcc rewrites map method calls (``m.lookup(&k)``) only in functions written in
its main file; in an ``#include``d header they compile to an indirect call the
verifier rejects. So our own quoted includes are inlined here, each file once,
while system ``<...>`` includes are left to the compiler.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# DATAPLANE_BPF_DIR: build from another copy of bpf/ (an upgrade test, a patched build).
BPF_DIR = Path(os.environ.get("DATAPLANE_BPF_DIR") or Path(__file__).resolve().parent.parent / "bpf")
PROGRAM_FILES = ("from_endpoint.c", "from_overlay.c", "flood.c", "xdp_guard.c", "clock.c")

_QUOTED_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


def _inline(path: Path, seen: set[Path], out: list[str]) -> None:
    path = path.resolve()
    if path in seen:
        return
    seen.add(path)
    out.append(f'#line 1 "{path.name}"\n')
    for lineno, line in enumerate(path.read_text().splitlines(keepends=True), 1):
        m = _QUOTED_INCLUDE.match(line)
        if not m:
            out.append(line)
            continue
        target = _find(m.group(1), path.parent)
        _inline(target, seen, out)
        out.append(f'#line {lineno + 1} "{path.name}"\n')


def _find(name: str, here: Path) -> Path:
    for base in (here, BPF_DIR):
        cand = base / name
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"bpf include not found: {name}")


def bundle(files: tuple[str, ...] = PROGRAM_FILES, bpf_dir: Path = BPF_DIR) -> str:
    """Return one C text holding every program file and the headers it uses."""
    seen: set[Path] = set()
    out: list[str] = []
    for name in files:
        _inline(bpf_dir / name, seen, out)
    return "".join(out)
