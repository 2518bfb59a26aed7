"""The agent's SIGTERM handler is inherited by processes it forks (cache.fork_save's
child; until 2026-12-06 also pyroute2's helper per network namespace, stopped with SIGTERM).
Such a child must die of the signal, not run the agent's stop: that sent
STOPPING=1 to systemd from the child and logged a stop the agent never made
(the "SIGTERM from an unknown sender" of test_reboot)."""

import os
import socket
import subprocess
import sys

CHILD = """
import os, signal, sys, time
from dataplane.agent import signals

class Agent:
    def stop(self, leave=False):
        from dataplane.agent import sdnotify
        sdnotify.notify("STOPPING=1")

signals.install_signal_handlers(Agent())
pid = os.fork()
if pid == 0:
    time.sleep(5)
    os._exit(0)
time.sleep(0.2)
os.kill(pid, signal.SIGTERM)
_, status = os.waitpid(pid, 0)
print("signalled" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM else f"exited {status}")
"""


def test_a_forked_child_dies_of_sigterm_without_running_the_agents_stop(tmp_path):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    try:
        r = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=30,
                           env={**os.environ, "NOTIFY_SOCKET": path})
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "signalled", r.stdout
        try:
            got = sock.recv(4096)
        except BlockingIOError:
            got = None
        assert got is None, f"the child told systemd {got!r}"
    finally:
        sock.close()
