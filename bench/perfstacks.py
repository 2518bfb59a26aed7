"""bench/perfstacks: the machine's call stacks while a workload runs. This
kernel has no kprobes and its guest no PMU, so `perf record -a -g` samples on
the cpu-clock timer; each sample's stack comes back leaf first, a frame as
"symbol+0xoffset" (offsets place a sample inside a BPF program's JIT image)."""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time


def stacks(fn, seconds: float) -> list[list[str]]:
    """fn() run while perf samples every CPU for seconds (started 0.5 s in): one list of
    frames per sample, the leaf first."""
    with tempfile.TemporaryDirectory() as tmp:
        data = f"{tmp}/perf.data"
        t = threading.Thread(target=fn)
        t.start()
        time.sleep(0.5)
        subprocess.run(["perf", "record", "-a", "-g", "-o", data, "--", "sleep", str(seconds)],
                       capture_output=True, check=True)
        t.join()
        script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym,symoff"], capture_output=True,
                                text=True, check=True).stdout
    out = []
    for block in script.split("\n\n"):
        frames = [ln.split(None, 1)[1] if " " in ln.strip() else "" for ln in block.strip().splitlines()]
        if frames:
            out.append(frames)
    return out


def symbol(frame: str) -> str:
    """A frame's function name, without its offset."""
    return frame.split("+", 1)[0]
