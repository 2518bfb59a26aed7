"""procs.terminate on a process that is not our child: it is gone once it has
exited, even while its parent has not reaped it yet (a zombie), and not while
any of its threads still runs."""

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


# A grandchild whose main thread ends while another goes on (its leader shows Z).
_LEADER_GONE = """
import ctypes, threading, time
threading.Thread(target=time.sleep, args=(300,)).start()
time.sleep(0.1)
ctypes.CDLL(None).pthread_exit(None)
"""


def _grandchild(code: str = '["sleep", "300"]'):
    parent = subprocess.Popen([sys.executable, "-c", _PARENT.replace('["sleep", "300"]', code)],
                              stdout=subprocess.PIPE, text=True)
    return parent, int(parent.stdout.readline())


def _end(parent, pid: int) -> None:
    for p in (pid, parent.pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    parent.wait()


def test_an_unreaped_grandchild_counts_as_gone_once_it_has_exited():
    parent, pid = _grandchild()
    try:
        assert not procs._reap(pid, procs._open(pid))         # running, not our child
        fd = procs._open(pid)
        os.kill(pid, signal.SIGKILL)
        for _ in range(200):
            if _state(pid) == "Z":
                break
            time.sleep(0.01)
        assert _state(pid) == "Z"           # its parent has not reaped it
        assert procs._reap(pid, fd)
    finally:
        _end(parent, pid)


def test_terminate_does_not_wait_out_the_grace_period_on_a_zombie():
    parent, pid = _grandchild()
    try:
        t0 = time.monotonic()
        procs.terminate(pid, timeout=60)
        waited = time.monotonic() - t0
        assert _state(pid) == "Z"
        assert waited < 30, f"waited {waited:.1f} s for a process that exited at once"
    finally:
        _end(parent, pid)


def test_a_live_process_that_is_not_our_child_is_not_gone():
    parent, pid = _grandchild()
    try:
        # Alive: S or R once it sleeps, D while exec still loads it on a busy machine (a run
        # beside CI failed here on "SR", twice in two sessions, the state not recorded).
        assert _state(pid) in ("S", "R", "D")
        assert not procs._reap(pid, procs._open(pid))
    finally:
        _end(parent, pid)


def test_a_process_whose_main_thread_has_ended_is_not_gone_while_another_runs():
    """Its leader shows Z in /proc/PID/stat; a signal that does not end it (SIGCONT) leaves
    terminate to wait out the grace and then SIGKILL it."""
    parent, pid = _grandchild(repr([sys.executable, "-c", _LEADER_GONE]))
    try:
        for _ in range(300):
            if _state(pid) == "Z":
                break
            time.sleep(0.01)
        assert _state(pid) == "Z" and len(os.listdir(f"/proc/{pid}/task")) == 2
        assert not procs._reap(pid, procs._open(pid))
        procs.terminate(pid, timeout=0.5, first=signal.SIGCONT)
        assert procs._reap(pid, procs._open(pid))          # SIGKILLed at the end of the grace
    finally:
        _end(parent, pid)
