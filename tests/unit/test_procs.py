"""procs.terminate on a process that is not our child: it is gone once it has
exited, even while its parent has not reaped it yet (a zombie)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from dataplane.core import procs

# A parent that starts a sleeper, prints its pid and never reaps it.
_PARENT = """
import subprocess, sys, time
p = subprocess.Popen(["sleep", "300"])
print(p.pid, flush=True)
time.sleep(300)
"""


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _grandchild():
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True)
    return parent, int(parent.stdout.readline())


def test_an_unreaped_grandchild_counts_as_gone_once_it_has_exited():
    parent, pid = _grandchild()
    try:
        assert not procs._reap(pid)         # running, not our child
        os.kill(pid, signal.SIGKILL)
        for _ in range(200):
            if _state(pid) == "Z":
                break
            time.sleep(0.01)
        assert _state(pid) == "Z"           # its parent has not reaped it
        assert procs._reap(pid)
    finally:
        parent.kill()
        parent.wait()


def test_terminate_does_not_wait_out_the_grace_period_on_a_zombie():
    parent, pid = _grandchild()
    try:
        t0 = time.monotonic()
        procs.terminate(pid, timeout=60)
        waited = time.monotonic() - t0
        assert _state(pid) == "Z"
        assert waited < 30, f"waited {waited:.1f} s for a process that exited at once"
    finally:
        parent.kill()
        parent.wait()


def test_a_live_process_that_is_not_our_child_is_not_gone():
    parent, pid = _grandchild()
    try:
        assert _state(pid) in "SR"
        assert not procs._reap(pid)
    finally:
        parent.kill()
        parent.wait()
