"""process.running_pid: the pid in the node's agent file is its agent only if that process is a
dataplane `agent run` for that node, however it was started (`up`: `python -m dataplane.cli`;
a unit: the console script; by hand: `--netns=NS`). Real processes whose command lines say so
(`exec -a` names argv[0]; a python that sleeps, its other arguments ignored)."""

from __future__ import annotations

import json
import subprocess

import pytest

from dataplane.agent import process
from dataplane.core import state


@pytest.mark.parametrize("argv,node,ours", [
    (["python3", "-m", "dataplane.cli", "--netns", "dpl-rp", "agent", "run"], "dpl-rp", True),
    (["/opt/dataplane/bin/dataplane", "--netns", "dpl-rp", "agent", "run"], "dpl-rp", True),
    (["/opt/dataplane/bin/dataplane", "--netns=dpl-rp", "agent", "run"], "dpl-rp", True),
    (["/opt/dataplane/bin/dataplane", "--netns", "dpl-other", "agent", "run"], "dpl-rp", False),
    (["/opt/dataplane/bin/dataplane", "--netns", "dpl-rp", "agent", "status"], "dpl-rp", False),
    (["/opt/dataplane/bin/dataplane", "agent", "run"], "host", True),
    (["/opt/dataplane/bin/dataplane", "--netns", "dpl-rp", "agent", "run"], "host", False),
    # a node an older version let into a namespace named "host": its `down` must stop that agent
    (["/opt/dataplane/bin/dataplane", "--netns", "host", "agent", "run"], "host", True),
])
def test_an_agent_is_known_by_its_command_line(monkeypatch, tmp_path, argv, node, ours):
    monkeypatch.setattr(state, "node_dir", lambda name: str(tmp_path))
    proc = subprocess.Popen(["bash", "-c", 'exec -a "$0" /usr/bin/python3 -c "import time; time.sleep(30)" "$@"', *argv])
    try:
        wait_exec(proc.pid, argv[0])
        with open(process.agent_file(node), "w") as f:
            json.dump({"pid": proc.pid}, f)
        assert (process.running_pid(node) == proc.pid) is ours
    finally:
        proc.kill()
        proc.wait()


def wait_exec(pid: int, argv0: str) -> None:
    """Until bash has exec'd the stand-in (its cmdline then starts with argv0)."""
    import time
    for _ in range(200):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if f.read().split(b"\0")[0] == argv0.encode():
                return
        time.sleep(0.01)
    raise AssertionError("the stand-in never ran")
